/* The Poisson-lognormal model's objective and its L-BFGS fit on the CUDA
 * device (src/svir_cuda_pln.h; the CPU version, whose algorithm and
 * per-entry formulas this follows, is src/svir_pln.c, dev/PLN.md). Not yet
 * run on a GPU: tools/gpucheck and tests/testthat/test-cuda.R compare it with the
 * CPU where a device is present (dev/CUDA.md).
 *
 * What runs where, per evaluation of J and its gradient:
 *   device (the n x p work):
 *     k_bpm    B = P M, one block per column of M;
 *     k_col    R = M - X B, S^2, A = exp(O + M + S^2 / 2), the gradient's
 *              Y - A (dense counts, or the non-zero ones of a CSC matrix
 *              added after) and per column the likelihood part, sum_i S^2
 *              and sum_i R^2; one block per column;
 *     full:    k_gram R'R (lower tiles), k_rom dJ/dM -= R Omega;
 *     rank q:  k_rmul R G, k_tcol T = R Psi^-1 - (R G) V' (dJ/dM -= T, per
 *              column sum R T and sum T^2), k_rmul T W, k_atb T'(T W);
 *     VE step: k_rom T = R Omega, k_tcol;
 *     k_grad_ls  dJ/d log S (and dJ/dM -= R Omega for a diagonal Omega).
 *   host (O(p) or O(p q^2) work, O(p^3) for the full covariance): the
 *     per-column sums added in column order, Sigma, its Cholesky factor
 *     and inverse (R's LAPACK, as on the CPU: no cuSOLVER), for rank q the
 *     q x q Woodbury algebra and dJ/dW, dJ/d log psi (R's BLAS).
   and per L-BFGS iteration (pln_lbfgs):
     k_prec   the initial inverse Hessian (pln_precond of src/svir_pln.c):
              per column, the entries' 2 x 2 (M, log S) blocks and B's
              profiling along X by the Woodbury identity, its d x d system
              (d <= 8) solved by the column's block itself, so that no
              host round trip sits inside the two-loop recursion;
              k_prec_tail the W, log psi part (denominators from the host);
     k_sstart once, the start's log S at each entry's optimum given M
              (pln_sstart).
 * Matrix products are small tiled kernels rather than cuBLAS (not linked by
 * this package): every output is one thread's sum in a fixed order.
 *
 * Determinism: no atomics; every sum across threads is a shared-memory tree
 * of a fixed shape (PB threads per block, PLN_DOT_BLOCKS blocks for vectors
 * of length npar, whatever the device), and the blocks' partial sums are
 * added by one block in block order. So a given device and launch give the
 * same result every run; against the CPU the sums' order differs (and the
 * libraries' exp by an ulp), so results agree to ~1e-12 relative per
 * evaluation, and whole L-BFGS fits to ~1e-6.
 *
 * Device memory (doubles; L = npar = 2 n p (+ p (q + 1) for rank q)):
 *   the fit: 5 L (par, candidate, two gradients, direction) + 10 L (the 5
 *   pairs) + 5 n p (R, and A, S^2 of the current and the candidate point)
 *   + n p (T, rank q and the VE step) + the data (Y: n p dense, or 12 bytes
 *   per non-zero; O: n p or n; X, P: 2 n d) + O(n q + p^2 + p q).
 *   The evaluation alone: 2 L + 3 n p + the data. */
#include <cuda_runtime.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/svir_lapack.h"

#include "models/pln/pln_cuda.h"
#include "models/pln/pln_entry.h"
#include "cuda/svir_cuda_common.cuh"

#define PB 256               /* threads per block (a power of two) */
#define PLN_DOT_BLOCKS 1024  /* blocks of the length-npar reductions (fixed) */
#define QC 8                 /* q columns one thread accumulates */
#define TS 16                /* tile of the p x p products */
#define PLN_MEM 5            /* L-BFGS pairs, as src/svir_pln.c */
#define NDB 48               /* most device buffers */

#define PCK(call)                                                                       \
    do {                                                                                \
        if (svir_cuda_failed((call), #call, err, errlen)) return 3;                     \
    } while (0)
#define KCK(name)                                                                       \
    do {                                                                                \
        if (svir_cuda_failed(cudaGetLastError(), name, err, errlen)) return 3;          \
    } while (0)

/* what the kernels read, by value */
typedef struct {
    int n, p, d, q;
    ptrdiff_t np;
    const double *Y, *Yx, *O, *Orow, *X, *P;
    const int *Yp, *Yi;
    double *B, *R, *T, *NQ, *G, *V, *ipsi, *Om, *cols, *out;
} pln_args;

struct svir_cuda_pln {
    int n, p, d, q, cov, fixed, fit;
    ptrdiff_t np, L;
    double nd, lgy, logdet_om;
    pln_args a;
    double *A[2], *S2[2], *omd[2], *h0r[2]; /* per evaluated point (current, candidate);
                                             * h0r: H0's denominators for W, log psi */
    double *XtX;                            /* X'X [d x d] for H0 (the fit, dx > 0) */
    int dx;                                 /* H0's X part: d, or 0 (k_prec) */
    double *GV;                             /* G [p q], V [p q], 1 / psi [p]: one upload */
    double *part, *scal;                    /* partial sums of the reductions */
    double *par, *cand, *g, *g1, *dir, *Sv, *Yv; /* the optimiser (g only for an evaluation) */
    void *dbuf[NDB];
    int ndb;
    /* host */
    double *hcols, *hOm, *hW, *hV, *hG, *hK, *hKmI, *hQs, *hX2, *hPQ, *hOW, *hgl, *homd, *hh0r,
        *hsmall;
    void *hbuf[16];
    int nhb;
};

/* ---------------------------------------------------------------- kernels */

/* the NV sums of a block, in a fixed tree; every thread gets them */
template <int NV>
__device__ __forceinline__ void block_sums(double *sh, double *v)
{
    const int t = threadIdx.x;
#pragma unroll
    for (int c = 0; c < NV; c++) sh[c * PB + t] = v[c];
    __syncthreads();
    for (int s = PB / 2; s > 0; s >>= 1) {
        if (t < s) {
#pragma unroll
            for (int c = 0; c < NV; c++) sh[c * PB + t] += sh[c * PB + t + s];
        }
        __syncthreads();
    }
#pragma unroll
    for (int c = 0; c < NV; c++) v[c] = sh[c * PB];
    __syncthreads();
}

/* B[l, j] = sum_i P[l, i] M[i, j]; one block per column j */
__global__ void __launch_bounds__(PB) k_bpm(const pln_args a, const double *__restrict__ M)
{
    __shared__ double sh[PB];
    const int j = blockIdx.x;
    const ptrdiff_t c = (ptrdiff_t)j * a.n;
    for (int l = 0; l < a.d; l++) {
        double v[1] = {0.0};
        for (int i = threadIdx.x; i < a.n; i += PB) v[0] += a.P[(ptrdiff_t)i * a.d + l] * M[c + i];
        block_sums<1>(sh, v);
        if (threadIdx.x == 0) a.B[(ptrdiff_t)j * a.d + l] = v[0];
    }
}

/* R, S^2, A, the gradient's Y - A, and per column j: cols[j] = the
 * likelihood part, cols[p + j] = sum_i S^2, cols[2 p + j] = sum_i R^2 */
__global__ void __launch_bounds__(PB) k_col(const pln_args a, const double *__restrict__ M,
                                            const double *__restrict__ ls, double *__restrict__ grad,
                                            double *__restrict__ A, double *__restrict__ S2o)
{
    __shared__ double sh[3 * PB];
    const int j = blockIdx.x;
    const ptrdiff_t c = (ptrdiff_t)j * a.n;
    double v[3] = {0.0, 0.0, 0.0}; /* likelihood, S^2, R^2 */
    for (int i = threadIdx.x; i < a.n; i += PB) {
        const ptrdiff_t k = c + i;
        const double m = M[k];
        double r = m; /* R = M - X B, in the reference dgemm's order */
        for (int l = 0; l < a.d; l++) r += (-a.B[(ptrdiff_t)j * a.d + l]) * a.X[(ptrdiff_t)l * a.n + i];
        a.R[k] = r;
        const double S2 = exp(2.0 * ls[k]);
        const double o = a.O ? a.O[k] : a.Orow ? a.Orow[i] : 0.0;
        const double Ak = exp(o + m + 0.5 * S2);
        S2o[k] = S2;
        A[k] = Ak;
        if (a.Y) {
            grad[k] = a.Y[k] - Ak;
            v[0] += a.Y[k] * (o + m) - Ak + ls[k];
        } else {
            grad[k] = -Ak;
            v[0] += ls[k] - Ak;
        }
        v[1] += S2;
        v[2] += r * r;
    }
    if (!a.Y) {
        /* the column's non-zero counts (distinct rows): grad[k] was written
         * by this block above */
        __syncthreads();
        for (int z = a.Yp[j] + threadIdx.x; z < a.Yp[j + 1]; z += PB) {
            const int i = a.Yi[z];
            const ptrdiff_t k = c + i;
            const double o = a.O ? a.O[k] : a.Orow ? a.Orow[i] : 0.0;
            grad[k] += a.Yx[z];
            v[0] += a.Yx[z] * (o + M[k]);
        }
    }
    block_sums<3>(sh, v);
    if (threadIdx.x == 0) {
        a.cols[j] = v[0];
        a.cols[a.p + j] = v[1];
        a.cols[2 * a.p + j] = v[2];
    }
}

/* C[r, s] = sum_i R[i, r] R[i, s] for the tiles on and below the diagonal
 * (r >= s is all the host reads); TS x TS threads, one output each */
__global__ void k_gram(const double *__restrict__ R, int n, int p, double *__restrict__ C)
{
    if (blockIdx.y > blockIdx.x) return;
    __shared__ double Ra[TS][TS + 1], Rb[TS][TS + 1];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int r = blockIdx.x * TS + tx, s = blockIdx.y * TS + ty;
    const int rc = blockIdx.x * TS + ty, sc = blockIdx.y * TS + ty;
    double acc = 0.0;
    for (int i0 = 0; i0 < n; i0 += TS) {
        const int i = i0 + tx;
        Ra[tx][ty] = i < n && rc < p ? R[i + (ptrdiff_t)rc * n] : 0.0;
        Rb[tx][ty] = i < n && sc < p ? R[i + (ptrdiff_t)sc * n] : 0.0;
        __syncthreads();
        for (int kk = 0; kk < TS; kk++) acc += Ra[kk][tx] * Rb[kk][ty];
        __syncthreads();
    }
    if (r < p && s < p) C[r + (ptrdiff_t)s * p] = acc;
}

/* out[i, j] = (out[i, j] -) sum_r R[i, r] Om[r, j] (sub: subtract from out);
 * Om symmetric p x p; TS x TS threads, one output each */
__global__ void k_rom(const double *__restrict__ R, const double *__restrict__ Om, int n, int p,
                      double *__restrict__ out, int sub)
{
    __shared__ double Rs[TS][TS + 1], Os[TS][TS + 1];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int i = blockIdx.x * TS + tx, j = blockIdx.y * TS + ty;
    double acc = 0.0;
    for (int r0 = 0; r0 < p; r0 += TS) {
        Rs[tx][ty] = i < n && r0 + ty < p ? R[i + (ptrdiff_t)(r0 + ty) * n] : 0.0;
        Os[tx][ty] = r0 + tx < p && j < p ? Om[(r0 + tx) + (ptrdiff_t)j * p] : 0.0;
        __syncthreads();
        for (int kk = 0; kk < TS; kk++) acc += Rs[tx][kk] * Os[kk][ty];
        __syncthreads();
    }
    if (i < n && j < p) {
        const ptrdiff_t k = i + (ptrdiff_t)j * n;
        out[k] = sub ? out[k] - acc : acc;
    }
}

/* out[i, k] = sum_j R[i, j] Gm[j, k] (n x p times p x q); one thread per row
 * and chunk of QC columns, j in order */
__global__ void __launch_bounds__(PB) k_rmul(const double *__restrict__ R, const double *__restrict__ Gm,
                                             int n, int p, int q, double *__restrict__ out)
{
    const int i = blockIdx.x * PB + threadIdx.x, k0 = blockIdx.y * QC;
    if (i >= n) return;
    const int kc = q - k0 < QC ? q - k0 : QC;
    double acc[QC];
#pragma unroll
    for (int c = 0; c < QC; c++) acc[c] = 0.0;
    for (int j = 0; j < p; j++) {
        const double r = R[i + (ptrdiff_t)j * n];
#pragma unroll
        for (int c = 0; c < QC; c++)
            if (c < kc) acc[c] += r * Gm[j + (ptrdiff_t)(k0 + c) * p];
    }
    for (int c = 0; c < kc; c++) out[i + (ptrdiff_t)(k0 + c) * n] = acc[c];
}

/* lowrank: T = R Psi^-1 - NQ V' (NQ = R G), else T as given (R Omega);
 * grad -= T, and per column out[j] = sum_i R T, out[p + j] = sum_i T^2 */
__global__ void __launch_bounds__(PB) k_tcol(const pln_args a, double *__restrict__ grad, int lowrank)
{
    __shared__ double sh[2 * PB];
    const int j = blockIdx.x;
    const ptrdiff_t c = (ptrdiff_t)j * a.n;
    double v[2] = {0.0, 0.0};
    for (int i = threadIdx.x; i < a.n; i += PB) {
        const ptrdiff_t k = c + i;
        double tv;
        if (lowrank) {
            tv = a.R[k] * a.ipsi[j];
            for (int l = 0; l < a.q; l++) tv += (-a.V[j + (ptrdiff_t)l * a.p]) * a.NQ[i + (ptrdiff_t)l * a.n];
            a.T[k] = tv;
        } else {
            tv = a.T[k];
        }
        grad[k] -= tv;
        v[0] += a.R[k] * tv;
        v[1] += tv * tv;
    }
    block_sums<2>(sh, v);
    if (threadIdx.x == 0) {
        a.out[j] = v[0];
        a.out[a.p + j] = v[1];
    }
}

/* PQ[j, k] = sum_i T[i, j] N[i, k]; one block per column j */
__global__ void __launch_bounds__(PB) k_atb(const double *__restrict__ T, const double *__restrict__ N,
                                            int n, int p, int q, double *__restrict__ PQ)
{
    __shared__ double sh[QC * PB];
    const int j = blockIdx.x;
    for (int k0 = 0; k0 < q; k0 += QC) {
        const int kc = q - k0 < QC ? q - k0 : QC;
        double acc[QC];
#pragma unroll
        for (int c = 0; c < QC; c++) acc[c] = 0.0;
        for (int i = threadIdx.x; i < n; i += PB) {
            const double tv = T[i + (ptrdiff_t)j * n];
#pragma unroll
            for (int c = 0; c < QC; c++)
                if (c < kc) acc[c] += tv * N[i + (ptrdiff_t)(k0 + c) * n];
        }
        block_sums<QC>(sh, acc);
        if (threadIdx.x == 0)
            for (int c = 0; c < kc; c++) PQ[j + (ptrdiff_t)(k0 + c) * p] = acc[c];
    }
}

/* dJ/d log S = 1 - S^2 (A + Omega_jj), and with diag dJ/dM -= R Omega_jj */
__global__ void __launch_bounds__(PB) k_grad_ls(const pln_args a, const double *__restrict__ omd,
                                                const double *__restrict__ A,
                                                const double *__restrict__ S2, double *__restrict__ grad,
                                                int diag)
{
    const int j = blockIdx.x;
    const double o = omd[j];
    for (int i = threadIdx.x; i < a.n; i += PB) {
        const ptrdiff_t k = (ptrdiff_t)j * a.n + i;
        if (diag) grad[k] -= a.R[k] * o;
        grad[a.np + k] = 1.0 - S2[k] * (A[k] + o);
    }
}

/* partial sums of up to three dot products a_c . b_c over PLN_DOT_BLOCKS
 * blocks (or fewer for short vectors): part[c * gridDim.x + block] */
__global__ void __launch_bounds__(PB) k_dots(const double *__restrict__ a0, const double *__restrict__ b0,
                                             const double *__restrict__ a1, const double *__restrict__ b1,
                                             const double *__restrict__ a2, const double *__restrict__ b2,
                                             int nv, ptrdiff_t L, double *__restrict__ part)
{
    __shared__ double sh[3 * PB];
    double v[3] = {0.0, 0.0, 0.0};
    for (ptrdiff_t k = (ptrdiff_t)blockIdx.x * PB + threadIdx.x; k < L; k += (ptrdiff_t)gridDim.x * PB) {
        v[0] += a0[k] * b0[k];
        if (nv > 1) v[1] += a1[k] * b1[k];
        if (nv > 2) v[2] += a2[k] * b2[k];
    }
    block_sums<3>(sh, v);
    if (threadIdx.x == 0)
        for (int c = 0; c < nv; c++) part[c * gridDim.x + blockIdx.x] = v[c];
}

/* the largest |dir_k| / cap_k (cap 2 for M, 1 for the rest), per block */
__global__ void __launch_bounds__(PB) k_maxcap(const double *__restrict__ dir, ptrdiff_t np, ptrdiff_t L,
                                               double *__restrict__ part)
{
    __shared__ double sh[PB];
    double m = 0.0;
    for (ptrdiff_t k = (ptrdiff_t)blockIdx.x * PB + threadIdx.x; k < L; k += (ptrdiff_t)gridDim.x * PB) {
        const double v = fabs(dir[k]) / (k < np ? 2.0 : 1.0);
        if (v > m) m = v; /* NaN ignored, as on the CPU */
    }
    const int t = threadIdx.x;
    sh[t] = m;
    __syncthreads();
    for (int s = PB / 2; s > 0; s >>= 1) {
        if (t < s && sh[t + s] > sh[t]) sh[t] = sh[t + s];
        __syncthreads();
    }
    if (t == 0) part[blockIdx.x] = sh[0];
}

/* out[c] = sum_b part[c nb + b] (or the largest, max), in a fixed order;
 * one block */
__global__ void __launch_bounds__(PB) k_fold(const double *__restrict__ part, int nb, int nv, int max,
                                             double *__restrict__ out)
{
    __shared__ double sh[PB];
    const int t = threadIdx.x;
    for (int c = 0; c < nv; c++) {
        double s = 0.0;
        for (int b = t; b < nb; b += PB) {
            const double x = part[(ptrdiff_t)c * nb + b];
            if (max)
                s = x > s ? x : s;
            else
                s += x;
        }
        sh[t] = s;
        __syncthreads();
        for (int st = PB / 2; st > 0; st >>= 1) {
            if (t < st) {
                if (max)
                    sh[t] = sh[t + st] > sh[t] ? sh[t + st] : sh[t];
                else
                    sh[t] += sh[t + st];
            }
            __syncthreads();
        }
        if (t == 0) out[c] = sh[0];
        __syncthreads();
    }
}

/* The L-BFGS's initial inverse Hessian H0 (pln_precond of src/svir_pln.c,
 * the same formulas and the same per-column order of operations), applied
 * in place to v's (M, log S) part: per column j, one block, with
 *   H_j = D_j - o_j [X; 0] (X'X)^-1 [X; 0]',   o_j = Omega_jj,
 * D_j block-diagonal with one 2 x 2 block per entry (M_ij, log S_ij),
 *   [[A + o, A S^2], [A S^2, 2 S^2 (A + o) + S^4 A]],
 * inverted by the Woodbury identity: v = D^-1 v; t = X' v_M and
 * K = X'X / o - X' (D^-1)_MM X (block sums in a fixed tree, PREC_CH at a
 * time); the d x d system K z = t is solved by the block's thread 0
 * (Cholesky; dropped, as on the CPU, where K is not positive definite);
 * then v += D^-1 [X z; 0]. dx = d, or 0 (the VE step, or d > PREC_DMAX:
 * D alone). A, S^2, Omega_jj are the current point's; XtX is X'X [d x d],
 * from the host. */
#define PREC_DMAX 8 /* PLN_PREC_DMAX of src/svir_pln.c */
#define PREC_NK (PREC_DMAX + PREC_DMAX * (PREC_DMAX + 1) / 2)
#define PREC_CH 4   /* sums per block_sums */
__global__ void __launch_bounds__(PB) k_prec(const pln_args a, double *__restrict__ v,
                                             const double *__restrict__ A, const double *__restrict__ S2,
                                             const double *__restrict__ omd, const double *__restrict__ XtX,
                                             int dx)
{
    __shared__ double sh[PREC_CH * PB];
    __shared__ double zs[PREC_DMAX];
    __shared__ int oks;
    const int j = blockIdx.x, n = a.n, nk = dx + dx * (dx + 1) / 2;
    const ptrdiff_t c = (ptrdiff_t)j * n, np = a.np;
    const double oj = omd[j];
    /* acc[0, dx) = t; acc[dx + r (r + 1) / 2 + s] = K[r, s], s <= r */
    double acc[PREC_NK];
    for (int l = 0; l < nk; l++) acc[l] = 0.0;
    for (int i = threadIdx.x; i < n; i += PB) {
        const ptrdiff_t k = c + i;
        double i11, i12, i22;
        svir_pln_block_inv(A[k], S2[k], oj, &i11, &i12, &i22);
        const double vm = v[k], vs = v[np + k];
        const double wm = i11 * vm + i12 * vs;
        v[k] = wm;
        v[np + k] = i12 * vm + i22 * vs;
        for (int r = 0, l = dx; r < dx; r++) {
            const double xr = a.X[(ptrdiff_t)r * n + i];
            acc[r] += xr * wm;
            for (int s = 0; s <= r; s++, l++) acc[l] += xr * a.X[(ptrdiff_t)s * n + i] * i11;
        }
    }
    if (dx == 0) return; /* the same for the whole block */
    for (int l0 = 0; l0 < nk; l0 += PREC_CH) {
        double w[PREC_CH];
#pragma unroll
        for (int u = 0; u < PREC_CH; u++) w[u] = l0 + u < nk ? acc[l0 + u] : 0.0;
        block_sums<PREC_CH>(sh, w);
#pragma unroll
        for (int u = 0; u < PREC_CH; u++)
            if (l0 + u < nk) acc[l0 + u] = w[u];
    }
    if (threadIdx.x == 0) {
        /* K = X'X / o - K, by Cholesky (lower, in place); z = K^-1 t */
        double K[PREC_DMAX * PREC_DMAX], z[PREC_DMAX];
        for (int r = 0; r < dx; r++)
            for (int s = 0; s <= r; s++) K[r * dx + s] = acc[dx + r * (r + 1) / 2 + s];
        const int ok = svir_pln_kz_solve(K, XtX, dx, dx, oj, acc, z);
        if (ok)
            for (int r = 0; r < dx; r++) zs[r] = z[r];
        oks = ok;
    }
    __syncthreads();
    if (!oks) return;
    /* v += D^-1 [X z; 0] */
    for (int i = threadIdx.x; i < n; i += PB) {
        const ptrdiff_t k = c + i;
        double i11, i12, i22;
        svir_pln_block_inv(A[k], S2[k], oj, &i11, &i12, &i22);
        double xz = 0.0;
        for (int r = 0; r < dx; r++) xz += a.X[(ptrdiff_t)r * n + i] * zs[r];
        v[k] += i11 * xz;
        v[np + k] += i12 * xz;
    }
}

/* H0 for W and log psi (rank q): v[off + k] /= den[k], den the Fisher
 * information's diagonal from the host (pln_precond's) */
__global__ void __launch_bounds__(PB) k_prec_tail(double *__restrict__ v, const double *__restrict__ den,
                                                  ptrdiff_t off, ptrdiff_t len)
{
    for (ptrdiff_t k = (ptrdiff_t)blockIdx.x * PB + threadIdx.x; k < len; k += (ptrdiff_t)gridDim.x * PB)
        v[off + k] = v[off + k] / den[k];
}

/* The start's log S (pln_sstart of src/svir_pln.c): each entry's optimum
 * given its M and Omega_jj, SVIR_PLN_SSTART_IT Newton steps on
 * 1 - S^2 (A + Omega_jj) = 0, each moving log S by at most 1; ls (log S)
 * overwritten, A, S^2, Omega_jj those of ls's evaluation; one block per
 * column */
__global__ void __launch_bounds__(PB) k_sstart(int n, double *__restrict__ ls, const double *__restrict__ A,
                                               const double *__restrict__ S2, const double *__restrict__ omd)
{
    const int j = blockIdx.x;
    const double o = omd[j];
    for (int i = threadIdx.x; i < n; i += PB) {
        const ptrdiff_t k = (ptrdiff_t)j * n + i;
        ls[k] = svir_pln_sstart_entry(ls[k], S2[k], A[k], o);
    }
}

/* y += c x */
__global__ void __launch_bounds__(PB) k_axpy(double *__restrict__ y, double c, const double *__restrict__ x,
                                             ptrdiff_t L)
{
    for (ptrdiff_t k = (ptrdiff_t)blockIdx.x * PB + threadIdx.x; k < L; k += (ptrdiff_t)gridDim.x * PB)
        y[k] += c * x[k];
}

/* x = -x */
__global__ void __launch_bounds__(PB) k_neg(double *__restrict__ x, ptrdiff_t L)
{
    for (ptrdiff_t k = (ptrdiff_t)blockIdx.x * PB + threadIdx.x; k < L; k += (ptrdiff_t)gridDim.x * PB)
        x[k] = -x[k];
}

/* cand = par + t dir */
__global__ void __launch_bounds__(PB) k_cand(double *__restrict__ cand, const double *__restrict__ par,
                                             double t, const double *__restrict__ dir, ptrdiff_t L)
{
    for (ptrdiff_t k = (ptrdiff_t)blockIdx.x * PB + threadIdx.x; k < L; k += (ptrdiff_t)gridDim.x * PB)
        cand[k] = par[k] + t * dir[k];
}

/* s = cand - par, y = g1 - g */
__global__ void __launch_bounds__(PB) k_pair(double *__restrict__ s, double *__restrict__ y,
                                             const double *__restrict__ cand, const double *__restrict__ par,
                                             const double *__restrict__ g1, const double *__restrict__ g,
                                             ptrdiff_t L)
{
    for (ptrdiff_t k = (ptrdiff_t)blockIdx.x * PB + threadIdx.x; k < L; k += (ptrdiff_t)gridDim.x * PB) {
        s[k] = cand[k] - par[k];
        y[k] = g1[k] - g[k];
    }
}

/* ---------------------------------------------------------------- host */

static int nblocks(ptrdiff_t L)
{
    const ptrdiff_t b = (L + PB - 1) / PB;
    return b < 1 ? 1 : b > PLN_DOT_BLOCKS ? PLN_DOT_BLOCKS : (int)b;
}

static int dalloc(svir_cuda_pln *x, double **ptr, ptrdiff_t count, char *err, size_t errlen)
{
    *ptr = NULL;
    if (count <= 0) return 0;
    if (x->ndb >= NDB) {
        snprintf(err, errlen, "svir internal error: too many device buffers");
        return 3;
    }
    void *p = NULL;
    if (svir_cuda_failed(cudaMalloc(&p, sizeof(double) * (size_t)count), "cudaMalloc", err, errlen))
        return 3;
    x->dbuf[x->ndb++] = p;
    *ptr = (double *)p;
    return 0;
}

static int dalloc_int(svir_cuda_pln *x, int **ptr, ptrdiff_t count, char *err, size_t errlen)
{
    double *p = NULL;
    const int st = dalloc(x, &p, (count + 1) / 2, err, errlen);
    *ptr = (int *)p;
    return st;
}

static int halloc(svir_cuda_pln *x, double **ptr, ptrdiff_t count, char *err, size_t errlen)
{
    *ptr = NULL;
    if (count <= 0) return 0;
    *ptr = (double *)malloc(sizeof(double) * (size_t)count);
    if (!*ptr) {
        snprintf(err, errlen, "out of memory fitting the Poisson-lognormal model");
        return 2;
    }
    x->hbuf[x->nhb++] = *ptr;
    return 0;
}

static void pln_free(svir_cuda_pln *x)
{
    if (!x) return;
    for (int k = 0; k < x->ndb; k++) cudaFree(x->dbuf[k]);
    for (int k = 0; k < x->nhb; k++) free(x->hbuf[k]);
    free(x);
}

static ptrdiff_t npar_of(const svir_pln_data *dat)
{
    const ptrdiff_t np = (ptrdiff_t)dat->n * dat->p;
    return 2 * np + (dat->cov == SVIR_PLN_RANK && !dat->Bfix ? (ptrdiff_t)dat->p * (dat->q + 1) : 0);
}

/* the device doubles pln_new allocates (its list, in the same order) */
static double dev_doubles(const svir_pln_data *dat, int fit)
{
    const double n = dat->n, p = dat->p, d = dat->d, np = n * p, L = (double)npar_of(dat);
    const int fixed = dat->Bfix != NULL, rank = dat->cov == SVIR_PLN_RANK && !fixed;
    const double q = rank ? dat->q : 0, nz = dat->Y ? 0.0 : dat->Yp[dat->p];
    double s = 0.0;
    s += dat->Y ? np : nz + (nz + 1) / 2 + (p + 2) / 2;                /* counts */
    s += dat->O ? np : dat->Orow ? n : 0.0;                           /* offsets */
    s += 2 * n * d + d * p;                                           /* X, P, B */
    s += np * (rank || fixed ? 2 : 1);                                /* R, T */
    s += 2 * np + 2 * p + 2 * p * (q + 1);                            /* A, S^2, omd, h0r */
    s += fit ? 2 * np : 0.0;                                          /* the candidate's */
    s += fit && !fixed && dat->d <= PREC_DMAX ? d * d : 0.0;          /* X'X */
    s += (dat->cov == SVIR_PLN_FULL || fixed) ? p * p : 0.0;          /* Omega */
    s += rank ? n * q + 2 * p * q + p : 0.0;                          /* NQ, GV */
    s += 3 * p + 2 * p + p * q + 3 * PLN_DOT_BLOCKS + 4;              /* cols, out, part, scal */
    s += fit ? (5 + 2 * PLN_MEM) * L : 2 * L;                         /* the optimiser */
    return s;
}

extern "C" double svir_cuda_pln_bytes(const svir_pln_data *dat, int fit)
{
    return 8.0 * dev_doubles(dat, fit);
}

extern "C" int svir_cuda_pln_mem(size_t *free_bytes, size_t *total_bytes)
{
    *free_bytes = *total_bytes = 0;
    if (cudaMemGetInfo(free_bytes, total_bytes) != cudaSuccess) {
        (void)cudaGetLastError();
        return 3;
    }
    return 0;
}

/* uploads dat and allocates the work; fit: with the optimiser's vectors */
static int pln_new(const svir_pln_data *dat, int fit, svir_cuda_pln **out, char *err, size_t errlen)
{
    *out = NULL;
    if (dat->cov < 0 || dat->cov > 3 || dat->n < 1 || dat->p < 1 || dat->d < 0 ||
        (dat->cov == SVIR_PLN_RANK && (dat->q < 1 || dat->q > dat->p)) ||
        (!dat->Y && (!dat->Yp || !dat->Yi || !dat->Yx)) || (dat->d > 0 && (!dat->X || !dat->P)) ||
        (dat->Bfix == NULL) != (dat->Omfix == NULL)) {
        snprintf(err, errlen, "svir internal error: bad Poisson-lognormal data for the device");
        return 1;
    }
    /* enough device memory? (a clear message rather than a failed cudaMalloc) */
    size_t fr = 0, tot = 0;
    if (svir_cuda_failed(cudaMemGetInfo(&fr, &tot), "cudaMemGetInfo", err, errlen)) return 3;
    const double need = svir_cuda_pln_bytes(dat, fit);
    if (need > (double)fr) {
        snprintf(err, errlen, "the Poisson-lognormal %s needs %.2f GB of device memory, %.2f GB "
                 "are free (of %.2f GB)", fit ? "fit" : "evaluation", need / 1e9, fr / 1e9, tot / 1e9);
        return 3;
    }
    svir_cuda_pln *x = (svir_cuda_pln *)calloc(1, sizeof *x);
    if (!x) {
        snprintf(err, errlen, "out of memory fitting the Poisson-lognormal model");
        return 2;
    }
    const int n = dat->n, p = dat->p, d = dat->d;
    const ptrdiff_t np = (ptrdiff_t)n * p;
    x->n = n; x->p = p; x->d = d; x->cov = dat->cov; x->fit = fit;
    x->fixed = dat->Bfix != NULL;
    const int rank = dat->cov == SVIR_PLN_RANK && !x->fixed;
    x->q = rank ? dat->q : 0;
    const int q = x->q;
    x->np = np;
    x->L = npar_of(dat);
    x->nd = dat->nd;
    x->lgy = dat->lgy;
    x->logdet_om = dat->logdet_om;
    pln_args *a = &x->a;
    a->n = n; a->p = p; a->d = d; a->q = q; a->np = np;
    int st = 0;
    double *t;
#define DA(ptr, cnt)                                                                    \
    do {                                                                                \
        if ((st = dalloc(x, &(ptr), (cnt), err, errlen))) goto fail;                   \
    } while (0)
#define UP(dst, src, cnt)                                                               \
    do {                                                                                \
        if ((cnt) > 0 && svir_cuda_failed(cudaMemcpy((void *)(dst), (src),             \
                                                     sizeof(*(src)) * (size_t)(cnt),   \
                                                     cudaMemcpyHostToDevice),          \
                                          "cudaMemcpy (upload)", err, errlen)) {       \
            st = 3;                                                                     \
            goto fail;                                                                  \
        }                                                                               \
    } while (0)
    if (dat->Y) {
        DA(t, np); UP(t, dat->Y, np); a->Y = t;
    } else {
        const ptrdiff_t nz = dat->Yp[p];
        int *ip;
        DA(t, nz); UP(t, dat->Yx, nz); a->Yx = t;
        if ((st = dalloc_int(x, &ip, nz, err, errlen))) goto fail;
        UP(ip, dat->Yi, nz); a->Yi = ip;
        if ((st = dalloc_int(x, &ip, (ptrdiff_t)p + 1, err, errlen))) goto fail;
        UP(ip, dat->Yp, (ptrdiff_t)p + 1); a->Yp = ip;
    }
    if (dat->O) {
        DA(t, np); UP(t, dat->O, np); a->O = t;
    } else if (dat->Orow) {
        DA(t, n); UP(t, dat->Orow, n); a->Orow = t;
    }
    if (d > 0) {
        DA(t, (ptrdiff_t)n * d); UP(t, dat->X, (ptrdiff_t)n * d); a->X = t;
        DA(t, (ptrdiff_t)n * d); UP(t, dat->P, (ptrdiff_t)n * d); a->P = t;
        DA(a->B, (ptrdiff_t)d * p);
        if (x->fixed) UP(a->B, dat->Bfix, (ptrdiff_t)d * p);
    }
    DA(a->R, np);
    if (rank || x->fixed) DA(a->T, np);
    for (int s = 0; s < 2; s++) {
        if (s == 1 && !fit) {
            x->A[1] = x->A[0]; x->S2[1] = x->S2[0]; x->omd[1] = x->omd[0]; x->h0r[1] = x->h0r[0];
            continue;
        }
        DA(x->A[s], np);
        DA(x->S2[s], np);
        DA(x->omd[s], p);
        DA(x->h0r[s], (ptrdiff_t)p * (q + 1));
    }
    /* X'X for H0's X part (pln_precond: not in the VE step, d <= 8), summed
     * as svir_pln_fit sums it */
    x->dx = fit && !x->fixed && d <= PREC_DMAX ? d : 0;
    if (x->dx > 0) {
        double *hx;
        if ((st = halloc(x, &hx, (ptrdiff_t)d * d, err, errlen))) goto fail;
        for (int r = 0; r < d; r++)
            for (int c = 0; c < d; c++) {
                double v = 0.0;
                for (int i = 0; i < n; i++) v += dat->X[(ptrdiff_t)r * n + i] * dat->X[(ptrdiff_t)c * n + i];
                hx[r * d + c] = v;
            }
        DA(x->XtX, (ptrdiff_t)d * d);
        UP(x->XtX, hx, (ptrdiff_t)d * d);
    }
    if (dat->cov == SVIR_PLN_FULL || x->fixed) DA(a->Om, (ptrdiff_t)p * p);
    if (x->fixed) UP(a->Om, dat->Omfix, (ptrdiff_t)p * p);
    if (rank) {
        DA(a->NQ, (ptrdiff_t)n * q);
        DA(x->GV, 2 * (ptrdiff_t)p * q + p);
        a->G = x->GV;
        a->V = x->GV + (ptrdiff_t)p * q;
        a->ipsi = x->GV + 2 * (ptrdiff_t)p * q;
    }
    DA(a->cols, 3 * (ptrdiff_t)p);
    DA(a->out, 2 * (ptrdiff_t)p + (ptrdiff_t)p * q);
    DA(x->part, 3 * PLN_DOT_BLOCKS);
    DA(x->scal, 4);
    DA(x->par, x->L);
    DA(x->g, x->L);
    if (fit) {
        DA(x->cand, x->L);
        DA(x->g1, x->L);
        DA(x->dir, x->L);
        DA(x->Sv, x->L * PLN_MEM);
        DA(x->Yv, x->L * PLN_MEM);
    }
#undef DA
#undef UP
    /* host work */
    if ((st = halloc(x, &x->hcols, 3 * (ptrdiff_t)p + 2 * p + (ptrdiff_t)p * q, err, errlen))) goto fail;
    if ((st = halloc(x, &x->homd, p, err, errlen))) goto fail;
    if ((st = halloc(x, &x->hh0r, (ptrdiff_t)p * (q + 1), err, errlen))) goto fail;
    if (dat->cov == SVIR_PLN_FULL || x->fixed)
        if ((st = halloc(x, &x->hOm, (ptrdiff_t)p * p, err, errlen))) goto fail;
    if (rank) {
        const ptrdiff_t pq = (ptrdiff_t)p * q;
        if ((st = halloc(x, &x->hW, pq + p, err, errlen))) goto fail;
        if ((st = halloc(x, &x->hsmall, 5 * pq + 2 * (ptrdiff_t)p + 3 * (ptrdiff_t)q * q, err, errlen)))
            goto fail;
        x->hG = x->hsmall;       /* G, V, 1 / psi: uploaded together */
        x->hV = x->hG + pq;
        x->hOW = x->hV + pq + p; /* after 1 / psi */
        x->hX2 = x->hOW + pq;
        x->hPQ = x->hX2 + pq;
        x->hK = x->hPQ + pq;
        x->hKmI = x->hK + (ptrdiff_t)q * q;
        x->hQs = x->hKmI + (ptrdiff_t)q * q;
        x->hgl = x->hQs + (ptrdiff_t)q * q;
    }
    if (x->fixed) {
        /* Omega_jj of the VE step, for both points */
        for (int j = 0; j < p; j++) x->homd[j] = dat->Omfix[(ptrdiff_t)j * p + j];
        for (int s = 0; s < (fit ? 2 : 1); s++)
            if (svir_cuda_failed(cudaMemcpy(x->omd[s], x->homd, sizeof(double) * p, cudaMemcpyHostToDevice),
                                 "cudaMemcpy (upload)", err, errlen)) {
                st = 3;
                goto fail;
            }
    }
    *out = x;
    return 0;
fail:
    pln_free(x);
    return st;
}

/* J (host) and grad (device) at dpar (device), A and S^2 into point set s;
 * Sigma (host, or NULL: not wanted). Returns 0, 1 (the model's failure) or
 * 3 (CUDA). */
static int pln_eval_dev(svir_cuda_pln *x, const double *dpar, int set, double *J, double *grad,
                        double *Sigma, char *err, size_t errlen)
{
    pln_args *a = &x->a;
    const int n = x->n, p = x->p, d = x->d, q = x->q;
    const ptrdiff_t np = x->np;
    const double nd = x->nd;
    const double *M = dpar, *ls = dpar + np;
    if (d > 0 && !x->fixed) {
        k_bpm<<<p, PB>>>(*a, M);
        KCK("k_bpm");
    }
    k_col<<<p, PB>>>(*a, M, ls, grad, x->A[set], x->S2[set]);
    KCK("k_col");
    double *hc = x->hcols, *omd = x->homd;
    PCK(cudaMemcpy(hc, a->cols, sizeof(double) * 3 * (size_t)p, cudaMemcpyDeviceToHost));
    const double *colv = hc, *s2sum = hc + p, *rr = hc + 2 * p;
    double lik = 0.0;
    for (int j = 0; j < p; j++) lik += colv[j];
    lik -= x->lgy;
    int diag = 0;
    dim3 tb(TS, TS);
    if (x->fixed) {
        /* the VE step: T = R Omega, J = lik + n p / 2 + n / 2 log |Omega|
         * - tr(Omega (R'R + diag(s2sum))) / 2 */
        dim3 gr((n + TS - 1) / TS, (p + TS - 1) / TS);
        k_rom<<<gr, tb>>>(a->R, a->Om, n, p, a->T, 0);
        KCK("k_rom");
        k_tcol<<<p, PB>>>(*a, grad, 0);
        KCK("k_tcol");
        double *ho = hc + 3 * p;
        PCK(cudaMemcpy(ho, a->out, sizeof(double) * 2 * (size_t)p, cudaMemcpyDeviceToHost));
        double tr = 0.0;
        for (int j = 0; j < p; j++) tr += ho[j] + s2sum[j] * omd[j];
        *J = lik + 0.5 * (double)np + 0.5 * n * x->logdet_om - 0.5 * tr;
    } else if (x->cov == SVIR_PLN_FULL) {
        double *Om = x->hOm;
        const double invn = 1.0 / nd;
        double logdet = 0.0;
        dim3 gg((p + TS - 1) / TS, (p + TS - 1) / TS);
        k_gram<<<gg, tb>>>(a->R, n, p, a->Om);
        KCK("k_gram");
        PCK(cudaMemcpy(Om, a->Om, sizeof(double) * (size_t)p * p, cudaMemcpyDeviceToHost));
        for (int j = 0; j < p; j++)
            for (int i = j; i < p; i++) Om[(ptrdiff_t)j * p + i] *= invn;
        for (int j = 0; j < p; j++) Om[(ptrdiff_t)j * p + j] += s2sum[j] * invn;
        if (Sigma)
            for (int j = 0; j < p; j++)
                for (int i = j; i < p; i++)
                    Sigma[(ptrdiff_t)j * p + i] = Sigma[(ptrdiff_t)i * p + j] = Om[(ptrdiff_t)j * p + i];
        if (svir_pln_spd_inverse(p, Om, omd, &logdet, err, errlen)) return 1;
        PCK(cudaMemcpy(a->Om, Om, sizeof(double) * (size_t)p * p, cudaMemcpyHostToDevice));
        dim3 gr((n + TS - 1) / TS, (p + TS - 1) / TS);
        k_rom<<<gr, tb>>>(a->R, a->Om, n, p, grad, 1);
        KCK("k_rom");
        *J = lik - 0.5 * nd * logdet + 0.5 * (n - nd) * p;
    } else if (x->cov == SVIR_PLN_RANK) {
        const ptrdiff_t pq = (ptrdiff_t)p * q;
        double *W = x->hW, *lpsi = x->hW + pq, *V = x->hV, *G = x->hG, *ipsi = x->hV + pq;
        double *K = x->hK, *KmI = x->hKmI, *OW = x->hOW, *PQ = x->hPQ, *X2 = x->hX2, *Qs = x->hQs;
        PCK(cudaMemcpy(W, dpar + 2 * np, sizeof(double) * (size_t)(pq + p), cudaMemcpyDeviceToHost));
        double logdet = 0.0;
        if (svir_pln_wb_small(p, q, W, lpsi, ipsi, V, KmI, K, G, omd, &logdet, err, errlen)) return 1;
        /* G, V, 1 / psi up; NQ = R G; T = R Psi^-1 - NQ V' (dJ/dM -= T) */
        PCK(cudaMemcpy(x->GV, G, sizeof(double) * (size_t)(2 * pq + p), cudaMemcpyHostToDevice));
        dim3 gq((n + PB - 1) / PB, (q + QC - 1) / QC);
        k_rmul<<<gq, PB>>>(a->R, a->G, n, p, q, a->NQ);
        KCK("k_rmul");
        k_tcol<<<p, PB>>>(*a, grad, 1);
        KCK("k_tcol");
        /* NQ = T W, PQ = T'(T W) */
        k_rmul<<<gq, PB>>>(a->T, dpar + 2 * np, n, p, q, a->NQ);
        KCK("k_rmul");
        k_atb<<<p, PB>>>(a->T, a->NQ, n, p, q, a->out + 2 * p);
        KCK("k_atb");
        double *ho = hc + 3 * p; /* sum R T [p], sum T^2 [p], PQ [p q] */
        PCK(cudaMemcpy(ho, a->out, sizeof(double) * (size_t)(2 * p + pq), cudaMemcpyDeviceToHost));
        double tr = 0.0;
        for (int j = 0; j < p; j++) tr += ho[j] + s2sum[j] * omd[j];
        const double *colt2 = ho + p;
        memcpy(PQ, ho + 2 * p, sizeof(double) * (size_t)pq);
        /* dJ/dW and dJ/d log psi (svir_pln_rank_grad, as on the CPU), up
         * into grad's tail; then H0's denominators for them (k_prec_tail) */
        double *gW = x->hh0r, *glt = x->hgl;
        svir_pln_rank_grad(p, q, nd, lpsi, ipsi, V, KmI, G, omd, s2sum, colt2, PQ, OW, X2, Qs, gW, glt);
        PCK(cudaMemcpy(grad + 2 * np, gW, sizeof(double) * (size_t)pq, cudaMemcpyHostToDevice));
        PCK(cudaMemcpy(grad + 2 * np + pq, glt, sizeof(double) * (size_t)p, cudaMemcpyHostToDevice));
        svir_pln_rank_h0den(p, q, nd, W, lpsi, OW, omd, x->hh0r);
        PCK(cudaMemcpy(x->h0r[set], x->hh0r, sizeof(double) * (size_t)(pq + p), cudaMemcpyHostToDevice));
        if (Sigma) svir_pln_sigma_lowrank(p, q, W, lpsi, Sigma);
        *J = lik + 0.5 * (double)np - 0.5 * nd * logdet - 0.5 * tr;
    } else {
        /* diagonal or spherical: Omega is diagonal */
        double tot = 0.0, logdet = 0.0;
        for (int j = 0; j < p; j++) {
            const double s = s2sum[j] + rr[j];
            omd[j] = s / nd;
            tot += s;
        }
        for (int j = 0; j < p; j++) {
            const double v = x->cov == SVIR_PLN_SPHERICAL ? tot / (nd * p) : omd[j];
            if (!(v > 0.0) || !isfinite(v)) {
                snprintf(err, errlen, "the estimated variance of column %d is not positive", j + 1);
                return 1;
            }
            omd[j] = 1.0 / v;
            logdet += log(v);
            if (Sigma)
                for (int i = 0; i < p; i++) Sigma[(ptrdiff_t)j * p + i] = i == j ? v : 0.0;
        }
        diag = 1;
        *J = lik - 0.5 * nd * logdet + 0.5 * (n - nd) * p;
    }
    if (!x->fixed)
        PCK(cudaMemcpy(x->omd[set], omd, sizeof(double) * (size_t)p, cudaMemcpyHostToDevice));
    k_grad_ls<<<p, PB>>>(*a, x->omd[set], x->A[set], x->S2[set], grad, diag);
    KCK("k_grad_ls");
    if (!isfinite(*J)) {
        snprintf(err, errlen, "the ELBO is not finite");
        return 1;
    }
    return 0;
}

/* res[c] = a_c . b_c, c < nv (<= 3), by k_dots and k_fold */
static int dots(svir_cuda_pln *x, int nv, const double *a0, const double *b0, const double *a1,
                const double *b1, const double *a2, const double *b2, double *res, char *err,
                size_t errlen)
{
    const int nb = nblocks(x->L);
    k_dots<<<nb, PB>>>(a0, b0, a1, b1, a2, b2, nv, x->L, x->part);
    KCK("k_dots");
    k_fold<<<1, PB>>>(x->part, nb, nv, 0, x->scal);
    KCK("k_fold");
    PCK(cudaMemcpy(res, x->scal, sizeof(double) * (size_t)nv, cudaMemcpyDeviceToHost));
    return 0;
}

static int dot1(svir_cuda_pln *x, const double *a0, const double *b0, double *res, char *err, size_t errlen)
{
    return dots(x, 1, a0, b0, a0, b0, a0, b0, res, err, errlen);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

extern "C" int svir_cuda_pln_eval_host(const svir_pln_data *dat, const double *par, double *J,
                                       double *grad, double *B, double *Sigma, char *err, size_t errlen)
{
    svir_cuda_pln *x = NULL;
    int st = pln_new(dat, 0, &x, err, errlen);
    if (st) return st;
    const size_t Lb = sizeof(double) * (size_t)x->L;
    if (svir_cuda_failed(cudaMemcpy(x->par, par, Lb, cudaMemcpyHostToDevice), "cudaMemcpy (par)", err, errlen))
        st = 3;
    if (!st) st = pln_eval_dev(x, x->par, 0, J, x->g, x->fixed ? NULL : Sigma, err, errlen);
    if (!st && svir_cuda_failed(cudaMemcpy(grad, x->g, Lb, cudaMemcpyDeviceToHost), "cudaMemcpy (grad)", err, errlen))
        st = 3;
    if (!st && x->d > 0 &&
        svir_cuda_failed(cudaMemcpy(B, x->a.B, sizeof(double) * (size_t)x->d * x->p, cudaMemcpyDeviceToHost),
                         "cudaMemcpy (B)", err, errlen))
        st = 3;
    pln_free(x);
    return st;
}

/* v = H0 v (pln_precond) at point set cur */
static int pln_h0(svir_cuda_pln *x, int cur, double *v, char *err, size_t errlen)
{
    const ptrdiff_t tail = x->L - 2 * x->np;
    k_prec<<<x->p, PB>>>(x->a, v, x->A[cur], x->S2[cur], x->omd[cur], x->XtX, x->dx);
    KCK("k_prec");
    if (tail > 0) {
        k_prec_tail<<<nblocks(tail), PB>>>(v, x->h0r[cur], 2 * x->np, tail);
        KCK("k_prec_tail");
    }
    return 0;
}

/* The L-BFGS of svir_pln_fit (src/svir_pln.c): the same algorithm (the
 * S start, 5 pairs, pln_precond's H0, Armijo backtracking, the step caps,
 * the stopping rule); the two-loop recursion in its textbook form (the
 * CPU's Gram form computes the same direction with sums in another
 * order). */
static int pln_lbfgs(svir_cuda_pln *x, int maxit, double tol, double *J, int *iters, double *trace,
                     double *Sigma, char *err, size_t errlen)
{
    const ptrdiff_t L = x->L, np = x->np;
    const int gb = nblocks(L);
    double rho[PLN_MEM], alpha[PLN_MEM];
    int it = 0, mem = 0, head = 0, fails = 0, cur = 0, st;
    double f0, f1; /* f = -J, g = -grad */
    char e1[256];
    st = pln_eval_dev(x, x->par, cur, &f0, x->g, NULL, err, errlen);
    if (st) return st;
    /* log S at each entry's optimum given M (pln_sstart), evaluated again */
    k_sstart<<<x->p, PB>>>(x->n, x->par + np, x->A[cur], x->S2[cur], x->omd[cur]);
    KCK("k_sstart");
    st = pln_eval_dev(x, x->par, cur, &f0, x->g, NULL, err, errlen);
    if (st) return st;
    f0 = -f0;
    k_neg<<<gb, PB>>>(x->g, L);
    KCK("k_neg");
    for (it = 0; it < maxit;) {
        /* the two-loop recursion: dir = -H g */
        PCK(cudaMemcpy(x->dir, x->g, sizeof(double) * (size_t)L, cudaMemcpyDeviceToDevice));
        for (int c = 0; c < mem; c++) {
            const int i = (head - 1 - c + PLN_MEM) % PLN_MEM;
            double sd;
            if ((st = dot1(x, x->Sv + (ptrdiff_t)i * L, x->dir, &sd, err, errlen))) return st;
            alpha[i] = rho[i] * sd;
            k_axpy<<<gb, PB>>>(x->dir, -alpha[i], x->Yv + (ptrdiff_t)i * L, L);
            KCK("k_axpy");
        }
        if ((st = pln_h0(x, cur, x->dir, err, errlen))) return st;
        for (int c = mem - 1; c >= 0; c--) {
            const int i = (head - 1 - c + PLN_MEM) % PLN_MEM;
            double yd;
            if ((st = dot1(x, x->Yv + (ptrdiff_t)i * L, x->dir, &yd, err, errlen))) return st;
            const double beta = rho[i] * yd;
            k_axpy<<<gb, PB>>>(x->dir, alpha[i] - beta, x->Sv + (ptrdiff_t)i * L, L);
            KCK("k_axpy");
        }
        k_neg<<<gb, PB>>>(x->dir, L);
        KCK("k_neg");
        double slope;
        if ((st = dot1(x, x->g, x->dir, &slope, err, errlen))) return st;
        if (!(slope < 0.0)) {
            /* not a descent direction: forget the pairs */
            mem = 0;
            PCK(cudaMemcpy(x->dir, x->g, sizeof(double) * (size_t)L, cudaMemcpyDeviceToDevice));
            if ((st = pln_h0(x, cur, x->dir, err, errlen))) return st;
            k_neg<<<gb, PB>>>(x->dir, L);
            KCK("k_neg");
            if ((st = dot1(x, x->g, x->dir, &slope, err, errlen))) return st;
        }
        double big;
        const int nb = nblocks(L);
        k_maxcap<<<nb, PB>>>(x->dir, np, L, x->part);
        KCK("k_maxcap");
        k_fold<<<1, PB>>>(x->part, nb, 1, 1, x->scal);
        KCK("k_fold");
        PCK(cudaMemcpy(&big, x->scal, sizeof(double), cudaMemcpyDeviceToHost));
        double t = big > 1.0 ? 1.0 / big : 1.0;
        int ok = 0;
        for (int tries = 0; tries < 40 && !ok; tries++) {
            k_cand<<<gb, PB>>>(x->cand, x->par, t, x->dir, L);
            KCK("k_cand");
            const int e = pln_eval_dev(x, x->cand, 1 - cur, &f1, x->g1, NULL, e1, sizeof e1);
            if (e > 1) {
                snprintf(err, errlen, "%s", e1);
                return e;
            }
            ok = e == 0 && -f1 <= f0 + 1e-4 * t * slope;
            if (!ok) t *= 0.5;
        }
        if (!ok) {
            if (mem == 0 || ++fails > 1) break;
            mem = 0; /* retry once from the preconditioned steepest direction */
            continue;
        }
        fails = 0;
        f1 = -f1;
        k_neg<<<gb, PB>>>(x->g1, L);
        KCK("k_neg");
        /* the pair (s, y) of this step */
        double *s = x->Sv + (ptrdiff_t)head * L, *y = x->Yv + (ptrdiff_t)head * L;
        k_pair<<<gb, PB>>>(s, y, x->cand, x->par, x->g1, x->g, L);
        KCK("k_pair");
        double r3[3];
        if ((st = dots(x, 3, s, y, s, s, y, y, r3, err, errlen))) return st;
        const double sy = r3[0];
        if (sy > 1e-12 * sqrt(r3[1] * r3[2])) {
            rho[head] = 1.0 / sy;
            head = (head + 1) % PLN_MEM;
            if (mem < PLN_MEM) mem++;
        }
        double *tmp = x->par; x->par = x->cand; x->cand = tmp;
        tmp = x->g; x->g = x->g1; x->g1 = tmp;
        cur = 1 - cur;
        const double rel = (f0 - f1) / fabs(f1);
        f0 = f1;
        if (trace) trace[it] = -f0;
        it++;
        if (rel < tol) break;
    }
    /* B and Sigma of the final point */
    st = pln_eval_dev(x, x->par, cur, &f0, x->g, x->fixed ? NULL : Sigma, err, errlen);
    *J = f0;
    *iters = it;
    return st;
}

extern "C" int svir_cuda_pln_fit(const svir_pln_data *dat, double *par, int maxit, double tol,
                                 double *J, int *iters, double *trace, double *B, double *Sigma,
                                 double *secs, char *err, size_t errlen)
{
    svir_cuda_pln *x = NULL;
    *iters = 0;
    int st = pln_new(dat, 1, &x, err, errlen);
    if (st) return st;
    const size_t Lb = sizeof(double) * (size_t)x->L;
    if (svir_cuda_failed(cudaMemcpy(x->par, par, Lb, cudaMemcpyHostToDevice), "cudaMemcpy (par)", err, errlen))
        st = 3;
    const double t0 = now_s();
    if (!st) st = pln_lbfgs(x, maxit, tol, J, iters, trace, Sigma, err, errlen);
    if (!st && svir_cuda_failed(cudaDeviceSynchronize(), "cudaDeviceSynchronize", err, errlen)) st = 3;
    if (secs) *secs = now_s() - t0;
    if (!st && svir_cuda_failed(cudaMemcpy(par, x->par, Lb, cudaMemcpyDeviceToHost), "cudaMemcpy (par)", err, errlen))
        st = 3;
    if (!st && x->d > 0 &&
        svir_cuda_failed(cudaMemcpy(B, x->a.B, sizeof(double) * (size_t)x->d * x->p, cudaMemcpyDeviceToHost),
                         "cudaMemcpy (B)", err, errlen))
        st = 3;
    pln_free(x);
    return st;
}
