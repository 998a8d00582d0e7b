/* What crosses from R into the engine: a read-only view of a named list
 * (the spec and the settings of a fit), built by the glue from R's objects
 * without copying their arrays, and read by the drivers and the models
 * with no R API. The view lives as long as the .Call that made it. */
#ifndef SVIR_LIST_H
#define SVIR_LIST_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { SVIR_L_NULL = 0, SVIR_L_REAL, SVIR_L_INT, SVIR_L_LGL, SVIR_L_STR, SVIR_L_LIST,
       SVIR_L_OTHER };

typedef struct svir_list svir_list;
struct svir_list {
    int type;             /* SVIR_L_* */
    ptrdiff_t len;        /* elements, or children of a list */
    int nrow, ncol;       /* a matrix's dimensions; ncol = -1 when not a matrix */
    const double *real;   /* SVIR_L_REAL */
    const int *ints;      /* SVIR_L_INT, SVIR_L_LGL (NA: INT_MIN) */
    const char *const *str; /* SVIR_L_STR */
    const char *const *names; /* SVIR_L_LIST: the children's names (NULL: unnamed) */
    const svir_list *elt; /* SVIR_L_LIST: the children */
};

/* An error's status and message, filled by the first failure. */
typedef struct {
    int status;           /* 0 ok, 1 bad input or unsupported, 2 out of memory, 3 device */
    char msg[512];
} svir_err;

/* sets e (first error wins) and returns status */
int svir_err_set(svir_err *e, int status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* element `name` of list l, or NULL when l is not a list or has none */
const svir_list *svir_list_get(const svir_list *l, const char *name);
/* 1 when element `name` is absent or NULL */
int svir_list_absent(const svir_list *l, const char *name);

/* A double array of length len (len < 0: any), or NULL when absent and
 * optional; a wrong type or length is an internal error (e). */
const double *svir_list_reals(const svir_list *l, const char *name, ptrdiff_t len, int optional,
                              svir_err *e);
/* An integer array, the same way. */
const int *svir_list_ints(const svir_list *l, const char *name, ptrdiff_t len, int optional,
                          svir_err *e);
/* A compressed sparse matrix's slots: nouter + 1 pointers (name pn), then
 * as many indices in [0, ninner) (name in) and values (name xn), checked;
 * 0, or a status with e. (A dgCMatrix's p, i, x: columns of rows; its
 * transpose's: rows of columns.) */
int svir_list_sparse(const svir_list *l, const char *pn, const char *in, const char *xn,
                     int nouter, int ninner, const int **ptr, const int **idx, const double **x,
                     svir_err *e);
/* A number (double, integer or logical scalar), or dflt when absent. */
double svir_list_num(const svir_list *l, const char *name, double dflt);
/* An integer scalar (a double is truncated), or dflt when absent. */
int svir_list_int(const svir_list *l, const char *name, int dflt);
/* The first string of element `name`, or dflt when absent or not a string. */
const char *svir_list_str(const svir_list *l, const char *name, const char *dflt);
/* 1 when element `name` is the string s */
int svir_list_is(const svir_list *l, const char *name, const char *s);

#ifdef __cplusplus
}
#endif

#endif
