/* The L-BFGS of core/svir_lbfgs.h. Internally it minimises f = -J; g
 * holds J's gradient (not f's). */
#include "core/svir_lbfgs.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    const svir_vecspace *vs;
    double *g, *g1, *cand, *dir, *ynew;
    double *Sr[SVIR_LBFGS_MAXMEM], *Yr[SVIR_LBFGS_MAXMEM];
} lbfgs_vectors;

static void vectors_free(lbfgs_vectors *v, int m)
{
    const svir_vecspace *vs = v->vs;
    vs->free(vs->ctx, v->g);
    vs->free(vs->ctx, v->g1);
    vs->free(vs->ctx, v->cand);
    vs->free(vs->ctx, v->dir);
    vs->free(vs->ctx, v->ynew);
    for (int l = 0; l < m; l++) {
        vs->free(vs->ctx, v->Sr[l]);
        vs->free(vs->ctx, v->Yr[l]);
    }
}

static int vectors_new(lbfgs_vectors *v, const svir_vecspace *vs, int m)
{
    memset(v, 0, sizeof *v);
    v->vs = vs;
    v->g = vs->alloc(vs->ctx);
    v->g1 = vs->alloc(vs->ctx);
    v->cand = vs->alloc(vs->ctx);
    v->dir = vs->alloc(vs->ctx);
    v->ynew = vs->alloc(vs->ctx);
    int ok = v->g && v->g1 && v->cand && v->dir && v->ynew;
    for (int l = 0; l < m; l++) {
        v->Sr[l] = vs->alloc(vs->ctx);
        v->Yr[l] = vs->alloc(vs->ctx);
        ok = ok && v->Sr[l] && v->Yr[l];
    }
    return ok ? 0 : 2;
}

int svir_lbfgs_run(svir_lbfgs_problem *pb, int maxit, double tol, svir_gate *gate, double *J,
                   int *iters, double *trace, int *stop, int *slot, svir_err *e)
{
    const svir_vecspace *vs = pb->vs;
    void *vc = vs->ctx, *mc = pb->ctx;
    const int m = pb->memory > 0 && pb->memory <= SVIR_LBFGS_MAXMEM ? pb->memory : 5;
    lbfgs_vectors v;
    /* ring order: pair l = 0 is the oldest; Sr, Yr, rho and the Gram
     * matrix SY[a * m + b] = s_a' y_b are shifted when a pair is added */
    double SY[SVIR_LBFGS_MAXMEM * SVIR_LBFGS_MAXMEM], rho[SVIR_LBFGS_MAXMEM],
        alpha[SVIR_LBFGS_MAXMEM], beta[SVIR_LBFGS_MAXMEM], sg[SVIR_LBFGS_MAXMEM],
        sg0[SVIR_LBFGS_MAXMEM], yr[SVIR_LBFGS_MAXMEM], cf[SVIR_LBFGS_MAXMEM];
    double *par = pb->x;
    double *const par0 = par;
    int st = 0, it = 0, mem = 0, fails = 0, pend = 0, cur = 0;
    *stop = SVIR_STOP_MAX_STEPS;
    *iters = 0;
    if (vectors_new(&v, vs, m)) {
        vectors_free(&v, m);
        return svir_err_set(e, 2, "out of memory for L-BFGS's vectors");
    }
    double f0, f1; /* f = -J; g = dJ/dpar */
    st = pb->eval(mc, cur, par, &f0, v.g, e);
    if (st) goto done;
    if (pb->start) {
        if ((st = pb->start(mc, cur, par, e)) != 0) goto done;
        st = pb->eval(mc, cur, par, &f0, v.g, e);
        if (st) goto done;
    }
    f0 = -f0;
    double ss_new = 0.0, sy_new = 0.0, yy_new = 0.0;
    for (it = 0; it < maxit;) {
        if (gate && svir_gate_check(gate, it, 1)) {
            /* nothing more is evaluated: the fit returns nothing */
            *stop = SVIR_STOP_INTERRUPTED;
            *iters = it;
            goto done;
        }
        /* (1) sg[l] = s_l' (-g), l < mem */
        if (mem > 0) {
            if ((st = vs->dots(vc, mem, v.Sr, v.g, sg, e)) != 0) goto done;
            if (svir_interrupt_pending()) goto interrupted;
            for (int l = 0; l < mem; l++) sg[l] = -sg[l];
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
        if ((st = pb->precond(mc, cur, v.g, -1.0, mem, alpha, v.Yr, v.dir, yr, e)) != 0) goto done;
        if (svir_interrupt_pending()) goto interrupted;
        for (int l = 0; l < mem; l++) {
            double b = yr[l];
            for (int u = 0; u < l; u++) b += cf[u] * SY[u * m + l];
            beta[l] = rho[l] * b;
            cf[l] = alpha[l] - beta[l];
        }
        /* (3) dir = -(H0 q + sum cf_l s_l) (descent for -J), slope = (-g)' dir,
         * the largest move, dir' dir */
        double slope = 0.0, big = 0.0, dd = 0.0;
        if ((st = vs->direction(vc, v.dir, mem, cf, v.Sr, v.g, pb->cap_split, pb->cap_lo,
                                pb->cap_hi, &slope, &big, &dd, e)) != 0)
            goto done;
        if (svir_interrupt_pending()) goto interrupted;
        if (!(slope < 0.0)) {
            /* not a descent direction: forget the pairs */
            mem = 0;
            pend = 0;
            continue;
        }
        double t = big > 1.0 ? 1.0 / big : 1.0;
        int ok = 0;
        for (int tries = 0; tries < 40 && !ok; tries++) {
            if ((st = vs->step(vc, v.cand, par, t, v.dir, e)) != 0) goto done;
            svir_err e1 = {0, ""};
            const int ev = pb->eval(mc, 1 - cur, v.cand, &f1, v.g1, &e1);
            if (svir_interrupt_pending()) {
                /* the evaluation skipped its work (svir_poll) */
                *stop = SVIR_STOP_INTERRUPTED;
                *iters = it;
                goto done;
            }
            if (ev > 1) {
                st = svir_err_set(e, ev, "%s", e1.msg);
                goto done;
            }
            ok = ev == 0 && -f1 <= f0 + 1e-4 * t * slope;
            if (!ok) t *= 0.5;
        }
        if (!ok) {
            if (mem == 0 || ++fails > 1) {
                *stop = SVIR_STOP_CONVERGED; /* no step raises J any more */
                break;
            }
            mem = 0; /* retry once from the preconditioned steepest direction */
            pend = 0;
            continue;
        }
        fails = 0;
        f1 = -f1;
        /* (5) y = (-g1) - (-g) = g - g1; y' y; dir' (-g1) */
        {
            double dg1 = 0.0;
            if ((st = vs->ydiff(vc, v.ynew, v.g, v.g1, v.dir, &yy_new, &dg1, e)) != 0) goto done;
            if (svir_interrupt_pending()) goto interrupted;
            sy_new = t * (dg1 - slope); /* s' y, s = t dir */
            ss_new = t * t * dd;
        }
        if (sy_new > 1e-12 * sqrt(ss_new * yy_new)) {
            /* s_new' y_l = t dir' y_l = -t (yr[l] + sum_u cf_u s_u' y_l) */
            double sny[SVIR_LBFGS_MAXMEM];
            for (int l = 0; l < mem; l++) {
                double a = yr[l];
                for (int u = 0; u < mem; u++) a += cf[u] * SY[u * m + l];
                sny[l] = -t * a;
            }
            /* the new pair's s_l' g, for its column of SY next time */
            double sgk[SVIR_LBFGS_MAXMEM];
            for (int l = 0; l < mem; l++) sgk[l] = sg[l];
            if (mem == m) {
                /* drop the oldest pair: shift the ring and the Gram matrix */
                double *s0 = v.Sr[0], *y0 = v.Yr[0];
                for (int l = 0; l + 1 < m; l++) {
                    v.Sr[l] = v.Sr[l + 1];
                    v.Yr[l] = v.Yr[l + 1];
                    rho[l] = rho[l + 1];
                    sny[l] = sny[l + 1];
                    sgk[l] = sgk[l + 1];
                    for (int u = 0; u + 1 < m; u++) SY[l * m + u] = SY[(l + 1) * m + u + 1];
                }
                v.Sr[m - 1] = s0;
                v.Yr[m - 1] = y0;
                mem--;
            }
            /* s = t dir: scale in place as the ring's newest s, swap buffers */
            {
                double *tmp = v.Sr[mem];
                v.Sr[mem] = v.dir;
                v.dir = tmp;
                tmp = v.Yr[mem];
                v.Yr[mem] = v.ynew;
                v.ynew = tmp;
            }
            if (t != 1.0 && (st = vs->scale(vc, v.Sr[mem], t, e)) != 0) goto done;
            if (svir_interrupt_pending()) goto interrupted;
            for (int l = 0; l < mem; l++) {
                SY[mem * m + l] = sny[l];
                sg0[l] = sgk[l];
            }
            rho[mem] = 1.0 / sy_new;
            mem++;
            pend = 1;
        }
        {
            double *tmp = par;
            par = v.cand;
            v.cand = tmp;
            tmp = v.g;
            v.g = v.g1;
            v.g1 = tmp;
            cur = 1 - cur;
        }
        const double rel = (f0 - f1) / fabs(f1);
        f0 = f1;
        if (trace) trace[it] = -f0;
        it++;
        if (gate) svir_gate_progress(gate, it, 1, maxit, -f0);
        if (rel < tol) {
            *stop = SVIR_STOP_CONVERGED;
            break;
        }
    }
    if (par != par0) {
        if ((st = vs->copy(vc, par0, par, e)) != 0) goto done;
        v.cand = par;
        par = par0;
    }
    /* the final point's evaluation, in slot cur */
    st = pb->eval(mc, cur, par, &f0, v.g, e);
    *J = f0;
    *iters = it;
    *slot = cur;
    goto done;
interrupted:
    /* a vector operation skipped its work (svir_poll): nothing more is
     * evaluated and the fit returns nothing */
    *stop = SVIR_STOP_INTERRUPTED;
    *iters = it;
done:
    if (par != par0) {
        /* an error with the iterate in the other buffer: keep the pointers right */
        v.cand = par;
    }
    vectors_free(&v, m);
    return st;
}
