/* SVI engine: guides, ELBO gradient estimator, Adam, step-size schedule,
 * stopping rule, posterior draws. Plain C, no R API. */
#ifndef SVIR_ENGINE_H
#define SVIR_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "models/glmm/glmm.h"
#include "models/glmm/glmm_coupling.h"
#include "core/svir_adam.h"
#include "core/svir_guide.h"
#include "core/svir_loop.h"

#ifdef __cplusplus
extern "C" {
#endif

enum { SVIR_GUIDE_MEANFIELD = 0, SVIR_GUIDE_FULLRANK = 1 };
enum { SVIR_LR_CONSTANT = 0, SVIR_LR_PLATEAU = 1, SVIR_LR_DECAY = 2 };
enum {
    SVIR_STOP_CONVERGED = 0, SVIR_STOP_MAX_STEPS = 1,
    SVIR_STOP_DIVERGED = 2, SVIR_STOP_INTERRUPTED = 3
};

typedef struct {
    int guide;
    long max_steps;
    double lr;
    int lr_schedule;
    double lr_decay;
    int eval_every;         /* window of the stopping rule */
    double tol_rel_obj;
    int patience;           /* plateau: step-size reductions before stopping */
    int num_particles;
    int couple;             /* coupled guide: z | theta shifts with the fixed effects */
    int stl;                /* path-derivative ("sticking the landing") entropy gradients */
    ptrdiff_t batch_size;   /* 0 (or >= n): full batch */
    int threads;            /* >= 1 */
    int ndraws;
    double init_scale;
    uint64_t seed;
    const double *init_mu;  /* [D] or NULL */
    const double *init_sd;  /* [D] or NULL: the globals' starting sds (else init_scale) */
    int qem_K;              /* QEM: samples per latent */
    double qem_eta0, qem_kappa; /* QEM: the moving average's step min(1, eta0 (t + 1)^-kappa) */
    int path_every;         /* keep the variational parameters every path_every steps (0: never) */
    int qem_direct;         /* QEM's tree: evaluate every observation, no sums (tests) */
} svir_control;

typedef struct {
    int (*interrupted)(void *ctx);
    void (*progress)(void *ctx, long step, long max_steps, double elbo);
    void *ctx;
} svir_callbacks;

/* Variational parameters, flat:
 *   global: mu[D], then omega[D] (meanfield, log sd) or the packed row-major
 *           lower triangle of L (fullrank, D(D+1)/2, log diagonal);
 *   local:  per term, per group: m[q], packed C (q(q+1)/2, log diagonal). */
ptrdiff_t svir_n_global_par(const svir_model *m, int guide);

enum { SVIR_PHASE_DRAW, SVIR_PHASE_OBS, SVIR_PHASE_BACKWARD, SVIR_PHASE_UPDATE,
       SVIR_PHASE_POSTERIOR, SVIR_N_PHASES };

typedef struct {
    double *gpar, *lpar;    /* final variational parameters */
    double *elbo;           /* [max_steps] trace (NaN for rejected steps) */
    long steps;
    int stop_reason;
    double lr_final;
    long n_rejected;
    double elbo_final;      /* mean ELBO over the last window */
    long *lr_steps;         /* steps at which the step size was reduced */
    int n_lr_steps;
    int n_windows, max_windows;
    double *window_elbo;    /* mean ELBO of each window */
    int ndraws;
    double *draws;          /* [ndraws x D] column-major, internal units */
    double *log_ratio;      /* [ndraws] log p(y,theta,z) - log q(theta) - log q(z | theta) */
    double *shift;          /* [ndraws x nshift] per term's columns: b = A z0 - shift (coupled guide) */
    int nshift;             /* sum of q over terms */
    /* wall time (s) of the engine's phases, summed over the steps: the draws
     * of the globals and the random effects, the pass over the observations
     * (likelihood and its gradients), the backward pass to the variational
     * parameters, the update (Adam, window averages, stopping rule); then the
     * pass over the posterior draws kept in the fit */
    double time_split[SVIR_N_PHASES];
    /* the path (c->path_every > 0): snapshot s of the variational parameters
     * after path_step[s] steps, path_time[s] seconds into the loop; SVI's is
     * the average of the iterates since the previous snapshot, QEM's the
     * proposal. path_anchor: the parameters the coupled guide was anchored at
     * (svir_coupling_new's ref) */
    int npath, path_cap;
    long *path_step;
    double *path_time, *path_gpar, *path_lpar, *path_anchor; /* [npath x ngp or nloc] */
    char message[512];
} svir_result;

/* Fits; returns 0 on success (any stop reason) or an error status with a
 * message in res->message. res must be released with svir_result_free. */
int svir_fit(const svir_model *m, const svir_control *c, const svir_callbacks *cb,
             svir_result *res);
void svir_result_free(svir_result *res);

/* QEM (src/svir_qem.c; one grouping factor; with `cuda` the groups' part
 * on the device, src/cuda/svir_cuda_qem.cu): max_steps iterations
 * with c->qem_K samples per latent, the EMA step min(1, qem_eta0 (t + 1)^-
 * qem_kappa), svir_loop.h's stopping rule on the bound log P-hat (res->elbo
 * is its trace); then the posterior draws from the final proposal. Returns
 * 0, 1 (the model or K is not supported), 2 (out of memory) or 3 (a CUDA
 * error), with a message in res->message; release res with
 * svir_result_free. */
#define SVIR_QEM_KMAX 256
int svir_qem_fit(const svir_model *m, const svir_control *c, int cuda, const svir_callbacks *cb,
                 svir_result *res);

/* The path's arrays for c->path_every (none if 0); returns nonzero when out
 * of memory. svir_path_push appends one snapshot while there is room. */
int svir_path_alloc(svir_result *res, const svir_control *c, ptrdiff_t ngp, ptrdiff_t nloc);
void svir_path_push(svir_result *res, ptrdiff_t ngp, ptrdiff_t nloc, long step, double time,
                    const double *gpar, const double *lpar, const double *anchor);

/* The K-sample bound log P-hat over the tree globals -> groups ->
 * observations (src/svir_qem.c; one grouping factor) of the guide (gpar,
 * lpar), coupled as c->couple says with its anchor `anchor` (ignored
 * without coupling): reps independent estimates into out, from c->seed's
 * posterior-draw streams. Their mean is itself a lower bound on log p(y).
 * Returns 0, 1 (model or K not supported) or 2 (memory), with a message in
 * err. */
int svir_tree_bound(const svir_model *m, const svir_control *c, const double *gpar,
                    const double *lpar, const double *anchor, int K, int reps, double *out,
                    char *err, size_t errlen);

/* The posterior draws, shifts and PSIS log ratios of a fit that ended at
 * (gpar, lpar) into res, as svir_fit makes them (the coupled guide anchored
 * at `anchor`, or at gpar if NULL); adds their time to res->time_split.
 * Returns 0 or 2 (out of memory, with res->message). */
int svir_posterior_draws(const svir_model *m, const svir_control *c, const double *gpar,
                         const double *lpar, const double *anchor, svir_result *res);

/* wall-clock seconds (the engine's time split) */
double svir_wall_time(void);

/* The loop's results in res after it ended at `step` (steps, stop reason,
 * final step size, rejected steps, windows, step-size reductions, the final
 * ELBO); the traces are the driver's. */
void svir_loop_to_result(const svir_loop *L, long step, svir_result *res);

/* The starting point of a fit: gpar [svir_n_global_par], lpar [nloc]. */
void svir_init_params(const svir_model *m, const svir_control *c, double *gpar, double *lpar);

/* The coupled guide's constants of (m, c) with the reference point ref [D]
 * (NULL: zeros), as svir_elbo_grad sets them, in arrays owned by out
 * (release with svir_coupling_free); *ns gets the number of span columns.
 * For the CUDA backend. Returns 0, or 2 when out of memory. */
int svir_coupling_new(const svir_model *m, const svir_control *c, const double *ref,
                      svir_coupling *out, int *ns);
void svir_coupling_free(svir_coupling *cp);

/* One-step ELBO estimate and its exact gradient at the given variational
 * parameters, with the noise and minibatch of step `step` (for gradient tests).
 * grad has n_global_par + nloc entries; entries of locals absent from the
 * minibatch are zero. */
int svir_elbo_grad(const svir_model *m, const svir_control *c, const double *gpar,
                   const double *lpar, long step, double *elbo, double *grad,
                   char *err, size_t errlen);


#ifdef __cplusplus
}
#endif

#endif
