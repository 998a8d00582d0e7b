/* gpucheck's Bayesian-network checks and timing (bnn_check.h): the
 * device's part of an SVI estimate (src/cuda/bnn_dev.cu) against the CPU's
 * (svir_bnn_elbo_grad with and without the device copy) at the same guide
 * and step, so with the same noise; whole SVI fits on both; and issue 18's
 * timing, one hidden layer of 1024 relu units, batches of 4096 rows. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/svir_philox.h"
#include "core/svir_result.h"
#include "models/bnn/bnn_cuda.h"
#include "models/bnn/bnn_model.h"
#include "models/glmm/glmm_codes.h"

#include "check_util.h"
#include "bnn_check.h"

typedef struct {
    svir_bnn_model m;
    double *X, *y, *gpar;
} bsim;

static void bsim_free(bsim *s)
{
    free(s->X);
    free(s->y);
    free(s->gpar);
    memset(s, 0, sizeof *s);
}

/* n rows of d standard normal inputs, a response of the family from eta =
 * sin(x1) + x2 / 2 (gaussian: plus noise of sd 0.3; binomial: 0/1 with
 * probability plogis(2 eta); poisson: counts of mean exp(eta)), a network
 * with the hidden widths h [L], and a guide gpar [2 D] away from its start
 * (means of the prior's scale, sds 0.05 to 0.2) */
static int bsim_make(bsim *s, int n, int d, int L, const int *h, int act, int family, int prior)
{
    memset(s, 0, sizeof *s);
    svir_bnn_model *m = &s->m;
    m->n = n;
    m->d = d;
    m->L = L;
    m->act = act;
    m->family = family;
    m->prior = prior;
    for (int l = 0; l < L; l++) m->dims[l + 1] = h[l];
    m->w_scale = 1.0;
    m->b_scale = 1.0;
    svir_bnn_layout(m);
    const ptrdiff_t D = m->D;
    s->X = malloc(sizeof(double) * (size_t)n * d);
    s->y = malloc(sizeof(double) * (size_t)n);
    s->gpar = malloc(sizeof(double) * 2 * (size_t)D);
    if (!s->X || !s->y || !s->gpar) return 2;
    uint32_t key[2];
    svir_philox_key(99 + family + 10 * act + 100 * L, key);
    for (ptrdiff_t k = 0; k < (ptrdiff_t)n * d; k++) s->X[k] = svir_normal(key, 1, 0, (uint64_t)k);
    for (int i = 0; i < n; i++) {
        const double eta = sin(s->X[i]) + 0.5 * s->X[i + (ptrdiff_t)(d > 1) * n];
        if (family == SVIR_GAUSSIAN) {
            s->y[i] = eta + 0.3 * svir_normal(key, 2, 0, (uint64_t)i);
        } else if (family == SVIR_BINOMIAL) {
            s->y[i] = svir_uniform(key, 3, 0, (uint64_t)i) < 1.0 / (1.0 + exp(-2.0 * eta)) ? 1.0 : 0.0;
        } else {
            /* Poisson by inversion */
            const double lam = exp(eta), u = svir_uniform(key, 3, 1, (uint64_t)i);
            double p = exp(-lam), cdf = p, k = 0.0;
            while (u > cdf && k < 100.0) {
                k += 1.0;
                p *= lam / k;
                cdf += p;
            }
            s->y[i] = k;
        }
    }
    m->X = s->X;
    m->y = s->y;
    for (int l = 0; l <= L; l++) {
        const double sd = 1.0 / sqrt((double)m->dims[l]);
        const ptrdiff_t nw = (ptrdiff_t)m->dims[l] * m->dims[l + 1];
        for (ptrdiff_t k = m->off_w[l]; k < m->off_w[l] + nw; k++)
            s->gpar[k] = sd * svir_normal(key, 4, 0, (uint64_t)k);
        for (ptrdiff_t k = m->off_b[l]; k < m->off_b[l] + m->dims[l + 1]; k++)
            s->gpar[k] = 0.1 * svir_normal(key, 4, 0, (uint64_t)k);
    }
    if (m->off_lam >= 0)
        for (int l = 0; l <= L; l++) s->gpar[m->off_lam + l] = 0.1 * l;
    if (m->off_sig >= 0) s->gpar[m->off_sig] = log(0.4);
    for (ptrdiff_t k = 0; k < D; k++) s->gpar[D + k] = log(0.05 + 0.15 * svir_uniform(key, 5, 0, (uint64_t)k));
    return 0;
}

static void bnn_control(svir_control *c, ptrdiff_t batch, long steps, int particles, uint64_t seed)
{
    gck_fit_control(c, 0, steps, 0.01, SVIR_LR_PLATEAU, 50, batch, seed);
    c->method = SVIR_METHOD_SVI;
    c->num_particles = particles;
    c->stl = 0;
}

static const svir_impl *impl_of(int backend)
{
    return gck_impl_of(&svir_bnn_def, SVIR_METHOD_SVI, backend);
}

static const char *fam_name(int family)
{
    return family == SVIR_GAUSSIAN ? "gaussian" : family == SVIR_BINOMIAL ? "binomial" : "poisson";
}

/* the ELBO estimate at step `step` with the batch on the device (dstep:
 * the device's step, for the control that the check sees the noise) and on
 * the CPU; 0, or a status with err */
static int elbo_pair(svir_bnn_model *m, const svir_control *c, const double *gpar, long step,
                     long dstep, double *e0, double *g0, double *e1, double *g1, char *err,
                     size_t errlen)
{
    svir_cuda_bnn *dev = NULL;
    m->dev = NULL;
    int st = svir_bnn_elbo_grad(m, c, gpar, step, e0, g0);
    if (st) {
        snprintf(err, errlen, "out of memory");
        return st;
    }
    if ((st = svir_bnn_dev_new(m, c, &dev, err, errlen))) return st;
    m->dev = dev;
    st = svir_bnn_elbo_grad(m, c, gpar, dstep, e1, g1);
    m->dev = NULL;
    if (!st && svir_cuda_bnn_error(dev)[0]) {
        snprintf(err, errlen, "%s", svir_cuda_bnn_error(dev));
        st = 3;
    }
    svir_cuda_bnn_free(dev);
    return st;
}

/* the checks' networks: {layers (widths 40, or 16 and 8), activation,
 * family, prior} */
static const int cases[5][4] = {{1, SVIR_BNN_RELU, SVIR_GAUSSIAN, SVIR_BNN_PNORMAL},
                                {2, SVIR_BNN_TANH, SVIR_BINOMIAL, SVIR_BNN_PNORMAL},
                                {1, SVIR_BNN_TANH, SVIR_POISSON, SVIR_BNN_PLAPLACE},
                                {2, SVIR_BNN_RELU, SVIR_GAUSSIAN, SVIR_BNN_PHIER},
                                {0, SVIR_BNN_RELU, SVIR_BINOMIAL, SVIR_BNN_PNORMAL}};

/* case cs on n rows of 4 inputs; 0, or 1 (said) when out of memory */
static int case_make(bsim *s, int cs, int n)
{
    static const int h1[1] = {40}, h2[2] = {16, 8};
    const int L = cases[cs][0];
    if (bsim_make(s, n, 4, L, L == 1 ? h1 : h2, cases[cs][1], cases[cs][2], cases[cs][3])) {
        printf("out of host memory\n");
        bsim_free(s);
        return 1;
    }
    return 0;
}

int gpucheck_bnn(void)
{
    int failed = 0;
    char err[512];
    /* one ELBO estimate and its gradient, full batch and a minibatch of 64
     * rows, 2 particles, against the CPU's at the same step */
    for (int cs = 0; cs < 5; cs++) {
        bsim s;
        const int L = cases[cs][0];
        if (case_make(&s, cs, 300)) return 1;
        svir_bnn_model *m = &s.m;
        const ptrdiff_t D = m->D;
        char net[64];
        snprintf(net, sizeof net, "%s%s%s %s %s", L == 0 ? "no hidden" : L == 1 ? "40" : "16, 8",
                 L ? " " : "", L ? (cases[cs][1] == SVIR_BNN_RELU ? "relu" : "tanh") : "",
                 fam_name(cases[cs][2]),
                 cases[cs][3] == SVIR_BNN_PHIER ? "hier." : cases[cs][3] == SVIR_BNN_PLAPLACE ? "laplace" : "normal");
        for (int mb = 0; mb < 2; mb++) {
            svir_control c;
            bnn_control(&c, mb ? 64 : 0, 1, 2, 42);
            double e0 = 0.0, e1 = 0.0;
            double *g0 = malloc(sizeof(double) * 2 * (size_t)D), *g1 = malloc(sizeof(double) * 2 * (size_t)D);
            const int st = !g0 || !g1 ? 2 : elbo_pair(m, &c, s.gpar, 5, 5, &e0, g0, &e1, g1, err, sizeof err);
            if (st) {
                gck_failed++;
                printf("network ELBO %-28s %s: FAILED to run: %s\n", net, mb ? "minibatch" : "full batch",
                       st == 2 ? "out of memory" : err);
                failed = 1;
            } else {
                const double ee = fabs(e1 - e0) / fmax(1.0, fabs(e0)), eg = gck_rel_diff(g0, g1, 2 * D);
                const int ok = ee < 1e-9 && eg < 1e-9;
                printf("network ELBO %-28s %s: rel. diff ELBO %.1e, gradient %.1e: %s\n", net,
                       mb ? "minibatch " : "full batch", ee, eg, gck_result(ok));
                failed |= !ok;
            }
            /* the control: the device at another step (other noise, other
             * rows) must not pass, or the check could not see the noise */
            if (!st && cs == 0 && mb == 1) {
                const int st2 = elbo_pair(m, &c, s.gpar, 5, 6, &e0, g0, &e1, g1, err, sizeof err);
                const double eg = st2 ? 0.0 : gck_rel_diff(g0, g1, 2 * D);
                const int ok = !st2 && eg > 1e-6;
                printf("network ELBO, the device at the next step against the CPU's: gradient %.1e "
                       "apart (the check sees the noise): %s\n", eg, gck_result(ok));
                failed |= !ok;
            }
            free(g0);
            free(g1);
        }
        bsim_free(&s);
    }
    /* whole fits (2 particles), CPU against device: the same noise, rows
     * and loop, so the same steps and guide up to the sums' order */
    for (int cs = 0; cs < 2; cs++)
        for (int mb = 0; mb < 2; mb++) {
            bsim s;
            /* in the emulation fewer rows and steps: the race check
             * snapshots the device's memory at each of a step's launches */
            if (case_make(&s, cs, (int)gck_size(300, 2, 150))) return 1;
            svir_bnn_model *m = &s.m;
            m->init_mu = s.gpar;
            svir_control c;
            const long steps = gck_emu ? 60 : 200;
            bnn_control(&c, mb ? 64 : 0, steps, 2, 7);
            c.threads = cs == 0 ? 1 : 2; /* the CPU's BLAS path, and its loops */
            char label[64];
            snprintf(label, sizeof label, "network fit %-8s", fam_name(m->family));
            failed |= gck_fit_pair(label, mb, impl_of(SVIR_BACKEND_CPU), impl_of(SVIR_BACKEND_CUDA), m,
                                   &c, 2 * m->D, 1e-6);
            bsim_free(&s);
        }
    return failed;
}

/* issue 18's timing (bench/bnn.R's speed part): n = 50,000 rows of 10
 * inputs, one hidden layer of `width` relu units, gaussian, batches of B
 * rows, 1 particle, Adam at a constant 0.01: the device's loop time per
 * step over 200 steps, and the CPU's (16 threads) over 20 */
int gpucheck_bnn_bench(int width, int B)
{
    bsim s;
    const int h[1] = {width};
    if (bsim_make(&s, 50000, 10, 1, h, SVIR_BNN_RELU, SVIR_GAUSSIAN, SVIR_BNN_PNORMAL)) {
        printf("out of host memory\n");
        bsim_free(&s);
        return 1;
    }
    svir_bnn_model *m = &s.m;
    m->init_mu = s.gpar;
    int failed = 0;
    double ms[2] = {0.0, 0.0}, el[2] = {0.0, 0.0};
    for (int be = 0; be < 2; be++) {
        svir_control c;
        const long steps = be ? 200 : 20;
        gck_fit_control(&c, 0, steps, 0.01, SVIR_LR_CONSTANT, (int)steps, B, 1);
        c.method = SVIR_METHOD_SVI;
        c.stl = 0;
        c.threads = be ? 1 : 16;
        svir_result r;
        memset(&r, 0, sizeof r);
        const int st = impl_of(be ? SVIR_BACKEND_CUDA : SVIR_BACKEND_CPU)->run(m, &c, NULL, &r);
        if (st) {
            printf("network timing on the %s: FAILED to run: %s\n", be ? "device" : "CPU", r.message);
            failed = 1;
        } else {
            const double t = r.time_split[SVIR_PHASE_DRAW] + r.time_split[SVIR_PHASE_OBS] +
                             r.time_split[SVIR_PHASE_BACKWARD] + r.time_split[SVIR_PHASE_UPDATE];
            ms[be] = 1e3 * t / (double)r.steps;
            el[be] = r.trace[r.steps - 1];
        }
        svir_result_free(&r);
    }
    if (!failed)
        printf("network steps, n = 50000, 10 inputs, hidden %d relu, batch %d, 1 particle: device "
               "%.3f ms/step (last ELBO estimate %.4g, 200 steps), CPU (16 threads) %.2f ms/step "
               "(%.4g, 20 steps): %.1fx\n",
               width, B, ms[1], el[1], ms[0], el[0], ms[0] / ms[1]);
    bsim_free(&s);
    return failed;
}
