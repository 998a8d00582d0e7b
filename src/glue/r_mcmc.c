/* pln_mcmc()'s entry (models/pln/pln_gibbs.c): the Poisson-lognormal
 * model's posterior of B and Sigma by Metropolis within Gibbs. */
#include "core/svir_lapack.h"
#include <R.h>
#include <Rinternals.h>

#include "core/svir_result.h"
#include "glue/r_util.h"
#include "models/pln/pln_gibbs.h"

static void check_real(SEXP x, R_xlen_t len, const char *what)
{
    if (TYPEOF(x) != REALSXP || Rf_xlength(x) != len)
        Rf_error("svir internal error: %s must be double of length %lld", what, (long long)len);
}

/* Y, O [n x p], X [n x d], Z [n x p], B [d x p], Sigma [p x p] (doubles);
 * set: list(nu0, s0, icpt (0-based, -1 none), tau, iter, warmup, thin,
 * seed). Returns list(B = [ndraw x d p], Sigma = [ndraw x p p], Z, B_last,
 * Sigma_last, accept = c(rows, scale, shift)). */
SEXP svir_pln_mcmc_r(SEXP Y, SEXP X, SEXP O, SEXP Z, SEXP B, SEXP Sigma, SEXP set)
{
    if (!Rf_isMatrix(Y) || !Rf_isMatrix(X)) Rf_error("svir internal error: Y and X must be matrices");
    const int n = Rf_nrows(Y), p = Rf_ncols(Y), d = Rf_ncols(X);
    check_real(Y, (R_xlen_t)n * p, "Y");
    check_real(X, (R_xlen_t)n * d, "X");
    check_real(O, (R_xlen_t)n * p, "O");
    check_real(Z, (R_xlen_t)n * p, "Z");
    check_real(B, (R_xlen_t)d * p, "B");
    check_real(Sigma, (R_xlen_t)p * p, "Sigma");
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
    const long iter = (long)Rf_asReal(svir_r_get(set, "iter"));
    const long warmup = (long)Rf_asReal(svir_r_get(set, "warmup"));
    const int thin = Rf_asInteger(svir_r_get(set, "thin"));
    const double seed = Rf_asReal(svir_r_get(set, "seed"));
    if (iter < 1 || warmup < 0 || warmup >= iter || thin < 1 || !(seed >= 0))
        Rf_error("svir internal error: bad iter, warmup, thin or seed");
    const long ndraw = (iter - warmup) / thin;
    SEXP Zo = PROTECT(Rf_duplicate(Z)), Bo = PROTECT(Rf_duplicate(B));
    SEXP So = PROTECT(Rf_duplicate(Sigma));
    SEXP Bd = PROTECT(Rf_allocMatrix(REALSXP, (int)ndraw, d * p));
    SEXP Sd = PROTECT(Rf_allocMatrix(REALSXP, (int)ndraw, p * p));
    SEXP acc = PROTECT(Rf_allocVector(REALSXP, 3));
    char err[256] = "";
    const int st = svir_pln_mcmc(&dat, REAL(Zo), REAL(Bo), REAL(So), iter, warmup, thin,
                                 (uint64_t)seed, REAL(Bd), REAL(Sd), REAL(acc), err, sizeof err);
    if (st == SVIR_INTERRUPTED) {
        UNPROTECT(6);
        R_CheckUserInterrupt();
        Rf_error("svir: interrupted");
    }
    if (st) Rf_error("svir: %s", err);
    const char *nm[] = {"B", "Sigma", "Z", "B_last", "Sigma_last", "accept"};
    SEXP out = PROTECT(Rf_allocVector(VECSXP, 6)), names = PROTECT(Rf_allocVector(STRSXP, 6));
    SEXP vals[] = {Bd, Sd, Zo, Bo, So, acc};
    for (int k = 0; k < 6; k++) {
        SET_VECTOR_ELT(out, k, vals[k]);
        SET_STRING_ELT(names, k, Rf_mkChar(nm[k]));
    }
    Rf_setAttrib(out, R_NamesSymbol, names);
    UNPROTECT(8);
    return out;
}
