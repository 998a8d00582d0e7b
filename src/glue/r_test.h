/* The shared helper of the test-only entry points (glue/r_test_*.c) and
 * of r_laplace.c: a model
 * read from a spec, held by an external pointer whose finalizer frees it
 * (so that Rf_error leaks nothing). */
#ifndef SVIR_R_TEST_H
#define SVIR_R_TEST_H

#include "glue/r_util.h"
#include "infer/svir_model.h"

/* The model of def from spec, with the settings ctrl (R_NilValue: the
 * defaults) read into *c (or not, if c is NULL) and their default threads
 * set; *hp is the holder, returned protected (the caller's UNPROTECT count
 * includes it). */
void *svir_r_model(const svir_model_def *def, SEXP spec, SEXP ctrl, svir_control *c, SEXP *hp);
/* frees the model now */
void svir_r_model_done(SEXP hp);
/* out[k] = val, named name */
void svir_r_set(SEXP out, SEXP names, int k, const char *name, SEXP val);

#endif
