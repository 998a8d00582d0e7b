/* The GLMM's table (infer/svir_model.h): the model read from the spec R
 * builds (R/formula.R; see dev/ARCHITECTURE.md), its default threads, its
 * outputs, and its ways to fit: SVI on the CPU (the SVI driver with
 * svir_glmm_svi_ops) or the CUDA device (the device's whole fit,
 * cuda/glmm_fit.cu), QEM with the groups on the CPU or the device. */
#include "models/glmm/glmm_svi.h"
#include "models/glmm/glmm_cuda.h"
#include "models/glmm/glmm_local.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

static void glmm_free(void *model)
{
    svir_glmm *m = model;
    if (!m) return;
    svir_glmm_free(m);
    free(m->terms);
    free(m);
}

/* a double matrix with n rows, or NULL (e set) */
static const svir_list *matrix_n(const svir_list *l, const char *name, ptrdiff_t n)
{
    const svir_list *x = svir_list_get(l, name);
    if (!x || x->type != SVIR_L_REAL || x->ncol < 0 || x->nrow != n) return NULL;
    return x;
}

/* spec: y, X, trials, offset, family, link, Xz (zero inflation's model
 * matrix, or absent), terms (each: group, Z, ngroups, correlated, xmap),
 * prior_type, prior_df, prior_loc, prior_scale, and init_mu, init_sd (the
 * globals' start), init_loc, qem_level (QEM's plan for more than one
 * grouping factor), centre (SVI's partial centring per term); settings:
 * couple, qem_direct */
static int glmm_read(const svir_list *spec, const svir_list *ctrl, const svir_control *c,
                     void **out, svir_err *e)
{
    svir_glmm *m = calloc(1, sizeof *m);
    if (!m) return svir_err_set(e, 2, "out of memory reading the model");
    *out = m;
    const svir_list *y = svir_list_get(spec, "y");
    if (!y || y->type != SVIR_L_REAL) return svir_err_set(e, 1, "svir internal error: spec$y must be double");
    m->n = y->len;
    m->y = y->real;
    const svir_list *X = matrix_n(spec, "X", m->n);
    if (!X)
        return svir_err_set(e, 1, "svir internal error: spec$X must be a double matrix with one row per observation");
    m->X = X->real;
    m->p = X->ncol;
    m->trials = svir_list_reals(spec, "trials", m->n, 1, e);
    m->wt = svir_list_reals(spec, "weights", m->n, 1, e);
    m->offset = svir_list_reals(spec, "offset", m->n, 1, e);
    m->family = svir_list_int(spec, "family", 0);
    m->link = svir_list_int(spec, "link", 0);
    if (e->status) return e->status;
    if (!svir_glmm_pair_ok(m->family, m->link))
        return svir_err_set(e, 1, "svir internal error: family %d with link %d is not supported",
                            m->family, m->link);
    if (!svir_list_absent(spec, "Xz")) {
        const svir_list *Xz = matrix_n(spec, "Xz", m->n);
        if (!Xz) return svir_err_set(e, 1, "svir internal error: spec$Xz must be a double matrix with one row per observation");
        m->zi = 1;
        m->Xz = Xz->real;
        m->pz = Xz->ncol;
    }
    const svir_list *terms = svir_list_get(spec, "terms");
    m->nterms = !terms || terms->type != SVIR_L_LIST ? 0 : (int)terms->len;
    m->terms = calloc((size_t)m->nterms + 1, sizeof(svir_term));
    if (!m->terms) {
        m->nterms = 0;
        return svir_err_set(e, 2, "out of memory reading the model");
    }
    for (int t = 0; t < m->nterms; t++) {
        const svir_list *tm = &terms->elt[t];
        svir_term *st = &m->terms[t];
        const svir_list *g = svir_list_get(tm, "group"), *Z = matrix_n(tm, "Z", m->n);
        if (!g || g->type != SVIR_L_INT || g->len != m->n)
            return svir_err_set(e, 1, "svir internal error: term %d group must be integer of length n", t + 1);
        if (!Z) return svir_err_set(e, 1, "svir internal error: term %d Z must be a double matrix with n rows", t + 1);
        st->group = g->ints;
        st->Z = Z->real;
        st->q = Z->ncol;
        st->ngroups = svir_list_int(tm, "ngroups", 0);
        st->correlated = svir_list_int(tm, "correlated", 0) == 1;
        st->xmap = NULL;
        if (!svir_list_absent(tm, "xmap")) {
            st->xmap = svir_list_reals(tm, "xmap", (ptrdiff_t)m->p * st->q, 0, e);
            if (!st->xmap)
                return svir_err_set(e, 1, "svir internal error: term %d xmap must be a p x q double matrix", t + 1);
        }
    }
    char err[256];
    const int status = svir_glmm_init(m, err, sizeof err);
    if (status) return svir_err_set(e, status, "%s", err);
    m->prior_type = svir_list_ints(spec, "prior_type", m->D, 0, e);
    m->prior_df = svir_list_reals(spec, "prior_df", m->D, 0, e);
    m->prior_loc = svir_list_reals(spec, "prior_loc", m->D, 0, e);
    m->prior_scale = svir_list_reals(spec, "prior_scale", m->D, 0, e);
    m->init_mu = svir_list_reals(spec, "init_mu", m->D, 1, e);
    m->init_sd = svir_list_reals(spec, "init_sd", m->D, 1, e);
    m->init_loc = svir_list_reals(spec, "init_loc", m->nloc, 1, e);
    m->qem_level = svir_list_ints(spec, "qem_level", m->nterms, 1, e);
    const double *lam = svir_list_reals(spec, "centre", m->nterms, 1, e);
    for (int t = 0; lam && t < m->nterms; t++) {
        if (!(lam[t] >= 0.0 && lam[t] <= 1.0))
            return svir_err_set(e, 1, "svir internal error: centre must be in [0, 1]");
        if (lam[t] != 0.0 && m->terms[t].q > SVIR_QMAX_STACK)
            return svir_err_set(e, 1, "svir internal error: centre must be 0 for a term of more than %d columns",
                                SVIR_QMAX_STACK);
        /* the centred step is SVI's (glmm_svi.c) */
        if (lam[t] != 0.0 && c->method != SVIR_METHOD_SVI)
            return svir_err_set(e, 1, "svir internal error: centre is for SVI");
        m->terms[t].lambda = lam[t];
    }
    m->couple = svir_list_int(ctrl, "couple", 1) != 0;
    m->centre_learn = svir_list_int(spec, "centre_learn", 0) != 0;
    if (m->centre_learn && c->method != SVIR_METHOD_SVI)
        return svir_err_set(e, 1, "svir internal error: centre_learn is for SVI");
    m->qem_direct = svir_list_int(ctrl, "qem_direct", 0);
    return e->status;
}

/* the work of a step: the batch's observations; QEM's iteration: the K
 * draws' linear predictors and the groups' K x K tables, K n + K^2 J (with
 * nested factors K^(l + 1) per group of level l) */
static double glmm_size(const void *model, const svir_control *c)
{
    const svir_glmm *m = model;
    double B = (double)(c->batch_size > 0 && c->batch_size < m->n ? c->batch_size : m->n);
    if (c->method == SVIR_METHOD_QEM) {
        const double K = c->qem_K;
        B = K * (double)m->n;
        /* more than one factor (glmm_nest.c): a chain level l's tables,
         * K^(l + 1) per group; crossed factors K per group */
        for (int t = 0; t < m->nterms; t++)
            B += pow(K, m->qem_level ? m->qem_level[t] + 1 : 2) * (double)m->terms[t].ngroups;
    }
    return B;
}

/* one thread per 1e5 of that work, at most OpenMP's */
static int glmm_threads(const void *model, const svir_control *c)
{
#ifdef _OPENMP
    const ptrdiff_t B = (ptrdiff_t)glmm_size(model, c);
    const ptrdiff_t want = B / 100000 > 1 ? B / 100000 : 1;
    return want < omp_get_max_threads() ? (int)want : omp_get_max_threads();
#else
    (void)model;
    (void)c;
    return 1;
#endif
}

/* per term a (J x q) matrix of the groups' means, or of their packed C */
static int locals_out(const svir_glmm *m, const double *lpar, int want_C, svir_out *parent,
                      const char *name)
{
    svir_out *l = svir_out_list(parent, name);
    if (!l) return 2;
    for (int t = 0; t < m->nterms; t++) {
        const svir_term *tm = &m->terms[t];
        const int q = tm->q, J = tm->ngroups;
        const int nc = want_C ? q * (q + 1) / 2 : q;
        const ptrdiff_t lb = svir_local_block(q);
        double *x = svir_out_real(l, "", J, nc);
        if (!x) return 2;
        for (int j = 0; j < J; j++) {
            const double *blk = lpar + tm->off_loc + (ptrdiff_t)j * lb + (want_C ? q : 0);
            for (int k = 0; k < nc; k++) x[j + (ptrdiff_t)k * J] = blk[k];
        }
    }
    return 0;
}

/* mu, omega (meanfield, log sd) or L (fullrank, natural diagonal), m and C
 * per term, and the draws' coupling shifts per term (ndraws x q) */
static int glmm_outputs(const void *model, const svir_control *c, svir_result *res, svir_err *e)
{
    const svir_glmm *m = model;
    const ptrdiff_t D = m->D;
    svir_out *x = res->extra;
    int st = svir_out_copy(x, "mu", res->gpar, D, -1);
    if (!st && c->guide == SVIR_GUIDE_FULLRANK) {
        double *L = svir_out_real(x, "L", D, D);
        if (!L) st = 2;
        for (ptrdiff_t row = 0; L && row < D; row++)
            for (ptrdiff_t col = 0; col <= row; col++) {
                const double v = res->gpar[D + row * (row + 1) / 2 + col];
                L[row + col * D] = col == row ? exp(v) : v;
            }
    } else if (!st) {
        st = svir_out_copy(x, "omega", res->gpar + D, D, -1);
    }
    if (!st && c->keep_lpar) st = svir_out_copy(x, "lpar", res->lpar, m->nloc, -1);
    if (!st && m->centre_learn) {
        /* the learned partial centring of each term */
        double *lam = svir_out_real(x, "centre", m->nterms, -1);
        if (!lam) st = 2;
        for (int t = 0; lam && t < m->nterms; t++) lam[t] = m->terms[t].lambda;
    }
    if (!st) st = locals_out(m, res->lpar, 0, x, "m");
    if (!st) st = locals_out(m, res->lpar, 1, x, "C");
    svir_out *sh = st ? NULL : svir_out_list(x, "shift");
    if (!st && !sh) st = 2;
    for (int t = 0, qo = 0; !st && t < m->nterms; t++) {
        const int q = m->terms[t].q, nd = res->ndraws;
        double *s = svir_out_real(sh, "", nd, q);
        if (!s) st = 2;
        for (int k = 0; s && k < q; k++)
            for (int d = 0; d < nd; d++)
                s[d + (ptrdiff_t)k * nd] = res->draw_aux[(size_t)d + (size_t)(qo + k) * (size_t)nd];
        qo += q;
    }
    return st ? svir_err_set(e, 2, "out of memory for the results") : 0;
}

/* ---- the ways to fit ------------------------------------------------------ */

static int run_svi_cpu(void *model, const svir_control *c, const svir_callbacks *cb,
                       svir_result *res)
{
    return svir_svi_run(&svir_glmm_svi_ops, model, c, cb, res);
}

static int run_svi_cuda(void *model, const svir_control *c, const svir_callbacks *cb,
                        svir_result *res)
{
    if (svir_result_alloc(res, c)) return 2;
    char err[512] = "";
    const int st = svir_cuda_fit(model, c, cb, res, err, sizeof err);
    if (st && st != SVIR_INTERRUPTED) snprintf(res->message, sizeof res->message, "%s", err);
    return st;
}

static int run_qem_cpu(void *model, const svir_control *c, const svir_callbacks *cb,
                       svir_result *res)
{
    return svir_qem_run(&svir_glmm_qem_cpu_ops, model, c, cb, res);
}

static int run_qem_cuda(void *model, const svir_control *c, const svir_callbacks *cb,
                        svir_result *res)
{
    return svir_qem_run(&svir_glmm_qem_cuda_ops, model, c, cb, res);
}

/* the parts of a GLMM the CUDA code does not have */
static const char *glmm_cpu_only(const svir_list *spec)
{
    if (!svir_list_absent(spec, "Xz")) return "Zero inflation runs";
    if (!svir_list_absent(spec, "weights")) return "A fit with prior weights runs";
    const svir_list *lam = svir_list_get(spec, "centre");
    for (ptrdiff_t t = 0; lam && lam->type == SVIR_L_REAL && t < lam->len; t++)
        if (lam->real[t] != 0.0) return "Partially centred random effects run";
    return NULL;
}

static const svir_impl glmm_impls[] = {
    {SVIR_METHOD_SVI, SVIR_BACKEND_CPU, 1, 1, run_svi_cpu},
    {SVIR_METHOD_SVI, SVIR_BACKEND_CUDA, 1, 1, run_svi_cuda},
    {SVIR_METHOD_QEM, SVIR_BACKEND_CPU, 1, 0, run_qem_cpu},
    {SVIR_METHOD_QEM, SVIR_BACKEND_CUDA, 1, 0, run_qem_cuda},
};

SVIR_CODE_TABLE(family, SVIR_FAMILY_CODES)
SVIR_CODE_TABLE(link, SVIR_LINK_CODES)
SVIR_CODE_TABLE(prior, SVIR_PRIOR_CODES)
static const svir_code_table glmm_codes[] = {
    SVIR_CODE_ENTRY("family", family),
    SVIR_CODE_ENTRY("link", link),
    SVIR_CODE_ENTRY("prior", prior),
};

const svir_model_def svir_glmm_def = {
    "glmm", glmm_read, glmm_free, glmm_size, glmm_threads, glmm_outputs,
    glmm_impls, (int)(sizeof glmm_impls / sizeof glmm_impls[0]),
    glmm_codes, (int)(sizeof glmm_codes / sizeof glmm_codes[0]), "svi_fit()", glmm_cpu_only,
    /* backend = "auto" takes the device from 10^5 observations per step.
     * Measured with tools/gpucheck on an H200 against 16 CPU threads of its
     * host (2026-12-04, bench/README.md "GPU"): the device's full-batch SVI
     * step was 1.5x faster at 10^4 observations, 4.4x at 10^5, 15x at 10^6
     * and 42x at 10^7; start-up and uploads were not part of those times.
     * QEM's size is K n + K^2 J (glmm_size), so QEM takes the device from
     * about 6,000 observations; its iterations were measured at 10^6 and
     * 10^7 observations only, 128x to 150x faster. */
    1e5,
};
