/* The Gaussian guide over a model's global block (mean-field: mu and log
 * sd; full-rank: mu and the packed row-major lower triangle of L with a
 * log diagonal): its draw, the backward pass of one particle, its entropy.
 * Host/device functions on plain arrays, shared by every model and by the
 * CPU and CUDA code. */
#ifndef SVIR_GUIDE_H
#define SVIR_GUIDE_H

#include <math.h>
#include <stddef.h>

#include "core/svir_math.h"

/* Solves C^T u = v for a packed row-major lower-triangular C whose diagonal
 * is ed (ed[r] = exp of the stored log diagonal; NULL: computed here). */
SVIR_MATH_HD void svir_packed_back_solve(ptrdiff_t q, const double *Cp, const double *ed,
                                         const double *v, double *u)
{
    for (ptrdiff_t r = q - 1; r >= 0; r--) {
        double s = v[r];
        for (ptrdiff_t k = r + 1; k < q; k++) s -= Cp[k * (k + 1) / 2 + r] * u[k];
        u[r] = s / (ed ? ed[r] : exp(Cp[r * (r + 1) / 2 + r]));
    }
}

/* theta = mu + L eps (fullrank, L packed with a log diagonal) or
 * mu + exp(omega) eps (meanfield); gpar = [mu (D), L or omega]. */
SVIR_MATH_HD void svir_guide_theta(ptrdiff_t D, int fullrank, const double *gpar,
                                   const double *eps, double *theta)
{
    if (fullrank) {
        const double *L = gpar + D;
        for (ptrdiff_t r = 0; r < D; r++) {
            const double *Lr = L + r * (r + 1) / 2;
            double s = gpar[r] + exp(Lr[r]) * eps[r];
            for (ptrdiff_t c = 0; c < r; c++) s += Lr[c] * eps[c];
            theta[r] = s;
        }
    } else {
        for (ptrdiff_t d = 0; d < D; d++) theta[d] = gpar[d] + exp(gpar[D + d]) * eps[d];
    }
}

/* From gtheta = d objective / d theta of one particle to the guide's
 * parameters (added to ggrad, times invS); with stl first adds the path
 * derivative of -log q to gtheta (u: workspace of D doubles). */
SVIR_MATH_HD void svir_guide_backward(ptrdiff_t D, int fullrank, int stl, const double *gpar,
                                      const double *eps, double *gtheta, double invS,
                                      double *ggrad, double *u)
{
    if (stl) {
        if (fullrank) {
            svir_packed_back_solve(D, gpar + D, NULL, eps, u);
            for (ptrdiff_t d = 0; d < D; d++) gtheta[d] += u[d];
        } else {
            for (ptrdiff_t d = 0; d < D; d++) gtheta[d] += eps[d] * exp(-gpar[D + d]);
        }
    }
    for (ptrdiff_t d = 0; d < D; d++) ggrad[d] += invS * gtheta[d];
    if (fullrank) {
        double *gL = ggrad + D;
        const double *L = gpar + D;
        for (ptrdiff_t r = 0; r < D; r++) {
            const ptrdiff_t o = r * (r + 1) / 2;
            for (ptrdiff_t cc = 0; cc < r; cc++) gL[o + cc] += invS * gtheta[r] * eps[cc];
            gL[o + r] += invS * gtheta[r] * eps[r] * exp(L[o + r]);
        }
    } else {
        for (ptrdiff_t d = 0; d < D; d++) ggrad[D + d] += invS * gtheta[d] * eps[d] * exp(gpar[D + d]);
    }
}

/* The global guide's entropy, returned; its analytic gradient (without stl)
 * added to ggrad. */
SVIR_MATH_HD double svir_guide_entropy(ptrdiff_t D, int fullrank, int stl, const double *gpar,
                                       double *ggrad)
{
    double H = (double)D * 0.5 * (1.0 + SVIR_LOG_2PI);
    if (fullrank) {
        for (ptrdiff_t r = 0; r < D; r++) {
            const ptrdiff_t o = D + r * (r + 1) / 2 + r;
            H += gpar[o];
            if (!stl) ggrad[o] += 1.0;
        }
    } else {
        for (ptrdiff_t d = 0; d < D; d++) {
            H += gpar[D + d];
            if (!stl) ggrad[D + d] += 1.0;
        }
    }
    return H;
}

#endif
