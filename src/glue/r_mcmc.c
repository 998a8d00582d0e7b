/* pln_mcmc()'s entry (models/pln/pln_gibbs.c): the Poisson-lognormal
 * model's posterior of B and Sigma by Metropolis within Gibbs, a block of
 * iterations of every chain per call (R checks for interrupts and shows
 * progress between blocks), the chains on threads of their own. */
#include "core/svir_lapack.h"
#include <R.h>
#include <Rinternals.h>

#include <stdio.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "glue/r_util.h"
#include "models/pln/pln_gibbs.h"

/* Y, O [n x p], X [n x d]; the chains' states Z [n x p x C], B [d x p x
 * C], Sigma [p x p x C], xstep [d x p x C] (doubles, not modified); set:
 * list(nu0, s0, cov (0 full, 1 diagonal, 2 spherical), a0, icpt (0-based,
 * -1 none), tau, it0, nit, warmup, thin, seed, chains, threads). Returns list(Z, B, Sigma, xstep (the states after the
 * block), Bd [ld x d p x C], Sd [ld x p p x C] (the kept draws, rows 0 ..
 * nkept - 1 of each chain), nkept [C], cnt [6 x C] (pln_gibbs.h)). */
SEXP svir_pln_mcmc_r(SEXP Y, SEXP X, SEXP O, SEXP Z, SEXP B, SEXP Sigma, SEXP xstep, SEXP set)
{
    if (!Rf_isMatrix(Y) || !Rf_isMatrix(X)) Rf_error("svir internal error: Y and X must be matrices");
    const int n = Rf_nrows(Y), p = Rf_ncols(Y), d = Rf_ncols(X);
    const int C = Rf_asInteger(svir_r_get(set, "chains"));
    if (C < 1) Rf_error("svir internal error: chains must be at least 1");
    svir_r_check_real(Y, (R_xlen_t)n * p, "Y");
    svir_r_check_real(X, (R_xlen_t)n * d, "X");
    svir_r_check_real(O, (R_xlen_t)n * p, "O");
    svir_r_check_real(Z, (R_xlen_t)n * p * C, "Z");
    svir_r_check_real(B, (R_xlen_t)d * p * C, "B");
    svir_r_check_real(Sigma, (R_xlen_t)p * p * C, "Sigma");
    svir_r_check_real(xstep, (R_xlen_t)d * p * C, "xstep");
    svir_pln_mcmc_data dat;
    dat.n = n;
    dat.p = p;
    dat.d = d;
    dat.Y = REAL(Y);
    dat.X = REAL(X);
    dat.O = REAL(O);
    dat.nu0 = Rf_asReal(svir_r_get(set, "nu0"));
    dat.s0 = Rf_asReal(svir_r_get(set, "s0"));
    dat.icpt = Rf_asInteger(svir_r_get(set, "icpt"));
    dat.tau = Rf_asReal(svir_r_get(set, "tau"));
    dat.cov = Rf_asInteger(svir_r_get(set, "cov"));
    dat.a0 = Rf_asReal(svir_r_get(set, "a0"));
    dat.chain = 0;
    const long it0 = (long)Rf_asReal(svir_r_get(set, "it0"));
    const long nit = (long)Rf_asReal(svir_r_get(set, "nit"));
    const long warmup = (long)Rf_asReal(svir_r_get(set, "warmup"));
    const int thin = Rf_asInteger(svir_r_get(set, "thin"));
    const double seed = Rf_asReal(svir_r_get(set, "seed"));
    int T = Rf_asInteger(svir_r_get(set, "threads"));
    if (it0 < 0 || nit < 1 || warmup < 0 || thin < 1 || !(seed >= 0))
        Rf_error("svir internal error: bad it0, nit, warmup, thin or seed");
    if (T < 1) T = 1;
    if (T > C) T = C;
#ifdef _OPENMP
    if (T > omp_get_max_threads()) T = omp_get_max_threads();
#endif
    const long ld = nit / thin + 1;
    SEXP Zo = PROTECT(Rf_duplicate(Z)), Bo = PROTECT(Rf_duplicate(B));
    SEXP So = PROTECT(Rf_duplicate(Sigma)), Xo = PROTECT(Rf_duplicate(xstep));
    SEXP Bd = PROTECT(Rf_allocVector(REALSXP, (R_xlen_t)ld * d * p * C));
    SEXP Sd = PROTECT(Rf_allocVector(REALSXP, (R_xlen_t)ld * p * p * C));
    SEXP nk = PROTECT(Rf_allocVector(INTSXP, C));
    SEXP cnt = PROTECT(Rf_allocVector(REALSXP, (R_xlen_t)6 * C));
    memset(REAL(cnt), 0, sizeof(double) * (size_t)6 * C);
    memset(REAL(Bd), 0, sizeof(double) * (size_t)ld * d * p * C);
    memset(REAL(Sd), 0, sizeof(double) * (size_t)ld * p * p * C);
    int st_first = 0;
    char err_first[256] = "";
    /* R's accessors outside the threads */
    double *zo = REAL(Zo), *bo = REAL(Bo), *so = REAL(So), *xo = REAL(Xo);
    double *bd = REAL(Bd), *sd = REAL(Sd), *cn = REAL(cnt);
    int *nkp = INTEGER(nk);
#ifdef _OPENMP
#pragma omp parallel for num_threads(T) schedule(static, 1)
#endif
    for (int c = 0; c < C; c++) {
        svir_pln_mcmc_data dc = dat;
        dc.chain = c;
        long kept = 0;
        char err[256] = "";
        const size_t np = (size_t)n * p, dp = (size_t)d * p, pp = (size_t)p * p;
        const int st = svir_pln_mcmc(&dc, zo + c * np, bo + c * dp, so + c * pp, xo + c * dp, it0,
                                     nit, warmup, thin, (uint64_t)seed, bd + (size_t)c * ld * dp,
                                     sd + (size_t)c * ld * pp, ld, &kept, cn + 6 * c, err,
                                     sizeof err);
        nkp[c] = (int)kept;
        if (st) {
#ifdef _OPENMP
#pragma omp critical
#endif
            {
                if (!st_first) {
                    st_first = st;
                    snprintf(err_first, sizeof err_first, "chain %d: %s", c + 1, err);
                }
            }
        }
    }
    if (st_first) {
        UNPROTECT(8);
        Rf_error("svir: %s", err_first);
    }
    const char *nm[] = {"Z", "B", "Sigma", "xstep", "Bd", "Sd", "nkept", "cnt"};
    SEXP vals[] = {Zo, Bo, So, Xo, Bd, Sd, nk, cnt};
    SEXP out = PROTECT(Rf_allocVector(VECSXP, 8)), names = PROTECT(Rf_allocVector(STRSXP, 8));
    for (int k = 0; k < 8; k++) {
        SET_VECTOR_ELT(out, k, vals[k]);
        SET_STRING_ELT(names, k, Rf_mkChar(nm[k]));
    }
    Rf_setAttrib(out, R_NamesSymbol, names);
    UNPROTECT(10);
    return out;
}
