/* The Poisson-lognormal model on the CUDA device (cuda/pln_eval.cu,
 * cuda/pln_lbfgs.cu; the CPU version is models/pln/, dev/PLN.md,
 * dev/CUDA.md). C linkage,
 * no R API; every function returns 0, 1 (the model's own failure, as
 * svir_pln_eval: Sigma not positive definite, J not finite), 2 (host out of
 * memory) or 3 (a CUDA error, or not enough device memory), with a one-line
 * message in err, and frees what it allocated on every path. Declared
 * whether or not the build has CUDA; a build without it has stand-ins that
 * say so (backend/svir_nocuda.c). */
#ifndef SVIR_CUDA_PLN_H
#define SVIR_CUDA_PLN_H

#include <stddef.h>

#include "models/pln/pln.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Device bytes that svir_cuda_pln_fit (fit = 1) or svir_cuda_pln_eval_host
 * (fit = 0) allocates for dat. */
double svir_cuda_pln_bytes(const svir_pln_data *dat, int fit);

/* the current device's free and total memory in bytes (cudaMemGetInfo) */
int svir_cuda_pln_mem(size_t *free_bytes, size_t *total_bytes);

/* svir_pln_eval on the device, host arrays in and out (for the parity
 * checks): J, grad [svir_pln_npar], B [d x p], Sigma [p x p] (left alone in
 * the VE step, as on the CPU). dat->threads and dat->colwork are not used.
 * The data are uploaded, evaluated once and freed. */
int svir_cuda_pln_eval_host(const svir_pln_data *dat, const double *par, double *J, double *grad,
                            double *B, double *Sigma, char *err, size_t errlen);

/* The device's problem for core/svir_lbfgs.c: the data uploaded once,
 * every vector of length npar on the device (its vector space's passes are
 * kernels), the objective, the per-column preconditioner and the S start
 * of the CPU, started at x0 (host); per iteration only scalars and O(p q)
 * (rank), O(p) (diagonal, spherical) or O(p^2) (full: the Cholesky
 * factorisation of Sigma is the host's) doubles cross. *pb is owned by
 * *state; svir_cuda_pln_state_result copies the final point, B and Sigma
 * back. */
typedef struct svir_cuda_pln_state svir_cuda_pln_state;
int svir_cuda_pln_state_new(const svir_pln_data *dat, const double *x0,
                            svir_cuda_pln_state **state, svir_lbfgs_problem **pb, char *err,
                            size_t errlen);
int svir_cuda_pln_state_result(svir_cuda_pln_state *state, double *x, double *B, double *Sigma,
                               char *err, size_t errlen);
void svir_cuda_pln_state_free(svir_cuda_pln_state *state);

/* svir_pln_fit on the device: the same L-BFGS (the S start, 5 pairs, the
 * per-column initial inverse Hessian, Armijo backtracking, the step caps, the
 * stopping rule), every vector of length npar on the device, the data
 * uploaded once, and per iteration only scalars and O(p q) (rank), O(p)
 * (diagonal, spherical) or O(p^2) (full: the Cholesky factorisation of
 * Sigma is the host's) doubles crossing. par [npar] is updated in place;
 * *J, *iters, trace [maxit] (or NULL), B and Sigma as svir_pln_fit. *secs
 * (or NULL) gets the wall time of the fit without the set-up and upload. */
int svir_cuda_pln_fit(const svir_pln_data *dat, double *par, int maxit, double tol, double *J,
                      int *iters, double *trace, double *B, double *Sigma, double *secs,
                      char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
