/* Philox4x32-10 counter-based RNG (Salmon et al. 2011, "Parallel random
 * numbers: as easy as 1, 2, 3"), header only, usable from C99 and CUDA.
 *
 * The bit stream matches Random123's philox4x32 with 10 rounds exactly (it is
 * tested against Random123's kat_vectors), so the same seed gives the same
 * uniforms on every backend and for any thread count. Normals go through
 * Box-Muller with svir's own log and sin/cos (below) and sqrt, so CPU and GPU
 * agree to the last ulp or so (a compiler's fused multiply-adds can differ).
 *
 * Key and counter layout used by the whole package
 * ------------------------------------------------
 *   key[0] = low 32 bits of the 64-bit seed, key[1] = high 32 bits
 *   ctr[0] = low 32 bits of (index / 2)      } a 63-bit element index;
 *   ctr[1] = high 32 bits of (index / 2)     } one Philox call gives 2 values
 *   ctr[2] = step (low 32 bits): optimisation step, draw number, ...
 *   ctr[3] = stream id (SVIR_STREAM_*), so that the draws of different
 *            purposes never share a counter
 * One Philox call yields 4 words = two 53-bit uniforms (words 0,1 and 2,3) =
 * one Box-Muller pair. Element `index` of a (stream, step) takes the first
 * (index even) or second (index odd) value of the call at index / 2, so
 * element i never depends on how many elements were drawn before it, nor on
 * which thread drew it.
 *
 * Minibatches come from a keyed bijection of [0, n) (svir_perm_index): the
 * r-th unit of a pass is svir_perm_index(r, n, key, pass); see there. */
#ifndef SVIR_PHILOX_H
#define SVIR_PHILOX_H

#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <string.h>

#ifndef SVIR_HD
#ifdef __CUDACC__
#define SVIR_HD __host__ __device__ static inline
#else
#define SVIR_HD static inline
#endif
#endif

/* The registry of stream ids (ctr[3]): every use of the generator in the
 * package draws from one of these, so no two purposes share counters. */
#define SVIR_STREAM_GLOBAL 1      /* noise of the global block, per step (SVI); the
                                   * globals' draws per iteration (QEM) */
#define SVIR_STREAM_LOCAL 2       /* noise of the local (per-group) block; the groups'
                                   * draws per iteration (QEM) */
#define SVIR_STREAM_DRAWS 3       /* posterior draws of the globals */
#define SVIR_STREAM_DRAWS_LOCAL 4 /* posterior draws of the locals */
#define SVIR_STREAM_BATCH 5       /* reserved: minibatches use svir_perm_index's rounds */
#define SVIR_STREAM_INIT 6        /* reserved: initial values */
#define SVIR_STREAM_LAPLACE 7     /* GLMM method "laplace": a draw's proposal noise
                                   * (step = draw number) */
#define SVIR_STREAM_LAPLACE_INT 8 /* the same: the integrated term's rejection
                                   * sampler (step = draw, pair = obs * 64 + try) */
#define SVIR_STREAM_PLN_FACTORS 11 /* PLN QEM: the rows' factors u_i */
#define SVIR_STREAM_PLN_ENTRIES 12 /* PLN QEM: the entries' effects e_ij */
#define SVIR_STREAM_PLN_MCMC 13   /* PLN MCMC (pln_gibbs.c): normals, step = iteration */
#define SVIR_STREAM_PLN_MCMC_U 14 /* the same: uniforms */
#define SVIR_STREAM_BNN_VALID 15  /* networks: the held-out rows' noise, step = chunk */
#define SVIR_STREAM_BNN_PARTS 16  /* the same for the training rows' expected log-likelihood */
#define SVIR_STREAM_BNN_KL 17     /* networks: log sigma's draws for its KL */

#define SVIR_PHILOX_M0 0xD2511F53u
#define SVIR_PHILOX_M1 0xCD9E8D57u
#define SVIR_PHILOX_W0 0x9E3779B9u
#define SVIR_PHILOX_W1 0xBB67AE85u

SVIR_HD void svir_philox_key(uint64_t seed, uint32_t key[2])
{
    key[0] = (uint32_t)seed;
    key[1] = (uint32_t)(seed >> 32);
}

SVIR_HD void svir_philox_round(uint32_t x[4], const uint32_t k[2])
{
#ifdef __CUDA_ARCH__
    const uint32_t hi0 = __umulhi(SVIR_PHILOX_M0, x[0]), lo0 = SVIR_PHILOX_M0 * x[0];
    const uint32_t hi1 = __umulhi(SVIR_PHILOX_M1, x[2]), lo1 = SVIR_PHILOX_M1 * x[2];
#else
    const uint64_t p0 = (uint64_t)SVIR_PHILOX_M0 * x[0];
    const uint64_t p1 = (uint64_t)SVIR_PHILOX_M1 * x[2];
    const uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
    const uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
#endif
    const uint32_t y0 = hi1 ^ x[1] ^ k[0];
    const uint32_t y2 = hi0 ^ x[3] ^ k[1];
    x[0] = y0;
    x[1] = lo1;
    x[2] = y2;
    x[3] = lo0;
}

/* Philox4x32 with 10 rounds: out = philox(ctr, key). out may alias ctr. */
SVIR_HD void svir_philox4x32(const uint32_t ctr[4], const uint32_t key[2],
                             uint32_t out[4])
{
    uint32_t x[4] = {ctr[0], ctr[1], ctr[2], ctr[3]};
    uint32_t k[2] = {key[0], key[1]};
    /* unrolled: the round loop's counter and branch cost as much as a round */
#if defined(__CUDACC__)
#pragma unroll
#elif defined(__GNUC__)
#pragma GCC unroll 10
#endif
    for (int r = 0; r < 10; r++) {
        if (r > 0) {
            k[0] += SVIR_PHILOX_W0;
            k[1] += SVIR_PHILOX_W1;
        }
        svir_philox_round(x, k);
    }
    out[0] = x[0];
    out[1] = x[1];
    out[2] = x[2];
    out[3] = x[3];
}

/* Uniform on the open interval (0, 1) from 64 random bits (hi, lo): the odd
 * multiples of 2^-53, {1, 3, ..., 2^53 - 1} / 2^53, all equally likely
 * (Random123's u01fixedpt_open_open_64_double, "P = 53"; a grid of 2^53
 * points centred in (0, 1) is not representable next to 1, so the top 52
 * bits pick one of 2^52 cells and the value is its centre). Every value is an exact
 * double, never 0 nor 1, and u and 1 - u are equally likely, so log(u) and
 * log1p(-u) are both finite. */
SVIR_HD double svir_u01_53(uint32_t hi, uint32_t lo)
{
    const uint64_t b = (((uint64_t)hi << 32) | lo) >> 12; /* 52 bits */
    return ((double)b + 0.5) * (1.0 / 4503599627370496.0); /* 2^-52 */
}

SVIR_HD void svir_philox_ctr(uint64_t stream, uint64_t step, uint64_t pair,
                             uint32_t ctr[4])
{
    ctr[0] = (uint32_t)pair;
    ctr[1] = (uint32_t)(pair >> 32);
    ctr[2] = (uint32_t)step;
    ctr[3] = (uint32_t)stream;
}

/* ---- the Box-Muller transform ---------------------------------------------
 * Written out here (fdlibm's polynomials, Sun Microsystems 1993, as in
 * glibc and musl) rather than called from libm: inline, free of branches
 * and of errno, cheaper than the library calls, and the same arithmetic on
 * every backend. On the inputs they get (u in (0, 1), normal numbers) they
 * agree with libm to 1e-15 relative (test-philox.R). */
SVIR_HD uint64_t svir_dbits(double x)
{
#ifdef __CUDA_ARCH__
    return (uint64_t)__double_as_longlong(x);
#else
    union { double d; uint64_t u; } v;
    v.d = x;
    return v.u;
#endif
}

SVIR_HD double svir_bitsd(uint64_t b)
{
#ifdef __CUDA_ARCH__
    return __longlong_as_double((long long)b);
#else
    union { double d; uint64_t u; } v;
    v.u = b;
    return v.d;
#endif
}

/* log(x) for a positive normal x (fdlibm's e_log.c without its special
 * cases): x = 2^k (1 + f), sqrt(2)/2 <= 1 + f < sqrt(2), log(1 + f) from
 * s = f / (2 + f) and a minimax polynomial in s^2. */
SVIR_HD double svir_log_pos(double x)
{
    const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
    const double Lg1 = 6.666666666666735130e-01, Lg2 = 3.999999999940941908e-01,
                 Lg3 = 2.857142874366239149e-01, Lg4 = 2.222219843214978396e-01,
                 Lg5 = 1.818357216161805012e-01, Lg6 = 1.531383769920937332e-01,
                 Lg7 = 1.479819860511658591e-01;
    const uint64_t b = svir_dbits(x);
    const uint32_t hx = (uint32_t)(b >> 32) & 0x000fffffu;
    /* i = 0x100000 when the mantissa is >= sqrt(2): then use (1 + f) / 2 */
    const uint32_t i = (hx + 0x95f64u) & 0x100000u;
    const int k = (int)(b >> 52) - 1023 + (int)(i >> 20);
    const double m = svir_bitsd(((uint64_t)(hx | (i ^ 0x3ff00000u)) << 32) | (b & 0xffffffffu));
    const double f = m - 1.0, s = f / (2.0 + f), z = s * s, w = z * z;
    const double t1 = w * (Lg2 + w * (Lg4 + w * Lg6));
    const double t2 = z * (Lg1 + w * (Lg3 + w * (Lg5 + w * Lg7)));
    const double R = t2 + t1, hfsq = 0.5 * f * f, dk = (double)k;
    return dk * ln2_hi - ((hfsq - (s * (hfsq + R) + dk * ln2_lo)) - f);
}

/* cos(2 pi u) and sin(2 pi u) for u in [0, 1]: u = q / 4 + t exactly, with
 * |t| <= 1/8, so the angle a = 2 pi t lies in [-pi/4, pi/4], where fdlibm's
 * kernels k_sin.c / k_cos.c apply; the quadrant q rotates the pair. */
SVIR_HD void svir_sincos_2pi(double u, double *c_out, double *s_out)
{
    const double S1 = -1.66666666666666324348e-01, S2 = 8.33333333332248946124e-03,
                 S3 = -1.98412698298579493134e-04, S4 = 2.75573137070700676789e-06,
                 S5 = -2.50507602534068634195e-08, S6 = 1.58969099521155010221e-10;
    const double C1 = 4.16666666666666019037e-02, C2 = -1.38888888888741095749e-03,
                 C3 = 2.48015872894767294178e-05, C4 = -2.75573143513906633035e-07,
                 C5 = 2.08757232129817482790e-09, C6 = -1.13596475577881948265e-11;
    const int q = (int)(4.0 * u + 0.5);          /* nearest quarter turn, 0..4 */
    const double t = u - 0.25 * (double)q;        /* exact */
    const double a = 6.283185307179586476925 * t; /* |a| <= pi/4 */
    const double z = a * a;
    /* sin(a) */
    const double v = z * a, rs = S2 + z * (S3 + z * (S4 + z * (S5 + z * S6)));
    const double sa = a + v * (S1 + z * rs);
    /* cos(a): 1 - z/2 + z^2 r, with qx taken out of 1 - z/2 exactly when
     * |a| >= 0.3 (fdlibm's way of keeping the subtraction accurate) */
    const double rc = z * (C1 + z * (C2 + z * (C3 + z * (C4 + z * (C5 + z * C6)))));
    /* selections by bit masks, not branches */
    const uint64_t ia = (svir_dbits(a) >> 32) & 0x7fffffffu;
    const uint64_t q4 = (uint64_t)(ia - 0x00200000u) << 32;            /* |a| / 4, short */
    const uint64_t big = 0 - (uint64_t)(ia > 0x3fe90000u);               /* |a| > 0.78125 */
    const uint64_t mid = 0 - (uint64_t)(ia >= 0x3FD33333u);              /* |a| >= 0.3 */
    const uint64_t qb = ((big & svir_dbits(0.28125)) | (~big & q4)) & mid; /* 0 below 0.3 */
    const double qx = svir_bitsd(qb);
    const double ca = (1.0 - qx) - ((0.5 * z - qx) - z * rc);
    /* rotate by q quarter turns: swap on odd q, then the signs */
    const uint64_t odd = 0 - (uint64_t)(q & 1);
    const uint64_t bs = svir_dbits(sa), bc = svir_dbits(ca);
    const uint64_t c = (odd & bs) | (~odd & bc), s = (odd & bc) | (~odd & bs);
    *c_out = svir_bitsd(c ^ ((uint64_t)(((q + 1) >> 1) & 1) << 63));
    *s_out = svir_bitsd(s ^ ((uint64_t)((q >> 1) & 1) << 63));
}

/* The two normals of one Box-Muller pair from its two uniforms. */
SVIR_HD void svir_box_muller(double u1, double u2, double *z0, double *z1)
{
    double c, s;
    const double r = sqrt(-2.0 * svir_log_pos(u1));
    svir_sincos_2pi(u2, &c, &s);
    *z0 = r * c;
    *z1 = r * s;
}

/* ---- two Box-Muller pairs at once -----------------------------------------
 * svir_box_muller on two pairs in GCC/Clang vector types (SSE2 registers): the same
 * operations in the same order, lane by lane, so every value is the scalar
 * one bit for bit (test-philox.R checks svir_normal_fill against
 * svir_normal). Where the scalar code needs an integer compare or an
 * int <-> double conversion that SSE2 lacks, the vector code gets the same
 * value another way: the exponent and the quarter turn q go through the
 * 2^52 trick (small integers are exact there), and |a| against a bound on
 * its high word becomes a compare of doubles (for positive doubles the bit
 * patterns order as the values do). Only where no fused multiply-add can be
 * formed (no __FMA__), which would break the bit-for-bit match. */
#if defined(__GNUC__) && defined(__SSE2__) && !defined(__FMA__) && !defined(__CUDACC__)
#define SVIR_BM_VEC 1
#include <emmintrin.h>
typedef double svir_v2d __attribute__((vector_size(16)));
typedef uint64_t svir_v2u __attribute__((vector_size(16)));

static inline svir_v2d svir_v2_splat(double x)
{
    const svir_v2d v = {x, x};
    return v;
}

static inline svir_v2d svir_v2_sqrt(svir_v2d x)
{
    return (svir_v2d)_mm_sqrt_pd((__m128d)x);
}

/* svir_log_pos, lane by lane */
static inline svir_v2d svir_log_pos_v2(svir_v2d x)
{
    const svir_v2u b = (svir_v2u)x;
    const svir_v2u hx = (b >> 32) & 0x000fffffu;
    const svir_v2u i = (hx + 0x95f64u) & 0x100000u;
    /* k = e - 1023 + i / 2^20 as a double: e (the biased exponent, 0..2047)
     * through 2^52 + e, exact */
    const svir_v2d two52 = svir_v2_splat(4503599627370496.0);
    const svir_v2d de = (svir_v2d)((b >> 52) | 0x4330000000000000u) - two52;
    const svir_v2d di = (svir_v2d)((i >> 20) | 0x4330000000000000u) - two52;
    const svir_v2d dk = (de - 1023.0) + di;
    const svir_v2d m = (svir_v2d)(((hx | (i ^ 0x3ff00000u)) << 32) | (b & 0xffffffffu));
    const svir_v2d f = m - 1.0, s = f / (2.0 + f), z = s * s, w = z * z;
    const svir_v2d t1 = w * (3.999999999940941908e-01 +
                             w * (2.222219843214978396e-01 + w * 1.531383769920937332e-01));
    const svir_v2d t2 = z * (6.666666666666735130e-01 +
                             w * (2.857142874366239149e-01 +
                                  w * (1.818357216161805012e-01 + w * 1.479819860511658591e-01)));
    const svir_v2d R = t2 + t1, hfsq = 0.5 * f * f;
    return dk * 6.93147180369123816490e-01 -
        ((hfsq - (s * (hfsq + R) + dk * 1.90821492927058770002e-10)) - f);
}

/* svir_sincos_2pi, lane by lane */
static inline void svir_sincos_2pi_v2(svir_v2d u, svir_v2d *c_out, svir_v2d *s_out)
{
    const svir_v2d two52 = svir_v2_splat(4503599627370496.0);
    /* q = (int)(4u + 0.5), 0..4: round 4u + 0.5 to an integer through 2^52
     * (to nearest), then one down where that went above (truncation) */
    const svir_v2d h = 4.0 * u + 0.5;
    const svir_v2d rn = (h + two52) - two52;
    const svir_v2d dq = rn + (svir_v2d)((svir_v2u)(rn > h) & (svir_v2u)svir_v2_splat(-1.0));
    const svir_v2u q = (svir_v2u)(dq + two52) & 7u;
    const svir_v2d t = u - 0.25 * dq;
    const svir_v2d a = 6.283185307179586476925 * t;
    const svir_v2d z = a * a;
    const svir_v2d v = z * a,
                   rs = 8.33333333332248946124e-03 +
        z * (-1.98412698298579493134e-04 +
             z * (2.75573137070700676789e-06 +
                  z * (-2.50507602534068634195e-08 + z * 1.58969099521155010221e-10)));
    const svir_v2d sa = a + v * (-1.66666666666666324348e-01 + z * rs);
    const svir_v2d rc = z * (4.16666666666666019037e-02 +
                             z * (-1.38888888888741095749e-03 +
                                  z * (2.48015872894767294178e-05 +
                                       z * (-2.75573143513906633035e-07 +
                                            z * (2.08757232129817482790e-09 +
                                                 z * -1.13596475577881948265e-11)))));
    const svir_v2u aa = (svir_v2u)a & 0x7fffffffffffffffu; /* |a| */
    const svir_v2u q4 = (aa & 0xffffffff00000000u) - (0x00200000ull << 32);
    /* ia > 0x3fe90000 and ia >= 0x3FD33333 on the high word of |a| */
    const svir_v2u big = (svir_v2u)((svir_v2d)aa >= svir_v2_splat(svir_bitsd(0x3fe9000100000000ull)));
    const svir_v2u mid = (svir_v2u)((svir_v2d)aa >= svir_v2_splat(svir_bitsd(0x3FD3333300000000ull)));
    const svir_v2u qb = ((big & svir_dbits(0.28125)) | (~big & q4)) & mid;
    const svir_v2d qx = (svir_v2d)qb;
    const svir_v2d ca = (1.0 - qx) - ((0.5 * z - qx) - z * rc);
    const svir_v2u odd = (svir_v2u){0, 0} - (q & 1u);
    const svir_v2u bs = (svir_v2u)sa, bc = (svir_v2u)ca;
    const svir_v2u c = (odd & bs) | (~odd & bc), sn = (odd & bc) | (~odd & bs);
    *c_out = (svir_v2d)(c ^ ((((q + 1u) >> 1) & 1u) << 63));
    *s_out = (svir_v2d)(sn ^ (((q >> 1) & 1u) << 63));
}
#endif

/* Two independent standard normals from one Philox call (Box-Muller on the
 * two uniforms held in words 0,1 and 2,3). */
SVIR_HD void svir_normal2(const uint32_t key[2], const uint32_t ctr[4],
                          double *z0, double *z1)
{
    uint32_t w[4];
    svir_philox4x32(ctr, key, w);
    svir_box_muller(svir_u01_53(w[0], w[1]), svir_u01_53(w[2], w[3]), z0, z1);
}

/* Standard normal number `index` of (stream, step); see the layout above. */
SVIR_HD double svir_normal(const uint32_t key[2], uint64_t stream, uint64_t step,
                           uint64_t index)
{
    uint32_t ctr[4];
    double z0, z1;
    svir_philox_ctr(stream, step, index >> 1, ctr);
    svir_normal2(key, ctr, &z0, &z1);
    return (index & 1) ? z1 : z0;
}

/* out[2j], out[2j + 1] = svir_box_muller(u1[j], u2[j]) for j < np, the
 * same numbers bit for bit; u1 is overwritten. Two pairs at a time in
 * vector registers where SVIR_BM_VEC is set; otherwise in two loops (the log
 * and sin/cos, then the square roots), which keep the pairs independent. */
#define SVIR_NORMAL_BATCH 64
SVIR_HD void svir_box_muller_batch(double *u1, const double *u2, int np, double *out)
{
    double z0[SVIR_NORMAL_BATCH], z1[SVIR_NORMAL_BATCH];
    int j0 = 0;
#ifdef SVIR_BM_VEC
    for (; j0 + 2 <= np; j0 += 2) {
        svir_v2d r, c, sn;
        memcpy(&r, u1 + j0, sizeof r);
        r = svir_v2_sqrt(-2.0 * svir_log_pos_v2(r));
        memcpy(&c, u2 + j0, sizeof c);
        svir_sincos_2pi_v2(c, &c, &sn);
        c *= r;
        sn *= r;
        out[2 * j0] = c[0];
        out[2 * j0 + 1] = sn[0];
        out[2 * j0 + 2] = c[1];
        out[2 * j0 + 3] = sn[1];
    }
#endif
    while (j0 < np) {
        const int nb = np - j0 < SVIR_NORMAL_BATCH ? np - j0 : SVIR_NORMAL_BATCH;
        for (int j = 0; j < nb; j++) {
            u1[j0 + j] = -2.0 * svir_log_pos(u1[j0 + j]);
            svir_sincos_2pi(u2[j0 + j], &z0[j], &z1[j]);
        }
        for (int j = 0; j < nb; j++) {
            const double r = sqrt(u1[j0 + j]);
            out[2 * (j0 + j)] = r * z0[j];
            out[2 * (j0 + j) + 1] = r * z1[j];
        }
        j0 += nb;
    }
}

/* out[k] = svir_normal(key, stream, step, first + k) for k < count, in
 * batches: the Philox calls, then svir_box_muller_batch. */
SVIR_HD void svir_normal_fill(const uint32_t key[2], uint64_t stream, uint64_t step,
                              uint64_t first, ptrdiff_t count, double *out)
{
    uint32_t ctr[4], w[4];
    double u1[SVIR_NORMAL_BATCH], u2[SVIR_NORMAL_BATCH];
    ptrdiff_t k = 0;
    if (count <= 0) return;
    if (first & 1) { /* odd start: second value of a pair */
        out[k++] = svir_normal(key, stream, step, first);
    }
    while (k + 2 <= count) {
        const ptrdiff_t left = (count - k) / 2;
        const int np = left < SVIR_NORMAL_BATCH ? (int)left : SVIR_NORMAL_BATCH;
        const uint64_t pair0 = (first + (uint64_t)k) >> 1;
        for (int j = 0; j < np; j++) {
            svir_philox_ctr(stream, step, pair0 + (uint64_t)j, ctr);
            svir_philox4x32(ctr, key, w);
            u1[j] = svir_u01_53(w[0], w[1]);
            u2[j] = svir_u01_53(w[2], w[3]);
        }
        svir_box_muller_batch(u1, u2, np, out + k);
        k += 2 * (ptrdiff_t)np;
    }
    if (k < count) out[k] = svir_normal(key, stream, step, first + (uint64_t)k);
}

/* Uniform (0, 1) number `index` of (stream, step): words 0,1 of the call at
 * index / 2 for even index, words 2,3 for odd. */
SVIR_HD double svir_uniform(const uint32_t key[2], uint64_t stream, uint64_t step,
                            uint64_t index)
{
    uint32_t ctr[4], w[4];
    svir_philox_ctr(stream, step, index >> 1, ctr);
    svir_philox4x32(ctr, key, w);
    return (index & 1) ? svir_u01_53(w[2], w[3]) : svir_u01_53(w[0], w[1]);
}

/* ---- keyed permutation of [0, n) for minibatches ------------------------
 * A balanced Feistel network over [0, 4^h), 4^h the smallest power of 4 >= n
 * (two halves of h bits), with cycle-walking: apply the network until the
 * value falls in [0, n). A Feistel network is a bijection of [0, 4^h) for any
 * round function, and cycle-walking restricts a bijection of a superset to a
 * bijection of [0, n); since 4^h < 4n, fewer than 4 passes are expected.
 * The round function is a 64-bit finaliser (splitmix64's) of the seed
 * (key), round_key, round number and right half; SVIR_PERM_ROUNDS rounds
 * make the permutation look random for any n. round_key selects one of 2^32
 * permutations for a given key: the engine passes the epoch (pass number
 * over the data), so the r-th unit of pass e is svir_perm_index(r, n, key, e).
 * r should be < n (r >= n is reduced mod n); n <= 1 returns 0. */
#define SVIR_PERM_ROUNDS 6

SVIR_HD uint64_t svir_mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

SVIR_HD uint64_t svir_perm_feistel(uint64_t x, int h, uint64_t rk0)
{
    const uint64_t mask = (h >= 32) ? 0xFFFFFFFFull : ((1ull << h) - 1);
    uint64_t left = (x >> h) & mask, right = x & mask;
    for (int r = 0; r < SVIR_PERM_ROUNDS; r++) {
        const uint64_t f =
            svir_mix64((rk0 + (uint64_t)(r + 1) * 0x9E3779B97F4A7C15ull) ^ right);
        const uint64_t nl = right;
        right = (left ^ f) & mask;
        left = nl;
    }
    return (left << h) | right;
}

SVIR_HD uint64_t svir_perm_index(uint64_t r, uint64_t n, const uint32_t key[2],
                                 uint32_t round_key)
{
    if (n <= 1)
        return 0;
    if (r >= n) /* outside the domain its cycle may never enter [0, n) */
        r %= n;
    int h = 1;
    while (h < 32 && (1ull << (2 * h)) < n)
        h++;
    /* per-permutation constant: seed and round_key, mixed once */
    const uint64_t seed = ((uint64_t)key[1] << 32) | key[0];
    const uint64_t rk0 =
        svir_mix64(seed ^ svir_mix64(((uint64_t)round_key << 8) ^ 0x5851F42D4C957F2Dull));
    uint64_t x = r;
    do {
        x = svir_perm_feistel(x, h, rk0);
    } while (x >= n);
    return x;
}

#endif
