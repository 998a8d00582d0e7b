/* gpucheck's Bayesian-network checks and timing (bnn_check.c) */
#ifndef GPUCHECK_BNN_CHECK_H
#define GPUCHECK_BNN_CHECK_H

/* the device's part of an ELBO estimate against the CPU's at the same
 * guide and step, and whole SVI fits on both; returns 1 when one fails */
int gpucheck_bnn(void);
/* issue 18's timing: one hidden layer of `width` relu units, batches of B
 * rows: ms per step on the device and the CPU */
int gpucheck_bnn_bench(int width, int B);

#endif
