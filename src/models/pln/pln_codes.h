/* The Poisson-lognormal model's codes, defined once (R's copies in
 * R/enum.R come from this file, tools/enum.R). */
#ifndef SVIR_PLN_CODES_H
#define SVIR_PLN_CODES_H

#include "core/svir_codes.h"

/* Sigma's structure: full, diagonal, spherical (Sigma profiled out in
 * closed form), rank q (Sigma = W W' + diag(psi), W and log psi among the
 * parameters), PLN-PCA (Sigma = C C', the latent layer in q dimensions:
 * pln_pca.c) */
#define SVIR_PLN_COV_CODES(X)                                                                  \
    X(FULL, 0, "full")                                                                         \
    X(DIAGONAL, 1, "diagonal")                                                                 \
    X(SPHERICAL, 2, "spherical")                                                               \
    X(RANK, 3, "rank")                                                                         \
    X(PCA, 4, "pca")

#define SVIR_PLN_COV_E(N, V, R) SVIR_CODE_ENUM_(SVIR_PLN_, N, V, R)
enum { SVIR_PLN_COV_CODES(SVIR_PLN_COV_E) SVIR_PLN_NCOV };

#endif
