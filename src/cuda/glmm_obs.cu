/* The GLMM on the CUDA device: its data on the device and the pass over
 * the observations (see models/glmm/glmm_cuda.h for the API; the per-group
 * part of a step is cuda/glmm_local.cu, one ELBO estimate
 * cuda/glmm_step.cu, a whole fit cuda/glmm_fit.cu).
 *
 * The arithmetic is the CPU engine's: svir_loglik (the family and link as
 * compile-time constants, as in the CPU's hot loop), glmm_local.h,
 * glmm_global.h, glmm_coupling.h, core/svir_guide.h and the normals of
 * core/svir_philox.h are compiled
 * from the same headers for the device. nvcc runs with --fmad=false
 * (configure), so no multiply-add is fused where the CPU's baseline x86-64
 * code has none: each observation's numbers should match the CPU's up to
 * the library's exp/log/log1p and the order of the sums (tests/testthat/
 * test-cuda.R and tools/gpucheck check this).
 *
 * Layout of the pass (one launch each, no atomics, so the result depends only
 * on the device's launch shape, not on scheduling):
 *   1. k_obs: one thread per observation (grid-stride): eta = offset + X beta
 *      + sum over terms of Z b; d = d log p / d eta into de[i]; per thread,
 *      running sums of the log-likelihood, of d log p / d log aux and of
 *      x_ic d for each column c, then a fixed-order reduction within the
 *      block (warp shuffles, then across the warps) to one partial per block.
 *      X is read once (a thread keeps its row in registers for the gradient).
 *   2. k_reduce_partials: one block adds the blocks' partials in block order.
 *   3. k_group_sum, per term: one warp per group sums de over the group's
 *      observations (the term's by-group index, built on the host at upload)
 *      in a fixed lane order: G = d ll / d b. */
#include "cuda/glmm_dev.cuh"

/* ---- kernels --------------------------------------------------------------- */

/* The likelihood, de, and the gradient of the first min(p, PC) columns of X
 * (PC <= SVIR_CUDA_PCHUNK; k_xtde does the others). */
template <int FAM, int LINK, int PC>
__global__ void __launch_bounds__(SVIR_CUDA_BLOCK)
k_obs(const dev_model dm, const int *__restrict__ idx, ptrdiff_t nrows,
      const double *__restrict__ beta, const double *__restrict__ b,
      const svir_aux *__restrict__ auxp, double *__restrict__ de, double *__restrict__ partial)
{
    if (dm.halt && *dm.halt) return; /* the same for every thread */
    const svir_aux aux = *auxp;
    SVIR_SHARED(double, sh, [SVIR_CUDA_WARPS]);
    const ptrdiff_t n = dm.n;
    const int p = dm.p, pc = p < PC ? p : PC;
    svir_glmm m;
    memset(&m, 0, sizeof m);
    m.y = dm.y;
    m.trials = dm.trials;
    double gx[PC];
#pragma unroll
    for (int c = 0; c < PC; c++) gx[c] = 0.0;
    double ll = 0.0, ga = 0.0;
    for (ptrdiff_t r = (ptrdiff_t)blockIdx.x * blockDim.x + threadIdx.x; r < nrows;
         r += (ptrdiff_t)gridDim.x * blockDim.x) {
        const ptrdiff_t i = idx ? (ptrdiff_t)idx[r] : r;
        double xr[PC];
        double e = dm.offset ? dm.offset[i] : 0.0;
#pragma unroll
        for (int c = 0; c < PC; c++) {
            if (c < pc) {
                xr[c] = dm.X[(ptrdiff_t)c * n + i];
                e += xr[c] * beta[c];
            }
        }
        for (int c = PC; c < p; c++) e += dm.X[(ptrdiff_t)c * n + i] * beta[c];
        for (int t = 0; t < dm.nterms; t++) {
            const dev_term *tm = &dm.terms[t];
            const ptrdiff_t g = tm->off_z + (ptrdiff_t)tm->group[i] * tm->q;
            if (tm->z_ones) {
                e += b[g];
            } else {
                for (int k = 0; k < tm->q; k++) e += tm->Z[(ptrdiff_t)k * n + i] * b[g + k];
            }
        }
        double d, da;
        ll += svir_loglik(&m, FAM, LINK, i, e, &aux, &d, &da);
        ga += da;
        de[r] = d;
#pragma unroll
        for (int c = 0; c < PC; c++)
            if (c < pc) gx[c] += xr[c] * d;
    }
    /* partial layout per block: [ll, ga, g_0 .. g_{p-1}] */
    double *out = partial + (ptrdiff_t)blockIdx.x * (p + 2);
    double s = block_sum(ll, sh);
    if (threadIdx.x == 0) out[0] = s;
    s = block_sum(ga, sh);
    if (threadIdx.x == 0) out[1] = s;
#pragma unroll
    for (int c = 0; c < PC; c++) {
        if (c < pc) {
            s = block_sum(gx[c], sh);
            if (threadIdx.x == 0) out[2 + c] = s;
        }
    }
}

/* gradient of columns c0 .. c0 + pc - 1 from de (models with more than
 * SVIR_CUDA_PCHUNK fixed-effect columns) */
__global__ void __launch_bounds__(SVIR_CUDA_BLOCK)
k_xtde(const dev_model dm, const int *__restrict__ idx, ptrdiff_t nrows, int c0,
       const double *__restrict__ de, double *__restrict__ partial)
{
    if (dm.halt && *dm.halt) return;
    SVIR_SHARED(double, sh, [SVIR_CUDA_WARPS]);
    const ptrdiff_t n = dm.n;
    const int p = dm.p, pc = p - c0 < SVIR_CUDA_PCHUNK ? p - c0 : SVIR_CUDA_PCHUNK;
    double gx[SVIR_CUDA_PCHUNK];
#pragma unroll
    for (int c = 0; c < SVIR_CUDA_PCHUNK; c++) gx[c] = 0.0;
    for (ptrdiff_t r = (ptrdiff_t)blockIdx.x * blockDim.x + threadIdx.x; r < nrows;
         r += (ptrdiff_t)gridDim.x * blockDim.x) {
        const ptrdiff_t i = idx ? (ptrdiff_t)idx[r] : r;
        const double d = de[r];
#pragma unroll
        for (int c = 0; c < SVIR_CUDA_PCHUNK; c++)
            if (c < pc) gx[c] += dm.X[(ptrdiff_t)(c0 + c) * n + i] * d;
    }
    double *out = partial + (ptrdiff_t)blockIdx.x * (p + 2);
#pragma unroll
    for (int c = 0; c < SVIR_CUDA_PCHUNK; c++) {
        if (c < pc) {
            const double s = block_sum(gx[c], sh);
            if (threadIdx.x == 0) out[2 + c0 + c] = s;
        }
    }
}

/* out[v - v0] = sum over blocks of partial[blk * nv + v] for v0 <= v < v0 +
 * count, in block order */
__global__ void k_reduce_range(const double *__restrict__ partial, int nblocks, int nv, int v0,
                               int count, double *__restrict__ out)
{
    for (int v = v0 + threadIdx.x; v < v0 + count; v += blockDim.x) {
        double s = 0.0;
        for (int k = 0; k < nblocks; k++) s += partial[(ptrdiff_t)k * nv + v];
        out[v - v0] = s;
    }
}

/* out[v] = sum over blocks of partial[blk][v], in block order */
__global__ void k_reduce_partials(const double *__restrict__ partial, int nblocks, int nv,
                                  double *__restrict__ out)
{
    for (int v = threadIdx.x; v < nv; v += blockDim.x) {
        double s = 0.0;
        for (int k = 0; k < nblocks; k++) s += partial[(ptrdiff_t)k * nv + v];
        out[v] = s;
    }
}

/* G[off_z + j q + k] = sum of de[r] Z[i, k] over the rows r of group j: r =
 * rows[start[j]] .. rows[end[j] - 1], observation i = idx[r] (a minibatch)
 * or r (idx NULL: the full data, rows = the term's by-group index) */
__global__ void __launch_bounds__(SVIR_CUDA_BLOCK)
k_group_sum(const dev_term tm, ptrdiff_t n, const int *halt, const int *__restrict__ start,
            const int *__restrict__ end, const int *__restrict__ rows,
            const int *__restrict__ idx, const double *__restrict__ de, double *__restrict__ G)
{
    if (halt && *halt) return;
    const int lane = threadIdx.x & 31;
    const ptrdiff_t warp = ((ptrdiff_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const ptrdiff_t nwarps = ((ptrdiff_t)gridDim.x * blockDim.x) >> 5;
    for (ptrdiff_t j = warp; j < tm.ngroups; j += nwarps) {
        const int r0 = start[j], r1 = end[j];
        for (int k = 0; k < tm.q; k++) {
            double s = 0.0;
            for (int r = r0 + lane; r < r1; r += 32) {
                const int row = rows[r];
                const ptrdiff_t i = idx ? (ptrdiff_t)idx[row] : (ptrdiff_t)row;
                s += tm.z_ones ? de[row] : de[row] * tm.Z[(ptrdiff_t)k * n + i];
            }
            s = warp_sum(s);
            if (lane == 0) G[tm.off_z + j * (ptrdiff_t)tm.q + k] = s;
        }
    }
}

/* pairs pair0 .. pair0 + npairs - 1 of (stream, step); element e = 2 pair + h
 * goes to out[e - first] when first <= e < first + count */
__global__ void k_normals(uint32_t k0, uint32_t k1, uint64_t stream, uint64_t step,
                          uint64_t first, ptrdiff_t count, uint64_t pair0, ptrdiff_t npairs,
                          double *out)
{
    const uint32_t key[2] = {k0, k1};
    for (ptrdiff_t j = (ptrdiff_t)blockIdx.x * blockDim.x + threadIdx.x; j < npairs;
         j += (ptrdiff_t)gridDim.x * blockDim.x) {
        const uint64_t pr = pair0 + (uint64_t)j;
        uint32_t ctr[4];
        double z0, z1;
        svir_philox_ctr(stream, step, pr, ctr);
        svir_normal2(key, ctr, &z0, &z1);
        const uint64_t e0 = 2 * pr, e1 = 2 * pr + 1;
        if (e0 >= first && e0 < first + (uint64_t)count) out[e0 - first] = z0;
        if (e1 >= first && e1 < first + (uint64_t)count) out[e1 - first] = z1;
    }
}

/* ---- host side ------------------------------------------------------------- */

/* the observation pass with d->beta, d->b and d->aux already on the device */
int glmm_launch_obs(svir_cuda_data *d)
{
    const dev_model &dm = d->dm;
    const int *idx = d->bidx;
    const ptrdiff_t nr = d->nrows;
    int nb = (int)std::min<ptrdiff_t>((nr + SVIR_CUDA_BLOCK - 1) / SVIR_CUDA_BLOCK, d->nblocks);
    if (nb < 1) nb = 1;
#define OBS(FAM, LINK)                                                                  \
    do {                                                                                \
        if (dm.p <= 4)                                                                  \
            SVIR_LAUNCH(nb, SVIR_CUDA_BLOCK, k_obs<FAM, LINK, 4>)(dm, idx, nr, d->beta, d->b, d->aux, d->de, \
                                                         d->partial);                   \
        else if (dm.p <= 16)                                                            \
            SVIR_LAUNCH(nb, SVIR_CUDA_BLOCK, k_obs<FAM, LINK, 16>)(dm, idx, nr, d->beta, d->b, d->aux, d->de, \
                                                          d->partial);                  \
        else                                                                            \
            SVIR_LAUNCH(nb, SVIR_CUDA_BLOCK, k_obs<FAM, LINK, 32>)(dm, idx, nr, d->beta, d->b, d->aux, d->de, \
                                                          d->partial);                  \
    } while (0)
    switch (dm.family * 8 + dm.link) {
    case SVIR_GAUSSIAN * 8 + SVIR_LINK_IDENTITY: OBS(SVIR_GAUSSIAN, SVIR_LINK_IDENTITY); break;
    case SVIR_BINOMIAL * 8 + SVIR_LINK_LOGIT: OBS(SVIR_BINOMIAL, SVIR_LINK_LOGIT); break;
    case SVIR_BINOMIAL * 8 + SVIR_LINK_PROBIT: OBS(SVIR_BINOMIAL, SVIR_LINK_PROBIT); break;
    case SVIR_BINOMIAL * 8 + SVIR_LINK_CLOGLOG: OBS(SVIR_BINOMIAL, SVIR_LINK_CLOGLOG); break;
    case SVIR_POISSON * 8 + SVIR_LINK_LOG: OBS(SVIR_POISSON, SVIR_LINK_LOG); break;
    case SVIR_NEGBIN * 8 + SVIR_LINK_LOG: OBS(SVIR_NEGBIN, SVIR_LINK_LOG); break;
    default: return 1;
    }
#undef OBS
    for (int c0 = SVIR_CUDA_PCHUNK; c0 < dm.p; c0 += SVIR_CUDA_PCHUNK)
        SVIR_LAUNCH(nb, SVIR_CUDA_BLOCK, k_xtde)(dm, idx, nr, c0, d->de, d->partial);
    SVIR_LAUNCH(1, 64, k_reduce_partials)(d->partial, nb, dm.p + 2, d->out);
    for (int t = 0; t < dm.nterms; t++) {
        const dev_term &tm = dm.terms[t];
        const int need = (int)std::min<ptrdiff_t>(((ptrdiff_t)tm.ngroups * 32 + SVIR_CUDA_BLOCK - 1) /
                                                      SVIR_CUDA_BLOCK,
                                                  (ptrdiff_t)d->sms * 16);
        SVIR_LAUNCH(need > 0 ? need : 1, SVIR_CUDA_BLOCK, k_group_sum)(tm, dm.n, dm.halt, d->gstart[t],
                                                              d->gend[t], d->grows[t], idx,
                                                              d->de, d->G);
    }
    return 0;
}

extern "C" void svir_cuda_data_free(svir_cuda_data *d)
{
    if (!d) return;
    cudaFree(d->y);
    cudaFree(d->trials);
    cudaFree(d->offset);
    cudaFree(d->X);
    for (int t = 0; t < SVIR_CUDA_MAX_TERMS; t++) {
        cudaFree(d->Z[t]);
        cudaFree(d->group[t]);
        cudaFree(d->rowptr[t]);
        cudaFree(d->rows[t]);
    }
    cudaFree(d->beta);
    cudaFree(d->b);
    cudaFree(d->de);
    cudaFree(d->G);
    cudaFree(d->partial);
    cudaFree(d->out);
    cudaFree(d->aux);
    if (d->have_events) {
        cudaEventDestroy(d->ev0);
        cudaEventDestroy(d->ev1);
    }
    (void)cudaGetLastError();
    free(d);
}

extern "C" int svir_cuda_data_new(const svir_glmm *m, svir_cuda_data **out, char *err,
                                  size_t errlen)
{
    *out = NULL;
    if (m->nterms > SVIR_CUDA_MAX_TERMS) {
        snprintf(err, errlen, "the CUDA backend takes at most %d random-effect terms (the model has %d)",
                 SVIR_CUDA_MAX_TERMS, m->nterms);
        return 1;
    }
    if (m->n > INT_MAX) {
        snprintf(err, errlen, "the CUDA backend takes at most %d observations", INT_MAX);
        return 1;
    }
    svir_cuda_data *d = (svir_cuda_data *)calloc(1, sizeof(svir_cuda_data));
    if (!d) {
        snprintf(err, errlen, "out of host memory");
        return 2;
    }
    const ptrdiff_t n = m->n;
    const int p = m->p;
    int dev = 0, *rowptr = NULL, *rows = NULL;
    cudaDeviceProp prop;
    CK(cudaGetDevice(&dev));
    CK(cudaGetDeviceProperties(&prop, dev));
    d->sms = prop.multiProcessorCount;
    d->nblocks = (int)std::min<ptrdiff_t>((n + SVIR_CUDA_BLOCK - 1) / SVIR_CUDA_BLOCK,
                                          (ptrdiff_t)d->sms * 8);
    if (d->nblocks < 1) d->nblocks = 1;
    d->nz = m->nz;
    memset(&d->dm, 0, sizeof d->dm);
    d->dm.n = n;
    d->dm.p = p;
    d->dm.family = m->family;
    d->dm.link = m->link;
    d->dm.nterms = m->nterms;
    CK(svir_cuda_upload(&d->y, m->y, (size_t)n));
    d->dm.y = d->y;
    if (m->trials) {
        CK(svir_cuda_upload(&d->trials, m->trials, (size_t)n));
        d->dm.trials = d->trials;
    }
    if (m->offset) {
        CK(svir_cuda_upload(&d->offset, m->offset, (size_t)n));
        d->dm.offset = d->offset;
    }
    CK(svir_cuda_upload(&d->X, m->X, (size_t)n * (size_t)p));
    d->dm.X = d->X;
    for (int t = 0; t < m->nterms; t++) {
        const svir_term *tm = &m->terms[t];
        dev_term *dt = &d->dm.terms[t];
        dt->q = tm->q;
        dt->ngroups = tm->ngroups;
        dt->z_ones = tm->z_ones;
        dt->off_z = tm->off_z;
        CK(svir_cuda_upload(&d->group[t], tm->group, (size_t)n));
        dt->group = d->group[t];
        if (!tm->z_ones) {
            CK(svir_cuda_upload(&d->Z[t], tm->Z, (size_t)n * (size_t)tm->q));
            dt->Z = d->Z[t];
        }
        /* the term's observations by group (counting sort, stable) */
        const size_t J = (size_t)tm->ngroups;
        free(rowptr);
        free(rows);
        rowptr = (int *)calloc(2 * J + 2, sizeof(int));
        rows = (int *)malloc(sizeof(int) * ((size_t)n + 1));
        if (!rowptr || !rows) {
            snprintf(err, errlen, "out of host memory");
            goto fail;
        }
        int *next = rowptr + J + 1;
        for (ptrdiff_t i = 0; i < n; i++) rowptr[(size_t)tm->group[i] + 1]++;
        for (size_t j = 0; j < J; j++) rowptr[j + 1] += rowptr[j];
        for (size_t j = 0; j < J; j++) next[j] = rowptr[j];
        for (ptrdiff_t i = 0; i < n; i++) rows[next[(size_t)tm->group[i]]++] = (int)i;
        CK(svir_cuda_upload(&d->rowptr[t], (const int *)rowptr, J + 1));
        CK(svir_cuda_upload(&d->rows[t], (const int *)rows, (size_t)n));
        dt->rowptr = d->rowptr[t];
        dt->rows = d->rows[t];
        d->gstart[t] = d->rowptr[t];
        d->gend[t] = d->rowptr[t] + 1;
        d->grows[t] = d->rows[t];
    }
    d->bidx = NULL;
    d->nrows = n;
    CK(svir_cuda_upload<double>(&d->beta, NULL, (size_t)p));
    CK(svir_cuda_upload<double>(&d->b, NULL, (size_t)m->nz));
    CK(svir_cuda_upload<double>(&d->de, NULL, (size_t)n));
    CK(svir_cuda_upload<double>(&d->G, NULL, (size_t)m->nz));
    CK(svir_cuda_upload<double>(&d->partial, NULL, (size_t)d->nblocks * (size_t)(p + 2)));
    CK(svir_cuda_upload<double>(&d->out, NULL, (size_t)(p + 2)));
    CK(svir_cuda_upload<svir_aux>(&d->aux, NULL, 1));
    CK(cudaEventCreate(&d->ev0));
    {
        const cudaError_t e1 = cudaEventCreate(&d->ev1);
        if (e1 != cudaSuccess) cudaEventDestroy(d->ev0);
        CK(e1);
    }
    d->have_events = 1;
    free(rowptr);
    free(rows);
    *out = d;
    return 0;
fail:
    free(rowptr);
    free(rows);
    svir_cuda_data_free(d);
    return 3;
}

extern "C" int svir_cuda_obs_pass_host(svir_cuda_data *d, const double *beta, const double *b,
                                       double sigma, double phi, double *ll, double *gbeta,
                                       double *gaux, double *G, double *ms, char *err,
                                       size_t errlen)
{
    const int p = d->dm.p;
    double o[2];
    svir_aux aux;
    svir_aux_set(&aux, sigma, phi);
    float t = 0.0f;
    if (p > 0) CK(cudaMemcpy(d->beta, beta, sizeof(double) * (size_t)p, cudaMemcpyHostToDevice));
    if (d->nz > 0) CK(cudaMemcpy(d->b, b, sizeof(double) * (size_t)d->nz, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d->aux, &aux, sizeof aux, cudaMemcpyHostToDevice));
    CK(cudaEventRecord(d->ev0));
    if (glmm_launch_obs(d)) {
        snprintf(err, errlen, "the CUDA backend has no kernel for family %d with link %d",
                 d->dm.family, d->dm.link);
        return 1;
    }
    CK(cudaGetLastError());
    CK(cudaEventRecord(d->ev1));
    CK(cudaEventSynchronize(d->ev1));
    CK(cudaEventElapsedTime(&t, d->ev0, d->ev1));
    CK(cudaMemcpy(o, d->out, sizeof o, cudaMemcpyDeviceToHost));
    if (p > 0) CK(cudaMemcpy(gbeta, d->out + 2, sizeof(double) * (size_t)p, cudaMemcpyDeviceToHost));
    if (d->nz > 0) CK(cudaMemcpy(G, d->G, sizeof(double) * (size_t)d->nz, cudaMemcpyDeviceToHost));
    *ll = o[0];
    *gaux = o[1];
    if (ms) *ms = t;
    return 0;
fail:
    return 3;
}

extern "C" int svir_cuda_normals_host(uint64_t seed, uint64_t stream, uint64_t step,
                                      uint64_t first, ptrdiff_t count, double *out, char *err,
                                      size_t errlen)
{
    double *dout = NULL;
    if (count <= 0) return 0;
    const uint64_t pair0 = first >> 1, pair1 = (first + (uint64_t)count - 1) >> 1;
    const ptrdiff_t npairs = (ptrdiff_t)(pair1 - pair0 + 1);
    const int nb = (int)std::min<ptrdiff_t>((npairs + 255) / 256, 4096);
    uint32_t key[2];
    svir_philox_key(seed, key);
    CK(cudaMalloc((void **)&dout, sizeof(double) * (size_t)count));
    SVIR_LAUNCH(nb, 256, k_normals)(key[0], key[1], stream, step, first, count, pair0, npairs, dout);
    CK(cudaGetLastError());
    CK(cudaMemcpy(out, dout, sizeof(double) * (size_t)count, cudaMemcpyDeviceToHost));
    cudaFree(dout);
    return 0;
fail:
    cudaFree(dout);
    return 3;
}

extern "C" int svir_cuda_obs_bench(svir_cuda_data *d, int reps, size_t copy_bytes,
                                   double *ms_pass, double *bytes_pass, double *copy_gbs,
                                   char *err, size_t errlen)
{
    const dev_model &dm = d->dm;
    enum { MAXREPS = 1000 };
    float times[MAXREPS];
    int ntimes = 0;
    float t = 0.0f;
    void *src = NULL, *dst = NULL;
    svir_aux aux;
    svir_aux_set(&aux, 1.0, 1.0);
    if (reps < 1) reps = 1;
    if (reps > MAXREPS) reps = MAXREPS;
    /* bytes a pass must read: y (and trials, offset), X, per term its groups
     * (and Z), then for the group sums de and the by-group index again; b
     * and G are small next to these for the models the benchmark runs */
    double bytes = 8.0 * (double)dm.n * (1 + (dm.trials != NULL) + (dm.offset != NULL) + dm.p);
    for (int k = 0; k < dm.nterms; k++) {
        const dev_term &tm = dm.terms[k];
        bytes += 4.0 * (double)dm.n + (tm.z_ones ? 0.0 : 8.0 * (double)dm.n * tm.q);
        bytes += (4.0 + 8.0) * (double)dm.n; /* rows[] and de[] in k_group_sum */
    }
    bytes += 8.0 * (double)dm.n; /* de written once */
    *bytes_pass = bytes;
    CK(cudaMemcpy(d->aux, &aux, sizeof aux, cudaMemcpyHostToDevice));
    for (int r = 0; r < reps + 1; r++) { /* the first is a warm-up */
        CK(cudaEventRecord(d->ev0));
        glmm_launch_obs(d);
        CK(cudaGetLastError());
        CK(cudaEventRecord(d->ev1));
        CK(cudaEventSynchronize(d->ev1));
        CK(cudaEventElapsedTime(&t, d->ev0, d->ev1));
        if (r > 0) times[ntimes++] = t;
    }
    std::sort(times, times + ntimes);
    *ms_pass = times[ntimes / 2];
    *copy_gbs = 0.0;
    if (copy_bytes > 0) {
        CK(cudaMalloc(&src, copy_bytes));
        CK(cudaMalloc(&dst, copy_bytes));
        CK(cudaMemset(src, 0, copy_bytes));
        ntimes = 0;
        for (int r = 0; r < reps + 1; r++) {
            CK(cudaEventRecord(d->ev0));
            CK(cudaMemcpy(dst, src, copy_bytes, cudaMemcpyDeviceToDevice));
            CK(cudaEventRecord(d->ev1));
            CK(cudaEventSynchronize(d->ev1));
            CK(cudaEventElapsedTime(&t, d->ev0, d->ev1));
            if (r > 0) times[ntimes++] = t;
        }
        std::sort(times, times + ntimes);
        *copy_gbs = 2.0 * (double)copy_bytes / (1e-3 * times[ntimes / 2]) / 1e9;
        cudaFree(src);
        cudaFree(dst);
    }
    return 0;
fail:
    cudaFree(src);
    cudaFree(dst);
    return 3;
}

