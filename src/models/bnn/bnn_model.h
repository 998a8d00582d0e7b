/* Bayesian neural networks (issue 18, model = bnn()): a multilayer
 * perceptron from the standardised inputs x_i (d) through hidden layers of
 * widths h_1 .. h_L (activation relu or tanh) to one output eta_i, the
 * linear predictor of a gaussian (identity; y standardised by R), binomial
 * (logit; y in 0/1) or poisson (log) response. Priors: each weight of a
 * layer with fan-in m ~ N(0, s^2 / m) (s = w_scale; or Laplace with that
 * variance; or hierarchical, below), each bias ~ N(0,
 * b_scale^2), and for gaussian the noise sd sigma ~ N+(0, 1). The guide is
 * mean-field Gaussian over the unconstrained parameters
 *   [layer 0: W (d x h_1, column-major), b (h_1) | layer 1 ... | output
 *    layer: W (h_L x 1), b (1) | log lambda_l per layer (prior
 *    "hierarchical": weights N(0, s^2 / (m lambda_l)), lambda_l ~ Gamma(6,
 *    6)) | log sigma (gaussian)],
 * and SVI uses the local reparameterisation (Kingma, Salimans and Welling
 * 2015): each layer's pre-activations are drawn given its input, from
 * their Gaussian under the guide, rather than the weights; the weights' KL
 * is in closed form; log sigma is drawn (its prior by Monte Carlo, its
 * entropy exact). Particles are stacked as rows, and the layers' products
 * go through R's BLAS (dgemm) on the CPU, cuBLAS on the device (bnn_cuda.h).
 * No R API. */
#ifndef SVIR_BNN_MODEL_H
#define SVIR_BNN_MODEL_H

#include <stddef.h>

#include "infer/svir_model.h"
#include "models/bnn/bnn_codes.h"

#define SVIR_BNN_MAXL 8 /* most hidden layers */

typedef struct {
    int n, d, L, act, family, prior;
    int dims[SVIR_BNN_MAXL + 2]; /* d, h_1 .. h_L, 1 */
    const double *X;             /* [n x d] column-major, standardised */
    const double *y;             /* [n] */
    double w_scale, b_scale;
    int kl_warmup;               /* steps over which the KL's weight rises to kl_weight (0: none) */
    double kl_weight;            /* the KL's weight in the gradient's objective, (0, 1] */
    int path;                    /* the tiles' passes: 0 by the widths, 1 layer by layer by
                                  * loops, 2 by BLAS, 3 fused where it applies (tests) */
    int isa;                     /* the loops' instruction set: 0 the machine's best, 1 the
                                  * baseline, 2 AVX2 at most (tests) */
    int nv;                      /* held-out rows (0: none) */
    const double *Xv, *yv;       /* [nv x d], [nv]: standardised as X and y */
    const double *init_mu;       /* [D] the guide's starting means, or NULL */
    ptrdiff_t D;
    ptrdiff_t off_w[SVIR_BNN_MAXL + 1], off_b[SVIR_BNN_MAXL + 1], off_sig; /* off_sig < 0: none */
    ptrdiff_t off_lam;           /* the layers' log precisions (hierarchical), or -1 */
    /* the device's copy of the data while a fit runs on backend = "cuda"
     * (bnn_cuda.h), or NULL */
    struct svir_cuda_bnn *dev;
} svir_bnn_model;

/* the stacked rows per tile of the noise and the CPU's tiles, for R
 * stacked rows (the device draws the same noise by the same tiles) */
ptrdiff_t svir_bnn_tile_rows(const svir_bnn_model *m, ptrdiff_t R);

extern const svir_model_def svir_bnn_def;

/* m's dims[0] and dims[L + 1] and the guide's layout (off_*, D) from d, L,
 * the hidden widths dims[1 .. L], the prior and the family */
void svir_bnn_layout(svir_bnn_model *m);

/* SVI's ELBO estimate at the guide gpar [2 D] with the noise and rows of
 * `step`, its gradient into grad [2 D] (the tests' finite differences; with
 * m->dev set, the batch's part on the device: gpucheck's parity check);
 * 0, or 2 when out of memory. */
int svir_bnn_elbo_grad(const svir_bnn_model *m, const svir_control *c, const double *gpar,
                       long step, double *elbo, double *grad);

/* the device's copy of m for fits under control c (its batch size,
 * particles, seed and the CPU's tiles; bnn_cuda.h): set m->dev to it for
 * svir_bnn_elbo_grad on the device; 0 or svir_cuda_bnn_new's status */
int svir_bnn_dev_new(const svir_bnn_model *m, const svir_control *c, struct svir_cuda_bnn **out,
                     char *err, size_t errlen);

/* the held-out rows' loss (bnn_validate) at the guide gpar [2 D] into *loss;
 * 0, or 2 when out of memory */
int svir_bnn_validate_at(const svir_bnn_model *m, const svir_control *c, const double *gpar,
                         double *loss);

#endif
