/* The GLMM's device internals shared by its CUDA files: cuda/glmm_obs.cu
 * (the data on the device and the pass over the observations),
 * cuda/glmm_local.cu (the per-group part of a step, Adam),
 * cuda/glmm_step.cu (one ELBO estimate on the device) and cuda/glmm_fit.cu
 * (a whole fit). The host API is models/glmm/glmm_cuda.h. */
#ifndef SVIR_GLMM_DEV_CUH
#define SVIR_GLMM_DEV_CUH

#include "cuda/svir_cuda_common.cuh"
#ifndef SVIR_CUDA_EMU
#include <cub/device/device_radix_sort.cuh>
#endif

#include <algorithm>
#include <climits>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <math.h>

#include "models/glmm/glmm_cuda.h"
#include "models/glmm/glmm_svi.h"
#include "models/glmm/glmm_local.h"
#include "core/svir_loop.h"
#include "models/glmm/glmm_coupling.h"
#include "core/svir_adam.h"
#include "core/svir_guide.h"
#include "core/svir_philox.h"

#define SVIR_CUDA_BLOCK 256
#define SVIR_CUDA_WARPS (SVIR_CUDA_BLOCK / 32)
/* fixed-effect columns a thread keeps in registers: k_obs is compiled for
 * PC = 4, 16 and 32 and runs with the smallest PC >= p; columns past 32 get
 * their gradient from k_xtde in slices of 32 */
#define SVIR_CUDA_PCHUNK 32

typedef struct {
    int q, ngroups, z_ones;
    ptrdiff_t off_z;
    const int *group;   /* [n] */
    const double *Z;    /* [n x q] or NULL for a random intercept */
    const int *rowptr;  /* [ngroups + 1] */
    const int *rows;    /* [n] observations of each group, in order */
} dev_term;

typedef struct {
    ptrdiff_t n;
    int p, family, link, nterms;
    const double *y, *trials, *offset, *X;
    dev_term terms[SVIR_CUDA_MAX_TERMS];
    /* in a fit: the loop's `stopped` flag (device); once set, the steps the
     * host queued before it noticed skip the pass (they change nothing) */
    const int *halt;
} dev_model;

struct svir_cuda_data {
    dev_model dm;
    ptrdiff_t nz;
    int nblocks, sms;
    /* device buffers */
    double *y, *trials, *offset, *X, *Z[SVIR_CUDA_MAX_TERMS];
    int *group[SVIR_CUDA_MAX_TERMS], *rowptr[SVIR_CUDA_MAX_TERMS], *rows[SVIR_CUDA_MAX_TERMS];
    double *beta, *b, *de, *G, *partial, *out;
    svir_aux *aux;
    /* the rows the pass runs over: bidx [nrows] (NULL: all n), and per term
     * its rows by group, rows grows[t][gstart[t][j]] .. grows[t][gend[t][j] -
     * 1] (positions in bidx, or observations). Set to the full data at
     * upload; a minibatch fit points them at its batch. */
    const int *bidx;
    ptrdiff_t nrows;
    const int *gstart[SVIR_CUDA_MAX_TERMS], *gend[SVIR_CUDA_MAX_TERMS], *grows[SVIR_CUDA_MAX_TERMS];
    cudaEvent_t ev0, ev1;
    int have_events;
};

#define CK(call)                                                                        \
    do {                                                                                \
        if (svir_cuda_failed((call), #call, err, errlen)) goto fail;                    \
    } while (0)

__device__ __forceinline__ double warp_sum(double v)
{
    /* fixed order: the same tree for every call */
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    return v;
}

/* sums v over the block into *out (thread 0's value is valid); sh has
 * SVIR_CUDA_WARPS doubles */
__device__ __forceinline__ double block_sum(double v, double *sh)
{
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    v = warp_sum(v);
    __syncthreads(); /* sh may still be read from the previous call */
    if (lane == 0) sh[wid] = v;
    __syncthreads();
    double s = 0.0;
    if (threadIdx.x == 0)
        for (int w = 0; w < SVIR_CUDA_WARPS; w++) s += sh[w];
    return s;
}

typedef struct {
    int q, ngroups, qoff;
    ptrdiff_t off_z, off_loc, off_qq, first; /* first: the term's first global group */
} dev_lterm;

typedef struct {
    int nterms;
    ptrdiff_t ngroups;
    dev_lterm t[SVIR_CUDA_MAX_TERMS];
} dev_locals;

/* group k of any term: its term, q, and its offsets in z (pos) and in the
 * local parameters (lo) */
typedef struct {
    const dev_lterm *tm;
    int q;
    ptrdiff_t pos, lo;
} local_at;

__device__ __forceinline__ local_at local_group(const dev_locals &L, ptrdiff_t k)
{
    int t = 0;
    while (t + 1 < L.nterms && k >= L.t[t + 1].first) t++;
    local_at g;
    g.tm = &L.t[t];
    g.q = g.tm->q;
    const ptrdiff_t j = k - g.tm->first;
    g.pos = g.tm->off_z + j * g.q;
    g.lo = g.tm->off_loc + j * svir_local_block(g.q);
    return g;
}

typedef struct {
    const svir_glmm *m;
    svir_glmm md;      /* m with device arrays for the global part */
    svir_coupling cd;   /* cp with device arrays */
    svir_globals g;
    dev_locals L;
    int ns, fullrank, stl, S, nt, sumq, nb, full;
    ptrdiff_t D, nz, nloc, ngp, npar, B, ngroups;
    double scale;
    uint32_t key[2];
    svir_cuda_data *d;
    svir_term *d_terms;
    int *d_pt, *d_cns, *d_coff, *d_qoff, *d_cS;
    double *d_pdf, *d_ploc, *d_pscale, *d_ca, *d_cK, *d_comega, *d_cref;
    /* [npar]: the global parameters, then the local ones */
    double *d_par, *d_grad;
    double *d_eps, *d_theta, *d_sd, *d_L, *d_A, *d_cu, *d_cw, *d_gtheta, *d_ws, *d_scal,
        *d_noise, *d_z, *d_ed, *d_part, *d_sums, *d_cds, *d_cdw, *d_dA;
    /* minibatch */
    int *d_idx, *d_keys, *d_skeys, *d_iota, *d_svals, *d_start, *d_end;
    double *d_cnt, *d_nobs;
    void *d_tmp;
    size_t tmp_bytes;
    int key_bits[SVIR_CUDA_MAX_TERMS];
    /* fit */
    double *d_mom, *d_vel, *d_sum, *d_prev, *d_best, *d_trace, *d_wel, *d_shift, *d_cref_old,
        *d_com_old, *d_wold, *d_wnew, *d_v, *d_bad;
    svir_loop *d_loop;
} fit_ctx;

/* ---- what the files share ------------------------------------------------- */

/* cuda/glmm_obs.cu */
__global__ void k_reduce_partials(const double *__restrict__ partial, int nblocks, int nv,
                                  double *__restrict__ out);
__global__ void k_reduce_range(const double *__restrict__ partial, int nblocks, int nv, int v0,
                               int len, double *__restrict__ out);
__global__ void k_normals(uint32_t k0, uint32_t k1, uint64_t stream, uint64_t step,
                          uint64_t first, ptrdiff_t count, uint64_t pair0, ptrdiff_t npairs,
                          double *__restrict__ out);
/* the pass over d's rows; nonzero when no kernel has the family and link */
int glmm_launch_obs(svir_cuda_data *d);
/* cuda/glmm_local.cu */
int glmm_make_locals(const svir_glmm *m, dev_locals *L, char *err, size_t errlen);
__global__ void k_local_draw(const dev_locals L, const double *__restrict__ lpar,
                             const double *__restrict__ A, const double *__restrict__ noise,
                             const double *__restrict__ post_shift, double *__restrict__ z,
                             double *__restrict__ b, double *__restrict__ ed,
                             double *__restrict__ partial);
__global__ void k_local_back(const dev_locals L, const double *__restrict__ lpar,
                             const double *__restrict__ A, const double *__restrict__ G,
                             const double *__restrict__ shift, const double *__restrict__ noise,
                             const double *__restrict__ z, const double *__restrict__ ed,
                             const double *__restrict__ cnt, const double *__restrict__ nobs,
                             double scale, double invS, int stl, int first, int with_kl,
                             double *__restrict__ lgrad, double *__restrict__ partial);
size_t glmm_part_size(const svir_glmm *m, int nb);
size_t glmm_sums_size(const svir_glmm *m, int sumq);
cudaError_t glmm_launch_term_sums(const svir_glmm *m, const dev_locals &L, int sumq,
                                  const double *lpar, const double *G, const double *z,
                                  const double *cnt, const double *nobs, double scale,
                                  double *part, double *sums);
/* cuda/glmm_step.cu */
__global__ void k_zero(double *x, ptrdiff_t n);
int glmm_grid_for(ptrdiff_t n, int cap = 4096);
int glmm_ctx_new(fit_ctx *x, const svir_glmm *m, const svir_coupling *cp, int ns, int fullrank,
                 int stl, int S, ptrdiff_t B, uint64_t seed, long maxs, int W, char *err,
                 size_t errlen);
void glmm_ctx_free(fit_ctx *x);
int glmm_ctx_step(fit_ctx *x, long step, char *err, size_t errlen);

#endif
