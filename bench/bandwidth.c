/* Read bandwidth of this machine, for the per-step floor in bench/README.md:
 * sums a double array (best of 10 passes), once far larger than the caches
 * and once the size of one InstEval step's data (2.64 MB).
 * Build and run: cc -O3 -march=native -o /tmp/bw bench/bandwidth.c && /tmp/bw */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static void measure(size_t n, int passes, const char *label)
{
    double *x = malloc(n * sizeof(double));
    if (!x) return;
    for (size_t i = 0; i < n; i++) x[i] = (double)(i & 1023);
    double best = 1e30, sink = 0.0;
    for (int p = 0; p < passes; p++) {
        /* eight independent sums, so that add latency does not bound the loop */
        double t0 = now(), a[8] = {0};
        size_t i = 0;
        for (; i + 8 <= n; i += 8)
            for (int k = 0; k < 8; k++) a[k] += x[i + k];
        for (; i < n; i++) a[0] += x[i];
        double s = 0.0;
        for (int k = 0; k < 8; k++) s += a[k];
        double dt = now() - t0;
        sink += s;
        if (dt < best) best = dt;
    }
    printf("%-28s %8.1f MB  %6.1f GB/s  (checksum %g)\n", label, n * 8 / 1e6,
           n * 8 / best / 1e9, sink);
    free(x);
}

int main(void)
{
    measure((size_t)537e6 / 8, 10, "DRAM (537 MB array)");
    measure((size_t)2.64e6 / 8, 200, "one InstEval step (2.64 MB)");
    return 0;
}
