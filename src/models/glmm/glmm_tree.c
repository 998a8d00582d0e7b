/* The GLMM's tree for QEM (see dev/QEM.md): importance weighting over
 * globals -> groups -> observations for models with one grouping factor,
 * and the same K-sample bound as an evaluator of any svir guide
 * (svir_tree_bound). No R API.
 *
 * Iteration t draws K samples theta_k of the globals from q(theta) (the
 * svir guide layout: mean-field or full-rank Normal on the unconstrained
 * scale, so positive parameters are LogNormal) and K samples z0_j,k of each
 * group's standardised effects from q0(z_j) (full-covariance Normal). The
 * group's effect paired with theta_k0 is z = z0 - w(theta_k0), where w is the
 * coupled guide's shift (glmm_coupling.h; w = 0 without coupling), so that
 * q(z | theta) = q0(z + w(theta)). Then
 *   log f_j(k0, kj) = sum_{i in j} log p(y_i | theta_k0, z)
 *                     + log N(z; 0, I) - log q0(z0_j,kj),
 *   log m_j(k0) = logsumexp_kj log f_j(k0, kj) - log K,
 *   log w0(k0) = log p(theta_k0) - log q(theta_k0) + sum_j log m_j(k0),
 *   log P-hat = logsumexp_k0 log w0(k0) - log K (the traced bound),
 * and with w0 normalised the group marginals pi_j(kj) = sum_k0 w0(k0)
 * f_j(k0, kj) / (K m_j(k0)) (glmm_qem.c uses them). */
#include "models/glmm/glmm_tree.h"
#include "core/svir_result.h"
#include "models/glmm/glmm_svi.h"
#include "models/glmm/glmm_local.h"
#include "models/glmm/glmm_qem.h"
#include "core/svir_guide.h"
#include "core/svir_math.h"
#include "core/svir_philox.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

static double lse(const double *x, int n, ptrdiff_t stride)
{
    double mx = -INFINITY;
    for (int k = 0; k < n; k++) mx = fmax(mx, x[k * stride]);
    if (!isfinite(mx)) return mx;
    double s = 0.0;
    for (int k = 0; k < n; k++) s += exp(x[k * stride] - mx);
    return mx + log(s);
}

void glmm_tree_free(glmm_tree *qt)
{
    if (qt->g)
        for (int k = 0; k < qt->K; k++) svir_globals_free(&qt->g[k]);
    if (qt->cp.cns) svir_coupling_free(&qt->cp);
    free(qt->rowptr); free(qt->rows); free(qt->xs); free(qt->ys); free(qt->os); free(qt->theta); free(qt->eps); free(qt->lw0);
    free(qt->cw); free(qt->be); free(qt->cu); free(qt->aux); free(qt->g); free(qt->lm);
    free(qt->lf); free(qt->zs); free(qt->kap);
    memset(qt, 0, sizeof *qt);
}

/* Sets up the tree of model m for K samples per latent, keeping the log f
 * tables if `tables`; with `anchor` (the guide's parameters its coupling is
 * anchored at) and c->couple, the groups' draws are shifted by the coupled
 * guide's w(theta). Returns 0, 1 (model or K not supported) or 2 (memory),
 * with a message in err. */
int glmm_tree_init(glmm_tree *qt, const svir_glmm *m, const svir_control *c, int K, int tables,
                     const double *anchor, char *err, size_t errlen)
{
    memset(qt, 0, sizeof *qt);
    if (m->nterms != 1 || m->terms[0].q > SVIR_QMAX_STACK) {
        snprintf(err, errlen, "QEM takes exactly one grouping factor (the model has %d)", m->nterms);
        return 1;
    }
    if (K < 1 || K > SVIR_QEM_KMAX) {
        snprintf(err, errlen, "the tree bound takes K from 1 to %d samples per latent (K = %d)",
                 SVIR_QEM_KMAX, K);
        return 1;
    }
    qt->m = m;
    qt->tm = &m->terms[0];
    qt->K = K;
    qt->q = qt->tm->q;
    qt->J = qt->tm->ngroups;
    qt->fullrank = c->guide == SVIR_GUIDE_FULLRANK;
    qt->direct = m->qem_direct;
    qt->T = c->threads > 0 ? c->threads : 1;
    qt->D = m->D;
    qt->nz = m->nz;
    qt->lb = svir_local_block(qt->q);
    svir_philox_key(c->seed, qt->key);
    const size_t J = (size_t)qt->J, Kz = (size_t)K, D = (size_t)qt->D, n = (size_t)m->n;
    const size_t q = (size_t)qt->q;
    qt->rowptr = calloc(J + 2, sizeof(int));
    qt->rows = malloc(sizeof(int) * (n + 1));
    qt->xs = malloc(sizeof(double) * (n * (size_t)m->p + 1));
    qt->ys = malloc(sizeof(double) * (n + 1));
    qt->os = malloc(sizeof(double) * (n + 1));
    qt->theta = malloc(sizeof(double) * (Kz * D + 1));
    qt->eps = malloc(sizeof(double) * (Kz * D + 1));
    qt->lw0 = malloc(sizeof(double) * Kz);
    qt->cw = calloc(Kz * q + 1, sizeof(double));
    qt->be = malloc(sizeof(double) * ((size_t)m->p + 1));
    qt->cu = malloc(sizeof(double) * (q + 1));
    qt->aux = malloc(sizeof(svir_aux) * Kz);
    qt->g = calloc(Kz, sizeof(svir_globals));
    qt->lm = malloc(sizeof(double) * J * Kz);
    qt->lf = tables ? malloc(sizeof(double) * J * Kz * Kz) : NULL;
    qt->zs = malloc(sizeof(double) * Kz * ((size_t)qt->nz + 1));
    int *next = malloc(sizeof(int) * (J + 1));
    if (qt->tm->lambda != 0.0) qt->kap = malloc(sizeof(double) * Kz);
    int fail = (qt->tm->lambda != 0.0 && !qt->kap) || !qt->rowptr || !qt->rows || !qt->xs || !qt->ys || !qt->os || !qt->theta || !qt->eps || !qt->lw0 || !qt->cw ||
               !qt->be || !qt->cu || !qt->aux || !qt->g || !qt->lm || (tables && !qt->lf) ||
               !qt->zs || !next;
    for (int k = 0; k < K && !fail; k++) fail = svir_globals_alloc(m, &qt->g[k]) != 0;
    if (!fail && anchor && m->couple) {
        int ns;
        fail = svir_coupling_new(m, c, anchor, &qt->cp, &ns) != 0;
    }
    if (fail) {
        free(next);
        glmm_tree_free(qt);
        snprintf(err, errlen, "out of memory setting up QEM's tree");
        return 2;
    }
    const svir_term *tm = qt->tm;
    for (size_t i = 0; i < n; i++) qt->rowptr[tm->group[i] + 1]++;
    for (int j = 0; j < qt->J; j++) {
        if (qt->rowptr[j + 1] > qt->maxnj) qt->maxnj = qt->rowptr[j + 1];
        qt->rowptr[j + 1] += qt->rowptr[j];
    }
    for (int j = 0; j < qt->J; j++) next[j] = qt->rowptr[j];
    for (size_t i = 0; i < n; i++) qt->rows[next[tm->group[i]]++] = (int)i;
    free(next);
    for (size_t r = 0; r < n; r++) {
        const size_t i = (size_t)qt->rows[r];
        for (int cc = 0; cc < m->p; cc++) qt->xs[r * (size_t)m->p + cc] = m->X[i + (size_t)cc * n];
        qt->ys[r] = m->y[i];
        qt->os[r] = m->offset ? m->offset[i] : 0.0;
    }
    return 0;
}

void glmm_qem_draw_globals(const svir_glmm *m, int K, int fullrank, const uint32_t key[2],
                           const double *gpar, uint64_t stream, uint64_t ctr, double *theta,
                           double *eps, svir_globals *g, svir_aux *aux, double *lw0)
{
    const ptrdiff_t D = m->D;
    for (int k = 0; k < K; k++) {
        double *th = theta + (ptrdiff_t)k * D, *ep = eps + (ptrdiff_t)k * D;
        for (ptrdiff_t d = 0; d < D; d++)
            ep[d] = svir_normal(key, stream, ctr, (uint64_t)(k * D + d));
        svir_guide_theta(D, fullrank, gpar, ep, th);
        double lq = 0.0;
        for (ptrdiff_t d = 0; d < D; d++)
            lq += -0.5 * ep[d] * ep[d] - gpar[fullrank ? D + d * (d + 1) / 2 + d : D + d] -
                  SVIR_LOG_SQRT_2PI;
        svir_unpack_globals(m, th, &g[k]);
        svir_aux_set(&aux[k], g[k].sigma, g[k].phi);
        lw0[k] = m->ll_const + svir_log_prior(m, th, NULL) - lq;
    }
}

/* K draws of the globals from q(theta) = gpar, counters `ctr` of `stream`:
 * theta, their unpacked values, lw0 = log p(theta) - log q(theta) (with the
 * likelihood's constant) and the coupled guide's shifts. */
void glmm_tree_globals(glmm_tree *qt, const double *gpar, uint64_t stream, uint64_t ctr)
{
    const svir_glmm *m = qt->m;
    glmm_qem_draw_globals(m, qt->K, qt->fullrank, qt->key, gpar, stream, ctr, qt->theta, qt->eps,
                          qt->g, qt->aux, qt->lw0);
    for (int k = 0; k < qt->K; k++) {
        /* a partially centred SVI guide (glmm_svi.c, back_q1_centred): its
         * coupling shift in u's units, from A_eff = sd kap, kap = sd^-lambda
         * (one term: kap[0] of svir_centre_A is the draw's; q > 1 keeps
         * its K in the draw's g) */
        if (qt->kap) svir_centre_A(m, &qt->g[k], qt->kap + k);
        if (qt->cp.couple)
            svir_coupling_forward(m, &qt->cp, qt->theta + (ptrdiff_t)k * qt->D, &qt->g[k], qt->be,
                                  qt->cu, qt->cw + (ptrdiff_t)k * qt->q);
        if (qt->kap) svir_uncentre_A(m, &qt->g[k], qt->kap + k);
    }
}

void glmm_qem_group_draws(const uint32_t key[2], uint64_t stream, uint64_t ctr, int K, int q,
                          ptrdiff_t nz, ptrdiff_t pos, const double *blk, double *zs,
                          double *lq0, double *lz)
{
    double ed[SVIR_QMAX_STACK], noise[SVIR_QMAX_STACK];
    svir_local_exp_diag(q, blk, ed);
    for (int k = 0; k < K; k++) {
        double *z0 = zs + (ptrdiff_t)k * nz + pos;
        svir_normal_fill(key, stream, ctr, (uint64_t)k * (uint64_t)nz + (uint64_t)pos, q, noise);
        const double lq = svir_local_draw(q, blk, noise, ed, z0);
        double lp = 0.0;
        for (int r = 0; r < q; r++) lp += -0.5 * z0[r] * z0[r] - SVIR_LOG_SQRT_2PI;
        if (lq0) lq0[k] = lq;
        lz[k] = lp - lq;
    }
}

/* zero inflation: its etaz parts, per observation and global draw, in zp */
#define QEM_LL(FAM, LINK, ZI)                                                                   \
    ll += (m->wt ? m->wt[i] : 1.0) *                                                             \
          (ZI ? svir_loglik_zi_p(m, FAM, LINK, i, eta, &zp[r - r0], &qt->aux[k0], &dd, &da, &dz) \
              : svir_loglik(m, FAM, LINK, i, eta, &qt->aux[k0], &dd, &da))

/* K draws z0 of every group from q0 = lpar (counters `ctr` of `stream`),
 * the K x K tables log f_j and log m_j. Returns nonzero when out of memory.
 *
 * Where the group's log-likelihood depends on its effect b through a few
 * sums, a pair (k0, kj) costs O(q^2) instead of O(n_j) after an O(n_j q)
 * pass per k0 (the table then costs K n q + K^2 J q^2, not K^2 n q):
 *   Gaussian, identity link, any q: with r_i = y_i - x_i beta - offset_i,
 *     sum_i (r_i - Z_i b)^2 = sum r^2 - 2 b' sum Z_i r_i + b' (sum Z_i Z_i') b;
 *   Poisson, log link, random intercept:
 *     sum_i y_i eta_i - exp(eta_i) = sum y_i xb_i + b sum y_i - e^b sum e^xb_i.
 * Other families and links, and m->qem_direct (for the tests), evaluate
 * every observation. */
int glmm_tree_groups(glmm_tree *qt, const double *lpar, uint64_t stream, uint64_t ctr)
{
    const svir_glmm *m = qt->m;
    const svir_term *tm = qt->tm;
    const int K = qt->K, q = qt->q, J = qt->J, couple = qt->cp.couple;
    const ptrdiff_t nz = qt->nz, D = qt->D, n = m->n;
    const double logK = log((double)K);
    /* the sums' shortcuts are for unweighted observations */
    const int gauss = !qt->direct && !m->wt && m->family == SVIR_GAUSSIAN &&
                      m->link == SVIR_LINK_IDENTITY;
    const int pois = !qt->direct && !m->wt && !m->zi && m->family == SVIR_POISSON &&
                     m->link == SVIR_LINK_LOG && tm->z_ones;
    int fail = 0;
#ifdef _OPENMP
#pragma omp parallel num_threads(qt->T) if (J >= 64)
#endif
    {
        double *xb = malloc(sizeof(double) * (size_t)(qt->maxnj + 1));
        svir_zi_part *zp = malloc(sizeof(svir_zi_part) * (size_t)(qt->maxnj + 1));
        double *row = malloc(sizeof(double) * (size_t)K);
        double *szz = malloc(sizeof(double) * (size_t)(q * q + 1)); /* sum Z_i Z_i' (lower) */
        double b[SVIR_QMAX_STACK], zc[SVIR_QMAX_STACK], szr[SVIR_QMAX_STACK];
        double lq0[SVIR_QEM_KMAX], lzp[SVIR_QEM_KMAX];
        if (!xb || !zp || !row || !szz) {
            SVIR_FLAG_SET(fail);
        } else {
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
            for (int j = 0; j < J; j++) {
                if (svir_poll()) continue;
                const double *blk = lpar + (ptrdiff_t)j * qt->lb;
                glmm_qem_group_draws(qt->key, stream, ctr, K, q, nz, (ptrdiff_t)j * q, blk, qt->zs,
                                     lq0, lzp);
                const int r0 = qt->rowptr[j], r1 = qt->rowptr[j + 1];
                const double nj = (double)(r1 - r0);
                double sy = 0.0; /* Poisson: sum y_i */
                if (gauss) {
                    for (int r = 0; r < q; r++)
                        for (int cc = 0; cc <= r; cc++) szz[r * q + cc] = 0.0;
                    for (int rr = r0; rr < r1; rr++) {
                        const ptrdiff_t i = qt->rows[rr];
                        for (int r = 0; r < q; r++) {
                            const double zr = tm->z_ones ? 1.0 : tm->Z[i + (ptrdiff_t)r * n];
                            for (int cc = 0; cc <= r; cc++)
                                szz[r * q + cc] += zr * (tm->z_ones ? 1.0 : tm->Z[i + (ptrdiff_t)cc * n]);
                        }
                    }
                } else if (pois) {
                    for (int rr = r0; rr < r1; rr++) sy += qt->ys[rr];
                }
                for (int k0 = 0; k0 < K; k0++) {
                    const double *beta = qt->theta + (ptrdiff_t)k0 * D, *A = qt->g[k0].A;
                    const double *w = qt->cw + (ptrdiff_t)k0 * q;
                    double *lfr = qt->lf ? qt->lf + ((ptrdiff_t)j * K + k0) * K : row;
                    for (int r = r0; r < r1; r++) {
                        const double *xr = qt->xs + (ptrdiff_t)r * m->p;
                        double e = qt->os[r];
                        for (int cc = 0; cc < m->p; cc++) e += xr[cc] * beta[cc];
                        xb[r - r0] = e;
                        if (m->zi) zp[r - r0] = svir_zi_parts(svir_etaz(m, qt->rows[r], beta + m->off_zi));
                    }
                    /* the sums of the fast paths */
                    double s2 = 0.0, s1 = 0.0;
                    if (gauss) {
                        for (int r = 0; r < q; r++) szr[r] = 0.0;
                        for (int rr = r0; rr < r1; rr++) {
                            const ptrdiff_t i = qt->rows[rr];
                            const double res = qt->ys[rr] - xb[rr - r0];
                            s2 += res * res;
                            if (tm->z_ones) {
                                szr[0] += res;
                            } else {
                                for (int r = 0; r < q; r++) szr[r] += tm->Z[i + (ptrdiff_t)r * n] * res;
                            }
                        }
                    } else if (pois) {
                        for (int rr = r0; rr < r1; rr++) {
                            s1 += qt->ys[rr] * xb[rr - r0];
                            s2 += exp(xb[rr - r0]);
                        }
                    }
                    for (int kj = 0; kj < K; kj++) {
                        const double *z = qt->zs + (ptrdiff_t)kj * nz + (ptrdiff_t)j * q;
                        double lz = lzp[kj];
                        if (couple || qt->kap) {
                            /* z = kap (z0 - w(theta_k0)) (kap = 1 unless the
                             * guide is centred): log N(z; 0, I) - log q0(z0)
                             * + log kap */
                            const double kp = qt->kap ? qt->kap[k0] : 1.0;
                            lz = -lq0[kj] + (qt->kap ? log(kp) : 0.0);
                            for (int r = 0; r < q; r++) zc[r] = z[r] - (couple ? w[r] : 0.0);
                            /* kp = det K for q > 1 */
                            if (qt->kap) svir_centre_z(tm, &qt->g[k0], kp, zc);
                            for (int r = 0; r < q; r++) lz += -0.5 * zc[r] * zc[r] - SVIR_LOG_SQRT_2PI;
                            z = zc;
                        }
                        svir_local_b(q, A, z, b);
                        double ll = 0.0, dd, da, dz;
                        if (gauss) {
                            double rss = s2;
                            for (int r = 0; r < q; r++) {
                                rss -= 2.0 * b[r] * szr[r];
                                for (int cc = 0; cc < r; cc++) rss += 2.0 * b[r] * szz[r * q + cc] * b[cc];
                                rss += b[r] * szz[r * q + r] * b[r];
                            }
                            ll = svir_loglik_gauss_sum(&qt->aux[k0], rss * qt->aux[k0].inv_s2, nj, &da);
                        } else if (pois) {
                            ll = s1 + b[0] * sy - exp(b[0]) * s2;
                        } else {
                            for (int r = r0; r < r1; r++) {
                                const ptrdiff_t i = qt->rows[r];
                                double eta = xb[r - r0];
                                if (tm->z_ones) {
                                    eta += b[0];
                                } else {
                                    for (int cc = 0; cc < q; cc++) eta += tm->Z[i + (ptrdiff_t)cc * n] * b[cc];
                                }
                                SVIR_FAMILY_DISPATCH_ZI(m, QEM_LL);
                            }
                        }
                        lfr[kj] = ll + lz;
                    }
                    /* log m_j(k0), and the row turned into f / (K m_j) */
                    qt->lm[(ptrdiff_t)j * K + k0] = svir_qem_row(K, lfr, logK);
                }
            }
        }
        free(xb);
        free(zp);
        free(row);
        free(szz);
    }
    return fail;
}

/* log P-hat from the globals' and the groups' parts; lw0 becomes log w0
 * (unnormalised). */
double glmm_tree_log_phat(glmm_tree *qt)
{
    const int K = qt->K;
    for (int k0 = 0; k0 < K; k0++)
        for (int j = 0; j < qt->J; j++) qt->lw0[k0] += qt->lm[(ptrdiff_t)j * K + k0];
    return lse(qt->lw0, K, 1) - log((double)K);
}

int svir_tree_bound(const svir_glmm *m, const svir_control *c, const double *gpar,
                    const double *lpar, const double *anchor, int K, int reps, double *out,
                    char *err, size_t errlen)
{
    glmm_tree qt;
    int st = glmm_tree_init(&qt, m, c, K, 0, anchor, err, errlen);
    if (st) return st;
    for (int r = 0; r < reps && !st; r++) {
        glmm_tree_globals(&qt, gpar, SVIR_STREAM_DRAWS, (uint64_t)r);
        if (glmm_tree_groups(&qt, lpar, SVIR_STREAM_DRAWS_LOCAL, (uint64_t)r)) {
            snprintf(err, errlen, "out of memory evaluating the bound");
            st = 2;
        } else {
            out[r] = glmm_tree_log_phat(&qt);
        }
    }
    glmm_tree_free(&qt);
    return st;
}

