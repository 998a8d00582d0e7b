/* A stand-in for R's R_ext/Lapack.h for tools/gpucheck (see BLAS.h here):
 * the LAPACK routines src/models/pln/ and src/cuda/pln_*.cu call;
 * linked from -llapack. */
#ifndef SVIR_RSHIM_LAPACK_H
#define SVIR_RSHIM_LAPACK_H

#include "BLAS.h"

#ifdef __cplusplus
extern "C" {
#endif

void dpotrf_(const char *uplo, const int *n, double *a, const int *lda, int *info FCLEN);
void dpotri_(const char *uplo, const int *n, double *a, const int *lda, int *info FCLEN);
void dposv_(const char *uplo, const int *n, const int *nrhs, double *a, const int *lda, double *b,
            const int *ldb, int *info FCLEN);
void dtrtri_(const char *uplo, const char *diag, const int *n, double *a, const int *lda,
             int *info FCLEN FCLEN);
void dsyevr_(const char *jobz, const char *range, const char *uplo, const int *n, double *a,
             const int *lda, const double *vl, const double *vu, const int *il, const int *iu,
             const double *abstol, int *m, double *w, double *z, const int *ldz, int *isuppz,
             double *work, const int *lwork, int *iwork, const int *liwork,
             int *info FCLEN FCLEN FCLEN);

#ifdef __cplusplus
}
#endif

#endif
