/* The count mixtures' entry besides the fit: the cluster probabilities of
 * rows (predict() on new cells) from a fit's draws. */
#include "glue/r_test.h"
#include "models/mixture/mix_model.h"

/* resp (n x K) of the spec's rows, averaged over the first S rows of draws
 * (nd x D, the engine's order); with loglik TRUE, list(resp, loglik) with
 * each row's log density under each draw (S x n) */
SEXP svir_mix_resp_r(SEXP spec, SEXP draws, SEXP S, SEXP loglik)
{
    SEXP hp;
    const svir_mix_model *m = svir_r_model(&svir_mix_def, spec, R_NilValue, NULL, &hp);
    if (TYPEOF(draws) != REALSXP || !Rf_isMatrix(draws) || Rf_ncols(draws) != m->D || Rf_nrows(draws) < 1)
        Rf_error("svir internal error: draws must be a double matrix of %lld columns", (long long)m->D);
    const int nd = Rf_nrows(draws), s = Rf_asInteger(S);
    if (s < 1 || s > nd) Rf_error("svir internal error: S must be in [1, %d]", nd);
    SEXP resp = PROTECT(Rf_allocMatrix(REALSXP, m->n, m->K));
    const int want = Rf_asLogical(loglik) == TRUE;
    SEXP lld = PROTECT(want ? Rf_allocMatrix(REALSXP, s, m->n) : R_NilValue);
    if (svir_mix_resp(m, REAL(draws), nd, s, REAL(draws), REAL(resp), NULL, NULL,
                      want ? REAL(lld) : NULL))
        Rf_error("svir: out of memory computing the cluster probabilities");
    svir_r_model_done(hp);
    if (!want) {
        UNPROTECT(3);
        return resp;
    }
    SEXP out = PROTECT(Rf_allocVector(VECSXP, 2));
    SET_VECTOR_ELT(out, 0, resp);
    SET_VECTOR_ELT(out, 1, lld);
    UNPROTECT(4);
    return out;
}
