/* The Poisson-lognormal L-BFGS's per-entry and per-column arithmetic,
 * shared by the CPU (pln_eval.c, pln_lbfgs.c) and the device (src/cuda/
 * pln_eval.cu, pln_lbfgs.cu) so that both run the same operations in the same
 * order. */
#ifndef SVIR_PLN_ENTRY_H
#define SVIR_PLN_ENTRY_H

#include <math.h>

#include "core/svir_math.h"

/* Newton steps of the start's log S (pln_sstart) */
#ifndef SVIR_PLN_SSTART_IT
#define SVIR_PLN_SSTART_IT 4
#endif

/* The inverse of the 2 x 2 block of -J's curvature in (M_ij, log S_ij),
 *   [[A + o, A S^2], [A S^2, 2 S^2 (A + o) + S^4 A]],   o = Omega_jj. */
SVIR_ALWAYS_INLINE void svir_pln_block_inv(double A, double S2, double o, double *i11,
                                           double *i12, double *i22)
{
    const double h = A + o, b = A * S2;
    const double e = 2.0 * S2 * h + S2 * S2 * A, id = 1.0 / (h * e - b * b);
    *i11 = e * id;
    *i12 = -b * id;
    *i22 = h * id;
}

/* The entry's start log S: its optimum given M and o = Omega_jj, by
 * SVIR_PLN_SSTART_IT Newton steps on 1 - S^2 (A + o) = 0, each moving
 * log S by at most 1, from log S = l with S^2 = S2 and A = a. */
SVIR_ALWAYS_INLINE double svir_pln_sstart_entry(double l, double S2, double a, double o)
{
    const double la = log(a) - 0.5 * S2; /* log A less its S^2 / 2 */
    for (int it = 0; it < SVIR_PLN_SSTART_IT; it++) {
        const double h = a + o, g = S2 * h - 1.0, hh = 2.0 * S2 * h + S2 * S2 * a;
        double st = -g / hh;
        if (st > 1.0) st = 1.0; else if (st < -1.0) st = -1.0;
        l += st;
        S2 = exp(2.0 * l);
        a = exp(la + 0.5 * S2);
    }
    return l;
}

/* The preconditioner's d x d system: K (lower triangle, row-major by dx,
 * holding X' (D^-1)_MM X) becomes the Cholesky factor of X'X / o - K
 * (XtX with leading dimension ldx), and z = (X'X / o - K)^-1 t. Returns 0,
 * leaving z alone, where that matrix is not positive definite. */
SVIR_ALWAYS_INLINE int svir_pln_kz_solve(double *K, const double *XtX, int ldx, int dx, double o,
                                         const double *t, double *z)
{
    for (int a = 0; a < dx; a++)
        for (int b = 0; b <= a; b++) {
            const double cinv = XtX[a * ldx + b] / o;
            double s = cinv - K[a * dx + b];
            for (int l = 0; l < b; l++) s -= K[a * dx + l] * K[b * dx + l];
            if (a == b) {
                if (!(s > 1e-12 * cinv)) return 0;
                K[a * dx + a] = sqrt(s);
            } else {
                K[a * dx + b] = s / K[b * dx + b];
            }
        }
    for (int a = 0; a < dx; a++) {
        double s = t[a];
        for (int l = 0; l < a; l++) s -= K[a * dx + l] * z[l];
        z[a] = s / K[a * dx + a];
    }
    for (int a = dx - 1; a >= 0; a--) {
        double s = z[a];
        for (int l = a + 1; l < dx; l++) s -= K[l * dx + a] * z[l];
        z[a] = s / K[a * dx + a];
    }
    return 1;
}

#endif
