/* gpucheck's count-mixture checks and GPU target (mix_check.c) */
#ifndef GPUCHECK_MIX_CHECK_H
#define GPUCHECK_MIX_CHECK_H

/* the device's batch log-likelihood and gradient against the CPU's, and
 * whole SVI fits on both; returns 1 when one fails */
int gpucheck_mix(void);
/* issue 17's GPU target at n x p, K clusters: one epoch's time */
int gpucheck_mix_bench(int n, int p, int K);

#endif
