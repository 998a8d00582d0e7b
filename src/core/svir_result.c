/* Settings, callbacks and results common to every fit (core/svir_result.h). */
#ifdef SVIR_POLL_PROBE
#define _GNU_SOURCE /* dladdr */
#include <dlfcn.h>
#endif
#include "core/svir_result.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "core/svir_loop.h"

/* wall clock in seconds (without OpenMP, clock()'s processor time, which
 * one thread makes nearly the same) */
double svir_wall_time(void)
{
#ifdef _OPENMP
    return omp_get_wtime();
#else
    return (double)clock() / CLOCKS_PER_SEC;
#endif
}

static int code_of(const char *list, const char *s, int dflt)
{
    if (!s) return dflt;
    return svir_code_value(svir_core_code_table(list), s);
}

int svir_control_read(const svir_list *ctrl, svir_control *c, svir_err *e)
{
    memset(c, 0, sizeof *c);
    c->method = code_of("method", svir_list_str(ctrl, "method", NULL), SVIR_METHOD_SVI);
    const char *be = svir_list_str(ctrl, "backend", NULL);
    c->backend_req = !be || strcmp(be, "auto") == 0 ? -1 : code_of("backend", be, -1);
    if (c->method < 0) return svir_err_set(e, 1, "svir internal error: unknown method");
    if (be && strcmp(be, "auto") != 0 && c->backend_req < 0)
        return svir_err_set(e, 1, "svir internal error: unknown backend \"%s\"", be);
    c->guide = svir_list_is(ctrl, "guide", "fullrank") ? SVIR_GUIDE_FULLRANK : SVIR_GUIDE_MEANFIELD;
    c->max_steps = (long)svir_list_num(ctrl, "max_steps", 10000);
    c->lr = svir_list_num(ctrl, "lr", c->guide == SVIR_GUIDE_FULLRANK ? 0.02 : 0.05);
    c->lr_schedule = SVIR_LR_PLATEAU;
    const char *sch = svir_list_str(ctrl, "lr_schedule", NULL);
    if (sch) {
        const int code = svir_code_value(svir_core_code_table("lr"), sch);
        c->lr_schedule = code >= 0 ? code : SVIR_LR_PLATEAU;
    }
    c->lr_decay = svir_list_num(ctrl, "lr_decay", 0.3);
    c->eval_every = svir_list_int(ctrl, "eval_every", 100);
    c->tol_rel_obj = svir_list_num(ctrl, "tol_rel_obj", 1e-4);
    c->patience = svir_list_int(ctrl, "patience", 3);
    c->rule = svir_list_is(ctrl, "rule", "rolling") ? SVIR_RULE_ROLLING : SVIR_RULE_WINDOW;
    c->min_steps = (long)svir_list_num(ctrl, "min_steps", 0);
    c->num_particles = svir_list_int(ctrl, "num_particles", 1);
    c->stl = svir_list_int(ctrl, "stl", 1) != 0;
    c->batch_size = svir_list_absent(ctrl, "batch_size")
        ? 0 : (ptrdiff_t)svir_list_num(ctrl, "batch_size", 0);
    c->threads = svir_list_int(ctrl, "threads", 0);
    c->ndraws = svir_list_int(ctrl, "ndraws", 1000);
    c->init_scale = svir_list_num(ctrl, "init_scale", 0.1);
    const double seed = svir_list_num(ctrl, "seed", 1.0);
    if (!(seed >= 0) || seed > 9007199254740992.0)
        return svir_err_set(e, 1, "svir internal error: seed out of range");
    c->seed = (uint64_t)seed;
    c->qem_K = svir_list_int(ctrl, "K", 16);
    c->qem_eta0 = svir_list_num(ctrl, "qem_eta0", 0.5);
    c->qem_kappa = svir_list_num(ctrl, "qem_kappa", 0.6);
    c->path_every = svir_list_int(ctrl, "keep_path", 0);
    c->keep_lpar = svir_list_int(ctrl, "keep_lpar", 0);
    return 0;
}

double svir_qem_step(const svir_control *c, long t)
{
    return fmin(1.0, c->qem_eta0 * pow((double)t + 1.0, -c->qem_kappa));
}

/* The running fit's gate, for svir_poll(), and whether its host asked to
 * stop. R runs one fit at a time, from its main thread. */
static svir_gate *volatile cur_gate = NULL;
static volatile int stop_pending = 0;

/* the thread that started the fit: thread 0 at every level of nesting */
static int on_fit_thread(void)
{
#ifdef _OPENMP
    for (int l = omp_get_level(); l > 0; l--)
        if (omp_get_ancestor_thread_num(l) != 0) return 0;
#endif
    return 1;
}

#ifdef SVIR_POLL_PROBE
/* The development probe (configure with SVIR_POLL_PROBE=yes): every gap of
 * more than 0.25 s between two polls on the fit's thread (svir_poll,
 * svir_gate_check) is printed with the polls' return addresses as offsets
 * in the shared object, for addr2line -f -e svir.so. */
static double probe_last = 0.0;
static void *probe_at = NULL;
static void poll_probe(void *who)
{
    const double t = svir_wall_time();
    if (probe_at && t - probe_last > 0.25) {
        Dl_info a, b;
        if (dladdr(probe_at, &a) && dladdr(who, &b))
            fprintf(stderr, "svir poll gap %.3f s from 0x%lx to 0x%lx\n", t - probe_last,
                    (unsigned long)((char *)probe_at - (char *)a.dli_fbase),
                    (unsigned long)((char *)who - (char *)b.dli_fbase));
    }
    probe_last = t;
    probe_at = who;
}
#define POLL_PROBE() poll_probe(__builtin_return_address(0))
#else
#define POLL_PROBE() ((void)0)
#endif

void svir_gate_init(svir_gate *g, const svir_callbacks *cb)
{
#ifdef SVIR_POLL_PROBE
    probe_at = NULL; /* a new fit: no gap from the last one's polls */
#endif
    g->cb = cb;
    g->last = svir_wall_time();
    cur_gate = g;
    stop_pending = 0;
}

static int gate_ask(svir_gate *g)
{
    if (g->cb->interrupted(g->cb->ctx)) stop_pending = 1;
    return stop_pending;
}

int svir_gate_check(svir_gate *g, long step, long every)
{
    if (stop_pending) return 1;
    if (!g->cb || !g->cb->interrupted) return 0;
    POLL_PROBE();
    const double t = svir_wall_time();
    if ((every > 0 && step % every == 0) || t - g->last >= 0.25) {
        g->last = t;
        return gate_ask(g);
    }
    return 0;
}

int svir_poll(void)
{
    if (stop_pending) return 1;
    svir_gate *g = cur_gate;
    if (!g || !g->cb || !g->cb->interrupted || !on_fit_thread()) return 0;
    POLL_PROBE();
    const double t = svir_wall_time();
    if (t - g->last < 0.25) return 0;
    g->last = t;
    return gate_ask(g);
}

int svir_interrupt_pending(void)
{
    return stop_pending;
}

void svir_gate_release(void)
{
    cur_gate = NULL;
}

svir_gate *svir_gate_current(void)
{
    return cur_gate;
}

void svir_gate_restore(svir_gate *g)
{
    cur_gate = g;
}

void svir_gate_progress(const svir_gate *g, long step, long every, long max_steps, double obj)
{
    if (g->cb && g->cb->progress && (every <= 1 || step % every == 0))
        g->cb->progress(g->cb->ctx, step, max_steps, obj);
}

int svir_result_alloc(svir_result *res, const svir_control *c)
{
    const long maxs = c->max_steps > 0 ? c->max_steps : 1;
    const int W = c->eval_every > 0 ? c->eval_every : 100;
    res->trace = calloc((size_t)maxs, sizeof(double));
    res->lr_steps = calloc(SVIR_LOOP_MAX_LR_STEPS, sizeof(long));
    res->max_windows = (int)(maxs / W + 1);
    res->window_trace = calloc((size_t)res->max_windows, sizeof(double));
    res->extra = svir_out_list(NULL, "extra");
    res->lr_final = NAN;
    res->trace_final = NAN;
    if (!res->trace || !res->lr_steps || !res->window_trace || !res->extra) {
        snprintf(res->message, sizeof res->message, "out of memory allocating the fit's results");
        return 2;
    }
    return 0;
}

int svir_path_alloc(svir_result *res, const svir_control *c, ptrdiff_t ngp, ptrdiff_t nloc)
{
    res->npath = res->path_cap = 0;
    if (c->path_every <= 0) return 0;
    const long maxs = c->max_steps > 0 ? c->max_steps : 1;
    const size_t cap = (size_t)(maxs / c->path_every + 1);
    res->path_step = malloc(sizeof(long) * cap);
    res->path_time = malloc(sizeof(double) * cap);
    res->path_gpar = malloc(sizeof(double) * cap * (size_t)ngp + 1);
    res->path_lpar = malloc(sizeof(double) * cap * (size_t)nloc + 1);
    res->path_anchor = malloc(sizeof(double) * cap * (size_t)ngp + 1);
    if (!res->path_step || !res->path_time || !res->path_gpar || !res->path_lpar ||
        !res->path_anchor)
        return 2;
    res->path_cap = (int)cap;
    return 0;
}

void svir_path_push(svir_result *res, ptrdiff_t ngp, ptrdiff_t nloc, long step, double time,
                    const double *gpar, const double *lpar, const double *anchor)
{
    if (res->npath >= res->path_cap) return;
    const size_t s = (size_t)res->npath++;
    res->path_step[s] = step;
    res->path_time[s] = time;
    memcpy(res->path_gpar + s * (size_t)ngp, gpar, sizeof(double) * (size_t)ngp);
    memcpy(res->path_lpar + s * (size_t)nloc, lpar, sizeof(double) * (size_t)nloc);
    memcpy(res->path_anchor + s * (size_t)ngp, anchor, sizeof(double) * (size_t)ngp);
}

void svir_result_free(svir_result *res)
{
    free(res->gpar); free(res->lpar); free(res->trace); free(res->lr_steps);
    free(res->window_trace);
    free(res->path_step); free(res->path_time); free(res->path_gpar); free(res->path_lpar);
    free(res->path_anchor);
    free(res->draws); free(res->log_ratio); free(res->draw_aux);
    svir_out_free(res->extra);
    memset(res, 0, sizeof(*res));
}

void svir_loop_to_result(const svir_loop *L, long step, svir_result *res)
{
    res->steps = L->stopped ? L->steps : step;
    res->ntrace = res->steps;
    res->stop_reason = L->stop_reason;
    res->lr_final = L->lr;
    res->n_rejected = L->n_rejected;
    res->n_windows = L->n_windows;
    res->n_lr_steps = L->n_lr_steps;
    memcpy(res->lr_steps, L->lr_steps, sizeof(long) * (size_t)L->n_lr_steps);
    res->trace_final = svir_loop_elbo_final(L);
}
