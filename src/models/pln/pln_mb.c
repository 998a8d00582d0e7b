/* The Poisson-lognormal model in minibatches of rows (issue 5; dev/PLN.md):
 * incremental variational EM. Every row keeps its q(Z_i) = N(M_i,
 * diag(S_i^2)); the global statistics
 *   T1 = X'M [d x p],  T2 = M'M [p x p] (diagonal: its diagonal),
 *   s2 = sum_i S_i^2 [p],  L = sum_i l_i,
 *   l_i = sum_j [Y_ij (O_ij + M_ij) - A_ij + log S_ij],
 * are sums over all rows. A step draws the next minibatch of an epoch's
 * random order, takes its rows' contributions out of the sums, runs the VE
 * step on them (svir_pln_fit with B and Omega fixed, warm-started, a few
 * L-BFGS iterations), puts the new contributions back, and updates B and
 * Sigma from the sums: B = (X'X)^-1 T1, C = T2 - T1'B + diag(s2), Sigma =
 * C / nd (its diagonal, or its mean diagonal), or for rank q a few factor
 * analysis EM iterations on C / nd from the current W and psi. The VE step
 * raises the ELBO with the globals fixed and the M step raises it with
 * the locals fixed, so the ELBO, computed exactly from the sums,
 *   J = L - sum log Y! + n p / 2 - nd / 2 log |Sigma| - tr(Omega C) / 2,
 * never decreases, and the fit's fixed points are those of the full-batch
 * fit. Memory: M and S (2 n p) and one minibatch's work, not the
 * full-batch L-BFGS's 20 n p. The epochs, the order of the rows and the
 * stopping rule are the variational EM driver's (infer/svir_vem.c). */
#include "core/svir_lapack.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/pln/pln_model.h"

typedef struct {
    const svir_pln_model *mb;
    int n, p, d, q, cov;
    double nd;
    double *T1, *T2, *s2, *loc, L;
    double *B, *Sig, *Om, logdet, L_tr; /* L_tr = tr(Omega C), C = T2 - T1'B + diag(s2) */
    double *W, *psi, *lpsi; /* rank q: loadings [p x q], psi and log psi [p] */
    double *fa;       /* factor-analysis scratch */
    /* the fit: all rows' M and log S (and W, log psi) [npar], the globals,
     * one batch's data and locals, its VE step's data */
    double *par, *Yb, *Ob, *Xb, *pb, *Bb, *Sb, *cw;
    int m0, inner, fa_iters;
    svir_pln_data bd;
} mb_state;

/* the row's local terms l_i, from M and log S (par) */
static double row_local(const svir_pln_model *mb, const double *M, const double *ls, int i)
{
    const svir_pln_data *dat = &mb->dat;
    const int n = dat->n, p = dat->p;
    double s = 0.0;
    for (int j = 0; j < p; j++) {
        const ptrdiff_t k = (ptrdiff_t)j * n + i;
        const double o = dat->O ? dat->O[k] : dat->Orow ? dat->Orow[i] : 0.0;
        s += ls[k] - exp(o + M[k] + 0.5 * exp(2.0 * ls[k]));
    }
    if (dat->Y) {
        for (int j = 0; j < p; j++) {
            const ptrdiff_t k = (ptrdiff_t)j * n + i;
            const double o = dat->O ? dat->O[k] : dat->Orow ? dat->Orow[i] : 0.0;
            s += dat->Y[k] * (o + M[k]);
        }
    } else {
        for (int z = mb->Rp[i]; z < mb->Rp[i + 1]; z++) {
            const int j = mb->Rj[z];
            const ptrdiff_t k = (ptrdiff_t)j * n + i;
            const double o = dat->O ? dat->O[k] : dat->Orow ? dat->Orow[i] : 0.0;
            s += mb->Rx[z] * (o + M[k]);
        }
    }
    return s;
}

/* add (sign = 1) or remove (sign = -1) the contributions of rows rows[0..m)
 * (their M and log S gathered in Mb, lsb [m x p]) to the sums */
static void stats_update(mb_state *st, const int *rows, int m, const double *Mb, const double *lsb,
                         const double *Xb, double sign)
{
    const int p = st->p, d = st->d;
    if (d > 0)
        F77_CALL(dgemm)("T", "N", &d, &p, &m, &sign, Xb, &m, Mb, &m, &(double){1.0}, st->T1, &d FCONE FCONE);
    if (st->cov == SVIR_PLN_FULL || st->cov == SVIR_PLN_RANK) {
        F77_CALL(dsyrk)("L", "T", &p, &m, &sign, Mb, &m, &(double){1.0}, st->T2, &p FCONE FCONE);
    } else {
        for (int j = 0; j < p; j++) {
            double s = 0.0;
            for (int i = 0; i < m; i++) s += Mb[(ptrdiff_t)j * m + i] * Mb[(ptrdiff_t)j * m + i];
            st->T2[j] += sign * s;
        }
    }
    for (int j = 0; j < p; j++) {
        double s = 0.0;
        for (int i = 0; i < m; i++) s += exp(2.0 * lsb[(ptrdiff_t)j * m + i]);
        st->s2[j] += sign * s;
    }
    (void)rows;
}

/* B, Sigma, Omega and log |Sigma| from the sums; returns 0 or 1 (Sigma not
 * positive definite); C goes to st->Sig's room first (full, rank) */
static int mstep(mb_state *st, int fa_iters, char *err, size_t errlen)
{
    const svir_pln_model *mb = st->mb;
    const int p = st->p, d = st->d, q = st->q;
    const double one = 1.0, zero = 0.0, minus1 = -1.0;
    if (d > 0)
        F77_CALL(dgemm)("N", "N", &d, &p, &d, &one, mb->XtXinv, &d, st->T1, &d, &zero, st->B, &d FCONE FCONE);
    if (st->cov == SVIR_PLN_FULL || st->cov == SVIR_PLN_RANK) {
        /* C / nd = (T2 - T1'B + diag(s2)) / nd, lower triangle then full */
        double *C = st->Sig;
        for (ptrdiff_t e = 0; e < (ptrdiff_t)p * p; e++) C[e] = st->T2[e];
        if (d > 0)
            F77_CALL(dgemm)("T", "N", &p, &p, &d, &minus1, st->T1, &d, st->B, &d, &one, C, &p FCONE FCONE);
        for (int j = 0; j < p; j++) {
            C[(ptrdiff_t)j * p + j] += st->s2[j];
            for (int i = j; i < p; i++) C[(ptrdiff_t)j * p + i] /= st->nd;
            for (int i = j + 1; i < p; i++) C[(ptrdiff_t)i * p + j] = C[(ptrdiff_t)j * p + i];
        }
        if (st->cov == SVIR_PLN_RANK) {
            /* factor analysis EM on C: beta = K^-1 W' Psi^-1 (K = I + W'
             * Psi^-1 W), W <- C beta' (I - beta W + beta C beta')^-1,
             * psi <- diag(C - W beta C) */
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
            double *G = Bt, *ipsi = E + q * q, *omd = ipsi + p;
            for (int j = 0; j < p; j++) st->lpsi[j] = log(st->psi[j]);
            if (svir_pln_wb_small(p, q, st->W, st->lpsi, ipsi, V, E, K, G, omd, &st->logdet, err,
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
        /* full: Sigma = C / nd, Omega by Cholesky, tr(Omega C) = nd p */
        memcpy(st->Om, C, sizeof(double) * (size_t)p * p);
        if (svir_pln_spd_inverse(p, st->Om, NULL, &st->logdet, err, errlen)) return 1;
        st->L_tr = st->nd * p;
    } else {
        double tot = 0.0;
        double *v = st->fa;
        for (int j = 0; j < p; j++) {
            double s = st->T2[j] + st->s2[j];
            for (int k = 0; k < d; k++) s -= st->T1[(ptrdiff_t)j * d + k] * st->B[(ptrdiff_t)j * d + k];
            v[j] = s / st->nd;
            tot += s;
        }
        st->logdet = 0.0;
        for (int j = 0; j < p; j++) {
            const double s = st->cov == SVIR_PLN_SPHERICAL ? tot / (st->nd * p) : v[j];
            if (!(s > 0.0)) {
                snprintf(err, errlen, "the estimated variance of column %d is not positive", j + 1);
                return 1;
            }
            st->logdet += log(s);
            for (int i = 0; i < p; i++) {
                st->Sig[(ptrdiff_t)j * p + i] = i == j ? s : 0.0;
                st->Om[(ptrdiff_t)j * p + i] = i == j ? 1.0 / s : 0.0;
            }
        }
        st->L_tr = st->nd * p;
    }
    return 0;
}

/* the sums from all rows, from scratch */
static void stats_all(mb_state *st, const double *par)
{
    const svir_pln_model *mb = st->mb;
    const int n = st->n, p = st->p, d = st->d;
    const ptrdiff_t np = (ptrdiff_t)n * p;
    memset(st->T1, 0, sizeof(double) * (size_t)d * p);
    memset(st->T2, 0, sizeof(double) * (size_t)(st->cov == SVIR_PLN_FULL || st->cov == SVIR_PLN_RANK ? (ptrdiff_t)p * p : p));
    memset(st->s2, 0, sizeof(double) * (size_t)p);
    stats_update(st, NULL, n, par, par + np, mb->dat.X, 1.0);
    st->L = 0.0;
    for (int i = 0; i < n; i++) {
        st->loc[i] = row_local(mb, par, par + np, i);
        st->L += st->loc[i];
    }
}

static double elbo(const mb_state *st)
{
    return st->L - st->mb->dat.lgy + 0.5 * (double)st->n * st->p - 0.5 * st->nd * st->logdet -
           0.5 * st->L_tr;
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
    free(st->T1); free(st->T2); free(st->s2); free(st->loc); free(st->Om); free(st->fa);
    free(st->Yb); free(st->Ob); free(st->Xb); free(st->pb); free(st->Bb); free(st->Sb);
    free(st->cw); free(st->psi); free(st->lpsi); free(st->par); free(st->B); free(st->Sig);
    free(st);
}

void *svir_pln_mb_new(const void *model, const svir_control *c, svir_err *e)
{
    const svir_pln_model *mb = model;
    const svir_pln_data *dat = &mb->dat;
    const int n = dat->n, p = dat->p, d = dat->d, q = dat->cov == SVIR_PLN_RANK ? dat->q : 0;
    const ptrdiff_t np = (ptrdiff_t)n * p, pp = (ptrdiff_t)p * p, L = svir_pln_npar(dat);
    const int fullT2 = dat->cov == SVIR_PLN_FULL || dat->cov == SVIR_PLN_RANK;
    const int m0 = c->batch_size < n ? (int)c->batch_size : n;
    const ptrdiff_t mp = (ptrdiff_t)m0 * p;
    mb_state *st = calloc(1, sizeof *st);
    if (!st) {
        svir_err_set(e, 2, "out of memory fitting the Poisson-lognormal model in minibatches");
        return NULL;
    }
    st->mb = mb; st->n = n; st->p = p; st->d = d; st->q = q; st->cov = dat->cov; st->nd = dat->nd;
    st->m0 = m0;
    st->inner = mb->inner;
    st->fa_iters = mb->fa_iters;
    st->T1 = calloc((size_t)d * p + 1, sizeof(double));
    st->T2 = calloc((size_t)(fullT2 ? pp : p), sizeof(double));
    st->s2 = calloc((size_t)p, sizeof(double));
    st->loc = calloc((size_t)n, sizeof(double));
    st->Om = calloc((size_t)pp, sizeof(double));
    st->fa = calloc((size_t)(q > 0 ? 3 * (ptrdiff_t)p * q + 2 * q * q + 2 * p : p), sizeof(double));
    st->Yb = calloc((size_t)mp, sizeof(double));
    st->Ob = calloc((size_t)mp, sizeof(double));
    st->Xb = calloc((size_t)m0 * d + 1, sizeof(double));
    st->pb = calloc((size_t)(2 * mp), sizeof(double));
    st->Bb = calloc((size_t)d * p + 1, sizeof(double));
    st->Sb = calloc((size_t)pp, sizeof(double));
    st->cw = calloc((size_t)(3 * p), sizeof(double));
    st->par = malloc(sizeof(double) * (size_t)L);
    st->B = calloc((size_t)d * p + 1, sizeof(double));
    st->Sig = calloc((size_t)pp, sizeof(double));
    if (q > 0) {
        st->psi = calloc((size_t)p, sizeof(double));
        st->lpsi = calloc((size_t)p, sizeof(double));
    }
    if (!st->T1 || !st->T2 || !st->s2 || !st->loc || !st->Om || !st->fa || !st->Yb || !st->Ob ||
        !st->Xb || !st->pb || !st->Bb || !st->Sb || !st->cw || !st->par || !st->B || !st->Sig ||
        (q > 0 && (!st->psi || !st->lpsi))) {
        svir_pln_mb_free(st);
        svir_err_set(e, 2, "out of memory fitting the Poisson-lognormal model in minibatches");
        return NULL;
    }
    memcpy(st->par, mb->par0, sizeof(double) * (size_t)L);
    if (q > 0) {
        st->W = st->par + 2 * np;
        for (int j = 0; j < p; j++) st->psi[j] = exp(st->par[2 * np + (ptrdiff_t)p * q + j]);
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

static int mstep_e(mb_state *st, int fa_iters, svir_err *e)
{
    char err[256] = "";
    const int rc = mstep(st, fa_iters, err, sizeof err);
    if (rc) svir_err_set(e, rc, "%s", err);
    return rc;
}

int svir_pln_mb_begin(void *work, double *elbo_out, svir_err *e)
{
    mb_state *st = work;
    stats_all(st, st->par);
    const int rc = mstep_e(st, 10 * st->fa_iters, e);
    *elbo_out = elbo(st);
    return rc;
}

int svir_pln_mb_step(void *work, const int *rows, int m, svir_err *e)
{
    mb_state *st = work;
    const svir_pln_model *mb = st->mb;
    const svir_pln_data *dat = &mb->dat;
    const int n = st->n, p = st->p, d = st->d;
    const ptrdiff_t np = (ptrdiff_t)n * p;
    double *par = st->par, *Yb = st->Yb, *Ob = st->Ob, *Xb = st->Xb, *pb = st->pb;
    /* gather the minibatch */
    double *Mb = pb, *lsb = pb + (ptrdiff_t)m * p;
    for (int j = 0; j < p; j++)
        for (int i = 0; i < m; i++) {
            const ptrdiff_t k = (ptrdiff_t)j * n + rows[i], q = (ptrdiff_t)j * m + i;
            Mb[q] = par[k];
            lsb[q] = par[np + k];
            if (dat->Y) Yb[q] = dat->Y[k];
            if (dat->O) Ob[q] = dat->O[k];
        }
    if (!dat->Y) {
        memset(Yb, 0, sizeof(double) * (size_t)m * p);
        for (int i = 0; i < m; i++)
            for (int z = mb->Rp[rows[i]]; z < mb->Rp[rows[i] + 1]; z++)
                Yb[(ptrdiff_t)mb->Rj[z] * m + i] = mb->Rx[z];
    }
    if (dat->Orow)
        for (int i = 0; i < m; i++) Ob[i] = dat->Orow[rows[i]];
    for (int k = 0; k < d; k++)
        for (int i = 0; i < m; i++) Xb[(ptrdiff_t)k * m + i] = dat->X[(ptrdiff_t)k * n + rows[i]];
    /* out with the rows' old contributions */
    stats_update(st, rows, m, Mb, lsb, Xb, -1.0);
    for (int i = 0; i < m; i++) st->L -= st->loc[rows[i]];
    /* the VE step with B and Omega fixed */
    svir_pln_data *bd = &st->bd;
    bd->n = m;
    bd->nd = m;
    bd->Y = Yb;
    bd->O = dat->O ? Ob : NULL;
    bd->Orow = dat->Orow ? Ob : NULL;
    bd->X = Xb;
    bd->logdet_om = -st->logdet;
    double Jb = 0.0;
    int it = 0;
    char err[256] = "";
    int rc = svir_pln_fit(bd, pb, st->inner, 1e-10, &Jb, &it, NULL, st->Bb, st->Sb, err, sizeof err);
    if (rc) return svir_err_set(e, rc, "%s", err);
    /* in with the new ones */
    for (int j = 0; j < p; j++)
        for (int i = 0; i < m; i++) {
            const ptrdiff_t k = (ptrdiff_t)j * n + rows[i], q = (ptrdiff_t)j * m + i;
            par[k] = Mb[q];
            par[np + k] = lsb[q];
        }
    stats_update(st, rows, m, Mb, lsb, Xb, 1.0);
    for (int i = 0; i < m; i++) {
        st->loc[rows[i]] = row_local(mb, par, par + np, rows[i]);
        st->L += st->loc[rows[i]];
    }
    return mstep_e(st, st->fa_iters, e);
}

/* the epoch's ELBO, from sums recomputed from scratch (no drift) */
int svir_pln_mb_epoch(void *work, double *elbo_out, svir_err *e)
{
    mb_state *st = work;
    stats_all(st, st->par);
    const int rc = mstep_e(st, st->fa_iters, e);
    *elbo_out = elbo(st);
    return rc;
}

int svir_pln_mb_finish(void *work, svir_result *res, svir_err *e)
{
    mb_state *st = work;
    const int n = st->n, p = st->p, q = st->q;
    const ptrdiff_t np = (ptrdiff_t)n * p;
    if (q > 0)
        for (int j = 0; j < p; j++) st->par[2 * np + (ptrdiff_t)p * q + j] = log(st->psi[j]);
    if (svir_out_copy(res->extra, "par", st->par, svir_pln_npar(&st->mb->dat), -1) ||
        svir_out_copy(res->extra, "B", st->B, st->d, p) ||
        svir_out_copy(res->extra, "Sigma", st->Sig, p, p))
        return svir_err_set(e, 2, "out of memory for the results");
    return 0;
}
