/* The .Call verbs: fit a model (svir_fit_r), and ask the backend layer
 * which backend a fit would run on (svir_backend_choose_r) or what this
 * build has (svir_backends_r). The glue knows no model: a spec names its
 * model and the engine's registry does the rest (infer/svir_fit.c). */
#include "glue/r_util.h"

#include <string.h>

#include "backend/svir_backend.h"
#include "infer/svir_model.h"

/* The fit of spec (a named list; spec$model names the model, "glmm" when
 * absent) with the settings ctrl: the engine list (svir_r_result), or
 * list(interrupted = TRUE) when the user interrupted it, which R turns
 * into an interrupt; an error otherwise. */
SEXP svir_fit_r(SEXP spec, SEXP ctrl)
{
    svir_r_holder *h;
    SEXP hp = PROTECT(svir_r_holder_new(&h));
    const svir_list *sl = svir_r_list(spec), *cl = svir_r_list(ctrl);
    svir_callbacks cb;
    svir_r_callbacks(ctrl, &cb);
    const int st = svir_fit_spec(sl, cl, &cb, &h->res);
    if (st == SVIR_INTERRUPTED) {
        svir_r_holder_done(hp);
        SEXP out = PROTECT(Rf_allocVector(VECSXP, 1));
        SET_VECTOR_ELT(out, 0, Rf_ScalarLogical(TRUE));
        Rf_setAttrib(out, R_NamesSymbol, Rf_mkString("interrupted"));
        UNPROTECT(2);
        return out;
    }
    if (st) {
        char msg[600];
        snprintf(msg, sizeof msg, "%s", h->res.message);
        svir_r_holder_done(hp);
        UNPROTECT(1);
        Rf_error("svir: %s", msg);
    }
    SEXP out = PROTECT(svir_r_result(&h->res));
    svir_r_holder_done(hp);
    UNPROTECT(2);
    return out;
}

/* The backend layer's choice for a fit of `model` by `method` (minibatch:
 * with minibatches; backend: "auto", "cpu" or "cuda"; size: the work per
 * step; spec: the fit's spec, or NULL, for what of it the CUDA code lacks):
 * list(backend, reason, refuse, detail); refuse is "" when the backend can
 * be had, else "no_device", "cpu_only" or "no_method". */
SEXP svir_backend_choose_r(SEXP model, SEXP method, SEXP minibatch, SEXP backend, SEXP size,
                           SEXP spec)
{
    const svir_model_def *def = svir_model_find(CHAR(STRING_ELT(model, 0)));
    if (!def) Rf_error("svir internal error: unknown model");
    const int m = svir_code_value(svir_core_code_table("method"), CHAR(STRING_ELT(method, 0)));
    if (m < 0) Rf_error("svir internal error: unknown method");
    const char *b = CHAR(STRING_ELT(backend, 0));
    const int req = strcmp(b, "auto") == 0 ? -1 : svir_backend_find(b);
    svir_choice ch;
    const char *co = TYPEOF(spec) == VECSXP && def->cpu_only ? def->cpu_only(svir_r_list(spec))
                                                             : NULL;
    const int st = svir_backend_choose(def, m, Rf_asLogical(minibatch) == TRUE, req,
                                       Rf_asReal(size), co, &ch);
    static const char *refuse[] = {"", "no_device", "cpu_only", "no_method"};
    SEXP out = PROTECT(Rf_allocVector(VECSXP, 4));
    SEXP nms = PROTECT(Rf_allocVector(STRSXP, 4));
    SET_VECTOR_ELT(out, 0, Rf_mkString(st ? "" : svir_backend_table[ch.backend].name));
    SET_VECTOR_ELT(out, 1, Rf_mkString(ch.reason));
    SET_VECTOR_ELT(out, 2, Rf_mkString(refuse[ch.refuse]));
    SET_VECTOR_ELT(out, 3, Rf_mkString(ch.detail));
    const char *nm[4] = {"backend", "reason", "refuse", "detail"};
    for (int k = 0; k < 4; k++) SET_STRING_ELT(nms, k, Rf_mkChar(nm[k]));
    Rf_setAttrib(out, R_NamesSymbol, nms);
    UNPROTECT(2);
    return out;
}

/* list(backend, available, detail) for every backend of this build */
SEXP svir_backends_r(void)
{
    SEXP name = PROTECT(Rf_allocVector(STRSXP, SVIR_N_BACKENDS));
    SEXP avail = PROTECT(Rf_allocVector(LGLSXP, SVIR_N_BACKENDS));
    SEXP detail = PROTECT(Rf_allocVector(STRSXP, SVIR_N_BACKENDS));
    for (int i = 0; i < SVIR_N_BACKENDS; i++) {
        char buf[512];
        buf[0] = '\0';
        const int ok = svir_backend_table[i].available(buf, sizeof buf);
        buf[sizeof buf - 1] = '\0';
        SET_STRING_ELT(name, i, Rf_mkChar(svir_backend_table[i].name));
        LOGICAL(avail)[i] = ok != 0;
        SET_STRING_ELT(detail, i, Rf_mkCharCE(buf, CE_UTF8));
    }
    SEXP ans = PROTECT(Rf_allocVector(VECSXP, 3));
    SEXP nms = PROTECT(Rf_allocVector(STRSXP, 3));
    SET_VECTOR_ELT(ans, 0, name);
    SET_VECTOR_ELT(ans, 1, avail);
    SET_VECTOR_ELT(ans, 2, detail);
    SET_STRING_ELT(nms, 0, Rf_mkChar("backend"));
    SET_STRING_ELT(nms, 1, Rf_mkChar("available"));
    SET_STRING_ELT(nms, 2, Rf_mkChar("detail"));
    Rf_setAttrib(ans, R_NamesSymbol, nms);
    UNPROTECT(5);
    return ans;
}

/* R's interrupt check, for R code that cuts a long computation into pieces
 * (R/pln-fit.R, svir_blocks): one BLAS call or one vectorised operation
 * is not interrupted by R, a loop of pieces with this between them is */
SEXP svir_check_interrupt_r(void)
{
    R_CheckUserInterrupt();
    return R_NilValue;
}
