/* The SVI driver: Adam on a model's variational parameters from its ELBO
 * estimates (svir_svi_ops), the step-size schedule and stopping rule of
 * core/svir_loop.h, the window averages the fit returns, the path, the
 * callbacks. It knows no model: the model estimates, the driver steps. */
#include "infer/svir_model.h"
#include "core/svir_adam.h"
#include "core/svir_loop.h"
#include "core/svir_out.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

/* loops over parameter blocks go parallel only when there are this many:
 * a parallel region costs microseconds, far more on a loaded machine */
#define SVI_PAR_SPANS 32768
#define SVI_ADAM_CHUNK 4096

static int all_finite(const double *x, ptrdiff_t n)
{
    for (ptrdiff_t k = 0; k < n; k++)
        if (!isfinite(x[k])) return 0;
    return 1;
}

static int spans_finite(const double *x, ptrdiff_t nspans, const ptrdiff_t *off,
                        const ptrdiff_t *len)
{
    for (ptrdiff_t k = 0; k < nspans; k++)
        if (!all_finite(x + off[k], len[k])) return 0;
    return 1;
}

static void *xcalloc(size_t n, size_t size, int *fail)
{
    void *p = calloc(n ? n : 1, size);
    if (!p) *fail = 1;
    return p;
}

/* Adam on the locals the step touched */
static void adam_locals(double *lpar, double *lm1, double *lm2, const double *lg, ptrdiff_t nloc,
                        ptrdiff_t nspans, const ptrdiff_t *off, const ptrdiff_t *len, int T,
                        const svir_loop *L)
{
    const double lr_t = L->lr_t, bc1 = L->bc1, bc2 = L->bc2;
    (void)T;
    if (nspans < 0) {
        const ptrdiff_t nch = (nloc + SVI_ADAM_CHUNK - 1) / SVI_ADAM_CHUNK;
#ifdef _OPENMP
#pragma omp parallel for num_threads(T) schedule(static) if (nloc >= 16 * SVI_PAR_SPANS)
#endif
        for (ptrdiff_t ch = 0; ch < nch; ch++) {
            const ptrdiff_t o = ch * SVI_ADAM_CHUNK;
            const ptrdiff_t n = nloc - o < SVI_ADAM_CHUNK ? nloc - o : SVI_ADAM_CHUNK;
            svir_adam(lpar + o, lm1 + o, lm2 + o, lg + o, n, lr_t, bc1, bc2);
        }
    } else {
#ifdef _OPENMP
#pragma omp parallel for num_threads(T) schedule(static) if (nspans >= SVI_PAR_SPANS)
#endif
        for (ptrdiff_t k = 0; k < nspans; k++) {
            const ptrdiff_t o = off[k];
            svir_adam(lpar + o, lm1 + o, lm2 + o, lg + o, len[k], lr_t, bc1, bc2);
        }
    }
}

static int svi_run(const svir_svi_ops *ops, void *model, const svir_control *c,
                   const svir_callbacks *cb, svir_result *res)
{
    if (svir_result_alloc(res, c)) return 2;
    void *w = ops->work_new(model, c);
    if (!w) {
        snprintf(res->message, sizeof res->message, "out of memory setting up the fit");
        return 2;
    }
    const ptrdiff_t ngp = ops->n_global(model, c), nloc = ops->n_local(model);
    const int T = ops->threads(w);
    const long maxs = c->max_steps > 0 ? c->max_steps : 1;
    const int W = c->eval_every > 0 ? c->eval_every : 100;
    int fail = 0;
    double tsplit[SVIR_N_PHASES] = {0};
    double *gpar = xcalloc((size_t)ngp, sizeof(double), &fail);
    double *lpar = xcalloc((size_t)nloc, sizeof(double), &fail);
    double *gg = xcalloc((size_t)ngp, sizeof(double), &fail);
    double *lg = xcalloc((size_t)nloc, sizeof(double), &fail);
    double *gm1 = xcalloc((size_t)ngp, sizeof(double), &fail);
    double *gm2 = xcalloc((size_t)ngp, sizeof(double), &fail);
    double *lm1 = xcalloc((size_t)nloc, sizeof(double), &fail);
    double *lm2 = xcalloc((size_t)nloc, sizeof(double), &fail);
    double *gsum = xcalloc((size_t)ngp, sizeof(double), &fail);
    double *lsum = xcalloc((size_t)nloc, sizeof(double), &fail);
    double *gprev = xcalloc((size_t)ngp, sizeof(double), &fail);
    double *lprev = xcalloc((size_t)nloc, sizeof(double), &fail);
    /* the best window's average (svir_loop.h: SAVE, ROLLBACK) */
    double *gbest = xcalloc((size_t)ngp, sizeof(double), &fail);
    double *lbest = xcalloc((size_t)nloc, sizeof(double), &fail);
    int have_best = 0;
    /* early stopping on held-out rows (ops->validate): the loss at each
     * window's average, the best window's average */
    const long nwin_max = maxs / W + 2;
    double *vtrace = ops->validate ? xcalloc((size_t)nwin_max, sizeof(double), &fail) : NULL;
    double *gval = ops->validate ? xcalloc((size_t)ngp, sizeof(double), &fail) : NULL;
    long nval = 0, vbest_step = -1;
    double vbest = INFINITY;
    int vbad = 0;
    /* the path: sums of the iterates since the last snapshot, the anchor */
    const int pe = c->path_every;
    double *tg = pe > 0 ? xcalloc((size_t)ngp, sizeof(double), &fail) : NULL;
    double *tl = pe > 0 ? xcalloc((size_t)nloc, sizeof(double), &fail) : NULL;
    double *ganchor = pe > 0 ? xcalloc((size_t)ngp, sizeof(double), &fail) : NULL;
    long nt = 0;
    if (svir_path_alloc(res, c, ngp, nloc)) fail = 1;
    int status = 0;
    if (fail) {
        snprintf(res->message, sizeof res->message, "out of memory allocating variational parameters");
        status = 2;
        goto done;
    }
    ops->init(model, c, gpar, lpar);
    if (ops->anchor) ops->anchor(w, gpar);
    if (ganchor) memcpy(ganchor, gpar, sizeof(double) * (size_t)ngp);

    svir_loop L;
    svir_loop_init(&L, maxs, W, c->lr, c->lr_schedule, c->lr_decay, c->patience, c->tol_rel_obj,
                   res->trace, res->window_trace);
    L.rollback = 1; /* gbest, lbest */
    L.min_steps = c->min_steps; /* a warm-up without stops (0: none) */
    svir_gate gate;
    svir_gate_init(&gate, cb);
    long step;
    double t_upd = -1.0; /* when the last estimate returned */
    const double tstart = svir_wall_time();
    for (step = 0; step < maxs; step++) {
        if (t_upd >= 0.0) {
            tsplit[SVIR_PHASE_UPDATE] += svir_wall_time() - t_upd;
            t_upd = -1.0;
        }
        if (svir_gate_check(&gate, step, 16)) {
            status = SVIR_INTERRUPTED;
            goto done;
        }
        ptrdiff_t nspans;
        const ptrdiff_t *off, *len;
        ops->batch(w, step, &nspans, &off, &len);
        const double elbo = ops->estimate(w, step, gpar, lpar, gg, lg, tsplit);
        t_upd = svir_wall_time();
        const int ok = all_finite(gg, ngp) &&
            (nspans < 0 ? all_finite(lg, nloc) : spans_finite(lg, nspans, off, len));
        svir_loop_step(&L, step, elbo, ok);
        if (L.act & SVIR_LOOP_ACCEPT) {
            svir_adam(gpar, gm1, gm2, gg, ngp, L.lr_t, L.bc1, L.bc2);
            adam_locals(lpar, lm1, lm2, lg, nloc, nspans, off, len, T, &L);
            /* running sums for the window average of the parameters */
            for (ptrdiff_t k = 0; k < ngp; k++) gsum[k] += gpar[k];
#ifdef _OPENMP
#pragma omp parallel for num_threads(T) schedule(static) if (nloc >= 16 * SVI_PAR_SPANS)
#endif
            for (ptrdiff_t k = 0; k < nloc; k++) lsum[k] += lpar[k];
            if (pe > 0) {
                for (ptrdiff_t k = 0; k < ngp; k++) tg[k] += gpar[k];
                for (ptrdiff_t k = 0; k < nloc; k++) tl[k] += lpar[k];
                nt++;
            }
            svir_gate_progress(&gate, step, 10, maxs, elbo);
        }
        if (pe > 0 && nt > 0 && (step + 1) % pe == 0) {
            /* a snapshot: the average of the iterates since the last one */
            for (ptrdiff_t k = 0; k < ngp; k++) tg[k] /= (double)nt;
            for (ptrdiff_t k = 0; k < nloc; k++) tl[k] /= (double)nt;
            svir_path_push(res, ngp, nloc, step + 1, svir_wall_time() - tstart, tg, tl, ganchor);
            memset(tg, 0, sizeof(double) * (size_t)ngp);
            memset(tl, 0, sizeof(double) * (size_t)nloc);
            nt = 0;
        }
        if (L.act & SVIR_LOOP_WINDOW) {
            /* keep this window's parameter average */
            const double nw = (double)L.nprev;
            for (ptrdiff_t k = 0; k < ngp; k++) gprev[k] = gsum[k] / nw;
            for (ptrdiff_t k = 0; k < nloc; k++) lprev[k] = lsum[k] / nw;
            memset(gsum, 0, sizeof(double) * (size_t)ngp);
            memset(lsum, 0, sizeof(double) * (size_t)nloc);
            double *gs[3] = {gpar, gprev, gbest}, *ls[3] = {lpar, lprev, lbest};
            if (ops->reanchor && ops->reanchor(w, gprev, have_best ? 3 : 2, gs, ls) && pe > 0) {
                /* the path's sums were in the old anchoring: restart */
                memcpy(ganchor, gprev, sizeof(double) * (size_t)ngp);
                memset(tg, 0, sizeof(double) * (size_t)ngp);
                memset(tl, 0, sizeof(double) * (size_t)nloc);
                nt = 0;
            }
        }
        if (L.act & SVIR_LOOP_SAVE) {
            memcpy(gbest, gprev, sizeof(double) * (size_t)ngp);
            memcpy(lbest, lprev, sizeof(double) * (size_t)nloc);
            have_best = 1;
        }
        if (L.act & SVIR_LOOP_ROLLBACK) {
            memcpy(gpar, gbest, sizeof(double) * (size_t)ngp);
            memcpy(lpar, lbest, sizeof(double) * (size_t)nloc);
            memcpy(gprev, gbest, sizeof(double) * (size_t)ngp);
            memcpy(lprev, lbest, sizeof(double) * (size_t)nloc);
        }
        if (L.act & SVIR_LOOP_RESET) {
            memset(gm1, 0, sizeof(double) * (size_t)ngp);
            memset(gm2, 0, sizeof(double) * (size_t)ngp);
            memset(lm1, 0, sizeof(double) * (size_t)nloc);
            memset(lm2, 0, sizeof(double) * (size_t)nloc);
        }
        if ((L.act & SVIR_LOOP_WINDOW) && vtrace && nval < nwin_max) {
            const double v = ops->validate(w, gprev);
            if (!isnan(v)) {
                vtrace[nval++] = v;
                if (v < vbest) {
                    vbest = v;
                    vbest_step = step + 1;
                    memcpy(gval, gprev, sizeof(double) * (size_t)ngp);
                    vbad = 0;
                } else if (++vbad >= (c->patience > 0 ? c->patience : 1) && step + 1 >= L.min_steps &&
                           !L.stopped) {
                    L.stop_reason = SVIR_STOP_EARLY_STOP;
                    L.steps = step + 1;
                    L.stopped = 1;
                }
            }
        }
        if (L.stopped) {
            step++;
            break;
        }
    }
    if (t_upd >= 0.0) tsplit[SVIR_PHASE_UPDATE] += svir_wall_time() - t_upd;
    svir_loop_to_result(&L, step, res);
    res->seconds = svir_wall_time() - tstart;

    /* final parameters: the average over the last complete window, or over the
     * partial one if it is long enough; the current ones after divergence */
    switch (svir_loop_final(&L)) {
    case 1:
        for (ptrdiff_t k = 0; k < ngp; k++) gpar[k] = gsum[k] / (double)L.nsum;
        for (ptrdiff_t k = 0; k < nloc; k++) lpar[k] = lsum[k] / (double)L.nsum;
        break;
    case 2:
        memcpy(gpar, gprev, sizeof(double) * (size_t)ngp);
        memcpy(lpar, lprev, sizeof(double) * (size_t)nloc);
        break;
    case 3:
        memcpy(gpar, gbest, sizeof(double) * (size_t)ngp);
        memcpy(lpar, lbest, sizeof(double) * (size_t)nloc);
        break;
    }
    if (vbest_step > 0 && L.stop_reason != SVIR_STOP_DIVERGED) {
        /* with held-out rows: the window with the lowest loss */
        memcpy(gpar, gval, sizeof(double) * (size_t)ngp);
        const double bs = (double)vbest_step;
        if (svir_out_copy(res->extra, "val_trace", vtrace, nval, -1) ||
            svir_out_copy(res->extra, "val_best_step", &bs, 1, -1)) {
            snprintf(res->message, sizeof res->message, "out of memory keeping the validation trace");
            status = 2;
            goto done;
        }
    }

    const double t_post = svir_wall_time();
    const int draws_fail = ops->draws(w, gpar, lpar, res);
    tsplit[SVIR_PHASE_POSTERIOR] += svir_wall_time() - t_post;
    memcpy(res->time_split, tsplit, sizeof tsplit);
    if (draws_fail) {
        snprintf(res->message, sizeof res->message, "out of memory drawing from the posterior");
        status = 2;
    }
    res->gpar = gpar;
    res->lpar = lpar;
    res->ngpar = ngp;
    res->nlpar = nloc;
    gpar = lpar = NULL;

done:
    free(gpar); free(lpar); free(gg); free(lg); free(gm1); free(gm2); free(lm1); free(lm2);
    free(gsum); free(lsum); free(gprev); free(lprev); free(gbest); free(lbest);
    free(tg); free(tl); free(ganchor); free(vtrace); free(gval);
    ops->work_free(w);
    return status;
}

int svir_svi_run(const svir_svi_ops *ops, void *model, const svir_control *c,
                 const svir_callbacks *cb, svir_result *res)
{
    svir_gate *outer = svir_gate_current();
    const int st = svi_run(ops, model, c, cb, res);
    svir_gate_restore(outer);
    return st;
}
