/* The Poisson-lognormal model (issue 5; dev/PLN.md): the variational EM
 * objective with the global parameters profiled out where they have a
 * closed form, and its gradient, for an optimiser over the rest. Uses R's
 * BLAS and LAPACK (the headers declare the Fortran routines only; no other
 * R API).
 *
 * Model: Z_i ~ N(X_i B, Sigma), Y_ij ~ Poisson(exp(O_ij + Z_ij)). Guide:
 * q(Z_i) = N(M_i, diag(S_i^2)), so that E exp(Z_ij) = exp(M_ij + S_ij^2 / 2)
 * in closed form and the local part has no Monte Carlo noise. With
 * C = R'R + diag(sum_i S_i^2), R = M - X B, the ELBO is
 *   J = sum_ij [Y_ij (O_ij + M_ij) - A_ij - log Y_ij! + log S_ij] + n p / 2
 *       - nd / 2 log |Sigma| - tr(Sigma^-1 C) / 2,
 * A_ij = exp(O_ij + M_ij + S_ij^2 / 2); nd = n, or n - d when B has the
 * Gaussian posterior N(B^, Sigma (x) (X'X)^-1) (its entropy adds
 * d / 2 log |Sigma|, its spread d p / 2 to the trace; the constants are
 * added in R). For given (M, S) the ELBO is maximised by
 *   B = (X'X)^-1 X'M,
 *   Sigma = C / nd (full), its diagonal (diagonal),
 *   tr(C) / (nd p) I (spherical),
 * where the trace term is nd p / 2, and by the envelope theorem the
 * gradient at those values is the partial one (Omega = Sigma^-1).
 * With globals = "bayes" (no rank) Sigma has a conjugate prior too
 * (inverse-Wishart(df, s0 I) for a full Sigma, inverse-gamma for the
 * variances of the others) and a posterior q(Sigma) of the same family;
 * Sigma here is then its posterior mean (C + s0 I) / (nd + k0) (spherical:
 * (tr C + s0) / ((nd + k0) p)), k0 = df - p - 1 (R sets k0 and s0), the
 * log-determinant's weight is nd + k0, and the gradient keeps its form
 * (dev/PLN.md):
 *   dJ/dM = Y - A - R Omega,  dJ/d log S_ij = 1 - S_ij^2 (A_ij + Omega_jj).
 * This is what PLNmodels maximises; here it is one pass of BLAS-3 work.
 * For rank q, Sigma = W W' + diag(psi) has no closed-form optimum: W and
 * log psi join the parameters, dJ/dSigma = Gamma = (Omega C Omega -
 * nd Omega) / 2 gives dJ/dW = 2 Gamma W and dJ/d log psi_j = psi_j
 * Gamma_jj, and Omega is applied by the Woodbury identity, so one
 * evaluation is O(n p (d + q)) with no p x p matrix but the reported
 * Sigma. The VE step (Bfix, Omfix: new rows given fitted B and Sigma)
 * holds B and Omega fixed. */
#include "core/svir_lapack.h"
#include "core/svir_result.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "models/pln/pln_work.h"
#include "models/pln/pln_entry.h"

ptrdiff_t svir_pln_npar(const svir_pln_data *dat)
{
    if (dat->cov == SVIR_PLN_PCA) return svir_pln_pca_npar(dat);
    const ptrdiff_t np = (ptrdiff_t)dat->n * dat->p;
    return 2 * np + (dat->cov == SVIR_PLN_RANK && !dat->Bfix ? (ptrdiff_t)dat->p * (dat->q + 1) : 0);
}

ptrdiff_t svir_pln_nwork(const svir_pln_data *dat)
{
    const ptrdiff_t n = dat->n, p = dat->p, q = dat->cov == SVIR_PLN_RANK ? dat->q : 0;
    return 4 * n * p + p * p + 2 * p + (q > 0 ? 6 * p * q + p + n * q + 3 * q * q : 0);
}

/* The n p^2 products of a full Sigma and the n p q products of rank q run
 * in pieces with an interrupt poll between them (pln_blas.c): one call at
 * n = 30000, p = 1500 would run for tens of seconds that Ctrl-C could not
 * stop. */
/* Sigma = W W' + diag(exp(lpsi)) by the Woodbury identity, never formed:
 * 1 / psi, V = Psi^-1 W, K - I = W' V, K^-1, G = V K^-1, diag(Omega) (omd),
 * log |Sigma| and T = R Omega = R Psi^-1 - (R G) V' into w (the rank
 * parts of the work). Returns 0, or 1 with a message. */
static int pln_woodbury(const svir_pln_data *dat, const double *W, const double *lpsi,
                        const double *R, pln_work *wp, double *logdet_out, char *err,
                        size_t errlen)
{
    const int n = dat->n, p = dat->p, q = dat->q;
    const int T = dat->threads > 0 ? dat->threads : 1;
    const double one = 1.0, zero = 0.0, minus1 = -1.0;
    pln_work w = *wp;
    double *omd = w.omd;
    double logdet = 0.0;
    if (svir_pln_wb_small(p, q, W, lpsi, w.ipsi, w.V, w.KmI, w.K, w.G, omd, &logdet, err, errlen))
        return 1;
    /* T = R Omega = R Psi^-1 - (R G) V' */
    if (svir_pln_gemm_rows_polled("N", n, q, p, one, R, n, w.G, p, zero, w.NQ, n)) goto stop;
#ifdef _OPENMP
#pragma omp parallel for num_threads(T) schedule(static)
#endif
    for (int j = 0; j < p; j++)
        for (ptrdiff_t k = (ptrdiff_t)j * n; k < (ptrdiff_t)(j + 1) * n; k++) w.T[k] = R[k] * w.ipsi[j];
    if (svir_pln_gemm_rows_polled("T", n, p, q, minus1, w.NQ, n, w.V, p, one, w.T, n)) goto stop;
    *logdet_out = logdet;
    return 0;
stop:
    snprintf(err, errlen, "interrupted");
    return 1;
}

int svir_pln_eval(const svir_pln_data *dat, const double *par, double *J, double *grad,
                  double *B, double *Sigma, double *work, char *err, size_t errlen)
{
    const int n = dat->n, p = dat->p, d = dat->d, q = dat->q;
    const ptrdiff_t np = (ptrdiff_t)n * p;
    const double *M = par, *ls = par + np;
    pln_work w = pln_split(dat, work);
    double *R = w.R, *A = w.A, *S2a = w.S2, *omd = w.omd;
    const int T = dat->threads > 0 ? dat->threads : 1;
    const double one = 1.0, zero = 0.0, minus1 = -1.0, nd = dat->nd;
    /* Sigma's closed form divides by nk (the prior's k0 added) */
    const double nk = nd + dat->k0, s0 = dat->s0;
    const int fixed = dat->Bfix != NULL;
    /* B = P M (P = (X'X)^-1 X', d x n) or the fixed B, R = M - X B: for
     * d <= 8 column by column below (the same sums, in the same order, as
     * the reference BLAS's two GEMMs here, which are slow with d rows) */
    const int colR = d <= 8;
    if (!colR) {
        if (fixed)
            memcpy(B, dat->Bfix, sizeof(double) * (size_t)d * p);
        else if (svir_pln_gemm_inner_polled("N", d, p, n, one, dat->P, d, M, n, zero, B, d))
            goto stop;
        memcpy(R, M, sizeof(double) * (size_t)np);
        if (svir_pln_gemm_rows_polled("N", n, p, d, minus1, dat->X, n, B, d, one, R, n)) goto stop;
    }
    /* With a diagonal Sigma every column is on its own: its Sigma_jj and
     * gradient are finished in the same pass, while the column is in cache
     * (R in a per-thread buffer, not stored) */
    const int fuse = colR && dat->cov == SVIR_PLN_DIAGONAL && !fixed;
    double *rbuf = fuse ? malloc(sizeof(double) * (size_t)n * (size_t)T) : NULL;
    if (fuse && !rbuf) {
        snprintf(err, errlen, "out of memory evaluating the Poisson-lognormal objective");
        return 1;
    }
    /* A, S^2, Y - A (the gradient's first part), the likelihood part of J
     * per column (colv) and sum_i S_ij^2 (s2sum); the counts dense or
     * sparse (only the non-zero ones are visited) */
    double *colv = dat->colwork, *s2sum = dat->colwork + p, *colt = dat->colwork + 2 * p;
#ifdef _OPENMP
#pragma omp parallel num_threads(T)
#endif
    {
#ifdef _OPENMP
    double *rb = fuse ? rbuf + (ptrdiff_t)n * omp_get_thread_num() : NULL;
#else
    double *rb = rbuf;
#endif
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
    for (int j = 0; j < p; j++) {
        if (svir_poll()) continue; /* the host asked to stop */
        double s2 = 0.0, lj = 0.0;
        const ptrdiff_t c = (ptrdiff_t)j * n;
        double *Rj = fuse ? rb : R + c;
        if (colR) {
            const double *Mj = M + c, *P = dat->P, *X = dat->X;
            double b[8];
            if (fixed) {
                for (int a = 0; a < d; a++) b[a] = dat->Bfix[(ptrdiff_t)j * d + a];
            } else {
                for (int a = 0; a < d; a++) b[a] = 0.0;
                for (int i = 0; i < n; i++)
                    for (int a = 0; a < d; a++) b[a] += Mj[i] * P[(ptrdiff_t)i * d + a];
            }
            for (int a = 0; a < d; a++) B[(ptrdiff_t)j * d + a] = b[a];
            for (int i = 0; i < n; i++) Rj[i] = Mj[i];
            for (int a = 0; a < d; a++) {
                const double nb = -b[a], *Xa = X + (ptrdiff_t)a * n;
                for (int i = 0; i < n; i++) Rj[i] += nb * Xa[i];
            }
        }
        for (int i = 0; i < n; i++) {
            const ptrdiff_t k = c + i;
            const double S2 = exp(2.0 * ls[k]);
            const double o = dat->O ? dat->O[k] : dat->Orow ? dat->Orow[i] : 0.0;
            S2a[k] = S2;
            A[k] = exp(o + M[k] + 0.5 * S2);
            if (dat->Y) {
                grad[k] = dat->Y[k] - A[k];
                lj += dat->Y[k] * (o + M[k]) - A[k] + ls[k];
            } else {
                grad[k] = -A[k];
                lj += ls[k] - A[k];
            }
            s2 += S2;
        }
        if (!dat->Y) {
            for (int z = dat->Yp[j]; z < dat->Yp[j + 1]; z++) {
                const int i = dat->Yi[z];
                const ptrdiff_t k = c + i;
                const double o = dat->O ? dat->O[k] : dat->Orow ? dat->Orow[i] : 0.0;
                grad[k] += dat->Yx[z];
                lj += dat->Yx[z] * (o + M[k]);
            }
        }
        colv[j] = lj;
        s2sum[j] = s2;
        if (fuse) {
            /* Sigma_jj = (sum_i R_ij^2 + S_ij^2 + s0) / nk (in colt), and the
             * gradient's rest: - R_ij / Sigma_jj, 1 - S^2 (A + 1 / Sigma_jj) */
            double sj = s2;
            for (int i = 0; i < n; i++) sj += Rj[i] * Rj[i];
            const double v = (sj + s0) / nk;
            colt[j] = v;
            if (v > 0.0 && isfinite(v)) {
                const double o = 1.0 / v;
                omd[j] = o;
                for (int i = 0; i < n; i++) {
                    const ptrdiff_t k = c + i;
                    grad[k] -= Rj[i] * o;
                    grad[np + k] = 1.0 - S2a[k] * (A[k] + o);
                }
            }
        }
    }
    }
    free(rbuf);
    const double lik = sumv(colv, p) - dat->lgy;
    int diag = 0; /* Omega diagonal: dJ/dM's - R Omega is added below */
    if (fixed) {
        /* the VE step: T = R Omega, J = lik + n p / 2 + n / 2 log |Omega|
         * - tr(Omega (R'R + diag(s2sum))) / 2 */
        const double *Om = dat->Omfix;
        double logdet_om = dat->logdet_om;
        if (dat->Wfix) {
            /* Sigma = W W' + Psi held: Omega by Woodbury, O(n p q) */
            double ld = 0.0;
            if (pln_woodbury(dat, dat->Wfix, dat->lpsifix, R, &w, &ld, err, errlen)) return 1;
            logdet_om = -ld;
        } else {
            if (svir_pln_symm_polled(n, p, one, Om, R, zero, w.T)) goto stop;
        }
#ifdef _OPENMP
#pragma omp parallel for num_threads(T) schedule(static)
#endif
        for (int j = 0; j < p; j++) {
            if (svir_poll()) continue; /* the host asked to stop */
            double s = 0.0;
            for (ptrdiff_t k = (ptrdiff_t)j * n; k < (ptrdiff_t)(j + 1) * n; k++) {
                s += R[k] * w.T[k];
                grad[k] -= w.T[k];
            }
            if (!dat->Wfix) omd[j] = Om[(ptrdiff_t)j * p + j];
            colt[j] = s + s2sum[j] * omd[j];
        }
        *J = lik + 0.5 * (double)np + 0.5 * n * logdet_om - 0.5 * sumv(colt, p);
    } else if (dat->cov == SVIR_PLN_FULL) {
        /* Sigma = (R'R + diag(sum S^2) + s0 I) / nk; its Cholesky factor;
         * Omega */
        double *Om = w.Om;
        const double invn = 1.0 / nk;
        double logdet = 0.0;
        /* R'R as (R')(R')' (SYRK "N" on the transpose, in T): the reference
         * BLAS computes SYRK "T" by dot products (one serial chain per
         * entry) and "N" by AXPYs, which vectorise (4 times faster here);
         * an optimised BLAS does both at the same speed */
        double *Rt = w.T;
#ifdef _OPENMP
#pragma omp parallel for num_threads(T) schedule(static)
#endif
        for (int i0 = 0; i0 < n; i0 += 64) {
            if (svir_poll()) continue; /* the host asked to stop */
            const int i1 = i0 + 64 < n ? i0 + 64 : n;
            for (int j = 0; j < p; j++)
                for (int i = i0; i < i1; i++) Rt[(ptrdiff_t)i * p + j] = R[(ptrdiff_t)j * n + i];
        }
        if (svir_pln_syrk_polled("N", p, n, invn, Rt, p, 0.0, Om)) goto stop;
        for (int j = 0; j < p; j++) Om[(ptrdiff_t)j * p + j] += (s2sum[j] + s0) * invn;
        for (int j = 0; j < p; j++)
            for (int i = j; i < p; i++) Sigma[(ptrdiff_t)j * p + i] = Sigma[(ptrdiff_t)i * p + j] = Om[(ptrdiff_t)j * p + i];
        if (svir_pln_spd_inverse(p, Om, omd, &logdet, err, errlen)) return 1;
        /* dJ/dM = Y - A - R Omega */
        if (svir_pln_symm_polled(n, p, minus1, Om, R, one, grad)) goto stop;
        /* at the optimum tr(Omega (R'R + diag(s2sum) + s0 I)) = nk p; the
         * constant is the one without a prior (R adds the prior's) */
        *J = lik - 0.5 * nk * logdet + 0.5 * (n - nd) * p;
    } else if (dat->cov == SVIR_PLN_RANK) {
        /* Sigma = W W' + Psi: Omega = Psi^-1 - G V' with V = Psi^-1 W,
         * K = I + W' V, G = V K^-1 (Woodbury), never formed */
        const double *W = par + 2 * np, *lpsi = W + (ptrdiff_t)p * q;
        double logdet = 0.0;
        if (pln_woodbury(dat, W, lpsi, R, &w, &logdet, err, errlen)) return 1;
        /* dJ/dM -= T; tr(Omega C) per column; sum_i T_ij^2 (in colv) */
#ifdef _OPENMP
#pragma omp parallel for num_threads(T) schedule(static)
#endif
        for (int j = 0; j < p; j++) {
            if (svir_poll()) continue; /* the host asked to stop */
            double s = 0.0, t2 = 0.0;
            for (ptrdiff_t k = (ptrdiff_t)j * n; k < (ptrdiff_t)(j + 1) * n; k++) {
                s += R[k] * w.T[k];
                t2 += w.T[k] * w.T[k];
                grad[k] -= w.T[k];
            }
            colt[j] = s + s2sum[j] * omd[j];
            colv[j] = t2;
        }
        const double tr = sumv(colt, p);
        /* PQ = T'(T W); then the gradient's W and log psi parts, H0's
         * denominators for them, and Sigma */
        if (svir_pln_gemm_rows_polled("N", n, q, p, one, w.T, n, W, p, zero, w.NQ, n) ||
            svir_pln_gemm_inner_polled("T", p, q, n, one, w.T, n, w.NQ, n, zero, w.PQ, p))
            goto stop;
        double *gW = grad + 2 * np, *gl = gW + (ptrdiff_t)p * q;
        svir_pln_rank_grad(p, q, nd, lpsi, w.ipsi, w.V, w.KmI, w.G, omd, s2sum, colv, w.PQ, w.OW,
                           w.X2, w.Qs, gW, gl);
        svir_pln_rank_h0den(p, q, nd, W, lpsi, w.OW, omd, w.den);
        svir_pln_sigma_lowrank(p, q, W, lpsi, Sigma);
        *J = lik + 0.5 * (double)np - 0.5 * nd * logdet - 0.5 * tr;
    } else {
        /* diagonal or spherical: Omega is diagonal */
        double tot = 0.0, logdet = 0.0;
        for (int j = 0; j < p && !fuse; j++) {
            double s = s2sum[j];
            for (int i = 0; i < n; i++) s += R[(ptrdiff_t)j * n + i] * R[(ptrdiff_t)j * n + i];
            omd[j] = (s + s0) / nk;
            tot += s;
        }
        for (int j = 0; j < p; j++) {
            const double v = fuse ? colt[j] : dat->cov == SVIR_PLN_SPHERICAL ? (tot + s0) / (nk * p) : omd[j];
            if (!(v > 0.0) || !isfinite(v)) {
                snprintf(err, errlen, "the estimated variance of column %d is not positive", j + 1);
                return 1;
            }
            omd[j] = 1.0 / v;
            logdet += log(v);
            for (int i = 0; i < p; i++) Sigma[(ptrdiff_t)j * p + i] = i == j ? v : 0.0;
        }
        diag = 1;
        *J = lik - 0.5 * nk * logdet + 0.5 * (n - nd) * p;
    }
    /* dJ/d log S, and with a diagonal Omega the rest of dJ/dM, - R Omega */
#ifdef _OPENMP
#pragma omp parallel for num_threads(T) schedule(static)
#endif
    for (int j = 0; j < (fuse ? 0 : p); j++) {
        if (svir_poll()) continue; /* the host asked to stop */
        const double o = omd[j];
        for (int i = 0; i < n; i++) {
            const ptrdiff_t k = (ptrdiff_t)j * n + i;
            if (diag) grad[k] -= R[k] * o;
            grad[np + k] = 1.0 - S2a[k] * (A[k] + o);
        }
    }
    if (!isfinite(*J)) {
        snprintf(err, errlen, "the ELBO is not finite");
        return 1;
    }
    return 0;
stop: /* the host asked to stop (before rbuf, or after its free) */
    snprintf(err, errlen, "interrupted");
    return 1;
}
