/* The Free Transformer (../shared/specs/free-transformer.md, docs/free-transformer.md):
 * a Transformer++ decoder that samples a latent Z_t per token, one of 2^H
 * states, and injects it into the keys and values of block L/2+1 only.
 *
 *   tokens -> blocks 1..L/2 -> X
 *   training: encoder block (queries: learned zeta, keys/values: X, not causal)
 *             -> RMSNorm -> H logits -> binary mapper -> Z (one-hot, gradient via G)
 *   inference: Z uniform over the 2^H states
 *   R = Z W_post;  block L/2+1: queries from X, keys/values from X + R;
 *   blocks L/2+2..L, final norm, head.
 *   loss = cross-entropy + mean_t max(0, KL_t - kappa)
 *
 * Block numbers in comments are the paper's (1-based); code indexes blocks
 * from 0, so the injection block is layer depth/2. */
#ifndef TS_FREE_TRANSFORMER_H
#define TS_FREE_TRANSFORMER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "models/model.h"
#include "models/transformer_block.h"

/* Fills the parameter table and ops; validates the [free] configuration. */
bool free_model_setup(ts_model *model, char *err, size_t errlen);

/* Statistics (ts_model_ops.stats) in this order. */
enum free_stat { FREE_STAT_POSTERIOR_LOSS, FREE_STAT_KL, FREE_STAT_KL_PENALTY, FREE_N_STATS };

/* ---------------------------------------------------------------- the latent (free_latent.c) */

/* A previous draw replayed exactly (finite-difference checks of the
 * straight-through estimator): its states and the value detach(G) had. */
typedef struct free_frozen_latent {
    int32_t *states; /* [N] */
    ts_real *g;      /* [N * 2^H] */
} free_frozen_latent;

typedef struct free_latent {
    ts_tensor *z;    /* [N, 2^H]: Y + G - detach(G), value exactly the one-hot Y */
    ts_tensor *g;    /* [N, 2^H]: G[n, d] = prod_h P(bit h of d) */
    int32_t *states; /* [N] sampled states (arena) */
} free_latent;

/* G from encoder logits [N, H]: the probability of each of the 2^H states,
 * state d = sum_h 2^h b_h, built from the per-bit probabilities with
 * differentiable ops. */
ts_tensor *free_state_probabilities(ts_ctx *ctx, ts_tensor *logits);

/* The binary mapper: bit h of row n is 1 iff uniforms[n * H + h] <
 * sigmoid(logits[n, h]). With `replay`, its states and G value are used
 * instead of sampling and of detach(G) (uniforms may then be NULL). */
free_latent free_binary_mapper(ts_ctx *ctx, ts_tensor *logits, const ts_real *uniforms,
                               const free_frozen_latent *replay);

/* KL(Q(Z_n | x) || uniform) per row of logits [N, H] -> [N], in nats:
 * sum_h [log 2 + p log p + (1 - p) log(1 - p)], p = sigmoid(logit), written
 * to stay finite for logits of any size. */
ts_tensor *free_kl_per_token(ts_ctx *ctx, ts_tensor *logits);

/* Free bits: mean over rows of max(0, kl - kappa) -> [1]. */
ts_tensor *free_bits_penalty(ts_ctx *ctx, ts_tensor *kl, double kappa);

/* The one-hot Z [N, 2^bits] of given states (a constant). */
ts_tensor *free_one_hot_states(ts_ctx *ctx, const int32_t *states, long n, int bits);

/* ---------------------------------------------------------------- the model (free_transformer.c)
 */

/* Embedding and blocks 1..L/2 of inputs [batch * seq] -> X [batch, seq, D]. */
ts_tensor *free_first_half(ts_model *model, ts_ctx *ctx, const int32_t *inputs, int batch, int seq);
/* The encoder over X [B, T, D] -> logits [B * T, H]. Counted (free_encoder_runs). */
ts_tensor *free_encoder_logits(ts_model *model, ts_ctx *ctx, ts_tensor *x);
/* The encoder block's parameters (a decoder block's layout, encoder.*). */
tpp_block_params free_encoder_block(const ts_model *model);
/* R = Z W_post injected into block L/2+1, then the remaining blocks, the
 * final norm and the head: X [B, T, D], Z [B * T, 2^H] -> logits [B, T, V]. */
ts_tensor *free_second_half(ts_model *model, ts_ctx *ctx, ts_tensor *x, ts_tensor *z);

/* The training objective with the option to record the latent draw
 * (capture: caller-owned arrays of N and N * 2^H) or to replay one. */
ts_tensor *free_training_loss(ts_model *model, ts_ctx *ctx, const ts_batch *batch, double *stats,
                              free_frozen_latent *capture, const free_frozen_latent *replay);

/* The prior latents of sequence i of an evaluation batch: samples * seq
 * states, sample k's at [k * seq, (k + 1) * seq). Sample k does not depend
 * on how many samples are drawn. */
void free_prior_states(const ts_batch *batch, int i, int samples, int bits, int32_t *states);

/* How many times the encoder has run on this model. */
long free_encoder_runs(const ts_model *model);

/* Index of the block that receives the latent (0-based: depth / 2). */
int free_injection_layer(const ts_model_config *config);

/* ---------------------------------------------------------------- generation (free_generate.c) */

typedef struct free_generate_request {
    const int32_t *prompt; /* [n_seqs * prompt_len], prompt_len >= 1 */
    int prompt_len;
    int length; /* tokens per sequence, prompt included, <= context */
    int n_seqs;
    /* [n_seqs * length]: the latent state of every position, drawn by the
     * caller from the uniform prior (shared or not between sequences). With
     * prompt_from_encoder the prompt positions are overwritten by the
     * encoder's posterior draw (prompt prefill), using prompt_uniforms
     * [n_seqs * prompt_len * H]. */
    int32_t *states;
    bool prompt_from_encoder;
    const ts_real *prompt_uniforms;
    ts_rng *token_rngs; /* [n_seqs]: the draws of each sequence's tokens */
} free_generate_request;

/* Autoregressive sampling at temperature 1 into out [n_seqs * length]
 * (prompt copied). The encoder runs at most once, on the prompt, and never
 * for generated tokens. Runs without recording; releases what it allocates. */
void free_generate(ts_model *model, ts_ctx *ctx, const free_generate_request *request,
                   int32_t *out);

#endif
