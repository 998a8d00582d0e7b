/* The GLMM's posterior draws kept in a fit: draws of the globals from the
 * guide, their coupled shifts, and the PSIS log ratios log p(y, theta, z) -
 * log q(theta) - log q(z | theta) on draws of the globals and the random
 * effects. Draws go in blocks of SVIR_LL_BLOCK that share one pass over
 * the data. */
#include "models/glmm/glmm_work.h"
#include "core/svir_result.h"
#include "models/glmm/glmm_local.h"
#include "core/svir_philox.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

/* Posterior draws of the globals, the coupling shifts and the PSIS log ratios.
 * Draws go in blocks of SVIR_LL_BLOCK that share one pass over the data. */
int glmm_final_draws(glmm_work *w, const double *gpar, const double *lpar, svir_result *res)
{
    const svir_glmm *m = w->m;
    const svir_control *c = w->c;
    const ptrdiff_t D = w->D;
    const int nd = c->ndraws;
    enum { NB = SVIR_LL_BLOCK };
    res->ndraws = nd;
    res->naux = w->sumq;
    res->D = D;
    if (nd <= 0) return 0;
    res->draws = calloc((size_t)nd * (size_t)D + 1, sizeof(double));
    res->log_ratio = calloc((size_t)nd + 1, sizeof(double));
    res->draw_aux = calloc((size_t)nd * (size_t)w->sumq + 1, sizeof(double));
    if (!res->draws || !res->log_ratio || !res->draw_aux) return 2;
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
        double *betablk = malloc(sizeof(double) * (size_t)NB * (size_t)(m->p + m->pz + 1));
        double *bw = malloc(sizeof(double) * (size_t)(m->nz + 1));
        double *kapd = malloc(sizeof(double) * (size_t)(m->nterms + 1));
        svir_globals g = {0};
        if (!eps || !theta || !z || !noise || !be || !cu || !cw || !bblk || !betablk || !bw || !kapd ||
            svir_globals_alloc(m, &g)) {
            SVIR_FLAG_SET(fail);
        } else {
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
            for (int blk = 0; blk < nblocks; blk++) {
                if (svir_poll()) continue;
                const int s0 = blk * NB, nb = nd - s0 < NB ? nd - s0 : NB;
                double rest[NB], ll[NB];
                svir_aux aux[NB];
                for (int sl = 0; sl < NB; sl++) {
                    /* slots past the last draw repeat draw s0 (computed, dropped) */
                    const int s = sl < nb ? s0 + sl : s0;
                    glmm_draw_theta(w, gpar, SVIR_STREAM_DRAWS, (uint64_t)s, 0, eps, theta);
                    double logq = 0.0;
                    if (c->guide == SVIR_GUIDE_FULLRANK) {
                        for (ptrdiff_t r = 0; r < D; r++)
                            logq += -0.5 * eps[r] * eps[r] - gpar[D + r * (r + 1) / 2 + r] - SVIR_LOG_SQRT_2PI;
                    } else {
                        for (ptrdiff_t d = 0; d < D; d++)
                            logq += -0.5 * eps[d] * eps[d] - gpar[D + d] - SVIR_LOG_SQRT_2PI;
                    }
                    svir_unpack_globals(m, theta, &g);
                    /* a centred term's coupling shift is in its u's units:
                     * from A_eff, then A back for b = A z */
                    if (w->ncentred) svir_centre_A(m, &g, kapd);
                    if (w->couple) {
                        glmm_coupling_forward(w, theta, &g, be, cu, cw);
                    } else {
                        memset(cu, 0, sizeof(double) * (size_t)(w->sumq + 1));
                        memset(cw, 0, sizeof(double) * (size_t)(w->sumq + 1));
                    }
                    if (sl < nb) {
                        for (ptrdiff_t d = 0; d < D; d++)
                            res->draws[(size_t)s + (size_t)d * (size_t)nd] = theta[d];
                        for (int k = 0; k < w->sumq; k++)
                            res->draw_aux[(size_t)s + (size_t)k * (size_t)nd] = cu[k];
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
                            /* z = kap (u - w) or K (u - w) (back_q1_centred,
                             * back_qn_centred) */
                            if (tm->lambda != 0.0) svir_centre_z(tm, &g, kapd[t], z + pos);
                        }
                        /* log q(z | theta) = log q(u) - log kap (det K), for each group */
                        if (tm->lambda != 0.0) logq -= (double)tm->ngroups * log(kapd[t]);
                    }
                    if (w->ncentred) svir_uncentre_A(m, &g, kapd);
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
        free(bblk); free(betablk); free(bw); free(kapd);
        svir_globals_free(&g);
    }
    free(edf);
    return fail ? 2 : 0;
}

int svir_glmm_posterior_draws(const svir_glmm *m, const svir_control *c, const double *gpar,
                         const double *lpar, const double *anchor, svir_result *res)
{
    glmm_work w;
    if (glmm_work_init(&w, m, c)) {
        snprintf(res->message, sizeof res->message, "out of memory drawing from the posterior");
        return 2;
    }
    glmm_coupling_update(&w, anchor ? anchor : gpar);
    const double t0 = svir_wall_time();
    const int st = glmm_final_draws(&w, gpar, lpar, res);
    res->time_split[SVIR_PHASE_POSTERIOR] += svir_wall_time() - t0;
    glmm_work_free(&w);
    if (st) snprintf(res->message, sizeof res->message, "out of memory drawing from the posterior");
    return st;
}

