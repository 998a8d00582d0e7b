/* Bayesian networks' SVI step on the CUDA device (models/bnn/bnn_cuda.h):
 * the batch's part of bnn_model.c's estimate, its tiles' forward pass by
 * the local reparameterisation, the likelihood and the backward pass, over
 * the whole stacked batch at once (R = B S rows, row s B + b: batch row b
 * of particle s; every array column-major with leading dimension R). The
 * host's SVI driver draws log sigma, adds the KL and log sigma's terms,
 * the guide's backward pass and Adam (O(D) per step); per step the guide's
 * means and variances (2 D doubles, and 2 S for sigma) and the batch's row
 * indices (B ints) go down, the sums of the gradient (2 D) and the
 * log-likelihood and d/d log sigma (1 + S) come up.
 *
 * Per step:
 *   k_input  A_0 = the batch's rows of X, A2_0 = their squares;
 *   per layer l (cuBLAS): Z_l = A_l mu_W, Q_l = A2_l s2_W; then
 *   k_noise  one thread per (tile of TR stacked rows, column o): the
 *            column's noise for the tile, block (t << 32 | ctr + o) of
 *            (SVIR_STREAM_LOCAL, step) drawn by svir_zig.h's own code
 *            (the tables computed on the host, copied down), so the very
 *            numbers the CPU's tile t draws; Z += mb + sd e, Q = e / (2 sd),
 *            A_{l+1} = act(Z), A2_{l+1} = A_{l+1}^2;
 *   k_lik    per row: G = wt d log p / d eta, wt log p and wt d / d log
 *            sigma (bnn_entry.h's arithmetic, the CPU's);
 *   k_colsums  the log-likelihood's sum, and per particle d / d log sigma;
 *   k_back   the output layer: dV = G Q and the bias's sums;
 *   per layer l = L .. 0 (cuBLAS): d mu_W = A_l' G, (A2_l)' dV, and for
 *            l > 0 G mu_W', dV s2_W' into the next G, dV; then
 *   k_back   one block per column: through the activation's derivative
 *            (G = act'(G mu_W' + 2 A dV s2_W'), dV = G Q_{l-1}) and the
 *            biases' sums.
 * No atomics: the kernels' sums are block trees of a fixed shape, and
 * cuBLAS's DGEMM gives the same bits every run on a given device and
 * toolkit. Against the CPU only the order of the products' and the
 * biases' sums differs (and the device's exp/log/tanh by an ulp): the
 * noise is the same, so the estimates agree to rounding.
 *
 * cuBLAS is opened with dlopen when a network first goes to the device
 * (libcublas.so.<major> of the toolkit built against: from the loader's
 * path, else the toolkit's folder configure found, SVIR_CUBLAS_DIR), not
 * linked: the package and gpucheck load and run everything else where
 * it is missing, and a network's device fit says so. The emulation calls
 * its stand-in (svir_cublas_emu.cuh) through the same table.
 *
 * Device memory (doubles): X (n d), y (n), the zig tables, and for
 * batches of R stacked rows: per layer R (2 dims[l] + 2 dims[l+1]) (A,
 * A2, Z, Q), 4 R maxw (G, dV and their next), 2 R (the rows'
 * log-likelihood and d/d log sigma), 2 D + 2 S (the guide), 2 D + 1 + S
 * (the sums), B / 2 (the rows). */
#include "cuda/svir_cuda_common.cuh"

#ifdef SVIR_CUDA_EMU
#include "cuda/svir_cublas_emu.cuh"
#else
#include <cublas_v2.h>
#include <dlfcn.h>
#endif

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/svir_zig.h"
#include "models/bnn/bnn_cuda.h"
#include "models/bnn/bnn_entry.h"

#define BT 128  /* threads per block (a power of two) */
#define NBUF 64 /* most device arrays (4 per layer and a few) */

/* the cuBLAS functions used, and the library they came from */
typedef struct {
    void *lib;
    cublasStatus_t (*create)(cublasHandle_t *);
    cublasStatus_t (*destroy)(cublasHandle_t);
    cublasStatus_t (*dgemm)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int,
                            const double *, const double *, int, const double *, int,
                            const double *, double *, int);
    const char *(*sstr)(cublasStatus_t);
    const char *(*sname)(cublasStatus_t);
} blas_fns;

struct svir_cuda_bnn {
    int n, d, L, relu, family, S;
    int dims[SVIR_BNN_MAXL + 2];
    ptrdiff_t D, B, R, TR, nt, maxw;
    ptrdiff_t off_w[SVIR_BNN_MAXL + 1], off_b[SVIR_BNN_MAXL + 1];
    uint32_t key[2];
    double *X, *y;
    int *idx;
    svir_zig *zig;
    double *par;      /* [2 D + 2 S]: mu, s2, log sigma, sigma */
    double *A[SVIR_BNN_MAXL + 1], *A2[SVIR_BNN_MAXL + 1], *Z[SVIR_BNN_MAXL + 1], *Q[SVIR_BNN_MAXL + 1];
    double *G, *Gn, *dV, *dVn; /* [R x maxw] */
    double *llr, *gsr;         /* [R] */
    double *g;                 /* [2 D] */
    double *sums;              /* [1 + S] */
    double *hpar, *hsum;       /* host: [2 D + 2 S], [1 + S] */
    blas_fns blas;
    cublasHandle_t h;
    int have_h;
    void *dbuf[NBUF];
    int ndb;
    char first_err[256];
};

/* ---------------------------------------------------------------- kernels */

/* A [R x d] = the rows of X [n x d] (row r: batch row r mod B), A2 = A^2 */
__global__ void __launch_bounds__(BT) k_input(const double *X, ptrdiff_t n, int d, const int *idx,
                                              ptrdiff_t B, ptrdiff_t R, double *A, double *A2)
{
    const ptrdiff_t j = (ptrdiff_t)blockIdx.x * BT + threadIdx.x;
    if (j >= R * d) return;
    const ptrdiff_t c = j / R, r = j - c * R, b = r % B;
    const double x = X[(idx ? idx[b] : b) + c * n];
    A[j] = x;
    A2[j] = x * x;
}

/* thread (tile t, column o) of a layer with `out` columns: the tile's noise
 * of column o and the column's pass (bnn_model.c's bnn_forward and
 * bnn_column); A, A2 NULL for the output layer */
__global__ void __launch_bounds__(BT) k_noise(const svir_zig *zig, uint32_t k0, uint32_t k1,
                                              uint64_t step, uint64_t ctr, ptrdiff_t R,
                                              ptrdiff_t TR, ptrdiff_t nt, int out, const double *mb,
                                              const double *vb, double *Z, double *Q, double *A,
                                              double *A2, int relu)
{
    const ptrdiff_t j = (ptrdiff_t)blockIdx.x * BT + threadIdx.x;
    if (j >= nt * out) return;
    const ptrdiff_t t = j % nt, o = j / nt, r0 = t * TR, tr = R - r0 < TR ? R - r0 : TR;
    const uint32_t key[2] = {k0, k1};
    svir_xoshiro g;
    svir_xoshiro_seed(&g, key, SVIR_STREAM_LOCAL, step, (uint64_t)t << 32 | (ctr + (uint64_t)o));
    const double m = mb[o], v = vb[o];
    for (ptrdiff_t k = 0; k < tr; k++) {
        const ptrdiff_t q = o * R + r0 + k;
        const double e = svir_zig_normal(zig, &g), sv = sqrt(Q[q] + v), z = Z[q] + (m + sv * e);
        Z[q] = z;
        Q[q] = e / (2.0 * sv);
        if (A) {
            const double a = relu ? (z > 0.0 ? z : 0.0) : tanh(z);
            A[q] = a;
            A2[q] = a * a;
        }
    }
}

/* per stacked row r (particle r / B): G = wt d log p / d eta, llr = wt log
 * p, gsr = wt d log p / d log sigma */
__global__ void __launch_bounds__(BT) k_lik(const double *eta, const double *y, const int *idx,
                                            ptrdiff_t B, ptrdiff_t R, int family,
                                            const double *lsig, const double *sig, double wt,
                                            double *G, double *llr, double *gsr)
{
    const ptrdiff_t r = (ptrdiff_t)blockIdx.x * BT + threadIdx.x;
    if (r >= R) return;
    const int s = (int)(r / B);
    const ptrdiff_t b = r % B;
    const double yv = y[idx ? idx[b] : b], et = eta[r];
    double gs;
    const double g = svir_bnn_dlogp(family, yv, et, sig[s], &gs);
    G[r] = wt * g;
    llr[r] = wt * svir_bnn_logp(family, yv, et, lsig[s]);
    gsr[r] = wt * gs;
}

/* out[j] = sum of x[j rows .. (j + 1) rows), block j */
__global__ void __launch_bounds__(BT) k_colsums(const double *x, ptrdiff_t rows, double *out)
{
    SVIR_SHARED(double, sh, [BT]);
    const double *xj = x + (ptrdiff_t)blockIdx.x * rows;
    double v[1] = {0.0};
    for (ptrdiff_t r = threadIdx.x; r < rows; r += BT) v[0] += xj[r];
    svir_block_sums<1, BT>(sh, v);
    if (threadIdx.x == 0) out[blockIdx.x] = v[0];
}

/* block k, column k of a layer's G and dV [R x cols]: with A (a hidden
 * layer's activations), G = act'(G + 2 A dV) (G, dV holding G mu_W' and
 * dV s2_W' on entry); then dV = G Q, and the bias k's sums: gmu[k] = sum
 * G, gls[k] = 2 s2[k] sum dV */
__global__ void __launch_bounds__(BT) k_back(const double *A, const double *Q, double *G, double *dV,
                                             ptrdiff_t R, int relu, const double *s2,
                                             double *gmu, double *gls)
{
    SVIR_SHARED(double, sh, [2 * BT]);
    const ptrdiff_t k = blockIdx.x;
    double v[2] = {0.0, 0.0};
    for (ptrdiff_t r = threadIdx.x; r < R; r += BT) {
        const ptrdiff_t q = k * R + r;
        double g = G[q];
        if (A) {
            const double a = A[q], da = g + 2.0 * a * dV[q];
            g = relu ? (a > 0.0 ? da : 0.0) : da * (1.0 - a * a);
        }
        const double dv = g * Q[q];
        G[q] = g;
        dV[q] = dv;
        v[0] += g;
        v[1] += dv;
    }
    svir_block_sums<2, BT>(sh, v);
    if (threadIdx.x == 0) {
        gmu[k] = v[0];
        gls[k] = 2.0 * s2[k] * v[1];
    }
}

/* ---------------------------------------------------------------- host */

#ifdef SVIR_CUDA_EMU
static int blas_open(blas_fns *b, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    b->lib = NULL;
    b->create = cublasCreate;
    b->destroy = cublasDestroy;
    b->dgemm = cublasDgemm;
    b->sstr = cublasGetStatusString;
    b->sname = cublasGetStatusName;
    return 0;
}

static void blas_close(blas_fns *b)
{
    (void)b;
}
#else
#define BNN_STR2(x) #x
#define BNN_STR(x) BNN_STR2(x)
#define BNN_CUBLAS_SO "libcublas.so." BNN_STR(CUBLAS_VER_MAJOR)

static int blas_open(blas_fns *b, char *err, size_t errlen)
{
    b->lib = dlopen(BNN_CUBLAS_SO, RTLD_NOW | RTLD_LOCAL);
#ifdef SVIR_CUBLAS_DIR
    if (!b->lib) b->lib = dlopen(SVIR_CUBLAS_DIR "/" BNN_CUBLAS_SO, RTLD_NOW | RTLD_LOCAL);
#endif
    if (!b->lib) {
        const char *why = dlerror();
        snprintf(err, errlen, "networks on the device need cuBLAS, and %s could not be loaded (%s)",
                 BNN_CUBLAS_SO, why ? why : "not found");
        return 3;
    }
    *(void **)&b->create = dlsym(b->lib, "cublasCreate_v2");
    *(void **)&b->destroy = dlsym(b->lib, "cublasDestroy_v2");
    *(void **)&b->dgemm = dlsym(b->lib, "cublasDgemm_v2");
    *(void **)&b->sstr = dlsym(b->lib, "cublasGetStatusString");
    *(void **)&b->sname = dlsym(b->lib, "cublasGetStatusName");
    if (!b->create || !b->destroy || !b->dgemm || !b->sstr || !b->sname) {
        snprintf(err, errlen, "%s lacks a function svir needs", BNN_CUBLAS_SO);
        return 3;
    }
    return 0;
}

static void blas_close(blas_fns *b)
{
    if (b->lib) dlclose(b->lib);
    b->lib = NULL;
}
#endif

static int cublas_failed(const blas_fns *b, cublasStatus_t s, const char *call, char *err,
                         size_t errlen)
{
    if (s == CUBLAS_STATUS_SUCCESS) return 0;
    snprintf(err, errlen, "cuBLAS error in %s: %s (%s)", call, b->sstr(s), b->sname(s));
    return 1;
}

/* in a function with d, err and errlen: return 3 when a cuBLAS call failed */
#define BCK(call, name)                                                                 \
    do {                                                                                \
        if (cublas_failed(&d->blas, (call), name, err, errlen)) return 3;               \
    } while (0)

static double bytes_of(const svir_bnn_model *m, ptrdiff_t B, int S, ptrdiff_t *maxw_out)
{
    const double R = (double)B * S, D = (double)m->D;
    ptrdiff_t maxw = 1;
    double s = (double)m->n * m->d + m->n + sizeof(svir_zig) / 8.0;
    for (int l = 0; l <= m->L; l++) {
        s += R * (2.0 * m->dims[l] + 2.0 * m->dims[l + 1]);
        maxw = m->dims[l] > maxw ? m->dims[l] : maxw;
        maxw = m->dims[l + 1] > maxw ? m->dims[l + 1] : maxw;
    }
    s += 4.0 * R * (double)maxw + 2.0 * R + 4.0 * D + 3.0 * S + 1.0 + (double)B / 2.0 + 1.0;
    if (maxw_out) *maxw_out = maxw;
    return 8.0 * s;
}

extern "C" double svir_cuda_bnn_bytes(const svir_bnn_model *m, ptrdiff_t B, int S)
{
    return bytes_of(m, B, S, NULL);
}

static int dalloc(svir_cuda_bnn *d, void **ptr, size_t bytes, char *err, size_t errlen)
{
    *ptr = NULL;
    if (d->ndb >= NBUF) {
        snprintf(err, errlen, "svir internal error: too many device buffers");
        return 3;
    }
    PCK(cudaMalloc(ptr, bytes > 0 ? bytes : 1));
    d->dbuf[d->ndb++] = *ptr;
    return 0;
}

static int dalloc_d(svir_cuda_bnn *d, double **ptr, ptrdiff_t count, char *err, size_t errlen)
{
    return dalloc(d, (void **)ptr, sizeof(double) * (size_t)count, err, errlen);
}

extern "C" void svir_cuda_bnn_free(svir_cuda_bnn *d)
{
    if (!d) return;
    if (d->have_h) d->blas.destroy(d->h);
    blas_close(&d->blas);
    for (int k = 0; k < d->ndb; k++) cudaFree(d->dbuf[k]);
    free(d->hpar);
    free(d->hsum);
    free(d);
}

static int bnn_new(const svir_bnn_model *m, svir_cuda_bnn *d, char *err, size_t errlen)
{
    const ptrdiff_t R = d->R, n = m->n, D = m->D;
    size_t fr = 0, tot = 0;
    PCK(cudaMemGetInfo(&fr, &tot));
    const double need = bytes_of(m, d->B, d->S, &d->maxw);
    if (need > (double)fr) {
        snprintf(err, errlen, "the network needs %.2f GB on the device, %.2f GB are free",
                 need / 1e9, (double)fr / 1e9);
        return 3;
    }
    int st;
    if ((st = dalloc_d(d, &d->X, n * m->d, err, errlen)) || (st = dalloc_d(d, &d->y, n, err, errlen)))
        return st;
    PCK(cudaMemcpy(d->X, m->X, sizeof(double) * (size_t)(n * m->d), cudaMemcpyHostToDevice));
    PCK(cudaMemcpy(d->y, m->y, sizeof(double) * (size_t)n, cudaMemcpyHostToDevice));
    /* the tables from the host's code, so that they are the CPU's bits */
    svir_zig z;
    svir_zig_init(&z);
    if ((st = dalloc(d, (void **)&d->zig, sizeof z, err, errlen))) return st;
    PCK(cudaMemcpy(d->zig, &z, sizeof z, cudaMemcpyHostToDevice));
    if ((st = dalloc(d, (void **)&d->idx, sizeof(int) * (size_t)d->B, err, errlen))) return st;
    for (int l = 0; l <= m->L; l++) {
        const ptrdiff_t in = m->dims[l], out = m->dims[l + 1];
        if ((st = dalloc_d(d, &d->A[l], R * in, err, errlen)) ||
            (st = dalloc_d(d, &d->A2[l], R * in, err, errlen)) ||
            (st = dalloc_d(d, &d->Z[l], R * out, err, errlen)) ||
            (st = dalloc_d(d, &d->Q[l], R * out, err, errlen)))
            return st;
    }
    const ptrdiff_t S = d->S, mw = d->maxw;
    if ((st = dalloc_d(d, &d->G, R * mw, err, errlen)) || (st = dalloc_d(d, &d->Gn, R * mw, err, errlen)) ||
        (st = dalloc_d(d, &d->dV, R * mw, err, errlen)) || (st = dalloc_d(d, &d->dVn, R * mw, err, errlen)) ||
        (st = dalloc_d(d, &d->llr, R, err, errlen)) || (st = dalloc_d(d, &d->gsr, R, err, errlen)) ||
        (st = dalloc_d(d, &d->par, 2 * D + 2 * S, err, errlen)) ||
        (st = dalloc_d(d, &d->g, 2 * D, err, errlen)) || (st = dalloc_d(d, &d->sums, 1 + S, err, errlen)))
        return st;
    d->hpar = (double *)malloc(sizeof(double) * (size_t)(2 * D + 2 * S));
    d->hsum = (double *)malloc(sizeof(double) * (size_t)(1 + S));
    if (!d->hpar || !d->hsum) {
        snprintf(err, errlen, "out of memory setting up the device");
        return 2;
    }
    if ((st = blas_open(&d->blas, err, errlen))) return st;
    BCK(d->blas.create(&d->h), "cublasCreate");
    d->have_h = 1;
    return 0;
}

extern "C" int svir_cuda_bnn_new(const svir_bnn_model *m, ptrdiff_t B, int S, ptrdiff_t TR,
                                 const uint32_t key[2], svir_cuda_bnn **out, char *err,
                                 size_t errlen)
{
    *out = NULL;
    if (B < 1 || B > m->n || S < 1 || TR < 1) {
        snprintf(err, errlen, "svir internal error: a network batch of %td rows, %d particles", B, S);
        return 3;
    }
    if ((double)B * S * (SVIR_BNN_MAXL + 2) > (double)INT_MAX) {
        snprintf(err, errlen, "a network batch of %td rows times %d particles is too large for the "
                 "device's products", B, S);
        return 3;
    }
    svir_cuda_bnn *d = (svir_cuda_bnn *)calloc(1, sizeof *d);
    if (!d) {
        snprintf(err, errlen, "out of memory setting up the device");
        return 2;
    }
    d->n = m->n;
    d->d = m->d;
    d->L = m->L;
    d->relu = m->act == SVIR_BNN_RELU;
    d->family = m->family;
    d->S = S;
    d->D = m->D;
    d->B = B;
    d->R = B * S;
    d->TR = TR < d->R ? TR : d->R;
    d->nt = (d->R + d->TR - 1) / d->TR;
    d->key[0] = key[0];
    d->key[1] = key[1];
    for (int l = 0; l <= m->L + 1; l++) d->dims[l] = m->dims[l];
    for (int l = 0; l <= m->L; l++) {
        d->off_w[l] = m->off_w[l];
        d->off_b[l] = m->off_b[l];
    }
    const int st = bnn_new(m, d, err, errlen);
    if (st) {
        svir_cuda_bnn_free(d);
        return st;
    }
    *out = d;
    return 0;
}

extern "C" const char *svir_cuda_bnn_error(const svir_cuda_bnn *d)
{
    return d ? d->first_err : "";
}

/* C [m x n] = op(A) op(B) (column-major) */
static int dgemm(svir_cuda_bnn *d, cublasOperation_t ta, cublasOperation_t tb, ptrdiff_t m,
                 ptrdiff_t n, ptrdiff_t k, const double *A, ptrdiff_t lda, const double *B,
                 ptrdiff_t ldb, double *C, ptrdiff_t ldc, char *err, size_t errlen)
{
    const double one = 1.0, zero = 0.0;
    BCK(d->blas.dgemm(d->h, ta, tb, (int)m, (int)n, (int)k, &one, A, (int)lda, B, (int)ldb, &zero, C,
                    (int)ldc),
        "cublasDgemm");
    return 0;
}

static unsigned blocks(ptrdiff_t threads)
{
    return (unsigned)((threads + BT - 1) / BT);
}

static int step_(svir_cuda_bnn *d, const double *mu, const double *s2, const double *lsig,
                 const double *sig, const int *idx, long step, double wt, double *g, double *ll,
                 double *gs, char *err, size_t errlen)
{
    const ptrdiff_t D = d->D, R = d->R, B = d->B;
    const int S = d->S, L = d->L, gauss = d->family == SVIR_GAUSSIAN;
    double *hp = d->hpar;
    memcpy(hp, mu, sizeof(double) * (size_t)D);
    memcpy(hp + D, s2, sizeof(double) * (size_t)D);
    for (int s = 0; s < S; s++) {
        hp[2 * D + s] = gauss ? lsig[s] : 0.0;
        hp[2 * D + S + s] = gauss ? sig[s] : 1.0;
    }
    PCK(cudaMemcpy(d->par, hp, sizeof(double) * (size_t)(2 * D + 2 * S), cudaMemcpyHostToDevice));
    const double *dmu = d->par, *ds2 = d->par + D, *dls = d->par + 2 * D, *dsg = dls + S;
    const int *di = NULL;
    if (idx) {
        PCK(cudaMemcpy(d->idx, idx, sizeof(int) * (size_t)B, cudaMemcpyHostToDevice));
        di = d->idx;
    }
    /* the entries no kernel writes (log lambda, log sigma) */
    PCK(cudaMemset(d->g, 0, sizeof(double) * (size_t)(2 * D)));
    SVIR_LAUNCH(blocks(R * d->d), BT, k_input)(d->X, (ptrdiff_t)d->n, d->d, di, B, R, d->A[0], d->A2[0]);
    KCK("k_input");
    int st;
    uint64_t ctr = 0;
    for (int l = 0; l <= L; l++) {
        const ptrdiff_t in = d->dims[l], out = d->dims[l + 1];
        if ((st = dgemm(d, CUBLAS_OP_N, CUBLAS_OP_N, R, out, in, d->A[l], R, dmu + d->off_w[l], in,
                        d->Z[l], R, err, errlen)) ||
            (st = dgemm(d, CUBLAS_OP_N, CUBLAS_OP_N, R, out, in, d->A2[l], R, ds2 + d->off_w[l], in,
                        d->Q[l], R, err, errlen)))
            return st;
        SVIR_LAUNCH(blocks(d->nt * out), BT, k_noise)(d->zig, d->key[0], d->key[1], (uint64_t)step, ctr,
                                                      R, d->TR, d->nt, (int)out, dmu + d->off_b[l],
                                                      ds2 + d->off_b[l], d->Z[l], d->Q[l],
                                                      l < L ? d->A[l + 1] : NULL,
                                                      l < L ? d->A2[l + 1] : NULL, d->relu);
        KCK("k_noise");
        ctr += (uint64_t)out;
    }
    SVIR_LAUNCH(blocks(R), BT, k_lik)(d->Z[L], d->y, di, B, R, d->family, dls, dsg, wt, d->G, d->llr,
                                      d->gsr);
    KCK("k_lik");
    SVIR_LAUNCH(1, BT, k_colsums)(d->llr, R, d->sums);
    KCK("k_colsums");
    if (gauss) {
        SVIR_LAUNCH(S, BT, k_colsums)(d->gsr, B, d->sums + 1);
        KCK("k_colsums");
    }
    /* G and dV of the current layer in [cur], the next one's in [1 - cur] */
    double *Gb[2] = {d->G, d->Gn}, *dVb[2] = {d->dV, d->dVn};
    int cur = 0;
    {
        const ptrdiff_t ob = d->off_b[L];
        SVIR_LAUNCH(1, BT, k_back)(NULL, d->Q[L], Gb[0], dVb[0], R, d->relu, ds2 + ob, d->g + ob,
                                   d->g + D + ob);
        KCK("k_back");
    }
    for (int l = L; l >= 0; l--, cur = 1 - cur) {
        const ptrdiff_t in = d->dims[l], out = d->dims[l + 1], ow = d->off_w[l];
        double *G = Gb[cur], *dV = dVb[cur], *Gn = Gb[1 - cur], *dVn = dVb[1 - cur];
        /* d mu_W = A' G, (A^2)' dV */
        if ((st = dgemm(d, CUBLAS_OP_T, CUBLAS_OP_N, in, out, R, d->A[l], R, G, R, d->g + ow, in, err,
                        errlen)) ||
            (st = dgemm(d, CUBLAS_OP_T, CUBLAS_OP_N, in, out, R, d->A2[l], R, dV, R, d->g + D + ow, in,
                        err, errlen)))
            return st;
        if (l == 0) break;
        /* G mu_W', dV s2_W', then through the activation */
        if ((st = dgemm(d, CUBLAS_OP_N, CUBLAS_OP_T, R, in, out, G, R, dmu + ow, in, Gn, R, err,
                        errlen)) ||
            (st = dgemm(d, CUBLAS_OP_N, CUBLAS_OP_T, R, in, out, dV, R, ds2 + ow, in, dVn, R, err,
                        errlen)))
            return st;
        const ptrdiff_t ob = d->off_b[l - 1];
        SVIR_LAUNCH((unsigned)in, BT, k_back)(d->A[l], d->Q[l - 1], Gn, dVn, R, d->relu, ds2 + ob,
                                              d->g + ob, d->g + D + ob);
        KCK("k_back");
    }
    PCK(cudaMemcpy(g, d->g, sizeof(double) * (size_t)(2 * D), cudaMemcpyDeviceToHost));
    PCK(cudaMemcpy(d->hsum, d->sums, sizeof(double) * (size_t)(gauss ? 1 + S : 1),
                   cudaMemcpyDeviceToHost));
    *ll = d->hsum[0];
    for (int s = 0; s < S; s++) gs[s] = gauss ? d->hsum[1 + s] : 0.0;
    return 0;
}

extern "C" int svir_cuda_bnn_step(svir_cuda_bnn *d, const double *mu, const double *s2,
                                  const double *lsig, const double *sig, const int *idx, long step,
                                  double wt, double *g, double *ll, double *gs, char *err,
                                  size_t errlen)
{
    const int st = step_(d, mu, s2, lsig, sig, idx, step, wt, g, ll, gs, err, errlen);
    if (st && !d->first_err[0]) snprintf(d->first_err, sizeof d->first_err, "%s", err);
    return st;
}
