/* A stand-in for R's R_ext/BLAS.h, so that tools/gpucheck builds without R:
 * only the Fortran BLAS routines the engine's C and CUDA files call, declared as R declares them under USE_FC_LEN_T (a hidden length per
 * character argument). gpucheck links them from -lblas. */
#ifndef SVIR_RSHIM_BLAS_H
#define SVIR_RSHIM_BLAS_H

#include <stddef.h>

#define F77_CALL(x) x##_
#define F77_NAME(x) x##_
#define FCLEN , size_t
#define FCONE , (size_t)1

#ifdef __cplusplus
extern "C" {
#endif

void dgemm_(const char *transa, const char *transb, const int *m, const int *n, const int *k,
            const double *alpha, const double *a, const int *lda, const double *b, const int *ldb,
            const double *beta, double *c, const int *ldc FCLEN FCLEN);
void dsymm_(const char *side, const char *uplo, const int *m, const int *n, const double *alpha,
            const double *a, const int *lda, const double *b, const int *ldb, const double *beta,
            double *c, const int *ldc FCLEN FCLEN);
void dsyrk_(const char *uplo, const char *trans, const int *n, const int *k, const double *alpha,
            const double *a, const int *lda, const double *beta, double *c, const int *ldc FCLEN FCLEN);
void dtrmm_(const char *side, const char *uplo, const char *transa, const char *diag, const int *m,
            const int *n, const double *alpha, const double *a, const int *lda, double *b,
            const int *ldb FCLEN FCLEN FCLEN FCLEN);
void dtrsm_(const char *side, const char *uplo, const char *transa, const char *diag, const int *m,
            const int *n, const double *alpha, const double *a, const int *lda, double *b,
            const int *ldb FCLEN FCLEN FCLEN FCLEN);

#ifdef __cplusplus
}
#endif

#endif
