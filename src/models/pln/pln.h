/* The Poisson-lognormal model's variational objective (pln_eval.c,
 * pln_rank.c) and its L-BFGS problem (pln_lbfgs.c); dev/PLN.md. */
#ifndef SVIR_PLN_H
#define SVIR_PLN_H

#include <stddef.h>

#include "core/svir_lbfgs.h"
#include "models/pln/pln_codes.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int n, p, d;        /* rows, count columns, covariates */
    int cov;            /* SVIR_PLN_* */
    int q;              /* the rank, for SVIR_PLN_RANK */
    const double *Y;    /* [n x p] counts, column-major; NULL when sparse */
    const int *Yp;      /* sparse counts (compressed columns, as a dgCMatrix): */
    const int *Yi;      /*   column starts [p + 1], row indices and values */
    const double *Yx;   /*   [Yp[p]] */
    const double *O;    /* [n x p] offsets, or NULL */
    const double *Orow; /* [n] one offset per row, or NULL (O takes precedence) */
    const double *X;    /* [n x d] covariates */
    const double *P;    /* [d x n] (X'X)^-1 X' */
    double lgy;         /* sum_ij log Y_ij! */
    double nd;          /* n (point estimates of B), or n - d (a Gaussian
                         * posterior for B, globals = "bayes") */
    double k0, s0;      /* Sigma's conjugate prior (globals = "bayes" without
                         * rank; 0 and 0 otherwise): the closed form is (C + s0
                         * I) / (nd + k0), spherical (tr C + s0) / ((nd + k0) p);
                         * dev/PLN.md */
    const double *Bfix; /* the VE step: B [d x p] and Omega = Sigma^-1 [p x p] */
    const double *Omfix;/*   held fixed (both NULL otherwise), log |Omega| */
    double logdet_om;
    const double *Wfix; /* or, for rank q, W [p x q] and log psi [p] held */
    const double *lpsifix; /*   (Omfix unused then; Omega by Woodbury) */
    int threads;        /* OpenMP threads (results do not depend on them) */
    int block;          /* PLN-PCA: rows per block (0: about 2^18 / p) */
    double *colwork;    /* [3 p] scratch */
} svir_pln_data;

/* The number of parameters: M and log S (n x p each), then for
 * SVIR_PLN_RANK W (p x q) and log psi (p). */
ptrdiff_t svir_pln_npar(const svir_pln_data *dat);
/* doubles of work svir_pln_eval needs */
ptrdiff_t svir_pln_nwork(const svir_pln_data *dat);

/* The ELBO J at par, with B (and for the full, diagonal and spherical
 * structures Sigma) at their optimum given the rest, or held at Bfix and
 * Omfix; its gradient grad [npar], and B [d x p] and Sigma [p x p].
 * Returns 0, or 1 with a message in err (Sigma not positive definite, J
 * not finite). */
int svir_pln_eval(const svir_pln_data *dat, const double *par, double *J, double *grad,
                  double *B, double *Sigma, double *work, char *err, size_t errlen);

/* The CPU problem of core/svir_lbfgs.h for dat, started at x (updated in
 * place): every evaluation writes B [d x p] and Sigma [p x p]; NULL when
 * out of memory. Release it with pb->destroy(pb). */
svir_lbfgs_problem *svir_pln_cpu_problem(const svir_pln_data *dat, double *x, double *B,
                                         double *Sigma);

/* svir_pln_fit maximises J from par (updated in place) by core/svir_lbfgs.c
 * on the CPU problem, preconditioned per column: at most maxit iterations,
 * stopping when one raises J by less than tol |J|; *J, *iters, the trace
 * of J per step (trace [maxit] or NULL) and the final B and Sigma.
 * Returns 0, 1 (as svir_pln_eval) or 2 (out of memory). */
int svir_pln_fit(const svir_pln_data *dat, double *par, int maxit, double tol, double *J,
                 int *iters, double *trace, double *B, double *Sigma, char *err, size_t errlen);

/* Sigma [p x p] (lower triangle) -> Omega = Sigma^-1 (full), its diagonal
 * (omd, or NULL) and log |Sigma|, by Cholesky; 0, or 1 with a message. */
int svir_pln_spd_inverse(int p, double *Om, double *omd, double *logdet, char *err, size_t errlen);

/* PLN-PCA (pln_pca.c; cov = SVIR_PLN_PCA): the number of parameters (M
 * and log S [n x q], then C [p x q] and B [d x p] unless Bfix and Wfix
 * hold them), the L-BFGS problem from x (sparse counts by rows in Rp, Rj,
 * Rx when dat->Y is NULL; NULL when out of memory), and the objective and
 * gradient at x (0, 1 with a message, 2 out of memory). */
ptrdiff_t svir_pln_pca_npar(const svir_pln_data *dat);
svir_lbfgs_problem *svir_pln_pca_problem(const svir_pln_data *dat, const int *Rp, const int *Rj,
                                         const double *Rx, double *x);
int svir_pln_pca_eval(const svir_pln_data *dat, const int *Rp, const int *Rj, const double *Rx,
                      const double *x, double *J, double *g, char *err, size_t errlen);

/* Rank q's small parts (p x q and q x q; pln_rank.c), shared by the
 * CPU objective and the CUDA host code:
 * svir_pln_wb_small: for Sigma = W W' + diag(exp(lpsi)), 1 / psi (ipsi),
 *   V = Psi^-1 W, KmI = W' V, Kinv = (I + W' V)^-1, G = V Kinv,
 *   omd = diag(Sigma^-1) and log |Sigma|; 0, or 1 with a message.
 * svir_pln_rank_grad: from PQ = T'(T W) (T = R Omega; overwritten),
 *   colt2 = sum_i T_ij^2 and s2sum = sum_i S_ij^2, OW = Omega W and the
 *   gradient in W (gW) and log psi (gl); X2 [p x q], Qs [q x q] scratch.
 * svir_pln_rank_h0den: the L-BFGS's initial inverse Hessian's
 *   denominators for W and log psi (den [p (q + 1)]).
 * svir_pln_sigma_lowrank: Sigma = W W' + diag(exp(lpsi)) [p x p]. */
int svir_pln_wb_small(int p, int q, const double *W, const double *lpsi, double *ipsi, double *V,
                      double *KmI, double *Kinv, double *G, double *omd, double *logdet, char *err,
                      size_t errlen);
void svir_pln_rank_grad(int p, int q, double nd, const double *lpsi, const double *ipsi,
                        const double *V, const double *KmI, const double *G, const double *omd,
                        const double *s2sum, const double *colt2, double *PQ, double *OW, double *X2,
                        double *Qs, double *gW, double *gl);
void svir_pln_rank_h0den(int p, int q, double nd, const double *W, const double *lpsi,
                         const double *OW, const double *omd, double *den);
void svir_pln_sigma_lowrank(int p, int q, const double *W, const double *lpsi, double *Sigma);

#ifdef __cplusplus
}
#endif

#endif
