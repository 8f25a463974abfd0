#!/usr/bin/env bash
# The layer check (tests/check_layers.sh) on small made-up trees: a clean
# tree passes; an upward include, an include between models/ and io/, an
# include of an unknown folder and a stale exception each fail, naming the
# file and line.
source "$(dirname "$0")/lib.sh"
check_layers=$repo/tests/check_layers.sh

tree() { # tree DIR: a clean tree with one file per layer, each including the one below
    mkdir -p "$1/src"/{engine,core,models,io,data,parallel,train,experiments,cli} "$1/tests"
    echo '#include "engine/real.h"' >"$1/src/engine/real.h"
    echo '#include "engine/real.h"' >"$1/src/core/config.h"
    printf '#include "core/config.h"\n#include "engine/real.h"\n' >"$1/src/models/model.h"
    echo '#include "core/config.h"' >"$1/src/io/checkpoint.h"
    echo '#include "io/checkpoint.h"' >"$1/src/data/letters.h"
    echo '#include "engine/real.h"' >"$1/src/parallel/dp.h"
    printf '#include "models/model.h"\n#include "io/checkpoint.h"\n#include "parallel/dp.h"\n' \
        >"$1/src/train/trainer.c"
    echo '#include "train/trainer.h"' >"$1/src/experiments/letters.c"
    printf '#include <stdio.h>\n#include "experiments/x.h"\n#include "cli/commands.h"\n' \
        >"$1/src/cli/main.c"
    : >"$1/tests/layer_exceptions.txt"
}

tree "$tmp/clean"
check "a tree with only downward includes passes" "$check_layers" "$tmp/clean"

tree "$tmp/up"
printf '/* engine */\n#include "train/trainer.h"\n' >>"$tmp/up/src/engine/real.h"
check "engine including train fails, naming file:line" \
    fails_with "$tmp/l1" "src/engine/real.h:3: engine/ includes train/trainer.h, a higher layer" \
    "$check_layers" "$tmp/up"

tree "$tmp/core_up"
echo '#include "cli/commands.h"' >>"$tmp/core_up/src/core/config.h"
check "core including cli fails" \
    fails_with "$tmp/l2" "src/core/config.h:2: core/ includes cli/commands.h" "$check_layers" "$tmp/core_up"

tree "$tmp/sideways"
echo '#include "io/checkpoint.h"' >>"$tmp/sideways/src/models/model.h"
check "models including io fails (same layer, other folder)" \
    fails_with "$tmp/l3" "src/models/model.h:3: models/ includes io/checkpoint.h, a folder of the same layer" \
    "$check_layers" "$tmp/sideways"

check "a listed exception is tolerated" \
    "$check_layers" "$tmp/sideways" <(echo "src/models/model.h -> io/checkpoint.h")
check "a listed exception that is gone fails" \
    fails_with "$tmp/l4" "no longer in the code" "$check_layers" "$tmp/clean" \
    <(echo "src/models/model.h -> io/checkpoint.h")

tree "$tmp/unknown"
echo '#include "util/list.h"' >>"$tmp/unknown/src/train/trainer.c"
check "an include of a folder outside the layer order fails" \
    fails_with "$tmp/l5" "names no layer folder" "$check_layers" "$tmp/unknown"

check "the repository itself passes" "$check_layers" "$repo"
finish
