/* Test-only entry point of the count mixtures (models/mixture): the SVI
 * ELBO estimate and its gradient, for test-mixture.R's finite differences. */
#include "glue/r_test.h"
#include "models/mixture/mix_model.h"

/* list(elbo, grad) at the guide gpar [2 D] for `step` */
SEXP svir_mix_elbo_grad_r(SEXP spec, SEXP ctrl, SEXP gpar, SEXP step)
{
    svir_control c;
    SEXP hp;
    const svir_mix_model *m = svir_r_model(&svir_mix_def, spec, ctrl, &c, &hp);
    svir_r_check_real(gpar, 2 * m->D, "gpar");
    SEXP grad = PROTECT(Rf_allocVector(REALSXP, 2 * m->D));
    double elbo = 0.0;
    if (svir_mix_elbo_grad(m, &c, REAL(gpar), (long)Rf_asReal(step), &elbo, REAL(grad)))
        Rf_error("svir: out of memory");
    SEXP out = PROTECT(Rf_allocVector(VECSXP, 2));
    SEXP nms = PROTECT(Rf_allocVector(STRSXP, 2));
    svir_r_set(out, nms, 0, "elbo", Rf_ScalarReal(elbo));
    svir_r_set(out, nms, 1, "grad", grad);
    Rf_setAttrib(out, R_NamesSymbol, nms);
    svir_r_model_done(hp);
    UNPROTECT(4);
    return out;
}
