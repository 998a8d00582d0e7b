/* One fit, whatever the model: read the settings and the model, set the
 * default threads, choose the backend (backend/svir_backend.c), run the
 * chosen driver, make the model's outputs. What the glue calls. */
#include "infer/svir_model.h"

#ifdef _OPENMP
#include <omp.h>
#endif
#include "backend/svir_backend.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

int svir_fit_spec(const svir_list *spec, const svir_list *ctrl, const svir_callbacks *cb,
                  svir_result *res)
{
    memset(res, 0, sizeof *res);
    svir_err e = {0, ""};
    svir_control c;
    const svir_model_def *def = svir_model_find(svir_list_str(spec, "model", "glmm"));
    void *model = NULL;
    int st = 0;
    if (!def) {
        st = svir_err_set(&e, 1, "svir internal error: unknown model \"%s\"",
                          svir_list_str(spec, "model", "?"));
        goto done;
    }
    if ((st = svir_control_read(ctrl, &c, &e)) != 0) goto done;
    st = def->read(spec, ctrl, &c, &model, &e);
    if (st) goto done;
    {
        /* the model's default threads for its steps; the posterior draws
         * (blocks of independent draws, each a pass over the data) take
         * every thread when there are at least 10^7 observation terms to
         * evaluate, unless the user set threads */
        const int user = c.threads > 0;
        if (!user) c.threads = def->threads(model, &c);
        c.threads_draws = c.threads;
#ifdef _OPENMP
        if (!user && (double)c.ndraws * def->size(model, &c) >= 1e7 &&
            omp_get_max_threads() > c.threads)
            c.threads_draws = omp_get_max_threads();
#endif
    }
    svir_choice ch;
    const int mini = c.batch_size > 0;
    const char *cpu_only = def->cpu_only ? def->cpu_only(spec) : NULL;
    if (!cpu_only && c.path_every > 0) cpu_only = "keep_path runs"; /* no device has paths */
    if (svir_backend_choose(def, c.method, mini, c.backend_req, def->size(model, &c), cpu_only,
                            &ch)) {
        switch (ch.refuse) {
        case SVIR_REFUSE_NO_DEVICE:
            st = svir_err_set(&e, 1, "backend = \"cuda\" needs a usable CUDA device: %s", ch.detail);
            break;
        case SVIR_REFUSE_CPU_ONLY:
            st = svir_err_set(&e, 1, "%s on the CPU only", ch.detail);
            break;
        default:
            st = svir_err_set(&e, 1, "%s", ch.detail);
        }
        goto done;
    }
    st = ch.impl->run(model, &c, cb, res);
    svir_gate_release();
    /* the host asked to stop: nothing of the fit is returned, whatever the
     * driver made of the work its loops skipped */
    if (svir_interrupt_pending()) st = SVIR_INTERRUPTED;
    res->backend = ch.backend;
    snprintf(res->backend_reason, sizeof res->backend_reason, "%s", ch.reason);
    if (!st && def->outputs) st = def->outputs(model, &c, res, &e);
    else if (st && st != SVIR_INTERRUPTED) svir_err_set(&e, st, "%s", res->message);
done:
    if (def && model) def->free(model);
    if (st && st != SVIR_INTERRUPTED) snprintf(res->message, sizeof res->message, "%s", e.msg);
    return st;
}

int svir_default_threads(double work, double per_thread)
{
#ifdef _OPENMP
    const double want = ceil(work / per_thread);
    const int mx = omp_get_max_threads();
    return want < mx ? (want > 1 ? (int)want : 1) : mx;
#else
    (void)work;
    (void)per_thread;
    return 1;
#endif
}
