/* QEM for the count mixtures (mix_model.h; the driver infer/svir_qem.c;
 * dev/MIXTURE.md, "QEM"). The approximation is the SVI guide's family: a
 * normal per unconstrained global, with the labels' categorical
 * probabilities r_ik and a Dirichlet for pi. Each iteration:
 *
 * - E step, one pass over the rows. Draw S samples of one block of
 *   globals (in turn: the cluster log-means mu, the dispersions, each
 *   covariate's effects, the zero inflation, the background's three
 *   parts), the others held at their proposals' means. Per row, at the
 *   means: the labels' moments r_ik = softmax_k(E[log pi_k] + log p(y_i |
 *   k)) and log sum_k, the traced objective; at each sample s, each entry's
 *   log density given k, weighed by r_ik and summed over the rows into
 *   W_s(k, j) (mu) or summed over k too into W_s(j) (the columns' blocks).
 * - M step, per coordinate: the importance weights of its S samples,
 *   w_s ~ exp(W_s + log prior(x_s) - log q(x_s)), give its first and second
 *   moments, which the proposal takes by the moving average M <- (1 -
 *   eta) M + eta E with the block's own step eta = min(1, eta0 (u + 1)^-kappa)
 *   at its u-th update. The labels take their moments exactly; pi its
 *   Dirichlet, alpha + sum_i r_ik; m_j the normal that is its exact
 *   coordinate update given q(mu) and q(tau); log tau_j importance weights
 *   on its expected log density (no pass over the data).
 *
 * The prior of mu_kj in its weights is E_q[log N(mu; m_j, tau_j^2)]; the
 * other blocks are held at their means, not averaged over (the difference
 * is of the order of their posterior variances). One iteration costs (S +
 * 1) evaluations of each entry's density per cluster. The trace is the log
 * joint at the proposals' means (E[log pi] for log pi); the fit's ELBO is
 * estimated at the end from the final proposal with SVI's estimator
 * (mix_model.c, "elbo_full"; eta's normal matched to the Dirichlet's
 * log-ratio moments), as for SVI's fits, so that criteria over K compare. Posterior draws of pi are the
 * logistic normal with those moments. Not for "dirmult" (its rows do not
 * split into entries). */
#include "models/mixture/mix_model.h"
#include "core/svir_math.h"
#include "core/svir_philox.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#define SVIR_STREAM_MIX_QEM 15   /* the blocks' samples: step = iteration */
#define SVIR_STREAM_MIX_QEM_TAU 16 /* log tau's samples */
#define MIX_QEM_TAU_S 32

enum { BK_MU, BK_PHI, BK_GAMMA, BK_ZI, BK_BGB, BK_BGP, BK_BGW };

typedef struct {
    int kind;
    ptrdiff_t off, len;       /* its coordinates in the layout */
    int percl;                /* weighed per cluster (mu) or per column */
    long nupd;                /* updates so far */
} mix_block;

typedef struct {
    const svir_mix_model *m;
    svir_control c;
    int S, T, nb;
    mix_block blk[8];
    uint32_t key[2];
    double *a, *sd;           /* [D] the proposals' means and sds */
    double *M1, *M2;          /* [D] their smoothed raw moments */
    double *Nk, *elp;         /* [K] the Dirichlet's parameters, E[log pi] */
    double *resp;             /* [n x K] the labels' moments */
    double *th;               /* [(S + 1) x D] the means, then the samples */
    double *acc;              /* [T x S x K x p] the threads' weighed sums */
    double *W;                /* [S x K x p] their total */
    double *wrow;             /* [T x row work] */
    double *nkt, *llt;        /* [T x K], [T] */
    long cur;                 /* the block of this iteration */
} mix_qem_work;

static double trigamma(double x)
{
    double s = 0.0;
    while (x < 6.0) {
        s += 1.0 / (x * x);
        x += 1.0;
    }
    const double x2 = 1.0 / (x * x);
    return s + 1.0 / x + x2 / 2.0 +
           x2 / x * (1.0 / 6.0 - x2 * (1.0 / 30.0 - x2 * (1.0 / 42.0 - x2 / 30.0)));
}

static size_t qrow_len(const svir_mix_model *m)
{
    return (size_t)((2 + SVIR_MIX_CJ) * m->p + 2 * (ptrdiff_t)m->K * m->p + 2 * m->K);
}

static void qem_free(void *work)
{
    mix_qem_work *x = work;
    if (!x) return;
    free(x->a); free(x->sd); free(x->M1); free(x->M2); free(x->Nk); free(x->elp);
    free(x->resp); free(x->th); free(x->acc); free(x->W); free(x->wrow); free(x->nkt);
    free(x->llt);
    free(x);
}

/* E[log pi] and eta's normal from the Dirichlet */
static void qem_pi(mix_qem_work *x)
{
    const svir_mix_model *m = x->m;
    const int K = m->K;
    double tot = 0.0;
    for (int k = 0; k < K; k++) tot += x->Nk[k];
    const double pt = svir_digamma(tot);
    for (int k = 0; k < K; k++) x->elp[k] = svir_digamma(x->Nk[k]) - pt;
    for (int k = 0; k < K - 1; k++) {
        const ptrdiff_t d = m->off_eta + k;
        x->a[d] = x->elp[k] - x->elp[K - 1];
        x->sd[d] = sqrt(trigamma(x->Nk[k]) + trigamma(x->Nk[K - 1]));
    }
}

static int qem_new(const void *model, const svir_control *c, void **work, svir_err *e)
{
    const svir_mix_model *m = model;
    if (m->dist == SVIR_MIX_DIRMULT)
        return svir_err_set(e, 1, "svir internal error: no QEM for dirmult");
    mix_qem_work *x = calloc(1, sizeof *x);
    if (!x) return svir_err_set(e, 2, "out of memory for QEM");
    *work = x;
    x->m = m;
    x->c = *c;
    x->S = c->qem_K > 1 ? c->qem_K : 2;
    x->T = c->threads > 0 ? c->threads : 1;
    x->nb = m->dist == SVIR_MIX_NB || m->dist == SVIR_MIX_ZINB;
    x->key[0] = (uint32_t)(c->seed & 0xffffffffu);
    x->key[1] = (uint32_t)(c->seed >> 32);
    const int n = m->n, p = m->p, K = m->K, S = x->S, T = x->T;
    const ptrdiff_t D = m->D, Kp = (ptrdiff_t)K * p;
    /* the blocks, in turn */
    int nb = 0;
    x->blk[nb++] = (mix_block){BK_MU, m->off_mu, Kp, 1, 0};
    if (x->nb) x->blk[nb++] = (mix_block){BK_PHI, m->off_phi, p, 0, 0};
    if (m->dx > 0) x->blk[nb++] = (mix_block){BK_GAMMA, m->off_g, (ptrdiff_t)m->dx * p, 0, 0};
    if (m->dist == SVIR_MIX_ZINB) x->blk[nb++] = (mix_block){BK_ZI, m->off_zi, p, 0, 0};
    if (m->bg) {
        x->blk[nb++] = (mix_block){BK_BGB, m->off_bg, p, 0, 0};
        x->blk[nb++] = (mix_block){BK_BGP, m->off_bg + p, p, 0, 0};
        x->blk[nb++] = (mix_block){BK_BGW, m->off_bg + 2 * p, p, 0, 0};
    }
    x->blk[nb].kind = -1;
    x->a = malloc(sizeof(double) * (size_t)D);
    x->sd = malloc(sizeof(double) * (size_t)D);
    x->M1 = malloc(sizeof(double) * (size_t)D);
    x->M2 = malloc(sizeof(double) * (size_t)D);
    x->Nk = malloc(sizeof(double) * (size_t)K);
    x->elp = malloc(sizeof(double) * (size_t)K);
    x->resp = calloc((size_t)n * K, sizeof(double));
    x->th = malloc(sizeof(double) * (size_t)(S + 1) * (size_t)D);
    x->acc = malloc(sizeof(double) * (size_t)T * (size_t)S * (size_t)Kp);
    x->W = malloc(sizeof(double) * (size_t)S * (size_t)Kp);
    x->wrow = malloc(sizeof(double) * (size_t)T * qrow_len(m));
    x->nkt = malloc(sizeof(double) * (size_t)T * (size_t)K);
    x->llt = malloc(sizeof(double) * (size_t)T);
    if (!x->a || !x->sd || !x->M1 || !x->M2 || !x->Nk || !x->elp || !x->resp || !x->th ||
        !x->acc || !x->W || !x->wrow || !x->nkt || !x->llt)
        return svir_err_set(e, 2, "out of memory for QEM");
    const double s0 = c->init_scale > 0 ? c->init_scale : 0.1;
    for (ptrdiff_t d = 0; d < D; d++) {
        x->a[d] = m->init_mu ? m->init_mu[d] : 0.0;
        x->sd[d] = s0;
        x->M1[d] = x->a[d];
        x->M2[d] = x->a[d] * x->a[d] + s0 * s0;
    }
    /* pi: the start's weights as alpha plus n of them */
    double se = 1.0;
    for (int k = 0; k < K - 1; k++) se += exp(x->a[m->off_eta + k]);
    for (int k = 0; k < K; k++)
        x->Nk[k] = m->alpha + n * (k < K - 1 ? exp(x->a[m->off_eta + k]) : 1.0) / se;
    qem_pi(x);
    return 0;
}

static void qem_sizes(const void *work, ptrdiff_t *ngp, ptrdiff_t *nloc)
{
    *ngp = 2 * ((const mix_qem_work *)work)->m->D;
    *nloc = 0;
}

static int nblocks(const mix_qem_work *x)
{
    int b = 0;
    while (x->blk[b].kind >= 0) b++;
    return b;
}

/* the E step: the block's samples, the labels' moments, the weighed sums */
static int qem_estep(void *work, long t, double *logp, svir_err *e)
{
    mix_qem_work *x = work;
    const svir_mix_model *m = x->m;
    const int n = m->n, p = m->p, K = m->K, S = x->S, T = x->T;
    const ptrdiff_t D = m->D, Kp = (ptrdiff_t)K * p;
    (void)e;
    x->cur = t % nblocks(x);
    const mix_block *b = &x->blk[x->cur];
    const int gam = b->kind == BK_GAMMA;
    for (int s = 0; s <= S; s++) {
        double *th = x->th + (ptrdiff_t)s * D;
        memcpy(th, x->a, sizeof(double) * (size_t)D);
        if (s == 0) continue;
        for (ptrdiff_t c = 0; c < b->len; c++) {
            const double xi = svir_normal(x->key, SVIR_STREAM_MIX_QEM, (uint64_t)t,
                                          (uint64_t)(s - 1) * (uint64_t)b->len + (uint64_t)c);
            th[b->off + c] = x->a[b->off + c] + x->sd[b->off + c] * xi;
        }
    }
    const size_t rl = qrow_len(m);
#ifdef _OPENMP
#pragma omp parallel num_threads(T)
#endif
    {
        const int tt = svir_thread_num();
        double *acc = x->acc + (ptrdiff_t)tt * S * Kp, *nk = x->nkt + (ptrdiff_t)tt * K;
        double *y = x->wrow + (ptrdiff_t)tt * (ptrdiff_t)rl, *lin = y + p, *lkj = lin + p;
        double *dz = lkj + Kp, *av = dz + Kp, *r = av + K, *cj = r + K;
        memset(acc, 0, sizeof(double) * (size_t)S * (size_t)Kp);
        memset(nk, 0, sizeof(double) * (size_t)K);
        double ll = 0.0;
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
        for (int i = 0; i < n; i++) {
            if (svir_poll()) continue; /* the host asked to stop */
            svir_mix_row(m, i, y);
            svir_mix_row_lin(m, x->th, i, lin);
            svir_mix_row_ll(m, x->th, y, lin, x->elp, m->lgy[i], av, NULL, NULL, NULL, cj, NULL);
            double mx = av[0], se = 0.0;
            for (int k = 1; k < K; k++) mx = av[k] > mx ? av[k] : mx;
            for (int k = 0; k < K; k++) se += (r[k] = exp(av[k] - mx));
            ll += mx + log(se);
            for (int k = 0; k < K; k++) {
                r[k] /= se;
                x->resp[i + (ptrdiff_t)k * n] = r[k];
                nk[k] += r[k];
            }
            for (int s = 1; s <= S; s++) {
                const double *th = x->th + (ptrdiff_t)s * D;
                if (gam) svir_mix_row_lin(m, th, i, lin);
                svir_mix_row_ll(m, th, y, lin, x->elp, m->lgy[i], av, NULL, NULL, NULL, cj, lkj);
                double *as = acc + (ptrdiff_t)(s - 1) * Kp;
                if (b->percl) {
                    for (int k = 0; k < K; k++) {
                        const double rk = r[k], *lk = lkj + (ptrdiff_t)k * p;
                        double *ak = as + (ptrdiff_t)k * p;
                        for (int j = 0; j < p; j++) ak[j] += rk * lk[j];
                    }
                } else {
                    for (int k = 0; k < K; k++) {
                        const double rk = r[k], *lk = lkj + (ptrdiff_t)k * p;
                        for (int j = 0; j < p; j++) as[j] += rk * lk[j];
                    }
                }
            }
        }
        x->llt[tt] = ll;
    }
    /* the threads' sums in a fixed order */
    double ll = 0.0;
    memset(x->W, 0, sizeof(double) * (size_t)S * (size_t)Kp);
    for (int k = 0; k < K; k++) x->Nk[k] = m->alpha;
    for (int tt = 0; tt < T; tt++) {
        ll += x->llt[tt];
        const double *acc = x->acc + (ptrdiff_t)tt * S * Kp;
        for (ptrdiff_t q = 0; q < (ptrdiff_t)S * Kp; q++) x->W[q] += acc[q];
        for (int k = 0; k < K; k++) x->Nk[k] += x->nkt[(ptrdiff_t)tt * K + k];
    }
    /* the trace: the log joint at the means, with E[log pi] as log pi */
    double *th = x->th;
    *logp = ll + svir_mix_log_prior(m, th, NULL);
    return 0;
}

/* log prior of coordinate d (block kind) at v, up to a constant; for mu,
 * E_q over m_j and tau_j */
static double coord_prior(const mix_qem_work *x, int kind, ptrdiff_t c, double v)
{
    const svir_mix_model *m = x->m;
    const int p = m->p;
    switch (kind) {
    case BK_MU: {
        const int j = (int)(c % p);
        const double am = x->a[m->off_m + j], sm = x->sd[m->off_m + j];
        const double alt = x->a[m->off_lt + j], slt = x->sd[m->off_lt + j];
        const double r2 = (v - am) * (v - am) + sm * sm;
        return -0.5 * r2 * exp(-2.0 * alt + 2.0 * slt * slt);
    }
    case BK_PHI:
        return -0.5 * exp(-v) - 0.5 * v;
    case BK_GAMMA:
        return -0.5 * (v / m->gamma_scale) * (v / m->gamma_scale);
    case BK_ZI:
        return -0.5 * ((v + 2.0) / 2.0) * ((v + 2.0) / 2.0);
    case BK_BGB: {
        const double r = (v - m->bg_loc[c]) / m->bg_scale[c];
        return -0.5 * r * r;
    }
    case BK_BGP:
        if (m->bgp_loc) {
            const double r = (v - m->bgp_loc[c]) / m->bgp_scale[c];
            return -0.5 * r * r;
        }
        return -0.5 * exp(-v) - 0.5 * v;
    default:
        return -0.5 * (v / 1.5) * (v / 1.5);
    }
}

/* the moving average of coordinate d towards the weighted moments of its
 * S samples v with log weights lw (largest mx) */
static void qem_match(mix_qem_work *x, ptrdiff_t d, const double *v, const double *lw, double mx,
                      int S, double et)
{
    double sw = 0.0, E1 = 0.0, E2 = 0.0;
    for (int s = 0; s < S; s++) {
        const double w = exp(lw[s] - mx);
        sw += w;
        E1 += w * v[s];
        E2 += w * v[s] * v[s];
    }
    E1 /= sw;
    E2 /= sw;
    x->M1[d] = (1.0 - et) * x->M1[d] + et * E1;
    x->M2[d] = (1.0 - et) * x->M2[d] + et * E2;
    x->a[d] = x->M1[d];
    const double var = x->M2[d] - x->M1[d] * x->M1[d];
    x->sd[d] = sqrt(var > 1e-12 ? var : 1e-12);
}

static int qem_mstep(void *work, long t, double et_driver, svir_err *e)
{
    mix_qem_work *x = work;
    const svir_mix_model *m = x->m;
    const int p = m->p, K = m->K, S = x->S;
    const ptrdiff_t D = m->D, Kp = (ptrdiff_t)K * p;
    (void)et_driver;
    (void)e;
    mix_block *b = &x->blk[x->cur];
    const double et = svir_qem_step(&x->c, b->nupd++);
    double lw[256], xs[256];
    for (ptrdiff_t c = 0; c < b->len; c++) {
        const ptrdiff_t d = b->off + c;
        /* the sum of weighed densities of this coordinate's entries */
        const ptrdiff_t wi = b->percl ? c : (b->kind == BK_GAMMA ? c % p : c);
        double mx = -INFINITY;
        for (int s = 0; s < S; s++) {
            const double v = x->th[(ptrdiff_t)(s + 1) * D + d], xi = (v - x->a[d]) / x->sd[d];
            xs[s] = v;
            lw[s] = x->W[(ptrdiff_t)s * Kp + wi] + coord_prior(x, b->kind, b->kind == BK_GAMMA ? c % p : c, v) +
                    0.5 * xi * xi;
            mx = lw[s] > mx ? lw[s] : mx;
        }
        qem_match(x, d, xs, lw, mx, S, et);
    }
    /* pi: its Dirichlet (Nk from the E step) */
    qem_pi(x);
    /* m_j: the normal update given q(mu), q(tau) */
    const double *mu_a = x->a + m->off_mu, *mu_s = x->sd + m->off_mu;
    for (int j = 0; j < p; j++) {
        const double alt = x->a[m->off_lt + j], slt = x->sd[m->off_lt + j];
        const double itau2 = exp(-2.0 * alt + 2.0 * slt * slt);
        double sm = 0.0;
        for (int k = 0; k < K; k++) sm += mu_a[(ptrdiff_t)k * p + j];
        const double prec = 1.0 / (m->m_scale * m->m_scale) + K * itau2;
        const double mean = (m->m_loc[j] / (m->m_scale * m->m_scale) + itau2 * sm) / prec;
        const ptrdiff_t d = m->off_m + j;
        x->a[d] = x->M1[d] = mean;
        x->sd[d] = sqrt(1.0 / prec);
        x->M2[d] = mean * mean + 1.0 / prec;
    }
    /* log tau_j: importance weights on sum_k E[log N(mu_kj; m_j, tau^2)]
     * + log p(log tau), MIX_QEM_TAU_S samples from its proposal */
    const double et_tau = svir_qem_step(&x->c, t);
    for (int j = 0; j < p; j++) {
        const ptrdiff_t d = m->off_lt + j;
        double q2 = 0.0;
        const double am = x->a[m->off_m + j], sm = x->sd[m->off_m + j];
        for (int k = 0; k < K; k++) {
            const double dd = mu_a[(ptrdiff_t)k * p + j] - am, s2 = mu_s[(ptrdiff_t)k * p + j];
            q2 += dd * dd + s2 * s2 + sm * sm;
        }
        double tl[MIX_QEM_TAU_S], tx[MIX_QEM_TAU_S], mx = -INFINITY;
        for (int s = 0; s < MIX_QEM_TAU_S; s++) {
            const double xi = svir_normal(x->key, SVIR_STREAM_MIX_QEM_TAU, (uint64_t)t,
                                          (uint64_t)j * MIX_QEM_TAU_S + (uint64_t)s);
            const double v = x->a[d] + x->sd[d] * xi, tau = exp(v) / m->tau_scale;
            tx[s] = v;
            tl[s] = -K * v - 0.5 * q2 * exp(-2.0 * v) - 0.5 * tau * tau + v + 0.5 * xi * xi;
            mx = tl[s] > mx ? tl[s] : mx;
        }
        qem_match(x, d, tx, tl, mx, MIX_QEM_TAU_S, et_tau);
    }
    return 0;
}

/* the final proposal as [means | log sds] and its draws (its ELBO over all
 * rows: the model's outputs, "elbo_full") */
static int qem_finish(void *work, svir_result *res, svir_err *e)
{
    mix_qem_work *x = work;
    const svir_mix_model *m = x->m;
    const ptrdiff_t D = m->D;
    double *gpar = malloc(sizeof(double) * 2 * (size_t)D);
    if (!gpar) return svir_err_set(e, 2, "out of memory for QEM's result");
    for (ptrdiff_t d = 0; d < D; d++) {
        gpar[d] = x->a[d];
        gpar[D + d] = log(x->sd[d]);
    }
    const int nd = x->c.ndraws;
    res->ndraws = nd;
    res->D = D;
    res->naux = 0;
    res->gpar = gpar;
    res->ngpar = 2 * D;
    res->lpar = calloc(1, sizeof(double)); /* no locals (the host's vpar wants both) */
    res->nlpar = 0;
    if (!res->lpar) return svir_err_set(e, 2, "out of memory for QEM's result");
    if (nd > 0) {
        res->draws = malloc(sizeof(double) * (size_t)nd * (size_t)D);
        res->log_ratio = malloc(sizeof(double) * (size_t)nd);
        if (!res->draws || !res->log_ratio) return svir_err_set(e, 2, "out of memory for the draws");
        for (int s = 0; s < nd; s++) {
            for (ptrdiff_t d = 0; d < D; d++)
                res->draws[(size_t)s + (size_t)d * nd] =
                    x->a[d] + x->sd[d] * svir_normal(x->key, SVIR_STREAM_DRAWS, (uint64_t)s, (uint64_t)d);
            res->log_ratio[s] = NAN;
        }
    }
    return 0;
}

static const svir_qem_ops mix_qem_ops = {
    qem_new, qem_free, qem_sizes, qem_estep, qem_mstep, NULL, qem_finish, /* no path */
};

int svir_mix_run_qem(void *model, const svir_control *c, const svir_callbacks *cb, svir_result *res)
{
    return svir_qem_run(&mix_qem_ops, model, c, cb, res);
}
