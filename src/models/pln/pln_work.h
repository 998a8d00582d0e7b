/* The Poisson-lognormal objective's internals shared by its files
 * (pln_eval.c, pln_lbfgs.c, pln_blas.c, pln_mb.c). */
#ifndef SVIR_PLN_WORK_H
#define SVIR_PLN_WORK_H

#include <stddef.h>

#include "models/pln/pln.h"

/* sums in chunks of this many entries, added in chunk order: the same
 * result for any number of threads */
#define PLN_CHUNK 65536
/* and within a chunk, vector operations in blocks of this many (in L1) */
#define PLN_BLOCK 1024

#ifdef _OPENMP
#define PLN_PFOR _Pragma("omp parallel for num_threads(T) schedule(static)")
/* vectorise this loop (gcc's -O2 does not, by itself, where the length is
 * unknown); sums become one per vector lane, still in a fixed order */
#define PLN_SIMD _Pragma("omp simd")
#else
#define PLN_PFOR
#define PLN_SIMD
#endif

/* BLAS and LAPACK work in pieces of about this many flops, with an
 * interrupt poll between them (pln_blas.c); each returns 1 when the host
 * asked to stop */
#define PLN_BLAS_FLOPS 1e9
/* the piece size now; set > 0 sets it (the tests' smaller pieces) */
double svir_pln_blas_flops(double set);
int svir_pln_piece_rows(int n, double per);
int svir_pln_syrk_polled(const char *trans, int p, int n, double alpha, const double *A, int ld,
                         double beta, double *Om);
int svir_pln_symm_polled(int n, int p, double alpha, const double *Om, const double *R, double beta,
                         double *C);
int svir_pln_gemm_rows_polled(const char *tb, int n, int ncol, int k, double alpha, const double *A,
                              int lda, const double *B, int ldb, double beta, double *C, int ldc);
int svir_pln_gemm_inner_polled(const char *ta, int rows, int cols, int n, double alpha,
                               const double *A, int lda, const double *B, int ldb, double beta,
                               double *C, int ldc);

/* the work's parts (svir_pln_nwork): R = M - X B, A, S^2, T = R Omega (the
 * rank and VE cases) [n x p each], Omega [p x p] (full; the VE step uses
 * Omfix), its diagonal omd [p], 1 / psi [p]; for the rank case G = Psi^-1 W
 * K^-1, V = Psi^-1 W, OW = Omega W, two more [p x q], one [n x q] and
 * three [q x q] */
typedef struct {
    double *R, *A, *S2, *T, *Om, *omd, *ipsi, *G, *V, *OW, *PQ, *X2, *NQ, *K, *KmI, *Qs, *den;
} pln_work;

static inline pln_work pln_split(const svir_pln_data *dat, double *w)
{
    const ptrdiff_t n = dat->n, p = dat->p, q = dat->cov == SVIR_PLN_RANK ? dat->q : 0;
    pln_work s;
    s.R = w; s.A = s.R + n * p; s.S2 = s.A + n * p; s.T = s.S2 + n * p; s.Om = s.T + n * p;
    s.omd = s.Om + p * p; s.ipsi = s.omd + p; s.G = s.ipsi + p; s.V = s.G + p * q;
    s.OW = s.V + p * q; s.PQ = s.OW + p * q; s.X2 = s.PQ + p * q; s.NQ = s.X2 + p * q;
    s.K = s.NQ + n * q; s.KmI = s.K + q * q; s.Qs = s.KmI + q * q; s.den = s.Qs + q * q;
    return s;
}

/* sum_j v[j], in order */
static inline double sumv(const double *v, int len)
{
    double s = 0.0;
    for (int j = 0; j < len; j++) s += v[j];
    return s;
}

/* sum_k a[k] b[k] c[k], in svir_dot4's order (svir_math.h) */
static inline double dot4w(const double *restrict a, const double *restrict b,
                    const double *restrict c, ptrdiff_t len)
{
    double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
    ptrdiff_t k = 0;
    for (; k + 4 <= len; k += 4) {
        s0 += a[k] * b[k] * c[k];
        s1 += a[k + 1] * b[k + 1] * c[k + 1];
        s2 += a[k + 2] * b[k + 2] * c[k + 2];
        s3 += a[k + 3] * b[k + 3] * c[k + 3];
    }
    for (; k < len; k++) s0 += a[k] * b[k] * c[k];
    return (s0 + s1) + (s2 + s3);
}

#endif
