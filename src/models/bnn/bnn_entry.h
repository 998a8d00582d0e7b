/* A network's per-row arithmetic, compiled for the CPU (bnn_model.c) and
 * the device (cuda/bnn_dev.cu) from this one source (SVIR_MATH_HD), so that
 * both evaluate the same expressions: the log-likelihood of a row at its
 * output eta, and its derivative. No R API. */
#ifndef SVIR_BNN_ENTRY_H
#define SVIR_BNN_ENTRY_H

#include <math.h>

#include "core/svir_math.h"
#include "models/glmm/glmm_codes.h"

/* log p(y | eta) for the family, sigma on the standardised scale */
SVIR_MATH_HD double svir_bnn_logp(int family, double y, double eta, double lsig)
{
    if (family == SVIR_GAUSSIAN) {
        const double r = (y - eta) / exp(lsig);
        return -lsig - SVIR_LOG_SQRT_2PI - 0.5 * r * r;
    }
    if (family == SVIR_BINOMIAL) return y * eta - svir_log1pexp(eta);
    return y * eta - exp(eta) - svir_lgamma(y + 1.0);
}

/* d log p(y | eta) / d eta; for gaussian (sigma = sig) also *gs = d / d
 * log sigma (0 otherwise) */
SVIR_MATH_HD double svir_bnn_dlogp(int family, double y, double eta, double sig, double *gs)
{
    *gs = 0.0;
    if (family == SVIR_GAUSSIAN) {
        const double res = (y - eta) / sig;
        *gs = res * res - 1.0;
        return res / sig;
    }
    if (family == SVIR_BINOMIAL) return y - 1.0 / (1.0 + exp(-eta));
    return y - exp(eta);
}

#endif
