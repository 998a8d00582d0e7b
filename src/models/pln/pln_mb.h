/* The Poisson-lognormal model in minibatches of rows: incremental
 * variational EM (src/svir_pln_mb.c). */
#ifndef SVIR_PLN_MB_H
#define SVIR_PLN_MB_H

#include <stdint.h>
#include "models/pln/pln.h"

typedef struct {
    const svir_pln_data *dat;  /* all rows (dense Y, or sparse: Y NULL and the rows below) */
    const int *Rp, *Rj;        /* sparse counts by rows: row starts [n + 1], columns */
    const double *Rx;          /*   and values */
    const double *XtXinv;      /* (X'X)^-1 [d x d] */
} svir_pln_mb_data;

/* Fits from par = [M, log S (n x p each), and for rank q W (p x q), log
 * psi (p)], updated in place: minibatches of `batch` rows, at most
 * max_steps of them, `inner` L-BFGS iterations of the VE step per
 * minibatch, fa_iters factor-analysis EM iterations per M step (rank q),
 * stopping when an epoch raises the ELBO by less than tol |J|. trace gets
 * the ELBO after each epoch (room for max_steps), B [d x p] and Sigma
 * [p x p] the final globals. Returns 0, 1 (numerical failure, message in
 * err) or 2 (out of memory). */
int svir_pln_mb_fit(const svir_pln_mb_data *mb, double *par, int batch, int max_steps, int inner,
                    int fa_iters, double tol, uint64_t seed, double *trace, int *epochs,
                    int *steps, double *J, double *B, double *Sigma, char *err, size_t errlen);

#endif
