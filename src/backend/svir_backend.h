/* The one place where a fit's backend is chosen: which backends this build
 * has, whether each can run here, and for a model's method the backend a
 * fit runs on and why (the rule, and the refusals). Plain C, no R API. The
 * fit (infer/svir_fit.c) and the user-facing svir_backends() and the front
 * door's early check (svir_choose_backend() in R) all ask it, so "why did
 * this run on the CPU" always has the same answer. */
#ifndef SVIR_BACKEND_H
#define SVIR_BACKEND_H

#include <stddef.h>

#include "core/svir_codes.h"
#include "infer/svir_model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    const char *name;
    /* 1 if the backend can run here, else 0; writes a one-line,
     * NUL-terminated explanation (device, threads, or why not) to detail. */
    int (*available)(char *detail, size_t len);
} svir_backend;

/* The table, indexed by SVIR_BACKEND_*; read-only. */
extern const svir_backend svir_backend_table[SVIR_N_BACKENDS];

/* Index of the backend called name, or -1. */
int svir_backend_find(const char *name);

/* model def's implementation of method on backend (with minibatches or
 * not), or NULL */
const svir_impl *svir_backend_impl(const svir_model_def *def, int method, int backend,
                                   int minibatch);

/* why a backend cannot be had */
enum { SVIR_REFUSE_NONE = 0, SVIR_REFUSE_NO_DEVICE, SVIR_REFUSE_CPU_ONLY, SVIR_REFUSE_NO_METHOD };

typedef struct {
    const svir_impl *impl;  /* what runs */
    int backend;            /* SVIR_BACKEND_* */
    char reason[400];       /* why, for the fit's record */
    int refuse;             /* SVIR_REFUSE_*: why not */
    char detail[320];       /* the device's state, or what is CPU-only */
} svir_choice;

/* The backend for `method` of model def (requested: -1 auto, or
 * SVIR_BACKEND_*; minibatch: the fit uses minibatches; size: the model's
 * work per step, for a size rule; cpu_only: what of this fit the CUDA code
 * lacks (def->cpu_only's answer), or NULL). Auto: svir_backend_auto().
 * Returns 0, or 1 with ch->refuse and ch->detail set. */
int svir_backend_choose(const svir_model_def *def, int method, int minibatch, int requested,
                        double size, const char *cpu_only, svir_choice *ch);

/* The rule of backend = "auto", given whether a device is usable (detail:
 * its description or why not) and the method's CUDA implementation (or
 * NULL): the device when it can run the fit and the step's work (size, the
 * model's size()) is at least min_size (the model's auto_cuda_min; 0: the
 * model has no measured rule), else the CPU; ch->reason says which and
 * why. The thresholds are in the models' tables (models/glmm/glmm_model.c
 * says how the GLMM's was measured). */
void svir_backend_auto(svir_choice *ch, int device, const char *detail, const svir_impl *cuda,
                       const char *cpu_only, double size, double min_size);

#ifdef SVIR_HAVE_CUDA
/* cuda/query.cu: queries the CUDA runtime/driver. Never fails hard: with
 * no driver or no device it returns 0 and says so in buf. */
int svir_cuda_query(char *buf, size_t len);
#endif

#ifdef __cplusplus
}
#endif

#endif
