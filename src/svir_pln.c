/* The Poisson-lognormal model (issue 5, first increment; dev/PLN.md): the
 * variational EM objective with the global parameters profiled out, and its
 * gradient, for an optimiser over the local parameters. Uses R's BLAS and
 * LAPACK (the headers declare the Fortran routines only; no other R API).
 *
 * Model: Z_i ~ N(X_i B, Sigma), Y_ij ~ Poisson(exp(O_ij + Z_ij)). Guide:
 * q(Z_i) = N(M_i, diag(S_i^2)), so that E exp(Z_ij) = exp(M_ij + S_ij^2 / 2)
 * in closed form and the local part has no Monte Carlo noise. For given (M,
 * S) the ELBO is maximised by
 *   B = (X'X)^-1 X'M,  R = M - X B,
 *   Sigma = (R'R + diag(sum_i S_i^2)) / n          (full),
 *   Sigma_jj = sum_i (R_ij^2 + S_ij^2) / n          (diagonal),
 *   sigma^2 = sum_ij (R_ij^2 + S_ij^2) / (n p)      (spherical),
 * and the ELBO at those values (the trace term is then n p / 2 and cancels
 * the entropy's constant) is
 *   J(M, S) = sum_ij [Y_ij (O_ij + M_ij) - A_ij - log Y_ij! + log S_ij]
 *             - n/2 log |Sigma|,   A_ij = exp(O_ij + M_ij + S_ij^2 / 2),
 * with gradient (envelope theorem; Omega = Sigma^-1)
 *   dJ/dM = Y - A - R Omega,  dJ/d log S_ij = 1 - S_ij^2 (A_ij + Omega_jj).
 * This is what PLNmodels maximises; here it is one pass of BLAS-3 work. */
#ifndef USE_FC_LEN_T
#define USE_FC_LEN_T
#endif
#include <R_ext/BLAS.h>
#include <R_ext/Lapack.h>
#ifndef FCONE
#define FCONE
#endif

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "svir_pln.h"

int svir_pln_eval(const svir_pln_data *dat, const double *par, double *J, double *grad,
                  double *B, double *Sigma, double *work, char *err, size_t errlen)
{
    const int n = dat->n, p = dat->p, d = dat->d;
    const ptrdiff_t np = (ptrdiff_t)n * p;
    const double *M = par, *ls = par + np;
    double *R = work, *Om = work + np, *A = Om + (ptrdiff_t)p * p;
    const double one = 1.0, zero = 0.0, minus1 = -1.0;
    /* B = P M (P = (X'X)^-1 X', d x n), R = M - X B */
    if (d > 0) {
        F77_CALL(dgemm)("N", "N", &d, &p, &n, &one, dat->P, &d, M, &n, &zero, B, &d FCONE FCONE);
        memcpy(R, M, sizeof(double) * (size_t)np);
        F77_CALL(dgemm)("N", "N", &n, &p, &d, &minus1, dat->X, &n, B, &d, &one, R, &n FCONE FCONE);
    } else {
        memcpy(R, M, sizeof(double) * (size_t)np);
    }
    /* A, the likelihood part of J, and sum_i S_ij^2 per column */
    double lik = 0.0;
    for (int j = 0; j < p; j++) {
        double s2 = 0.0;
        for (int i = 0; i < n; i++) {
            const ptrdiff_t k = (ptrdiff_t)j * n + i;
            const double S2 = exp(2.0 * ls[k]);
            const double eta = (dat->O ? dat->O[k] : 0.0) + M[k];
            A[k] = exp(eta + 0.5 * S2);
            lik += dat->Y[k] * eta - A[k] + ls[k];
            s2 += S2;
        }
        Om[(ptrdiff_t)j * p + j] = s2; /* diag(sum_i S^2), added below */
    }
    lik -= dat->lgy;
    double logdet = 0.0;
    if (dat->cov == SVIR_PLN_FULL) {
        /* Sigma = (R'R + diag(sum S^2)) / n; its Cholesky factor; Omega */
        double *dg = grad; /* keep the diagonal sums while dsyrk overwrites */
        for (int j = 0; j < p; j++) dg[j] = Om[(ptrdiff_t)j * p + j];
        const double invn = 1.0 / n;
        F77_CALL(dsyrk)("L", "T", &p, &n, &invn, R, &n, &zero, Om, &p FCONE FCONE);
        for (int j = 0; j < p; j++) Om[(ptrdiff_t)j * p + j] += dg[j] * invn;
        for (int j = 0; j < p; j++)
            for (int i = j; i < p; i++) Sigma[(ptrdiff_t)j * p + i] = Sigma[(ptrdiff_t)i * p + j] = Om[(ptrdiff_t)j * p + i];
        int info = 0;
        F77_CALL(dpotrf)("L", &p, Om, &p, &info FCONE);
        if (info != 0) {
            snprintf(err, errlen, "the estimated covariance matrix is not positive definite "
                     "(leading minor %d)", info);
            return 1;
        }
        for (int j = 0; j < p; j++) logdet += 2.0 * log(Om[(ptrdiff_t)j * p + j]);
        F77_CALL(dpotri)("L", &p, Om, &p, &info FCONE);
        if (info != 0) {
            snprintf(err, errlen, "the estimated covariance matrix is singular");
            return 1;
        }
        for (int j = 0; j < p; j++)
            for (int i = j + 1; i < p; i++) Om[(ptrdiff_t)i * p + j] = Om[(ptrdiff_t)j * p + i];
        /* dJ/dM = Y - A - R Omega */
        for (ptrdiff_t k = 0; k < np; k++) grad[k] = dat->Y[k] - A[k];
        F77_CALL(dsymm)("R", "L", &n, &p, &minus1, Om, &p, R, &n, &one, grad, &n FCONE FCONE);
    } else {
        /* diagonal or spherical: Omega is diagonal */
        double tot = 0.0;
        for (int j = 0; j < p; j++) {
            double s = Om[(ptrdiff_t)j * p + j];
            for (int i = 0; i < n; i++) s += R[(ptrdiff_t)j * n + i] * R[(ptrdiff_t)j * n + i];
            Om[(ptrdiff_t)j * p + j] = s / n;
            tot += s;
        }
        for (int j = 0; j < p; j++) {
            const double v = dat->cov == SVIR_PLN_SPHERICAL ? tot / ((double)n * p) : Om[(ptrdiff_t)j * p + j];
            if (!(v > 0.0) || !isfinite(v)) {
                snprintf(err, errlen, "the estimated variance of column %d is not positive", j + 1);
                return 1;
            }
            Om[(ptrdiff_t)j * p + j] = 1.0 / v;
            logdet += log(v);
            for (int i = 0; i < p; i++) Sigma[(ptrdiff_t)j * p + i] = i == j ? v : 0.0;
        }
        for (int j = 0; j < p; j++) {
            const double w = Om[(ptrdiff_t)j * p + j];
            for (int i = 0; i < n; i++) {
                const ptrdiff_t k = (ptrdiff_t)j * n + i;
                grad[k] = dat->Y[k] - A[k] - R[k] * w;
            }
        }
    }
    /* dJ/d log S */
    for (int j = 0; j < p; j++) {
        const double w = Om[(ptrdiff_t)j * p + j];
        for (int i = 0; i < n; i++) {
            const ptrdiff_t k = (ptrdiff_t)j * n + i;
            grad[np + k] = 1.0 - exp(2.0 * ls[k]) * (A[k] + w);
        }
    }
    *J = lik - 0.5 * n * logdet;
    if (!isfinite(*J)) {
        snprintf(err, errlen, "the ELBO is not finite");
        return 1;
    }
    return 0;
}
