/* SVI engine (no R API).
 *
 * ELBO = E_q[log p(y | theta, z)] + E_q[log p(theta)] + H[q(theta)]
 *        - sum_groups KL(q(z_j) || N(0, I)),
 * estimated with reparameterised draws of theta (global guide) and z (local
 * per-group Gaussian blocks); the local KL terms are exact. A minibatch of B
 * observations scales the likelihood by n / B and charges each group's KL to
 * its observations (weight n/B * (count in batch) / (count in data)), so the
 * estimator stays unbiased and local parameters change only for groups present
 * in the batch. */
#include "infer/svir_engine.h"
#include "core/svir_math.h"
#include "core/svir_philox.h"
#include "models/glmm/glmm_local.h"
#include "models/glmm/glmm_coupling.h"
#include "core/svir_adam.h"
#include "core/svir_guide.h"
#include "core/svir_loop.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef _OPENMP
#include <omp.h>
#endif


typedef struct {
    const svir_model *m;
    const svir_control *c;
    int T;                  /* threads for the per-step loops */
    int T_draws;            /* threads for the final draws (one data pass each) */
    ptrdiff_t D, ngp, ngroups_total;
    uint32_t key[2];
    int full;
    ptrdiff_t B;            /* observations per step */
    double scale;           /* n / B */
    svir_globals g;
    double *theta, *eps, *gtheta, *u;
    double *z, *noise, *b;  /* [nz], valid for present groups */
    double *ediag;          /* [nz] diagonal of each group's C (exp of its stored log) */
    double *Gt;             /* [T x nz] per-thread d loglik / d b */
    double *gbt, *gauxt, *llt;
    double *gb;             /* [p] reduced d loglik / d beta */
    double *dA;             /* [nqq] */
    ptrdiff_t *idx;         /* [B] minibatch */
    ptrdiff_t *goff;        /* [nterms] first global group id of each term */
    long *stamp;            /* [ngroups_total] */
    ptrdiff_t *slot;        /* [ngroups_total] */
    int *pres_term, *pres_group;
    double *pres_cnt;
    ptrdiff_t npres;
    int *runs;              /* [nterms] consecutive observations mostly share a group */
    int nt_fast;            /* m->nt_icpt, or 0 when positions in b overflow an int */
    int *gcat;              /* [n x nt_fast] with nt_fast: observation i's position in b
                             * (off_z + group) for each term, side by side */
    int nrun;               /* 1: slot 0 of gcat holds a term with w->runs set */
    double tsplit[SVIR_N_PHASES]; /* seconds per phase (svir_result.time_split) */
    /* coupled guide (see coupling_forward) */
    int couple;             /* any term has a column in X's span */
    int *cns, *coff;        /* [nterms] span columns per term, offset into the arrays below */
    int *qoff, sumq;        /* [nterms] offset of each term in the [sum q] arrays */
    int *cS;                /* [ns] column of Z */
    double *ca;             /* [ns x p] a_k: Z[, k] = X a_k */
    double *cK;             /* [ns x p] rows of (a^T a)^{-1} a^T, per term */
    double *comega;         /* [ns] share of the fixed-effect deviation given to the column */
    double *cref;           /* [p] reference point of the fixed effects */
    double *beta_eff;       /* [p] fixed effects the likelihood sees */
    double *cu, *cw, *cdw;  /* [sum q] per term: u = E s, w = A^{-1} u, d objective / d w */
    double *cds;            /* [ns] d objective / d s */
    svir_coupling cp;       /* the arrays above, for svir_step.h */
} work;


/* wall clock in seconds, for the engine's time split (without OpenMP,
 * clock()'s processor time, which one thread makes nearly the same) */
double svir_wall_time(void)
{
#ifdef _OPENMP
    return omp_get_wtime();
#else
    return (double)clock() / CLOCKS_PER_SEC;
#endif
}
/* loops over groups go parallel only when there are this many: a parallel
 * region costs microseconds, far more on a loaded machine */
#define SVIR_PAR_GROUPS 32768

static int coupling_init(work *w);

ptrdiff_t svir_n_global_par(const svir_model *m, int guide)
{
    return guide == SVIR_GUIDE_FULLRANK ? m->D + m->D * (m->D + 1) / 2 : 2 * m->D;
}

static void *xcalloc(size_t n, size_t size, int *fail)
{
    void *p = calloc(n ? n : 1, size);
    if (!p) *fail = 1;
    return p;
}

static void work_free(work *w)
{
    svir_globals_free(&w->g);
    free(w->theta); free(w->eps); free(w->gtheta); free(w->u);
    free(w->z); free(w->noise); free(w->b); free(w->ediag);
    free(w->Gt); free(w->gb); free(w->gbt); free(w->gauxt); free(w->llt);
    free(w->dA); free(w->idx); free(w->goff); free(w->stamp); free(w->slot);
    free(w->pres_term); free(w->pres_group); free(w->pres_cnt); free(w->runs);
    free(w->gcat);
    free(w->cns); free(w->coff); free(w->qoff); free(w->cS); free(w->ca); free(w->cK); free(w->comega);
    free(w->cref); free(w->beta_eff); free(w->cu); free(w->cw); free(w->cdw); free(w->cds);
}

static int work_init(work *w, const svir_model *m, const svir_control *c)
{
    int fail = 0;
    memset(w, 0, sizeof(*w));
    w->m = m;
    w->c = c;
    w->T = c->threads > 0 ? c->threads : 1;
    w->D = m->D;
    w->ngp = svir_n_global_par(m, c->guide);
    w->key[0] = (uint32_t)(c->seed & 0xffffffffu);
    w->key[1] = (uint32_t)(c->seed >> 32);
    w->full = c->batch_size <= 0 || c->batch_size >= m->n;
    w->B = w->full ? m->n : c->batch_size;
    w->scale = (double)m->n / (double)w->B;
    /* a parallel region costs microseconds: small batches run on one thread */
    {
        const ptrdiff_t per_thread = 4096;
        const ptrdiff_t useful = (w->B + per_thread - 1) / per_thread;
        if (useful < w->T) w->T = useful > 0 ? (int)useful : 1;
    }
    w->T_draws = c->threads > 0 ? c->threads : 1;
    if (svir_globals_alloc(m, &w->g)) fail = 1;
    const size_t D = (size_t)m->D, nz = (size_t)m->nz;
    w->theta = xcalloc(D, sizeof(double), &fail);
    w->eps = xcalloc(D, sizeof(double), &fail);
    w->gtheta = xcalloc(D, sizeof(double), &fail);
    w->u = xcalloc(D, sizeof(double), &fail);
    w->z = xcalloc(nz, sizeof(double), &fail);
    w->noise = xcalloc(nz, sizeof(double), &fail);
    w->b = xcalloc(nz, sizeof(double), &fail);
    w->ediag = xcalloc(nz, sizeof(double), &fail);
    w->Gt = xcalloc(nz * (size_t)w->T, sizeof(double), &fail);
    w->gb = xcalloc((size_t)m->p, sizeof(double), &fail);
    w->gbt = xcalloc((size_t)m->p * (size_t)w->T, sizeof(double), &fail);
    w->gauxt = xcalloc((size_t)w->T, sizeof(double), &fail);
    w->llt = xcalloc((size_t)w->T, sizeof(double), &fail);
    w->dA = xcalloc((size_t)m->nqq, sizeof(double), &fail);
    w->goff = xcalloc((size_t)m->nterms, sizeof(ptrdiff_t), &fail);
    ptrdiff_t ng = 0;
    for (int t = 0; t < m->nterms; t++) {
        if (w->goff) w->goff[t] = ng;
        ng += m->terms[t].ngroups;
    }
    w->ngroups_total = ng;
    w->stamp = xcalloc((size_t)ng, sizeof(long), &fail);
    w->slot = xcalloc((size_t)ng, sizeof(ptrdiff_t), &fail);
    w->pres_term = xcalloc((size_t)ng, sizeof(int), &fail);
    w->pres_group = xcalloc((size_t)ng, sizeof(int), &fail);
    w->pres_cnt = xcalloc((size_t)ng, sizeof(double), &fail);
    if (!w->full) w->idx = xcalloc((size_t)w->B, sizeof(ptrdiff_t), &fail);
    w->beta_eff = xcalloc((size_t)m->p, sizeof(double), &fail);
    w->runs = xcalloc((size_t)m->nterms + 1, sizeof(int), &fail);
    if (w->runs && w->full && m->n > 1) {
        for (int t = 0; t < m->nterms; t++) {
            const int *grp = m->terms[t].group;
            ptrdiff_t same = 0;
            for (ptrdiff_t i = 1; i < m->n; i++) same += grp[i] == grp[i - 1];
            w->runs[t] = same > (m->n - 1) / 2;
        }
    }
    w->nt_fast = m->nz > INT_MAX ? 0 : m->nt_icpt;
    if (w->nt_fast && !fail) {
        const int NT = w->nt_fast;
        w->gcat = xcalloc((size_t)m->n * (size_t)NT, sizeof(int), &fail);
        int r0 = -1;
        for (int t = 0; t < NT && w->runs && r0 < 0; t++)
            if (w->runs[t]) r0 = t;
        w->nrun = r0 >= 0;
        if (w->gcat)
            for (int t = 0, slot = 1; t < NT; t++) {
                const int *grp = m->terms[t].group, o = (int)m->terms[t].off_z;
                const int sl = t == r0 ? 0 : (r0 < 0 ? t : slot++);
                for (ptrdiff_t i = 0; i < m->n; i++) w->gcat[i * NT + sl] = o + grp[i];
            }
    }
    if (!fail) fail = coupling_init(w);
    if (!fail) {
        svir_coupling_view(&w->cp, w->couple, w->sumq, w->cns, w->coff, w->qoff, w->cS, w->ca,
                           w->cK, w->comega, w->cref);
    }
    if (fail) {
        work_free(w);
        return 2;
    }
    if (w->full) { /* every group is present at every step */
        ptrdiff_t k = 0;
        for (int t = 0; t < m->nterms; t++)
            for (int j = 0; j < m->terms[t].ngroups; j++, k++) {
                w->pres_term[k] = t;
                w->pres_group[k] = j;
                w->pres_cnt[k] = m->terms[t].nobs[j];
            }
        w->npres = k;
    }
    return 0;
}

/* ---- coupled guide ---------------------------------------------------------
 * Under the plain guide q(theta) q(z) the fixed effects cannot trade off
 * against the common level of the random effects (the intercept against the
 * groups' mean, a fixed slope against the random slopes' mean): the
 * likelihood pins their sum, so q(beta) comes out far too narrow. Where a
 * column k of a term's Z lies in X's span (Z[, k] = X a_k), the guide couples
 * the two: with d = beta - c (c a fixed reference point),
 *   s_tk = omega_tk (K_t d)_k,   K_t = (a_t^T a_t)^{-1} a_t^T,
 *   z_tj = z0_tj - w_t,          w_t = A_t^{-1} E_t s_t,   z0_tj ~ N(m_tj, C_tj C_tj^T),
 * so b_tj = A_t z0_tj - E_t s_t and the linear predictor sees
 * beta_eff = beta - sum_tk s_tk a_tk. The shares omega_tk of columns with
 * the same a add to one, so a deviation of beta along the span reaches the
 * likelihood not at all and the random effects' prior alone sets its spread
 * (sd^2 / J for a random intercept), as in the exact posterior. This is
 * still a valid guide q(theta) q(z | theta), with the same entropy. */
static int coupling_init(work *w)
{
    const svir_model *m = w->m;
    const int p = m->p, nt = m->nterms;
    int fail = 0;
    w->cns = xcalloc((size_t)nt, sizeof(int), &fail);
    w->coff = xcalloc((size_t)nt, sizeof(int), &fail);
    w->qoff = xcalloc((size_t)nt, sizeof(int), &fail);
    if (fail) return 1;
    int ns = 0, qs = 0;
    for (int t = 0; t < nt; t++) {
        const svir_term *tm = &m->terms[t];
        w->coff[t] = ns;
        w->qoff[t] = qs;
        qs += tm->q;
        if (!w->c->couple || !tm->xmap || p == 0 || tm->ngroups < 2) continue;
        for (int k = 0; k < tm->q; k++)
            if (!isnan(tm->xmap[(ptrdiff_t)k * p])) w->cns[t]++;
        ns += w->cns[t];
    }
    w->couple = ns > 0;
    w->sumq = qs;
    w->cS = xcalloc((size_t)ns, sizeof(int), &fail);
    w->ca = xcalloc((size_t)ns * (size_t)p, sizeof(double), &fail);
    w->cK = xcalloc((size_t)ns * (size_t)p, sizeof(double), &fail);
    w->comega = xcalloc((size_t)ns, sizeof(double), &fail);
    w->cref = xcalloc((size_t)p, sizeof(double), &fail);
    w->cu = xcalloc((size_t)qs, sizeof(double), &fail);
    w->cw = xcalloc((size_t)qs, sizeof(double), &fail);
    w->cdw = xcalloc((size_t)qs, sizeof(double), &fail);
    w->cds = xcalloc((size_t)ns, sizeof(double), &fail);
    if (fail) return 1;
    for (int t = 0; t < nt; t++) {
        const svir_term *tm = &m->terms[t];
        const int n_s = w->cns[t], o = w->coff[t];
        if (n_s == 0) continue;
        int s = 0;
        for (int k = 0; k < tm->q; k++)
            if (!isnan(tm->xmap[(ptrdiff_t)k * p])) {
                w->cS[o + s] = k;
                memcpy(w->ca + (size_t)(o + s) * p, tm->xmap + (ptrdiff_t)k * p, sizeof(double) * (size_t)p);
                s++;
            }
        /* K = (a^T a)^{-1} a^T by Gauss-Jordan on [a^T a | a^T] */
        const int wd = n_s + p;
        double *N = calloc((size_t)n_s * (size_t)wd, sizeof(double));
        if (!N) return 1;
        for (int r = 0; r < n_s; r++) {
            const double *ar = w->ca + (size_t)(o + r) * p;
            for (int cc = 0; cc < n_s; cc++) {
                const double *ac = w->ca + (size_t)(o + cc) * p;
                double acc = 0.0;
                for (int i = 0; i < p; i++) acc += ar[i] * ac[i];
                N[r * wd + cc] = acc;
            }
            for (int i = 0; i < p; i++) N[r * wd + n_s + i] = ar[i];
        }
        for (int r = 0; r < n_s; r++) {
            const double piv = N[r * wd + r];
            if (!(fabs(piv) > 1e-12)) { free(N); return 1; }
            for (int cc = 0; cc < wd; cc++) N[r * wd + cc] /= piv;
            for (int r2 = 0; r2 < n_s; r2++) {
                if (r2 == r) continue;
                const double f = N[r2 * wd + r];
                for (int cc = 0; cc < wd; cc++) N[r2 * wd + cc] -= f * N[r * wd + cc];
            }
        }
        for (int r = 0; r < n_s; r++)
            for (int i = 0; i < p; i++) w->cK[(size_t)(o + r) * p + i] = N[r * wd + n_s + i];
        free(N);
    }
    return 0;
}

/* Reference point and shares from the means `gpar` (beta and log sd): a
 * column's share of a direction is its sd^2 / J among the columns with the
 * same a. */
static void coupling_update(work *w, const double *gpar)
{
    const svir_model *m = w->m;
    if (!w->couple) return;
    const int ns = w->coff[m->nterms - 1] + w->cns[m->nterms - 1];
    /* the constants alone (svir_coupling_new calls this before w->cp is set) */
    svir_coupling cp;
    svir_coupling_view(&cp, 1, w->sumq, w->cns, w->coff, w->qoff, w->cS, w->ca, w->cK, w->comega,
                       w->cref);
    svir_coupling_shares(m, &cp, ns, gpar, w->cref, w->comega, w->cds /* scratch */);
}

/* s, beta_eff, u = E s and w = A^{-1} u for the draw theta (A from g). */
static void coupling_forward(const work *w, const double *theta, const svir_globals *g,
                             double *beta_eff, double *u, double *wv)
{
    svir_coupling_forward(w->m, &w->cp, theta, g, beta_eff, u, wv);
}

/* Re-anchors the coupling at new means `src` (reference point and shares).
 * Each parameter set (gpars[i], lpars[i]) keeps its conditional mean of z at
 * theta = its own mean: m -= w_old - w_new. */
static void coupling_reanchor(work *w, const double *src, int nsets, double *const *gpars,
                              double *const *lpars)
{
    const svir_model *m = w->m;
    if (!w->couple) return;
    const int p = m->p, ns = w->coff[m->nterms - 1] + w->cns[m->nterms - 1];
    double *old_ref = malloc(sizeof(double) * (size_t)(p + 1));
    double *old_om = malloc(sizeof(double) * (size_t)(ns + 1));
    double *new_ref = malloc(sizeof(double) * (size_t)(p + 1));
    double *new_om = malloc(sizeof(double) * (size_t)(ns + 1));
    double *wold = malloc(sizeof(double) * (size_t)(w->sumq + 1));
    if (!old_ref || !old_om || !new_ref || !new_om || !wold) goto out;
    memcpy(old_ref, w->cref, sizeof(double) * (size_t)p);
    memcpy(old_om, w->comega, sizeof(double) * (size_t)ns);
    coupling_update(w, src);
    memcpy(new_ref, w->cref, sizeof(double) * (size_t)p);
    memcpy(new_om, w->comega, sizeof(double) * (size_t)ns);
    for (int i = 0; i < nsets; i++) {
        svir_unpack_globals(m, gpars[i], &w->g);
        memcpy(w->cref, old_ref, sizeof(double) * (size_t)p);
        memcpy(w->comega, old_om, sizeof(double) * (size_t)ns);
        coupling_forward(w, gpars[i], &w->g, w->beta_eff, w->cu, wold);
        memcpy(w->cref, new_ref, sizeof(double) * (size_t)p);
        memcpy(w->comega, new_om, sizeof(double) * (size_t)ns);
        coupling_forward(w, gpars[i], &w->g, w->beta_eff, w->cu, w->cw);
        for (int t = 0; t < m->nterms; t++) {
            if (w->cns[t] == 0) continue;
            const svir_term *tm = &m->terms[t];
            const int q = tm->q;
            for (int j = 0; j < tm->ngroups; j++) {
                double *mj = lpars[i] + tm->off_loc + (ptrdiff_t)j * svir_local_block(q);
                for (int r = 0; r < q; r++) mj[r] -= wold[w->qoff[t] + r] - w->cw[w->qoff[t] + r];
            }
        }
    }
out:
    free(old_ref); free(old_om); free(new_ref); free(new_om); free(wold);
}

/* After the local gradients of one draw: the coupling's share of the ELBO
 * (returned: minus the change of the weighted local KL terms, whose mean is
 * m - w rather than m) and its gradient, back through w = A^{-1} E s and
 * s = omega K (beta - c) into A (w->dA) and beta (w->gtheta). */
static double coupling_backward(work *w, const double *lpar, int stl)
{
    const svir_model *m = w->m;
    double val = 0.0;
    memset(w->cdw, 0, sizeof(double) * (size_t)w->sumq);
    for (ptrdiff_t k = 0; k < w->npres; k++) {
        const int t = w->pres_term[k];
        if (w->cns[t] == 0) continue;
        const svir_term *tm = &m->terms[t];
        const int q = tm->q, j = w->pres_group[k];
        const double wt = w->scale * w->pres_cnt[k] / tm->nobs[j];
        const double *wv = w->cw + w->qoff[t];
        const double *mj = lpar + tm->off_loc + (ptrdiff_t)j * svir_local_block(q);
        const double *z0 = w->z + tm->off_z + (ptrdiff_t)j * q;
        double *dw = w->cdw + w->qoff[t];
        for (int r = 0; r < q; r++) {
            val -= wt * (-mj[r] * wv[r] + 0.5 * wv[r] * wv[r]);
            dw[r] += wt * (stl ? z0[r] - wv[r] : mj[r] - wv[r]);
        }
    }
    svir_coupling_back_terms(m, &w->cp, &w->g, w->cw, w->cdw, w->cds, w->dA, w->gtheta);
    return val;
}

/* The minibatch of step s: positions s*B .. s*B+B-1 of an endless sequence of
 * epochs, each a keyed permutation of 0..n-1 (sampling without replacement
 * within an epoch). */
static void select_batch(work *w, long step)
{
    const svir_model *m = w->m;
    const uint64_t n = (uint64_t)m->n;
    const long stamp_id = step + 1;
    w->npres = 0;
    for (ptrdiff_t k = 0; k < w->B; k++) {
        const uint64_t pos = (uint64_t)step * (uint64_t)w->B + (uint64_t)k;
        const uint64_t epoch = pos / n;
        const ptrdiff_t i = (ptrdiff_t)svir_perm_index(pos % n, n, w->key, (uint32_t)epoch);
        w->idx[k] = i;
        for (int t = 0; t < m->nterms; t++) {
            const int j = m->terms[t].group[i];
            const ptrdiff_t gid = w->goff[t] + j;
            if (w->stamp[gid] != stamp_id) {
                w->stamp[gid] = stamp_id;
                w->slot[gid] = w->npres;
                w->pres_term[w->npres] = t;
                w->pres_group[w->npres] = j;
                w->pres_cnt[w->npres] = 0.0;
                w->npres++;
            }
            w->pres_cnt[w->slot[gid]] += 1.0;
        }
    }
}

/* theta = mu + sigma * eps (meanfield) or mu + L eps (fullrank). */
static void draw_theta(const work *w, const double *gpar, uint64_t stream, uint64_t step,
                       uint64_t base, double *eps, double *theta)
{
    const ptrdiff_t D = w->D;
    for (ptrdiff_t d = 0; d < D; d++)
        eps[d] = svir_normal(w->key, stream, step, base + (uint64_t)d);
    svir_guide_theta(D, w->c->guide == SVIR_GUIDE_FULLRANK, gpar, eps, theta);
}


/* The local noise of particle s at `step`: entry k of z takes normal number
 * s * nz + k of the local stream. Full batches fill it in bulk (pairs). */
static void fill_local_noise(work *w, uint64_t stream, uint64_t step, uint64_t first)
{
    const ptrdiff_t nz = w->m->nz, chunk = 8192;
    const ptrdiff_t nchunks = (nz + chunk - 1) / chunk;
#ifdef _OPENMP
#pragma omp parallel for num_threads(w->T) schedule(static) if (nz >= 4 * SVIR_PAR_GROUPS)
#endif
    for (ptrdiff_t ch = 0; ch < nchunks; ch++) {
        const ptrdiff_t lo = ch * chunk, cnt = nz - lo < chunk ? nz - lo : chunk;
        svir_normal_fill(w->key, stream, step, first + (uint64_t)lo, cnt, w->noise + lo);
    }
}

/* sum_k x[k], in svir_dot4's order: the same as svir_dot4 with a column of ones */
static inline double sum4(const double *x, int n)
{
    double a0 = 0.0, a1 = 0.0, a2 = 0.0, a3 = 0.0;
    int k = 0;
    for (; k + 4 <= n; k += 4) {
        a0 += x[k];
        a1 += x[k + 1];
        a2 += x[k + 2];
        a3 += x[k + 3];
    }
    for (; k < n; k++) a0 += x[k];
    return (a0 + a1) + (a2 + a3);
}

/* Observations lo..hi-1 of the batch: adds log p(y_i | eta_i) (without
 * constants) to *ll and the gradients to g (beta), G (b) and *ga (log aux).
 * Inlined once per family and link, so the switch leaves the hot loop.
 *
 * Observations go in chunks. The fixed part X beta and the gradient X^T de
 * are column passes over a chunk (streaming, no dependencies between
 * elements); the random-effect part, the likelihood and the scatter of de
 * into the groups are one fused loop, specialised (NT = 1..4) for models
 * whose terms are all random intercepts so that every group pointer stays in
 * a register. A term whose data are sorted by group (w->runs) adds each run
 * of equal groups in a register instead of through memory; the first such
 * term sits in slot 0 of w->gcat and the loop is specialised on whether
 * there is one (NR), so no per-term test is left inside it. */
#define SVIR_CHUNK 512

SVIR_ALWAYS_INLINE void chunk_terms_fast(const work *w, const int NT, const int NR,
                                         const int family, const int link, const svir_aux *aux,
                                         const ptrdiff_t *ix, ptrdiff_t k0, int nk,
                                         const double *eta, double *de, double *G,
                                         double *ll_out, double *ga_out)
{
    /* ix == NULL: the full batch, observations k0 .. k0 + nk - 1. Each
     * observation's NT positions in b (and G) sit side by side in w->gcat,
     * so the loop needs one index pointer and one base pointer each for b
     * and G, whatever NT is: few enough registers that nothing spills. */
    const svir_model *m = w->m;
    /* a local copy: the stores into G cannot alias it, so sigma and phi
     * stay in registers */
    const svir_aux al = *aux;
    const int *gc = w->gcat;
    const double *b = w->b;
    int gp = gc[(ix ? ix[0] : k0) * NT];
    double acc = 0.0;
    double ll = 0.0, ga = 0.0, ss = 0.0;
    for (int k = 0; k < nk; k++) {
        const ptrdiff_t i = ix ? ix[k] : k0 + k;
        const int *gi = gc + i * NT;
        double e = eta[k];
        SVIR_UNROLL4
        for (int t = 0; t < NT; t++) e += b[gi[t]];
        double d;
        if (family == SVIR_GAUSSIAN) {
            /* only the sum of u = r^2 / sigma^2 (svir_loglik_gauss_sum):
             * three operations per observation instead of seven */
            const double r = m->y[i] - e;
            d = r * al.inv_s2;
            ss += r * d;
        } else {
            double da;
            ll += svir_loglik(m, family, link, i, e, &al, &d, &da);
            ga += da;
        }
        de[k] = d;
        if (NR) {
            const int gk = gi[0];
            if (gk != gp) {
                G[gp] += acc;
                acc = 0.0;
                gp = gk;
            }
            acc += d;
        }
        SVIR_UNROLL4
        for (int t = NR; t < NT; t++) G[gi[t]] += d;
    }
    if (NR) G[gp] += acc;
    if (family == SVIR_GAUSSIAN) ll = svir_loglik_gauss_sum(&al, ss, (double)nk, &ga);
    *ll_out += ll;
    *ga_out += ga;
}

/* any terms: the general loop */
SVIR_ALWAYS_INLINE void chunk_terms_general(const work *w, const int family, const int link,
                                            const svir_aux *aux, const ptrdiff_t *ix, int nk,
                                            double *eta, double *de, double *G, double *ll_out,
                                            double *ga_out)
{
    const svir_model *m = w->m;
    const ptrdiff_t n = m->n;
    for (int t = 0; t < m->nterms; t++) {
        const svir_term *tm = &m->terms[t];
        const int *grp = tm->group, q = tm->q;
        const double *bt = w->b + tm->off_z;
        if (tm->z_ones) {
            for (int k = 0; k < nk; k++) eta[k] += bt[grp[ix[k]]];
        } else {
            for (int c = 0; c < q; c++) {
                const double *zc = tm->Z + (ptrdiff_t)c * n;
                for (int k = 0; k < nk; k++) {
                    const ptrdiff_t i = ix[k];
                    eta[k] += zc[i] * bt[(ptrdiff_t)grp[i] * q + c];
                }
            }
        }
    }
    double ll = 0.0, ga = 0.0;
    for (int k = 0; k < nk; k++) {
        double da;
        ll += svir_loglik(m, family, link, ix[k], eta[k], aux, &de[k], &da);
        ga += da;
    }
    *ll_out += ll;
    *ga_out += ga;
    for (int t = 0; t < m->nterms; t++) {
        const svir_term *tm = &m->terms[t];
        const int *grp = tm->group, q = tm->q;
        double *Gt = G + tm->off_z;
        if (tm->z_ones && w->runs[t]) {
            int gp = grp[ix[0]];
            double acc = 0.0;
            for (int k = 0; k < nk; k++) {
                const int gk = grp[ix[k]];
                if (gk != gp) {
                    Gt[gp] += acc;
                    acc = 0.0;
                    gp = gk;
                }
                acc += de[k];
            }
            Gt[gp] += acc;
        } else if (tm->z_ones) {
            for (int k = 0; k < nk; k++) Gt[grp[ix[k]]] += de[k];
        } else {
            for (int c = 0; c < q; c++) {
                const double *zc = tm->Z + (ptrdiff_t)c * n;
                for (int k = 0; k < nk; k++) {
                    const ptrdiff_t i = ix[k];
                    Gt[(ptrdiff_t)grp[i] * q + c] += de[k] * zc[i];
                }
            }
        }
    }
}

SVIR_ALWAYS_INLINE void range_loglik(const work *w, ptrdiff_t lo, ptrdiff_t hi, const int family,
                                const int link, const svir_aux *aux, double *g, double *G,
                                double *ll_out, double *ga_out)
{
    const svir_model *m = w->m;
    const ptrdiff_t n = m->n;
    const int p = m->p;
    const double *beta = w->beta_eff;
    double eta[SVIR_CHUNK], de[SVIR_CHUNK], xv[SVIR_CHUNK];
    ptrdiff_t ix[SVIR_CHUNK];
    double ll = 0.0, ga = 0.0;
    for (ptrdiff_t k0 = lo; k0 < hi; k0 += SVIR_CHUNK) {
        const int nk = (int)(hi - k0 < SVIR_CHUNK ? hi - k0 : SVIR_CHUNK);
        if (w->full) {
            if (!w->nt_fast)
                for (int k = 0; k < nk; k++) ix[k] = k0 + k;
        } else {
            for (int k = 0; k < nk; k++) ix[k] = w->idx[k0 + k];
        }
        /* eta = offset + X beta; the intercept column is not read (adding
         * 1 * b0 to 0 or to the offset is the same as adding b0) */
        const double b0 = m->x_ones >= 0 ? beta[m->x_ones] : 0.0;
        if (m->offset && w->full) {
            SVIR_SIMD
            for (int k = 0; k < nk; k++) eta[k] = m->offset[k0 + k] + b0;
        } else if (m->offset) {
            for (int k = 0; k < nk; k++) eta[k] = m->offset[ix[k]] + b0;
        } else {
            SVIR_SIMD
            for (int k = 0; k < nk; k++) eta[k] = b0;
        }
        for (int c = 0; c < p; c++) {
            if (c == m->x_ones) continue;
            const double *xc = m->X + (ptrdiff_t)c * n, bc = beta[c];
            if (w->full) {
                xc += k0;
                SVIR_SIMD
                for (int k = 0; k < nk; k++) eta[k] += xc[k] * bc;
            } else {
                for (int k = 0; k < nk; k++) eta[k] += xc[ix[k]] * bc;
            }
        }
        /* + Z b, likelihood, d/d b */
        /* full batches pass ix = NULL as a constant: a loop of their own */
#define FAST1(NT, NR)                                                                          \
        if (w->full)                                                                           \
            chunk_terms_fast(w, NT, NR, family, link, aux, NULL, k0, nk, eta, de, G, &ll, &ga); \
        else                                                                                   \
            chunk_terms_fast(w, NT, NR, family, link, aux, ix, k0, nk, eta, de, G, &ll, &ga);
#define FAST(NT)                                                                               \
    case NT:                                                                                   \
        if (w->nrun) { FAST1(NT, 1) } else { FAST1(NT, 0) }                                    \
        break;
        switch (w->nt_fast) {
        FAST(1) FAST(2) FAST(3) FAST(4)
        default: chunk_terms_general(w, family, link, aux, ix, nk, eta, de, G, &ll, &ga); break;
        }
#undef FAST
#undef FAST1
        /* d/d beta = X^T de */
        for (int c = 0; c < p; c++) {
            const double *xc = m->X + (ptrdiff_t)c * n;
            if (c == m->x_ones) {
                g[c] += sum4(de, nk);
            } else if (w->full) {
                g[c] += svir_dot4(xc + k0, de, nk);
            } else {
                for (int k = 0; k < nk; k++) xv[k] = xc[ix[k]];
                g[c] += svir_dot4(xv, de, nk);
            }
        }
    }
    *ll_out = ll;
    *ga_out = ga;
}

/* Sum over the batch of log p(y_i | eta_i) (without constants) and its
 * gradients: beta (gb, [p]), b (w->Gt thread 0, present groups), log aux. */
static double batch_loglik(work *w, double *gb, double *gaux)
{
    const svir_model *m = w->m;
    const ptrdiff_t nb = w->B, nz = m->nz;
    const int T = w->T, p = m->p;
    svir_aux aux;
    svir_aux_set(&aux, w->g.sigma, w->g.phi);
    /* zero the per-thread d/db buffers at the present groups */
#ifdef _OPENMP
#pragma omp parallel for num_threads(T) schedule(static) if (w->npres >= SVIR_PAR_GROUPS)
#endif
    for (ptrdiff_t k = 0; k < w->npres; k++) {
        const svir_term *tm = &m->terms[w->pres_term[k]];
        const ptrdiff_t pos = tm->off_z + (ptrdiff_t)w->pres_group[k] * tm->q;
        for (int tid = 0; tid < T; tid++) {
            double *Gp = w->Gt + (size_t)tid * (size_t)nz + pos;
            for (int c = 0; c < tm->q; c++) Gp[c] = 0.0;
        }
    }
#ifdef _OPENMP
#pragma omp parallel num_threads(T)
#endif
    {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        const ptrdiff_t lo = nb * tid / T, hi = nb * (tid + 1) / T;
        double *G = w->Gt + (size_t)tid * (size_t)nz;
        double *g = w->gbt + (size_t)tid * (size_t)p;
        double ll = 0.0, ga = 0.0;
        for (int k = 0; k < p; k++) g[k] = 0.0;
#define RANGE(FAM, LINK) range_loglik(w, lo, hi, FAM, LINK, &aux, g, G, &ll, &ga)
        SVIR_FAMILY_DISPATCH(m, RANGE)
#undef RANGE
        w->llt[tid] = ll;
        w->gauxt[tid] = ga;
    }
    /* deterministic reductions: thread order */
    double ll = 0.0;
    *gaux = 0.0;
    for (int k = 0; k < p; k++) gb[k] = 0.0;
    for (int tid = 0; tid < T; tid++) {
        ll += w->llt[tid];
        *gaux += w->gauxt[tid];
        for (int k = 0; k < p; k++) gb[k] += w->gbt[(size_t)tid * (size_t)p + k];
    }
    if (T > 1) {
#ifdef _OPENMP
#pragma omp parallel for num_threads(T) schedule(static) if (w->npres >= SVIR_PAR_GROUPS)
#endif
        for (ptrdiff_t k = 0; k < w->npres; k++) {
            const svir_term *tm = &m->terms[w->pres_term[k]];
            const ptrdiff_t pos = tm->off_z + (ptrdiff_t)w->pres_group[k] * tm->q;
            for (int tid = 1; tid < T; tid++)
                for (int c = 0; c < tm->q; c++)
                    w->Gt[pos + c] += w->Gt[(size_t)tid * (size_t)nz + pos + c];
        }
    }
    return ll;
}

/* The full batch's per-group work for a random-intercept term (q = 1), as
 * flat loops over its groups: the same arithmetic as svir_local_draw, svir_local_b
 * and the general loops over present groups in estimate, without their
 * per-group indexing and loops of length one. */
static void draw_q1(work *w, const svir_term *tm, const double *lpar)
{
    const ptrdiff_t J = tm->ngroups;
    const double A = w->g.A[tm->off_qq];
    const double *lp = lpar + tm->off_loc, *nz = w->noise + tm->off_z;
    double *z = w->z + tm->off_z, *ed = w->ediag + tm->off_z, *b = w->b + tm->off_z;
#ifdef _OPENMP
#pragma omp parallel for num_threads(w->T) schedule(static) if (J >= SVIR_PAR_GROUPS)
#endif
    for (ptrdiff_t j = 0; j < J; j++) {
        const double e = exp(lp[2 * j + 1]), zj = lp[2 * j] + e * nz[j];
        ed[j] = e;
        z[j] = zj;
        b[j] = A * zj;
    }
}

/* Back through b = A z for term t: d/dA (into w->dA, in group order) and the
 * gradients of the groups' local parameters. */
static void back_q1(work *w, int t, double *lgrad, double invS, int stl)
{
    const svir_model *m = w->m;
    const svir_term *tm = &m->terms[t];
    const ptrdiff_t J = tm->ngroups;
    /* the full batch: scale is 1 and every group's weight, its count in the
     * batch over its number of observations, is too */
    const double A = w->g.A[tm->off_qq], scale = w->scale, wt = scale;
    const double *G = w->Gt + tm->off_z, *nz = w->noise + tm->off_z;
    const double *z = w->z + tm->off_z, *ed = w->ediag + tm->off_z;
    const double *wt_shift = w->couple ? w->cw + w->qoff[t] : NULL;
    const double shift = wt_shift ? wt_shift[0] : 0.0;
    double *lg = lgrad + tm->off_loc;
    double dA = w->dA[tm->off_qq];
    for (ptrdiff_t j = 0; j < J; j++) dA += scale * G[j] * z[j];
    w->dA[tm->off_qq] = dA;
#ifdef _OPENMP
#pragma omp parallel for num_threads(w->T) schedule(static) if (J >= SVIR_PAR_GROUPS)
#endif
    for (ptrdiff_t j = 0; j < J; j++) {
        double dz = scale * (A * G[j]);
        if (stl) {
            dz += wt * (nz[j] / ed[j] - z[j] + shift);
        } else if (wt_shift) {
            lg[2 * j] += invS * wt * shift;
        }
        const double d = dz * invS;
        lg[2 * j] += d;
        lg[2 * j + 1] += d * nz[j] * ed[j];
    }
}

/* ELBO estimate at (gpar, lpar) with the noise and minibatch of `step`;
 * writes the gradient into ggrad [ngp] and, for present groups, lgrad [nloc].
 * Assumes select_batch was called for this step (minibatch). */
static double estimate(work *w, long step, const double *gpar, const double *lpar,
                       double *ggrad, double *lgrad)
{
    double tp = svir_wall_time(); /* time split: the mark of the last lap */
#define SVIR_LAP(PHASE)                                \
    do {                                               \
        const double tn_ = svir_wall_time();           \
        w->tsplit[PHASE] += tn_ - tp;                  \
        tp = tn_;                                      \
    } while (0)
    const svir_model *m = w->m;
    const svir_control *c = w->c;
    const ptrdiff_t D = w->D;
    const int S = c->num_particles > 0 ? c->num_particles : 1;
    const double invS = 1.0 / S, scale = w->scale;
    const int fullrank = c->guide == SVIR_GUIDE_FULLRANK;
    const int stl = c->stl;
    double elbo = 0.0;
    double *gb = w->gb;

    memset(ggrad, 0, sizeof(double) * (size_t)w->ngp);
    if (w->full) {
        memset(lgrad, 0, sizeof(double) * (size_t)m->nloc);
    } else {
        for (ptrdiff_t k = 0; k < w->npres; k++) {
            const svir_term *tm = &m->terms[w->pres_term[k]];
            const ptrdiff_t lb = svir_local_block(tm->q);
            double *lg = lgrad + tm->off_loc + (ptrdiff_t)w->pres_group[k] * lb;
            for (ptrdiff_t c = 0; c < lb; c++) lg[c] = 0.0;
        }
    }

    for (int s = 0; s < S; s++) {
        draw_theta(w, gpar, SVIR_STREAM_GLOBAL, (uint64_t)step, (uint64_t)s * (uint64_t)D,
                   w->eps, w->theta);
        svir_unpack_globals(m, w->theta, &w->g);
        coupling_forward(w, w->theta, &w->g, w->beta_eff, w->cu, w->cw);
        memset(w->gtheta, 0, sizeof(double) * (size_t)D);
        double lp = svir_log_prior(m, w->theta, w->gtheta);

        /* local draws for the present groups */
        if (w->full)
            fill_local_noise(w, SVIR_STREAM_LOCAL, (uint64_t)step, (uint64_t)s * (uint64_t)m->nz);
#ifdef _OPENMP
#pragma omp parallel for num_threads(w->T) schedule(static) if (w->npres >= SVIR_PAR_GROUPS)
#endif
        for (ptrdiff_t k = 0; k < w->npres; k++) {
            const svir_term *tm = &m->terms[w->pres_term[k]];
            const int q = tm->q, j = w->pres_group[k];
            if (w->full && q == 1) continue; /* draw_q1 */
            const ptrdiff_t pos = tm->off_z + (ptrdiff_t)j * q;
            const double *blk = lpar + tm->off_loc + (ptrdiff_t)j * svir_local_block(q);
            if (!w->full)
                svir_normal_fill(w->key, SVIR_STREAM_LOCAL, (uint64_t)step,
                                 (uint64_t)s * (uint64_t)m->nz + (uint64_t)pos, q, w->noise + pos);
            svir_local_exp_diag(q, blk, w->ediag + pos);
            svir_local_draw(q, blk, w->noise + pos, w->ediag + pos, w->z + pos);
            svir_local_b(q, w->g.A + tm->off_qq, w->z + pos, w->b + pos);
        }
        if (w->full)
            for (int t = 0; t < m->nterms; t++)
                if (m->terms[t].q == 1) draw_q1(w, &m->terms[t], lpar);

        double gaux;
        SVIR_LAP(SVIR_PHASE_DRAW);
        const double ll = batch_loglik(w, gb, &gaux);
        SVIR_LAP(SVIR_PHASE_OBS);
        for (int k = 0; k < m->p; k++) w->gtheta[k] += scale * gb[k];
        if (w->couple) {
            /* beta_eff = beta - sum s_tk a_tk */
            const int ns = w->coff[m->nterms - 1] + w->cns[m->nterms - 1];
            for (int o = 0; o < ns; o++) {
                double acc = 0.0;
                for (int i = 0; i < m->p; i++) acc += w->ca[(size_t)o * m->p + i] * gb[i];
                w->cds[o] = -scale * acc;
            }
        }
        if (m->off_sigma >= 0) w->gtheta[m->off_sigma] += scale * gaux;
        if (m->off_phi >= 0) w->gtheta[m->off_phi] += scale * gaux;
        elbo += invS * (m->ll_const + scale * ll + lp);

        /* back through b = A z: to the local parameters and to A */
        memset(w->dA, 0, sizeof(double) * (size_t)m->nqq);
        for (ptrdiff_t k = 0; k < w->npres; k++) {
            const svir_term *tm = &m->terms[w->pres_term[k]];
            const int q = tm->q, j = w->pres_group[k];
            if (w->full && q == 1) continue; /* back_q1 */
            const ptrdiff_t pos = tm->off_z + (ptrdiff_t)j * q;
            const double *G = w->Gt + pos, *zj = w->z + pos;
            double *dA = w->dA + tm->off_qq;
            for (int r = 0; r < q; r++)
                for (int cc = 0; cc <= r; cc++) dA[r * q + cc] += scale * G[r] * zj[cc];
        }
#ifdef _OPENMP
#pragma omp parallel for num_threads(w->T) schedule(static) if (w->npres >= SVIR_PAR_GROUPS)
#endif
        for (ptrdiff_t k = 0; k < w->npres; k++) {
            const svir_term *tm = &m->terms[w->pres_term[k]];
            const int q = tm->q, j = w->pres_group[k];
            if (w->full && q == 1) continue; /* back_q1 */
            const ptrdiff_t pos = tm->off_z + (ptrdiff_t)j * q;
            const double *G = w->Gt + pos, *nz = w->noise + pos, *A = w->g.A + tm->off_qq;
            const ptrdiff_t lo = tm->off_loc + (ptrdiff_t)j * svir_local_block(q);
            const double *Cp = lpar + lo + q, *zj = w->z + pos;
            const double *wt_shift = w->couple ? w->cw + w->qoff[w->pres_term[k]] : NULL;
            const double wt = scale * w->pres_cnt[k] / tm->nobs[j];
            svir_local_backward(q, A, G, nz, zj, w->ediag + pos, Cp, wt_shift, scale, wt, invS,
                                stl, lgrad + lo, lgrad + lo + q);
        }
        if (w->full)
            for (int t = 0; t < m->nterms; t++)
                if (m->terms[t].q == 1) back_q1(w, t, lgrad, invS, stl);
        if (w->couple) elbo += invS * coupling_backward(w, lpar, stl);
        for (int t = 0; t < m->nterms; t++)
            svir_backprop_A(m, t, w->theta, &w->g, w->dA + m->terms[t].off_qq, w->gtheta);

        /* reparameterisation of the global guide; with stl the entropy's
         * gradient is the path derivative -d log q / d theta, not analytic */
        svir_guide_backward(D, fullrank, stl, gpar, w->eps, w->gtheta, invS, ggrad, w->u);
        SVIR_LAP(SVIR_PHASE_BACKWARD);
    }

    /* entropy of the global guide */
    const double H = svir_guide_entropy(D, fullrank, stl, gpar, ggrad);
    elbo += H;

    /* exact local KL terms, charged to the batch */
    double kl = 0.0;
    for (ptrdiff_t k = 0; k < w->npres; k++) {
        const svir_term *tm = &m->terms[w->pres_term[k]];
        const int q = tm->q, j = w->pres_group[k];
        const ptrdiff_t lo = tm->off_loc + (ptrdiff_t)j * svir_local_block(q);
        const double wt = scale * w->pres_cnt[k] / tm->nobs[j];
        const double *mj = lpar + lo, *Cp = lpar + lo + q;
        double *gm = lgrad + lo, *gC = lgrad + lo + q;
        const double gw = stl ? 0.0 : wt; /* with stl the gradient came with the draws */
        kl += svir_local_kl(q, mj, Cp, w->ediag + tm->off_z + (ptrdiff_t)j * q, wt, gw, gm, gC);
    }
    elbo -= kl;
    SVIR_LAP(SVIR_PHASE_BACKWARD);
#undef SVIR_LAP
    return elbo;
}

static int all_finite(const double *x, ptrdiff_t n)
{
    for (ptrdiff_t k = 0; k < n; k++)
        if (!isfinite(x[k])) return 0;
    return 1;
}

static int locals_finite(const work *w, const double *lgrad)
{
    const svir_model *m = w->m;
    for (ptrdiff_t k = 0; k < w->npres; k++) {
        const svir_term *tm = &m->terms[w->pres_term[k]];
        const ptrdiff_t lb = svir_local_block(tm->q);
        if (!all_finite(lgrad + tm->off_loc + (ptrdiff_t)w->pres_group[k] * lb, lb)) return 0;
    }
    return 1;
}

void svir_init_params(const svir_model *m, const svir_control *c, double *gpar, double *lpar)
{
    const ptrdiff_t D = m->D;
    const double ls = log(c->init_scale > 0 ? c->init_scale : 0.1);
    for (ptrdiff_t d = 0; d < D; d++) gpar[d] = c->init_mu ? c->init_mu[d] : 0.0;
#define SVIR_LS0(d) (c->init_sd ? log(c->init_sd[d]) : ls)
    if (c->guide == SVIR_GUIDE_FULLRANK) {
        for (ptrdiff_t r = 0; r < D; r++)
            for (ptrdiff_t cc = 0; cc <= r; cc++)
                gpar[D + r * (r + 1) / 2 + cc] = cc == r ? SVIR_LS0(r) : 0.0;
    } else {
        for (ptrdiff_t d = 0; d < D; d++) gpar[D + d] = SVIR_LS0(d);
    }
#undef SVIR_LS0
    for (int t = 0; t < m->nterms; t++) {
        const svir_term *tm = &m->terms[t];
        const int q = tm->q;
        for (int j = 0; j < tm->ngroups; j++) {
            double *blk = lpar + tm->off_loc + (ptrdiff_t)j * svir_local_block(q);
            for (int r = 0; r < q; r++) {
                blk[r] = 0.0;
                for (int cc = 0; cc <= r; cc++) blk[q + r * (r + 1) / 2 + cc] = cc == r ? ls : 0.0;
            }
        }
    }
}

/* Posterior draws of the globals, the coupling shifts and the PSIS log ratios.
 * Draws go in blocks of SVIR_LL_BLOCK that share one pass over the data. */
static int final_draws(work *w, const double *gpar, const double *lpar, svir_result *res)
{
    const svir_model *m = w->m;
    const svir_control *c = w->c;
    const ptrdiff_t D = w->D;
    const int nd = c->ndraws;
    enum { NB = SVIR_LL_BLOCK };
    res->ndraws = nd;
    res->nshift = w->sumq;
    if (nd <= 0) return 0;
    res->draws = calloc((size_t)nd * (size_t)D + 1, sizeof(double));
    res->log_ratio = calloc((size_t)nd + 1, sizeof(double));
    res->shift = calloc((size_t)nd * (size_t)w->sumq + 1, sizeof(double));
    if (!res->draws || !res->log_ratio || !res->shift) return 2;
    const int nblocks = (nd + NB - 1) / NB;
    int fail = 0;
    /* the diagonal of every group's C, exp of its stored log: the same for
     * all draws */
    double *edf = malloc(sizeof(double) * (size_t)(m->nz + 1));
    if (!edf) return 2;
    for (int t = 0; t < m->nterms; t++) {
        const svir_term *tm = &m->terms[t];
        const int q = tm->q;
        for (int j = 0; j < tm->ngroups; j++)
            svir_local_exp_diag(q, lpar + tm->off_loc + (ptrdiff_t)j * svir_local_block(q),
                     edf + tm->off_z + (ptrdiff_t)j * q);
    }
#ifdef _OPENMP
#pragma omp parallel num_threads(w->T_draws)
#endif
    {
        double *eps = malloc(sizeof(double) * (size_t)(D + 1));
        double *theta = malloc(sizeof(double) * (size_t)(D + 1));
        double *z = malloc(sizeof(double) * (size_t)(m->nz + 1));
        double *noise = malloc(sizeof(double) * (size_t)(m->nz + 1));
        double *be = malloc(sizeof(double) * (size_t)(m->p + 1));
        double *cu = malloc(sizeof(double) * (size_t)(w->sumq + 1));
        double *cw = malloc(sizeof(double) * (size_t)(w->sumq + 1));
        double *bblk = malloc(sizeof(double) * (size_t)NB * (size_t)(m->nz + 1));
        double *betablk = malloc(sizeof(double) * (size_t)NB * (size_t)(m->p + 1));
        double *bw = malloc(sizeof(double) * (size_t)(m->nz + 1));
        svir_globals g = {0};
        if (!eps || !theta || !z || !noise || !be || !cu || !cw || !bblk || !betablk || !bw ||
            svir_globals_alloc(m, &g)) {
            SVIR_FLAG_SET(fail);
        } else {
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
            for (int blk = 0; blk < nblocks; blk++) {
                const int s0 = blk * NB, nb = nd - s0 < NB ? nd - s0 : NB;
                double rest[NB], ll[NB];
                svir_aux aux[NB];
                for (int sl = 0; sl < NB; sl++) {
                    /* slots past the last draw repeat draw s0 (computed, dropped) */
                    const int s = sl < nb ? s0 + sl : s0;
                    draw_theta(w, gpar, SVIR_STREAM_DRAWS, (uint64_t)s, 0, eps, theta);
                    double logq = 0.0;
                    if (c->guide == SVIR_GUIDE_FULLRANK) {
                        for (ptrdiff_t r = 0; r < D; r++)
                            logq += -0.5 * eps[r] * eps[r] - gpar[D + r * (r + 1) / 2 + r] - SVIR_LOG_SQRT_2PI;
                    } else {
                        for (ptrdiff_t d = 0; d < D; d++)
                            logq += -0.5 * eps[d] * eps[d] - gpar[D + d] - SVIR_LOG_SQRT_2PI;
                    }
                    svir_unpack_globals(m, theta, &g);
                    if (w->couple) {
                        coupling_forward(w, theta, &g, be, cu, cw);
                    } else {
                        memset(cu, 0, sizeof(double) * (size_t)(w->sumq + 1));
                        memset(cw, 0, sizeof(double) * (size_t)(w->sumq + 1));
                    }
                    if (sl < nb) {
                        for (ptrdiff_t d = 0; d < D; d++)
                            res->draws[(size_t)s + (size_t)d * (size_t)nd] = theta[d];
                        for (int k = 0; k < w->sumq; k++)
                            res->shift[(size_t)s + (size_t)k * (size_t)nd] = cu[k];
                    }
                    svir_normal_fill(w->key, SVIR_STREAM_DRAWS_LOCAL, (uint64_t)s, 0, m->nz, noise);
                    for (int t = 0; t < m->nterms; t++) {
                        const svir_term *tm = &m->terms[t];
                        const int q = tm->q;
                        for (int j = 0; j < tm->ngroups; j++) {
                            const ptrdiff_t pos = tm->off_z + (ptrdiff_t)j * q;
                            logq += svir_local_draw(q, lpar + tm->off_loc + (ptrdiff_t)j * svir_local_block(q),
                                                    noise + pos, edf + pos, z + pos);
                            for (int r = 0; r < q; r++) z[pos + r] -= cw[w->qoff[t] + r];
                        }
                    }
                    /* log p(theta) + log N(z; 0, I) - log q */
                    double lp = m->ll_const;
                    for (ptrdiff_t k = 0; k < m->nz; k++) lp += -0.5 * z[k] * z[k] - SVIR_LOG_SQRT_2PI;
                    lp += svir_log_prior(m, theta, NULL);
                    rest[sl] = lp - logq;
                    svir_block_put(m, &g, theta, z, sl, bw, betablk, bblk, aux);
                }
                svir_loglik_block(m, nb, betablk, bblk, aux, ll);
                for (int sl = 0; sl < nb; sl++) res->log_ratio[s0 + sl] = ll[sl] + rest[sl];
            }
        }
        free(eps); free(theta); free(z); free(noise); free(be); free(cu); free(cw);
        free(bblk); free(betablk); free(bw);
        svir_globals_free(&g);
    }
    free(edf);
    return fail ? 2 : 0;
}

int svir_fit(const svir_model *m, const svir_control *c, const svir_callbacks *cb,
             svir_result *res)
{
    memset(res, 0, sizeof(*res));
    work w;
    if (work_init(&w, m, c)) {
        snprintf(res->message, sizeof res->message, "out of memory setting up the fit");
        return 2;
    }
    const ptrdiff_t ngp = w.ngp, nloc = m->nloc;
    const long maxs = c->max_steps > 0 ? c->max_steps : 1;
    const int W = c->eval_every > 0 ? c->eval_every : 100;
    int fail = 0;
    double *gpar = xcalloc((size_t)ngp, sizeof(double), &fail);
    double *lpar = xcalloc((size_t)nloc, sizeof(double), &fail);
    double *gg = xcalloc((size_t)ngp, sizeof(double), &fail);
    double *lg = xcalloc((size_t)nloc, sizeof(double), &fail);
    double *gm1 = xcalloc((size_t)ngp, sizeof(double), &fail);
    double *gm2 = xcalloc((size_t)ngp, sizeof(double), &fail);
    double *lm1 = xcalloc((size_t)nloc, sizeof(double), &fail);
    double *lm2 = xcalloc((size_t)nloc, sizeof(double), &fail);
    double *gsum = xcalloc((size_t)ngp, sizeof(double), &fail);
    double *lsum = xcalloc((size_t)nloc, sizeof(double), &fail);
    double *gprev = xcalloc((size_t)ngp, sizeof(double), &fail);
    double *lprev = xcalloc((size_t)nloc, sizeof(double), &fail);
    res->elbo = xcalloc((size_t)maxs, sizeof(double), &fail);
    res->lr_steps = xcalloc(64, sizeof(long), &fail);
    res->max_windows = (int)(maxs / W + 1);
    res->window_elbo = xcalloc((size_t)res->max_windows, sizeof(double), &fail);
    /* the path: sums of the iterates since the last snapshot, the anchor */
    const int pe = c->path_every;
    double *tg = pe > 0 ? xcalloc((size_t)ngp, sizeof(double), &fail) : NULL;
    double *tl = pe > 0 ? xcalloc((size_t)nloc, sizeof(double), &fail) : NULL;
    double *ganchor = pe > 0 ? xcalloc((size_t)ngp, sizeof(double), &fail) : NULL;
    long nt = 0;
    if (svir_path_alloc(res, c, ngp, nloc)) fail = 1;
    int status = 0;
    if (fail) {
        snprintf(res->message, sizeof res->message, "out of memory allocating variational parameters");
        status = 2;
        goto done;
    }
    svir_init_params(m, c, gpar, lpar);
    coupling_update(&w, gpar);
    if (ganchor) memcpy(ganchor, gpar, sizeof(double) * (size_t)ngp);

    svir_loop L;
    svir_loop_init(&L, maxs, W, c->lr, c->lr_schedule, c->lr_decay, c->patience, c->tol_rel_obj,
                   res->elbo, res->window_elbo);
    long step;
    double t_upd = -1.0; /* when the last estimate() returned */
    const double tstart = svir_wall_time();
    for (step = 0; step < maxs; step++) {
        if (t_upd >= 0.0) {
            w.tsplit[SVIR_PHASE_UPDATE] += svir_wall_time() - t_upd;
            t_upd = -1.0;
        }
        if (cb && cb->interrupted && step % 16 == 0 && cb->interrupted(cb->ctx)) {
            L.stop_reason = SVIR_STOP_INTERRUPTED;
            break;
        }
        if (!w.full) select_batch(&w, step);
        const double elbo = estimate(&w, step, gpar, lpar, gg, lg);
        t_upd = svir_wall_time();
        svir_loop_step(&L, step, elbo, all_finite(gg, ngp) && locals_finite(&w, lg));
        if (L.act & SVIR_LOOP_ACCEPT) {
            const double lr_t = L.lr_t, bc1 = L.bc1, bc2 = L.bc2;
            svir_adam(gpar, gm1, gm2, gg, ngp, lr_t, bc1, bc2);
            if (w.full) {
                /* every group is present: one pass over the local parameters */
                const ptrdiff_t nch = (nloc + 4095) / 4096;
#ifdef _OPENMP
#pragma omp parallel for num_threads(w.T) schedule(static) if (nloc >= 16 * SVIR_PAR_GROUPS)
#endif
                for (ptrdiff_t ch = 0; ch < nch; ch++) {
                    const ptrdiff_t o = ch * 4096, len = nloc - o < 4096 ? nloc - o : 4096;
                    svir_adam(lpar + o, lm1 + o, lm2 + o, lg + o, len, lr_t, bc1, bc2);
                }
            } else {
#ifdef _OPENMP
#pragma omp parallel for num_threads(w.T) schedule(static) if (w.npres >= SVIR_PAR_GROUPS)
#endif
                for (ptrdiff_t k = 0; k < w.npres; k++) {
                    const svir_term *tm = &m->terms[w.pres_term[k]];
                    const ptrdiff_t lb = svir_local_block(tm->q);
                    const ptrdiff_t o = tm->off_loc + (ptrdiff_t)w.pres_group[k] * lb;
                    svir_adam(lpar + o, lm1 + o, lm2 + o, lg + o, lb, lr_t, bc1, bc2);
                }
            }
            /* running sums for the window average of the parameters */
            for (ptrdiff_t k = 0; k < ngp; k++) gsum[k] += gpar[k];
#ifdef _OPENMP
#pragma omp parallel for num_threads(w.T) schedule(static) if (nloc >= 16 * SVIR_PAR_GROUPS)
#endif
            for (ptrdiff_t k = 0; k < nloc; k++) lsum[k] += lpar[k];
            if (pe > 0) {
                for (ptrdiff_t k = 0; k < ngp; k++) tg[k] += gpar[k];
                for (ptrdiff_t k = 0; k < nloc; k++) tl[k] += lpar[k];
                nt++;
            }
            if (cb && cb->progress && step % 10 == 0) cb->progress(cb->ctx, step, maxs, elbo);
        }
        if (pe > 0 && nt > 0 && (step + 1) % pe == 0) {
            /* a snapshot: the average of the iterates since the last one */
            for (ptrdiff_t k = 0; k < ngp; k++) tg[k] /= (double)nt;
            for (ptrdiff_t k = 0; k < nloc; k++) tl[k] /= (double)nt;
            svir_path_push(res, ngp, nloc, step + 1, svir_wall_time() - tstart, tg, tl, ganchor);
            memset(tg, 0, sizeof(double) * (size_t)ngp);
            memset(tl, 0, sizeof(double) * (size_t)nloc);
            nt = 0;
        }
        if (L.act & SVIR_LOOP_WINDOW) {
            /* keep this window's parameter average */
            const double nw = (double)L.nprev;
            for (ptrdiff_t k = 0; k < ngp; k++) gprev[k] = gsum[k] / nw;
            for (ptrdiff_t k = 0; k < nloc; k++) lprev[k] = lsum[k] / nw;
            memset(gsum, 0, sizeof(double) * (size_t)ngp);
            memset(lsum, 0, sizeof(double) * (size_t)nloc);
            if (w.couple) {
                double *gs[2] = {gpar, gprev}, *ls[2] = {lpar, lprev};
                coupling_reanchor(&w, gprev, 2, gs, ls);
                if (pe > 0) {
                    /* the path's sums were in the old anchoring: restart */
                    memcpy(ganchor, gprev, sizeof(double) * (size_t)ngp);
                    memset(tg, 0, sizeof(double) * (size_t)ngp);
                    memset(tl, 0, sizeof(double) * (size_t)nloc);
                    nt = 0;
                }
            }
        }
        if (L.act & SVIR_LOOP_RESET) {
            memset(gm1, 0, sizeof(double) * (size_t)ngp);
            memset(gm2, 0, sizeof(double) * (size_t)ngp);
            memset(lm1, 0, sizeof(double) * (size_t)nloc);
            memset(lm2, 0, sizeof(double) * (size_t)nloc);
        }
        if (L.stopped) {
            step++;
            break;
        }
    }
    if (t_upd >= 0.0) w.tsplit[SVIR_PHASE_UPDATE] += svir_wall_time() - t_upd;
    svir_loop_to_result(&L, step, res);

    /* final parameters: the average over the last complete window, or over the
     * partial one if it is long enough; the current ones after divergence */
    switch (svir_loop_final(&L)) {
    case 1:
        for (ptrdiff_t k = 0; k < ngp; k++) gpar[k] = gsum[k] / (double)L.nsum;
        for (ptrdiff_t k = 0; k < nloc; k++) lpar[k] = lsum[k] / (double)L.nsum;
        break;
    case 2:
        memcpy(gpar, gprev, sizeof(double) * (size_t)ngp);
        memcpy(lpar, lprev, sizeof(double) * (size_t)nloc);
        break;
    }

    const double t_post = svir_wall_time();
    const int draws_fail = final_draws(&w, gpar, lpar, res);
    w.tsplit[SVIR_PHASE_POSTERIOR] += svir_wall_time() - t_post;
    memcpy(res->time_split, w.tsplit, sizeof w.tsplit);
    if (draws_fail) {
        snprintf(res->message, sizeof res->message, "out of memory drawing from the posterior");
        status = 2;
    }
    res->gpar = gpar;
    res->lpar = lpar;
    gpar = lpar = NULL;

done:
    free(gpar); free(lpar); free(gg); free(lg); free(gm1); free(gm2); free(lm1); free(lm2);
    free(gsum); free(lsum); free(gprev); free(lprev); free(tg); free(tl); free(ganchor);
    work_free(&w);
    return status;
}

void svir_loop_to_result(const svir_loop *L, long step, svir_result *res)
{
    res->steps = L->stopped ? L->steps : step;
    res->stop_reason = L->stop_reason;
    res->lr_final = L->lr;
    res->n_rejected = L->n_rejected;
    res->n_windows = L->n_windows;
    res->n_lr_steps = L->n_lr_steps;
    memcpy(res->lr_steps, L->lr_steps, sizeof(long) * (size_t)L->n_lr_steps);
    res->elbo_final = svir_loop_elbo_final(L);
}

int svir_path_alloc(svir_result *res, const svir_control *c, ptrdiff_t ngp, ptrdiff_t nloc)
{
    res->npath = res->path_cap = 0;
    if (c->path_every <= 0) return 0;
    const long maxs = c->max_steps > 0 ? c->max_steps : 1;
    const size_t cap = (size_t)(maxs / c->path_every + 1);
    res->path_step = malloc(sizeof(long) * cap);
    res->path_time = malloc(sizeof(double) * cap);
    res->path_gpar = malloc(sizeof(double) * cap * (size_t)ngp + 1);
    res->path_lpar = malloc(sizeof(double) * cap * (size_t)nloc + 1);
    res->path_anchor = malloc(sizeof(double) * cap * (size_t)ngp + 1);
    if (!res->path_step || !res->path_time || !res->path_gpar || !res->path_lpar ||
        !res->path_anchor)
        return 2;
    res->path_cap = (int)cap;
    return 0;
}

void svir_path_push(svir_result *res, ptrdiff_t ngp, ptrdiff_t nloc, long step, double time,
                    const double *gpar, const double *lpar, const double *anchor)
{
    if (res->npath >= res->path_cap) return;
    const size_t s = (size_t)res->npath++;
    res->path_step[s] = step;
    res->path_time[s] = time;
    memcpy(res->path_gpar + s * (size_t)ngp, gpar, sizeof(double) * (size_t)ngp);
    memcpy(res->path_lpar + s * (size_t)nloc, lpar, sizeof(double) * (size_t)nloc);
    memcpy(res->path_anchor + s * (size_t)ngp, anchor, sizeof(double) * (size_t)ngp);
}

void svir_result_free(svir_result *res)
{
    free(res->gpar); free(res->lpar); free(res->elbo); free(res->lr_steps);
    free(res->window_elbo);
    free(res->path_step); free(res->path_time); free(res->path_gpar); free(res->path_lpar);
    free(res->path_anchor);
    free(res->draws); free(res->log_ratio); free(res->shift);
    memset(res, 0, sizeof(*res));
}

int svir_elbo_grad(const svir_model *m, const svir_control *c, const double *gpar,
                   const double *lpar, long step, double *elbo, double *grad,
                   char *err, size_t errlen)
{
    work w;
    if (work_init(&w, m, c)) {
        snprintf(err, errlen, "out of memory");
        return 2;
    }
    memset(grad, 0, sizeof(double) * (size_t)(w.ngp + m->nloc));
    if (w.couple) {
        /* a reference that does not move with gpar (finite differences) */
        double *ref = calloc((size_t)m->D + 1, sizeof(double));
        if (!ref) {
            work_free(&w);
            snprintf(err, errlen, "out of memory");
            return 2;
        }
        if (c->init_mu) memcpy(ref, c->init_mu, sizeof(double) * (size_t)m->D);
        coupling_update(&w, ref);
        free(ref);
    }
    if (!w.full) select_batch(&w, step);
    *elbo = estimate(&w, step, gpar, lpar, grad, grad + w.ngp);
    work_free(&w);
    return 0;
}

int svir_coupling_new(const svir_model *m, const svir_control *c, const double *ref,
                      svir_coupling *out, int *ns_out)
{
    /* coupling_init and coupling_update read only the model and the control:
     * a work with nothing else set, whose coupling arrays then pass to out */
    work w;
    memset(&w, 0, sizeof w);
    memset(out, 0, sizeof *out);
    *ns_out = 0;
    w.m = m;
    w.c = c;
    int fail = coupling_init(&w);
    if (!fail && w.couple) {
        double *r0 = calloc((size_t)m->D + 1, sizeof(double));
        if (r0) {
            if (ref) memcpy(r0, ref, sizeof(double) * (size_t)m->D);
            coupling_update(&w, r0);
            free(r0);
        } else {
            fail = 1;
        }
    }
    if (fail) {
        work_free(&w);
        return 2;
    }
    out->couple = w.couple;
    out->sumq = w.sumq;
    out->cns = w.cns;
    out->coff = w.coff;
    out->qoff = w.qoff;
    out->cS = w.cS;
    out->ca = w.ca;
    out->cK = w.cK;
    out->comega = w.comega;
    out->cref = w.cref;
    *ns_out = m->nterms > 0 ? w.coff[m->nterms - 1] + w.cns[m->nterms - 1] : 0;
    w.cns = w.coff = w.qoff = w.cS = NULL;
    w.ca = w.cK = w.comega = w.cref = NULL;
    work_free(&w);
    return 0;
}

void svir_coupling_free(svir_coupling *cp)
{
    free((void *)cp->cns); free((void *)cp->coff); free((void *)cp->qoff); free((void *)cp->cS);
    free((void *)cp->ca); free((void *)cp->cK); free((void *)cp->comega); free((void *)cp->cref);
    memset(cp, 0, sizeof *cp);
}

int svir_posterior_draws(const svir_model *m, const svir_control *c, const double *gpar,
                         const double *lpar, const double *anchor, svir_result *res)
{
    work w;
    if (work_init(&w, m, c)) {
        snprintf(res->message, sizeof res->message, "out of memory drawing from the posterior");
        return 2;
    }
    coupling_update(&w, anchor ? anchor : gpar);
    const double t0 = svir_wall_time();
    const int st = final_draws(&w, gpar, lpar, res);
    res->time_split[SVIR_PHASE_POSTERIOR] += svir_wall_time() - t0;
    work_free(&w);
    if (st) snprintf(res->message, sizeof res->message, "out of memory drawing from the posterior");
    return st;
}
