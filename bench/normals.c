/* The cost of a standard normal: svir_normal_fill (Philox4x32-10 and
 * Box-Muller, the GLMMs' and PLN's generator) against svir_zig_fill (the
 * networks' ziggurat over Philox-seeded xoshiro256++ blocks), scalar, on
 * one core; 4096 x 1024 normals (the noise of a width-1024 layer at batch
 * 4096), the median of 5 passes, and the ziggurat's moments as a sanity
 * check (test-philox.R checks its distribution).
 *   cc -O2 -Isrc -o /tmp/normals bench/normals.c -lm && /tmp/normals */
#include "core/svir_zig.h"

#include <stdio.h>
#include <stdlib.h>
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

int main(void)
{
    const ptrdiff_t cols = 1024, rows = 4096, N = cols * rows;
    double *x = malloc(sizeof(double) * (size_t)N), tp[5], tz[5];
    if (!x) return 1;
    const uint32_t key[2] = {1, 2};
    svir_zig z;
    svir_zig_init(&z);
    for (int r = 0; r < 5; r++) {
        double t = now();
        svir_normal_fill(key, 3, (uint64_t)r, 0, N, x);
        tp[r] = (now() - t) / (double)N * 1e9;
        t = now();
        for (ptrdiff_t c = 0; c < cols; c++) svir_zig_fill(&z, key, 3, (uint64_t)r, (uint64_t)c, rows, x + c * rows);
        tz[r] = (now() - t) / (double)N * 1e9;
    }
    qsort(tp, 5, sizeof tp[0], cmp);
    qsort(tz, 5, sizeof tz[0], cmp);
    double m1 = 0.0, m2 = 0.0, m4 = 0.0;
    for (ptrdiff_t k = 0; k < N; k++) {
        m1 += x[k];
        m2 += x[k] * x[k];
        m4 += x[k] * x[k] * x[k] * x[k];
    }
    printf("ns a normal (median of 5): Philox + Box-Muller %.2f, ziggurat %.2f; ziggurat's mean %.2e, "
           "variance %.4f, fourth moment %.4f\n", tp[2], tz[2], m1 / N, m2 / N, m4 / N);
    free(x);
    return 0;
}
