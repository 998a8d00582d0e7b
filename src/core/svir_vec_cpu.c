/* The CPU's vector space for core/svir_lbfgs.c: OpenMP over chunks of
 * VEC_CHUNK doubles, each summed in blocks of VEC_BLOCK (the dots of
 * several vectors share a block's pass, from cache), the chunks' partial
 * sums added in chunk order: the same result for any number of threads.
 * Each chunk asks svir_poll() first: a pass over L-BFGS's pairs at n p =
 * 10^8 moves gigabytes, seconds that Ctrl-C must be able to cut. Once the
 * host asked to stop, the remaining chunks are skipped and the result is
 * meaningless; svir_lbfgs_run() checks svir_interrupt_pending() after
 * every operation. */
#include "core/svir_lbfgs.h"
#include "core/svir_math.h"
#include "core/svir_result.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#define VEC_PFOR _Pragma("omp parallel for num_threads(x->T) schedule(static)")
#define VEC_SIMD _Pragma("omp simd")
#else
#define VEC_PFOR
#define VEC_SIMD
#endif

#define VEC_CHUNK 65536
#define VEC_BLOCK 1024

typedef struct {
    svir_vecspace vs;
    ptrdiff_t n, nch;
    int T;
    double *part;           /* [nch x (SVIR_LBFGS_MAXMEM + 3)] chunks' partial sums */
} vec_cpu;

static double *cpu_alloc(void *ctx)
{
    const vec_cpu *x = ctx;
    return malloc(sizeof(double) * (size_t)(x->n > 0 ? x->n : 1));
}

static void cpu_free(void *ctx, double *v)
{
    (void)ctx;
    free(v);
}

static int cpu_dots(void *ctx, int nv, double *const *vs, const double *g, double *out,
                    svir_err *e)
{
    vec_cpu *x = ctx;
    const ptrdiff_t L = x->n, nch = x->nch;
    double *part = x->part;
    (void)e;
#ifdef _OPENMP
#pragma omp parallel for num_threads(x->T) schedule(static)
#endif
    for (ptrdiff_t c = 0; c < nch; c++) {
        if (svir_poll()) continue; /* the host asked to stop */
        const ptrdiff_t lo = c * VEC_CHUNK, hi = lo + VEC_CHUNK < L ? lo + VEC_CHUNK : L;
        double a[SVIR_LBFGS_MAXMEM] = {0.0};
        for (ptrdiff_t b0 = lo; b0 < hi; b0 += VEC_BLOCK) {
            const ptrdiff_t b1 = b0 + VEC_BLOCK < hi ? b0 + VEC_BLOCK : hi;
            for (int l = 0; l < nv; l++) a[l] += svir_dot4(vs[l] + b0, g + b0, b1 - b0);
        }
        for (int l = 0; l < nv; l++) part[c * SVIR_LBFGS_MAXMEM + l] = a[l];
    }
    for (int l = 0; l < nv; l++) {
        double a = 0.0;
        for (ptrdiff_t c = 0; c < nch; c++) a += part[c * SVIR_LBFGS_MAXMEM + l];
        out[l] = a;
    }
    return 0;
}

static int cpu_direction(void *ctx, double *dir, int nm, const double *cf, double *const *S,
                         const double *g, ptrdiff_t split, double cap_lo, double cap_hi,
                         double *slope, double *big, double *dd, svir_err *e)
{
    vec_cpu *x = ctx;
    const ptrdiff_t L = x->n, nch = x->nch;
    const double ilo = 1.0 / cap_lo, ihi = 1.0 / cap_hi;
    double *part = x->part;
    (void)e;
#ifdef _OPENMP
#pragma omp parallel for num_threads(x->T) schedule(static)
#endif
    for (ptrdiff_t c = 0; c < nch; c++) {
        if (svir_poll()) continue; /* the host asked to stop */
        const ptrdiff_t lo = c * VEC_CHUNK, hi = lo + VEC_CHUNK < L ? lo + VEC_CHUNK : L;
        double sl = 0.0, bg = 0.0, d2 = 0.0;
        for (ptrdiff_t b0 = lo; b0 < hi; b0 += VEC_BLOCK) {
            const ptrdiff_t b1 = b0 + VEC_BLOCK < hi ? b0 + VEC_BLOCK : hi;
            double *restrict dv = dir;
            for (int l = 0; l < nm; l++) {
                const double cl = cf[l], *restrict sv = S[l];
                VEC_SIMD
                for (ptrdiff_t k = b0; k < b1; k++) dv[k] += cl * sv[k];
            }
            for (ptrdiff_t k = b0; k < b1; k++) {
                const double v = -dv[k];
                dv[k] = v;
                sl -= g[k] * v;
                d2 += v * v;
                const double a = k < split ? ilo * fabs(v) : ihi * fabs(v);
                if (a > bg) bg = a;
            }
        }
        part[c * 3] = sl;
        part[c * 3 + 1] = bg;
        part[c * 3 + 2] = d2;
    }
    double s = 0.0, b = 0.0, d = 0.0;
    for (ptrdiff_t c = 0; c < nch; c++) {
        s += part[c * 3];
        if (part[c * 3 + 1] > b) b = part[c * 3 + 1];
        d += part[c * 3 + 2];
    }
    *slope = s;
    *big = b;
    *dd = d;
    return 0;
}

static int cpu_step(void *ctx, double *cand, const double *par, double t, const double *dir,
                    svir_err *e)
{
    vec_cpu *x = ctx;
    const ptrdiff_t L = x->n;
    (void)e;
    const ptrdiff_t nch = x->nch;
    VEC_PFOR
    for (ptrdiff_t c = 0; c < nch; c++) {
        if (svir_poll()) continue; /* the host asked to stop */
        const ptrdiff_t lo = c * VEC_CHUNK, hi = lo + VEC_CHUNK < L ? lo + VEC_CHUNK : L;
        for (ptrdiff_t k = lo; k < hi; k++) cand[k] = par[k] + t * dir[k];
    }
    return 0;
}

static int cpu_ydiff(void *ctx, double *ynew, const double *g, const double *g1, const double *dir,
                     double *yy, double *dg1, svir_err *e)
{
    vec_cpu *x = ctx;
    const ptrdiff_t L = x->n, nch = x->nch;
    double *part = x->part;
    (void)e;
#ifdef _OPENMP
#pragma omp parallel for num_threads(x->T) schedule(static)
#endif
    for (ptrdiff_t c = 0; c < nch; c++) {
        if (svir_poll()) continue; /* the host asked to stop */
        const ptrdiff_t lo = c * VEC_CHUNK, hi = lo + VEC_CHUNK < L ? lo + VEC_CHUNK : L;
        double y2 = 0.0, dg = 0.0;
        for (ptrdiff_t k = lo; k < hi; k++) {
            const double y = g[k] - g1[k];
            ynew[k] = y;
            y2 += y * y;
            dg -= dir[k] * g1[k];
        }
        part[c * 2] = y2;
        part[c * 2 + 1] = dg;
    }
    double a = 0.0, b = 0.0;
    for (ptrdiff_t c = 0; c < nch; c++) {
        a += part[c * 2];
        b += part[c * 2 + 1];
    }
    *yy = a;
    *dg1 = b;
    return 0;
}

static int cpu_scale(void *ctx, double *v, double t, svir_err *e)
{
    vec_cpu *x = ctx;
    const ptrdiff_t L = x->n;
    (void)e;
    const ptrdiff_t nch = x->nch;
    VEC_PFOR
    for (ptrdiff_t c = 0; c < nch; c++) {
        if (svir_poll()) continue; /* the host asked to stop */
        const ptrdiff_t lo = c * VEC_CHUNK, hi = lo + VEC_CHUNK < L ? lo + VEC_CHUNK : L;
        for (ptrdiff_t k = lo; k < hi; k++) v[k] *= t;
    }
    return 0;
}

static int cpu_copy(void *ctx, double *dst, const double *src, svir_err *e)
{
    const vec_cpu *x = ctx;
    (void)e;
    memcpy(dst, src, sizeof(double) * (size_t)x->n);
    return 0;
}

svir_vecspace *svir_vec_cpu_new(ptrdiff_t n, int threads)
{
    vec_cpu *x = calloc(1, sizeof *x);
    if (!x) return NULL;
    x->n = n;
    x->nch = (n + VEC_CHUNK - 1) / VEC_CHUNK;
    x->T = threads > 0 ? threads : 1;
    x->part = malloc(sizeof(double) * (size_t)(x->nch + 1) * (SVIR_LBFGS_MAXMEM + 3));
    if (!x->part) {
        free(x);
        return NULL;
    }
    svir_vecspace *vs = &x->vs;
    vs->ctx = x;
    vs->n = n;
    vs->alloc = cpu_alloc;
    vs->free = cpu_free;
    vs->dots = cpu_dots;
    vs->direction = cpu_direction;
    vs->step = cpu_step;
    vs->ydiff = cpu_ydiff;
    vs->scale = cpu_scale;
    vs->copy = cpu_copy;
    return vs;
}

void svir_vec_cpu_free(svir_vecspace *vs)
{
    if (!vs) return;
    vec_cpu *x = vs->ctx;
    free(x->part);
    free(x);
}
