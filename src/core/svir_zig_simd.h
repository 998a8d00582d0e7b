/* The ziggurat's normals (svir_zig.h) from 4 (AVX2) or 8 (AVX-512)
 * xoshiro256++ generators at once, one in each lane of a vector register:
 * the same numbers as svir_zig_normal's from each generator (a lane whose
 * fast test fails is finished by svir_zig_from), n from each into column j
 * of e (leading dimension ld). x86-64 with GCC or clang only
 * (SVIR_ZIG_SIMD defined), compiled for those instruction sets by target
 * attributes: the caller checks the machine (__builtin_cpu_supports). The
 * networks' noise (src/models/bnn/bnn_model.c) and bench/normals.c's
 * timings. No R API. */
#ifndef SVIR_ZIG_SIMD_H
#define SVIR_ZIG_SIMD_H

#include "core/svir_zig.h"

#if defined(__GNUC__) && defined(__x86_64__) && defined(__SSE2__)
#define SVIR_ZIG_SIMD 1
#include <immintrin.h>

/* no FMA: each operation rounds as the scalar code's (the one product
 * and difference of the uniform are exact anyway) */
#define SVIR_ZIG_A512 __attribute__((target("avx512f,avx512dq,avx512vl")))

/* Four generators in the lanes of AVX2 registers: xoshiro256++'s step,
 * and the ziggurat's fast test (layer from the low byte; the top 53 bits made a double exactly in two parts, as the
 * scalar cast does); a lane that misses goes on in svir_zig_from with its
 * generator, so each lane's numbers are svir_zig_normal's. No FMA here:
 * every operation rounds as the scalar code's. */
__attribute__((target("avx2"))) static inline void svir_zig4_avx2(const svir_zig *z, svir_xoshiro g[4],
                                                          ptrdiff_t n, double *e, ptrdiff_t ld)
{
    uint64_t S[4][4], bw[4];
    double xs[4];
    for (int k = 0; k < 4; k++)
        for (int j = 0; j < 4; j++) S[k][j] = g[j].s[k];
    __m256i s0 = _mm256_loadu_si256((const __m256i *)S[0]), s1 = _mm256_loadu_si256((const __m256i *)S[1]);
    __m256i s2 = _mm256_loadu_si256((const __m256i *)S[2]), s3 = _mm256_loadu_si256((const __m256i *)S[3]);
    const __m256i m8 = _mm256_set1_epi64x(0xff), m21 = _mm256_set1_epi64x(0x1fffff);
    const __m256i magic = _mm256_set1_epi64x(0x4330000000000000);
    const __m256d two52 = _mm256_set1_pd(0x1p52), two21 = _mm256_set1_pd(0x1p21);
    const __m256d sc = _mm256_set1_pd(0x1p-52), one = _mm256_set1_pd(1.0), sign = _mm256_set1_pd(-0.0);
    for (ptrdiff_t r = 0; r < n; r++) {
        const __m256i sum = _mm256_add_epi64(s0, s3);
        const __m256i b =
            _mm256_add_epi64(_mm256_or_si256(_mm256_slli_epi64(sum, 23), _mm256_srli_epi64(sum, 41)), s0);
        const __m256i t = _mm256_slli_epi64(s1, 17);
        s2 = _mm256_xor_si256(s2, s0);
        s3 = _mm256_xor_si256(s3, s1);
        s1 = _mm256_xor_si256(s1, s2);
        s0 = _mm256_xor_si256(s0, s3);
        s2 = _mm256_xor_si256(s2, t);
        s3 = _mm256_or_si256(_mm256_slli_epi64(s3, 45), _mm256_srli_epi64(s3, 19));
        /* the layers' edges by scalar loads (AMD's gathers are slower) */
        uint64_t iv[4];
        _mm256_storeu_si256((__m256i *)iv, _mm256_and_si256(b, m8));
        const __m256d xi = _mm256_set_pd(z->x[iv[3]], z->x[iv[2]], z->x[iv[1]], z->x[iv[0]]);
        const __m256d xi1 = _mm256_set_pd(z->x[iv[3] + 1], z->x[iv[2] + 1], z->x[iv[1] + 1], z->x[iv[0] + 1]);
        const __m256i nn = _mm256_srli_epi64(b, 11);
        const __m256d hi = _mm256_sub_pd(_mm256_castsi256_pd(_mm256_or_si256(_mm256_srli_epi64(nn, 21), magic)), two52);
        const __m256d lo = _mm256_sub_pd(_mm256_castsi256_pd(_mm256_or_si256(_mm256_and_si256(nn, m21), magic)), two52);
        const __m256d u = _mm256_sub_pd(_mm256_mul_pd(_mm256_add_pd(_mm256_mul_pd(hi, two21), lo), sc), one);
        const __m256d x = _mm256_mul_pd(u, xi);
        const int ok = _mm256_movemask_pd(_mm256_cmp_pd(_mm256_andnot_pd(sign, x), xi1, _CMP_LT_OQ));
        _mm256_storeu_pd(xs, x);
        if (ok == 15) {
            e[r] = xs[0];
            e[ld + r] = xs[1];
            e[2 * ld + r] = xs[2];
            e[3 * ld + r] = xs[3];
            continue;
        }
        _mm256_storeu_si256((__m256i *)S[0], s0);
        _mm256_storeu_si256((__m256i *)S[1], s1);
        _mm256_storeu_si256((__m256i *)S[2], s2);
        _mm256_storeu_si256((__m256i *)S[3], s3);
        _mm256_storeu_si256((__m256i *)bw, b);
        for (int j = 0; j < 4; j++) {
            if (ok >> j & 1) {
                e[j * ld + r] = xs[j];
                continue;
            }
            svir_xoshiro gj = {{S[0][j], S[1][j], S[2][j], S[3][j]}};
            e[j * ld + r] = svir_zig_from(z, &gj, bw[j]);
            for (int k = 0; k < 4; k++) S[k][j] = gj.s[k];
        }
        s0 = _mm256_loadu_si256((const __m256i *)S[0]);
        s1 = _mm256_loadu_si256((const __m256i *)S[1]);
        s2 = _mm256_loadu_si256((const __m256i *)S[2]);
        s3 = _mm256_loadu_si256((const __m256i *)S[3]);
    }
}

/* Eight generators in an AVX-512 register's lanes, as svir_zig4_avx2 four
 * (the layers' edges by gathers; the words' top 53 bits made a double
 * exactly by one conversion), the rows kept eight at a time and written
 * as eight columns by an 8 x 8 transpose. */
SVIR_ZIG_A512 static inline void svir_zig_put8(__m512d r[8], double *e, ptrdiff_t ld)
{
    __m512d t[8], u[8];
    for (int k = 0; k < 4; k++) {
        t[2 * k] = _mm512_unpacklo_pd(r[2 * k], r[2 * k + 1]);
        t[2 * k + 1] = _mm512_unpackhi_pd(r[2 * k], r[2 * k + 1]);
    }
    /* u[0], u[1]: columns (0, 4), (2, 6) of rows 0-3; u[2], u[3]: (1, 5),
     * (3, 7); u[4 ..]: rows 4-7's */
    for (int h = 0; h < 2; h++) {
        u[4 * h] = _mm512_shuffle_f64x2(t[4 * h], t[4 * h + 2], 0x88);
        u[4 * h + 1] = _mm512_shuffle_f64x2(t[4 * h], t[4 * h + 2], 0xdd);
        u[4 * h + 2] = _mm512_shuffle_f64x2(t[4 * h + 1], t[4 * h + 3], 0x88);
        u[4 * h + 3] = _mm512_shuffle_f64x2(t[4 * h + 1], t[4 * h + 3], 0xdd);
    }
    static const int col[4][2] = {{0, 4}, {2, 6}, {1, 5}, {3, 7}};
    for (int k = 0; k < 4; k++) {
        _mm512_storeu_pd(e + col[k][0] * ld, _mm512_shuffle_f64x2(u[k], u[k + 4], 0x88));
        _mm512_storeu_pd(e + col[k][1] * ld, _mm512_shuffle_f64x2(u[k], u[k + 4], 0xdd));
    }
}

SVIR_ZIG_A512 static inline void svir_zig8_avx512(const svir_zig *z, svir_xoshiro g[8], ptrdiff_t n, double *e,
                                     ptrdiff_t ld)
{
    uint64_t S[4][8], bw[8];
    double xs[8];
    for (int k = 0; k < 4; k++)
        for (int j = 0; j < 8; j++) S[k][j] = g[j].s[k];
    __m512i s0 = _mm512_loadu_si512(S[0]), s1 = _mm512_loadu_si512(S[1]);
    __m512i s2 = _mm512_loadu_si512(S[2]), s3 = _mm512_loadu_si512(S[3]);
    const __m512i m8 = _mm512_set1_epi64(0xff);
    const __m512d sc = _mm512_set1_pd(0x1p-52), one = _mm512_set1_pd(1.0);
    __m512d rows[8];
    for (ptrdiff_t r = 0; r < n; r++) {
        const __m512i b = _mm512_add_epi64(_mm512_rol_epi64(_mm512_add_epi64(s0, s3), 23), s0);
        const __m512i t = _mm512_slli_epi64(s1, 17);
        s2 = _mm512_xor_si512(s2, s0);
        s3 = _mm512_xor_si512(s3, s1);
        s1 = _mm512_xor_si512(s1, s2);
        s0 = _mm512_xor_si512(s0, s3);
        s2 = _mm512_xor_si512(s2, t);
        s3 = _mm512_rol_epi64(s3, 45);
        const __m512i iv = _mm512_and_si512(b, m8);
        const __m512d xi = _mm512_i64gather_pd(iv, z->x, 8), xi1 = _mm512_i64gather_pd(iv, z->x + 1, 8);
        /* (b >> 11) < 2^53 converts exactly; the product by 2^-52 is exact */
        const __m512d u = _mm512_sub_pd(_mm512_mul_pd(_mm512_cvtepi64_pd(_mm512_srli_epi64(b, 11)), sc), one);
        __m512d x = _mm512_mul_pd(u, xi);
        const __mmask8 ok = _mm512_cmp_pd_mask(_mm512_abs_pd(x), xi1, _CMP_LT_OQ);
        if (ok != 0xff) {
            _mm512_storeu_pd(xs, x);
            _mm512_storeu_si512(S[0], s0);
            _mm512_storeu_si512(S[1], s1);
            _mm512_storeu_si512(S[2], s2);
            _mm512_storeu_si512(S[3], s3);
            _mm512_storeu_si512(bw, b);
            for (int j = 0; j < 8; j++) {
                if (ok >> j & 1) continue;
                svir_xoshiro gj = {{S[0][j], S[1][j], S[2][j], S[3][j]}};
                xs[j] = svir_zig_from(z, &gj, bw[j]);
                for (int k = 0; k < 4; k++) S[k][j] = gj.s[k];
            }
            s0 = _mm512_loadu_si512(S[0]);
            s1 = _mm512_loadu_si512(S[1]);
            s2 = _mm512_loadu_si512(S[2]);
            s3 = _mm512_loadu_si512(S[3]);
            x = _mm512_loadu_pd(xs);
        }
        rows[r & 7] = x;
        if ((r & 7) == 7) svir_zig_put8(rows, e + r - 7, ld);
    }
    /* the last rows short of eight */
    for (ptrdiff_t r = n - (n & 7); r < n; r++) {
        _mm512_storeu_pd(xs, rows[r & 7]);
        for (int j = 0; j < 8; j++) e[j * ld + r] = xs[j];
    }
}

#endif /* SVIR_ZIG_SIMD */

#endif
