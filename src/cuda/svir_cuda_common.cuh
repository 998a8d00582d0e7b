/* What every CUDA source shares: the error check (a failed runtime call
 * becomes a one-line message in err, "CUDA error in <call>: <description>
 * (<name>)", and a nonzero return; the sticky last error is cleared), the
 * upload of a host array, and the deterministic block reduction (a
 * shared-memory tree of a fixed shape, so a given device and launch give
 * the same sums every run). */
#ifndef SVIR_CUDA_COMMON_CUH
#define SVIR_CUDA_COMMON_CUH

#ifdef SVIR_CUDA_EMU
/* the CPU emulation (tools/gpucheck's emu build): everything that differs */
#include "cuda/svir_cuda_emu.cuh"
#else
#include <cuda_runtime.h>
/* SVIR_LAUNCH(grid, block, kernel)(arguments) is kernel<<<grid, block>>>(
 * arguments); the emulation runs the same launch on the CPU */
#define SVIR_LAUNCH(g, b, ...) __VA_ARGS__<<<g, b>>>
/* SVIR_SHARED(double, sh, [n]) is __shared__ double sh[n]; the emulation
 * gives each block its own, uninitialised, copy */
#define SVIR_SHARED(T, name, dims) __shared__ T name dims
#endif
#include <stdio.h>

static inline int svir_cuda_failed(cudaError_t e, const char *call, char *err, size_t errlen)
{
    if (e == cudaSuccess) return 0;
    snprintf(err, errlen, "CUDA error in %s: %s (%s)", call, cudaGetErrorString(e),
             cudaGetErrorName(e));
    (void)cudaGetLastError();
    return 1;
}

/* in a function with err and errlen that returns a status: return 3 when
 * a runtime call (PCK) or the last kernel launch (KCK) failed */
#define PCK(call)                                                                       \
    do {                                                                                \
        if (svir_cuda_failed((call), #call, err, errlen)) return 3;                     \
    } while (0)
#define KCK(name)                                                                       \
    do {                                                                                \
        if (svir_cuda_failed(cudaGetLastError(), name, err, errlen)) return 3;          \
    } while (0)

/* *dst = a new device array of count (at least one) T, a copy of src
 * [count] when src is given */
template <typename T>
static inline cudaError_t svir_cuda_upload(T **dst, const T *src, size_t count)
{
    cudaError_t e = cudaMalloc((void **)dst, sizeof(T) * (count > 0 ? count : 1));
    if (e != cudaSuccess || count == 0 || !src) return e;
    return cudaMemcpy(*dst, src, sizeof(T) * count, cudaMemcpyHostToDevice);
}

/* The NV sums over a block of NT threads (NT a power of two), in a fixed
 * tree; every thread gets them. sh: NV * NT doubles of shared memory. */
template <int NV, int NT>
__device__ __forceinline__ void svir_block_sums(double *sh, double *v)
{
    const int t = threadIdx.x;
#pragma unroll
    for (int c = 0; c < NV; c++) sh[c * NT + t] = v[c];
    __syncthreads();
    for (int s = NT / 2; s > 0; s >>= 1) {
        if (t < s) {
#pragma unroll
            for (int c = 0; c < NV; c++) sh[c * NT + t] += sh[c * NT + t + s];
        }
        __syncthreads();
    }
#pragma unroll
    for (int c = 0; c < NV; c++) v[c] = sh[c * NT];
    __syncthreads();
}

#endif
