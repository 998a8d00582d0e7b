/* A stand-in for R's R_ext/Lapack.h for tools/gpucheck (see BLAS.h here):
 * the Cholesky routines src/models/pln/ and src/cuda/pln_*.cu call;
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

#ifdef __cplusplus
}
#endif

#endif
