/* The CUDA backend's host API (src/cuda/glmm_*.cu): C linkage, no R
 * API, every function returns 0 or a nonzero status with a one-line message
 * in err, and frees what it allocated on every path. Declared whether or not
 * the build has CUDA; only builds with SVIR_HAVE_CUDA define them.
 *
 * What is here (the parts of the CUDA backend a fit on the device builds
 * on; dev/CUDA.md says what has been checked where):
 *   - the model's data uploaded once (y, trials, offset, X, per term its
 *     groups, Z and a by-group index of its observations);
 *   - the pass over the observations: linear predictor (fixed part and every
 *     random-effect term), log-likelihood, and its gradients with respect to
 *     the fixed effects, the random effects and log sigma / log phi;
 *     deterministic (fixed-order reductions, no atomics) for a given device;
 *   - the per-group part of a step, Adam, and a whole full-batch ELBO
 *     estimate with its gradient;
 *   - standard normals from the shared Philox/Box-Muller code
 *     (svir_philox.h), for the parity checks;
 *   - a whole SVI fit (svir_cuda_fit), and QEM's groups (svir_cuda_qem_*,
 *     src/cuda/glmm_qem.cu, driven by infer/svir_qem.c). */
#ifndef SVIR_CUDA_H
#define SVIR_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "core/svir_result.h"
#include "models/glmm/glmm_svi.h"
#include "models/glmm/glmm.h"
#include "models/glmm/glmm_coupling.h"

#ifdef __cplusplus
extern "C" {
#endif

/* most random-effect terms the device pass takes */
#define SVIR_CUDA_MAX_TERMS 16

typedef struct svir_cuda_data svir_cuda_data;

/* Uploads m's data to the current device; *out must be released with
 * svir_cuda_data_free. */
int svir_cuda_data_new(const svir_glmm *m, svir_cuda_data **out, char *err, size_t errlen);
void svir_cuda_data_free(svir_cuda_data *d);

/* One pass over all observations on the device, with host arrays in and
 * out: beta [p], b [nz] (random effects, indexed like z), sigma and phi
 * (ignored where the family has none). Returns ll = sum_i log p(y_i | eta_i)
 * without constants, gbeta [p], gaux (d ll / d log sigma or log phi), and
 * G [nz] = d ll / d b. *ms (if not NULL) gets the device time of the pass in
 * milliseconds (uploads and downloads excluded). */
int svir_cuda_obs_pass_host(svir_cuda_data *d, const double *beta, const double *b,
                            double sigma, double phi, double *ll, double *gbeta, double *gaux,
                            double *G, double *ms, char *err, size_t errlen);

/* out[k] = svir_normal(key(seed), stream, step, first + k), k < count,
 * computed on the device. */
int svir_cuda_normals_host(uint64_t seed, uint64_t stream, uint64_t step, uint64_t first,
                           ptrdiff_t count, double *out, char *err, size_t errlen);

/* Timing for bench/: the median over reps of the device time of one
 * observation pass (beta and b already on the device), the bytes that pass
 * must read from device memory, and the device-to-device copy bandwidth
 * (GB/s, bytes read plus bytes written, cudaMemcpy of `copy_bytes`). */
int svir_cuda_obs_bench(svir_cuda_data *d, int reps, size_t copy_bytes, double *ms_pass,
                        double *bytes_pass, double *copy_gbs, char *err, size_t errlen);

/* The per-group part of one full-batch step on the device, with host arrays
 * in and out (for checks): for every group of every term, the local noise
 * (particle 0 of SVIR_STREAM_LOCAL at `step`), z = m + C noise and b = A z
 * (svir_local_draw, svir_local_b), then from G = d ll / d b the gradient of
 * the local parameters (svir_local_backward with the batch's scale, weight
 * wt = scale, invS = 1, then svir_local_kl), as the CPU engine computes
 * them. lpar [nloc]; A [nqq] (each term's q x q lower triangle, row-major, at
 * off_qq); G [nz]; shift [sum of q] (the coupled guide's w per term) or
 * NULL. Out: z, b [nz], lgrad [nloc], *kl (the sum of the groups' KL terms
 * times wt), *logq (the sum of log q(z_j)) and sums [nqq + 2 sum q]: per
 * term at off_qq dA = sum_j scale G_j z_j^T (lower triangle, row-major; the
 * upper part 0), then per term (at its offset in [sum q]) sum_j m_j, then
 * sum_j z_j: what the global block needs from the groups. */
int svir_cuda_local_step_host(const svir_glmm *m, const double *lpar, const double *A,
                              const double *G, const double *shift, uint64_t seed, uint64_t step,
                              double scale, int stl, double *z, double *b, double *lgrad,
                              double *kl, double *logq, double *sums, char *err, size_t errlen);

/* One ELBO estimate and its gradient on the device, as svir_elbo_grad
 * computes them on the CPU for the same step: S particles, the mean-field
 * or full-rank global guide, stl, the coupled guide's constants cp (ns span
 * columns; from svir_coupling_new), batch_size rows per step (<= 0 or >= n:
 * full batch; else the minibatch of `step`, selected on the device). gpar
 * [n global par], lpar [nloc]; grad [n global par + nloc] (0 for the locals
 * of groups absent from the batch). Every step of estimate() runs on the
 * device; only the ELBO and the gradient come back. */
int svir_cuda_elbo_grad_host(const svir_glmm *m, const svir_coupling *cp, int ns, int fullrank,
                             int stl, int S, ptrdiff_t batch_size, const double *gpar,
                             const double *lpar, uint64_t seed, long step, double *elbo,
                             double *grad, char *err, size_t errlen);

/* A whole fit on the device, as svir_fit on the CPU: the same draws, the
 * same loop (svir_loop.h, run by one device thread), the same results in
 * res, up to the order of floating-point sums. The data are uploaded once;
 * per step nothing crosses to the host, and every 16 steps the loop's state
 * (a few hundred bytes) does, for the stopping test, the interrupt check
 * (cb->interrupted) and cb->progress. The posterior draws kept in the fit
 * (final_draws of the CPU engine) are made on the device too. Returns 0, or
 * a status with a message in err; device memory is freed on every path. */
int svir_cuda_fit(const svir_glmm *m, const svir_control *c, const svir_callbacks *cb,
                  svir_result *res, char *err, size_t errlen);

/* QEM on the device (src/cuda/glmm_qem.cu; infer/svir_qem.c drives it):
 * the groups' draws, tables and M-step there, the globals on the host.
 * svir_cuda_qem_new uploads the data (one grouping factor) and the groups'
 * starting proposals lpar [nloc] and smoothed moments Z1 [J q], Z2 [J q q];
 * svir_cuda_qem_table takes the K draws of the globals (beta [K x p], A [K x
 * q x q], aux [K]), draws each group's z0 with counters `ctr` of `stream`,
 * and returns log m_j(k0) in lm [J x K]; svir_cuda_qem_mstep takes the
 * normalised global weights w0 [K] and the moving average's step et and
 * updates the groups' proposals; svir_cuda_qem_lpar copies them back. */
typedef struct svir_cuda_qem svir_cuda_qem;
int svir_cuda_qem_new(const svir_glmm *m, int K, uint64_t seed, const double *lpar,
                      const double *Z1, const double *Z2, svir_cuda_qem **out, char *err,
                      size_t errlen);
int svir_cuda_qem_table(svir_cuda_qem *x, const double *beta, const double *A,
                        const svir_aux *aux, uint64_t stream, uint64_t ctr, double *lm,
                        char *err, size_t errlen);
int svir_cuda_qem_mstep(svir_cuda_qem *x, const double *w0, double et, char *err, size_t errlen);
int svir_cuda_qem_lpar(svir_cuda_qem *x, double *lpar, char *err, size_t errlen);
void svir_cuda_qem_free(svir_cuda_qem *x);

/* One Adam update on the device, host arrays in and out: par, mom, vel [n]
 * updated in place from g [n] (svir_adam1 per element, as svir_adam). */
int svir_cuda_adam_host(double *par, double *mom, double *vel, const double *g, ptrdiff_t n,
                        double lr, double bc1, double bc2, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
