/* The Poisson-lognormal model's exact posterior of B and Sigma by MCMC
 * (pln_mcmc() in R; dev/PLN.md, "A posterior for Sigma"): Metropolis within
 * Gibbs over the latent rows Z, the coefficients B and the covariance Sigma
 * under the priors of pln(globals = "bayes") (B flat, Sigma ~
 * inverse-Wishart(nu0, s0 I)). One iteration:
 *   1. each row Z_i | B, Sigma, y_i: an independence Metropolis-Hastings
 *      step whose proposal is the Laplace approximation of that
 *      conditional, N(mode, H^-1), the mode found by Newton's method from
 *      the current Z_i;
 *   2. (B, Sigma) | Z exactly: Sigma ~ inverse-Wishart(nu0 + n - d, s0 I +
 *      R'R) with R the least-squares residuals of Z on X, then B | Sigma
 *      matrix normal(B^, (X'X)^-1, Sigma);
 *   3. per column j, moves along the ridges between the latent column and
 *      the globals, each leaving the joint posterior invariant: the shift
 *      of Z_.j with the intercept B_0j (drawn exactly: exp(shift) ~
 *      Gamma(sum_i y_ij, sum_i exp(o_ij + z_ij))); the shift of Z_.j along
 *      each other covariate X_.k with B_kj (random-walk MH, step 2.4 over
 *      the square root of the curvature at the start); and the scale of
 *      Z_.j's residuals with Sigma's row and column j (random-walk MH on
 *      the log scale, step tau).
 * Random numbers: Philox (core/svir_philox.h), streams
 * SVIR_STREAM_PLN_MCMC and SVIR_STREAM_PLN_MCMC_U, step = iteration. */
#ifndef SVIR_PLN_GIBBS_H
#define SVIR_PLN_GIBBS_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int n, p, d;
    const double *Y;   /* [n x p] counts, column-major */
    const double *X;   /* [n x d] */
    const double *O;   /* [n x p] offsets */
    double nu0, s0;    /* Sigma's prior inverse-Wishart(nu0, s0 I) */
    int icpt;          /* the column of X of ones (0-based), or -1: no shift move */
    double tau;        /* the scale move's step on log c; 0: no scale move */
} svir_pln_mcmc_data;

/* Runs `iter` iterations from (Z [n x p], B [d x p], Sigma [p x p]),
 * column-major, updated in place to the last state; after `warmup` of them
 * keeps every `thin`-th state: Bd [ndraw x (d p)] and Sd [ndraw x (p p)]
 * (draw k's entries at k, k + ndraw, ...), ndraw = (iter - warmup) / thin.
 * acc[0]: the rows' acceptance rate, acc[1]: the scale moves', acc[2]: the
 * covariate shifts'. Returns 0,
 * 1 (bad input or a matrix that is not positive definite, message in err),
 * 2 (out of memory) or SVIR_INTERRUPTED. */
int svir_pln_mcmc(const svir_pln_mcmc_data *dat, double *Z, double *B, double *Sigma, long iter,
                  long warmup, int thin, uint64_t seed, double *Bd, double *Sd, double *acc,
                  char *err, size_t errlen);

#endif
