/* The GLMM's Laplace step and its importance sampler (method "laplace"):
 * given the variance parameters, the fixed and random effects u = (beta,
 * b) are found at their joint conditional mode by Newton's method, with
 * the random effects of the largest term eliminated by a Schur complement
 * (their blocks are independent given the rest); the Gaussian at the mode
 * gives the Laplace marginal of the variance parameters and the
 * conditional proposal of u. Plain C, no R API. */
#ifndef SVIR_GLMM_LAPLACE_H
#define SVIR_GLMM_LAPLACE_H

#include <stddef.h>
#include <stdint.h>

#include "models/glmm/glmm.h"

/* Gauss-Hermite nodes of the per-observation quadrature */
#define SVIR_LAP_GH 15

/* The structure of the Newton system, fixed by the model (not by theta). */
typedef struct {
    const svir_glmm *m;
    int O;                 /* the term integrated out per observation by adaptive
                            * Gauss-Hermite quadrature (one column, one observation
                            * per level, not gaussian, no weights); -1: none */
    double gh_x[SVIR_LAP_GH], gh_w[SVIR_LAP_GH]; /* nodes, weights (weight e^{-x^2}) */
    int E;                 /* the eliminated term (largest J q), -1 without terms */
    int qE;
    ptrdiff_t nE;          /* J_E q_E */
    ptrdiff_t nr;          /* the rest: p + the other terms' J q */
    ptrdiff_t d;           /* nE + nr */
    ptrdiff_t *roff;       /* [nterms] first rest index of a term's b (-1: E) */
    ptrdiff_t *lev_start;  /* [J_E + 1] each level of E's touched rest columns */
    ptrdiff_t *lev_cols;   /* the columns, beta's first */
    ptrdiff_t *obs_pos;    /* [n * nterms] position in its E level's list of the
                            * first column of observation i's block of term t */
    ptrdiff_t *obs_order;  /* [n] observations by level of E */
    ptrdiff_t nbcoef;      /* sum_j qE * len_j: the coupling blocks */
} svir_lap_plan;

/* The term that may be integrated out per observation: the first with
 * one column and every level used by exactly one observation, in a model
 * that is not gaussian and has no weights and no zero inflation; -1 if
 * none (or out of memory). */
int svir_lap_pick_integrated(const svir_glmm *m);

/* Builds the plan; 0, or 2 when out of memory. integrate: whether a term
 * with one observation per level (an observation-level effect) may be
 * integrated out by quadrature instead of entering the Newton system. */
int svir_lap_plan_init(svir_lap_plan *pl, const svir_glmm *m, int integrate);
void svir_lap_plan_free(svir_lap_plan *pl);

/* Doubles of workspace one thread needs (svir_lap_mode, svir_lap_draw). */
ptrdiff_t svir_lap_work_size(const svir_lap_plan *pl);

/* The conditional mode of u = (beta [p], b [nz] indexed like z) given the
 * variance parameters theta[p..D) (theta[0..p) ignored), started at u.
 * Returns 0 (u holds the mode) or 1 (no finite mode found). *logp: the
 * Laplace approximation of log p(theta_h, y), *iters: Newton steps. The
 * factors of the negative Hessian at the mode stay in work for
 * svir_lap_draw. */
int svir_lap_mode(const svir_lap_plan *pl, const double *theta, double *u, double *work,
                  double *logp, int *iters);

/* After svir_lap_mode: u_draw = mode + H^{-1/2} eps (eps [d] standard
 * normals); returns log q(u_draw) under N(mode, H^{-1}) and sets *logf to
 * log p(y, beta, b, theta_h) at u_draw (b-units: the random effects'
 * density in b). */
double svir_lap_draw(const svir_lap_plan *pl, const double *theta, const double *mode,
                     const double *eps, double *u_draw, double *work, double *logf);

/* After svir_lap_draw, with an integrated term (pl->O >= 0): its effects
 * in u [p + nz] drawn from their exact conditionals given the rest of u
 * and theta (adaptive rejection sampling: the conditionals are
 * log-concave), from Philox's stream SVIR_STREAM_LAPLACE_INT at `step`. */
void svir_lap_fill(const svir_lap_plan *pl, const double *theta, double *u,
                   const uint32_t key[2], uint64_t step, double *work);

/* log p(y, beta, b, theta_h) at u (b-units); with an integrated term, its
 * effects are integrated out (their entries of u are ignored). */
double svir_lap_logf(const svir_lap_plan *pl, const double *theta, const double *u,
                     double *work);

/* b -> z = A^{-1} b per group (the engine's non-centred units). */
void svir_lap_z_from_b(const svir_glmm *m, const double *theta, const double *b, double *z,
                       double *work);

#endif
