/* CUDA backend: the model's data on the device, the pass over the
 * observations, the per-group part of a step, Adam, and a whole full-batch
 * ELBO step (see src/svir_cuda.h for the API and what each returns).
 *
 * The arithmetic is the CPU engine's: svir_loglik (the family and link as
 * compile-time constants, as in the CPU's hot loop), svir_local.h,
 * svir_global.h, svir_step.h and the normals of svir_philox.h are compiled
 * from the same headers for the device. nvcc runs with --fmad=false
 * (configure), so no multiply-add is fused where the CPU's baseline x86-64
 * code has none: each observation's numbers should match the CPU's up to
 * the library's exp/log/log1p and the order of the sums (tests/testthat/
 * test-cuda.R and tools/gpucheck check this; not yet run on a GPU).
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
#include <cuda_runtime.h>
#include <cub/device/device_radix_sort.cuh>

#include <algorithm>
#include <climits>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <math.h>

#include "models/glmm/glmm_cuda.h"
#include "infer/svir_engine.h"
#include "models/glmm/glmm_local.h"
#include "core/svir_loop.h"
#include "models/glmm/glmm_coupling.h"
#include "core/svir_adam.h"
#include "core/svir_guide.h"
#include "core/svir_philox.h"
#include "cuda/svir_cuda_common.cuh"

#define SVIR_CUDA_BLOCK 256
#define SVIR_CUDA_WARPS (SVIR_CUDA_BLOCK / 32)
/* fixed-effect columns a thread keeps in registers: k_obs is compiled for
 * PC = 4, 16 and 32 and runs with the smallest PC >= p; columns past 32 get
 * their gradient from k_xtde in slices of 32 */
#define SVIR_CUDA_PCHUNK 32

typedef struct {
    int q, ngroups, z_ones;
    ptrdiff_t off_z;
    const int *group;   /* [n] */
    const double *Z;    /* [n x q] or NULL for a random intercept */
    const int *rowptr;  /* [ngroups + 1] */
    const int *rows;    /* [n] observations of each group, in order */
} dev_term;

typedef struct {
    ptrdiff_t n;
    int p, family, link, nterms;
    const double *y, *trials, *offset, *X;
    dev_term terms[SVIR_CUDA_MAX_TERMS];
    /* in a fit: the loop's `stopped` flag (device); once set, the steps the
     * host queued before it noticed skip the pass (they change nothing) */
    const int *halt;
} dev_model;

struct svir_cuda_data {
    dev_model dm;
    ptrdiff_t nz;
    int nblocks, sms;
    /* device buffers */
    double *y, *trials, *offset, *X, *Z[SVIR_CUDA_MAX_TERMS];
    int *group[SVIR_CUDA_MAX_TERMS], *rowptr[SVIR_CUDA_MAX_TERMS], *rows[SVIR_CUDA_MAX_TERMS];
    double *beta, *b, *de, *G, *partial, *out;
    svir_aux *aux;
    /* the rows the pass runs over: bidx [nrows] (NULL: all n), and per term
     * its rows by group, rows grows[t][gstart[t][j]] .. grows[t][gend[t][j] -
     * 1] (positions in bidx, or observations). Set to the full data at
     * upload; a minibatch fit points them at its batch. */
    const int *bidx;
    ptrdiff_t nrows;
    const int *gstart[SVIR_CUDA_MAX_TERMS], *gend[SVIR_CUDA_MAX_TERMS], *grows[SVIR_CUDA_MAX_TERMS];
    cudaEvent_t ev0, ev1;
    int have_events;
};

#define CK(call)                                                                        \
    do {                                                                                \
        if (svir_cuda_failed((call), #call, err, errlen)) goto fail;                    \
    } while (0)

/* ---- kernels --------------------------------------------------------------- */

__device__ __forceinline__ double warp_sum(double v)
{
    /* fixed order: the same tree for every call */
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    return v;
}

/* sums v over the block into *out (thread 0's value is valid); sh has
 * SVIR_CUDA_WARPS doubles */
__device__ __forceinline__ double block_sum(double v, double *sh)
{
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    v = warp_sum(v);
    __syncthreads(); /* sh may still be read from the previous call */
    if (lane == 0) sh[wid] = v;
    __syncthreads();
    double s = 0.0;
    if (threadIdx.x == 0)
        for (int w = 0; w < SVIR_CUDA_WARPS; w++) s += sh[w];
    return s;
}

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
    __shared__ double sh[SVIR_CUDA_WARPS];
    const ptrdiff_t n = dm.n;
    const int p = dm.p, pc = p < PC ? p : PC;
    svir_model m;
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
    __shared__ double sh[SVIR_CUDA_WARPS];
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
static int launch_obs(svir_cuda_data *d)
{
    const dev_model &dm = d->dm;
    const int *idx = d->bidx;
    const ptrdiff_t nr = d->nrows;
    int nb = (int)std::min<ptrdiff_t>((nr + SVIR_CUDA_BLOCK - 1) / SVIR_CUDA_BLOCK, d->nblocks);
    if (nb < 1) nb = 1;
#define OBS(FAM, LINK)                                                                  \
    do {                                                                                \
        if (dm.p <= 4)                                                                  \
            k_obs<FAM, LINK, 4><<<nb, SVIR_CUDA_BLOCK>>>(dm, idx, nr, d->beta, d->b, d->aux, d->de, \
                                                         d->partial);                   \
        else if (dm.p <= 16)                                                            \
            k_obs<FAM, LINK, 16><<<nb, SVIR_CUDA_BLOCK>>>(dm, idx, nr, d->beta, d->b, d->aux, d->de, \
                                                          d->partial);                  \
        else                                                                            \
            k_obs<FAM, LINK, 32><<<nb, SVIR_CUDA_BLOCK>>>(dm, idx, nr, d->beta, d->b, d->aux, d->de, \
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
        k_xtde<<<nb, SVIR_CUDA_BLOCK>>>(dm, idx, nr, c0, d->de, d->partial);
    k_reduce_partials<<<1, 64>>>(d->partial, nb, dm.p + 2, d->out);
    for (int t = 0; t < dm.nterms; t++) {
        const dev_term &tm = dm.terms[t];
        const int need = (int)std::min<ptrdiff_t>(((ptrdiff_t)tm.ngroups * 32 + SVIR_CUDA_BLOCK - 1) /
                                                      SVIR_CUDA_BLOCK,
                                                  (ptrdiff_t)d->sms * 16);
        k_group_sum<<<need > 0 ? need : 1, SVIR_CUDA_BLOCK>>>(tm, dm.n, dm.halt, d->gstart[t],
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

template <typename T>
static cudaError_t upload(T **dst, const T *src, size_t count)
{
    cudaError_t e = cudaMalloc((void **)dst, sizeof(T) * (count > 0 ? count : 1));
    if (e != cudaSuccess || count == 0 || !src) return e;
    return cudaMemcpy(*dst, src, sizeof(T) * count, cudaMemcpyHostToDevice);
}

extern "C" int svir_cuda_data_new(const svir_model *m, svir_cuda_data **out, char *err,
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
    CK(upload(&d->y, m->y, (size_t)n));
    d->dm.y = d->y;
    if (m->trials) {
        CK(upload(&d->trials, m->trials, (size_t)n));
        d->dm.trials = d->trials;
    }
    if (m->offset) {
        CK(upload(&d->offset, m->offset, (size_t)n));
        d->dm.offset = d->offset;
    }
    CK(upload(&d->X, m->X, (size_t)n * (size_t)p));
    d->dm.X = d->X;
    for (int t = 0; t < m->nterms; t++) {
        const svir_term *tm = &m->terms[t];
        dev_term *dt = &d->dm.terms[t];
        dt->q = tm->q;
        dt->ngroups = tm->ngroups;
        dt->z_ones = tm->z_ones;
        dt->off_z = tm->off_z;
        CK(upload(&d->group[t], tm->group, (size_t)n));
        dt->group = d->group[t];
        if (!tm->z_ones) {
            CK(upload(&d->Z[t], tm->Z, (size_t)n * (size_t)tm->q));
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
        CK(upload(&d->rowptr[t], (const int *)rowptr, J + 1));
        CK(upload(&d->rows[t], (const int *)rows, (size_t)n));
        dt->rowptr = d->rowptr[t];
        dt->rows = d->rows[t];
        d->gstart[t] = d->rowptr[t];
        d->gend[t] = d->rowptr[t] + 1;
        d->grows[t] = d->rows[t];
    }
    d->bidx = NULL;
    d->nrows = n;
    CK(upload<double>(&d->beta, NULL, (size_t)p));
    CK(upload<double>(&d->b, NULL, (size_t)m->nz));
    CK(upload<double>(&d->de, NULL, (size_t)n));
    CK(upload<double>(&d->G, NULL, (size_t)m->nz));
    CK(upload<double>(&d->partial, NULL, (size_t)d->nblocks * (size_t)(p + 2)));
    CK(upload<double>(&d->out, NULL, (size_t)(p + 2)));
    CK(upload<svir_aux>(&d->aux, NULL, 1));
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
    if (launch_obs(d)) {
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
    k_normals<<<nb, 256>>>(key[0], key[1], stream, step, first, count, pair0, npairs, dout);
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
        launch_obs(d);
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

/* ---- the per-group part of a step ------------------------------------------ */

typedef struct {
    int q, ngroups, qoff;
    ptrdiff_t off_z, off_loc, off_qq, first; /* first: the term's first global group */
} dev_lterm;

typedef struct {
    int nterms;
    ptrdiff_t ngroups;
    dev_lterm t[SVIR_CUDA_MAX_TERMS];
} dev_locals;

/* The terms' group layout for the per-group kernels; returns the blocks
 * for one thread per group, or 0 (with a message) when a term is too wide. */
static int make_locals(const svir_model *m, dev_locals *L, char *err, size_t errlen)
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

/* group k of any term: its term, q, and its offsets in z (pos) and in the
 * local parameters (lo) */
typedef struct {
    const dev_lterm *tm;
    int q;
    ptrdiff_t pos, lo;
} local_at;

__device__ __forceinline__ local_at local_group(const dev_locals &L, ptrdiff_t k)
{
    int t = 0;
    while (t + 1 < L.nterms && k >= L.t[t + 1].first) t++;
    local_at g;
    g.tm = &L.t[t];
    g.q = g.tm->q;
    const ptrdiff_t j = k - g.tm->first;
    g.pos = g.tm->off_z + j * g.q;
    g.lo = g.tm->off_loc + j * svir_local_block(g.q);
    return g;
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
    __shared__ double sh[SVIR_CUDA_WARPS];
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
    __shared__ double sh[SVIR_CUDA_WARPS];
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
    __shared__ double sh[SVIR_CUDA_WARPS];
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
 * sumq + qoff, sum w at nqq + 2 sumq + t. part: at least part_size()
 * doubles. */
static size_t part_size(const svir_model *m, int nb)
{
    return std::max<size_t>((size_t)nb,
                            64 * ((size_t)m->qmax * m->qmax + 2 * (size_t)m->qmax + 1));
}

static size_t sums_size(const svir_model *m, int sumq)
{
    return (size_t)m->nqq + 2 * (size_t)sumq + (size_t)m->nterms;
}

static cudaError_t launch_term_sums(const svir_model *m, const dev_locals &L, int sumq,
                                    const double *lpar, const double *G, const double *z,
                                    const double *cnt, const double *nobs, double scale,
                                    double *part, double *sums)
{
    for (int t = 0; t < L.nterms; t++) {
        const int q = L.t[t].q, nv = q * q + 2 * q + 1;
        int nbt = (int)std::min<ptrdiff_t>((L.t[t].ngroups + SVIR_CUDA_BLOCK - 1) / SVIR_CUDA_BLOCK, 64);
        if (nbt < 1) nbt = 1;
        k_term_sums<<<nbt, SVIR_CUDA_BLOCK>>>(L.t[t], lpar, G, z, cnt, nobs, scale, part);
        k_reduce_range<<<1, 64>>>(part, nbt, nv, 0, q * q, sums + L.t[t].off_qq);
        k_reduce_range<<<1, 64>>>(part, nbt, nv, q * q, q, sums + m->nqq + L.t[t].qoff);
        k_reduce_range<<<1, 64>>>(part, nbt, nv, q * q + q, q, sums + m->nqq + sumq + L.t[t].qoff);
        k_reduce_range<<<1, 64>>>(part, nbt, nv, q * q + 2 * q, 1, sums + m->nqq + 2 * sumq + t);
    }
    return cudaGetLastError();
}

extern "C" int svir_cuda_local_step_host(const svir_model *m, const double *lpar, const double *A,
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
    nb = make_locals(m, &L, err, errlen);
    if (!nb) return 1;
    for (int t = 0; t < m->nterms; t++) sumq += m->terms[t].q;
    CK(upload(&d_lpar, lpar, (size_t)m->nloc));
    CK(upload(&d_A, A, (size_t)m->nqq));
    CK(upload(&d_G, G, (size_t)nz));
    if (shift) CK(upload(&d_shift, shift, (size_t)sumq));
    CK(upload<double>(&d_noise, NULL, (size_t)nz));
    CK(upload<double>(&d_z, NULL, (size_t)nz));
    CK(upload<double>(&d_b, NULL, (size_t)nz));
    CK(upload<double>(&d_ed, NULL, (size_t)nz));
    CK(upload<double>(&d_lgrad, NULL, (size_t)m->nloc));
    CK(upload<double>(&d_part, NULL, part_size(m, nb)));
    CK(upload<double>(&d_out, NULL, 2));
    CK(upload<double>(&d_sums, NULL, sums_size(m, sumq)));
    svir_philox_key(seed, key);
    if (nz > 0) {
        const ptrdiff_t npairs = (nz + 1) / 2;
        k_normals<<<(int)std::min<ptrdiff_t>((npairs + 255) / 256, 4096), 256>>>(
            key[0], key[1], SVIR_STREAM_LOCAL, step, 0, nz, 0, npairs, d_noise);
        CK(cudaGetLastError());
    }
    k_local_draw<<<nb, SVIR_CUDA_BLOCK>>>(L, d_lpar, d_A, d_noise, NULL, d_z, d_b, d_ed, d_part);
    CK(cudaGetLastError());
    k_reduce_partials<<<1, 64>>>(d_part, nb, 1, d_out + 1);
    CK(cudaGetLastError());
    k_local_back<<<nb, SVIR_CUDA_BLOCK>>>(L, d_lpar, d_A, d_G, d_shift, d_noise, d_z, d_ed, NULL,
                                          NULL, scale, 1.0, stl, 1, 1, d_lgrad, d_part);
    CK(cudaGetLastError());
    k_reduce_partials<<<1, 64>>>(d_part, nb, 1, d_out);
    CK(cudaGetLastError());
    CK(cudaMemcpy(o, d_out, sizeof o, cudaMemcpyDeviceToHost));
    CK(launch_term_sums(m, L, sumq, d_lpar, d_G, d_z, NULL, NULL, scale, d_part, d_sums));
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
    CK(upload(&d_p, (const double *)par, (size_t)n));
    CK(upload(&d_m, (const double *)mom, (size_t)n));
    CK(upload(&d_v, (const double *)vel, (size_t)n));
    CK(upload(&d_g, g, (size_t)n));
    k_adam<<<(int)std::min<ptrdiff_t>((n + 255) / 256, 4096), 256>>>(d_p, d_m, d_v, d_g, n, a, sb);
    CK(cudaGetLastError());
    CK(cudaMemcpy(par, d_p, sizeof(double) * (size_t)n, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(mom, d_m, sizeof(double) * (size_t)n, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(vel, d_v, sizeof(double) * (size_t)n, cudaMemcpyDeviceToHost));
    st = 0;
fail:
    cudaFree(d_p); cudaFree(d_m); cudaFree(d_v); cudaFree(d_g);
    return st;
}

/* ---- an ELBO step on the device ----------------------------------------------
 * The order of estimate() in svir_engine.c, particle by particle: the global
 * block's forward pass (one thread: k_global_fwd), the local draws, the
 * observation pass, the local backward pass, the per-term sums, the global
 * block's backward pass (one thread: k_global_back); then the entropy and
 * the KL terms (k_global_end). With a minibatch, the batch is selected on
 * the device first (k_batch, then per term a radix sort of its rows by group
 * and the groups' runs: k_runs, k_counts). Nothing crosses to the host. */

/* scal: [0] log prior of the particle, [1] the ELBO so far, [2] KL */
__global__ void k_global_fwd(svir_model m, svir_coupling cp, int fullrank, const double *gpar,
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
__global__ void k_global_back(svir_model m, svir_coupling cp, int ns, int fullrank, int stl,
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
__global__ void k_global_end(svir_model m, int fullrank, int stl, const double *gpar,
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

static int grid_for(ptrdiff_t n, int cap = 4096)
{
    const ptrdiff_t nb = (n + 255) / 256;
    return nb < 1 ? 1 : (int)std::min<ptrdiff_t>(nb, cap);
}

/* The device state of ELBO steps: the model's data and global part, the
 * coupled guide's constants, the variational parameters and the work space;
 * with fit set, also Adam's moments, the window sums and the loop state. */
typedef struct {
    const svir_model *m;
    svir_model md;      /* m with device arrays for the global part */
    svir_coupling cd;   /* cp with device arrays */
    svir_globals g;
    dev_locals L;
    int ns, fullrank, stl, S, nt, sumq, nb, full;
    ptrdiff_t D, nz, nloc, ngp, npar, B, ngroups;
    double scale;
    uint32_t key[2];
    svir_cuda_data *d;
    svir_term *d_terms;
    int *d_pt, *d_cns, *d_coff, *d_qoff, *d_cS;
    double *d_pdf, *d_ploc, *d_pscale, *d_ca, *d_cK, *d_comega, *d_cref;
    /* [npar]: the global parameters, then the local ones */
    double *d_par, *d_grad;
    double *d_eps, *d_theta, *d_sd, *d_L, *d_A, *d_cu, *d_cw, *d_gtheta, *d_ws, *d_scal,
        *d_noise, *d_z, *d_ed, *d_part, *d_sums, *d_cds, *d_cdw, *d_dA;
    /* minibatch */
    int *d_idx, *d_keys, *d_skeys, *d_iota, *d_svals, *d_start, *d_end;
    double *d_cnt, *d_nobs;
    void *d_tmp;
    size_t tmp_bytes;
    int key_bits[SVIR_CUDA_MAX_TERMS];
    /* fit */
    double *d_mom, *d_vel, *d_sum, *d_prev, *d_trace, *d_wel, *d_shift, *d_cref_old,
        *d_com_old, *d_wold, *d_wnew, *d_v, *d_bad;
    svir_loop *d_loop;
} fit_ctx;

static void ctx_free(fit_ctx *x)
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
    cudaFree(x->d_vel); cudaFree(x->d_sum); cudaFree(x->d_prev); cudaFree(x->d_trace);
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
static int ctx_new(fit_ctx *x, const svir_model *m, const svir_coupling *cp, int ns,
                   int fullrank, int stl, int S, ptrdiff_t B, uint64_t seed, long maxs, int W,
                   char *err, size_t errlen)
{
    const int nt = m->nterms, p = m->p;
    svir_model &md = x->md;
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
    x->nb = make_locals(m, &x->L, err, errlen);
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
        ctx_free(x);
        return 3;
    }
    /* the model's global part on the device */
    md = *m;
    CK(upload(&x->d_terms, (const svir_term *)terms, (size_t)nt));
    CK(upload(&x->d_pt, m->prior_type, (size_t)m->D));
    CK(upload(&x->d_pdf, m->prior_df, (size_t)m->D));
    CK(upload(&x->d_ploc, m->prior_loc, (size_t)m->D));
    CK(upload(&x->d_pscale, m->prior_scale, (size_t)m->D));
    md.y = md.trials = md.offset = md.X = NULL;
    md.terms = x->d_terms;
    md.prior_type = x->d_pt;
    md.prior_df = x->d_pdf;
    md.prior_loc = x->d_ploc;
    md.prior_scale = x->d_pscale;
    /* the coupled guide's constants */
    CK(upload(&x->d_cns, cp->cns, (size_t)nt));
    CK(upload(&x->d_coff, cp->coff, (size_t)nt));
    CK(upload(&x->d_qoff, cp->qoff, (size_t)nt));
    CK(upload(&x->d_cS, cp->cS, (size_t)ns));
    CK(upload(&x->d_ca, cp->ca, (size_t)ns * (size_t)p));
    CK(upload(&x->d_cK, cp->cK, (size_t)ns * (size_t)p));
    CK(upload(&x->d_comega, cp->comega, (size_t)ns));
    CK(upload(&x->d_cref, cp->cref, (size_t)p));
    svir_coupling_view(&x->cd, cp->couple, cp->sumq, x->d_cns, x->d_coff, x->d_qoff, x->d_cS,
                       x->d_ca, x->d_cK, x->d_comega, x->d_cref);
    /* parameters and work space */
    CK(upload<double>(&x->d_par, NULL, (size_t)x->npar));
    CK(upload<double>(&x->d_grad, NULL, (size_t)x->npar));
    CK(upload<double>(&x->d_eps, NULL, (size_t)x->D));
    CK(upload<double>(&x->d_theta, NULL, (size_t)x->D));
    CK(upload<double>(&x->d_sd, NULL, (size_t)x->sumq));
    CK(upload<double>(&x->d_L, NULL, (size_t)m->nqq));
    CK(upload<double>(&x->d_A, NULL, (size_t)m->nqq));
    CK(upload<double>(&x->d_cu, NULL, (size_t)x->sumq));
    CK(upload<double>(&x->d_cw, NULL, (size_t)x->sumq));
    CK(upload<double>(&x->d_gtheta, NULL, (size_t)x->D));
    CK(upload<double>(&x->d_ws, NULL, (size_t)std::max<ptrdiff_t>(x->D, (ptrdiff_t)m->qmax * m->qmax)));
    CK(upload<double>(&x->d_scal, NULL, 3));
    CK(upload<double>(&x->d_noise, NULL, (size_t)x->nz));
    CK(upload<double>(&x->d_z, NULL, (size_t)x->nz));
    CK(upload<double>(&x->d_ed, NULL, (size_t)x->nz));
    CK(upload<double>(&x->d_part, NULL, part_size(m, std::max(x->nb, 1024))));
    CK(upload<double>(&x->d_sums, NULL, sums_size(m, x->sumq)));
    CK(upload<double>(&x->d_cds, NULL, (size_t)ns));
    CK(upload<double>(&x->d_cdw, NULL, (size_t)x->sumq));
    CK(upload<double>(&x->d_dA, NULL, (size_t)m->nqq));
    x->g.beta = NULL;
    x->g.sd = x->d_sd;
    x->g.L = x->d_L;
    x->g.A = x->d_A;
    x->g.sigma = x->g.phi = 1.0;
    if (!x->full) {
        const size_t Bt = (size_t)x->B * (size_t)(nt > 0 ? nt : 1);
        size_t need = 0;
        CK(upload<int>(&x->d_idx, NULL, (size_t)x->B));
        CK(upload<int>(&x->d_keys, NULL, Bt));
        CK(upload<int>(&x->d_skeys, NULL, Bt));
        CK(upload<int>(&x->d_iota, NULL, (size_t)x->B));
        CK(upload<int>(&x->d_svals, NULL, Bt));
        CK(upload<int>(&x->d_start, NULL, (size_t)x->ngroups));
        CK(upload<int>(&x->d_end, NULL, (size_t)x->ngroups));
        CK(upload<double>(&x->d_cnt, NULL, (size_t)x->ngroups));
        CK(upload<double>(&x->d_nobs, NULL, (size_t)x->ngroups));
        for (int t = 0; t < nt; t++)
            CK(cudaMemcpy(x->d_nobs + x->L.t[t].first, m->terms[t].nobs,
                          sizeof(double) * (size_t)m->terms[t].ngroups, cudaMemcpyHostToDevice));
        k_iota<<<grid_for(x->B), 256>>>(x->d_iota, x->B);
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
        CK(upload<double>(&x->d_mom, NULL, (size_t)x->npar));
        CK(upload<double>(&x->d_vel, NULL, (size_t)x->npar));
        CK(upload<double>(&x->d_sum, NULL, (size_t)x->npar));
        CK(upload<double>(&x->d_prev, NULL, (size_t)x->npar));
        CK(upload<double>(&x->d_trace, NULL, (size_t)maxs));
        CK(upload<double>(&x->d_wel, NULL, (size_t)maxw));
        CK(upload<double>(&x->d_shift, NULL, 2 * (size_t)x->sumq));
        CK(upload<double>(&x->d_cref_old, NULL, (size_t)p));
        CK(upload<double>(&x->d_com_old, NULL, (size_t)ns));
        CK(upload<double>(&x->d_wold, NULL, (size_t)x->sumq));
        CK(upload<double>(&x->d_wnew, NULL, (size_t)x->sumq));
        CK(upload<double>(&x->d_v, NULL, (size_t)ns));
        CK(upload<double>(&x->d_bad, NULL, 4096));
        CK(upload<svir_loop>(&x->d_loop, NULL, 1));
    }
    return 0;
fail:
    ctx_free(x);
    return 3;
}

/* Launches ELBO step `step` at the parameters in d_par: the ELBO goes to
 * d_scal[1], its gradient to d_grad. */
static int ctx_step(fit_ctx *x, long step, char *err, size_t errlen)
{
    const svir_model *m = x->m;
    svir_cuda_data *d = x->d;
    const ptrdiff_t D = x->D, nz = x->nz;
    const int S = x->S;
    const double invS = 1.0 / S, scale = x->scale, wmul = x->full ? scale : 1.0;
    double *gpar = x->d_par, *lpar = x->d_par + x->ngp;
    double *ggrad = x->d_grad, *lgrad = x->d_grad + x->ngp;
    const double *cnt = x->full ? NULL : x->d_cnt, *nobs = x->full ? NULL : x->d_nobs;
    if (!x->full) {
        const ptrdiff_t B = x->B;
        k_batch<<<grid_for(B), 256>>>(d->dm, B, (uint64_t)step, x->key[0], x->key[1], x->d_idx,
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
            k_runs<<<grid_for(B), 256>>>(x->d_skeys + (ptrdiff_t)t * B, B, x->d_start + f,
                                         x->d_end + f);
            CK(cudaGetLastError());
            d->gstart[t] = x->d_start + f;
            d->gend[t] = x->d_end + f;
            d->grows[t] = x->d_svals + (ptrdiff_t)t * B;
        }
        k_counts<<<grid_for(x->ngroups), 256>>>(x->d_start, x->d_end, x->ngroups, x->d_cnt);
        CK(cudaGetLastError());
        d->bidx = x->d_idx;
        d->nrows = B;
    }
    k_zero<<<64, 256>>>(ggrad, x->ngp);
    k_zero<<<1, 32>>>(x->d_scal, 3);
    CK(cudaGetLastError());
    for (int s = 0; s < S; s++) {
        k_global_fwd<<<1, 1>>>(x->md, x->cd, x->fullrank, gpar, x->key[0], x->key[1],
                               (uint64_t)step, (uint64_t)s * (uint64_t)D, x->d_eps, x->d_theta,
                               x->g, d->beta, x->d_cu, x->d_cw, d->aux, x->d_gtheta, x->d_ws,
                               x->d_scal);
        CK(cudaGetLastError());
        if (nz > 0) {
            /* the local noise of particle s: normals s nz .. s nz + nz - 1 */
            const uint64_t first = (uint64_t)s * (uint64_t)nz;
            const uint64_t pair0 = first >> 1, pair1 = (first + (uint64_t)nz - 1) >> 1;
            const ptrdiff_t npairs = (ptrdiff_t)(pair1 - pair0 + 1);
            k_normals<<<grid_for(npairs), 256>>>(x->key[0], x->key[1], SVIR_STREAM_LOCAL,
                                                 (uint64_t)step, first, nz, pair0, npairs,
                                                 x->d_noise);
            CK(cudaGetLastError());
        }
        k_local_draw<<<x->nb, SVIR_CUDA_BLOCK>>>(x->L, lpar, x->d_A, x->d_noise, NULL, x->d_z,
                                                 d->b, x->d_ed, x->d_part);
        CK(cudaGetLastError());
        if (launch_obs(d)) {
            snprintf(err, errlen, "the CUDA backend has no kernel for family %d with link %d",
                     m->family, m->link);
            return 1;
        }
        CK(cudaGetLastError());
        k_local_back<<<x->nb, SVIR_CUDA_BLOCK>>>(x->L, lpar, x->d_A, d->G,
                                                 x->cd.couple ? x->d_cw : NULL, x->d_noise,
                                                 x->d_z, x->d_ed, cnt, nobs, scale, invS, x->stl,
                                                 s == 0, s == S - 1, lgrad, x->d_part);
        CK(cudaGetLastError());
        if (s == S - 1) {
            k_reduce_partials<<<1, 64>>>(x->d_part, x->nb, 1, x->d_scal + 2);
            CK(cudaGetLastError());
        }
        CK(launch_term_sums(m, x->L, x->sumq, lpar, d->G, x->d_z, cnt, nobs, scale, x->d_part,
                            x->d_sums));
        k_global_back<<<1, 1>>>(x->md, x->cd, x->ns, x->fullrank, x->stl, scale, wmul, invS, gpar,
                                x->d_eps, x->d_theta, x->g, x->d_cw, d->out, x->d_sums,
                                x->d_gtheta, x->d_cds, x->d_cdw, x->d_dA, ggrad, x->d_ws,
                                x->d_scal);
        CK(cudaGetLastError());
    }
    k_global_end<<<1, 1>>>(x->md, x->fullrank, x->stl, gpar, ggrad, x->d_scal);
    CK(cudaGetLastError());
    return 0;
fail:
    return 3;
}

extern "C" int svir_cuda_elbo_grad_host(const svir_model *m, const svir_coupling *cp, int ns,
                                        int fullrank, int stl, int S, ptrdiff_t batch_size,
                                        const double *gpar, const double *lpar, uint64_t seed,
                                        long step, double *elbo, double *grad, char *err,
                                        size_t errlen)
{
    fit_ctx x;
    double scal_h[3] = {0.0, 0.0, 0.0}, *cnt = NULL;
    int st = ctx_new(&x, m, cp, ns, fullrank, stl, S, batch_size, seed, 0, 1, err, errlen);
    if (st) return st;
    st = 3;
    CK(cudaMemcpy(x.d_par, gpar, sizeof(double) * (size_t)x.ngp, cudaMemcpyHostToDevice));
    if (x.nloc > 0)
        CK(cudaMemcpy(x.d_par + x.ngp, lpar, sizeof(double) * (size_t)x.nloc,
                      cudaMemcpyHostToDevice));
    {
        const int e = ctx_step(&x, step, err, errlen);
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
    ctx_free(&x);
    return st;
}

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
    __shared__ double sh[SVIR_CUDA_WARPS];
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
 * current one and the average) the shift w_old - w_new of each term */
__global__ void k_reanchor_g(const svir_loop *Lp, svir_model m, svir_coupling cp, int ns,
                             const double *gpar, const double *gprev, svir_globals g,
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
    for (int set = 0; set < 2; set++) {
        const double *gp = set ? gprev : gpar;
        svir_unpack_globals(&m, gp, &g);
        svir_coupling_forward(&m, &old, gp, &g, beta_eff, cu, wold);
        svir_coupling_forward(&m, &cp, gp, &g, beta_eff, cu, wnew);
        for (int r = 0; r < cp.sumq; r++) shift[set * cp.sumq + r] = wold[r] - wnew[r];
    }
}

/* ... and per group of a coupled term: m -= the shift, in both sets */
__global__ void __launch_bounds__(SVIR_CUDA_BLOCK)
k_reanchor_l(const svir_loop *Lp, const dev_locals L, const int *__restrict__ cns, int sumq,
             const double *__restrict__ shift, double *__restrict__ lpar,
             double *__restrict__ lprev)
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
        }
    }
}

/* ---- the posterior draws kept in the fit ------------------------------------
 * final_draws() of svir_engine.c on the device, one draw at a time: the
 * globals (one thread), the random effects (one thread per group), the
 * log-likelihood of all observations (launch_obs), then the draw's PSIS log
 * ratio log p(y, theta, z) - log q(theta) - log q(z | theta). */

/* post: [0] ll_const + log p(theta) - log q(theta), [1] the groups' part */
__global__ void k_post_global(svir_model m, svir_coupling cp, int fullrank, const double *gpar,
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
    res->nshift = x->sumq;
    if (nd <= 0) return 0;
    res->draws = (double *)calloc((size_t)nd * (size_t)D + 1, sizeof(double));
    res->log_ratio = (double *)calloc((size_t)nd + 1, sizeof(double));
    res->shift = (double *)calloc((size_t)nd * (size_t)x->sumq + 1, sizeof(double));
    if (!res->draws || !res->log_ratio || !res->shift) {
        snprintf(err, errlen, "out of memory drawing from the posterior");
        return 2;
    }
    data_full(d);
    CK(upload<double>(&d_draws, NULL, (size_t)nd * (size_t)D));
    CK(upload<double>(&d_lr, NULL, (size_t)nd));
    CK(upload<double>(&d_shift, NULL, (size_t)nd * (size_t)x->sumq));
    for (int s = 0; s < nd; s++) {
        k_post_global<<<1, 1>>>(x->md, x->cd, x->fullrank, x->d_par, x->key[0], x->key[1], s, nd,
                                x->d_eps, x->d_theta, x->g, d->beta, x->d_cu, x->d_cw, d->aux,
                                x->d_ws, d_draws, d_shift, x->d_scal);
        if (nz > 0) {
            const ptrdiff_t npairs = (nz + 1) / 2;
            k_normals<<<grid_for(npairs), 256>>>(x->key[0], x->key[1], SVIR_STREAM_DRAWS_LOCAL,
                                                 (uint64_t)s, 0, nz, 0, npairs, x->d_noise);
        }
        k_local_draw<<<x->nb, SVIR_CUDA_BLOCK>>>(x->L, x->d_par + x->ngp, x->d_A, x->d_noise,
                                                 x->d_cw, x->d_z, d->b, x->d_ed, x->d_part);
        k_reduce_partials<<<1, 64>>>(x->d_part, x->nb, 1, x->d_scal + 1);
        CK(cudaGetLastError());
        if (launch_obs(d)) {
            snprintf(err, errlen, "the CUDA backend has no kernel for family %d with link %d",
                     x->m->family, x->m->link);
            st = 1;
            goto fail;
        }
        k_post_end<<<1, 1>>>(d->out, x->d_scal, s, d_lr);
        CK(cudaGetLastError());
    }
    CK(cudaMemcpy(res->draws, d_draws, sizeof(double) * (size_t)nd * (size_t)D,
                  cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(res->log_ratio, d_lr, sizeof(double) * (size_t)nd, cudaMemcpyDeviceToHost));
    if (x->sumq > 0)
        CK(cudaMemcpy(res->shift, d_shift, sizeof(double) * (size_t)nd * (size_t)x->sumq,
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

extern "C" int svir_cuda_fit(const svir_model *m, const svir_control *c, const svir_callbacks *cb,
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
    const ptrdiff_t ngp = svir_n_global_par(m, c->guide), nloc = m->nloc;
    double t0 = 0.0;
    double *gpar = NULL, *lpar = NULL;
    memset(res, 0, sizeof *res);
    memset(&cp, 0, sizeof cp);
    res->elbo = (double *)calloc((size_t)maxs, sizeof(double));
    res->lr_steps = (long *)calloc(SVIR_LOOP_MAX_LR_STEPS, sizeof(long));
    res->max_windows = (int)(maxs / W + 1);
    res->window_elbo = (double *)calloc((size_t)res->max_windows, sizeof(double));
    /* the final parameters go straight into the result (svir_result_free) */
    gpar = res->gpar = (double *)malloc(sizeof(double) * (size_t)(ngp + 1));
    lpar = res->lpar = (double *)malloc(sizeof(double) * (size_t)(nloc + 1));
    if (!res->elbo || !res->lr_steps || !res->window_elbo || !gpar || !lpar) {
        snprintf(err, errlen, "out of memory allocating the fit's results");
        return 2;
    }
    svir_init_params(m, c, gpar, lpar);
    if (svir_coupling_new(m, c, c->init_mu, &cp, &ns)) {
        snprintf(err, errlen, "out of memory setting up the coupled guide");
        return 2;
    }
    st = ctx_new(&x, m, &cp, ns, fullrank, c->stl, c->num_particles, c->batch_size, c->seed,
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
    k_zero<<<grid_for(x.npar), 256>>>(x.d_mom, x.npar);
    k_zero<<<grid_for(x.npar), 256>>>(x.d_vel, x.npar);
    k_zero<<<grid_for(x.npar), 256>>>(x.d_sum, x.npar);
    k_zero<<<grid_for(x.npar), 256>>>(x.d_prev, x.npar);
    CK(cudaGetLastError());
    svir_loop_init(&hL, maxs, W, c->lr, c->lr_schedule, c->lr_decay, c->patience, c->tol_rel_obj,
                   x.d_trace, x.d_wel);
    x.d->dm.halt = &x.d_loop->stopped; /* a device address: not dereferenced here */
    CK(cudaDeviceSynchronize());
    t0 = wall_now(); /* the loop's time: the upload and set-up are not in it */
    CK(cudaMemcpy(x.d_loop, &hL, sizeof hL, cudaMemcpyHostToDevice));
    {
        const int ncheck = grid_for(x.npar);
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
                hL.stop_reason = SVIR_STOP_INTERRUPTED;
                hL.stopped = 1;
                hL.steps = step;
                CK(cudaMemcpy(x.d_loop, &hL, sizeof hL, cudaMemcpyHostToDevice));
                break;
            }
            {
                const int e = ctx_step(&x, step, err, errlen);
                if (e) {
                    st = e;
                    goto fail;
                }
            }
            k_check<<<ncheck, SVIR_CUDA_BLOCK>>>(x.L, x.d_grad, ngp, x.npar,
                                                 x.full ? NULL : x.d_cnt, x.d_bad);
            k_loop<<<1, 1>>>(x.d_loop, x.d_scal, x.d_bad, ncheck, step);
            k_update<<<grid_for(x.npar), SVIR_CUDA_BLOCK>>>(
                x.d_loop, x.L, x.full ? NULL : x.d_cnt, ngp, x.npar, x.d_par, x.d_mom, x.d_vel,
                x.d_grad, x.d_sum, x.d_prev);
            CK(cudaGetLastError());
            if (x.cd.couple) {
                k_reanchor_g<<<1, 1>>>(x.d_loop, x.md, x.cd, ns, x.d_par, x.d_prev, x.g, x.d->beta,
                                       x.d_cu, x.d_cref, x.d_comega, x.d_cref_old, x.d_com_old,
                                       x.d_v, x.d_wold, x.d_wnew, x.d_shift);
                k_reanchor_l<<<x.nb, SVIR_CUDA_BLOCK>>>(x.d_loop, x.L, x.d_cns, x.sumq,
                                                        x.d_shift, x.d_par + ngp,
                                                        x.d_prev + ngp);
                CK(cudaGetLastError());
            }
        }
    }
    CK(cudaMemcpy(&hL, x.d_loop, sizeof hL, cudaMemcpyDeviceToHost));
    res->time_split[SVIR_PHASE_UPDATE] = wall_now() - t0;
    res->time_split[SVIR_PHASE_DRAW] = NAN;
    res->time_split[SVIR_PHASE_OBS] = NAN;
    res->time_split[SVIR_PHASE_BACKWARD] = NAN;
    svir_loop_to_result(&hL, step, res);
    if (res->steps > 0)
        CK(cudaMemcpy(res->elbo, x.d_trace, sizeof(double) * (size_t)res->steps,
                      cudaMemcpyDeviceToHost));
    if (hL.n_windows > 0)
        CK(cudaMemcpy(res->window_elbo, x.d_wel, sizeof(double) * (size_t)hL.n_windows,
                      cudaMemcpyDeviceToHost));
    /* the final parameters (svir_loop_final), on the device and the host */
    final_sel = svir_loop_final(&hL);
    {
        const double *src = final_sel == 1 ? x.d_sum : final_sel == 2 ? x.d_prev : x.d_par;
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
    ctx_free(&x);
    have_ctx = 0;
    svir_coupling_free(&cp);
    return 0;
fail:
    if (have_ctx) ctx_free(&x);
    svir_coupling_free(&cp);
    return st;
}
