/* The GLMM's entry points beyond its model table: what its QEM, its CUDA
 * code and the glue's test hooks call. */
#ifndef SVIR_GLMM_SVI_H
#define SVIR_GLMM_SVI_H

#include <stddef.h>

#include "core/svir_result.h"
#include "infer/svir_model.h"
#include "models/glmm/glmm.h"
#include "models/glmm/glmm_coupling.h"

#ifdef __cplusplus
extern "C" {
#endif

/* the model's table (models/glmm/glmm_model.c) */
extern const svir_model_def svir_glmm_def;
/* the SVI driver's view of the model (glmm_svi.c) */
extern const svir_svi_ops svir_glmm_svi_ops;
/* QEM's: the groups' part on the CPU or the CUDA device (glmm_qem.c) */
extern const svir_qem_ops svir_glmm_qem_cpu_ops, svir_glmm_qem_cuda_ops;

/* Variational parameters, flat:
 *   global: mu[D], then omega[D] (meanfield, log sd) or the packed row-major
 *           lower triangle of L (fullrank, D(D+1)/2, log diagonal);
 *   local:  per term, per group: m[q], packed C (q(q+1)/2, log diagonal). */
ptrdiff_t svir_glmm_n_global(const svir_glmm *m, int guide);
/* The starting point of a fit: gpar [svir_glmm_n_global], lpar [nloc]. */
void svir_glmm_init_params(const svir_glmm *m, const svir_control *c, double *gpar, double *lpar);

/* One-step ELBO estimate and its exact gradient at the given variational
 * parameters, with the noise and minibatch of step `step` (for gradient
 * tests); the coupled guide anchored at the model's init_mu. grad has
 * n_global + nloc entries; entries of locals absent from the minibatch are
 * zero. */
int svir_glmm_elbo_grad(const svir_glmm *m, const svir_control *c, const double *gpar,
                        const double *lpar, long step, double *elbo, double *grad, char *err,
                        size_t errlen);
/* The same, and glam [nterms] (may be NULL): d ELBO / d lambda of each
 * partially centred term when m->centre_learn (else 0), for the tests. */
int svir_glmm_elbo_grad_lam(const svir_glmm *m, const svir_control *c, const double *gpar,
                            const double *lpar, long step, double *elbo, double *grad,
                            double *glam, char *err, size_t errlen);

/* The coupled guide's constants of (m, c) with the reference point ref [D]
 * (NULL: zeros), as the ELBO estimate sets them, in arrays owned by out
 * (release with svir_coupling_free); *ns gets the number of span columns.
 * For the CUDA backend. Returns 0, or 2 when out of memory. */
int svir_coupling_new(const svir_glmm *m, const svir_control *c, const double *ref,
                      svir_coupling *out, int *ns);
void svir_coupling_free(svir_coupling *cp);

/* The posterior draws, shifts and PSIS log ratios of a fit that ended at
 * (gpar, lpar) into res, as an SVI fit makes them (the coupled guide
 * anchored at `anchor`, or at gpar if NULL); adds their time to
 * res->time_split. Returns 0 or 2 (out of memory, with res->message). */
int svir_glmm_posterior_draws(const svir_glmm *m, const svir_control *c, const double *gpar,
                              const double *lpar, const double *anchor, svir_result *res);

/* most samples per latent QEM takes */
#define SVIR_QEM_KMAX 256

/* The K-sample bound log P-hat over the tree globals -> groups ->
 * observations (glmm_tree.c; one grouping factor) of the guide (gpar,
 * lpar), coupled as m->couple says with its anchor `anchor` (ignored
 * without coupling): reps independent estimates into out, from c->seed's
 * posterior-draw streams. Their mean is itself a lower bound on log p(y).
 * Returns 0, 1 (model or K not supported) or 2 (memory), with a message in
 * err. */
int svir_tree_bound(const svir_glmm *m, const svir_control *c, const double *gpar,
                    const double *lpar, const double *anchor, int K, int reps, double *out,
                    char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
