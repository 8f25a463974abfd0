/* The tensor engine: include this one header. See docs/engine.md. */
#ifndef TS_ENGINE_H
#define TS_ENGINE_H

#include "engine/arena.h"
#include "engine/autodiff.h"
#include "engine/context.h"
#include "engine/ops.h"
#include "engine/profile.h"
#include "engine/real.h"
#include "engine/rng.h"
#include "engine/tensor.h"

#endif
