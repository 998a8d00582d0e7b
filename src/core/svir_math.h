/* Scalar special functions for the engine: thread-safe (no signgam), no R API,
 * and usable from CUDA device code (SVIR_MATH_HD). */
#ifndef SVIR_MATH_H
#define SVIR_MATH_H

#include <math.h>
#include <stddef.h>

#ifdef __CUDACC__
#define SVIR_MATH_HD __host__ __device__ static inline
#else
#define SVIR_MATH_HD static inline
#endif

/* for the hot loops: inlining with constant family, link and term count
 * removes every branch on them from the loop body */
#if defined(__CUDACC__)
#define SVIR_ALWAYS_INLINE __host__ __device__ static __forceinline__
#elif defined(__GNUC__) || defined(__clang__)
#define SVIR_ALWAYS_INLINE static inline __attribute__((always_inline))
#else
#define SVIR_ALWAYS_INLINE static inline
#endif

/* full unrolling of the short loops over terms, so that their per-term
 * state lives in registers */
#if defined(__GNUC__) && !defined(__CUDACC__)
#define SVIR_UNROLL4 _Pragma("GCC unroll 4")
#define SVIR_UNROLL8 _Pragma("GCC unroll 8")
#else
#define SVIR_UNROLL4
#define SVIR_UNROLL8
#endif

/* sets an int flag (to 1) from inside an OpenMP parallel region */
#if defined(_OPENMP) && !defined(__CUDACC__)
#define SVIR_FLAG_SET(f) do { _Pragma("omp atomic write") (f) = 1; } while (0)
#else
#define SVIR_FLAG_SET(f) do { (f) = 1; } while (0)
#endif

/* a streaming loop over independent elements: vectorised under OpenMP even
 * at -O2 (each element's arithmetic, and so the result, is unchanged) */
#if defined(_OPENMP) && !defined(__CUDACC__)
#define SVIR_SIMD _Pragma("omp simd")
#else
#define SVIR_SIMD
#endif

#define SVIR_LOG_SQRT_2PI 0.91893853320467274178
#define SVIR_LOG_2PI 1.83787706640934548356
#define SVIR_LOG2 0.69314718055994530942

/* log Gamma(x) for x > 0: shift to x >= 8, then Stirling with 6 Bernoulli
 * terms (relative error below 1e-15 there). glibc's lgamma writes the global
 * signgam, a data race under OpenMP. */
SVIR_MATH_HD double svir_lgamma(double x)
{
    double shift = 0.0;
    while (x < 8.0) {
        shift -= log(x);
        x += 1.0;
    }
    const double r = 1.0 / x, r2 = r * r;
    const double series =
        r * (1.0 / 12 - r2 * (1.0 / 360 - r2 * (1.0 / 1260 - r2 * (1.0 / 1680 -
        r2 * (1.0 / 1188 - r2 * (691.0 / 360360))))));
    return shift + (x - 0.5) * log(x) - x + SVIR_LOG_SQRT_2PI + series;
}

/* digamma(x) for x > 0, same shift-then-asymptotic scheme. */
SVIR_MATH_HD double svir_digamma(double x)
{
    double shift = 0.0;
    while (x < 8.0) {
        shift -= 1.0 / x;
        x += 1.0;
    }
    const double r = 1.0 / x, r2 = r * r;
    return shift + log(x) - 0.5 * r -
        r2 * (1.0 / 12 - r2 * (1.0 / 120 - r2 * (1.0 / 252 - r2 * (1.0 / 240 -
        r2 * (1.0 / 132)))));
}

/* log(1 + exp(x)) without overflow. */
SVIR_MATH_HD double svir_log1pexp(double x)
{
    return x > 0 ? x + log1p(exp(-x)) : log1p(exp(x));
}

/* log Phi(x), the standard normal log cdf, accurate in both tails. */
SVIR_MATH_HD double svir_log_pnorm(double x)
{
    if (x > -20.0)
        return log(0.5 * erfc(-x * 0.70710678118654752440));
    /* asymptotic series of the Mills ratio for the far lower tail */
    const double x2 = x * x;
    return -0.5 * x2 - SVIR_LOG_SQRT_2PI - log(-x) +
        log1p(-1.0 / x2 + 3.0 / (x2 * x2) - 15.0 / (x2 * x2 * x2));
}

/* phi(x) / Phi(x), the inverse Mills ratio, stable for x -> -inf. */
SVIR_MATH_HD double svir_mills_inv(double x)
{
    if (x > -20.0) {
        const double d = exp(-0.5 * x * x - SVIR_LOG_SQRT_2PI);
        return d / (0.5 * erfc(-x * 0.70710678118654752440));
    }
    const double x2 = x * x;
    return -x / (1.0 - 1.0 / x2 + 3.0 / (x2 * x2) - 15.0 / (x2 * x2 * x2));
}

/* sum_k x[k] y[k] with four interleaved partial sums (a single one waits
 * on the adder's latency at every entry), added in a fixed order: the same
 * result for any caller (the engine's gradients, the Poisson-lognormal
 * L-BFGS) */
SVIR_MATH_HD double svir_dot4(const double *x, const double *y, ptrdiff_t n)
{
    double a0 = 0.0, a1 = 0.0, a2 = 0.0, a3 = 0.0;
    ptrdiff_t k = 0;
    for (; k + 4 <= n; k += 4) {
        a0 += x[k] * y[k];
        a1 += x[k + 1] * y[k + 1];
        a2 += x[k + 2] * y[k + 2];
        a3 += x[k + 3] * y[k + 3];
    }
    for (; k < n; k++) a0 += x[k] * y[k];
    return (a0 + a1) + (a2 + a3);
}

#endif
