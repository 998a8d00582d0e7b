/* R glue of the Poisson-lognormal objective (src/svir_pln.c). */
#include <R.h>
#include <Rinternals.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "models/pln/pln_cuda.h"
#include "models/pln/pln.h"
#include "models/pln/pln_mb.h"
#include "models/pln/pln_qem.h"

static SEXP pln_elt(SEXP list, const char *name)
{
    SEXP nms = Rf_getAttrib(list, R_NamesSymbol);
    for (R_xlen_t k = 0; k < Rf_xlength(list); k++)
        if (strcmp(CHAR(STRING_ELT(nms, k)), name) == 0) return VECTOR_ELT(list, k);
    return R_NilValue;
}

/* out[k] = v, named name (v is held by out before the name is made) */
static void put(SEXP out, SEXP nms, int k, const char *name, SEXP v)
{
    SET_VECTOR_ELT(out, k, v);
    SET_STRING_ELT(nms, k, Rf_mkChar(name));
}

static const double *dbl(SEXP x, R_xlen_t len, const char *what, int null_ok)
{
    if (null_ok && Rf_isNull(x)) return NULL;
    if (TYPEOF(x) != REALSXP || Rf_xlength(x) != len)
        Rf_error("svir internal error: %s must be a double vector of length %lld", what,
                 (long long)len);
    return REAL(x);
}

static const int *intv(SEXP x, R_xlen_t len, const char *what)
{
    if (TYPEOF(x) != INTSXP || Rf_xlength(x) != len)
        Rf_error("svir internal error: %s must be an integer vector of length %lld", what,
                 (long long)len);
    return INTEGER(x);
}

/* dat: list(Y (dense, or NULL with Yp, Yi, Yx: a dgCMatrix's slots), O
 * (n x p or NULL), Orow (n or NULL), X, P, lgy, cov, q, nd, n, p, d,
 * threads, and for the VE step Bfix, Omfix, logdet_om) */
static void read_dat(SEXP dat, svir_pln_data *d)
{
    memset(d, 0, sizeof *d);
    d->n = Rf_asInteger(pln_elt(dat, "n"));
    d->p = Rf_asInteger(pln_elt(dat, "p"));
    d->d = Rf_asInteger(pln_elt(dat, "d"));
    d->cov = Rf_asInteger(pln_elt(dat, "cov"));
    d->q = Rf_isNull(pln_elt(dat, "q")) ? 0 : Rf_asInteger(pln_elt(dat, "q"));
    if (d->n < 1 || d->p < 1 || d->d < 0 || d->cov < 0 || d->cov > 3 ||
        (d->cov == SVIR_PLN_RANK && (d->q < 1 || d->q > d->p)))
        Rf_error("svir internal error: bad PLN dimensions");
    const R_xlen_t np = (R_xlen_t)d->n * d->p;
    SEXP Y = pln_elt(dat, "Y");
    if (Rf_isNull(Y)) {
        d->Yp = intv(pln_elt(dat, "Yp"), d->p + 1, "Yp");
        const R_xlen_t nz = d->Yp[d->p];
        d->Yi = intv(pln_elt(dat, "Yi"), nz, "Yi");
        d->Yx = dbl(pln_elt(dat, "Yx"), nz, "Yx", 0);
        for (int j = 0; j < d->p; j++)
            if (d->Yp[j] > d->Yp[j + 1]) Rf_error("svir internal error: bad sparse columns");
        for (R_xlen_t z = 0; z < nz; z++)
            if (d->Yi[z] < 0 || d->Yi[z] >= d->n) Rf_error("svir internal error: bad sparse rows");
    } else {
        d->Y = dbl(Y, np, "Y", 0);
    }
    d->O = dbl(pln_elt(dat, "O"), np, "O", 1);
    d->Orow = dbl(pln_elt(dat, "Orow"), d->n, "Orow", 1);
    d->X = dbl(pln_elt(dat, "X"), (R_xlen_t)d->n * d->d, "X", 0);
    d->P = dbl(pln_elt(dat, "P"), (R_xlen_t)d->n * d->d, "P", 0);
    d->lgy = Rf_asReal(pln_elt(dat, "lgy"));
    d->nd = Rf_isNull(pln_elt(dat, "nd")) ? (double)d->n : Rf_asReal(pln_elt(dat, "nd"));
    if (!(d->nd > 0)) Rf_error("svir internal error: nd must be positive");
    d->Bfix = dbl(pln_elt(dat, "Bfix"), (R_xlen_t)d->d * d->p, "Bfix", 1);
    d->Omfix = dbl(pln_elt(dat, "Omfix"), (R_xlen_t)d->p * d->p, "Omfix", 1);
    d->Wfix = dbl(pln_elt(dat, "Wfix"), (R_xlen_t)d->p * d->q, "Wfix", 1);
    d->lpsifix = dbl(pln_elt(dat, "lpsifix"), d->p, "lpsifix", 1);
    if ((d->Wfix == NULL) != (d->lpsifix == NULL) || (d->Wfix && (!d->Bfix || d->cov != SVIR_PLN_RANK)))
        Rf_error("svir internal error: Wfix and lpsifix go together, with Bfix and rank q");
    if (d->Bfix && !d->Omfix && !d->Wfix)
        Rf_error("svir internal error: Bfix needs Omfix or Wfix");
    if (d->Omfix && !d->Bfix)
        Rf_error("svir internal error: Omfix needs Bfix");
    if (d->Omfix) d->logdet_om = Rf_asReal(pln_elt(dat, "logdet_om"));
    /* threads: as given, or one per 500,000 counts, at most OpenMP's */
    int T = Rf_asInteger(pln_elt(dat, "threads"));
#ifdef _OPENMP
    if (T == NA_INTEGER || T < 1) {
        const R_xlen_t want = (np + 499999) / 500000;
        T = want < omp_get_max_threads() ? (int)want : omp_get_max_threads();
    }
#else
    T = 1;
#endif
    d->threads = T > 0 ? T : 1;
    d->colwork = (double *)R_alloc(3 * (size_t)d->p, sizeof(double));
}

/* The objective at par [svir_pln_npar] on the CPU or (cuda) the device
 * (svir_cuda_pln_eval_host, for the parity tests): list(J, grad, B,
 * Sigma). */
static SEXP pln_eval_common(SEXP dat, SEXP par, int cuda)
{
    svir_pln_data d;
    read_dat(dat, &d);
    const R_xlen_t npar = svir_pln_npar(&d);
    const double *pr = dbl(par, npar, "par", 0);
#ifndef SVIR_HAVE_CUDA
    if (cuda) Rf_error("svir was built without CUDA");
#endif
    SEXP out = PROTECT(Rf_allocVector(VECSXP, 4));
    SEXP nms = PROTECT(Rf_allocVector(STRSXP, 4));
    SEXP grad = PROTECT(Rf_allocVector(REALSXP, npar));
    SEXP B = PROTECT(Rf_allocMatrix(REALSXP, d.d, d.p));
    SEXP S = PROTECT(Rf_allocMatrix(REALSXP, d.p, d.p));
    memset(REAL(S), 0, sizeof(double) * (size_t)d.p * d.p);
    double J = 0.0;
    char err[512] = "";
    int st;
    if (cuda) {
#ifdef SVIR_HAVE_CUDA
        st = svir_cuda_pln_eval_host(&d, pr, &J, REAL(grad), REAL(B), REAL(S), err, sizeof err);
#else
        st = 1;
#endif
    } else {
        double *work = (double *)R_alloc((size_t)svir_pln_nwork(&d), sizeof(double));
        st = svir_pln_eval(&d, pr, &J, REAL(grad), REAL(B), REAL(S), work, err, sizeof err);
    }
    if (st) Rf_error(cuda ? "svir (CUDA backend): %s" : "svir: %s", err);
    put(out, nms, 0, "J", Rf_ScalarReal(J));
    put(out, nms, 1, "grad", grad);
    put(out, nms, 2, "B", B);
    put(out, nms, 3, "Sigma", S);
    Rf_setAttrib(out, R_NamesSymbol, nms);
    UNPROTECT(5);
    return out;
}

SEXP svir_pln_eval_r(SEXP dat, SEXP par) { return pln_eval_common(dat, par, 0); }
SEXP svir_pln_eval_cuda_r(SEXP dat, SEXP par) { return pln_eval_common(dat, par, 1); }

/* The fit from par [svir_pln_npar] on the CPU (svir_pln_fit) or (cuda)
 * the device (svir_cuda_pln_fit): list(J, par, iterations, trace, B,
 * Sigma), plus seconds (the device loop's wall time) from the device. */
static SEXP pln_fit_common(SEXP dat, SEXP par, SEXP maxit, SEXP tol, int cuda)
{
    svir_pln_data d;
    read_dat(dat, &d);
    dbl(par, svir_pln_npar(&d), "par", 0);
    const int mi = Rf_asInteger(maxit);
    if (mi < 1 || mi == NA_INTEGER) Rf_error("svir internal error: maxit must be positive");
#ifndef SVIR_HAVE_CUDA
    if (cuda) Rf_error("svir was built without CUDA");
#endif
    const int nout = cuda ? 7 : 6;
    SEXP out = PROTECT(Rf_allocVector(VECSXP, nout));
    SEXP nms = PROTECT(Rf_allocVector(STRSXP, nout));
    SEXP P = PROTECT(Rf_duplicate(par));
    SEXP B = PROTECT(Rf_allocMatrix(REALSXP, d.d, d.p));
    SEXP S = PROTECT(Rf_allocMatrix(REALSXP, d.p, d.p));
    memset(REAL(S), 0, sizeof(double) * (size_t)d.p * d.p);
    double *trace = (double *)R_alloc((size_t)mi, sizeof(double));
    double J = 0.0, secs = 0.0;
    int iters = 0, st;
    char err[512] = "";
    if (cuda) {
#ifdef SVIR_HAVE_CUDA
        st = svir_cuda_pln_fit(&d, REAL(P), mi, Rf_asReal(tol), &J, &iters, trace, REAL(B), REAL(S),
                               &secs, err, sizeof err);
#else
        st = 1;
#endif
    } else {
        st = svir_pln_fit(&d, REAL(P), mi, Rf_asReal(tol), &J, &iters, trace, REAL(B), REAL(S), err,
                          sizeof err);
    }
    if (st) Rf_error(cuda ? "svir (CUDA backend): %s" : "svir: %s", err);
    SEXP tr = PROTECT(Rf_allocVector(REALSXP, iters));
    if (iters > 0) memcpy(REAL(tr), trace, sizeof(double) * (size_t)iters);
    put(out, nms, 0, "J", Rf_ScalarReal(J));
    put(out, nms, 1, "par", P);
    put(out, nms, 2, "iterations", Rf_ScalarInteger(iters));
    put(out, nms, 3, "trace", tr);
    put(out, nms, 4, "B", B);
    put(out, nms, 5, "Sigma", S);
    if (cuda) put(out, nms, 6, "seconds", Rf_ScalarReal(secs));
    Rf_setAttrib(out, R_NamesSymbol, nms);
    UNPROTECT(6);
    return out;
}

SEXP svir_pln_fit_r(SEXP dat, SEXP par, SEXP maxit, SEXP tol)
{
    return pln_fit_common(dat, par, maxit, tol, 0);
}

SEXP svir_pln_fit_cuda_r(SEXP dat, SEXP par, SEXP maxit, SEXP tol)
{
    return pln_fit_common(dat, par, maxit, tol, 1);
}

/* The fit in minibatches (svir_pln_mb_fit): mbx = list(Rp, Rj, Rx (sparse
 * counts by rows, or NULL), XtXinv); list(J, par, epochs, steps, trace, B,
 * Sigma). */
SEXP svir_pln_mb_r(SEXP dat, SEXP mbx, SEXP par, SEXP ctl, SEXP seed)
{
    svir_pln_data d;
    read_dat(dat, &d);
    svir_pln_mb_data mb;
    memset(&mb, 0, sizeof mb);
    mb.dat = &d;
    mb.XtXinv = dbl(pln_elt(mbx, "XtXinv"), (R_xlen_t)d.d * d.d, "XtXinv", 0);
    if (!d.Y) {
        mb.Rp = intv(pln_elt(mbx, "Rp"), (R_xlen_t)d.n + 1, "Rp");
        const R_xlen_t nz = mb.Rp[d.n];
        mb.Rj = intv(pln_elt(mbx, "Rj"), nz, "Rj");
        mb.Rx = dbl(pln_elt(mbx, "Rx"), nz, "Rx", 0);
        for (R_xlen_t z = 0; z < nz; z++)
            if (mb.Rj[z] < 0 || mb.Rj[z] >= d.p) Rf_error("svir internal error: bad sparse columns");
    }
    dbl(par, svir_pln_npar(&d), "par", 0);
    /* ctl: batch, max_steps, inner, fa_iters, tol */
    const double *c = dbl(ctl, 5, "ctl", 0);
    const int batch = (int)c[0], maxs = (int)c[1], inner = (int)c[2], fai = (int)c[3];
    if (batch < 1 || maxs < 1 || inner < 1 || fai < 1) Rf_error("svir internal error: bad minibatch settings");
    SEXP P = PROTECT(Rf_duplicate(par));
    SEXP B = PROTECT(Rf_allocMatrix(REALSXP, d.d, d.p));
    SEXP S = PROTECT(Rf_allocMatrix(REALSXP, d.p, d.p));
    double *trace = (double *)R_alloc((size_t)maxs, sizeof(double));
    double J = 0.0;
    int epochs = 0, steps = 0;
    char err[256] = "";
    const int st = svir_pln_mb_fit(&mb, REAL(P), batch, maxs, inner, fai, c[4],
                                   (uint64_t)Rf_asReal(seed), trace, &epochs, &steps, &J,
                                   REAL(B), REAL(S), err, sizeof err);
    if (st) Rf_error("svir: %s", err);
    SEXP tr = PROTECT(Rf_allocVector(REALSXP, epochs));
    if (epochs > 0) memcpy(REAL(tr), trace, sizeof(double) * (size_t)epochs);
    SEXP out = PROTECT(Rf_allocVector(VECSXP, 7));
    SEXP nms = PROTECT(Rf_allocVector(STRSXP, 7));
    put(out, nms, 0, "J", Rf_ScalarReal(J));
    put(out, nms, 1, "par", P);
    put(out, nms, 2, "epochs", Rf_ScalarInteger(epochs));
    put(out, nms, 3, "steps", Rf_ScalarInteger(steps));
    put(out, nms, 4, "trace", tr);
    put(out, nms, 5, "B", B);
    put(out, nms, 6, "Sigma", S);
    Rf_setAttrib(out, R_NamesSymbol, nms);
    UNPROTECT(6);
    return out;
}

/* QEM for rank q (svir_pln_qem_fit): dat = list(Y, O, X, lgy, n, p, d, q,
 * threads); st = list(B, W, psi, mu_u, su, mu_e, tau), copied; ctl =
 * c(K, max_iter, min_iter, eta0, kappa). Returns st's updated copies with
 * trace, iterations and ess. */
SEXP svir_pln_qem_r(SEXP dat, SEXP st, SEXP ctl, SEXP seed)
{
    svir_pln_qem_data d;
    d.n = Rf_asInteger(pln_elt(dat, "n"));
    d.p = Rf_asInteger(pln_elt(dat, "p"));
    d.d = Rf_asInteger(pln_elt(dat, "d"));
    d.q = Rf_asInteger(pln_elt(dat, "q"));
    d.threads = Rf_asInteger(pln_elt(dat, "threads"));
    if (d.n < 1 || d.p < 1 || d.d < 0 || d.q < 1) Rf_error("svir internal error: bad QEM dimensions");
    const R_xlen_t np = (R_xlen_t)d.n * d.p;
    d.Y = dbl(pln_elt(dat, "Y"), np, "Y", 0);
    d.O = dbl(pln_elt(dat, "O"), np, "O", 1);
    d.X = dbl(pln_elt(dat, "X"), (R_xlen_t)d.n * d.d, "X", 0);
    d.lgy = dbl(pln_elt(dat, "lgy"), np, "lgy", 0);
#ifdef _OPENMP
    if (d.threads == NA_INTEGER || d.threads < 1) {
        const R_xlen_t want = (np + 49999) / 50000;
        d.threads = want < omp_get_max_threads() ? (int)want : omp_get_max_threads();
    }
#else
    d.threads = 1;
#endif
    const double *c = dbl(ctl, 5, "ctl", 0);
    const int K = (int)c[0], maxit = (int)c[1], minit = (int)c[2];
    if (K < 2 || maxit < 1) Rf_error("svir internal error: bad QEM settings");
    const char *names[7] = {"B", "W", "psi", "mu_u", "su", "mu_e", "tau"};
    const R_xlen_t lens[7] = {(R_xlen_t)d.d * d.p, (R_xlen_t)d.p * d.q, d.p, (R_xlen_t)d.n * d.q,
                              (R_xlen_t)d.n * d.q, np, np};
    SEXP out = PROTECT(Rf_allocVector(VECSXP, 10));
    SEXP nms = PROTECT(Rf_allocVector(STRSXP, 10));
    double *ptr[7];
    for (int k = 0; k < 7; k++) {
        dbl(pln_elt(st, names[k]), lens[k], names[k], 0);
        put(out, nms, k, names[k], Rf_duplicate(pln_elt(st, names[k])));
        ptr[k] = REAL(VECTOR_ELT(out, k));
    }
    svir_pln_qem_state s = {ptr[0], ptr[1], ptr[2], ptr[3], ptr[4], ptr[5], ptr[6]};
    double *trace = (double *)R_alloc((size_t)maxit, sizeof(double));
    put(out, nms, 9, "ess", Rf_allocVector(REALSXP, d.n));
    int iters = 0;
    char err[256] = "";
    const int rc = svir_pln_qem_fit(&d, &s, K, maxit, minit, c[3], c[4], (uint64_t)Rf_asReal(seed),
                                    trace, &iters, REAL(VECTOR_ELT(out, 9)), err, sizeof err);
    if (rc) Rf_error("svir: %s", err);
    SEXP tr = Rf_allocVector(REALSXP, iters);
    put(out, nms, 7, "trace", tr);
    memcpy(REAL(tr), trace, sizeof(double) * (size_t)iters);
    put(out, nms, 8, "iterations", Rf_ScalarInteger(iters));
    Rf_setAttrib(out, R_NamesSymbol, nms);
    UNPROTECT(2);
    return out;
}
