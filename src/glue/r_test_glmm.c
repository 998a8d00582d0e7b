/* Test-only entry points of the GLMM (registered apart in src/init.c):
 * its log density and gradients, blocks of log-likelihoods, one ELBO
 * estimate, the tree bound, and the CPU/CUDA parity checks of the
 * observation pass, the groups' step, Adam and the ELBO estimate. */
#include "glue/r_test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/svir_adam.h"
#include "models/glmm/glmm_cuda.h"
#include "models/glmm/glmm_local.h"
#include "models/glmm/glmm_svi.h"

/* The K-sample tree bound of guides (one per column of gpar, lpar, anchor):
 * a reps x ncol matrix (svir_tree_bound). For bench/qem.R. */
SEXP svir_tree_bound_r(SEXP spec, SEXP ctrl, SEXP gpar, SEXP lpar, SEXP anchor, SEXP K,
                       SEXP reps)
{
    svir_control c;
    SEXP hp;
    const svir_glmm *m = svir_r_model(&svir_glmm_def, spec, ctrl, &c, &hp);
    const ptrdiff_t ngp = svir_glmm_n_global(m, c.guide);
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
            svir_r_model_done(hp);
            UNPROTECT(2);
            Rf_error("svir: %s", err);
        }
    }
    svir_r_model_done(hp);
    UNPROTECT(2);
    return out;
}

static void z_from_r(const svir_glmm *m, SEXP zl, double *z)
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
    SEXP hp;
    const svir_glmm *m = svir_r_model(&svir_glmm_def, spec, R_NilValue, NULL, &hp);
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
    svir_r_set(out, nms, 0, "logp", Rf_ScalarReal(lp));
    svir_r_set(out, nms, 1, "grad_theta", gt);
    svir_r_set(out, nms, 2, "grad_z", gzl);
    svir_r_set(out, nms, 3, "loglik", Rf_ScalarReal(ll));
    Rf_setAttrib(out, R_NamesSymbol, nms);
    svir_r_model_done(hp);
    UNPROTECT(7);
    return out;
}

/* Log-likelihoods of the draws in the columns of theta (D x k) and z (list
 * of per-term arrays, groups x q x k), by svir_loglik_block in blocks. */
SEXP svir_loglik_block_r(SEXP spec, SEXP theta, SEXP zl)
{
    SEXP hp;
    const svir_glmm *m = svir_r_model(&svir_glmm_def, spec, R_NilValue, NULL, &hp);
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
    double *beta = malloc(sizeof(double) * (size_t)NB * (size_t)(m->p + m->pz + 1));
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
    svir_r_model_done(hp);
    UNPROTECT(2);
    return out;
}

/* svir_elbo_grad at vpar for `step` on the CPU, or its CUDA version
 * (svir_cuda_elbo_grad_host): list(elbo, grad, glam), glam the learned
 * centring's d ELBO / d lambda per term (CPU; 0 on the device) */
static SEXP elbo_grad(SEXP spec, SEXP ctrl, SEXP vpar, SEXP step, int cuda)
{
    svir_control c;
    SEXP hp;
    const svir_glmm *m = svir_r_model(&svir_glmm_def, spec, ctrl, &c, &hp);
    const ptrdiff_t ng = svir_glmm_n_global(m, c.guide);
    if (TYPEOF(vpar) != REALSXP || Rf_xlength(vpar) != ng + m->nloc)
        Rf_error("svir internal error: vpar must be double of length %lld", (long long)(ng + m->nloc));
    SEXP grad = PROTECT(Rf_allocVector(REALSXP, ng + m->nloc));
    SEXP glam = PROTECT(Rf_allocVector(REALSXP, m->nterms));
    for (int t = 0; t < m->nterms; t++) REAL(glam)[t] = 0.0;
    double elbo = 0.0;
    char err[512];
    if (!cuda) {
        if (svir_glmm_elbo_grad_lam(m, &c, REAL(vpar), REAL(vpar) + ng, (long)Rf_asReal(step),
                                    &elbo, REAL(grad), REAL(glam), err, sizeof err))
            Rf_error("svir: %s", err);
    } else {
#ifdef SVIR_HAVE_CUDA
        svir_coupling cp;
        int ns = 0;
        if (svir_coupling_new(m, &c, m->init_mu, &cp, &ns)) Rf_error("svir: out of memory");
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
    SEXP out = PROTECT(Rf_allocVector(VECSXP, 3));
    SEXP nms = PROTECT(Rf_allocVector(STRSXP, 3));
    svir_r_set(out, nms, 0, "elbo", Rf_ScalarReal(elbo));
    svir_r_set(out, nms, 1, "grad", grad);
    svir_r_set(out, nms, 2, "glam", glam);
    Rf_setAttrib(out, R_NamesSymbol, nms);
    svir_r_model_done(hp);
    UNPROTECT(5);
    return out;
}

SEXP svir_elbo_grad_r(SEXP spec, SEXP ctrl, SEXP vpar, SEXP step)
{
    return elbo_grad(spec, ctrl, vpar, step, 0);
}

/* One pass over all observations at given fixed effects beta [p] and random
 * effects b [nz] (indexed like z), on the CPU (a plain loop, the reference)
 * or on the CUDA device (cuda/glmm_obs.cu): list(ll, gbeta, gaux, G,
 * ms), ll without constants. For the CPU/CUDA parity tests and bench/. */
SEXP svir_obs_pass_r(SEXP spec, SEXP beta, SEXP b, SEXP aux, SEXP backend)
{
    SEXP hp;
    const svir_glmm *m = svir_r_model(&svir_glmm_def, spec, R_NilValue, NULL, &hp);
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
    svir_r_set(out, nms, 0, "ll", Rf_ScalarReal(ll));
    svir_r_set(out, nms, 1, "gbeta", gbeta);
    svir_r_set(out, nms, 2, "gaux", Rf_ScalarReal(gaux));
    svir_r_set(out, nms, 3, "G", G);
    svir_r_set(out, nms, 4, "ms", Rf_ScalarReal(ms));
    Rf_setAttrib(out, R_NamesSymbol, nms);
    svir_r_model_done(hp);
    UNPROTECT(5);
    return out;
}

/* The per-group part of a full-batch step (see svir_cuda_local_step_host) at
 * given local parameters lpar [nloc], A [nqq], G [nz] and shift [sum q] (or
 * NULL), on the CPU (the engine's glmm_local.h functions in a plain loop) or
 * on the CUDA device: list(z, b, lgrad, kl, logq, sums). For the parity
 * tests. */
SEXP svir_local_step_r(SEXP spec, SEXP lpar, SEXP A, SEXP G, SEXP shift, SEXP seed, SEXP step,
                       SEXP stl, SEXP backend)
{
    SEXP hp;
    const svir_glmm *m = svir_r_model(&svir_glmm_def, spec, R_NilValue, NULL, &hp);
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
    svir_r_set(out, nms, 0, "z", z);
    svir_r_set(out, nms, 1, "b", b);
    svir_r_set(out, nms, 2, "lgrad", lg);
    svir_r_set(out, nms, 3, "kl", Rf_ScalarReal(kl));
    svir_r_set(out, nms, 4, "logq", Rf_ScalarReal(logq));
    svir_r_set(out, nms, 5, "sums", sums);
    Rf_setAttrib(out, R_NamesSymbol, nms);
    svir_r_model_done(hp);
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
    svir_r_set(out, nms, 0, "par", p);
    svir_r_set(out, nms, 1, "mom", m);
    svir_r_set(out, nms, 2, "vel", v);
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

/* "family/link" for every pair the engine has (SVIR_GLMM_PAIRS), for the
 * test against R/enum.R's svir_glmm_pairs */
SEXP svir_glmm_pairs_r(void)
{
    int n = 0;
    for (int f = 0; f < SVIR_N_FAMILIES; f++)
        for (int l = 0; l < SVIR_N_LINKS; l++) n += svir_glmm_pair_ok(f, l) ? 1 : 0;
    SEXP out = PROTECT(Rf_allocVector(STRSXP, n));
    const svir_code_table *ft = &svir_glmm_def.codes[0], *lt = &svir_glmm_def.codes[1];
    int k = 0;
    for (int f = 0; f < SVIR_N_FAMILIES; f++)
        for (int l = 0; l < SVIR_N_LINKS; l++) {
            if (!svir_glmm_pair_ok(f, l)) continue;
            char buf[64];
            snprintf(buf, sizeof buf, "%s/%s", svir_code_name(ft, f), svir_code_name(lt, l));
            SET_STRING_ELT(out, k++, Rf_mkChar(buf));
        }
    UNPROTECT(1);
    return out;
}
