/* The Poisson-lognormal model on core/svir_lbfgs.c's L-BFGS, on the CPU:
 * the problem (svir_pln_eval's objective; pln_precond's initial inverse
 * Hessian; pln_sstart's start of log S) and svir_pln_fit, which runs it. */
#include "core/svir_lapack.h"
#include "core/svir_result.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "core/svir_lbfgs.h"
#include "core/svir_math.h"
#include "models/pln/pln_entry.h"
#include "models/pln/pln_work.h"

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
 * In L-BFGS's two-loop recursion (core/svir_lbfgs.c) it is applied to
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
        if (svir_poll()) continue; /* the host asked to stop */
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
        if (svir_poll()) continue; /* the host asked to stop */
        const double o = omd[j];
        for (ptrdiff_t k = (ptrdiff_t)j * n; k < (ptrdiff_t)(j + 1) * n; k++) {
            par[np + k] = svir_pln_sstart_entry(par[np + k], S2a[k], A[k], o);
        }
    }
}


/* ---- the problem --------------------------------------------------------- */

typedef struct {
    svir_lbfgs_problem pb;
    const svir_pln_data *dat;
    svir_vecspace *vs;
    double *w[2];           /* the two evaluations' work (svir_pln_nwork) */
    double *XtX, *scratch, *colpart;
    double *B, *Sigma;      /* every evaluation's B [d x p] and Sigma [p x p] */
} pln_cpu_problem;

static int pb_eval(void *ctx, int slot, const double *x, double *J, double *g, svir_err *e)
{
    pln_cpu_problem *p = ctx;
    char err[256] = "";
    const int st = svir_pln_eval(p->dat, x, J, g, p->B, p->Sigma, p->w[slot], err, sizeof err);
    if (st) svir_err_set(e, st, "%s", err);
    return st;
}

static int pb_precond(void *ctx, int slot, const double *g, double gsign, int nm,
                      const double *alpha, double *const *Y, double *out, double *ydot, svir_err *e)
{
    pln_cpu_problem *p = ctx;
    (void)e;
    pln_precond(p->dat, p->w[slot], p->XtX, g, gsign, nm, alpha, Y, out, ydot, p->colpart,
                p->scratch);
    return 0;
}

static int pb_start(void *ctx, int slot, double *x, svir_err *e)
{
    pln_cpu_problem *p = ctx;
    (void)e;
    pln_sstart(p->dat, x, p->w[slot]);
    return 0;
}

static void pb_destroy(svir_lbfgs_problem *pb)
{
    if (!pb) return;
    pln_cpu_problem *p = pb->ctx;
    svir_vec_cpu_free(p->vs);
    free(p->w[0]); free(p->w[1]); free(p->XtX); free(p->scratch); free(p->colpart);
    free(p);
}

svir_lbfgs_problem *svir_pln_cpu_problem(const svir_pln_data *dat, double *x, double *B,
                                         double *Sigma)
{
    const int n = dat->n, T = dat->threads > 0 ? dat->threads : 1;
    const ptrdiff_t L = svir_pln_npar(dat), nw = svir_pln_nwork(dat);
    pln_cpu_problem *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->dat = dat;
    p->B = B;
    p->Sigma = Sigma;
    p->vs = svir_vec_cpu_new(L, T);
    p->w[0] = malloc(sizeof(double) * (size_t)nw);
    p->w[1] = malloc(sizeof(double) * (size_t)nw);
    p->XtX = malloc(sizeof(double) * (size_t)(dat->d > 0 ? dat->d * dat->d : 1));
    p->scratch = malloc(sizeof(double) * 3 * (size_t)n * (size_t)T);
    p->colpart = malloc(sizeof(double) * (size_t)(dat->p + 1) * SVIR_LBFGS_MAXMEM);
    svir_lbfgs_problem *pb = &p->pb;
    pb->ctx = p;
    pb->destroy = pb_destroy;
    if (!p->vs || !p->w[0] || !p->w[1] || !p->XtX || !p->scratch || !p->colpart) {
        pb_destroy(pb);
        return NULL;
    }
    for (int a = 0; a < dat->d; a++)
        for (int b = 0; b < dat->d; b++) {
            double s = 0.0;
            for (int i = 0; i < n; i++) s += dat->X[(ptrdiff_t)a * n + i] * dat->X[(ptrdiff_t)b * n + i];
            p->XtX[a * dat->d + b] = s;
        }
    pb->vs = p->vs;
    pb->x = x;
    pb->eval = pb_eval;
    pb->precond = pb_precond;
#ifndef PLN_NOSSTART
    pb->start = pb_start;
#else
    (void)pb_start;
#endif
    /* a step moves no M entry by more than 2 and no log S (nor W, log psi)
     * by more than 1 */
    pb->cap_split = (ptrdiff_t)n * dat->p;
    pb->cap_lo = 2.0;
    pb->cap_hi = 1.0;
    pb->memory = 5;
    return pb;
}

int svir_pln_fit(const svir_pln_data *dat, double *par, int maxit, double tol, double *J,
                 int *iters, double *trace, double *B, double *Sigma, char *err, size_t errlen)
{
    svir_lbfgs_problem *pb = svir_pln_cpu_problem(dat, par, B, Sigma);
    if (!pb) {
        snprintf(err, errlen, "out of memory fitting the Poisson-lognormal model");
        return 2;
    }
    svir_err e = {0, ""};
    int stop, slot;
    const int st = svir_lbfgs_run(pb, maxit, tol, NULL, J, iters, trace, &stop, &slot, &e);
    if (st) snprintf(err, errlen, "%s", e.msg);
    pb->destroy(pb);
    return st;
}
