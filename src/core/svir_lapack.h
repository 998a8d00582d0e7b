/* R's BLAS and LAPACK prototypes, with the hidden lengths of character
 * arguments (USE_FC_LEN_T, FCONE), for the C and CUDA files that call them;
 * include it before any R header. */
#ifndef SVIR_LAPACK_H
#define SVIR_LAPACK_H

#ifndef USE_FC_LEN_T
#define USE_FC_LEN_T
#endif
#include <R_ext/BLAS.h>
#include <R_ext/Lapack.h>
#ifndef FCONE
#define FCONE
#endif

#endif
