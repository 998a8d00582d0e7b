/* gpucheck's Poisson-lognormal checks and benchmark (pln_check.c) */
#ifndef GPUCHECK_PLN_CHECK_H
#define GPUCHECK_PLN_CHECK_H

/* the device objective against svir_pln_eval and whole fits against
 * svir_pln_fit; returns 1 when one fails */
int gpucheck_pln(void);
/* issue 5's GPU target at n x p, rank q: time to convergence */
int gpucheck_pln_bench(int n, int p, int q);

#endif
