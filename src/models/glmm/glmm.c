/* GLMM log density and hand-derived gradients (no R API). */
#include "models/glmm/glmm.h"
#include "models/glmm/glmm_local.h"
#include "core/svir_philox.h"
#include "core/svir_math.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

static double obs_const(const svir_glmm *m, ptrdiff_t i)
{
    const double y = m->y[i];
    switch (m->family) {
    case SVIR_GAUSSIAN:
        return -SVIR_LOG_SQRT_2PI;
    case SVIR_BINOMIAL: {
        const double t = m->trials ? m->trials[i] : 1.0;
        if (t == 1.0) return 0.0;
        return svir_lgamma(t + 1) - svir_lgamma(y + 1) - svir_lgamma(t - y + 1);
    }
    default: /* poisson, negbin */
        return y < 2 ? 0.0 : -svir_lgamma(y + 1);
    }
}

int svir_glmm_init(svir_glmm *m, char *err, size_t errlen)
{
    if (m->n < 1 || m->p < 0) {
        snprintf(err, errlen, "the model has no observations");
        return 1;
    }
    ptrdiff_t off = m->p, nz = 0, nloc = 0, nqq = 0;
    m->qmax = 1;
    for (int t = 0; t < m->nterms; t++) {
        svir_term *tm = &m->terms[t];
        tm->nobs = NULL;
        if (tm->q < 1 || tm->ngroups < 1) {
            snprintf(err, errlen, "random-effect term %d is empty", t + 1);
            return 1;
        }
        if (tm->q > 64) {
            snprintf(err, errlen, "random-effect term %d has %d columns; at most 64 are supported",
                     t + 1, tm->q);
            return 1;
        }
        if (tm->q == 1) tm->correlated = 0;
        tm->off_sd = off;
        off += tm->q;
        tm->off_z = nz;
        nz += (ptrdiff_t)tm->ngroups * tm->q;
        tm->off_loc = nloc;
        nloc += (ptrdiff_t)tm->ngroups * svir_local_block(tm->q);
        tm->off_qq = nqq;
        nqq += (ptrdiff_t)tm->q * tm->q;
        if (tm->q > m->qmax) m->qmax = tm->q;
    }
    for (int t = 0; t < m->nterms; t++) {
        svir_term *tm = &m->terms[t];
        if (tm->correlated) {
            tm->off_cpc = off;
            off += (ptrdiff_t)tm->q * (tm->q - 1) / 2;
        } else {
            tm->off_cpc = -1;
        }
    }
    m->off_sigma = m->family == SVIR_GAUSSIAN ? off++ : -1;
    m->off_phi = m->family == SVIR_NEGBIN ? off++ : -1;
    if (m->zi && (!svir_glmm_zi_ok(m->family, m->link) || m->pz < 1 || !m->Xz)) {
        snprintf(err, errlen, "zero inflation takes the poisson or negbin family (log link) and "
                 "a model matrix of at least one column");
        return 1;
    }
    m->off_zi = m->zi ? off : -1;
    if (m->zi) off += m->pz;
    m->D = off;
    m->nz = nz;
    m->nloc = nloc;
    m->nqq = nqq;

    for (int t = 0; t < m->nterms; t++) {
        svir_term *tm = &m->terms[t];
        tm->nobs = calloc((size_t)tm->ngroups, sizeof(double));
        if (!tm->nobs) {
            snprintf(err, errlen, "out of memory");
            return 2;
        }
        for (ptrdiff_t i = 0; i < m->n; i++) {
            const int g = tm->group[i];
            if (g < 0 || g >= tm->ngroups) {
                snprintf(err, errlen, "group index out of range in term %d", t + 1);
                return 1;
            }
            tm->nobs[g] += 1.0;
        }
        tm->z_ones = tm->q == 1;
        for (ptrdiff_t i = 0; i < m->n && tm->z_ones; i++)
            if (tm->Z[i] != 1.0) tm->z_ones = 0;
    }
    m->nt_icpt = m->nterms >= 1 && m->nterms <= SVIR_NT_ICPT_MAX ? m->nterms : 0;
    for (int t = 0; t < m->nterms; t++)
        if (!m->terms[t].z_ones) m->nt_icpt = 0;
    m->x_ones = -1;
    for (int c = 0; c < m->p && m->x_ones < 0; c++) {
        const double *xc = m->X + (ptrdiff_t)c * m->n;
        ptrdiff_t i = 0;
        while (i < m->n && xc[i] == 1.0) i++;
        if (i == m->n) m->x_ones = c;
    }
    double c = 0.0;
    double ws = 0.0;
    for (ptrdiff_t i = 0; i < m->n; i++) {
        const double w = m->wt ? m->wt[i] : 1.0;
        c += w * obs_const(m, i);
        ws += w;
    }
    m->wsum = ws;
    m->ll_const = c;
    return 0;
}

void svir_glmm_free(svir_glmm *m)
{
    for (int t = 0; t < m->nterms; t++) {
        free(m->terms[t].nobs);
        m->terms[t].nobs = NULL;
    }
}

int svir_globals_alloc(const svir_glmm *m, svir_globals *g)
{
    ptrdiff_t nsd = 0;
    for (int t = 0; t < m->nterms; t++) nsd += m->terms[t].q;
    g->sd = malloc(sizeof(double) * (size_t)(nsd + 1));
    g->L = malloc(sizeof(double) * (size_t)(m->nqq + 1));
    g->A = malloc(sizeof(double) * (size_t)(m->nqq + 1));
    g->K = malloc(sizeof(double) * (size_t)(m->nqq + 1));
    return g->sd && g->L && g->A && g->K ? 0 : 2;
}

void svir_globals_free(svir_globals *g)
{
    free(g->sd);
    free(g->L);
    free(g->A);
    free(g->K);
    g->sd = g->L = g->A = g->K = NULL;
}

/* log p(theta): svir_log_prior_ws with workspace on the stack (or the heap
 * for terms of more than 64 columns) */
double svir_log_prior(const svir_glmm *m, const double *theta, double *grad)
{
    double ws[64 * 64];
    double *w = m->qmax <= 64 ? ws : malloc(sizeof(double) * (size_t)m->qmax * (size_t)m->qmax);
    if (!w) return NAN;
    const double lp = svir_log_prior_ws(m, theta, grad, w);
    if (w != ws) free(w);
    return lp;
}

/* ---- likelihood --------------------------------------------------------- */

double svir_eta_obs(const svir_glmm *m, ptrdiff_t i, const double *beta, const double *b)
{
    return svir_eta_obs_except(m, i, beta, b, -1);
}

double svir_eta_obs_except(const svir_glmm *m, ptrdiff_t i, const double *beta, const double *b,
                           int skip)
{
    const ptrdiff_t n = m->n;
    double eta = m->offset ? m->offset[i] : 0.0;
    for (int k = 0; k < m->p; k++) eta += m->X[i + k * n] * beta[k];
    for (int t = 0; t < m->nterms; t++) {
        if (t == skip) continue;
        const svir_term *tm = &m->terms[t];
        const double *bj = b + tm->off_z + (ptrdiff_t)tm->group[i] * tm->q;
        if (tm->z_ones) {
            eta += bj[0];
            continue;
        }
        for (int k = 0; k < tm->q; k++) eta += tm->Z[i + k * n] * bj[k];
    }
    return eta;
}

#define SVIR_OBS_REF(FAM, LINK) ll += svir_loglik_obs_w(m, FAM, LINK, 0, i, eta, 0.0, aux, &d, &da, &dz)
void svir_obs_pass_ref(const svir_glmm *m, const double *beta, const double *b,
                       const svir_aux *aux, double *ll_out, double *gbeta, double *gaux, double *G)
{
    double ll = 0.0, ga = 0.0;
    for (int c = 0; c < m->p; c++) gbeta[c] = 0.0;
    for (ptrdiff_t k = 0; k < m->nz; k++) G[k] = 0.0;
    for (ptrdiff_t i = 0; i < m->n; i++) {
        double d = 0.0, da = 0.0, dz = 0.0;
        const double eta = svir_eta_obs(m, i, beta, b);
        SVIR_FAMILY_DISPATCH(m, SVIR_OBS_REF);
        ga += da;
        for (int c = 0; c < m->p; c++) gbeta[c] += m->X[i + (ptrdiff_t)c * m->n] * d;
        for (int t = 0; t < m->nterms; t++) {
            const svir_term *tm = &m->terms[t];
            double *gj = G + tm->off_z + (ptrdiff_t)tm->group[i] * tm->q;
            for (int k = 0; k < tm->q; k++)
                gj[k] += tm->z_ones ? d : d * tm->Z[i + (ptrdiff_t)k * m->n];
        }
    }
    *ll_out = ll;
    *gaux = ga;
}
#undef SVIR_OBS_REF

void svir_b_from_z(const svir_glmm *m, const svir_globals *g, const double *z, double *b)
{
    for (int t = 0; t < m->nterms; t++) {
        const svir_term *tm = &m->terms[t];
        const int q = tm->q;
        const double *A = g->A + tm->off_qq;
        for (int j = 0; j < tm->ngroups; j++) {
            const double *zj = z + tm->off_z + (ptrdiff_t)j * q;
            double *bj = b + tm->off_z + (ptrdiff_t)j * q;
            for (int r = 0; r < q; r++) {
                double s = 0.0;
                for (int c = 0; c <= r; c++) s += A[r * q + c] * zj[c];
                bj[r] = s;
            }
        }
    }
}

void svir_backprop_A(const svir_glmm *m, int t, const double *theta,
                     const svir_globals *g, const double *dA, double *grad)
{
    const int q = m->terms[t].q;
    double ws[16 * 16];
    double *w = q <= 16 ? ws : malloc(sizeof(double) * (size_t)(q * q));
    if (!w) return;
    svir_backprop_A_ws(m, t, theta, g, dA, grad, w);
    if (w != ws) free(w);
}

double svir_log_joint(const svir_glmm *m, const double *theta, const double *z,
                      double *grad_theta, double *grad_z, double *loglik)
{
    svir_globals g;
    if (svir_globals_alloc(m, &g)) return NAN;
    svir_unpack_globals(m, theta, &g);
    double *b = malloc(sizeof(double) * (size_t)(m->nz + 1));
    double *G = calloc((size_t)(m->nz + 1), sizeof(double));
    double *gb = calloc((size_t)(m->p + 1), sizeof(double));
    double *gz = calloc((size_t)(m->pz + 1), sizeof(double));
    svir_b_from_z(m, &g, z, b);
    double ll = 0.0, gaux = 0.0;
    svir_aux aux;
    svir_aux_set(&aux, g.sigma, g.phi);
    for (ptrdiff_t i = 0; i < m->n; i++) {
        double de, da, dz = 0.0;
        const double eta = svir_eta_obs(m, i, theta, b);
        ll += svir_loglik_obs_w(m, m->family, m->link, m->zi, i, eta,
                              m->zi ? svir_etaz(m, i, theta + m->off_zi) : 0.0, &aux, &de, &da,
                              &dz);
        if (!grad_theta && !grad_z) continue;
        gaux += da;
        for (int k = 0; k < m->p; k++) gb[k] += de * m->X[i + k * m->n];
        for (int k = 0; k < m->pz; k++) gz[k] += dz * m->Xz[i + k * m->n];
        for (int t = 0; t < m->nterms; t++) {
            const svir_term *tm = &m->terms[t];
            double *Gj = G + tm->off_z + (ptrdiff_t)tm->group[i] * tm->q;
            for (int k = 0; k < tm->q; k++) Gj[k] += de * tm->Z[i + k * m->n];
        }
    }
    if (loglik) *loglik = ll;
    double lp = ll + m->ll_const;
    for (ptrdiff_t k = 0; k < m->nz; k++) lp += -0.5 * z[k] * z[k] - SVIR_LOG_SQRT_2PI;
    if (grad_theta) {
        for (ptrdiff_t k = 0; k < m->D; k++) grad_theta[k] = 0.0;
        for (int k = 0; k < m->p; k++) grad_theta[k] = gb[k];
        if (m->off_sigma >= 0) grad_theta[m->off_sigma] += gaux;
        if (m->off_phi >= 0) grad_theta[m->off_phi] += gaux;
        for (int k = 0; k < m->pz && m->zi; k++) grad_theta[m->off_zi + k] = gz[k];
    }
    lp += svir_log_prior(m, theta, grad_theta);
    if (grad_theta || grad_z) {
        double *dA = malloc(sizeof(double) * (size_t)(m->qmax * m->qmax));
        for (int t = 0; t < m->nterms; t++) {
            const svir_term *tm = &m->terms[t];
            const int q = tm->q;
            const double *A = g.A + tm->off_qq;
            memset(dA, 0, sizeof(double) * (size_t)(q * q));
            for (int j = 0; j < tm->ngroups; j++) {
                const double *Gj = G + tm->off_z + (ptrdiff_t)j * q;
                const double *zj = z + tm->off_z + (ptrdiff_t)j * q;
                for (int r = 0; r < q; r++)
                    for (int c = 0; c <= r; c++) dA[r * q + c] += Gj[r] * zj[c];
                if (grad_z) {
                    double *gz = grad_z + tm->off_z + (ptrdiff_t)j * q;
                    for (int c = 0; c < q; c++) {
                        double s = 0.0;
                        for (int r = c; r < q; r++) s += A[r * q + c] * Gj[r];
                        gz[c] = s - zj[c];
                    }
                }
            }
            if (grad_theta) svir_backprop_A(m, t, theta, &g, dA, grad_theta);
        }
        free(dA);
    }
    free(b);
    free(G);
    free(gb);
    free(gz);
    svir_globals_free(&g);
    return lp;
}

/* ---- log-likelihood of a block of parameter draws --------------------------
 * One pass over the data serves SVIR_LL_BLOCK draws: per observation the
 * indices and covariates are read once and the inner loops run over the
 * draws (contiguous, no dependencies), instead of one full pass per draw.
 * Those loops are unrolled in full, so that the draws' linear predictors
 * stay in (vector) registers. */
SVIR_ALWAYS_INLINE void loglik_block_fam(const svir_glmm *m, const int family, const int link,
                                         const int ZI, const int NT, int nb, const double *beta,
                                         const double *b, const svir_aux *aux, double *ll)
{
    const ptrdiff_t n = m->n;
    enum { NB = SVIR_LL_BLOCK };
    double acc[NB] = {0}, eta[NB];
    /* NT = 1..SVIR_NT_ICPT_MAX: every term is a random intercept (pointers in
     * registers); 0: any terms */
    const int *grp[SVIR_NT_ICPT_MAX] = {NULL};
    const double *bt[SVIR_NT_ICPT_MAX] = {NULL};
    /* aux copied locally: the loads of sigma and phi need not be redone */
    double b0[NB];
    svir_aux al[NB];
    for (int s = 0; s < NB; s++) {
        b0[s] = m->x_ones >= 0 ? beta[(ptrdiff_t)m->x_ones * NB + s] : 0.0;
        al[s] = aux[s];
    }
    SVIR_UNROLL4
    for (int t = 0; t < NT; t++) {
        grp[t] = m->terms[t].group;
        bt[t] = b + m->terms[t].off_z * NB;
    }
    for (ptrdiff_t i = 0; i < n; i++) {
        const double off = m->offset ? m->offset[i] : 0.0;
        SVIR_UNROLL8
        for (int s = 0; s < NB; s++) eta[s] = off + b0[s];
        for (int c = 0; c < m->p; c++) {
            if (c == m->x_ones) continue;
            const double x = m->X[i + (ptrdiff_t)c * n];
            const double *bc = beta + (ptrdiff_t)c * NB;
            SVIR_UNROLL8
            for (int s = 0; s < NB; s++) eta[s] += x * bc[s];
        }
        if (NT > 0) {
            SVIR_UNROLL4
            for (int t = 0; t < NT; t++) {
                const double *bj = bt[t] + (ptrdiff_t)grp[t][i] * NB;
                SVIR_UNROLL8
                for (int s = 0; s < NB; s++) eta[s] += bj[s];
            }
        } else {
            for (int t = 0; t < m->nterms; t++) {
                const svir_term *tm = &m->terms[t];
                const int q = tm->q;
                const double *bj = b + (tm->off_z + (ptrdiff_t)tm->group[i] * q) * NB;
                for (int c = 0; c < q; c++) {
                    const double zc = tm->z_ones ? 1.0 : tm->Z[i + (ptrdiff_t)c * n];
                    SVIR_UNROLL8
                    for (int s = 0; s < NB; s++) eta[s] += zc * bj[(ptrdiff_t)c * NB + s];
                }
            }
        }
        if (family == SVIR_GAUSSIAN) {
            /* the sum of squared residuals; svir_loglik_gauss_sum at the end */
            const double y = m->y[i], wi = m->wt ? m->wt[i] : 1.0;
            SVIR_UNROLL8
            for (int s = 0; s < NB; s++) {
                const double r = y - eta[s];
                acc[s] += wi * r * r;
            }
        } else if (ZI) {
            /* the zero inflation's coefficients follow beta in the block */
            double etaz[NB] = {0};
            for (int c = 0; c < m->pz; c++) {
                const double x = m->Xz[i + (ptrdiff_t)c * n];
                const double *gc = beta + (ptrdiff_t)(m->p + c) * NB;
                SVIR_UNROLL8
                for (int s = 0; s < NB; s++) etaz[s] += x * gc[s];
            }
            SVIR_UNROLL8
            for (int s = 0; s < NB; s++) {
                double de, da, dz;
                acc[s] += svir_loglik_obs_w(m, family, link, 1, i, eta[s], etaz[s], &al[s], &de, &da, &dz);
            }
        } else {
            SVIR_UNROLL8
            for (int s = 0; s < NB; s++) {
                double de, da;
                acc[s] += svir_loglik_obs_w(m, family, link, 0, i, eta[s], 0.0, &al[s], &de, &da, NULL);
            }
        }
    }
    for (int s = 0; s < nb; s++) {
        double da;
        ll[s] = family == SVIR_GAUSSIAN
            ? svir_loglik_gauss_sum(&al[s], al[s].inv_s2 * acc[s], m->wsum, &da)
            : acc[s];
    }
}

void svir_block_put(const svir_glmm *m, const svir_globals *g, const double *theta,
                    const double *z, int slot, double *b, double *beta_blk, double *b_blk,
                    svir_aux *aux)
{
    enum { NB = SVIR_LL_BLOCK };
    svir_b_from_z(m, g, z, b);
    for (ptrdiff_t k = 0; k < m->nz; k++) b_blk[k * NB + slot] = b[k];
    for (int c = 0; c < m->p; c++) beta_blk[c * NB + slot] = theta[c];
    for (int c = 0; c < m->pz && m->zi; c++) beta_blk[(m->p + c) * NB + slot] = theta[m->off_zi + c];
    svir_aux_set(&aux[slot], g->sigma, g->phi);
}

void svir_loglik_block(const svir_glmm *m, int nb, const double *beta, const double *b,
                       const svir_aux *aux, double *ll)
{
#define BLOCK(FAM, LINK, ZI) \
    switch (m->nt_icpt) { \
    case 1: loglik_block_fam(m, FAM, LINK, ZI, 1, nb, beta, b, aux, ll); break; \
    case 2: loglik_block_fam(m, FAM, LINK, ZI, 2, nb, beta, b, aux, ll); break; \
    case 3: loglik_block_fam(m, FAM, LINK, ZI, 3, nb, beta, b, aux, ll); break; \
    case 4: loglik_block_fam(m, FAM, LINK, ZI, 4, nb, beta, b, aux, ll); break; \
    default: loglik_block_fam(m, FAM, LINK, ZI, 0, nb, beta, b, aux, ll); break; \
    }
    SVIR_FAMILY_DISPATCH_ZI(m, BLOCK)
#undef BLOCK
}

int svir_local_step_ref(const svir_glmm *m, const double *lpar, const double *A, const double *G,
                        const double *shift, uint64_t seed, uint64_t step, double scale, int stl,
                        double *z, double *b, double *lgrad, double *kl_out, double *logq_out,
                        double *sums)
{
    uint32_t key[2];
    double kl = 0.0, logq = 0.0;
    int qoff = 0;
    for (int t = 0; t < m->nterms; t++)
        if (m->terms[t].q > SVIR_QMAX_STACK) return 1;
    double *noise = malloc(sizeof(double) * ((size_t)m->nz + 1));
    double *ed = malloc(sizeof(double) * ((size_t)m->nz + 1));
    if (!noise || !ed) {
        free(noise);
        free(ed);
        return 2;
    }
    svir_philox_key(seed, key);
    svir_normal_fill(key, SVIR_STREAM_LOCAL, step, 0, m->nz, noise);
    for (int t = 0; t < m->nterms; t++) {
        const svir_term *tm = &m->terms[t];
        const int q = tm->q;
        const ptrdiff_t lb = svir_local_block(q);
        for (int j = 0; j < tm->ngroups; j++) {
            const ptrdiff_t pos = tm->off_z + (ptrdiff_t)j * q, lo = tm->off_loc + (ptrdiff_t)j * lb;
            const double *blk = lpar + lo;
            double *gm = lgrad + lo;
            for (ptrdiff_t c = 0; c < lb; c++) gm[c] = 0.0;
            svir_local_exp_diag(q, blk, ed + pos);
            logq += svir_local_draw(q, blk, noise + pos, ed + pos, z + pos);
            svir_local_b(q, A + tm->off_qq, z + pos, b + pos);
            svir_local_backward(q, A + tm->off_qq, G + pos, noise + pos, z + pos, ed + pos, blk + q,
                                shift ? shift + qoff : NULL, scale, scale, 1.0, stl, gm, gm + q);
            kl += svir_local_kl(q, blk, blk + q, ed + pos, scale, stl ? 0.0 : scale, gm, gm + q);
        }
        qoff += q;
    }
    /* per-term sums over the groups, in group order */
    int sumq = 0;
    for (int t = 0; t < m->nterms; t++) sumq += m->terms[t].q;
    for (ptrdiff_t k = 0; k < m->nqq + 2 * (ptrdiff_t)sumq; k++) sums[k] = 0.0;
    qoff = 0;
    for (int t = 0; t < m->nterms; t++) {
        const svir_term *tm = &m->terms[t];
        const int q = tm->q;
        const ptrdiff_t lb = svir_local_block(q);
        double *dA = sums + tm->off_qq, *ms = sums + m->nqq + qoff, *zs = ms + sumq;
        for (int r = 0; r < q; r++)
            for (int c = 0; c <= r; c++)
                for (int j = 0; j < tm->ngroups; j++) {
                    const ptrdiff_t pos = tm->off_z + (ptrdiff_t)j * q;
                    dA[r * q + c] += scale * G[pos + r] * z[pos + c];
                }
        for (int r = 0; r < q; r++)
            for (int j = 0; j < tm->ngroups; j++) {
                ms[r] += lpar[tm->off_loc + (ptrdiff_t)j * lb + r];
                zs[r] += z[tm->off_z + (ptrdiff_t)j * q + r];
            }
        qoff += q;
    }
    free(noise);
    free(ed);
    *kl_out = kl;
    *logq_out = logq;
    return 0;
}

void svir_centre_A(const svir_glmm *m, svir_globals *g, double *kap)
{
    for (int t = 0; t < m->nterms; t++) {
        const svir_term *tm = &m->terms[t];
        const double lam = tm->lambda;
        if (lam == 0.0) continue;
        const int q = tm->q;
        double *A = g->A + tm->off_qq;
        if (q == 1) {
            kap[t] = exp(-lam * log(A[0]));
            A[0] *= kap[t];
            continue;
        }
        const double *sd = g->sd + (tm->off_sd - m->p), *L = g->L + tm->off_qq;
        double *K = g->K + tm->off_qq;
        /* A_eff row r: sd_r^-lambda ((1 - lambda) A_r. + lambda sd_r e_r) */
        for (int r = 0; r < q; r++) {
            const double f = exp(-lam * log(sd[r]));
            for (int c = 0; c < q; c++)
                A[r * q + c] = c > r ? 0.0 : f * ((1.0 - lam) * sd[r] * L[r * q + c] + (c == r ? lam * sd[r] : 0.0));
        }
        /* K = A^-1 A_eff by forward substitution (A = diag(sd) L lower) */
        double det = 1.0;
        for (int c = 0; c < q; c++)
            for (int r = 0; r < q; r++) {
                if (r < c) {
                    K[r * q + c] = 0.0;
                    continue;
                }
                double s = A[r * q + c];
                for (int l = c; l < r; l++) s -= sd[r] * L[r * q + l] * K[l * q + c];
                K[r * q + c] = s / (sd[r] * L[r * q + r]);
                if (r == c) det *= K[r * q + c];
            }
        kap[t] = det;
    }
}

void svir_uncentre_A(const svir_glmm *m, svir_globals *g, const double *kap)
{
    for (int t = 0; t < m->nterms; t++) {
        const svir_term *tm = &m->terms[t];
        if (tm->lambda == 0.0) continue;
        if (tm->q == 1) {
            g->A[tm->off_qq] /= kap[t];
            continue;
        }
        const int q = tm->q;
        const double *sd = g->sd + (tm->off_sd - m->p), *L = g->L + tm->off_qq;
        double *A = g->A + tm->off_qq;
        for (int r = 0; r < q; r++)
            for (int c = 0; c < q; c++) A[r * q + c] = sd[r] * L[r * q + c];
    }
}

void svir_centre_z(const svir_term *tm, const svir_globals *g, double kap, double *z)
{
    const int q = tm->q;
    if (q == 1) {
        z[0] *= kap;
        return;
    }
    double u[SVIR_QMAX_STACK];
    memcpy(u, z, sizeof(double) * (size_t)q);
    svir_local_b(q, g->K + tm->off_qq, u, z);
}
