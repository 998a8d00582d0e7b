/* The QEM driver (Heap, Bowyer and Aitchison 2025; dev/QEM.md): each
 * iteration the model draws K samples of every latent from its proposals
 * and weighs them over its tree of plates (estep, which gives the bound
 * log P-hat), then matches its proposals to the weighted moments with the
 * moving average's step eta_t = min(1, eta0 (t + 1)^-kappa) (mstep). The
 * driver owns the loop, the stopping rule on log P-hat (core/svir_loop.h:
 * the window rule of SVI with no step-size reductions, or the rolling
 * rule), the path and the callbacks. A non-finite log P-hat rejects the
 * iteration (no M-step); ten in a row end the fit as diverged. */
#include "infer/svir_model.h"
#include "core/svir_loop.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static int qem_run(const svir_qem_ops *ops, void *model, const svir_control *c,
                   const svir_callbacks *cb, svir_result *res)
{
    if (svir_result_alloc(res, c)) return 2;
    svir_err e = {0, ""};
    void *w = NULL;
    int st = ops->work_new(model, c, &w, &e);
    if (!st && c->path_every > 0 && ops->snapshot) {
        ptrdiff_t ngp, nloc;
        ops->sizes(w, &ngp, &nloc);
        if (svir_path_alloc(res, c, ngp, nloc)) st = svir_err_set(&e, 2, "out of memory for the path");
    }
    if (st) {
        snprintf(res->message, sizeof res->message, "%s", e.msg);
        if (w) ops->work_free(w);
        return st;
    }
    const long maxs = c->max_steps > 0 ? c->max_steps : 1;
    const int W = c->eval_every > 0 ? c->eval_every : 100;
    svir_loop L;
    svir_loop_init(&L, maxs, W, 1.0, SVIR_LR_CONSTANT, 1.0, 0, c->tol_rel_obj, res->trace,
                   res->window_trace);
    if (c->rule == SVIR_RULE_ROLLING) svir_loop_set_rolling(&L, c->min_steps);
    svir_gate gate;
    svir_gate_init(&gate, cb);
    const double tstart = svir_wall_time();
    long t;
    for (t = 0; t < maxs; t++) {
        if (svir_gate_check(&gate, t, 1)) {
            st = SVIR_INTERRUPTED;
            goto done;
        }
        double logp = NAN;
        if ((st = ops->estep(w, t, &logp, &e)) != 0) goto done;
        svir_loop_step(&L, t, logp, isfinite(logp));
        if (!(L.act & SVIR_LOOP_ACCEPT)) {
            if (L.stopped) {
                t++;
                break;
            }
            continue;
        }
        if ((st = ops->mstep(w, t, svir_qem_step(c, t), &e)) != 0) goto done;
        if (c->path_every > 0 && ops->snapshot && (t + 1) % c->path_every == 0 &&
            (st = ops->snapshot(w, res, t + 1, svir_wall_time() - tstart, &e)) != 0)
            goto done;
        svir_gate_progress(&gate, t, 10, maxs, logp);
        if (L.stopped) {
            t++;
            break;
        }
    }
    svir_loop_to_result(&L, t, res);
    res->lr_final = NAN; /* QEM has no step size */
    res->seconds = svir_wall_time() - tstart;
    /* QEM has no such phases: the whole loop is its update */
    res->time_split[SVIR_PHASE_DRAW] = NAN;
    res->time_split[SVIR_PHASE_OBS] = NAN;
    res->time_split[SVIR_PHASE_BACKWARD] = NAN;
    res->time_split[SVIR_PHASE_UPDATE] = res->seconds;
    st = ops->finish(w, res, &e);
done:
    if (st && st != SVIR_INTERRUPTED) snprintf(res->message, sizeof res->message, "%s", e.msg);
    ops->work_free(w);
    return st;
}

int svir_qem_run(const svir_qem_ops *ops, void *model, const svir_control *c,
                 const svir_callbacks *cb, svir_result *res)
{
    svir_gate *outer = svir_gate_current();
    const int st = qem_run(ops, model, c, cb, res);
    svir_gate_restore(outer);
    return st;
}
