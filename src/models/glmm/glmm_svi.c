/* The GLMM's SVI: its work, its minibatches and its ELBO estimate, for
 * the SVI driver (infer/svir_svi.c) through svir_glmm_svi_ops.
 *
 * ELBO = E_q[log p(y | theta, z)] + E_q[log p(theta)] + H[q(theta)]
 *        - sum_groups KL(q(z_j) || N(0, I)),
 * estimated with reparameterised draws of theta (global guide) and z (local
 * per-group Gaussian blocks); the local KL terms are exact. A minibatch of B
 * observations scales the likelihood by n / B and charges each group's KL to
 * its observations (weight n/B * (count in batch) / (count in data)), so the
 * estimator stays unbiased and local parameters change only for groups present
 * in the batch. */
#include "models/glmm/glmm_svi.h"
#include "models/glmm/glmm_work.h"
#include "models/glmm/glmm_local.h"
#include "core/svir_guide.h"
#include "core/svir_math.h"
#include "core/svir_philox.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

ptrdiff_t svir_glmm_n_global(const svir_glmm *m, int guide)
{
    return guide == SVIR_GUIDE_FULLRANK ? m->D + m->D * (m->D + 1) / 2 : 2 * m->D;
}

static void *xcalloc(size_t n, size_t size, int *fail)
{
    void *p = calloc(n ? n : 1, size);
    if (!p) *fail = 1;
    return p;
}

void glmm_work_free(glmm_work *w)
{
    svir_globals_free(&w->g);
    free(w->theta); free(w->eps); free(w->gtheta); free(w->u);
    free(w->z); free(w->noise); free(w->b); free(w->ediag);
    free(w->Gt); free(w->gb); free(w->gbt); free(w->gauxt); free(w->llt); free(w->gzt); free(w->gz);
    free(w->dA); free(w->kap); free(w->cGK); free(w->cdwc); free(w->idx); free(w->goff); free(w->stamp); free(w->slot);
    free(w->pres_term); free(w->pres_group); free(w->pres_cnt); free(w->runs);
    free(w->gcat); free(w->span_off); free(w->span_len); free(w->bf);
    free(w->lam_g); free(w->lam_kl); free(w->lam_sum); free(w->lam_sq);
    for (int f = 0; f < w->nfold; f++) free(w->fold_map[f]);
    free(w->cns); free(w->coff); free(w->qoff); free(w->cS); free(w->ca); free(w->cK); free(w->comega);
    free(w->cref); free(w->beta_eff); free(w->cu); free(w->cw); free(w->cdw); free(w->cds);
}

/* Full batches of random intercepts: each term P in which a finer term C is
 * nested (every group of C within one group of P; C the finest such term)
 * is folded into C. The pass over the observations then reads b_C + b_P
 * from one slot per row instead of two, and P's gradient is the sum of its
 * children's (glmm_batch_loglik): one gather and one scatter fewer per
 * row, and no chain of additions into a handful of P's groups. The same
 * numbers up to the order of the sums. Returns nonzero when out of memory. */
static int fold_init(glmm_work *w)
{
    const svir_glmm *m = w->m;
    const int nt = w->nt_fast;
    int order[SVIR_NT_ICPT_MAX], folded[SVIR_NT_ICPT_MAX] = {0};
    for (int t = 0; t < nt; t++) order[t] = t;
    for (int a = 1; a < nt; a++) /* by number of groups, coarsest first */
        for (int b = a; b > 0 && m->terms[order[b]].ngroups < m->terms[order[b - 1]].ngroups; b--) {
            const int tmp = order[b];
            order[b] = order[b - 1];
            order[b - 1] = tmp;
        }
    for (int a = 0; a < nt; a++) {
        const int P = order[a];
        const int *gP = m->terms[P].group;
        int best = -1;
        int *bmap = NULL;
        for (int c = 0; c < nt; c++) {
            const svir_term *tc = &m->terms[c];
            if (c == P || folded[c] || tc->ngroups <= m->terms[P].ngroups) continue;
            if (best >= 0 && tc->ngroups <= m->terms[best].ngroups) continue;
            int *map = malloc(sizeof(int) * (size_t)tc->ngroups);
            if (!map) {
                free(bmap);
                return 2;
            }
            for (int j = 0; j < tc->ngroups; j++) map[j] = -1;
            int nested = 1;
            for (ptrdiff_t i = 0; i < m->n && nested; i++) {
                int *mj = &map[tc->group[i]];
                if (*mj < 0) *mj = gP[i];
                else nested = *mj == gP[i];
            }
            if (!nested) {
                free(map);
                continue;
            }
            for (int j = 0; j < tc->ngroups; j++) /* a group without rows: any parent */
                if (map[j] < 0) map[j] = 0;
            free(bmap);
            bmap = map;
            best = c;
        }
        if (best < 0) continue;
        folded[P] = 1;
        w->fold_term[w->nfold] = P;
        w->fold_into[w->nfold] = best;
        w->fold_map[w->nfold] = bmap;
        w->nfold++;
    }
    if (w->nfold) {
        w->bf = calloc((size_t)m->nz, sizeof(double));
        if (!w->bf) return 2;
        w->bobs = w->bf;
    }
    return 0;
}

int glmm_work_init(glmm_work *w, const svir_glmm *m, const svir_control *c)
{
    int fail = 0;
    memset(w, 0, sizeof(*w));
    w->m = m;
    w->c = c;
    w->T = c->threads > 0 ? c->threads : 1;
    w->D = m->D;
    w->ngp = svir_glmm_n_global(m, c->guide);
    w->tsplit = w->tsplit_own;
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
    w->T_draws = c->threads_draws > 0 ? c->threads_draws : (c->threads > 0 ? c->threads : 1);
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
    w->gzt = xcalloc((size_t)(m->zi ? m->pz : 0) * (size_t)w->T, sizeof(double), &fail);
    w->gz = xcalloc((size_t)(m->zi ? m->pz : 0), sizeof(double), &fail);
    w->gauxt = xcalloc((size_t)w->T, sizeof(double), &fail);
    w->llt = xcalloc((size_t)w->T, sizeof(double), &fail);
    w->dA = xcalloc((size_t)m->nqq, sizeof(double), &fail);
    w->kap = xcalloc((size_t)m->nterms + 1, sizeof(double), &fail);
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
    w->span_off = xcalloc((size_t)ng, sizeof(ptrdiff_t), &fail);
    w->span_len = xcalloc((size_t)ng, sizeof(ptrdiff_t), &fail);
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
    /* the intercepts' fast loops take no prior weights: a weighted model
     * takes the general loop (svir_loglik_obs_w weighs) */
    w->nt_fast = m->nz > INT_MAX || m->wt ? 0 : m->nt_icpt;
    w->bobs = w->b;
    if (w->nt_fast && !fail) {
        int keep[SVIR_NT_ICPT_MAX], NT = 0;
        if (w->full && w->nt_fast > 1) fail = fold_init(w);
        for (int t = 0; t < w->nt_fast; t++) {
            int folded = 0;
            for (int f = 0; f < w->nfold; f++) folded |= w->fold_term[f] == t;
            if (!folded) keep[NT++] = t;
        }
        w->nt_fast = NT;
        if (!fail) w->gcat = xcalloc((size_t)m->n * (size_t)NT, sizeof(int), &fail);
        int r0 = -1;
        for (int k = 0; k < NT && w->runs && r0 < 0; k++)
            if (w->runs[keep[k]]) r0 = k;
        w->nrun = r0 >= 0;
        if (w->gcat)
            for (int k = 0, slot = 1; k < NT; k++) {
                const int t = keep[k];
                const int *grp = m->terms[t].group, o = (int)m->terms[t].off_z;
                const int sl = k == r0 ? 0 : (r0 < 0 ? k : slot++);
                for (ptrdiff_t i = 0; i < m->n; i++) w->gcat[i * NT + sl] = o + grp[i];
            }
    }
    if (!fail) fail = glmm_coupling_init(w);
    int ncq = 0;
    for (int t = 0; t < m->nterms; t++) {
        w->ncentred += m->terms[t].lambda != 0.0;
        ncq += m->terms[t].lambda != 0.0 && m->terms[t].q > 1;
    }
    if (!fail && w->ncentred) w->cdwc = xcalloc((size_t)w->sumq + 1, sizeof(double), &fail);
    if (!fail && ncq) w->cGK = xcalloc((size_t)m->nqq + 1, sizeof(double), &fail);
    if (!fail && m->centre_learn) {
        const size_t nt = (size_t)m->nterms + 1;
        w->lam_g = xcalloc(nt, sizeof(double), &fail);
        w->lam_kl = xcalloc(nt, sizeof(double), &fail);
        w->lam_sum = xcalloc(nt, sizeof(double), &fail);
        w->lam_sq = xcalloc(nt, sizeof(double), &fail);
    }
    if (!fail) {
        svir_coupling_view(&w->cp, w->couple, w->sumq, w->cns, w->coff, w->qoff, w->cS, w->ca,
                           w->cK, w->comega, w->cref);
    }
    if (fail) {
        glmm_work_free(w);
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

/* The minibatch of step s: positions s*B .. s*B+B-1 of an endless sequence of
 * epochs, each a keyed permutation of 0..n-1 (sampling without replacement
 * within an epoch). */
void glmm_select_batch(glmm_work *w, long step)
{
    const svir_glmm *m = w->m;
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
void glmm_draw_theta(const glmm_work *w, const double *gpar, uint64_t stream, uint64_t step,
                       uint64_t base, double *eps, double *theta)
{
    const ptrdiff_t D = w->D;
    for (ptrdiff_t d = 0; d < D; d++)
        eps[d] = svir_normal(w->key, stream, step, base + (uint64_t)d);
    svir_guide_theta(D, w->c->guide == SVIR_GUIDE_FULLRANK, gpar, eps, theta);
}


/* The local noise of particle s at `step`: entry k of z takes normal number
 * s * nz + k of the local stream. Full batches fill it in bulk (pairs). */
static void fill_local_noise(glmm_work *w, uint64_t stream, uint64_t step, uint64_t first)
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

/* The full batch's per-group work for a random-intercept term (q = 1), as
 * flat loops over its groups: the same arithmetic as svir_local_draw, svir_local_b
 * and the general loops over present groups in estimate, without their
 * per-group indexing and loops of length one. */
static void draw_q1(glmm_work *w, const svir_term *tm, const double *lpar)
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
static void back_q1(glmm_work *w, int t, double *lgrad, double invS, int stl)
{
    const svir_glmm *m = w->m;
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

/* A partially centred q = 1 term (lambda != 0; instead of back_q1). With
 * kap = sd^-lambda the guide is on u = m + e noise and the term's A is
 * A_eff = sd kap (svir_centre_A), so that b = A_eff u (- the coupled shift s)
 * and the standardised effect is z = kap (u - w), w = s / A_eff the coupled
 * shift in u's units (0 without coupling); log q(z | theta) = log q(u) -
 * log kap. Per group, with weight wt (w->z holds u):
 *   d/du:      the likelihood's A_eff G, and with stl the path derivative
 *              of log N(z) - log q(z | theta), C^-T noise - kap^2 (u - w);
 *   d/dA_eff:  the likelihood's G u (dA; glmm_estimate turns the term's
 *              dA into d/dA with A = sd, times (1 - lambda) kap);
 *   d/dlog sd: at fixed u and A_eff, lambda (z^2 - 1) (stl), or with the
 *              analytic KL(N(kap (m - w), kap^2 s^2) || N(0, 1)) its
 *              gradient lambda (kap^2 (s^2 + (m - w)^2) - 1);
 *   d/dw:      kap^2 (u - w) (stl) or kap^2 (m - w), into the coupling's
 *              cdw when the term is coupled.
 * centred_group() returns a group's KL at this draw of theta, times wt
 * (part of the ELBO's value, which here depends on theta); without stl its
 * gradients in m and log s are added there, not by svir_local_kl. *glam
 * (NULL unless the centring is learned) gains the KL's part of d/dlambda
 * over log sd. */
static double centred_group(glmm_work *w, const svir_term *tm, ptrdiff_t j, double wt,
                            double sh, double kap, double lkap, double invS, int stl,
                            double *lgrad, double *dw, double *gsd, double *glam)
{
    const double A = w->g.A[tm->off_qq], k2 = kap * kap, lam = tm->lambda;
    const ptrdiff_t pos = tm->off_z + j;
    const double G = w->Gt[pos], nz = w->noise[pos], u = w->z[pos], ed = w->ediag[pos];
    double *lg = lgrad + tm->off_loc + 2 * j;
    const double *lp = w->lpar_cur + tm->off_loc + 2 * j;
    const double mj = lp[0], s2 = ed * ed, dm = mj - sh, du0 = u - sh;
    const double kl = 0.5 * k2 * (s2 + dm * dm) - 0.5 - lp[1] - lkap;
    double du = w->scale * A * G;
    /* (learned centring) the KL's part of d/dlambda over log sd: with z =
     * kap u - s / sd at fixed u and coupled shift s (in b's units), d z /
     * dlambda = -log sd kap u, so d(log N(z) + log kap) / dlambda = log sd
     * (z kap u - 1); its expectation under q(u) without stl */
    if (stl) {
        du += wt * (nz / ed - k2 * du0);
        *gsd += wt * lam * (k2 * du0 * du0 - 1.0);
        *dw += wt * k2 * du0;
        if (glam) *glam += wt * (k2 * du0 * u - 1.0);
    } else {
        *gsd += wt * lam * (k2 * (s2 + dm * dm) - 1.0);
        *dw += wt * k2 * dm;
        if (glam) *glam += wt * (k2 * (s2 + dm * dm + dm * sh) - 1.0);
        lg[0] -= invS * wt * k2 * dm;
        lg[1] -= invS * wt * (k2 * s2 - 1.0);
    }
    const double d = du * invS;
    lg[0] += d;
    lg[1] += d * nz * ed;
    return wt * kl;
}

/* the centred term t's groups present in the batch (all of them with full
 * batches, each of weight scale; a minibatch's with scale times its count
 * over its observations); dA: the likelihood's G u in A_eff */
static double back_q1_centred(glmm_work *w, int t, double *lgrad, double invS, int stl)
{
    const svir_glmm *m = w->m;
    const svir_term *tm = &m->terms[t];
    const int coupled = w->couple && w->cns[t] > 0 && w->cdwc;
    const double sh = coupled ? w->cw[w->qoff[t]] : 0.0, kap = w->kap[t], lkap = log(kap);
    double dA = 0.0, gsd = 0.0, kl = 0.0, dw = 0.0, glam = 0.0;
    double *gl = w->lam_kl ? &glam : NULL; /* only a learned centring needs it */
    if (w->full) {
        for (ptrdiff_t j = 0; j < tm->ngroups; j++) {
            dA += w->scale * w->Gt[tm->off_z + j] * w->z[tm->off_z + j];
            kl += centred_group(w, tm, j, w->scale, sh, kap, lkap, invS, stl, lgrad, &dw, &gsd, gl);
        }
        w->dA[tm->off_qq] += dA; /* the minibatch's dA comes with the other terms' */
    } else {
        for (ptrdiff_t k = 0; k < w->npres; k++) {
            if (w->pres_term[k] != t) continue;
            const int j = w->pres_group[k];
            const double wt = w->scale * w->pres_cnt[k] / tm->nobs[j];
            kl += centred_group(w, tm, j, wt, sh, kap, lkap, invS, stl, lgrad, &dw, &gsd, gl);
        }
    }
    w->gtheta[tm->off_sd] += gsd;
    if (coupled) w->cdwc[w->qoff[t]] += dw;
    if (w->lam_kl) w->lam_kl[t] = glam;
    return kl;
}

/* A partially centred term with q > 1 (lambda != 0; svir_centre_A): the
 * guide is on u ~ N(m, C C^T), b = A_eff u (- the coupled shift E s) and the
 * standardised effect is z = K (u - w), K = A^-1 A_eff, w = A_eff^-1 E s;
 * log q(z | theta) = log q(u) - log det K. One group's KL(N(K d, K C C^T
 * K^T) || N(0, I)), d = m - w, is 0.5 (|K C|^2 + |K d|^2 - q) - sum log
 * C_rr - log det K; with weight wt:
 *   d/du:  the likelihood's A_eff^T G, and with stl the path derivative
 *          C^-T noise - K^T K (u - w);
 *   d/dK:  (into cGK) -K (u - w)(u - w)^T (stl) or -K (C C^T + d d^T),
 *          plus diag(1 / K_rr);
 *   d/dw:  (into dw) K^T K (u - w) (stl) or K^T K d.
 * Without stl the KL's gradients in m and C are added here too. Returns the
 * group's KL times wt. */
static double centred_group_q(glmm_work *w, const svir_term *tm, ptrdiff_t j, double wt,
                              const double *sh, const double *K, double ldK, double invS,
                              int stl, double *lgrad, double *dw, double *GK)
{
    const int q = tm->q;
    const ptrdiff_t pos = tm->off_z + j * q, lo = tm->off_loc + j * svir_local_block(q);
    const double *G = w->Gt + pos, *nz = w->noise + pos, *u = w->z + pos, *ed = w->ediag + pos;
    const double *mj = w->lpar_cur + lo, *Cp = mj + q, *Ae = w->g.A + tm->off_qq;
    double *gm = lgrad + lo, *gC = gm + q;
    double dz[SVIR_QMAX_STACK], d[SVIR_QMAX_STACK], v[SVIR_QMAX_STACK], y[SVIR_QMAX_STACK];
    double C[SVIR_QMAX_STACK * SVIR_QMAX_STACK], M[SVIR_QMAX_STACK * SVIR_QMAX_STACK];
    /* C (lower, full storage) and M = K C */
    for (int r = 0; r < q; r++)
        for (int c = 0; c < q; c++)
            C[r * q + c] = c > r ? 0.0 : (c == r ? ed[r] : Cp[r * (r + 1) / 2 + c]);
    double kl = -0.5 * q - ldK;
    for (int r = 0; r < q; r++) {
        kl -= Cp[r * (r + 1) / 2 + r];
        for (int c = 0; c <= r; c++) {
            double s = 0.0;
            for (int l = c; l <= r; l++) s += K[r * q + l] * C[l * q + c];
            M[r * q + c] = s;
            kl += 0.5 * s * s;
        }
    }
    /* d = m - w, v = K d (the KL's value; e = u - w, K e with stl) */
    for (int r = 0; r < q; r++) d[r] = mj[r] - (sh ? sh[r] : 0.0);
    svir_local_b(q, K, d, v);
    for (int r = 0; r < q; r++) kl += 0.5 * v[r] * v[r];
    /* the likelihood's d/du: A_eff^T G */
    for (int c = 0; c < q; c++) {
        double s = 0.0;
        for (int r = c; r < q; r++) s += Ae[r * q + c] * G[r];
        dz[c] = w->scale * s;
    }
    for (int r = 0; r < q; r++) GK[r * q + r] += wt / K[r * q + r];
    if (stl) {
        double e[SVIR_QMAX_STACK], ke[SVIR_QMAX_STACK];
        for (int r = 0; r < q; r++) e[r] = u[r] - (sh ? sh[r] : 0.0);
        svir_local_b(q, K, e, ke);
        svir_packed_back_solve(q, Cp, ed, nz, y);
        for (int c = 0; c < q; c++) {
            double s = 0.0; /* (K^T K e)_c */
            for (int r = c; r < q; r++) s += K[r * q + c] * ke[r];
            dz[c] += wt * (y[c] - s);
            dw[c] += wt * s;
        }
        for (int r = 0; r < q; r++)
            for (int c = 0; c <= r; c++) GK[r * q + c] -= wt * ke[r] * e[c];
    } else {
        for (int c = 0; c < q; c++) {
            double s = 0.0; /* (K^T v)_c */
            for (int r = c; r < q; r++) s += K[r * q + c] * v[r];
            gm[c] -= invS * wt * s;
            dw[c] += wt * s;
        }
        /* d/dC of -0.5 |K C|^2 is -(K^T M), lower entries; C's diagonal is
         * stored as logs, whose -log C_rr adds 1 */
        for (int r = 0; r < q; r++) {
            double *gCr = gC + r * (r + 1) / 2;
            for (int c = 0; c <= r; c++) {
                double s = 0.0;
                for (int l = r; l < q; l++) s += K[l * q + r] * M[l * q + c];
                gCr[c] -= invS * wt * (c == r ? s * ed[r] - 1.0 : s);
            }
        }
        /* d/dK: -(M C^T + v d^T) */
        for (int r = 0; r < q; r++)
            for (int c = 0; c <= r; c++) {
                double s = v[r] * d[c];
                for (int l = 0; l <= c; l++) s += M[r * q + l] * C[c * q + l];
                GK[r * q + c] -= wt * s;
            }
    }
    svir_local_chain(q, dz, invS, nz, ed, gm, gC);
    return wt * kl;
}

/* the centred term t (q > 1): its groups present in the batch, as
 * back_q1_centred; d/dK into w->cGK, d/dw into the coupling's cdwc */
static double back_qn_centred(glmm_work *w, int t, double *lgrad, double invS, int stl)
{
    const svir_glmm *m = w->m;
    const svir_term *tm = &m->terms[t];
    const int q = tm->q;
    const int coupled = w->couple && w->cns[t] > 0 && w->cdwc;
    const double *sh = coupled ? w->cw + w->qoff[t] : NULL, *K = w->g.K + tm->off_qq;
    const double ldK = log(w->kap[t]);
    double dw[SVIR_QMAX_STACK] = {0}, kl = 0.0;
    double *GK = w->cGK + tm->off_qq;
    for (int k = 0; k < q * q; k++) GK[k] = 0.0;
    for (ptrdiff_t k = 0; k < w->npres; k++) {
        if (w->pres_term[k] != t) continue;
        const int j = w->pres_group[k];
        const double wt = w->scale * w->pres_cnt[k] / tm->nobs[j];
        kl += centred_group_q(w, tm, j, wt, sh, K, ldK, invS, stl, lgrad, dw, GK);
    }
    if (coupled)
        for (int r = 0; r < q; r++) w->cdwc[w->qoff[t] + r] += dw[r];
    return kl;
}

/* A centred term with q > 1: its d/dA_eff (dA, from the likelihood and the
 * coupling) and d/dK (cGK) to d/dA with A = diag(sd) L (in dA, for
 * svir_backprop_A) and a direct part in d/dlog sd (gtheta). With K = A^-1
 * A_eff: d/dA_eff += A^-T GK and d/dA = -A^-T GK K^T (lower entries); with
 * A_eff row r = sd_r^-lambda ((1 - lambda) A_r. + lambda sd_r e_r):
 * d/dA_r. += (1 - lambda) sd_r^-lambda d/dA_eff r., and d/dlog sd_r at
 * fixed A = sum_c d/dA_eff rc (-lambda (1 - lambda) sd_r^-lambda A_rc) +
 * d/dA_eff rr lambda (1 - lambda) sd_r^(1 - lambda). */
static void centre_chain_q(glmm_work *w, int t)
{
    const svir_glmm *m = w->m;
    const svir_term *tm = &m->terms[t];
    const int q = tm->q;
    const double lam = tm->lambda;
    const double *sd = w->g.sd + (tm->off_sd - m->p), *L = w->g.L + tm->off_qq;
    const double *K = w->g.K + tm->off_qq, *GK = w->cGK + tm->off_qq;
    double *dA = w->dA + tm->off_qq;
    double H[SVIR_QMAX_STACK * SVIR_QMAX_STACK], dAo[SVIR_QMAX_STACK * SVIR_QMAX_STACK];
    /* H = A^-T GK: back substitution with the upper A^T, column by column */
    for (int c = 0; c < q; c++)
        for (int r = q - 1; r >= 0; r--) {
            double s = GK[r * q + c];
            for (int l = r + 1; l < q; l++) s -= sd[l] * L[l * q + r] * H[l * q + c];
            H[r * q + c] = s / (sd[r] * L[r * q + r]);
        }
    for (int r = 0; r < q; r++)
        for (int c = 0; c <= r; c++) {
            double s = 0.0; /* (H K^T)_rc */
            for (int l = 0; l <= c; l++) s += H[r * q + l] * K[c * q + l];
            dAo[r * q + c] = -s;
            dA[r * q + c] += H[r * q + c];
        }
    for (int r = 0; r < q; r++) {
        const double f = exp(-lam * log(sd[r]));
        double gs = dA[r * q + r] * lam * (1.0 - lam) * f * sd[r];
        for (int c = 0; c <= r; c++) {
            gs -= dA[r * q + c] * lam * (1.0 - lam) * f * sd[r] * L[r * q + c];
            dAo[r * q + c] += (1.0 - lam) * f * dA[r * q + c];
        }
        w->gtheta[tm->off_sd + r] += gs;
        for (int c = 0; c <= r; c++) dA[r * q + c] = dAo[r * q + c];
        for (int c = r + 1; c < q; c++) dA[r * q + c] = 0.0;
    }
}

/* ELBO estimate at (gpar, lpar) with the noise and minibatch of `step`;
 * writes the gradient into ggrad [ngp] and, for present groups, lgrad [nloc].
 * Assumes select_batch was called for this step (minibatch). */
double glmm_estimate(glmm_work *w, long step, const double *gpar, const double *lpar,
                       double *ggrad, double *lgrad)
{
    double tp = svir_wall_time(); /* time split: the mark of the last lap */
#define SVIR_LAP(PHASE)                                \
    do {                                               \
        const double tn_ = svir_wall_time();           \
        w->tsplit[PHASE] += tn_ - tp;                  \
        tp = tn_;                                      \
    } while (0)
    const svir_glmm *m = w->m;
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

    w->lpar_cur = lpar;
    if (w->lam_g) memset(w->lam_g, 0, sizeof(double) * (size_t)m->nterms);
    for (int s = 0; s < S; s++) {
        glmm_draw_theta(w, gpar, SVIR_STREAM_GLOBAL, (uint64_t)step, (uint64_t)s * (uint64_t)D,
                   w->eps, w->theta);
        svir_unpack_globals(m, w->theta, &w->g);
        if (w->ncentred) svir_centre_A(m, &w->g, w->kap);
        glmm_coupling_forward(w, w->theta, &w->g, w->beta_eff, w->cu, w->cw);
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
        const double ll = glmm_batch_loglik(w, gb, &gaux, w->gz);
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
        for (int k = 0; m->zi && k < m->pz; k++) w->gtheta[m->off_zi + k] += scale * w->gz[k];
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
            if ((w->full && q == 1) || tm->lambda != 0.0) continue; /* back_q1(_centred) */
            const ptrdiff_t pos = tm->off_z + (ptrdiff_t)j * q;
            const double *G = w->Gt + pos, *nz = w->noise + pos, *A = w->g.A + tm->off_qq;
            const ptrdiff_t lo = tm->off_loc + (ptrdiff_t)j * svir_local_block(q);
            const double *Cp = lpar + lo + q, *zj = w->z + pos;
            const double *wt_shift = w->couple ? w->cw + w->qoff[w->pres_term[k]] : NULL;
            const double wt = scale * w->pres_cnt[k] / tm->nobs[j];
            svir_local_backward(q, A, G, nz, zj, w->ediag + pos, Cp, wt_shift, scale, wt, invS,
                                stl, lgrad + lo, lgrad + lo + q);
        }
        if (w->cdwc) memset(w->cdwc, 0, sizeof(double) * (size_t)w->sumq);
        for (int t = 0; t < m->nterms; t++) {
            if (m->terms[t].q != 1) {
                if (m->terms[t].lambda != 0.0) elbo -= invS * back_qn_centred(w, t, lgrad, invS, stl);
                continue;
            }
            if (m->terms[t].lambda != 0.0) {
                elbo -= invS * back_q1_centred(w, t, lgrad, invS, stl);
            } else if (w->full) {
                back_q1(w, t, lgrad, invS, stl);
            }
        }
        /* learned centring: d/dlambda, with b = A_eff u - s and A_eff = sd^(1 -
         * lambda), is log sd (KL part - A_eff dA), dA the likelihood's
         * d/dA_eff (before the coupling adds its own) */
        for (int t = 0; w->lam_g && t < m->nterms; t++) {
            const svir_term *tm = &m->terms[t];
            if (tm->lambda == 0.0 || tm->q != 1) continue; /* q > 1: lambda stays the rule's */
            const double Ae = w->g.A[tm->off_qq], lsd = log(Ae) - log(w->kap[t]);
            w->lam_g[t] += invS * lsd * (w->lam_kl[t] - Ae * w->dA[tm->off_qq]);
        }
        if (w->couple) elbo += invS * glmm_coupling_backward(w, lpar, stl);
        /* a centred term's dA is in A_eff = sd^(1 - lambda) = sd kap, and
         * svir_backprop_A takes d/dA with A = sd: times (1 - lambda) kap */
        for (int t = 0; w->ncentred && t < m->nterms; t++) {
            if (m->terms[t].lambda == 0.0) continue;
            if (m->terms[t].q == 1) w->dA[m->terms[t].off_qq] *= (1.0 - m->terms[t].lambda) * w->kap[t];
            else centre_chain_q(w, t);
        }
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
        if (tm->lambda != 0.0) continue; /* charged per draw by back_q1_centred */
        const ptrdiff_t lo = tm->off_loc + (ptrdiff_t)j * svir_local_block(q);
        const double wt = scale * w->pres_cnt[k] / tm->nobs[j];
        const double *mj = lpar + lo, *Cp = lpar + lo + q;
        double *gm = lgrad + lo, *gC = lgrad + lo + q;
        const double gw = stl ? 0.0 : wt; /* with stl the gradient came with the draws */
        kl += svir_local_kl(q, mj, Cp, w->ediag + tm->off_z + (ptrdiff_t)j * q, wt, gw, gm, gC);
    }
    elbo -= kl;
    if (w->lam_g) {
        for (int t = 0; t < m->nterms; t++) {
            w->lam_sum[t] += w->lam_g[t];
            w->lam_sq[t] += w->lam_g[t] * w->lam_g[t];
        }
        w->lam_n++;
    }
    SVIR_LAP(SVIR_PHASE_BACKWARD);
#undef SVIR_LAP
    return elbo;
}

void svir_glmm_init_params(const svir_glmm *m, const svir_control *c, double *gpar, double *lpar)
{
    const ptrdiff_t D = m->D;
    const double ls = log(c->init_scale > 0 ? c->init_scale : 0.1);
    for (ptrdiff_t d = 0; d < D; d++) gpar[d] = m->init_mu ? m->init_mu[d] : 0.0;
#define SVIR_LS0(d) (m->init_sd ? log(m->init_sd[d]) : ls)
    if (c->guide == SVIR_GUIDE_FULLRANK) {
        for (ptrdiff_t r = 0; r < D; r++)
            for (ptrdiff_t cc = 0; cc <= r; cc++)
                gpar[D + r * (r + 1) / 2 + cc] = cc == r ? SVIR_LS0(r) : 0.0;
    } else {
        for (ptrdiff_t d = 0; d < D; d++) gpar[D + d] = SVIR_LS0(d);
    }
#undef SVIR_LS0
    if (m->init_loc) {
        memcpy(lpar, m->init_loc, sizeof(double) * (size_t)m->nloc);
        return;
    }
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

int svir_glmm_elbo_grad(const svir_glmm *m, const svir_control *c, const double *gpar,
                   const double *lpar, long step, double *elbo, double *grad,
                   char *err, size_t errlen)
{
    return svir_glmm_elbo_grad_lam(m, c, gpar, lpar, step, elbo, grad, NULL, err, errlen);
}

int svir_glmm_elbo_grad_lam(const svir_glmm *m, const svir_control *c, const double *gpar,
                            const double *lpar, long step, double *elbo, double *grad,
                            double *glam, char *err, size_t errlen)
{
    glmm_work w;
    if (glmm_work_init(&w, m, c)) {
        snprintf(err, errlen, "out of memory");
        return 2;
    }
    memset(grad, 0, sizeof(double) * (size_t)(w.ngp + m->nloc));
    if (w.couple) {
        /* a reference that does not move with gpar (finite differences) */
        double *ref = calloc((size_t)m->D + 1, sizeof(double));
        if (!ref) {
            glmm_work_free(&w);
            snprintf(err, errlen, "out of memory");
            return 2;
        }
        if (m->init_mu) memcpy(ref, m->init_mu, sizeof(double) * (size_t)m->D);
        glmm_coupling_update(&w, ref);
        free(ref);
    }
    if (!w.full) glmm_select_batch(&w, step);
    *elbo = glmm_estimate(&w, step, gpar, lpar, grad, grad + w.ngp);
    for (int t = 0; glam && t < m->nterms; t++) glam[t] = w.lam_g ? w.lam_g[t] : 0.0;
    glmm_work_free(&w);
    return 0;
}

/* ---- the table the SVI driver calls ------------------------------------ */

static ptrdiff_t ops_n_global(const void *model, const svir_control *c)
{
    return svir_glmm_n_global(model, c->guide);
}

static ptrdiff_t ops_n_local(const void *model)
{
    return ((const svir_glmm *)model)->nloc;
}

static void *ops_work_new(const void *model, const svir_control *c)
{
    glmm_work *w = malloc(sizeof *w);
    if (!w) return NULL;
    if (glmm_work_init(w, model, c)) {
        free(w);
        return NULL;
    }
    return w;
}

static void ops_work_free(void *work)
{
    if (!work) return;
    glmm_work_free(work);
    free(work);
}

static int ops_threads(const void *work)
{
    return ((const glmm_work *)work)->T;
}

static void ops_init(const void *model, const svir_control *c, double *gpar, double *lpar)
{
    svir_glmm_init_params(model, c, gpar, lpar);
}

static void ops_anchor(void *work, const double *gpar)
{
    glmm_coupling_update(work, gpar);
}

/* Learned centring (m->centre_learn): at the end of each window after the
 * first, each partially centred term's lambda takes one step on eta =
 * logit(lambda), 0.5 mean(g) / sqrt(mean(g^2)) with g the window's
 * estimates of d ELBO / d lambda (a step that shrinks with their noise,
 * at most 1), lambda kept in [0.005, 0.995]. The parameter sets are moved
 * so that each group's q(b) stays the same at the set's mean sd: u_new - w_new =
 * sd^(lambda_new - lambda_old) (u_old - w_old), w the coupled shift in u's
 * units; log s gains (lambda_new - lambda_old) log sd. Returns 1 when a
 * lambda moved. */
static int learn_centring(glmm_work *w, int nsets, double *const *gpars, double *const *lpars)
{
    const svir_glmm *m = w->m;
    if (!w->lam_g || w->lam_n == 0) return 0;
    const long n = w->lam_n;
    w->lam_n = 0;
    int moved = 0;
    for (int t = 0; t < m->nterms; t++) {
        svir_term *tm = &m->terms[t];
        const double gbar = w->lam_sum[t] / (double)n, ms = w->lam_sq[t] / (double)n;
        w->lam_sum[t] = w->lam_sq[t] = 0.0;
        if (w->lam_windows == 0 || tm->lambda == 0.0 || tm->q != 1 || !(ms > 0.0)) continue;
        double d = 5.0 * gbar / sqrt(ms);
        d = d > 1.0 ? 1.0 : (d < -1.0 ? -1.0 : d);
        const double l0 = tm->lambda, eta = log(l0 / (1.0 - l0)) + d;
        double l1 = 1.0 / (1.0 + exp(-eta));
        l1 = l1 < 0.005 ? 0.005 : (l1 > 0.995 ? 0.995 : l1);
        if (fabs(l1 - l0) < 1e-9) continue;
        const int coupled = w->couple && w->cns[t] > 0;
        for (int i = 0; i < nsets; i++) {
            double wold = 0.0, wnew = 0.0, lsd;
            for (int k = 0; k < 2; k++) {
                tm->lambda = k ? l1 : l0;
                svir_unpack_globals(m, gpars[i], &w->g);
                lsd = log(w->g.A[tm->off_qq]);
                svir_centre_A(m, &w->g, w->kap);
                if (coupled) {
                    glmm_coupling_forward(w, gpars[i], &w->g, w->beta_eff, w->cu, w->cw);
                    if (k) wnew = w->cw[w->qoff[t]];
                    else wold = w->cw[w->qoff[t]];
                }
            }
            const double f = exp((l1 - l0) * lsd);
            double *lp = lpars[i] + tm->off_loc;
            for (int j = 0; j < tm->ngroups; j++) {
                lp[2 * j] = wnew + f * (lp[2 * j] - wold);
                lp[2 * j + 1] += (l1 - l0) * lsd;
            }
        }
        tm->lambda = l1;
        moved = 1;
    }
    w->lam_windows++;
    return moved;
}

static int ops_reanchor(void *work, const double *src, int nsets, double *const *gpars,
                        double *const *lpars)
{
    const int moved = glmm_coupling_reanchor(work, src, nsets, gpars, lpars);
    return learn_centring(work, nsets, gpars, lpars) || moved;
}

static void ops_batch(void *work, long step, ptrdiff_t *nspans, const ptrdiff_t **off,
                      const ptrdiff_t **len)
{
    glmm_work *w = work;
    const svir_glmm *m = w->m;
    if (w->full) {
        *nspans = -1;
        return;
    }
    glmm_select_batch(w, step);
    for (ptrdiff_t k = 0; k < w->npres; k++) {
        const svir_term *tm = &m->terms[w->pres_term[k]];
        const ptrdiff_t lb = svir_local_block(tm->q);
        w->span_off[k] = tm->off_loc + (ptrdiff_t)w->pres_group[k] * lb;
        w->span_len[k] = lb;
    }
    *nspans = w->npres;
    *off = w->span_off;
    *len = w->span_len;
}

static double ops_estimate(void *work, long step, const double *gpar, const double *lpar,
                           double *ggrad, double *lgrad, double *tsplit)
{
    glmm_work *w = work;
    w->tsplit = tsplit ? tsplit : w->tsplit_own;
    return glmm_estimate(w, step, gpar, lpar, ggrad, lgrad);
}

static int ops_draws(void *work, const double *gpar, const double *lpar, svir_result *res)
{
    return glmm_final_draws(work, gpar, lpar, res);
}

const svir_svi_ops svir_glmm_svi_ops = {
    ops_n_global, ops_n_local, ops_work_new, ops_work_free, ops_threads, ops_init,
    ops_anchor,   ops_reanchor, ops_batch,   ops_estimate,  ops_draws,
};
