/* The Bayesian networks' codes, defined once (R's copies in R/enum.R come
 * from this file, tools/enum.R). */
#ifndef SVIR_BNN_CODES_H
#define SVIR_BNN_CODES_H

#include "core/svir_codes.h"

/* the hidden layers' activation */
#define SVIR_BNN_ACT_CODES(X)                                                                   \
    X(RELU, 0, "relu")                                                                         \
    X(TANH, 1, "tanh")

/* the weights' prior: normal with a fixed scale; normal with a precision
 * per layer, lambda_l ~ Gamma(6, 6) (probabilistic backpropagation's);
 * Laplace with the normal's variance */
#define SVIR_BNN_PRIOR_CODES(X)                                                                 \
    X(PNORMAL, 0, "normal")                                                                    \
    X(PHIER, 1, "hierarchical")                                                                \
    X(PLAPLACE, 2, "laplace")

#define SVIR_BNN_E(N, V, R) SVIR_CODE_ENUM_(SVIR_BNN_, N, V, R)
enum { SVIR_BNN_ACT_CODES(SVIR_BNN_E) SVIR_BNN_NACT };
enum { SVIR_BNN_PRIOR_CODES(SVIR_BNN_E) SVIR_BNN_NPRIOR };

#endif
