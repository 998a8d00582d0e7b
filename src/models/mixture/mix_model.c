/* The count mixtures' table (infer/svir_model.h; the model in
 * mix_model.h): the state read from the spec R builds (R/mixture.R), and
 * SVI on the CPU with the labels summed out. */
#include "models/mixture/mix_model.h"
#include "models/mixture/mix_entry.h"
#include "models/mixture/mix_cuda.h"
#include "infer/svir_gsvi.h"
#include "core/svir_guide.h"
#include "core/svir_math.h"
#include "core/svir_out.h"
#include "core/svir_philox.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

/* a dispersion per column (NB, ZINB) */
static int has_phi(const svir_mix_model *m)
{
    return m->dist == SVIR_MIX_NB || m->dist == SVIR_MIX_ZINB;
}

static void mix_free(void *model)
{
    if (model) {
        free(((svir_mix_model *)model)->lgy);
        free(((svir_mix_model *)model)->tot);
    }
    free(model);
}

void svir_mix_row(const svir_mix_model *m, int i, double *y)
{
    if (m->Y) {
        for (int j = 0; j < m->p; j++) y[j] = m->Y[i + (ptrdiff_t)j * m->n];
        return;
    }
    memset(y, 0, sizeof(double) * (size_t)m->p);
    for (int z = m->Rp[i]; z < m->Rp[i + 1]; z++) y[m->Rj[z]] = m->Rx[z];
}

/* spec: model = "mixture", n, p, K, dx, dist; the counts Y (dense) or Rp,
 * Rj, Rx (by rows); O (n) or absent; X (n x dx) when dx > 0; m_loc (p),
 * m_scale, tau_scale, gamma_scale, alpha; init_mu (D) or absent. */
static int mix_read(const svir_list *spec, const svir_list *ctrl, const svir_control *c,
                    void **out, svir_err *e)
{
    (void)ctrl;
    svir_mix_model *m = calloc(1, sizeof *m);
    if (!m) return svir_err_set(e, 2, "out of memory reading the model");
    *out = m;
    m->n = svir_list_int(spec, "n", 0);
    m->p = svir_list_int(spec, "p", 0);
    m->K = svir_list_int(spec, "K", 0);
    m->dx = svir_list_int(spec, "dx", -1);
    m->dist = svir_list_int(spec, "dist", -1);
    m->bg = svir_list_int(spec, "bg", 0);
    if (m->n < 1 || m->p < 1 || m->K < 1 || m->dx < 0 || m->dist < 0 || m->dist >= SVIR_MIX_NDIST)
        return svir_err_set(e, 1, "svir internal error: bad mixture dimensions");
    if (c->method != SVIR_METHOD_SVI && c->method != SVIR_METHOD_QEM)
        return svir_err_set(e, 1, "svir internal error: count mixtures are fitted by SVI or QEM");
    if (c->method == SVIR_METHOD_QEM && m->dist == SVIR_MIX_DIRMULT)
        return svir_err_set(e, 1, "svir internal error: no QEM for dirmult");
    const int n = m->n, p = m->p, K = m->K;
    if (svir_list_absent(spec, "Y")) {
        if (svir_list_sparse(spec, "Rp", "Rj", "Rx", n, p, &m->Rp, &m->Rj, &m->Rx, e)) return e->status;
    } else {
        m->Y = svir_list_reals(spec, "Y", (ptrdiff_t)n * p, 0, e);
    }
    m->O = svir_list_reals(spec, "O", n, 1, e);
    m->X = m->dx > 0 ? svir_list_reals(spec, "X", (ptrdiff_t)n * m->dx, 0, e) : NULL;
    m->m_loc = svir_list_reals(spec, "m_loc", p, 0, e);
    m->m_scale = svir_list_num(spec, "m_scale", 0.0);
    m->tau_scale = svir_list_num(spec, "tau_scale", 0.0);
    m->gamma_scale = svir_list_num(spec, "gamma_scale", 0.0);
    m->alpha = svir_list_num(spec, "alpha", 0.0);
    if (m->bg) {
        if (m->dist != SVIR_MIX_NB)
            return svir_err_set(e, 1, "svir internal error: a background needs NB clusters");
        m->bg_loc = svir_list_reals(spec, "bg_loc", p, 0, e);
        m->bg_scale = svir_list_reals(spec, "bg_scale", p, 0, e);
        m->bgp_loc = svir_list_reals(spec, "bgp_loc", p, 1, e);
        m->bgp_scale = svir_list_reals(spec, "bgp_scale", p, 1, e);
        if (!m->bgp_loc != !m->bgp_scale)
            return svir_err_set(e, 1, "svir internal error: bgp_loc and bgp_scale go together");
    }
    if (e->status) return e->status;
    if (!(m->m_scale > 0) || !(m->tau_scale > 0) || !(m->gamma_scale > 0) || !(m->alpha > 0))
        return svir_err_set(e, 1, "svir internal error: bad mixture priors");
    svir_mix_layout(m);
    m->init_mu = svir_list_reals(spec, "init_mu", m->D, 1, e);
    if (e->status) return e->status;
    if (m->dist == SVIR_MIX_DIRMULT && (m->dx > 0 || m->O))
        return svir_err_set(e, 1, "svir internal error: dirmult takes no covariates or offsets");
    char msg[200];
    const int st = svir_mix_prepare(m, msg, sizeof msg);
    return st ? svir_err_set(e, st, "%s", msg) : 0;
}

void svir_mix_layout(svir_mix_model *m)
{
    const int p = m->p, K = m->K;
    m->off_mu = 0;
    m->off_m = (ptrdiff_t)K * p;
    m->off_lt = m->off_m + p;
    m->off_g = m->off_lt + p;
    m->off_phi = m->off_g + (ptrdiff_t)m->dx * p;
    m->off_zi = m->off_phi + (has_phi(m) ? p : 0);
    m->off_bg = m->off_zi + (m->dist == SVIR_MIX_ZINB ? p : 0);
    m->off_eta = m->off_bg + (m->bg ? 3 * p : 0);
    m->D = m->off_eta + K - 1;
}

int svir_mix_prepare(svir_mix_model *m, char *err, size_t errlen)
{
    const int n = m->n, p = m->p;
    m->lgy = malloc(sizeof(double) * (size_t)n);
    m->tot = malloc(sizeof(double) * (size_t)n);
    double *y = malloc(sizeof(double) * (size_t)p);
    if (!m->lgy || !m->tot || !y) {
        free(y);
        snprintf(err, errlen, "out of memory reading the model");
        return 2;
    }
    for (int i = 0; i < n; i++) {
        svir_mix_row(m, i, y);
        double s = 0.0, N = 0.0;
        for (int j = 0; j < p; j++) {
            if (!(y[j] >= 0.0) || y[j] != floor(y[j])) {
                free(y);
                snprintf(err, errlen, "svir internal error: counts must be whole numbers");
                return 1;
            }
            if (y[j] > 1.0) s += svir_lgamma(y[j] + 1.0);
            N += y[j];
        }
        m->tot[i] = N;
        m->lgy[i] = m->dist == SVIR_MIX_DIRMULT ? s - svir_lgamma(N + 1.0) : s;
    }
    free(y);
    return 0;
}

static double mix_size(const void *model, const svir_control *c)
{
    const svir_mix_model *m = model;
    (void)c;
    return (double)m->n * m->p * m->K;
}

/* one thread per 200,000 entries x clusters of a batch, at most OpenMP's */
static int mix_threads(const void *model, const svir_control *c)
{
    const svir_mix_model *m = model;
    const double B = c->batch_size > 0 && c->batch_size < m->n ? (double)c->batch_size : m->n;
    return svir_default_threads(B * m->p * m->K, 200000.0);
}

/* ---- the likelihood and the prior ----------------------------------------- */

void svir_mix_row_ll(const svir_mix_model *m, const double *theta, const double *y,
                     const double *lin, const double *lp, double lgy, double *a, double *dl,
                     double *dphi, double *dzi, double *cj, double *lkj)
{
    const int p = m->p, K = m->K, nb = has_phi(m), zi = m->dist == SVIR_MIX_ZINB, bg = m->bg;
    const int grad = dl || dphi || dzi;
    const double *lphi = theta + m->off_phi, *zeta = theta + m->off_zi, *tb = theta + m->off_bg;
    /* what does not depend on the cluster, per column (mix_entry.h); for
     * plain NB the c0 are summed into base once */
    svir_mix_col *cc = (svir_mix_col *)cj;
    double base = 0.0;
    for (int j = 0; j < p; j++) {
        svir_mix_col_prep(nb, zi, bg, dphi != NULL, y[j], nb ? lphi[j] : 0.0, zi ? zeta[j] : 0.0,
                          bg ? tb[j] : 0.0, bg ? tb[p + j] : 0.0, bg ? tb[2 * p + j] : 0.0, &cc[j]);
        if (nb && !zi && !bg) base += cc[j].c0;
    }
    for (int k = 0; k < K; k++) {
        const double *mu = theta + m->off_mu + (ptrdiff_t)k * p;
        double *dlk = dl ? dl + (ptrdiff_t)k * p : NULL, *dpk = dphi ? dphi + (ptrdiff_t)k * p : NULL;
        double *dzk = dzi ? dzi + (ptrdiff_t)k * p : NULL;
        double *lk = lkj ? lkj + (ptrdiff_t)k * p : NULL;
        double s = lp[k] - lgy + base, gl = 0.0, gp = 0.0, gz = 0.0, l1;
        for (int j = 0; j < p; j++) {
            s += svir_mix_entry(nb, zi, bg, grad, &cc[j], y[j], lin[j] + mu[j], &gl, &gp, &gz, &l1);
            if (dlk) dlk[j] = gl;
            if (dpk) dpk[j] = gp;
            if (dzk) dzk[j] = gz;
            if (lk) lk[j] = l1;
        }
        a[k] = s;
    }
}

/* The Dirichlet-multinomial's concentrations at theta: alpha [3 K p] holds
 * exp(mu) (K x p), then lgamma and psi of each; per cluster A_k = sum_j
 * alpha_kj, lgamma(A_k), psi(A_k) into A [3 K]. Once per draw, not per
 * row. */
static void dm_prep(const svir_mix_model *m, const double *theta, double *alpha, double *A)
{
    const int p = m->p, K = m->K;
    const ptrdiff_t Kp = (ptrdiff_t)K * p;
    for (int k = 0; k < K; k++) {
        double s = 0.0;
        for (int j = 0; j < p; j++) {
            const ptrdiff_t kj = (ptrdiff_t)k * p + j;
            const double a = exp(theta[m->off_mu + kj]);
            alpha[kj] = a;
            alpha[Kp + kj] = svir_lgamma(a);
            alpha[2 * Kp + kj] = svir_digamma(a);
            s += a;
        }
        A[k] = s;
        A[K + k] = svir_lgamma(s);
        A[2 * K + k] = svir_digamma(s);
    }
}

/* One row under the Dirichlet-multinomial: a[k] = log pi_k + lgamma(N +
 * 1) - sum_j lgamma(y_j + 1) + lgamma(A_k) - lgamma(N + A_k) + sum over
 * the row's nonzero counts of lgamma(y + alpha_kj) - lgamma(alpha_kj); with
 * dl, its d/dmu_kj at the nonzero j (alpha (psi(y + alpha) - psi(alpha))),
 * and c [K] the part every column shares, psi(A_k) - psi(N + A_k) (times
 * alpha_kj). alpha and A from dm_prep. jz [p]: the row's nonzero columns,
 * their number returned. */
static int dm_row_ll(const svir_mix_model *m, const double *alpha, const double *A,
                     const double *y, double N, const double *lp, double lgy, double *a,
                     double *dl, double *c, int *jz)
{
    const int p = m->p, K = m->K;
    const ptrdiff_t Kp = (ptrdiff_t)K * p;
    int nz = 0;
    for (int j = 0; j < p; j++)
        if (y[j] > 0.0) jz[nz++] = j;
    for (int k = 0; k < K; k++) {
        const double *ak = alpha + (ptrdiff_t)k * p, *lgak = ak + Kp, *psak = ak + 2 * Kp;
        double s = lp[k] - lgy + A[K + k] - svir_lgamma(N + A[k]);
        for (int z = 0; z < nz; z++) {
            const int j = jz[z];
            s += svir_lgamma(y[j] + ak[j]) - lgak[j];
            if (dl) dl[(ptrdiff_t)k * p + j] = ak[j] * (svir_digamma(y[j] + ak[j]) - psak[j]);
        }
        a[k] = s;
        if (c) c[k] = A[2 * K + k] - svir_digamma(N + A[k]);
    }
    return nz;
}

/* log(sum_k exp(eta_k)) with eta_K = 0: pi = softmax(eta, 0) */
static double eta_lse(const svir_mix_model *m, const double *theta)
{
    const double *eta = theta + m->off_eta;
    double mx = 0.0, se = 0.0;
    for (int k = 0; k < m->K - 1; k++) mx = eta[k] > mx ? eta[k] : mx;
    for (int k = 0; k < m->K; k++) se += exp((k < m->K - 1 ? eta[k] : 0.0) - mx);
    return mx + log(se);
}

double svir_mix_log_prior(const svir_mix_model *m, const double *theta, double *grad)
{
    const int p = m->p, K = m->K;
    double lp = 0.0;
    const double *mm = theta + m->off_m, *lt = theta + m->off_lt;
    /* mu_kj ~ N(m_j, tau_j^2) */
    for (int j = 0; j < p; j++) {
        const double tau = exp(lt[j]);
        double gm = 0.0, glt = 0.0;
        for (int k = 0; k < K; k++) {
            const double r = (theta[m->off_mu + (ptrdiff_t)k * p + j] - mm[j]) / tau;
            lp += -0.5 * r * r - lt[j] - SVIR_LOG_SQRT_2PI;
            if (grad) {
                grad[m->off_mu + (ptrdiff_t)k * p + j] -= r / tau;
                gm += r / tau;
                glt += r * r - 1.0;
            }
        }
        /* m_j ~ N(m_loc_j, m_scale^2); tau_j ~ N+(0, tau_scale^2), log tau
         * with its Jacobian */
        const double rm = (mm[j] - m->m_loc[j]) / m->m_scale, rt = tau / m->tau_scale;
        lp += -0.5 * rm * rm - log(m->m_scale) - SVIR_LOG_SQRT_2PI;
        lp += -0.5 * rt * rt - log(m->tau_scale) - SVIR_LOG_SQRT_2PI + SVIR_LOG2 + lt[j];
        if (grad) {
            grad[m->off_m + j] += gm - rm / m->m_scale;
            grad[m->off_lt + j] += glt - rt * rt + 1.0;
        }
    }
    for (ptrdiff_t k = 0; k < (ptrdiff_t)m->dx * p; k++) {
        const double r = theta[m->off_g + k] / m->gamma_scale;
        lp += -0.5 * r * r - log(m->gamma_scale) - SVIR_LOG_SQRT_2PI;
        if (grad) grad[m->off_g + k] -= r / m->gamma_scale;
    }
    if (has_phi(m)) {
        /* phi^(-1/2) = a ~ N+(0, 1): log p(log phi) = log 2 + log N(a) + log(a / 2) */
        for (int j = 0; j < p; j++) {
            const double lphi = theta[m->off_phi + j], a = exp(-0.5 * lphi);
            lp += SVIR_LOG2 - 0.5 * a * a - SVIR_LOG_SQRT_2PI + log(0.5) - 0.5 * lphi;
            if (grad) grad[m->off_phi + j] += 0.5 * a * a - 0.5;
        }
    }
    if (m->dist == SVIR_MIX_ZINB) {
        /* logit omega_j ~ N(-2, 2^2) */
        for (int j = 0; j < p; j++) {
            const double r = (theta[m->off_zi + j] + 2.0) / 2.0;
            lp += -0.5 * r * r - log(2.0) - SVIR_LOG_SQRT_2PI;
            if (grad) grad[m->off_zi + j] -= r / 2.0;
        }
    }
    for (int j = 0; m->bg && j < p; j++) {
        /* b_j ~ N(bg_loc_j, bg_scale_j^2); log psi_j ~ N(bgp_loc_j,
         * bgp_scale_j^2) or as phi_j; logit beta_j ~ N(0, 1.5^2) */
        const double *th = theta + m->off_bg;
        double *gb = grad ? grad + m->off_bg : NULL;
        const double rb = (th[j] - m->bg_loc[j]) / m->bg_scale[j];
        lp += -0.5 * rb * rb - log(m->bg_scale[j]) - SVIR_LOG_SQRT_2PI;
        if (gb) gb[j] -= rb / m->bg_scale[j];
        const double lpsi = th[p + j];
        if (m->bgp_loc) {
            const double rp = (lpsi - m->bgp_loc[j]) / m->bgp_scale[j];
            lp += -0.5 * rp * rp - log(m->bgp_scale[j]) - SVIR_LOG_SQRT_2PI;
            if (gb) gb[p + j] -= rp / m->bgp_scale[j];
        } else {
            const double a = exp(-0.5 * lpsi);
            lp += SVIR_LOG2 - 0.5 * a * a - SVIR_LOG_SQRT_2PI + log(0.5) - 0.5 * lpsi;
            if (gb) gb[p + j] += 0.5 * a * a - 0.5;
        }
        const double rw = th[2 * p + j] / 1.5;
        lp += -0.5 * rw * rw - log(1.5) - SVIR_LOG_SQRT_2PI;
        if (gb) gb[2 * p + j] -= rw / 1.5;
    }
    /* pi = softmax(eta, 0) ~ Dirichlet(alpha): with the Jacobian, alpha sum
     * log pi_k plus the constant */
    const double *eta = theta + m->off_eta, lse = eta_lse(m, theta);
    double slp = -K * lse;
    for (int k = 0; k < K - 1; k++) slp += eta[k];
    lp += svir_lgamma(K * m->alpha) - K * svir_lgamma(m->alpha) + m->alpha * slp;
    if (grad)
        for (int k = 0; k < K - 1; k++) grad[m->off_eta + k] += m->alpha * (1.0 - K * exp(eta[k] - lse));
    return lp;
}

/* log pi (K) from theta */
static void log_pi(const svir_mix_model *m, const double *theta, double *lp)
{
    const double *eta = theta + m->off_eta, lse = eta_lse(m, theta);
    for (int k = 0; k < m->K; k++) lp[k] = (k < m->K - 1 ? eta[k] : 0.0) - lse;
}

/* the row's o_i + x_i gamma_j */
void svir_mix_row_lin(const svir_mix_model *m, const double *theta, int i, double *lin)
{
    const int p = m->p;
    const double o = m->O ? m->O[i] : 0.0;
    for (int j = 0; j < p; j++) lin[j] = o;
    for (int c = 0; c < m->dx; c++) {
        const double x = m->X[i + (ptrdiff_t)c * m->n];
        if (x == 0.0) continue;
        const double *g = theta + m->off_g + (ptrdiff_t)c * p;
        for (int j = 0; j < p; j++) lin[j] += x * g[j];
    }
}

/* ---- SVI ------------------------------------------------------------------- */

typedef struct {
    const svir_mix_model *m;
    const svir_control *c;
    int T, full;
    ptrdiff_t B;
    double scale;
    uint32_t key[2];
    int *idx;               /* [B] the batch's rows */
    double *theta, *eps, *gtheta, *u, *lp;
    double *gt;             /* [T x D] the threads' gradients */
    double *wrow;           /* [T x (2 p + 2 K p + 2 K)] the threads' row work */
    double *llt;            /* [T] */
    /* dirmult: the concentrations at the draw (alpha [3 K p], A [3 K]:
     * dm_prep), per thread the shared parts' sums and c [2 K], the
     * nonzero columns [p] */
    double *alpha, *Adm, *dmk;
    int *jz;
    struct svir_cuda_mix *dev; /* the model's device copy (backend = "cuda"), or NULL */
} mix_work;

static ptrdiff_t mix_n_global(const void *model, const svir_control *c)
{
    (void)c;
    return 2 * ((const svir_mix_model *)model)->D;
}

static void mix_work_free(void *work)
{
    mix_work *w = work;
    if (!w) return;
    free(w->idx); free(w->theta); free(w->eps); free(w->gtheta); free(w->u); free(w->lp);
    free(w->gt); free(w->wrow); free(w->llt);
    free(w->alpha); free(w->Adm); free(w->dmk); free(w->jz);
    free(w);
}

static size_t row_work_len(const svir_mix_model *m)
{
    return (size_t)((2 + SVIR_MIX_CJ) * m->p + 3 * (ptrdiff_t)m->K * m->p + 2 * m->K);
}

static void *mix_work_new(const void *model, const svir_control *c)
{
    const svir_mix_model *m = model;
    mix_work *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    w->m = m;
    w->c = c;
    w->T = c->threads > 0 ? c->threads : 1;
    w->full = c->batch_size <= 0 || c->batch_size >= m->n;
    w->B = w->full ? m->n : c->batch_size;
    w->scale = (double)m->n / (double)w->B;
    w->key[0] = (uint32_t)(c->seed & 0xffffffffu);
    w->key[1] = (uint32_t)(c->seed >> 32);
    const size_t D = (size_t)m->D;
    w->idx = malloc(sizeof(int) * (size_t)w->B);
    w->theta = malloc(sizeof(double) * D);
    w->eps = malloc(sizeof(double) * D);
    w->gtheta = malloc(sizeof(double) * D);
    w->u = malloc(sizeof(double) * D);
    w->lp = malloc(sizeof(double) * (size_t)m->K);
    w->gt = malloc(sizeof(double) * D * (size_t)w->T);
    w->wrow = malloc(sizeof(double) * row_work_len(m) * (size_t)w->T);
    w->llt = malloc(sizeof(double) * (size_t)w->T);
    if (m->dist == SVIR_MIX_DIRMULT) {
        w->alpha = malloc(sizeof(double) * 3 * (size_t)m->K * (size_t)m->p);
        w->Adm = malloc(sizeof(double) * 3 * (size_t)m->K);
        w->dmk = malloc(sizeof(double) * 2 * (size_t)m->K * (size_t)w->T);
        w->jz = malloc(sizeof(int) * (size_t)m->p * (size_t)w->T);
        if (!w->alpha || !w->Adm || !w->dmk || !w->jz) {
            mix_work_free(w);
            return NULL;
        }
    }
    if (!w->idx || !w->theta || !w->eps || !w->gtheta || !w->u || !w->lp || !w->gt || !w->wrow ||
        !w->llt) {
        mix_work_free(w);
        return NULL;
    }
    for (ptrdiff_t k = 0; k < w->B; k++) w->idx[k] = (int)k;
    w->dev = m->dev;
    return w;
}

static int mix_work_threads(const void *work)
{
    return ((const mix_work *)work)->T;
}

static void mix_init(const void *model, const svir_control *c, double *gpar, double *lpar)
{
    const svir_mix_model *m = model;
    (void)lpar;
    svir_gsvi_init(m->D, m->init_mu, c->init_scale, gpar);
}

/* the rows of step `step`: positions step*B .. step*B+B-1 of an endless
 * sequence of epochs, each a keyed permutation of the rows */
static void mix_batch(void *work, long step, ptrdiff_t *nspans, const ptrdiff_t **off,
                      const ptrdiff_t **len)
{
    mix_work *w = work;
    (void)off;
    (void)len;
    *nspans = -1; /* no local parameters */
    if (!w->full) svir_gsvi_rows(w->idx, w->B, w->m->n, w->key, step);
}

/* the batch's sum over rows of log sum_k pi_k p(y_i | k) at theta, its
 * gradient in theta (times scale) added to g */
static double batch_loglik(mix_work *w, const double *theta, double *g)
{
    const svir_mix_model *m = w->m;
    const int p = m->p, K = m->K, T = w->T, nb = has_phi(m);
    const int zi = m->dist == SVIR_MIX_ZINB, dm = m->dist == SVIR_MIX_DIRMULT;
    const ptrdiff_t D = m->D;
    log_pi(m, theta, w->lp);
    if (w->dev) {
        /* the device's (mix_cuda.h); a failure is kept there for the run's
         * end, and this step's NaN makes the driver reject it */
        double ll = 0.0;
        char err[256];
        if (svir_cuda_mix_loglik(w->dev, theta, w->lp, w->full ? NULL : w->idx, (int)w->B,
                                 w->scale, &ll, g, NULL, err, sizeof err))
            return NAN;
        return ll;
    }
    if (dm) dm_prep(m, theta, w->alpha, w->Adm);
#ifdef _OPENMP
#pragma omp parallel num_threads(T)
#endif
    {
        const int t = svir_thread_num();
        double *gt = w->gt + (ptrdiff_t)t * D;
        double *y = w->wrow + (ptrdiff_t)t * (ptrdiff_t)row_work_len(m);
        double *lin = y + p, *dl = lin + p, *dphi = dl + (ptrdiff_t)K * p, *a = dphi + (ptrdiff_t)K * p;
        double *r = a + K, *cj = r + K, *dzi = cj + SVIR_MIX_CJ * p;
        double *Sk = dm ? w->dmk + (ptrdiff_t)t * 2 * K : NULL, *ck = dm ? Sk + K : NULL;
        int *jz = dm ? w->jz + (ptrdiff_t)t * p : NULL;
        memset(gt, 0, sizeof(double) * (size_t)D);
        if (dm) memset(Sk, 0, sizeof(double) * (size_t)K);
        double ll = 0.0;
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
        for (ptrdiff_t b = 0; b < w->B; b++) {
            const int i = w->idx[b];
            svir_mix_row(m, i, y);
            int nz = 0;
            if (dm) {
                nz = dm_row_ll(m, w->alpha, w->Adm, y, m->tot[i], w->lp, m->lgy[i], a, dl, ck, jz);
            } else {
                svir_mix_row_lin(m, theta, i, lin);
                svir_mix_row_ll(m, theta, y, lin, w->lp, m->lgy[i], a, dl, nb ? dphi : NULL,
                                zi || m->bg ? dzi : NULL, cj, NULL);
            }
            double mx = a[0];
            for (int k = 1; k < K; k++) mx = a[k] > mx ? a[k] : mx;
            double se = 0.0;
            for (int k = 0; k < K; k++) se += (r[k] = exp(a[k] - mx));
            ll += mx + log(se);
            for (int k = 0; k < K; k++) r[k] /= se;
            if (dm) {
                /* the nonzero columns here; every column's alpha_kj c_k after
                 * the batch, from the sums Sk */
                for (int k = 0; k < K; k++) {
                    double *gmu = gt + m->off_mu + (ptrdiff_t)k * p;
                    const double *dlk = dl + (ptrdiff_t)k * p;
                    for (int z = 0; z < nz; z++) gmu[jz[z]] += r[k] * dlk[jz[z]];
                    Sk[k] += r[k] * ck[k];
                }
                for (int k = 0; k < K - 1; k++) gt[m->off_eta + k] += r[k] - exp(w->lp[k]);
                continue;
            }
            /* d/dmu_kj = r_k dl_kj; d/dgamma_cj = x_ic sum_k r_k dl_kj */
            for (int k = 0; k < K; k++) {
                double *gmu = gt + m->off_mu + (ptrdiff_t)k * p;
                const double *dlk = dl + (ptrdiff_t)k * p, rk = r[k];
                for (int j = 0; j < p; j++) gmu[j] += rk * dlk[j];
                if (nb) {
                    const double *dpk = dphi + (ptrdiff_t)k * p;
                    double *gp = gt + m->off_phi;
                    for (int j = 0; j < p; j++) gp[j] += rk * dpk[j];
                }
                if (zi) {
                    const double *dzk = dzi + (ptrdiff_t)k * p;
                    double *gz = gt + m->off_zi;
                    for (int j = 0; j < p; j++) gz[j] += rk * dzk[j];
                }
            }
            if (m->bg) {
                /* the background's share summed over the clusters */
                const svir_mix_col *cc = (const svir_mix_col *)cj;
                double *gb = gt + m->off_bg;
                for (int j = 0; j < p; j++) {
                    double sb = 0.0;
                    for (int k = 0; k < K; k++) sb += r[k] * dzi[(ptrdiff_t)k * p + j];
                    gb[j] += sb * cc[j].gG;
                    gb[p + j] += sb * cc[j].gGp;
                    gb[2 * p + j] += sb - cc[j].w;
                }
            }
            if (m->dx > 0) {
                /* the row's sum over clusters, in lin's place */
                for (int j = 0; j < p; j++) {
                    double s = 0.0;
                    for (int k = 0; k < K; k++) s += r[k] * dl[(ptrdiff_t)k * p + j];
                    lin[j] = s;
                }
                for (int c = 0; c < m->dx; c++) {
                    const double x = m->X[i + (ptrdiff_t)c * m->n];
                    if (x == 0.0) continue;
                    double *gg = gt + m->off_g + (ptrdiff_t)c * p;
                    for (int j = 0; j < p; j++) gg[j] += x * lin[j];
                }
            }
            for (int k = 0; k < K - 1; k++) gt[m->off_eta + k] += r[k] - exp(w->lp[k]);
        }
        w->llt[t] = ll;
    }
    double ll = 0.0;
    for (int t = 0; t < T; t++) {
        ll += w->llt[t];
        const double *gt = w->gt + (ptrdiff_t)t * D;
        for (ptrdiff_t d = 0; d < D; d++) g[d] += w->scale * gt[d];
    }
    for (int k = 0; dm && k < K; k++) {
        double S = 0.0;
        for (int t = 0; t < T; t++) S += w->dmk[(ptrdiff_t)t * 2 * K + k];
        const double *ak = w->alpha + (ptrdiff_t)k * p;
        double *gmu = g + m->off_mu + (ptrdiff_t)k * p;
        for (int j = 0; j < p; j++) gmu[j] += w->scale * ak[j] * S;
    }
    return w->scale * ll;
}

static double mix_estimate(void *work, long step, const double *gpar, const double *lpar,
                           double *ggrad, double *lgrad, double *tsplit)
{
    mix_work *w = work;
    const svir_mix_model *m = w->m;
    const svir_control *c = w->c;
    const ptrdiff_t D = m->D;
    const int S = c->num_particles > 0 ? c->num_particles : 1, stl = c->stl;
    const double invS = 1.0 / S;
    (void)lpar;
    (void)lgrad;
    double t0 = svir_wall_time(), elbo = 0.0;
    memset(ggrad, 0, sizeof(double) * (size_t)(2 * D));
    for (int s = 0; s < S; s++) {
        /* each normal its own counter: the same for any number of threads */
#ifdef _OPENMP
#pragma omp parallel for num_threads(w->T) schedule(static) if (D >= 20000)
#endif
        for (ptrdiff_t d = 0; d < D; d++)
            w->eps[d] = svir_normal(w->key, SVIR_STREAM_GLOBAL, (uint64_t)step, (uint64_t)s * D + d);
        svir_guide_theta(D, 0, gpar, w->eps, w->theta);
        memset(w->gtheta, 0, sizeof(double) * (size_t)D);
        const double t1 = svir_wall_time();
        tsplit[SVIR_PHASE_DRAW] += t1 - t0;
        const double ll = batch_loglik(w, w->theta, w->gtheta);
        const double t2 = svir_wall_time();
        tsplit[SVIR_PHASE_OBS] += t2 - t1;
        elbo += invS * (ll + svir_mix_log_prior(m, w->theta, w->gtheta));
        svir_guide_backward(D, 0, stl, gpar, w->eps, w->gtheta, invS, ggrad, w->u);
        t0 = svir_wall_time();
        tsplit[SVIR_PHASE_BACKWARD] += t0 - t2;
    }
    return elbo + svir_guide_entropy(D, 0, stl, gpar, ggrad);
}

/* ndraws draws of the globals from the guide; no log ratios (each would be
 * a pass over every count: NaN) */
static int mix_draws(void *work, const double *gpar, const double *lpar, svir_result *res)
{
    mix_work *w = work;
    (void)lpar;
    return svir_gsvi_draws(w->m->D, w->c->ndraws, w->key, gpar, res);
}

static const svir_svi_ops mix_svi_ops = {
    mix_n_global, svir_gsvi_n_local, mix_work_new, mix_work_free, mix_work_threads, mix_init,
    svir_gsvi_anchor, svir_gsvi_reanchor, mix_batch, mix_estimate, mix_draws,
};

/* ---- outputs ------------------------------------------------------------- */

int svir_mix_resp(const svir_mix_model *m, const double *draws, int nd, int S,
                  const double *mean, double *resp, double *llr, double *fg, double *lld)
{
    const int n = m->n, p = m->p, K = m->K;
    if (nd <= 0) S = 1;
    const int dm = m->dist == SVIR_MIX_DIRMULT;
    double *theta = malloc(sizeof(double) * (size_t)m->D);
    double *lp = malloc(sizeof(double) * (size_t)K);
    double *wk = malloc(sizeof(double) * (size_t)((2 + SVIR_MIX_CJ) * p + 2 * K +
                                                   (fg ? (ptrdiff_t)K * p : 0)));
    double *alpha = dm ? malloc(sizeof(double) * 3 * ((size_t)K * p + (size_t)K)) : NULL;
    int *jz = dm ? malloc(sizeof(int) * (size_t)p) : NULL;
    if (!theta || !lp || !wk || (dm && (!alpha || !jz))) {
        free(theta); free(lp); free(wk); free(alpha); free(jz);
        return 2;
    }
    memset(resp, 0, sizeof(double) * (size_t)n * K);
    if (fg) memset(fg, 0, sizeof(double) * (size_t)n * p);
    double *y = wk, *lin = wk + p, *a = lin + p, *r = a + K, *cj = r + K;
    double *dz = fg ? cj + SVIR_MIX_CJ * p : NULL;
    for (int s = 0; s <= S; s++) {
        /* s < S: draw s (or the means); s == S: the means, for llr */
        if (s == S && !llr) break;
        for (ptrdiff_t d = 0; d < m->D; d++)
            theta[d] = s < S && nd > 0 ? draws[(size_t)s + (size_t)d * nd] : mean[d];
        log_pi(m, theta, lp);
        if (dm) dm_prep(m, theta, alpha, alpha + 3 * (ptrdiff_t)K * p);
        for (int i = 0; i < n; i++) {
            svir_mix_row(m, i, y);
            if (dm) {
                dm_row_ll(m, alpha, alpha + 3 * (ptrdiff_t)K * p, y, m->tot[i], lp, m->lgy[i], a, NULL,
                          NULL, jz);
            } else {
                svir_mix_row_lin(m, theta, i, lin);
                svir_mix_row_ll(m, theta, y, lin, lp, m->lgy[i], a, NULL, NULL, dz, cj, NULL);
            }
            double mx = a[0], se = 0.0;
            for (int k = 1; k < K; k++) mx = a[k] > mx ? a[k] : mx;
            for (int k = 0; k < K; k++) se += (r[k] = exp(a[k] - mx));
            if (s == S) {
                llr[i] = mx + log(se);
                continue;
            }
            if (lld) lld[s + (ptrdiff_t)i * S] = mx + log(se);
            for (int k = 0; k < K; k++) resp[i + (ptrdiff_t)k * n] += r[k] / se / S;
            for (int j = 0; dz && j < p; j++) {
                /* foreground: 1 - the background's share given k */
                double f = 0.0;
                for (int k = 0; k < K; k++) f += r[k] * (1.0 - dz[(ptrdiff_t)k * p + j]);
                fg[i + (ptrdiff_t)j * n] += f / se / S;
            }
        }
    }
    free(theta); free(lp); free(wk); free(alpha); free(jz);
    return 0;
}

/* the final approximation's ELBO over all rows, SVI's estimator with 5
 * draws, fewer when 5 passes would exceed 10^9 densities (1 at 10^5 x 2000
 * x 10, where 5 took two of a fit's four minutes): "elbo_full". With minibatches the window mean of the steps'
 * estimates is noisy (its sd, grown by n / B, had been of the order of the
 * ELBO differences between K), and for QEM the trace is not an ELBO; the
 * starts and the criterion over K compare this instead. */
static int mix_elbo_full(const svir_mix_model *m, const svir_control *c, const double *gpar,
                         double *elbo)
{
    double *grad = malloc(sizeof(double) * 2 * (size_t)m->D);
    if (!grad) return 2;
    svir_control ce = *c;
    ce.method = SVIR_METHOD_SVI;
    const double per = (double)m->n * m->p * m->K;
    ce.num_particles = per * 5 <= 1e9 ? 5 : (per < 1e9 ? (int)(1e9 / per) : 1);
    ce.batch_size = 0;
    const int st = svir_mix_elbo_grad(m, &ce, gpar, 0, elbo, grad);
    free(grad);
    return st;
}

/* the rows' cluster probabilities, averaged over the posterior draws (at
 * most 200, and at most 2 x 10^8 evaluations of an entry's density in all:
 * 5 draws for 5000 x 1000 counts in 8 clusters, where 200 had taken 100 s
 * for a fit of 35 s; the guide's means without draws): "resp" (n x K), and
 * each row's log sum_k pi_k p(y_i | k) at the guide's means: "ll_rows" (n) */
static int mix_outputs(const void *model, const svir_control *c, svir_result *res, svir_err *e)
{
    const svir_mix_model *m = model;
    const double per = (double)m->n * m->p * m->K;
    int S = res->ndraws < 200 ? res->ndraws : 200;
    if (S > 1 && per * S > 2e8) S = per < 2e8 ? (int)(2e8 / per) : 1;
    double *resp = malloc(sizeof(double) * (size_t)m->n * m->K);
    double *llr = malloc(sizeof(double) * (size_t)m->n);
    double *fg = m->bg ? malloc(sizeof(double) * (size_t)m->n * m->p) : NULL;
    if (!resp || !llr || !res->gpar || (m->bg && !fg) ||
        svir_mix_resp(m, res->draws, res->ndraws, S, res->gpar, resp, llr, fg, NULL)) {
        free(resp); free(llr); free(fg);
        return svir_err_set(e, 2, "out of memory computing the cluster probabilities");
    }
    if (fg && svir_out_adopt(res->extra, "foreground", fg, m->n, m->p)) {
        free(resp); free(llr);
        return svir_err_set(e, 2, "out of memory returning the foreground probabilities");
    }
    if (svir_out_adopt(res->extra, "resp", resp, m->n, m->K)) {
        free(llr);
        return svir_err_set(e, 2, "out of memory returning the cluster probabilities");
    }
    if (svir_out_adopt(res->extra, "ll_rows", llr, m->n, -1))
        return svir_err_set(e, 2, "out of memory returning the cluster probabilities");
    double elbo = NAN;
    if (mix_elbo_full(m, c, res->gpar, &elbo) || svir_out_copy(res->extra, "elbo_full", &elbo, 1, -1))
        return svir_err_set(e, 2, "out of memory estimating the final ELBO");
    return 0;
}

int svir_mix_elbo_grad(const svir_mix_model *m, const svir_control *c, const double *gpar,
                       long step, double *elbo, double *grad)
{
    mix_work *w = mix_work_new(m, c);
    if (!w) return 2;
    double tsplit[SVIR_N_PHASES] = {0};
    ptrdiff_t ns;
    mix_batch(w, step, &ns, NULL, NULL);
    *elbo = mix_estimate(w, step, gpar, NULL, grad, NULL, tsplit);
    mix_work_free(w);
    return 0;
}

static int run_svi(void *model, const svir_control *c, const svir_callbacks *cb, svir_result *res)
{
    return svir_svi_run(&mix_svi_ops, model, c, cb, res);
}

/* SVI with each step's batch evaluated on the device (mix_cuda.h): the
 * CPU's driver, draws, prior and guide, so the same steps as the CPU up to
 * the sums' order. */
static int run_svi_cuda(void *model, const svir_control *c, const svir_callbacks *cb,
                        svir_result *res)
{
    svir_mix_model *m = model;
    const int B = c->batch_size > 0 && c->batch_size < m->n ? (int)c->batch_size : m->n;
    char err[256] = "";
    svir_cuda_mix *d = NULL;
    int st = svir_cuda_mix_new(m, B, &d, err, sizeof err);
    if (st) {
        snprintf(res->message, sizeof res->message, "%s", err);
        return st;
    }
    m->dev = d;
    st = svir_svi_run(&mix_svi_ops, model, c, cb, res);
    m->dev = NULL;
    if (st != SVIR_INTERRUPTED && svir_cuda_mix_error(d)[0]) {
        snprintf(res->message, sizeof res->message, "%s", svir_cuda_mix_error(d));
        st = 3;
    }
    svir_cuda_mix_free(d);
    return st;
}

static const svir_impl mix_impls[] = {
    {SVIR_METHOD_SVI, SVIR_BACKEND_CPU, 1, 1, run_svi},
    {SVIR_METHOD_SVI, SVIR_BACKEND_CUDA, 1, 1, run_svi_cuda},
    {SVIR_METHOD_QEM, SVIR_BACKEND_CPU, 1, 0, svir_mix_run_qem},
};

SVIR_CODE_TABLE(mix_dist, SVIR_MIX_DIST_CODES)
static const svir_code_table mix_codes[] = {SVIR_CODE_ENTRY("mix_dist", mix_dist)};

/* the device runs the NB, ZINB and Poisson clusters (with a background) */
static const char *mix_cpu_only(const svir_list *spec)
{
    return svir_list_int(spec, "dist", -1) == SVIR_MIX_DIRMULT ? "The Dirichlet-multinomial (dist = \"dirmult\") runs" : NULL;
}

const svir_model_def svir_mix_def = {
    "mixture", mix_read, mix_free, mix_size, mix_threads, mix_outputs,
    mix_impls, (int)(sizeof mix_impls / sizeof mix_impls[0]),
    mix_codes, 1, "count_mixture()", mix_cpu_only, 0.0,
};
