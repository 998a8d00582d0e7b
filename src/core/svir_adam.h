/* Adam (Kingma and Ba 2015): the update of one element as a host/device
 * function, so that the CPU (svir_adam, an array at a time) and the CUDA
 * code take the same steps. */
#ifndef SVIR_ADAM_H
#define SVIR_ADAM_H

#include <math.h>
#include <stddef.h>

#include "core/svir_math.h"

#define SVIR_ADAM_B1 0.9
#define SVIR_ADAM_B2 0.999
#define SVIR_ADAM_EPS 1e-8

/* One Adam update of element k: a = lr / bc1 and sb = 1 / sqrt(bc2), the
 * bias corrections taken out (svir_adam_consts). */
SVIR_MATH_HD void svir_adam1(double *par, double *mom, double *vel, const double *g,
                             ptrdiff_t k, double a, double sb)
{
    const double mk = SVIR_ADAM_B1 * mom[k] + (1.0 - SVIR_ADAM_B1) * g[k];
    const double vk = SVIR_ADAM_B2 * vel[k] + (1.0 - SVIR_ADAM_B2) * g[k] * g[k];
    mom[k] = mk;
    vel[k] = vk;
    par[k] += a * mk / (sqrt(vk) * sb + SVIR_ADAM_EPS);
}

/* a and sb of svir_adam1 for step size lr and bias corrections bc1, bc2 */
SVIR_MATH_HD void svir_adam_consts(double lr, double bc1, double bc2, double *a, double *sb)
{
    *a = lr / bc1;
    *sb = 1.0 / sqrt(bc2);
}

#ifdef __cplusplus
extern "C" {
#endif

/* One Adam update of par [n] (moments mom, vel updated in place) with step
 * size lr and bias corrections bc1 = 1 - b1^t, bc2 = 1 - b2^t; elementwise
 * svir_adam1, two elements at a time where SSE2 is used (core/svir_adam.c). */
void svir_adam(double *par, double *mom, double *vel, const double *g, ptrdiff_t n, double lr,
               double bc1, double bc2);

#ifdef __cplusplus
}
#endif

#endif
