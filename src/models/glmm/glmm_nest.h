/* QEM's tree for a GLMM with more than one grouping factor (glmm_nest.c;
 * dev/QEM.md, "Nested and crossed factors"). A chain of nested factors,
 * the coarsest first (level 1 .. L), runs as a tree of plates: the K draws
 * of each group are weighed jointly with the K draws of its ancestors and
 * of the globals, so every observation of a leaf group has K^(L+1) log
 * densities. Every other factor (crossed with the chain: level 0) has its
 * groups' K draws paired with the globals' K draws, so its effects are
 * weighed as part of the globals; their proposal is centred (on b = A z
 * plus the fixed effect of Z's column where X has it, not on z), because a crossed factor's effects are well determined while
 * its z = A^-1 b moves with the sd: with independent proposals on z and the
 * sd the weights collapsed (dev/QEM.md). The chain and the crossed factors are
 * chosen in R (svir_qem_plan() in R/fit.R) and read from spec$qem_level.
 * No R API. */
#ifndef SVIR_GLMM_NEST_H
#define SVIR_GLMM_NEST_H

#include <stddef.h>
#include <stdint.h>

#include "models/glmm/glmm.h"
#include "infer/svir_model.h"
#include "models/glmm/glmm_local.h"

/* deepest chain */
#define SVIR_NEST_LMAX 6

/* one term: of the chain (its tables) or crossed (lz only) */
typedef struct {
    int t, q, J;
    ptrdiff_t lb;      /* local block of one group */
    ptrdiff_t z2off;   /* first entry of its groups' q x q second moments */
    int *par;          /* [J] the group one level up (chain levels below the top) */
    int *crow, *cidx;  /* the groups one level down: CSR [J + 1] and [J below] */
    ptrdiff_t tsz;     /* entries of a group's table: K^(level + 1) */
    double *F;         /* [J x tsz] log f; then P(k | the ancestors' and globals'
                        * draws); then, in the M-step, the joint weights */
    double *M;         /* [J x tsz / K] log m: log mean over k of f */
    double *lz;        /* [J x K] log N(z0; 0, I) - log q0(z0) of each draw */
    /* crossed terms: the proposal of the effects b = A z themselves, plus
     * the fixed effect whose column Z's column is (hierarchical centring:
     * c = b + beta_sel), the draws of c, and their smoothed raw moments */
    int sel[SVIR_QMAX_STACK]; /* [q] that fixed effect's column, or -1 */
    double *bp;        /* [J x lb] */
    double *bs;        /* [K x J x q] */
    double *B1, *B2;   /* [J x q], [J x q x q] */
} glmm_nest_level;

typedef struct {
    const svir_glmm *m;
    int K, L, nc, fullrank, T, maxnj, fast;
    ptrdiff_t D, nz, nz2;
    uint32_t key[2];
    glmm_nest_level lv[SVIR_NEST_LMAX]; /* the chain, coarsest first */
    glmm_nest_level *cr;                /* [nc] the crossed terms */
    int *rowptr, *rows;                 /* the leaf groups' rows (counting sort) */
    double *theta, *eps, *lw0;          /* [K x D], [K x D], [K] */
    svir_aux *aux;                      /* [K] */
    svir_globals *g;                    /* [K] */
    double *zs;                         /* [K x nz] the draws z0 of every group */
} glmm_nest;

/* Sets up the tree for K samples per latent from m->qem_level. Returns 0,
 * 1 (the levels are not a nested chain, or K is out of range) or 2
 * (memory), with the message in e. */
int glmm_nest_init(glmm_nest *nt, const svir_glmm *m, const svir_control *c, int K, svir_err *e);
void glmm_nest_free(glmm_nest *nt);
/* The crossed terms' starting proposals for b = A z: A at the globals'
 * starting means in gpar times the z proposals in lpar. */
void glmm_nest_start(glmm_nest *nt, const double *gpar, const double *lpar);
/* K draws of the globals from gpar (counters ctr of stream), their log
 * weights so far in lw0. */
void glmm_nest_globals(glmm_nest *nt, const double *gpar, uint64_t stream, uint64_t ctr);
/* K draws of every group from lpar, the tables up the chain, and lw0 made
 * the globals' full log weights; returns log P-hat, or NaN when out of
 * memory (*oom set). */
double glmm_nest_groups(glmm_nest *nt, const double *lpar, uint64_t stream, uint64_t ctr,
                        int *oom);
/* With the globals' normalised weights w0 [K]: every group's marginal
 * weights down the chain, its moments smoothed with step et into Z1 [nz]
 * and Z2 (q x q per group, at its level's z2off) and its proposal block in
 * lpar matched to them. */
void glmm_nest_mstep(glmm_nest *nt, const double *w0, double et, double *Z1, double *Z2,
                     double *lpar);

#endif
