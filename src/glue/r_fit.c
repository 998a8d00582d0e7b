/* Glue between R and the engine: reads the spec and control lists
 * (dev/CONTRACT.md), runs the engine, builds the result list. The engine's
 * memory lives in an external pointer with a finalizer, so an R error in the
 * middle (allocation failure, bad input) cannot leak it. */
#define R_NO_REMAP
#include <R.h>
#include <Rinternals.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "infer/svir_engine.h"
#include "models/glmm/glmm_local.h"
#include "models/glmm/glmm_coupling.h"
#include "core/svir_adam.h"
#include "core/svir_guide.h"
#ifdef SVIR_HAVE_CUDA
#include "models/glmm/glmm_cuda.h"
#endif

typedef struct {
    svir_model m;
    svir_result res;
    int has_model, has_res;
} holder;

static void holder_release(holder *h)
{
    if (!h) return;
    if (h->has_model) svir_model_free(&h->m);
    if (h->has_res) svir_result_free(&h->res);
    free(h->m.terms);
    free(h);
}

static void holder_finalize(SEXP p)
{
    holder_release(R_ExternalPtrAddr(p));
    R_ClearExternalPtr(p);
}

static SEXP holder_new(holder **out)
{
    holder *h = calloc(1, sizeof(holder));
    if (!h) Rf_error("svir: out of memory");
    SEXP p = PROTECT(R_MakeExternalPtr(h, R_NilValue, R_NilValue));
    R_RegisterCFinalizerEx(p, holder_finalize, TRUE);
    UNPROTECT(1);
    *out = h;
    return p;
}

static void holder_done(SEXP p)
{
    holder_release(R_ExternalPtrAddr(p));
    R_ClearExternalPtr(p);
}

static SEXP get(SEXP list, const char *name)
{
    SEXP nms = Rf_getAttrib(list, R_NamesSymbol);
    for (R_xlen_t k = 0; k < Rf_xlength(list); k++)
        if (strcmp(CHAR(STRING_ELT(nms, k)), name) == 0) return VECTOR_ELT(list, k);
    return R_NilValue;
}

static const double *get_dbl(SEXP list, const char *name, R_xlen_t len, int optional)
{
    SEXP x = get(list, name);
    if (Rf_isNull(x)) {
        if (optional) return NULL;
        Rf_error("svir internal error: spec$%s is missing", name);
    }
    if (TYPEOF(x) != REALSXP) Rf_error("svir internal error: spec$%s must be double", name);
    if (len >= 0 && Rf_xlength(x) != len)
        Rf_error("svir internal error: spec$%s has length %lld, expected %lld", name,
                 (long long)Rf_xlength(x), (long long)len);
    return REAL(x);
}

static int get_int(SEXP list, const char *name, int dflt)
{
    SEXP x = get(list, name);
    if (Rf_isNull(x)) return dflt;
    return Rf_asInteger(x);
}

static double get_num(SEXP list, const char *name, double dflt)
{
    SEXP x = get(list, name);
    if (Rf_isNull(x)) return dflt;
    return Rf_asReal(x);
}

/* Fills h->m from the spec list; pointers refer to R memory held by spec. */
static void read_spec(SEXP spec, holder *h)
{
    svir_model *m = &h->m;
    SEXP y = get(spec, "y");
    if (TYPEOF(y) != REALSXP) Rf_error("svir internal error: spec$y must be double");
    m->n = Rf_xlength(y);
    m->y = REAL(y);
    SEXP X = get(spec, "X");
    if (TYPEOF(X) != REALSXP || !Rf_isMatrix(X) || Rf_nrows(X) != m->n)
        Rf_error("svir internal error: spec$X must be a double matrix with one row per observation");
    m->X = REAL(X);
    m->p = Rf_ncols(X);
    m->trials = get_dbl(spec, "trials", m->n, 1);
    m->offset = get_dbl(spec, "offset", m->n, 1);
    m->family = get_int(spec, "family", 0);
    m->link = get_int(spec, "link", 0);
    SEXP terms = get(spec, "terms");
    m->nterms = Rf_isNull(terms) ? 0 : (int)Rf_xlength(terms);
    m->terms = calloc((size_t)m->nterms + 1, sizeof(svir_term));
    if (!m->terms) Rf_error("svir: out of memory");
    for (int t = 0; t < m->nterms; t++) {
        SEXP tm = VECTOR_ELT(terms, t);
        svir_term *st = &m->terms[t];
        SEXP g = get(tm, "group"), Z = get(tm, "Z");
        if (TYPEOF(g) != INTSXP || Rf_xlength(g) != m->n)
            Rf_error("svir internal error: term %d group must be integer of length n", t + 1);
        if (TYPEOF(Z) != REALSXP || !Rf_isMatrix(Z) || Rf_nrows(Z) != m->n)
            Rf_error("svir internal error: term %d Z must be a double matrix with n rows", t + 1);
        st->group = INTEGER(g);
        st->Z = REAL(Z);
        st->q = Rf_ncols(Z);
        st->ngroups = get_int(tm, "ngroups", 0);
        st->correlated = Rf_asLogical(get(tm, "correlated")) == TRUE;
        SEXP xm = get(tm, "xmap");
        st->xmap = NULL;
        if (!Rf_isNull(xm)) {
            if (TYPEOF(xm) != REALSXP || Rf_xlength(xm) != (R_xlen_t)m->p * st->q)
                Rf_error("svir internal error: term %d xmap must be a p x q double matrix", t + 1);
            st->xmap = REAL(xm);
        }
    }
    char err[256];
    int status = svir_model_init(m, err, sizeof err);
    h->has_model = 1;
    if (status) Rf_error("svir: %s", err);
    SEXP pt = get(spec, "prior_type");
    if (TYPEOF(pt) != INTSXP || Rf_xlength(pt) != m->D)
        Rf_error("svir internal error: spec$prior_type must be integer of length %lld", (long long)m->D);
    m->prior_type = INTEGER(pt);
    m->prior_df = get_dbl(spec, "prior_df", m->D, 0);
    m->prior_loc = get_dbl(spec, "prior_loc", m->D, 0);
    m->prior_scale = get_dbl(spec, "prior_scale", m->D, 0);
}

static void read_control(SEXP ctrl, SEXP spec, const svir_model *m, svir_control *c)
{
    memset(c, 0, sizeof(*c));
    SEXP guide = get(ctrl, "guide");
    c->guide = (Rf_isString(guide) && strcmp(CHAR(STRING_ELT(guide, 0)), "fullrank") == 0)
        ? SVIR_GUIDE_FULLRANK : SVIR_GUIDE_MEANFIELD;
    c->max_steps = (long)get_num(ctrl, "max_steps", 10000);
    c->lr = get_num(ctrl, "lr", c->guide == SVIR_GUIDE_FULLRANK ? 0.02 : 0.05);
    SEXP sch = get(ctrl, "lr_schedule");
    c->lr_schedule = SVIR_LR_PLATEAU;
    if (Rf_isString(sch)) {
        const char *s = CHAR(STRING_ELT(sch, 0));
        c->lr_schedule = strcmp(s, "constant") == 0 ? SVIR_LR_CONSTANT :
            strcmp(s, "decay") == 0 ? SVIR_LR_DECAY : SVIR_LR_PLATEAU;
    }
    c->lr_decay = get_num(ctrl, "lr_decay", 0.3);
    c->eval_every = get_int(ctrl, "eval_every", 100);
    c->tol_rel_obj = get_num(ctrl, "tol_rel_obj", 1e-4);
    c->patience = get_int(ctrl, "patience", 3);
    c->num_particles = get_int(ctrl, "num_particles", 1);
    c->stl = get_int(ctrl, "stl", 1) != 0;
    c->couple = get_int(ctrl, "couple", 1) != 0;
    SEXP bs = get(ctrl, "batch_size");
    c->batch_size = Rf_isNull(bs) ? 0 : (ptrdiff_t)Rf_asReal(bs);
    int threads = get_int(ctrl, "threads", 0);
#ifdef _OPENMP
    if (threads <= 0) {
        /* one thread per 1e5 observations in a step; for QEM, per 1e5 of its
         * iteration's work K n + K^2 J (the K draws' linear predictors and
         * the groups' K x K tables) */
        ptrdiff_t B = c->batch_size > 0 && c->batch_size < m->n ? c->batch_size : m->n;
        SEXP meth = get(ctrl, "method");
        if (Rf_isString(meth) && strcmp(CHAR(STRING_ELT(meth, 0)), "qem") == 0) {
            const ptrdiff_t K = get_int(ctrl, "K", 16);
            B = K * m->n;
            for (int t = 0; t < m->nterms; t++) B += K * K * (ptrdiff_t)m->terms[t].ngroups;
        }
        const ptrdiff_t want = B / 100000 > 1 ? B / 100000 : 1;
        threads = want < omp_get_max_threads() ? (int)want : omp_get_max_threads();
    }
#else
    threads = 1;
#endif
    c->threads = threads > 0 ? threads : 1;
    c->ndraws = get_int(ctrl, "ndraws", 1000);
    c->init_scale = get_num(ctrl, "init_scale", 0.1);
    double seed = get_num(ctrl, "seed", 1.0);
    if (!(seed >= 0) || seed > 9007199254740992.0) Rf_error("svir internal error: seed out of range");
    c->seed = (uint64_t)seed;
    c->init_mu = get_dbl(spec, "init_mu", m->D, 1);
    c->init_sd = get_dbl(spec, "init_sd", m->D, 1);
    c->qem_K = get_int(ctrl, "K", 16);
    c->qem_eta0 = get_num(ctrl, "qem_eta0", 0.5);
    c->qem_kappa = get_num(ctrl, "qem_kappa", 0.6);
    c->path_every = get_int(ctrl, "keep_path", 0);
    c->qem_direct = get_int(ctrl, "qem_direct", 0);
}

static void check_interrupt_fn(void *data)
{
    (void)data;
    R_CheckUserInterrupt();
}

/* R_ToplevelExec catches the interrupt's longjmp, so the engine unwinds itself. */
static int check_interrupt_cb(void *ctx)
{
    (void)ctx;
    return !R_ToplevelExec(check_interrupt_fn, NULL);
}

static void progress_eval(void *data)
{
    SEXP call = (SEXP)data;
    Rf_eval(call, R_GlobalEnv);
}

static void progress_cb(void *ctx, long step, long max_steps, double elbo)
{
    (void)max_steps;
    SEXP fun = (SEXP)ctx;
    SEXP s = PROTECT(Rf_ScalarReal((double)step));
    SEXP e = PROTECT(Rf_ScalarReal(elbo));
    SEXP call = PROTECT(Rf_lang3(fun, s, e));
    R_ToplevelExec(progress_eval, call); /* errors in the bar must not unwind the engine */
    UNPROTECT(3);
}

static const char *stop_name(int r)
{
    switch (r) {
    case SVIR_STOP_CONVERGED: return "converged";
    case SVIR_STOP_MAX_STEPS: return "max_steps";
    case SVIR_STOP_DIVERGED: return "diverged";
    default: return "interrupted";
    }
}

/* Local parameters: per term a list of (J x q) means and (J x q(q+1)/2) packed C. */
static SEXP locals_to_r(const svir_model *m, const double *lpar, int want_C)
{
    SEXP out = PROTECT(Rf_allocVector(VECSXP, m->nterms));
    for (int t = 0; t < m->nterms; t++) {
        const svir_term *tm = &m->terms[t];
        const int q = tm->q, J = tm->ngroups;
        const int nc = want_C ? q * (q + 1) / 2 : q;
        const ptrdiff_t lb = svir_local_block(q);
        SEXP x = PROTECT(Rf_allocMatrix(REALSXP, J, nc));
        double *px = REAL(x);
        for (int j = 0; j < J; j++) {
            const double *blk = lpar + tm->off_loc + (ptrdiff_t)j * lb + (want_C ? q : 0);
            for (int k = 0; k < nc; k++) px[j + (ptrdiff_t)k * J] = blk[k];
        }
        SET_VECTOR_ELT(out, t, x);
        UNPROTECT(1);
    }
    UNPROTECT(1);
    return out;
}

static void set_elt(SEXP list, SEXP names, int k, const char *name, SEXP val)
{
    SET_VECTOR_ELT(list, k, val);
    SET_STRING_ELT(names, k, Rf_mkChar(name));
}

/* The holder with spec and ctrl read into it; returned protected (the
 * caller's UNPROTECT count includes it). */
static SEXP setup(SEXP spec, SEXP ctrl, holder **h, svir_control *c)
{
    SEXP hp = PROTECT(holder_new(h));
    read_spec(spec, *h);
    read_control(ctrl, spec, &(*h)->m, c);
    return hp;
}

/* The path (svir_result's path_*) as list(step, time, gpar, lpar, anchor),
 * one column per snapshot, or NULL; unprotected. */
static SEXP path_to_r(const svir_model *m, const svir_control *c, const svir_result *r)
{
    if (r->npath <= 0) return R_NilValue;
    const int np = r->npath;
    const ptrdiff_t ngp = svir_n_global_par(m, c->guide), nloc = m->nloc;
    SEXP out = PROTECT(Rf_allocVector(VECSXP, 5));
    SEXP nms = PROTECT(Rf_allocVector(STRSXP, 5));
    SEXP st = PROTECT(Rf_allocVector(REALSXP, np));
    SEXP tm = PROTECT(Rf_allocVector(REALSXP, np));
    for (int s = 0; s < np; s++) {
        REAL(st)[s] = (double)r->path_step[s];
        REAL(tm)[s] = r->path_time[s];
    }
    set_elt(out, nms, 0, "step", st);
    set_elt(out, nms, 1, "time", tm);
    SEXP g = PROTECT(Rf_allocMatrix(REALSXP, (int)ngp, np));
    memcpy(REAL(g), r->path_gpar, sizeof(double) * (size_t)ngp * (size_t)np);
    set_elt(out, nms, 2, "gpar", g);
    SEXP l = PROTECT(Rf_allocMatrix(REALSXP, (int)nloc, np));
    memcpy(REAL(l), r->path_lpar, sizeof(double) * (size_t)nloc * (size_t)np);
    set_elt(out, nms, 3, "lpar", l);
    SEXP a = PROTECT(Rf_allocMatrix(REALSXP, (int)ngp, np));
    memcpy(REAL(a), r->path_anchor, sizeof(double) * (size_t)ngp * (size_t)np);
    set_elt(out, nms, 4, "anchor", a);
    Rf_setAttrib(out, R_NamesSymbol, nms);
    UNPROTECT(7);
    return out;
}

SEXP svir_fit_r(SEXP spec, SEXP ctrl)
{
    holder *h;
    svir_control c;
    SEXP hp = setup(spec, ctrl, &h, &c);
    SEXP prog = get(ctrl, "progress_fun");
    svir_callbacks cb = {check_interrupt_cb, NULL, NULL};
    if (Rf_isFunction(prog)) {
        cb.progress = progress_cb;
        cb.ctx = prog;
    }
    h->has_res = 1;
    SEXP be = get(ctrl, "backend");
    const int cuda = Rf_isString(be) && strcmp(CHAR(STRING_ELT(be, 0)), "cuda") == 0;
    SEXP meth = get(ctrl, "method");
    const int qem = Rf_isString(meth) && strcmp(CHAR(STRING_ELT(meth, 0)), "qem") == 0;
    char msg[600];
    int status;
    if (qem) {
        status = svir_qem_fit(&h->m, &c, cuda, &cb, &h->res);
        snprintf(msg, sizeof msg, "QEM%s: %s", cuda ? " (CUDA backend)" : "", h->res.message);
    } else if (!cuda) {
        status = svir_fit(&h->m, &c, &cb, &h->res);
        snprintf(msg, sizeof msg, "%s", h->res.message);
    } else {
#ifdef SVIR_HAVE_CUDA
        /* frees its device memory on every path; interrupts come through
         * cb (R_ToplevelExec), so nothing unwinds past it */
        char err[512] = "";
        status = svir_cuda_fit(&h->m, &c, &cb, &h->res, err, sizeof err);
        snprintf(msg, sizeof msg, "CUDA backend: %s%s", err,
                 strstr(err, "out of memory") ? " (use a smaller batch_size in svi_control(), "
                                                "or backend = \"cpu\")" : "");
#else
        status = 1;
        snprintf(msg, sizeof msg, "this build of svir has no CUDA backend");
#endif
    }
    if (status) {
        holder_done(hp);
        UNPROTECT(1);
        Rf_error("svir: %s", msg);
    }
    const svir_model *m = &h->m;
    const svir_result *r = &h->res;
    const ptrdiff_t D = m->D;

    const int nout = 18;
    SEXP out = PROTECT(Rf_allocVector(VECSXP, nout));
    SEXP nms = PROTECT(Rf_allocVector(STRSXP, nout));
    int k = 0;
    SEXP mu = PROTECT(Rf_allocVector(REALSXP, D));
    memcpy(REAL(mu), r->gpar, sizeof(double) * (size_t)D);
    set_elt(out, nms, k++, "mu", mu);
    if (c.guide == SVIR_GUIDE_FULLRANK) {
        SEXP L = PROTECT(Rf_allocMatrix(REALSXP, (int)D, (int)D));
        double *pL = REAL(L);
        for (ptrdiff_t i = 0; i < D * D; i++) pL[i] = 0.0;
        for (ptrdiff_t row = 0; row < D; row++)
            for (ptrdiff_t col = 0; col <= row; col++) {
                const double v = r->gpar[D + row * (row + 1) / 2 + col];
                pL[row + col * D] = col == row ? exp(v) : v;
            }
        set_elt(out, nms, k++, "L", L);
    } else {
        SEXP om = PROTECT(Rf_allocVector(REALSXP, D));
        memcpy(REAL(om), r->gpar + D, sizeof(double) * (size_t)D);
        set_elt(out, nms, k++, "omega", om);
    }
    set_elt(out, nms, k++, "m", locals_to_r(m, r->lpar, 0));
    set_elt(out, nms, k++, "C", locals_to_r(m, r->lpar, 1));
    SEXP el = PROTECT(Rf_allocVector(REALSXP, r->steps));
    memcpy(REAL(el), r->elbo, sizeof(double) * (size_t)r->steps);
    set_elt(out, nms, k++, "elbo", el);
    set_elt(out, nms, k++, "steps", Rf_ScalarInteger((int)r->steps));
    set_elt(out, nms, k++, "stop_reason", Rf_mkString(stop_name(r->stop_reason)));
    set_elt(out, nms, k++, "lr_final", Rf_ScalarReal(r->lr_final));
    set_elt(out, nms, k++, "n_rejected", Rf_ScalarInteger((int)r->n_rejected));
    set_elt(out, nms, k++, "elbo_final", Rf_ScalarReal(r->elbo_final));
    SEXP lrs = PROTECT(Rf_allocVector(REALSXP, r->n_lr_steps));
    for (int i = 0; i < r->n_lr_steps; i++) REAL(lrs)[i] = (double)r->lr_steps[i];
    set_elt(out, nms, k++, "lr_steps", lrs);
    SEXP dr = PROTECT(Rf_allocMatrix(REALSXP, r->ndraws, (int)D));
    if (r->ndraws > 0) memcpy(REAL(dr), r->draws, sizeof(double) * (size_t)r->ndraws * (size_t)D);
    set_elt(out, nms, k++, "draws", dr);
    SEXP lr = PROTECT(Rf_allocVector(REALSXP, r->ndraws));
    if (r->ndraws > 0) memcpy(REAL(lr), r->log_ratio, sizeof(double) * (size_t)r->ndraws);
    set_elt(out, nms, k++, "log_ratio", lr);
    SEXP vp = PROTECT(Rf_allocVector(REALSXP, svir_n_global_par(m, c.guide) + m->nloc));
    memcpy(REAL(vp), r->gpar, sizeof(double) * (size_t)svir_n_global_par(m, c.guide));
    memcpy(REAL(vp) + svir_n_global_par(m, c.guide), r->lpar, sizeof(double) * (size_t)m->nloc);
    set_elt(out, nms, k++, "vpar", vp);
    SEXP we = PROTECT(Rf_allocVector(REALSXP, r->n_windows));
    for (int i = 0; i < r->n_windows; i++) {
        REAL(we)[i] = r->window_elbo[i];
    }
    set_elt(out, nms, k++, "window_elbo", we);
    SEXP sh = PROTECT(Rf_allocVector(VECSXP, m->nterms));
    for (int t = 0, qo = 0; t < m->nterms; t++) {
        const int q = m->terms[t].q;
        SEXP x = PROTECT(Rf_allocMatrix(REALSXP, r->ndraws, q));
        for (int kk = 0; kk < q; kk++)
            for (int s = 0; s < r->ndraws; s++)
                REAL(x)[s + (ptrdiff_t)kk * r->ndraws] = r->shift[(size_t)s + (size_t)(qo + kk) * (size_t)r->ndraws];
        SET_VECTOR_ELT(sh, t, x);
        UNPROTECT(1);
        qo += q;
    }
    set_elt(out, nms, k++, "shift", sh);
    SEXP ts = PROTECT(Rf_allocVector(REALSXP, SVIR_N_PHASES));
    SEXP tsn = PROTECT(Rf_allocVector(STRSXP, SVIR_N_PHASES));
    static const char *phase[SVIR_N_PHASES] = {"draw", "observations", "backward", "update",
                                              "posterior_draws"};
    for (int i = 0; i < SVIR_N_PHASES; i++) {
        REAL(ts)[i] = r->time_split[i];
        SET_STRING_ELT(tsn, i, Rf_mkChar(phase[i]));
    }
    Rf_setAttrib(ts, R_NamesSymbol, tsn);
    set_elt(out, nms, k++, "time_split", ts);
    set_elt(out, nms, k++, "path", path_to_r(m, &c, r));
    Rf_setAttrib(out, R_NamesSymbol, nms);
    holder_done(hp);
    UNPROTECT(3 + 11);
    return out;
}

/* The K-sample tree bound of guides (one per column of gpar, lpar, anchor):
 * a reps x ncol matrix (svir_tree_bound). For bench/qem.R. */
SEXP svir_tree_bound_r(SEXP spec, SEXP ctrl, SEXP gpar, SEXP lpar, SEXP anchor, SEXP K,
                       SEXP reps)
{
    holder *h;
    svir_control c;
    SEXP hp = setup(spec, ctrl, &h, &c);
    const svir_model *m = &h->m;
    const ptrdiff_t ngp = svir_n_global_par(m, c.guide);
    const int nk = Rf_asInteger(K), nr = Rf_asInteger(reps);
    if (TYPEOF(gpar) != REALSXP || TYPEOF(lpar) != REALSXP || TYPEOF(anchor) != REALSXP ||
        Rf_xlength(gpar) % (ngp > 0 ? ngp : 1) != 0)
        Rf_error("svir internal error: gpar, lpar and anchor must be double matrices");
    const R_xlen_t ns = Rf_xlength(gpar) / ngp;
    if (Rf_xlength(lpar) != ns * m->nloc || Rf_xlength(anchor) != ns * ngp)
        Rf_error("svir internal error: lpar or anchor has the wrong size");
    if (nr < 1) Rf_error("svir internal error: reps must be positive");
    SEXP out = PROTECT(Rf_allocMatrix(REALSXP, nr, (int)ns));
    char err[512] = "";
    for (R_xlen_t s = 0; s < ns; s++) {
        const int st = svir_tree_bound(m, &c, REAL(gpar) + s * ngp, REAL(lpar) + s * m->nloc,
                                       REAL(anchor) + s * ngp, nk, nr, REAL(out) + s * nr, err,
                                       sizeof err);
        if (st) {
            holder_done(hp);
            UNPROTECT(2);
            Rf_error("svir: %s", err);
        }
    }
    holder_done(hp);
    UNPROTECT(2);
    return out;
}

static void z_from_r(const svir_model *m, SEXP zl, double *z)
{
    if (Rf_xlength(zl) != m->nterms) Rf_error("svir internal error: z must have one matrix per term");
    for (int t = 0; t < m->nterms; t++) {
        const svir_term *tm = &m->terms[t];
        SEXP x = VECTOR_ELT(zl, t);
        if (TYPEOF(x) != REALSXP || Rf_xlength(x) != (R_xlen_t)tm->ngroups * tm->q)
            Rf_error("svir internal error: z[[%d]] must be a %d x %d double matrix", t + 1,
                     tm->ngroups, tm->q);
        for (int j = 0; j < tm->ngroups; j++)
            for (int c = 0; c < tm->q; c++)
                z[tm->off_z + (ptrdiff_t)j * tm->q + c] = REAL(x)[j + (ptrdiff_t)c * tm->ngroups];
    }
}

SEXP svir_logdensity_r(SEXP spec, SEXP theta, SEXP zl)
{
    holder *h;
    SEXP hp = PROTECT(holder_new(&h));
    read_spec(spec, h);
    const svir_model *m = &h->m;
    if (TYPEOF(theta) != REALSXP || Rf_xlength(theta) != m->D)
        Rf_error("svir internal error: theta must be double of length %lld", (long long)m->D);
    SEXP z = PROTECT(Rf_allocVector(REALSXP, m->nz));
    z_from_r(m, zl, REAL(z));
    SEXP gt = PROTECT(Rf_allocVector(REALSXP, m->D));
    SEXP gz = PROTECT(Rf_allocVector(REALSXP, m->nz));
    double ll;
    const double lp = svir_log_joint(m, REAL(theta), REAL(z), REAL(gt), REAL(gz), &ll);
    SEXP gzl = PROTECT(Rf_allocVector(VECSXP, m->nterms));
    for (int t = 0; t < m->nterms; t++) {
        const svir_term *tm = &m->terms[t];
        SEXP x = PROTECT(Rf_allocMatrix(REALSXP, tm->ngroups, tm->q));
        for (int j = 0; j < tm->ngroups; j++)
            for (int c = 0; c < tm->q; c++)
                REAL(x)[j + (ptrdiff_t)c * tm->ngroups] = REAL(gz)[tm->off_z + (ptrdiff_t)j * tm->q + c];
        SET_VECTOR_ELT(gzl, t, x);
        UNPROTECT(1);
    }
    SEXP out = PROTECT(Rf_allocVector(VECSXP, 4));
    SEXP nms = PROTECT(Rf_allocVector(STRSXP, 4));
    set_elt(out, nms, 0, "logp", Rf_ScalarReal(lp));
    set_elt(out, nms, 1, "grad_theta", gt);
    set_elt(out, nms, 2, "grad_z", gzl);
    set_elt(out, nms, 3, "loglik", Rf_ScalarReal(ll));
    Rf_setAttrib(out, R_NamesSymbol, nms);
    holder_done(hp);
    UNPROTECT(7);
    return out;
}

/* Log-likelihoods of the draws in the columns of theta (D x k) and z (list
 * of per-term arrays, groups x q x k), by svir_loglik_block in blocks. */
SEXP svir_loglik_block_r(SEXP spec, SEXP theta, SEXP zl)
{
    holder *h;
    SEXP hp = PROTECT(holder_new(&h));
    read_spec(spec, h);
    const svir_model *m = &h->m;
    if (TYPEOF(theta) != REALSXP || !Rf_isMatrix(theta) || Rf_nrows(theta) != m->D)
        Rf_error("svir internal error: theta must be a double matrix with %lld rows", (long long)m->D);
    const int k = Rf_ncols(theta);
    if (Rf_xlength(zl) != m->nterms) Rf_error("svir internal error: z must have one array per term");
    for (int t = 0; t < m->nterms; t++) {
        SEXP x = VECTOR_ELT(zl, t);
        if (TYPEOF(x) != REALSXP || Rf_xlength(x) != (R_xlen_t)m->terms[t].ngroups * m->terms[t].q * k)
            Rf_error("svir internal error: z[[%d]] has the wrong size", t + 1);
    }
    enum { NB = SVIR_LL_BLOCK };
    SEXP out = PROTECT(Rf_allocVector(REALSXP, k));
    svir_globals g;
    if (svir_globals_alloc(m, &g)) Rf_error("svir: out of memory");
    double *z = malloc(sizeof(double) * (size_t)(m->nz + 1));
    double *b = malloc(sizeof(double) * (size_t)(m->nz + 1));
    double *bblk = malloc(sizeof(double) * (size_t)NB * (size_t)(m->nz + 1));
    double *beta = malloc(sizeof(double) * (size_t)NB * (size_t)(m->p + 1));
    if (!z || !b || !bblk || !beta) {
        free(z); free(b); free(bblk); free(beta);
        svir_globals_free(&g);
        Rf_error("svir: out of memory");
    }
    for (int s0 = 0; s0 < k; s0 += NB) {
        const int nb = k - s0 < NB ? k - s0 : NB;
        svir_aux aux[NB];
        double ll[NB];
        for (int sl = 0; sl < NB; sl++) {
            const int s = s0 + (sl < nb ? sl : 0);
            const double *th = REAL(theta) + (ptrdiff_t)s * m->D;
            for (int t = 0; t < m->nterms; t++) {
                const svir_term *tm = &m->terms[t];
                const double *x = REAL(VECTOR_ELT(zl, t)) + (ptrdiff_t)s * tm->ngroups * tm->q;
                for (int j = 0; j < tm->ngroups; j++)
                    for (int c = 0; c < tm->q; c++)
                        z[tm->off_z + (ptrdiff_t)j * tm->q + c] = x[j + (ptrdiff_t)c * tm->ngroups];
            }
            svir_unpack_globals(m, th, &g);
            svir_block_put(m, &g, th, z, sl, b, beta, bblk, aux);
        }
        svir_loglik_block(m, nb, beta, bblk, aux, ll);
        for (int sl = 0; sl < nb; sl++) REAL(out)[s0 + sl] = ll[sl];
    }
    free(z); free(b); free(bblk); free(beta);
    svir_globals_free(&g);
    holder_done(hp);
    UNPROTECT(2);
    return out;
}

/* svir_elbo_grad at vpar for `step` on the CPU, or its CUDA version
 * (svir_cuda_elbo_grad_host): list(elbo, grad) */
static SEXP elbo_grad(SEXP spec, SEXP ctrl, SEXP vpar, SEXP step, int cuda)
{
    holder *h;
    svir_control c;
    SEXP hp = setup(spec, ctrl, &h, &c);
    const svir_model *m = &h->m;
    const ptrdiff_t ng = svir_n_global_par(m, c.guide);
    if (TYPEOF(vpar) != REALSXP || Rf_xlength(vpar) != ng + m->nloc)
        Rf_error("svir internal error: vpar must be double of length %lld", (long long)(ng + m->nloc));
    SEXP grad = PROTECT(Rf_allocVector(REALSXP, ng + m->nloc));
    double elbo = 0.0;
    char err[512];
    if (!cuda) {
        if (svir_elbo_grad(m, &c, REAL(vpar), REAL(vpar) + ng, (long)Rf_asReal(step), &elbo,
                           REAL(grad), err, sizeof err))
            Rf_error("svir: %s", err);
    } else {
#ifdef SVIR_HAVE_CUDA
        svir_coupling cp;
        int ns = 0;
        if (svir_coupling_new(m, &c, c.init_mu, &cp, &ns)) Rf_error("svir: out of memory");
        const int st = svir_cuda_elbo_grad_host(
            m, &cp, ns, c.guide == SVIR_GUIDE_FULLRANK, c.stl,
            c.num_particles > 0 ? c.num_particles : 1, c.batch_size, REAL(vpar), REAL(vpar) + ng,
            c.seed,
            (long)Rf_asReal(step), &elbo, REAL(grad), err, sizeof err);
        svir_coupling_free(&cp);
        if (st) Rf_error("svir: %s", err);
#else
        Rf_error("svir was built without CUDA");
#endif
    }
    SEXP out = PROTECT(Rf_allocVector(VECSXP, 2));
    SEXP nms = PROTECT(Rf_allocVector(STRSXP, 2));
    set_elt(out, nms, 0, "elbo", Rf_ScalarReal(elbo));
    set_elt(out, nms, 1, "grad", grad);
    Rf_setAttrib(out, R_NamesSymbol, nms);
    holder_done(hp);
    UNPROTECT(4);
    return out;
}

SEXP svir_elbo_grad_r(SEXP spec, SEXP ctrl, SEXP vpar, SEXP step)
{
    return elbo_grad(spec, ctrl, vpar, step, 0);
}

/* One pass over all observations at given fixed effects beta [p] and random
 * effects b [nz] (indexed like z), on the CPU (a plain loop, the reference)
 * or on the CUDA device (src/cuda/svir_cuda_obs.cu): list(ll, gbeta, gaux, G,
 * ms), ll without constants. For the CPU/CUDA parity tests and bench/. */
SEXP svir_obs_pass_r(SEXP spec, SEXP beta, SEXP b, SEXP aux, SEXP backend)
{
    holder *h;
    SEXP hp = PROTECT(holder_new(&h));
    read_spec(spec, h);
    const svir_model *m = &h->m;
    if (TYPEOF(beta) != REALSXP || Rf_xlength(beta) != m->p)
        Rf_error("svir internal error: beta must be double of length %d", m->p);
    if (TYPEOF(b) != REALSXP || Rf_xlength(b) != m->nz)
        Rf_error("svir internal error: b must be double of length %lld", (long long)m->nz);
    if (TYPEOF(aux) != REALSXP || Rf_xlength(aux) != 2)
        Rf_error("svir internal error: aux must be c(sigma, phi)");
    const int cuda = Rf_asLogical(backend) == TRUE;
    SEXP gbeta = PROTECT(Rf_allocVector(REALSXP, m->p));
    SEXP G = PROTECT(Rf_allocVector(REALSXP, m->nz));
    double ll = 0.0, gaux = 0.0, ms = NA_REAL;
    if (cuda) {
#ifdef SVIR_HAVE_CUDA
        char err[512];
        svir_cuda_data *d = NULL;
        int st = svir_cuda_data_new(m, &d, err, sizeof err);
        if (!st) {
            st = svir_cuda_obs_pass_host(d, REAL(beta), REAL(b), REAL(aux)[0], REAL(aux)[1], &ll,
                                         REAL(gbeta), &gaux, REAL(G), &ms, err, sizeof err);
            svir_cuda_data_free(d);
        }
        if (st) Rf_error("svir: %s", err);
#else
        Rf_error("svir was built without CUDA");
#endif
    } else {
        svir_aux a;
        svir_aux_set(&a, REAL(aux)[0], REAL(aux)[1]);
        svir_obs_pass_ref(m, REAL(beta), REAL(b), &a, &ll, REAL(gbeta), &gaux, REAL(G));
    }
    SEXP out = PROTECT(Rf_allocVector(VECSXP, 5));
    SEXP nms = PROTECT(Rf_allocVector(STRSXP, 5));
    set_elt(out, nms, 0, "ll", Rf_ScalarReal(ll));
    set_elt(out, nms, 1, "gbeta", gbeta);
    set_elt(out, nms, 2, "gaux", Rf_ScalarReal(gaux));
    set_elt(out, nms, 3, "G", G);
    set_elt(out, nms, 4, "ms", Rf_ScalarReal(ms));
    Rf_setAttrib(out, R_NamesSymbol, nms);
    holder_done(hp);
    UNPROTECT(5);
    return out;
}

/* The per-group part of a full-batch step (see svir_cuda_local_step_host) at
 * given local parameters lpar [nloc], A [nqq], G [nz] and shift [sum q] (or
 * NULL), on the CPU (the engine's svir_local.h functions in a plain loop) or
 * on the CUDA device: list(z, b, lgrad, kl, logq, sums). For the parity
 * tests. */
SEXP svir_local_step_r(SEXP spec, SEXP lpar, SEXP A, SEXP G, SEXP shift, SEXP seed, SEXP step,
                       SEXP stl, SEXP backend)
{
    holder *h;
    SEXP hp = PROTECT(holder_new(&h));
    read_spec(spec, h);
    const svir_model *m = &h->m;
    int sumq = 0;
    for (int t = 0; t < m->nterms; t++) sumq += m->terms[t].q;
    if (TYPEOF(lpar) != REALSXP || Rf_xlength(lpar) != m->nloc ||
        TYPEOF(A) != REALSXP || Rf_xlength(A) != m->nqq ||
        TYPEOF(G) != REALSXP || Rf_xlength(G) != m->nz ||
        (!Rf_isNull(shift) && (TYPEOF(shift) != REALSXP || Rf_xlength(shift) != sumq)))
        Rf_error("svir internal error: lpar, A, G or shift has the wrong type or length");
    const uint64_t sd = (uint64_t)Rf_asReal(seed), st = (uint64_t)Rf_asReal(step);
    const int use_stl = Rf_asLogical(stl) == TRUE, cuda = Rf_asLogical(backend) == TRUE;
    const double *sh = Rf_isNull(shift) ? NULL : REAL(shift);
    const double scale = 1.0; /* full batch */
    SEXP z = PROTECT(Rf_allocVector(REALSXP, m->nz));
    SEXP b = PROTECT(Rf_allocVector(REALSXP, m->nz));
    SEXP lg = PROTECT(Rf_allocVector(REALSXP, m->nloc));
    SEXP sums = PROTECT(Rf_allocVector(REALSXP, m->nqq + 2 * (R_xlen_t)sumq));
    double kl = 0.0, logq = 0.0;
    if (cuda) {
#ifdef SVIR_HAVE_CUDA
        char err[512];
        if (svir_cuda_local_step_host(m, REAL(lpar), REAL(A), REAL(G), sh, sd, st, scale, use_stl,
                                      REAL(z), REAL(b), REAL(lg), &kl, &logq, REAL(sums), err,
                                      sizeof err))
            Rf_error("svir: %s", err);
#else
        Rf_error("svir was built without CUDA");
#endif
    } else {
        const int rc = svir_local_step_ref(m, REAL(lpar), REAL(A), REAL(G), sh, sd, st, scale,
                                           use_stl, REAL(z), REAL(b), REAL(lg), &kl, &logq,
                                           REAL(sums));
        if (rc == 1) Rf_error("svir: a term has more than %d columns", SVIR_QMAX_STACK);
        if (rc) Rf_error("svir: out of memory");
    }
    SEXP out = PROTECT(Rf_allocVector(VECSXP, 6));
    SEXP nms = PROTECT(Rf_allocVector(STRSXP, 6));
    set_elt(out, nms, 0, "z", z);
    set_elt(out, nms, 1, "b", b);
    set_elt(out, nms, 2, "lgrad", lg);
    set_elt(out, nms, 3, "kl", Rf_ScalarReal(kl));
    set_elt(out, nms, 4, "logq", Rf_ScalarReal(logq));
    set_elt(out, nms, 5, "sums", sums);
    Rf_setAttrib(out, R_NamesSymbol, nms);
    holder_done(hp);
    UNPROTECT(7);
    return out;
}

/* One Adam update of par with moments mom, vel and gradient g (all double of
 * one length) at step size lr and Adam step t >= 1, on the CPU (svir_adam)
 * or on the CUDA device: list(par, mom, vel). For the parity tests. */
SEXP svir_adam_r(SEXP par, SEXP mom, SEXP vel, SEXP g, SEXP lr, SEXP t, SEXP backend)
{
    const R_xlen_t n = Rf_xlength(par);
    if (TYPEOF(par) != REALSXP || TYPEOF(mom) != REALSXP || TYPEOF(vel) != REALSXP ||
        TYPEOF(g) != REALSXP || Rf_xlength(mom) != n || Rf_xlength(vel) != n || Rf_xlength(g) != n)
        Rf_error("svir internal error: par, mom, vel and g must be double of one length");
    const double tt = Rf_asReal(t), step = Rf_asReal(lr);
    if (!(tt >= 1.0)) Rf_error("svir internal error: t must be at least 1");
    const double bc1 = 1.0 - pow(SVIR_ADAM_B1, tt), bc2 = 1.0 - pow(SVIR_ADAM_B2, tt);
    SEXP p = PROTECT(Rf_duplicate(par)), m = PROTECT(Rf_duplicate(mom));
    SEXP v = PROTECT(Rf_duplicate(vel));
    if (Rf_asLogical(backend) == TRUE) {
#ifdef SVIR_HAVE_CUDA
        char err[512];
        if (svir_cuda_adam_host(REAL(p), REAL(m), REAL(v), REAL(g), (ptrdiff_t)n, step, bc1, bc2,
                                err, sizeof err))
            Rf_error("svir: %s", err);
#else
        Rf_error("svir was built without CUDA");
#endif
    } else {
        svir_adam(REAL(p), REAL(m), REAL(v), REAL(g), (ptrdiff_t)n, step, bc1, bc2);
    }
    SEXP out = PROTECT(Rf_allocVector(VECSXP, 3));
    SEXP nms = PROTECT(Rf_allocVector(STRSXP, 3));
    set_elt(out, nms, 0, "par", p);
    set_elt(out, nms, 1, "mom", m);
    set_elt(out, nms, 2, "vel", v);
    Rf_setAttrib(out, R_NamesSymbol, nms);
    UNPROTECT(5);
    return out;
}

/* svir_elbo_grad_r on the CUDA device (svir_cuda_elbo_grad_host): the same
 * list(elbo, grad) for a full batch. For the parity tests. */
SEXP svir_cuda_elbo_grad_r(SEXP spec, SEXP ctrl, SEXP vpar, SEXP step)
{
    return elbo_grad(spec, ctrl, vpar, step, 1);
}
