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

#include <algorithm>
#include <climits>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vector>

#include "../svir_cuda.h"
#include "../svir_local.h"
#include "../svir_step.h"
#include "../svir_philox.h"

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
    cudaEvent_t ev0, ev1;
    int have_events;
};

#define CK(call)                                                                        \
    do {                                                                                \
        cudaError_t e_ = (call);                                                        \
        if (e_ != cudaSuccess) {                                                        \
            snprintf(err, errlen, "CUDA error in %s: %s (%s)", #call,                   \
                     cudaGetErrorString(e_), cudaGetErrorName(e_));                     \
            (void)cudaGetLastError();                                                   \
            goto fail;                                                                  \
        }                                                                               \
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
k_obs(const dev_model dm, const double *__restrict__ beta, const double *__restrict__ b,
      const svir_aux *__restrict__ auxp, double *__restrict__ de, double *__restrict__ partial)
{
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
    for (ptrdiff_t i = (ptrdiff_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (ptrdiff_t)gridDim.x * blockDim.x) {
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
        de[i] = d;
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
k_xtde(const dev_model dm, int c0, const double *__restrict__ de, double *__restrict__ partial)
{
    __shared__ double sh[SVIR_CUDA_WARPS];
    const ptrdiff_t n = dm.n;
    const int p = dm.p, pc = p - c0 < SVIR_CUDA_PCHUNK ? p - c0 : SVIR_CUDA_PCHUNK;
    double gx[SVIR_CUDA_PCHUNK];
#pragma unroll
    for (int c = 0; c < SVIR_CUDA_PCHUNK; c++) gx[c] = 0.0;
    for (ptrdiff_t i = (ptrdiff_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (ptrdiff_t)gridDim.x * blockDim.x) {
        const double d = de[i];
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

/* G[off_z + j q + k] = sum over the observations i of group j of de[i] Z[i, k] */
__global__ void __launch_bounds__(SVIR_CUDA_BLOCK)
k_group_sum(const dev_term tm, ptrdiff_t n, const double *__restrict__ de, double *__restrict__ G)
{
    const int lane = threadIdx.x & 31;
    const ptrdiff_t warp = ((ptrdiff_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const ptrdiff_t nwarps = ((ptrdiff_t)gridDim.x * blockDim.x) >> 5;
    for (ptrdiff_t j = warp; j < tm.ngroups; j += nwarps) {
        const int r0 = tm.rowptr[j], r1 = tm.rowptr[j + 1];
        for (int k = 0; k < tm.q; k++) {
            double s = 0.0;
            for (int r = r0 + lane; r < r1; r += 32) {
                const int i = tm.rows[r];
                s += tm.z_ones ? de[i] : de[i] * tm.Z[(ptrdiff_t)k * n + i];
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
    const int nb = d->nblocks;
#define OBS(FAM, LINK)                                                                  \
    do {                                                                                \
        if (dm.p <= 4)                                                                  \
            k_obs<FAM, LINK, 4><<<nb, SVIR_CUDA_BLOCK>>>(dm, d->beta, d->b, d->aux, d->de, \
                                                         d->partial);                   \
        else if (dm.p <= 16)                                                            \
            k_obs<FAM, LINK, 16><<<nb, SVIR_CUDA_BLOCK>>>(dm, d->beta, d->b, d->aux, d->de, \
                                                          d->partial);                  \
        else                                                                            \
            k_obs<FAM, LINK, 32><<<nb, SVIR_CUDA_BLOCK>>>(dm, d->beta, d->b, d->aux, d->de, \
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
        k_xtde<<<nb, SVIR_CUDA_BLOCK>>>(dm, c0, d->de, d->partial);
    k_reduce_partials<<<1, 64>>>(d->partial, nb, dm.p + 2, d->out);
    for (int t = 0; t < dm.nterms; t++) {
        const dev_term &tm = dm.terms[t];
        const int need = (int)std::min<ptrdiff_t>(((ptrdiff_t)tm.ngroups * 32 + SVIR_CUDA_BLOCK - 1) /
                                                      SVIR_CUDA_BLOCK,
                                                  (ptrdiff_t)d->sms * 16);
        k_group_sum<<<need > 0 ? need : 1, SVIR_CUDA_BLOCK>>>(tm, dm.n, d->de, d->G);
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
    int dev = 0;
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
        std::vector<int> rowptr((size_t)tm->ngroups + 1, 0), rows((size_t)n);
        for (ptrdiff_t i = 0; i < n; i++) rowptr[(size_t)tm->group[i] + 1]++;
        for (int j = 0; j < tm->ngroups; j++) rowptr[(size_t)j + 1] += rowptr[(size_t)j];
        std::vector<int> next(rowptr.begin(), rowptr.end() - 1);
        for (ptrdiff_t i = 0; i < n; i++) rows[(size_t)next[(size_t)tm->group[i]]++] = (int)i;
        CK(upload(&d->rowptr[t], rowptr.data(), rowptr.size()));
        CK(upload(&d->rows[t], rows.data(), rows.size()));
        dt->rowptr = d->rowptr[t];
        dt->rows = d->rows[t];
    }
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
    *out = d;
    return 0;
fail:
    svir_cuda_data_free(d);
    return 3;
}

extern "C" int svir_cuda_obs_pass_host(svir_cuda_data *d, const double *beta, const double *b,
                                       double sigma, double phi, double *ll, double *gbeta,
                                       double *gaux, double *G, double *ms, char *err,
                                       size_t errlen)
{
    const int p = d->dm.p;
    std::vector<double> o((size_t)p + 2);
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
    CK(cudaMemcpy(o.data(), d->out, sizeof(double) * o.size(), cudaMemcpyDeviceToHost));
    if (d->nz > 0) CK(cudaMemcpy(G, d->G, sizeof(double) * (size_t)d->nz, cudaMemcpyDeviceToHost));
    *ll = o[0];
    *gaux = o[1];
    for (int c = 0; c < p; c++) gbeta[c] = o[(size_t)c + 2];
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
    std::vector<float> times;
    float t = 0.0f;
    void *src = NULL, *dst = NULL;
    svir_aux aux;
    svir_aux_set(&aux, 1.0, 1.0);
    if (reps < 1) reps = 1;
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
        if (r > 0) times.push_back(t);
    }
    std::sort(times.begin(), times.end());
    *ms_pass = times[times.size() / 2];
    *copy_gbs = 0.0;
    if (copy_bytes > 0) {
        CK(cudaMalloc(&src, copy_bytes));
        CK(cudaMalloc(&dst, copy_bytes));
        CK(cudaMemset(src, 0, copy_bytes));
        times.clear();
        for (int r = 0; r < reps + 1; r++) {
            CK(cudaEventRecord(d->ev0));
            CK(cudaMemcpy(dst, src, copy_bytes, cudaMemcpyDeviceToDevice));
            CK(cudaEventRecord(d->ev1));
            CK(cudaEventSynchronize(d->ev1));
            CK(cudaEventElapsedTime(&t, d->ev0, d->ev1));
            if (r > 0) times.push_back(t);
        }
        std::sort(times.begin(), times.end());
        *copy_gbs = 2.0 * (double)copy_bytes / (1e-3 * times[times.size() / 2]) / 1e9;
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
 * the partial sum of log q(z) */
__global__ void __launch_bounds__(SVIR_CUDA_BLOCK)
k_local_draw(const dev_locals L, const double *__restrict__ lpar, const double *__restrict__ A,
             const double *__restrict__ noise, double *__restrict__ z, double *__restrict__ b,
             double *__restrict__ ed, double *__restrict__ partial)
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
        lq += svir_local_draw(q, blk, noise + pos, ed + pos, z + pos);
        svir_local_b(q, A + g.tm->off_qq, z + pos, b + pos);
    }
    const double s = block_sum(lq, sh);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

/* one thread per group: the local gradients from G (svir_local_backward),
 * then the KL terms (svir_local_kl); per block: the partial sum of KL */
__global__ void __launch_bounds__(SVIR_CUDA_BLOCK)
k_local_back(const dev_locals L, const double *__restrict__ lpar, const double *__restrict__ A,
             const double *__restrict__ G, const double *__restrict__ shift,
             const double *__restrict__ noise, const double *__restrict__ z,
             const double *__restrict__ ed, double scale, double invS, int stl, int first,
             int with_kl,
             double *__restrict__ lgrad, double *__restrict__ partial)
{
    __shared__ double sh[SVIR_CUDA_WARPS];
    double kl = 0.0;
    for (ptrdiff_t k = (ptrdiff_t)blockIdx.x * blockDim.x + threadIdx.x; k < L.ngroups;
         k += (ptrdiff_t)gridDim.x * blockDim.x) {
        const local_at g = local_group(L, k);
        const int q = g.q;
        const ptrdiff_t pos = g.pos;
        const double *blk = lpar + g.lo;
        double *gm = lgrad + g.lo;
        if (first)
            for (ptrdiff_t c = 0; c < svir_local_block(q); c++) gm[c] = 0.0;
        svir_local_backward(q, A + g.tm->off_qq, G + pos, noise + pos, z + pos, ed + pos, blk + q,
                            shift ? shift + g.tm->qoff : NULL, scale, scale, invS, stl, gm, gm + q);
        if (with_kl) kl += svir_local_kl(q, blk, blk + q, ed + pos, scale, stl ? 0.0 : scale, gm, gm + q);
    }
    const double s = block_sum(kl, sh);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

/* Per term t, sums over its groups j in a fixed order: value v < q^2 is
 * dA[r q + c] = sum_j scale G_j[r] z_j[c] (c <= r, else 0); then sum_j m_j
 * (q values) and sum_j z_j (q values). Per block: partial[blk nv + v],
 * nv = q^2 + 2q. */
__global__ void __launch_bounds__(SVIR_CUDA_BLOCK)
k_term_sums(const dev_lterm tm, const double *__restrict__ lpar, const double *__restrict__ G,
            const double *__restrict__ z, double scale, double *__restrict__ partial)
{
    __shared__ double sh[SVIR_CUDA_WARPS];
    const int q = tm.q, nv = q * q + 2 * q;
    const ptrdiff_t lb = svir_local_block(q);
    for (int v = 0; v < nv; v++) {
        double acc = 0.0;
        for (ptrdiff_t j = (ptrdiff_t)blockIdx.x * blockDim.x + threadIdx.x; j < tm.ngroups;
             j += (ptrdiff_t)gridDim.x * blockDim.x) {
            const ptrdiff_t pos = tm.off_z + j * q;
            if (v < q * q) {
                const int r = v / q, c = v % q;
                if (c <= r) acc += scale * G[pos + r] * z[pos + c];
            } else if (v < q * q + q) {
                acc += lpar[tm.off_loc + j * lb + (v - q * q)];
            } else {
                acc += z[pos + (v - q * q - q)];
            }
        }
        const double s = block_sum(acc, sh);
        if (threadIdx.x == 0) partial[(ptrdiff_t)blockIdx.x * nv + v] = s;
    }
}

/* The per-term sums of k_term_sums into sums (device, [nqq + 2 sum q]):
 * per term dA at off_qq, sum m at nqq + qoff, sum z at nqq + sumq + qoff.
 * part: at least part_size() doubles. */
static size_t part_size(const svir_model *m, int nb)
{
    return std::max<size_t>((size_t)nb, 64 * ((size_t)m->qmax * m->qmax + 2 * (size_t)m->qmax));
}

static cudaError_t launch_term_sums(const svir_model *m, const dev_locals &L, int sumq,
                                    const double *lpar, const double *G, const double *z,
                                    double scale, double *part, double *sums)
{
    for (int t = 0; t < L.nterms; t++) {
        const int q = L.t[t].q, nv = q * q + 2 * q;
        int nbt = (int)std::min<ptrdiff_t>((L.t[t].ngroups + SVIR_CUDA_BLOCK - 1) / SVIR_CUDA_BLOCK, 64);
        if (nbt < 1) nbt = 1;
        k_term_sums<<<nbt, SVIR_CUDA_BLOCK>>>(L.t[t], lpar, G, z, scale, part);
        k_reduce_range<<<1, 64>>>(part, nbt, nv, 0, q * q, sums + L.t[t].off_qq);
        k_reduce_range<<<1, 64>>>(part, nbt, nv, q * q, q, sums + m->nqq + L.t[t].qoff);
        k_reduce_range<<<1, 64>>>(part, nbt, nv, q * q + q, q, sums + m->nqq + sumq + L.t[t].qoff);
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
    CK(upload<double>(&d_sums, NULL, (size_t)m->nqq + 2 * (size_t)sumq));
    svir_philox_key(seed, key);
    if (nz > 0) {
        const ptrdiff_t npairs = (nz + 1) / 2;
        k_normals<<<(int)std::min<ptrdiff_t>((npairs + 255) / 256, 4096), 256>>>(
            key[0], key[1], SVIR_STREAM_LOCAL, step, 0, nz, 0, npairs, d_noise);
        CK(cudaGetLastError());
    }
    k_local_draw<<<nb, SVIR_CUDA_BLOCK>>>(L, d_lpar, d_A, d_noise, d_z, d_b, d_ed, d_part);
    CK(cudaGetLastError());
    k_reduce_partials<<<1, 64>>>(d_part, nb, 1, d_out + 1);
    CK(cudaGetLastError());
    k_local_back<<<nb, SVIR_CUDA_BLOCK>>>(L, d_lpar, d_A, d_G, d_shift, d_noise, d_z, d_ed, scale,
                                          1.0, stl, 1, 1, d_lgrad, d_part);
    CK(cudaGetLastError());
    k_reduce_partials<<<1, 64>>>(d_part, nb, 1, d_out);
    CK(cudaGetLastError());
    CK(cudaMemcpy(o, d_out, sizeof o, cudaMemcpyDeviceToHost));
    CK(launch_term_sums(m, L, sumq, d_lpar, d_G, d_z, scale, d_part, d_sums));
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

/* ---- one full-batch ELBO estimate and its gradient on the device -------------
 * The order of estimate() in svir_engine.c, particle by particle: the global
 * block's forward pass (one thread: k_global_fwd), the local draws, the
 * observation pass, the local backward pass, the per-term sums, the global
 * block's backward pass (one thread: k_global_back); then the entropy and
 * the KL terms (k_global_end). Only the result crosses to the host. */

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
 * off_qq), then sum m, then sum z (k_term_sums) */
__global__ void k_global_back(svir_model m, svir_coupling cp, int ns, int fullrank, int stl,
                              double scale, double invS, const double *gpar, const double *eps,
                              const double *theta, svir_globals g, const double *cw,
                              const double *obs, const double *sums, double *gtheta, double *cds,
                              double *cdw, double *dA, double *ggrad, double *ws, double *scal)
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
        /* coupling_backward's sums over the groups, from the per-term sums
         * (full batch: every group has weight scale) */
        double val = 0.0;
        for (int t = 0; t < m.nterms; t++) {
            const int q = m.terms[t].q, qo = cp.qoff[t];
            for (int r = 0; r < q; r++) cdw[qo + r] = 0.0;
            if (cp.cns[t] == 0) continue;
            const double J = (double)m.terms[t].ngroups, wt = scale;
            const double *wv = cw + qo, *ms = sums + m.nqq + qo, *zs = ms + cp.sumq;
            for (int r = 0; r < q; r++) {
                val -= wt * (-ms[r] * wv[r] + J * 0.5 * wv[r] * wv[r]);
                cdw[qo + r] = wt * ((stl ? zs[r] : ms[r]) - J * wv[r]);
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

extern "C" int svir_cuda_elbo_grad_host(const svir_model *m, const svir_coupling *cp, int ns,
                                        int fullrank, int stl, int S, const double *gpar,
                                        const double *lpar, uint64_t seed, long step,
                                        double *elbo, double *grad, char *err, size_t errlen)
{
    svir_cuda_data *d = NULL;
    const ptrdiff_t D = m->D, nz = m->nz, nloc = m->nloc;
    const ptrdiff_t ngp = fullrank ? D + D * (D + 1) / 2 : 2 * D;
    const int p = m->p, nt = m->nterms;
    int sumq = 0, nb = 1, st = 3;
    svir_model md = *m;
    svir_coupling cd;
    svir_globals g;
    dev_locals L;
    uint32_t key[2];
    double scal_h[3] = {0.0, 0.0, 0.0};
    /* device buffers */
    svir_term *d_terms = NULL;
    int *d_pt = NULL, *d_cns = NULL, *d_coff = NULL, *d_qoff = NULL, *d_cS = NULL;
    double *d_pdf = NULL, *d_ploc = NULL, *d_pscale = NULL, *d_ca = NULL, *d_cK = NULL,
           *d_comega = NULL, *d_cref = NULL;
    double *d_gpar = NULL, *d_lpar = NULL, *d_eps = NULL, *d_theta = NULL, *d_sd = NULL,
           *d_L = NULL, *d_A = NULL, *d_cu = NULL, *d_cw = NULL, *d_gtheta = NULL, *d_ws = NULL,
           *d_scal = NULL, *d_noise = NULL, *d_z = NULL, *d_ed = NULL, *d_ggrad = NULL,
           *d_lgrad = NULL, *d_part = NULL, *d_sums = NULL, *d_cds = NULL, *d_cdw = NULL,
           *d_dA = NULL;
    std::vector<svir_term> terms((size_t)(nt > 0 ? nt : 1));
    memset(&cd, 0, sizeof cd);
    nb = make_locals(m, &L, err, errlen);
    if (!nb) return 1;
    for (int t = 0; t < nt; t++) {
        sumq += m->terms[t].q;
        terms[(size_t)t] = m->terms[t];
        terms[(size_t)t].group = NULL;
        terms[(size_t)t].Z = NULL;
        terms[(size_t)t].xmap = NULL;
        terms[(size_t)t].nobs = NULL;
    }
    if (svir_cuda_data_new(m, &d, err, errlen)) return 3;
    /* the model's global part on the device */
    CK(upload(&d_terms, terms.data(), (size_t)nt));
    CK(upload(&d_pt, m->prior_type, (size_t)D));
    CK(upload(&d_pdf, m->prior_df, (size_t)D));
    CK(upload(&d_ploc, m->prior_loc, (size_t)D));
    CK(upload(&d_pscale, m->prior_scale, (size_t)D));
    md.y = md.trials = md.offset = md.X = NULL;
    md.terms = d_terms;
    md.prior_type = d_pt;
    md.prior_df = d_pdf;
    md.prior_loc = d_ploc;
    md.prior_scale = d_pscale;
    /* the coupled guide's constants */
    cd.couple = cp->couple;
    cd.sumq = cp->sumq;
    CK(upload(&d_cns, cp->cns, (size_t)nt));
    CK(upload(&d_coff, cp->coff, (size_t)nt));
    CK(upload(&d_qoff, cp->qoff, (size_t)nt));
    CK(upload(&d_cS, cp->cS, (size_t)ns));
    CK(upload(&d_ca, cp->ca, (size_t)ns * (size_t)p));
    CK(upload(&d_cK, cp->cK, (size_t)ns * (size_t)p));
    CK(upload(&d_comega, cp->comega, (size_t)ns));
    CK(upload(&d_cref, cp->cref, (size_t)p));
    cd.cns = d_cns;
    cd.coff = d_coff;
    cd.qoff = d_qoff;
    cd.cS = d_cS;
    cd.ca = d_ca;
    cd.cK = d_cK;
    cd.comega = d_comega;
    cd.cref = d_cref;
    /* the variational parameters and work space */
    CK(upload(&d_gpar, gpar, (size_t)ngp));
    CK(upload(&d_lpar, lpar, (size_t)nloc));
    CK(upload<double>(&d_eps, NULL, (size_t)D));
    CK(upload<double>(&d_theta, NULL, (size_t)D));
    CK(upload<double>(&d_sd, NULL, (size_t)sumq));
    CK(upload<double>(&d_L, NULL, (size_t)m->nqq));
    CK(upload<double>(&d_A, NULL, (size_t)m->nqq));
    CK(upload<double>(&d_cu, NULL, (size_t)sumq));
    CK(upload<double>(&d_cw, NULL, (size_t)sumq));
    CK(upload<double>(&d_gtheta, NULL, (size_t)D));
    CK(upload<double>(&d_ws, NULL, (size_t)std::max<ptrdiff_t>(D, (ptrdiff_t)m->qmax * m->qmax)));
    CK(upload(&d_scal, scal_h, 3));
    CK(upload<double>(&d_noise, NULL, (size_t)nz));
    CK(upload<double>(&d_z, NULL, (size_t)nz));
    CK(upload<double>(&d_ed, NULL, (size_t)nz));
    CK(upload<double>(&d_ggrad, NULL, (size_t)ngp));
    CK(upload<double>(&d_lgrad, NULL, (size_t)nloc));
    CK(upload<double>(&d_sums, NULL, (size_t)m->nqq + 2 * (size_t)sumq));
    CK(upload<double>(&d_cds, NULL, (size_t)ns));
    CK(upload<double>(&d_cdw, NULL, (size_t)sumq));
    CK(upload<double>(&d_dA, NULL, (size_t)m->nqq));
    g.beta = NULL;
    g.sd = d_sd;
    g.L = d_L;
    g.A = d_A;
    g.sigma = g.phi = 1.0;
    CK(upload<double>(&d_part, NULL, part_size(m, nb)));
    k_zero<<<64, 256>>>(d_ggrad, ngp);
    CK(cudaGetLastError());
    svir_philox_key(seed, key);
    for (int s = 0; s < S; s++) {
        const double invS = 1.0 / S, scale = 1.0;
        k_global_fwd<<<1, 1>>>(md, cd, fullrank, d_gpar, key[0], key[1], (uint64_t)step,
                               (uint64_t)s * (uint64_t)D, d_eps, d_theta, g, d->beta, d_cu, d_cw,
                               d->aux, d_gtheta, d_ws, d_scal);
        CK(cudaGetLastError());
        if (nz > 0) {
            /* the local noise of particle s: normals s nz .. s nz + nz - 1 */
            const uint64_t first = (uint64_t)s * (uint64_t)nz;
            const uint64_t pair0 = first >> 1, pair1 = (first + (uint64_t)nz - 1) >> 1;
            const ptrdiff_t npairs = (ptrdiff_t)(pair1 - pair0 + 1);
            k_normals<<<(int)std::min<ptrdiff_t>((npairs + 255) / 256, 4096), 256>>>(
                key[0], key[1], SVIR_STREAM_LOCAL, (uint64_t)step, first, nz, pair0, npairs, d_noise);
            CK(cudaGetLastError());
        }
        k_local_draw<<<nb, SVIR_CUDA_BLOCK>>>(L, d_lpar, d_A, d_noise, d_z, d->b, d_ed, d_part);
        CK(cudaGetLastError());
        if (launch_obs(d)) {
            snprintf(err, errlen, "the CUDA backend has no kernel for family %d with link %d",
                     m->family, m->link);
            st = 1;
            goto fail;
        }
        CK(cudaGetLastError());
        k_local_back<<<nb, SVIR_CUDA_BLOCK>>>(L, d_lpar, d_A, d->G, cd.couple ? d_cw : NULL,
                                              d_noise, d_z, d_ed, scale, invS, stl, s == 0,
                                              s == S - 1, d_lgrad, d_part);
        CK(cudaGetLastError());
        if (s == S - 1) {
            k_reduce_partials<<<1, 64>>>(d_part, nb, 1, d_scal + 2);
            CK(cudaGetLastError());
        }
        CK(launch_term_sums(m, L, sumq, d_lpar, d->G, d_z, scale, d_part, d_sums));
        k_global_back<<<1, 1>>>(md, cd, ns, fullrank, stl, scale, invS, d_gpar, d_eps, d_theta, g,
                                d_cw, d->out, d_sums, d_gtheta, d_cds, d_cdw, d_dA, d_ggrad, d_ws,
                                d_scal);
        CK(cudaGetLastError());
    }
    k_global_end<<<1, 1>>>(md, fullrank, stl, d_gpar, d_ggrad, d_scal);
    CK(cudaGetLastError());
    CK(cudaMemcpy(scal_h, d_scal, sizeof scal_h, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(grad, d_ggrad, sizeof(double) * (size_t)ngp, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(grad + ngp, d_lgrad, sizeof(double) * (size_t)nloc, cudaMemcpyDeviceToHost));
    *elbo = scal_h[1];
    st = 0;
fail:
    cudaFree(d_terms); cudaFree(d_pt); cudaFree(d_pdf); cudaFree(d_ploc); cudaFree(d_pscale);
    cudaFree(d_cns); cudaFree(d_coff); cudaFree(d_qoff); cudaFree(d_cS); cudaFree(d_ca);
    cudaFree(d_cK); cudaFree(d_comega); cudaFree(d_cref); cudaFree(d_gpar); cudaFree(d_lpar);
    cudaFree(d_eps); cudaFree(d_theta); cudaFree(d_sd); cudaFree(d_L); cudaFree(d_A);
    cudaFree(d_cu); cudaFree(d_cw); cudaFree(d_gtheta); cudaFree(d_ws); cudaFree(d_scal);
    cudaFree(d_noise); cudaFree(d_z); cudaFree(d_ed); cudaFree(d_ggrad); cudaFree(d_lgrad);
    cudaFree(d_part); cudaFree(d_sums); cudaFree(d_cds); cudaFree(d_cdw); cudaFree(d_dA);
    svir_cuda_data_free(d);
    (void)cudaGetLastError();
    return st;
}
