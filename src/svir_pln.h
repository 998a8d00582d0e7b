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
    int threads;        /* OpenMP threads (results do not depend on them) */
    double *colwork;    /* [2 p] scratch */
} svir_pln_data;

/* The ELBO J at the local parameters par = [M (n x p), log S (n x p)] with
 * B and Sigma at their optimum for them, its gradient grad [2 n p], and
 * those B [d x p] and Sigma [p x p]; work: 3 n p + p^2 doubles. Returns 0,
 * or 1 with a message in err (Sigma not positive definite, J not finite). */
int svir_pln_eval(const svir_pln_data *dat, const double *par, double *J, double *grad,
                  double *B, double *Sigma, double *work, char *err, size_t errlen);

/* On return from svir_pln_eval, work holds R = M - X B [n x p], Omega
 * [p x p], A [n x p] and S^2 [n x p]. svir_pln_fit maximises J from par (updated in
 * place) by L-BFGS scaled by each entry's curvature (see svir_pln.c): at
 * most maxit iterations, stopping when one raises J by less than tol |J|;
 * *J, *iters, the
 * trace of J per step (trace [maxit] or NULL) and the final B and Sigma.
 * Returns 0, 1 (as svir_pln_eval) or 2 (out of memory). */
int svir_pln_fit(const svir_pln_data *dat, double *par, int maxit, double tol, double *J,
                 int *iters, double *trace, double *B, double *Sigma, char *err, size_t errlen);

#endif
