/* What crosses from the engine back to R: a tree of named arrays (vectors,
 * matrices, strings, lists of them), made by the drivers and the models
 * with no R API and turned into an R list by the glue, which knows no
 * model. Every array is the tree's own (malloc); svir_out_free frees the
 * whole tree. */
#ifndef SVIR_OUT_H
#define SVIR_OUT_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { SVIR_O_REAL = 1, SVIR_O_INT, SVIR_O_STR, SVIR_O_LIST };

typedef struct svir_out svir_out;
struct svir_out {
    char name[48];
    int type;             /* SVIR_O_* */
    ptrdiff_t nrow, ncol; /* ncol < 0: a vector of nrow elements */
    double *real;
    int *ints;
    char *str;
    const char *const *elt_names; /* optional names of a vector's elements (static strings) */
    svir_out *child;      /* a list's elements, in order */
    int nchild, cap;
};

/* A new list element `name` of parent (a list), or the root when parent is
 * NULL; NULL when out of memory. */
svir_out *svir_out_list(svir_out *parent, const char *name);
/* A double vector (ncol < 0) or nrow x ncol matrix `name` in parent,
 * zero-filled; its data, or NULL when out of memory. */
double *svir_out_real(svir_out *parent, const char *name, ptrdiff_t nrow, ptrdiff_t ncol);
/* x [nrow (x ncol)], malloc'd by the caller, handed to the tree (no copy:
 * for large results); 0, or 2 when out of memory (x is then freed). */
int svir_out_adopt(svir_out *parent, const char *name, double *x, ptrdiff_t nrow, ptrdiff_t ncol);
/* A copy of x [nrow (x ncol)] as svir_out_real; 0, or 2 when out of memory. */
int svir_out_copy(svir_out *parent, const char *name, const double *x, ptrdiff_t nrow,
                  ptrdiff_t ncol);
/* A double or integer scalar; 0 or 2. */
int svir_out_num(svir_out *parent, const char *name, double v);
int svir_out_int1(svir_out *parent, const char *name, int v);
/* An integer vector, zero-filled; its data or NULL. */
int *svir_out_ints(svir_out *parent, const char *name, ptrdiff_t n);
/* A string; 0 or 2. */
int svir_out_str(svir_out *parent, const char *name, const char *s);
/* An explicit NULL element; 0 or 2. */
int svir_out_null(svir_out *parent, const char *name);
/* the element `name` of a list, or NULL */
svir_out *svir_out_find(svir_out *parent, const char *name);
/* frees the tree below root and root itself */
void svir_out_free(svir_out *root);

#ifdef __cplusplus
}
#endif

#endif
