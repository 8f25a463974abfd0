#!/usr/bin/env bash
# Bad thinking-axis campaign files stop at load with a message naming the problem (plan needs no
# MPI): a value without its [variant.NAME], a variant no value uses, a variant for an
# architecture the campaign lacks, a bad or too large knob grid, an unknown [thinking] key, a
# variant key the configuration does not know. A good one expands variants only for the
# architectures they list.
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
finish
