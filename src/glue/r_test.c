/* Test-only entry points (registered apart in src/init.c): the models'
 * holder (glue/r_test.h), the code lists the compiled code has (against
 * R/enum.R), and the Poisson-lognormal objective and fit on the CPU and
 * the device for the parity tests. */
#include "glue/r_test.h"
#include "core/svir_loop.h"

#include <stdlib.h>
#include <string.h>

#include "backend/svir_backend.h"
#include "models/pln/pln_cuda.h"
#include "models/pln/pln_model.h"
#include "models/pln/pln_work.h"

typedef struct {
    const svir_model_def *def;
    void *model;
} model_box;

static void box_finalize(SEXP p)
{
    model_box *b = R_ExternalPtrAddr(p);
    if (b) {
        if (b->model) b->def->free(b->model);
        free(b);
    }
    R_ClearExternalPtr(p);
}

void *svir_r_model(const svir_model_def *def, SEXP spec, SEXP ctrl, svir_control *c, SEXP *hp)
{
    svir_control cc;
    if (!c) c = &cc;
    svir_err e = {0, ""};
    const svir_list *cl = svir_r_list(ctrl);
    model_box *b = calloc(1, sizeof *b);
    if (!b) Rf_error("svir: out of memory");
    b->def = def;
    *hp = PROTECT(R_MakeExternalPtr(b, R_NilValue, R_NilValue));
    R_RegisterCFinalizerEx(*hp, box_finalize, TRUE);
    if (svir_control_read(cl, c, &e)) Rf_error("svir: %s", e.msg);
    if (def->read(svir_r_list(spec), cl, c, &b->model, &e)) Rf_error("svir: %s", e.msg);
    if (c->threads <= 0) c->threads = def->threads(b->model, c);
    return b->model;
}

void svir_r_model_done(SEXP hp)
{
    box_finalize(hp);
}

void svir_r_set(SEXP out, SEXP names, int k, const char *name, SEXP val)
{
    SET_VECTOR_ELT(out, k, val);
    SET_STRING_ELT(names, k, Rf_mkChar(name));
}

/* every code list of the compiled code (the core's and each model's) as a
 * named list of named integer vectors, for the test against R/enum.R */
SEXP svir_codes_r(void)
{
    int n = svir_n_core_codes;
    for (int k = 0; k < svir_n_models; k++) n += svir_models[k]->ncodes;
    SEXP out = PROTECT(Rf_allocVector(VECSXP, n));
    SEXP nms = PROTECT(Rf_allocVector(STRSXP, n));
    int i = 0;
    for (int m = -1; m < svir_n_models; m++) {
        const svir_code_table *t = m < 0 ? svir_core_codes : svir_models[m]->codes;
        const int nt = m < 0 ? svir_n_core_codes : svir_models[m]->ncodes;
        for (int k = 0; k < nt; k++, i++) {
            SEXP v = PROTECT(Rf_allocVector(INTSXP, t[k].n));
            SEXP vn = PROTECT(Rf_allocVector(STRSXP, t[k].n));
            for (int j = 0; j < t[k].n; j++) {
                INTEGER(v)[j] = t[k].values[j];
                SET_STRING_ELT(vn, j, Rf_mkChar(t[k].names[j]));
            }
            Rf_setAttrib(v, R_NamesSymbol, vn);
            svir_r_set(out, nms, i, t[k].list, v);
            UNPROTECT(2);
        }
    }
    Rf_setAttrib(out, R_NamesSymbol, nms);
    UNPROTECT(2);
    return out;
}

/* dat$threads, or the model's default */
static int pln_threads(const svir_pln_model *m, SEXP dat)
{
    const SEXP t = svir_r_get(dat, "threads");
    const int T = Rf_isNull(t) ? 0 : Rf_asInteger(t);
    if (T != NA_INTEGER && T > 0) return T;
    svir_control c;
    memset(&c, 0, sizeof c);
    c.method = SVIR_METHOD_VEM;
    return svir_pln_def.threads(m, &c);
}

/* The PLN objective at par [svir_pln_npar] on the CPU or (cuda) the device
 * (svir_cuda_pln_eval_host): list(J, grad, B, Sigma). dat: the spec
 * without `model` (as R's pln() builds it). */
static SEXP pln_eval_common(SEXP dat, SEXP par, int cuda)
{
    SEXP hp;
    svir_pln_model *m = svir_r_model(&svir_pln_def, dat, R_NilValue, NULL, &hp);
    svir_pln_data d = m->dat;
    d.threads = pln_threads(m, dat);
    const R_xlen_t npar = svir_pln_npar(&d);
    if (TYPEOF(par) != REALSXP || Rf_xlength(par) != npar)
        Rf_error("svir internal error: par must be a double vector of length %lld", (long long)npar);
    SEXP out = PROTECT(Rf_allocVector(VECSXP, 4));
    SEXP nms = PROTECT(Rf_allocVector(STRSXP, 4));
    SEXP grad = PROTECT(Rf_allocVector(REALSXP, npar));
    SEXP B = PROTECT(Rf_allocMatrix(REALSXP, d.d, d.p));
    SEXP S = PROTECT(Rf_allocMatrix(REALSXP, d.p, d.p));
    memset(REAL(S), 0, sizeof(double) * (size_t)d.p * d.p);
    double J = 0.0;
    char err[512] = "";
    int st;
    if (d.cov == SVIR_PLN_PCA) {
        if (cuda) Rf_error("svir internal error: PLN-PCA runs on the CPU");
        st = svir_pln_pca_eval(&d, m->Rp, m->Rj, m->Rx, REAL(par), &J, REAL(grad), err, sizeof err);
    } else if (cuda) {
        st = svir_cuda_pln_eval_host(&d, REAL(par), &J, REAL(grad), REAL(B), REAL(S), err, sizeof err);
    } else {
        double *work = (double *)R_alloc((size_t)svir_pln_nwork(&d), sizeof(double));
        st = svir_pln_eval(&d, REAL(par), &J, REAL(grad), REAL(B), REAL(S), work, err, sizeof err);
    }
    if (st) Rf_error(cuda ? "svir (CUDA backend): %s" : "svir: %s", err);
    svir_r_set(out, nms, 0, "J", Rf_ScalarReal(J));
    svir_r_set(out, nms, 1, "grad", grad);
    svir_r_set(out, nms, 2, "B", B);
    svir_r_set(out, nms, 3, "Sigma", S);
    Rf_setAttrib(out, R_NamesSymbol, nms);
    svir_r_model_done(hp);
    UNPROTECT(6);
    return out;
}

SEXP svir_pln_eval_r(SEXP dat, SEXP par) { return pln_eval_common(dat, par, 0); }

/* the PLN objective's BLAS piece size in flops (pln_blas.c): set > 0 sets
 * it; returns the old size (for the tests of the pieces) */
SEXP svir_pln_blas_flops_r(SEXP set) { return Rf_ScalarReal(svir_pln_blas_flops(Rf_asReal(set))); }
SEXP svir_pln_eval_cuda_r(SEXP dat, SEXP par) { return pln_eval_common(dat, par, 1); }

/* The full-batch fit from par on the CPU (svir_pln_fit) or the device
 * (svir_cuda_pln_fit): list(J, par, iterations, trace, B, Sigma, seconds). */
static SEXP pln_fit_common(SEXP dat, SEXP par, SEXP maxit, SEXP tol, int cuda)
{
    SEXP hp;
    svir_pln_model *m = svir_r_model(&svir_pln_def, dat, R_NilValue, NULL, &hp);
    svir_pln_data d = m->dat;
    d.threads = pln_threads(m, dat);
    if (TYPEOF(par) != REALSXP || Rf_xlength(par) != svir_pln_npar(&d))
        Rf_error("svir internal error: par has the wrong length");
    const int mi = Rf_asInteger(maxit);
    if (mi < 1 || mi == NA_INTEGER) Rf_error("svir internal error: maxit must be positive");
    SEXP out = PROTECT(Rf_allocVector(VECSXP, 7));
    SEXP nms = PROTECT(Rf_allocVector(STRSXP, 7));
    SEXP P = PROTECT(Rf_duplicate(par));
    SEXP B = PROTECT(Rf_allocMatrix(REALSXP, d.d, d.p));
    SEXP S = PROTECT(Rf_allocMatrix(REALSXP, d.p, d.p));
    memset(REAL(S), 0, sizeof(double) * (size_t)d.p * d.p);
    double *trace = (double *)R_alloc((size_t)mi, sizeof(double));
    double J = 0.0, secs = 0.0;
    int iters = 0, st;
    char err[512] = "";
    if (cuda) {
        st = svir_cuda_pln_fit(&d, REAL(P), mi, Rf_asReal(tol), &J, &iters, trace, REAL(B), REAL(S),
                               &secs, err, sizeof err);
    } else {
        const double t0 = svir_wall_time();
        st = svir_pln_fit(&d, REAL(P), mi, Rf_asReal(tol), &J, &iters, trace, REAL(B), REAL(S), err,
                          sizeof err);
        secs = svir_wall_time() - t0;
    }
    if (st) Rf_error(cuda ? "svir (CUDA backend): %s" : "svir: %s", err);
    SEXP tr = PROTECT(Rf_allocVector(REALSXP, iters));
    if (iters > 0) memcpy(REAL(tr), trace, sizeof(double) * (size_t)iters);
    svir_r_set(out, nms, 0, "J", Rf_ScalarReal(J));
    svir_r_set(out, nms, 1, "par", P);
    svir_r_set(out, nms, 2, "iterations", Rf_ScalarInteger(iters));
    svir_r_set(out, nms, 3, "trace", tr);
    svir_r_set(out, nms, 4, "B", B);
    svir_r_set(out, nms, 5, "Sigma", S);
    svir_r_set(out, nms, 6, "seconds", Rf_ScalarReal(secs));
    Rf_setAttrib(out, R_NamesSymbol, nms);
    svir_r_model_done(hp);
    UNPROTECT(7);
    return out;
}

SEXP svir_pln_fit_r(SEXP dat, SEXP par, SEXP maxit, SEXP tol)
{
    return pln_fit_common(dat, par, maxit, tol, 0);
}

SEXP svir_pln_fit_cuda_r(SEXP dat, SEXP par, SEXP maxit, SEXP tol)
{
    return pln_fit_common(dat, par, maxit, tol, 1);
}

/* The rule of backend = "auto" (svir_backend_auto) as it would decide on a
 * machine with a usable device, for the tests on machines without one:
 * list(backend, reason) for model's method, minibatch or not, the step's
 * work size, and cpu_only (a string, or NULL: the CUDA code lacks nothing) */
SEXP svir_backend_auto_r(SEXP model, SEXP method, SEXP minibatch, SEXP size, SEXP cpu_only)
{
    const svir_model_def *def = svir_model_find(CHAR(STRING_ELT(model, 0)));
    if (!def) Rf_error("svir internal error: unknown model");
    const int m = svir_code_value(svir_core_code_table("method"), CHAR(STRING_ELT(method, 0)));
    if (m < 0) Rf_error("svir internal error: unknown method");
    const int mini = Rf_asLogical(minibatch) == TRUE;
    svir_choice ch;
    memset(&ch, 0, sizeof ch);
    ch.backend = SVIR_BACKEND_CPU;
    ch.impl = svir_backend_impl(def, m, SVIR_BACKEND_CPU, mini);
    svir_backend_auto(&ch, 1, "a pretend device", svir_backend_impl(def, m, SVIR_BACKEND_CUDA, mini),
                      Rf_isString(cpu_only) ? CHAR(STRING_ELT(cpu_only, 0)) : NULL,
                      Rf_asReal(size), def->auto_cuda_min);
    SEXP out = PROTECT(Rf_allocVector(VECSXP, 2));
    SEXP nms = PROTECT(Rf_allocVector(STRSXP, 2));
    SET_VECTOR_ELT(out, 0, Rf_mkString(svir_backend_table[ch.backend].name));
    SET_VECTOR_ELT(out, 1, Rf_mkString(ch.reason));
    SET_STRING_ELT(nms, 0, Rf_mkChar("backend"));
    SET_STRING_ELT(nms, 1, Rf_mkChar("reason"));
    Rf_setAttrib(out, R_NamesSymbol, nms);
    UNPROTECT(2);
    return out;
}

/* The loop's step sizes lr_t over `steps` accepted steps whose ELBO keeps
 * rising (no plateau), for a schedule code, lr, max_steps and window W:
 * test-bnn.R checks the one-cycle formula. */
SEXP svir_loop_lr_r(SEXP schedule, SEXP lr, SEXP maxs, SEXP W)
{
    const long m = (long)Rf_asReal(maxs);
    SEXP out = PROTECT(Rf_allocVector(REALSXP, m));
    double *trace = (double *)R_alloc((size_t)m, sizeof(double));
    double *wtrace = (double *)R_alloc((size_t)(m / Rf_asInteger(W) + 2), sizeof(double));
    svir_loop L;
    svir_loop_init(&L, m, Rf_asInteger(W), Rf_asReal(lr), Rf_asInteger(schedule), 0.3, 3, 1e-4,
                   trace, wtrace);
    for (long s = 0; s < m; s++) {
        svir_loop_step(&L, s, (double)s, 1);
        REAL(out)[s] = L.stopped ? NA_REAL : L.lr_t;
    }
    UNPROTECT(1);
    return out;
}
