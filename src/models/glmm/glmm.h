/* GLMM model: data layout, parameter layout, log density and gradients.
 * Plain C, no R API (see dev/ARCHITECTURE.md). */
#ifndef SVIR_GLMM_H
#define SVIR_GLMM_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "core/svir_math.h"
#include "models/glmm/glmm_codes.h"

/* One random-effect term: b_j = diag(sd) L z_j for each level j of a
 * grouping factor, entering eta_i through the q columns of Z. */
/* random-intercept terms handled by the specialised loops */
#define SVIR_NT_ICPT_MAX 4

typedef struct {
    int q;                  /* columns of Z (random coefficients per group) */
    int ngroups;            /* levels J */
    int correlated;         /* full correlation matrix (only when q > 1) */
    const int *group;       /* [n] 0-based level of each observation */
    const double *Z;        /* [n x q] column-major */
    const double *xmap;     /* [p x q] or NULL: Z[, k] = X xmap[, k] (NaN column: not in X's span) */
    /* filled by svir_glmm_init */
    ptrdiff_t off_sd;       /* first log-sd in the global vector */
    ptrdiff_t off_cpc;      /* first cpc in the global vector, -1 if none */
    ptrdiff_t off_z;        /* first z of this term in the [nz] latent vector */
    ptrdiff_t off_loc;      /* first local variational parameter */
    ptrdiff_t off_qq;       /* first entry of this term in the [sum q^2] arrays */
    double *nobs;           /* [J] observations per level (owned) */
    int z_ones;             /* q == 1 and Z is all ones: a random intercept */
    double lambda;          /* SVI's partial centring of the term (dev/CALIBRATION.md):
                             * its guide is on u with b = A_eff u, A_eff = sd^(1 - lambda)
                             * for q = 1 and D^-lambda ((1 - lambda) A + lambda D) for
                             * q > 1 (D = diag(sd)); 0 non-centred, 1 centred */
} svir_term;

typedef struct {
    ptrdiff_t n;            /* observations */
    int p;                  /* fixed-effect columns */
    const double *y;        /* [n] response (binomial: successes) */
    const double *trials;   /* [n] binomial trials, or NULL */
    const double *wt;       /* [n] prior weights: each observation's log-likelihood
                             * is multiplied by its weight (glmmTMB's meaning); NULL: 1 */
    const double *offset;   /* [n] or NULL */
    const double *X;        /* [n x p] column-major */
    int family, link;
    /* zero inflation (glmmTMB's ziformula; a family of SVIR_GLMM_ZI_PAIRS):
     * P(y = 0 as a structural zero) = pi = logit^-1(Xz gamma) */
    int zi;                 /* 1 when the model is zero-inflated */
    int pz;                 /* columns of Xz */
    const double *Xz;       /* [n x pz] column-major, or NULL */
    int nterms;
    svir_term *terms;
    const int *prior_type;  /* [D] */
    const double *prior_df, *prior_loc, *prior_scale;
    /* filled by svir_glmm_init */
    ptrdiff_t D;            /* global parameters */
    ptrdiff_t off_sigma;    /* -1 unless gaussian */
    ptrdiff_t off_phi;      /* -1 unless negbin */
    ptrdiff_t off_zi;       /* first gamma (zero inflation's coefficients), -1 if none */
    ptrdiff_t nz;           /* sum_t J_t q_t: latent z values */
    ptrdiff_t nloc;         /* sum_t J_t (q_t + q_t(q_t+1)/2): local variational parameters */
    ptrdiff_t nqq;          /* sum_t q_t^2 */
    int qmax;
    int x_ones;             /* first column of X that is all ones (the intercept), or -1 */
    int nt_icpt;            /* nterms when every term is a random intercept and there
                             * are at most SVIR_NT_ICPT_MAX of them (the hot loops'
                             * specialised paths), else 0 */
    double ll_const;        /* sum over all observations of the parts of log p(y_i | eta_i) free of parameters */
    double wsum;            /* the sum of the prior weights (n without them) */
    /* the model's own settings */
    int couple;             /* the coupled guide (SVI; QEM's proposal) */
    int centre_learn;       /* SVI learns the lambda of every partially centred term
                             * (glmm_svi.c, learn_centring): the fit moves
                             * terms[t].lambda, which then holds the learned value */
    const double *init_mu;  /* [D] or NULL: the globals' starting means */
    const double *init_sd;  /* [D] or NULL: the globals' starting sds (else init_scale) */
    const double *init_loc; /* [nloc] or NULL: the locals' starting parameters (a warm
                             * start from another fit's "lpar"), else 0 and init_scale */
    int qem_direct;         /* QEM's tree: evaluate every observation, no sums (tests) */
    const int *qem_level;   /* [nterms] or NULL: QEM's plan for more than one grouping
                             * factor (glmm_nest.h): 1 .. L the nested chain, coarsest
                             * first; 0 a factor crossed with it */
} svir_glmm;

/* Global parameters unpacked to the natural scale (workspace owned by caller). */
typedef struct {
    const double *beta;     /* [p] */
    double *sd;             /* [sum q] natural sd per term, term t at off_sd - p */
    double *L;              /* [nqq] row-major correlation Cholesky per term */
    double *A;              /* [nqq] A = diag(sd) L per term */
    double *K;              /* [nqq] A^-1 A_eff of a partially centred term with q > 1
                             * (svir_centre_A; unset otherwise) */
    double sigma, phi;
} svir_globals;

/* Validates sizes and indices, fills the derived fields. Returns 0 or a
 * nonzero status with a message in err. */
int svir_glmm_init(svir_glmm *m, char *err, size_t errlen);
void svir_glmm_free(svir_glmm *m);

/* Length of the local block of one group of a term with q columns. */
SVIR_MATH_HD ptrdiff_t svir_local_block(int q) { return q + (ptrdiff_t)q * (q + 1) / 2; }

int svir_globals_alloc(const svir_glmm *m, svir_globals *g);
void svir_globals_free(svir_globals *g);

/* log p(theta) including the log-Jacobians of the unconstraining transforms;
 * adds its gradient to grad (if not NULL). */
double svir_log_prior(const svir_glmm *m, const double *theta, double *grad);

/* the families' log-likelihoods (svir_aux, svir_loglik, zero inflation) */
#include "models/glmm/glmm_family.h"

/* Linear predictor of observation i, given b (indexed like z). */
double svir_eta_obs(const svir_glmm *m, ptrdiff_t i, const double *beta, const double *b);
/* the same without term `skip`'s effect (-1: every term) */
double svir_eta_obs_except(const svir_glmm *m, ptrdiff_t i, const double *beta, const double *b,
                           int skip);

/* One plain pass over all observations at fixed effects beta [p] and random
 * effects b [nz]: *ll = sum_i log p(y_i | eta_i) without constants, gbeta [p],
 * *gaux (d ll / d log sigma or log phi) and G [nz] = d ll / d b. The
 * reference for the engine's and the CUDA backend's passes (tests,
 * tools/gpucheck); not used by the fits. */
void svir_obs_pass_ref(const svir_glmm *m, const double *beta, const double *b,
                       const svir_aux *aux, double *ll, double *gbeta, double *gaux, double *G);

/* The per-group part of a full-batch step on the CPU, the reference for the
 * CUDA backend's (arguments as svir_cuda_local_step_host in glmm_cuda.h).
 * Returns 0, 1 if a term has more than SVIR_QMAX_STACK columns, 2 when out
 * of memory. */
int svir_local_step_ref(const svir_glmm *m, const double *lpar, const double *A, const double *G,
                        const double *shift, uint64_t seed, uint64_t step, double scale, int stl,
                        double *z, double *b, double *lgrad, double *kl, double *logq,
                        double *sums);

/* Backpropagate dL/dA for one term into the global gradient (log sd, cpc). */
void svir_backprop_A(const svir_glmm *m, int t, const double *theta,
                     const svir_globals *g, const double *dA, double *grad);

/* A partially centred term's A (svir_term.lambda != 0) becomes A_eff in g:
 * for q = 1, A_eff = sd^(1 - lambda) and kap[t] = sd^-lambda; for q > 1,
 * A_eff = D^-lambda ((1 - lambda) A + lambda D) row by row (D = diag(sd):
 * A at lambda = 0, the identity at 1), K = A^-1 A_eff in g->K and kap[t] =
 * det K. The standardised effect is z = K (u - w) (kap (u - w) for q = 1)
 * and log q(z | theta) = log q(u) - log kap[t]. svir_uncentre_A puts A
 * back (K stays). Other terms are left alone. */
void svir_centre_A(const svir_glmm *m, svir_globals *g, double *kap);
void svir_uncentre_A(const svir_glmm *m, svir_globals *g, const double *kap);
/* A centred term's standardised effect from u - w, in place: z = kap (u -
 * w) for q = 1 (kap = kap[t] of svir_centre_A), K (u - w) for q > 1 (g->K
 * as svir_centre_A left it; q at most SVIR_QMAX_STACK). */
void svir_centre_z(const svir_term *tm, const svir_globals *g, double kap, double *z);

/* b = A z for every group of every term (z and b indexed alike). */
void svir_b_from_z(const svir_glmm *m, const svir_globals *g, const double *z, double *b);

/* Full-data log p(y, theta, z) (z: [nz]) and its gradients (may be NULL);
 * *loglik (if not NULL) receives the log-likelihood part without its
 * constant. A reference for the tests of the gradients and of
 * svir_loglik_block. */
double svir_log_joint(const svir_glmm *m, const double *theta, const double *z,
                      double *grad_theta, double *grad_z, double *loglik);

/* Log-likelihood (without constants) of nb <= SVIR_LL_BLOCK parameter draws
 * in one pass over the data. Layout, with NB = SVIR_LL_BLOCK: beta [(p + pz)
 * x NB] (beta[c * NB + s]; the zero inflation's coefficients after beta),
 * b [nz x NB] (b[k * NB + s], indexed like z), aux [NB];
 * slots s >= nb must hold finite values (they are computed and dropped). */
#define SVIR_LL_BLOCK 8
void svir_loglik_block(const svir_glmm *m, int nb, const double *beta, const double *b,
                       const svir_aux *aux, double *ll);
/* Puts draw (theta, z) in slot `slot` of that layout: beta, b = A z (g holds
 * theta unpacked; b [nz] is workspace) and the auxiliary constants. */
void svir_block_put(const svir_glmm *m, const svir_globals *g, const double *theta,
                    const double *z, int slot, double *b, double *beta_blk, double *b_blk,
                    svir_aux *aux);


#include "models/glmm/glmm_global.h"

#endif
