/* The Poisson-lognormal model as svir sees it: its state read from the
 * spec (pln_model.c) and its tables for the variational EM driver (full
 * batches: pln_model.c, pln_lbfgs.c; minibatches: pln_mb.c) and the QEM
 * driver (pln_qem.c, rank q). */
#ifndef SVIR_PLN_MODEL_H
#define SVIR_PLN_MODEL_H

#include <stddef.h>

#include "infer/svir_model.h"
#include "models/pln/pln.h"

typedef struct {
    svir_pln_data dat;        /* all rows: dense counts, or sparse (Y NULL) */
    const double *par0;       /* the variational fit's start [svir_pln_npar] */
    /* minibatches */
    const int *Rp, *Rj;       /* sparse counts by rows: row starts [n + 1], columns */
    const double *Rx;         /*   and values (NULL when the counts are dense) */
    int inner, fa_iters;      /* L-BFGS iterations of a batch's VE step; factor
                               * analysis iterations per M step (rank q) */
    double ve_tol, switch_tol;/* the VE step's tolerance; online epochs end
                               * when one raises the ELBO by less than
                               * switch_tol |ELBO| (pln_mb.c) */
    /* QEM (rank q, dense counts) */
    const double *lgy_entries; /* [n x p] log Y! */
    const double *qstart[7];  /* the start: B, W, psi, mu_u, su, mu_e, tau */
    double *colwork;          /* [3 p], owned */
} svir_pln_model;

extern const svir_model_def svir_pln_def;
extern const svir_vem_ops svir_pln_vem_cpu_ops, svir_pln_vem_cuda_ops;
extern const svir_qem_ops svir_pln_qem_ops;

/* pln_mb.c: the minibatch parts of svir_pln_vem_cpu_ops */
ptrdiff_t svir_pln_mb_units(const void *model);
void *svir_pln_mb_new(const void *model, const svir_control *c, svir_err *e);
void svir_pln_mb_free(void *work);
int svir_pln_mb_begin(void *work, double *elbo, svir_err *e);
int svir_pln_mb_step(void *work, const int *rows, int m, svir_err *e);
int svir_pln_mb_epoch(void *work, double *elbo, double *gain, svir_err *e);
int svir_pln_mb_finish(void *work, svir_result *res, svir_err *e);

#endif
