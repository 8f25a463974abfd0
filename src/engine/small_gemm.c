#include "engine/small_gemm.h"

/* ---------------------------------------------------------------- small GEMM
 *
 * C is computed in tiles of TILE_ROWS rows by two vectors of columns, each
 * tile's sums held in registers over the whole depth k: per step p, two
 * vector loads of B's row p, one broadcast of op(A)[r, p] per row, two
 * fused multiply-adds per row. AVX-512's 32 registers hold an 8 x 2 tile
 * (16 accumulators, enough independent chains to cover the multiply-add
 * latency on both ports); 16 registers (AVX2, SSE) a 4 x 2 one. Vectors are
 * GCC's vector extensions at the widest width the build targets, so one
 * source serves -march=native, x86-64-v3 and the portable builds; the
 * products and sums become fused multiply-adds because this file alone is
 * compiled with -ffp-contract=fast (Makefile).
 *
 * Edges: rows past the last full tile run one at a time; columns past the
 * last full pair of vectors are copied, zero-padded, into a panel of two
 * vectors (one vector's work when they fit one), so every load stays inside
 * the operands. The depth runs in chunks of DEPTH_CHUNK (the edge panel's
 * size; C accumulates across chunks), which at the attentions' depths
 * (dh, or the visible keys up to T) is a single chunk. */

#if defined(__AVX512F__)
#define VECTOR_BYTES 64
#define TILE_ROWS 8
#elif defined(__AVX__)
#define VECTOR_BYTES 32
#define TILE_ROWS 4
#else
#define VECTOR_BYTES 16
#define TILE_ROWS 4
#endif

typedef ts_real vec __attribute__((vector_size(VECTOR_BYTES)));
/* The same vector at any element address (the operands' rows are not
 * vector-aligned). */
typedef ts_real vec_unaligned
    __attribute__((vector_size(VECTOR_BYTES), aligned(sizeof(ts_real)), may_alias));

enum { LANES = VECTOR_BYTES / (int)sizeof(ts_real), TILE_COLS = 2 * LANES, DEPTH_CHUNK = 512 };
/* Blocks of C for the large products (the weight GEMMs, op_matmul.c): a
 * block of A's rows (BLOCK_ROWS x DEPTH_CHUNK, at most 256 KiB of floats)
 * and one of B's columns (DEPTH_CHUNK x BLOCK_COLS, 512 KiB) stay in L2 while
 * the tiles pass over them. A multiple of TILE_COLS, so blocks add no edge
 * panels. The strips of the attentions fit one block. */
enum { BLOCK_ROWS = 128, BLOCK_COLS = 256 };
_Static_assert(BLOCK_COLS % TILE_COLS == 0, "column blocks of whole tile panels");

static inline vec load(const ts_real *p) {
    return *(const vec_unaligned *)p;
}
static inline void store(ts_real *p, vec v) {
    *(vec_unaligned *)p = v;
}

/* One tile: rows [0, mr) of op(A) (a points at the tile's first row)
 * times `width` vectors of B's columns, stored into C as alpha times the
 * sums plus beta C. mr, width and trans_a are constants in each instance
 * below, so the loops unroll and the accumulators live in registers. */
static inline __attribute__((always_inline)) void tile(int mr, int width, bool trans_a, int k,
                                                       ts_real alpha, const ts_real *a, int lda,
                                                       const ts_real *b, int ldb, ts_real beta,
                                                       ts_real *c, int ldc) {
    vec acc0[TILE_ROWS], acc1[TILE_ROWS];
    for (int r = 0; r < mr; r++) acc0[r] = acc1[r] = (vec){0};
    for (int p = 0; p < k; p++) {
        const ts_real *bp = b + (long)p * ldb;
        vec b0 = load(bp), b1 = width == 2 ? load(bp + LANES) : (vec){0};
        for (int r = 0; r < mr; r++) {
            ts_real ar = trans_a ? a[(long)p * lda + r] : a[(long)r * lda + p];
            acc0[r] += ar * b0;
            if (width == 2) acc1[r] += ar * b1;
        }
    }
    /* Unrolled, so the sums go from registers to C: GCC otherwise keeps
     * this loop, and with it the accumulators in memory (1% at the strip
     * shapes). */
#pragma GCC unroll 16
    for (int r = 0; r < mr; r++) {
        ts_real *cr = c + (long)r * ldc;
        vec v0 = alpha * acc0[r], v1 = alpha * acc1[r];
        if (beta != 0) {
            v0 += beta * load(cr);
            if (width == 2) v1 += beta * load(cr + LANES);
        }
        store(cr, v0);
        if (width == 2) store(cr + LANES, v1);
    }
}

/* The instances: a full tile or one row, two vectors or one, A or A^T. */
#define TILE_INSTANCE(name, mr, width, trans_a)                                                    \
    static void name(int k, ts_real alpha, const ts_real *a, int lda, const ts_real *b, int ldb,   \
                     ts_real beta, ts_real *c, int ldc) {                                          \
        tile(mr, width, trans_a, k, alpha, a, lda, b, ldb, beta, c, ldc);                          \
    }
TILE_INSTANCE(tile_full_pair, TILE_ROWS, 2, false)
TILE_INSTANCE(tile_full_one, TILE_ROWS, 1, false)
TILE_INSTANCE(tile_row_pair, 1, 2, false)
TILE_INSTANCE(tile_row_one, 1, 1, false)
TILE_INSTANCE(tile_full_pair_t, TILE_ROWS, 2, true)
TILE_INSTANCE(tile_full_one_t, TILE_ROWS, 1, true)
TILE_INSTANCE(tile_row_pair_t, 1, 2, true)
TILE_INSTANCE(tile_row_one_t, 1, 1, true)
#undef TILE_INSTANCE

typedef void tile_fn(int k, ts_real alpha, const ts_real *a, int lda, const ts_real *b, int ldb,
                     ts_real beta, ts_real *c, int ldc);

/* A tile of an edge panel (cols < its vectors' width): computed into a
 * full-width scratch tile, then its first cols columns into C. */
static void edge_tile(tile_fn *fn, int mr, int cols, int k, ts_real alpha, const ts_real *a,
                      int lda, const ts_real *panel, ts_real beta, ts_real *c, int ldc) {
    ts_real sums[TILE_ROWS * TILE_COLS];
    fn(k, 1, a, lda, panel, TILE_COLS, 0, sums, TILE_COLS);
    for (int r = 0; r < mr; r++)
        for (int j = 0; j < cols; j++) {
            ts_real *cij = c + (long)r * ldc + j, v = alpha * sums[r * TILE_COLS + j];
            *cij = beta != 0 ? v + beta * *cij : v;
        }
}

/* One chunk of depth k <= DEPTH_CHUNK: column panels outermost, so a panel
 * of B (k x two vectors) stays in L1 while every row tile passes over it. */
static void gemm_chunk(bool trans_a, int m, int n, int k, ts_real alpha, const ts_real *a, int lda,
                       const ts_real *b, int ldb, ts_real beta, ts_real *c, int ldc) {
    ts_real edge[DEPTH_CHUNK * TILE_COLS];
    for (int j = 0; j < n; j += TILE_COLS) {
        int cols = n - j < TILE_COLS ? n - j : TILE_COLS, width = cols > LANES ? 2 : 1;
        bool edge_panel = cols < TILE_COLS;
        if (edge_panel)
            for (int p = 0; p < k; p++) {
                const ts_real *src = b + (long)p * ldb + j;
                ts_real *dst = edge + (long)p * TILE_COLS;
                for (int q = 0; q < TILE_COLS; q++) dst[q] = q < cols ? src[q] : 0;
            }
        tile_fn *full = trans_a ? (width == 2 ? tile_full_pair_t : tile_full_one_t)
                                : (width == 2 ? tile_full_pair : tile_full_one);
        tile_fn *row = trans_a ? (width == 2 ? tile_row_pair_t : tile_row_one_t)
                               : (width == 2 ? tile_row_pair : tile_row_one);
        for (int i = 0; i < m;) {
            int mr = m - i >= TILE_ROWS ? TILE_ROWS : 1;
            tile_fn *fn = mr == TILE_ROWS ? full : row;
            const ts_real *a_rows = trans_a ? a + i : a + (long)i * lda;
            ts_real *c_tile = c + (long)i * ldc + j;
            if (edge_panel)
                edge_tile(fn, mr, cols, k, alpha, a_rows, lda, edge, beta, c_tile, ldc);
            else
                fn(k, alpha, a_rows, lda, b + j, ldb, beta, c_tile, ldc);
            i += mr;
        }
    }
}

/* One block of C (at most BLOCK_ROWS x BLOCK_COLS), chunk by chunk of the
 * depth. */
static void gemm_block(bool trans_a, int m, int n, int k, ts_real alpha, const ts_real *a, int lda,
                       const ts_real *b, int ldb, ts_real beta, ts_real *c, int ldc) {
    for (int p0 = 0; p0 < k; p0 += DEPTH_CHUNK) {
        int depth = k - p0 < DEPTH_CHUNK ? k - p0 : DEPTH_CHUNK;
        const ts_real *a_chunk = trans_a ? a + (long)p0 * lda : a + p0;
        gemm_chunk(trans_a, m, n, depth, alpha, a_chunk, lda, b + (long)p0 * ldb, ldb,
                   p0 == 0 ? beta : 1, c, ldc);
    }
}

void ts_small_gemm(bool trans_a, int m, int n, int k, ts_real alpha, const ts_real *a, int lda,
                   const ts_real *b, int ldb, ts_real beta, ts_real *c, int ldc) {
    if (m <= 0 || n <= 0) return;
    if (k <= 0) {
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++) {
                ts_real *cij = c + (long)i * ldc + j;
                *cij = beta != 0 ? beta * *cij : 0;
            }
        return;
    }
    /* Column blocks outermost: a block of B stays in L2 while every row
     * block of A passes over it. Each element of C is the same sum whatever
     * the blocks (its depth chunks, in order), so the blocking changes no
     * value. */
    for (int j0 = 0; j0 < n; j0 += BLOCK_COLS) {
        int cols = n - j0 < BLOCK_COLS ? n - j0 : BLOCK_COLS;
        for (int i0 = 0; i0 < m; i0 += BLOCK_ROWS) {
            int rows = m - i0 < BLOCK_ROWS ? m - i0 : BLOCK_ROWS;
            const ts_real *a_rows = trans_a ? a + i0 : a + (long)i0 * lda;
            gemm_block(trans_a, rows, cols, k, alpha, a_rows, lda, b + j0, ldb, beta,
                       c + (long)i0 * ldc + j0, ldc);
        }
    }
}

/* The transpose in blocks of LANES x LANES held in registers: LANES vector
 * loads, log2(LANES) rounds of two-vector shuffles, LANES vector stores,
 * instead of gathering each destination run from LANES scalar loads (0.165
 * against 0.19 ns an element for a [256, 64] head in L2; of the fused
 * attention's forward and backward, 4.8% against 6.6%: docs/performance.md,
 * ninth round). Edges (rows or columns past the last whole block) are
 * copied one element at a time. */
#ifdef TS_DOUBLE
typedef int64_t lane_index __attribute__((vector_size(VECTOR_BYTES)));
#else
typedef int32_t lane_index __attribute__((vector_size(VECTOR_BYTES)));
#endif

enum { ROUNDS = LANES >= 16 ? 4 : LANES >= 8 ? 3 : LANES >= 4 ? 2 : 1 }; /* log2(LANES) */
_Static_assert(1 << ROUNDS == LANES, "a transpose round per bit of a lane index");

/* The shuffles of a block transpose's rounds. Round r (h = 2^r) swaps bit
 * h of every element's row and column indices where they differ: rows i
 * and i + h (bit h of i clear) exchange their off-diagonal runs of h
 * entries, upper[r] making the new row i and lower[r] the new row i + h of
 * the pair. After every round each index pair (i, j) has become (j, i). */
typedef struct transpose_shuffles {
    lane_index upper[ROUNDS], lower[ROUNDS];
} transpose_shuffles;

static transpose_shuffles make_transpose_shuffles(void) {
    transpose_shuffles s;
    for (int r = 0; r < ROUNDS; r++)
        for (int j = 0, h = 1 << r; j < LANES; j++) {
            s.upper[r][j] = j & h ? LANES + j - h : j;
            s.lower[r][j] = j & h ? LANES + j : j + h;
        }
    return s;
}

/* Rows x[0..LANES) of a block transposed in place. */
static inline __attribute__((always_inline)) void transpose_block(vec *x,
                                                                  const transpose_shuffles *s) {
#pragma GCC unroll 4
    for (int r = 0; r < ROUNDS; r++) {
#pragma GCC unroll 16
        for (int i = 0; i < LANES; i++) {
            if (i & 1 << r) continue;
            vec a = x[i], b = x[i + (1 << r)];
            x[i] = __builtin_shuffle(a, b, s->upper[r]);
            x[i + (1 << r)] = __builtin_shuffle(a, b, s->lower[r]);
        }
    }
}

int ts_small_gemm_b_stride(int n) {
    enum { LINE_ELEMENTS = 64 / (int)sizeof(ts_real) };
    return n % LINE_ELEMENTS == 0 ? n + LINE_ELEMENTS / 2 : n;
}

void ts_transpose_rows(const ts_real *restrict src, int rows, int cols, int ld_src,
                       ts_real *restrict dst, int ld_dst) {
    int whole_rows = rows / LANES * LANES, whole_cols = cols / LANES * LANES;
    const transpose_shuffles shuffles = make_transpose_shuffles();
    for (int i0 = 0; i0 < whole_rows; i0 += LANES)
        for (int j0 = 0; j0 < whole_cols; j0 += LANES) {
            vec x[LANES];
            for (int i = 0; i < LANES; i++) x[i] = load(src + (long)(i0 + i) * ld_src + j0);
            transpose_block(x, &shuffles);
            for (int j = 0; j < LANES; j++) store(dst + (long)(j0 + j) * ld_dst + i0, x[j]);
        }
    for (int i = 0; i < rows; i++)
        for (int j = i < whole_rows ? whole_cols : 0; j < cols; j++)
            dst[(long)j * ld_dst + i] = src[(long)i * ld_src + j];
}
