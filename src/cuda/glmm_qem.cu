/* CUDA backend for QEM (method = "qem", backend = "cuda"; see dev/QEM.md and
 * src/svir_qem.c). The work that grows with the data runs on the device:
 * each group's K draws z0, X beta for the K draws of the globals, the K x K
 * table of every group (log f_j(k0, kj) = the group's log-likelihood at
 * (theta_k0, z0_kj) plus log N(z0; 0, I) - log q0(z0)), its rows normalised
 * into log m_j(k0) and f / (K m_j), and the groups' E- and M-step (their
 * marginal weights, moments, moving average and matched proposals). The
 * globals (K draws, log p - log q, their weights and moments: O(K D^2))
 * stay on the host, which is why one iteration moves J x K doubles (log
 * m_j) down and K (p + q^2 + 5) + K doubles up, and nothing else.
 *
 * The arithmetic is the CPU's: the draws come from svir_philox.h with the
 * same counters, the likelihood from svir_loglik with the family and link as
 * compile-time constants, the per-group steps from models/glmm/glmm_qem.h and
 * glmm_local.h. Every table entry is computed by one thread in the CPU's
 * order, without reductions across threads, so the results differ from the
 * CPU's only by the library's exp/log and, for Gaussian models and Poisson
 * random intercepts, by the CPU's sufficient sums (the device evaluates
 * every observation). tests/testthat/test-cuda.R compares whole fits with
 * the CPU's when a device is present.
 *
 * Device memory: the data in the groups' order (n (p + q + 3) doubles), X
 * beta for the K draws (K n), the tables (J K^2), the draws (K J q) and the
 * groups' moments (J (q + q^2)). */
#include "cuda/svir_cuda_common.cuh"

#include <algorithm>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/glmm/glmm_cuda.h"
#include "models/glmm/glmm_local.h"
#include "core/svir_philox.h"
#include "models/glmm/glmm_qem.h"

#define QEM_BLOCK 256

#define QCK(call)                                                                       \
    do {                                                                                \
        if (svir_cuda_failed((call), #call, err, errlen)) return 3;                     \
    } while (0)

/* what the kernels read, by value */
typedef struct {
    int K, q, J, p, z_ones;
    ptrdiff_t n, nz, lb;
    uint32_t k0, k1;             /* the Philox key */
    const double *y, *trials;    /* [n], in the groups' order (trials may be NULL) */
    const double *os, *xs, *zs_data; /* offsets [n], X [n x p] and Z [n x q] row-major */
    const int *rowptr;           /* [J + 1] */
    double *lpar, *Z1, *Z2;      /* the groups' proposals and smoothed moments */
    const double *beta, *A;      /* [K x p], [K x q x q] */
    const svir_aux *aux;         /* [K] */
    double *xb, *z0, *lzp, *lf, *lm, *w0, *ws;
} qem_dev;

struct svir_cuda_qem {
    qem_dev d;
    int family, link;
    double *bufs[24];
    int nbufs;
    svir_aux *aux;
};

static int grid_of(ptrdiff_t count)
{
    const ptrdiff_t g = (count + QEM_BLOCK - 1) / QEM_BLOCK;
    return (int)std::max<ptrdiff_t>(1, std::min<ptrdiff_t>(g, 65535));
}

/* each group's K draws z0 from its proposal, and log N(z0; 0, I) - log q0(z0) */
__global__ void k_qem_draw(const qem_dev d, uint64_t stream, uint64_t ctr)
{
    const uint32_t key[2] = {d.k0, d.k1};
    const ptrdiff_t total = (ptrdiff_t)d.J * d.K;
    for (ptrdiff_t t = (ptrdiff_t)blockIdx.x * blockDim.x + threadIdx.x; t < total;
         t += (ptrdiff_t)gridDim.x * blockDim.x) {
        const int j = (int)(t / d.K), kj = (int)(t % d.K), q = d.q;
        const double *blk = d.lpar + (ptrdiff_t)j * d.lb;
        double ed[SVIR_QMAX_STACK], noise[SVIR_QMAX_STACK];
        double *z0 = d.z0 + (ptrdiff_t)kj * d.nz + (ptrdiff_t)j * q;
        svir_local_exp_diag(q, blk, ed);
        svir_normal_fill(key, stream, ctr, (uint64_t)kj * (uint64_t)d.nz + (uint64_t)j * (uint64_t)q,
                         q, noise);
        const double lq = svir_local_draw(q, blk, noise, ed, z0);
        double lp = 0.0;
        for (int r = 0; r < q; r++) lp += -0.5 * z0[r] * z0[r] - SVIR_LOG_SQRT_2PI;
        d.lzp[t] = lp - lq;
    }
}

/* xb[k0 n + r] = offset + x_r beta_k0, rows in the groups' order */
__global__ void k_qem_xb(const qem_dev d)
{
    const ptrdiff_t total = (ptrdiff_t)d.K * d.n;
    for (ptrdiff_t t = (ptrdiff_t)blockIdx.x * blockDim.x + threadIdx.x; t < total;
         t += (ptrdiff_t)gridDim.x * blockDim.x) {
        const ptrdiff_t k0 = t / d.n, r = t % d.n;
        const double *xr = d.xs + r * d.p, *beta = d.beta + k0 * d.p;
        double e = d.os[r];
        for (int c = 0; c < d.p; c++) e += xr[c] * beta[c];
        d.xb[t] = e;
    }
}

/* the table: one thread per (j, k0, kj) sums the group's log-likelihood */
template <int FAM, int LINK>
__global__ void __launch_bounds__(QEM_BLOCK) k_qem_pairs(const qem_dev d)
{
    svir_glmm m;
    memset(&m, 0, sizeof m);
    m.y = d.y;
    m.trials = d.trials;
    const int K = d.K, q = d.q;
    const ptrdiff_t KK = (ptrdiff_t)K * K, total = (ptrdiff_t)d.J * KK;
    for (ptrdiff_t t = (ptrdiff_t)blockIdx.x * blockDim.x + threadIdx.x; t < total;
         t += (ptrdiff_t)gridDim.x * blockDim.x) {
        const int j = (int)(t / KK), k0 = (int)((t / K) % K), kj = (int)(t % K);
        const double *z = d.z0 + (ptrdiff_t)kj * d.nz + (ptrdiff_t)j * q;
        double b[SVIR_QMAX_STACK];
        svir_local_b(q, d.A + (ptrdiff_t)k0 * q * q, z, b);
        const svir_aux aux = d.aux[k0];
        const double *xb = d.xb + (ptrdiff_t)k0 * d.n;
        double ll = 0.0, dd, da;
        for (int r = d.rowptr[j]; r < d.rowptr[j + 1]; r++) {
            double eta = xb[r];
            if (d.z_ones) {
                eta += b[0];
            } else {
                for (int c = 0; c < q; c++) eta += d.zs_data[(ptrdiff_t)r * q + c] * b[c];
            }
            ll += svir_loglik(&m, FAM, LINK, r, eta, &aux, &dd, &da);
        }
        d.lf[t] = ll + d.lzp[(ptrdiff_t)j * K + kj];
    }
}

/* each row (j, k0): log m_j(k0), and the row normalised */
__global__ void k_qem_rows(const qem_dev d, double logK)
{
    const ptrdiff_t total = (ptrdiff_t)d.J * d.K;
    for (ptrdiff_t t = (ptrdiff_t)blockIdx.x * blockDim.x + threadIdx.x; t < total;
         t += (ptrdiff_t)gridDim.x * blockDim.x)
        d.lm[t] = svir_qem_row(d.K, d.lf + t * d.K, logK);
}

/* each group's E- and M-step */
__global__ void k_qem_mstep(const qem_dev d, double et)
{
    const int K = d.K, q = d.q;
    const ptrdiff_t wsz = (ptrdiff_t)K + q + 2 * (ptrdiff_t)q * q;
    for (ptrdiff_t j = (ptrdiff_t)blockIdx.x * blockDim.x + threadIdx.x; j < d.J;
         j += (ptrdiff_t)gridDim.x * blockDim.x) {
        double *w = d.ws + j * wsz;
        svir_qem_group_mstep(q, K, d.lf + j * K * K, d.w0, d.z0 + j * q, d.nz, et,
                             d.Z1 + j * q, d.Z2 + j * q * q, d.lpar + j * d.lb, w, w + K,
                             w + K + q, w + K + q + (ptrdiff_t)q * q);
    }
}

/* ---- host side ------------------------------------------------------------- */

extern "C" void svir_cuda_qem_free(svir_cuda_qem *x)
{
    if (!x) return;
    for (int i = 0; i < x->nbufs; i++) cudaFree(x->bufs[i]);
    cudaFree(x->aux);
    free(x);
}

/* a device buffer of count doubles, kept for svir_cuda_qem_free, filled from
 * src if not NULL */
static cudaError_t qbuf(svir_cuda_qem *x, double **dst, const double *src, size_t count)
{
    *dst = NULL;
    cudaError_t e = cudaMalloc((void **)dst, sizeof(double) * (count > 0 ? count : 1));
    if (e != cudaSuccess) return e;
    x->bufs[x->nbufs++] = *dst;
    if (src && count > 0) e = cudaMemcpy(*dst, src, sizeof(double) * count, cudaMemcpyHostToDevice);
    return e;
}

extern "C" int svir_cuda_qem_new(const svir_glmm *m, int K, uint64_t seed, const double *lpar,
                                 const double *Z1, const double *Z2, svir_cuda_qem **out,
                                 char *err, size_t errlen)
{
    *out = NULL;
    if (m->nterms != 1 || m->terms[0].q > SVIR_QMAX_STACK || K < 2 || K > SVIR_QEM_KMAX) {
        snprintf(err, errlen, "QEM on the device takes one grouping factor, q <= %d and K in 2..%d",
                 SVIR_QMAX_STACK, SVIR_QEM_KMAX);
        return 1;
    }
    const svir_term *tm = &m->terms[0];
    const size_t n = (size_t)m->n, p = (size_t)m->p, q = (size_t)tm->q, J = (size_t)tm->ngroups;
    const size_t Kz = (size_t)K;
    svir_cuda_qem *x = (svir_cuda_qem *)calloc(1, sizeof(svir_cuda_qem));
    /* the data in the groups' order, on the host first */
    int *rowptr = (int *)calloc(J + 2, sizeof(int)), *next = (int *)malloc(sizeof(int) * (J + 1));
    int *rows = (int *)malloc(sizeof(int) * (n + 1));
    double *hy = (double *)malloc(sizeof(double) * (n + 1));
    double *ht = m->trials ? (double *)malloc(sizeof(double) * (n + 1)) : NULL;
    double *ho = (double *)malloc(sizeof(double) * (n + 1));
    double *hx = (double *)malloc(sizeof(double) * (n * p + 1));
    double *hz = tm->z_ones ? NULL : (double *)malloc(sizeof(double) * (n * q + 1));
    int st = 0;
    if (!x || !rowptr || !next || !rows || !hy || (m->trials && !ht) || !ho || !hx ||
        (!tm->z_ones && !hz)) {
        snprintf(err, errlen, "out of host memory");
        st = 2;
    }
    if (!st) {
        for (size_t i = 0; i < n; i++) rowptr[tm->group[i] + 1]++;
        for (size_t j = 0; j < J; j++) rowptr[j + 1] += rowptr[j];
        for (size_t j = 0; j < J; j++) next[j] = rowptr[j];
        for (size_t i = 0; i < n; i++) rows[next[tm->group[i]]++] = (int)i;
        for (size_t r = 0; r < n; r++) {
            const size_t i = (size_t)rows[r];
            hy[r] = m->y[i];
            if (ht) ht[r] = m->trials[i];
            ho[r] = m->offset ? m->offset[i] : 0.0;
            for (size_t c = 0; c < p; c++) hx[r * p + c] = m->X[i + c * n];
            if (hz)
                for (size_t c = 0; c < q; c++) hz[r * q + c] = tm->Z[i + c * n];
        }
        x->family = m->family;
        x->link = m->link;
        qem_dev *d = &x->d;
        d->K = K;
        d->q = (int)q;
        d->J = (int)J;
        d->p = (int)p;
        d->z_ones = tm->z_ones;
        d->n = (ptrdiff_t)n;
        d->nz = m->nz;
        d->lb = svir_local_block((int)q);
        uint32_t key[2];
        svir_philox_key(seed, key);
        d->k0 = key[0];
        d->k1 = key[1];
        int *drp = NULL;
        cudaError_t e = cudaSuccess;
#define QUP(field, src, count)                                                          \
        if (e == cudaSuccess) {                                                         \
            double *tmp_;                                                               \
            e = qbuf(x, &tmp_, (src), (count));                                         \
            d->field = tmp_;                                                            \
        }
        QUP(y, hy, n);
        if (ht) {
            QUP(trials, ht, n);
        }
        QUP(os, ho, n);
        QUP(xs, hx, n * p);
        if (hz) {
            QUP(zs_data, hz, n * q);
        }
        QUP(lpar, lpar, J * (size_t)d->lb);
        QUP(Z1, Z1, J * q);
        QUP(Z2, Z2, J * q * q);
        QUP(beta, (const double *)NULL, Kz * p);
        QUP(A, (const double *)NULL, Kz * q * q);
        QUP(xb, (const double *)NULL, Kz * n);
        QUP(z0, (const double *)NULL, Kz * (size_t)m->nz);
        QUP(lzp, (const double *)NULL, J * Kz);
        QUP(lf, (const double *)NULL, J * Kz * Kz);
        QUP(lm, (const double *)NULL, J * Kz);
        QUP(w0, (const double *)NULL, Kz);
        QUP(ws, (const double *)NULL, J * (Kz + q + 2 * q * q));
#undef QUP
        if (e == cudaSuccess) e = cudaMalloc((void **)&x->aux, sizeof(svir_aux) * Kz);
        d->aux = x->aux;
        if (e == cudaSuccess) e = cudaMalloc((void **)&drp, sizeof(int) * (J + 1));
        if (e == cudaSuccess)
            e = cudaMemcpy(drp, rowptr, sizeof(int) * (J + 1), cudaMemcpyHostToDevice);
        if (drp) x->bufs[x->nbufs++] = (double *)drp; /* freed with the others */
        d->rowptr = drp;
        if (e != cudaSuccess) {
            snprintf(err, errlen, "CUDA error setting up QEM: %s (%s)%s", cudaGetErrorString(e),
                     cudaGetErrorName(e),
                     e == cudaErrorMemoryAllocation ? "; QEM needs about K n + J K^2 doubles "
                                                      "on the device: use a smaller K" : "");
            (void)cudaGetLastError();
            st = 3;
        }
    }
    free(rowptr); free(next); free(rows); free(hy); free(ht); free(ho); free(hx); free(hz);
    if (st) {
        svir_cuda_qem_free(x);
        return st;
    }
    *out = x;
    return 0;
}

extern "C" int svir_cuda_qem_table(svir_cuda_qem *x, const double *beta, const double *A,
                                   const svir_aux *aux, uint64_t stream, uint64_t ctr,
                                   double *lm, char *err, size_t errlen)
{
    qem_dev &d = x->d;
    const size_t Kz = (size_t)d.K;
    QCK(cudaMemcpy((void *)d.beta, beta, sizeof(double) * Kz * (size_t)d.p, cudaMemcpyHostToDevice));
    QCK(cudaMemcpy((void *)d.A, A, sizeof(double) * Kz * (size_t)d.q * (size_t)d.q,
                   cudaMemcpyHostToDevice));
    QCK(cudaMemcpy((void *)d.aux, aux, sizeof(svir_aux) * Kz, cudaMemcpyHostToDevice));
    const ptrdiff_t JK = (ptrdiff_t)d.J * d.K;
    SVIR_LAUNCH(grid_of(JK), QEM_BLOCK, k_qem_draw)(d, stream, ctr);
    SVIR_LAUNCH(grid_of((ptrdiff_t)d.K * d.n), QEM_BLOCK, k_qem_xb)(d);
    const int g = grid_of(JK * d.K);
    switch (x->family * 8 + x->link) {
    case SVIR_GAUSSIAN * 8 + SVIR_LINK_IDENTITY: SVIR_LAUNCH(g, QEM_BLOCK, k_qem_pairs<SVIR_GAUSSIAN, SVIR_LINK_IDENTITY>)(d); break;
    case SVIR_BINOMIAL * 8 + SVIR_LINK_LOGIT: SVIR_LAUNCH(g, QEM_BLOCK, k_qem_pairs<SVIR_BINOMIAL, SVIR_LINK_LOGIT>)(d); break;
    case SVIR_BINOMIAL * 8 + SVIR_LINK_PROBIT: SVIR_LAUNCH(g, QEM_BLOCK, k_qem_pairs<SVIR_BINOMIAL, SVIR_LINK_PROBIT>)(d); break;
    case SVIR_BINOMIAL * 8 + SVIR_LINK_CLOGLOG: SVIR_LAUNCH(g, QEM_BLOCK, k_qem_pairs<SVIR_BINOMIAL, SVIR_LINK_CLOGLOG>)(d); break;
    case SVIR_POISSON * 8 + SVIR_LINK_LOG: SVIR_LAUNCH(g, QEM_BLOCK, k_qem_pairs<SVIR_POISSON, SVIR_LINK_LOG>)(d); break;
    case SVIR_NEGBIN * 8 + SVIR_LINK_LOG: SVIR_LAUNCH(g, QEM_BLOCK, k_qem_pairs<SVIR_NEGBIN, SVIR_LINK_LOG>)(d); break;
    default:
        snprintf(err, errlen, "QEM on the device: unknown family or link");
        return 1;
    }
    SVIR_LAUNCH(grid_of(JK), QEM_BLOCK, k_qem_rows)(d, log((double)d.K));
    QCK(cudaGetLastError());
    QCK(cudaMemcpy(lm, d.lm, sizeof(double) * (size_t)JK, cudaMemcpyDeviceToHost));
    return 0;
}

extern "C" int svir_cuda_qem_mstep(svir_cuda_qem *x, const double *w0, double et, char *err,
                                   size_t errlen)
{
    qem_dev &d = x->d;
    QCK(cudaMemcpy(d.w0, w0, sizeof(double) * (size_t)d.K, cudaMemcpyHostToDevice));
    SVIR_LAUNCH(grid_of(d.J), QEM_BLOCK, k_qem_mstep)(d, et);
    QCK(cudaGetLastError());
    return 0;
}

extern "C" int svir_cuda_qem_lpar(svir_cuda_qem *x, double *lpar, char *err, size_t errlen)
{
    const qem_dev &d = x->d;
    QCK(cudaMemcpy(lpar, d.lpar, sizeof(double) * (size_t)d.J * (size_t)d.lb,
                   cudaMemcpyDeviceToHost));
    return 0;
}
