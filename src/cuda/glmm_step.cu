/* The GLMM on the CUDA device: one ELBO estimate and its gradient, every
 * part of the CPU's estimate (models/glmm/glmm_svi.c) on the device: the
 * global block (one thread), the minibatch (sorted on the device), the
 * groups' draws, the observation pass and the groups' backward pass. */
#include "cuda/glmm_dev.cuh"

/* ---- an ELBO step on the device ----------------------------------------------
 * The order of estimate() in models/glmm/glmm_svi.c, particle by particle: the global
 * block's forward pass (one thread: k_global_fwd), the local draws, the
 * observation pass, the local backward pass, the per-term sums, the global
 * block's backward pass (one thread: k_global_back); then the entropy and
 * the KL terms (k_global_end). With a minibatch, the batch is selected on
 * the device first (k_batch, then per term a radix sort of its rows by group
 * and the groups' runs: k_runs, k_counts). Nothing crosses to the host. */

/* scal: [0] log prior of the particle, [1] the ELBO so far, [2] KL */
__global__ void k_global_fwd(svir_glmm m, svir_coupling cp, int fullrank, const double *gpar,
                             uint32_t k0, uint32_t k1, uint64_t step, uint64_t base, double *eps,
                             double *theta, svir_globals g, double *beta_eff, double *cu,
                             double *cw, svir_aux *aux, double *gtheta, double *ws, double *scal)
{
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    const uint32_t key[2] = {k0, k1};
    const ptrdiff_t D = m.D;
    for (ptrdiff_t d = 0; d < D; d++) eps[d] = svir_normal(key, SVIR_STREAM_GLOBAL, step, base + (uint64_t)d);
    svir_guide_theta(D, fullrank, gpar, eps, theta);
    svir_unpack_globals(&m, theta, &g);
    svir_coupling_forward(&m, &cp, theta, &g, beta_eff, cu, cw);
    for (ptrdiff_t d = 0; d < D; d++) gtheta[d] = 0.0;
    scal[0] = svir_log_prior_ws(&m, theta, gtheta, ws);
    svir_aux_set(aux, g.sigma, g.phi);
}

/* obs: [ll, d ll / d log aux, d ll / d beta (p)]; sums: per term dA (at
 * off_qq), then sum w m, sum w z and sum w (launch_term_sums); wmul: the
 * factor of those weights (scale in a full batch, where w = 1) */
__global__ void k_global_back(svir_glmm m, svir_coupling cp, int ns, int fullrank, int stl,
                              double scale, double wmul, double invS, const double *gpar,
                              const double *eps, const double *theta, svir_globals g,
                              const double *cw, const double *obs, const double *sums,
                              double *gtheta, double *cds, double *cdw, double *dA, double *ggrad,
                              double *ws, double *scal)
{
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    const int p = m.p;
    const ptrdiff_t D = m.D;
    svir_unpack_globals(&m, theta, &g);
    const double ll = obs[0], gaux = obs[1];
    const double *gb = obs + 2;
    for (int k = 0; k < p; k++) gtheta[k] += scale * gb[k];
    if (cp.couple)
        for (int o = 0; o < ns; o++) {
            double acc = 0.0;
            for (int i = 0; i < p; i++) acc += cp.ca[(size_t)o * p + i] * gb[i];
            cds[o] = -scale * acc;
        }
    if (m.off_sigma >= 0) gtheta[m.off_sigma] += scale * gaux;
    if (m.off_phi >= 0) gtheta[m.off_phi] += scale * gaux;
    scal[1] += invS * (m.ll_const + scale * ll + scal[0]);
    for (ptrdiff_t k = 0; k < m.nqq; k++) dA[k] = sums[k];
    if (cp.couple) {
        /* coupling_backward's sums over the groups, from the per-term sums */
        double val = 0.0;
        for (int t = 0; t < m.nterms; t++) {
            const int q = m.terms[t].q, qo = cp.qoff[t];
            for (int r = 0; r < q; r++) cdw[qo + r] = 0.0;
            if (cp.cns[t] == 0) continue;
            const double J = sums[m.nqq + 2 * cp.sumq + t];
            const double *wv = cw + qo, *ms = sums + m.nqq + qo, *zs = ms + cp.sumq;
            for (int r = 0; r < q; r++) {
                val -= wmul * (-ms[r] * wv[r] + J * 0.5 * wv[r] * wv[r]);
                cdw[qo + r] = wmul * ((stl ? zs[r] : ms[r]) - J * wv[r]);
            }
        }
        svir_coupling_back_terms(&m, &cp, &g, cw, cdw, cds, dA, gtheta);
        scal[1] += invS * val;
    }
    for (int t = 0; t < m.nterms; t++)
        svir_backprop_A_ws(&m, t, theta, &g, dA + m.terms[t].off_qq, gtheta, ws);
    svir_guide_backward(D, fullrank, stl, gpar, eps, gtheta, invS, ggrad, ws);
}

/* after the particles: the entropy, then minus the KL terms (scal[2]) */
__global__ void k_global_end(svir_glmm m, int fullrank, int stl, const double *gpar,
                             double *ggrad, double *scal)
{
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    scal[1] += svir_guide_entropy(m.D, fullrank, stl, gpar, ggrad);
    scal[1] -= scal[2];
}

__global__ void k_zero(double *x, ptrdiff_t n)
{
    for (ptrdiff_t k = (ptrdiff_t)blockIdx.x * blockDim.x + threadIdx.x; k < n;
         k += (ptrdiff_t)gridDim.x * blockDim.x)
        x[k] = 0.0;
}

/* the minibatch of `step` (select_batch's sequence): idx[k], and per term
 * the group of each batch row, keys[t B + k] */
__global__ void k_batch(const dev_model dm, ptrdiff_t B, uint64_t step, uint32_t k0, uint32_t k1,
                        int *__restrict__ idx, int *__restrict__ keys)
{
    const uint32_t key[2] = {k0, k1};
    const uint64_t n = (uint64_t)dm.n;
    for (ptrdiff_t k = (ptrdiff_t)blockIdx.x * blockDim.x + threadIdx.x; k < B;
         k += (ptrdiff_t)gridDim.x * blockDim.x) {
        const uint64_t pos = step * (uint64_t)B + (uint64_t)k;
        const uint64_t epoch = pos / n;
        const int i = (int)svir_perm_index(pos % n, n, key, (uint32_t)epoch);
        idx[k] = i;
        for (int t = 0; t < dm.nterms; t++) keys[(ptrdiff_t)t * B + k] = dm.terms[t].group[i];
    }
}

/* the runs of the sorted groups skeys [B]: group j's rows are r in
 * [start[j], end[j]) (both 0 for a group not in the batch) */
__global__ void k_runs(const int *__restrict__ skeys, ptrdiff_t B, int *__restrict__ start,
                       int *__restrict__ end)
{
    for (ptrdiff_t r = (ptrdiff_t)blockIdx.x * blockDim.x + threadIdx.x; r < B;
         r += (ptrdiff_t)gridDim.x * blockDim.x) {
        const int j = skeys[r];
        if (r == 0 || skeys[r - 1] != j) start[j] = (int)r;
        if (r == B - 1 || skeys[r + 1] != j) end[j] = (int)r + 1;
    }
}

__global__ void k_counts(const int *__restrict__ start, const int *__restrict__ end, ptrdiff_t n,
                         double *__restrict__ cnt)
{
    for (ptrdiff_t k = (ptrdiff_t)blockIdx.x * blockDim.x + threadIdx.x; k < n;
         k += (ptrdiff_t)gridDim.x * blockDim.x)
        cnt[k] = (double)(end[k] - start[k]);
}

__global__ void k_iota(int *x, ptrdiff_t n)
{
    for (ptrdiff_t k = (ptrdiff_t)blockIdx.x * blockDim.x + threadIdx.x; k < n;
         k += (ptrdiff_t)gridDim.x * blockDim.x)
        x[k] = (int)k;
}

int glmm_grid_for(ptrdiff_t n, int cap)
{
    const ptrdiff_t nb = (n + 255) / 256;
    return nb < 1 ? 1 : (int)std::min<ptrdiff_t>(nb, cap);
}

/* The device state of ELBO steps: the model's data and global part, the
 * coupled guide's constants, the variational parameters and the work space;
 * with fit set, also Adam's moments, the window sums and the loop state. */
void glmm_ctx_free(fit_ctx *x)
{
    cudaFree(x->d_terms); cudaFree(x->d_pt); cudaFree(x->d_cns); cudaFree(x->d_coff);
    cudaFree(x->d_qoff); cudaFree(x->d_cS); cudaFree(x->d_pdf); cudaFree(x->d_ploc);
    cudaFree(x->d_pscale); cudaFree(x->d_ca); cudaFree(x->d_cK); cudaFree(x->d_comega);
    cudaFree(x->d_cref); cudaFree(x->d_par); cudaFree(x->d_grad); cudaFree(x->d_eps);
    cudaFree(x->d_theta); cudaFree(x->d_sd); cudaFree(x->d_L); cudaFree(x->d_A);
    cudaFree(x->d_cu); cudaFree(x->d_cw); cudaFree(x->d_gtheta); cudaFree(x->d_ws);
    cudaFree(x->d_scal); cudaFree(x->d_noise); cudaFree(x->d_z); cudaFree(x->d_ed);
    cudaFree(x->d_part); cudaFree(x->d_sums); cudaFree(x->d_cds); cudaFree(x->d_cdw);
    cudaFree(x->d_dA); cudaFree(x->d_idx); cudaFree(x->d_keys); cudaFree(x->d_skeys);
    cudaFree(x->d_iota); cudaFree(x->d_svals); cudaFree(x->d_start); cudaFree(x->d_end);
    cudaFree(x->d_cnt); cudaFree(x->d_nobs); cudaFree(x->d_tmp); cudaFree(x->d_mom);
    cudaFree(x->d_vel); cudaFree(x->d_sum); cudaFree(x->d_prev); cudaFree(x->d_best);
    cudaFree(x->d_trace);
    cudaFree(x->d_wel); cudaFree(x->d_shift); cudaFree(x->d_cref_old); cudaFree(x->d_com_old);
    cudaFree(x->d_wold); cudaFree(x->d_wnew); cudaFree(x->d_v); cudaFree(x->d_bad);
    cudaFree(x->d_loop);
    svir_cuda_data_free(x->d);
    (void)cudaGetLastError();
    memset(x, 0, sizeof *x);
}

/* Uploads the model and allocates the step's work space (and with maxs > 0
 * the fit's: Adam, window sums, the loop state for maxs steps). B: rows per
 * step (<= 0 or >= n: full batch). On failure frees what it allocated. */
int glmm_ctx_new(fit_ctx *x, const svir_glmm *m, const svir_coupling *cp, int ns,
                   int fullrank, int stl, int S, ptrdiff_t B, uint64_t seed, long maxs, int W,
                   char *err, size_t errlen)
{
    const int nt = m->nterms, p = m->p;
    svir_glmm &md = x->md;
    svir_term terms[SVIR_CUDA_MAX_TERMS];
    memset(x, 0, sizeof *x);
    x->m = m;
    x->ns = ns;
    x->fullrank = fullrank;
    x->stl = stl;
    x->S = S > 0 ? S : 1;
    x->nt = nt;
    x->D = m->D;
    x->nz = m->nz;
    x->nloc = m->nloc;
    x->ngp = fullrank ? m->D + m->D * (m->D + 1) / 2 : 2 * m->D;
    x->npar = x->ngp + x->nloc;
    x->full = B <= 0 || B >= m->n;
    x->B = x->full ? m->n : B;
    x->scale = x->full ? 1.0 : (double)m->n / (double)B;
    svir_philox_key(seed, x->key);
    x->nb = glmm_make_locals(m, &x->L, err, errlen);
    if (!x->nb) return 1;
    x->ngroups = x->L.ngroups;
    for (int t = 0; t < nt; t++) {
        x->sumq += m->terms[t].q;
        terms[t] = m->terms[t];
        terms[t].group = NULL;
        terms[t].Z = NULL;
        terms[t].xmap = NULL;
        terms[t].nobs = NULL;
    }
    if (svir_cuda_data_new(m, &x->d, err, errlen)) {
        x->d = NULL;
        glmm_ctx_free(x);
        return 3;
    }
    /* the model's global part on the device */
    md = *m;
    CK(svir_cuda_upload(&x->d_terms, (const svir_term *)terms, (size_t)nt));
    CK(svir_cuda_upload(&x->d_pt, m->prior_type, (size_t)m->D));
    CK(svir_cuda_upload(&x->d_pdf, m->prior_df, (size_t)m->D));
    CK(svir_cuda_upload(&x->d_ploc, m->prior_loc, (size_t)m->D));
    CK(svir_cuda_upload(&x->d_pscale, m->prior_scale, (size_t)m->D));
    md.y = md.trials = md.offset = md.X = NULL;
    md.terms = x->d_terms;
    md.prior_type = x->d_pt;
    md.prior_df = x->d_pdf;
    md.prior_loc = x->d_ploc;
    md.prior_scale = x->d_pscale;
    /* the coupled guide's constants */
    CK(svir_cuda_upload(&x->d_cns, cp->cns, (size_t)nt));
    CK(svir_cuda_upload(&x->d_coff, cp->coff, (size_t)nt));
    CK(svir_cuda_upload(&x->d_qoff, cp->qoff, (size_t)nt));
    CK(svir_cuda_upload(&x->d_cS, cp->cS, (size_t)ns));
    CK(svir_cuda_upload(&x->d_ca, cp->ca, (size_t)ns * (size_t)p));
    CK(svir_cuda_upload(&x->d_cK, cp->cK, (size_t)ns * (size_t)p));
    CK(svir_cuda_upload(&x->d_comega, cp->comega, (size_t)ns));
    CK(svir_cuda_upload(&x->d_cref, cp->cref, (size_t)p));
    svir_coupling_view(&x->cd, cp->couple, cp->sumq, x->d_cns, x->d_coff, x->d_qoff, x->d_cS,
                       x->d_ca, x->d_cK, x->d_comega, x->d_cref);
    /* parameters and work space */
    CK(svir_cuda_upload<double>(&x->d_par, NULL, (size_t)x->npar));
    CK(svir_cuda_upload<double>(&x->d_grad, NULL, (size_t)x->npar));
    CK(svir_cuda_upload<double>(&x->d_eps, NULL, (size_t)x->D));
    CK(svir_cuda_upload<double>(&x->d_theta, NULL, (size_t)x->D));
    CK(svir_cuda_upload<double>(&x->d_sd, NULL, (size_t)x->sumq));
    CK(svir_cuda_upload<double>(&x->d_L, NULL, (size_t)m->nqq));
    CK(svir_cuda_upload<double>(&x->d_A, NULL, (size_t)m->nqq));
    CK(svir_cuda_upload<double>(&x->d_cu, NULL, (size_t)x->sumq));
    CK(svir_cuda_upload<double>(&x->d_cw, NULL, (size_t)x->sumq));
    CK(svir_cuda_upload<double>(&x->d_gtheta, NULL, (size_t)x->D));
    CK(svir_cuda_upload<double>(&x->d_ws, NULL, (size_t)std::max<ptrdiff_t>(x->D, (ptrdiff_t)m->qmax * m->qmax)));
    CK(svir_cuda_upload<double>(&x->d_scal, NULL, 3));
    CK(svir_cuda_upload<double>(&x->d_noise, NULL, (size_t)x->nz));
    CK(svir_cuda_upload<double>(&x->d_z, NULL, (size_t)x->nz));
    CK(svir_cuda_upload<double>(&x->d_ed, NULL, (size_t)x->nz));
    CK(svir_cuda_upload<double>(&x->d_part, NULL, glmm_part_size(m, std::max(x->nb, 1024))));
    CK(svir_cuda_upload<double>(&x->d_sums, NULL, glmm_sums_size(m, x->sumq)));
    CK(svir_cuda_upload<double>(&x->d_cds, NULL, (size_t)ns));
    CK(svir_cuda_upload<double>(&x->d_cdw, NULL, (size_t)x->sumq));
    CK(svir_cuda_upload<double>(&x->d_dA, NULL, (size_t)m->nqq));
    x->g.beta = NULL;
    x->g.sd = x->d_sd;
    x->g.L = x->d_L;
    x->g.A = x->d_A;
    x->g.K = NULL; /* no centred terms on the device */
    x->g.sigma = x->g.phi = 1.0;
    if (!x->full) {
        const size_t Bt = (size_t)x->B * (size_t)(nt > 0 ? nt : 1);
        size_t need = 0;
        CK(svir_cuda_upload<int>(&x->d_idx, NULL, (size_t)x->B));
        CK(svir_cuda_upload<int>(&x->d_keys, NULL, Bt));
        CK(svir_cuda_upload<int>(&x->d_skeys, NULL, Bt));
        CK(svir_cuda_upload<int>(&x->d_iota, NULL, (size_t)x->B));
        CK(svir_cuda_upload<int>(&x->d_svals, NULL, Bt));
        CK(svir_cuda_upload<int>(&x->d_start, NULL, (size_t)x->ngroups));
        CK(svir_cuda_upload<int>(&x->d_end, NULL, (size_t)x->ngroups));
        CK(svir_cuda_upload<double>(&x->d_cnt, NULL, (size_t)x->ngroups));
        CK(svir_cuda_upload<double>(&x->d_nobs, NULL, (size_t)x->ngroups));
        for (int t = 0; t < nt; t++)
            CK(cudaMemcpy(x->d_nobs + x->L.t[t].first, m->terms[t].nobs,
                          sizeof(double) * (size_t)m->terms[t].ngroups, cudaMemcpyHostToDevice));
        SVIR_LAUNCH(glmm_grid_for(x->B), 256, k_iota)(x->d_iota, x->B);
        CK(cudaGetLastError());
        for (int t = 0; t < nt; t++) {
            int bits = 1;
            while (bits < 31 && (1 << bits) < m->terms[t].ngroups) bits++;
            x->key_bits[t] = bits;
            size_t bytes = 0;
            CK(cub::DeviceRadixSort::SortPairs(NULL, bytes, x->d_keys, x->d_skeys, x->d_iota,
                                               x->d_svals, (int)x->B, 0, bits));
            need = std::max(need, bytes);
        }
        x->tmp_bytes = need;
        CK(cudaMalloc(&x->d_tmp, need > 0 ? need : 1));
    }
    if (maxs > 0) {
        const int maxw = (int)(maxs / W + 1);
        CK(svir_cuda_upload<double>(&x->d_mom, NULL, (size_t)x->npar));
        CK(svir_cuda_upload<double>(&x->d_vel, NULL, (size_t)x->npar));
        CK(svir_cuda_upload<double>(&x->d_sum, NULL, (size_t)x->npar));
        CK(svir_cuda_upload<double>(&x->d_prev, NULL, (size_t)x->npar));
        CK(svir_cuda_upload<double>(&x->d_best, NULL, (size_t)x->npar));
        CK(svir_cuda_upload<double>(&x->d_trace, NULL, (size_t)maxs));
        CK(svir_cuda_upload<double>(&x->d_wel, NULL, (size_t)maxw));
        CK(svir_cuda_upload<double>(&x->d_shift, NULL, 3 * (size_t)x->sumq));
        CK(svir_cuda_upload<double>(&x->d_cref_old, NULL, (size_t)p));
        CK(svir_cuda_upload<double>(&x->d_com_old, NULL, (size_t)ns));
        CK(svir_cuda_upload<double>(&x->d_wold, NULL, (size_t)x->sumq));
        CK(svir_cuda_upload<double>(&x->d_wnew, NULL, (size_t)x->sumq));
        CK(svir_cuda_upload<double>(&x->d_v, NULL, (size_t)ns));
        CK(svir_cuda_upload<double>(&x->d_bad, NULL, 4096));
        CK(svir_cuda_upload<svir_loop>(&x->d_loop, NULL, 1));
    }
    return 0;
fail:
    glmm_ctx_free(x);
    return 3;
}

/* Launches ELBO step `step` at the parameters in d_par: the ELBO goes to
 * d_scal[1], its gradient to d_grad. */
int glmm_ctx_step(fit_ctx *x, long step, char *err, size_t errlen)
{
    const svir_glmm *m = x->m;
    svir_cuda_data *d = x->d;
    const ptrdiff_t D = x->D, nz = x->nz;
    const int S = x->S;
    const double invS = 1.0 / S, scale = x->scale, wmul = x->full ? scale : 1.0;
    double *gpar = x->d_par, *lpar = x->d_par + x->ngp;
    double *ggrad = x->d_grad, *lgrad = x->d_grad + x->ngp;
    const double *cnt = x->full ? NULL : x->d_cnt, *nobs = x->full ? NULL : x->d_nobs;
    if (!x->full) {
        const ptrdiff_t B = x->B;
        SVIR_LAUNCH(glmm_grid_for(B), 256, k_batch)(d->dm, B, (uint64_t)step, x->key[0], x->key[1], x->d_idx,
                                      x->d_keys);
        CK(cudaGetLastError());
        for (int t = 0; t < x->nt; t++) {
            const ptrdiff_t f = x->L.t[t].first, J = x->L.t[t].ngroups;
            size_t bytes = x->tmp_bytes;
            CK(cub::DeviceRadixSort::SortPairs(x->d_tmp, bytes, x->d_keys + (ptrdiff_t)t * B,
                                               x->d_skeys + (ptrdiff_t)t * B, x->d_iota,
                                               x->d_svals + (ptrdiff_t)t * B, (int)B, 0,
                                               x->key_bits[t]));
            CK(cudaMemsetAsync(x->d_start + f, 0, sizeof(int) * (size_t)J));
            CK(cudaMemsetAsync(x->d_end + f, 0, sizeof(int) * (size_t)J));
            SVIR_LAUNCH(glmm_grid_for(B), 256, k_runs)(x->d_skeys + (ptrdiff_t)t * B, B, x->d_start + f,
                                         x->d_end + f);
            CK(cudaGetLastError());
            d->gstart[t] = x->d_start + f;
            d->gend[t] = x->d_end + f;
            d->grows[t] = x->d_svals + (ptrdiff_t)t * B;
        }
        SVIR_LAUNCH(glmm_grid_for(x->ngroups), 256, k_counts)(x->d_start, x->d_end, x->ngroups, x->d_cnt);
        CK(cudaGetLastError());
        d->bidx = x->d_idx;
        d->nrows = B;
    }
    SVIR_LAUNCH(64, 256, k_zero)(ggrad, x->ngp);
    SVIR_LAUNCH(1, 32, k_zero)(x->d_scal, 3);
    CK(cudaGetLastError());
    for (int s = 0; s < S; s++) {
        SVIR_LAUNCH(1, 1, k_global_fwd)(x->md, x->cd, x->fullrank, gpar, x->key[0], x->key[1],
                               (uint64_t)step, (uint64_t)s * (uint64_t)D, x->d_eps, x->d_theta,
                               x->g, d->beta, x->d_cu, x->d_cw, d->aux, x->d_gtheta, x->d_ws,
                               x->d_scal);
        CK(cudaGetLastError());
        if (nz > 0) {
            /* the local noise of particle s: normals s nz .. s nz + nz - 1 */
            const uint64_t first = (uint64_t)s * (uint64_t)nz;
            const uint64_t pair0 = first >> 1, pair1 = (first + (uint64_t)nz - 1) >> 1;
            const ptrdiff_t npairs = (ptrdiff_t)(pair1 - pair0 + 1);
            SVIR_LAUNCH(glmm_grid_for(npairs), 256, k_normals)(x->key[0], x->key[1], SVIR_STREAM_LOCAL,
                                                 (uint64_t)step, first, nz, pair0, npairs,
                                                 x->d_noise);
            CK(cudaGetLastError());
        }
        SVIR_LAUNCH(x->nb, SVIR_CUDA_BLOCK, k_local_draw)(x->L, lpar, x->d_A, x->d_noise, NULL, x->d_z,
                                                 d->b, x->d_ed, x->d_part);
        CK(cudaGetLastError());
        if (glmm_launch_obs(d)) {
            snprintf(err, errlen, "the CUDA backend has no kernel for family %d with link %d",
                     m->family, m->link);
            return 1;
        }
        CK(cudaGetLastError());
        SVIR_LAUNCH(x->nb, SVIR_CUDA_BLOCK, k_local_back)(x->L, lpar, x->d_A, d->G,
                                                 x->cd.couple ? x->d_cw : NULL, x->d_noise,
                                                 x->d_z, x->d_ed, cnt, nobs, scale, invS, x->stl,
                                                 s == 0, s == S - 1, lgrad, x->d_part);
        CK(cudaGetLastError());
        if (s == S - 1) {
            SVIR_LAUNCH(1, 64, k_reduce_partials)(x->d_part, x->nb, 1, x->d_scal + 2);
            CK(cudaGetLastError());
        }
        CK(glmm_launch_term_sums(m, x->L, x->sumq, lpar, d->G, x->d_z, cnt, nobs, scale, x->d_part,
                            x->d_sums));
        SVIR_LAUNCH(1, 1, k_global_back)(x->md, x->cd, x->ns, x->fullrank, x->stl, scale, wmul, invS, gpar,
                                x->d_eps, x->d_theta, x->g, x->d_cw, d->out, x->d_sums,
                                x->d_gtheta, x->d_cds, x->d_cdw, x->d_dA, ggrad, x->d_ws,
                                x->d_scal);
        CK(cudaGetLastError());
    }
    SVIR_LAUNCH(1, 1, k_global_end)(x->md, x->fullrank, x->stl, gpar, ggrad, x->d_scal);
    CK(cudaGetLastError());
    return 0;
fail:
    return 3;
}

extern "C" int svir_cuda_elbo_grad_host(const svir_glmm *m, const svir_coupling *cp, int ns,
                                        int fullrank, int stl, int S, ptrdiff_t batch_size,
                                        const double *gpar, const double *lpar, uint64_t seed,
                                        long step, double *elbo, double *grad, char *err,
                                        size_t errlen)
{
    fit_ctx x;
    double scal_h[3] = {0.0, 0.0, 0.0}, *cnt = NULL;
    int st = glmm_ctx_new(&x, m, cp, ns, fullrank, stl, S, batch_size, seed, 0, 1, err, errlen);
    if (st) return st;
    st = 3;
    CK(cudaMemcpy(x.d_par, gpar, sizeof(double) * (size_t)x.ngp, cudaMemcpyHostToDevice));
    if (x.nloc > 0)
        CK(cudaMemcpy(x.d_par + x.ngp, lpar, sizeof(double) * (size_t)x.nloc,
                      cudaMemcpyHostToDevice));
    {
        const int e = glmm_ctx_step(&x, step, err, errlen);
        if (e) {
            st = e;
            goto fail;
        }
    }
    CK(cudaMemcpy(scal_h, x.d_scal, sizeof scal_h, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(grad, x.d_grad, sizeof(double) * (size_t)x.npar, cudaMemcpyDeviceToHost));
    if (!x.full) {
        /* as svir_elbo_grad: the locals of groups absent from the batch get 0 */
        cnt = (double *)malloc(sizeof(double) * (size_t)(x.ngroups + 1));
        if (!cnt) {
            snprintf(err, errlen, "out of host memory");
            st = 2;
            goto fail;
        }
        CK(cudaMemcpy(cnt, x.d_cnt, sizeof(double) * (size_t)x.ngroups, cudaMemcpyDeviceToHost));
        for (int t = 0; t < m->nterms; t++) {
            const svir_term *tm = &m->terms[t];
            const ptrdiff_t lb = svir_local_block(tm->q);
            for (int j = 0; j < tm->ngroups; j++)
                if (cnt[x.L.t[t].first + j] == 0.0)
                    for (ptrdiff_t c = 0; c < lb; c++)
                        grad[x.ngp + tm->off_loc + (ptrdiff_t)j * lb + c] = 0.0;
        }
    }
    *elbo = scal_h[1];
    st = 0;
fail:
    free(cnt);
    glmm_ctx_free(&x);
    return st;
}

