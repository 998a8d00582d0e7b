/* The glue's tools (glue/r_util.h). */
#include "glue/r_util.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

static void fill(SEXP x, svir_list *l)
{
    memset(l, 0, sizeof *l);
    l->ncol = -1;
    l->len = Rf_xlength(x);
    if (Rf_isMatrix(x)) {
        l->nrow = Rf_nrows(x);
        l->ncol = Rf_ncols(x);
    }
    switch (TYPEOF(x)) {
    case NILSXP:
        l->type = SVIR_L_NULL;
        l->len = 0;
        break;
    case REALSXP:
        l->type = SVIR_L_REAL;
        l->real = REAL(x);
        break;
    case INTSXP:
        l->type = SVIR_L_INT;
        l->ints = INTEGER(x);
        break;
    case LGLSXP:
        l->type = SVIR_L_LGL;
        l->ints = LOGICAL(x);
        break;
    case STRSXP: {
        l->type = SVIR_L_STR;
        const char **s = (const char **)R_alloc((size_t)l->len + 1, sizeof(char *));
        for (R_xlen_t k = 0; k < l->len; k++)
            s[k] = STRING_ELT(x, k) == NA_STRING ? NULL : CHAR(STRING_ELT(x, k));
        l->str = s;
        break;
    }
    case VECSXP: {
        l->type = SVIR_L_LIST;
        svir_list *elt = (svir_list *)R_alloc((size_t)l->len + 1, sizeof(svir_list));
        const char **nm = (const char **)R_alloc((size_t)l->len + 1, sizeof(char *));
        SEXP names = Rf_getAttrib(x, R_NamesSymbol);
        for (R_xlen_t k = 0; k < l->len; k++) {
            fill(VECTOR_ELT(x, k), &elt[k]);
            nm[k] = Rf_isNull(names) ? NULL : CHAR(STRING_ELT(names, k));
        }
        l->elt = elt;
        l->names = nm;
        break;
    }
    default:
        l->type = SVIR_L_OTHER;
    }
}

svir_list *svir_r_list(SEXP x)
{
    svir_list *l = (svir_list *)R_alloc(1, sizeof(svir_list));
    fill(x, l);
    return l;
}

SEXP svir_r_from_out(const svir_out *o)
{
    switch (o->type) {
    case SVIR_O_REAL: {
        SEXP x = PROTECT(o->ncol < 0 ? Rf_allocVector(REALSXP, o->nrow)
                                     : Rf_allocMatrix(REALSXP, (int)o->nrow, (int)o->ncol));
        const R_xlen_t n = Rf_xlength(x);
        if (n > 0) memcpy(REAL(x), o->real, sizeof(double) * (size_t)n);
        UNPROTECT(1);
        return x;
    }
    case SVIR_O_INT: {
        SEXP x = PROTECT(Rf_allocVector(INTSXP, o->nrow));
        if (o->nrow > 0) memcpy(INTEGER(x), o->ints, sizeof(int) * (size_t)o->nrow);
        UNPROTECT(1);
        return x;
    }
    case SVIR_O_STR:
        return Rf_mkString(o->str);
    case SVIR_O_LIST: {
        SEXP x = PROTECT(Rf_allocVector(VECSXP, o->nchild));
        int named = 0;
        for (int k = 0; k < o->nchild; k++) {
            SET_VECTOR_ELT(x, k, svir_r_from_out(&o->child[k]));
            if (o->child[k].name[0]) named = 1;
        }
        if (named) {
            SEXP nms = PROTECT(Rf_allocVector(STRSXP, o->nchild));
            for (int k = 0; k < o->nchild; k++) SET_STRING_ELT(nms, k, Rf_mkChar(o->child[k].name));
            Rf_setAttrib(x, R_NamesSymbol, nms);
            UNPROTECT(1);
        }
        UNPROTECT(1);
        return x;
    }
    default:
        return R_NilValue;
    }
}

static SEXP real_vec(const double *x, R_xlen_t n)
{
    SEXP v = Rf_allocVector(REALSXP, n);
    if (n > 0) memcpy(REAL(v), x, sizeof(double) * (size_t)n);
    return v;
}

/* the path as list(step, time, gpar, lpar, anchor), one column per
 * snapshot, or NULL */
static SEXP path_to_r(const svir_result *r)
{
    if (r->npath <= 0) return R_NilValue;
    const int np = r->npath;
    const ptrdiff_t ngp = r->ngpar, nloc = r->nlpar;
    const char *nm[5] = {"step", "time", "gpar", "lpar", "anchor"};
    SEXP out = PROTECT(Rf_allocVector(VECSXP, 5));
    SEXP st = Rf_allocVector(REALSXP, np);
    SET_VECTOR_ELT(out, 0, st);
    for (int s = 0; s < np; s++) REAL(st)[s] = (double)r->path_step[s];
    SET_VECTOR_ELT(out, 1, real_vec(r->path_time, np));
    SEXP g = Rf_allocMatrix(REALSXP, (int)ngp, np);
    SET_VECTOR_ELT(out, 2, g);
    memcpy(REAL(g), r->path_gpar, sizeof(double) * (size_t)ngp * (size_t)np);
    SEXP l = Rf_allocMatrix(REALSXP, (int)nloc, np);
    SET_VECTOR_ELT(out, 3, l);
    memcpy(REAL(l), r->path_lpar, sizeof(double) * (size_t)nloc * (size_t)np);
    SEXP a = Rf_allocMatrix(REALSXP, (int)ngp, np);
    SET_VECTOR_ELT(out, 4, a);
    memcpy(REAL(a), r->path_anchor, sizeof(double) * (size_t)ngp * (size_t)np);
    SEXP nms = PROTECT(Rf_allocVector(STRSXP, 5));
    for (int k = 0; k < 5; k++) SET_STRING_ELT(nms, k, Rf_mkChar(nm[k]));
    Rf_setAttrib(out, R_NamesSymbol, nms);
    UNPROTECT(2);
    return out;
}

SEXP svir_r_result(const svir_result *r)
{
    enum { NCOMMON = 16 };
    const svir_out *x = r->extra;
    const int nx = x ? x->nchild : 0;
    SEXP out = PROTECT(Rf_allocVector(VECSXP, NCOMMON + nx));
    SEXP nms = PROTECT(Rf_allocVector(STRSXP, NCOMMON + nx));
    int k = 0;
#define PUT(name, val)                                                                         \
    do {                                                                                       \
        SET_VECTOR_ELT(out, k, val);                                                           \
        SET_STRING_ELT(nms, k, Rf_mkChar(name));                                               \
        k++;                                                                                   \
    } while (0)
    PUT("elbo", real_vec(r->trace, r->ntrace));
    PUT("steps", Rf_ScalarInteger((int)r->steps));
    PUT("stop_reason", Rf_mkString(svir_code_name(svir_core_code_table("stop"), r->stop_reason)));
    PUT("lr_final", Rf_ScalarReal(r->lr_final));
    PUT("n_rejected", Rf_ScalarInteger((int)r->n_rejected));
    PUT("elbo_final", Rf_ScalarReal(r->trace_final));
    SEXP lrs = Rf_allocVector(REALSXP, r->n_lr_steps);
    PUT("lr_steps", lrs);
    for (int i = 0; i < r->n_lr_steps; i++) REAL(lrs)[i] = (double)r->lr_steps[i];
    if (r->D > 0) {
        SEXP dr = Rf_allocMatrix(REALSXP, r->ndraws, (int)r->D);
        PUT("draws", dr);
        if (r->ndraws > 0) memcpy(REAL(dr), r->draws, sizeof(double) * (size_t)r->ndraws * (size_t)r->D);
        PUT("log_ratio", real_vec(r->log_ratio, r->ndraws));
    }
    if (r->gpar && r->lpar) {
        SEXP vp = Rf_allocVector(REALSXP, r->ngpar + r->nlpar);
        PUT("vpar", vp);
        memcpy(REAL(vp), r->gpar, sizeof(double) * (size_t)r->ngpar);
        if (r->nlpar > 0) memcpy(REAL(vp) + r->ngpar, r->lpar, sizeof(double) * (size_t)r->nlpar);
    }
    PUT("window_elbo", real_vec(r->window_trace, r->n_windows));
    SEXP ts = real_vec(r->time_split, SVIR_N_PHASES);
    PUT("time_split", ts);
    SEXP tsn = PROTECT(Rf_allocVector(STRSXP, SVIR_N_PHASES));
    for (int i = 0; i < SVIR_N_PHASES; i++)
        SET_STRING_ELT(tsn, i, Rf_mkChar(svir_code_name(svir_core_code_table("phase"), i)));
    Rf_setAttrib(ts, R_NamesSymbol, tsn);
    UNPROTECT(1);
    PUT("path", path_to_r(r));
    PUT("backend", Rf_mkString(svir_code_name(svir_core_code_table("backend"), r->backend)));
    PUT("backend_reason", Rf_mkString(r->backend_reason));
    for (int i = 0; i < nx; i++) PUT(x->child[i].name, svir_r_from_out(&x->child[i]));
#undef PUT
    SEXP res = PROTECT(Rf_lengthgets(out, k));
    SEXP rn = PROTECT(Rf_lengthgets(nms, k));
    Rf_setAttrib(res, R_NamesSymbol, rn);
    UNPROTECT(4);
    return res;
}

static void check_interrupt_fn(void *data)
{
    (void)data;
    R_CheckUserInterrupt();
}

/* R_ToplevelExec catches the interrupt's longjmp, so the engine unwinds itself. */
static int check_interrupt_cb(void *ctx)
{
    (void)ctx;
    return !R_ToplevelExec(check_interrupt_fn, NULL);
}

static void progress_eval(void *data)
{
    Rf_eval((SEXP)data, R_GlobalEnv);
}

static void progress_cb(void *ctx, long step, long max_steps, double obj)
{
    (void)max_steps;
    SEXP fun = (SEXP)ctx;
    SEXP s = PROTECT(Rf_ScalarReal((double)step));
    SEXP e = PROTECT(Rf_ScalarReal(obj));
    SEXP call = PROTECT(Rf_lang3(fun, s, e));
    R_ToplevelExec(progress_eval, call); /* errors in the bar must not unwind the engine */
    UNPROTECT(3);
}

void svir_r_callbacks(SEXP ctrl, svir_callbacks *cb)
{
    cb->interrupted = check_interrupt_cb;
    cb->progress = NULL;
    cb->ctx = NULL;
    SEXP prog = svir_r_get(ctrl, "progress_fun");
    if (Rf_isFunction(prog)) {
        cb->progress = progress_cb;
        cb->ctx = prog;
    }
}

static void holder_finalize(SEXP p)
{
    svir_r_holder *h = R_ExternalPtrAddr(p);
    if (h) {
        svir_result_free(&h->res);
        free(h);
    }
    R_ClearExternalPtr(p);
}

SEXP svir_r_holder_new(svir_r_holder **out)
{
    svir_r_holder *h = calloc(1, sizeof *h);
    if (!h) Rf_error("svir: out of memory");
    SEXP p = PROTECT(R_MakeExternalPtr(h, R_NilValue, R_NilValue));
    R_RegisterCFinalizerEx(p, holder_finalize, TRUE);
    UNPROTECT(1);
    *out = h;
    return p;
}

void svir_r_holder_done(SEXP p)
{
    holder_finalize(p);
}

void svir_r_check_real(SEXP x, R_xlen_t n, const char *what)
{
    if (TYPEOF(x) != REALSXP || Rf_xlength(x) != n)
        Rf_error("svir internal error: %s must be double of length %lld", what, (long long)n);
}

SEXP svir_r_get(SEXP list, const char *name)
{
    SEXP nms = Rf_getAttrib(list, R_NamesSymbol);
    if (Rf_isNull(nms)) return R_NilValue;
    for (R_xlen_t k = 0; k < Rf_xlength(list); k++)
        if (strcmp(CHAR(STRING_ELT(nms, k)), name) == 0) return VECTOR_ELT(list, k);
    return R_NilValue;
}
