/* L-BFGS for every model and backend: one algorithm (core/svir_lbfgs.c)
 * over a vector space whose few passes a backend implements (the CPU's in
 * core/svir_vec_cpu.c, a device's in its CUDA code), and a problem whose
 * objective, preconditioner and start a model supplies. It maximises J.
 *
 * The two-loop recursion runs in its Gram form: the dots s_i' y_l are kept
 * in a memory x memory matrix, updated from dots the passes compute anyway,
 * so that an iteration makes five passes over the parameters: (1) s_i' g
 * for every pair; (2) the preconditioner on q = -g - sum alpha_i y_i,
 * formed on the fly, with the y_i' (H0 q) in the same pass; (3) dir = H0 q
 * + sum (alpha_i - beta_i) s_i with the slope g' dir, its largest entry
 * and dir' dir; (4) the candidate x + t dir and its evaluation; (5) the new
 * y = g1 - g with y' y and s' y. The initial inverse Hessian H0 is the
 * model's, re-evaluated at every iterate; a backtracking (Armijo) line
 * search follows, and a step moves no entry by more than its cap. It stops
 * when an iteration raises J by less than tol |J|, when the line search
 * fails twice in a row (the second time from the preconditioned steepest
 * direction), after maxit iterations, or when the host interrupts. */
#ifndef SVIR_LBFGS_H
#define SVIR_LBFGS_H

#include <stddef.h>

#include "core/svir_list.h"
#include "core/svir_result.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SVIR_LBFGS_MAXMEM 8

/* The passes over vectors of n doubles (host or device memory); each
 * returns 0 or a status with e. Reductions run in a fixed order, so the
 * result does not depend on threads. */
typedef struct {
    void *ctx;
    ptrdiff_t n;
    double *(*alloc)(void *ctx);
    void (*free)(void *ctx, double *v);
    /* out[l] = vs[l]' x, l < nv */
    int (*dots)(void *ctx, int nv, double *const *vs, const double *x, double *out, svir_err *e);
    /* dir <- -(dir + sum_l cf[l] S[l]); *slope = -g' dir (g is J's
     * gradient: the slope of -J along dir); *big = the largest
     * |dir_k| / cap_k (cap_lo below split, cap_hi from it); *dd = dir' dir */
    int (*direction)(void *ctx, double *dir, int nm, const double *cf, double *const *S,
                     const double *g, ptrdiff_t split, double cap_lo, double cap_hi,
                     double *slope, double *big, double *dd, svir_err *e);
    /* cand = x + t dir */
    int (*step)(void *ctx, double *cand, const double *x, double t, const double *dir,
                svir_err *e);
    /* y = g - g1; *yy = y' y; *dg1 = -dir' g1 */
    int (*ydiff)(void *ctx, double *y, const double *g, const double *g1, const double *dir,
                 double *yy, double *dg1, svir_err *e);
    /* v *= t */
    int (*scale)(void *ctx, double *v, double t, svir_err *e);
    /* dst = src */
    int (*copy)(void *ctx, double *dst, const double *src, svir_err *e);
} svir_vecspace;

/* The CPU's vector space over n doubles with T threads (chunked,
 * deterministic reductions); svir_vec_cpu_free releases it. */
svir_vecspace *svir_vec_cpu_new(ptrdiff_t n, int threads);
void svir_vec_cpu_free(svir_vecspace *vs);

/* A problem: the model's objective J on the vector space. */
typedef struct svir_lbfgs_problem svir_lbfgs_problem;
struct svir_lbfgs_problem {
    const svir_vecspace *vs;
    void *ctx;                /* the model's */
    double *x;                /* the start, then the final point (vector space memory) */
    /* J and its gradient g at x, the evaluation's work kept in slot (0 or
     * 1); returns 0, 1 (J cannot be evaluated there: the line search
     * shortens its step) or a larger status (an error that ends the fit) */
    int (*eval)(void *ctx, int slot, const double *x, double *J, double *g, svir_err *e);
    /* out = H0 v, v = gsign g - sum_{l < nm} alpha_l Y[l], at slot's
     * point; ydot[l] = Y[l]' out */
    int (*precond)(void *ctx, int slot, const double *g, double gsign, int nm,
                   const double *alpha, double *const *Y, double *out, double *ydot,
                   svir_err *e);
    /* optional: a better start x from slot's evaluation (x is evaluated
     * again after it) */
    int (*start)(void *ctx, int slot, double *x, svir_err *e);
    ptrdiff_t cap_split;      /* a step moves no entry below cap_split by more */
    double cap_lo, cap_hi;    /* than cap_lo, no other by more than cap_hi */
    int memory;               /* pairs kept, at most SVIR_LBFGS_MAXMEM */
    void (*destroy)(svir_lbfgs_problem *pb); /* frees the problem (its owner's) */
};

/* Maximises pb's J from pb->x (updated to the final point, evaluated last
 * in slot *slot): at most maxit iterations; *J, *iters, trace [maxit] (or
 * NULL) the objective after each, *stop the reason (SVIR_STOP_*). The gate
 * (or NULL) is asked every iteration. Returns 0 or a status with e. */
int svir_lbfgs_run(svir_lbfgs_problem *pb, int maxit, double tol, svir_gate *gate, double *J,
                   int *iters, double *trace, int *stop, int *slot, svir_err *e);

#ifdef __cplusplus
}
#endif

#endif
