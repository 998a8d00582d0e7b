/* The GLMM's QEM (see dev/QEM.md) for the QEM driver (infer/svir_qem.c):
 * each iteration draws K samples of the globals and of every group's
 * effects and weighs them over the tree (glmm_tree.c), then matches the
 * proposals to the weighted moments: the raw first and second moments of
 * theta and of each group's z0 are smoothed, M <- (1 - eta_t) M + eta_t E
 * (the driver's step eta_t), and the proposals set to match them. The
 * moments of z0 are those of z + w(theta), so the same formulas serve a
 * coupled proposal (anchored at the start); svi_fit() asks for none
 * (m->couple = 0): on bench/qem.R's data coupling changed nothing.
 *
 * With more than one grouping factor the groups' part is glmm_nest.c's
 * tree of plates (nested chain, crossed factors weighed with the globals),
 * on the CPU only.
 *
 * Two tables: the CPU's, and the CUDA device's, whose groups' draws,
 * tables and M-step run on the device (cuda/glmm_qem.cu) while the
 * globals stay here, with the same numbers up to the order of sums. */
#include "models/glmm/glmm_svi.h"
#include "models/glmm/glmm_tree.h"
#include "models/glmm/glmm_nest.h"
#include "models/glmm/glmm_qem.h"
#include "models/glmm/glmm_cuda.h"
#include "models/glmm/glmm_local.h"
#include "core/svir_philox.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

typedef struct {
    const svir_glmm *m;
    svir_control c;
    int cuda;
    glmm_tree qt;
    int have_tree;
    glmm_nest nt;               /* more than one grouping factor (glmm_nest.c) */
    int nest;
    ptrdiff_t ngp;
    double lP;                  /* log P-hat + log K of the last iteration */
    double *gpar, *lpar, *anchor; /* the proposal, and the start it is anchored at */
    double *w0, *G1, *G2, *E1, *E2, *Z1, *Z2, *wk;
    double *kbeta, *kA;         /* the device's inputs: the globals' draws unpacked */
    svir_cuda_qem *dev;         /* the groups on the device, or NULL */
} glmm_qem_work;

static void qem_free(void *work)
{
    glmm_qem_work *x = work;
    if (!x) return;
    svir_cuda_qem_free(x->dev);
    if (x->have_tree) glmm_tree_free(&x->qt);
    if (x->nest) glmm_nest_free(&x->nt);
    free(x->gpar); free(x->lpar); free(x->anchor);
    free(x->w0); free(x->G1); free(x->G2); free(x->E1); free(x->E2); free(x->Z1); free(x->Z2);
    free(x->wk); free(x->kbeta); free(x->kA);
    free(x);
}

static int qem_new(const void *model, const svir_control *c, int cuda, void **work, svir_err *e)
{
    const svir_glmm *m = model;
    const int K = c->qem_K;
    if (K < 2 || K > SVIR_QEM_KMAX)
        return svir_err_set(e, 1, "QEM takes K from 2 to %d samples per latent (K = %d)",
                            SVIR_QEM_KMAX, K);
    if (cuda && m->couple) return svir_err_set(e, 1, "the coupled proposal is not on the device");
    glmm_qem_work *x = calloc(1, sizeof *x);
    if (!x) return svir_err_set(e, 2, "out of memory setting up QEM");
    *work = x;
    x->m = m;
    x->c = *c;
    x->cuda = cuda;
    const ptrdiff_t D = m->D, ngp = svir_glmm_n_global(m, c->guide), nloc = m->nloc;
    x->ngp = ngp;
    x->gpar = malloc(sizeof(double) * (size_t)(ngp + 1));
    x->lpar = malloc(sizeof(double) * (size_t)(nloc + 1));
    x->anchor = malloc(sizeof(double) * (size_t)(ngp + 1));
    if (!x->gpar || !x->lpar || !x->anchor)
        return svir_err_set(e, 2, "out of memory allocating the fit's results");
    /* the start: the model's initial means, sd 1 on every latent (the
     * random effects' prior), whatever init_scale says */
    svir_control c1 = *c;
    c1.init_scale = 1.0;
    svir_glmm_init_params(m, &c1, x->gpar, x->lpar);
    /* the coupled proposal (m->couple) stays anchored at the start */
    memcpy(x->anchor, x->gpar, sizeof(double) * (size_t)ngp);
    char err[512] = "";
    int st;
    if (m->nterms > 1) {
        /* nested and crossed factors: the CPU's tree of plates */
        if (cuda)
            return svir_err_set(e, 1, "QEM with more than one grouping factor runs on the CPU only");
        st = glmm_nest_init(&x->nt, m, c, K, e);
        if (st) return st;
        x->nest = 1;
        glmm_nest_start(&x->nt, x->gpar, x->lpar);
    } else {
        st = glmm_tree_init(&x->qt, m, c, K, !cuda, x->anchor, err, sizeof err);
        if (st) return svir_err_set(e, st, "%s", err);
        x->have_tree = 1;
    }
    const int q = x->nest ? m->qmax : x->qt.q, J = x->nest ? 0 : x->qt.J;
    const ptrdiff_t lb = x->nest ? 0 : x->qt.lb;
    const size_t nz2 = x->nest ? (size_t)x->nt.nz2 : (size_t)J * (size_t)(q * q);
    x->w0 = malloc(sizeof(double) * (size_t)K);
    x->G1 = malloc(sizeof(double) * (size_t)(D + 1));
    x->G2 = malloc(sizeof(double) * (size_t)(D * D + 1));
    x->E1 = malloc(sizeof(double) * (size_t)(D + 1));
    x->E2 = malloc(sizeof(double) * (size_t)(D * D + 1));
    x->Z1 = malloc(sizeof(double) * (size_t)(m->nz + 1));
    x->Z2 = malloc(sizeof(double) * nz2 + 1);
    x->wk = malloc(sizeof(double) * (size_t)(D * D + q * q + 1));
    x->kbeta = malloc(sizeof(double) * (size_t)K * (size_t)(m->p + 1));
    x->kA = malloc(sizeof(double) * (size_t)K * (size_t)(q * q));
    if (!x->w0 || !x->G1 || !x->G2 || !x->E1 || !x->E2 || !x->Z1 || !x->Z2 || !x->wk ||
        !x->kbeta || !x->kA)
        return svir_err_set(e, 2, "out of memory setting up QEM");
    /* the raw moments of the starting proposal */
    const double *gpar = x->gpar;
    if (c->guide == SVIR_GUIDE_FULLRANK) {
        svir_qem_raw((int)D, gpar, gpar + D, x->G1, x->G2);
    } else {
        for (ptrdiff_t r = 0; r < D; r++) {
            x->G1[r] = gpar[r];
            for (ptrdiff_t cc = 0; cc <= r; cc++)
                x->G2[r * D + cc] = (cc == r ? exp(gpar[D + r]) * exp(gpar[D + r]) : 0.0) +
                                    gpar[r] * gpar[cc];
        }
    }
    /* with more than one factor: every group of every level (chain and
     * crossed), at its term's offsets */
    for (int l = 0; x->nest && l < x->nt.L + x->nt.nc; l++) {
        const glmm_nest_level *lv = l < x->nt.L ? &x->nt.lv[l] : &x->nt.cr[l - x->nt.L];
        const svir_term *tm = &m->terms[lv->t];
        for (int j = 0; j < lv->J; j++) {
            const double *blk = x->lpar + tm->off_loc + (ptrdiff_t)j * lv->lb;
            svir_qem_raw(lv->q, blk, blk + lv->q, x->Z1 + tm->off_z + (ptrdiff_t)j * lv->q,
                         x->Z2 + lv->z2off + (ptrdiff_t)j * lv->q * lv->q);
        }
    }
    for (int j = 0; j < J; j++) {
        const double *blk = x->lpar + (ptrdiff_t)j * lb;
        svir_qem_raw(q, blk, blk + q, x->Z1 + (ptrdiff_t)j * q, x->Z2 + (ptrdiff_t)j * q * q);
    }
    if (cuda) {
        st = svir_cuda_qem_new(m, K, c->seed, x->lpar, x->Z1, x->Z2, &x->dev, err, sizeof err);
        if (st) return svir_err_set(e, st, "%s", err);
    }
    return 0;
}

static int qem_new_cpu(const void *model, const svir_control *c, void **work, svir_err *e)
{
    return qem_new(model, c, 0, work, e);
}

static int qem_new_cuda(const void *model, const svir_control *c, void **work, svir_err *e)
{
    return qem_new(model, c, 1, work, e);
}

static void qem_sizes(const void *work, ptrdiff_t *ngp, ptrdiff_t *nloc)
{
    const glmm_qem_work *x = work;
    *ngp = x->ngp;
    *nloc = x->m->nloc;
}

/* the draws of iteration t, their tables and log P-hat */
static int qem_estep(void *work, long t, double *logp, svir_err *e)
{
    glmm_qem_work *x = work;
    glmm_tree *qt = &x->qt;
    const svir_glmm *m = x->m;
    if (x->nest) {
        int oom;
        glmm_nest_globals(&x->nt, x->gpar, SVIR_STREAM_GLOBAL, (uint64_t)t);
        *logp = glmm_nest_groups(&x->nt, x->lpar, SVIR_STREAM_LOCAL, (uint64_t)t, &oom);
        if (oom) return svir_err_set(e, 2, "out of memory in a QEM iteration");
        x->lP = *logp + log((double)x->nt.K);
        return 0;
    }
    glmm_tree_globals(qt, x->gpar, SVIR_STREAM_GLOBAL, (uint64_t)t);
    if (x->dev) {
        const int K = qt->K, q = qt->q;
        const ptrdiff_t D = qt->D;
        for (int k = 0; k < K; k++) {
            memcpy(x->kbeta + (ptrdiff_t)k * m->p, qt->theta + (ptrdiff_t)k * D,
                   sizeof(double) * (size_t)m->p);
            memcpy(x->kA + (ptrdiff_t)k * q * q, qt->g[k].A, sizeof(double) * (size_t)(q * q));
        }
        char err[512] = "";
        const int st = svir_cuda_qem_table(x->dev, x->kbeta, x->kA, qt->aux, SVIR_STREAM_LOCAL,
                                           (uint64_t)t, qt->lm, err, sizeof err);
        if (st) return svir_err_set(e, st, "%s", err);
    } else if (glmm_tree_groups(qt, x->lpar, SVIR_STREAM_LOCAL, (uint64_t)t))
        return svir_err_set(e, 2, "out of memory in a QEM iteration");
    (void)m;
    *logp = glmm_tree_log_phat(qt);
    x->lP = *logp + log((double)qt->K);
    return 0;
}

/* the moments of theta and of each group, and the proposals matched to
 * them with the moving average's step et */
static int qem_mstep(void *work, long t, double et, svir_err *e)
{
    glmm_qem_work *x = work;
    glmm_tree *qt = &x->qt;
    const int K = x->nest ? x->nt.K : qt->K, q = qt->q, J = qt->J, T = qt->T;
    const ptrdiff_t D = x->m->D, nz = qt->nz, lb = qt->lb;
    const double *lw0 = x->nest ? x->nt.lw0 : qt->lw0, *theta = x->nest ? x->nt.theta : qt->theta;
    double *w0 = x->w0, *E1 = x->E1, *E2 = x->E2, *G1 = x->G1, *G2 = x->G2;
    double *gpar = x->gpar, *lpar = x->lpar;
    (void)t;
    (void)e;
    for (int k = 0; k < K; k++) w0[k] = exp(lw0[k] - x->lP);
    /* E-step: moments of theta */
    for (ptrdiff_t r = 0; r < D; r++) {
        E1[r] = 0.0;
        for (ptrdiff_t cc = 0; cc <= r; cc++) E2[r * D + cc] = 0.0;
    }
    for (int k = 0; k < K; k++) {
        const double *th = theta + (ptrdiff_t)k * D;
        for (ptrdiff_t r = 0; r < D; r++) {
            E1[r] += w0[k] * th[r];
            for (ptrdiff_t cc = 0; cc <= r; cc++) E2[r * D + cc] += w0[k] * th[r] * th[cc];
        }
    }
    for (ptrdiff_t r = 0; r < D; r++) {
        G1[r] = (1.0 - et) * G1[r] + et * E1[r];
        for (ptrdiff_t cc = 0; cc <= r; cc++)
            G2[r * D + cc] = (1.0 - et) * G2[r * D + cc] + et * E2[r * D + cc];
    }
    /* ... and of each group (pi_j), then the M-step per group */
    if (x->nest) {
        glmm_nest_mstep(&x->nt, w0, et, x->Z1, x->Z2, lpar);
    } else if (x->dev) {
        char err[512] = "";
        const int st = svir_cuda_qem_mstep(x->dev, w0, et, err, sizeof err);
        if (st) return svir_err_set(e, st, "%s", err);
    } else {
        (void)T;
#ifdef _OPENMP
#pragma omp parallel for num_threads(T) schedule(static) if (J >= 64)
#endif
        for (int j = 0; j < J; j++) {
            double pi[SVIR_QEM_KMAX], e1[SVIR_QMAX_STACK], e2[SVIR_QMAX_STACK * SVIR_QMAX_STACK];
            double ws[SVIR_QMAX_STACK * SVIR_QMAX_STACK];
            svir_qem_group_mstep(q, K, qt->lf + (ptrdiff_t)j * K * K, w0, qt->zs + (ptrdiff_t)j * q,
                                 nz, et, x->Z1 + (ptrdiff_t)j * q, x->Z2 + (ptrdiff_t)j * q * q,
                                 lpar + (ptrdiff_t)j * lb, pi, e1, e2, ws);
        }
    }
    /* the globals' proposal */
    if (x->c.guide == SVIR_GUIDE_FULLRANK) {
        svir_qem_match((int)D, G1, G2, 1e-12, gpar, gpar + D, x->wk);
    } else {
        for (ptrdiff_t r = 0; r < D; r++) {
            const double v = G2[r * D + r] - G1[r] * G1[r];
            gpar[r] = G1[r];
            gpar[D + r] = 0.5 * log(v > 1e-12 ? v : 1e-12);
        }
    }
    return 0;
}

/* the groups' proposals back from the device */
static int qem_sync(glmm_qem_work *x, svir_err *e)
{
    if (x->dev) {
        char err[512] = "";
        const int st = svir_cuda_qem_lpar(x->dev, x->lpar, err, sizeof err);
        if (st) return svir_err_set(e, st, "%s", err);
    }
    return 0;
}

static int qem_snapshot(void *work, svir_result *res, long step, double time, svir_err *e)
{
    glmm_qem_work *x = work;
    const int st = qem_sync(x, e);
    if (st) return st;
    svir_path_push(res, x->ngp, x->m->nloc, step, time, x->gpar, x->lpar, x->anchor);
    return 0;
}

/* the final proposal, and the posterior draws kept in the fit from it,
 * coupled as it was */
static int qem_finish(void *work, svir_result *res, svir_err *e)
{
    glmm_qem_work *x = work;
    int st = qem_sync(x, e);
    if (st) return st;
    st = svir_glmm_posterior_draws(x->m, &x->c, x->gpar, x->lpar, x->anchor, res);
    if (st) return svir_err_set(e, st, "%s", res->message);
    res->gpar = x->gpar;
    res->lpar = x->lpar;
    res->ngpar = x->ngp;
    res->nlpar = x->m->nloc;
    x->gpar = x->lpar = NULL;
    return 0;
}

const svir_qem_ops svir_glmm_qem_cpu_ops = {
    qem_new_cpu, qem_free, qem_sizes, qem_estep, qem_mstep, qem_snapshot, qem_finish,
};
const svir_qem_ops svir_glmm_qem_cuda_ops = {
    qem_new_cuda, qem_free, qem_sizes, qem_estep, qem_mstep, qem_snapshot, qem_finish,
};
