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
 * gradient at those values is the partial one (Omega = Sigma^-1):
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

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "models/pln/pln.h"
#include "models/pln/pln_entry.h"

/* sums in chunks of this many entries, added in chunk order: the same
 * result for any number of threads */
#define PLN_CHUNK 65536
/* and within a chunk, vector operations in blocks of this many (in L1) */
#define PLN_BLOCK 1024

#ifdef _OPENMP
#define PLN_PFOR _Pragma("omp parallel for num_threads(T) schedule(static)")
/* vectorise this loop (gcc's -O2 does not, by itself, where the length is
 * unknown); sums become one per vector lane, still in a fixed order */
#define PLN_SIMD _Pragma("omp simd")
#else
#define PLN_PFOR
#define PLN_SIMD
#endif

ptrdiff_t svir_pln_npar(const svir_pln_data *dat)
{
    const ptrdiff_t np = (ptrdiff_t)dat->n * dat->p;
    return 2 * np + (dat->cov == SVIR_PLN_RANK && !dat->Bfix ? (ptrdiff_t)dat->p * (dat->q + 1) : 0);
}

ptrdiff_t svir_pln_nwork(const svir_pln_data *dat)
{
    const ptrdiff_t n = dat->n, p = dat->p, q = dat->cov == SVIR_PLN_RANK ? dat->q : 0;
    return 4 * n * p + p * p + 2 * p + (q > 0 ? 6 * p * q + p + n * q + 3 * q * q : 0);
}

/* the work's parts (svir_pln_nwork): R = M - X B, A, S^2, T = R Omega (the
 * rank and VE cases) [n x p each], Omega [p x p] (full; the VE step uses
 * Omfix), its diagonal omd [p], 1 / psi [p]; for the rank case G = Psi^-1 W
 * K^-1, V = Psi^-1 W, OW = Omega W, two more [p x q], one [n x q] and
 * three [q x q] */
typedef struct {
    double *R, *A, *S2, *T, *Om, *omd, *ipsi, *G, *V, *OW, *PQ, *X2, *NQ, *K, *KmI, *Qs, *den;
} pln_work;

static pln_work pln_split(const svir_pln_data *dat, double *w)
{
    const ptrdiff_t n = dat->n, p = dat->p, q = dat->cov == SVIR_PLN_RANK ? dat->q : 0;
    pln_work s;
    s.R = w; s.A = s.R + n * p; s.S2 = s.A + n * p; s.T = s.S2 + n * p; s.Om = s.T + n * p;
    s.omd = s.Om + p * p; s.ipsi = s.omd + p; s.G = s.ipsi + p; s.V = s.G + p * q;
    s.OW = s.V + p * q; s.PQ = s.OW + p * q; s.X2 = s.PQ + p * q; s.NQ = s.X2 + p * q;
    s.K = s.NQ + n * q; s.KmI = s.K + q * q; s.Qs = s.KmI + q * q; s.den = s.Qs + q * q;
    return s;
}

/* sum_j v[j], in order */
static double sumv(const double *v, int len)
{
    double s = 0.0;
    for (int j = 0; j < len; j++) s += v[j];
    return s;
}

/* sum_k a[k] b[k] c[k], in svir_dot4's order (svir_math.h) */
static double dot4w(const double *restrict a, const double *restrict b,
                    const double *restrict c, ptrdiff_t len)
{
    double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
    ptrdiff_t k = 0;
    for (; k + 4 <= len; k += 4) {
        s0 += a[k] * b[k] * c[k];
        s1 += a[k + 1] * b[k + 1] * c[k + 1];
        s2 += a[k + 2] * b[k + 2] * c[k + 2];
        s3 += a[k + 3] * b[k + 3] * c[k + 3];
    }
    for (; k < len; k++) s0 += a[k] * b[k] * c[k];
    return (s0 + s1) + (s2 + s3);
}

int svir_pln_spd_inverse(int p, double *Om, double *omd, double *logdet, char *err, size_t errlen)
{
    int info = 0;
    F77_CALL(dpotrf)("L", &p, Om, &p, &info FCONE);
    if (info != 0) {
        snprintf(err, errlen, "the estimated covariance matrix is not positive definite "
                 "(leading minor %d)", info);
        return 1;
    }
    double ld = 0.0;
    for (int j = 0; j < p; j++) ld += 2.0 * log(Om[(ptrdiff_t)j * p + j]);
    F77_CALL(dpotri)("L", &p, Om, &p, &info FCONE);
    if (info != 0) {
        snprintf(err, errlen, "the estimated covariance matrix is singular");
        return 1;
    }
    for (int j = 0; j < p; j++) {
        if (omd) omd[j] = Om[(ptrdiff_t)j * p + j];
        for (int i = j + 1; i < p; i++) Om[(ptrdiff_t)i * p + j] = Om[(ptrdiff_t)j * p + i];
    }
    *logdet = ld;
    return 0;
}

/* ---- rank q: the small (p x q, q x q) parts, shared with the CUDA host
 * code (src/cuda/svir_cuda_pln.cu) ---- */

int svir_pln_wb_small(int p, int q, const double *W, const double *lpsi, double *ipsi, double *V,
                      double *KmI, double *Kinv, double *G, double *omd, double *logdet, char *err,
                      size_t errlen)
{
    const double one = 1.0, zero = 0.0;
    for (int j = 0; j < p; j++) ipsi[j] = exp(-lpsi[j]);
    for (int k = 0; k < q; k++)
        for (int j = 0; j < p; j++) V[(ptrdiff_t)k * p + j] = W[(ptrdiff_t)k * p + j] * ipsi[j];
    F77_CALL(dgemm)("T", "N", &q, &q, &p, &one, W, &p, V, &p, &zero, KmI, &q FCONE FCONE);
    for (int k = 0; k < q; k++)
        for (int l = 0; l < q; l++) {
            const double v = 0.5 * (KmI[k * q + l] + KmI[l * q + k]);
            KmI[k * q + l] = v;
            Kinv[k * q + l] = v + (k == l ? 1.0 : 0.0);
        }
    int info = 0;
    F77_CALL(dpotrf)("L", &q, Kinv, &q, &info FCONE);
    if (info != 0) {
        snprintf(err, errlen, "I + W' Psi^-1 W is not positive definite");
        return 1;
    }
    double ld = 0.0;
    for (int k = 0; k < q; k++) ld += 2.0 * log(Kinv[k * q + k]);
    for (int j = 0; j < p; j++) ld += lpsi[j];
    F77_CALL(dpotri)("L", &q, Kinv, &q, &info FCONE);
    for (int k = 0; k < q; k++)
        for (int l = k + 1; l < q; l++) Kinv[l * q + k] = Kinv[k * q + l];
    /* G = V K^-1; diag(Omega) */
    F77_CALL(dgemm)("N", "N", &p, &q, &q, &one, V, &p, Kinv, &q, &zero, G, &p FCONE FCONE);
    for (int j = 0; j < p; j++) {
        double s = 0.0;
        for (int k = 0; k < q; k++) s += G[(ptrdiff_t)k * p + j] * V[(ptrdiff_t)k * p + j];
        omd[j] = ipsi[j] - s;
    }
    *logdet = ld;
    return 0;
}

void svir_pln_rank_grad(int p, int q, double nd, const double *lpsi, const double *ipsi, const double *V, const double *KmI, const double *G,
                        const double *omd, const double *s2sum, const double *colt2, double *PQ,
                        double *OW, double *X2, double *Qs, double *gW, double *gl)
{
    const double one = 1.0, zero = 0.0, minus1 = -1.0;
    /* OW = Omega W = V - G (K - I) */
    memcpy(OW, V, sizeof(double) * (size_t)p * q);
    F77_CALL(dgemm)("N", "N", &p, &q, &q, &minus1, G, &p, KmI, &q, &one, OW, &p FCONE FCONE);
    /* PQ = Omega C Omega W = T'(T W) + Omega (s2 o OW) */
    for (int k = 0; k < q; k++)
        for (int j = 0; j < p; j++) {
            const ptrdiff_t e = (ptrdiff_t)k * p + j;
            X2[e] = s2sum[j] * OW[e];
            PQ[e] += ipsi[j] * X2[e];
        }
    /* Qs = V' X2 (then V' diag(s2) V, reusing it), PQ -= G Qs */
    F77_CALL(dgemm)("T", "N", &q, &q, &p, &one, V, &p, X2, &p, &zero, Qs, &q FCONE FCONE);
    F77_CALL(dgemm)("N", "N", &p, &q, &q, &minus1, G, &p, Qs, &q, &one, PQ, &p FCONE FCONE);
    for (ptrdiff_t e = 0; e < (ptrdiff_t)p * q; e++) gW[e] = PQ[e] - nd * OW[e];
    /* (Omega C Omega)_jj = sum_i T_ij^2 + sum_l Omega_jl^2 s2_l, with
     * Omega_jl = delta_jl / psi_j - (G V')_jl */
    for (int k = 0; k < q; k++)
        for (int j = 0; j < p; j++) X2[(ptrdiff_t)k * p + j] = s2sum[j] * V[(ptrdiff_t)k * p + j];
    F77_CALL(dgemm)("T", "N", &q, &q, &p, &one, V, &p, X2, &p, &zero, Qs, &q FCONE FCONE);
    for (int j = 0; j < p; j++) {
        double gv = 0.0, gqg = 0.0;
        for (int k = 0; k < q; k++) {
            const double gk = G[(ptrdiff_t)k * p + j];
            gv += gk * V[(ptrdiff_t)k * p + j];
            double r = 0.0;
            for (int l = 0; l < q; l++) r += Qs[l * q + k] * G[(ptrdiff_t)l * p + j];
            gqg += gk * r;
        }
        const double oco = colt2[j] + ipsi[j] * ipsi[j] * s2sum[j] - 2.0 * ipsi[j] * gv * s2sum[j] + gqg;
        gl[j] = exp(lpsi[j]) * (-0.5 * nd * omd[j] + 0.5 * oco);
    }
}

void svir_pln_rank_h0den(int p, int q, double nd, const double *W, const double *lpsi,
                         const double *OW, const double *omd, double *den)
{
    for (int k = 0; k < q; k++) {
        double wow = 0.0;
        for (int j = 0; j < p; j++) wow += W[(ptrdiff_t)k * p + j] * OW[(ptrdiff_t)k * p + j];
        for (int j = 0; j < p; j++) {
            const double ow = OW[(ptrdiff_t)k * p + j];
            den[(ptrdiff_t)k * p + j] = nd * (omd[j] * (wow + 0.01) + ow * ow);
        }
    }
    for (int j = 0; j < p; j++) {
        const double po = exp(lpsi[j]) * omd[j];
        den[(ptrdiff_t)p * q + j] = 0.5 * nd * po * po + 1e-8;
    }
}

void svir_pln_sigma_lowrank(int p, int q, const double *W, const double *lpsi, double *Sigma)
{
    const double one = 1.0, zero = 0.0;
    F77_CALL(dsyrk)("L", "N", &p, &q, &one, W, &p, &zero, Sigma, &p FCONE FCONE);
    for (int j = 0; j < p; j++) {
        Sigma[(ptrdiff_t)j * p + j] += exp(lpsi[j]);
        for (int i = j + 1; i < p; i++) Sigma[(ptrdiff_t)i * p + j] = Sigma[(ptrdiff_t)j * p + i];
    }
}

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
    F77_CALL(dgemm)("N", "N", &n, &q, &p, &one, R, &n, w.G, &p, &zero, w.NQ, &n FCONE FCONE);
#ifdef _OPENMP
#pragma omp parallel for num_threads(T) schedule(static)
#endif
    for (int j = 0; j < p; j++)
        for (ptrdiff_t k = (ptrdiff_t)j * n; k < (ptrdiff_t)(j + 1) * n; k++) w.T[k] = R[k] * w.ipsi[j];
    F77_CALL(dgemm)("N", "T", &n, &p, &q, &minus1, w.NQ, &n, w.V, &p, &one, w.T, &n FCONE FCONE);
    *logdet_out = logdet;
    return 0;
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
    const int fixed = dat->Bfix != NULL;
    /* B = P M (P = (X'X)^-1 X', d x n) or the fixed B, R = M - X B: for
     * d <= 8 column by column below (the same sums, in the same order, as
     * the reference BLAS's two GEMMs here, which are slow with d rows) */
    const int colR = d <= 8;
    if (!colR) {
        if (fixed)
            memcpy(B, dat->Bfix, sizeof(double) * (size_t)d * p);
        else
            F77_CALL(dgemm)("N", "N", &d, &p, &n, &one, dat->P, &d, M, &n, &zero, B, &d FCONE FCONE);
        memcpy(R, M, sizeof(double) * (size_t)np);
        F77_CALL(dgemm)("N", "N", &n, &p, &d, &minus1, dat->X, &n, B, &d, &one, R, &n FCONE FCONE);
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
            /* Sigma_jj = (sum_i R_ij^2 + S_ij^2) / nd (in colt), and the
             * gradient's rest: - R_ij / Sigma_jj, 1 - S^2 (A + 1 / Sigma_jj) */
            double sj = s2;
            for (int i = 0; i < n; i++) sj += Rj[i] * Rj[i];
            const double v = sj / nd;
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
            F77_CALL(dsymm)("R", "L", &n, &p, &one, Om, &p, R, &n, &zero, w.T, &n FCONE FCONE);
        }
#ifdef _OPENMP
#pragma omp parallel for num_threads(T) schedule(static)
#endif
        for (int j = 0; j < p; j++) {
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
        /* Sigma = (R'R + diag(sum S^2)) / nd; its Cholesky factor; Omega */
        double *Om = w.Om;
        const double invn = 1.0 / nd;
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
            const int i1 = i0 + 64 < n ? i0 + 64 : n;
            for (int j = 0; j < p; j++)
                for (int i = i0; i < i1; i++) Rt[(ptrdiff_t)i * p + j] = R[(ptrdiff_t)j * n + i];
        }
        F77_CALL(dsyrk)("L", "N", &p, &n, &invn, Rt, &p, &zero, Om, &p FCONE FCONE);
        for (int j = 0; j < p; j++) Om[(ptrdiff_t)j * p + j] += s2sum[j] * invn;
        for (int j = 0; j < p; j++)
            for (int i = j; i < p; i++) Sigma[(ptrdiff_t)j * p + i] = Sigma[(ptrdiff_t)i * p + j] = Om[(ptrdiff_t)j * p + i];
        if (svir_pln_spd_inverse(p, Om, omd, &logdet, err, errlen)) return 1;
        /* dJ/dM = Y - A - R Omega */
        F77_CALL(dsymm)("R", "L", &n, &p, &minus1, Om, &p, R, &n, &one, grad, &n FCONE FCONE);
        /* at the optimum tr(Omega (R'R + diag(s2sum))) = nd p */
        *J = lik - 0.5 * nd * logdet + 0.5 * (n - nd) * p;
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
        F77_CALL(dgemm)("N", "N", &n, &q, &p, &one, w.T, &n, W, &p, &zero, w.NQ, &n FCONE FCONE);
        F77_CALL(dgemm)("T", "N", &p, &q, &n, &one, w.T, &n, w.NQ, &n, &zero, w.PQ, &p FCONE FCONE);
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
            omd[j] = s / nd;
            tot += s;
        }
        for (int j = 0; j < p; j++) {
            const double v = fuse ? colt[j] : dat->cov == SVIR_PLN_SPHERICAL ? tot / (nd * p) : omd[j];
            if (!(v > 0.0) || !isfinite(v)) {
                snprintf(err, errlen, "the estimated variance of column %d is not positive", j + 1);
                return 1;
            }
            omd[j] = 1.0 / v;
            logdet += log(v);
            for (int i = 0; i < p; i++) Sigma[(ptrdiff_t)j * p + i] = i == j ? v : 0.0;
        }
        diag = 1;
        *J = lik - 0.5 * nd * logdet + 0.5 * (n - nd) * p;
    }
    /* dJ/d log S, and with a diagonal Omega the rest of dJ/dM, - R Omega */
#ifdef _OPENMP
#pragma omp parallel for num_threads(T) schedule(static)
#endif
    for (int j = 0; j < (fuse ? 0 : p); j++) {
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
}

/* The L-BFGS's initial inverse Hessian H0, applied: out = H0 v (out may
 * be v), at the point evaluated last (its work). Per column j of
 * (M, log S) it inverts, by the Woodbury identity, the Hessian of -J in
 * that column less its couplings to the other columns and the curvature of
 * log Sigma_jj:
 *   H_j = D_j - o_j [X; 0] (X'X)^-1 [X; 0]',   o_j = Omega_jj,
 * where D_j is block-diagonal with one 2 x 2 block per entry (M_ij,
 * log S_ij), the entry's own second derivatives
 *   [[A + o, A S^2], [A S^2, 2 S^2 (A + o) + S^4 A]],
 * and the second term is B's profiling (R = M - X B): along the columns
 * of X only the counts (A) curve -J, not the prior (o). With D alone, the
 * first L-BFGS steps moved a column's mean (A + o) / A times too little,
 * which for rare columns (o large, A small) took tens of iterations. The
 * X part is used for d <= PLN_PREC_DMAX (it costs n p d^2 per use) and
 * dropped in a column where K below is not positive definite (it always
 * is in exact arithmetic: H_j >= D_j's Poisson part + o (I - H_X) > 0).
 * For W_jk and log psi_j (rank q), the Fisher information's diagonal,
 * nd (Omega_jj (W' Omega W)_kk + (Omega W)_jk^2) and
 * nd / 2 (psi_j Omega_jj)^2. XtX: X'X [d x d].
 *
 * In L-BFGS's two-loop recursion (svir_pln_fit) it is applied to
 * v = gsign gd - sum_i alpha_i Yr[i] (i < nm), formed on the fly, and
 * it returns ydot[i] = Yr[i]' out, summed per column and the columns in
 * order (colpart: room for (p + 1) nm sums): the column's data are still
 * in cache then, so these dots cost no pass over memory. scratch: room
 * for 3 n doubles per thread. */
#define PLN_PREC_DMAX 8
/* colpart[l] = Yr[l]' out over column c / n's entries of M and log S */
static void pln_ydots(const double *out, double *const *Yr, int nm, ptrdiff_t c, ptrdiff_t np,
                      int n, double *colpart)
{
    for (int l = 0; l < nm; l++)
        colpart[l] = svir_dot4(Yr[l] + c, out + c, n) + svir_dot4(Yr[l] + np + c, out + np + c, n);
}

static void pln_precond(const svir_pln_data *dat, const double *work,
                        const double *XtX, const double *gd, double gsign, int nm,
                        const double *alpha, double *const *Yr, double *out, double *ydot,
                        double *colpart, double *scratch)
{
    const int n = dat->n, p = dat->p, q = dat->q, d = dat->d;
    const ptrdiff_t np = (ptrdiff_t)n * p;
    pln_work w = pln_split(dat, (double *)work);
    const double *A = w.A, *S2a = w.S2, *omd = w.omd, *X = dat->X;
    const int dx = !dat->Bfix && d <= PLN_PREC_DMAX ? d : 0;
#ifdef _OPENMP
#pragma omp parallel num_threads(dat->threads > 0 ? dat->threads : 1)
#endif
    {
    /* the column's inverse 2 x 2 blocks, in this thread's scratch */
#ifdef _OPENMP
    double *e11 = scratch + (ptrdiff_t)3 * n * omp_get_thread_num();
#else
    double *e11 = scratch;
#endif
    double *e12 = e11 + n, *e22 = e12 + n;
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
    for (int j = 0; j < p; j++) {
        const double oj = omd[j];
        const ptrdiff_t c = (ptrdiff_t)j * n;
        const double *restrict Aj = A + c, *restrict Sj = S2a + c;
        double *restrict om = out + c, *restrict os = out + np + c;
        double t[PLN_PREC_DMAX], K[PLN_PREC_DMAX * PLN_PREC_DMAX], z[PLN_PREC_DMAX];
        /* v = gsign gd - sum_l alpha_l y_l, into out */
        {
            const double *restrict gm = gd + c, *restrict gs = gd + np + c;
            PLN_SIMD
            for (int i = 0; i < n; i++) {
                om[i] = gsign * gm[i];
                os[i] = gsign * gs[i];
            }
            for (int l = 0; l < nm; l++) {
                const double al = alpha[l], *restrict ym = Yr[l] + c, *restrict ys = Yr[l] + np + c;
                PLN_SIMD
                for (int i = 0; i < n; i++) {
                    om[i] -= al * ym[i];
                    os[i] -= al * ys[i];
                }
            }
        }
        /* out = D^-1 v */
        PLN_SIMD
        for (int i = 0; i < n; i++) {
            double i11, i12, i22;
            svir_pln_block_inv(Aj[i], Sj[i], oj, &i11, &i12, &i22);
            const double vm = om[i], vs = os[i];
            om[i] = i11 * vm + i12 * vs;
            os[i] = i12 * vm + i22 * vs;
            e11[i] = i11;
            e12[i] = i12;
            e22[i] = i22;
        }
        /* t = X' (D^-1 v)_M; K = X'X / o - X' (D^-1)_MM X, by Cholesky (lower,
         * in place); z = K^-1 t */
        int ok = dx > 0;
        for (int a = 0; a < dx; a++) {
            const double *restrict xa = X + (ptrdiff_t)a * n;
            t[a] = svir_dot4(xa, om, n);
            for (int bb = 0; bb <= a; bb++) K[a * dx + bb] = dot4w(xa, X + (ptrdiff_t)bb * n, e11, n);
        }
        if (ok) ok = svir_pln_kz_solve(K, XtX, d, dx, oj, t, z);
        if (ok) {
            /* out += D^-1 [X z; 0] (e22 holds X z) */
            for (int i = 0; i < n; i++) e22[i] = 0.0;
            for (int a = 0; a < dx; a++) {
                const double za = z[a], *restrict xa = X + (ptrdiff_t)a * n;
                PLN_SIMD
                for (int i = 0; i < n; i++) e22[i] += xa[i] * za;
            }
            PLN_SIMD
            for (int i = 0; i < n; i++) {
                om[i] += e11[i] * e22[i];
                os[i] += e12[i] * e22[i];
            }
        }
        pln_ydots(out, Yr, nm, c, np, n, colpart + (ptrdiff_t)j * nm);
    }
    }
    if (dat->cov == SVIR_PLN_RANK && !dat->Bfix) {
        const ptrdiff_t L = svir_pln_npar(dat);
        double *oW = out + 2 * np;
        for (ptrdiff_t k = 2 * np; k < L; k++) {
            double vk = gsign * gd[k];
            for (int l = 0; l < nm; l++) vk -= alpha[l] * Yr[l][k];
            out[k] = vk;
        }
        /* W and log psi: divided by the Fisher information's diagonal
         * (svir_pln_rank_h0den, at the evaluated point) */
        for (ptrdiff_t e = 0; e < (ptrdiff_t)p * (q + 1); e++) oW[e] = oW[e] / w.den[e];
    }
    for (int l = 0; l < nm; l++) {
        double sum = 0.0;
        for (int j = 0; j < p; j++) sum += colpart[(ptrdiff_t)j * nm + l];
        for (ptrdiff_t k = 2 * np; k < svir_pln_npar(dat); k++) sum += Yr[l][k] * out[k];
        ydot[l] = sum;
    }
}

/* The start's log S: each entry's own optimum given its M and the start's
 * Omega_jj (a few Newton steps on dJ/d log S = 1 - S^2 (A + Omega_jj) = 0,
 * A = exp(o + M + S^2 / 2), each moving log S by at most 1; -J is convex
 * in each log S). A start of S = 0.1 is far below it for most entries
 * (S^2 ~ 1 / (A + Omega_jj)), which cost the first L-BFGS steps their
 * length (their largest move is capped). par's log S is overwritten; the
 * work w (A, S^2, Omega's diagonal) is from par's evaluation. */

static void pln_sstart(const svir_pln_data *dat, double *par, const double *work)
{
    const int n = dat->n, p = dat->p;
    const ptrdiff_t np = (ptrdiff_t)n * p;
    pln_work w = pln_split(dat, (double *)work);
    const double *A = w.A, *S2a = w.S2, *omd = w.omd;
#ifdef _OPENMP
#pragma omp parallel for num_threads(dat->threads > 0 ? dat->threads : 1) schedule(static)
#endif
    for (int j = 0; j < p; j++) {
        const double o = omd[j];
        for (ptrdiff_t k = (ptrdiff_t)j * n; k < (ptrdiff_t)(j + 1) * n; k++) {
            par[np + k] = svir_pln_sstart_entry(par[np + k], S2a[k], A[k], o);
        }
    }
}

#ifndef PLN_MEM
#define PLN_MEM 5
#endif


/* Maximises J by L-BFGS (PLN_MEM pairs) on -J whose initial inverse
 * Hessian is pln_precond's, re-evaluated at every iterate, with a
 * backtracking (Armijo) line search; a step moves no M entry by more than
 * 2 and no log S by more than 1. It stops when an iteration lowers -J by
 * less than tol |J|, when the line search fails twice in a row (the
 * second time from the preconditioned steepest-descent direction), or
 * after maxit iterations.
 *
 * The two-loop recursion runs in its Gram form (the dots s_i' y_l are
 * kept in a PLN_MEM x PLN_MEM matrix, updated from dots the passes compute
 * anyway), so that an iteration makes few passes over the 2 n p doubles:
 * (1) s_i' g for every pair, one pass reading g and the s_i; (2) the
 * preconditioner on q = -g - sum alpha_i y_i, formed on the fly, with the
 * y_i' (H0 q) in the same pass (column by column, from cache); (3)
 * dir = H0 q + sum (alpha_i - beta_i) s_i with the slope g' dir, its
 * largest entry and dir' dir; (4) the candidate par + t dir and its
 * evaluation; (5) the new y = g1 - g with y' y and s' y. s_i' y_l for the
 * new pair comes from (2) and (1) of the next iteration. g holds the
 * gradient of J (not of -J). Sums are chunked (PLN_CHUNK) or per column,
 * added in order: the same result for any number of threads. */
int svir_pln_fit(const svir_pln_data *dat, double *par, int maxit, double tol, double *J,
                 int *iters, double *trace, double *B, double *Sigma, char *err, size_t errlen)
{
    const int n = dat->n, p = dat->p, m = PLN_MEM;
    const ptrdiff_t np = (ptrdiff_t)n * p, L = svir_pln_npar(dat), nw = svir_pln_nwork(dat);
    const ptrdiff_t nch = (L + PLN_CHUNK - 1) / PLN_CHUNK;
    const int T = dat->threads > 0 ? dat->threads : 1;
    double *part = malloc(sizeof(double) * (size_t)((nch + 1) * (m + 3) + (ptrdiff_t)(p + 1) * m));
    double *colpart = part + (nch + 1) * (m + 3);
    double *g = malloc(sizeof(double) * (size_t)L), *g1 = malloc(sizeof(double) * (size_t)L);
    double *w0 = malloc(sizeof(double) * (size_t)nw), *w1 = malloc(sizeof(double) * (size_t)nw);
    double *cand = malloc(sizeof(double) * (size_t)L), *dir = malloc(sizeof(double) * (size_t)L);
    double *ynew = malloc(sizeof(double) * (size_t)L);
    double *scratch = malloc(sizeof(double) * 3 * (size_t)n * (size_t)T);
    double *XtX = malloc(sizeof(double) * (size_t)(dat->d > 0 ? dat->d * dat->d : 1));
    double *Sr[PLN_MEM], *Yr[PLN_MEM];
    /* ring order: pair l = 0 is the oldest; Sr, Yr, rho and the Gram
     * matrix SY[a * m + b] = s_a' y_b are shifted when a pair is added */
    double SY[PLN_MEM * PLN_MEM], rho[PLN_MEM], alpha[PLN_MEM], beta[PLN_MEM], sg[PLN_MEM],
        sg0[PLN_MEM], yr[PLN_MEM], cf[PLN_MEM];
    double *const par0 = par;
    int st = 0, it = 0, mem = 0, fails = 0, pend = 0, oom = 0;
    for (int l = 0; l < m; l++) {
        Sr[l] = malloc(sizeof(double) * (size_t)L);
        Yr[l] = malloc(sizeof(double) * (size_t)L);
        if (!Sr[l] || !Yr[l]) oom = 1;
    }
    if (oom || !part || !g || !g1 || !w0 || !w1 || !cand || !dir || !ynew || !XtX || !scratch) {
        snprintf(err, errlen, "out of memory fitting the Poisson-lognormal model");
        st = 2;
        goto done;
    }
    for (int a = 0; a < dat->d; a++)
        for (int b = 0; b < dat->d; b++) {
            double x = 0.0;
            for (int i = 0; i < n; i++) x += dat->X[(ptrdiff_t)a * n + i] * dat->X[(ptrdiff_t)b * n + i];
            XtX[a * dat->d + b] = x;
        }
    double f0, f1; /* f = -J; g = dJ/dpar */
    st = svir_pln_eval(dat, par, &f0, g, B, Sigma, w0, err, errlen);
    if (st) goto done;
#ifndef PLN_NOSSTART
    pln_sstart(dat, par, w0);
    st = svir_pln_eval(dat, par, &f0, g, B, Sigma, w0, err, errlen);
    if (st) goto done;
#endif
    f0 = -f0;
    double ss_new = 0.0, sy_new = 0.0, yy_new = 0.0;
    for (it = 0; it < maxit;) {
        /* (1) sg[l] = s_l' (-g), l < mem */
        if (mem > 0) {
#ifdef _OPENMP
#pragma omp parallel for num_threads(T) schedule(static)
#endif
            for (ptrdiff_t c = 0; c < nch; c++) {
                const ptrdiff_t lo = c * PLN_CHUNK, hi = lo + PLN_CHUNK < L ? lo + PLN_CHUNK : L;
                double a[PLN_MEM] = {0.0};
                for (ptrdiff_t b0 = lo; b0 < hi; b0 += PLN_BLOCK) {
                    const ptrdiff_t b1 = b0 + PLN_BLOCK < hi ? b0 + PLN_BLOCK : hi;
                    for (int l = 0; l < mem; l++) a[l] += svir_dot4(Sr[l] + b0, g + b0, b1 - b0);
                }
                for (int l = 0; l < mem; l++) part[c * m + l] = -a[l];
            }
            for (int l = 0; l < mem; l++) {
                double a = 0.0;
                for (ptrdiff_t c = 0; c < nch; c++) a += part[c * m + l];
                sg[l] = a;
            }
            if (pend) {
                /* the newest pair's column of SY: s_l' y_new = s_l' g1 - s_l' g
                 * (in -J's gradient) for the older pairs; s_new' y_new from (5) */
                const int k = mem - 1;
                for (int l = 0; l < k; l++) SY[l * m + k] = sg[l] - sg0[l];
                SY[k * m + k] = sy_new;
                pend = 0;
            }
        }
        /* the two-loop recursion in Gram form */
        for (int l = mem - 1; l >= 0; l--) {
            double a = sg[l];
            for (int u = l + 1; u < mem; u++) a -= alpha[u] * SY[l * m + u];
            alpha[l] = rho[l] * a;
        }
        /* (2) dir = H0 q, q = -g - sum alpha_l y_l; yr[l] = y_l' dir */
        pln_precond(dat, w0, XtX, g, -1.0, mem, alpha, Yr, dir, yr, colpart, scratch);
        for (int l = 0; l < mem; l++) {
            double b = yr[l];
            for (int u = 0; u < l; u++) b += cf[u] * SY[u * m + l];
            beta[l] = rho[l] * b;
            cf[l] = alpha[l] - beta[l];
        }
        /* (3) dir = -(H0 q + sum cf_l s_l) (descent for -J), slope = (-g)' dir,
         * the largest move, dir' dir */
        double slope = 0.0, big = 0.0, dd = 0.0;
        {
#ifdef _OPENMP
#pragma omp parallel for num_threads(T) schedule(static)
#endif
            for (ptrdiff_t c = 0; c < nch; c++) {
                const ptrdiff_t lo = c * PLN_CHUNK, hi = lo + PLN_CHUNK < L ? lo + PLN_CHUNK : L;
                double sl = 0.0, bg = 0.0, d2 = 0.0;
                for (ptrdiff_t b0 = lo; b0 < hi; b0 += PLN_BLOCK) {
                    const ptrdiff_t b1 = b0 + PLN_BLOCK < hi ? b0 + PLN_BLOCK : hi;
                    double *restrict dv = dir;
                    for (int l = 0; l < mem; l++) {
                        const double cl = cf[l], *restrict sv = Sr[l];
                        PLN_SIMD
                        for (ptrdiff_t k = b0; k < b1; k++) dv[k] += cl * sv[k];
                    }
                    for (ptrdiff_t k = b0; k < b1; k++) {
                        const double v = -dv[k];
                        dv[k] = v;
                        sl -= g[k] * v;
                        d2 += v * v;
                        const double a = k < np ? 0.5 * fabs(v) : fabs(v);
                        if (a > bg) bg = a;
                    }
                }
                part[c * 3] = sl;
                part[c * 3 + 1] = bg;
                part[c * 3 + 2] = d2;
            }
            for (ptrdiff_t c = 0; c < nch; c++) {
                slope += part[c * 3];
                if (part[c * 3 + 1] > big) big = part[c * 3 + 1];
                dd += part[c * 3 + 2];
            }
        }
        if (!(slope < 0.0)) {
            /* not a descent direction: forget the pairs */
            mem = 0;
            pend = 0;
            continue;
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
            mem = 0; /* retry once from the preconditioned steepest direction */
            pend = 0;
            continue;
        }
        fails = 0;
        f1 = -f1;
        /* (5) y = (-g1) - (-g) = g - g1; y' y; dir' (-g1) */
        {
#ifdef _OPENMP
#pragma omp parallel for num_threads(T) schedule(static)
#endif
            for (ptrdiff_t c = 0; c < nch; c++) {
                const ptrdiff_t lo = c * PLN_CHUNK, hi = lo + PLN_CHUNK < L ? lo + PLN_CHUNK : L;
                double y2 = 0.0, dg = 0.0;
                for (ptrdiff_t k = lo; k < hi; k++) {
                    const double y = g[k] - g1[k];
                    ynew[k] = y;
                    y2 += y * y;
                    dg -= dir[k] * g1[k];
                }
                part[c * 2] = y2;
                part[c * 2 + 1] = dg;
            }
            yy_new = 0.0;
            double dg1 = 0.0;
            for (ptrdiff_t c = 0; c < nch; c++) {
                yy_new += part[c * 2];
                dg1 += part[c * 2 + 1];
            }
            sy_new = t * (dg1 - slope); /* s' y, s = t dir */
            ss_new = t * t * dd;
        }
        if (sy_new > 1e-12 * sqrt(ss_new * yy_new)) {
            /* s_new' y_l = t dir' y_l = -t (yr[l] + sum_u cf_u s_u' y_l) */
            double sny[PLN_MEM];
            for (int l = 0; l < mem; l++) {
                double a = yr[l];
                for (int u = 0; u < mem; u++) a += cf[u] * SY[u * m + l];
                sny[l] = -t * a;
            }
            /* the new pair's s_l' g, for its column of SY next time */
            double sgk[PLN_MEM];
            for (int l = 0; l < mem; l++) sgk[l] = sg[l];
            if (mem == m) {
                /* drop the oldest pair: shift the ring and the Gram matrix */
                double *s0 = Sr[0], *y0 = Yr[0];
                for (int l = 0; l + 1 < m; l++) {
                    Sr[l] = Sr[l + 1];
                    Yr[l] = Yr[l + 1];
                    rho[l] = rho[l + 1];
                    sny[l] = sny[l + 1];
                    sgk[l] = sgk[l + 1];
                    for (int u = 0; u + 1 < m; u++) SY[l * m + u] = SY[(l + 1) * m + u + 1];
                }
                Sr[m - 1] = s0;
                Yr[m - 1] = y0;
                mem--;
            }
            /* s = t dir: scale in place as the ring's newest s, swap buffers */
            {
                double *tmp = Sr[mem];
                Sr[mem] = dir;
                dir = tmp;
                tmp = Yr[mem];
                Yr[mem] = ynew;
                ynew = tmp;
            }
            if (t != 1.0) {
                double *sv = Sr[mem];
                PLN_PFOR
                for (ptrdiff_t k = 0; k < L; k++) sv[k] *= t;
            }
            for (int l = 0; l < mem; l++) {
                SY[mem * m + l] = sny[l];
                sg0[l] = sgk[l];
            }
            rho[mem] = 1.0 / sy_new;
            mem++;
            pend = 1;
        }
        {
            double *tmp = par; par = cand; cand = tmp;
            tmp = g; g = g1; g1 = tmp;
            tmp = w0; w0 = w1; w1 = tmp;
        }
        const double rel = (f0 - f1) / fabs(f1);
        f0 = f1;
        if (trace) trace[it] = -f0;
        it++;
        if (rel < tol) break;
    }
    if (par != par0) {
        memcpy(par0, par, sizeof(double) * (size_t)L);
        cand = par;
        par = par0;
    }
    /* B and Sigma of the final point */
    st = svir_pln_eval(dat, par, &f0, g, B, Sigma, w0, err, errlen);
    *J = f0;
    *iters = it;
done:
    free(part); free(g); free(g1); free(w0); free(w1); free(cand); free(dir); free(ynew);
    free(XtX); free(scratch);
    for (int l = 0; l < m; l++) {
        free(Sr[l]);
        free(Yr[l]);
    }
    return st;
}
