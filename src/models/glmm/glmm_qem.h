/* QEM's per-group arithmetic, shared by the CPU (glmm_tree.c) and the
 * CUDA backend (src/cuda/glmm_qem.cu): plain C99, no R API, no
 * allocation, __host__ __device__ under nvcc, so that both compute the same
 * numbers in the same order. See dev/QEM.md for the recursion. */
#ifndef SVIR_QEM_H
#define SVIR_QEM_H

#include <math.h>
#include <stddef.h>

#include "core/svir_math.h"

/* The proposal N(mean, S) from raw moments M1 [d], M2 [d x d] (row-major,
 * lower part used): its Cholesky factor into the packed row-major lower
 * triangle Lp with a log diagonal. A variance below floor (or a pivot that
 * is not positive) is raised to floor. work: d x d doubles. */
SVIR_MATH_HD void svir_qem_match(int d, const double *M1, const double *M2, double floor,
                                 double *mean, double *Lp, double *work)
{
    double *S = work;
    for (int r = 0; r < d; r++) {
        mean[r] = M1[r];
        for (int c = 0; c <= r; c++) S[r * d + c] = M2[r * d + c] - M1[r] * M1[c];
    }
    for (int r = 0; r < d; r++) {
        for (int c = 0; c <= r; c++) {
            double s = S[r * d + c];
            for (int k = 0; k < c; k++) s -= S[r * d + k] * S[c * d + k];
            if (c == r) {
                S[r * d + r] = sqrt(s > floor ? s : floor);
            } else {
                S[r * d + c] = s / S[c * d + c];
            }
        }
    }
    for (int r = 0; r < d; r++)
        for (int c = 0; c <= r; c++)
            Lp[r * (r + 1) / 2 + c] = c == r ? log(S[r * d + r]) : S[r * d + c];
}

/* The inverse of svir_qem_match: the raw moments M1 [d] and M2 [d x d]
 * (row-major, lower part) of N(mean, L L^T), L packed row-major lower with
 * a log diagonal. */
SVIR_MATH_HD void svir_qem_raw(int d, const double *mean, const double *Lp, double *M1,
                               double *M2)
{
#define SVIR_LENT(r, k) ((k) == (r) ? exp(Lp[(r) * ((r) + 1) / 2 + (k)]) : Lp[(r) * ((r) + 1) / 2 + (k)])
    for (int r = 0; r < d; r++) {
        M1[r] = mean[r];
        for (int c = 0; c <= r; c++) {
            double s = 0.0;
            for (int k = 0; k <= c; k++) s += SVIR_LENT(r, k) * SVIR_LENT(c, k);
            M2[r * d + c] = s + mean[r] * mean[c];
        }
    }
#undef SVIR_LENT
}

/* One row of a group's table: row [K] holds log f_j(k0, kj) for kj < K; it
 * becomes f_j(k0, kj) / (K m_j(k0)) (all 0 if no entry is finite), and log
 * m_j(k0) = logsumexp_kj log f_j(k0, kj) - logK is returned. */
SVIR_MATH_HD double svir_qem_row(int K, double *row, double logK)
{
    double mx = -INFINITY, sum = 0.0;
    for (int kj = 0; kj < K; kj++) mx = fmax(mx, row[kj]);
    if (!isfinite(mx)) {
        /* log m_j(k0), and then log w0(k0), is not finite: a rejected
         * iteration, or a weight of 0 */
        for (int kj = 0; kj < K; kj++) row[kj] = 0.0;
        return mx;
    }
    for (int kj = 0; kj < K; kj++) sum += (row[kj] = exp(row[kj] - mx));
    for (int kj = 0; kj < K; kj++) row[kj] /= sum;
    return mx + log(sum) - logK;
}

/* One group's M-step from the marginal weights pi [K] (summing to 1) of its
 * K draws z0 (draw k at z0s + k zstride, q values): their first and second
 * moments, the moving average z1 <- (1 - et) z1 + et E z0 (z2 likewise,
 * q x q lower, row-major), and the proposal block blk = [mean (q), packed
 * Cholesky with a log diagonal] matched to them. e2, ws: q x q scratch. */
SVIR_MATH_HD void svir_qem_group_match(int q, int K, const double *pi, const double *z0s,
                                       ptrdiff_t zstride, double et, double *z1, double *z2,
                                       double *blk, double *e1, double *e2, double *ws)
{
    for (int r = 0; r < q; r++) {
        e1[r] = 0.0;
        for (int c = 0; c <= r; c++) e2[r * q + c] = 0.0;
    }
    for (int kj = 0; kj < K; kj++) {
        const double *z = z0s + (ptrdiff_t)kj * zstride;
        for (int r = 0; r < q; r++) {
            e1[r] += pi[kj] * z[r];
            for (int c = 0; c <= r; c++) e2[r * q + c] += pi[kj] * z[r] * z[c];
        }
    }
    for (int r = 0; r < q; r++) {
        z1[r] = (1.0 - et) * z1[r] + et * e1[r];
        for (int c = 0; c <= r; c++) z2[r * q + c] = (1.0 - et) * z2[r * q + c] + et * e2[r * q + c];
    }
    svir_qem_match(q, z1, z2, 1e-12, blk, blk + q, ws);
}

/* One group's E- and M-step with one grouping factor: from its normalised
 * table P [K x K] (rows k0) and the globals' weights w0 [K] (summing to 1),
 * the marginal weights pi(kj) = sum_k0 w0(k0) P(k0, kj) of its K draws,
 * then svir_qem_group_match. pi: [K]. */
SVIR_MATH_HD void svir_qem_group_mstep(int q, int K, const double *P, const double *w0,
                                       const double *z0s, ptrdiff_t zstride, double et,
                                       double *z1, double *z2, double *blk, double *pi,
                                       double *e1, double *e2, double *ws)
{
    for (int kj = 0; kj < K; kj++) pi[kj] = 0.0;
    for (int k0 = 0; k0 < K; k0++)
        for (int kj = 0; kj < K; kj++) pi[kj] += w0[k0] * P[k0 * K + kj];
    svir_qem_group_match(q, K, pi, z0s, zstride, et, z1, z2, blk, e1, e2, ws);
}

#endif
