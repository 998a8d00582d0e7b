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

#ifdef _OPENMP
#include <omp.h>
#endif

#include "svir_pln.h"

/* sums in chunks of this many entries, added in chunk order: the same
 * result for any number of threads */
#define PLN_CHUNK 65536

#ifdef _OPENMP
#define PLN_PFOR _Pragma("omp parallel for num_threads(T) schedule(static)")
#else
#define PLN_PFOR
#endif

int svir_pln_eval(const svir_pln_data *dat, const double *par, double *J, double *grad,
                  double *B, double *Sigma, double *work, char *err, size_t errlen)
{
    const int n = dat->n, p = dat->p, d = dat->d;
    const ptrdiff_t np = (ptrdiff_t)n * p;
    const double *M = par, *ls = par + np;
    double *R = work, *Om = work + np, *A = Om + (ptrdiff_t)p * p, *S2a = A + np;
    const int T = dat->threads > 0 ? dat->threads : 1;
    const double one = 1.0, zero = 0.0, minus1 = -1.0;
    /* B = P M (P = (X'X)^-1 X', d x n), R = M - X B */
    if (d > 0) {
        F77_CALL(dgemm)("N", "N", &d, &p, &n, &one, dat->P, &d, M, &n, &zero, B, &d FCONE FCONE);
        memcpy(R, M, sizeof(double) * (size_t)np);
        F77_CALL(dgemm)("N", "N", &n, &p, &d, &minus1, dat->X, &n, B, &d, &one, R, &n FCONE FCONE);
    } else {
        memcpy(R, M, sizeof(double) * (size_t)np);
    }
    /* A, S^2, Y - A (the gradient's first part), the likelihood part of J
     * per column (colv) and sum_i S_ij^2 (s2sum) */
    double *colv = dat->colwork, *s2sum = dat->colwork + p;
#ifdef _OPENMP
#pragma omp parallel for num_threads(T) schedule(static)
#endif
    for (int j = 0; j < p; j++) {
        double s2 = 0.0, lj = 0.0;
        for (int i = 0; i < n; i++) {
            const ptrdiff_t k = (ptrdiff_t)j * n + i;
            const double S2 = exp(2.0 * ls[k]);
            const double eta = (dat->O ? dat->O[k] : 0.0) + M[k];
            S2a[k] = S2;
            A[k] = exp(eta + 0.5 * S2);
            grad[k] = dat->Y[k] - A[k];
            lj += dat->Y[k] * eta - A[k] + ls[k];
            s2 += S2;
        }
        colv[j] = lj;
        s2sum[j] = s2;
    }
    double lik = -dat->lgy;
    for (int j = 0; j < p; j++) lik += colv[j];
    double logdet = 0.0;
    if (dat->cov == SVIR_PLN_FULL) {
        /* Sigma = (R'R + diag(sum S^2)) / n; its Cholesky factor; Omega */
        const double invn = 1.0 / n;
        F77_CALL(dsyrk)("L", "T", &p, &n, &invn, R, &n, &zero, Om, &p FCONE FCONE);
        for (int j = 0; j < p; j++) Om[(ptrdiff_t)j * p + j] += s2sum[j] * invn;
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
        F77_CALL(dsymm)("R", "L", &n, &p, &minus1, Om, &p, R, &n, &one, grad, &n FCONE FCONE);
    } else {
        /* diagonal or spherical: Omega is diagonal */
        double tot = 0.0;
        for (int j = 0; j < p; j++) {
            double s = s2sum[j];
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
    }
    /* dJ/d log S, and with a diagonal Omega the rest of dJ/dM, - R Omega */
    const int diag = dat->cov != SVIR_PLN_FULL;
#ifdef _OPENMP
#pragma omp parallel for num_threads(T) schedule(static)
#endif
    for (int j = 0; j < p; j++) {
        const double w = Om[(ptrdiff_t)j * p + j];
        for (int i = 0; i < n; i++) {
            const ptrdiff_t k = (ptrdiff_t)j * n + i;
            if (diag) grad[k] -= R[k] * w;
            grad[np + k] = 1.0 - S2a[k] * (A[k] + w);
        }
    }
    *J = lik - 0.5 * n * logdet;
    if (!isfinite(*J)) {
        snprintf(err, errlen, "the ELBO is not finite");
        return 1;
    }
    return 0;
}

/* The curvature-scaled inverse Hessian's diagonal at the point evaluated
 * last (work w: R, Omega, A): 1 / (A_ij + Omega_jj) for M_ij, and
 * 1 / (2 S^2 (A + Omega_jj) + S^4 A) for log S_ij (the entries' own
 * second derivatives of -J). */
static void pln_h0(const svir_pln_data *dat, const double *w, double *h0)
{
    const int n = dat->n, p = dat->p;
    const ptrdiff_t np = (ptrdiff_t)n * p;
    const double *Om = w + np, *A = w + np + (ptrdiff_t)p * p, *S2a = A + np;
#ifdef _OPENMP
#pragma omp parallel for num_threads(dat->threads > 0 ? dat->threads : 1) schedule(static)
#endif
    for (int j = 0; j < p; j++) {
        const double oj = Om[(ptrdiff_t)j * p + j];
        for (int i = 0; i < n; i++) {
            const ptrdiff_t k = (ptrdiff_t)j * n + i;
            const double h = A[k] + oj, S2 = S2a[k];
            h0[k] = 1.0 / h;
            h0[np + k] = 1.0 / (2.0 * S2 * h + S2 * S2 * A[k]);
        }
    }
}

/* sum_k a[k] b[k], by chunks added in order (see PLN_CHUNK); part: room
 * for len / PLN_CHUNK + 1 partial sums */
static double dotv(const double *a, const double *b, ptrdiff_t len, int T, double *part)
{
    const ptrdiff_t nc = (len + PLN_CHUNK - 1) / PLN_CHUNK;
#ifdef _OPENMP
#pragma omp parallel for num_threads(T) schedule(static)
#endif
    for (ptrdiff_t c = 0; c < nc; c++) {
        const ptrdiff_t lo = c * PLN_CHUNK, hi = lo + PLN_CHUNK < len ? lo + PLN_CHUNK : len;
        double s = 0.0;
        for (ptrdiff_t k = lo; k < hi; k++) s += a[k] * b[k];
        part[c] = s;
    }
    double s = 0.0;
    for (ptrdiff_t c = 0; c < nc; c++) s += part[c];
    return s;
}

#define PLN_MEM 5

/* Maximises J by L-BFGS (PLN_MEM pairs) on -J whose initial inverse
 * Hessian is each entry's own inverse curvature (pln_h0), re-evaluated at
 * every iterate, with a backtracking (Armijo) line search; a step moves no
 * M entry by more than 2 and no log S by more than 1. It stops when an
 * iteration lowers -J by less than tol |J|, when the line search fails
 * twice in a row (the second time from a steepest-ascent direction), or
 * after maxit iterations. */
int svir_pln_fit(const svir_pln_data *dat, double *par, int maxit, double tol, double *J,
                 int *iters, double *trace, double *B, double *Sigma, char *err, size_t errlen)
{
    const int n = dat->n, p = dat->p;
    const ptrdiff_t np = (ptrdiff_t)n * p, L = 2 * np, nw = 3 * np + (ptrdiff_t)p * p;
    const int T = dat->threads > 0 ? dat->threads : 1;
    double *part = malloc(sizeof(double) * (size_t)(L / PLN_CHUNK + 2));
    double *g = malloc(sizeof(double) * (size_t)L), *g1 = malloc(sizeof(double) * (size_t)L);
    double *w0 = malloc(sizeof(double) * (size_t)nw), *w1 = malloc(sizeof(double) * (size_t)nw);
    double *cand = malloc(sizeof(double) * (size_t)L), *dir = malloc(sizeof(double) * (size_t)L);
    double *h0 = malloc(sizeof(double) * (size_t)L);
    double *S = malloc(sizeof(double) * (size_t)L * PLN_MEM), *Yv = malloc(sizeof(double) * (size_t)L * PLN_MEM);
    double rho[PLN_MEM], alpha[PLN_MEM];
    int st = 0, it = 0, mem = 0, head = 0, fails = 0;
    if (!part || !g || !g1 || !w0 || !w1 || !cand || !dir || !h0 || !S || !Yv) {
        snprintf(err, errlen, "out of memory fitting the Poisson-lognormal model");
        st = 2;
        goto done;
    }
    double f0, f1; /* f = -J, g = -grad */
    st = svir_pln_eval(dat, par, &f0, g, B, Sigma, w0, err, errlen);
    if (st) goto done;
    f0 = -f0;
    PLN_PFOR
    for (ptrdiff_t k = 0; k < L; k++) g[k] = -g[k];
    for (it = 0; it < maxit;) {
        /* the two-loop recursion: dir = -H g */
        pln_h0(dat, w0, h0);
        memcpy(dir, g, sizeof(double) * (size_t)L);
        for (int c = 0; c < mem; c++) {
            const int i = (head - 1 - c + PLN_MEM) % PLN_MEM;
            alpha[i] = rho[i] * dotv(S + (ptrdiff_t)i * L, dir, L, T, part);
            const double *y = Yv + (ptrdiff_t)i * L;
            PLN_PFOR
            for (ptrdiff_t k = 0; k < L; k++) dir[k] -= alpha[i] * y[k];
        }
        PLN_PFOR
        for (ptrdiff_t k = 0; k < L; k++) dir[k] *= h0[k];
        for (int c = mem - 1; c >= 0; c--) {
            const int i = (head - 1 - c + PLN_MEM) % PLN_MEM;
            const double beta = rho[i] * dotv(Yv + (ptrdiff_t)i * L, dir, L, T, part);
            const double *s = S + (ptrdiff_t)i * L;
            PLN_PFOR
            for (ptrdiff_t k = 0; k < L; k++) dir[k] += s[k] * (alpha[i] - beta);
        }
        PLN_PFOR
        for (ptrdiff_t k = 0; k < L; k++) dir[k] = -dir[k];
        double slope = dotv(g, dir, L, T, part);
        if (!(slope < 0.0)) {
            /* not a descent direction: forget the pairs */
            mem = 0;
            for (ptrdiff_t k = 0; k < L; k++) dir[k] = -h0[k] * g[k];
            slope = dotv(g, dir, L, T, part);
        }
        double big = 0.0;
        for (ptrdiff_t k = 0; k < L; k++) {
            const double a = fabs(dir[k]) / (k < np ? 2.0 : 1.0);
            if (a > big) big = a;
        }
        double t = big > 1.0 ? 1.0 / big : 1.0;
        int ok = 0;
        char e1[256];
        for (int tries = 0; tries < 40 && !ok; tries++) {
            PLN_PFOR
            for (ptrdiff_t k = 0; k < L; k++) cand[k] = par[k] + t * dir[k];
            ok = svir_pln_eval(dat, cand, &f1, g1, B, Sigma, w1, e1, sizeof e1) == 0 &&
                 -f1 <= f0 + 1e-4 * t * slope;
            if (!ok) t *= 0.5;
        }
        if (!ok) {
            if (mem == 0 || ++fails > 1) break;
            mem = 0; /* retry once from the scaled steepest direction */
            continue;
        }
        fails = 0;
        f1 = -f1;
        PLN_PFOR
        for (ptrdiff_t k = 0; k < L; k++) g1[k] = -g1[k];
        /* the pair (s, y) of this step */
        double *s = S + (ptrdiff_t)head * L, *y = Yv + (ptrdiff_t)head * L;
        PLN_PFOR
        for (ptrdiff_t k = 0; k < L; k++) {
            s[k] = cand[k] - par[k];
            y[k] = g1[k] - g[k];
        }
        const double sy = dotv(s, y, L, T, part);
        if (sy > 1e-12 * sqrt(dotv(s, s, L, T, part) * dotv(y, y, L, T, part))) {
            rho[head] = 1.0 / sy;
            head = (head + 1) % PLN_MEM;
            if (mem < PLN_MEM) mem++;
        }
        memcpy(par, cand, sizeof(double) * (size_t)L);
        double *tmp = g; g = g1; g1 = tmp;
        tmp = w0; w0 = w1; w1 = tmp;
        const double rel = (f0 - f1) / fabs(f1);
        f0 = f1;
        if (trace) trace[it] = -f0;
        it++;
        if (rel < tol) break;
    }
    /* B and Sigma of the final point */
    st = svir_pln_eval(dat, par, &f0, g, B, Sigma, w0, err, errlen);
    *J = f0;
    *iters = it;
done:
    free(part); free(g); free(g1); free(w0); free(w1); free(cand); free(dir); free(h0); free(S);
    free(Yv);
    return st;
}
