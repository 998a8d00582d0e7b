/* Bayesian neural networks' table (infer/svir_model.h; the model in
 * bnn_model.h): the state read from the spec R builds (R/bnn.R), and SVI
 * with the local reparameterisation on the CPU, the layers' products
 * through R's BLAS. */
#include "core/svir_lapack.h"

#include "models/bnn/bnn_model.h"
#include "models/bnn/bnn_cuda.h"
#include "models/bnn/bnn_entry.h"
#include "core/svir_math.h"
#include "core/svir_philox.h"
#include "core/svir_zig.h"
#include "core/svir_zig_simd.h"
#include "models/glmm/glmm_codes.h"
#include "infer/svir_gsvi.h"
#include "core/svir_out.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void svir_bnn_layout(svir_bnn_model *m)
{
    m->dims[0] = m->d;
    m->dims[m->L + 1] = 1;
    ptrdiff_t off = 0;
    for (int l = 0; l <= m->L; l++) {
        m->off_w[l] = off;
        off += (ptrdiff_t)m->dims[l] * m->dims[l + 1];
        m->off_b[l] = off;
        off += m->dims[l + 1];
    }
    m->off_lam = -1;
    if (m->prior == SVIR_BNN_PHIER) {
        m->off_lam = off;
        off += m->L + 1;
    }
    m->off_sig = m->family == SVIR_GAUSSIAN ? off++ : -1;
    m->D = off;
}

static void bnn_free(void *model)
{
    free(model);
}

/* spec: model = "bnn", n, d, L, hidden (L), act, family, X (n x d), y (n),
 * w_scale, b_scale; init_mu (D) or absent. */
static int bnn_read(const svir_list *spec, const svir_list *ctrl, const svir_control *c,
                    void **out, svir_err *e)
{
    (void)ctrl;
    svir_bnn_model *m = calloc(1, sizeof *m);
    if (!m) return svir_err_set(e, 2, "out of memory reading the model");
    *out = m;
    m->n = svir_list_int(spec, "n", 0);
    m->d = svir_list_int(spec, "d", 0);
    m->L = svir_list_int(spec, "L", -1);
    m->act = svir_list_int(spec, "act", -1);
    m->family = svir_list_int(spec, "family", -1);
    m->prior = svir_list_int(spec, "prior", 0);
    if (m->n < 1 || m->d < 1 || m->L < 0 || m->L > SVIR_BNN_MAXL || m->act < 0 ||
        m->act >= SVIR_BNN_NACT || m->prior < 0 || m->prior >= SVIR_BNN_NPRIOR ||
        (m->family != SVIR_GAUSSIAN && m->family != SVIR_BINOMIAL && m->family != SVIR_POISSON))
        return svir_err_set(e, 1, "svir internal error: bad network dimensions");
    if (c->method != SVIR_METHOD_SVI)
        return svir_err_set(e, 1, "svir internal error: networks are fitted by SVI");
    const int *h = m->L > 0 ? svir_list_ints(spec, "hidden", m->L, 0, e) : NULL;
    m->X = svir_list_reals(spec, "X", (ptrdiff_t)m->n * m->d, 0, e);
    m->y = svir_list_reals(spec, "y", m->n, 0, e);
    m->w_scale = svir_list_num(spec, "w_scale", 0.0);
    m->b_scale = svir_list_num(spec, "b_scale", 0.0);
    if (e->status) return e->status;
    if (!(m->w_scale > 0) || !(m->b_scale > 0))
        return svir_err_set(e, 1, "svir internal error: bad network priors");
    m->dims[0] = m->d;
    for (int l = 0; l < m->L; l++) {
        if (h[l] < 1) return svir_err_set(e, 1, "svir internal error: bad layer width");
        m->dims[l + 1] = h[l];
    }
    svir_bnn_layout(m);
    m->init_mu = svir_list_reals(spec, "init_mu", m->D, 1, e);
    m->kl_warmup = svir_list_int(spec, "kl_warmup", 0);
    m->kl_weight = svir_list_num(spec, "kl_weight", 1.0);
    if (!(m->kl_weight > 0.0 && m->kl_weight <= 1.0))
        return svir_err_set(e, 1, "svir internal error: bad KL weight");
    m->path = svir_list_int(spec, "path", 0);
    m->isa = svir_list_int(spec, "isa", 0);
    m->nv = svir_list_int(spec, "nv", 0);
    if (m->nv > 0) {
        m->Xv = svir_list_reals(spec, "Xv", (ptrdiff_t)m->nv * m->d, 0, e);
        m->yv = svir_list_reals(spec, "yv", m->nv, 0, e);
    }
    return e->status;
}

/* a step's work: the batch's rows times the weights */
static double bnn_size(const void *model, const svir_control *c)
{
    const svir_bnn_model *m = model;
    const double B = c->batch_size > 0 && c->batch_size < m->n ? (double)c->batch_size : m->n;
    return B * (double)m->D;
}

/* the tiles run on threads from 10^5 units of work a step (rows times
 * parameters; a step of 256 rows at width 256 is 8 of them) */
static int bnn_threads(const void *model, const svir_control *c)
{
    return svir_default_threads(bnn_size(model, c), 1e5);
}

static int bnn_outputs(const void *model, const svir_control *c, svir_result *res, svir_err *e);

/* ---- SVI ------------------------------------------------------------------- */

/* The stacked rows (row s B + b: example idx[b] for particle s) go
 * through the network in tiles of TR rows, forward and backward, so that
 * a tile's activations stay in cache (at width 1024 and 4096 rows the
 * whole batch's would be 34 MB an array, and the step memory-bound); the
 * gradients are summed over the tiles. Three ways to run a tile:
 *   fused (one hidden layer with fewer than BNN_THIN inputs, the common
 *     network): the hidden units a few columns at a time through their
 *     pre-activations, draws and activations into the output's sums, and
 *     back, by the kernels of bnn_kern.h (bnn_fused_forward);
 *   kernels (every layer thin: fewer than BNN_THIN inputs or outputs, as a
 *     network's first and last layers are; and more than one thread and
 *     tile): layer by layer by those loops;
 *   BLAS (a wide layer, where dgemm's blocking pays, or one thread): layer
 *     by layer, the products through R's BLAS.
 * Fused or kernels, the tiles are spread over w->T threads, each with its
 * own lane (buffers and sums), the lanes' sums added in order; BLAS: one
 * lane, the tiles in turn. The kernels are compiled for the baseline
 * instruction set, AVX2 and AVX-512, the machine's best picked at run
 * time. */
#define BNN_THIN 64
#define BNN_MAX_LANES 64 /* most threads over the tiles */

typedef struct {
    double *A[SVIR_BNN_MAXL + 1];  /* a tile's input to each layer, TR x dims[l] */
    double *A2[SVIR_BNN_MAXL + 1]; /* its square */
    double *Z[SVIR_BNN_MAXL + 1];  /* pre-activations, TR x dims[l + 1] */
    double *Q[SVIR_BNN_MAXL + 1];  /* their noise over twice their sd under the guide */
    double *G, *Gn, *dV, *dVn;     /* TR x max width scratch */
    double *gmu;                   /* [D] the sums of d/d mu */
    double *gls;                   /* [D] of d/d log sd (biases), (A^2)' dV (weights) */
    double *gs;                    /* [S] d/d log sigma, per particle */
    double ll;                     /* the log-likelihood's sum */
    double tph[3];                 /* seconds in the draws, the likelihood, the backward pass */
} bnn_lane;

/* the tile kernels of one instruction set (bnn_kern.h) */
typedef struct {
    void (*fwd)(ptrdiff_t tr, ptrdiff_t in, ptrdiff_t out, const double *A, const double *A2,
                const double *W, const double *S2, double *Z, double *V);
    void (*tn)(ptrdiff_t tr, ptrdiff_t in, ptrdiff_t out, const double *A, const double *G, double *C);
    void (*nt)(ptrdiff_t tr, ptrdiff_t in, ptrdiff_t out, const double *G, const double *W, double *N);
    void (*col)(ptrdiff_t tr, double mb, double vb, const double *e, double *Z, double *Q, double *A,
                double *A2, int relu);
    /* n normals from each of 8 (4) generators into e + j ld, the same
     * numbers as svir_zig_normal's from each; NULL: fewer at a time */
    void (*zig8)(const svir_zig *z, svir_xoshiro g[8], ptrdiff_t n, double *e, ptrdiff_t ld);
    void (*zig4)(const svir_zig *z, svir_xoshiro g[4], ptrdiff_t n, double *e, ptrdiff_t ld);
    void (*back)(ptrdiff_t tr, const double *A, double *Gn, double *dVn, const double *Q, int relu,
                 double *sg, double *sv);
    /* one hidden layer, fused: four hidden columns' (one column's) forward
     * pass, a hidden column's backward pass */
    void (*ffwd4)(ptrdiff_t tr, ptrdiff_t d, const double *A, const double *A2, const double *W,
                  const double *S2, const double *mb, const double *vb, const double *e, double *Ah,
                  double *Qh, const double *w2, const double *s22, double *Zo, double *Vo, int relu);
    void (*ffwd1)(ptrdiff_t tr, ptrdiff_t d, const double *A, const double *A2, const double *W,
                  const double *S2, const double *mb, const double *vb, const double *e, double *Ah,
                  double *Qh, const double *w2, const double *s22, double *Zo, double *Vo, int relu);
    void (*fback)(ptrdiff_t tr, ptrdiff_t d, const double *A, const double *A2, const double *a,
                  const double *q, const double *G, const double *dV, const double *w2, const double *s22,
                  int relu, int nc, double *gb, double *vb, double *C, double *C2, double s[8]);
} bnn_kernels;

static const bnn_kernels *bnn_kernels_pick(int base);

typedef struct bnn_work {
    const bnn_kernels *k;
    const svir_bnn_model *m;
    const svir_control *c;
    int S, full, T, kern, fused, nl;
    ptrdiff_t B, R;   /* rows of the batch, rows of the stacked particles */
    ptrdiff_t TR, nt; /* rows per tile, tiles */
    double scale;     /* n / B */
    uint32_t key[2];
    int *idx;         /* [B] */
    bnn_lane lane[BNN_MAX_LANES];
    double *s2;             /* [D] the guide's variances */
    double *eta;            /* [R] the output (bnn_rows) */
    double *es, *lsig, *sig; /* [S] log sigma's noise, its value, sigma */
    double *block;          /* everything above, one allocation */
    svir_zig zig;           /* the normals' tables */
    struct bnn_work *vw;    /* the held-out rows' (bnn_validate), or NULL */
    svir_cuda_bnn *dev;     /* the device's (backend = "cuda"), or NULL */
} bnn_work;

/* a tile's rows times the widest layer: about 128 KB an array */
#define BNN_TILE_ELEMS 16384

static ptrdiff_t bnn_n_global(const void *model, const svir_control *c)
{
    (void)c;
    return 2 * ((const svir_bnn_model *)model)->D;
}

static void bnn_work_free(void *work)
{
    bnn_work *w = work;
    if (!w) return;
    bnn_work_free(w->vw);
    free(w->idx);
    free(w->block);
    free(w);
}

ptrdiff_t svir_bnn_tile_rows(const svir_bnn_model *m, ptrdiff_t R)
{
    ptrdiff_t maxw = 1;
    for (int l = 0; l <= m->L + 1; l++) maxw = m->dims[l] > maxw ? m->dims[l] : maxw;
    ptrdiff_t TR = BNN_TILE_ELEMS / maxw;
    TR = TR < 64 ? 64 : (TR / 8) * 8;
    return TR >= R ? R : TR;
}

/* the work for batches of B rows and S particles (full: every row, in
 * order) */
static bnn_work *bnn_work_make(const svir_bnn_model *m, const svir_control *c, ptrdiff_t B, int S,
                               int full)
{
    bnn_work *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    w->m = m;
    w->c = c;
    w->S = S;
    w->full = full;
    w->B = B;
    w->R = w->B * w->S;
    w->scale = (double)m->n / (double)w->B;
    w->key[0] = (uint32_t)(c->seed & 0xffffffffu);
    w->key[1] = (uint32_t)(c->seed >> 32);
    w->T = c->threads > 0 ? c->threads : 1;
    svir_zig_init(&w->zig);
    ptrdiff_t maxw = 1;
    for (int l = 0; l <= m->L + 1; l++) maxw = m->dims[l] > maxw ? m->dims[l] : maxw;
    const ptrdiff_t TR = svir_bnn_tile_rows(m, w->R);
    w->TR = TR;
    w->nt = (w->R + TR - 1) / TR;
    /* the loops where every layer is thin and the tiles can be spread
     * over threads; otherwise BLAS (measured faster on one thread) */
    w->kern = w->T > 1 && w->nt > 1;
    for (int l = 0; l <= m->L; l++)
        if (m->dims[l] >= BNN_THIN && m->dims[l + 1] >= BNN_THIN) w->kern = 0;
    if (m->path == 1) w->kern = 1;
    if (m->path == 2) w->kern = 0;
    /* one hidden layer with a thin input: fused (bnn_fused_forward), the
     * tiles over the threads */
    w->fused = (m->path == 0 || m->path == 3) && m->L == 1 && m->dims[0] < BNN_THIN;
    w->k = bnn_kernels_pick(m->isa == 1 ? 0 : m->isa == 2 ? 1 : 2);
    w->nl = w->kern || w->fused ? (w->T < BNN_MAX_LANES ? w->T : BNN_MAX_LANES) : 1;
    if (w->nl > w->nt) w->nl = (int)w->nt;
    ptrdiff_t per = 0;
    for (int l = 0; l <= m->L; l++) per += 2 * TR * m->dims[l] + 2 * TR * m->dims[l + 1];
    per += 2 * TR * 3; /* the inputs' columns padded to a multiple of 4 */
    per += 4 * TR * maxw + 2 * m->D + w->S;
    const ptrdiff_t tot = per * w->nl + m->D + w->R + 3 * w->S;
    w->idx = malloc(sizeof(int) * (size_t)w->B);
    w->block = malloc(sizeof(double) * (size_t)tot);
    if (!w->idx || !w->block) {
        bnn_work_free(w);
        return NULL;
    }
    double *p = w->block;
    for (int k = 0; k < w->nl; k++) {
        bnn_lane *ln = &w->lane[k];
        for (int l = 0; l <= m->L; l++) {
            const ptrdiff_t in = m->dims[l] + (l == 0 ? (4 - m->dims[0] % 4) % 4 : 0), out = m->dims[l + 1];
            ln->A[l] = p; p += TR * in;
            ln->A2[l] = p; p += TR * in;
            ln->Z[l] = p; p += TR * out;
            ln->Q[l] = p; p += TR * out;
        }
        ln->G = p; p += TR * maxw;
        ln->Gn = p; p += TR * maxw;
        ln->dV = p; p += TR * maxw;
        ln->dVn = p; p += TR * maxw;
        ln->gmu = p; p += m->D;
        ln->gls = p; p += m->D;
        ln->gs = p; p += w->S;
    }
    w->s2 = p; p += m->D;
    w->eta = p; p += w->R;
    w->es = p; p += w->S;
    w->lsig = p; p += w->S;
    w->sig = p;
    for (ptrdiff_t k = 0; k < w->B; k++) w->idx[k] = (int)k;
    return w;
}

/* the held-out rows are evaluated in chunks of at most BNN_VB rows with
 * BNN_VS particles */
#define BNN_VB 256
#define BNN_VS 16

static void *bnn_work_new(const void *model, const svir_control *c)
{
    const svir_bnn_model *m = model;
    const int full = c->batch_size <= 0 || c->batch_size >= m->n;
    bnn_work *w = bnn_work_make(m, c, full ? m->n : c->batch_size,
                                c->num_particles > 0 ? c->num_particles : 1, full);
    if (w) w->dev = m->dev;
    if (w && m->nv > 0) {
        w->vw = bnn_work_make(m, c, m->nv < BNN_VB ? m->nv : BNN_VB, BNN_VS, 0);
        if (!w->vw) {
            bnn_work_free(w);
            return NULL;
        }
    }
    return w;
}

static int bnn_work_threads(const void *work)
{
    (void)work;
    return 1;
}

static void bnn_init(const void *model, const svir_control *c, double *gpar, double *lpar)
{
    const svir_bnn_model *m = model;
    (void)lpar;
    svir_gsvi_init(m->D, m->init_mu, c->init_scale, gpar);
}

/* the rows of step `step`: positions step*B .. step*B+B-1 of an endless
 * sequence of epochs, each a keyed permutation of the rows */
static void bnn_batch(void *work, long step, ptrdiff_t *nspans, const ptrdiff_t **off,
                      const ptrdiff_t **len)
{
    bnn_work *w = work;
    (void)off;
    (void)len;
    *nspans = -1;
    if (!w->full) svir_gsvi_rows(w->idx, w->B, w->m->n, w->key, step);
}

/* C (r x c) = alpha op(A) op(B) + beta C, column-major */
static void gemm(const char *ta, const char *tb, ptrdiff_t r, ptrdiff_t c, ptrdiff_t k,
                 double alpha, const double *A, ptrdiff_t lda, const double *B, ptrdiff_t ldb,
                 double beta, double *C, ptrdiff_t ldc)
{
    const int ri = (int)r, ci = (int)c, ki = (int)k, la = (int)lda, lb = (int)ldb, lc = (int)ldc;
    F77_CALL(dgemm)(ta, tb, &ri, &ci, &ki, &alpha, A, &la, B, &lb, &beta, C, &lc FCONE FCONE);
}

/* the prior sd of a layer's weights and biases */
static double w_sd(const svir_bnn_model *m, int l)
{
    return m->w_scale / sqrt((double)m->dims[l]);
}

/* ---- the tiles' products by loops (the kernels path): tiles of tr rows,
 * column-major, leading dimension tr; eight rows at a time in registers */

/* The kernels (bnn_kern.h) for the baseline instruction set (pairs of
 * doubles: SSE2 on x86-64, NEON on arm64) and, on x86-64 where GCC or
 * clang compiles them, for AVX2 with FMA and for AVX-512, the best the
 * machine has picked at run time (so a fit's numbers are the same on one
 * machine, not across machines); the noise by core/svir_zig_simd.h's 4-
 * and 8-lane ziggurats there. */
#if defined(__GNUC__) && defined(__x86_64__) && defined(__SSE2__)
#define BNN_X86 1
#include <immintrin.h>
#endif

#define BNN_VW 2
#define BNN_KS _base
#define BNN_ATTR
#ifdef BNN_X86
#define BNN_SQRT(v) ((bnn_vec_base)_mm_sqrt_pd((__m128d)(v)))
#define BNN_MAX0(v) ((bnn_vec_base)_mm_max_pd((__m128d)(v), _mm_setzero_pd()))
#endif
#include "models/bnn/bnn_kern.h"

#ifdef BNN_X86
#define BNN_VW 4
#define BNN_KS _avx2
#define BNN_ATTR __attribute__((target("avx2,fma")))
#define BNN_SQRT(v) ((bnn_vec_avx2)_mm256_sqrt_pd((__m256d)(v)))
#define BNN_MAX0(v) ((bnn_vec_avx2)_mm256_max_pd((__m256d)(v), _mm256_setzero_pd()))
#include "models/bnn/bnn_kern.h"

/* AVX-512: eight doubles a vector; 1 / sd from the 14-bit estimate and
 * two Newton steps, y (3/2 - v y^2 / 2), each squaring the relative error
 * (2^-14, 2^-27, below 2^-53 but for the steps' own rounding) */
#define BNN_A512 __attribute__((target("avx512f,avx512dq,avx512vl,avx2,fma")))
BNN_A512 static inline __m512d bnn_rsqrt512(__m512d v)
{
    /* far outside (2^-100, 2^100) (never in a sane fit): 1 / sqrt(v) */
    if ((_mm512_cmp_pd_mask(v, _mm512_set1_pd(0x1p-100), _CMP_GE_OQ) &
         _mm512_cmp_pd_mask(v, _mm512_set1_pd(0x1p100), _CMP_LE_OQ)) != 0xff)
        return _mm512_div_pd(_mm512_set1_pd(1.0), _mm512_sqrt_pd(v));
    const __m512d th = _mm512_set1_pd(1.5), hv = _mm512_mul_pd(_mm512_set1_pd(0.5), v);
    __m512d y = _mm512_rsqrt14_pd(v);
    y = _mm512_mul_pd(y, _mm512_fnmadd_pd(_mm512_mul_pd(hv, y), y, th));
    return _mm512_mul_pd(y, _mm512_fnmadd_pd(_mm512_mul_pd(hv, y), y, th));
}
/* the sums of four (eight) vectors by a tree of shuffles: [sums of a, b,
 * c, d, a, b, c, d] ([a, b, c, d, e, f, g, h]) */
BNN_A512 static inline __m512d bnn_pairs512(__m512d a, __m512d b)
{
    return _mm512_add_pd(_mm512_unpacklo_pd(a, b), _mm512_unpackhi_pd(a, b));
}
BNN_A512 static inline __m512d bnn_lanes512(__m512d a, __m512d b)
{
    return _mm512_add_pd(_mm512_shuffle_f64x2(a, b, 0x88), _mm512_shuffle_f64x2(a, b, 0xdd));
}
BNN_A512 static inline __m512d bnn_red4_512(__m512d a, __m512d b, __m512d c, __m512d d)
{
    const __m512d s = bnn_lanes512(bnn_pairs512(a, b), bnn_pairs512(c, d));
    return bnn_lanes512(s, s);
}
BNN_A512 static inline __m512d bnn_red8_512(__m512d a, __m512d b, __m512d c, __m512d d, __m512d e, __m512d f,
                                            __m512d g, __m512d h)
{
    return bnn_lanes512(bnn_lanes512(bnn_pairs512(a, b), bnn_pairs512(c, d)),
                        bnn_lanes512(bnn_pairs512(e, f), bnn_pairs512(g, h)));
}
#define BNN_RED4(a, b, c, d) ((bnn_vec_avx512)bnn_red4_512((__m512d)(a), (__m512d)(b), (__m512d)(c), (__m512d)(d)))
#define BNN_RED8(a, b, c, d, e, f, g, h)                                                                      \
    ((bnn_vec_avx512)bnn_red8_512((__m512d)(a), (__m512d)(b), (__m512d)(c), (__m512d)(d), (__m512d)(e),     \
                                  (__m512d)(f), (__m512d)(g), (__m512d)(h)))
#define BNN_VW 8
#define BNN_KS _avx512
#define BNN_ATTR BNN_A512
#define BNN_SQRT(v) ((bnn_vec_avx512)_mm512_sqrt_pd((__m512d)(v)))
#define BNN_RSQRT(v) ((bnn_vec_avx512)bnn_rsqrt512((__m512d)(v)))
#define BNN_MAX0(v) ((bnn_vec_avx512)_mm512_max_pd((__m512d)(v), _mm512_setzero_pd()))
#include "models/bnn/bnn_kern.h"
#endif

static const bnn_kernels bnn_k_base = {k_fwd_base,   k_tn_base,   k_nt_base,  bnn_column_base,
                                       NULL,         NULL,        k_back_base, k_ffwd4_base,
                                       k_ffwd1_base, k_fback_base};
#ifdef BNN_X86
static const bnn_kernels bnn_k_avx2 = {k_fwd_avx2,   k_tn_avx2,     k_nt_avx2,   bnn_column_avx2,
                                       NULL,         svir_zig4_avx2, k_back_avx2, k_ffwd4_avx2,
                                       k_ffwd1_avx2, k_fback_avx2};
static const bnn_kernels bnn_k_avx512 = {k_fwd_avx512,    k_tn_avx512,   k_nt_avx512,   bnn_column_avx512,
                                         svir_zig8_avx512, svir_zig4_avx2, k_back_avx512, k_ffwd4_avx512,
                                         k_ffwd1_avx512,  k_fback_avx512};
#endif

/* the machine's kernels, or at most level's: 0 the baseline instruction
 * set's, 1 AVX2's, 2 (or more) the best the machine has */
static const bnn_kernels *bnn_kernels_pick(int level)
{
#ifdef BNN_X86
    __builtin_cpu_init();
    const int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (level >= 2 && avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512vl"))
        return &bnn_k_avx512;
    if (level >= 1 && avx2) return &bnn_k_avx2;
#endif
    (void)level;
    return &bnn_k_base;
}

/* tile t's first row and rows */
static void bnn_tile_span(const bnn_work *w, ptrdiff_t t, ptrdiff_t *r0, ptrdiff_t *tr)
{
    *r0 = t * w->TR;
    *tr = w->R - *r0 < w->TR ? w->R - *r0 : w->TR;
}

/* tile t's inputs and their squares into lane ln's A[0], A2[0]; its rows
 * returned */
static ptrdiff_t bnn_inputs(const bnn_work *w, bnn_lane *ln, const double *X, ptrdiff_t n, ptrdiff_t t)
{
    ptrdiff_t r0, tr;
    bnn_tile_span(w, t, &r0, &tr);
    const ptrdiff_t B = w->B, d = w->m->d;
    for (ptrdiff_t c = 0; c < d; c++)
        for (ptrdiff_t k = 0; k < tr; k++) {
            const double x = X[w->idx[(r0 + k) % B] + c * n];
            ln->A[0][k + c * tr] = x;
            ln->A2[0][k + c * tr] = x * x;
        }
    /* zeros up to a multiple of four columns (k_fback's blocks) */
    const ptrdiff_t pad = (4 - d % 4) % 4;
    memset(ln->A[0] + d * tr, 0, sizeof(double) * (size_t)(pad * tr));
    memset(ln->A2[0] + d * tr, 0, sizeof(double) * (size_t)(pad * tr));
    return tr;
}

/* columns o0 .. o0 + nc - 1's noise (8, 4 or 1 columns, as many as the
 * kernels draw at once with `left` columns left) in tile t: block (t, ctr
 * + o) of (stream, step) each, into e (tr x nc); nc returned */
static int bnn_noise(const bnn_work *w, uint64_t stream, uint64_t step, ptrdiff_t t, uint64_t ctr,
                     ptrdiff_t o0, ptrdiff_t left, double *e)
{
    const int nc = w->k->zig8 && left >= 8 ? 8 : w->k->zig4 && left >= 4 ? 4 : 1;
    ptrdiff_t r0, tr;
    bnn_tile_span(w, t, &r0, &tr);
    svir_xoshiro g[8];
    for (int j = 0; j < nc; j++)
        svir_xoshiro_seed(&g[j], w->key, stream, step, (uint64_t)t << 32 | (ctr + (uint64_t)(o0 + j)));
    if (nc == 8) w->k->zig8(&w->zig, g, tr, e, tr);
    else if (nc == 4) w->k->zig4(&w->zig, g, tr, e, tr);
    else
        for (ptrdiff_t r = 0; r < tr; r++) e[r] = svir_zig_normal(&w->zig, &g[0]);
    return nc;
}

/* Tile t's pre-activations (its tr stacked rows from r0 = t TR; row r is
 * row idx[r mod B] of X, n rows) into lane ln: per layer Z = A mu_W + mu_b
 * + sqrt(A^2 s2_W + s2_b) eps, A' = act(Z) (w->s2 holds the guide's
 * variances). The noise of a layer's column o in tile t is block (t, ctr
 * + o) of (stream, step) (svir_zig.h), ctr counting the earlier layers'
 * columns, so that the numbers do not depend on the threads or the path;
 * Q keeps eps / (2 sd) for the backward pass. */
static void bnn_forward(const bnn_work *w, bnn_lane *ln, const double *mu, const double *X,
                        ptrdiff_t n, uint64_t stream, uint64_t step, ptrdiff_t t)
{
    const svir_bnn_model *m = w->m;
    const int L = m->L, relu = m->act == SVIR_BNN_RELU;
    const ptrdiff_t tr = bnn_inputs(w, ln, X, n, t);
    uint64_t ctr = 0;
    for (int l = 0; l <= L; l++) {
        const ptrdiff_t in = m->dims[l], out = m->dims[l + 1];
        if (w->kern) {
            w->k->fwd(tr, in, out, ln->A[l], ln->A2[l], mu + m->off_w[l], w->s2 + m->off_w[l], ln->Z[l],
                  ln->Q[l]);
        } else {
            gemm("N", "N", tr, out, in, 1.0, ln->A[l], tr, mu + m->off_w[l], in, 0.0, ln->Z[l], tr);
            gemm("N", "N", tr, out, in, 1.0, ln->A2[l], tr, w->s2 + m->off_w[l], in, 0.0, ln->Q[l], tr);
        }
        double *An = l < L ? ln->A[l + 1] : NULL, *A2n = l < L ? ln->A2[l + 1] : NULL;
        double *e = ln->G; /* the columns' noise (G is free until the backward pass) */
        for (ptrdiff_t o0 = 0; o0 < out;) {
            const int nc = bnn_noise(w, stream, step, t, ctr, o0, out - o0, e);
            for (int j = 0; j < nc; j++) {
                const ptrdiff_t o = o0 + j;
                const double mb = mu[m->off_b[l] + o], vb = w->s2[m->off_b[l] + o];
                w->k->col(tr, mb, vb, e + j * tr, ln->Z[l] + o * tr, ln->Q[l] + o * tr,
                          An ? An + o * tr : NULL, An ? A2n + o * tr : NULL, relu);
            }
            o0 += nc;
        }
        ctr += (uint64_t)out;
    }
}

/* Tile t's pass through a network of one hidden layer with a thin input
 * (w->fused), the hidden units a column block at a time (their noise as
 * bnn_forward's, so the same numbers): each column's pre-activations, its
 * draw and activation, its values and Q kept (A[1], Q[0]), and the
 * output's mean and variance summed as it goes (Z[1], Q[1]); then the
 * output's draw. Neither A^2 of the hidden layer nor the layered pass's
 * separate sweeps: the same estimate as bnn_forward's but for rounding. */
static void bnn_fused_forward(const bnn_work *w, bnn_lane *ln, const double *mu, const double *X,
                              ptrdiff_t n, uint64_t stream, uint64_t step, ptrdiff_t t)
{
    const svir_bnn_model *m = w->m;
    const int relu = m->act == SVIR_BNN_RELU;
    const ptrdiff_t tr = bnn_inputs(w, ln, X, n, t), d = m->dims[0], H = m->dims[1];
    const double *W = mu + m->off_w[0], *S2 = w->s2 + m->off_w[0], *mb = mu + m->off_b[0],
                 *vb = w->s2 + m->off_b[0], *w2 = mu + m->off_w[1], *s22 = w->s2 + m->off_w[1];
    double *Zo = ln->Z[1], *Vo = ln->Q[1], *e = ln->G;
    memset(Zo, 0, sizeof(double) * (size_t)tr);
    memset(Vo, 0, sizeof(double) * (size_t)tr);
    for (ptrdiff_t o0 = 0; o0 < H;) {
        const int nc = bnn_noise(w, stream, step, t, 0, o0, H - o0, e);
        int j = 0;
        for (; j + 4 <= nc; j += 4) {
            const ptrdiff_t o = o0 + j;
            w->k->ffwd4(tr, d, ln->A[0], ln->A2[0], W + o * d, S2 + o * d, mb + o, vb + o, e + j * tr,
                        ln->A[1] + o * tr, ln->Q[0] + o * tr, w2 + o, s22 + o, Zo, Vo, relu);
        }
        for (; j < nc; j++) {
            const ptrdiff_t o = o0 + j;
            w->k->ffwd1(tr, d, ln->A[0], ln->A2[0], W + o * d, S2 + o * d, mb + o, vb + o, e + j * tr,
                        ln->A[1] + o * tr, ln->Q[0] + o * tr, w2 + o, s22 + o, Zo, Vo, relu);
        }
        o0 += nc;
    }
    bnn_noise(w, stream, step, t, (uint64_t)H, 0, 1, e);
    w->k->col(tr, mu[m->off_b[1]], w->s2[m->off_b[1]], e, Zo, Vo, NULL, NULL, relu);
}

/* tile t's backward pass after bnn_fused_forward and its G: the output's
 * bias, then each hidden column's (bnn_kern.h's k_fback), into the lane's
 * sums as bnn_backward's */
static void bnn_fused_backward(const bnn_work *w, bnn_lane *ln, const double *mu, ptrdiff_t t)
{
    const svir_bnn_model *m = w->m;
    ptrdiff_t r0, tr;
    bnn_tile_span(w, t, &r0, &tr);
    const ptrdiff_t d = m->dims[0], H = m->dims[1];
    const int relu = m->act == SVIR_BNN_RELU;
    double *G = ln->G, *dV = ln->dV;
    double sg = 0.0, sv = 0.0;
    for (ptrdiff_t r = 0; r < tr; r++) {
        dV[r] = G[r] * ln->Q[1][r];
        sg += G[r];
        sv += dV[r];
    }
    ln->gmu[m->off_b[1]] += sg;
    ln->gls[m->off_b[1]] += 2.0 * w->s2[m->off_b[1]] * sv;
    const ptrdiff_t ow = m->off_w[0], ob = m->off_b[0], o2 = m->off_w[1];
    /* two columns at a time (Gn, dVn: 2 tr of scratch) */
    for (ptrdiff_t o = 0; o < H;) {
        const int nc = H - o >= 2 ? 2 : 1;
        double s[8];
        w->k->fback(tr, d, ln->A[0], ln->A2[0], ln->A[1] + o * tr, ln->Q[0] + o * tr, G, dV, mu + o2 + o,
                    w->s2 + o2 + o, relu, nc, ln->Gn, ln->dVn, ln->gmu + ow + o * d, ln->gls + ow + o * d, s);
        for (int j = 0; j < nc; j++, o++) {
            ln->gmu[o2 + o] += s[4 * j];
            ln->gls[o2 + o] += s[4 * j + 1];
            ln->gmu[ob + o] += s[4 * j + 2];
            ln->gls[ob + o] += 2.0 * w->s2[ob + o] * s[4 * j + 3];
        }
    }
}

/* The KL of the guide (mu, ls: means and log sds) to the prior of the
 * weights, biases and (hierarchical) the layers' log precisions, in closed
 * form; with gmu, gls, minus beta times its gradient added to them.
 * Per weight, q = N(mu, sd^2) and tau^2 = s^2 / m:
 *   normal:  log tau - log sd + (sd^2 + mu^2) / (2 tau^2) - 1/2;
 *   laplace (b = tau / sqrt 2): log(2 b) + E|w| / b - log sd - log(2 pi) / 2
 *     - 1/2, E|w| = sd sqrt(2/pi) exp(-mu^2 / (2 sd^2)) + mu erf(mu / (sd
 *     sqrt 2));
 *   hierarchical, q(log lambda) = N(a, r^2), E lambda = exp(a + r^2/2):
 *     log tau - a/2 - log sd + E lambda (sd^2 + mu^2) / (2 tau^2) - 1/2 per
 *     weight, and per layer KL(q(log lambda) || Gamma(6, 6) on lambda) = -log
 *     r - log(2 pi)/2 - 1/2 - 6 log 6 + lgamma(6) - 6 a + 6 E lambda. */
static double bnn_kl(const svir_bnn_model *m, const double *mu, const double *ls, const double *s2,
                     double *gmu, double *gls, double beta)
{
    const double ga = 6.0, gb = 6.0;
    double kl = 0.0;
    for (int l = 0; l <= m->L; l++) {
        const ptrdiff_t nw = (ptrdiff_t)m->dims[l] * m->dims[l + 1], out = m->dims[l + 1];
        const double tau = w_sd(m, l), it2 = 1.0 / (tau * tau), ltau = log(tau);
        double El = 1.0, la = 0.0, lr = 0.0, r2 = 0.0;
        if (m->prior == SVIR_BNN_PHIER) {
            la = mu[m->off_lam + l];
            lr = ls[m->off_lam + l];
            r2 = exp(2.0 * lr);
            El = exp(la + 0.5 * r2);
        }
        double sq = 0.0; /* sum over the layer's weights of sd^2 + mu^2 */
        for (ptrdiff_t k = m->off_w[l]; k < m->off_w[l] + nw; k++) {
            const double sd2 = s2 ? s2[k] : exp(2.0 * ls[k]);
            if (m->prior == SVIR_BNN_PLAPLACE) {
                const double sd = sqrt(sd2), b = tau / sqrt(2.0), z = mu[k] / sd;
                const double ph = sqrt(2.0 / 3.14159265358979323846) * exp(-0.5 * z * z);
                const double ea = sd * ph + mu[k] * erf(z / sqrt(2.0));
                kl += log(2.0 * b) + ea / b - ls[k] - SVIR_LOG_SQRT_2PI - 0.5;
                if (gmu) {
                    gmu[k] -= beta * erf(z / sqrt(2.0)) / b;
                    gls[k] -= beta * (sd * ph / b - 1.0);
                }
                continue;
            }
            kl += ltau - 0.5 * la - ls[k] + 0.5 * El * (sd2 + mu[k] * mu[k]) * it2 - 0.5;
            sq += sd2 + mu[k] * mu[k];
            if (gmu) {
                gmu[k] -= beta * El * mu[k] * it2;
                gls[k] -= beta * (El * sd2 * it2 - 1.0);
            }
        }
        if (m->prior == SVIR_BNN_PHIER) {
            kl += -lr - SVIR_LOG_SQRT_2PI - 0.5 - ga * log(gb) + svir_lgamma(ga) - ga * la + gb * El;
            if (gmu) {
                const ptrdiff_t q = m->off_lam + l;
                gmu[q] -= beta * (-0.5 * (double)nw + 0.5 * El * sq * it2 - ga + gb * El);
                gls[q] -= beta * (0.5 * El * r2 * sq * it2 - 1.0 + gb * El * r2);
            }
        }
        const double tb = m->b_scale, ib2 = 1.0 / (tb * tb), ltb = log(tb);
        for (ptrdiff_t k = m->off_b[l]; k < m->off_b[l] + out; k++) {
            const double sd2 = s2 ? s2[k] : exp(2.0 * ls[k]);
            kl += ltb - ls[k] + 0.5 * (sd2 + mu[k] * mu[k]) * ib2 - 0.5;
            if (gmu) {
                gmu[k] -= beta * mu[k] * ib2;
                gls[k] -= beta * (sd2 * ib2 - 1.0);
            }
        }
    }
    return kl;
}

/* tile t's backward pass after its G (d/d the output) in lane ln, layer
 * by layer: G = d/dZ, dV = d/d(the variance) = G Q; into the lane's sums
 * the weights' d/d mu (gmu) and (A^2)' dV (gls), the biases' d/d mu and
 * d/d log sd */
static void bnn_backward(const bnn_work *w, bnn_lane *ln, const double *mu, ptrdiff_t t)
{
    const svir_bnn_model *m = w->m;
    ptrdiff_t r0, tr;
    bnn_tile_span(w, t, &r0, &tr);
    const int L = m->L, relu = m->act == SVIR_BNN_RELU;
    double *G = ln->G, *Gn = ln->Gn, *dV = ln->dV, *dVn = ln->dVn;
    {
        double sg = 0.0, sv = 0.0; /* the output's bias */
        for (ptrdiff_t r = 0; r < tr; r++) {
            dV[r] = G[r] * ln->Q[L][r];
            sg += G[r];
            sv += dV[r];
        }
        const ptrdiff_t q = m->off_b[L];
        ln->gmu[q] += sg;
        ln->gls[q] += 2.0 * w->s2[q] * sv;
    }
    for (int l = L; l >= 0; l--) {
        const ptrdiff_t in = m->dims[l], out = m->dims[l + 1];
        /* d mu_W = A' G, d s2_W = (A^2)' dV */
        if (w->kern) {
            w->k->tn(tr, in, out, ln->A[l], G, ln->gmu + m->off_w[l]);
            w->k->tn(tr, in, out, ln->A2[l], dV, ln->gls + m->off_w[l]);
        } else {
            gemm("T", "N", in, out, tr, 1.0, ln->A[l], tr, G, tr, 1.0, ln->gmu + m->off_w[l], in);
            gemm("T", "N", in, out, tr, 1.0, ln->A2[l], tr, dV, tr, 1.0, ln->gls + m->off_w[l], in);
        }
        if (l == 0) break;
        /* d A = G mu_W' + 2 A (dV s2_W'), then through the activation
         * into layer l - 1's G and dV, and its biases' gradients */
        if (w->kern) {
            w->k->nt(tr, in, out, G, mu + m->off_w[l], Gn);
            w->k->nt(tr, in, out, dV, w->s2 + m->off_w[l], dVn);
        } else {
            gemm("N", "T", tr, in, out, 1.0, G, tr, mu + m->off_w[l], in, 0.0, Gn, tr);
            gemm("N", "T", tr, in, out, 1.0, dV, tr, w->s2 + m->off_w[l], in, 0.0, dVn, tr);
        }
        const double *Al = ln->A[l], *Qp = ln->Q[l - 1];
        const ptrdiff_t ob = m->off_b[l - 1];
        for (ptrdiff_t k = 0; k < in; k++) {
            double sg, sv;
            w->k->back(tr, Al + k * tr, Gn + k * tr, dVn + k * tr, Qp + k * tr, relu, &sg, &sv);
            ln->gmu[ob + k] += sg;
            ln->gls[ob + k] += 2.0 * w->s2[ob + k] * sv;
        }
        double *tp = G;
        G = Gn;
        Gn = tp;
        tp = dV;
        dV = dVn;
        dVn = tp;
    }
}

/* tile t of step `step` in lane ln: the pass, the likelihood, the
 * backward pass */
static void bnn_tile(const bnn_work *w, bnn_lane *ln, const double *mu, long step, ptrdiff_t t)
{
    const svir_bnn_model *m = w->m;
    const ptrdiff_t B = w->B;
    ptrdiff_t r0, tr;
    bnn_tile_span(w, t, &r0, &tr);
    const int gauss = m->family == SVIR_GAUSSIAN;
    /* each particle's rows weighted n / (B S) */
    const double wt = w->scale / w->S;
    const double t0 = svir_wall_time();
    if (w->fused) bnn_fused_forward(w, ln, mu, m->X, m->n, SVIR_STREAM_LOCAL, (uint64_t)step, t);
    else bnn_forward(w, ln, mu, m->X, m->n, SVIR_STREAM_LOCAL, (uint64_t)step, t);
    const double t1 = svir_wall_time();
    const double *eta = ln->Z[m->L];
    for (ptrdiff_t k = 0; k < tr; k++) {
        const ptrdiff_t r = r0 + k;
        const int s = (int)(r / B);
        const double y = m->y[w->idx[r % B]], et = eta[k];
        /* d log p / d eta (and for gaussian d / d log sigma) */
        double gs;
        const double g = svir_bnn_dlogp(m->family, y, et, w->sig[s], &gs);
        if (gauss) ln->gs[s] += wt * gs;
        ln->ll += wt * svir_bnn_logp(m->family, y, et, w->lsig[s]);
        ln->G[k] = wt * g;
    }
    const double t2 = svir_wall_time();
    if (w->fused) bnn_fused_backward(w, ln, mu, t);
    else bnn_backward(w, ln, mu, t);
    ln->tph[0] += t1 - t0;
    ln->tph[1] += t2 - t1;
    ln->tph[2] += svir_wall_time() - t2;
}

/* the tiles on the CPU in one team: the variances (w->s2 from the log
 * sds ls), the tiles (lane k taking tiles k, k + nl, ...), then the
 * lanes' sums in order, each thread a slice of the parameters (the same
 * numbers for any team): into ggrad [2 D] the sums of d/d mu and of (A^2)'
 * dV (weights) or d/d log sd (biases), into lane 0's gs the sums of d/d
 * log sigma; the log-likelihood's sum returned */
static double bnn_lanes(bnn_work *w, const double *mu, const double *ls, long step, double *ggrad,
                        double *tsplit, double t0)
{
    const svir_bnn_model *m = w->m;
    const ptrdiff_t D = m->D;
    const int S = w->S, nl = w->nl;
    double *gmu = ggrad, *gls = ggrad + D;
#pragma omp parallel num_threads(nl) if (nl > 1)
    {
#pragma omp for schedule(static)
        for (ptrdiff_t k = 0; k < D; k++) w->s2[k] = exp(2.0 * ls[k]);
#pragma omp for schedule(static, 1)
        for (int k = 0; k < nl; k++) {
            bnn_lane *ln = &w->lane[k];
            memset(ln->gmu, 0, sizeof(double) * (size_t)D);
            memset(ln->gls, 0, sizeof(double) * (size_t)D);
            memset(ln->gs, 0, sizeof(double) * (size_t)S);
            ln->ll = 0.0;
            ln->tph[0] = ln->tph[1] = ln->tph[2] = 0.0;
            for (ptrdiff_t t = k; t < w->nt; t += nl) bnn_tile(w, ln, mu, step, t);
        }
#pragma omp for schedule(static)
        for (ptrdiff_t q = 0; q < D; q++) {
            double a = 0.0, b = 0.0;
            for (int k = 0; k < nl; k++) {
                a += w->lane[k].gmu[q];
                b += w->lane[k].gls[q];
            }
            gmu[q] = a;
            gls[q] = b;
        }
    }
    const double t1 = svir_wall_time();
    double ll = 0.0;
    for (int k = 0; k < nl; k++) {
        ll += w->lane[k].ll;
        if (k > 0)
            for (int s = 0; s < S; s++) w->lane[0].gs[s] += w->lane[k].gs[s];
    }
    /* the phases: the tiles' time split as lane 0 spent it */
    const double *ph = w->lane[0].tph, tot = ph[0] + ph[1] + ph[2];
    for (int k = 0; k < 3; k++)
        tsplit[k == 0 ? SVIR_PHASE_DRAW : k == 1 ? SVIR_PHASE_OBS : SVIR_PHASE_BACKWARD] +=
            tot > 0 ? (t1 - t0) * ph[k] / tot : 0.0;
    return ll;
}

/* the estimate's end from the batch's sums (ggrad, ll, lane 0's gs), the
 * same for both backends: the weights' d/d log sd, log sigma's prior, the
 * KL and log sigma's entropy; the ELBO into *elbo */
static void bnn_finish(bnn_work *w, long step, const double *gpar, double *ggrad, double ll,
                       double *elbo_out, double *tsplit)
{
    const svir_bnn_model *m = w->m;
    const ptrdiff_t D = m->D;
    const int S = w->S, L = m->L, gauss = m->family == SVIR_GAUSSIAN;
    const double *mu = gpar, *ls = gpar + D;
    double *gmu = ggrad, *gls = ggrad + D, elbo = 0.0;
    double *gs = w->lane[0].gs;
    for (int l = 0; l <= L; l++) {
        const ptrdiff_t nw = (ptrdiff_t)m->dims[l] * m->dims[l + 1];
        for (ptrdiff_t q = m->off_w[l]; q < m->off_w[l] + nw; q++) gls[q] *= 2.0 * w->s2[q];
    }
    if (gauss)
        for (int s = 0; s < S; s++) {
            /* sigma ~ N+(0, 1): log p(log sigma) = log 2 + log N(sigma) + log sigma */
            const double sig = exp(w->lsig[s]);
            elbo += (SVIR_LOG2 - SVIR_LOG_SQRT_2PI - 0.5 * sig * sig + w->lsig[s]) / S;
            gs[s] += (1.0 - sig * sig) / S;
        }
    elbo += ll;
    const double t3 = svir_wall_time();
    /* minus the KL of the weights (and the layers' precisions) to their
     * priors, in closed form; its gradient weighted by beta: kl_weight,
     * times the warm-up's ramp (the ELBO reported in full) */
    const double beta = m->kl_weight *
                        (m->kl_warmup > 0 && step < m->kl_warmup ? (double)(step + 1) / m->kl_warmup : 1.0);
    elbo -= bnn_kl(m, mu, ls, w->s2, gmu, gls, beta);
    if (gauss) {
        /* log sigma: drawn; its entropy exact */
        const ptrdiff_t q = m->off_sig;
        const double sd = exp(ls[q]);
        for (int s = 0; s < S; s++) {
            gmu[q] += gs[s];
            gls[q] += gs[s] * sd * w->es[s];
        }
        elbo += ls[q] + 0.5 + SVIR_LOG_SQRT_2PI;
        gls[q] += 1.0;
    }
    tsplit[SVIR_PHASE_BACKWARD] += svir_wall_time() - t3;
    *elbo_out = elbo;
}

/* SVI's estimate at step `step`: the batch's part on the CPU's lanes or
 * on the device, then bnn_finish's host part */
static double bnn_estimate(void *work, long step, const double *gpar, const double *lpar,
                           double *ggrad, double *lgrad, double *tsplit)
{
    bnn_work *w = work;
    const svir_bnn_model *m = w->m;
    const ptrdiff_t D = m->D;
    const int S = w->S, gauss = m->family == SVIR_GAUSSIAN;
    const double *mu = gpar, *ls = gpar + D;
    (void)lpar;
    (void)lgrad;
    const double t0 = svir_wall_time();
    for (int s = 0; s < S; s++) {
        w->es[s] = gauss ? svir_normal(w->key, SVIR_STREAM_GLOBAL, (uint64_t)step, (uint64_t)s) : 0.0;
        w->lsig[s] = gauss ? mu[m->off_sig] + exp(ls[m->off_sig]) * w->es[s] : 0.0;
        w->sig[s] = exp(w->lsig[s]);
    }
    double ll = 0.0, elbo = 0.0;
    if (w->dev) {
        /* the batch's part on the device (bnn_cuda.h); a failure is kept
         * there for the run's end, and this step's NaN makes the driver
         * reject it */
        for (ptrdiff_t k = 0; k < D; k++) w->s2[k] = exp(2.0 * ls[k]);
        char err[256];
        if (svir_cuda_bnn_step(w->dev, mu, w->s2, w->lsig, w->sig, w->full ? NULL : w->idx, step,
                               w->scale / S, ggrad, &ll, w->lane[0].gs, err, sizeof err))
            return NAN;
        tsplit[SVIR_PHASE_OBS] += svir_wall_time() - t0;
    } else {
        ll = bnn_lanes(w, mu, ls, step, ggrad, tsplit, t0);
    }
    bnn_finish(w, step, gpar, ggrad, ll, &elbo, tsplit);
    return elbo;
}

/* ndraws draws of the parameters from the guide (R makes the predictions) */
static int bnn_draws(void *work, const double *gpar, const double *lpar, svir_result *res)
{
    bnn_work *w = work;
    (void)lpar;
    return svir_gsvi_draws(w->m->D, w->c->ndraws, w->key, gpar, res);
}

/* Over rows X [n x d], y [n], in chunks of v->B rows with v->S draws
 * each (pre-activations by the local reparameterisation, sigma per draw;
 * from `stream`, the same noise at every call): mode 0, the mean over rows of -log of the mean over draws of p(y |
 * eta) (the negative log predictive density); mode 1, the mean over rows
 * and draws of log p(y | eta) (the expected log-likelihood). */
static double bnn_rows(bnn_work *v, const double *gpar, const double *X, const double *y,
                       ptrdiff_t n, int mode, uint64_t stream)
{
    const svir_bnn_model *m = v->m;
    const ptrdiff_t D = m->D, Bv = v->B;
    const int S = v->S;
    double lsig[BNN_VS];
    for (int s = 0; s < S; s++)
        lsig[s] = m->off_sig >= 0 ? gpar[m->off_sig] + exp(gpar[D + m->off_sig]) *
                                        svir_normal(v->key, stream, 0xffffffffu, (uint64_t)s)
                                  : 0.0;
    for (ptrdiff_t k = 0; k < D; k++) v->s2[k] = exp(2.0 * gpar[D + k]);
    double tot = 0.0;
    for (ptrdiff_t c0 = 0; c0 < n; c0 += Bv) {
        const ptrdiff_t nb = n - c0 < Bv ? n - c0 : Bv;
        for (ptrdiff_t b = 0; b < Bv; b++) v->idx[b] = (int)(c0 + (b < nb ? b : 0));
        for (ptrdiff_t t = 0; t < v->nt; t++) {
            if (v->fused) bnn_fused_forward(v, &v->lane[0], gpar, X, n, stream, (uint64_t)(c0 / Bv), t);
            else bnn_forward(v, &v->lane[0], gpar, X, n, stream, (uint64_t)(c0 / Bv), t);
            ptrdiff_t r0, tr;
            bnn_tile_span(v, t, &r0, &tr);
            memcpy(v->eta + r0, v->lane[0].Z[m->L], sizeof(double) * (size_t)tr);
        }
        const double *eta = v->eta;
        for (ptrdiff_t b = 0; b < nb; b++) {
            double lp[BNN_VS], mx = -INFINITY, se = 0.0, sl = 0.0;
            for (int s = 0; s < S; s++) {
                lp[s] = svir_bnn_logp(m->family, y[c0 + b], eta[s * Bv + b], lsig[s]);
                mx = lp[s] > mx ? lp[s] : mx;
                sl += lp[s];
            }
            if (mode == 1) {
                tot += sl / S;
                continue;
            }
            for (int s = 0; s < S; s++) se += exp(lp[s] - mx);
            tot -= mx + log(se / S);
        }
    }
    return tot / (double)n;
}

/* the held-out rows' mean negative log predictive density at the guide
 * gpar (bnn_rows, mode 0), for the driver's early stopping */
static double bnn_validate(void *work, const double *gpar)
{
    bnn_work *w = work;
    if (!w->vw) return NAN;
    return bnn_rows(w->vw, gpar, w->m->Xv, w->m->yv, w->m->nv, 0, SVIR_STREAM_BNN_VALID);
}

int svir_bnn_validate_at(const svir_bnn_model *m, const svir_control *c, const double *gpar,
                         double *loss)
{
    bnn_work *w = bnn_work_new(m, c);
    if (!w) return 2;
    *loss = bnn_validate(w, gpar);
    bnn_work_free(w);
    return 0;
}

/* The ELBO's two parts at the final guide, on the standardised scale:
 * "ell", the expected log-likelihood of the training rows (bnn_rows, mode
 * 1, times n; 16 draws per row up to 2000 rows, then fewer), and "kl", the KL of the guide to the prior (bnn_kl's in
 * closed form, log sigma's by 4000 draws). */
static int bnn_outputs(const void *model, const svir_control *c, svir_result *res, svir_err *e)
{
    const svir_bnn_model *m = model;
    if (!res->gpar) return 0;
    const double *mu = res->gpar, *ls = res->gpar + m->D;
    /* draws per row: 16, fewer from 2000 rows on (one from 32,000): each
     * draw of a row costs a normal per hidden unit */
    const int S = m->n * BNN_VS <= 32000 ? BNN_VS : (32000 / m->n > 1 ? 32000 / m->n : 1);
    bnn_work *v = bnn_work_make(m, c, m->n < BNN_VB ? m->n : BNN_VB, S, 0);
    if (!v) return svir_err_set(e, 2, "out of memory computing the ELBO's parts");
    const double ell = m->n * bnn_rows(v, res->gpar, m->X, m->y, m->n, 1, SVIR_STREAM_BNN_PARTS);
    double kl = bnn_kl(m, mu, ls, NULL, NULL, NULL, 1.0);
    if (m->off_sig >= 0) {
        /* E_q[log q - log p] of log sigma, sigma ~ N+(0, 1) */
        const ptrdiff_t q = m->off_sig;
        const int nd = 4000;
        double s = 0.0;
        for (int k = 0; k < nd; k++) {
            const double z = svir_normal(v->key, SVIR_STREAM_BNN_KL, 0, (uint64_t)k);
            const double lsg = mu[q] + exp(ls[q]) * z, sg = exp(lsg);
            const double lq = -ls[q] - SVIR_LOG_SQRT_2PI - 0.5 * z * z;
            const double lp = SVIR_LOG2 - SVIR_LOG_SQRT_2PI - 0.5 * sg * sg + lsg;
            s += lq - lp;
        }
        kl += s / nd;
    }
    bnn_work_free(v);
    if (svir_out_copy(res->extra, "ell", &ell, 1, -1) || svir_out_copy(res->extra, "kl", &kl, 1, -1))
        return svir_err_set(e, 2, "out of memory returning the ELBO's parts");
    return 0;
}

static const svir_svi_ops bnn_svi_ops = {
    bnn_n_global, svir_gsvi_n_local, bnn_work_new, bnn_work_free, bnn_work_threads, bnn_init,
    svir_gsvi_anchor, svir_gsvi_reanchor, bnn_batch, bnn_estimate, bnn_draws, bnn_validate,
};

int svir_bnn_elbo_grad(const svir_bnn_model *m, const svir_control *c, const double *gpar,
                       long step, double *elbo, double *grad)
{
    bnn_work *w = bnn_work_new(m, c);
    if (!w) return 2;
    double tsplit[SVIR_N_PHASES] = {0};
    ptrdiff_t ns;
    bnn_batch(w, step, &ns, NULL, NULL);
    *elbo = bnn_estimate(w, step, gpar, NULL, grad, NULL, tsplit);
    bnn_work_free(w);
    return 0;
}

static int run_svi(void *model, const svir_control *c, const svir_callbacks *cb, svir_result *res)
{
    return svir_svi_run(&bnn_svi_ops, model, c, cb, res);
}

int svir_bnn_dev_new(const svir_bnn_model *m, const svir_control *c, svir_cuda_bnn **out,
                     char *err, size_t errlen)
{
    const ptrdiff_t B = c->batch_size > 0 && c->batch_size < m->n ? c->batch_size : m->n;
    const int S = c->num_particles > 0 ? c->num_particles : 1;
    const uint32_t key[2] = {(uint32_t)(c->seed & 0xffffffffu), (uint32_t)(c->seed >> 32)};
    return svir_cuda_bnn_new(m, B, S, svir_bnn_tile_rows(m, B * S), key, out, err, errlen);
}

/* SVI with each step's batch evaluated on the device (bnn_cuda.h): the
 * CPU's driver, guide, KL and log sigma, the same noise (svir_zig.h's
 * blocks by the CPU's tiles), so the same steps as the CPU up to the sums'
 * order. */
static int run_svi_cuda(void *model, const svir_control *c, const svir_callbacks *cb,
                        svir_result *res)
{
    svir_bnn_model *m = model;
    char err[256] = "";
    svir_cuda_bnn *d = NULL;
    int st = svir_bnn_dev_new(m, c, &d, err, sizeof err);
    if (st) {
        snprintf(res->message, sizeof res->message, "%s", err);
        return st;
    }
    m->dev = d;
    st = svir_svi_run(&bnn_svi_ops, model, c, cb, res);
    m->dev = NULL;
    if (st != SVIR_INTERRUPTED && svir_cuda_bnn_error(d)[0]) {
        snprintf(res->message, sizeof res->message, "%s", svir_cuda_bnn_error(d));
        st = 3;
    }
    svir_cuda_bnn_free(d);
    return st;
}

static const svir_impl bnn_impls[] = {
    {SVIR_METHOD_SVI, SVIR_BACKEND_CPU, 1, 1, run_svi},
    {SVIR_METHOD_SVI, SVIR_BACKEND_CUDA, 1, 1, run_svi_cuda},
};

SVIR_CODE_TABLE(bnn_act, SVIR_BNN_ACT_CODES)
SVIR_CODE_TABLE(bnn_prior, SVIR_BNN_PRIOR_CODES)
static const svir_code_table bnn_codes[] = {SVIR_CODE_ENTRY("bnn_act", bnn_act),
                                            SVIR_CODE_ENTRY("bnn_prior", bnn_prior)};

const svir_model_def svir_bnn_def = {
    "bnn", bnn_read, bnn_free, bnn_size, bnn_threads, bnn_outputs,
    bnn_impls, (int)(sizeof bnn_impls / sizeof bnn_impls[0]),
    bnn_codes, 2, "bnn()", NULL, 0.0,
};
