/* QEM for the rank-q Poisson-lognormal model (issue 5; dev/PLN.md):
 *   Z_ij = X_i B_j + W_j u_i + e_ij,  u_i ~ N(0, I_q),  e_ij ~ N(0, psi_j),
 *   Y_ij ~ Poisson(exp(O_ij + Z_ij)),
 * so that Sigma = W W' + diag(psi). The latents form a tree of plates:
 * each row's u_i, and under it the row's entries' e_ij. An iteration draws
 * K samples u_ik ~ q(u_i) = N(m_i, diag(s_i^2)) and K samples e_ijl ~
 * q(e_ij) = N(mu_ij, tau_ij^2) (Philox, keyed by row, entry and iteration,
 * so the draws do not depend on the threads), and sums the importance
 * weights over the tree:
 *   g_ijk = log mean_l p(Y_ij | u_ik, e_ijl) p(e_ijl) / q(e_ijl),
 *   G_ik = log p(u_ik) / q(u_ik) + sum_j g_ijk,
 *   log P-hat = sum_i log mean_k exp(G_ik),
 * a K-sample lower bound on log p(Y) in expectation. The weights
 * a_ik = softmax_k G_ik and b_ijkl = softmax_l (the summand of g_ijk) give
 * the posterior moments of u_i and e_ij, which the proposals take by a
 * moving average (the QEM driver's eta_t = min(1, eta0 (t + 1)^-kappa)),
 * and the M step for the globals: per column j, one Newton step of the
 * weighted Poisson regression of Y_j on (X_i, u_ik) with the weights
 * a_ik b_ijkl (B_j and W_j), and psi_j = mean_i E[e_ij^2]. Cost per
 * iteration: 2 n p K^2 exps (the entries' tables, in a pass by rows for
 * the a_ik and a pass by columns for the M step) and O(n p K (d + q)^2)
 * for the Newton systems. */
#include "core/svir_lapack.h"
#include "core/svir_result.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "core/svir_philox.h"
#include "models/pln/pln_model.h"


/* log mean_l exp(v[l]) */
static double logmeanexp(const double *v, int K)
{
    double mx = v[0];
    for (int l = 1; l < K; l++) mx = v[l] > mx ? v[l] : mx;
    double s = 0.0;
    for (int l = 0; l < K; l++) s += exp(v[l] - mx);
    return mx + log(s / K);
}

/* the entry (i, j)'s K x K table for sample k: its log mean over l (the
 * return value) and, when b is given, the weights b[l] = softmax_l */
static double entry_k(double y, double nu, const double *e, const double *F, const double *lwe,
                      int K, double *f, double *b)
{
    const double E = exp(nu);
    for (int l = 0; l < K; l++) f[l] = y * (nu + e[l]) - E * F[l] + lwe[l];
    const double r = logmeanexp(f, K);
    if (b) {
        double s = 0.0;
        for (int l = 0; l < K; l++) s += (b[l] = exp(f[l] - r));
        for (int l = 0; l < K; l++) b[l] /= s;
    }
    return r;
}

/* the entry's draws: e_l = mu + tau xi_l, F_l = exp(e_l) and the log
 * weights log N(e; 0, psi) - log N(e; mu, tau^2) */
static void entry_draws(const uint32_t key[2], uint64_t it, uint64_t idx, int K, double mu,
                        double tau, double psi, double *e, double *F, double *lwe)
{
    svir_normal_fill(key, SVIR_STREAM_PLN_ENTRIES, it, idx * (uint64_t)K, K, e);
    const double lp = -0.5 * log(psi), lt = log(tau);
    for (int l = 0; l < K; l++) {
        const double xi = e[l];
        e[l] = mu + tau * xi;
        F[l] = exp(e[l]);
        lwe[l] = -0.5 * e[l] * e[l] / psi + lp + 0.5 * xi * xi + lt;
    }
}

typedef struct {
    int n, p, d, q, threads;
    const double *Y;   /* [n x p] counts */
    const double *O;   /* [n x p] offsets or NULL */
    const double *X;   /* [n x d] */
    const double *lgy; /* [n x p] log Y! */
} svir_pln_qem_data;

/* the globals and the proposals, updated in place */
typedef struct {
    double *B;     /* [d x p] */
    double *W;     /* [p x q] */
    double *psi;   /* [p] */
    double *mu_u;  /* [n x q] q(u_i) means */
    double *su;    /* [n x q] and sds */
    double *mu_e;  /* [n x p] q(e_ij) means */
    double *tau;   /* [n x p] and sds */
} svir_pln_qem_state;

static const char *const state_names[7] = {"B", "W", "psi", "mu_u", "su", "mu_e", "tau"};

typedef struct {
    svir_pln_qem_data dat;
    svir_pln_qem_state s;
    double *state[7];          /* the owned arrays behind s */
    ptrdiff_t len[7];
    int K;
    uint32_t key[2];
    size_t tw;                 /* scratch per thread */
    double *U, *A, *base, *Eu, *lp, *tws, *ess;
} pln_qem_work;

/* the work's parts as the two passes name them */
#define QEM_LOCALS(work)                                                                       \
    pln_qem_work *x = (pln_qem_work *)(work);                                                  \
    const svir_pln_qem_data *dat = &x->dat;                                                    \
    svir_pln_qem_state *s = &x->s;                                                             \
    const int n = dat->n, p = dat->p, d = dat->d, q = dat->q, r = d + q, K = x->K;           \
    const int T = dat->threads > 0 ? dat->threads : 1;                                         \
    const uint32_t *key = x->key;                                                              \
    const size_t tw = x->tw;                                                                   \
    double *U = x->U, *A = x->A, *base = x->base, *Eu = x->Eu, *lp = x->lp, *tws = x->tws;     \
    double *ess = x->ess;                                                                      \
    (void)r;                                                                                   \
    (void)lp;                                                                                  \
    (void)ess

static void qem_free(void *work)
{
    pln_qem_work *x = work;
    if (!x) return;
    for (int k = 0; k < 7; k++) free(x->state[k]);
    free(x->U); free(x->A); free(x->base); free(x->Eu); free(x->lp); free(x->tws); free(x->ess);
    free(x);
}

static int qem_new(const void *model, const svir_control *c, void **work, svir_err *e)
{
    const svir_pln_model *m = model;
    const svir_pln_data *dd = &m->dat;
    pln_qem_work *x = calloc(1, sizeof *x);
    if (!x) return svir_err_set(e, 2, "out of memory in QEM for the Poisson-lognormal model");
    *work = x;
    const int n = dd->n, p = dd->p, d = dd->d, q = dd->q, K = c->qem_K;
    if (!dd->Y || dd->cov != SVIR_PLN_RANK || q < 1 || !m->lgy_entries)
        return svir_err_set(e, 1, "QEM takes a rank-q model with dense counts");
    if (K < 2) return svir_err_set(e, 1, "QEM takes K of at least 2 samples");
    x->dat.n = n; x->dat.p = p; x->dat.d = d; x->dat.q = q;
    x->dat.threads = c->threads > 0 ? c->threads : 1;
    x->dat.Y = dd->Y;
    x->dat.O = dd->O;
    x->dat.X = dd->X;
    x->dat.lgy = m->lgy_entries;
    x->K = K;
    svir_philox_key(c->seed, x->key);
    const ptrdiff_t np = (ptrdiff_t)n * p;
    const ptrdiff_t len[7] = {(ptrdiff_t)d * p, (ptrdiff_t)p * q, p, (ptrdiff_t)n * q,
                              (ptrdiff_t)n * q, np, np};
    for (int k = 0; k < 7; k++) {
        x->len[k] = len[k];
        x->state[k] = malloc(sizeof(double) * (size_t)(len[k] > 0 ? len[k] : 1));
        if (!x->state[k]) return svir_err_set(e, 2, "out of memory in QEM for the Poisson-lognormal model");
        if (len[k] > 0) memcpy(x->state[k], m->qstart[k], sizeof(double) * (size_t)len[k]);
    }
    svir_pln_qem_state s = {x->state[0], x->state[1], x->state[2], x->state[3], x->state[4],
                            x->state[5], x->state[6]};
    x->s = s;
    const int r = d + q, T = x->dat.threads;
    x->tw = (size_t)(4 * K + 2 * K + (size_t)p * K * 3 + (size_t)K * K + r + r * r + r);
    x->U = malloc(sizeof(double) * (size_t)n * K * q);   /* u_ik, [i][k][q] */
    x->A = malloc(sizeof(double) * (size_t)n * K);       /* a_ik */
    x->base = malloc(sizeof(double) * (size_t)n * p);    /* O + X B, [j][i] */
    x->Eu = malloc(sizeof(double) * (size_t)n * q * 2);  /* E u, E u^2 */
    x->lp = malloc(sizeof(double) * (size_t)n);
    x->tws = malloc(sizeof(double) * x->tw * (size_t)T);
    x->ess = malloc(sizeof(double) * (size_t)n);
    if (!x->U || !x->A || !x->base || !x->Eu || !x->lp || !x->tws || !x->ess)
        return svir_err_set(e, 2, "out of memory in QEM for the Poisson-lognormal model");
    return 0;
}

static void qem_sizes(const void *work, ptrdiff_t *ngp, ptrdiff_t *nloc)
{
    (void)work;
    *ngp = *nloc = 0;
}

/* iteration it: base = O + X B; pass 1, by rows: the u draws, G_ik, a_ik,
 * log P-hat_i, E u */
static int qem_estep(void *work, long it, double *logp, svir_err *e)
{
    QEM_LOCALS(work);
    (void)e;
    /* base = O + X B */
#ifdef _OPENMP
#pragma omp parallel for num_threads(T) schedule(static)
#endif
    for (int j = 0; j < p; j++)
        for (int i = 0; i < n; i++) {
            double v = dat->O ? dat->O[(ptrdiff_t)j * n + i] : 0.0;
            for (int c = 0; c < d; c++) v += dat->X[(ptrdiff_t)c * n + i] * s->B[(ptrdiff_t)j * d + c];
            base[(ptrdiff_t)j * n + i] = v;
        }
    /* pass 1, by rows: the u draws, G_ik, a_ik, log P-hat_i, E u */
#ifdef _OPENMP
#pragma omp parallel for num_threads(T) schedule(static)
#endif
    for (int i = 0; i < n; i++) {
        if (svir_poll()) continue; /* the host asked to stop */
#ifdef _OPENMP
        double *w = tws + tw * (size_t)omp_get_thread_num();
#else
        double *w = tws;
#endif
        double *G = w, *f = G + K, *e = f + K, *F = e + (ptrdiff_t)p * K, *lwe = F + (ptrdiff_t)p * K;
        double *u = U + (ptrdiff_t)i * K * q;
        svir_normal_fill(key, SVIR_STREAM_PLN_FACTORS, (uint64_t)it, (uint64_t)i * K * q, (ptrdiff_t)K * q, u);
        for (int k = 0; k < K; k++) {
            double lw = 0.0;
            for (int c = 0; c < q; c++) {
                const double xi = u[k * q + c], sd = s->su[(ptrdiff_t)c * n + i];
                const double v = s->mu_u[(ptrdiff_t)c * n + i] + sd * xi;
                u[k * q + c] = v;
                lw += -0.5 * v * v + 0.5 * xi * xi + log(sd);
            }
            G[k] = lw;
        }
        for (int j = 0; j < p; j++) {
            const ptrdiff_t ij = (ptrdiff_t)j * n + i;
            entry_draws(key, (uint64_t)it, (uint64_t)i * p + j, K, s->mu_e[ij], s->tau[ij], s->psi[j],
                        e + (ptrdiff_t)j * K, F + (ptrdiff_t)j * K, lwe + (ptrdiff_t)j * K);
        }
        for (int k = 0; k < K; k++) {
            double g = 0.0;
            for (int j = 0; j < p; j++) {
                const ptrdiff_t ij = (ptrdiff_t)j * n + i;
                double nu = base[ij];
                for (int c = 0; c < q; c++) nu += s->W[(ptrdiff_t)c * p + j] * u[k * q + c];
                g += entry_k(dat->Y[ij], nu, e + (ptrdiff_t)j * K, F + (ptrdiff_t)j * K,
                             lwe + (ptrdiff_t)j * K, K, f, NULL) - dat->lgy[ij];
            }
            G[k] += g;
        }
        lp[i] = logmeanexp(G, K);
        double s2 = 0.0;
        for (int k = 0; k < K; k++) s2 += (A[(ptrdiff_t)i * K + k] = exp(G[k] - lp[i]) / K);
        double sq = 0.0;
        for (int k = 0; k < K; k++) {
            A[(ptrdiff_t)i * K + k] /= s2;
            sq += A[(ptrdiff_t)i * K + k] * A[(ptrdiff_t)i * K + k];
        }
        ess[i] = 1.0 / sq;
        for (int c = 0; c < q; c++) {
            double m1 = 0.0, m2 = 0.0;
            for (int k = 0; k < K; k++) {
                const double a = A[(ptrdiff_t)i * K + k], v = u[k * q + c];
                m1 += a * v;
                m2 += a * v * v;
            }
            Eu[(ptrdiff_t)c * n + i] = m1;
            Eu[(ptrdiff_t)(q + c) * n + i] = m2;
        }
    }
    double lsum = 0.0;
    for (int i = 0; i < n; i++) lsum += lp[i];
    *logp = lsum;
    return 0;
}

/* pass 2, by columns: the e moments and proposals, the M step; then the
 * rows' proposals, by moving average with the driver's step eta */
static int qem_mstep(void *work, long it, double eta, svir_err *e)
{
    QEM_LOCALS(work);
        int bad = 0;
#ifdef _OPENMP
#pragma omp parallel for num_threads(T) schedule(static) reduction(| : bad)
#endif
    for (int j = 0; j < p; j++) {
        if (svir_poll()) continue; /* the host asked to stop */
#ifdef _OPENMP
        double *w = tws + tw * (size_t)omp_get_thread_num();
#else
        double *w = tws;
#endif
        double *f = w, *b = f + K, *e = b + K, *F = e + K, *lwe = F + K, *g = lwe + K,
               *H = g + r, *z = H + r * r;
        memset(g, 0, sizeof(double) * (size_t)r);
        memset(H, 0, sizeof(double) * (size_t)r * r);
        double e2sum = 0.0;
        for (int i = 0; i < n; i++) {
            const ptrdiff_t ij = (ptrdiff_t)j * n + i;
            const double y = dat->Y[ij];
            entry_draws(key, (uint64_t)it, (uint64_t)i * p + j, K, s->mu_e[ij], s->tau[ij], s->psi[j], e, F,
                        lwe);
            double m1 = 0.0, m2 = 0.0;
            for (int k = 0; k < K; k++) {
                const double a = A[(ptrdiff_t)i * K + k];
                const double *u = U + ((ptrdiff_t)i * K + k) * q;
                double nu = base[ij];
                for (int c = 0; c < q; c++) nu += s->W[(ptrdiff_t)c * p + j] * u[c];
                entry_k(y, nu, e, F, lwe, K, f, b);
                double Et = 0.0, e1 = 0.0, e2 = 0.0;
                for (int l = 0; l < K; l++) {
                    Et += b[l] * F[l];
                    e1 += b[l] * e[l];
                    e2 += b[l] * e[l] * e[l];
                }
                m1 += a * e1;
                m2 += a * e2;
                /* the weighted Poisson regression's gradient and
                 * curvature at (B_j, W_j), z = (X_i, u_ik) */
                const double mu = exp(nu) * Et;
                for (int c = 0; c < d; c++) z[c] = dat->X[(ptrdiff_t)c * n + i];
                for (int c = 0; c < q; c++) z[d + c] = u[c];
                for (int c = 0; c < r; c++) {
                    g[c] += a * (y - mu) * z[c];
                    for (int c2 = 0; c2 <= c; c2++) H[c * r + c2] += a * mu * z[c] * z[c2];
                }
            }
            e2sum += m2;
            /* the entry's proposal, by moving average */
            const double var = fmax(m2 - m1 * m1, 1e-12);
            const double t2 = s->tau[ij] * s->tau[ij];
            s->mu_e[ij] = (1.0 - eta) * s->mu_e[ij] + eta * m1;
            s->tau[ij] = sqrt(fmax((1.0 - eta) * t2 + eta * var, 1e-10));
        }
        /* one Newton step for (B_j, W_j): H delta = g */
        for (int c = 0; c < r; c++) {
            H[c * r + c] += 1e-8 * (1.0 + H[c * r + c]);
            for (int c2 = 0; c2 < c; c2++) H[c2 * r + c] = H[c * r + c2];
        }
        int info = 0, one = 1;
        F77_CALL(dposv)("L", &r, &one, H, &r, g, &r, &info FCONE);
        if (info) {
            bad = 1;
            continue;
        }
        double big = 0.0;
        for (int c = 0; c < r; c++) big = fmax(big, fabs(g[c]));
        const double sc = big > 1.0 ? 1.0 / big : 1.0;
        for (int c = 0; c < d; c++) s->B[(ptrdiff_t)j * d + c] += sc * g[c];
        for (int c = 0; c < q; c++) s->W[(ptrdiff_t)c * p + j] += sc * g[d + c];
        s->psi[j] = fmax(e2sum / n, 1e-8);
    }
    if (bad) {
        return svir_err_set(e, 1, "the M step's Newton system is singular at iteration %ld",
                            it + 1);
    }
    /* the rows' proposals, by moving average */
    for (int c = 0; c < q; c++)
        for (int i = 0; i < n; i++) {
            const ptrdiff_t ci = (ptrdiff_t)c * n + i;
            const double m1 = Eu[ci], var = fmax(Eu[(ptrdiff_t)(q + c) * n + i] - m1 * m1, 1e-12);
            const double v0 = s->su[ci] * s->su[ci];
            s->mu_u[ci] = (1.0 - eta) * s->mu_u[ci] + eta * m1;
            s->su[ci] = sqrt(fmax((1.0 - eta) * v0 + eta * var, 1e-10));
        }
    return 0;
}

static int qem_finish(void *work, svir_result *res, svir_err *e)
{
    pln_qem_work *x = work;
    for (int k = 0; k < 7; k++)
        if (svir_out_copy(res->extra, state_names[k], x->state[k], x->len[k], -1))
            return svir_err_set(e, 2, "out of memory for the results");
    if (svir_out_copy(res->extra, "ess", x->ess, x->dat.n, -1))
        return svir_err_set(e, 2, "out of memory for the results");
    return 0;
}

const svir_qem_ops svir_pln_qem_ops = {
    qem_new, qem_free, qem_sizes, qem_estep, qem_mstep, NULL, qem_finish,
};
