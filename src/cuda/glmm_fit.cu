/* The GLMM's whole SVI fit on the CUDA device, as the SVI driver runs it
 * on the CPU (infer/svir_svi.c): the same draws, the same loop
 * (core/svir_loop.h, run by one device thread so that no decision crosses
 * to the host), the same results up to the order of floating-point sums,
 * and the posterior draws kept in the fit. */
#include "cuda/glmm_dev.cuh"

/* ---- a whole fit on the device ----------------------------------------------- */

/* finiteness of the gradient, global parameters and the local ones of the
 * groups in the batch: per block the count of non-finite entries */
__device__ __forceinline__ int local_present(const dev_locals &L, const double *cnt, ptrdiff_t kk)
{
    if (!cnt) return 1;
    int t = L.nterms - 1;
    while (t > 0 && kk < L.t[t].off_loc) t--;
    const ptrdiff_t j = (kk - L.t[t].off_loc) / svir_local_block(L.t[t].q);
    return cnt[L.t[t].first + j] > 0.0;
}

__global__ void __launch_bounds__(SVIR_CUDA_BLOCK)
k_check(const dev_locals L, const double *__restrict__ grad, ptrdiff_t ngp, ptrdiff_t npar,
        const double *__restrict__ cnt, double *__restrict__ partial)
{
    SVIR_SHARED(double, sh, [SVIR_CUDA_WARPS]);
    double bad = 0.0;
    for (ptrdiff_t k = (ptrdiff_t)blockIdx.x * blockDim.x + threadIdx.x; k < npar;
         k += (ptrdiff_t)gridDim.x * blockDim.x)
        if (!isfinite(grad[k]) && (k < ngp || local_present(L, cnt, k - ngp))) bad += 1.0;
    const double s = block_sum(bad, sh);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

/* one thread: the loop's decisions for this step (svir_loop_step) */
__global__ void k_loop(svir_loop *Lp, const double *scal, const double *partial, int nparts,
                       long step)
{
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    double bad = 0.0;
    for (int k = 0; k < nparts; k++) bad += partial[k];
    svir_loop_step(Lp, step, scal[1], bad == 0.0);
}

/* per parameter, what the loop decided: Adam (the locals of groups in the
 * batch only), the running sum, the window's average, the restart of the
 * moments; in svir_fit's order */
__global__ void __launch_bounds__(SVIR_CUDA_BLOCK)
k_update(const svir_loop *Lp, const dev_locals L, const double *__restrict__ cnt, ptrdiff_t ngp,
         ptrdiff_t npar, double *__restrict__ par, double *__restrict__ mom,
         double *__restrict__ vel, const double *__restrict__ grad, double *__restrict__ sum,
         double *__restrict__ prev)
{
    const int act = Lp->act;
    if (!(act & (SVIR_LOOP_ACCEPT | SVIR_LOOP_WINDOW | SVIR_LOOP_RESET))) return;
    double a = 0.0, sb = 0.0;
    svir_adam_consts(Lp->lr_t, Lp->bc1, Lp->bc2, &a, &sb);
    const double nw = (double)Lp->nprev;
    for (ptrdiff_t k = (ptrdiff_t)blockIdx.x * blockDim.x + threadIdx.x; k < npar;
         k += (ptrdiff_t)gridDim.x * blockDim.x) {
        if (act & SVIR_LOOP_ACCEPT) {
            if (k < ngp || local_present(L, cnt, k - ngp)) svir_adam1(par, mom, vel, grad, k, a, sb);
            sum[k] += par[k];
        }
        if (act & SVIR_LOOP_WINDOW) {
            prev[k] = sum[k] / nw;
            sum[k] = 0.0;
        }
        if (act & SVIR_LOOP_RESET) {
            mom[k] = 0.0;
            vel[k] = 0.0;
        }
    }
}

/* coupling_reanchor at a window's end, one thread: the new reference point
 * and shares from the window's average gprev, then per parameter set (the
 * current one, the average and the best window's) the shift w_old - w_new
 * of each term */
__global__ void k_reanchor_g(const svir_loop *Lp, svir_glmm m, svir_coupling cp, int ns,
                             const double *gpar, const double *gprev, const double *gbest,
                             svir_globals g,
                             double *beta_eff, double *cu, double *cref, double *comega,
                             double *cref_old, double *com_old, double *v, double *wold,
                             double *wnew, double *shift)
{
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    if (!(Lp->act & SVIR_LOOP_WINDOW)) return;
    for (int i = 0; i < m.p; i++) cref_old[i] = cref[i];
    for (int o = 0; o < ns; o++) com_old[o] = comega[o];
    svir_coupling_shares(&m, &cp, ns, gprev, cref, comega, v);
    svir_coupling old = cp;
    old.cref = cref_old;
    old.comega = com_old;
    for (int set = 0; set < 3; set++) {
        const double *gp = set == 0 ? gpar : set == 1 ? gprev : gbest;
        svir_unpack_globals(&m, gp, &g);
        svir_coupling_forward(&m, &old, gp, &g, beta_eff, cu, wold);
        svir_coupling_forward(&m, &cp, gp, &g, beta_eff, cu, wnew);
        for (int r = 0; r < cp.sumq; r++) shift[set * cp.sumq + r] = wold[r] - wnew[r];
    }
}

/* ... and per group of a coupled term: m -= the shift, in the three sets */
__global__ void __launch_bounds__(SVIR_CUDA_BLOCK)
k_reanchor_l(const svir_loop *Lp, const dev_locals L, const int *__restrict__ cns, int sumq,
             const double *__restrict__ shift, double *__restrict__ lpar,
             double *__restrict__ lprev, double *__restrict__ lbest)
{
    if (!(Lp->act & SVIR_LOOP_WINDOW)) return;
    for (ptrdiff_t k = (ptrdiff_t)blockIdx.x * blockDim.x + threadIdx.x; k < L.ngroups;
         k += (ptrdiff_t)gridDim.x * blockDim.x) {
        const local_at g = local_group(L, k);
        const int t = (int)(g.tm - L.t);
        if (cns[t] == 0) continue;
        for (int r = 0; r < g.q; r++) {
            lpar[g.lo + r] -= shift[g.tm->qoff + r];
            lprev[g.lo + r] -= shift[sumq + g.tm->qoff + r];
            lbest[g.lo + r] -= shift[2 * sumq + g.tm->qoff + r];
        }
    }
}

/* after the window's re-anchoring, what svir_loop_step decided about the
 * best window: keep this window's average as it (SAVE), or go back to it
 * (ROLLBACK; the moments were reset in k_update) */
__global__ void __launch_bounds__(SVIR_CUDA_BLOCK)
k_best(const svir_loop *Lp, ptrdiff_t npar, double *__restrict__ par, double *__restrict__ prev,
       double *__restrict__ best)
{
    const int act = Lp->act;
    if (!(act & (SVIR_LOOP_SAVE | SVIR_LOOP_ROLLBACK))) return;
    for (ptrdiff_t k = (ptrdiff_t)blockIdx.x * blockDim.x + threadIdx.x; k < npar;
         k += (ptrdiff_t)gridDim.x * blockDim.x) {
        if (act & SVIR_LOOP_SAVE) best[k] = prev[k];
        if (act & SVIR_LOOP_ROLLBACK) par[k] = prev[k] = best[k];
    }
}

/* ---- the posterior draws kept in the fit ------------------------------------
 * final_draws() of models/glmm/glmm_draws.c on the device, one draw at a time: the
 * globals (one thread), the random effects (one thread per group), the
 * log-likelihood of all observations (launch_obs), then the draw's PSIS log
 * ratio log p(y, theta, z) - log q(theta) - log q(z | theta). */

/* post: [0] ll_const + log p(theta) - log q(theta), [1] the groups' part */
__global__ void k_post_global(svir_glmm m, svir_coupling cp, int fullrank, const double *gpar,
                              uint32_t k0, uint32_t k1, int s, int nd, double *eps,
                              double *theta, svir_globals g, double *beta_eff, double *cu,
                              double *cw, svir_aux *aux, double *ws, double *draws,
                              double *shift, double *post)
{
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    const uint32_t key[2] = {k0, k1};
    const ptrdiff_t D = m.D;
    for (ptrdiff_t d = 0; d < D; d++) eps[d] = svir_normal(key, SVIR_STREAM_DRAWS, (uint64_t)s, (uint64_t)d);
    svir_guide_theta(D, fullrank, gpar, eps, theta);
    double logq = 0.0;
    for (ptrdiff_t d = 0; d < D; d++)
        logq += -0.5 * eps[d] * eps[d] - gpar[fullrank ? D + d * (d + 1) / 2 + d : D + d] -
                SVIR_LOG_SQRT_2PI;
    svir_unpack_globals(&m, theta, &g);
    if (cp.couple) {
        svir_coupling_forward(&m, &cp, theta, &g, beta_eff, cu, cw);
    } else {
        for (int i = 0; i < m.p; i++) beta_eff[i] = theta[i];
        for (int k = 0; k < cp.sumq; k++) cu[k] = cw[k] = 0.0;
    }
    /* the likelihood sees beta itself, as in final_draws (svir_block_put) */
    for (int i = 0; i < m.p; i++) beta_eff[i] = theta[i];
    for (ptrdiff_t d = 0; d < D; d++) draws[(size_t)s + (size_t)d * (size_t)nd] = theta[d];
    for (int k = 0; k < cp.sumq; k++) shift[(size_t)s + (size_t)k * (size_t)nd] = cu[k];
    post[0] = m.ll_const + svir_log_prior_ws(&m, theta, NULL, ws) - logq;
    svir_aux_set(aux, g.sigma, g.phi);
}

__global__ void k_post_end(const double *obs, const double *post, int s, double *log_ratio)
{
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    log_ratio[s] = obs[0] + post[0] + post[1];
}

/* the observation pass back on the full data */
static void data_full(svir_cuda_data *d)
{
    d->bidx = NULL;
    d->nrows = d->dm.n;
    for (int t = 0; t < d->dm.nterms; t++) {
        d->gstart[t] = d->rowptr[t];
        d->gend[t] = d->rowptr[t] + 1;
        d->grows[t] = d->rows[t];
    }
}

/* the nd draws at the parameters in d_par into res (draws, log_ratio, shift) */
static int ctx_post(fit_ctx *x, int nd, svir_result *res, char *err, size_t errlen)
{
    svir_cuda_data *d = x->d;
    const ptrdiff_t D = x->D, nz = x->nz;
    double *d_draws = NULL, *d_lr = NULL, *d_shift = NULL;
    int st = 3;
    res->ndraws = nd > 0 ? nd : 0;
    res->naux = x->sumq;
    res->D = D;
    if (nd <= 0) return 0;
    res->draws = (double *)calloc((size_t)nd * (size_t)D + 1, sizeof(double));
    res->log_ratio = (double *)calloc((size_t)nd + 1, sizeof(double));
    res->draw_aux = (double *)calloc((size_t)nd * (size_t)x->sumq + 1, sizeof(double));
    if (!res->draws || !res->log_ratio || !res->draw_aux) {
        snprintf(err, errlen, "out of memory drawing from the posterior");
        return 2;
    }
    data_full(d);
    CK(svir_cuda_upload<double>(&d_draws, NULL, (size_t)nd * (size_t)D));
    CK(svir_cuda_upload<double>(&d_lr, NULL, (size_t)nd));
    CK(svir_cuda_upload<double>(&d_shift, NULL, (size_t)nd * (size_t)x->sumq));
    for (int s = 0; s < nd; s++) {
        SVIR_LAUNCH(1, 1, k_post_global)(x->md, x->cd, x->fullrank, x->d_par, x->key[0], x->key[1], s, nd,
                                x->d_eps, x->d_theta, x->g, d->beta, x->d_cu, x->d_cw, d->aux,
                                x->d_ws, d_draws, d_shift, x->d_scal);
        if (nz > 0) {
            const ptrdiff_t npairs = (nz + 1) / 2;
            SVIR_LAUNCH(glmm_grid_for(npairs), 256, k_normals)(x->key[0], x->key[1], SVIR_STREAM_DRAWS_LOCAL,
                                                 (uint64_t)s, 0, nz, 0, npairs, x->d_noise);
        }
        SVIR_LAUNCH(x->nb, SVIR_CUDA_BLOCK, k_local_draw)(x->L, x->d_par + x->ngp, x->d_A, x->d_noise,
                                                 x->d_cw, x->d_z, d->b, x->d_ed, x->d_part);
        SVIR_LAUNCH(1, 64, k_reduce_partials)(x->d_part, x->nb, 1, x->d_scal + 1);
        CK(cudaGetLastError());
        if (glmm_launch_obs(d)) {
            snprintf(err, errlen, "the CUDA backend has no kernel for family %d with link %d",
                     x->m->family, x->m->link);
            st = 1;
            goto fail;
        }
        SVIR_LAUNCH(1, 1, k_post_end)(d->out, x->d_scal, s, d_lr);
        CK(cudaGetLastError());
    }
    CK(cudaMemcpy(res->draws, d_draws, sizeof(double) * (size_t)nd * (size_t)D,
                  cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(res->log_ratio, d_lr, sizeof(double) * (size_t)nd, cudaMemcpyDeviceToHost));
    if (x->sumq > 0)
        CK(cudaMemcpy(res->draw_aux, d_shift, sizeof(double) * (size_t)nd * (size_t)x->sumq,
                      cudaMemcpyDeviceToHost));
    st = 0;
fail:
    cudaFree(d_draws);
    cudaFree(d_lr);
    cudaFree(d_shift);
    return st;
}

static double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#define SVIR_CUDA_POLL 16

extern "C" int svir_cuda_fit(const svir_glmm *m, const svir_control *c, const svir_callbacks *cb,
                             svir_result *res, char *err, size_t errlen)
{
    fit_ctx x;
    svir_coupling cp;
    svir_loop hL;
    int ns = 0, st = 3, have_ctx = 0, final_sel = 0;
    long step = 0;
    const int fullrank = c->guide == SVIR_GUIDE_FULLRANK;
    const long maxs = c->max_steps > 0 ? c->max_steps : 1;
    const int W = c->eval_every > 0 ? c->eval_every : 100;
    const ptrdiff_t ngp = svir_glmm_n_global(m, c->guide), nloc = m->nloc;
    double t0 = 0.0;
    double *gpar = NULL, *lpar = NULL;
    memset(&cp, 0, sizeof cp);
    /* res's trace and window arrays are the caller's (svir_result_alloc); the
     * final parameters go straight into the result (svir_result_free) */
    gpar = res->gpar = (double *)malloc(sizeof(double) * (size_t)(ngp + 1));
    lpar = res->lpar = (double *)malloc(sizeof(double) * (size_t)(nloc + 1));
    res->ngpar = ngp;
    res->nlpar = nloc;
    if (!res->trace || !res->lr_steps || !res->window_trace || !gpar || !lpar) {
        snprintf(err, errlen, "out of memory allocating the fit's results");
        return 2;
    }
    svir_glmm_init_params(m, c, gpar, lpar);
    if (svir_coupling_new(m, c, m->init_mu, &cp, &ns)) {
        snprintf(err, errlen, "out of memory setting up the coupled guide");
        return 2;
    }
    st = glmm_ctx_new(&x, m, &cp, ns, fullrank, c->stl, c->num_particles, c->batch_size, c->seed,
                 maxs, W, err, errlen);
    if (st) {
        svir_coupling_free(&cp);
        return st;
    }
    have_ctx = 1;
    st = 3;
    CK(cudaMemcpy(x.d_par, gpar, sizeof(double) * (size_t)ngp, cudaMemcpyHostToDevice));
    if (nloc > 0)
        CK(cudaMemcpy(x.d_par + ngp, lpar, sizeof(double) * (size_t)nloc,
                      cudaMemcpyHostToDevice));
    SVIR_LAUNCH(glmm_grid_for(x.npar), 256, k_zero)(x.d_mom, x.npar);
    SVIR_LAUNCH(glmm_grid_for(x.npar), 256, k_zero)(x.d_vel, x.npar);
    SVIR_LAUNCH(glmm_grid_for(x.npar), 256, k_zero)(x.d_sum, x.npar);
    SVIR_LAUNCH(glmm_grid_for(x.npar), 256, k_zero)(x.d_prev, x.npar);
    SVIR_LAUNCH(glmm_grid_for(x.npar), 256, k_zero)(x.d_best, x.npar);
    CK(cudaGetLastError());
    svir_loop_init(&hL, maxs, W, c->lr, c->lr_schedule, c->lr_decay, c->patience, c->tol_rel_obj,
                   x.d_trace, x.d_wel);
    hL.rollback = 1; /* d_best */
    x.d->dm.halt = &x.d_loop->stopped; /* a device address: not dereferenced here */
    CK(cudaDeviceSynchronize());
    t0 = wall_now(); /* the loop's time: the upload and set-up are not in it */
    CK(cudaMemcpy(x.d_loop, &hL, sizeof hL, cudaMemcpyHostToDevice));
    {
        const int ncheck = glmm_grid_for(x.npar);
        for (step = 0; step < maxs; step++) {
            if (step > 0 && step % SVIR_CUDA_POLL == 0) {
                /* the loop's state: a few hundred bytes every SVIR_CUDA_POLL steps */
                CK(cudaMemcpy(&hL, x.d_loop, sizeof hL, cudaMemcpyDeviceToHost));
                if (hL.stopped) break;
                if (cb && cb->progress) cb->progress(cb->ctx, step - 1, maxs, hL.last_elbo);
            }
            if (step % SVIR_CUDA_POLL == 0 && cb && cb->interrupted && cb->interrupted(cb->ctx)) {
                CK(cudaMemcpy(&hL, x.d_loop, sizeof hL, cudaMemcpyDeviceToHost));
                if (hL.stopped) break;
                /* nothing half-made goes back: the caller frees res */
                glmm_ctx_free(&x);
                svir_coupling_free(&cp);
                return SVIR_INTERRUPTED;
            }
            {
                const int e = glmm_ctx_step(&x, step, err, errlen);
                if (e) {
                    st = e;
                    goto fail;
                }
            }
            SVIR_LAUNCH(ncheck, SVIR_CUDA_BLOCK, k_check)(x.L, x.d_grad, ngp, x.npar,
                                                 x.full ? NULL : x.d_cnt, x.d_bad);
            SVIR_LAUNCH(1, 1, k_loop)(x.d_loop, x.d_scal, x.d_bad, ncheck, step);
            SVIR_LAUNCH(glmm_grid_for(x.npar), SVIR_CUDA_BLOCK, k_update)(
                x.d_loop, x.L, x.full ? NULL : x.d_cnt, ngp, x.npar, x.d_par, x.d_mom, x.d_vel,
                x.d_grad, x.d_sum, x.d_prev);
            CK(cudaGetLastError());
            if (x.cd.couple) {
                SVIR_LAUNCH(1, 1, k_reanchor_g)(x.d_loop, x.md, x.cd, ns, x.d_par, x.d_prev, x.d_best, x.g,
                                       x.d->beta,
                                       x.d_cu, x.d_cref, x.d_comega, x.d_cref_old, x.d_com_old,
                                       x.d_v, x.d_wold, x.d_wnew, x.d_shift);
                SVIR_LAUNCH(x.nb, SVIR_CUDA_BLOCK, k_reanchor_l)(x.d_loop, x.L, x.d_cns, x.sumq,
                                                        x.d_shift, x.d_par + ngp,
                                                        x.d_prev + ngp, x.d_best + ngp);
                CK(cudaGetLastError());
            }
            SVIR_LAUNCH(glmm_grid_for(x.npar), SVIR_CUDA_BLOCK, k_best)(x.d_loop, x.npar, x.d_par,
                                                               x.d_prev, x.d_best);
        }
    }
    CK(cudaMemcpy(&hL, x.d_loop, sizeof hL, cudaMemcpyDeviceToHost));
    res->time_split[SVIR_PHASE_UPDATE] = wall_now() - t0;
    res->time_split[SVIR_PHASE_DRAW] = NAN;
    res->time_split[SVIR_PHASE_OBS] = NAN;
    res->time_split[SVIR_PHASE_BACKWARD] = NAN;
    svir_loop_to_result(&hL, step, res);
    if (res->steps > 0)
        CK(cudaMemcpy(res->trace, x.d_trace, sizeof(double) * (size_t)res->steps,
                      cudaMemcpyDeviceToHost));
    if (hL.n_windows > 0)
        CK(cudaMemcpy(res->window_trace, x.d_wel, sizeof(double) * (size_t)hL.n_windows,
                      cudaMemcpyDeviceToHost));
    /* the final parameters (svir_loop_final), on the device and the host */
    final_sel = svir_loop_final(&hL);
    {
        const double *src = final_sel == 1   ? x.d_sum
                            : final_sel == 2 ? x.d_prev
                            : final_sel == 3 ? x.d_best
                                             : x.d_par;
        CK(cudaMemcpy(gpar, src, sizeof(double) * (size_t)ngp, cudaMemcpyDeviceToHost));
        if (nloc > 0)
            CK(cudaMemcpy(lpar, src + ngp, sizeof(double) * (size_t)nloc, cudaMemcpyDeviceToHost));
        if (final_sel == 1) {
            for (ptrdiff_t k = 0; k < ngp; k++) gpar[k] /= (double)hL.nsum;
            for (ptrdiff_t k = 0; k < nloc; k++) lpar[k] /= (double)hL.nsum;
        }
        CK(cudaMemcpy(x.d_par, gpar, sizeof(double) * (size_t)ngp, cudaMemcpyHostToDevice));
        if (nloc > 0)
            CK(cudaMemcpy(x.d_par + ngp, lpar, sizeof(double) * (size_t)nloc,
                          cudaMemcpyHostToDevice));
    }
    /* the posterior draws kept in the fit, with the coupling's last anchor */
    x.d->dm.halt = NULL;
    {
        const double tp = wall_now();
        const int e = ctx_post(&x, c->ndraws, res, err, errlen);
        if (e) {
            st = e;
            goto fail;
        }
        CK(cudaDeviceSynchronize());
        res->time_split[SVIR_PHASE_POSTERIOR] = wall_now() - tp;
    }
    glmm_ctx_free(&x);
    have_ctx = 0;
    svir_coupling_free(&cp);
    return 0;
fail:
    if (have_ctx) glmm_ctx_free(&x);
    svir_coupling_free(&cp);
    return st;
}
