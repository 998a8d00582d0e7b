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
} svir_term;

typedef struct {
    ptrdiff_t n;            /* observations */
    int p;                  /* fixed-effect columns */
    const double *y;        /* [n] response (binomial: successes) */
    const double *trials;   /* [n] binomial trials, or NULL */
    const double *offset;   /* [n] or NULL */
    const double *X;        /* [n x p] column-major */
    int family, link;
    int nterms;
    svir_term *terms;
    const int *prior_type;  /* [D] */
    const double *prior_df, *prior_loc, *prior_scale;
    /* filled by svir_glmm_init */
    ptrdiff_t D;            /* global parameters */
    ptrdiff_t off_sigma;    /* -1 unless gaussian */
    ptrdiff_t off_phi;      /* -1 unless negbin */
    ptrdiff_t nz;           /* sum_t J_t q_t: latent z values */
    ptrdiff_t nloc;         /* sum_t J_t (q_t + q_t(q_t+1)/2): local variational parameters */
    ptrdiff_t nqq;          /* sum_t q_t^2 */
    int qmax;
    int x_ones;             /* first column of X that is all ones (the intercept), or -1 */
    int nt_icpt;            /* nterms when every term is a random intercept and there
                             * are at most SVIR_NT_ICPT_MAX of them (the hot loops'
                             * specialised paths), else 0 */
    double ll_const;        /* sum over all observations of the parts of log p(y_i | eta_i) free of parameters */
    /* the model's own settings */
    int couple;             /* the coupled guide (SVI; QEM's proposal) */
    const double *init_mu;  /* [D] or NULL: the globals' starting means */
    const double *init_sd;  /* [D] or NULL: the globals' starting sds (else init_scale) */
    int qem_direct;         /* QEM's tree: evaluate every observation, no sums (tests) */
} svir_glmm;

/* Global parameters unpacked to the natural scale (workspace owned by caller). */
typedef struct {
    const double *beta;     /* [p] */
    double *sd;             /* [sum q] natural sd per term, term t at off_sd - p */
    double *L;              /* [nqq] row-major correlation Cholesky per term */
    double *A;              /* [nqq] A = diag(sd) L per term */
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

/* Per-step constants of the auxiliary parameters. */
typedef struct { double sigma, inv_s2, log_sigma, phi, log_phi; } svir_aux;

SVIR_MATH_HD void svir_aux_set(svir_aux *a, double sigma, double phi)
{
    a->sigma = sigma;
    a->inv_s2 = 1.0 / (sigma * sigma);
    a->log_sigma = log(sigma);
    a->phi = phi;
    a->log_phi = log(phi);
}

/* Inline log-likelihood of one observation (without its constant), for the
 * hot loops: family and link are passed as constants so that the compiler can
 * specialise each loop. */
SVIR_ALWAYS_INLINE double svir_loglik(const svir_glmm *m, const int family, const int link,
                                 ptrdiff_t i, double eta, const svir_aux *a,
                                 double *d_eta, double *d_aux)
{
    const double y = m->y[i];
    *d_aux = 0.0;
    switch (family) {
    case SVIR_GAUSSIAN: {
        const double r = y - eta, r2 = r * r * a->inv_s2;
        *d_eta = r * a->inv_s2;
        *d_aux = r2 - 1.0;
        return -a->log_sigma - 0.5 * r2;
    }
    case SVIR_BINOMIAL: {
        const double t = m->trials ? m->trials[i] : 1.0;
        switch (link) {
        case SVIR_LINK_PROBIT:
            *d_eta = y * svir_mills_inv(eta) - (t - y) * svir_mills_inv(-eta);
            return (y > 0 ? y * svir_log_pnorm(eta) : 0.0) +
                (t - y > 0 ? (t - y) * svir_log_pnorm(-eta) : 0.0);
        case SVIR_LINK_CLOGLOG: {
            const double u = exp(eta);
            *d_eta = u * ((y > 0 ? y / expm1(u) : 0.0) - (t - y));
            return (y > 0 ? y * log(-expm1(-u)) : 0.0) - (t - y) * u;
        }
        default: { /* logit */
            const double pr = eta >= 0 ? 1.0 / (1.0 + exp(-eta)) : exp(eta) / (1.0 + exp(eta));
            *d_eta = y - t * pr;
            return y * eta - t * svir_log1pexp(eta);
        }
        }
    }
    case SVIR_POISSON: {
        const double mu = exp(eta);
        *d_eta = y - mu;
        return y * eta - mu;
    }
    default: { /* negbin, log link */
        const double phi = a->phi, lphi = a->log_phi;
        const double hi = lphi > eta ? lphi : eta;
        const double log_pm = hi + log1p(exp(-fabs(lphi - eta))); /* log(phi + mu) */
        const double frac = (y + phi) * exp(-log_pm); /* (y + phi) / (phi + mu) */
        const double mu_share = exp(eta - log_pm);     /* mu / (phi + mu) */
        double lg, dg;
        if (y < 16) {
            lg = 0.0;
            dg = 0.0;
            for (int k = 0; k < (int)y; k++) {
                lg += log(phi + k);
                dg += 1.0 / (phi + k);
            }
        } else {
            lg = svir_lgamma(y + phi) - svir_lgamma(phi);
            dg = svir_digamma(y + phi) - svir_digamma(phi);
        }
        /* d/d eta: y - (y + phi) mu / (phi + mu) */
        *d_eta = y - (y + phi) * mu_share;
        *d_aux = phi * (dg + lphi + 1.0 - log_pm - frac);
        return lg + phi * lphi + y * eta - (y + phi) * log_pm;
    }
    }
}

/* svir_loglik's Gaussian case summed over nobs observations, for the loops
 * that need only the sums: with u_i = r_i^2 / sigma^2, the sum of log p is
 * -nobs log sigma - usum / 2 (returned) and its d/d log sigma usum - nobs. */
SVIR_MATH_HD double svir_loglik_gauss_sum(const svir_aux *a, double usum, double nobs,
                                          double *d_aux)
{
    *d_aux = usum - nobs;
    return -0.5 * usum - nobs * a->log_sigma;
}

/* Linear predictor of observation i, given b (indexed like z). */
double svir_eta_obs(const svir_glmm *m, ptrdiff_t i, const double *beta, const double *b);

/* One plain pass over all observations at fixed effects beta [p] and random
 * effects b [nz]: *ll = sum_i log p(y_i | eta_i) without constants, gbeta [p],
 * *gaux (d ll / d log sigma or log phi) and G [nz] = d ll / d b. The
 * reference for the engine's and the CUDA backend's passes (tests,
 * tools/gpucheck); not used by the fits. */
void svir_obs_pass_ref(const svir_glmm *m, const double *beta, const double *b,
                       const svir_aux *aux, double *ll, double *gbeta, double *gaux, double *G);

/* The per-group part of a full-batch step on the CPU, the reference for the
 * CUDA backend's (arguments as svir_cuda_local_step_host in svir_cuda.h).
 * Returns 0, 1 if a term has more than SVIR_QMAX_STACK columns, 2 when out
 * of memory. */
int svir_local_step_ref(const svir_glmm *m, const double *lpar, const double *A, const double *G,
                        const double *shift, uint64_t seed, uint64_t step, double scale, int stl,
                        double *z, double *b, double *lgrad, double *kl, double *logq,
                        double *sums);

/* Backpropagate dL/dA for one term into the global gradient (log sd, cpc). */
void svir_backprop_A(const svir_glmm *m, int t, const double *theta,
                     const svir_globals *g, const double *dA, double *grad);

/* b = A z for every group of every term (z and b indexed alike). */
void svir_b_from_z(const svir_glmm *m, const svir_globals *g, const double *z, double *b);

/* Full-data log p(y, theta, z) (z: [nz]) and its gradients (may be NULL);
 * *loglik (if not NULL) receives the log-likelihood part without its
 * constant. A reference for the tests of the gradients and of
 * svir_loglik_block. */
double svir_log_joint(const svir_glmm *m, const double *theta, const double *z,
                      double *grad_theta, double *grad_z, double *loglik);

/* Log-likelihood (without constants) of nb <= SVIR_LL_BLOCK parameter draws
 * in one pass over the data. Layout, with NB = SVIR_LL_BLOCK: beta [p x NB]
 * (beta[c * NB + s]), b [nz x NB] (b[k * NB + s], indexed like z), aux [NB];
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
