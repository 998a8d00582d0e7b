/* The GLMM's tree for QEM and the K-sample bound (glmm_tree.c): K draws
 * of the globals and of every group's effects, the groups' K x K tables of
 * log f, and log P-hat. One grouping factor. See glmm_qem.c and
 * dev/QEM.md. */
#ifndef SVIR_GLMM_TREE_H
#define SVIR_GLMM_TREE_H

#include <stddef.h>
#include <stdint.h>

#include "core/svir_result.h"
#include "models/glmm/glmm.h"
#include "models/glmm/glmm_coupling.h"

/* The tree for K samples per latent: the draws of the globals and their log
 * weights, the groups' draws and log f tables. */
/* The tree for K samples per latent: the draws of the globals and their log
 * weights, the groups' draws and log f tables. */
typedef struct {
    const svir_glmm *m;
    const svir_term *tm;
    int K, q, J, fullrank, T, maxnj, direct;
    ptrdiff_t D, nz, lb;
    uint32_t key[2];
    int *rowptr, *rows;        /* the groups' rows (counting sort) */
    double *xs, *ys, *os;      /* X [n x p] row-major, y, offset: in the rows' order */
    svir_coupling cp;          /* cp.couple = 0: no shift */
    double *theta, *eps, *lw0; /* [K x D], [K x D], [K] */
    double *cw, *be, *cu;      /* [K x q] shifts w(theta_k); scratch [p], [q] */
    svir_aux *aux;             /* [K] */
    svir_globals *g;           /* [K] */
    double *lm;                /* [J x K] log m_j(k0) */
    double *lf;                /* [J x K x K] f_j(k0, kj) / (K m_j(k0)), or NULL (not kept) */
    double *zs;                /* [K x nz] the draws z0 */
    double *kap;               /* [K] a centred SVI guide's sd^-lambda per draw, or NULL */
} glmm_tree;

/* Sets up the tree of model m for K samples per latent, keeping the log f
 * tables if `tables`; with `anchor` (the guide's parameters its coupling is
 * anchored at) and m->couple, the groups' draws are shifted by the coupled
 * guide's w(theta). Returns 0, 1 (model or K not supported) or 2 (memory),
 * with a message in err. */
int glmm_tree_init(glmm_tree *qt, const svir_glmm *m, const svir_control *c, int K, int tables,
                   const double *anchor, char *err, size_t errlen);
void glmm_tree_free(glmm_tree *qt);
/* K draws of the globals from q(theta) = gpar (mean-field or full-rank),
 * counters `ctr` of `stream` (key): theta [K x D] from the noise eps
 * [K x D], unpacked into g [K] and aux [K], and lw0 [K] = log p(theta) -
 * log q(theta) plus the likelihood's constant. Shared by both trees. */
void glmm_qem_draw_globals(const svir_glmm *m, int K, int fullrank, const uint32_t key[2],
                           const double *gpar, uint64_t stream, uint64_t ctr, double *theta,
                           double *eps, svir_globals *g, svir_aux *aux, double *lw0);
/* K draws z0 of one group from its local block blk (counters ctr of
 * stream; the group's first latent at pos of the [nz] vector): z0 of draw
 * k at zs + k nz + pos, lq0 [K] = log q0(z0) (unless NULL) and lz [K] =
 * log N(z0; 0, I) - log q0(z0). Shared by both trees. q <= SVIR_QMAX_STACK. */
void glmm_qem_group_draws(const uint32_t key[2], uint64_t stream, uint64_t ctr, int K, int q,
                          ptrdiff_t nz, ptrdiff_t pos, const double *blk, double *zs,
                          double *lq0, double *lz);
/* K draws of the globals from q(theta) = gpar, counters `ctr` of `stream`:
 * theta, their unpacked values, lw0 = log p(theta) - log q(theta) (with the
 * likelihood's constant) and the coupled guide's shifts. */
void glmm_tree_globals(glmm_tree *qt, const double *gpar, uint64_t stream, uint64_t ctr);
/* K draws z0 of every group from q0 = lpar, the K x K tables log f_j and
 * log m_j; nonzero when out of memory. */
int glmm_tree_groups(glmm_tree *qt, const double *lpar, uint64_t stream, uint64_t ctr);
/* log P-hat from the globals' and the groups' parts; lw0 becomes log w0
 * (unnormalised). */
double glmm_tree_log_phat(glmm_tree *qt);

#endif
