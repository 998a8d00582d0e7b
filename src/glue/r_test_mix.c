/* Test-only entry points of the count mixtures (models/mixture) and the
 * networks (models/bnn): the SVI ELBO estimate and its gradient, for
 * test-mixture.R's and test-bnn.R's finite differences. */
#include "glue/r_test.h"
#include "models/mixture/mix_model.h"
#include "models/bnn/bnn_model.h"

typedef struct {
    const svir_model_def *def;
    ptrdiff_t (*D)(const void *model);
    int (*elbo_grad)(const void *model, const svir_control *c, const double *gpar, long step,
                     double *elbo, double *grad);
} elbo_grad_entry;

/* list(elbo, grad) at the guide gpar [2 D] for `step` */
static SEXP elbo_grad_r(const elbo_grad_entry *en, SEXP spec, SEXP ctrl, SEXP gpar, SEXP step)
{
    svir_control c;
    SEXP hp;
    const void *m = svir_r_model(en->def, spec, ctrl, &c, &hp);
    const ptrdiff_t D = en->D(m);
    svir_r_check_real(gpar, 2 * D, "gpar");
    SEXP grad = PROTECT(Rf_allocVector(REALSXP, 2 * D));
    double elbo = 0.0;
    if (en->elbo_grad(m, &c, REAL(gpar), (long)Rf_asReal(step), &elbo, REAL(grad)))
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

static ptrdiff_t mix_D(const void *m)
{
    return ((const svir_mix_model *)m)->D;
}

static int mix_eg(const void *m, const svir_control *c, const double *gpar, long step,
                  double *elbo, double *grad)
{
    return svir_mix_elbo_grad(m, c, gpar, step, elbo, grad);
}

static ptrdiff_t bnn_D(const void *m)
{
    return ((const svir_bnn_model *)m)->D;
}

static int bnn_eg(const void *m, const svir_control *c, const double *gpar, long step,
                  double *elbo, double *grad)
{
    return svir_bnn_elbo_grad(m, c, gpar, step, elbo, grad);
}

SEXP svir_mix_elbo_grad_r(SEXP spec, SEXP ctrl, SEXP gpar, SEXP step)
{
    static const elbo_grad_entry en = {&svir_mix_def, mix_D, mix_eg};
    return elbo_grad_r(&en, spec, ctrl, gpar, step);
}

SEXP svir_bnn_elbo_grad_r(SEXP spec, SEXP ctrl, SEXP gpar, SEXP step)
{
    static const elbo_grad_entry en = {&svir_bnn_def, bnn_D, bnn_eg};
    return elbo_grad_r(&en, spec, ctrl, gpar, step);
}

/* the held-out rows' loss of a network at the guide gpar [2 D] */
SEXP svir_bnn_validate_r(SEXP spec, SEXP ctrl, SEXP gpar)
{
    svir_control c;
    SEXP hp;
    const svir_bnn_model *m = svir_r_model(&svir_bnn_def, spec, ctrl, &c, &hp);
    svir_r_check_real(gpar, 2 * m->D, "gpar");
    double v = 0.0;
    if (svir_bnn_validate_at(m, &c, REAL(gpar), &v)) Rf_error("svir: out of memory");
    svir_r_model_done(hp);
    UNPROTECT(1); /* hp */
    return Rf_ScalarReal(v);
}
