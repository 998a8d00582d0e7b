/* Registration of the .Call entry points (R names: C_<name>): the verbs R
 * code uses, then apart the test-only entry points the test suite and
 * tools call. Part of the glue (glue/), kept at the top of src/ where R
 * looks for a package's sources (R CMD check wants one there). */
#include <R.h>
#include <Rinternals.h>
#include <R_ext/Rdynload.h>
#include <stdlib.h> /* for NULL */

/* ---- verbs (glue/r_fit.c) ---------------------------------------------- */
extern SEXP svir_fit_r(SEXP spec, SEXP control);
extern SEXP svir_backend_choose_r(SEXP model, SEXP method, SEXP minibatch, SEXP backend,
                                  SEXP size, SEXP spec);
extern SEXP svir_backends_r(void);
extern SEXP svir_check_interrupt_r(void);
/* a separated coefficient's conditional log-likelihoods on a grid (glue/r_sep.c) */
extern SEXP svir_sep_grid_r(SEXP Eo, SEXP x, SEXP y, SEXP t, SEXP w, SEXP family, SEXP link,
                            SEXP phi, SEXP etaz, SEXP g, SEXP threads);
/* the method "laplace": the Laplace marginal and the importance sampler (glue/r_laplace.c) */
extern SEXP svir_lap_mode_r(SEXP spec, SEXP theta, SEXP u0);
extern SEXP svir_lap_is_r(SEXP spec, SEXP mode, SEXP u0, SEXP Lp, SEXP nu, SEXP S, SEXP first,
                          SEXP seed, SEXP threads);
/* the K-sample bound of the guides a fit kept (R's svir_path_bound; glue/r_test_glmm.c) */
extern SEXP svir_tree_bound_r(SEXP spec, SEXP control, SEXP gpar, SEXP lpar, SEXP anchor,
                              SEXP K, SEXP reps);

/* the Poisson-lognormal model's posterior by MCMC (glue/r_mcmc.c) */
extern SEXP svir_mix_resp_r(SEXP spec, SEXP draws, SEXP S, SEXP loglik);
extern SEXP svir_pln_mcmc_r(SEXP Y, SEXP X, SEXP O, SEXP Z, SEXP B, SEXP Sigma, SEXP xstep,
                            SEXP set);

/* ---- test-only entry points (glue/r_test*.c) ----------------------------- */
extern SEXP svir_codes_r(void);
extern SEXP svir_glmm_pairs_r(void);
extern SEXP svir_logdensity_r(SEXP spec, SEXP theta, SEXP z);
extern SEXP svir_lap_logf_r(SEXP spec, SEXP theta, SEXP u);
extern SEXP svir_lap_integrated_r(SEXP spec);
extern SEXP svir_loglik_block_r(SEXP spec, SEXP theta, SEXP z);
extern SEXP svir_elbo_grad_r(SEXP spec, SEXP control, SEXP vpar, SEXP step);
extern SEXP svir_mix_elbo_grad_r(SEXP spec, SEXP control, SEXP gpar, SEXP step);
extern SEXP svir_bnn_elbo_grad_r(SEXP spec, SEXP control, SEXP gpar, SEXP step);
extern SEXP svir_bnn_validate_r(SEXP spec, SEXP control, SEXP gpar);
extern SEXP svir_loop_lr_r(SEXP schedule, SEXP lr, SEXP maxs, SEXP W);
extern SEXP svir_cuda_elbo_grad_r(SEXP spec, SEXP control, SEXP vpar, SEXP step);
extern SEXP svir_obs_pass_r(SEXP spec, SEXP beta, SEXP b, SEXP aux, SEXP backend);
extern SEXP svir_adam_r(SEXP par, SEXP mom, SEXP vel, SEXP g, SEXP lr, SEXP t, SEXP backend);
extern SEXP svir_local_step_r(SEXP spec, SEXP lpar, SEXP A, SEXP G, SEXP shift, SEXP seed,
                              SEXP step, SEXP stl, SEXP backend);
extern SEXP svir_pln_eval_r(SEXP dat, SEXP par);
extern SEXP svir_pln_blas_flops_r(SEXP set);
extern SEXP svir_pln_fit_r(SEXP dat, SEXP par, SEXP maxit, SEXP tol);
extern SEXP svir_pln_eval_cuda_r(SEXP dat, SEXP par);
extern SEXP svir_pln_fit_cuda_r(SEXP dat, SEXP par, SEXP maxit, SEXP tol);
extern SEXP svir_philox_r(SEXP key, SEXP ctr);
extern SEXP svir_perm_r(SEXP n, SEXP seed, SEXP round_key);
extern SEXP svir_normals_r(SEXP seed, SEXP stream, SEXP step, SEXP n);
extern SEXP svir_normal_fill_r(SEXP seed, SEXP stream, SEXP step, SEXP first, SEXP n);
extern SEXP svir_uniforms_r(SEXP seed, SEXP stream, SEXP step, SEXP n);
extern SEXP svir_box_muller_r(SEXP u1, SEXP u2, SEXP batch);
extern SEXP svir_cuda_normals_r(SEXP seed, SEXP stream, SEXP step, SEXP first, SEXP n);
extern SEXP svir_zig_fill_r(SEXP seed, SEXP stream, SEXP step, SEXP block, SEXP n);
extern SEXP svir_backend_auto_r(SEXP model, SEXP method, SEXP minibatch, SEXP size,
                                SEXP cpu_only);

#define VERB(name, n) {#name, (DL_FUNC)&name, n}

static const R_CallMethodDef call_methods[] = {
    /* verbs */
    VERB(svir_fit_r, 2),
    VERB(svir_backend_choose_r, 6),
    VERB(svir_backends_r, 0),
    VERB(svir_check_interrupt_r, 0),
    VERB(svir_sep_grid_r, 11),
    VERB(svir_tree_bound_r, 7),
    VERB(svir_lap_mode_r, 3),
    VERB(svir_lap_is_r, 9),
    /* test-only entry points */
    VERB(svir_codes_r, 0),
    VERB(svir_glmm_pairs_r, 0),
    VERB(svir_logdensity_r, 3),
    VERB(svir_lap_logf_r, 3),
    VERB(svir_lap_integrated_r, 1),
    VERB(svir_pln_mcmc_r, 8),
    VERB(svir_mix_resp_r, 4),
    VERB(svir_loglik_block_r, 3),
    VERB(svir_elbo_grad_r, 4),
    VERB(svir_mix_elbo_grad_r, 4),
    VERB(svir_bnn_elbo_grad_r, 4),
    VERB(svir_bnn_validate_r, 3),
    VERB(svir_loop_lr_r, 4),
    VERB(svir_cuda_elbo_grad_r, 4),
    VERB(svir_obs_pass_r, 5),
    VERB(svir_local_step_r, 9),
    VERB(svir_adam_r, 7),
    VERB(svir_pln_eval_r, 2),
    VERB(svir_pln_blas_flops_r, 1),
    VERB(svir_pln_fit_r, 4),
    VERB(svir_pln_eval_cuda_r, 2),
    VERB(svir_pln_fit_cuda_r, 4),
    VERB(svir_philox_r, 2),
    VERB(svir_perm_r, 3),
    VERB(svir_normals_r, 4),
    VERB(svir_normal_fill_r, 5),
    VERB(svir_uniforms_r, 4),
    VERB(svir_box_muller_r, 3),
    VERB(svir_cuda_normals_r, 5),
    VERB(svir_zig_fill_r, 5),
    VERB(svir_backend_auto_r, 5),
    {NULL, NULL, 0}
};

void R_init_svir(DllInfo *dll)
{
    R_registerRoutines(dll, NULL, call_methods, NULL, NULL);
    R_useDynamicSymbols(dll, FALSE);
    R_forceSymbols(dll, TRUE);
}
