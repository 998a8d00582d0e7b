/* The floor of a QEM iteration's K x K tables on this CPU (bench/README.md,
 * "QEM against SVI"): the time of 154,000 exp + division pairs, the work of
 * the radon-like data's table rows at K = 16 (K^2 J = 256 x 600), in one
 * thread. Then the count mixture's (bench/README.md, "Count mixtures"):
 * the time of 10^6 exp + log pairs, the NB's per entry and cluster. Build and run: cc -O2 bench/exp_floor.c -o /tmp/exp_floor -lm &&
 * /tmp/exp_floor */
#include <math.h>
#include <stdio.h>
#include <time.h>

int main(void)
{
    enum { N = 154000, REPS = 100 };
    static double x[N];
    double s = 0.0;
    for (int i = 0; i < N; i++) x[i] = -(i % 100) * 0.01;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int r = 0; r < REPS; r++)
        for (int i = 0; i < N; i++) {
            const double e = exp(x[i] - 0.5);
            s += e / (1.0 + e);
        }
    clock_gettime(CLOCK_MONOTONIC, &b);
    const double ms = ((b.tv_sec - a.tv_sec) * 1e3 + (b.tv_nsec - a.tv_nsec) / 1e6) / REPS;
    printf("%.3f ms per %d exp + division pairs (checksum %g)\n", ms, N, s);
    enum { M = 1000000, MREPS = 20 };
    static double y[M];
    for (int i = 0; i < M; i++) y[i] = -3.0 + (i % 1000) * 0.005;
    double t = 0.0;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int r = 0; r < MREPS; r++)
        for (int i = 0; i < M; i++) t += log(2.0 + exp(y[i]));
    clock_gettime(CLOCK_MONOTONIC, &b);
    const double ms2 = ((b.tv_sec - a.tv_sec) * 1e3 + (b.tv_nsec - a.tv_nsec) / 1e6) / MREPS;
    printf("%.3f ms per %d exp + log pairs (checksum %g)\n", ms2, M, t);
    return 0;
}
