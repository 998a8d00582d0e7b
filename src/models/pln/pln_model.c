/* The Poisson-lognormal model's table (infer/svir_model.h): its state read
 * from the spec R builds (R/pln-fit.R), its default threads, the full-batch
 * variational EM on the CPU and on the CUDA device, minibatches
 * (pln_mb.c) and QEM (pln_qem.c). */
#include "models/pln/pln_model.h"
#include "models/pln/pln_cuda.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void pln_free(void *model)
{
    svir_pln_model *m = model;
    if (!m) return;
    free(m->colwork);
    free(m);
}

/* sparse counts by rows (the transposed dgCMatrix's slots Rp, Rj, Rx),
 * for minibatches and PLN-PCA */
static int read_rows(const svir_list *spec, svir_pln_model *m, svir_err *e)
{
    return svir_list_sparse(spec, "Rp", "Rj", "Rx", m->dat.n, m->dat.p, &m->Rp, &m->Rj, &m->Rx, e);
}

/* spec: model = "pln", n, p, d, cov, q, the counts (Y dense, or Yp, Yi, Yx:
 * a dgCMatrix's slots), O (n x p) or Orow (n), X, P = (X'X)^-1 X', lgy, nd;
 * for the VE step Bfix with Omfix and logdet_om, or Wfix and lpsifix; the
 * variational fit's start par (not for minibatches); for minibatches inner,
 * fa_iters, ve_tol, switch_tol and
 * sparse counts by rows (Rp, Rj, Rx); for QEM lgy_entries and qem_start =
 * list(B, W, psi, mu_u, su, mu_e, tau). */
static int pln_read(const svir_list *spec, const svir_list *ctrl, const svir_control *c,
                    void **out, svir_err *e)
{
    (void)ctrl;
    svir_pln_model *m = calloc(1, sizeof *m);
    if (!m) return svir_err_set(e, 2, "out of memory reading the model");
    *out = m;
    svir_pln_data *d = &m->dat;
    d->n = svir_list_int(spec, "n", 0);
    d->p = svir_list_int(spec, "p", 0);
    d->d = svir_list_int(spec, "d", -1);
    d->cov = svir_list_int(spec, "cov", -1);
    d->q = svir_list_absent(spec, "q") ? 0 : svir_list_int(spec, "q", 0);
    if (d->n < 1 || d->p < 1 || d->d < 0 || d->cov < 0 || d->cov >= SVIR_PLN_NCOV ||
        ((d->cov == SVIR_PLN_RANK || d->cov == SVIR_PLN_PCA) && (d->q < 1 || d->q > d->p)))
        return svir_err_set(e, 1, "svir internal error: bad PLN dimensions");
    const ptrdiff_t np = (ptrdiff_t)d->n * d->p;
    if (svir_list_absent(spec, "Y")) {
        if (svir_list_sparse(spec, "Yp", "Yi", "Yx", d->p, d->n, &d->Yp, &d->Yi, &d->Yx, e))
            return e->status;
    } else {
        d->Y = svir_list_reals(spec, "Y", np, 0, e);
    }
    d->O = svir_list_reals(spec, "O", np, 1, e);
    d->Orow = svir_list_reals(spec, "Orow", d->n, 1, e);
    d->X = svir_list_reals(spec, "X", (ptrdiff_t)d->n * d->d, 0, e);
    d->P = svir_list_reals(spec, "P", (ptrdiff_t)d->n * d->d, 0, e);
    d->lgy = svir_list_num(spec, "lgy", 0.0);
    d->nd = svir_list_absent(spec, "nd") ? (double)d->n : svir_list_num(spec, "nd", d->n);
    if (e->status) return e->status;
    if (!(d->nd > 0)) return svir_err_set(e, 1, "svir internal error: nd must be positive");
    d->k0 = svir_list_num(spec, "k0", 0.0);
    d->s0 = svir_list_num(spec, "s0", 0.0);
    if (!(d->s0 >= 0.0) || !(d->nd + d->k0 > 0.0))
        return svir_err_set(e, 1, "svir internal error: s0 must be non-negative and nd + k0 positive");
    if (d->cov == SVIR_PLN_RANK && (d->k0 != 0.0 || d->s0 != 0.0))
        return svir_err_set(e, 1, "svir internal error: rank q takes no prior on Sigma (k0, s0)");
    d->Bfix = svir_list_reals(spec, "Bfix", (ptrdiff_t)d->d * d->p, 1, e);
    d->Omfix = svir_list_reals(spec, "Omfix", (ptrdiff_t)d->p * d->p, 1, e);
    d->Wfix = svir_list_reals(spec, "Wfix", (ptrdiff_t)d->p * d->q, 1, e);
    d->lpsifix = svir_list_reals(spec, "lpsifix", d->p, 1, e);
    if (e->status) return e->status;
    if (d->cov == SVIR_PLN_PCA) {
        /* PLN-PCA: the VE step holds B and C (Wfix); sparse counts by rows */
        if ((d->Wfix == NULL) != (d->Bfix == NULL) || d->lpsifix || d->Omfix)
            return svir_err_set(e, 1, "svir internal error: PLN-PCA holds Bfix and Wfix together");
        if (c->method == SVIR_METHOD_QEM || c->batch_size > 0)
            return svir_err_set(e, 1, "svir internal error: PLN-PCA is fitted by full-batch variational EM");
        if (!d->Y && read_rows(spec, m, e)) return e->status;
        d->threads = 1;
        d->block = svir_list_absent(spec, "block") ? 0 : svir_list_int(spec, "block", 0);
        m->par0 = svir_list_reals(spec, "par", svir_pln_npar(d), 1, e);
        return e->status;
    }
    if ((d->Wfix == NULL) != (d->lpsifix == NULL) || (d->Wfix && (!d->Bfix || d->cov != SVIR_PLN_RANK)))
        return svir_err_set(e, 1, "svir internal error: Wfix and lpsifix go together, with Bfix and rank q");
    if (d->Bfix && !d->Omfix && !d->Wfix)
        return svir_err_set(e, 1, "svir internal error: Bfix needs Omfix or Wfix");
    if (d->Omfix && !d->Bfix) return svir_err_set(e, 1, "svir internal error: Omfix needs Bfix");
    if (d->Omfix) d->logdet_om = svir_list_num(spec, "logdet_om", 0.0);
    m->colwork = malloc(sizeof(double) * 3 * (size_t)d->p);
    if (!m->colwork) return svir_err_set(e, 2, "out of memory reading the model");
    d->colwork = m->colwork;
    d->threads = 1;
    if (c->method == SVIR_METHOD_QEM) {
        m->lgy_entries = svir_list_reals(spec, "lgy_entries", np, 0, e);
        const svir_list *st = svir_list_get(spec, "qem_start");
        static const char *const nm[7] = {"B", "W", "psi", "mu_u", "su", "mu_e", "tau"};
        const ptrdiff_t len[7] = {(ptrdiff_t)d->d * d->p, (ptrdiff_t)d->p * d->q, d->p,
                                  (ptrdiff_t)d->n * d->q, (ptrdiff_t)d->n * d->q, np, np};
        for (int k = 0; k < 7 && !e->status; k++) m->qstart[k] = svir_list_reals(st, nm[k], len[k], 0, e);
        return e->status;
    }
    if (c->batch_size > 0) {
        /* minibatches keep no start of the locals (pln_mb.c) */
        m->inner = svir_list_int(spec, "inner", 50);
        m->fa_iters = svir_list_int(spec, "fa_iters", 5);
        m->ve_tol = svir_list_num(spec, "ve_tol", 1e-10);
        m->switch_tol = svir_list_num(spec, "switch_tol", 1e-4);
        if (m->inner < 1 || m->fa_iters < 1 || !(m->ve_tol > 0) || !(m->switch_tol > 0))
            return svir_err_set(e, 1, "svir internal error: bad minibatch settings");
        if (!d->Y && read_rows(spec, m, e)) return e->status;
        return e->status;
    }
    m->par0 = svir_list_reals(spec, "par", svir_pln_npar(d), 1, e);
    return e->status;
}

static double pln_size(const void *model, const svir_control *c)
{
    const svir_pln_model *m = model;
    (void)c;
    return (double)m->dat.n * m->dat.p;
}

/* one thread per 500,000 counts (QEM: per 50,000, its work per count being
 * K^2 exponentials), at most OpenMP's */
static int pln_threads(const void *model, const svir_control *c)
{
    return svir_default_threads(pln_size(model, c), c->method == SVIR_METHOD_QEM ? 50000.0 : 500000.0);
}

/* ---- full batches ---------------------------------------------------------- */

typedef struct {
    svir_pln_data dat;          /* the model's, with the fit's threads */
    double *x, *B, *Sigma;      /* the CPU's point and its globals */
    svir_lbfgs_problem *pb;
    svir_cuda_pln_state *dev;   /* the device's */
} pln_fit;

static void fit_free(void *fit)
{
    pln_fit *f = fit;
    if (!f) return;
    if (f->pb && f->pb->destroy && !f->dev) f->pb->destroy(f->pb);
    svir_cuda_pln_state_free(f->dev);
    free(f->x); free(f->B); free(f->Sigma);
    free(f);
}

static pln_fit *fit_alloc(const svir_pln_model *m, const svir_control *c, svir_err *e)
{
    if (!m->par0) {
        svir_err_set(e, 1, "svir internal error: spec$par (the start) is missing");
        return NULL;
    }
    pln_fit *f = calloc(1, sizeof *f);
    const svir_pln_data *d = &m->dat;
    const ptrdiff_t L = svir_pln_npar(d);
    /* PLN-PCA reports C, not Sigma = C C' (R forms it when asked) */
    const size_t nsig = d->cov == SVIR_PLN_PCA ? 1 : (size_t)d->p * d->p;
    if (f) {
        f->dat = *d;
        f->dat.threads = c->threads > 0 ? c->threads : 1;
        f->x = malloc(sizeof(double) * (size_t)L);
        f->B = calloc((size_t)d->d * d->p + 1, sizeof(double));
        f->Sigma = calloc(nsig, sizeof(double));
    }
    if (!f || !f->x || !f->B || !f->Sigma) {
        fit_free(f);
        svir_err_set(e, 2, "out of memory fitting the Poisson-lognormal model");
        return NULL;
    }
    memcpy(f->x, m->par0, sizeof(double) * (size_t)L);
    return f;
}

static void *fit_new_cpu(const void *model, const svir_control *c, svir_lbfgs_problem **pb,
                         svir_err *e)
{
    const svir_pln_model *m = model;
    pln_fit *f = fit_alloc(model, c, e);
    if (!f) return NULL;
    f->pb = f->dat.cov == SVIR_PLN_PCA ? svir_pln_pca_problem(&f->dat, m->Rp, m->Rj, m->Rx, f->x)
                                       : svir_pln_cpu_problem(&f->dat, f->x, f->B, f->Sigma);
    if (!f->pb) {
        fit_free(f);
        svir_err_set(e, 2, "out of memory fitting the Poisson-lognormal model");
        return NULL;
    }
    *pb = f->pb;
    return f;
}

static void *fit_new_cuda(const void *model, const svir_control *c, svir_lbfgs_problem **pb,
                          svir_err *e)
{
    if (((const svir_pln_model *)model)->dat.cov == SVIR_PLN_PCA) {
        svir_err_set(e, 1, "svir internal error: PLN-PCA runs on the CPU");
        return NULL;
    }
    pln_fit *f = fit_alloc(model, c, e);
    if (!f) return NULL;
    char err[512] = "";
    const int st = svir_cuda_pln_state_new(&f->dat, f->x, &f->dev, &f->pb, err, sizeof err);
    if (st) {
        fit_free(f);
        svir_err_set(e, st, "%s", err);
        return NULL;
    }
    *pb = f->pb;
    return f;
}

static int fit_finish(void *fit, svir_result *res, svir_err *e)
{
    pln_fit *f = fit;
    if (f->dev) {
        char err[512] = "";
        const int st = svir_cuda_pln_state_result(f->dev, f->x, f->B, f->Sigma, err, sizeof err);
        if (st) return svir_err_set(e, st, "%s", err);
    }
    /* the point (2 n p doubles and more) goes to the results without a copy */
    double *x = f->x;
    f->x = NULL;
    /* PLN-PCA's C and B are in the point (R reads them there) */
    const int pca = f->dat.cov == SVIR_PLN_PCA;
    if (svir_out_adopt(res->extra, "par", x, svir_pln_npar(&f->dat), -1) ||
        (!pca && (svir_out_copy(res->extra, "B", f->B, f->dat.d, f->dat.p) ||
                  svir_out_copy(res->extra, "Sigma", f->Sigma, f->dat.p, f->dat.p))))
        return svir_err_set(e, 2, "out of memory for the results");
    return 0;
}

const svir_vem_ops svir_pln_vem_cpu_ops = {
    fit_new_cpu, fit_free, fit_finish, svir_pln_mb_units, svir_pln_mb_new, svir_pln_mb_free,
    svir_pln_mb_begin, svir_pln_mb_step, svir_pln_mb_epoch, svir_pln_mb_finish,
};
const svir_vem_ops svir_pln_vem_cuda_ops = {
    fit_new_cuda, fit_free, fit_finish, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
};

/* ---- the table ----------------------------------------------------------- */

static int run_vem_cpu(void *model, const svir_control *c, const svir_callbacks *cb,
                       svir_result *res)
{
    return svir_vem_run(&svir_pln_vem_cpu_ops, model, c, cb, res);
}

static int run_vem_cuda(void *model, const svir_control *c, const svir_callbacks *cb,
                        svir_result *res)
{
    return svir_vem_run(&svir_pln_vem_cuda_ops, model, c, cb, res);
}

static int run_qem(void *model, const svir_control *c, const svir_callbacks *cb,
                   svir_result *res)
{
    return svir_qem_run(&svir_pln_qem_ops, model, c, cb, res);
}

static const svir_impl pln_impls[] = {
    {SVIR_METHOD_VEM, SVIR_BACKEND_CPU, 1, 1, run_vem_cpu},
    {SVIR_METHOD_VEM, SVIR_BACKEND_CUDA, 1, 0, run_vem_cuda},
    {SVIR_METHOD_QEM, SVIR_BACKEND_CPU, 1, 0, run_qem},
};

SVIR_CODE_TABLE(pln_cov, SVIR_PLN_COV_CODES)
static const svir_code_table pln_codes[] = {SVIR_CODE_ENTRY("pln_cov", pln_cov)};

const svir_model_def svir_pln_def = {
    "pln", pln_read, pln_free, pln_size, pln_threads, NULL,
    pln_impls, (int)(sizeof pln_impls / sizeof pln_impls[0]),
    pln_codes, 1, "pln()", NULL, 0.0,
};
