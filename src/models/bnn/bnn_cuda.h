/* Bayesian networks on the CUDA device (cuda/bnn_dev.cu): the O(rows x
 * width) part of an SVI step, bnn_model.c's tiles, for the CPU's SVI
 * driver (method = "svi", backend = "cuda"): the input rows gathered, each
 * layer's pre-activations by the local reparameterisation (the products
 * through cuBLAS over the whole stacked batch, the noise the CPU's own,
 * svir_zig.h's blocks per tile and column), the likelihood, and the
 * backward pass. The KL, log sigma's terms and the loop stay on the host.
 * C linkage, no R API; every function returns 0 or 3 (a CUDA or cuBLAS
 * error, or not enough device memory; 2: host out of memory) with a
 * one-line message in err, and frees what it allocated on every path.
 * Declared whether or not the build has CUDA; a build without it has
 * stand-ins that say so (backend/svir_nocuda.c). */
#ifndef SVIR_BNN_CUDA_H
#define SVIR_BNN_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "models/bnn/bnn_model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct svir_cuda_bnn svir_cuda_bnn;

/* device bytes svir_cuda_bnn_new allocates for batches of B rows and S
 * particles */
double svir_cuda_bnn_bytes(const svir_bnn_model *m, ptrdiff_t B, int S);

/* m's X and y uploaded once, with room for batches of B rows and S
 * particles (R = B S stacked rows, row s B + b: batch row b of particle
 * s), the noise in tiles of TR stacked rows (bnn_model.c's, so that the
 * noise is the CPU's) under the key `key` */
int svir_cuda_bnn_new(const svir_bnn_model *m, ptrdiff_t B, int S, ptrdiff_t TR,
                      const uint32_t key[2], svir_cuda_bnn **out, char *err, size_t errlen);
void svir_cuda_bnn_free(svir_cuda_bnn *d);

/* The batch's part of step `step`'s estimate at the guide's means mu [D]
 * and variances s2 [D], with log sigma lsig [S] and sigma sig [S] per
 * particle (gaussian; else ignored), for the rows idx [B] (NULL: rows 0 ..
 * B - 1), each stacked row weighted wt: g [2 D] = the sums over rows of
 * d/d mu (weights and biases) and, in g + D, (A^2)' dV for the weights
 * and 2 s2 sum dV for the biases (bnn_model.c's lane sums; 0 elsewhere);
 * *ll = the weighted log-likelihood; gs [S] = the weighted d/d log sigma
 * per particle (gaussian; else 0). Sums in a fixed order: a given device
 * gives the same result every run. */
int svir_cuda_bnn_step(svir_cuda_bnn *d, const double *mu, const double *s2, const double *lsig,
                       const double *sig, const int *idx, long step, double wt, double *g,
                       double *ll, double *gs, char *err, size_t errlen);

/* the first error a fit's steps met on the device ("" when none): the SVI
 * driver's estimate cannot return one, so the network's CUDA fit reads it
 * here after the run */
const char *svir_cuda_bnn_error(const svir_cuda_bnn *d);

#ifdef __cplusplus
}
#endif

#endif
