/* The Poisson-lognormal model's L-BFGS on the CUDA device: the problem of
 * core/svir_lbfgs.c on the device's vector space (every vector of length
 * npar on the device; its passes are the kernels below, their reductions
 * in a fixed order), with the objective of cuda/pln_eval.cu, the
 * per-column preconditioner of models/pln/pln_lbfgs.c (k_prec) and its S
 * start (k_sstart). The algorithm is the CPU's, the same code: per
 * iteration only scalars, and the objective's O(p q) (rank), O(p)
 * (diagonal, spherical) or O(p^2) (full) doubles, cross to the host. */
#include <time.h>

#include "cuda/pln_dev.cuh"

/* ---------------------------------------------------------------- kernels */

/* partial sums of up to three dot products a_c . b_c over PLN_DOT_BLOCKS
 * blocks (or fewer for short vectors): part[c * gridDim.x + block] */
__global__ void __launch_bounds__(PB) k_dots(const double *__restrict__ a0, const double *__restrict__ b0,
                                             const double *__restrict__ a1, const double *__restrict__ b1,
                                             const double *__restrict__ a2, const double *__restrict__ b2,
                                             int nv, ptrdiff_t L, double *__restrict__ part)
{
    SVIR_SHARED(double, sh, [3 * PB]);
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

/* the largest |dir_k| / cap_k (cap_lo below split, cap_hi from it), per
 * block */
__global__ void __launch_bounds__(PB) k_maxcap(const double *__restrict__ dir, ptrdiff_t split,
                                               double ilo, double ihi, ptrdiff_t L,
                                               double *__restrict__ part)
{
    SVIR_SHARED(double, sh, [PB]);
    double m = 0.0;
    for (ptrdiff_t k = (ptrdiff_t)blockIdx.x * PB + threadIdx.x; k < L; k += (ptrdiff_t)gridDim.x * PB) {
        const double v = (k < split ? ilo : ihi) * fabs(dir[k]);
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
    SVIR_SHARED(double, sh, [PB]);
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

/* The L-BFGS's initial inverse Hessian H0 (pln_precond of models/pln/pln_lbfgs.c,
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
#define PREC_DMAX 8 /* PLN_PREC_DMAX of models/pln/pln_lbfgs.c */
#define PREC_NK (PREC_DMAX + PREC_DMAX * (PREC_DMAX + 1) / 2)
#define PREC_CH 4   /* sums per block_sums */
__global__ void __launch_bounds__(PB) k_prec(const pln_args a, double *__restrict__ v,
                                             const double *__restrict__ A, const double *__restrict__ S2,
                                             const double *__restrict__ omd, const double *__restrict__ XtX,
                                             int dx)
{
    SVIR_SHARED(double, sh, [PREC_CH * PB]);
    SVIR_SHARED(double, zs, [PREC_DMAX]);
    SVIR_SHARED(int, oks, );
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

/* The start's log S (pln_sstart of models/pln/pln_lbfgs.c): each entry's optimum
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

/* x *= t */
__global__ void __launch_bounds__(PB) k_scale(double *__restrict__ x, double t, ptrdiff_t L)
{
    for (ptrdiff_t k = (ptrdiff_t)blockIdx.x * PB + threadIdx.x; k < L; k += (ptrdiff_t)gridDim.x * PB)
        x[k] *= t;
}

/* y = g - g1 */
__global__ void __launch_bounds__(PB) k_ydiff(double *__restrict__ y, const double *__restrict__ g,
                                              const double *__restrict__ g1, ptrdiff_t L)
{
    for (ptrdiff_t k = (ptrdiff_t)blockIdx.x * PB + threadIdx.x; k < L; k += (ptrdiff_t)gridDim.x * PB)
        y[k] = g[k] - g1[k];
}

/* ---------------------------------------------------------------- the vector space */

#define VCK(call)                                                                       \
    do {                                                                                \
        char err_[256];                                                                 \
        if (svir_cuda_failed((call), #call, err_, sizeof err_))                         \
            return svir_err_set(e, 3, "%s", err_);                                      \
    } while (0)
#define VKCK(name) VCK(cudaGetLastError())

typedef struct {
    svir_vecspace vs;
    svir_cuda_pln *x;
} dev_space;

static double *dv_alloc(void *ctx)
{
    const dev_space *s = (const dev_space *)ctx;
    void *p = NULL;
    if (cudaMalloc(&p, sizeof(double) * (size_t)(s->x->L > 0 ? s->x->L : 1)) != cudaSuccess) {
        (void)cudaGetLastError();
        return NULL;
    }
    return (double *)p;
}

static void dv_free(void *ctx, double *v)
{
    (void)ctx;
    if (v) cudaFree(v);
}

/* out[c] = a_c . b_c, c < nv <= 3 (k_dots, k_fold: a fixed order) */
static int dots3(svir_cuda_pln *x, int nv, const double *const *a, const double *const *b,
                 double *out, svir_err *e)
{
    const int nb = pln_nblocks(x->L);
    SVIR_LAUNCH(nb, PB, k_dots)(a[0], b[0], a[nv > 1 ? 1 : 0], b[nv > 1 ? 1 : 0], a[nv > 2 ? 2 : 0],
                       b[nv > 2 ? 2 : 0], nv, x->L, x->part);
    VKCK("k_dots");
    SVIR_LAUNCH(1, PB, k_fold)(x->part, nb, nv, 0, x->scal);
    VKCK("k_fold");
    VCK(cudaMemcpy(out, x->scal, sizeof(double) * (size_t)nv, cudaMemcpyDeviceToHost));
    return 0;
}

static int dv_dots(void *ctx, int nv, double *const *vs, const double *xv, double *out, svir_err *e)
{
    svir_cuda_pln *x = ((dev_space *)ctx)->x;
    for (int l0 = 0; l0 < nv; l0 += 3) {
        const int k = nv - l0 < 3 ? nv - l0 : 3;
        const double *a[3], *b[3];
        for (int u = 0; u < k; u++) {
            a[u] = vs[l0 + u];
            b[u] = xv;
        }
        const int st = dots3(x, k, a, b, out + l0, e);
        if (st) return st;
    }
    return 0;
}

static int dv_direction(void *ctx, double *dir, int nm, const double *cf, double *const *S,
                        const double *g, ptrdiff_t split, double cap_lo, double cap_hi,
                        double *slope, double *big, double *dd, svir_err *e)
{
    svir_cuda_pln *x = ((dev_space *)ctx)->x;
    const ptrdiff_t L = x->L;
    const int gb = pln_nblocks(L);
    for (int l = 0; l < nm; l++) {
        SVIR_LAUNCH(gb, PB, k_axpy)(dir, cf[l], S[l], L);
        VKCK("k_axpy");
    }
    SVIR_LAUNCH(gb, PB, k_neg)(dir, L);
    VKCK("k_neg");
    const double *a[2] = {g, dir}, *b[2] = {dir, dir};
    double r[2];
    int st = dots3(x, 2, a, b, r, e);
    if (st) return st;
    *slope = -r[0];
    *dd = r[1];
    SVIR_LAUNCH(gb, PB, k_maxcap)(dir, split, 1.0 / cap_lo, 1.0 / cap_hi, L, x->part);
    VKCK("k_maxcap");
    SVIR_LAUNCH(1, PB, k_fold)(x->part, gb, 1, 1, x->scal);
    VKCK("k_fold");
    VCK(cudaMemcpy(big, x->scal, sizeof(double), cudaMemcpyDeviceToHost));
    return 0;
}

static int dv_step(void *ctx, double *cand, const double *par, double t, const double *dir,
                   svir_err *e)
{
    svir_cuda_pln *x = ((dev_space *)ctx)->x;
    SVIR_LAUNCH(pln_nblocks(x->L), PB, k_cand)(cand, par, t, dir, x->L);
    VKCK("k_cand");
    return 0;
}

static int dv_ydiff(void *ctx, double *y, const double *g, const double *g1, const double *dir,
                    double *yy, double *dg1, svir_err *e)
{
    svir_cuda_pln *x = ((dev_space *)ctx)->x;
    SVIR_LAUNCH(pln_nblocks(x->L), PB, k_ydiff)(y, g, g1, x->L);
    VKCK("k_ydiff");
    const double *a[2] = {y, dir}, *b[2] = {y, g1};
    double r[2];
    const int st = dots3(x, 2, a, b, r, e);
    if (st) return st;
    *yy = r[0];
    *dg1 = -r[1];
    return 0;
}

static int dv_scale(void *ctx, double *v, double t, svir_err *e)
{
    svir_cuda_pln *x = ((dev_space *)ctx)->x;
    SVIR_LAUNCH(pln_nblocks(x->L), PB, k_scale)(v, t, x->L);
    VKCK("k_scale");
    return 0;
}

static int dv_copy(void *ctx, double *dst, const double *src, svir_err *e)
{
    svir_cuda_pln *x = ((dev_space *)ctx)->x;
    VCK(cudaMemcpy(dst, src, sizeof(double) * (size_t)x->L, cudaMemcpyDeviceToDevice));
    return 0;
}

/* ---------------------------------------------------------------- the problem */

struct svir_cuda_pln_state {
    svir_lbfgs_problem pb;
    dev_space space;
    svir_cuda_pln *x;
};

static int pb_eval(void *ctx, int slot, const double *xv, double *J, double *g, svir_err *e)
{
    svir_cuda_pln *x = ((svir_cuda_pln_state *)ctx)->x;
    char err[512] = "";
    const int st = pln_eval_dev(x, xv, slot, J, g, NULL, err, sizeof err);
    if (st) svir_err_set(e, st, "%s", err);
    return st;
}

/* out = H0 v, v = gsign g - sum_l alpha_l Y[l] (k_prec, k_prec_tail at
 * slot's point); ydot[l] = Y[l]' out */
static int pb_precond(void *ctx, int slot, const double *g, double gsign, int nm,
                      const double *alpha, double *const *Y, double *out, double *ydot, svir_err *e)
{
    svir_cuda_pln *x = ((svir_cuda_pln_state *)ctx)->x;
    const ptrdiff_t L = x->L, tail = L - 2 * x->np;
    const int gb = pln_nblocks(L);
    VCK(cudaMemcpy(out, g, sizeof(double) * (size_t)L, cudaMemcpyDeviceToDevice));
    if (gsign != 1.0) {
        SVIR_LAUNCH(gb, PB, k_scale)(out, gsign, L);
        VKCK("k_scale");
    }
    for (int l = 0; l < nm; l++) {
        SVIR_LAUNCH(gb, PB, k_axpy)(out, -alpha[l], Y[l], L);
        VKCK("k_axpy");
    }
    SVIR_LAUNCH(x->p, PB, k_prec)(x->a, out, x->A[slot], x->S2[slot], x->omd[slot], x->XtX, x->dx);
    VKCK("k_prec");
    if (tail > 0) {
        SVIR_LAUNCH(pln_nblocks(tail), PB, k_prec_tail)(out, x->h0r[slot], 2 * x->np, tail);
        VKCK("k_prec_tail");
    }
    return nm > 0 ? dv_dots(&((svir_cuda_pln_state *)ctx)->space, nm, Y, out, ydot, e) : 0;
}

/* log S at each entry's optimum given M (pln_sstart) */
static int pb_start(void *ctx, int slot, double *xv, svir_err *e)
{
    svir_cuda_pln *x = ((svir_cuda_pln_state *)ctx)->x;
    SVIR_LAUNCH(x->p, PB, k_sstart)(x->n, xv + x->np, x->A[slot], x->S2[slot], x->omd[slot]);
    VKCK("k_sstart");
    return 0;
}

extern "C" void svir_cuda_pln_state_free(svir_cuda_pln_state *s)
{
    if (!s) return;
    pln_free(s->x);
    free(s);
}

extern "C" int svir_cuda_pln_state_new(const svir_pln_data *dat, const double *x0,
                                       svir_cuda_pln_state **state, svir_lbfgs_problem **pb,
                                       char *err, size_t errlen)
{
    *state = NULL;
    *pb = NULL;
    svir_cuda_pln_state *s = (svir_cuda_pln_state *)calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory fitting the Poisson-lognormal model");
        return 2;
    }
    int st = pln_new(dat, 1, &s->x, err, errlen);
    if (st) {
        free(s);
        return st;
    }
    svir_cuda_pln *x = s->x;
    if (svir_cuda_failed(cudaMemcpy(x->par, x0, sizeof(double) * (size_t)x->L,
                                    cudaMemcpyHostToDevice), "cudaMemcpy (par)", err, errlen)) {
        svir_cuda_pln_state_free(s);
        return 3;
    }
    svir_vecspace *vs = &s->space.vs;
    s->space.x = x;
    vs->ctx = &s->space;
    vs->n = x->L;
    vs->alloc = dv_alloc;
    vs->free = dv_free;
    vs->dots = dv_dots;
    vs->direction = dv_direction;
    vs->step = dv_step;
    vs->ydiff = dv_ydiff;
    vs->scale = dv_scale;
    vs->copy = dv_copy;
    svir_lbfgs_problem *p = &s->pb;
    p->vs = vs;
    p->ctx = s;
    p->x = x->par;
    p->eval = pb_eval;
    p->precond = pb_precond;
    p->start = pb_start;
    p->cap_split = x->np; /* as the CPU's: M moves at most 2, the rest 1 */
    p->cap_lo = 2.0;
    p->cap_hi = 1.0;
    p->memory = PLN_MEM;
    p->destroy = NULL;
    *state = s;
    *pb = p;
    return 0;
}

/* the final point, its B and Sigma (an evaluation with Sigma, slot 0) */
extern "C" int svir_cuda_pln_state_result(svir_cuda_pln_state *s, double *xh, double *B,
                                          double *Sigma, char *err, size_t errlen)
{
    svir_cuda_pln *x = s->x;
    double *g = NULL, J;
    int st = pln_dalloc(x, &g, x->L, err, errlen);
    if (!st) st = pln_eval_dev(x, x->par, 0, &J, g, x->fixed ? NULL : Sigma, err, errlen);
    if (!st && svir_cuda_failed(cudaMemcpy(xh, x->par, sizeof(double) * (size_t)x->L,
                                           cudaMemcpyDeviceToHost), "cudaMemcpy (par)", err, errlen))
        st = 3;
    if (!st && x->d > 0 &&
        svir_cuda_failed(cudaMemcpy(B, x->a.B, sizeof(double) * (size_t)x->d * x->p,
                                    cudaMemcpyDeviceToHost), "cudaMemcpy (B)", err, errlen))
        st = 3;
    return st;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

extern "C" int svir_cuda_pln_fit(const svir_pln_data *dat, double *par, int maxit, double tol,
                                 double *J, int *iters, double *trace, double *B, double *Sigma,
                                 double *secs, char *err, size_t errlen)
{
    svir_cuda_pln_state *s = NULL;
    svir_lbfgs_problem *pb = NULL;
    *iters = 0;
    int st = svir_cuda_pln_state_new(dat, par, &s, &pb, err, errlen);
    if (st) return st;
    svir_err e = {0, ""};
    int stop = 0, slot = 0;
    const double t0 = now_s();
    st = svir_lbfgs_run(pb, maxit, tol, NULL, J, iters, trace, &stop, &slot, &e);
    if (!st && svir_cuda_failed(cudaDeviceSynchronize(), "cudaDeviceSynchronize", err, errlen)) st = 3;
    else if (st) snprintf(err, errlen, "%s", e.msg);
    if (secs) *secs = now_s() - t0;
    if (!st) st = svir_cuda_pln_state_result(s, par, B, Sigma, err, errlen);
    svir_cuda_pln_state_free(s);
    return st;
}
