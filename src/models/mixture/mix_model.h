/* Count mixtures (issue 17, family = count_mixture()): rows of a count
 * matrix (cells, samples) fall in K clusters, z_i ~ Categorical(pi), pi ~
 * Dirichlet(alpha), and given z_i = k each count is
 *   Y_ij ~ Poisson(mu_ikj) or NB(mu_ikj, phi_j),
 *   log mu_ikj = o_i + x_i gamma_j + mu_kj,  mu_kj ~ N(m_j, tau_j^2),
 * or, for "zinb", a structural zero with probability omega_j and else the NB;
 * for "dirmult" the whole row is Dirichlet-multinomial with concentrations
 * alpha_kj = exp(mu_kj) (no covariates or offsets: it conditions on the
 * row's total),
 * with x_i the row's covariates (no intercept: the cluster means carry the
 * level), gamma_j gene-specific effects shared by the clusters. The labels
 * are summed out exactly (log-sum-exp over K per row); SVI fits a
 * mean-field Gaussian guide over the unconstrained globals
 *   [mu (K x p, by cluster) | m (p) | log tau (p) | gamma (dx x p) |
 *    log phi (p, NB and ZINB) | logit omega (p, ZINB) |
 *    b, log psi, logit beta (p each, with a background) | eta (K - 1)],
 * pi = softmax(eta, 0) (the additive log-ratio transform).
 *
 * With a background (NB only; CITE-seq proteins, the totalVI idea), each
 * count is the cluster's NB (foreground) with probability 1 - beta_j, else
 * background: NB(exp(b_j), psi_j), one per column shared by all rows (no
 * offsets or covariates: ambient counts do not scale with a cell's
 * library). b_j ~ N(bg_loc_j, bg_scale_j^2) and log psi_j ~ N(bgp_loc_j,
 * bgp_scale_j^2), both learned from empty droplets when given (R/mixture.R),
 * else log psi_j as phi_j's prior; logit beta_j ~ N(0, 1.5^2). No R API. */
#ifndef SVIR_MIX_MODEL_H
#define SVIR_MIX_MODEL_H

#include <stddef.h>

#include "infer/svir_model.h"
#include "models/mixture/mix_codes.h"

typedef struct {
    int n, p, K, dx, dist;
    int bg;                 /* a background component per column (NB only) */
    /* the counts: dense (Y, n x p column-major) or by rows (Rp [n + 1], Rj,
     * Rx: the transposed dgCMatrix's slots) */
    const double *Y;
    const int *Rp, *Rj;
    const double *Rx;
    const double *O;        /* [n] the row offsets (log size factors), or NULL */
    const double *X;        /* [n x dx] column-major covariates, or NULL */
    /* priors: m_j ~ N(m_loc_j, m_scale^2), tau_j ~ N+(0, tau_scale^2),
     * gamma ~ N(0, gamma_scale^2), phi_j^(-1/2) ~ N+(0, 1), logit omega_j ~
     * N(-2, 2^2), pi ~ Dir(alpha) */
    const double *m_loc;    /* [p] */
    double m_scale, tau_scale, gamma_scale, alpha;
    const double *bg_loc, *bg_scale;   /* [p] b_j's prior (with bg) */
    const double *bgp_loc, *bgp_scale; /* [p] log psi_j's prior, or NULL: phi's */
    const double *init_mu;  /* [D] the guide's starting means, or NULL */
    double *lgy;            /* [n] sum_j lgamma(Y_ij + 1) per row, less lgamma(N_i + 1)
                             * for "dirmult" (owned) */
    double *tot;            /* [n] the rows' totals N_i (owned) */
    ptrdiff_t D;
    ptrdiff_t off_mu, off_m, off_lt, off_g, off_phi, off_zi, off_bg, off_eta;
    /* the device's copy of the data while a fit runs on backend = "cuda"
     * (mix_cuda.h), else NULL: SVI's steps then evaluate the batch there */
    struct svir_cuda_mix *dev;
} svir_mix_model;

extern const svir_model_def svir_mix_def;

/* The row i's counts into y [p] (dense). */
void svir_mix_row(const svir_mix_model *m, int i, double *y);

/* log p(y_i | theta, z_i = k) + log pi_k for every k into a [K] and, when
 * the work arrays dl, dphi and dzi [K x p] are given, each entry's d/dlog
 * mu, d/dlog phi and d/dlogit omega (with a background: the entry's
 * probability of being background given k, 1 - f_kj); y: the row's counts,
 * lin [p] its o_i + x_i gamma_j, lp [K] log pi, lgy the row's sum of
 * lgamma(y + 1); cj [SVIR_MIX_CJ p] work, which holds after the call the
 * columns' shared parts, an array of p svir_mix_col (mix_entry.h: with a
 * background its log density, d/db, d/dlog psi and beta). With lkj [K x p], each
 * entry's log density given k (less lgamma(y + 1); not for "dirmult"). */
#define SVIR_MIX_CJ 11
void svir_mix_row_ll(const svir_mix_model *m, const double *theta, const double *y,
                     const double *lin, const double *lp, double lgy, double *a, double *dl,
                     double *dphi, double *dzi, double *cj, double *lkj);

/* the row i's o_i + x_i gamma_j at theta into lin [p] */
void svir_mix_row_lin(const svir_mix_model *m, const double *theta, int i, double *lin);

/* SVI's ELBO estimate at the guide gpar [2 D] with the noise and rows of
 * `step`, its gradient into grad [2 D] (the tests' finite differences);
 * 0, or 2 when out of memory. */
int svir_mix_elbo_grad(const svir_mix_model *m, const svir_control *c, const double *gpar,
                       long step, double *elbo, double *grad);

/* The rows' cluster probabilities resp [n x K], averaged over the first S
 * of nd draws [nd x D] (nd = 0: at mean), and each row's log sum_k pi_k
 * p(y_i | k) at mean [D] into llr [n] (may be NULL), and with a background
 * each entry's probability of being foreground averaged the same way into fg
 * [n x p] (may be NULL), and each row's log sum_k pi_k p(y_i | k) under
 * each of the S draws into lld [S x n] (may be NULL: log_lik() and held-out
 * log densities); 0, or 2 when out of memory. For the fit's outputs and
 * predict() on new rows. */
int svir_mix_resp(const svir_mix_model *m, const double *draws, int nd, int S,
                  const double *mean, double *resp, double *llr, double *fg, double *lld);

/* the counts' lgamma sums and totals per row, after checking that they are
 * whole and not negative (1, with a message in err); 2: out of memory. The
 * spec reader's, and tools/gpucheck's for models it builds itself. */
int svir_mix_prepare(svir_mix_model *m, char *err, size_t errlen);

/* the parameters' offsets and D from n, p, K, dx, dist and bg */
void svir_mix_layout(svir_mix_model *m);

/* QEM (mix_qem.c) for the QEM driver; not for "dirmult". */
int svir_mix_run_qem(void *model, const svir_control *c, const svir_callbacks *cb, svir_result *res);

/* log p(theta) with its gradient added to grad (may be NULL). */
double svir_mix_log_prior(const svir_mix_model *m, const double *theta, double *grad);

#endif
