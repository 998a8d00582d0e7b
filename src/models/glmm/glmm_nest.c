/* QEM's tree for a GLMM with more than one grouping factor (see
 * glmm_nest.h and dev/QEM.md, "Nested and crossed factors"). No R API.
 *
 * Iteration t draws K samples theta_k0 of the globals, and K samples
 * z0_g,k of every group g of every term from its proposal q0(z_g). A crossed
 * term's draw k is paired with theta_k: its log weight log N(z0) - log q0(z0)
 * joins log w0(k), and its effect joins the linear predictor of draw k0 = k.
 * A chain level l's group g has a table over its draw k_l and the draws
 * (k0, k1, .., k_{l-1}) of the globals and its ancestors (the prefix):
 *   log f_g(prefix, k) = log N(z0_g,k) - log q0(z0_g,k)
 *                        + sum_{children c} log m_c(prefix, k)
 * where at the leaf level the children's part is the log-likelihood of the
 * group's rows given every draw on the path, and
 *   log m_g(prefix) = logsumexp_k log f_g(prefix, k) - log K.
 * Then log w0(k0) = log p(theta) - log q(theta) + crossed parts
 * + sum_{top groups} log m_g(k0), and log P-hat = logsumexp log w0 - log K,
 * an unbiased estimate of p(y) (every latent is drawn once per index).
 * Going down, the joint weight of (prefix, k) is the parent's joint weight
 * of prefix times f_g(prefix, k) / (K m_g(prefix)), and a group's marginal
 * weights pi_g(k) sum it over the prefixes. Tables: a leaf's has K^(L+1)
 * entries, each the log-likelihood of the leaf's rows; with random
 * intercepts only, a Gaussian or a Poisson (log link) family and no
 * weights, every entry costs O(1) after an O(n_g) pass per k0. */
#include "models/glmm/glmm_nest.h"
#include "models/glmm/glmm_tree.h"
#include "core/svir_result.h"
#include "models/glmm/glmm_svi.h"
#include "models/glmm/glmm_local.h"
#include "models/glmm/glmm_qem.h"
#include "core/svir_guide.h"
#include "core/svir_math.h"
#include "core/svir_philox.h"
#include "core/svir_list.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

static void level_free(glmm_nest_level *lv)
{
    free(lv->par); free(lv->crow); free(lv->cidx); free(lv->F); free(lv->M); free(lv->lz);
    free(lv->bp); free(lv->bs); free(lv->B1); free(lv->B2);
    memset(lv, 0, sizeof *lv);
}

void glmm_nest_free(glmm_nest *nt)
{
    if (nt->g)
        for (int k = 0; k < nt->K; k++) svir_globals_free(&nt->g[k]);
    for (int l = 0; l < SVIR_NEST_LMAX; l++) level_free(&nt->lv[l]);
    if (nt->cr)
        for (int c = 0; c < nt->nc; c++) level_free(&nt->cr[c]);
    free(nt->cr); free(nt->rowptr); free(nt->rows); free(nt->theta); free(nt->eps);
    free(nt->lw0); free(nt->aux); free(nt->g); free(nt->zs);
    memset(nt, 0, sizeof *nt);
}

static ptrdiff_t ipow(int K, int e)
{
    ptrdiff_t r = 1;
    for (int i = 0; i < e; i++) r *= K;
    return r;
}

int glmm_nest_init(glmm_nest *nt, const svir_glmm *m, const svir_control *c, int K, svir_err *e)
{
    memset(nt, 0, sizeof *nt);
    if (K < 2 || K > SVIR_QEM_KMAX)
        return svir_err_set(e, 1, "QEM takes K from 2 to %d samples per latent (K = %d)",
                            SVIR_QEM_KMAX, K);
    if (!m->qem_level)
        return svir_err_set(e, 1, "svir internal error: QEM with %d grouping factors needs spec$qem_level",
                            m->nterms);
    nt->m = m;
    nt->K = K;
    nt->D = m->D;
    nt->nz = m->nz;
    nt->fullrank = c->guide == SVIR_GUIDE_FULLRANK;
    nt->T = c->threads > 0 ? c->threads : 1;
    svir_philox_key(c->seed, nt->key);
    /* the levels: 1 .. L once each, 0 any number of times */
    int L = 0, nc = 0, at[SVIR_NEST_LMAX + 1];
    for (int l = 0; l <= SVIR_NEST_LMAX; l++) at[l] = -1;
    for (int t = 0; t < m->nterms; t++) {
        const int lv = m->qem_level[t];
        if (lv < 0 || lv > SVIR_NEST_LMAX || (lv > 0 && at[lv] >= 0))
            return svir_err_set(e, 1, "svir internal error: qem_level must give each chain level 1 to %d once",
                                SVIR_NEST_LMAX);
        if (m->terms[t].q > SVIR_QMAX_STACK)
            return svir_err_set(e, 1, "QEM takes at most %d random coefficients per term",
                                SVIR_QMAX_STACK);
        if (lv == 0) nc++;
        else {
            at[lv] = t;
            if (lv > L) L = lv;
        }
    }
    for (int l = 1; l <= L; l++)
        if (at[l] < 0) return svir_err_set(e, 1, "svir internal error: qem_level skips level %d", l);
    if (L == 0) return svir_err_set(e, 1, "svir internal error: qem_level names no chain");
    nt->L = L;
    nt->nc = nc;
    nt->cr = calloc((size_t)nc + 1, sizeof(glmm_nest_level));
    if (!nt->cr) return svir_err_set(e, 2, "out of memory setting up QEM's tree");
    ptrdiff_t z2 = 0;
    for (int t = 0, ci = 0; t < m->nterms; t++) {
        const int lv = m->qem_level[t];
        glmm_nest_level *x = lv ? &nt->lv[lv - 1] : &nt->cr[ci++];
        x->t = t;
        x->q = m->terms[t].q;
        x->J = m->terms[t].ngroups;
        x->lb = svir_local_block(x->q);
        x->z2off = z2;
        z2 += (ptrdiff_t)x->J * x->q * x->q;
        x->lz = malloc(sizeof(double) * ((size_t)x->J * (size_t)K + 1));
        if (!lv) {
            /* Z's columns that are columns of X */
            const svir_term *tm = &m->terms[t];
            for (int r = 0; r < x->q; r++) {
                x->sel[r] = -1;
                if (!tm->xmap) continue;
                int one = -1, ok = 1;
                for (int cc = 0; cc < m->p && ok; cc++) {
                    const double v = tm->xmap[(ptrdiff_t)r * m->p + cc];
                    if (v == 1.0 && one < 0) one = cc;
                    else if (v != 0.0) ok = 0;
                }
                if (ok) x->sel[r] = one;
            }
            const size_t Jq = (size_t)x->J * (size_t)x->q;
            x->bp = malloc(sizeof(double) * ((size_t)x->J * (size_t)x->lb + 1));
            x->bs = malloc(sizeof(double) * ((size_t)K * Jq + 1));
            x->B1 = malloc(sizeof(double) * (Jq + 1));
            x->B2 = malloc(sizeof(double) * (Jq * (size_t)x->q + 1));
        }
        if (!x->lz || (!lv && (!x->bp || !x->bs || !x->B1 || !x->B2))) {
            glmm_nest_free(nt);
            return svir_err_set(e, 2, "out of memory setting up QEM's tree");
        }
    }
    nt->nz2 = z2;
    const ptrdiff_t n = m->n;
    /* the parents, checked to nest: each group of level l + 1 within one of l */
    for (int l = 0; l < L; l++) {
        glmm_nest_level *x = &nt->lv[l];
        x->tsz = ipow(K, l + 2);
        x->F = malloc(sizeof(double) * ((size_t)x->J * (size_t)x->tsz + 1));
        x->M = malloc(sizeof(double) * ((size_t)x->J * (size_t)(x->tsz / K) + 1));
        if (!x->F || !x->M) {
            glmm_nest_free(nt);
            return svir_err_set(e, 2, "out of memory for QEM's tables (%.0f MB): use a smaller K",
                                (double)x->J * (double)x->tsz * 8.0 / 1048576.0);
        }
        if (l == 0) continue;
        const glmm_nest_level *up = &nt->lv[l - 1];
        const int *gc = m->terms[x->t].group, *gp = m->terms[up->t].group;
        x->par = malloc(sizeof(int) * ((size_t)x->J + 1));
        if (!x->par) {
            glmm_nest_free(nt);
            return svir_err_set(e, 2, "out of memory setting up QEM's tree");
        }
        for (int j = 0; j < x->J; j++) x->par[j] = -1;
        for (ptrdiff_t i = 0; i < n; i++) {
            int *p = &x->par[gc[i]];
            if (*p < 0) *p = gp[i];
            else if (*p != gp[i]) {
                glmm_nest_free(nt);
                return svir_err_set(e, 1, "svir internal error: QEM's level %d is not nested in level %d",
                                    l + 1, l);
            }
        }
    }
    /* the children, CSR */
    for (int l = 0; l + 1 < L; l++) {
        glmm_nest_level *x = &nt->lv[l];
        const glmm_nest_level *dn = &nt->lv[l + 1];
        x->crow = calloc((size_t)x->J + 2, sizeof(int));
        x->cidx = malloc(sizeof(int) * ((size_t)dn->J + 1));
        int *next = malloc(sizeof(int) * ((size_t)x->J + 1));
        if (!x->crow || !x->cidx || !next) {
            free(next);
            glmm_nest_free(nt);
            return svir_err_set(e, 2, "out of memory setting up QEM's tree");
        }
        for (int j = 0; j < dn->J; j++)
            if (dn->par[j] >= 0) x->crow[dn->par[j] + 1]++;
        for (int j = 0; j < x->J; j++) x->crow[j + 1] += x->crow[j];
        for (int j = 0; j < x->J; j++) next[j] = x->crow[j];
        for (int j = 0; j < dn->J; j++)
            if (dn->par[j] >= 0) x->cidx[next[dn->par[j]]++] = j;
        free(next);
    }
    /* the leaf groups' rows */
    const glmm_nest_level *leaf = &nt->lv[L - 1];
    const int *gl = m->terms[leaf->t].group;
    nt->rowptr = calloc((size_t)leaf->J + 2, sizeof(int));
    nt->rows = malloc(sizeof(int) * ((size_t)n + 1));
    nt->theta = malloc(sizeof(double) * ((size_t)K * (size_t)nt->D + 1));
    nt->eps = malloc(sizeof(double) * ((size_t)K * (size_t)nt->D + 1));
    nt->lw0 = malloc(sizeof(double) * (size_t)K);
    nt->aux = malloc(sizeof(svir_aux) * (size_t)K);
    nt->g = calloc((size_t)K, sizeof(svir_globals));
    nt->zs = malloc(sizeof(double) * (size_t)K * ((size_t)nt->nz + 1));
    int *next = malloc(sizeof(int) * ((size_t)leaf->J + 1));
    int fail = !nt->rowptr || !nt->rows || !nt->theta || !nt->eps || !nt->lw0 || !nt->aux ||
               !nt->g || !nt->zs || !next;
    for (int k = 0; k < K && !fail; k++) fail = svir_globals_alloc(m, &nt->g[k]) != 0;
    if (fail) {
        free(next);
        glmm_nest_free(nt);
        return svir_err_set(e, 2, "out of memory setting up QEM's tree");
    }
    for (ptrdiff_t i = 0; i < n; i++) nt->rowptr[gl[i] + 1]++;
    for (int j = 0; j < leaf->J; j++) {
        if (nt->rowptr[j + 1] > nt->maxnj) nt->maxnj = nt->rowptr[j + 1];
        nt->rowptr[j + 1] += nt->rowptr[j];
    }
    for (int j = 0; j < leaf->J; j++) next[j] = nt->rowptr[j];
    for (ptrdiff_t i = 0; i < n; i++) nt->rows[next[gl[i]]++] = (int)i;
    free(next);
    /* the sums' shortcut: random intercepts on the chain, unweighted */
    int ones = 1;
    for (int l = 0; l < L; l++) ones = ones && m->terms[nt->lv[l].t].z_ones;
    nt->fast = !m->qem_direct && ones && !m->wt && !m->zi &&
               ((m->family == SVIR_GAUSSIAN && m->link == SVIR_LINK_IDENTITY) ||
                (m->family == SVIR_POISSON && m->link == SVIR_LINK_LOG));
    return 0;
}

void glmm_nest_globals(glmm_nest *nt, const double *gpar, uint64_t stream, uint64_t ctr)
{
    glmm_qem_draw_globals(nt->m, nt->K, nt->fullrank, nt->key, gpar, stream, ctr, nt->theta,
                          nt->eps, nt->g, nt->aux, nt->lw0);
}

void glmm_nest_start(glmm_nest *nt, const double *gpar, const double *lpar)
{
    const svir_glmm *m = nt->m;
    svir_unpack_globals(m, gpar, &nt->g[0]);
    for (int c = 0; c < nt->nc; c++) {
        glmm_nest_level *x = &nt->cr[c];
        const svir_term *tm = &m->terms[x->t];
        const int q = x->q;
        const double *A = nt->g[0].A + tm->off_qq;
        for (int j = 0; j < x->J; j++) {
            const double *zb = lpar + tm->off_loc + (ptrdiff_t)j * x->lb;
            double *bb = x->bp + (ptrdiff_t)j * x->lb;
            double ed[SVIR_QMAX_STACK];
            svir_local_exp_diag(q, zb, ed);
            svir_local_b(q, A, zb, bb);
            for (int r = 0; r < q; r++)
                if (x->sel[r] >= 0) bb[r] += gpar[x->sel[r]];
            /* the Cholesky factor A C (both lower), its diagonal as logs */
            for (int r = 0; r < q; r++)
                for (int cc = 0; cc <= r; cc++) {
                    double s = 0.0;
                    for (int k = cc; k <= r; k++)
                        s += A[r * q + k] * (k == cc ? ed[k] : zb[q + k * (k + 1) / 2 + cc]);
                    bb[q + r * (r + 1) / 2 + cc] = r == cc ? log(s) : s;
                }
            svir_qem_raw(q, bb, bb + q, x->B1 + (ptrdiff_t)j * q, x->B2 + (ptrdiff_t)j * q * q);
        }
    }
}

/* K draws of each group of a crossed term x from its proposal on c = b +
 * beta_sel, paired with the globals' draws: c, z = A_k^-1 (c - beta_sel)
 * in zs, and lz = log N(z; 0, I) - log q(z | theta_k), where q(z | theta) =
 * q(c = A z + beta_sel) |det A| */
static void draw_crossed(glmm_nest *nt, glmm_nest_level *x, uint64_t stream, uint64_t ctr)
{
    const svir_glmm *m = nt->m;
    const svir_term *tm = &m->terms[x->t];
    const int K = nt->K, q = x->q;
    const ptrdiff_t nz = nt->nz;
    for (int j = 0; j < x->J; j++) {
        double ed[SVIR_QMAX_STACK], noise[SVIR_QMAX_STACK];
        const double *blk = x->bp + (ptrdiff_t)j * x->lb;
        svir_local_exp_diag(q, blk, ed);
        for (int k = 0; k < K; k++) {
            const double *A = nt->g[k].A + tm->off_qq;
            const ptrdiff_t o = tm->off_z + (ptrdiff_t)j * q;
            double *b = x->bs + ((ptrdiff_t)k * x->J + j) * q, *z = nt->zs + (ptrdiff_t)k * nz + o;
            svir_normal_fill(nt->key, stream, ctr, (uint64_t)k * (uint64_t)nz + (uint64_t)o, q,
                             noise);
            double lq = svir_local_draw(q, blk, noise, ed, b), lp = 0.0;
            const double *beta = nt->theta + (ptrdiff_t)k * nt->D;
            for (int r = 0; r < q; r++) {
                double s = b[r] - (x->sel[r] >= 0 ? beta[x->sel[r]] : 0.0);
                for (int cc = 0; cc < r; cc++) s -= A[r * q + cc] * z[cc];
                z[r] = s / A[r * q + r];
                lq += log(A[r * q + r]);
                lp += -0.5 * z[r] * z[r] - SVIR_LOG_SQRT_2PI;
            }
            x->lz[(ptrdiff_t)j * K + k] = lp - lq;
        }
    }
}

/* K draws of each group of term x: zs and lz */
static void draw_term(glmm_nest *nt, glmm_nest_level *x, const double *lpar, uint64_t stream,
                      uint64_t ctr)
{
    const svir_glmm *m = nt->m;
    const svir_term *tm = &m->terms[x->t];
    const int K = nt->K, q = x->q;
    const ptrdiff_t nz = nt->nz;
#ifdef _OPENMP
#pragma omp parallel for num_threads(nt->T) schedule(static) if (x->J >= 64)
#endif
    for (int j = 0; j < x->J; j++)
        glmm_qem_group_draws(nt->key, stream, ctr, K, q, nz, tm->off_z + (ptrdiff_t)j * q,
                             lpar + tm->off_loc + (ptrdiff_t)j * x->lb, nt->zs, NULL,
                             x->lz + (ptrdiff_t)j * K);
}

/* Z_i . A z for observation i of term t, z at zs[k] */
static double term_eta(const svir_glmm *m, const glmm_nest *nt, int t, ptrdiff_t i, int k,
                       const double *A, int grp)
{
    const svir_term *tm = &m->terms[t];
    const int q = tm->q;
    const double *z = nt->zs + (ptrdiff_t)k * nt->nz + tm->off_z + (ptrdiff_t)grp * q;
    if (tm->z_ones) return A[0] * z[0];
    double s = 0.0;
    for (int r = 0; r < q; r++) {
        double br = 0.0;
        for (int cc = 0; cc <= r; cc++) br += A[r * q + cc] * z[cc];
        s += tm->Z[i + (ptrdiff_t)r * m->n] * br;
    }
    return s;
}

#define NEST_LL(FAM, LINK, ZI)                                                                  \
    ll += (m->wt ? m->wt[i] : 1.0) *                                                             \
          (ZI ? svir_loglik_zi_p(m, FAM, LINK, i, eta, &zp[r], &nt->aux[k0], &dd, &da, &dz)      \
              : svir_loglik(m, FAM, LINK, i, eta, &nt->aux[k0], &dd, &da))

/* the leaf level's tables; nonzero when out of memory */
static int leaf_tables(glmm_nest *nt)
{
    const svir_glmm *m = nt->m;
    const int K = nt->K, L = nt->L;
    glmm_nest_level *lf = &nt->lv[L - 1];
    const ptrdiff_t KL = ipow(K, L), D = nt->D, n = m->n;
    const double logK = log((double)K);
    int fail = 0;
#ifdef _OPENMP
#pragma omp parallel num_threads(nt->T) if (lf->J >= 16)
#endif
    {
        const size_t mj = (size_t)nt->maxnj + 1;
        double *xb = malloc(sizeof(double) * mj);
        svir_zi_part *zp = malloc(sizeof(svir_zi_part) * mj);
        /* the chain's part of eta: [L x K x rows], or with the shortcut
         * the intercepts [L x K] and their exponentials [L x K] */
        double *cz = malloc(sizeof(double) * (size_t)L * (size_t)K * (nt->fast ? 2 : mj));
        if (!xb || !zp || !cz) {
            SVIR_FLAG_SET(fail);
        } else {
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 4)
#endif
            for (int j = 0; j < lf->J; j++) {
                if (svir_poll()) continue;
                int anc[SVIR_NEST_LMAX], kk[SVIR_NEST_LMAX];
                anc[L - 1] = j;
                for (int l = L - 1; l > 0; l--) anc[l - 1] = nt->lv[l].par[anc[l]];
                const int r0 = nt->rowptr[j], r1 = nt->rowptr[j + 1], nj = r1 - r0;
                double sy = 0.0;
                if (nt->fast)
                    for (int r = r0; r < r1; r++) sy += m->y[nt->rows[r]];
                double *F = lf->F + (ptrdiff_t)j * lf->tsz;
                for (int k0 = 0; k0 < K; k0++) {
                    const double *beta = nt->theta + (ptrdiff_t)k0 * D;
                    const svir_globals *g = &nt->g[k0];
                    /* fixed effects, offset and the crossed terms (draw k0) */
                    for (int r = 0; r < nj; r++) {
                        const ptrdiff_t i = nt->rows[r0 + r];
                        double e = m->offset ? m->offset[i] : 0.0;
                        for (int cc = 0; cc < m->p; cc++) e += m->X[i + (ptrdiff_t)cc * n] * beta[cc];
                        for (int c = 0; c < nt->nc; c++) {
                            const int t = nt->cr[c].t;
                            e += term_eta(m, nt, t, i, k0, g->A + m->terms[t].off_qq,
                                          m->terms[t].group[i]);
                        }
                        xb[r] = e;
                        if (m->zi) zp[r] = svir_zi_parts(svir_etaz(m, i, beta + m->off_zi));
                    }
                    double s1 = 0.0, s2 = 0.0;
                    if (nt->fast) {
                        for (int l = 0; l < L; l++) {
                            const svir_term *tm = &m->terms[nt->lv[l].t];
                            const double a = g->A[tm->off_qq];
                            for (int k = 0; k < K; k++) {
                                const double v = a * nt->zs[(ptrdiff_t)k * nt->nz + tm->off_z + anc[l]];
                                /* and e^b, so that a Poisson entry multiplies */
                                cz[l * K + k] = v;
                                cz[(L + l) * K + k] = exp(v);
                            }
                        }
                        for (int r = 0; r < nj; r++) {
                            if (m->family == SVIR_GAUSSIAN) {
                                const double res = m->y[nt->rows[r0 + r]] - xb[r];
                                s2 += res * res;
                                s1 += res;
                            } else {
                                s1 += m->y[nt->rows[r0 + r]] * xb[r];
                                s2 += exp(xb[r]);
                            }
                        }
                    } else {
                        for (int l = 0; l < L; l++) {
                            const int t = nt->lv[l].t;
                            const double *A = g->A + m->terms[t].off_qq;
                            for (int k = 0; k < K; k++)
                                for (int r = 0; r < nj; r++)
                                    cz[((ptrdiff_t)l * K + k) * nj + r] =
                                        term_eta(m, nt, t, nt->rows[r0 + r], k, A, anc[l]);
                        }
                    }
                    for (int l = 0; l < L; l++) kk[l] = 0;
                    for (ptrdiff_t idx = 0; idx < KL; idx++) {
                        double ll = 0.0;
                        if (nt->fast && m->family != SVIR_GAUSSIAN) {
                            double s = 0.0, es = 1.0;
                            for (int l = 0; l < L; l++) {
                                s += cz[l * K + kk[l]];
                                es *= cz[(L + l) * K + kk[l]];
                            }
                            ll = s1 + s * sy - es * s2;
                        } else if (nt->fast) {
                            double s = 0.0;
                            for (int l = 0; l < L; l++) s += cz[l * K + kk[l]];
                            {
                                double da;
                                const double rss = s2 - 2.0 * s * s1 + s * s * nj;
                                ll = svir_loglik_gauss_sum(&nt->aux[k0], rss * nt->aux[k0].inv_s2,
                                                           (double)nj, &da);
                            }
                        } else {
                            for (int r = 0; r < nj; r++) {
                                const ptrdiff_t i = nt->rows[r0 + r];
                                double eta = xb[r], dd, da, dz;
                                for (int l = 0; l < L; l++) eta += cz[((ptrdiff_t)l * K + kk[l]) * nj + r];
                                SVIR_FAMILY_DISPATCH_ZI(m, NEST_LL);
                            }
                        }
                        F[k0 * KL + idx] = ll + lf->lz[(ptrdiff_t)j * K + kk[L - 1]];
                        for (int l = L - 1; l >= 0; l--) {
                            if (++kk[l] < K) break;
                            kk[l] = 0;
                        }
                    }
                }
                double *M = lf->M + (ptrdiff_t)j * (lf->tsz / K);
                for (ptrdiff_t pfx = 0; pfx < lf->tsz / K; pfx++)
                    M[pfx] = svir_qem_row(K, F + pfx * K, logK);
            }
        }
        free(xb);
        free(zp);
        free(cz);
    }
    return fail;
}

double glmm_nest_groups(glmm_nest *nt, const double *lpar, uint64_t stream, uint64_t ctr,
                        int *oom)
{
    const int K = nt->K, L = nt->L;
    const double logK = log((double)K);
    *oom = 0;
    for (int c = 0; c < nt->nc; c++) draw_crossed(nt, &nt->cr[c], stream, ctr);
    for (int l = 0; l < L; l++) draw_term(nt, &nt->lv[l], lpar, stream, ctr);
    /* the crossed groups' draws are weighed with the globals' */
    for (int c = 0; c < nt->nc; c++)
        for (int j = 0; j < nt->cr[c].J; j++)
            for (int k = 0; k < K; k++) nt->lw0[k] += nt->cr[c].lz[(ptrdiff_t)j * K + k];
    if (leaf_tables(nt)) {
        *oom = 1;
        return NAN;
    }
    /* up the chain */
    for (int l = L - 2; l >= 0; l--) {
        glmm_nest_level *x = &nt->lv[l];
        const glmm_nest_level *dn = &nt->lv[l + 1];
        const ptrdiff_t tsz = x->tsz;
#ifdef _OPENMP
#pragma omp parallel for num_threads(nt->T) schedule(static) if (x->J >= 64)
#endif
        for (int j = 0; j < x->J; j++) {
            double *F = x->F + (ptrdiff_t)j * tsz;
            for (ptrdiff_t s = 0; s < tsz; s++) F[s] = x->lz[(ptrdiff_t)j * K + s % K];
            for (int ci = x->crow[j]; ci < x->crow[j + 1]; ci++) {
                const double *Mc = dn->M + (ptrdiff_t)x->cidx[ci] * tsz;
                for (ptrdiff_t s = 0; s < tsz; s++) F[s] += Mc[s];
            }
            double *M = x->M + (ptrdiff_t)j * (tsz / K);
            for (ptrdiff_t pfx = 0; pfx < tsz / K; pfx++) M[pfx] = svir_qem_row(K, F + pfx * K, logK);
        }
    }
    const glmm_nest_level *top = &nt->lv[0];
    for (int j = 0; j < top->J; j++)
        for (int k0 = 0; k0 < K; k0++) nt->lw0[k0] += top->M[(ptrdiff_t)j * K + k0];
    double mx = -INFINITY, s = 0.0;
    for (int k = 0; k < K; k++) mx = fmax(mx, nt->lw0[k]);
    if (!isfinite(mx)) return mx;
    for (int k = 0; k < K; k++) s += exp(nt->lw0[k] - mx);
    return mx + log(s) - logK;
}

/* one group's moments from its marginal weights pi, smoothed, and its
 * proposal matched */
static void group_match(glmm_nest *nt, const glmm_nest_level *x, int j, const double *pi,
                        double et, double *Z1, double *Z2, double *lpar)
{
    const svir_term *tm = &nt->m->terms[x->t];
    const int q = x->q;
    double e1[SVIR_QMAX_STACK], e2[SVIR_QMAX_STACK * SVIR_QMAX_STACK];
    double ws[SVIR_QMAX_STACK * SVIR_QMAX_STACK];
    const ptrdiff_t o = tm->off_z + (ptrdiff_t)j * q;
    svir_qem_group_match(q, nt->K, pi, nt->zs + o, nt->nz, et, Z1 + o,
                         Z2 + x->z2off + (ptrdiff_t)j * q * q,
                         lpar + tm->off_loc + (ptrdiff_t)j * x->lb, e1, e2, ws);
}

void glmm_nest_mstep(glmm_nest *nt, const double *w0, double et, double *Z1, double *Z2,
                     double *lpar)
{
    const int K = nt->K, L = nt->L;
    for (int c = 0; c < nt->nc; c++) {
        const glmm_nest_level *x = &nt->cr[c];
#ifdef _OPENMP
#pragma omp parallel for num_threads(nt->T) schedule(static) if (x->J >= 64)
#endif
        for (int j = 0; j < x->J; j++) {
            double e1[SVIR_QMAX_STACK], e2[SVIR_QMAX_STACK * SVIR_QMAX_STACK];
            double ws[SVIR_QMAX_STACK * SVIR_QMAX_STACK];
            const int q = x->q;
            /* the proposal on b that draws, and the one on z the fit reports */
            svir_qem_group_match(q, K, w0, x->bs + (ptrdiff_t)j * q, (ptrdiff_t)x->J * q, et,
                                 x->B1 + (ptrdiff_t)j * q, x->B2 + (ptrdiff_t)j * q * q,
                                 x->bp + (ptrdiff_t)j * x->lb, e1, e2, ws);
            group_match(nt, x, j, w0, et, Z1, Z2, lpar);
        }
    }
    for (int l = 0; l < L; l++) {
        glmm_nest_level *x = &nt->lv[l];
        const glmm_nest_level *up = l ? &nt->lv[l - 1] : NULL;
        const ptrdiff_t tsz = x->tsz, np = tsz / K;
#ifdef _OPENMP
#pragma omp parallel for num_threads(nt->T) schedule(static) if (x->J >= 64)
#endif
        for (int j = 0; j < x->J; j++) {
            double pi[SVIR_QEM_KMAX];
            double *F = x->F + (ptrdiff_t)j * tsz;
            /* the joint weights of (prefix, k): the parent's joint weight of
             * the prefix (the globals' w0 at the top) times P(k | prefix) */
            const double *Wp = up ? (x->par[j] >= 0 ? up->F + (ptrdiff_t)x->par[j] * np : NULL) : w0;
            for (int k = 0; k < K; k++) pi[k] = 0.0;
            for (ptrdiff_t pfx = 0; pfx < np; pfx++) {
                const double wp = Wp ? Wp[pfx] : 0.0;
                for (int k = 0; k < K; k++) pi[k] += (F[pfx * K + k] *= wp);
            }
            group_match(nt, x, j, pi, et, Z1, Z2, lpar);
        }
    }
}
