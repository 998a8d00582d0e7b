/* The cost of a standard normal: svir_normal_fill (Philox4x32-10 and
 * Box-Muller, the GLMMs' and PLN's generator) against the networks'
 * ziggurat over Philox-seeded xoshiro256++ blocks: scalar (svir_zig_fill),
 * and 4 (AVX2) or 8 (AVX-512) blocks at once in a register's lanes
 * (core/svir_zig_simd.h, where the machine has them), on one core; 4096 x
 * 1024 normals (the noise of a width-1024 layer at batch 4096) in blocks of
 * 64 rows (a tile of that layer) into a tile's buffer in L1 (Philox and
 * Box-Muller into one 32 MB array), the median of 5 passes, each block's
 * seeding included. Checks that the vector versions give the scalar
 * numbers bit for bit, and the ziggurat's moments (test-philox.R checks
 * its distribution).
 *   cc -O2 -Isrc -o /tmp/normals bench/normals.c -lm && /tmp/normals */
#include "core/svir_zig_simd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

#define ROWS 4096
#define COLS 1024
#define TILE 64

/* every tile's columns, `lanes` blocks at a time (1: scalar), as the
 * networks draw them: block (tile, column) of (stream 3, step), into a
 * tile's buffer of TILE x 8 (in L1, as in a network's step); with h, the
 * numbers' bits hashed in order into *h (for the check, not timed) */
static void fill(const svir_zig *z, int lanes, uint64_t step, double *e, uint64_t *h)
{
    const uint32_t key[2] = {1, 2};
    for (ptrdiff_t t = 0; t < ROWS / TILE; t++)
        for (ptrdiff_t c = 0; c < COLS; c += lanes) {
            svir_xoshiro g[8];
            for (int j = 0; j < lanes; j++)
                svir_xoshiro_seed(&g[j], key, 3, step, (uint64_t)t << 32 | (uint64_t)(c + j));
#ifdef SVIR_ZIG_SIMD
            if (lanes == 8) svir_zig8_avx512(z, g, TILE, e, TILE);
            else if (lanes == 4) svir_zig4_avx2(z, g, TILE, e, TILE);
            else
#endif
                for (ptrdiff_t r = 0; r < TILE; r++) e[r] = svir_zig_normal(z, &g[0]);
            if (h)
                for (ptrdiff_t k = 0; k < TILE * lanes; k++) {
                    uint64_t b;
                    memcpy(&b, &e[k], sizeof b);
                    *h = (*h ^ b) * 0x100000001b3u;
                }
        }
}

int main(void)
{
    const ptrdiff_t N = (ptrdiff_t)ROWS * COLS;
    double *x = malloc(sizeof(double) * (size_t)N), e[TILE * 8];
    double tp[5], tz[3][5];
    if (!x) return 1;
    const uint32_t key[2] = {1, 2};
    svir_zig z;
    svir_zig_init(&z);
    int has[3] = {1, 0, 0}; /* scalar, 4 lanes, 8 lanes */
#ifdef SVIR_ZIG_SIMD
    __builtin_cpu_init();
    has[1] = __builtin_cpu_supports("avx2");
    has[2] = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx512vl");
#endif
    const int lanes[3] = {1, 4, 8};
    for (int r = 0; r < 5; r++) {
        double t = now();
        svir_normal_fill(key, 3, (uint64_t)r, 0, N, x);
        tp[r] = (now() - t) / (double)N * 1e9;
        for (int v = 0; v < 3; v++) {
            if (!has[v]) continue;
            t = now();
            fill(&z, lanes[v], (uint64_t)r, e, NULL);
            tz[v][r] = (now() - t) / (double)N * 1e9;
        }
    }
    /* the same numbers in the same order: a group's columns are
     * consecutive blocks of TILE numbers, as the scalar code draws them
     * column after column, so the hashes over a step agree */
    uint64_t h[3] = {0, 0, 0};
    for (int v = 0; v < 3; v++)
        if (has[v]) fill(&z, lanes[v], 7, e, &h[v]);
    for (int v = 1; v < 3; v++)
        if (has[v] && h[v] != h[0]) {
            printf("the %d-lane ziggurat's numbers differ from the scalar one's\n", lanes[v]);
            return 1;
        }
    qsort(tp, 5, sizeof tp[0], cmp);
    /* the ziggurat's moments over a step's numbers (scalar) */
    double m1 = 0.0, m2 = 0.0, m4 = 0.0;
    for (ptrdiff_t c = 0; c < COLS; c++) svir_zig_fill(&z, key, 3, 9, (uint64_t)c, ROWS, x + c * ROWS);
    for (ptrdiff_t k = 0; k < N; k++) {
        m1 += x[k];
        m2 += x[k] * x[k];
        m4 += x[k] * x[k] * x[k] * x[k];
    }
    printf("ns a normal on one core (median of 5): Philox + Box-Muller %.2f", tp[2]);
    for (int v = 0; v < 3; v++) {
        if (!has[v]) continue;
        qsort(tz[v], 5, sizeof tz[v][0], cmp);
        printf(", ziggurat %s %.2f", v == 0 ? "scalar" : v == 1 ? "4 lanes (AVX2)" : "8 lanes (AVX-512)",
               tz[v][2]);
    }
    printf(" (the vector versions' numbers the scalar's bit for bit); ziggurat's mean %.2e, variance %.4f, "
           "fourth moment %.4f\n", m1 / N, m2 / N, m4 / N);
    free(x);
    return 0;
}
