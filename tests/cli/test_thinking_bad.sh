#!/usr/bin/env bash
# Bad thinking-axis campaign files stop at load with a message naming the problem (plan needs no
# MPI): a value without its [variant.NAME], a variant no value uses, a variant for an
# architecture the campaign lacks, a bad or too large knob grid, an unknown [thinking] key, a
# variant key the configuration does not know, a variant whose own data holds other domains, mixes
# tokenizers or is missing without a vocabulary. A good one expands variants only for the architectures they
# list, and a variant with data of its own takes its vocabulary from it.
source "$(dirname "$0")/lib.sh"
make_license_corpus "$tmp/corpus.h5"
good() {
    printf '%s\n' "[campaign]" "name = t" "architectures = transformerpp, ebt" "axes = thinking" \
        "data = $tmp/corpus.h5" "[base]" "model.context = 16" "model.depth = 1" \
        "model.width = 16" "model.heads = 2" "train.batch = 4" "train.steps = 4" \
        "[axis.thinking]" "values = base, no_langevin" "[variant.no_langevin]" \
        "architectures = ebt" "ebt.langevin_noise = 0" "[thinking]" "ebt_steps = 1, 2" "$@"
}
good >"$tmp/good.ini"
"$bin" campaign plan "$tmp/good.ini" >"$tmp/plan.log" 2>&1
check "the good file plans" [ $? -eq 0 ]
# Without a preset EBT's Langevin noise is already 0: the variant equals the base and shares its run.
check "... 3 points: both architectures' base and EBT's variant" contains "$tmp/plan.log" "3 points in 2 runs"
check "... the variant identical to the base shares its run" \
    contains "$tmp/plan.log" "ebt-thinking-no_langevin-s33 .* ebt-thinking-base-s33$"
check "... named ARCH-thinking-VARIANT-sSEED" contains "$tmp/plan.log" "ebt-thinking-no_langevin-s33"
check "... and no Transformer++ variant" [ "$(grep -c 'transformerpp-thinking-no_langevin' "$tmp/plan.log")" = 0 ]

bad() { # bad LABEL PATTERN: plan of $tmp/bad.ini fails naming PATTERN
    check "$1" fails_with "$tmp/bad.log" "$2" "$bin" campaign plan "$tmp/bad.ini"
}
good | sed 's/^values = base, no_langevin$/values = base, no_langevin, no_replay/' >"$tmp/bad.ini"
bad "a value without its section" "variant 'no_replay' has no \[variant.no_replay\]"
good | sed 's/^values = base, no_langevin$/values = base/' >"$tmp/bad.ini"
bad "a variant no value uses" "\[variant.no_langevin\] is not among \[axis.thinking\] values"
good | sed 's/^architectures = ebt$/architectures = nexus/' >"$tmp/bad.ini"
bad "a variant for another architecture" "\[variant.no_langevin\] architectures: 'nexus' is not in"
good | sed 's/^ebt_steps = 1, 2$/ebt_steps = 1, 0/' >"$tmp/bad.ini"
bad "a knob level of 0" "\[thinking\] ebt_steps: '0' is not a positive integer"
good "ebt_samples = 1, 2, 3, 4, 5, 6, 7, 8" | sed 's/^ebt_steps = 1, 2$/ebt_steps = 1, 2, 3/' >"$tmp/bad.ini"
bad "more EBT levels than one evaluation holds" "ebt_steps x ebt_samples gives 24 levels"
good "window = 8" >"$tmp/bad.ini"
bad "an unknown [thinking] key" "\[thinking\] unknown key 'window'"
good | sed 's/^ebt.langevin_noise = 0$/ebt.langevin_nois = 0/' >"$tmp/bad.ini"
bad "an unknown key in a variant" "\[variant.no_langevin\] unknown configuration key 'ebt.langevin_nois'"
good | sed 's/^values = base, no_langevin$/values = base, no-langevin/' >"$tmp/bad.ini"
bad "a variant name with '-'" "'no-langevin': use letters, digits, '_' and '.'"
good | sed 's/^axes = thinking$/axes = thinking, width/' >"$tmp/bad.ini"
bad "the thinking axis beside a scaling axis" "the thinking axis is a campaign of its own"
# A variant with data of its own (the subword row): the same domains in another vocabulary.
"$bin" data convert --input "$tmp/licenses.txt" --output "$tmp/spm.h5" --name licenses \
    --spm-model "$tmp/spm.model" --spm-vocab 400 >/dev/null 2>&1
"$bin" data dyck --output "$tmp/dyck.h5" --train 50 --validation 10 >/dev/null 2>&1
"$bin" data dyck --output "$tmp/spm_dyck.h5" --train 50 --validation 10 --spm-model "$tmp/spm.model" \
    >/dev/null 2>&1
own() { # own VARIANT_LINES...: the good file with eval = dyck and a variant 'sub' of its own data
    good "$@" | sed -e "s|^values = base, no_langevin$|values = base, no_langevin, sub|" \
        -e "s|^data = .*|&\neval = $tmp/dyck.h5|"
}
own "[variant.sub]" "data.train = $tmp/spm.h5" "data.eval = $tmp/spm_dyck.h5" >"$tmp/own.ini"
"$bin" campaign plan "$tmp/own.ini" >"$tmp/own.log" 2>&1
check "a variant with data of its own plans" [ $? -eq 0 ]
check "... its runs are points of their own" contains "$tmp/own.log" "5 points in 4 runs"
py - "$tmp/own.log" <<'PY'
import sys
# The params column: the subword runs' embedding and head are of 401 tokens, the byte runs' 256.
rows = {l.split()[1]: l.split() for l in open(sys.argv[1]) if "-thinking-" in l}
sub, base = rows["transformerpp-thinking-sub-s33"], rows["transformerpp-thinking-base-s33"]
def num(v):
    return float(v[:-1]) * {"k": 1e3, "M": 1e6}[v[-1]] if v[-1] in "kM" else float(v)
# 2 x width 16 x (401 - 256) more parameters (embedding and head), all else equal
assert abs(num(sub[8]) - num(base[8]) - 2 * 16 * 145) < 120, (sub, base)  # "%.3g" rounding
PY
check "... with the vocabulary of its own training file" [ $? -eq 0 ]
own "[variant.sub]" "data.train = $tmp/spm.h5" "data.eval =" >"$tmp/bad.ini"
bad "a variant whose data lacks a campaign domain" \
    "its data (training domain licenses, evaluation domains none) must hold the campaign's domains (training licenses, evaluation dyck)"
own "[variant.sub]" "data.train = $tmp/spm.h5" >"$tmp/bad.ini"
bad "a variant with its own training data but the campaign's evaluation sets (another tokenizer)" \
    "\[variant.sub\] data.eval: .*dyck.h5 was tokenized by 'byte' but the model's training data by 'sentencepiece:"
own "[variant.sub]" "data.train = $tmp/nope/licenses.h5" "data.eval = $tmp/spm_dyck.h5" >"$tmp/bad.ini"
bad "a variant's missing data without model.vocab_size" "data.train '$tmp/nope/licenses.h5' does not exist, and model.vocab_size is not set"
own "[variant.sub]" "data.train = $tmp/nope/licenses.h5" "data.eval = $tmp/spm_dyck.h5" \
    "model.vocab_size = 401" >"$tmp/missing.ini"
"$bin" campaign plan "$tmp/missing.ini" >"$tmp/missing.log" 2>&1
check "... with model.vocab_size the plan works" [ $? -eq 0 ]
check "... and says what is missing" contains "$tmp/missing.log" "\[variant.sub\] training data '$tmp/nope/licenses.h5' does not exist"
check "... and run refuses it" fails_with "$tmp/missing_run.log" "cannot run (plan works without data)" \
    mpirun -np 1 "$bin" campaign run "$tmp/missing.ini" --dir "$tmp/missing_run"
finish
