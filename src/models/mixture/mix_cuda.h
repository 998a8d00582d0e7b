/* Count mixtures on the CUDA device (cuda/mix_dev.cu): the hot loop of an
 * SVI step, the batch's log-likelihood with the labels summed out and its
 * gradient in the globals (mix_model.c's batch_loglik), for the CPU's SVI
 * driver (method = "svi", backend = "cuda"). The per-entry arithmetic is
 * mix_entry.h's, compiled for both. C linkage, no R API; every function
 * returns 0 or 3 (a CUDA error, or not enough device memory; 2: host out
 * of memory; 1: a model the device does not run) with a one-line message
 * in err, and frees what it allocated on every path. Declared whether or
 * not the build has CUDA; a build without it has stand-ins that say so
 * (backend/svir_nocuda.c). */
#ifndef SVIR_MIX_CUDA_H
#define SVIR_MIX_CUDA_H

#include <stddef.h>

#include "models/mixture/mix_model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct svir_cuda_mix svir_cuda_mix;

/* device bytes svir_cuda_mix_new allocates for batches of maxrows rows */
double svir_cuda_mix_bytes(const svir_mix_model *m, int maxrows);

/* m's counts (dense, row-major on the device, or the rows' CSR as given),
 * offsets, covariates and rows' lgamma sums uploaded once, with room for
 * batches of up to maxrows rows. "dirmult" is refused (1). */
int svir_cuda_mix_new(const svir_mix_model *m, int maxrows, svir_cuda_mix **out, char *err,
                      size_t errlen);
void svir_cuda_mix_free(svir_cuda_mix *d);

/* batch_loglik on the device at theta [D] with lp [K] = log pi, for the rows
 * idx [B] (NULL: rows 0 .. B - 1; B <= maxrows): *ll = scale times the sum
 * over the rows of log sum_k pi_k p(y_i | k); with g, scale times its
 * gradient in theta (the likelihood's only: no prior) added to g [D]; with
 * a, each row's log pi_k + log p(y_i | k) into a [B x K] (row b at a + b
 * K). Sums in a fixed order: a given device and launch give the same
 * result every run. */
int svir_cuda_mix_loglik(svir_cuda_mix *d, const double *theta, const double *lp, const int *idx,
                         int B, double scale, double *ll, double *g, double *a, char *err,
                         size_t errlen);

/* the first error a fit's steps met on the device ("" when none): the SVI
 * driver's estimate cannot return one, so svir_mix's CUDA fit reads it
 * here after the run */
const char *svir_cuda_mix_error(const svir_cuda_mix *d);

#ifdef __cplusplus
}
#endif

#endif
