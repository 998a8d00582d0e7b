/* The Poisson-lognormal model's device internals shared by cuda/pln_eval.cu
 * (the objective) and cuda/pln_lbfgs.cu (its L-BFGS problem). */
#ifndef SVIR_PLN_DEV_CUH
#define SVIR_PLN_DEV_CUH

#include "cuda/svir_cuda_common.cuh"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/svir_lapack.h"

#include "models/pln/pln_cuda.h"
#include "models/pln/pln_entry.h"
#include "core/svir_lbfgs.h"

#define PB 256               /* threads per block (a power of two) */
#define PLN_DOT_BLOCKS 1024  /* blocks of the length-npar reductions (fixed) */
#define QC 8                 /* q columns one thread accumulates */
#define TS 16                /* tile of the p x p products */
#define NDB 48               /* most device buffers */

#define PREC_DMAX 8 /* PLN_PREC_DMAX of models/pln/pln_lbfgs.c */
/* L-BFGS's pairs on the device (core/svir_lbfgs.c), for the memory count */
#define PLN_MEM 5

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
    double k0, s0; /* Sigma's conjugate prior (pln.h) */
    pln_args a;
    double *A[2], *S2[2], *omd[2], *h0r[2]; /* per evaluated point (current, candidate);
                                             * h0r: H0's denominators for W, log psi */
    double *XtX;                            /* X'X [d x d] for H0 (the fit, dx > 0) */
    int dx;                                 /* H0's X part: d, or 0 (k_prec) */
    double *GV;                             /* G [p q], V [p q], 1 / psi [p]: one upload */
    double *part, *scal;                    /* partial sums of the reductions */
    double *par, *g;                        /* the point; a gradient (an evaluation's) */
    void *dbuf[NDB];
    int ndb;
    /* host */
    double *hcols, *hOm, *hW, *hV, *hG, *hK, *hKmI, *hQs, *hX2, *hPQ, *hOW, *hgl, *homd, *hh0r,
        *hsmall;
    void *hbuf[16];
    int nhb;
};


/* the NV sums of a block, in a fixed tree; every thread gets them */
template <int NV>
__device__ __forceinline__ void block_sums(double *sh, double *v)
{
    svir_block_sums<NV, PB>(sh, v);
}

/* cuda/pln_eval.cu */
int pln_nblocks(ptrdiff_t L);
int pln_new(const svir_pln_data *dat, int fit, svir_cuda_pln **out, char *err, size_t errlen);
void pln_free(svir_cuda_pln *x);
int pln_dalloc(svir_cuda_pln *x, double **ptr, ptrdiff_t count, char *err, size_t errlen);
/* J (host) and grad (device) at dpar (device), A and S^2 into point set
 * `set`; Sigma (host, or NULL: not wanted). Returns 0, 1 (the model's
 * failure) or 3 (CUDA). */
int pln_eval_dev(svir_cuda_pln *x, const double *dpar, int set, double *J, double *grad,
                 double *Sigma, char *err, size_t errlen);

#endif
