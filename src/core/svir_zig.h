/* Fast standard normals in bulk, for the networks' local reparameterisation
 * (one normal per row and unit a step: millions at width 1024 and batch
 * 4096, where svir_normal_fill's Philox and Box-Muller, about 10 ns a
 * number, were half of a step).
 *
 * A block of numbers (block `idx` of (stream, step)) comes from one
 * xoshiro256++ generator (Blackman and Vigna 2021) whose state is the
 * Philox output of counter (stream, step, idx) expanded by SplitMix64, so
 * that each block is reproducible on its own, whatever thread draws it,
 * and blocks are as independent as Philox's counters. The normals are
 * Marsaglia and Tsang's (2000) ziggurat with 256 layers, exact: each
 * 64-bit word gives the layer (its low 8 bits) and a uniform in [-1, 1)
 * (its top 53 bits), accepted at once in about 99% of draws; the wedges by
 * rejection against the density, the base by Marsaglia's (1964) tail
 * method. About 2-3 ns a number on one core (bench/normals.c;
 * test-philox.R checks the distribution). Compiled for the device too (SVIR_HD, as svir_philox.h),
 * so that the networks' CUDA code draws the CPU's very numbers; the tables
 * are computed on the host (svir_zig_init) and copied to the device, so
 * that they are the same bits. No R API. */
#ifndef SVIR_ZIG_H
#define SVIR_ZIG_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "core/svir_philox.h"

#define SVIR_ZIG_R 3.6541528853610088 /* the base layer's right edge */
#define SVIR_ZIG_V 4.92867323399e-3   /* each layer's area */

/* the layers' right edges x[0] (the base's virtual width) > x[1] = r > ...
 * > x[256] = 0, and f[i] = exp(-x[i]^2 / 2) */
typedef struct {
    double x[257], f[257];
} svir_zig;

SVIR_HD void svir_zig_init(svir_zig *z)
{
    const double r = SVIR_ZIG_R, v = SVIR_ZIG_V;
    z->x[0] = v / exp(-0.5 * r * r);
    z->x[1] = r;
    for (int i = 1; i < 256; i++) {
        if (i < 255) z->x[i + 1] = sqrt(-2.0 * log(v / z->x[i] + exp(-0.5 * z->x[i] * z->x[i])));
        else z->x[i + 1] = 0.0;
    }
    for (int i = 0; i <= 256; i++) z->f[i] = exp(-0.5 * z->x[i] * z->x[i]);
}

typedef struct {
    uint64_t s[4];
} svir_xoshiro;

SVIR_HD uint64_t svir_splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15u);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
    return z ^ (z >> 31);
}

/* block idx of (stream, step): its generator */
SVIR_HD void svir_xoshiro_seed(svir_xoshiro *g, const uint32_t key[2], uint64_t stream,
                                     uint64_t step, uint64_t idx)
{
    uint32_t ctr[4], w[4];
    svir_philox_ctr(stream, step, idx, ctr);
    svir_philox4x32(ctr, key, w);
    uint64_t a = (uint64_t)w[0] | (uint64_t)w[1] << 32, b = (uint64_t)w[2] | (uint64_t)w[3] << 32;
    g->s[0] = svir_splitmix64(&a);
    g->s[1] = svir_splitmix64(&a);
    g->s[2] = svir_splitmix64(&b);
    g->s[3] = svir_splitmix64(&b);
}

SVIR_HD uint64_t svir_rotl64(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

SVIR_HD uint64_t svir_xoshiro_next(svir_xoshiro *g)
{
    uint64_t *s = g->s;
    const uint64_t out = svir_rotl64(s[0] + s[3], 23) + s[0];
    const uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = svir_rotl64(s[3], 45);
    return out;
}

/* uniform on (0, 1], from the top 53 bits */
SVIR_HD double svir_xoshiro_u01(svir_xoshiro *g)
{
    return (double)((svir_xoshiro_next(g) >> 11) + 1) * 0x1.0p-53;
}

/* A normal from its first word b onwards: the fast test, then (about 1%
 * of draws) the wedge or the tail, drawing more words from g. Vector code
 * that ran the fast test on b itself hands the misses here, so that the
 * numbers stay the same. */
SVIR_HD double svir_zig_from(const svir_zig *z, svir_xoshiro *g, uint64_t b)
{
    for (;;) {
        const int i = (int)(b & 0xff);
        const double u = (double)(b >> 11) * 0x1.0p-52 - 1.0; /* [-1, 1), exact */
        const double x = u * z->x[i];
        if (fabs(x) < z->x[i + 1]) return x;
        if (i == 0) {
            /* the tail beyond r: Marsaglia (1964) */
            double t, e;
            do {
                t = -log(svir_xoshiro_u01(g)) / SVIR_ZIG_R;
                e = -log(svir_xoshiro_u01(g));
            } while (2.0 * e < t * t);
            return u < 0.0 ? -(SVIR_ZIG_R + t) : SVIR_ZIG_R + t;
        }
        /* a wedge: a uniform height in the layer against the density */
        if (z->f[i] + (z->f[i + 1] - z->f[i]) * svir_xoshiro_u01(g) < exp(-0.5 * x * x)) return x;
        b = svir_xoshiro_next(g);
    }
}

/* one standard normal */
SVIR_HD double svir_zig_normal(const svir_zig *z, svir_xoshiro *g)
{
    return svir_zig_from(z, g, svir_xoshiro_next(g));
}

/* out[0 .. count) = block idx of (stream, step) */
SVIR_HD void svir_zig_fill(const svir_zig *z, const uint32_t key[2], uint64_t stream,
                                 uint64_t step, uint64_t idx, ptrdiff_t count, double *out)
{
    svir_xoshiro g;
    svir_xoshiro_seed(&g, key, stream, step, idx);
    for (ptrdiff_t k = 0; k < count; k++) out[k] = svir_zig_normal(z, &g);
}

#endif
