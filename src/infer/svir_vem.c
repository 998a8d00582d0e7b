/* The variational EM driver: the model's globals have closed-form steps
 * given its locals, and the ELBO has no Monte Carlo noise.
 *
 * Full batches: the globals are profiled out inside the model's objective
 * and L-BFGS (core/svir_lbfgs.c) maximises it over the locals, on the
 * model's vector space (the CPU's or a device's).
 *
 * Minibatches of units: streamed variational EM. An epoch visits the
 * units in a new order (a keyed permutation, core/svir_philox.h), in
 * batches; the model refits each batch's locals with the globals held and
 * adds their statistics to the epoch's sums, so that no unit's locals are
 * kept. The model updates its globals after each batch (online epochs) or
 * at the epoch's end only (exact epochs: a step of variational EM, which
 * never lowers the ELBO), and reports the ELBO of the epoch's locals at
 * its end, with what it reckons the fit would still gain (or NAN). The
 * fit stops when that is less than tol_rel_obj |ELBO|; the trace holds the
 * ELBO after each epoch and max_steps counts batches. */
#include "infer/svir_model.h"
#include "core/svir_philox.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmp_int(const void *a, const void *b)
{
    const int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

static int vem_full(const svir_vem_ops *ops, void *model, const svir_control *c,
                    const svir_callbacks *cb, svir_result *res)
{
    svir_err e = {0, ""};
    svir_lbfgs_problem *pb = NULL;
    void *fit = ops->fit_new(model, c, &pb, &e);
    if (!fit) {
        snprintf(res->message, sizeof res->message, "%s", e.msg);
        return e.status ? e.status : 2;
    }
    svir_gate gate;
    svir_gate_init(&gate, cb);
    const int maxit = c->max_steps > 0 ? (int)c->max_steps : 1;
    const double t0 = svir_wall_time();
    double J = NAN;
    int iters = 0, stop = SVIR_STOP_MAX_STEPS, slot = 0;
    int st = svir_lbfgs_run(pb, maxit, c->tol_rel_obj, &gate, &J, &iters, res->trace, &stop,
                            &slot, &e);
    res->seconds = svir_wall_time() - t0;
    res->steps = iters;
    res->stop_reason = stop;
    res->trace_final = J;
    if (!st && stop == SVIR_STOP_INTERRUPTED) st = SVIR_INTERRUPTED;
    if (!st) st = ops->fit_finish(fit, res, &e);
    if (st && st != SVIR_INTERRUPTED) snprintf(res->message, sizeof res->message, "%s", e.msg);
    ops->fit_free(fit);
    return st;
}

static int vem_minibatch(const svir_vem_ops *ops, void *model, const svir_control *c,
                         const svir_callbacks *cb, svir_result *res)
{
    svir_err e = {0, ""};
    const ptrdiff_t n = ops->n_units(model);
    const int m0 = (int)(c->batch_size < n ? c->batch_size : n);
    const long maxs = c->max_steps > 0 ? c->max_steps : 1;
    int *perm = malloc(sizeof(int) * (size_t)(n > 0 ? n : 1));
    int *units = malloc(sizeof(int) * (size_t)(m0 > 0 ? m0 : 1));
    void *w = perm && units ? ops->mb_new(model, c, &e) : NULL;
    int st = 0;
    if (!w) {
        st = e.status ? e.status : svir_err_set(&e, 2, "out of memory for minibatches");
        goto done;
    }
    svir_gate gate;
    svir_gate_init(&gate, cb);
    uint32_t key[2];
    svir_philox_key(c->seed, key);
    const double t0 = svir_wall_time();
    double Jprev = NAN, Jn = NAN;
    if ((st = ops->mb_begin(w, &Jprev, &e)) != 0) goto done;
    long nstep = 0, ep = 0;
    int stop = 0;
    double gain = NAN;
    res->stop_reason = SVIR_STOP_MAX_STEPS;
    while (!stop && nstep < maxs) {
        /* an epoch: the units in the order of the epoch's permutation */
        for (ptrdiff_t r = 0; r < n; r++)
            perm[r] = (int)svir_perm_index((uint64_t)r, (uint64_t)n, key, (uint32_t)ep);
        for (ptrdiff_t start = 0; start < n && nstep < maxs; start += m0) {
            if (svir_gate_check(&gate, nstep, 1)) {
                st = SVIR_INTERRUPTED;
                goto done;
            }
            const int m = start + m0 <= n ? m0 : (int)(n - start);
            memcpy(units, perm + start, sizeof(int) * (size_t)m);
            qsort(units, (size_t)m, sizeof(int), cmp_int);
            if ((st = ops->mb_step(w, units, m, &e)) != 0) goto done;
            nstep++;
        }
        if ((st = ops->mb_epoch(w, &Jn, &gain, &e)) != 0) goto done;
        res->trace[ep] = Jn;
        ep++;
        svir_gate_progress(&gate, nstep, 1, maxs, Jn);
        if (!isnan(gain) && gain / fabs(Jn) < c->tol_rel_obj) {
            stop = 1;
            res->stop_reason = SVIR_STOP_CONVERGED;
        }
        Jprev = Jn;
    }
    res->seconds = svir_wall_time() - t0;
    res->steps = nstep;
    res->ntrace = ep;
    res->trace_final = Jprev;
    if ((st = svir_out_int1(res->extra, "epochs", (int)ep)) != 0) {
        svir_err_set(&e, 2, "out of memory for the results");
        goto done;
    }
    st = ops->mb_finish(w, res, &e);
done:
    if (st && st != SVIR_INTERRUPTED) snprintf(res->message, sizeof res->message, "%s", e.msg);
    if (w) ops->mb_free(w);
    free(perm);
    free(units);
    return st;
}

int svir_vem_run(const svir_vem_ops *ops, void *model, const svir_control *c,
                 const svir_callbacks *cb, svir_result *res)
{
    if (svir_result_alloc(res, c)) return 2;
    res->ntrace = -1;
    svir_gate *outer = svir_gate_current();
    const int st = c->batch_size > 0 && ops->mb_new ? vem_minibatch(ops, model, c, cb, res)
                                                     : vem_full(ops, model, c, cb, res);
    svir_gate_restore(outer);
    if (res->ntrace < 0) res->ntrace = res->steps;
    return st;
}
