/* The GLMM's SVI internals shared by its files (glmm_svi.c: the work and
 * the ELBO estimate; glmm_obs.c: the pass over the observations;
 * glmm_coupling.c: the coupled guide; glmm_draws.c: the posterior draws).
 * Not for the drivers, which see the model through svir_glmm_svi_ops. */
#ifndef SVIR_GLMM_WORK_H
#define SVIR_GLMM_WORK_H

#include <stddef.h>
#include <stdint.h>

#include "core/svir_result.h"
#include "models/glmm/glmm.h"
#include "models/glmm/glmm_coupling.h"

/* loops over groups go parallel only when there are this many: a parallel
 * region costs microseconds, far more on a loaded machine */
#define SVIR_PAR_GROUPS 32768

typedef struct {
    const svir_glmm *m;
    const svir_control *c;
    int T;                  /* threads for the per-step loops */
    int T_draws;            /* threads for the final draws (one data pass each) */
    ptrdiff_t D, ngp, ngroups_total;
    uint32_t key[2];
    int full;
    ptrdiff_t B;            /* observations per step */
    double scale;           /* n / B */
    svir_globals g;
    double *theta, *eps, *gtheta, *u;
    double *z, *noise, *b;  /* [nz], valid for present groups */
    double *ediag;          /* [nz] diagonal of each group's C (exp of its stored log) */
    double *Gt;             /* [T x nz] per-thread d loglik / d b */
    double *gbt, *gauxt, *llt;
    double *gb;             /* [p] reduced d loglik / d beta */
    double *gzt, *gz;       /* [T x pz], [pz] the same for the zero inflation's gamma */
    double *dA;             /* [nqq] */
    ptrdiff_t *idx;         /* [B] minibatch */
    ptrdiff_t *goff;        /* [nterms] first global group id of each term */
    long *stamp;            /* [ngroups_total] */
    ptrdiff_t *slot;        /* [ngroups_total] */
    int *pres_term, *pres_group;
    double *pres_cnt;
    ptrdiff_t npres;
    int *runs;              /* [nterms] consecutive observations mostly share a group */
    int nt_fast;            /* m->nt_icpt, or 0 when positions in b overflow an int */
    int *gcat;              /* [n x nt_fast] with nt_fast: observation i's position in b
                             * (off_z + group) for each term, side by side */
    int nrun;               /* 1: slot 0 of gcat holds a term with w->runs set */
    /* full batches of random intercepts: a term in which another is nested
     * (departments above instructors) leaves gcat; its effect is added to
     * its child's per step (bf) and its gradient summed from the child's
     * (glmm_fold_init, glmm_batch_loglik) */
    int nfold;
    int fold_term[SVIR_NT_ICPT_MAX], fold_into[SVIR_NT_ICPT_MAX];
    int *fold_map[SVIR_NT_ICPT_MAX]; /* [ngroups of fold_into] the folded term's group */
    double *bf;             /* [nz] b with the folded terms added to their children */
    const double *bobs;     /* what the observations' pass reads: bf or b */
    double *tsplit;         /* the time split [SVIR_N_PHASES] estimate adds to (the driver's) */
    const double *lpar_cur; /* the local parameters of the estimate under way */
    /* partially centred terms (svir_term.lambda; back_q1_centred) */
    int ncentred;
    double *kap;            /* [nterms] sd^-lambda (q = 1) or det K (q > 1) at the current draw */
    double *cGK;            /* [nqq] d ELBO / d K of the centred terms with q > 1 (back_qn_centred) */
    double *cdwc;           /* [sum q] their d objective / d w, for the coupling */
    /* learned centring (m->centre_learn; learn_centring in glmm_svi.c) */
    double *lam_g;          /* [nterms] d ELBO / d lambda of the last estimate */
    double *lam_kl;         /* [nterms] workspace: the KL's part of it, per draw */
    double *lam_sum, *lam_sq; /* [nterms] the window's sums of lam_g and its square */
    long lam_n, lam_windows;
    double tsplit_own[SVIR_N_PHASES];
    ptrdiff_t *span_off, *span_len; /* [ngroups_total] the present groups' local blocks */
    /* coupled guide (see coupling_forward) */
    int couple;             /* any term has a column in X's span */
    int *cns, *coff;        /* [nterms] span columns per term, offset into the arrays below */
    int *qoff, sumq;        /* [nterms] offset of each term in the [sum q] arrays */
    int *cS;                /* [ns] column of Z */
    double *ca;             /* [ns x p] a_k: Z[, k] = X a_k */
    double *cK;             /* [ns x p] rows of (a^T a)^{-1} a^T, per term */
    double *comega;         /* [ns] share of the fixed-effect deviation given to the column */
    double *cref;           /* [p] reference point of the fixed effects */
    double *beta_eff;       /* [p] fixed effects the likelihood sees */
    double *cu, *cw, *cdw;  /* [sum q] per term: u = E s, w = A^{-1} u, d objective / d w */
    double *cds;            /* [ns] d objective / d s */
    svir_coupling cp;       /* the arrays above, for glmm_coupling.h */
} glmm_work;

/* glmm_svi.c */
int glmm_work_init(glmm_work *w, const svir_glmm *m, const svir_control *c);
void glmm_work_free(glmm_work *w);
void glmm_select_batch(glmm_work *w, long step);
void glmm_draw_theta(const glmm_work *w, const double *gpar, uint64_t stream, uint64_t step,
                     uint64_t base, double *eps, double *theta);
double glmm_estimate(glmm_work *w, long step, const double *gpar, const double *lpar,
                     double *ggrad, double *lgrad);
/* glmm_obs.c: the batch's log-likelihood (without constants) and its
 * gradients: beta (gb [p]), b (w->Gt, thread 0's, at the present groups),
 * log sigma or log phi (*gaux) */
double glmm_batch_loglik(glmm_work *w, double *gb, double *gaux, double *gz);
/* glmm_coupling.c */
int glmm_coupling_init(glmm_work *w);
void glmm_coupling_update(glmm_work *w, const double *gpar);
void glmm_coupling_forward(const glmm_work *w, const double *theta, const svir_globals *g,
                           double *beta_eff, double *u, double *wv);
int glmm_coupling_reanchor(glmm_work *w, const double *src, int nsets, double *const *gpars,
                           double *const *lpars);
double glmm_coupling_backward(glmm_work *w, const double *lpar, int stl);
/* glmm_draws.c */
int glmm_final_draws(glmm_work *w, const double *gpar, const double *lpar, svir_result *res);

#endif
