/* QEM core (issue 4, first increment; see dev/QEM.md): massively parallel
 * importance weighting over the tree globals -> groups -> observations for
 * models with one grouping factor, and the moment-matching M-step with an
 * exponential moving average. No R API. Not yet behind svi_fit(): the R
 * entry C_svir_qem_r runs it for the tests.
 *
 * Iteration t draws K samples theta_k of the globals from q(theta) (the
 * svir guide layout: mean-field or full-rank Normal on the unconstrained
 * scale, so positive parameters are LogNormal) and K samples z_j,k of each
 * group's standardised effects from q(z_j) (full-covariance Normal). Then
 *   log f_j(k0, kj) = sum_{i in j} log p(y_i | theta_k0, z_j,kj)
 *                     + log N(z_j,kj; 0, I) - log q(z_j,kj),
 *   log m_j(k0) = logsumexp_kj log f_j(k0, kj) - log K,
 *   log w0(k0) = log p(theta_k0) - log q(theta_k0) + sum_j log m_j(k0),
 *   log P-hat = logsumexp_k0 log w0(k0) - log K (the traced bound),
 * and with w0 normalised the group marginals pi_j(kj) = sum_k0 w0(k0)
 * f_j(k0, kj) / (K m_j(k0)). The raw first and second moments of theta and
 * of each z_j are smoothed, M <- (1 - eta_t) M + eta_t E, with eta_t =
 * min(1, eta0 (t + 1)^-kappa), and the proposals are set to match them. */
#include "svir_engine.h"
#include "svir_local.h"
#include "svir_math.h"
#include "svir_philox.h"

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

/* The proposal N(mean, S) from raw moments M1 [d], M2 [d x d] (row-major,
 * lower part used): its Cholesky factor into the packed row-major lower
 * triangle Lp with a log diagonal. A variance below floor (or a pivot that
 * is not positive) is raised to floor. */
static void match_moments(int d, const double *M1, const double *M2, double floor, double *mean,
                          double *Lp, double *work)
{
    double *S = work; /* d x d */
    for (int r = 0; r < d; r++) {
        mean[r] = M1[r];
        for (int c = 0; c <= r; c++) S[r * d + c] = M2[r * d + c] - M1[r] * M1[c];
    }
    for (int r = 0; r < d; r++) {
        for (int c = 0; c <= r; c++) {
            double s = S[r * d + c];
            for (int k = 0; k < c; k++) s -= S[r * d + k] * S[c * d + k];
            if (c == r) {
                S[r * d + r] = sqrt(s > floor ? s : floor);
            } else {
                S[r * d + c] = s / S[c * d + c];
            }
        }
    }
    for (int r = 0; r < d; r++)
        for (int c = 0; c <= r; c++)
            Lp[r * (r + 1) / 2 + c] = c == r ? log(S[r * d + r]) : S[r * d + c];
}

/* The inverse of match_moments: the raw moments M1 [d] and M2 [d x d]
 * (row-major, lower part) of N(mean, L L^T), L packed row-major lower with
 * a log diagonal. */
static void raw_moments(int d, const double *mean, const double *Lp, double *M1, double *M2)
{
#define SVIR_LENT(r, k) ((k) == (r) ? exp(Lp[(r) * ((r) + 1) / 2 + (k)]) : Lp[(r) * ((r) + 1) / 2 + (k)])
    for (int r = 0; r < d; r++) {
        M1[r] = mean[r];
        for (int c = 0; c <= r; c++) {
            double s = 0.0;
            for (int k = 0; k <= c; k++) s += SVIR_LENT(r, k) * SVIR_LENT(c, k);
            M2[r * d + c] = s + mean[r] * mean[c];
        }
    }
#undef SVIR_LENT
}

#define QEM_LL(FAM, LINK) ll += svir_loglik(m, FAM, LINK, i, eta, &aux[k0], &dd, &da)

/* The iterations: gpar and lpar hold the starting proposal and get the
 * final one; res->elbo and res->window_elbo get the trace of log P-hat and
 * its window means, and res the loop's results. */
static int qem_iterate(const svir_model *m, const svir_control *c, const svir_callbacks *cb,
                       double *gpar, double *lpar, svir_result *res, char *err, size_t errlen)
{
    const int K = c->qem_K;
    const double eta0 = c->qem_eta0, kappa = c->qem_kappa;
    const ptrdiff_t D = m->D, n = m->n;
    const int fullrank = c->guide == SVIR_GUIDE_FULLRANK;
    const long maxs = c->max_steps > 0 ? c->max_steps : 1;
    const int W = c->eval_every > 0 ? c->eval_every : 100;
    if (m->nterms != 1 || m->terms[0].q > 64) {
        snprintf(err, errlen, "QEM takes exactly one grouping factor (the model has %d)", m->nterms);
        return 1;
    }
    if (K < 2 || K > SVIR_QEM_KMAX) {
        snprintf(err, errlen, "QEM takes K from 2 to %d samples per latent (K = %d)", SVIR_QEM_KMAX, K);
        return 1;
    }
    const svir_term *tm = &m->terms[0];
    const int q = tm->q, J = tm->ngroups;
    const ptrdiff_t lb = svir_local_block(q), nz = m->nz;
    int T = c->threads > 0 ? c->threads : 1, status = 2;
    uint32_t key[2];
    svir_philox_key(c->seed, key);

    /* the group's rows (counting sort) */
    int *rowptr = calloc((size_t)J + 2, sizeof(int)), *rows = malloc(sizeof(int) * ((size_t)n + 1));
    int *next = malloc(sizeof(int) * ((size_t)J + 1));
    double *theta = malloc(sizeof(double) * (size_t)(K * D + 1));
    double *eps = malloc(sizeof(double) * (size_t)(K * D + 1));
    double *lw0 = malloc(sizeof(double) * (size_t)K);
    double *w0 = malloc(sizeof(double) * (size_t)K);
    svir_aux *aux = malloc(sizeof(svir_aux) * (size_t)K);
    svir_globals *g = calloc((size_t)K, sizeof(svir_globals));
    double *lm = malloc(sizeof(double) * (size_t)J * (size_t)K);   /* [J x K] log m_j(k0) */
    double *lf = malloc(sizeof(double) * (size_t)J * (size_t)K * (size_t)K);
    double *zs = malloc(sizeof(double) * (size_t)K * (size_t)(nz + 1)); /* [K x nz] */
    double *G1 = malloc(sizeof(double) * (size_t)(D + 1)), *G2 = malloc(sizeof(double) * (size_t)(D * D + 1));
    double *E1 = malloc(sizeof(double) * (size_t)(D + 1)), *E2 = malloc(sizeof(double) * (size_t)(D * D + 1));
    double *Z1 = malloc(sizeof(double) * (size_t)(nz + 1));
    double *Z2 = malloc(sizeof(double) * (size_t)J * (size_t)(q * q) + 1);
    double *wk = malloc(sizeof(double) * (size_t)(D * D + q * q + 1));
    int maxnj = 0;
    svir_loop L;
    long t = 0;
    if (!rowptr || !rows || !next || !theta || !eps || !lw0 || !w0 || !aux || !g || !lm || !lf ||
        !zs || !G1 || !G2 || !E1 || !E2 || !Z1 || !Z2 || !wk) {
        snprintf(err, errlen, "out of memory setting up QEM");
        goto done;
    }
    for (int k = 0; k < K; k++)
        if (svir_globals_alloc(m, &g[k])) {
            snprintf(err, errlen, "out of memory setting up QEM");
            goto done;
        }
    for (ptrdiff_t i = 0; i < n; i++) rowptr[tm->group[i] + 1]++;
    for (int j = 0; j < J; j++) {
        if (rowptr[j + 1] > maxnj) maxnj = rowptr[j + 1];
        rowptr[j + 1] += rowptr[j];
    }
    for (int j = 0; j < J; j++) next[j] = rowptr[j];
    for (ptrdiff_t i = 0; i < n; i++) rows[next[tm->group[i]]++] = (int)i;

    /* the raw moments of the starting proposal (gpar, lpar as given) */
    if (fullrank) {
        raw_moments((int)D, gpar, gpar + D, G1, G2);
    } else {
        for (ptrdiff_t r = 0; r < D; r++) {
            G1[r] = gpar[r];
            for (ptrdiff_t cc = 0; cc <= r; cc++)
                G2[r * D + cc] = (cc == r ? exp(gpar[D + r]) * exp(gpar[D + r]) : 0.0) +
                                 gpar[r] * gpar[cc];
        }
    }
    for (int j = 0; j < J; j++) {
        const double *blk = lpar + (ptrdiff_t)j * lb;
        raw_moments(q, blk, blk + q, Z1 + (ptrdiff_t)j * q, Z2 + (ptrdiff_t)j * q * q);
    }

    /* the stopping rule of SVI on log P-hat: the first plateau ends the fit */
    svir_loop_init(&L, maxs, W, 1.0, SVIR_LR_CONSTANT, 1.0, 0, c->tol_rel_obj, res->elbo,
                   res->window_elbo);
    for (t = 0; t < maxs; t++) {
        if (cb && cb->interrupted && t % 16 == 0 && cb->interrupted(cb->ctx)) {
            L.stop_reason = SVIR_STOP_INTERRUPTED;
            break;
        }
        /* globals: K draws, log p - log q */
        for (int k = 0; k < K; k++) {
            double *th = theta + (ptrdiff_t)k * D, *ep = eps + (ptrdiff_t)k * D;
            for (ptrdiff_t d = 0; d < D; d++)
                ep[d] = svir_normal(key, SVIR_STREAM_GLOBAL, (uint64_t)t, (uint64_t)(k * D + d));
            svir_guide_theta(D, fullrank, gpar, ep, th);
            double lq = 0.0;
            for (ptrdiff_t d = 0; d < D; d++)
                lq += -0.5 * ep[d] * ep[d] - gpar[fullrank ? D + d * (d + 1) / 2 + d : D + d] -
                      SVIR_LOG_SQRT_2PI;
            svir_unpack_globals(m, th, &g[k]);
            svir_aux_set(&aux[k], g[k].sigma, g[k].phi);
            lw0[k] = m->ll_const + svir_log_prior(m, th, NULL) - lq;
        }
        /* groups: K draws each, the K x K table, log m_j */
        int fail = 0;
#ifdef _OPENMP
#pragma omp parallel num_threads(T) if (J >= 64)
#endif
        {
            double *xb = malloc(sizeof(double) * (size_t)(maxnj + 1));
            double *noise = malloc(sizeof(double) * (size_t)(q + 1));
            double ed[SVIR_QMAX_STACK], b[SVIR_QMAX_STACK];
            if (!xb || !noise) {
                SVIR_FLAG_SET(fail);
            } else {
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
                for (int j = 0; j < J; j++) {
                    const double *blk = lpar + (ptrdiff_t)j * lb;
                    double *lfj = lf + (ptrdiff_t)j * K * K, lzq[SVIR_QEM_KMAX];
                    svir_local_exp_diag(q, blk, ed);
                    for (int kj = 0; kj < K; kj++) {
                        double *z = zs + (ptrdiff_t)kj * nz + (ptrdiff_t)j * q;
                        svir_normal_fill(key, SVIR_STREAM_LOCAL, (uint64_t)t,
                                         (uint64_t)kj * (uint64_t)nz + (uint64_t)j * (uint64_t)q, q,
                                         noise);
                        const double lq = svir_local_draw(q, blk, noise, ed, z);
                        double lp = 0.0;
                        for (int r = 0; r < q; r++) lp += -0.5 * z[r] * z[r] - SVIR_LOG_SQRT_2PI;
                        lzq[kj] = lp - lq;
                    }
                    const int r0 = rowptr[j], r1 = rowptr[j + 1];
                    for (int k0 = 0; k0 < K; k0++) {
                        const double *beta = theta + (ptrdiff_t)k0 * D, *A = g[k0].A;
                        for (int r = r0; r < r1; r++) {
                            const ptrdiff_t i = rows[r];
                            double e = m->offset ? m->offset[i] : 0.0;
                            for (int cc = 0; cc < m->p; cc++) e += m->X[i + (ptrdiff_t)cc * n] * beta[cc];
                            xb[r - r0] = e;
                        }
                        for (int kj = 0; kj < K; kj++) {
                            const double *z = zs + (ptrdiff_t)kj * nz + (ptrdiff_t)j * q;
                            svir_local_b(q, A, z, b);
                            double ll = 0.0, dd, da;
                            for (int r = r0; r < r1; r++) {
                                const ptrdiff_t i = rows[r];
                                double eta = xb[r - r0];
                                if (tm->z_ones) {
                                    eta += b[0];
                                } else {
                                    for (int cc = 0; cc < q; cc++) eta += tm->Z[i + (ptrdiff_t)cc * n] * b[cc];
                                }
                                SVIR_FAMILY_DISPATCH(m, QEM_LL);
                            }
                            lfj[k0 * K + kj] = ll + lzq[kj];
                        }
                        lm[(ptrdiff_t)j * K + k0] = lse(lfj + k0 * K, K, 1) - log((double)K);
                    }
                }
            }
            free(xb);
            free(noise);
        }
        if (fail) {
            snprintf(err, errlen, "out of memory in a QEM iteration");
            goto done;
        }
        for (int k0 = 0; k0 < K; k0++)
            for (int j = 0; j < J; j++) lw0[k0] += lm[(ptrdiff_t)j * K + k0];
        const double lP = lse(lw0, K, 1);
        const double logP = lP - log((double)K);
        svir_loop_step(&L, t, logP, isfinite(logP));
        if (!(L.act & SVIR_LOOP_ACCEPT)) {
            if (L.stopped) {
                t++;
                break;
            }
            continue;
        }
        for (int k = 0; k < K; k++) w0[k] = exp(lw0[k] - lP);
        /* E-step: moments of theta */
        for (ptrdiff_t r = 0; r < D; r++) {
            E1[r] = 0.0;
            for (ptrdiff_t cc = 0; cc <= r; cc++) E2[r * D + cc] = 0.0;
        }
        for (int k = 0; k < K; k++) {
            const double *th = theta + (ptrdiff_t)k * D;
            for (ptrdiff_t r = 0; r < D; r++) {
                E1[r] += w0[k] * th[r];
                for (ptrdiff_t cc = 0; cc <= r; cc++) E2[r * D + cc] += w0[k] * th[r] * th[cc];
            }
        }
        const double et = fmin(1.0, eta0 * pow((double)t + 1.0, -kappa));
        for (ptrdiff_t r = 0; r < D; r++) {
            G1[r] = (1.0 - et) * G1[r] + et * E1[r];
            for (ptrdiff_t cc = 0; cc <= r; cc++)
                G2[r * D + cc] = (1.0 - et) * G2[r * D + cc] + et * E2[r * D + cc];
        }
        /* ... and of each group (pi_j), then the M-step per group */
#ifdef _OPENMP
#pragma omp parallel for num_threads(T) schedule(static) if (J >= 64)
#endif
        for (int j = 0; j < J; j++) {
            const double *lfj = lf + (ptrdiff_t)j * K * K;
            double pi[SVIR_QEM_KMAX], e1[SVIR_QMAX_STACK], e2[SVIR_QMAX_STACK * SVIR_QMAX_STACK > 4096 ? 4096 : SVIR_QMAX_STACK * SVIR_QMAX_STACK];
            double ws[SVIR_QMAX_STACK * SVIR_QMAX_STACK > 4096 ? 4096 : SVIR_QMAX_STACK * SVIR_QMAX_STACK];
            for (int kj = 0; kj < K; kj++) pi[kj] = 0.0;
            for (int k0 = 0; k0 < K; k0++) {
                const double off = lm[(ptrdiff_t)j * K + k0] + log((double)K);
                for (int kj = 0; kj < K; kj++) pi[kj] += w0[k0] * exp(lfj[k0 * K + kj] - off);
            }
            for (int r = 0; r < q; r++) {
                e1[r] = 0.0;
                for (int cc = 0; cc <= r; cc++) e2[r * q + cc] = 0.0;
            }
            for (int kj = 0; kj < K; kj++) {
                const double *z = zs + (ptrdiff_t)kj * nz + (ptrdiff_t)j * q;
                for (int r = 0; r < q; r++) {
                    e1[r] += pi[kj] * z[r];
                    for (int cc = 0; cc <= r; cc++) e2[r * q + cc] += pi[kj] * z[r] * z[cc];
                }
            }
            double *z1 = Z1 + (ptrdiff_t)j * q, *z2 = Z2 + (ptrdiff_t)j * q * q;
            for (int r = 0; r < q; r++) {
                z1[r] = (1.0 - et) * z1[r] + et * e1[r];
                for (int cc = 0; cc <= r; cc++) z2[r * q + cc] = (1.0 - et) * z2[r * q + cc] + et * e2[r * q + cc];
            }
            double *blk = lpar + (ptrdiff_t)j * lb;
            match_moments(q, z1, z2, 1e-12, blk, blk + q, ws);
        }
        /* the globals' proposal */
        if (fullrank) {
            match_moments((int)D, G1, G2, 1e-12, gpar, gpar + D, wk);
        } else {
            for (ptrdiff_t r = 0; r < D; r++) {
                const double v = G2[r * D + r] - G1[r] * G1[r];
                gpar[r] = G1[r];
                gpar[D + r] = 0.5 * log(v > 1e-12 ? v : 1e-12);
            }
        }
        if (cb && cb->progress && t % 10 == 0) cb->progress(cb->ctx, t, maxs, logP);
        if (L.stopped) {
            t++;
            break;
        }
    }
    svir_loop_to_result(&L, t, res);
    res->lr_final = NAN; /* QEM has no step size */
    status = 0;
done:
    if (g)
        for (int k = 0; k < K; k++) svir_globals_free(&g[k]);
    free(rowptr); free(rows); free(next); free(theta); free(eps); free(lw0); free(w0); free(aux);
    free(g); free(lm); free(lf); free(zs); free(G1); free(G2); free(E1); free(E2); free(Z1);
    free(Z2); free(wk);
    return status;
}

int svir_qem_fit(const svir_model *m, const svir_control *c, const svir_callbacks *cb,
                 svir_result *res)
{
    memset(res, 0, sizeof *res);
    const ptrdiff_t ngp = svir_n_global_par(m, c->guide), nloc = m->nloc;
    const long maxs = c->max_steps > 0 ? c->max_steps : 1;
    const int W = c->eval_every > 0 ? c->eval_every : 100;
    res->elbo = calloc((size_t)maxs, sizeof(double));
    res->lr_steps = calloc(SVIR_LOOP_MAX_LR_STEPS, sizeof(long));
    res->max_windows = (int)(maxs / W + 1);
    res->window_elbo = calloc((size_t)res->max_windows, sizeof(double));
    res->gpar = malloc(sizeof(double) * (size_t)(ngp + 1));
    res->lpar = malloc(sizeof(double) * (size_t)(nloc + 1));
    if (!res->elbo || !res->lr_steps || !res->window_elbo || !res->gpar || !res->lpar) {
        snprintf(res->message, sizeof res->message, "out of memory allocating the fit's results");
        return 2;
    }
    /* the start: the model's initial means, sd 1 on every latent (the
     * random effects' prior), whatever init_scale says */
    svir_control c1 = *c;
    c1.init_scale = 1.0;
    svir_init_params(m, &c1, res->gpar, res->lpar);
    const double t0 = svir_wall_time();
    int st = qem_iterate(m, c, cb, res->gpar, res->lpar, res, res->message, sizeof res->message);
    res->time_split[SVIR_PHASE_DRAW] = NAN;
    res->time_split[SVIR_PHASE_OBS] = NAN;
    res->time_split[SVIR_PHASE_BACKWARD] = NAN;
    res->time_split[SVIR_PHASE_UPDATE] = svir_wall_time() - t0;
    if (st) return st;
    /* the posterior draws kept in the fit, from the final proposal (the
     * uncoupled guide q(theta) q(z)) */
    c1 = *c;
    c1.couple = 0;
    return svir_posterior_draws(m, &c1, res->gpar, res->lpar, res);
}
