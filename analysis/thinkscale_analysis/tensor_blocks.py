"""Which share of a model's tensors one rank of a tensor-parallel grid holds
(parallel.tensor_grid = PxQ, docs/parallelism.md): the predictions that
tests/cli/test_tensor_parallel.sh and bench/bench_tensor.sh check the runs'
parameters_bytes and start-up line against, written once. It mirrors
src/core/block_cyclic.c and ts_model_distribute independently of them."""
import numpy as np

BLOCK = 32  # TS_TENSOR_BLOCK, parallel.tensor_block's default

# 2-D tensors that are never held as blocks: read directly, not through
# ts_linear (embedding tables, Free's post_sampler).
NOT_LINEAR = ("embed", "time_embed", "post_sampler")


def extent(n, me, procs, nb=BLOCK):
    """ScaLAPACK's numroc_: how many of n indices, dealt in blocks of nb
    round-robin over procs processes starting at 0, process me holds."""
    blocks = n // nb
    held = blocks // procs * nb
    if me < blocks % procs:
        held += nb
    elif me == blocks % procs:
        held += n % nb
    return held


def is_blocked(name, shape, p, q, nb=BLOCK):
    """Whether a tensor is held as blocks on a P x Q grid: a linear weight
    [out, in] whose every grid position gets a block (out over the Q
    process columns, in over the P rows)."""
    return (len(shape) == 2 and name not in NOT_LINEAR
            and shape[0] > nb * (q - 1) and shape[1] > nb * (p - 1))


def held_elements(shapes, p, q, nb=BLOCK):
    """(elements held by grid position (0, 0), tensors held as blocks) for
    shapes {name: shape}: its blocks of the blocked tensors, the others
    whole."""
    local = blocked = 0
    for name, shape in shapes.items():
        if is_blocked(name, shape, p, q, nb):
            blocked += 1
            local += extent(shape[0], 0, q, nb) * extent(shape[1], 0, p, nb)
        else:
            local += int(np.prod(shape))
    return local, blocked
