/* The seam between the inference drivers and the models: a model is a
 * table of sizes and functions (svir_model_def), and the drivers (SVI,
 * QEM, variational EM; infer/) call a model only through it. The drivers
 * never name a model; the models never run a loop. See dev/ARCHITECTURE.md.
 *
 * A model's state is opaque to the drivers (`void *model`, made by its
 * read() from the spec); each driver's ops make a per-fit work area from
 * it (`void *work`). */
#ifndef SVIR_MODEL_H
#define SVIR_MODEL_H

#include <stddef.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "core/svir_codes.h"
#include "core/svir_lbfgs.h"
#include "core/svir_list.h"
#include "core/svir_result.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- SVI (infer/svir_svi.c): Adam on the variational parameters -------
 * gpar: the guide over the globals (core/svir_guide.h), lpar: the locals,
 * both in the model's layout. */
typedef struct {
    ptrdiff_t (*n_global)(const void *model, const svir_control *c);
    ptrdiff_t (*n_local)(const void *model);
    /* the fit's work, or NULL when out of memory */
    void *(*work_new)(const void *model, const svir_control *c);
    void (*work_free)(void *work);
    /* threads for the driver's loops over the parameters */
    int (*threads)(const void *work);
    /* the starting point */
    void (*init)(const void *model, const svir_control *c, double *gpar, double *lpar);
    /* anchor the guide at the means gpar (may be NULL); reanchor moves the
     * anchor to src, keeping each of the nsets parameter sets the same
     * distribution, and returns 1 when it moved anything */
    void (*anchor)(void *work, const double *gpar);
    int (*reanchor)(void *work, const double *src, int nsets, double *const *gpars,
                    double *const *lpars);
    /* the minibatch of step `step`: the local parameters it touches as
     * *nspans spans (off, len), or *nspans = -1 for all of them */
    void (*batch)(void *work, long step, ptrdiff_t *nspans, const ptrdiff_t **off,
                  const ptrdiff_t **len);
    /* the ELBO estimate of step `step` at (gpar, lpar) with its gradient
     * (ggrad; lgrad on the batch's spans), the noise from the step's
     * streams; the phases' wall time added to tsplit */
    double (*estimate)(void *work, long step, const double *gpar, const double *lpar,
                       double *ggrad, double *lgrad, double *tsplit);
    /* the posterior draws kept in the fit, into res; 0 or 2 */
    int (*draws)(void *work, const double *gpar, const double *lpar, svir_result *res);
    /* the held-out rows' loss at the guide gpar (their mean negative log
     * predictive density), or NaN when the fit holds none out; NULL for
     * models without. At each window's end the driver evaluates it at the
     * window's average, keeps the best, stops after `patience` windows
     * without improvement ("early_stop"), and returns the best. */
    double (*validate)(void *work, const double *gpar);
} svir_svi_ops;

/* ---- QEM (infer/svir_qem.c): importance weighting and moment matching --
 * The driver runs the loop, the stopping rule, the moving-average step and
 * the callbacks; the model draws, weighs and matches. */
typedef struct {
    /* the fit's work with its starting proposal; 0, or a status with e */
    int (*work_new)(const void *model, const svir_control *c, void **work, svir_err *e);
    void (*work_free)(void *work);
    /* the sizes of the proposal's two blocks (for the path) */
    void (*sizes)(const void *work, ptrdiff_t *ngp, ptrdiff_t *nloc);
    /* iteration t's draws and log factors: *logp = log P-hat (the traced
     * bound; not finite: the iteration is rejected); 0 or a status */
    int (*estep)(void *work, long t, double *logp, svir_err *e);
    /* moment matching of iteration t with the moving average's step et */
    int (*mstep)(void *work, long t, double et, svir_err *e);
    /* the current proposal for the path (may be NULL): gpar, lpar, anchor */
    int (*snapshot)(void *work, svir_result *res, long step, double time, svir_err *e);
    /* the final proposal, posterior draws and outputs into res */
    int (*finish)(void *work, svir_result *res, svir_err *e);
} svir_qem_ops;

/* ---- variational EM (infer/svir_vem.c) ---------------------------------
 * Full batches: L-BFGS (core/svir_lbfgs.h) on the model's objective, the
 * closed-form steps inside it. Minibatches: streamed variational EM
 * over units (rows) in a new order each epoch. */
typedef struct {
    /* the full-batch fit's state with its problem *pb on the backend's
     * vector space, started at the model's start; NULL with e set */
    void *(*fit_new)(const void *model, const svir_control *c, svir_lbfgs_problem **pb,
                     svir_err *e);
    void (*fit_free)(void *fit);
    /* after the fit (the problem at its final point): the outputs into res */
    int (*fit_finish)(void *fit, svir_result *res, svir_err *e);
    /* minibatches (NULL: none): units, the work, and per batch: refit its
     * units' locals with the globals held, add their statistics to the
     * epoch's sums, update the globals (or hold them through the epoch);
     * the ELBO from the sums */
    ptrdiff_t (*n_units)(const void *model);
    void *(*mb_new)(const void *model, const svir_control *c, svir_err *e);
    void (*mb_free)(void *work);
    /* the sums from all units and the first globals; *elbo */
    int (*mb_begin)(void *work, double *elbo, svir_err *e);
    /* one minibatch of m units (sorted) */
    int (*mb_step)(void *work, const int *units, int m, svir_err *e);
    /* the epoch's end: the globals from the epoch's sums, *elbo, and
     * *gain: what the fit would still gain by the model's reckoning, for
     * the stopping rule (it stops when gain < tol_rel_obj |elbo|), or NAN
     * after an epoch that cannot tell */
    int (*mb_epoch)(void *work, double *elbo, double *gain, svir_err *e);
    int (*mb_finish)(void *work, svir_result *res, svir_err *e);
} svir_vem_ops;

/* ---- a model ------------------------------------------------------------ */

/* One way to fit: a method on a backend, for full batches and or
 * minibatches. `run` is the driver bound to the model's ops (or, for a
 * backend that runs a whole fit itself, that fit). */
typedef struct {
    int method;               /* SVIR_METHOD_* */
    int backend;              /* SVIR_BACKEND_* */
    int full, mini;           /* takes full batches, minibatches */
    int (*run)(void *model, const svir_control *c, const svir_callbacks *cb, svir_result *res);
} svir_impl;

typedef struct {
    const char *name;         /* spec$model */
    /* the model from the spec and the settings (read, and as R gave them
     * for the model's own; views into the caller's memory, which outlives
     * the model); 0, or a status with e */
    int (*read)(const svir_list *spec, const svir_list *ctrl, const svir_control *c,
                void **model, svir_err *e);
    void (*free)(void *model);
    /* what a fit of this model costs per step, for the backend's rule and
     * the default threads (observations, or counts) */
    double (*size)(const void *model, const svir_control *c);
    /* the default threads (c->threads <= 0) */
    int (*threads)(const void *model, const svir_control *c);
    /* the model's outputs after a fit, into res->extra */
    int (*outputs)(const void *model, const svir_control *c, svir_result *res, svir_err *e);
    const svir_impl *impls;
    int nimpls;
    /* the model's own code lists, for R/enum.R */
    const svir_code_table *codes;
    int ncodes;
    /* the user's name of the model in messages ("pln()") */
    const char *label;
    /* what of the fit of spec the CUDA code lacks, as the start of a
     * sentence ("Zero inflation runs"), or NULL (also as the function):
     * the backend layer then refuses backend = "cuda" */
    const char *(*cpu_only)(const svir_list *spec);
    /* backend = "auto" picks the device from this size (size()'s units) on,
     * where it was measured to be faster (backend/svir_backend.h); 0: never,
     * the model has no measured rule */
    double auto_cuda_min;
} svir_model_def;

/* the registry: one line per model (models/registry.c) */
extern const svir_model_def *const svir_models[];
extern const int svir_n_models;
const svir_model_def *svir_model_find(const char *name);

/* A model's default threads (its threads() in the table): one per
 * `per_thread` units of `work`, at least 1, at most OpenMP's. */
int svir_default_threads(double work, double per_thread);

/* the calling OpenMP thread's number (0 without OpenMP) */
static inline int svir_thread_num(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* The drivers, for the models' impl tables. */
int svir_svi_run(const svir_svi_ops *ops, void *model, const svir_control *c,
                 const svir_callbacks *cb, svir_result *res);
int svir_qem_run(const svir_qem_ops *ops, void *model, const svir_control *c,
                 const svir_callbacks *cb, svir_result *res);
int svir_vem_run(const svir_vem_ops *ops, void *model, const svir_control *c,
                 const svir_callbacks *cb, svir_result *res);

/* A whole fit: the model read from spec, the backend chosen
 * (backend/svir_backend.h), the fit run, the outputs made. res must be
 * released with svir_result_free; returns 0 or a status with a message in
 * res->message. */
int svir_fit_spec(const svir_list *spec, const svir_list *ctrl, const svir_callbacks *cb,
                  svir_result *res);

#ifdef __cplusplus
}
#endif

#endif
