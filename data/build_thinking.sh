#!/usr/bin/env bash
# Builds the data of the thinking experiment (jobs/campaigns/thinking.ini,
# docs/thinking.md), all of it reproducible from seeds and pinned sources:
#
#   OUT/bible.h5, OUT/brown.h5            byte corpora (data/build_corpora.sh)
#   SETS/dyck.h5, SETS/arith.h5           the generated question-answer sets, byte tokens
#   OUT/spm-VOCAB/spm.model               a SentencePiece model of VOCAB pieces trained on the
#                                         Bible's train split (build_corpora.sh, TS_SPM_TRAIN=bible)
#   OUT/spm-VOCAB/bible.h5, brown.h5      the same corpora in that model
#   SETS/spm-VOCAB/dyck.h5, arith.h5      the same generated records in that model (`data dyck|arith
#                                         --spm-model`: answer masks exact)
#
#   data/build_thinking.sh [--force]
#
# Environment:
#   TS_THINKING_SPM_VOCAB  pieces of the subword vocabulary (default 2000: thinking.ini's
#                          [variant.subword] expects vocabulary 2001, pieces + the newline id)
#   TS_THINKING_SEED       seed of the generated sets (default 1)
#   TS_THINKING_OUT        SETS, where the generated sets go (default data/thinking)
#   TS_CORPUS_OUT          OUT (default data/out), THINKSCALE the program, and the other
#                          variables of data/build_corpora.sh
#
# A generated set is written to a temporary file beside it and replaces the existing one only when its
# tokenizer, tokens or masks differ (`data info` checksums); --force rebuilds everything.
set -uo pipefail
cd "$(dirname "$0")/.."

bin=${THINKSCALE:-build/float/thinkscale}
out=${TS_CORPUS_OUT:-data/out}
sets=${TS_THINKING_OUT:-data/thinking}
vocab=${TS_THINKING_SPM_VOCAB:-2000}
seed=${TS_THINKING_SEED:-1}

die() { echo "build_thinking: $*" >&2; exit 1; }

force=()
for arg in "$@"; do
    case $arg in
        --force) force=(--force) ;;
        -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; exit 0 ;;
        *) die "unknown argument $arg" ;;
    esac
done
[[ $vocab =~ ^[0-9]+$ ]] && [ "$vocab" -ge 300 ] || die "TS_THINKING_SPM_VOCAB must be an integer >= 300, not '$vocab'"
[[ $seed =~ ^[0-9]+$ ]] || die "TS_THINKING_SEED must be a non-negative integer, not '$seed'"
[ -x "$bin" ] || die "$bin not found: run 'make build' first"

echo "build_thinking: byte corpora"
TS_TOKENIZER=byte data/build_corpora.sh "${force[@]}" bible brown || die "building the byte corpora failed"
echo "build_thinking: subword corpora ($vocab pieces, trained on the Bible)"
TS_TOKENIZER=spm TS_SPM_VOCAB=$vocab TS_SPM_TRAIN=bible data/build_corpora.sh "${force[@]}" bible brown ||
    die "building the subword corpora failed"
model=$out/spm-$vocab/spm.model
[ -s "$model" ] || die "$model is missing after build_corpora.sh"

work=$(mktemp -d) || die "cannot create a temporary directory"
new=
trap 'rm -rf "$work"; [ -z "$new" ] || rm -f "$new"' EXIT
mkdir -p "$sets/spm-$vocab" || die "cannot create $sets/spm-$vocab"
# What identifies a set's content: its tokenizer, vocabulary and the checksums of its splits.
identity() { grep -E '^(tokenizer|vocab_size|train|validation):|answer_mask' "$1"; }
for gen in dyck arith; do
    for dir in "$sets" "$sets/spm-$vocab"; do
        args=()
        [ "$dir" = "$sets" ] || args=(--spm-model "$model")
        file=$dir/$gen.h5
        new=$dir/.$gen.h5.new.$$ # beside the target: the rename over it is atomic
        "$bin" data "$gen" --output "$new" --seed "$seed" "${args[@]}" >"$work/$gen.log" 2>&1 ||
            die "$gen: generation failed: $(cat "$work/$gen.log")"
        "$bin" data info "$new" >"$work/new.info" 2>&1 || die "$gen: the new file fails its check: $(cat "$work/new.info")"
        if [ ${#force[@]} -eq 0 ] && [ -f "$file" ] && "$bin" data info "$file" >"$work/old.info" 2>&1 &&
            [ "$(identity "$work/old.info")" = "$(identity "$work/new.info")" ]; then
            echo "build_thinking: $file kept (same tokens)"
            rm -f "$new"
            new=
            continue
        fi
        mv -f "$new" "$file" || die "cannot write $file"
        new=
        echo "build_thinking: $file built: $(grep -E '^(tokenizer|train):' "$work/new.info" | tr -s ' ' | paste -sd ' ')"
    done
done
echo "build_thinking: thinking data ready: $out/{bible,brown}.h5, $sets/{dyck,arith}.h5 and their" \
    "subword versions in $out/spm-$vocab/ and $sets/spm-$vocab/"
