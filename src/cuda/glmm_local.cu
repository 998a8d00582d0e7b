/* The GLMM on the CUDA device: the per-group part of a step (the groups'
 * draws and gradients, svir_local_* of models/glmm/glmm_local.h, one
 * thread per group) and Adam (core/svir_adam.h, one thread per element). */
#include "cuda/glmm_dev.cuh"

/* The terms' group layout for the per-group kernels; returns the blocks
 * for one thread per group, or 0 (with a message) when a term is too wide. */
int glmm_make_locals(const svir_glmm *m, dev_locals *L, char *err, size_t errlen)
{
    memset(L, 0, sizeof *L);
    if (m->nterms > SVIR_CUDA_MAX_TERMS) {
        snprintf(err, errlen, "the CUDA backend takes at most %d random-effect terms",
                 SVIR_CUDA_MAX_TERMS);
        return 0;
    }
    L->nterms = m->nterms;
    for (int t = 0, qo = 0; t < m->nterms; t++) {
        const svir_term *tm = &m->terms[t];
        if (tm->q > SVIR_QMAX_STACK) {
            snprintf(err, errlen, "a term has %d columns; the CUDA backend takes at most %d",
                     tm->q, SVIR_QMAX_STACK);
            return 0;
        }
        L->t[t].q = tm->q;
        L->t[t].ngroups = tm->ngroups;
        L->t[t].qoff = qo;
        L->t[t].off_z = tm->off_z;
        L->t[t].off_loc = tm->off_loc;
        L->t[t].off_qq = tm->off_qq;
        L->t[t].first = L->ngroups;
        L->ngroups += tm->ngroups;
        qo += tm->q;
    }
    const ptrdiff_t nb = (L->ngroups + SVIR_CUDA_BLOCK - 1) / SVIR_CUDA_BLOCK;
    return nb < 1 ? 1 : (int)std::min<ptrdiff_t>(nb, 4096);
}

/* one thread per group of any term: ed, z = m + C noise, b = A z; per block:
 * the partial sum of log q(z). With post_shift (a posterior draw, as
 * final_draws): z is first shifted by -w (post_shift, [sum q]) and the sum is
 * that of log N(z; 0, I) - log q(z). */
__global__ void __launch_bounds__(SVIR_CUDA_BLOCK)
k_local_draw(const dev_locals L, const double *__restrict__ lpar, const double *__restrict__ A,
             const double *__restrict__ noise, const double *__restrict__ post_shift,
             double *__restrict__ z, double *__restrict__ b, double *__restrict__ ed,
             double *__restrict__ partial)
{
    SVIR_SHARED(double, sh, [SVIR_CUDA_WARPS]);
    double lq = 0.0;
    for (ptrdiff_t k = (ptrdiff_t)blockIdx.x * blockDim.x + threadIdx.x; k < L.ngroups;
         k += (ptrdiff_t)gridDim.x * blockDim.x) {
        const local_at g = local_group(L, k);
        const int q = g.q;
        const ptrdiff_t pos = g.pos;
        const double *blk = lpar + g.lo;
        svir_local_exp_diag(q, blk, ed + pos);
        const double lqk = svir_local_draw(q, blk, noise + pos, ed + pos, z + pos);
        if (post_shift) {
            lq -= lqk;
            for (int r = 0; r < q; r++) {
                z[pos + r] -= post_shift[g.tm->qoff + r];
                lq += -0.5 * z[pos + r] * z[pos + r] - SVIR_LOG_SQRT_2PI;
            }
        } else {
            lq += lqk;
        }
        svir_local_b(q, A + g.tm->off_qq, z + pos, b + pos);
    }
    const double s = block_sum(lq, sh);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

/* the weight of group k's KL term: scale in a full batch (cnt NULL), else
 * scale * (its rows in the batch) / (its rows in the data), as the CPU's */
__device__ __forceinline__ double group_weight(const double *cnt, const double *nobs,
                                               ptrdiff_t k, double scale)
{
    return cnt ? scale * cnt[k] / nobs[k] : scale;
}

/* one thread per group: the local gradients from G (svir_local_backward),
 * then the KL terms (svir_local_kl); per block: the partial sum of KL.
 * cnt, nobs [groups of all terms]: a minibatch's counts (NULL: full batch) */
__global__ void __launch_bounds__(SVIR_CUDA_BLOCK)
k_local_back(const dev_locals L, const double *__restrict__ lpar, const double *__restrict__ A,
             const double *__restrict__ G, const double *__restrict__ shift,
             const double *__restrict__ noise, const double *__restrict__ z,
             const double *__restrict__ ed, const double *__restrict__ cnt,
             const double *__restrict__ nobs, double scale, double invS, int stl, int first,
             int with_kl,
             double *__restrict__ lgrad, double *__restrict__ partial)
{
    SVIR_SHARED(double, sh, [SVIR_CUDA_WARPS]);
    double kl = 0.0;
    for (ptrdiff_t k = (ptrdiff_t)blockIdx.x * blockDim.x + threadIdx.x; k < L.ngroups;
         k += (ptrdiff_t)gridDim.x * blockDim.x) {
        if (cnt && cnt[k] == 0.0) continue; /* not in the batch: as the CPU, untouched */
        const local_at g = local_group(L, k);
        const int q = g.q;
        const ptrdiff_t pos = g.pos;
        const double *blk = lpar + g.lo;
        double *gm = lgrad + g.lo;
        if (first)
            for (ptrdiff_t c = 0; c < svir_local_block(q); c++) gm[c] = 0.0;
        const double wt = group_weight(cnt, nobs, k, scale);
        svir_local_backward(q, A + g.tm->off_qq, G + pos, noise + pos, z + pos, ed + pos, blk + q,
                            shift ? shift + g.tm->qoff : NULL, scale, wt, invS, stl, gm, gm + q);
        if (with_kl) kl += svir_local_kl(q, blk, blk + q, ed + pos, wt, stl ? 0.0 : wt, gm, gm + q);
    }
    const double s = block_sum(kl, sh);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

/* Per term t, sums over its groups j in a fixed order: value v < q^2 is
 * dA[r q + c] = sum_j scale G_j[r] z_j[c] (c <= r, else 0); then with w_j =
 * group_weight(cnt, nobs, j, scale) where cnt is given, else 1: sum_j w_j m_j
 * (q values), sum_j w_j z_j (q values) and sum_j w_j. Per block:
 * partial[blk nv + v], nv = q^2 + 2q + 1. */
__global__ void __launch_bounds__(SVIR_CUDA_BLOCK)
k_term_sums(const dev_lterm tm, const double *__restrict__ lpar, const double *__restrict__ G,
            const double *__restrict__ z, const double *__restrict__ cnt,
            const double *__restrict__ nobs, double scale, double *__restrict__ partial)
{
    SVIR_SHARED(double, sh, [SVIR_CUDA_WARPS]);
    const int q = tm.q, nv = q * q + 2 * q + 1;
    const ptrdiff_t lb = svir_local_block(q);
    for (int v = 0; v < nv; v++) {
        double acc = 0.0;
        for (ptrdiff_t j = (ptrdiff_t)blockIdx.x * blockDim.x + threadIdx.x; j < tm.ngroups;
             j += (ptrdiff_t)gridDim.x * blockDim.x) {
            const ptrdiff_t pos = tm.off_z + j * q;
            if (cnt && cnt[tm.first + j] == 0.0) continue; /* not in the batch */
            const double w = cnt ? group_weight(cnt, nobs, tm.first + j, scale) : 1.0;
            if (v < q * q) {
                const int r = v / q, c = v % q;
                if (c <= r) acc += scale * G[pos + r] * z[pos + c];
            } else if (v < q * q + q) {
                acc += w * lpar[tm.off_loc + j * lb + (v - q * q)];
            } else if (v < q * q + 2 * q) {
                acc += w * z[pos + (v - q * q - q)];
            } else {
                acc += w;
            }
        }
        const double s = block_sum(acc, sh);
        if (threadIdx.x == 0) partial[(ptrdiff_t)blockIdx.x * nv + v] = s;
    }
}

/* The per-term sums of k_term_sums into sums (device, [nqq + 2 sum q +
 * nterms]): per term dA at off_qq, sum w m at nqq + qoff, sum w z at nqq +
 * sumq + qoff, sum w at nqq + 2 sumq + t. part: at least glmm_part_size()
 * doubles. */
size_t glmm_part_size(const svir_glmm *m, int nb)
{
    return std::max<size_t>((size_t)nb,
                            64 * ((size_t)m->qmax * m->qmax + 2 * (size_t)m->qmax + 1));
}

size_t glmm_sums_size(const svir_glmm *m, int sumq)
{
    return (size_t)m->nqq + 2 * (size_t)sumq + (size_t)m->nterms;
}

cudaError_t glmm_launch_term_sums(const svir_glmm *m, const dev_locals &L, int sumq,
                                    const double *lpar, const double *G, const double *z,
                                    const double *cnt, const double *nobs, double scale,
                                    double *part, double *sums)
{
    for (int t = 0; t < L.nterms; t++) {
        const int q = L.t[t].q, nv = q * q + 2 * q + 1;
        int nbt = (int)std::min<ptrdiff_t>((L.t[t].ngroups + SVIR_CUDA_BLOCK - 1) / SVIR_CUDA_BLOCK, 64);
        if (nbt < 1) nbt = 1;
        SVIR_LAUNCH(nbt, SVIR_CUDA_BLOCK, k_term_sums)(L.t[t], lpar, G, z, cnt, nobs, scale, part);
        SVIR_LAUNCH(1, 64, k_reduce_range)(part, nbt, nv, 0, q * q, sums + L.t[t].off_qq);
        SVIR_LAUNCH(1, 64, k_reduce_range)(part, nbt, nv, q * q, q, sums + m->nqq + L.t[t].qoff);
        SVIR_LAUNCH(1, 64, k_reduce_range)(part, nbt, nv, q * q + q, q, sums + m->nqq + sumq + L.t[t].qoff);
        SVIR_LAUNCH(1, 64, k_reduce_range)(part, nbt, nv, q * q + 2 * q, 1, sums + m->nqq + 2 * sumq + t);
    }
    return cudaGetLastError();
}

extern "C" int svir_cuda_local_step_host(const svir_glmm *m, const double *lpar, const double *A,
                                         const double *G, const double *shift, uint64_t seed,
                                         uint64_t step, double scale, int stl, double *z,
                                         double *b, double *lgrad, double *kl, double *logq,
                                         double *sums, char *err, size_t errlen)
{
    double *d_lpar = NULL, *d_A = NULL, *d_G = NULL, *d_shift = NULL, *d_noise = NULL;
    double *d_z = NULL, *d_b = NULL, *d_ed = NULL, *d_lgrad = NULL, *d_part = NULL, *d_out = NULL;
    double *d_sums = NULL;
    dev_locals L;
    int sumq = 0, nb = 1, st = 3;
    double o[2] = {0.0, 0.0};
    uint32_t key[2];
    const ptrdiff_t nz = m->nz;
    nb = glmm_make_locals(m, &L, err, errlen);
    if (!nb) return 1;
    for (int t = 0; t < m->nterms; t++) sumq += m->terms[t].q;
    CK(svir_cuda_upload(&d_lpar, lpar, (size_t)m->nloc));
    CK(svir_cuda_upload(&d_A, A, (size_t)m->nqq));
    CK(svir_cuda_upload(&d_G, G, (size_t)nz));
    if (shift) CK(svir_cuda_upload(&d_shift, shift, (size_t)sumq));
    CK(svir_cuda_upload<double>(&d_noise, NULL, (size_t)nz));
    CK(svir_cuda_upload<double>(&d_z, NULL, (size_t)nz));
    CK(svir_cuda_upload<double>(&d_b, NULL, (size_t)nz));
    CK(svir_cuda_upload<double>(&d_ed, NULL, (size_t)nz));
    CK(svir_cuda_upload<double>(&d_lgrad, NULL, (size_t)m->nloc));
    CK(svir_cuda_upload<double>(&d_part, NULL, glmm_part_size(m, nb)));
    CK(svir_cuda_upload<double>(&d_out, NULL, 2));
    CK(svir_cuda_upload<double>(&d_sums, NULL, glmm_sums_size(m, sumq)));
    svir_philox_key(seed, key);
    if (nz > 0) {
        const ptrdiff_t npairs = (nz + 1) / 2;
        SVIR_LAUNCH((int)std::min<ptrdiff_t>((npairs + 255) / 256, 4096), 256, k_normals)(
            key[0], key[1], SVIR_STREAM_LOCAL, step, 0, nz, 0, npairs, d_noise);
        CK(cudaGetLastError());
    }
    SVIR_LAUNCH(nb, SVIR_CUDA_BLOCK, k_local_draw)(L, d_lpar, d_A, d_noise, NULL, d_z, d_b, d_ed, d_part);
    CK(cudaGetLastError());
    SVIR_LAUNCH(1, 64, k_reduce_partials)(d_part, nb, 1, d_out + 1);
    CK(cudaGetLastError());
    SVIR_LAUNCH(nb, SVIR_CUDA_BLOCK, k_local_back)(L, d_lpar, d_A, d_G, d_shift, d_noise, d_z, d_ed, NULL,
                                          NULL, scale, 1.0, stl, 1, 1, d_lgrad, d_part);
    CK(cudaGetLastError());
    SVIR_LAUNCH(1, 64, k_reduce_partials)(d_part, nb, 1, d_out);
    CK(cudaGetLastError());
    CK(cudaMemcpy(o, d_out, sizeof o, cudaMemcpyDeviceToHost));
    CK(glmm_launch_term_sums(m, L, sumq, d_lpar, d_G, d_z, NULL, NULL, scale, d_part, d_sums));
    CK(cudaMemcpy(sums, d_sums, sizeof(double) * ((size_t)m->nqq + 2 * (size_t)sumq),
                  cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(z, d_z, sizeof(double) * (size_t)nz, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(b, d_b, sizeof(double) * (size_t)nz, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(lgrad, d_lgrad, sizeof(double) * (size_t)m->nloc, cudaMemcpyDeviceToHost));
    *kl = o[0];
    *logq = o[1];
    st = 0;
fail:
    cudaFree(d_lpar); cudaFree(d_A); cudaFree(d_G); cudaFree(d_shift); cudaFree(d_noise);
    cudaFree(d_z); cudaFree(d_b); cudaFree(d_ed); cudaFree(d_lgrad); cudaFree(d_part); cudaFree(d_out);
    cudaFree(d_sums);
    return st;
}

/* ---- Adam ------------------------------------------------------------------ */

__global__ void k_adam(double *__restrict__ par, double *__restrict__ mom, double *__restrict__ vel,
                       const double *__restrict__ g, ptrdiff_t n, double a, double sb)
{
    for (ptrdiff_t k = (ptrdiff_t)blockIdx.x * blockDim.x + threadIdx.x; k < n;
         k += (ptrdiff_t)gridDim.x * blockDim.x)
        svir_adam1(par, mom, vel, g, k, a, sb);
}

extern "C" int svir_cuda_adam_host(double *par, double *mom, double *vel, const double *g,
                                   ptrdiff_t n, double lr, double bc1, double bc2, char *err,
                                   size_t errlen)
{
    double *d_p = NULL, *d_m = NULL, *d_v = NULL, *d_g = NULL, a, sb;
    int st = 3;
    if (n <= 0) return 0;
    svir_adam_consts(lr, bc1, bc2, &a, &sb);
    CK(svir_cuda_upload(&d_p, (const double *)par, (size_t)n));
    CK(svir_cuda_upload(&d_m, (const double *)mom, (size_t)n));
    CK(svir_cuda_upload(&d_v, (const double *)vel, (size_t)n));
    CK(svir_cuda_upload(&d_g, g, (size_t)n));
    SVIR_LAUNCH((int)std::min<ptrdiff_t>((n + 255) / 256, 4096), 256, k_adam)(d_p, d_m, d_v, d_g, n, a, sb);
    CK(cudaGetLastError());
    CK(cudaMemcpy(par, d_p, sizeof(double) * (size_t)n, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(mom, d_m, sizeof(double) * (size_t)n, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(vel, d_v, sizeof(double) * (size_t)n, cudaMemcpyDeviceToHost));
    st = 0;
fail:
    cudaFree(d_p); cudaFree(d_m); cudaFree(d_v); cudaFree(d_g);
    return st;
}

