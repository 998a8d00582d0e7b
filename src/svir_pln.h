/* The Poisson-lognormal model's profiled variational objective
 * (src/svir_pln.c; issue 5, dev/PLN.md). */
#ifndef SVIR_PLN_H
#define SVIR_PLN_H

#include <stddef.h>

enum { SVIR_PLN_FULL = 0, SVIR_PLN_DIAGONAL = 1, SVIR_PLN_SPHERICAL = 2 };

typedef struct {
    int n, p, d;        /* rows, count columns, covariates */
    int cov;            /* SVIR_PLN_* */
    const double *Y;    /* [n x p] counts, column-major */
    const double *O;    /* [n x p] offsets, or NULL */
    const double *X;    /* [n x d] covariates */
    const double *P;    /* [d x n] (X'X)^-1 X' */
    double lgy;         /* sum_ij log Y_ij! */
} svir_pln_data;

/* The ELBO J at the local parameters par = [M (n x p), log S (n x p)] with
 * B and Sigma at their optimum for them, its gradient grad [2 n p], and
 * those B [d x p] and Sigma [p x p]; work: 2 n p + p^2 doubles. Returns 0,
 * or 1 with a message in err (Sigma not positive definite, J not finite). */
int svir_pln_eval(const svir_pln_data *dat, const double *par, double *J, double *grad,
                  double *B, double *Sigma, double *work, char *err, size_t errlen);

#endif
