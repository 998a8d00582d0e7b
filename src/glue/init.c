/* Registration of the .Call entry points (R names: C_<name>). */
#include <R.h>
#include <Rinternals.h>
#include <R_ext/Rdynload.h>
#include <stdlib.h> /* for NULL */

/* svir_fit_r.c */
extern SEXP svir_fit_r(SEXP spec, SEXP control);
extern SEXP svir_logdensity_r(SEXP spec, SEXP theta, SEXP z);
extern SEXP svir_loglik_block_r(SEXP spec, SEXP theta, SEXP z);
extern SEXP svir_elbo_grad_r(SEXP spec, SEXP control, SEXP vpar, SEXP step);
extern SEXP svir_tree_bound_r(SEXP spec, SEXP control, SEXP gpar, SEXP lpar, SEXP anchor,
                              SEXP K, SEXP reps);
extern SEXP svir_cuda_elbo_grad_r(SEXP spec, SEXP control, SEXP vpar, SEXP step);
extern SEXP svir_obs_pass_r(SEXP spec, SEXP beta, SEXP b, SEXP aux, SEXP backend);
extern SEXP svir_adam_r(SEXP par, SEXP mom, SEXP vel, SEXP g, SEXP lr, SEXP t, SEXP backend);
extern SEXP svir_local_step_r(SEXP spec, SEXP lpar, SEXP A, SEXP G, SEXP shift, SEXP seed,
                              SEXP step, SEXP stl, SEXP backend);
/* svir_pln_r.c */
extern SEXP svir_pln_eval_r(SEXP dat, SEXP par);
extern SEXP svir_pln_fit_r(SEXP dat, SEXP par, SEXP maxit, SEXP tol);
extern SEXP svir_pln_eval_cuda_r(SEXP dat, SEXP par);
extern SEXP svir_pln_fit_cuda_r(SEXP dat, SEXP par, SEXP maxit, SEXP tol);
extern SEXP svir_pln_mb_r(SEXP dat, SEXP mbx, SEXP par, SEXP ctl, SEXP seed);
extern SEXP svir_pln_qem_r(SEXP dat, SEXP st, SEXP ctl, SEXP seed);
/* svir_backend_r.c */
extern SEXP svir_backends_r(void);
extern SEXP svir_philox_r(SEXP key, SEXP ctr);
extern SEXP svir_perm_r(SEXP n, SEXP seed, SEXP round_key);
extern SEXP svir_normals_r(SEXP seed, SEXP stream, SEXP step, SEXP n);
extern SEXP svir_normal_fill_r(SEXP seed, SEXP stream, SEXP step, SEXP first, SEXP n);
extern SEXP svir_uniforms_r(SEXP seed, SEXP stream, SEXP step, SEXP n);
extern SEXP svir_box_muller_r(SEXP u1, SEXP u2, SEXP batch);
extern SEXP svir_cuda_normals_r(SEXP seed, SEXP stream, SEXP step, SEXP first, SEXP n);

static const R_CallMethodDef call_methods[] = {
    {"svir_fit_r", (DL_FUNC)&svir_fit_r, 2},
    {"svir_pln_eval_r", (DL_FUNC)&svir_pln_eval_r, 2},
    {"svir_pln_fit_r", (DL_FUNC)&svir_pln_fit_r, 4},
    {"svir_pln_eval_cuda_r", (DL_FUNC)&svir_pln_eval_cuda_r, 2},
    {"svir_pln_fit_cuda_r", (DL_FUNC)&svir_pln_fit_cuda_r, 4},
    {"svir_pln_mb_r", (DL_FUNC)&svir_pln_mb_r, 5},
    {"svir_pln_qem_r", (DL_FUNC)&svir_pln_qem_r, 4},
    {"svir_logdensity_r", (DL_FUNC)&svir_logdensity_r, 3},
    {"svir_loglik_block_r", (DL_FUNC)&svir_loglik_block_r, 3},
    {"svir_elbo_grad_r", (DL_FUNC)&svir_elbo_grad_r, 4},
    {"svir_tree_bound_r", (DL_FUNC)&svir_tree_bound_r, 7},
    {"svir_cuda_elbo_grad_r", (DL_FUNC)&svir_cuda_elbo_grad_r, 4},
    {"svir_obs_pass_r", (DL_FUNC)&svir_obs_pass_r, 5},
    {"svir_local_step_r", (DL_FUNC)&svir_local_step_r, 9},
    {"svir_adam_r", (DL_FUNC)&svir_adam_r, 7},
    {"svir_backends_r", (DL_FUNC)&svir_backends_r, 0},
    {"svir_philox_r", (DL_FUNC)&svir_philox_r, 2},
    {"svir_perm_r", (DL_FUNC)&svir_perm_r, 3},
    {"svir_normals_r", (DL_FUNC)&svir_normals_r, 4},
    {"svir_normal_fill_r", (DL_FUNC)&svir_normal_fill_r, 5},
    {"svir_uniforms_r", (DL_FUNC)&svir_uniforms_r, 4},
    {"svir_box_muller_r", (DL_FUNC)&svir_box_muller_r, 3},
    {"svir_cuda_normals_r", (DL_FUNC)&svir_cuda_normals_r, 5},
    {NULL, NULL, 0}
};

void R_init_svir(DllInfo *dll)
{
    R_registerRoutines(dll, NULL, call_methods, NULL, NULL);
    R_useDynamicSymbols(dll, FALSE);
    R_forceSymbols(dll, TRUE);
}
