/* A build without CUDA: the device functions the models' CUDA tables and
 * the test hooks name, as stand-ins that say so. With them no model or
 * driver needs #ifdef SVIR_HAVE_CUDA, and backend/svir_backend.c never
 * chooses the device in such a build (its query says why). */
#ifndef SVIR_HAVE_CUDA

#include <stdio.h>

#include "models/glmm/glmm_cuda.h"
#include "models/pln/pln_cuda.h"
#include "models/mixture/mix_cuda.h"
#include "models/bnn/bnn_cuda.h"

#define NOCUDA(err, errlen) (snprintf(err, errlen, "svir was built without CUDA"), 1)

int svir_cuda_data_new(const svir_glmm *m, svir_cuda_data **out, char *err, size_t errlen)
{
    (void)m;
    *out = NULL;
    return NOCUDA(err, errlen);
}

void svir_cuda_data_free(svir_cuda_data *d)
{
    (void)d;
}

int svir_cuda_obs_pass_host(svir_cuda_data *d, const double *beta, const double *b, double sigma,
                            double phi, double *ll, double *gbeta, double *gaux, double *G,
                            double *ms, char *err, size_t errlen)
{
    (void)d; (void)beta; (void)b; (void)sigma; (void)phi; (void)ll; (void)gbeta; (void)gaux;
    (void)G; (void)ms;
    return NOCUDA(err, errlen);
}

int svir_cuda_normals_host(uint64_t seed, uint64_t stream, uint64_t step, uint64_t first,
                           ptrdiff_t count, double *out, char *err, size_t errlen)
{
    (void)seed; (void)stream; (void)step; (void)first; (void)count; (void)out;
    return NOCUDA(err, errlen);
}

int svir_cuda_obs_bench(svir_cuda_data *d, int reps, size_t copy_bytes, double *ms_pass,
                        double *bytes_pass, double *copy_gbs, char *err, size_t errlen)
{
    (void)d; (void)reps; (void)copy_bytes; (void)ms_pass; (void)bytes_pass; (void)copy_gbs;
    return NOCUDA(err, errlen);
}

int svir_cuda_local_step_host(const svir_glmm *m, const double *lpar, const double *A,
                              const double *G, const double *shift, uint64_t seed, uint64_t step,
                              double scale, int stl, double *z, double *b, double *lgrad,
                              double *kl, double *logq, double *sums, char *err, size_t errlen)
{
    (void)m; (void)lpar; (void)A; (void)G; (void)shift; (void)seed; (void)step; (void)scale;
    (void)stl; (void)z; (void)b; (void)lgrad; (void)kl; (void)logq; (void)sums;
    return NOCUDA(err, errlen);
}

int svir_cuda_elbo_grad_host(const svir_glmm *m, const svir_coupling *cp, int ns, int fullrank,
                             int stl, int S, ptrdiff_t batch_size, const double *gpar,
                             const double *lpar, uint64_t seed, long step, double *elbo,
                             double *grad, char *err, size_t errlen)
{
    (void)m; (void)cp; (void)ns; (void)fullrank; (void)stl; (void)S; (void)batch_size;
    (void)gpar; (void)lpar; (void)seed; (void)step; (void)elbo; (void)grad;
    return NOCUDA(err, errlen);
}

int svir_cuda_fit(const svir_glmm *m, const svir_control *c, const svir_callbacks *cb,
                  svir_result *res, char *err, size_t errlen)
{
    (void)m; (void)c; (void)cb; (void)res;
    return NOCUDA(err, errlen);
}

int svir_cuda_qem_new(const svir_glmm *m, int K, uint64_t seed, const double *lpar,
                      const double *Z1, const double *Z2, svir_cuda_qem **out, char *err,
                      size_t errlen)
{
    (void)m; (void)K; (void)seed; (void)lpar; (void)Z1; (void)Z2;
    *out = NULL;
    return NOCUDA(err, errlen);
}

int svir_cuda_qem_table(svir_cuda_qem *x, const double *beta, const double *A,
                        const svir_aux *aux, uint64_t stream, uint64_t ctr, double *lm,
                        char *err, size_t errlen)
{
    (void)x; (void)beta; (void)A; (void)aux; (void)stream; (void)ctr; (void)lm;
    return NOCUDA(err, errlen);
}

int svir_cuda_qem_mstep(svir_cuda_qem *x, const double *w0, double et, char *err, size_t errlen)
{
    (void)x; (void)w0; (void)et;
    return NOCUDA(err, errlen);
}

int svir_cuda_qem_lpar(svir_cuda_qem *x, double *lpar, char *err, size_t errlen)
{
    (void)x; (void)lpar;
    return NOCUDA(err, errlen);
}

void svir_cuda_qem_free(svir_cuda_qem *x)
{
    (void)x;
}

int svir_cuda_adam_host(double *par, double *mom, double *vel, const double *g, ptrdiff_t n,
                        double lr, double bc1, double bc2, char *err, size_t errlen)
{
    (void)par; (void)mom; (void)vel; (void)g; (void)n; (void)lr; (void)bc1; (void)bc2;
    return NOCUDA(err, errlen);
}

double svir_cuda_pln_bytes(const svir_pln_data *dat, int fit)
{
    (void)dat; (void)fit;
    return 0.0;
}

int svir_cuda_pln_mem(size_t *free_bytes, size_t *total_bytes)
{
    *free_bytes = *total_bytes = 0;
    return 1;
}

int svir_cuda_pln_eval_host(const svir_pln_data *dat, const double *par, double *J, double *grad,
                            double *B, double *Sigma, char *err, size_t errlen)
{
    (void)dat; (void)par; (void)J; (void)grad; (void)B; (void)Sigma;
    return NOCUDA(err, errlen);
}

int svir_cuda_pln_state_new(const svir_pln_data *dat, const double *x0,
                            svir_cuda_pln_state **state, svir_lbfgs_problem **pb, char *err,
                            size_t errlen)
{
    (void)dat; (void)x0;
    *state = NULL;
    *pb = NULL;
    return NOCUDA(err, errlen);
}

int svir_cuda_pln_state_result(svir_cuda_pln_state *state, double *x, double *B, double *Sigma,
                               char *err, size_t errlen)
{
    (void)state; (void)x; (void)B; (void)Sigma;
    return NOCUDA(err, errlen);
}

void svir_cuda_pln_state_free(svir_cuda_pln_state *state)
{
    (void)state;
}

int svir_cuda_pln_fit(const svir_pln_data *dat, double *par, int maxit, double tol, double *J,
                      int *iters, double *trace, double *B, double *Sigma, double *secs,
                      char *err, size_t errlen)
{
    (void)dat; (void)par; (void)maxit; (void)tol; (void)J; (void)iters; (void)trace; (void)B;
    (void)Sigma; (void)secs;
    return NOCUDA(err, errlen);
}

/* count mixtures (models/mixture/mix_cuda.h) */
double svir_cuda_mix_bytes(const svir_mix_model *m, int maxrows)
{
    (void)m; (void)maxrows;
    return 0.0;
}

int svir_cuda_mix_new(const svir_mix_model *m, int maxrows, svir_cuda_mix **out, char *err,
                      size_t errlen)
{
    (void)m; (void)maxrows;
    *out = NULL;
    return NOCUDA(err, errlen);
}

void svir_cuda_mix_free(svir_cuda_mix *d)
{
    (void)d;
}

int svir_cuda_mix_loglik(svir_cuda_mix *d, const double *theta, const double *lp, const int *idx,
                         int B, double scale, double *ll, double *g, double *a, char *err,
                         size_t errlen)
{
    (void)d; (void)theta; (void)lp; (void)idx; (void)B; (void)scale; (void)ll; (void)g; (void)a;
    return NOCUDA(err, errlen);
}

const char *svir_cuda_mix_error(const svir_cuda_mix *d)
{
    (void)d;
    return "";
}

/* networks (models/bnn/bnn_cuda.h) */
double svir_cuda_bnn_bytes(const svir_bnn_model *m, ptrdiff_t B, int S)
{
    (void)m; (void)B; (void)S;
    return 0.0;
}

int svir_cuda_bnn_new(const svir_bnn_model *m, ptrdiff_t B, int S, ptrdiff_t TR,
                      const uint32_t key[2], svir_cuda_bnn **out, char *err, size_t errlen)
{
    (void)m; (void)B; (void)S; (void)TR; (void)key;
    *out = NULL;
    return NOCUDA(err, errlen);
}

void svir_cuda_bnn_free(svir_cuda_bnn *d)
{
    (void)d;
}

int svir_cuda_bnn_step(svir_cuda_bnn *d, const double *mu, const double *s2, const double *lsig,
                       const double *sig, const int *idx, long step, double wt, double *g,
                       double *ll, double *gs, char *err, size_t errlen)
{
    (void)d; (void)mu; (void)s2; (void)lsig; (void)sig; (void)idx; (void)step; (void)wt; (void)g;
    (void)ll; (void)gs;
    return NOCUDA(err, errlen);
}

const char *svir_cuda_bnn_error(const svir_cuda_bnn *d)
{
    (void)d;
    return "";
}

#else
typedef int svir_nocuda_unused; /* ISO C: a translation unit is not empty */
#endif
