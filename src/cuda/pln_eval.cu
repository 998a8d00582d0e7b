/* The Poisson-lognormal model's objective on the CUDA device
 * (models/pln/pln_cuda.h; the CPU version, whose per-entry formulas this
 * follows, is models/pln/pln_eval.c, dev/PLN.md; its L-BFGS problem is
 * cuda/pln_lbfgs.cu). tools/gpucheck and tests/testthat/test-cuda.R
 * compare it with the CPU where a device is present (dev/CUDA.md).
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
#include "cuda/pln_dev.cuh"

/* ---------------------------------------------------------------- kernels */

/* B[l, j] = sum_i P[l, i] M[i, j]; one block per column j */
__global__ void __launch_bounds__(PB) k_bpm(const pln_args a, const double *__restrict__ M)
{
    SVIR_SHARED(double, sh, [PB]);
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
    SVIR_SHARED(double, sh, [3 * PB]);
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
    SVIR_SHARED(double, Ra, [TS][TS + 1]);
    SVIR_SHARED(double, Rb, [TS][TS + 1]);
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
    SVIR_SHARED(double, Rs, [TS][TS + 1]);
    SVIR_SHARED(double, Os, [TS][TS + 1]);
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
    SVIR_SHARED(double, sh, [2 * PB]);
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
    SVIR_SHARED(double, sh, [QC * PB]);
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

/* ---------------------------------------------------------------- host */

/* J (host) and grad (device) at dpar (device), A and S^2 into point set s;
 * Sigma (host, or NULL: not wanted). Returns 0, 1 (the model's failure) or
 * 3 (CUDA). */
int pln_eval_dev(svir_cuda_pln *x, const double *dpar, int set, double *J, double *grad,
                        double *Sigma, char *err, size_t errlen)
{
    pln_args *a = &x->a;
    const int n = x->n, p = x->p, d = x->d, q = x->q;
    const ptrdiff_t np = x->np;
    const double nd = x->nd;
    /* Sigma's closed form divides by nk (the prior's k0 added; pln_eval.c) */
    const double nk = nd + x->k0, s0 = x->s0;
    const double *M = dpar, *ls = dpar + np;
    if (d > 0 && !x->fixed) {
        SVIR_LAUNCH(p, PB, k_bpm)(*a, M);
        KCK("k_bpm");
    }
    SVIR_LAUNCH(p, PB, k_col)(*a, M, ls, grad, x->A[set], x->S2[set]);
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
        SVIR_LAUNCH(gr, tb, k_rom)(a->R, a->Om, n, p, a->T, 0);
        KCK("k_rom");
        SVIR_LAUNCH(p, PB, k_tcol)(*a, grad, 0);
        KCK("k_tcol");
        double *ho = hc + 3 * p;
        PCK(cudaMemcpy(ho, a->out, sizeof(double) * 2 * (size_t)p, cudaMemcpyDeviceToHost));
        double tr = 0.0;
        for (int j = 0; j < p; j++) tr += ho[j] + s2sum[j] * omd[j];
        *J = lik + 0.5 * (double)np + 0.5 * n * x->logdet_om - 0.5 * tr;
    } else if (x->cov == SVIR_PLN_FULL) {
        double *Om = x->hOm;
        const double invn = 1.0 / nk;
        double logdet = 0.0;
        dim3 gg((p + TS - 1) / TS, (p + TS - 1) / TS);
        SVIR_LAUNCH(gg, tb, k_gram)(a->R, n, p, a->Om);
        KCK("k_gram");
        PCK(cudaMemcpy(Om, a->Om, sizeof(double) * (size_t)p * p, cudaMemcpyDeviceToHost));
        for (int j = 0; j < p; j++)
            for (int i = j; i < p; i++) Om[(ptrdiff_t)j * p + i] *= invn;
        for (int j = 0; j < p; j++) Om[(ptrdiff_t)j * p + j] += (s2sum[j] + s0) * invn;
        if (Sigma)
            for (int j = 0; j < p; j++)
                for (int i = j; i < p; i++)
                    Sigma[(ptrdiff_t)j * p + i] = Sigma[(ptrdiff_t)i * p + j] = Om[(ptrdiff_t)j * p + i];
        if (svir_pln_spd_inverse(p, Om, omd, &logdet, err, errlen)) return 1;
        PCK(cudaMemcpy(a->Om, Om, sizeof(double) * (size_t)p * p, cudaMemcpyHostToDevice));
        dim3 gr((n + TS - 1) / TS, (p + TS - 1) / TS);
        SVIR_LAUNCH(gr, tb, k_rom)(a->R, a->Om, n, p, grad, 1);
        KCK("k_rom");
        *J = lik - 0.5 * nk * logdet + 0.5 * (n - nd) * p;
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
        SVIR_LAUNCH(gq, PB, k_rmul)(a->R, a->G, n, p, q, a->NQ);
        KCK("k_rmul");
        SVIR_LAUNCH(p, PB, k_tcol)(*a, grad, 1);
        KCK("k_tcol");
        /* NQ = T W, PQ = T'(T W) */
        SVIR_LAUNCH(gq, PB, k_rmul)(a->T, dpar + 2 * np, n, p, q, a->NQ);
        KCK("k_rmul");
        SVIR_LAUNCH(p, PB, k_atb)(a->T, a->NQ, n, p, q, a->out + 2 * p);
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
            omd[j] = (s + s0) / nk;
            tot += s;
        }
        for (int j = 0; j < p; j++) {
            const double v = x->cov == SVIR_PLN_SPHERICAL ? (tot + s0) / (nk * p) : omd[j];
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
        *J = lik - 0.5 * nk * logdet + 0.5 * (n - nd) * p;
    }
    if (!x->fixed)
        PCK(cudaMemcpy(x->omd[set], omd, sizeof(double) * (size_t)p, cudaMemcpyHostToDevice));
    SVIR_LAUNCH(p, PB, k_grad_ls)(*a, x->omd[set], x->A[set], x->S2[set], grad, diag);
    KCK("k_grad_ls");
    if (!isfinite(*J)) {
        snprintf(err, errlen, "the ELBO is not finite");
        return 1;
    }
    return 0;
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

