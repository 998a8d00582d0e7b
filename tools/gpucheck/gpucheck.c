/* svir GPU checks without R (see README.md here). Exit status 0 when every
 * check passes, 1 when one fails, 2 when no usable CUDA device is found.
 *
 *   1. the device, as svir_backends() would report it;
 *   2. normals: 10^6 from the device against svir_normal_fill on the CPU,
 *      bit for bit (the shared Philox/Box-Muller code of svir_philox.h);
 *   3. the observation pass for every family and link, with and without a
 *      random slope, against a plain CPU loop over svir_loglik (the same
 *      reference as the R entry point used by tests/testthat/test-cuda.R);
 *      the per-group part of a step (local draws, b = A z, gradients of the
 *      local parameters, KL) against svir_local_step_ref; whole ELBO steps
 *      against svir_elbo_grad; Adam; whole fits against the SVI driver (svir_svi_run);
 *   4. unless --quick, the benchmark of issue 3's size: a Poisson GLMM with
 *      N = 10^7, 10 fixed effects, two crossed factors of 10^5 and 10^3
 *      levels (or, with --data DIR, the data bench/gpu_glmm.py --save DIR
 *      wrote); device time of one observation pass against the bytes it must
 *      read and the device-to-device copy bandwidth, and the CPU loop's time;
 *      then whole fit steps (--steps N, default 1000, at NumPyro's settings)
 *      on the device and on the CPU, full batch and minibatch.
 *   PLN (pln_check.c): the Poisson-lognormal objective on the device against
 *      svir_pln_eval in every mode (full, diagonal, spherical, rank 3, the VE
 *      step; dense and sparse counts) and whole fits against svir_pln_fit;
 *      unless --quick, issue 5's GPU target (n = 100,000, p = 2,000, rank
 *      10; --pln-n N for another n): time to convergence.
 *   Count mixtures (mix_check.c): one SVI ELBO estimate and its gradient
 *      with the batch on the device against the CPU (Poisson, NB, ZINB, NB
 *      with a background; dense and sparse; full batch and minibatch), and
 *      whole fits of 200 steps on both; unless --quick, issue 17's GPU
 *      target (10^6 cells x 2000 genes, K = 20, sparse; --mix-n N for
 *      another n): one epoch's time in batches of 64, 256 and 1024 rows.
 *   Bayesian networks (bnn_check.c): the device's part of one SVI estimate
 *      (forward pass with the CPU's noise, likelihood, backward pass) against
 *      the CPU's at the same guide and step (relu and tanh, one and two
 *      hidden layers and none, gaussian, binomial, poisson; full batch and
 *      minibatch; 2 particles), and whole fits on both; unless --quick, issue
 *      18's timing (one hidden layer of 1024 relu units, batches of 4096).
 *
 * Usage: gpucheck [--quick] [--bench] [--no-pln] [--pln] [--pln-n N] [--data DIR] [--steps N]
 *                 [--qem-bench] [--mix] [--no-mix] [--mix-n N] [--bnn] [--no-bnn]
 *   --bench: the timings (4 to 7) without the checks; --no-pln: without the
 *   Poisson-lognormal parts; --pln: those alone; --mix: the count mixtures
 *   alone, --no-mix: without them; --bnn, --no-bnn the same for the
 *   networks. Separate processes keep a
 *   device fault in one part from failing the others (a sticky CUDA error
 *   ends the context). --qem-bench: issue 4's large two-level GLMM alone
 *   (QEM on the device and the CPU, SVI on the device).
 * (--pln: the device line and the PLN part only) */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/svir_backend.h"
#include "core/svir_adam.h"
#include "core/svir_philox.h"
#include "infer/svir_model.h"
#include "models/glmm/glmm_cuda.h"
#include "models/glmm/glmm_svi.h"

#include "check_util.h"
#include "pln_check.h"
#include "mix_check.h"
#include "bnn_check.h"

typedef struct {
    svir_glmm m;
    svir_term terms[2];
    double *y, *X, *Z0, *trials, *offset, *beta, *b;
    int *g0, *g1;
    int pt[64];
    double pdf[64], ploc[64], pscale[64];
    double xmap0[64], xmap1[64];
} sim;

static void sim_free(sim *s)
{
    svir_glmm_free(&s->m);
    free(s->y); free(s->X); free(s->Z0); free(s->trials); free(s->offset);
    free(s->beta); free(s->b); free(s->g0); free(s->g1);
}

/* random-effect terms of the models sim_make builds: 2 (crossed), or 1 for
 * QEM */
static int sim_nterms = 2;
/* 1: the random effects' columns declared in the fixed effects' span (the
 * intercepts in X's column of ones, the slope in its second column), so
 * that the coupled guide couples them and a fit moves its anchor */
static int sim_coupled = 0;

/* s->m from s's arrays (sim_nterms terms, the priors in s), initialised; and
 * room for beta and b */
static int sim_model(sim *s, int family, int link, ptrdiff_t n, int p)
{
    s->m.n = n;
    s->m.p = p;
    s->m.y = s->y;
    s->m.trials = s->trials;
    s->m.offset = s->offset;
    s->m.X = s->X;
    s->m.family = family;
    s->m.link = link;
    s->m.nterms = sim_nterms;
    s->m.terms = s->terms;
    s->m.prior_type = s->pt;
    s->m.prior_df = s->pdf;
    s->m.prior_loc = s->ploc;
    s->m.prior_scale = s->pscale;
    s->m.couple = 1; /* the coupled guide, as svi_fit() runs SVI */
    char err[256];
    if (svir_glmm_init(&s->m, err, sizeof err)) {
        fprintf(stderr, "svir_glmm_init: %s\n", err);
        return 1;
    }
    s->beta = malloc(sizeof(double) * (size_t)p);
    s->b = malloc(sizeof(double) * (size_t)(s->m.nz + 1));
    return !s->beta || !s->b;
}

/* data drawn with svir's own generator (stream 7): the values only need to be
 * valid for the family, the checks compare two computations on the same data */
static int sim_make(sim *s, int family, int link, ptrdiff_t n, int p, int J0, int J1, int slope)
{
    memset(s, 0, sizeof *s);
    const uint32_t key[2] = {20261122u, 0u};
    const int q0 = slope ? 2 : 1;
    s->y = malloc(sizeof(double) * (size_t)n);
    s->X = malloc(sizeof(double) * (size_t)n * (size_t)p);
    s->Z0 = malloc(sizeof(double) * (size_t)n * (size_t)q0);
    s->offset = malloc(sizeof(double) * (size_t)n);
    s->g0 = malloc(sizeof(int) * (size_t)n);
    s->g1 = malloc(sizeof(int) * (size_t)n);
    s->trials = family == SVIR_BINOMIAL ? malloc(sizeof(double) * (size_t)n) : NULL;
    if (!s->y || !s->X || !s->Z0 || !s->offset || !s->g0 || !s->g1 ||
        (family == SVIR_BINOMIAL && !s->trials))
        return 1;
    for (ptrdiff_t i = 0; i < n; i++) {
        const double u = svir_uniform(key, 7, 0, (uint64_t)i);
        const double v = svir_uniform(key, 7, 1, (uint64_t)i);
        s->X[i] = 1.0;
        for (int c = 1; c < p; c++)
            s->X[i + (ptrdiff_t)c * n] = svir_normal(key, 7, 2 + (uint64_t)c, (uint64_t)i);
        s->Z0[i] = 1.0;
        if (slope) s->Z0[i + n] = p > 1 ? s->X[i + n] : 1.0;
        s->g0[i] = (int)(u * J0) < J0 ? (int)(u * J0) : J0 - 1;
        s->g1[i] = (int)(v * J1) < J1 ? (int)(v * J1) : J1 - 1;
        s->offset[i] = 0.1 * svir_normal(key, 7, 1000, (uint64_t)i);
        const double w = svir_uniform(key, 7, 1001, (uint64_t)i);
        switch (family) {
        case SVIR_GAUSSIAN: s->y[i] = svir_normal(key, 7, 1002, (uint64_t)i); break;
        case SVIR_BINOMIAL:
            s->trials[i] = 1.0 + floor(4.0 * w);
            s->y[i] = floor(svir_uniform(key, 7, 1003, (uint64_t)i) * (s->trials[i] + 1.0));
            break;
        default: s->y[i] = floor(6.0 * w * w); break;
        }
    }
    for (int k = 0; k < 64; k++) {
        s->pt[k] = SVIR_PRIOR_NORMAL;
        s->pdf[k] = 3.0;
        s->ploc[k] = 0.0;
        s->pscale[k] = 2.5;
        s->xmap0[k] = s->xmap1[k] = NAN;
    }
    if (sim_coupled) {
        for (int k = 0; k < p; k++) {
            s->xmap0[k] = s->xmap1[k] = k == 0 ? 1.0 : 0.0;          /* the intercepts */
            if (slope && p > 1) s->xmap0[p + k] = k == 1 ? 1.0 : 0.0; /* the slope, X's column 2 */
        }
    }
    s->terms[0].xmap = sim_coupled ? s->xmap0 : NULL;
    s->terms[1].xmap = sim_coupled ? s->xmap1 : NULL;
    s->terms[0].q = q0;
    s->terms[0].ngroups = J0;
    s->terms[0].group = s->g0;
    s->terms[0].Z = s->Z0;
    s->terms[1].q = 1;
    s->terms[1].ngroups = J1;
    s->terms[1].group = s->g1;
    s->terms[1].Z = s->Z0; /* its first column: ones */
    if (sim_model(s, family, link, n, p)) return 1;
    for (int c = 0; c < p; c++) s->beta[c] = 0.1 * svir_normal(key, 8, 0, (uint64_t)c);
    for (ptrdiff_t k = 0; k < s->m.nz; k++) s->b[k] = 0.3 * svir_normal(key, 8, 1, (uint64_t)k);
    return 0;
}

/* the data bench/gpu_glmm.py --save DIR wrote (y, X column-major, g1, g2 as
 * raw little-endian arrays and header.json): the same numbers NumPyro fits,
 * a Poisson GLMM with two crossed random intercepts */
static int read_raw(const char *dir, const char *name, void *dst, size_t size, size_t count)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) return 1;
    const size_t got = fread(dst, size, count, f);
    fclose(f);
    return got != count;
}

static int sim_load(sim *s, const char *dir)
{
    char path[4096], buf[1024];
    long n = 0, p = 0, j1 = 0, j2 = 0;
    memset(s, 0, sizeof *s);
    snprintf(path, sizeof path, "%s/header.json", dir);
    FILE *f = fopen(path, "r");
    if (!f) return 1;
    const size_t len = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[len] = 0;
    const char *k;
    if ((k = strstr(buf, "\"n\":"))) n = strtol(k + 4, NULL, 10);
    if ((k = strstr(buf, "\"p\":"))) p = strtol(k + 4, NULL, 10);
    if ((k = strstr(buf, "\"j1\":"))) j1 = strtol(k + 5, NULL, 10);
    if ((k = strstr(buf, "\"j2\":"))) j2 = strtol(k + 5, NULL, 10);
    if (n <= 0 || p <= 0 || p > 64 || j1 <= 0 || j2 <= 0) return 1;
    s->y = malloc(sizeof(double) * (size_t)n);
    s->X = malloc(sizeof(double) * (size_t)n * (size_t)p);
    s->Z0 = malloc(sizeof(double) * (size_t)n);
    s->g0 = malloc(sizeof(int) * (size_t)n);
    s->g1 = malloc(sizeof(int) * (size_t)n);
    if (!s->y || !s->X || !s->Z0 || !s->g0 || !s->g1) return 1;
    if (read_raw(dir, "y.bin", s->y, 8, (size_t)n) ||
        read_raw(dir, "X.bin", s->X, 8, (size_t)n * (size_t)p) ||
        read_raw(dir, "g1.bin", s->g0, 4, (size_t)n) || read_raw(dir, "g2.bin", s->g1, 4, (size_t)n))
        return 1;
    for (long i = 0; i < n; i++) s->Z0[i] = 1.0;
    for (int c = 0; c < 64; c++) {
        s->pt[c] = SVIR_PRIOR_NORMAL;
        s->pdf[c] = 3.0;
        s->ploc[c] = 0.0;
        s->pscale[c] = 2.5;
    }
    for (int t = 0; t < 2; t++) {
        s->terms[t].q = 1;
        s->terms[t].ngroups = (int)(t ? j2 : j1);
        s->terms[t].group = t ? s->g1 : s->g0;
        s->terms[t].Z = s->Z0;
        s->terms[t].z_ones = 1;
    }
    if (sim_model(s, SVIR_POISSON, SVIR_LINK_LOG, n, (int)p)) return 1;
    memset(s->beta, 0, sizeof(double) * (size_t)p);
    memset(s->b, 0, sizeof(double) * (size_t)s->m.nz);
    return 0;
}

/* the settings of a whole fit for the checks and the benchmark (no
 * posterior draws, one thread) */
/* a fit on the CPU (the SVI driver with the GLMM's table), on the device
 * (its whole fit), and QEM with the groups on the CPU or the device */
static int cpu_fit(const svir_glmm *m, const svir_control *c, svir_result *r)
{
    memset(r, 0, sizeof *r);
    return svir_svi_run(&svir_glmm_svi_ops, (void *)m, c, NULL, r);
}

static int dev_fit(const svir_glmm *m, const svir_control *c, svir_result *r, char *err,
                   size_t errlen)
{
    memset(r, 0, sizeof *r);
    if (svir_result_alloc(r, c)) {
        snprintf(err, errlen, "%s", r->message);
        return 2;
    }
    return svir_cuda_fit(m, c, NULL, r, err, errlen);
}

static int qem_fit(const svir_glmm *m, const svir_control *c, int cuda, svir_result *r)
{
    memset(r, 0, sizeof *r);
    return svir_qem_run(cuda ? &svir_glmm_qem_cuda_ops : &svir_glmm_qem_cpu_ops, (void *)m, c,
                        NULL, r);
}

/* Seconds per step (the loop alone, uploads and set-up excluded) of a
 * mean-field fit of m on the device (dev_steps steps
 * at NumPyro's settings: Adam 0.01, constant, no window ends) with its ELBO
 * as bench/gpu_glmm.py reports it (the mean over the last 10% of the
 * steps), and on the CPU with 16 threads (cpu_steps steps). */
static int step_times(const svir_glmm *m, ptrdiff_t batch, int dev_steps, int cpu_steps,
                      double *t_dev, double *elbo, double *t_cpu, char *err, size_t errlen)
{
    svir_control c;
    svir_result r;
    gck_fit_control(&c, 0, dev_steps, 0.01, SVIR_LR_CONSTANT, dev_steps + 1, batch, 1);
    if (dev_fit(m, &c, &r, err, errlen)) {
        svir_result_free(&r);
        return 1;
    }
    *t_dev = r.time_split[SVIR_PHASE_UPDATE] / (double)r.steps;
    const long tail = r.steps / 10 > 0 ? r.steps / 10 : 1;
    *elbo = 0.0;
    for (long k = r.steps - tail; k < r.steps; k++) *elbo += r.trace[k] / (double)tail;
    svir_result_free(&r);
    c.max_steps = cpu_steps;
    c.threads = 16;
    if (cpu_fit(m, &c, &r)) {
        snprintf(err, errlen, "%s", r.message);
        svir_result_free(&r);
        return 1;
    }
    /* the loop's phases: set-up and the (absent) posterior draws excluded */
    *t_cpu = (r.time_split[SVIR_PHASE_DRAW] + r.time_split[SVIR_PHASE_OBS] +
              r.time_split[SVIR_PHASE_BACKWARD] + r.time_split[SVIR_PHASE_UPDATE]) /
             (double)r.steps;
    svir_result_free(&r);
    return 0;
}

/* the CPU reference: svir_obs_pass_ref, one plain loop over the observations */
static void cpu_pass(const svir_glmm *m, const double *beta, const double *b, double sigma,
                     double phi, double *ll, double *gbeta, double *gaux, double *G)
{
    svir_aux a;
    svir_aux_set(&a, sigma, phi);
    svir_obs_pass_ref(m, beta, b, &a, ll, gbeta, gaux, G);
}

/* issue 4's large two-level GLMM: Poisson, one grouping factor of J levels
 * (random intercept, and a random slope on x1 when slope), counts drawn
 * from the model itself (beta = (0.3, 0.2, -0.1, ...), sd 0.5 and 0.2),
 * no offset */
static int sim_poisson_glmm(sim *s, ptrdiff_t n, int p, int J, int slope)
{
    sim_nterms = 1;
    const int bad = sim_make(s, SVIR_POISSON, SVIR_LINK_LOG, n, p, J, 1, slope);
    sim_nterms = 2;
    if (bad) return 1;
    const uint32_t key[2] = {20261204u, 0u};
    s->m.offset = NULL;
    double lc = 0.0;
    for (ptrdiff_t i = 0; i < n; i++) {
        const int g = s->g0[i];
        double eta = 0.3 + 0.5 * svir_normal(key, 1, 0, (uint64_t)g);
        for (int c = 1; c < p; c++)
            eta += (c % 2 ? 0.2 : -0.1) * s->X[i + (ptrdiff_t)c * n];
        if (slope) eta += 0.2 * svir_normal(key, 1, 1, (uint64_t)g) * s->X[i + n];
        /* Poisson by inversion */
        const double mu = exp(eta), u = svir_uniform(key, 2, 0, (uint64_t)i);
        double k = 0.0, pk = exp(-mu), cdf = pk;
        while (u > cdf && k < 1000.0) {
            k += 1.0;
            pk *= mu / k;
            cdf += pk;
        }
        s->y[i] = k;
        lc += k < 2 ? 0.0 : -svir_lgamma(k + 1.0);
    }
    s->m.ll_const = lc;
    return 0;
}

/* mean over the draws of each global coordinate ([ndraws x D], column-major) */
static void draw_means(const svir_result *r, ptrdiff_t D, double *out)
{
    for (ptrdiff_t j = 0; j < D; j++) {
        double a = 0.0;
        for (int k = 0; k < r->ndraws; k++) a += r->draws[(ptrdiff_t)j * r->ndraws + k];
        out[j] = a / r->ndraws;
    }
}

/* 7. (--qem-bench) issue 4: QEM on a large two-level GLMM, the groups' part on the device
 * and on the CPU (16 threads), against SVI's whole fit on the device, each
 * with svi_fit()'s defaults (QEM: K = 16, eta0 0.5, kappa 0.6; SVI:
 * full-rank for the slope, Adam 0.02 with the plateau schedule; both the
 * window rule, 100 steps, 1e-4), from the same start (zero means, sd 0.1:
 * R's GLM start is not available here) */
static int qem_bench(void)
{
    static const ptrdiff_t ns[2] = {1000000, 10000000};
    int failed = 0;
    char err[512];
    for (int e = 0; e < 2; e++) {
        const ptrdiff_t n = ns[e];
        const int J = (int)(n / 100);
        sim s;
        if (sim_poisson_glmm(&s, n, 5, J, 1)) {
            printf("QEM benchmark: out of host memory\n");
            return 1;
        }
        const svir_glmm *m = &s.m;
        s.m.couple = 0;
        svir_control c;
        gck_fit_control(&c, 1, 3000, 0.05, SVIR_LR_CONSTANT, 100, 0, 42);
        c.qem_K = 16;
        c.qem_eta0 = 0.5;
        c.qem_kappa = 0.6;
        c.ndraws = 200;
        c.threads = 16;
        svir_result rq, rc, rs;
        double t0 = gck_now();
        int st = qem_fit(m, &c, 1, &rq);
        const double t_q = gck_now() - t0;
        if (st) {
            printf("QEM benchmark, N = %td: FAILED to run on the device: %s\n", n, rq.message);
            svir_result_free(&rq);
            sim_free(&s);
            failed = 1;
            continue;
        }
        /* the CPU: the first iterations of the same fit, timed (each costs
         * K^2 = 256 likelihood terms per observation with the slope) */
        svir_control cc = c;
        const long kc = n >= 10000000 ? 2 : 10;
        cc.max_steps = rq.steps < kc ? rq.steps : kc;
        cc.ndraws = 0;
        t0 = gck_now();
        st = qem_fit(m, &cc, 0, &rc);
        const double t_c = gck_now() - t0;
        /* SVI on the device, coupled as svi_fit() runs it */
        s.m.couple = 1;
        svir_control cs;
        gck_fit_control(&cs, 1, 20000, 0.02, SVIR_LR_PLATEAU, 100, 0, 42);
        cs.ndraws = 200;
        t0 = gck_now();
        const int sts = dev_fit(m, &cs, &rs, err, sizeof err);
        const double t_s = gck_now() - t0;
        const ptrdiff_t D = m->D;
        double mq[64], ms[64], dmax = 0.0;
        draw_means(&rq, D, mq);
        const long tq = rq.steps / 10 > 0 ? rq.steps / 10 : 1;
        double lp = 0.0;
        for (long k = rq.steps - tq; k < rq.steps; k++) lp += rq.trace[k] / (double)tq;
        printf("QEM benchmark, Poisson, N = %td, J = %d groups, random intercept and slope, K = 16: "
               "device %ld iterations in %.2f s (%.2f ms per iteration, stop %d, log P-hat %.1f); "
               "CPU (16 threads) %.1f ms per iteration over %ld: %.0fx\n",
               n, J, rq.steps, t_q, 1e3 * rq.seconds / rq.steps, rq.stop_reason, lp,
               st ? NAN : 1e3 * rc.seconds / rc.steps, rc.steps,
               st ? NAN : (rc.seconds / rc.steps) / (rq.seconds / rq.steps));
        if (sts) {
            printf("  SVI on the device: FAILED to run: %s\n", err);
            failed = 1;
        } else {
            draw_means(&rs, D, ms);
            for (ptrdiff_t j = 0; j < D; j++) dmax = fmax(dmax, fabs(mq[j] - ms[j]));
            const long ts = rs.steps / 10 > 0 ? rs.steps / 10 : 1;
            double el = 0.0;
            for (long k = rs.steps - ts; k < rs.steps; k++) el += rs.trace[k] / (double)ts;
            printf("  SVI (full-rank) on the device: %ld steps in %.2f s (stop %d, ELBO %.1f); QEM "
                   "sooner by %.1fx; posterior means of the %td globals (internal units) differ by "
                   "at most %.3f\n", rs.steps, t_s, rs.stop_reason, el, t_s / t_q, D, dmax);
            printf("  globals, QEM:");
            for (ptrdiff_t j = 0; j < D; j++) printf(" %.3f", mq[j]);
            printf("\n  globals, SVI:");
            for (ptrdiff_t j = 0; j < D; j++) printf(" %.3f", ms[j]);
            printf("\n");
        }
        svir_result_free(&rq);
        if (!st) svir_result_free(&rc);
        svir_result_free(&rs);
        sim_free(&s);
    }
    return failed;
}

int gck_passed = 0, gck_failed = 0;
#ifdef SVIR_CUDA_EMU
int gck_emu = 1;
/* src/cuda/svir_cuda_emu.cuh: kernels whose results depend on the order of
 * their threads (the race check), and launches */
long svir_cuda_emu_races(void);
long svir_cuda_emu_launches(void);
int svir_cuda_emu_racecheck(void);
int gpucheck_emu_selftest(void); /* emu_selftest.cu */
#else
int gck_emu = 0;
#endif

/* the tally's line; the exit status 1 on any failure */
static int tally(int failed)
{
#ifdef SVIR_CUDA_EMU
    const long races = svir_cuda_emu_races();
    if (svir_cuda_emu_racecheck())
        printf("race check: %ld kernel launches, %ld with results that depend on the order of their "
               "threads\n", svir_cuda_emu_launches(), races);
    else
        printf("race check off (SVIR_EMU_RACECHECK=1 turns it on): %ld kernel launches\n",
               svir_cuda_emu_launches());
    gck_failed += (int)races;
    printf("emulated device checks: %d passed, %d failed\n", gck_passed, gck_failed);
#else
    printf("device checks: %d passed, %d failed\n", gck_passed, gck_failed);
#endif
    return failed || gck_failed ? 1 : 0;
}

int main(int argc, char **argv)
{
    int quick = 0, failed = 0, steps = 1000, pln_only = 0, pln_n = 100000, bench_only = 0,
        no_pln = 0, qem_only = 0, mix_only = 0, no_mix = 0, mix_n = 1000000, bnn_only = 0, no_bnn = 0;
    /* line-buffered, so that a run stopped by a time limit keeps its lines */
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *data = NULL;
    for (int a = 1; a < argc; a++) {
        if (strcmp(argv[a], "--quick") == 0) quick = 1;
        else if (strcmp(argv[a], "--data") == 0 && a + 1 < argc) data = argv[++a];
        else if (strcmp(argv[a], "--steps") == 0 && a + 1 < argc) steps = atoi(argv[++a]);
        else if (strcmp(argv[a], "--pln") == 0) pln_only = 1;
        else if (strcmp(argv[a], "--bench") == 0) bench_only = 1;
        else if (strcmp(argv[a], "--no-pln") == 0) no_pln = 1;
        else if (strcmp(argv[a], "--qem-bench") == 0) qem_only = 1;
        else if (strcmp(argv[a], "--pln-n") == 0 && a + 1 < argc) pln_n = atoi(argv[++a]);
        else if (strcmp(argv[a], "--mix") == 0) mix_only = 1;
        else if (strcmp(argv[a], "--no-mix") == 0) no_mix = 1;
        else if (strcmp(argv[a], "--mix-n") == 0 && a + 1 < argc) mix_n = atoi(argv[++a]);
        else if (strcmp(argv[a], "--bnn") == 0) bnn_only = 1;
        else if (strcmp(argv[a], "--no-bnn") == 0) no_bnn = 1;
        else if (strcmp(argv[a], "--emu") == 0) quick = 1; /* the emulation: no timings */
        else {
            fprintf(stderr, "usage: gpucheck [--quick] [--emu] [--bench] [--no-pln] [--pln] [--pln-n N] "
                            "[--data DIR] [--steps N] [--qem-bench] [--mix] [--no-mix] [--mix-n N] [--bnn] [--no-bnn]\n");
            return 2;
        }
    }
    char buf[512], err[512];

    /* 1. the device */
    const int avail = svir_backend_table[SVIR_BACKEND_CUDA].available(buf, sizeof buf);
    printf("cuda backend: %s\n  %s\n", avail ? "available" : "NOT available", buf);
    if (!avail) return 2;
#ifdef SVIR_CUDA_EMU
    /* the emulation's own checks first */
    failed |= gpucheck_emu_selftest();
#endif

    if (qem_only) return qem_bench();
    if (bnn_only) {
        if (!bench_only) failed |= gpucheck_bnn();
        if (!quick) failed |= gpucheck_bnn_bench(1024, 4096);
        return tally(failed);
    }
    if (mix_only) {
        if (!bench_only) failed |= gpucheck_mix();
        if (!quick) failed |= gpucheck_mix_bench(mix_n, 2000, 20);
        return tally(failed);
    }
    if (pln_only) {
        if (!bench_only) failed |= gpucheck_pln();
        if (!quick) failed |= gpucheck_pln_bench(pln_n, 2000, 10);
        return tally(failed);
    }
    if (bench_only) goto timings;

    /* 2. normals */
    {
        const ptrdiff_t cnt = 1000003;
        const uint64_t first = 5;
        double *c = malloc(sizeof(double) * (size_t)cnt), *g = malloc(sizeof(double) * (size_t)cnt);
        uint32_t key[2];
        svir_philox_key(4242, key);
        svir_normal_fill(key, 2, 9, first, cnt, c);
        if (!c || !g || svir_cuda_normals_host(4242, 2, 9, first, cnt, g, err, sizeof err)) {
            gck_failed++;
            printf("normals: FAILED to run: %s\n", err);
            return 1;
        }
        ptrdiff_t bad = 0;
        for (ptrdiff_t k = 0; k < cnt; k++) bad += memcmp(c + k, g + k, sizeof(double)) != 0;
        printf("normals: %td of %td differ from the CPU's bit pattern: %s\n", bad, cnt,
               gck_result(bad == 0));
        failed |= bad != 0;
        free(c);
        free(g);
    }

    /* 3. the observation pass, every family and link */
    {
        const int fams[6][2] = {{SVIR_GAUSSIAN, SVIR_LINK_IDENTITY}, {SVIR_BINOMIAL, SVIR_LINK_LOGIT},
                                {SVIR_BINOMIAL, SVIR_LINK_PROBIT}, {SVIR_BINOMIAL, SVIR_LINK_CLOGLOG},
                                {SVIR_POISSON, SVIR_LINK_LOG}, {SVIR_NEGBIN, SVIR_LINK_LOG}};
        const char *names[6] = {"gaussian", "binomial logit", "binomial probit",
                                "binomial cloglog", "poisson", "negbin"};
        for (int f = 0; f < 6; f++)
            for (int slope = 0; slope < 2; slope++) {
                sim s;
                if (sim_make(&s, fams[f][0], fams[f][1], gck_size(200000, 10, 1000), slope ? 40 : 5,
                             (int)gck_size(2000, 10, 50), 50, slope)) {
                    printf("out of host memory\n");
                    return 1;
                }
                const svir_glmm *m = &s.m;
                double *G0 = malloc(sizeof(double) * (size_t)m->nz), *G1 = malloc(sizeof(double) * (size_t)m->nz);
                double gb0[64], gb1[64], ll0, ll1, ga0, ga1, ms = 0;
                cpu_pass(m, s.beta, s.b, 0.9, 2.5, &ll0, gb0, &ga0, G0);
                svir_cuda_data *d = NULL;
                int st = svir_cuda_data_new(m, &d, err, sizeof err);
                if (!st)
                    st = svir_cuda_obs_pass_host(d, s.beta, s.b, 0.9, 2.5, &ll1, gb1, &ga1, G1, &ms,
                                                 err, sizeof err);
                svir_cuda_data_free(d);
                if (st) {
                    gck_failed++;
                    printf("pass %-16s slope %d: FAILED to run: %s\n", names[f], slope, err);
                    failed = 1;
                } else {
                    const double e_ll = fabs(ll1 - ll0) / fmax(1.0, fabs(ll0));
                    const double e_g = fmax(gck_rel_diff(gb0, gb1, m->p), gck_rel_diff(G0, G1, m->nz));
                    const double e_a = fabs(ga1 - ga0) / fmax(1.0, fabs(ga0));
                    const int ok = e_ll < 1e-12 && e_g < 1e-11 && e_a < 1e-11;
                    printf("pass %-16s p = %2d, slope %d: rel. diff ll %.1e, gradients %.1e, aux %.1e "
                           "(%.3f ms): %s\n", names[f], m->p, slope, e_ll, e_g, e_a, ms,
                           gck_result(ok));
                    failed |= !ok;
                }
                free(G0);
                free(G1);
                sim_free(&s);
            }
    }
    /* 3b. the per-group part of a step: draws, b = A z, gradients, KL */
    {
        const uint32_t key[2] = {99u, 0u};
        for (int slope = 0; slope < 2; slope++) {
            sim s;
            if (sim_make(&s, SVIR_GAUSSIAN, SVIR_LINK_IDENTITY, gck_size(100000, 10, 1000), 3,
                         (int)gck_size(20000, 10, 100), 300, slope)) {
                printf("out of host memory\n");
                return 1;
            }
            const svir_glmm *m = &s.m;
            const size_t nz = (size_t)m->nz, nl = (size_t)m->nloc, nq = (size_t)m->nqq;
            double *lp = malloc(sizeof(double) * nl), *A = calloc(nq, sizeof(double));
            double *G = malloc(sizeof(double) * nz), shift[8];
            double *out[2][3];
            for (int k = 0; k < 2; k++) {
                out[k][0] = malloc(sizeof(double) * nz);
                out[k][1] = malloc(sizeof(double) * nz);
                out[k][2] = malloc(sizeof(double) * nl);
            }
            for (size_t k = 0; k < nl; k++) lp[k] = 0.4 * svir_normal(key, 9, 0, k);
            for (size_t k = 0; k < nz; k++) G[k] = svir_normal(key, 9, 1, k);
            for (int t = 0; t < m->nterms; t++) {
                const int q = m->terms[t].q;
                for (int r = 0; r < q; r++)
                    for (int c = 0; c <= r; c++)
                        A[m->terms[t].off_qq + r * q + c] = 0.5 * svir_normal(key, 9, 2, (uint64_t)(r * q + c));
            }
            for (int k = 0; k < 8; k++) shift[k] = 0.2 * svir_normal(key, 9, 3, (uint64_t)k);
            for (int stl = 0; stl < 2; stl++)
                for (int sh = 0; sh < 2; sh++) {
                    double kl[2], lq[2], sums[2][64];
                    int st = svir_local_step_ref(m, lp, A, G, sh ? shift : NULL, 11, 3, 1.0, stl,
                                                 out[0][0], out[0][1], out[0][2], &kl[0], &lq[0],
                                                 sums[0]);
                    if (!st)
                        st = svir_cuda_local_step_host(m, lp, A, G, sh ? shift : NULL, 11, 3, 1.0,
                                                       stl, out[1][0], out[1][1], out[1][2], &kl[1],
                                                       &lq[1], sums[1], err, sizeof err);
                    if (st) {
                        gck_failed++;
                        printf("local step, slope %d: FAILED to run: %s\n", slope, st == 1 ? "" : err);
                        failed = 1;
                        continue;
                    }
                    const double e_z = fmax(gck_rel_diff(out[0][0], out[1][0], m->nz),
                                            gck_rel_diff(out[0][1], out[1][1], m->nz));
                    const double e_g = gck_rel_diff(out[0][2], out[1][2], m->nloc);
                    const double e_s = fmax(fmax(fabs(kl[1] - kl[0]) / fmax(1.0, fabs(kl[0])),
                                                 fabs(lq[1] - lq[0]) / fmax(1.0, fabs(lq[0]))),
                                            gck_rel_diff(sums[0], sums[1], m->nqq + 2 * (slope ? 3 : 2)));
                    const int ok = e_z < 1e-14 && e_g < 1e-12 && e_s < 1e-12;
                    printf("local step, %d groups, slope %d, stl %d, shift %d: rel. diff z/b %.1e, "
                           "gradients %.1e, KL/log q/term sums %.1e: %s\n", (int)gck_size(20000, 10, 100) + 300, slope, stl, sh, e_z, e_g,
                           e_s, gck_result(ok));
                    failed |= !ok;
                }
            for (int k = 0; k < 2; k++)
                for (int c = 0; c < 3; c++) free(out[k][c]);
            free(lp); free(A); free(G);
            sim_free(&s);
        }
    }
    /* 3b'. a whole ELBO estimate and its gradient, full batch and minibatch */
    {
        for (int fam = 0; fam < 2; fam++) {
            sim s;
            if (sim_make(&s, fam ? SVIR_POISSON : SVIR_GAUSSIAN, fam ? SVIR_LINK_LOG : SVIR_LINK_IDENTITY,
                         gck_size(50000, 10, 1000), 3, (int)gck_size(500, 10, 20), 40, 1)) {
                printf("out of host memory\n");
                return 1;
            }
            const svir_glmm *m = &s.m;
            for (int fr = 0; fr < 2; fr++)
                for (int stl = 0; stl < 2; stl++)
                for (int mb = 0; mb < 2; mb++) {
                    svir_control c;
                    memset(&c, 0, sizeof c);
                    c.guide = fr ? SVIR_GUIDE_FULLRANK : SVIR_GUIDE_MEANFIELD;
                    c.batch_size = mb ? gck_size(5000, 10, 200) : 0;
                    c.num_particles = 2;
                    c.stl = stl;
                    c.threads = 1;
                    c.seed = 11;
                    const ptrdiff_t ngp = svir_glmm_n_global(m, c.guide), nv = ngp + m->nloc;
                    double *v = malloc(sizeof(double) * (size_t)nv);
                    double *g0 = malloc(sizeof(double) * (size_t)nv), *g1 = malloc(sizeof(double) * (size_t)nv);
                    const uint32_t key[2] = {3u, 0u};
                    for (ptrdiff_t k = 0; k < nv; k++) v[k] = 0.3 * svir_normal(key, 11, 0, (uint64_t)k);
                    double e0 = 0, e1 = 0;
                    svir_coupling cp;
                    int ns = 0;
                    int st = svir_glmm_elbo_grad(m, &c, v, v + ngp, 5, &e0, g0, err, sizeof err);
                    if (!st) st = svir_coupling_new(m, &c, NULL, &cp, &ns);
                    if (!st) {
                        st = svir_cuda_elbo_grad_host(m, &cp, ns, fr, stl, 2, c.batch_size, v, v + ngp,
                                                      11, 5, &e1, g1, err, sizeof err);
                        svir_coupling_free(&cp);
                    }
                    if (st) {
                        gck_failed++;
                        printf("ELBO step: FAILED to run: %s\n", err);
                        failed = 1;
                    } else {
                        const double ee = fabs(e1 - e0) / fmax(1.0, fabs(e0)), eg = gck_rel_diff(g0, g1, nv);
                        const int ok = ee < 1e-11 && eg < 1e-9;
                        printf("ELBO step, %s, %s, stl %d, %s: rel. diff ELBO %.1e, gradient %.1e: %s\n",
                               fam ? "poisson" : "gaussian", fr ? "fullrank" : "meanfield", stl,
                               mb ? "minibatch" : "full batch", ee, eg, gck_result(ok));
                        failed |= !ok;
                    }
                    free(v); free(g0); free(g1);
                }
            sim_free(&s);
        }
    }

    /* 3c. Adam: the same operations per element, so the same numbers */
    {
        const ptrdiff_t n = 100001;
        const uint32_t key[2] = {5u, 0u};
        double *v[2][4];
        for (int k = 0; k < 2; k++)
            for (int c = 0; c < 4; c++) v[k][c] = malloc(sizeof(double) * (size_t)n);
        for (ptrdiff_t i = 0; i < n; i++) {
            v[0][0][i] = v[1][0][i] = svir_normal(key, 10, 0, (uint64_t)i);
            v[0][1][i] = v[1][1][i] = 0.1 * svir_normal(key, 10, 1, (uint64_t)i);
            v[0][2][i] = v[1][2][i] = 0.01 * svir_uniform(key, 10, 2, (uint64_t)i);
            v[0][3][i] = v[1][3][i] = svir_normal(key, 10, 3, (uint64_t)i);
        }
        const double bc1 = 1.0 - pow(0.9, 7.0), bc2 = 1.0 - pow(0.999, 7.0);
        svir_adam(v[0][0], v[0][1], v[0][2], v[0][3], n, 0.05, bc1, bc2);
        if (svir_cuda_adam_host(v[1][0], v[1][1], v[1][2], v[1][3], n, 0.05, bc1, bc2, err,
                                sizeof err)) {
            gck_failed++;
            printf("adam: FAILED to run: %s\n", err);
            failed = 1;
        } else {
            ptrdiff_t bad = 0;
            for (int c = 0; c < 3; c++)
                for (ptrdiff_t i = 0; i < n; i++) bad += memcmp(v[0][c] + i, v[1][c] + i, 8) != 0;
            printf("adam: %td of %td values differ from the CPU's bit pattern: %s\n", bad, 3 * n,
                   gck_result(bad == 0));
            failed |= bad != 0;
        }
        for (int k = 0; k < 2; k++)
            for (int c = 0; c < 4; c++) free(v[k][c]);
    }
    /* 3d. whole fits with a fixed number of steps: the same draws and loop
     * on both sides, so the same parameters up to the order of the sums
     * (tolerance 1e-6 relative after 300 Adam steps); then the coupled
     * guide (cpl, as svi_fit() runs it), whose anchor the fit moves
     * (k_reanchor_g and k_reanchor_l, which the emulation listed as never
     * run by these checks; issue 19) */
    for (int cpl = 0; cpl < 2; cpl++) {
        sim s;
        sim_coupled = cpl;
        const int bad_sim = sim_make(&s, SVIR_POISSON, SVIR_LINK_LOG, gck_size(40000, 10, 1000), 3,
                                     (int)gck_size(400, 10, 20), 30, 1);
        sim_coupled = 0;
        if (bad_sim) {
            printf("out of host memory\n");
            return 1;
        }
        const svir_glmm *m = &s.m;
        for (int fr = 0; fr < 2; fr++)
            for (int mb = 0; mb < 2; mb++) {
                if (cpl && (fr || mb)) continue; /* coupled: mean-field, full batch */
                svir_control c;
                gck_fit_control(&c, fr, 300, 0.05, SVIR_LR_PLATEAU, 50, mb ? gck_size(4000, 10, 100) : 0, 42);
                c.ndraws = 100; /* and the posterior draws kept in the fit */
                svir_result r0, r1;
                int st = cpu_fit(m, &c, &r0);
                if (!st) st = dev_fit(m, &c, &r1, err, sizeof err);
                if (st) {
                    gck_failed++;
                    printf("fit, %s, %s%s: FAILED to run: %s\n", fr ? "fullrank" : "meanfield",
                           mb ? "minibatch" : "full batch", cpl ? ", coupled" : "", err);
                    failed = 1;
                } else {
                    const ptrdiff_t ngp = svir_glmm_n_global(m, c.guide);
                    const double eg = gck_rel_diff(r0.gpar, r1.gpar, ngp);
                    const double el = gck_rel_diff(r0.lpar, r1.lpar, m->nloc);
                    const double ed = gck_rel_diff(r0.draws, r1.draws, (ptrdiff_t)c.ndraws * m->D);
                    const double er = gck_rel_diff(r0.log_ratio, r1.log_ratio, c.ndraws);
                    double et = 0.0;
                    for (long k = 0; k < r0.steps && k < r1.steps; k++)
                        et = fmax(et, fabs(r0.trace[k] - r1.trace[k]) / fmax(1.0, fabs(r0.trace[k])));
                    const int ok = r0.steps == r1.steps && r0.stop_reason == r1.stop_reason &&
                                   eg < 1e-6 && el < 1e-6 && et < 1e-6 && ed < 1e-6 && er < 1e-6;
                    printf("fit, %s, %s%s: steps %ld / %ld, stop %d / %d, rel. diff globals %.1e, "
                           "locals %.1e, ELBO trace %.1e, draws %.1e, log ratios %.1e: %s\n",
                           fr ? "fullrank" : "meanfield", mb ? "minibatch" : "full batch",
                           cpl ? ", coupled" : "",
                           r0.steps, r1.steps, r0.stop_reason, r1.stop_reason, eg, el, et, ed, er,
                           gck_result(ok));
                    failed |= !ok;
                }
                svir_result_free(&r0);
                svir_result_free(&r1);
            }
        sim_free(&s);
    }
    /* 3e. QEM (src/cuda/glmm_qem.cu): whole fits with the groups' part
     * on the device against the CPU, one grouping factor, random intercepts
     * and slopes; the CPU's sufficient sums (Gaussian, Poisson intercepts)
     * against the device's pass over every observation, so up to rounding */
    {
        /* the probit and cloglog links (one case each) since the emulation
         * listed their device paths as never run (issue 19) */
        const int fams[6][2] = {{SVIR_GAUSSIAN, SVIR_LINK_IDENTITY}, {SVIR_BINOMIAL, SVIR_LINK_LOGIT},
                                {SVIR_POISSON, SVIR_LINK_LOG}, {SVIR_NEGBIN, SVIR_LINK_LOG},
                                {SVIR_BINOMIAL, SVIR_LINK_PROBIT}, {SVIR_BINOMIAL, SVIR_LINK_CLOGLOG}};
        sim_nterms = 1;
        for (int f = 0; f < 6; f++)
            for (int slope = 0; slope < (f < 4 ? 2 : 1); slope++) {
                sim s;
                if (sim_make(&s, fams[f][0], fams[f][1], gck_size(20000, 10, 500), 3, (int)gck_size(200, 10, 20), 30,
                             slope)) {
                    printf("out of host memory\n");
                    return 1;
                }
                const svir_glmm *m = &s.m;
                svir_control c;
                gck_fit_control(&c, slope, 120, 0.05, SVIR_LR_CONSTANT, 40, 0, 42);
                s.m.couple = 0;
                c.qem_K = 8;
                c.qem_eta0 = 0.5;
                c.qem_kappa = 0.6;
                c.ndraws = 50;
                svir_result r0, r1;
                int st = qem_fit(m, &c, 0, &r0);
                if (!st) st = qem_fit(m, &c, 1, &r1);
                if (st) {
                    gck_failed++;
                    printf("QEM fit, family %d, %s: FAILED to run: %s\n", fams[f][0],
                           slope ? "slope" : "intercept", r1.message);
                    failed = 1;
                } else {
                    const ptrdiff_t ngp = svir_glmm_n_global(m, c.guide);
                    const double eg = gck_rel_diff(r0.gpar, r1.gpar, ngp);
                    const double el = gck_rel_diff(r0.lpar, r1.lpar, m->nloc);
                    const double er = gck_rel_diff(r0.log_ratio, r1.log_ratio, c.ndraws);
                    double et = 0.0;
                    for (long k = 0; k < r0.steps && k < r1.steps; k++)
                        et = fmax(et, fabs(r0.trace[k] - r1.trace[k]) / fmax(1.0, fabs(r0.trace[k])));
                    const int ok = r0.steps == r1.steps && r0.stop_reason == r1.stop_reason &&
                                   eg < 1e-6 && el < 1e-6 && et < 1e-6 && er < 1e-6;
                    printf("QEM fit, family %d, link %d, %s: iterations %ld / %ld, rel. diff globals %.1e, "
                           "locals %.1e, log P-hat trace %.1e, log ratios %.1e: %s\n", fams[f][0], fams[f][1],
                           slope ? "slope" : "intercept", r0.steps, r1.steps, eg, el, et, er,
                           gck_result(ok));
                    failed |= !ok;
                }
                svir_result_free(&r0);
                svir_result_free(&r1);
                sim_free(&s);
            }
        sim_nterms = 2;
    }
    /* the fits above called the drivers directly, outside svir_fit: none
     * may leave its gate (a dead stack frame's) for later polls, as they
     * did before the emulation first ran these checks (issue 19) */
    {
        const int ok = svir_gate_current() == NULL;
        printf("drivers called outside svir_fit leave no interrupt gate behind: %s\n", gck_result(ok));
        failed |= !ok;
    }
    /* the Poisson-lognormal model (pln_check.c) */
    if (!no_pln) failed |= gpucheck_pln();
    /* count mixtures (mix_check.c) */
    if (!no_mix) failed |= gpucheck_mix();
    /* Bayesian networks (bnn_check.c) */
    if (!no_bnn) failed |= gpucheck_bnn();
    if (quick) return tally(failed);
timings:

    /* 4. the benchmark size of issue 3 */
    {
        sim s;
        if (data) {
            printf("reading the benchmark data from %s (bench/gpu_glmm.py --save)\n", data);
            if (sim_load(&s, data)) {
                printf("could not read the data in %s\n", data);
                return 1;
            }
        } else {
            printf("building the benchmark data (N = 10^7, p = 10, factors of 100000 and 1000 levels)\n");
            if (sim_make(&s, SVIR_POISSON, SVIR_LINK_LOG, 10000000, 10, 100000, 1000, 0)) {
                printf("out of host memory\n");
                return 1;
            }
            s.m.offset = NULL; /* the benchmark model has no offset */
        }
        const ptrdiff_t n = s.m.n;
        const svir_glmm *m = &s.m;
        svir_cuda_data *d = NULL;
        double ms = 0, bytes = 0, gbs = 0;
        double t0 = gck_now();
        int st = svir_cuda_data_new(m, &d, err, sizeof err);
        const double t_up = gck_now() - t0;
        double *G = malloc(sizeof(double) * (size_t)m->nz), gb[16], ll, ga;
        if (!st) st = svir_cuda_obs_pass_host(d, s.beta, s.b, 1, 1, &ll, gb, &ga, G, NULL, err, sizeof err);
        if (!st) st = svir_cuda_obs_bench(d, 20, (size_t)1 << 30, &ms, &bytes, &gbs, err, sizeof err);
        svir_cuda_data_free(d);
        if (st) {
            printf("benchmark: FAILED to run: %s\n", err);
            return 1;
        }
        t0 = gck_now();
        cpu_pass(m, s.beta, s.b, 1, 1, &ll, gb, &ga, G);
        const double t_cpu = gck_now() - t0;
        const double achieved = bytes / (1e-3 * ms) / 1e9;
        printf("observation pass, N = %td: %.3f ms on the device (median of 20), %.0f MB read, "
               "%.0f GB/s = %.0f%% of the device-to-device copy bandwidth (%.0f GB/s, read + write "
               "of 1 GiB); upload %.2f s; the CPU reference loop (one thread, -O2) %.3f s\n",
               n, ms, bytes / 1e6, achieved, 100.0 * achieved / gbs, gbs, t_up, t_cpu);
        free(G);
        /* whole steps of a fit: steps/s on the device and on the CPU */
        for (int mb = 0; mb < 2; mb++) {
            double t_dev, el_dev, t_cpu_fit;
            if (step_times(m, mb ? 100000 : 0, steps, mb ? 50 : 3, &t_dev, &el_dev, &t_cpu_fit, err,
                           sizeof err)) {
                printf("fit benchmark: FAILED to run: %s\n", err);
                return 1;
            }
            printf("fit steps, N = %td, %s: device %.3f ms/step (%.0f steps/s; ELBO %.1f over "
                   "the last 10%% of %d steps), CPU (16 threads) %.1f ms/step (%.1f steps/s): %.0fx\n",
                   n, mb ? "minibatch of 10^5" : "full batch", 1e3 * t_dev, 1.0 / t_dev, el_dev,
                   steps, 1e3 * t_cpu_fit, 1.0 / t_cpu_fit, t_cpu_fit / t_dev);
            if (!mb)
                printf("  full-batch step against the floor: the observation pass must read %.0f MB "
                       "(above), %.0f%% of the step's time at %.0f GB/s\n",
                       bytes / 1e6, 100.0 * (bytes / (gbs * 1e9)) / t_dev, gbs);
        }
        sim_free(&s);
    }

    /* 5. where the device starts to win, for the rule of backend = "auto":
     * full-batch step times against N (Poisson, p = 10, groups of 100
     * observations crossed with a 1000-level factor) */
    printf("full-batch step time against N (for the auto rule): N, device ms/step, CPU ms/step "
           "(16 threads), ratio\n");
    for (int e = 0; e < 6; e++) {
        static const ptrdiff_t ns[6] = {10000, 30000, 100000, 300000, 1000000, 3000000};
        sim s;
        const ptrdiff_t n = ns[e];
        if (sim_make(&s, SVIR_POISSON, SVIR_LINK_LOG, n, 10, (int)(n / 100), 1000, 0)) {
            printf("out of host memory\n");
            return 1;
        }
        s.m.offset = NULL;
        double t_dev, el, t_cpu;
        if (step_times(&s.m, 0, 200, n >= 1000000 ? 5 : 50, &t_dev, &el, &t_cpu, err, sizeof err)) {
            printf("auto rule: FAILED to run: %s\n", err);
            return 1;
        }
        printf("  N = %8td: %8.3f  %9.3f  %6.1fx\n", n, 1e3 * t_dev, 1e3 * t_cpu, t_cpu / t_dev);
        sim_free(&s);
    }

    /* 6. issue 5's GPU target for the Poisson-lognormal model */
    if (!no_pln) failed |= gpucheck_pln_bench(pln_n, 2000, 10);
    /* 7. issue 17's GPU target for count mixtures */
    if (!no_mix) failed |= gpucheck_mix_bench(mix_n, 2000, 20);
    /* 8. issue 18's timing for networks */
    if (!no_bnn) failed |= gpucheck_bnn_bench(1024, 4096);
    return tally(failed);
}
