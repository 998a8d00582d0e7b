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
 *      R'R) with R the least-squares residuals of Z on X (a diagonal or
 *      spherical Sigma: inverse-gamma variances), then B | Sigma matrix
 *      normal(B^, (X'X)^-1, Sigma);
 *   3. per column j, moves along the ridges between the latent column and
 *      the globals, each leaving the joint posterior invariant: the shift
 *      of Z_.j with the intercept B_0j (drawn exactly: exp(shift) ~
 *      Gamma(sum_i y_ij, sum_i exp(o_ij + z_ij))); the shift of Z_.j along
 *      each other covariate X_.k with B_kj (random-walk MH, step 2.4 over
 *      the square root of the curvature at the start); and the scale of
 *      Z_.j's residuals with Sigma's row and column j (random-walk MH on
 *      the log scale, step tau).
 * Random numbers: Philox (core/svir_philox.h), streams
 * SVIR_STREAM_PLN_MCMC and SVIR_STREAM_PLN_MCMC_U, step = iteration + chain
 * 2^40. */
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
    int cov;           /* 0 full; 1 diagonal, 2 spherical: each variance (the one)
                        * inverse-gamma(a0, s0 / 2) */
    double a0;
    int icpt;          /* the column of X of ones (0-based), or -1: no shift move */
    double tau;        /* the scale move's step on log c; 0: no scale move */
    int chain;         /* the chain (its random-number streams) */
} svir_pln_mcmc_data;

/* Runs iterations it0 .. it0 + nit - 1 of chain dat->chain (its random
 * numbers: step it + chain 2^40) from (Z [n x p], B [d x p], Sigma [p x p]),
 * column-major, updated in place to the last state; xstep [d x p] holds
 * the covariate shifts' steps (set at iteration 0, kept after). Iteration
 * it is kept when it >= warmup and (it - warmup + 1) is a multiple of
 * thin: Bd [ld x (d p)] and Sd [ld x (p p)] get the kept states in rows 0
 * .. *nkept - 1 (at most ld). cnt [6] is added to: accepted rows, rows
 * proposed, accepted scale moves, scale moves, accepted covariate shifts,
 * covariate shifts. Returns 0, 1 (a matrix that is not positive definite,
 * message in err) or 2 (out of memory). Runs as a block of iterations so
 * that the host can check for interrupts between blocks; chains are
 * independent and may run on threads of their own. */
int svir_pln_mcmc(const svir_pln_mcmc_data *dat, double *Z, double *B, double *Sigma, double *xstep,
                  long it0, long nit, long warmup, int thin, uint64_t seed, double *Bd, double *Sd,
                  long ld, long *nkept, double *cnt, char *err, size_t errlen);

#endif
