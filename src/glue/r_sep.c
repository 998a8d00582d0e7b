/* The separated coefficient's conditional log-likelihoods on a grid
 * (R/separation.R, svir_sep_marginal): for draws s and points g_j,
 *   out[j, s] = sum_i w_i log p(y_i | Eo[i, s] + x_i g_j),
 * log p the GLMM's own observation log-likelihood (models/glmm/
 * glmm_family.h: the family and link of the fit, phi_s for the negative
 * binomial, and the zero inflation with its linear predictor etaz [n x S]
 * when given), without its constant. OpenMP over draws (threads <= 0:
 * OpenMP's default). */
#include <R.h>
#include <Rinternals.h>

#include <math.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "models/glmm/glmm.h"

SEXP svir_sep_grid_r(SEXP Eo_, SEXP x_, SEXP y_, SEXP t_, SEXP w_, SEXP family_, SEXP link_,
                     SEXP phi_, SEXP etaz_, SEXP g_, SEXP threads_)
{
    const int n = Rf_nrows(Eo_), S = Rf_ncols(Eo_), G = Rf_length(g_);
    const double *Eo = REAL(Eo_), *x = REAL(x_), *w = REAL(w_), *g = REAL(g_);
    const double *phi = Rf_isNull(phi_) ? NULL : REAL(phi_);
    const double *etaz = Rf_isNull(etaz_) ? NULL : REAL(etaz_);
    const int family = Rf_asInteger(family_), link = Rf_asInteger(link_);
    /* svir_loglik reads the response and the trials from the model */
    svir_glmm m;
    memset(&m, 0, sizeof m);
    m.y = REAL(y_);
    m.trials = Rf_isNull(t_) ? NULL : REAL(t_);
    int T = Rf_asInteger(threads_);
#ifdef _OPENMP
    if (T <= 0) T = omp_get_max_threads();
#endif
    if (T <= 0) T = 1;
    SEXP out = PROTECT(Rf_allocMatrix(REALSXP, G, S));
    double *o = REAL(out);
#ifdef _OPENMP
#pragma omp parallel for num_threads(T) schedule(static)
#endif
    for (int s = 0; s < S; s++) {
        svir_aux a;
        svir_aux_set(&a, 1.0, phi ? phi[s] : 1.0);
        const double *e = Eo + (ptrdiff_t)s * n, *ez = etaz ? etaz + (ptrdiff_t)s * n : NULL;
        for (int j = 0; j < G; j++) {
            double sum = 0.0, de, da, dz;
            for (int i = 0; i < n; i++) {
                const double eta = e[i] + x[i] * g[j];
                const double l = ez ? svir_loglik_zi(&m, family, link, i, eta, ez[i], &a, &de, &da, &dz)
                                    : svir_loglik(&m, family, link, i, eta, &a, &de, &da);
                sum += w[i] * l;
            }
            o[(ptrdiff_t)s * G + j] = sum;
        }
    }
    UNPROTECT(1);
    return out;
}
