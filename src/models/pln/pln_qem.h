/* QEM for the rank-q Poisson-lognormal model (src/svir_pln_qem.c). */
#ifndef SVIR_PLN_QEM_H
#define SVIR_PLN_QEM_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int n, p, d, q, threads;
    const double *Y;   /* [n x p] counts */
    const double *O;   /* [n x p] offsets or NULL */
    const double *X;   /* [n x d] */
    const double *lgy; /* [n x p] log Y! */
} svir_pln_qem_data;

/* the globals and the proposals, updated in place */
typedef struct {
    double *B;     /* [d x p] */
    double *W;     /* [p x q] */
    double *psi;   /* [p] */
    double *mu_u;  /* [n x q] q(u_i) means */
    double *su;    /* [n x q] and sds */
    double *mu_e;  /* [n x p] q(e_ij) means */
    double *tau;   /* [n x p] and sds */
} svir_pln_qem_state;

/* Runs at most max_iter iterations with K samples per latent (moving
 * average eta_t = min(1, eta0 (t + 1)^-kappa)), stopping after min_iter
 * when log P-hat plateaus; trace [max_iter] gets log P-hat per iteration,
 * ess [n] the rows' effective sample sizes of the last iteration. Returns
 * 0, 1 (numerical failure, message in err) or 2 (out of memory). */
int svir_pln_qem_fit(const svir_pln_qem_data *dat, svir_pln_qem_state *s, int K, int max_iter,
                     int min_iter, double eta0, double kappa, uint64_t seed, double *trace,
                     int *iters, double *ess, char *err, size_t errlen);

#endif
