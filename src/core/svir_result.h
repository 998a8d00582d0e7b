/* What every fit is made of, whatever its model, driver and backend: the
 * settings (svir_control), the host's callbacks (svir_callbacks: progress
 * and interrupts), and the result (svir_result: the objective's trace, why
 * and when the fit stopped, the time, the backend and why, the posterior
 * draws where the model has them, the model's own outputs). No R API. */
#ifndef SVIR_RESULT_H
#define SVIR_RESULT_H

#include <stddef.h>
#include <stdint.h>

#include "core/svir_codes.h"
#include "core/svir_list.h"
#include "core/svir_out.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The settings of a fit (svi_control() and svi_fit()'s arguments), read
 * from the list R passes (svir_control_read). A model's own settings are
 * in its spec. */
typedef struct {
    int method;             /* SVIR_METHOD_* */
    int backend_req;        /* -1 auto, or SVIR_BACKEND_* as requested */
    int guide;              /* SVIR_GUIDE_* */
    long max_steps;
    double lr;
    int lr_schedule;        /* SVIR_LR_* */
    double lr_decay;
    int eval_every;         /* window of the stopping rule */
    double tol_rel_obj;
    int patience;           /* plateau: step-size reductions before stopping */
    int rule;               /* SVIR_RULE_*: QEM's stopping rule */
    long min_steps;         /* the rolling rule stops no sooner */
    int num_particles;
    int stl;                /* path-derivative ("sticking the landing") entropy gradients */
    ptrdiff_t batch_size;   /* 0 (or >= n): full batch */
    int threads;            /* >= 1 once the model has set its default */
    int threads_draws;      /* the posterior draws' threads (>= 1 once set): the
                             * draws do not depend on them */
    int ndraws;
    double init_scale;
    uint64_t seed;
    int qem_K;              /* QEM: samples per latent */
    double qem_eta0, qem_kappa; /* QEM: the moving average's step min(1, eta0 (t + 1)^-kappa) */
    int path_every;         /* keep the approximation every path_every steps (0: never) */
    int keep_lpar;          /* return the local parameters as they are ("lpar"), for a
                             * warm start */
} svir_control;

/* Reads the settings; threads <= 0 is left for the model's default.
 * Returns 0, or 1 with a message in e. */
int svir_control_read(const svir_list *ctrl, svir_control *c, svir_err *e);
/* QEM's moving-average step at iteration t */
double svir_qem_step(const svir_control *c, long t);

/* the status a driver returns when the host interrupted the fit (nothing
 * is returned then) */
#define SVIR_INTERRUPTED 4

/* The host's callbacks: interrupted() is asked at least every second of
 * work and ends the fit (SVIR_STOP_INTERRUPTED, nothing returned);
 * progress() reports the step and the objective. Both may be NULL. */
typedef struct {
    int (*interrupted)(void *ctx);
    void (*progress)(void *ctx, long step, long max_steps, double objective);
    void *ctx;
} svir_callbacks;

/* A driver's gate on the host: at most every `every` steps, and at least
 * once per second of wall time, asks cb->interrupted. */
typedef struct {
    const svir_callbacks *cb;
    double last;            /* wall time of the last check */
} svir_gate;
void svir_gate_init(svir_gate *g, const svir_callbacks *cb);
/* 1 when the host asked to stop */
int svir_gate_check(svir_gate *g, long step, long every);
/* Polls from inside a model's long loops (per group, per block of rows;
 * any thread): the running fit's gate asks the host at most every 0.25 s,
 * from the thread that started the fit, and once the host asked to stop
 * every poll returns 1, so that the loop skips the rest of its work. The
 * drivers' next svir_gate_check then ends the fit, and svir_fit_spec
 * returns SVIR_INTERRUPTED for a fit whose host asked to stop, whatever
 * the driver made of the skipped work. */
int svir_poll(void);
/* 1 when the host asked the running fit to stop */
int svir_interrupt_pending(void);
/* the fit is over: polls no longer reach the gate */
void svir_gate_release(void);
/* the current gate (NULL: none), and setting it back: each driver
 * (svir_svi_run, svir_qem_run, svir_vem_run) restores on return what it
 * found, so that no gate outlives the driver's stack frame that holds it
 * (a poll after a driver called outside svir_fit, as tools/gpucheck does,
 * read a dead frame's gate before; issue 19) */
svir_gate *svir_gate_current(void);
void svir_gate_restore(svir_gate *g);
/* reports progress every `every` steps (and at step 0) */
void svir_gate_progress(const svir_gate *g, long step, long every, long max_steps, double obj);

typedef struct {
    /* the objective per step (ELBO, or log P-hat for QEM; NaN for rejected
     * steps), and the loop's record */
    double *trace;
    long ntrace;            /* its length: steps, or epochs of minibatches */
    long steps;
    int stop_reason;        /* SVIR_STOP_* */
    double lr_final;
    long n_rejected;
    double trace_final;     /* mean objective over the last window */
    long *lr_steps;         /* steps at which the step size was reduced */
    int n_lr_steps;
    int n_windows, max_windows;
    double *window_trace;   /* mean objective of each window */
    /* the final parameters, in the driver's layout */
    double *gpar, *lpar;
    ptrdiff_t ngpar, nlpar;
    /* posterior draws of the D globals [ndraws x D], column-major, in the
     * model's internal units; log_ratio [ndraws] the PSIS log ratios; each
     * draw's naux auxiliary values [ndraws x naux] (the model's) */
    int ndraws;
    ptrdiff_t D;
    int naux;
    double *draws, *log_ratio, *draw_aux;
    /* wall time (s) of the phases of the steps (SVIR_PHASE_*; NaN where a
     * driver has no such phase) and of the whole driver */
    double time_split[SVIR_N_PHASES];
    double seconds;
    /* the path (c->path_every > 0): snapshot s of the approximation after
     * path_step[s] steps, path_time[s] seconds into the loop; path_anchor:
     * the globals the guide was anchored at (SVI's coupled guide) */
    int npath, path_cap;
    long *path_step;
    double *path_time, *path_gpar, *path_lpar, *path_anchor;
    /* the model's own outputs (a list) */
    svir_out *extra;
    /* where it ran, and why */
    int backend;
    char backend_reason[400];
    char message[512];
} svir_result;

/* The trace, window and step-size arrays for max_steps steps and the
 * extra list; 0, or 2 when out of memory (with res->message). */
int svir_result_alloc(svir_result *res, const svir_control *c);
void svir_result_free(svir_result *res);
/* the path's arrays for c->path_every (none if 0); nonzero when out of
 * memory. svir_path_push appends one snapshot while there is room. */
int svir_path_alloc(svir_result *res, const svir_control *c, ptrdiff_t ngp, ptrdiff_t nloc);
void svir_path_push(svir_result *res, ptrdiff_t ngp, ptrdiff_t nloc, long step, double time,
                    const double *gpar, const double *lpar, const double *anchor);

/* wall-clock seconds */
double svir_wall_time(void);

#ifdef __cplusplus
}
#endif

#endif
