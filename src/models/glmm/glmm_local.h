/* Per-group pieces of the SVI step for the local (random-effect) guide,
 * shared by the CPU (glmm_svi.c) and the CUDA backend: plain C99,
 * no R API, __host__ __device__ under nvcc. One group of a term with q
 * columns has the block [m (q), packed row-major lower-triangular C
 * (q(q+1)/2, its diagonal stored as logs)]; z = m + C noise, b = A z. */
#ifndef SVIR_LOCAL_H
#define SVIR_LOCAL_H

#include <math.h>
#include <stddef.h>

#include "core/svir_guide.h"
#include "core/svir_math.h"

/* longest q the per-group work keeps on the stack */
#define SVIR_QMAX_STACK 64

/* ed = the diagonal of one group's C: exp of its stored logs */
SVIR_MATH_HD void svir_local_exp_diag(int q, const double *blk, double *ed)
{
    const double *Cp = blk + q;
    for (int r = 0; r < q; r++) ed[r] = exp(Cp[r * (r + 1) / 2 + r]);
}

/* z = m + C noise for one group (noise drawn beforehand), with C's diagonal
 * ed from svir_local_exp_diag; returns log q(z). */
SVIR_MATH_HD double svir_local_draw(int q, const double *blk, const double *noise,
                                    const double *ed, double *z)
{
    const double *mj = blk, *Cp = blk + q;
    double logq = 0.0;
    for (int r = 0; r < q; r++) {
        const double *Cr = Cp + r * (r + 1) / 2;
        double s = mj[r] + ed[r] * noise[r];
        for (int c = 0; c < r; c++) s += Cr[c] * noise[c];
        z[r] = s;
        logq += -0.5 * noise[r] * noise[r] - Cr[r] - SVIR_LOG_SQRT_2PI;
    }
    return logq;
}

/* b = A z for one group; A is the term's q x q row-major lower triangle */
SVIR_MATH_HD void svir_local_b(int q, const double *A, const double *z, double *b)
{
    for (int r = 0; r < q; r++) {
        double s = 0.0;
        for (int c = 0; c <= r; c++) s += A[r * q + c] * z[c];
        b[r] = s;
    }
}

/* A group's d/dz (dz, times invS) to its m and packed C, z = m + C noise:
 * z_c = m_c + sum_{l<c} C_cl n_l + exp(log C_cc) n_c */
SVIR_MATH_HD void svir_local_chain(int q, const double *dz, double invS, const double *noise,
                                   const double *ed, double *gm, double *gC)
{
    for (int c = 0; c < q; c++) {
        const double d = dz[c] * invS;
        gm[c] += d;
        double *gCr = gC + c * (c + 1) / 2;
        for (int l = 0; l < c; l++) gCr[l] += d * noise[l];
        gCr[c] += d * noise[c] * ed[c];
    }
}

/* One group's gradient from one particle, added to gm [q] and gC [packed]:
 * the likelihood's through b = A z (G = d ll / d b of the group, times the
 * batch's scale), and with stl the path derivative of log N(z; 0, I) -
 * log q(z) charged with the group's weight wt (shift: the coupled guide's
 * w_t, or NULL); without stl and with a shift, the shift's part of the
 * analytic KL gradient. Every contribution is divided by the particles
 * (invS). */
SVIR_MATH_HD void svir_local_backward(int q, const double *A, const double *G,
                                      const double *noise, const double *z, const double *ed,
                                      const double *Cp, const double *shift, double scale,
                                      double wt, double invS, int stl, double *gm, double *gC)
{
    double dz[SVIR_QMAX_STACK], u[SVIR_QMAX_STACK];
    /* d/dz of the likelihood: A^T G */
    for (int cc = 0; cc < q; cc++) {
        double s = 0.0;
        for (int r = cc; r < q; r++) s += A[r * q + cc] * G[r];
        dz[cc] = scale * s;
    }
    if (stl) {
        /* path derivative of log N(z; 0, I) - log q(z): -z + C^{-T} noise */
        svir_packed_back_solve(q, Cp, ed, noise, u);
        for (int cc = 0; cc < q; cc++) dz[cc] += wt * (u[cc] - z[cc] + (shift ? shift[cc] : 0.0));
    } else if (shift) {
        /* analytic KL with mean m - w: its gradient in m is -(m - w); the
         * -m part comes with svir_local_kl */
        for (int cc = 0; cc < q; cc++) gm[cc] += invS * wt * shift[cc];
    }
    svir_local_chain(q, dz, invS, noise, ed, gm, gC);
}

/* KL(q(z_j) || N(0, I)) of one group, times wt, returned; its analytic
 * gradient times gw (0 with stl, whose gradient came with the draws) is
 * subtracted from gm and gC. ed: the group's exp diagonal. */
SVIR_MATH_HD double svir_local_kl(int q, const double *mj, const double *Cp, const double *ed,
                                  double wt, double gw, double *gm, double *gC)
{
    double klj = -0.5 * q;
    for (int r = 0; r < q; r++) {
        klj += 0.5 * mj[r] * mj[r];
        gm[r] -= gw * mj[r];
        const ptrdiff_t o = r * (r + 1) / 2;
        for (int cc = 0; cc < r; cc++) {
            klj += 0.5 * Cp[o + cc] * Cp[o + cc];
            gC[o + cc] -= gw * Cp[o + cc];
        }
        const double Crr = ed[r];
        klj += 0.5 * Crr * Crr - Cp[o + r];
        gC[o + r] -= gw * (Crr * Crr - 1.0);
    }
    return wt * klj;
}

#endif
