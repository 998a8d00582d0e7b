/* The Poisson-lognormal model in minibatches of rows (issues 5 and 15;
 * dev/PLN.md): streamed variational EM that keeps no row's locals. The
 * global statistics of the rows' q(Z_i) = N(M_i, diag(S_i^2)),
 *   T1 = X'M [d x p],  T2 = M'M [p x p] (diagonal: its diagonal),
 *   s2 = sum_i S_i^2 [p],  XX = X'X [d x d],  L = sum_i l_i,
 *   l_i = sum_j [Y_ij (O_ij + M_ij) - A_ij + log S_ij],
 * are accumulated over the rows a batch at a time and the rows' M and S
 * are dropped: memory is the sums (O(p^2 + d p)) and one batch's work,
 * not n x p. A step fits the batch's locals afresh with the globals held
 * (each entry's own optimum, then L-BFGS: svir_pln_fit with B and Omega
 * fixed) and adds their statistics to the epoch's sums E. The
 * M step, B = XX^-1 T1, C = T2 - T1'B + diag(s2), Sigma = C / nd (its
 * diagonal, or its mean diagonal; for rank q a few factor-analysis EM
 * iterations on C / nd from the current W and psi), runs on sums over all
 * rows:
 * - online epochs: after each batch, on the previous epoch's sums P with
 *   the visited rows' share replaced by theirs, (1 - k / n) P + E (every
 *   sum, X'X included, so C stays positive semi-definite); the globals
 *   move n / m times an epoch, which is what makes minibatches fast on
 *   large n;
 * - exact epochs: the globals are held through the epoch and updated at
 *   its end from E, the exact sums of the epoch's locals: one step of
 *   variational EM, which never lowers the ELBO.
 * At every epoch's end the ELBO is exact, for the epoch's locals (sums E)
 * and the globals of the M step on them:
 *   J = L - sum log Y! + n p / 2 - nd / 2 log |Sigma| - tr(Omega C) / 2.
 * The fit starts online and turns exact for good once an online epoch
 * raises J by less than switch_tol |J| (the globals then move by about the
 * sampling noise of the batches). Exact epochs converge linearly, so they
 * run in SQUAREM cycles of three (two plain EM epochs, then one from sums
 * extrapolated from them; squarem_extrapolate). The driver
 * (infer/svir_vem.c) stops when a cycle's second plain epoch raises J by
 * less than tol_rel_obj |J| (1 - r) over the first, r the ratio of the two
 * epochs' gains (svir_pln_mb_epoch). The fixed points are the full-batch
 * fit's. */
#include "core/svir_lapack.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/pln/pln_model.h"
#include "models/pln/pln_work.h"

typedef struct {
    double *T1, *T2, *s2, *XX, L;
} mb_sums;

typedef struct {
    const svir_pln_model *mb;
    int n, p, d, q, cov, full;   /* full: T2 is p x p (full, rank q) */
    double nd, nk, s0;           /* nk = nd + the prior's k0 (pln.h) */
    mb_sums E, P, R;             /* the epoch's, the last epoch's, the step's */
    mb_sums th0, th1, th2;       /* SQUAREM's sums in exact epochs */
    int sq;                      /* SQUAREM's phase: 0, 1 plain, 2 extrapolated */
    double J0, J1, J2;           /* the ELBOs of th0, th1 and th2 */
    ptrdiff_t visited;           /* rows of this epoch so far */
    int exact;                   /* 1: globals held through an epoch */
    double Jlast, switch_tol;
    double *B, *Sig, *Om, *omd, logdet, L_tr; /* L_tr = tr(Omega C) */
    double *W, *psi, *lpsi;      /* rank q: loadings [p x q], psi, log psi [p] */
    double *fa;                  /* factor-analysis scratch */
    double *XXc;                 /* [d x d] Cholesky factor scratch */
    /* one batch: data, its locals (M, log S) and the VE step's work */
    double *Yb, *Ob, *Xb, *pb, *Bb, *Sb, *cw;
    int *rowbuf;
    int m0, inner, fa_iters;
    double ve_tol;
    svir_pln_data bd;
} mb_state;

/* ---- sums ------------------------------------------------------------------ */

static void sums_free(mb_sums *s)
{
    free(s->T1); free(s->T2); free(s->s2); free(s->XX);
}

static int sums_alloc(mb_sums *s, int p, int d, int full)
{
    s->T1 = calloc((size_t)d * p + 1, sizeof(double));
    s->T2 = calloc((size_t)(full ? (ptrdiff_t)p * p : p), sizeof(double));
    s->s2 = calloc((size_t)p, sizeof(double));
    s->XX = calloc((size_t)d * d + 1, sizeof(double));
    s->L = 0.0;
    return !s->T1 || !s->T2 || !s->s2 || !s->XX;
}

static void sums_zero(const mb_state *st, mb_sums *s)
{
    const int p = st->p, d = st->d;
    memset(s->T1, 0, sizeof(double) * (size_t)d * p);
    memset(s->T2, 0, sizeof(double) * (size_t)(st->full ? (ptrdiff_t)p * p : p));
    memset(s->s2, 0, sizeof(double) * (size_t)p);
    memset(s->XX, 0, sizeof(double) * (size_t)d * d);
    s->L = 0.0;
}

/* out = (1 - f) P + E, every sum (out's lower triangles where symmetric) */
static void sums_mix(const mb_state *st, mb_sums *out, const mb_sums *P, double f, const mb_sums *E)
{
    const int p = st->p, d = st->d;
    const double a = 1.0 - f;
    for (ptrdiff_t k = 0; k < (ptrdiff_t)d * p; k++) out->T1[k] = a * P->T1[k] + E->T1[k];
    for (ptrdiff_t k = 0; k < (st->full ? (ptrdiff_t)p * p : p); k++) out->T2[k] = a * P->T2[k] + E->T2[k];
    for (int j = 0; j < p; j++) out->s2[j] = a * P->s2[j] + E->s2[j];
    for (int k = 0; k < d * d; k++) out->XX[k] = a * P->XX[k] + E->XX[k];
    out->L = a * P->L + E->L;
}

/* the batch's offset of entry (i, j) (Ob: m x p offsets, or one per row) */
static inline double batch_o(const svir_pln_data *dat, const double *Ob, int m, int i, int j)
{
    return dat->O ? Ob[(ptrdiff_t)j * m + i] : dat->Orow ? Ob[i] : 0.0;
}

/* add the statistics of a batch of m rows (data Yb, Ob, Xb; locals Mb, lsb
 * [m x p]) to s; the m p^2 SYRK in pieces with interrupt polls between
 * them (pln_blas.c). Returns 1 when the host asked to stop (s is then
 * incomplete), else 0. */
static int sums_add(const mb_state *st, mb_sums *s, int m, const double *Mb, const double *lsb,
                     const double *Xb, const double *Yb, const double *Ob)
{
    const svir_pln_data *dat = &st->mb->dat;
    const int p = st->p, d = st->d;
    const double one = 1.0;
    if (d > 0) {
        if (svir_pln_gemm_inner_polled("T", d, p, m, one, Xb, m, Mb, m, one, s->T1, d)) return 1;
        F77_CALL(dsyrk)("L", "T", &d, &m, &one, Xb, &m, &one, s->XX, &d FCONE FCONE);
    }
    if (st->full) {
        if (svir_pln_syrk_polled("T", p, m, one, Mb, m, one, s->T2)) return 1;
    } else {
        for (int j = 0; j < p; j++) {
            double a = 0.0;
            for (int i = 0; i < m; i++) a += Mb[(ptrdiff_t)j * m + i] * Mb[(ptrdiff_t)j * m + i];
            s->T2[j] += a;
        }
    }
    double L = 0.0;
    for (int j = 0; j < p; j++) {
        double a = 0.0;
        for (int i = 0; i < m; i++) {
            const ptrdiff_t k = (ptrdiff_t)j * m + i;
            const double o = batch_o(dat, Ob, m, i, j), e2 = exp(2.0 * lsb[k]);
            a += e2;
            L += Yb[k] * (o + Mb[k]) - exp(o + Mb[k] + 0.5 * e2) + lsb[k];
        }
        s->s2[j] += a;
    }
    s->L += L;
    return 0;
}

/* ---- the M step ------------------------------------------------------------ */

/* B = XX^-1 T1 and C = (T2 - T1'B + diag(s2)) / nd into st->Sig (full,
 * rank q); 0, or 1 with a message */
static int form_BC(mb_state *st, const mb_sums *S, char *err, size_t errlen)
{
    const int p = st->p, d = st->d;
    const double one = 1.0, minus1 = -1.0;
    if (d > 0) {
        memcpy(st->XXc, S->XX, sizeof(double) * (size_t)d * d);
        memcpy(st->B, S->T1, sizeof(double) * (size_t)d * p);
        int info = 0;
        F77_CALL(dposv)("L", &d, &p, st->XXc, &d, st->B, &d, &info FCONE);
        if (info) {
            snprintf(err, errlen, "the covariates' cross-product X'X is not positive definite");
            return 1;
        }
    }
    if (!st->full) return 0;
    double *C = st->Sig;
    for (ptrdiff_t e = 0; e < (ptrdiff_t)p * p; e++) C[e] = S->T2[e];
    if (d > 0)
        F77_CALL(dgemm)("T", "N", &p, &p, &d, &minus1, S->T1, &d, st->B, &d, &one, C, &p FCONE FCONE);
    /* (C + s0 I) / nk, the prior's s0 and k0 (0 when there is none, as
     * for rank q) */
    for (int j = 0; j < p; j++) {
        C[(ptrdiff_t)j * p + j] += S->s2[j] + st->s0;
        for (int i = j; i < p; i++) C[(ptrdiff_t)j * p + i] /= st->nk;
        for (int i = j + 1; i < p; i++) C[(ptrdiff_t)i * p + j] = C[(ptrdiff_t)j * p + i];
    }
    return 0;
}

/* rank q's start: probabilistic PCA of C (st->Sig): W = U (lambda -
 * s2)^(1/2) over the top q eigenpairs, psi = s2, the mean of the other
 * eigenvalues (as R's svir_pln_pca_start); 0, 1 or 2 (out of memory) */
static int ppca_start(mb_state *st, char *err, size_t errlen)
{
    const int p = st->p, q = st->q;
    double *A = st->Om; /* scratch: the rank-q fit applies Omega by Woodbury */
    memcpy(A, st->Sig, sizeof(double) * (size_t)p * p);
    double tr = 0.0;
    for (int j = 0; j < p; j++) tr += st->Sig[(ptrdiff_t)j * p + j];
    int il = p - q + 1, iu = p, mf = 0, info = 0, lwork = -1, liwork = -1, iwq = 0;
    double vl = 0.0, vu = 0.0, abstol = 0.0, wq = 0.0;
    double *w = malloc(sizeof(double) * (size_t)p), *Z = malloc(sizeof(double) * (size_t)p * q);
    int *isuppz = malloc(sizeof(int) * 2 * (size_t)q);
    if (!w || !Z || !isuppz) { free(w); free(Z); free(isuppz); return 2; }
    F77_CALL(dsyevr)("V", "I", "L", &p, A, &p, &vl, &vu, &il, &iu, &abstol, &mf, w, Z, &p, isuppz,
                     &wq, &lwork, &iwq, &liwork, &info FCONE FCONE FCONE);
    lwork = (int)wq;
    liwork = iwq;
    double *work = malloc(sizeof(double) * (size_t)(lwork > 1 ? lwork : 1));
    int *iwork = malloc(sizeof(int) * (size_t)(liwork > 1 ? liwork : 1));
    if (!work || !iwork) { free(w); free(Z); free(isuppz); free(work); free(iwork); return 2; }
    F77_CALL(dsyevr)("V", "I", "L", &p, A, &p, &vl, &vu, &il, &iu, &abstol, &mf, w, Z, &p, isuppz,
                     work, &lwork, iwork, &liwork, &info FCONE FCONE FCONE);
    int rc = 0;
    if (info || mf != q) {
        snprintf(err, errlen, "the start's eigendecomposition failed");
        rc = 1;
    } else {
        double top = 0.0;
        for (int k = 0; k < q; k++) top += w[k];
        double s2 = (tr - top) / (p - q);
        if (!(s2 > 1e-8 * tr / p)) s2 = 1e-8 * tr / p + 1e-300;
        /* dsyevr returns ascending eigenvalues: the largest goes first */
        for (int k = 0; k < q; k++) {
            const int src = q - 1 - k;
            const double l = w[src] - s2 > 0.0 ? sqrt(w[src] - s2) : 0.0;
            for (int j = 0; j < p; j++) st->W[(ptrdiff_t)k * p + j] = Z[(ptrdiff_t)src * p + j] * l;
        }
        for (int j = 0; j < p; j++) st->psi[j] = s2;
    }
    free(w); free(Z); free(isuppz); free(work); free(iwork);
    return rc;
}

/* the globals from the sums S: B, Sigma, Omega (or W, psi), diag(Omega),
 * log |Sigma| and tr(Omega C); 0, or 1 with a message */
static int mstep(mb_state *st, const mb_sums *S, int fa_iters, char *err, size_t errlen)
{
    const int p = st->p, d = st->d, q = st->q;
    const double one = 1.0, zero = 0.0, minus1 = -1.0;
    if (form_BC(st, S, err, errlen)) return 1;
    if (st->cov == SVIR_PLN_RANK) {
        /* factor analysis EM on C: beta = K^-1 W' Psi^-1 (K = I + W'
         * Psi^-1 W), W <- C beta' (I - beta W + beta C beta')^-1,
         * psi <- diag(C - W beta C) */
        const double *C = st->Sig;
        double *V = st->fa, *K = V + (ptrdiff_t)p * q, *Bt = K + q * q, *CB = Bt + (ptrdiff_t)p * q,
               *E = CB + (ptrdiff_t)p * q;
        for (int it = 0; it < fa_iters; it++) {
            for (int k = 0; k < q; k++)
                for (int j = 0; j < p; j++) V[(ptrdiff_t)k * p + j] = st->W[(ptrdiff_t)k * p + j] / st->psi[j];
            F77_CALL(dgemm)("T", "N", &q, &q, &p, &one, st->W, &p, V, &p, &zero, K, &q FCONE FCONE);
            for (int k = 0; k < q; k++) K[k * q + k] += 1.0;
            int info = 0;
            F77_CALL(dpotrf)("L", &q, K, &q, &info FCONE);
            if (info) { snprintf(err, errlen, "factor analysis: I + W' Psi^-1 W not positive definite"); return 1; }
            F77_CALL(dpotri)("L", &q, K, &q, &info FCONE);
            for (int k = 0; k < q; k++)
                for (int l = k + 1; l < q; l++) K[l * q + k] = K[k * q + l];
            /* Bt = beta' = V K^-1 [p x q]; CB = C beta' */
            F77_CALL(dgemm)("N", "N", &p, &q, &q, &one, V, &p, K, &q, &zero, Bt, &p FCONE FCONE);
            F77_CALL(dsymm)("L", "L", &p, &q, &one, C, &p, Bt, &p, &zero, CB, &p FCONE FCONE);
            /* E = I - beta W + beta C beta' */
            F77_CALL(dgemm)("T", "N", &q, &q, &p, &one, Bt, &p, CB, &p, &zero, E, &q FCONE FCONE);
            F77_CALL(dgemm)("T", "N", &q, &q, &p, &minus1, Bt, &p, st->W, &p, &one, E, &q FCONE FCONE);
            for (int k = 0; k < q; k++) E[k * q + k] += 1.0;
            for (int k = 0; k < q; k++)
                for (int l = k + 1; l < q; l++) E[l * q + k] = E[k * q + l] = 0.5 * (E[l * q + k] + E[k * q + l]);
            F77_CALL(dpotrf)("L", &q, E, &q, &info FCONE);
            if (info) { snprintf(err, errlen, "factor analysis: the E step's moment not positive definite"); return 1; }
            /* W = CB E^-1: solve W E = CB, E = L L' */
            memcpy(st->W, CB, sizeof(double) * (size_t)p * q);
            F77_CALL(dtrsm)("R", "L", "T", "N", &p, &q, &one, E, &q, st->W, &p FCONE FCONE FCONE FCONE);
            F77_CALL(dtrsm)("R", "L", "N", "N", &p, &q, &one, E, &q, st->W, &p FCONE FCONE FCONE FCONE);
            /* psi = diag(C) - rowsum(W o CB) */
            for (int j = 0; j < p; j++) {
                double s = 0.0;
                for (int k = 0; k < q; k++) s += st->W[(ptrdiff_t)k * p + j] * CB[(ptrdiff_t)k * p + j];
                const double v = C[(ptrdiff_t)j * p + j] - s;
                st->psi[j] = v > 1e-8 * C[(ptrdiff_t)j * p + j] ? v : 1e-8 * C[(ptrdiff_t)j * p + j];
            }
        }
        /* log |Sigma| and tr(Omega C) by Woodbury (K = I + W' V, V =
         * Psi^-1 W, G = V K^-1): tr(Omega C) = sum_j C_jj / psi_j -
         * sum (G o C V); O(p^2 q), no p x p factorisation. The VE step
         * applies Omega by Woodbury too (pln_eval.c, Wfix). */
        double *G = Bt, *ipsi = E + q * q;
        for (int j = 0; j < p; j++) st->lpsi[j] = log(st->psi[j]);
        if (svir_pln_wb_small(p, q, st->W, st->lpsi, ipsi, V, E, K, G, st->omd, &st->logdet, err,
                              errlen))
            return 1;
        F77_CALL(dsymm)("L", "L", &p, &q, &one, C, &p, V, &p, &zero, CB, &p FCONE FCONE);
        double tr = 0.0;
        for (int j = 0; j < p; j++) tr += C[(ptrdiff_t)j * p + j] * ipsi[j];
        for (ptrdiff_t e = 0; e < (ptrdiff_t)p * q; e++) tr -= G[e] * CB[e];
        st->L_tr = tr * st->nd;
        svir_pln_sigma_lowrank(p, q, st->W, st->lpsi, st->Sig); /* over C */
        return 0;
    }
    if (st->full) {
        /* Sigma = (C + s0 I) / nk, Omega by Cholesky, tr(Omega (C + s0 I))
         * = nk p */
        memcpy(st->Om, st->Sig, sizeof(double) * (size_t)p * p);
        if (svir_pln_spd_inverse(p, st->Om, NULL, &st->logdet, err, errlen)) return 1;
        for (int j = 0; j < p; j++) st->omd[j] = st->Om[(ptrdiff_t)j * p + j];
        st->L_tr = st->nk * p;
        return 0;
    }
    double tot = 0.0;
    double *v = st->fa;
    for (int j = 0; j < p; j++) {
        double s = S->T2[j] + S->s2[j];
        for (int k = 0; k < d; k++) s -= S->T1[(ptrdiff_t)j * d + k] * st->B[(ptrdiff_t)j * d + k];
        v[j] = (s + st->s0) / st->nk;
        tot += s;
    }
    st->logdet = 0.0;
    for (int j = 0; j < p; j++) {
        const double s = st->cov == SVIR_PLN_SPHERICAL ? (tot + st->s0) / (st->nk * p) : v[j];
        if (!(s > 0.0)) {
            snprintf(err, errlen, "the estimated variance of column %d is not positive", j + 1);
            return 1;
        }
        st->logdet += log(s);
        st->omd[j] = 1.0 / s;
        for (int i = 0; i < p; i++) {
            st->Sig[(ptrdiff_t)j * p + i] = i == j ? s : 0.0;
            st->Om[(ptrdiff_t)j * p + i] = i == j ? 1.0 / s : 0.0;
        }
    }
    st->L_tr = st->nk * p;
    return 0;
}

static int mstep_e(mb_state *st, const mb_sums *S, int fa_iters, svir_err *e)
{
    char err[256] = "";
    const int rc = mstep(st, S, fa_iters, err, sizeof err);
    if (rc) svir_err_set(e, rc, "%s", err);
    return rc;
}

/* the ELBO of the locals summed in S with the globals of the last M step
 * on S (with a prior on Sigma, the constant is the one without: R adds the
 * prior's, as for full batches in pln_eval.c) */
static double elbo(const mb_state *st, const mb_sums *S)
{
    return S->L - st->mb->dat.lgy + 0.5 * (double)st->n * st->p - 0.5 * st->nk * st->logdet -
           0.5 * st->L_tr + 0.5 * (st->nk - st->nd) * st->p;
}

/* ---- one batch --------------------------------------------------------------- */

/* the batch's counts (dense), offsets and covariates into Yb, Ob, Xb */
static void gather(mb_state *st, const int *rows, int m)
{
    const svir_pln_model *mb = st->mb;
    const svir_pln_data *dat = &mb->dat;
    const int n = st->n, p = st->p, d = st->d;
    if (dat->Y || dat->O)
        for (int j = 0; j < p; j++)
            for (int i = 0; i < m; i++) {
                const ptrdiff_t k = (ptrdiff_t)j * n + rows[i], b = (ptrdiff_t)j * m + i;
                if (dat->Y) st->Yb[b] = dat->Y[k];
                if (dat->O) st->Ob[b] = dat->O[k];
            }
    if (!dat->Y) {
        memset(st->Yb, 0, sizeof(double) * (size_t)m * p);
        for (int i = 0; i < m; i++)
            for (int z = mb->Rp[rows[i]]; z < mb->Rp[rows[i] + 1]; z++)
                st->Yb[(ptrdiff_t)mb->Rj[z] * m + i] = mb->Rx[z];
    }
    if (dat->Orow)
        for (int i = 0; i < m; i++) st->Ob[i] = dat->Orow[rows[i]];
    for (int k = 0; k < d; k++)
        for (int i = 0; i < m; i++) st->Xb[(ptrdiff_t)k * m + i] = dat->X[(ptrdiff_t)k * n + rows[i]];
}

/* the batch's locals from scratch, given the globals: per entry, the
 * optimum of its own terms with the others' couplings dropped,
 *   y m - exp(o + m + v / 2) - w ((m - mu)^2 + v) / 2 + log(v) / 2,
 * mu = X_i B_j, w = Omega_jj, v = S^2, by a few clamped Newton steps on m
 * with v = 1 / (w + exp(o + m + v / 2)) (a concave problem; L-BFGS takes
 * it from there). Returns 1 when the host asked to stop, else 0. */
static int cold_start(mb_state *st, int m, double *Mb, double *lsb)
{
    const svir_pln_data *dat = &st->mb->dat;
    const int p = st->p, d = st->d;
    if (d > 0) {
        const double one = 1.0, zero = 0.0;
        F77_CALL(dgemm)("N", "N", &m, &p, &d, &one, st->Xb, &m, st->B, &d, &zero, Mb, &m FCONE FCONE);
    } else {
        memset(Mb, 0, sizeof(double) * (size_t)m * p);
    }
    for (int j = 0; j < p; j++) {
        if (svir_poll()) return 1; /* the host asked to stop */
        const double w = st->omd[j];
        for (int i = 0; i < m; i++) {
            const ptrdiff_t k = (ptrdiff_t)j * m + i;
            const double o = batch_o(dat, st->Ob, m, i, j), y = st->Yb[k], mu = Mb[k];
            double z = log(y + 1.0) - o, v = 1.0 / (w + y + 1.0);
            for (int it = 0; it < 20; it++) {
                const double a = exp(o + z + 0.5 * v);
                double step = (y - a - w * (z - mu)) / (a + w);
                if (step > 2.0) step = 2.0; else if (step < -2.0) step = -2.0;
                z += step;
                v = 1.0 / (w + a * exp(step));
                if (fabs(step) < 1e-6) break;
            }
            Mb[k] = z;
            lsb[k] = 0.5 * log(v);
        }
    }
    return 0;
}

/* ---- the variational EM driver's minibatch table -------------------------- */

ptrdiff_t svir_pln_mb_units(const void *model)
{
    return ((const svir_pln_model *)model)->dat.n;
}

void svir_pln_mb_free(void *work)
{
    mb_state *st = work;
    if (!st) return;
    sums_free(&st->E); sums_free(&st->P); sums_free(&st->R);
    sums_free(&st->th0); sums_free(&st->th1); sums_free(&st->th2);
    free(st->Om); free(st->omd); free(st->fa); free(st->XXc);
    free(st->Yb); free(st->Ob); free(st->Xb); free(st->pb); free(st->Bb); free(st->Sb);
    free(st->cw); free(st->rowbuf); free(st->W); free(st->psi); free(st->lpsi); free(st->B);
    free(st->Sig);
    free(st);
}

void *svir_pln_mb_new(const void *model, const svir_control *c, svir_err *e)
{
    const svir_pln_model *mb = model;
    const svir_pln_data *dat = &mb->dat;
    const int n = dat->n, p = dat->p, d = dat->d, q = dat->cov == SVIR_PLN_RANK ? dat->q : 0;
    const ptrdiff_t pp = (ptrdiff_t)p * p;
    const int full = dat->cov == SVIR_PLN_FULL || dat->cov == SVIR_PLN_RANK;
    const int m0 = c->batch_size < n ? (int)c->batch_size : n;
    const ptrdiff_t mp = (ptrdiff_t)m0 * p;
    mb_state *st = calloc(1, sizeof *st);
    if (!st) {
        svir_err_set(e, 2, "out of memory fitting the Poisson-lognormal model in minibatches");
        return NULL;
    }
    st->mb = mb; st->n = n; st->p = p; st->d = d; st->q = q; st->cov = dat->cov; st->nd = dat->nd;
    st->nk = dat->nd + dat->k0; st->s0 = dat->s0;
    st->full = full;
    st->m0 = m0;
    st->inner = mb->inner;
    st->fa_iters = mb->fa_iters;
    st->ve_tol = mb->ve_tol;
    st->switch_tol = mb->switch_tol;
    int bad = sums_alloc(&st->E, p, d, full) | sums_alloc(&st->P, p, d, full) |
              sums_alloc(&st->R, p, d, full) | sums_alloc(&st->th0, p, d, full) |
              sums_alloc(&st->th1, p, d, full) | sums_alloc(&st->th2, p, d, full);
    st->Om = calloc((size_t)pp, sizeof(double));
    st->omd = calloc((size_t)p, sizeof(double));
    st->fa = calloc((size_t)(q > 0 ? 3 * (ptrdiff_t)p * q + 2 * q * q + 2 * p : p), sizeof(double));
    st->XXc = calloc((size_t)d * d + 1, sizeof(double));
    st->Yb = calloc((size_t)mp, sizeof(double));
    st->Ob = calloc((size_t)mp, sizeof(double));
    st->Xb = calloc((size_t)m0 * d + 1, sizeof(double));
    st->pb = calloc((size_t)(2 * mp), sizeof(double));
    st->Bb = calloc((size_t)d * p + 1, sizeof(double));
    st->Sb = calloc((size_t)pp, sizeof(double));
    st->cw = calloc((size_t)(3 * p), sizeof(double));
    st->rowbuf = malloc(sizeof(int) * (size_t)m0);
    st->B = calloc((size_t)d * p + 1, sizeof(double));
    st->Sig = calloc((size_t)pp, sizeof(double));
    if (q > 0) {
        st->W = calloc((size_t)p * q, sizeof(double));
        st->psi = calloc((size_t)p, sizeof(double));
        st->lpsi = calloc((size_t)p, sizeof(double));
    }
    if (bad || !st->Om || !st->omd || !st->fa || !st->XXc || !st->Yb || !st->Ob || !st->Xb ||
        !st->pb || !st->Bb || !st->Sb || !st->cw || !st->rowbuf || !st->B || !st->Sig ||
        (q > 0 && (!st->W || !st->psi || !st->lpsi))) {
        svir_pln_mb_free(st);
        svir_err_set(e, 2, "out of memory fitting the Poisson-lognormal model in minibatches");
        return NULL;
    }
    /* the VE step's data: a batch's rows, B and Omega held */
    svir_pln_data *bd = &st->bd;
    *bd = *dat;
    bd->threads = c->threads > 0 ? c->threads : 1;
    bd->P = NULL;
    bd->lgy = 0.0;
    bd->Bfix = st->B;
    bd->Omfix = q > 0 ? NULL : st->Om;
    bd->Wfix = q > 0 ? st->W : NULL;
    bd->lpsifix = q > 0 ? st->lpsi : NULL;
    bd->colwork = st->cw;
    bd->Yp = NULL; bd->Yi = NULL; bd->Yx = NULL;
    return st;
}

/* the start: every row's q(Z_i) at M = log(1 + Y) - O, S = 0.1 (as the
 * full-batch fit's), summed a batch at a time; then the M step (from
 * probabilistic PCA for rank q) and the ELBO */
int svir_pln_mb_begin(void *work, double *elbo_out, svir_err *e)
{
    mb_state *st = work;
    const int n = st->n, p = st->p;
    sums_zero(st, &st->E);
    for (int start = 0; start < n; start += st->m0) {
        if (svir_poll()) return SVIR_INTERRUPTED;
        const int m = start + st->m0 <= n ? st->m0 : n - start;
        for (int i = 0; i < m; i++) st->rowbuf[i] = start + i;
        gather(st, st->rowbuf, m);
        double *Mb = st->pb, *lsb = st->pb + (ptrdiff_t)m * p;
        for (int j = 0; j < p; j++)
            for (int i = 0; i < m; i++) {
                const ptrdiff_t k = (ptrdiff_t)j * m + i;
                Mb[k] = log1p(st->Yb[k]) - batch_o(&st->mb->dat, st->Ob, m, i, j);
                lsb[k] = log(0.1);
            }
        if (sums_add(st, &st->E, m, Mb, lsb, st->Xb, st->Yb, st->Ob)) return SVIR_INTERRUPTED;
    }
    if (st->cov == SVIR_PLN_RANK) {
        char err[256] = "";
        int rc = form_BC(st, &st->E, err, sizeof err);
        if (!rc) rc = ppca_start(st, err, sizeof err);
        if (rc == 2) return svir_err_set(e, 2, "out of memory fitting the Poisson-lognormal model in minibatches");
        if (rc) return svir_err_set(e, rc, "%s", err);
    }
    const int rc = mstep_e(st, &st->E, 10 * st->fa_iters, e);
    if (rc) return rc;
    *elbo_out = st->Jlast = elbo(st, &st->E);
    mb_sums t = st->P; st->P = st->E; st->E = t;
    sums_zero(st, &st->E);
    st->visited = 0;
    st->exact = 0;
    return 0;
}

int svir_pln_mb_step(void *work, const int *rows, int m, svir_err *e)
{
    mb_state *st = work;
    const svir_pln_data *dat = &st->mb->dat;
    const int p = st->p;
    gather(st, rows, m);
    double *Mb = st->pb, *lsb = st->pb + (ptrdiff_t)m * p;
    if (cold_start(st, m, Mb, lsb)) return SVIR_INTERRUPTED;
    /* the VE step with the globals held */
    svir_pln_data *bd = &st->bd;
    bd->n = m;
    bd->nd = m;
    bd->Y = st->Yb;
    bd->O = dat->O ? st->Ob : NULL;
    bd->Orow = dat->Orow ? st->Ob : NULL;
    bd->X = st->Xb;
    bd->logdet_om = -st->logdet;
    double Jb = 0.0;
    int it = 0;
    char err[256] = "";
    int rc = svir_pln_fit(bd, st->pb, st->inner, st->ve_tol, &Jb, &it, NULL, st->Bb, st->Sb, err,
                          sizeof err);
    /* the host asked to stop: the VE step skipped its work */
    if (svir_interrupt_pending()) return SVIR_INTERRUPTED;
    if (rc) return svir_err_set(e, rc, "%s", err);
    if (sums_add(st, &st->E, m, Mb, lsb, st->Xb, st->Yb, st->Ob)) return SVIR_INTERRUPTED;
    st->visited += m;
    if (st->exact) return 0;
    /* online: the globals from the last epoch's sums with the visited rows'
     * share replaced by theirs */
    sums_mix(st, &st->R, &st->P, (double)st->visited / st->n, &st->E);
    return mstep_e(st, &st->R, st->fa_iters, e);
}

static void sums_copy(const mb_state *st, mb_sums *to, const mb_sums *from)
{
    const int p = st->p, d = st->d;
    memcpy(to->T1, from->T1, sizeof(double) * (size_t)d * p);
    memcpy(to->T2, from->T2, sizeof(double) * (size_t)(st->full ? (ptrdiff_t)p * p : p));
    memcpy(to->s2, from->s2, sizeof(double) * (size_t)p);
    memcpy(to->XX, from->XX, sizeof(double) * (size_t)d * d);
    to->L = from->L;
}

/* SQUAREM (Varadhan and Roland 2008) over the exact epochs, the EM map F
 * taking the sums that set the globals to the sums of the epoch's locals:
 * from th0, th1 = F(th0), th2 = F(th1), r = th1 - th0, v = th2 - 2 th1 +
 * th0, a = -|r| / |v| (at most -1), the next epoch's globals from th0 - 2 a
 * r + a^2 v (a halved towards -1 while their M step fails; a = -1 gives
 * th2). That epoch's ELBO is kept when it is at least th2's; otherwise the
 * globals go back to th2's. Returns the M step's status. */
static int squarem_extrapolate(mb_state *st, svir_err *e)
{
    const int p = st->p, d = st->d;
    const ptrdiff_t n1 = (ptrdiff_t)d * p, n2 = st->full ? (ptrdiff_t)p * p : p;
    double rr = 0.0, vv = 0.0;
#define SQ_ACC(F, N)                                                                    \
    for (ptrdiff_t k = 0; k < (N); k++) {                                               \
        const double r = st->th1.F[k] - st->th0.F[k];                                  \
        const double v = st->th2.F[k] - 2.0 * st->th1.F[k] + st->th0.F[k];             \
        rr += r * r;                                                                    \
        vv += v * v;                                                                    \
    }
    SQ_ACC(T1, n1)
    SQ_ACC(T2, n2)
    SQ_ACC(s2, p)
#undef SQ_ACC
    double a = vv > 0.0 ? -sqrt(rr / vv) : -1.0;
    if (a > -1.0) a = -1.0;
    mb_sums *t = &st->R; /* the extrapolation's room */
    char err[256] = "";
    for (int tries = 0; tries < 30 && a < -1.0; tries++) {
        const double c1 = 1.0 + 2.0 * a + a * a, c2 = -2.0 * a - 2.0 * a * a, c3 = a * a;
        /* th0 - 2 a r + a^2 v = c1 th0 + c2 th1 + c3 th2 */
#define SQ_MIX(F, N)                                                                    \
        for (ptrdiff_t k = 0; k < (N); k++)                                             \
            t->F[k] = c1 * st->th0.F[k] + c2 * st->th1.F[k] + c3 * st->th2.F[k];
        SQ_MIX(T1, n1)
        SQ_MIX(T2, n2)
        SQ_MIX(s2, p)
#undef SQ_MIX
        memcpy(t->XX, st->th2.XX, sizeof(double) * (size_t)d * d);
        if (!mstep(st, t, st->fa_iters, err, sizeof err)) return 0;
        a = 0.5 * (a - 1.0);
        if (a > -1.0 - 1e-3) a = -1.0;
    }
    return mstep_e(st, &st->th2, st->fa_iters, e);
}

/* the epoch's end: the M step on its exact sums and their ELBO; *gain for
 * the stopping rule after a cycle's second plain epoch, NAN otherwise: its
 * gain over the first, g2, divided by 1 - r, r = g2 / g1 (the plain
 * epochs' gains; at most 0.99) the rate at which EM converges here, so
 * that a slow EM is not stopped for its small steps (the geometric series
 * g2 (1 + r + r^2 + ...) is what plain EM would still gain) */
int svir_pln_mb_epoch(void *work, double *elbo_out, double *gain, svir_err *e)
{
    mb_state *st = work;
    int rc = mstep_e(st, &st->E, st->fa_iters, e);
    if (rc) return rc;
    const double J = elbo(st, &st->E);
    *elbo_out = J;
    *gain = NAN;
    if (!st->exact) {
        if ((J - st->Jlast) < st->switch_tol * fabs(J)) {
            st->exact = 1;
            st->sq = 0;
            sums_copy(st, &st->th0, &st->E); /* the next epoch's globals' sums */
            st->J0 = J;
        }
    } else if (st->sq == 0) {
        sums_copy(st, &st->th1, &st->E);
        st->J1 = J;
        st->sq = 1;
    } else if (st->sq == 1) {
        sums_copy(st, &st->th2, &st->E);
        st->J2 = J;
        const double g1 = st->J1 - st->J0, g2 = J - st->J1;
        double r = g1 > 0.0 && g2 > 0.0 ? g2 / g1 : 0.0;
        if (r > 0.99) r = 0.99;
        *gain = g2 / (1.0 - r);
        st->sq = 2;
        if ((rc = squarem_extrapolate(st, e)) != 0) return rc;
    } else {
        /* after the extrapolated epoch: keep it, or go back to th2 */
        st->sq = 0;
        if (J >= st->J2) {
            sums_copy(st, &st->th0, &st->E);
            st->J0 = J;
        } else {
            sums_copy(st, &st->th0, &st->th2);
            st->J0 = st->J2;
            if ((rc = mstep_e(st, &st->th2, st->fa_iters, e)) != 0) return rc;
        }
    }
    st->Jlast = J;
    mb_sums t = st->P; st->P = st->E; st->E = t;
    sums_zero(st, &st->E);
    st->visited = 0;
    return 0;
}

int svir_pln_mb_finish(void *work, svir_result *res, svir_err *e)
{
    mb_state *st = work;
    const int p = st->p, q = st->q;
    if (svir_out_copy(res->extra, "B", st->B, st->d, p) ||
        svir_out_copy(res->extra, "Sigma", st->Sig, p, p) ||
        (q > 0 && (svir_out_copy(res->extra, "W", st->W, p, q) ||
                   svir_out_copy(res->extra, "psi", st->psi, p, -1))))
        return svir_err_set(e, 2, "out of memory for the results");
    return 0;
}
