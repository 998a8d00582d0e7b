/* The CUDA sources' error check: a failed runtime call becomes a one-line
 * message in err ("CUDA error in <call>: <description> (<name>)") and a
 * nonzero return; the sticky last error is cleared. */
#ifndef SVIR_CUDA_ERR_CUH
#define SVIR_CUDA_ERR_CUH

#include <cuda_runtime.h>
#include <stdio.h>

static inline int svir_cuda_failed(cudaError_t e, const char *call, char *err, size_t errlen)
{
    if (e == cudaSuccess) return 0;
    snprintf(err, errlen, "CUDA error in %s: %s (%s)", call, cudaGetErrorString(e),
             cudaGetErrorName(e));
    (void)cudaGetLastError();
    return 1;
}

#endif
