/* CUDA device query for the backend table (src/svir_backend.c).
 *
 * svir links the CUDA runtime statically; cudart_static loads libcuda (the
 * driver) lazily on the first call, so this file must cope with a machine
 * that has the toolkit's build but no driver or no GPU: every failure is
 * reported in buf and returns 0, never aborts. The query initialises the
 * driver but creates no context (no device memory is taken). */
#include "cuda/svir_cuda_common.cuh"

#include <stdio.h>
#include <string.h>

#ifndef SVIR_CUDA_MIN_CC
#define SVIR_CUDA_MIN_CC 80 /* oldest compute capability compiled for (x10) */
#endif

static void ver_str(int v, char *out, size_t len)
{
    if (v <= 0)
        snprintf(out, len, "none");
    else
        snprintf(out, len, "%d.%d", v / 1000, (v % 1000) / 10);
}

extern "C" int svir_cuda_query(char *buf, size_t len)
{
    int rt = 0, drv = 0, n = 0;
    char rts[32], drvs[32];
    if (len == 0)
        return 0;
    buf[0] = '\0';

    cudaRuntimeGetVersion(&rt);
    /* 0 when no driver is installed; does not fail */
    if (cudaDriverGetVersion(&drv) != cudaSuccess)
        drv = 0;
    ver_str(rt, rts, sizeof rts);
    ver_str(drv, drvs, sizeof drvs);

    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        const char *msg = cudaGetErrorString(e);
        (void)cudaGetLastError(); /* clear, so later calls start clean */
        if (e == cudaErrorInsufficientDriver && drv == 0)
            snprintf(buf, len, "no CUDA driver found: libcuda could not be loaded "
                     "(%s: %s; svir was built with CUDA runtime %s)",
                     cudaGetErrorName(e), msg, rts);
        else if (e == cudaErrorInsufficientDriver)
            snprintf(buf, len, "CUDA driver too old: driver supports CUDA %s, svir was "
                     "built with CUDA runtime %s (%s)", drvs, rts, msg);
        else if (e == cudaErrorNoDevice)
            snprintf(buf, len, "no CUDA device found: %s (driver %s, runtime %s)",
                     msg, drvs, rts);
        else
            snprintf(buf, len, "CUDA error %d: %s (driver %s, runtime %s)",
                     (int)e, msg, drvs, rts);
        return 0;
    }
    if (n < 1) {
        snprintf(buf, len, "no CUDA device found (driver %s, runtime %s)", drvs, rts);
        return 0;
    }

    /* first device this build has code for; an older GPU cannot run it */
    int oldest = -1, oldest_cc = 0;
    for (int d = 0; d < n; d++) {
        cudaDeviceProp p;
        e = cudaGetDeviceProperties(&p, d);
        if (e != cudaSuccess) {
            (void)cudaGetLastError();
            continue;
        }
        const int cc = 10 * p.major + p.minor;
        if (cc >= SVIR_CUDA_MIN_CC && cudaSetDevice(d) == cudaSuccess) {
            /* the device the fits then run on (the current device) */
            snprintf(buf, len,
                     "%s, compute capability %d.%d, %.1f GiB, device %d of %d "
                     "(driver %s, runtime %s)",
                     p.name, p.major, p.minor,
                     (double)p.totalGlobalMem / (1024.0 * 1024.0 * 1024.0), d, n,
                     drvs, rts);
            return 1;
        }
        if (oldest < 0) {
            oldest = d;
            oldest_cc = cc;
        }
    }
    if (oldest >= 0)
        snprintf(buf, len,
                 "no supported CUDA device: device %d has compute capability %d.%d, "
                 "svir was built for %d.%d and newer", oldest, oldest_cc / 10,
                 oldest_cc % 10, SVIR_CUDA_MIN_CC / 10, SVIR_CUDA_MIN_CC % 10);
    else
        snprintf(buf, len, "CUDA error: %s (driver %s, runtime %s)",
                 cudaGetErrorString(e), drvs, rts);
    return 0;
}
