/* gpucheck's count-mixture checks and GPU target (mix_check.h): the
 * device's batch log-likelihood and gradient (src/cuda/mix_dev.cu) against
 * the CPU's (svir_mix_elbo_grad with and without the device), whole SVI
 * fits on both, and issue 17's target, one epoch at 10^6 cells x 2000
 * genes, K = 20. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/svir_philox.h"
#include "core/svir_result.h"
#include "models/mixture/mix_cuda.h"
#include "models/mixture/mix_model.h"

#include "check_util.h"
#include "mix_check.h"

/* a uniform and a Poisson count from counter-based streams */
static double unif(const uint32_t key[2], uint64_t ctr)
{
    return svir_uniform(key, 7, 0, ctr);
}

static double rpois(double lam, const uint32_t key[2], uint64_t ctr)
{
    if (lam > 30.0) {
        const double x = floor(lam + sqrt(lam) * svir_normal(key, 9, 0, ctr) + 0.5);
        return x < 0.0 ? 0.0 : x;
    }
    const double L = exp(-lam);
    double p = 1.0, k = 0.0;
    for (uint64_t s = 0;; s++) {
        p *= unif(key, ctr * 64 + s);
        if (p <= L || s >= 63) break;
        k += 1.0;
    }
    return k;
}

typedef struct {
    svir_mix_model m;
    double *Y, *Rx, *O, *X, *mloc, *bgl, *bgs, *gpar, *truth;
    int *Rp, *Rj, *z;
} msim;

static void msim_free(msim *s)
{
    free(s->Y); free(s->Rx); free(s->O); free(s->X); free(s->mloc); free(s->bgl); free(s->bgs);
    free(s->gpar); free(s->truth); free(s->Rp); free(s->Rj); free(s->z);
    free(s->m.lgy); free(s->m.tot);
    memset(s, 0, sizeof *s);
}

/* n x p counts (sparse: 0 dense, 1 by rows, 2 the benchmark's pattern) in K clusters (cluster log-means around a per-gene level,
 * a 0/1 batch covariate when dx = 1, library sizes over a tenfold range,
 * gamma-ish extra variation through a lognormal rate), dense or by rows;
 * the guide's parameters gpar [2 D] near the truth, log sd log 0.1 */
static int msim_make(msim *s, int dist, int bg, int sparse, int n, int p, int K, int dx)
{
    memset(s, 0, sizeof *s);
    svir_mix_model *m = &s->m;
    m->n = n; m->p = p; m->K = K; m->dx = dx; m->dist = dist; m->bg = bg;
    m->m_scale = 3.0; m->tau_scale = 1.0; m->gamma_scale = 1.0; m->alpha = 1.0;
    svir_mix_layout(m);
    uint32_t key[2];
    svir_philox_key(1234 + dist + 10 * bg + 100 * K, key);
    const ptrdiff_t D = m->D;
    s->O = malloc(sizeof(double) * (size_t)n);
    s->X = dx ? malloc(sizeof(double) * (size_t)n * dx) : NULL;
    s->mloc = calloc((size_t)p, sizeof(double));
    s->bgl = malloc(sizeof(double) * (size_t)p);
    s->bgs = malloc(sizeof(double) * (size_t)p);
    s->gpar = malloc(sizeof(double) * 2 * (size_t)D);
    s->truth = malloc(sizeof(double) * (size_t)D);
    s->z = malloc(sizeof(int) * (size_t)n);
    s->Rp = malloc(sizeof(int) * ((size_t)n + 1));
    double *row = malloc(sizeof(double) * (size_t)p);
    if (!s->O || (dx && !s->X) || !s->mloc || !s->bgl || !s->bgs || !s->gpar || !s->truth || !s->z ||
        !s->Rp || !row) {
        free(row);
        return 2;
    }
    double *th = s->truth;
    for (ptrdiff_t d = 0; d < D; d++) th[d] = 0.0;
    for (int j = 0; j < p; j++) {
        const double level = -1.5 + 0.8 * svir_normal(key, 1, 0, (uint64_t)j);
        for (int k = 0; k < K; k++)
            th[m->off_mu + (ptrdiff_t)k * p + j] =
                level + 0.7 * svir_normal(key, 1, 1, (uint64_t)k * p + j);
        th[m->off_m + j] = level;
        th[m->off_lt + j] = log(0.7);
        for (int c = 0; c < dx; c++) th[m->off_g + (ptrdiff_t)c * p + j] = 0.3 * svir_normal(key, 1, 2, (uint64_t)j);
        if (m->dist == SVIR_MIX_NB || m->dist == SVIR_MIX_ZINB) th[m->off_phi + j] = log(2.0);
        if (m->dist == SVIR_MIX_ZINB) th[m->off_zi + j] = -1.5;
        if (bg) {
            th[m->off_bg + j] = -0.5;
            th[m->off_bg + p + j] = log(3.0);
            th[m->off_bg + 2 * p + j] = -1.0;
            s->bgl[j] = -0.5;
            s->bgs[j] = 0.5;
        }
    }
    for (int k = 0; k < K - 1; k++) th[m->off_eta + k] = 0.1 * k;
    /* counts */
    if (sparse == 2) {
        /* the benchmark's (10^9 entries and more): p / 10 nonzeros per row,
         * one in each run of 10 columns, counts 1 to 5, by a hash (fast,
         * and the same for any number of threads); a step's work depends on
         * n, p, K and the nonzeros only */
        const int per = p / 10 > 0 ? p / 10 : 1;
        const size_t nzt = (size_t)n * (size_t)per;
        s->Rj = malloc(sizeof(int) * nzt);
        s->Rx = malloc(sizeof(double) * nzt);
        if (!s->Rj || !s->Rx) {
            free(row);
            return 2;
        }
#pragma omp parallel for schedule(static)
        for (int i = 0; i < n; i++) {
            s->z[i] = (int)(svir_mix64((uint64_t)i * 2 + 1) % (uint64_t)K);
            s->O[i] = log(0.5 + 4.5 * (double)(svir_mix64((uint64_t)i * 2 + 2) % 1000) / 1000.0);
            for (int c = 0; c < dx; c++) s->X[i + (ptrdiff_t)c * n] = (i % 3 == 0) ? 1.0 : 0.0;
            s->Rp[i + 1] = (int)((size_t)(i + 1) * per);
            for (int t = 0; t < per; t++) {
                const uint64_t h = svir_mix64(((uint64_t)i << 20) ^ (uint64_t)t ^ 0x9e3779b97f4a7c15ull);
                const size_t z = (size_t)i * per + t;
                s->Rj[z] = t * (p / per) + (int)(h % (uint64_t)(p / per));
                s->Rx[z] = 1.0 + (double)((h >> 32) % 5);
            }
        }
        s->Rp[0] = 0;
        free(row);
        goto counts_done;
    }
    size_t cap = (size_t)n * (size_t)p / 4 + 16, nz = 0;
    if (sparse) {
        s->Rj = malloc(sizeof(int) * cap);
        s->Rx = malloc(sizeof(double) * cap);
        if (!s->Rj || !s->Rx) {
            free(row);
            return 2;
        }
    } else {
        s->Y = malloc(sizeof(double) * (size_t)n * (size_t)p);
        if (!s->Y) {
            free(row);
            return 2;
        }
    }
    s->Rp[0] = 0;
    for (int i = 0; i < n; i++) {
        const int k = (int)(unif(key, 3 * (uint64_t)i) * K) % K;
        s->z[i] = k;
        s->O[i] = log(0.5 + 4.5 * unif(key, 3 * (uint64_t)i + 1));
        for (int c = 0; c < dx; c++) s->X[i + (ptrdiff_t)c * n] = (i % 3 == 0) ? 1.0 : 0.0;
        for (int j = 0; j < p; j++) {
            const uint64_t e = (uint64_t)i * p + j;
            double eta = s->O[i] + th[m->off_mu + (ptrdiff_t)k * p + j] + 0.5 * svir_normal(key, 4, 0, e);
            for (int c = 0; c < dx; c++) eta += s->X[i + (ptrdiff_t)c * n] * th[m->off_g + (ptrdiff_t)c * p + j];
            double y = rpois(exp(eta), key, e);
            if (m->dist == SVIR_MIX_ZINB && unif(key, e + 7919) < 0.15) y = 0.0;
            if (bg && unif(key, e + 104729) < 0.25) y = rpois(0.6, key, e + 1299709);
            row[j] = y;
        }
        if (i == 0) row[0] += 1.0; /* no empty first row */
        for (int j = 0; j < p; j++) {
            if (!sparse) {
                s->Y[i + (ptrdiff_t)j * n] = row[j];
            } else if (row[j] > 0.0) {
                if (nz == cap) {
                    cap *= 2;
                    int *rj = realloc(s->Rj, sizeof(int) * cap);
                    double *rx = realloc(s->Rx, sizeof(double) * cap);
                    if (rj) s->Rj = rj;
                    if (rx) s->Rx = rx;
                    if (!rj || !rx) {
                        free(row);
                        return 2;
                    }
                }
                s->Rj[nz] = j;
                s->Rx[nz] = row[j];
                nz++;
            }
        }
        s->Rp[i + 1] = (int)nz;
    }
    free(row);
counts_done:
    m->Y = s->Y;
    m->Rp = sparse ? s->Rp : NULL;
    m->Rj = s->Rj;
    m->Rx = s->Rx;
    m->O = dist == SVIR_MIX_NB && bg ? NULL : s->O;
    m->X = s->X;
    m->m_loc = s->mloc;
    if (bg) {
        m->bg_loc = s->bgl;
        m->bg_scale = s->bgs;
    }
    char msg[200];
    if (svir_mix_prepare(m, msg, sizeof msg)) return 2;
    for (ptrdiff_t d = 0; d < D; d++) {
        s->gpar[d] = th[d] + 0.05 * svir_normal(key, 5, 0, (uint64_t)d);
        s->gpar[D + d] = log(0.1);
    }
    return 0;
}

static void mix_control(svir_control *c, ptrdiff_t batch, long steps, uint64_t seed)
{
    gck_fit_control(c, 0, steps, 0.05, SVIR_LR_PLATEAU, 50, batch, seed);
    c->method = SVIR_METHOD_SVI;
    c->num_particles = 2;
}

static const svir_impl *impl_of(int backend)
{
    return gck_impl_of(&svir_mix_def, SVIR_METHOD_SVI, backend);
}

static const char *dist_name(int dist, int bg)
{
    return bg ? "nb + background" : dist == SVIR_MIX_POISSON ? "poisson" : dist == SVIR_MIX_NB ? "nb" : "zinb";
}

int gpucheck_mix(void)
{
    int failed = 0;
    char err[512];
    static const int cases[4][2] = {{SVIR_MIX_POISSON, 0}, {SVIR_MIX_NB, 0}, {SVIR_MIX_ZINB, 0},
                                    {SVIR_MIX_NB, 1}};
    /* one ELBO estimate and its gradient: dense and sparse, full batch and
     * a minibatch of 256 rows, against the CPU's */
    for (int cs = 0; cs < 4; cs++)
        for (int sp = 0; sp < 2; sp++) {
            msim s;
            const int dist = cases[cs][0], bg = cases[cs][1];
            if (msim_make(&s, dist, bg, sp, (int)gck_size(3000, 5, 600), (int)gck_size(300, 3, 100), 6, bg ? 0 : 1)) {
                printf("out of host memory\n");
                return 1;
            }
            svir_mix_model *m = &s.m;
            const ptrdiff_t D = m->D;
            for (int mb = 0; mb < 2; mb++) {
                svir_control c;
                mix_control(&c, mb ? 256 : 0, 1, 42);
                double e0 = 0.0, e1 = 0.0;
                double *g0 = malloc(sizeof(double) * 2 * (size_t)D), *g1 = malloc(sizeof(double) * 2 * (size_t)D);
                svir_cuda_mix *dev = NULL;
                m->dev = NULL;
                int st = !g0 || !g1 ? 2 : svir_mix_elbo_grad(m, &c, s.gpar, 5, &e0, g0);
                if (!st) st = svir_cuda_mix_new(m, mb ? 256 : m->n, &dev, err, sizeof err);
                if (!st) {
                    m->dev = dev;
                    st = svir_mix_elbo_grad(m, &c, s.gpar, 5, &e1, g1);
                    m->dev = NULL;
                    if (!st && svir_cuda_mix_error(dev)[0]) {
                        snprintf(err, sizeof err, "%s", svir_cuda_mix_error(dev));
                        st = 3;
                    }
                }
                svir_cuda_mix_free(dev);
                if (st) {
                    gck_failed++;
                    printf("mixture ELBO %-15s %s, %s: FAILED to run: %s\n", dist_name(dist, bg),
                           sp ? "sparse" : "dense", mb ? "minibatch" : "full batch",
                           st == 2 ? "out of memory" : err);
                    failed = 1;
                } else {
                    const double ee = fabs(e1 - e0) / fmax(1.0, fabs(e0)), eg = gck_rel_diff(g0, g1, 2 * D);
                    const int ok = ee < 1e-11 && eg < 1e-10;
                    printf("mixture ELBO %-15s %s, %s: rel. diff ELBO %.1e, gradient %.1e: %s\n",
                           dist_name(dist, bg), sp ? "sparse" : "dense ", mb ? "minibatch " : "full batch",
                           ee, eg, gck_result(ok));
                    failed |= !ok;
                }
                free(g0);
                free(g1);
            }
            msim_free(&s);
        }
    /* whole fits of 200 steps (2 particles), CPU against device: the same
     * draws and loop, so the same steps and parameters up to the sums' order */
    for (int cs = 1; cs < 4; cs += 2)
        for (int mb = 0; mb < 2; mb++) {
            msim s;
            const int dist = cases[cs][0], bg = cases[cs][1];
            if (msim_make(&s, dist, bg, 1, (int)gck_size(1500, 5, 300), (int)gck_size(120, 2, 60), 4, bg ? 0 : 1)) {
                printf("out of host memory\n");
                return 1;
            }
            svir_mix_model *m = &s.m;
            m->init_mu = s.gpar;
            svir_control c;
            mix_control(&c, mb ? 256 : 0, 200, 7);
            c.threads = 8;
            char label[64];
            snprintf(label, sizeof label, "mixture fit %-15s", dist_name(dist, bg));
            failed |= gck_fit_pair(label, mb, impl_of(SVIR_BACKEND_CPU), impl_of(SVIR_BACKEND_CUDA), m,
                                   &c, 2 * m->D, 1e-6);
            msim_free(&s);
        }
    return failed;
}

/* issue 17's GPU target: one epoch of NB SVI at n cells x p genes, K
 * clusters, sparse counts, 1 particle, in minibatches of 64 rows (R's rule
 * at this size, min(256, max(64, ceil(2e5 / (p K)))), made for the CPU),
 * 256 and 1024: each a fit of one epoch's steps, set-up and upload
 * included */
int gpucheck_mix_bench(int n, int p, int K)
{
    printf("building the count-mixture benchmark data (n = %d, p = %d, K = %d, sparse)\n", n, p, K);
    const double t0 = gck_now();
    msim s;
    if (msim_make(&s, SVIR_MIX_NB, 0, 2, n, p, K, 1)) {
        printf("out of host memory\n");
        return 1;
    }
    svir_mix_model *m = &s.m;
    printf("  built in %.1f s: %d nonzeros (%.1f%% zeros)\n", gck_now() - t0, m->Rp[n],
           100.0 * (1.0 - (double)m->Rp[n] / ((double)n * p)));
    int failed = 0;
    static const int Bs[3] = {64, 256, 1024};
    for (int b = 0; b < 3; b++) {
        const int B = Bs[b];
        const long steps = (n + B - 1) / B;
        svir_control c;
        mix_control(&c, B, steps, 3);
        c.num_particles = 1;
        c.eval_every = 100;
        c.threads = 16;
        svir_result r;
        memset(&r, 0, sizeof r);
        const double t1 = gck_now();
        const int st = impl_of(SVIR_BACKEND_CUDA)->run(m, &c, NULL, &r);
        const double t_fit = gck_now() - t1;
        if (st) {
            printf("count-mixture epoch, batches of %d: FAILED to run: %s\n", B, r.message);
            failed = 1;
        } else {
            printf("count-mixture epoch, n = %d, p = %d, K = %d, batches of %4d rows: %ld steps in "
                   "%.2f s (%.3f ms/step; batch on the device %.2f s, draws %.2f s, guide backward %.2f s, updates %.2f s); "
                   "last ELBO %.4g: target <= 10 s: %s\n",
                   n, p, K, B, r.steps, t_fit, 1e3 * t_fit / (double)r.steps,
                   r.time_split[SVIR_PHASE_OBS], r.time_split[SVIR_PHASE_DRAW],
                   r.time_split[SVIR_PHASE_BACKWARD], r.time_split[SVIR_PHASE_UPDATE],
                   r.trace[r.steps - 1],
                   t_fit <= 10.0 ? "met" : "NOT met");
        }
        svir_result_free(&r);
    }
    msim_free(&s);
    return failed;
}
