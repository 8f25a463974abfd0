/* Energy-Based Transformer for language (../shared/specs/ebt.md, docs/ebt.md).
 *
 * A candidate prediction y (logits over the vocabulary, one row per position)
 * is improved by gradient descent on a learned energy E(context, softmax(y)):
 *     p = softmax(y + noise),  e = p W_v2e,  E = energy(context, e),
 *     y <- p - alpha * dE.sum()/dp.
 * Training back-propagates the cross-entropy of the updated y through that
 * step, i.e. through grad_p E (second order, by the engine). Inference can
 * take more steps (thinking longer) and keep, per position, the lowest-energy
 * of several candidates (self-verification).
 *
 * The energy of prediction r (for token r + 1) comes from a Transformer++
 * over [time token; x_0..x_{L-1}; e_1..e_L] in which the observed half is
 * ordinary causal attention and prediction r attends to the time token,
 * x_0..x_r and itself only. Since the observed half never sees predictions it
 * is computed once per time token ("landscape") and only its keys and values
 * are kept, so an energy evaluation costs about two Transformer++ forwards. */
#ifndef TS_EBT_H
#define TS_EBT_H

#include <stdbool.h>
#include <stddef.h>

#include "core/energy_trace.h"
#include "models/model.h"

/* Fills the table and ops of a model whose config.arch is "ebt"; false with
 * a message naming the key when the [ebt] settings are inconsistent. */
bool ebt_model_setup(ts_model *model, char *err, size_t errlen);

/* The context of a batch: embedded tokens, masks and positions, and the
 * observed stream's keys and values per landscape, computed on first use (in
 * the context's arena, released with it). inputs: batch x seq token ids. */
typedef struct ebt_context ebt_context;
ebt_context *ebt_context_new(ts_model *model, ts_ctx *ctx, const int32_t *inputs, int batch,
                             int seq);
/* The same, with the activations distributed through the model's activation
 * hook if it has one and `distribute` (else whole, the hook's linear layers
 * too); ebt_context_new does not distribute. */
ebt_context *ebt_context_new_on(ts_model *model, ts_ctx *ctx, const int32_t *inputs, int batch,
                                int seq, bool distribute);
/* The hook the context's activations go through (models/activation_hook.h),
 * NULL when they are whole. Predictions and energies are then the hook's
 * parts of [batch * seq, V] and [batch * seq, 1]. */
const ts_activation_hook *ebt_context_activations(const ebt_context *context);
/* Computes the observed stream of a landscape now (under the current
 * recording setting), so that later energies reuse it. */
void ebt_context_observe(ts_ctx *ctx, ebt_context *context, int landscape);
/* Energies [batch, seq] of predictions p [batch, seq, V] (probabilities);
 * with distributed activations the hook's parts (above). */
ts_tensor *ebt_energy(ts_ctx *ctx, ebt_context *context, ts_tensor *p, int landscape);

/* The landscape (time-token index) of step t. */
int ebt_landscape_of_step(const ts_model_config *config, int step);
/* Number of time embeddings of a configuration. */
int ebt_landscapes(const ts_model_config *config);
/* Steps the evaluation takes with the model's current (inference) settings. */
int ebt_inference_steps(const ts_model_config *config);

/* Per-token energies of the following evaluations go into trace (NULL
 * stops). Returns false if the model is not an EBT. trace->points must equal
 * ebt_inference_steps + 1 (the energy before every step, then of the final
 * prediction) and trace->seq the evaluated sequence length. */
bool ebt_trace_energies(ts_model *model, ts_energy_trace *trace);

/* `thinkscale eval --energies`: allocates a trace for `windows` windows of
 * seq tokens under the model's current inference settings and attaches it
 * (false with a message if the model is not an EBT or memory runs out). The
 * caller detaches it with ebt_trace_energies(model, NULL), stores it and
 * frees it with ts_energy_trace_free. */
bool ebt_energies_begin(ts_model *model, ts_energy_trace *trace, long windows, int seq, char *err,
                        size_t errlen);

#endif
