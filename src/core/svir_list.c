/* Reading the spec and settings views (core/svir_list.h). */
#include "core/svir_list.h"

#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int svir_err_set(svir_err *e, int status, const char *fmt, ...)
{
    if (e && e->status == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
        e->status = status;
    }
    return status;
}

const svir_list *svir_list_get(const svir_list *l, const char *name)
{
    if (!l || l->type != SVIR_L_LIST || !l->names) return NULL;
    for (ptrdiff_t k = 0; k < l->len; k++)
        if (l->names[k] && strcmp(l->names[k], name) == 0) return &l->elt[k];
    return NULL;
}

int svir_list_absent(const svir_list *l, const char *name)
{
    const svir_list *x = svir_list_get(l, name);
    return !x || x->type == SVIR_L_NULL;
}

const double *svir_list_reals(const svir_list *l, const char *name, ptrdiff_t len, int optional,
                              svir_err *e)
{
    const svir_list *x = svir_list_get(l, name);
    if (!x || x->type == SVIR_L_NULL) {
        if (!optional) svir_err_set(e, 1, "svir internal error: spec$%s is missing", name);
        return NULL;
    }
    if (x->type != SVIR_L_REAL) {
        svir_err_set(e, 1, "svir internal error: spec$%s must be double", name);
        return NULL;
    }
    if (len >= 0 && x->len != len) {
        svir_err_set(e, 1, "svir internal error: spec$%s has length %lld, expected %lld", name,
                     (long long)x->len, (long long)len);
        return NULL;
    }
    return x->real;
}

const int *svir_list_ints(const svir_list *l, const char *name, ptrdiff_t len, int optional,
                          svir_err *e)
{
    const svir_list *x = svir_list_get(l, name);
    if (!x || x->type == SVIR_L_NULL) {
        if (!optional) svir_err_set(e, 1, "svir internal error: spec$%s is missing", name);
        return NULL;
    }
    if (x->type != SVIR_L_INT) {
        svir_err_set(e, 1, "svir internal error: spec$%s must be integer", name);
        return NULL;
    }
    if (len >= 0 && x->len != len) {
        svir_err_set(e, 1, "svir internal error: spec$%s has length %lld, expected %lld", name,
                     (long long)x->len, (long long)len);
        return NULL;
    }
    return x->ints;
}

double svir_list_num(const svir_list *l, const char *name, double dflt)
{
    const svir_list *x = svir_list_get(l, name);
    if (!x || x->type == SVIR_L_NULL || x->len < 1) return dflt;
    switch (x->type) {
    case SVIR_L_REAL: return x->real[0];
    case SVIR_L_INT:
    case SVIR_L_LGL: return x->ints[0] == INT_MIN ? NAN : (double)x->ints[0];
    default: return NAN;
    }
}

int svir_list_int(const svir_list *l, const char *name, int dflt)
{
    const svir_list *x = svir_list_get(l, name);
    if (!x || x->type == SVIR_L_NULL || x->len < 1) return dflt;
    switch (x->type) {
    case SVIR_L_REAL: {
        const double v = x->real[0];
        return isnan(v) || v >= 2147483648.0 || v <= -2147483649.0 ? INT_MIN : (int)v;
    }
    case SVIR_L_INT:
    case SVIR_L_LGL: return x->ints[0];
    default: return INT_MIN;
    }
}

const char *svir_list_str(const svir_list *l, const char *name, const char *dflt)
{
    const svir_list *x = svir_list_get(l, name);
    if (!x || x->type != SVIR_L_STR || x->len < 1 || !x->str[0]) return dflt;
    return x->str[0];
}

int svir_list_is(const svir_list *l, const char *name, const char *s)
{
    const char *v = svir_list_str(l, name, NULL);
    return v && strcmp(v, s) == 0;
}

int svir_list_sparse(const svir_list *l, const char *pn, const char *in, const char *xn,
                     int nouter, int ninner, const int **ptr, const int **idx, const double **x,
                     svir_err *e)
{
    const int *P = svir_list_ints(l, pn, (ptrdiff_t)nouter + 1, 0, e);
    if (!P) return e->status;
    const ptrdiff_t nz = P[nouter];
    const int *I = svir_list_ints(l, in, nz, 0, e);
    const double *X = svir_list_reals(l, xn, nz, 0, e);
    if (e->status) return e->status;
    for (int o = 0; o < nouter; o++)
        if (P[o] > P[o + 1]) return svir_err_set(e, 1, "svir internal error: bad sparse pointers %s", pn);
    for (ptrdiff_t z = 0; z < nz; z++)
        if (I[z] < 0 || I[z] >= ninner) return svir_err_set(e, 1, "svir internal error: bad sparse indices %s", in);
    *ptr = P;
    *idx = I;
    *x = X;
    return 0;
}
