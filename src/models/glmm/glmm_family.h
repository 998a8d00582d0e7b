/* The GLMM's family table: each family's log-likelihood of one observation
 * with its derivatives (svir_loglik), the zero-inflation layer over the
 * families that have it (svir_loglik_zi), and the dispatch of the hot loops
 * over the family x link pairs, with zero inflation as a compile-time flag
 * (a model without it runs the loops it always ran). Host/device functions,
 * shared by the CPU and CUDA code. Included by glmm.h after the types. */
#ifndef SVIR_GLMM_FAMILY_H
#define SVIR_GLMM_FAMILY_H

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

/* The log-likelihood of one observation (without its constant) under a
 * family and link of SVIR_GLMM_PAIRS, d log p / d eta and d log p / d
 * log aux (sigma or phi), for the hot loops: family and link are passed as
 * constants so that the compiler specialises each loop. */
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

/* Zero inflation over a family of SVIR_GLMM_ZI_PAIRS: with pi =
 * logit^-1(etaz) the probability of a structural zero and f the family's
 * density,
 *   log p(y) = log(pi + (1 - pi) f(0))   (y = 0),
 *              log(1 - pi) + log f(y)     (y > 0),
 * the family's constant (-log y!) staying in ll_const. With w = (1 - pi)
 * f(0) / p(0), the posterior probability that a zero is the family's,
 * d/d eta = w d log f(0) / d eta (the same for log aux), and d/d etaz =
 * (1 - w) - pi (for y > 0, w = 1: -pi). */
/* The parts of the zero inflation that depend on etaz alone: pi, log(1 -
 * pi) and log pi, for loops that reuse them over many draws of eta. */
typedef struct { double pi, l1p, lpi; } svir_zi_part;

SVIR_MATH_HD svir_zi_part svir_zi_parts(double etaz)
{
    svir_zi_part z;
    z.pi = etaz >= 0 ? 1.0 / (1.0 + exp(-etaz)) : exp(etaz) / (1.0 + exp(etaz));
    z.l1p = -svir_log1pexp(etaz);
    z.lpi = -svir_log1pexp(-etaz);
    return z;
}

SVIR_ALWAYS_INLINE double svir_loglik_zi_p(const svir_glmm *m, const int family, const int link,
                                           ptrdiff_t i, double eta, const svir_zi_part *zp,
                                           const svir_aux *a, double *d_eta, double *d_aux,
                                           double *d_etaz)
{
    const double lf = svir_loglik(m, family, link, i, eta, a, d_eta, d_aux);
    if (m->y[i] > 0) {
        *d_etaz = -zp->pi;
        return zp->l1p + lf;
    }
    const double a1 = zp->l1p + lf;
    const double hi = zp->lpi > a1 ? zp->lpi : a1;
    const double ll = hi + log1p(exp(-fabs(zp->lpi - a1)));
    const double w = exp(a1 - ll);
    *d_eta *= w;
    *d_aux *= w;
    *d_etaz = (1.0 - w) - zp->pi;
    return ll;
}

SVIR_ALWAYS_INLINE double svir_loglik_zi(const svir_glmm *m, const int family, const int link,
                                         ptrdiff_t i, double eta, double etaz,
                                         const svir_aux *a, double *d_eta, double *d_aux,
                                         double *d_etaz)
{
    const svir_zi_part zp = svir_zi_parts(etaz);
    return svir_loglik_zi_p(m, family, link, i, eta, &zp, a, d_eta, d_aux, d_etaz);
}

/* An observation's log-likelihood and its derivatives times its prior
 * weight w (d_etaz only with zero inflation). */
SVIR_MATH_HD double svir_weigh(double w, int ZI, double ll, double *d_eta, double *d_aux,
                               double *d_etaz)
{
    *d_eta *= w;
    *d_aux *= w;
    if (ZI) *d_etaz *= w;
    return w * ll;
}

/* One observation's log-likelihood, zero-inflated when ZI (a compile-time
 * constant) with the zero-inflation predictor etaz and d/d etaz (*d_etaz,
 * untouched without ZI). */
SVIR_ALWAYS_INLINE double svir_loglik_obs(const svir_glmm *m, const int family, const int link,
                                          const int ZI, ptrdiff_t i, double eta, double etaz,
                                          const svir_aux *a, double *d_eta, double *d_aux,
                                          double *d_etaz)
{
    if (ZI) return svir_loglik_zi(m, family, link, i, eta, etaz, a, d_eta, d_aux, d_etaz);
    return svir_loglik(m, family, link, i, eta, a, d_eta, d_aux);
}

/* svir_loglik_obs times the observation's prior weight, for the loops that
 * serve weighted models (the intercepts' fast loops take none: a model
 * with weights has nt_fast = 0) */
SVIR_ALWAYS_INLINE double svir_loglik_obs_w(const svir_glmm *m, const int family, const int link,
                                            const int ZI, ptrdiff_t i, double eta, double etaz,
                                            const svir_aux *a, double *d_eta, double *d_aux,
                                            double *d_etaz)
{
    const double ll = svir_loglik_obs(m, family, link, ZI, i, eta, etaz, a, d_eta, d_aux, d_etaz);
    return m->wt ? svir_weigh(m->wt[i], ZI, ll, d_eta, d_aux, d_etaz) : ll;
}

/* The zero-inflation predictor of observation i: Xz[i, ] gamma */
SVIR_ALWAYS_INLINE double svir_etaz(const svir_glmm *m, ptrdiff_t i, const double *gamma)
{
    double e = 0.0;
    for (int c = 0; c < m->pz; c++) e += m->Xz[i + (ptrdiff_t)c * m->n] * gamma[c];
    return e;
}

#endif
