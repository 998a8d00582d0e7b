/* Count mixtures' SVI step on the CUDA device (models/mixture/mix_cuda.h):
 * the batch's log-likelihood, labels summed out, and its gradient in the
 * globals, the CPU's batch_loglik (models/mixture/mix_model.c) with the
 * per-entry arithmetic of models/mixture/mix_entry.h. The host's SVI driver
 * draws theta, adds the prior, the guide's backward pass and Adam (O(D) per
 * step); per step D + K doubles and the batch's row indices go down and D +
 * K + 1 doubles come up.
 *
 * Per call, for the B rows of the batch:
 *   k_dens   the rows' counts into a dense B x p block (from the row-major
 *            dense matrix, or the rows' CSR: zeroed, then the nonzeros);
 *   k_rowk   a[b, k] = log pi_k + log p(y_i | k), one block per row, its
 *            threads over the columns, KT clusters at a time, each sum a
 *            block tree (the columns' shared parts are recomputed per KT
 *            clusters rather than stored);
 *   k_resp   per row r[b, k] = softmax(a[b, .]) and ll[b] = log sum_k;
 *   k_grad   one thread per (column, chunk of rows): for each row of its
 *            chunk the column's shared parts, then per cluster the entry's
 *            derivatives weighted by r[b, k], summed in row order into the
 *            chunk's partial gradient (only this thread writes those
 *            entries); the columns' phi, zero-inflation, background and
 *            covariate derivatives the same way;
 *   k_fold   the chunks' partials added in chunk order, times scale;
 *   k_eta    per cluster sum_b (r[b, k] - pi_k), and sum_b ll[b], block trees.
 * No atomics: a given device and launch shape give the same sums every
 * run; against the CPU the order of the sums differs (and the libraries'
 * exp/log by an ulp), so results agree to ~1e-12 relative.
 *
 * Device memory (doubles): the counts (n p dense, or 1.5 per nonzero +
 * (n + 1) / 2), O (n), X (n dx), lgy (n), and per batch of up to Bmax rows:
 * Bmax (p + 2 K + 1) + NCH_MAX D + 2 D + K + 1 (+ Bmax / 2 for the rows). */
#include "cuda/svir_cuda_common.cuh"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/mixture/mix_cuda.h"
#include "models/mixture/mix_entry.h"

#define MT 128     /* threads per block (a power of two) */
#define KT 8       /* clusters one thread of k_rowk sums at a time */
#define NCH_MAX 64 /* most row chunks of k_grad (its partials: NCH_MAX x D) */
#define CR_MIN 4   /* fewest rows per chunk */

/* what the kernels read, by value */
typedef struct {
    int n, p, K, dx, nb, zi, bg;
    ptrdiff_t D, off_mu, off_phi, off_zi, off_g, off_bg, off_eta;
    const double *Y;        /* [n x p] row-major, or NULL */
    const int *Rp, *Rj;     /* the rows' CSR */
    const double *Rx;
    const double *O, *X, *lgy;
    const double *theta, *lp;
    const int *idx;         /* [B] or NULL (rows 0 .. B - 1) */
    double *yb;             /* [Bmax x p] */
    double *a, *r, *ll;     /* [Bmax x K], [Bmax x K], [Bmax] */
    double *part;           /* [NCH_MAX x D] */
    double *g;              /* [D] */
    double *sums;           /* [K + 1] */
} mix_args;

struct svir_cuda_mix {
    int n, p, K, Bmax;
    ptrdiff_t D;
    mix_args a;
    double *dbuf[16];
    int ndb;
    double *hsum;           /* [K + 1] host */
    char first_err[256];
};

__device__ __forceinline__ int row_of(const mix_args &a, int b)
{
    return a.idx ? a.idx[b] : b;
}

/* the row's o_i + x_i gamma_j at column j, in svir_mix_row_lin's order */
__device__ __forceinline__ double lin_of(const mix_args &a, int i, int j)
{
    double l = a.O ? a.O[i] : 0.0;
    for (int c = 0; c < a.dx; c++) {
        const double x = a.X[i + (ptrdiff_t)c * a.n];
        if (x == 0.0) continue;
        l += x * a.theta[a.off_g + (ptrdiff_t)c * a.p + j];
    }
    return l;
}

__device__ __forceinline__ void col_prep(const mix_args &a, int grad, double y, int j,
                                         svir_mix_col *c)
{
    const double *t = a.theta;
    svir_mix_col_prep(a.nb, a.zi, a.bg, grad, y, a.nb ? t[a.off_phi + j] : 0.0,
                      a.zi ? t[a.off_zi + j] : 0.0, a.bg ? t[a.off_bg + j] : 0.0,
                      a.bg ? t[a.off_bg + a.p + j] : 0.0, a.bg ? t[a.off_bg + 2 * a.p + j] : 0.0,
                      c);
}

__global__ void __launch_bounds__(MT) k_dens(const mix_args a)
{
    const int b = blockIdx.x, i = row_of(a, b);
    double *yb = a.yb + (ptrdiff_t)b * a.p;
    if (a.Y) {
        const double *y = a.Y + (ptrdiff_t)i * a.p;
        for (int j = threadIdx.x; j < a.p; j += MT) yb[j] = y[j];
        return;
    }
    for (int j = threadIdx.x; j < a.p; j += MT) yb[j] = 0.0;
    __syncthreads();
    for (int z = a.Rp[i] + threadIdx.x; z < a.Rp[i + 1]; z += MT) yb[a.Rj[z]] = a.Rx[z];
}

__global__ void __launch_bounds__(MT) k_rowk(const mix_args a)
{
    SVIR_SHARED(double, sh, [KT * MT]);
    const int b = blockIdx.x, i = row_of(a, b);
    const double *yb = a.yb + (ptrdiff_t)b * a.p;
    const int plain = a.nb && !a.zi && !a.bg;
    for (int k0 = 0; k0 < a.K; k0 += KT) {
        double acc[KT];
#pragma unroll
        for (int q = 0; q < KT; q++) acc[q] = 0.0;
        for (int j = threadIdx.x; j < a.p; j += MT) {
            const double y = yb[j], lin = lin_of(a, i, j);
            svir_mix_col c;
            col_prep(a, 0, y, j, &c);
#pragma unroll
            for (int q = 0; q < KT; q++) {
                const int k = k0 + q;
                if (k >= a.K) break;
                double gl, gp, gz, lk;
                const double s = svir_mix_entry(a.nb, a.zi, a.bg, 0, &c, y,
                                                lin + a.theta[a.off_mu + (ptrdiff_t)k * a.p + j],
                                                &gl, &gp, &gz, &lk);
                acc[q] += plain ? s + c.c0 : s;
            }
        }
        svir_block_sums<KT, MT>(sh, acc);
        if (threadIdx.x == 0)
            for (int q = 0; q < KT && k0 + q < a.K; q++)
                a.a[(ptrdiff_t)b * a.K + k0 + q] = a.lp[k0 + q] - a.lgy[i] + acc[q];
    }
}

__global__ void k_resp(const mix_args a, int B)
{
    const int b = blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= B) return;
    const double *ab = a.a + (ptrdiff_t)b * a.K;
    double *rb = a.r + (ptrdiff_t)b * a.K;
    double mx = ab[0], se = 0.0;
    for (int k = 1; k < a.K; k++) mx = ab[k] > mx ? ab[k] : mx;
    for (int k = 0; k < a.K; k++) se += (rb[k] = exp(ab[k] - mx));
    a.ll[b] = mx + log(se);
    for (int k = 0; k < a.K; k++) rb[k] /= se;
}

/* thread (column j, chunk c of CR rows) */
__global__ void __launch_bounds__(MT) k_grad(const mix_args a, int B, int CR)
{
    const int j = blockIdx.x * MT + threadIdx.x, c = blockIdx.y;
    if (j >= a.p) return;
    double *pt = a.part + (ptrdiff_t)c * a.D;
    const int p = a.p, K = a.K;
    for (int k = 0; k < K; k++) pt[a.off_mu + (ptrdiff_t)k * p + j] = 0.0;
    for (int q = 0; q < a.dx; q++) pt[a.off_g + (ptrdiff_t)q * p + j] = 0.0;
    double sphi = 0.0, szi = 0.0, gb0 = 0.0, gb1 = 0.0, gb2 = 0.0;
    const int b1 = (c + 1) * CR < B ? (c + 1) * CR : B;
    for (int b = c * CR; b < b1; b++) {
        const int i = row_of(a, b);
        const double y = a.yb[(ptrdiff_t)b * p + j], lin = lin_of(a, i, j);
        const double *rb = a.r + (ptrdiff_t)b * K;
        svir_mix_col cc;
        col_prep(a, a.nb, y, j, &cc);
        double sdl = 0.0, sz = 0.0;
        for (int k = 0; k < K; k++) {
            double gl, gp, gz, lk;
            svir_mix_entry(a.nb, a.zi, a.bg, 1, &cc, y, lin + a.theta[a.off_mu + (ptrdiff_t)k * p + j],
                           &gl, &gp, &gz, &lk);
            const double rk = rb[k];
            pt[a.off_mu + (ptrdiff_t)k * p + j] += rk * gl;
            sdl += rk * gl;
            sphi += rk * gp;
            sz += rk * gz;
        }
        if (a.zi) szi += sz;
        if (a.bg) {
            gb0 += sz * cc.gG;
            gb1 += sz * cc.gGp;
            gb2 += sz - cc.w;
        }
        for (int q = 0; q < a.dx; q++) {
            const double x = a.X[i + (ptrdiff_t)q * a.n];
            if (x != 0.0) pt[a.off_g + (ptrdiff_t)q * p + j] += x * sdl;
        }
    }
    if (a.nb) pt[a.off_phi + j] = sphi;
    if (a.zi) pt[a.off_zi + j] = szi;
    if (a.bg) {
        pt[a.off_bg + j] = gb0;
        pt[a.off_bg + p + j] = gb1;
        pt[a.off_bg + 2 * p + j] = gb2;
    }
}

/* g[d] = scale sum_c part[c, d] for the likelihood's coordinates (mu, and
 * gamma through the background: the entries before off_eta but m and log
 * tau); 0 elsewhere */
__global__ void k_fold(const mix_args a, int nch, double scale)
{
    const ptrdiff_t d = (ptrdiff_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (d >= a.D) return;
    const ptrdiff_t Kp = (ptrdiff_t)a.K * a.p;
    if (d >= a.off_eta || (d >= Kp && d < a.off_g)) {
        a.g[d] = 0.0;
        return;
    }
    double s = 0.0;
    for (int c = 0; c < nch; c++) s += a.part[(ptrdiff_t)c * a.D + d];
    a.g[d] = scale * s;
}

/* block k < K: sum_b (r[b, k] - pi_k); block K: sum_b ll[b] */
__global__ void __launch_bounds__(MT) k_eta(const mix_args a, int B)
{
    SVIR_SHARED(double, sh, [MT]);
    const int k = blockIdx.x;
    double v[1] = {0.0};
    if (k < a.K) {
        const double pk = exp(a.lp[k]);
        for (int b = threadIdx.x; b < B; b += MT) v[0] += a.r[(ptrdiff_t)b * a.K + k] - pk;
    } else {
        for (int b = threadIdx.x; b < B; b += MT) v[0] += a.ll[b];
    }
    svir_block_sums<1, MT>(sh, v);
    if (threadIdx.x == 0) a.sums[k] = v[0];
}

/* ---------------------------------------------------------------- host */

static int nchunks(int B)
{
    int nch = B / CR_MIN;
    return nch < 1 ? 1 : nch > NCH_MAX ? NCH_MAX : nch;
}

extern "C" double svir_cuda_mix_bytes(const svir_mix_model *m, int maxrows)
{
    const double n = m->n, p = m->p, K = m->K, D = (double)m->D, B = maxrows;
    const double nz = m->Y ? 0.0 : (double)m->Rp[m->n];
    double s = m->Y ? n * p : 1.5 * nz + (n + 2) / 2;
    s += (m->O ? n : 0.0) + n * m->dx + n;
    s += B * (p + 2 * K + 1) + (double)nchunks(maxrows) * D + 2 * D + K + 1 + B / 2 + 1;
    return 8.0 * s;
}

static int dalloc(svir_cuda_mix *d, double **ptr, ptrdiff_t count, char *err, size_t errlen)
{
    *ptr = NULL;
    if (d->ndb >= 16) {
        snprintf(err, errlen, "svir internal error: too many device buffers");
        return 3;
    }
    void *q = NULL;
    PCK(cudaMalloc(&q, sizeof(double) * (size_t)(count > 0 ? count : 1)));
    d->dbuf[d->ndb++] = (double *)q;
    *ptr = (double *)q;
    return 0;
}

static int upload(svir_cuda_mix *d, double **ptr, const void *src, size_t bytes, char *err,
                  size_t errlen)
{
    const int st = dalloc(d, ptr, (ptrdiff_t)((bytes + 7) / 8), err, errlen);
    if (st) return st;
    if (bytes > 0) PCK(cudaMemcpy(*ptr, src, bytes, cudaMemcpyHostToDevice));
    return 0;
}

extern "C" void svir_cuda_mix_free(svir_cuda_mix *d)
{
    if (!d) return;
    for (int k = 0; k < d->ndb; k++) cudaFree(d->dbuf[k]);
    free(d->hsum);
    free(d);
}

static int mix_new(const svir_mix_model *m, int maxrows, svir_cuda_mix *d, char *err,
                   size_t errlen)
{
    const int n = m->n, p = m->p, K = m->K;
    mix_args &a = d->a;
    a.n = n; a.p = p; a.K = K; a.dx = m->dx;
    a.nb = m->dist == SVIR_MIX_NB || m->dist == SVIR_MIX_ZINB;
    a.zi = m->dist == SVIR_MIX_ZINB;
    a.bg = m->bg;
    a.D = m->D;
    a.off_mu = m->off_mu; a.off_phi = m->off_phi; a.off_zi = m->off_zi; a.off_g = m->off_g;
    a.off_bg = m->off_bg; a.off_eta = m->off_eta;
    size_t fr = 0, tot = 0;
    PCK(cudaMemGetInfo(&fr, &tot));
    const double need = svir_cuda_mix_bytes(m, maxrows);
    if (need > (double)fr) {
        snprintf(err, errlen, "the count mixture needs %.2f GB on the device, %.2f GB are free",
                 need / 1e9, (double)fr / 1e9);
        return 3;
    }
    int st = 0;
    double *q;
    if (m->Y) {
        /* row-major, so that a row's counts are contiguous */
        double *Yt = (double *)malloc(sizeof(double) * (size_t)n * (size_t)p);
        if (!Yt) {
            snprintf(err, errlen, "out of memory uploading the counts");
            return 2;
        }
        for (int j = 0; j < p; j++)
            for (int i = 0; i < n; i++) Yt[(ptrdiff_t)i * p + j] = m->Y[i + (ptrdiff_t)j * n];
        st = upload(d, &q, Yt, sizeof(double) * (size_t)n * p, err, errlen);
        free(Yt);
        if (st) return st;
        a.Y = q;
    } else {
        const size_t nz = (size_t)m->Rp[n];
        if ((st = upload(d, &q, m->Rp, sizeof(int) * ((size_t)n + 1), err, errlen))) return st;
        a.Rp = (const int *)q;
        if ((st = upload(d, &q, m->Rj, sizeof(int) * nz, err, errlen))) return st;
        a.Rj = (const int *)q;
        if ((st = upload(d, &q, m->Rx, sizeof(double) * nz, err, errlen))) return st;
        a.Rx = q;
    }
    if (m->O) {
        if ((st = upload(d, &q, m->O, sizeof(double) * (size_t)n, err, errlen))) return st;
        a.O = q;
    }
    if (m->dx > 0) {
        if ((st = upload(d, &q, m->X, sizeof(double) * (size_t)n * m->dx, err, errlen))) return st;
        a.X = q;
    }
    if ((st = upload(d, &q, m->lgy, sizeof(double) * (size_t)n, err, errlen))) return st;
    a.lgy = q;
    const ptrdiff_t B = maxrows, D = m->D;
    if ((st = dalloc(d, &a.yb, B * p, err, errlen)) || (st = dalloc(d, &a.a, B * K, err, errlen)) ||
        (st = dalloc(d, &a.r, B * K, err, errlen)) || (st = dalloc(d, &a.ll, B, err, errlen)) ||
        (st = dalloc(d, &a.part, (ptrdiff_t)nchunks(maxrows) * D, err, errlen)) ||
        (st = dalloc(d, &a.g, D, err, errlen)) || (st = dalloc(d, &a.sums, K + 1, err, errlen)) ||
        (st = dalloc(d, &q, D + K, err, errlen)))
        return st;
    a.theta = q;
    a.lp = q + D;
    if ((st = dalloc(d, &q, (B + 1) / 2, err, errlen))) return st;
    a.idx = (const int *)q;
    d->hsum = (double *)malloc(sizeof(double) * (size_t)(K + 1));
    if (!d->hsum) {
        snprintf(err, errlen, "out of memory setting up the device");
        return 2;
    }
    return 0;
}

extern "C" int svir_cuda_mix_new(const svir_mix_model *m, int maxrows, svir_cuda_mix **out,
                                 char *err, size_t errlen)
{
    *out = NULL;
    if (m->dist == SVIR_MIX_DIRMULT) {
        snprintf(err, errlen, "dist = \"dirmult\" runs on the CPU only");
        return 1;
    }
    if (maxrows < 1 || maxrows > m->n) maxrows = m->n;
    svir_cuda_mix *d = (svir_cuda_mix *)calloc(1, sizeof *d);
    if (!d) {
        snprintf(err, errlen, "out of memory setting up the device");
        return 2;
    }
    d->n = m->n;
    d->p = m->p;
    d->K = m->K;
    d->D = m->D;
    d->Bmax = maxrows;
    const int st = mix_new(m, maxrows, d, err, errlen);
    if (st) {
        svir_cuda_mix_free(d);
        return st;
    }
    *out = d;
    return 0;
}

const char *svir_cuda_mix_error(const svir_cuda_mix *d)
{
    return d ? d->first_err : "";
}

static int loglik(svir_cuda_mix *d, const double *theta, const double *lp, const int *idx, int B,
                  double scale, double *ll, double *g, double *aout, char *err, size_t errlen)
{
    if (B < 1 || B > d->Bmax) {
        snprintf(err, errlen, "svir internal error: a batch of %d rows (at most %d)", B, d->Bmax);
        return 3;
    }
    mix_args a = d->a;
    const ptrdiff_t D = d->D;
    const int K = d->K;
    PCK(cudaMemcpy((double *)a.theta, theta, sizeof(double) * (size_t)D, cudaMemcpyHostToDevice));
    PCK(cudaMemcpy((double *)a.lp, lp, sizeof(double) * (size_t)K, cudaMemcpyHostToDevice));
    if (idx)
        PCK(cudaMemcpy((int *)a.idx, idx, sizeof(int) * (size_t)B, cudaMemcpyHostToDevice));
    else
        a.idx = NULL;
    SVIR_LAUNCH(B, MT, k_dens)(a);
    KCK("k_dens");
    SVIR_LAUNCH(B, MT, k_rowk)(a);
    KCK("k_rowk");
    SVIR_LAUNCH((B + MT - 1) / MT, MT, k_resp)(a, B);
    KCK("k_resp");
    if (g) {
        const int nch = nchunks(B), CR = (B + nch - 1) / nch;
        SVIR_LAUNCH(dim3((unsigned)((d->p + MT - 1) / MT), (unsigned)nch), MT, k_grad)(a, B, CR);
        KCK("k_grad");
        SVIR_LAUNCH((unsigned)((D + 255) / 256), 256, k_fold)(a, nch, scale);
        KCK("k_fold");
    }
    SVIR_LAUNCH(K + 1, MT, k_eta)(a, B);
    KCK("k_eta");
    PCK(cudaMemcpy(d->hsum, a.sums, sizeof(double) * (size_t)(K + 1), cudaMemcpyDeviceToHost));
    *ll = scale * d->hsum[K];
    if (g) {
        double *hg = (double *)malloc(sizeof(double) * (size_t)D);
        if (!hg) {
            snprintf(err, errlen, "out of memory on the host");
            return 2;
        }
        const cudaError_t e = cudaMemcpy(hg, a.g, sizeof(double) * (size_t)D, cudaMemcpyDeviceToHost);
        if (svir_cuda_failed(e, "cudaMemcpy (gradient)", err, errlen)) {
            free(hg);
            return 3;
        }
        for (ptrdiff_t k = 0; k < D; k++) g[k] += hg[k];
        for (int k = 0; k < K - 1; k++) g[a.off_eta + k] += scale * d->hsum[k];
        free(hg);
    }
    if (aout)
        PCK(cudaMemcpy(aout, a.a, sizeof(double) * (size_t)B * K, cudaMemcpyDeviceToHost));
    return 0;
}

extern "C" int svir_cuda_mix_loglik(svir_cuda_mix *d, const double *theta, const double *lp,
                                    const int *idx, int B, double scale, double *ll, double *g,
                                    double *a, char *err, size_t errlen)
{
    const int st = loglik(d, theta, lp, idx, B, scale, ll, g, a, err, errlen);
    if (st && !d->first_err[0]) snprintf(d->first_err, sizeof d->first_err, "%s", err);
    return st;
}
