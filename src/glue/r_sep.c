/* The separated coefficient's conditional log-likelihoods on a grid
 * (R/separation.R, svir_sep_marginal): for draws s and points g_j,
 *   out[j, s] = sum_i w_i l(y_i | Eo[i, s] + x_i g_j),
 * l the binomial (trials t_i), Poisson or negative binomial (phi_s)
 * log-likelihood without the terms free of eta, with zero inflation when pz
 * (the zero probabilities, n x S) is given. The same sums as R's
 * svir_sep_loglik(), which the tests compare it with. OpenMP over draws
 * (threads <= 0: OpenMP's default). */
#include <R.h>
#include <Rinternals.h>

#include <math.h>

#ifdef _OPENMP
#include <omp.h>
#endif

static double log_sum_exp2(double a, double b)
{
    const double m = a > b ? a : b;
    if (m == -INFINITY) return -INFINITY;
    return m + log(exp(a - m) + exp(b - m));
}

SEXP svir_sep_grid_r(SEXP Eo_, SEXP x_, SEXP y_, SEXP t_, SEXP w_, SEXP fam_, SEXP phi_, SEXP pz_,
                     SEXP g_, SEXP threads_)
{
    const int n = Rf_nrows(Eo_), S = Rf_ncols(Eo_), G = Rf_length(g_);
    const double *Eo = REAL(Eo_), *x = REAL(x_), *y = REAL(y_), *tr = REAL(t_), *w = REAL(w_);
    const double *g = REAL(g_);
    const double *phi = Rf_isNull(phi_) ? NULL : REAL(phi_);
    const double *pz = Rf_isNull(pz_) ? NULL : REAL(pz_);
    const char *fam = CHAR(STRING_ELT(fam_, 0));
    const int kind = fam[0] == 'b' ? 0 : fam[0] == 'p' ? 1 : 2;
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
        const double ph = phi ? phi[s] : 0.0, lph = phi ? log(phi[s]) : 0.0;
        const double *e = Eo + (ptrdiff_t)s * n, *z = pz ? pz + (ptrdiff_t)s * n : NULL;
        for (int j = 0; j < G; j++) {
            double sum = 0.0;
            for (int i = 0; i < n; i++) {
                const double eta = e[i] + x[i] * g[j];
                double l;
                if (kind == 0) {
                    l = y[i] * eta - tr[i] * (fmax(eta, 0.0) + log1p(exp(-fabs(eta))));
                } else if (kind == 1) {
                    l = y[i] * eta - exp(eta);
                } else {
                    l = y[i] * eta - (y[i] + ph) * log_sum_exp2(lph, eta);
                }
                if (z) {
                    /* a zero: log(pz + (1 - pz) f0), f0 = P(0) of the count
                     * model (l at y = 0, plus phi log phi for the negative
                     * binomial); a count: log(1 - pz) + l */
                    if (y[i] == 0.0) {
                        const double lf0 = kind == 2 ? l + ph * lph : l;
                        l = log_sum_exp2(log(z[i]), log1p(-z[i]) + lf0);
                    } else {
                        l += log1p(-z[i]);
                    }
                }
                sum += w[i] * l;
            }
            o[(ptrdiff_t)s * G + j] = sum;
        }
    }
    UNPROTECT(1);
    return out;
}
