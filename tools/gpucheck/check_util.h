/* what gpucheck's parts share: the relative difference of two arrays and a
 * monotonic clock */
#ifndef GPUCHECK_CHECK_UTIL_H
#define GPUCHECK_CHECK_UTIL_H

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/svir_result.h"
#include "infer/svir_model.h"

/* max |a - b| / max(1, max |a|); NaN anywhere counts as a difference */
static inline double gck_rel_diff(const double *a, const double *b, ptrdiff_t len)
{
    double num = 0.0, den = 1.0;
    for (ptrdiff_t k = 0; k < len; k++) {
        const double e = fabs(a[k] - b[k]);
        if (e > num || isnan(e)) num = e;
        if (fabs(a[k]) > den) den = fabs(a[k]);
    }
    return num / den;
}

/* the tally of the checks (gpucheck.c prints it at the end): each check
 * reports through gck_result, a check that could not run adds to
 * gck_failed */
extern int gck_passed, gck_failed;
static inline const char *gck_result(int ok)
{
    if (ok)
        gck_passed++;
    else
        gck_failed++;
    return ok ? "ok" : "FAILED";
}

/* 1 in the CPU emulation of the device (SVIR_CUDA_EMU, issue 19): the
 * checks run at smaller sizes (gck_size) and skip the timings */
extern int gck_emu;
/* n on a device; n / div, at least lo, in the emulation */
static inline ptrdiff_t gck_size(ptrdiff_t n, ptrdiff_t div, ptrdiff_t lo)
{
    if (!gck_emu) return n;
    return n / div > lo ? n / div : lo;
}

/* the model's way to fit by `method` on `backend`, or NULL */
static inline const svir_impl *gck_impl_of(const svir_model_def *def, int method, int backend)
{
    for (int k = 0; k < def->nimpls; k++)
        if (def->impls[k].method == method && def->impls[k].backend == backend) return &def->impls[k];
    return NULL;
}

/* two fits of the same steps (CPU and device): 1 when they took the same
 * steps and stop and their guides gpar [np] and ELBO traces agree within
 * tol relative (the largest differences into *eg and *et) */
static inline int gck_fits_agree(const svir_result *a, const svir_result *b, ptrdiff_t np, double tol,
                                 double *eg, double *et)
{
    *eg = gck_rel_diff(a->gpar, b->gpar, np);
    *et = 0.0;
    for (long k = 0; k < a->steps && k < b->steps; k++)
        *et = fmax(*et, fabs(a->trace[k] - b->trace[k]) / fmax(1.0, fabs(a->trace[k])));
    return a->steps == b->steps && a->stop_reason == b->stop_reason && *eg < tol && *et < tol;
}

/* A whole fit on the CPU (cpu) and on the device (dev) from one model and
 * control, compared by gck_fits_agree over np parameters at tol; one line
 * "<label> <full batch|minibatch>: ..." (label padded by the caller); 1
 * when they disagree or either failed to run */
static inline int gck_fit_pair(const char *label, int mb, const svir_impl *cpu, const svir_impl *dev,
                               void *model, const svir_control *c, ptrdiff_t np, double tol)
{
    svir_result r0, r1;
    memset(&r0, 0, sizeof r0);
    memset(&r1, 0, sizeof r1);
    int st = cpu->run(model, c, NULL, &r0);
    if (!st) st = dev->run(model, c, NULL, &r1);
    int failed;
    if (st) {
        gck_failed++;
        printf("%s %s: FAILED to run: %s\n", label, mb ? "minibatch" : "full batch",
               r1.message[0] ? r1.message : r0.message);
        failed = 1;
    } else {
        double eg, et;
        const int ok = gck_fits_agree(&r0, &r1, np, tol, &eg, &et);
        printf("%s %s: steps %ld / %ld, stop %d / %d, rel. diff guide %.1e, ELBO trace %.1e: %s\n",
               label, mb ? "minibatch " : "full batch", r0.steps, r1.steps, r0.stop_reason,
               r1.stop_reason, eg, et, gck_result(ok));
        failed = !ok;
    }
    svir_result_free(&r0);
    svir_result_free(&r1);
    return failed;
}

/* seconds on a monotonic clock */
static inline double gck_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* SVI settings for the checks: one particle, path-derivative gradients,
 * one thread, no draws */
static inline void gck_fit_control(svir_control *c, int fullrank, long max_steps, double lr, int schedule,
                        int eval_every, ptrdiff_t batch_size, uint64_t seed)
{
    memset(c, 0, sizeof *c);
    c->guide = fullrank ? SVIR_GUIDE_FULLRANK : SVIR_GUIDE_MEANFIELD;
    c->max_steps = max_steps;
    c->lr = lr;
    c->lr_schedule = schedule;
    c->lr_decay = 0.3;
    c->eval_every = eval_every;
    c->tol_rel_obj = 1e-4;
    c->patience = 3;
    c->num_particles = 1;
    c->stl = 1;
    c->batch_size = batch_size;
    c->threads = 1;
    c->ndraws = 0;
    c->init_scale = 0.1;
    c->seed = seed;
}

#endif
