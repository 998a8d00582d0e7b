/* The SVI loop's control logic as a host/device state machine: the rejected
 * step rule, the bias corrections and step size of Adam, the window means of
 * the ELBO, the stopping rule and the step-size schedule. It holds scalars
 * only; what the step does to the parameter arrays is returned as flags in
 * `act`, so the CPU drivers (infer/) and the CUDA backend
 * (one thread of a kernel, so no decision crosses to the host) run the same
 * code and take the same decisions from the same ELBO values. */
#ifndef SVIR_LOOP_H
#define SVIR_LOOP_H

#include <string.h>

#include "core/svir_adam.h"
#include "core/svir_codes.h"
#include "core/svir_math.h"
#include "core/svir_result.h"

/* what the parameter arrays must undergo after svir_loop_step */
#define SVIR_LOOP_ACCEPT 1 /* Adam update with lr_t, bc1, bc2; then sum += par */
#define SVIR_LOOP_WINDOW 2 /* window end: prev = sum / nprev, sum = 0; re-anchor */
#define SVIR_LOOP_RESET 4  /* then restart Adam's moments (mom = vel = 0) */
#define SVIR_LOOP_STOP 8   /* the loop ends after this step */
#define SVIR_LOOP_SAVE 16  /* after WINDOW (and re-anchoring): best = prev */
#define SVIR_LOOP_ROLLBACK 32 /* after WINDOW: par = prev = best (with RESET) */
#define SVIR_LOOP_MAX_ROLLBACK 4

#define SVIR_LOOP_MAX_REJECT 10
#define SVIR_LOOP_MAX_LR_STEPS 64

typedef struct {
    /* settings */
    long maxs, min_steps;
    int W, lr_schedule, patience, rule;
    double tol_rel_obj, lr_decay;
    /* state */
    double lr;
    long t_adam, nsum, nprev;
    int reject_run, reductions, have_prev, wcount;
    double wsum, wss, prev_mean, prev_var, last_mean;
    /* the best window so far (its average parameters are the driver's
     * "best" copy), rollbacks to it, and whether the fit ends on it */
    double best_mean, best_var;
    int rollback, rollbacks, final_best; /* rollback: the driver keeps the copy */
    /* this step */
    int act;
    double lr_t, bc1, bc2;
    /* results: stopped is set with stop_reason and steps when the rule ends
     * the loop (else the driver sets them) */
    int stopped, stop_reason;
    long steps, n_rejected;
    int n_windows, max_windows, n_lr_steps;
    long lr_steps[SVIR_LOOP_MAX_LR_STEPS];
    double last_elbo;
    /* arrays owned by the driver: elbo [maxs], window_elbo [max_windows] */
    double *elbo, *window_elbo;
} svir_loop;

SVIR_MATH_HD void svir_loop_init(svir_loop *L, long maxs, int W, double lr, int lr_schedule,
                                 double lr_decay, int patience, double tol_rel_obj, double *elbo,
                                 double *window_elbo)
{
    memset(L, 0, sizeof *L);
    L->maxs = maxs;
    L->W = W;
    L->lr = lr;
    L->lr_schedule = lr_schedule;
    L->lr_decay = lr_decay;
    L->patience = patience;
    L->tol_rel_obj = tol_rel_obj;
    L->last_mean = NAN;
    L->last_elbo = NAN;
    L->best_mean = -INFINITY;
    L->stop_reason = SVIR_STOP_MAX_STEPS;
    L->rule = SVIR_RULE_WINDOW;
    L->max_windows = (int)(maxs / W + 1);
    L->elbo = elbo;
    L->window_elbo = window_elbo;
}

/* Switches L to the rolling rule (after svir_loop_init): from step
 * max(min_steps, 2 W) on, the loop stops when the mean objective of the
 * last W steps improves on that of the W before by less than twice its
 * standard error; no windows, no step-size schedule. */
SVIR_MATH_HD void svir_loop_set_rolling(svir_loop *L, long min_steps)
{
    L->rule = SVIR_RULE_ROLLING;
    L->min_steps = min_steps;
}

SVIR_MATH_HD void svir_loop_rolling(svir_loop *L, long step)
{
    const int W = L->W;
    const double *tr = L->elbo;
    if (step + 1 < L->min_steps || step + 1 < 2 * (long)W) return;
    double a1 = 0.0, a2 = 0.0, v1 = 0.0, v2 = 0.0;
    for (int t = 0; t < W; t++) {
        a1 += tr[step - t] / (double)W;
        a2 += tr[step - W - t] / (double)W;
    }
    for (int t = 0; t < W; t++) {
        v1 += (tr[step - t] - a1) * (tr[step - t] - a1) / (double)(W - 1);
        v2 += (tr[step - W - t] - a2) * (tr[step - W - t] - a2) / (double)(W - 1);
    }
    if (a1 - a2 < 2.0 * sqrt(v1 / (double)W + v2 / (double)W)) {
        L->stop_reason = SVIR_STOP_CONVERGED;
        L->steps = step + 1;
        L->stopped = 1;
        L->act |= SVIR_LOOP_STOP;
    }
}

/* The one-cycle schedule (Smith and Topin 2019; PyTorch's OneCycleLR
 * defaults): over the first 30% of maxs steps the step size rises from lr
 * / 25 to lr, then falls to lr / (25 x 10^4) at maxs, both along half a
 * cosine. */
SVIR_MATH_HD double svir_loop_onecycle(double lr, long step, long maxs)
{
    const double pi = 3.14159265358979323846;
    const double f = (double)(step + 1) / (double)(maxs > 0 ? maxs : 1), lo = lr / 25.0;
    if (f <= 0.3) return lo + (lr - lo) * 0.5 * (1.0 - cos(pi * f / 0.3));
    const double fin = lo / 1e4;
    return fin + (lr - fin) * 0.5 * (1.0 + cos(pi * (f - 0.3) / 0.7));
}

/* Step `step` gave the ELBO estimate `elbo`; ok = the estimate and its
 * gradient are finite. Sets L->act (and lr_t, bc1, bc2 with ACCEPT). */
SVIR_MATH_HD void svir_loop_step(svir_loop *L, long step, double elbo, int ok)
{
    L->act = 0;
    if (L->stopped) return;
    if (!ok || !isfinite(elbo)) {
        L->elbo[step] = NAN;
        L->n_rejected++;
        L->lr *= 0.5;
        if (++L->reject_run >= SVIR_LOOP_MAX_REJECT) {
            L->stop_reason = SVIR_STOP_DIVERGED;
            L->steps = step + 1;
            L->stopped = 1;
            L->act = SVIR_LOOP_STOP;
        }
        return;
    }
    L->reject_run = 0;
    L->elbo[step] = elbo;
    L->last_elbo = elbo;
    L->t_adam++;
    L->bc1 = 1.0 - pow(SVIR_ADAM_B1, (double)L->t_adam);
    L->bc2 = 1.0 - pow(SVIR_ADAM_B2, (double)L->t_adam);
    L->lr_t = L->lr_schedule == SVIR_LR_DECAY      ? L->lr / sqrt(1.0 + (double)step / (double)L->W)
              : L->lr_schedule == SVIR_LR_ONECYCLE ? svir_loop_onecycle(L->lr, step, L->maxs)
                                                   : L->lr;
    L->act = SVIR_LOOP_ACCEPT;
    if (L->rule == SVIR_RULE_ROLLING) {
        svir_loop_rolling(L, step);
        return;
    }
    L->nsum++;
    L->wsum += elbo;
    L->wss += elbo * elbo;
    L->wcount++;
    if (L->wcount < L->W) return;

    const int W = L->W;
    const double mean = L->wsum / W;
    const double var = W > 1 ? fmax(0.0, (L->wss - W * mean * mean) / (W - 1)) : 0.0;
    int plateau = 0;
    if (L->have_prev) {
        /* no improvement beyond tol_rel_obj * |ELBO|, nor beyond the noise of
         * the two window means */
        const double se = sqrt((var + L->prev_var) / W);
        const double thr = fmax(L->tol_rel_obj * fabs(mean), 2.0 * se);
        plateau = mean - L->prev_mean < thr;
    }
    if (L->n_windows < L->max_windows) L->window_elbo[L->n_windows++] = mean;
    L->act |= SVIR_LOOP_WINDOW;
    L->nprev = L->nsum;
    L->nsum = 0;
    L->last_mean = mean;
    L->prev_mean = mean;
    L->prev_var = var;
    L->have_prev = 1;
    L->wsum = L->wss = 0.0;
    L->wcount = 0;
    /* a warm-up (min_steps with the window rule: a network's KL warm-up):
     * no best window, rollback or stop before it ends */
    if (step + 1 < L->min_steps) return;
    if (mean > L->best_mean) {
        L->best_mean = mean;
        L->best_var = var;
        L->act |= SVIR_LOOP_SAVE;
    } else if (L->rollback && L->best_mean - mean >
               fmax(10.0 * L->tol_rel_obj * fabs(L->best_mean), 4.0 * sqrt((var + L->best_var) / W))) {
        /* the objective collapsed, far below its best window beyond the
         * noise of both (an optimiser thrown out of its basin, which the
         * plateau rule would otherwise take for convergence): back to the
         * best window's average with a smaller step and Adam restarted, or,
         * after SVIR_LOOP_MAX_ROLLBACK of these, stop there */
        L->act |= SVIR_LOOP_ROLLBACK | SVIR_LOOP_RESET;
        L->last_mean = L->prev_mean = L->best_mean;
        L->prev_var = L->best_var;
        L->t_adam = 0;
        L->lr *= L->lr_decay < 1.0 ? L->lr_decay : 0.5;
        if (L->n_lr_steps < SVIR_LOOP_MAX_LR_STEPS) L->lr_steps[L->n_lr_steps++] = step + 1;
        if (++L->rollbacks > SVIR_LOOP_MAX_ROLLBACK) {
            L->final_best = 1;
            L->stop_reason = SVIR_STOP_CONVERGED;
            L->steps = step + 1;
            L->stopped = 1;
            L->act |= SVIR_LOOP_STOP;
        }
        return;
    }
    /* the one-cycle schedule runs its whole cycle (early stopping on
     * held-out rows may still end it) */
    if (!plateau || L->lr_schedule == SVIR_LR_ONECYCLE) return;
    if (L->lr_schedule == SVIR_LR_PLATEAU && L->reductions < L->patience) {
        L->lr *= L->lr_decay;
        if (L->n_lr_steps < SVIR_LOOP_MAX_LR_STEPS) L->lr_steps[L->n_lr_steps++] = step + 1;
        L->reductions++;
        /* restart Adam's moments: the early, large gradients would otherwise
         * keep its second moment inflated for ~1/(1 - beta2) steps and freeze
         * the scales */
        L->act |= SVIR_LOOP_RESET;
        L->t_adam = 0;
        L->have_prev = 0; /* the next window restarts the comparison */
    } else {
        L->stop_reason = SVIR_STOP_CONVERGED;
        L->steps = step + 1;
        L->stopped = 1;
        L->act |= SVIR_LOOP_STOP;
    }
}

/* Which parameters the fit returns (no divergence): 1 the average of the
 * running sums (the partial window, when long enough or the only one), 2 the
 * last complete window's average, 3 the best window's (the loop stopped at
 * its last rollback), 0 the current parameters. */
SVIR_MATH_HD int svir_loop_final(const svir_loop *L)
{
    if (L->stop_reason == SVIR_STOP_DIVERGED) return 0;
    if (L->final_best) return 3;
    if (L->nsum > 0 && (L->nsum >= L->W / 2 || L->nprev == 0)) return 1;
    if (L->nprev > 0) return 2;
    return 0;
}

/* the final ELBO: the last window's mean, else the partial window's */
SVIR_MATH_HD double svir_loop_elbo_final(const svir_loop *L)
{
    return !isnan(L->last_mean) ? L->last_mean : (L->wcount > 0 ? L->wsum / L->wcount : NAN);
}

#ifdef __cplusplus
extern "C" {
#endif
/* The loop's record in res after it ended at `step` (steps, stop reason,
 * final step size, rejected steps, windows, step-size reductions, the final
 * objective); the traces are the driver's (core/svir_result.c). */
void svir_loop_to_result(const svir_loop *L, long step, svir_result *res);
#ifdef __cplusplus
}
#endif

#endif
