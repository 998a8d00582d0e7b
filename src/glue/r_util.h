/* The glue's tools: R objects to the engine's views (core/svir_list.h) and
 * the engine's results (core/svir_result.h, core/svir_out.h) back to R
 * objects, the host callbacks (interrupts, the progress bar), and a holder
 * that frees engine memory if R unwinds. The only layer with R headers. */
#ifndef SVIR_R_UTIL_H
#define SVIR_R_UTIL_H

#define R_NO_REMAP
#include <R.h>
#include <Rinternals.h>

#include "core/svir_list.h"
#include "core/svir_out.h"
#include "core/svir_result.h"

/* A view of x, valid for the rest of the .Call (R_alloc). */
svir_list *svir_r_list(SEXP x);
/* An R object from o (unprotected). */
SEXP svir_r_from_out(const svir_out *o);
/* The result as the engine list R reads: the common fields (elbo, steps,
 * stop_reason, lr_final, n_rejected, elbo_final, lr_steps, draws,
 * log_ratio, vpar, window_elbo, time_split, path, backend,
 * backend_reason) and then the model's extra outputs (unprotected). */
SEXP svir_r_result(const svir_result *r);

/* callbacks: R_CheckUserInterrupt under R_ToplevelExec (the engine unwinds
 * itself), and ctrl$progress_fun(step, objective) when it is a function */
void svir_r_callbacks(SEXP ctrl, svir_callbacks *cb);

/* A result held by an external pointer whose finalizer frees it, so that
 * an R error while the result is turned into R objects leaks nothing. */
typedef struct {
    svir_result res;
} svir_r_holder;
SEXP svir_r_holder_new(svir_r_holder **out);
void svir_r_holder_done(SEXP p);

/* x[[name]], or R_NilValue */
SEXP svir_r_get(SEXP list, const char *name);

/* an internal error unless x is a double vector of length n */
void svir_r_check_real(SEXP x, R_xlen_t n, const char *what);

#endif
