/* The entries of the GLMM's method "laplace" (R/laplace.R): the Laplace
 * marginal of the variance parameters at one theta (the outer search),
 * and the importance sampler: draws of theta_h from a multivariate t, of
 * u = (beta, b) from the Laplace Gaussian given each, and their log
 * importance ratios log p(y, theta, z) - log g(theta_h) - log q(z |
 * theta_h). OpenMP over draws; the noise is Philox's (stream
 * SVIR_STREAM_LAPLACE, step = draw), so the draws do not depend on the
 * number of threads. */
#include "glue/r_test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "core/svir_philox.h"
#include "models/glmm/glmm_laplace.h"
#include "models/glmm/glmm_svi.h"

static void plan_finalize(SEXP p)
{
    svir_lap_plan *pl = R_ExternalPtrAddr(p);
    if (pl) {
        svir_lap_plan_free(pl);
        free(pl);
    }
    R_ClearExternalPtr(p);
}

/* a plan held by an external pointer (freed if R unwinds) */
static svir_lap_plan *plan_new(const svir_glmm *m, int integrate, SEXP *hp)
{
    svir_lap_plan *pl = calloc(1, sizeof *pl);
    if (!pl) Rf_error("svir: out of memory");
    *hp = PROTECT(R_MakeExternalPtr(pl, R_NilValue, R_NilValue));
    R_RegisterCFinalizerEx(*hp, plan_finalize, TRUE);
    if (svir_lap_plan_init(pl, m, integrate)) Rf_error("svir: out of memory");
    return pl;
}

/* The model of spec and its plan, both held (two protections), and the
 * workspace of one thread (freed by R). */
/* spec$lap_integrate = FALSE keeps an observation-level term in the
 * Newton system (for comparisons); absent or TRUE integrates it out */
static int lap_integrate(SEXP spec)
{
    const SEXP li = svir_r_get(spec, "lap_integrate");
    return Rf_isNull(li) || Rf_asLogical(li) != 0;
}

static svir_lap_plan *lap_open(SEXP spec, const svir_glmm **m, SEXP *hm, SEXP *hp, double **work)
{
    *m = svir_r_model(&svir_glmm_def, spec, R_NilValue, NULL, hm);
    svir_lap_plan *pl = plan_new(*m, lap_integrate(spec), hp);
    if (work) *work = (double *)R_alloc((size_t)svir_lap_work_size(pl), sizeof(double));
    return pl;
}

/* list(logp, u, iters, ok): the conditional mode of u given theta's
 * variance parameters, started at u0 */
SEXP svir_lap_mode_r(SEXP spec, SEXP theta, SEXP u0)
{
    SEXP hm, hp;
    const svir_glmm *m;
    double *work;
    svir_lap_plan *pl = lap_open(spec, &m, &hm, &hp, &work);
    svir_r_check_real(theta, m->D, "theta");
    svir_r_check_real(u0, m->p + m->nz, "u0");
    SEXP u = PROTECT(Rf_duplicate(u0));
    double logp = NAN;
    int iters = 0;
    const int st = svir_lap_mode(pl, REAL(theta), REAL(u), work, &logp, &iters);
    SEXP out = PROTECT(Rf_allocVector(VECSXP, 5));
    SEXP nms = PROTECT(Rf_allocVector(STRSXP, 5));
    svir_r_set(out, nms, 0, "logp", Rf_ScalarReal(st ? R_NegInf : logp));
    svir_r_set(out, nms, 1, "u", u);
    svir_r_set(out, nms, 2, "iters", Rf_ScalarInteger(iters));
    svir_r_set(out, nms, 3, "ok", Rf_ScalarLogical(st == 0));
    /* the term integrated out by quadrature (1-based), 0 for none */
    svir_r_set(out, nms, 4, "integrated", Rf_ScalarInteger(pl->O + 1));
    Rf_setAttrib(out, R_NamesSymbol, nms);
    svir_r_model_done(hm);
    UNPROTECT(5);
    return out;
}

/* The term the Laplace step integrates out per observation (1-based), 0
 * for none: R's cost estimate asks before any step runs */
SEXP svir_lap_integrated_r(SEXP spec)
{
    SEXP hm;
    const svir_glmm *m = svir_r_model(&svir_glmm_def, spec, R_NilValue, NULL, &hm);
    const int t = lap_integrate(spec) ? svir_lap_pick_integrated(m) : -1;
    svir_r_model_done(hm);
    UNPROTECT(1);
    return Rf_ScalarInteger(t + 1);
}

/* log p(y, beta, b, theta_h) at u = (beta, b) (b-units), for the tests */
SEXP svir_lap_logf_r(SEXP spec, SEXP theta, SEXP u)
{
    SEXP hm, hp;
    const svir_glmm *m;
    double *work;
    svir_lap_plan *pl = lap_open(spec, &m, &hm, &hp, &work);
    svir_r_check_real(theta, m->D, "theta");
    svir_r_check_real(u, m->p + m->nz, "u");
    const double f = svir_lap_logf(pl, REAL(theta), REAL(u), work);
    svir_r_model_done(hm);
    UNPROTECT(2);
    return Rf_ScalarReal(f);
}

/* The importance sampler. mode: theta [D] with the variance parameters'
 * proposal centre at theta[p..D); u0: the start of each draw's Newton
 * steps; Lp: the proposal scale's lower Cholesky factor [dh x dh]; nu:
 * the t's degrees of freedom (a whole number); S draws from draw `first`
 * on (the step of Philox's counter). Returns list(theta [D x S], z [nz x
 * S], logw [S], logp [S] (the Laplace marginal at each theta_h), ok [S]). */
SEXP svir_lap_is_r(SEXP spec, SEXP mode, SEXP u0, SEXP Lp, SEXP nu_, SEXP S_, SEXP first_,
                   SEXP seed_, SEXP threads_)
{
    SEXP hm, hp;
    const svir_glmm *m;
    svir_lap_plan *pl = lap_open(spec, &m, &hm, &hp, NULL);
    const int p = m->p, D = (int)m->D, dh = D - p;
    const ptrdiff_t nu_len = m->p + m->nz, nz = m->nz;
    svir_r_check_real(mode, D, "mode");
    svir_r_check_real(u0, nu_len, "u0");
    svir_r_check_real(Lp, (R_xlen_t)dh * dh, "Lp");
    const int nu = Rf_asInteger(nu_), S = Rf_asInteger(S_);
    const double first = Rf_asReal(first_), seed = Rf_asReal(seed_);
    if (nu < 1 || S < 1) Rf_error("svir internal error: nu and S must be positive");
    int T = Rf_asInteger(threads_);
#ifdef _OPENMP
    if (T <= 0) T = omp_get_max_threads();
#endif
    if (T <= 0) T = 1;
    const uint64_t s64 = (uint64_t)seed;
    const uint32_t key[2] = {(uint32_t)(s64 & 0xffffffffu), (uint32_t)(s64 >> 32)};
    const ptrdiff_t ws = svir_lap_work_size(pl);
    const ptrdiff_t per = ws + nu_len * 2 + pl->d + dh + nu + D + 8;
    double *work = (double *)R_alloc((size_t)per * (size_t)T, sizeof(double));
    SEXP th = PROTECT(Rf_allocMatrix(REALSXP, D, S));
    SEXP zz = PROTECT(Rf_allocMatrix(REALSXP, (int)(nz > 0 ? nz : 0), S));
    SEXP lw = PROTECT(Rf_allocVector(REALSXP, S));
    SEXP lpv = PROTECT(Rf_allocVector(REALSXP, S));
    SEXP okv = PROTECT(Rf_allocVector(LGLSXP, S));
    const double *L = REAL(Lp), *mu = REAL(mode), *ustart = REAL(u0);
    double ldL = 0.0;
    for (int k = 0; k < dh; k++) ldL += log(L[k + k * dh]);
    const double lgc = lgamma(0.5 * (nu + dh)) - lgamma(0.5 * nu) - 0.5 * dh * log(nu * M_PI) - ldL;
    double *TH = REAL(th), *Z = REAL(zz), *LW = REAL(lw), *LP = REAL(lpv);
    int *OK = LOGICAL(okv);
    /* in blocks, with R's interrupt check between them (on this thread) */
    const int block = 128 * T; /* few barriers: a busy machine makes each one slow */
    for (int s0 = 0; s0 < S; s0 += block) {
        const int s1 = s0 + block < S ? s0 + block : S;
#ifdef _OPENMP
#pragma omp parallel for num_threads(T) schedule(dynamic, 1)
#endif
        for (int s = s0; s < s1; s++) {
            int tid = 0;
#ifdef _OPENMP
            tid = omp_get_thread_num();
#endif
            double *w = work + (ptrdiff_t)tid * per;
            double *u = w + ws, *ud = u + nu_len, *eps = ud + nu_len, *eh = eps + pl->d;
            double *chi = eh + dh, *tf = chi + nu;
            const uint64_t step = (uint64_t)(first + s);
            svir_normal_fill(key, SVIR_STREAM_LAPLACE, step, 0, dh + nu, eh);
            double c2 = 0.0, m2 = 0.0;
            for (int k = 0; k < nu; k++) c2 += chi[k] * chi[k];
            const double sc = sqrt((double)nu / c2);
            for (int k = 0; k < dh; k++) m2 += eh[k] * eh[k] * sc * sc;
            memcpy(tf, mu, sizeof(double) * (size_t)D);
            for (int r = 0; r < dh; r++) {
                double v = 0.0;
                for (int c = 0; c <= r; c++) v += L[r + c * dh] * eh[c];
                tf[p + r] = mu[p + r] + sc * v;
            }
            const double logg = lgc - 0.5 * (nu + dh) * log1p(m2 / nu);
            memcpy(u, ustart, sizeof(double) * (size_t)nu_len);
            double logp = NAN, logf = NAN;
            int it = 0;
            int ok = svir_lap_mode(pl, tf, u, w, &logp, &it) == 0;
            double logq = 0.0;
            if (ok) {
                svir_normal_fill(key, SVIR_STREAM_LAPLACE, step, (uint64_t)(dh + nu), pl->d, eps);
                logq = svir_lap_draw(pl, tf, u, eps, ud, w, &logf);
                ok = isfinite(logq) && isfinite(logf);
                /* the integrated term's effects from their exact
                 * conditionals: they leave the weight as it is */
                if (ok) svir_lap_fill(pl, tf, ud, key, step, w);
            }
            double *ths = TH + (ptrdiff_t)s * D;
            memcpy(ths, tf, sizeof(double) * (size_t)D);
            if (ok) {
                for (int k = 0; k < p; k++) ths[k] = ud[k];
                svir_lap_z_from_b(m, tf, ud + p, Z + (ptrdiff_t)s * nz, w);
            } else {
                for (ptrdiff_t k = 0; k < nz; k++) Z[(ptrdiff_t)s * nz + k] = 0.0;
            }
            LW[s] = ok ? logf - logq - logg : R_NegInf;
            LP[s] = ok ? logp - logg : R_NegInf;
            OK[s] = ok;
        }
        R_CheckUserInterrupt();
    }
    SEXP out = PROTECT(Rf_allocVector(VECSXP, 5));
    SEXP nms = PROTECT(Rf_allocVector(STRSXP, 5));
    svir_r_set(out, nms, 0, "theta", th);
    svir_r_set(out, nms, 1, "z", zz);
    svir_r_set(out, nms, 2, "logw", lw);
    svir_r_set(out, nms, 3, "logw_marginal", lpv);
    svir_r_set(out, nms, 4, "ok", okv);
    Rf_setAttrib(out, R_NamesSymbol, nms);
    svir_r_model_done(hm);
    UNPROTECT(9);
    return out;
}
