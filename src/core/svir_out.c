/* The engine's result tree (core/svir_out.h). */
#include "core/svir_out.h"

#include <stdlib.h>
#include <string.h>

static svir_out *add(svir_out *parent, const char *name, int type)
{
    if (!parent) {
        svir_out *root = calloc(1, sizeof *root);
        if (!root) return NULL;
        root->type = type;
        strncpy(root->name, name ? name : "", sizeof root->name - 1);
        return root;
    }
    if (parent->type != SVIR_O_LIST) return NULL;
    if (parent->nchild == parent->cap) {
        const int cap = parent->cap ? 2 * parent->cap : 8;
        svir_out *c = realloc(parent->child, sizeof *c * (size_t)cap);
        if (!c) return NULL;
        parent->child = c;
        parent->cap = cap;
    }
    svir_out *o = &parent->child[parent->nchild++];
    memset(o, 0, sizeof *o);
    o->type = type;
    strncpy(o->name, name ? name : "", sizeof o->name - 1);
    return o;
}

svir_out *svir_out_list(svir_out *parent, const char *name)
{
    svir_out *o = add(parent, name, SVIR_O_LIST);
    if (o) o->ncol = -1;
    return o;
}

int svir_out_adopt(svir_out *parent, const char *name, double *x, ptrdiff_t nrow, ptrdiff_t ncol)
{
    svir_out *o = add(parent, name, SVIR_O_REAL);
    if (!o) {
        free(x);
        return 2;
    }
    o->nrow = nrow;
    o->ncol = ncol;
    o->real = x;
    return 0;
}

double *svir_out_real(svir_out *parent, const char *name, ptrdiff_t nrow, ptrdiff_t ncol)
{
    const size_t n = (size_t)(nrow > 0 ? nrow : 0) * (size_t)(ncol >= 0 ? ncol : 1);
    double *x = calloc(n + 1, sizeof(double));
    if (!x) return NULL;
    return svir_out_adopt(parent, name, x, nrow, ncol) ? NULL : x;
}

int svir_out_copy(svir_out *parent, const char *name, const double *x, ptrdiff_t nrow,
                  ptrdiff_t ncol)
{
    double *y = svir_out_real(parent, name, nrow, ncol);
    if (!y) return 2;
    const size_t n = (size_t)(nrow > 0 ? nrow : 0) * (size_t)(ncol >= 0 ? ncol : 1);
    if (n) memcpy(y, x, sizeof(double) * n);
    return 0;
}

int svir_out_num(svir_out *parent, const char *name, double v)
{
    double *y = svir_out_real(parent, name, 1, -1);
    if (!y) return 2;
    y[0] = v;
    return 0;
}

int *svir_out_ints(svir_out *parent, const char *name, ptrdiff_t n)
{
    int *x = calloc((size_t)(n > 0 ? n : 0) + 1, sizeof(int));
    if (!x) return NULL;
    svir_out *o = add(parent, name, SVIR_O_INT);
    if (!o) {
        free(x);
        return NULL;
    }
    o->nrow = n;
    o->ncol = -1;
    o->ints = x;
    return x;
}

int svir_out_int1(svir_out *parent, const char *name, int v)
{
    int *x = svir_out_ints(parent, name, 1);
    if (!x) return 2;
    x[0] = v;
    return 0;
}

int svir_out_str(svir_out *parent, const char *name, const char *s)
{
    char *c = malloc(strlen(s) + 1);
    if (!c) return 2;
    strcpy(c, s);
    svir_out *o = add(parent, name, SVIR_O_STR);
    if (!o) {
        free(c);
        return 2;
    }
    o->str = c;
    o->nrow = 1;
    o->ncol = -1;
    return 0;
}

int svir_out_null(svir_out *parent, const char *name)
{
    svir_out *o = add(parent, name, 0);
    return o ? 0 : 2;
}

svir_out *svir_out_find(svir_out *parent, const char *name)
{
    if (!parent || parent->type != SVIR_O_LIST) return NULL;
    for (int k = 0; k < parent->nchild; k++)
        if (strcmp(parent->child[k].name, name) == 0) return &parent->child[k];
    return NULL;
}

static void free_below(svir_out *o)
{
    for (int k = 0; k < o->nchild; k++) free_below(&o->child[k]);
    free(o->child);
    free(o->real);
    free(o->ints);
    free(o->str);
}

void svir_out_free(svir_out *root)
{
    if (!root) return;
    free_below(root);
    free(root);
}
