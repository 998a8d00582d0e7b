/* The count mixtures' codes, defined once (R's copies in R/enum.R come
 * from this file, tools/enum.R). */
#ifndef SVIR_MIX_CODES_H
#define SVIR_MIX_CODES_H

#include "core/svir_codes.h"

/* the count distribution given the cluster */
#define SVIR_MIX_DIST_CODES(X)                                                                  \
    X(POISSON, 0, "poisson")                                                                   \
    X(NB, 1, "nb")                                                                             \
    X(ZINB, 2, "zinb")                                                                         \
    X(DIRMULT, 3, "dirmult")

#define SVIR_MIX_DIST_E(N, V, R) SVIR_CODE_ENUM_(SVIR_MIX_, N, V, R)
enum { SVIR_MIX_DIST_CODES(SVIR_MIX_DIST_E) SVIR_MIX_NDIST };

#endif
