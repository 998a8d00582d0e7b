/* What the SVI ops of a model with a global block only share (no local
 * parameters; a mean-field guide; minibatches of rows): count mixtures
 * (models/mixture) and networks (models/bnn). */
#ifndef SVIR_GSVI_H
#define SVIR_GSVI_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "core/svir_philox.h"
#include "infer/svir_model.h"

/* the guide's start: the means init_mu (or 0), the log sds log init_scale */
static inline void svir_gsvi_init(ptrdiff_t D, const double *init_mu, double init_scale,
                                  double *gpar)
{
    const double ls = log(init_scale > 0 ? init_scale : 0.1);
    for (ptrdiff_t d = 0; d < D; d++) {
        gpar[d] = init_mu ? init_mu[d] : 0.0;
        gpar[D + d] = ls;
    }
}

/* the rows of step `step` into idx [B]: positions step*B .. step*B+B-1 of
 * an endless sequence of epochs, each a keyed permutation of the n rows */
static inline void svir_gsvi_rows(int *idx, ptrdiff_t B, int n, const uint32_t key[2], long step)
{
    const uint64_t nn = (uint64_t)n;
    for (ptrdiff_t k = 0; k < B; k++) {
        const uint64_t pos = (uint64_t)step * (uint64_t)B + (uint64_t)k;
        idx[k] = (int)svir_perm_index(pos % nn, nn, key, (uint32_t)(pos / nn));
    }
}

/* nd draws of the D globals from the mean-field guide gpar into res
 * (draws nd x D; no log ratios: each would be a pass over the data, NaN);
 * 0, or 2 when out of memory */
static inline int svir_gsvi_draws(ptrdiff_t D, int nd, const uint32_t key[2], const double *gpar,
                                  svir_result *res)
{
    res->ndraws = nd;
    res->D = D;
    res->naux = 0;
    if (nd <= 0) return 0;
    res->draws = malloc(sizeof(double) * (size_t)nd * (size_t)D);
    res->log_ratio = malloc(sizeof(double) * (size_t)nd);
    if (!res->draws || !res->log_ratio) return 2;
    for (int s = 0; s < nd; s++) {
        for (ptrdiff_t d = 0; d < D; d++)
            res->draws[(size_t)s + (size_t)d * nd] =
                gpar[d] + exp(gpar[D + d]) * svir_normal(key, SVIR_STREAM_DRAWS, (uint64_t)s, (uint64_t)d);
        res->log_ratio[s] = NAN;
    }
    return 0;
}

/* no local block: none to count, anchor or re-anchor */
static inline ptrdiff_t svir_gsvi_n_local(const void *model)
{
    (void)model;
    return 0;
}

static inline void svir_gsvi_anchor(void *work, const double *gpar)
{
    (void)work;
    (void)gpar;
}

static inline int svir_gsvi_reanchor(void *work, const double *src, int nsets,
                                     double *const *gpars, double *const *lpars)
{
    (void)work; (void)src; (void)nsets; (void)gpars; (void)lpars;
    return 0;
}

#endif
