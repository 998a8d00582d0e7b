/* The GLMM's coupled guide (see coupling_init in the GLMM's SVI code): its
 * constants, forward pass and per-term backward pass, as host/device
 * functions on plain arrays (no allocation), shared by the CPU and, for a
 * fit on the device, the CUDA backend. */
#ifndef SVIR_GLMM_COUPLING_H
#define SVIR_GLMM_COUPLING_H

#include "models/glmm/glmm.h"
#include "models/glmm/glmm_local.h"

/* The coupled guide's constants (see coupling_init in glmm_coupling.c): per
 * term cns[t] span columns from coff[t], its columns' offset qoff[t] in the
 * [sum q] arrays; per span column o: its column cS[o] of Z, a_o = ca[o p ..],
 * K_o = cK[o p ..], share comega[o]; the reference point cref [p]. */
typedef struct {
    int couple, sumq;
    const int *cns, *coff, *qoff, *cS;
    const double *ca, *cK, *comega, *cref;
} svir_coupling;

/* *cp viewing the given arrays (host or device) */
SVIR_MATH_HD void svir_coupling_view(svir_coupling *cp, int couple, int sumq, const int *cns,
                                     const int *coff, const int *qoff, const int *cS,
                                     const double *ca, const double *cK, const double *comega,
                                     const double *cref)
{
    cp->couple = couple;
    cp->sumq = sumq;
    cp->cns = cns;
    cp->coff = coff;
    cp->qoff = qoff;
    cp->cS = cS;
    cp->ca = ca;
    cp->cK = cK;
    cp->comega = comega;
    cp->cref = cref;
}

/* The coupled guide's forward pass: beta_eff = beta - sum s_tk a_tk, per
 * term u = E s and w = A^{-1} u (u, wv: [sum q]). */
SVIR_MATH_HD void svir_coupling_forward(const svir_glmm *m, const svir_coupling *cp,
                                        const double *theta, const svir_globals *g,
                                        double *beta_eff, double *u, double *wv)
{
    const int p = m->p;
    for (int i = 0; i < p; i++) beta_eff[i] = theta[i];
    if (!cp->couple) return;
    int qo = 0;
    for (int t = 0; t < m->nterms; t++) {
        const svir_term *tm = &m->terms[t];
        const int q = tm->q;
        double *ut = u + qo, *wt = wv + qo;
        for (int r = 0; r < q; r++) ut[r] = 0.0;
        for (int s = 0; s < cp->cns[t]; s++) {
            const int o = cp->coff[t] + s;
            const double *K = cp->cK + (size_t)o * p, *a = cp->ca + (size_t)o * p;
            double sk = 0.0;
            for (int i = 0; i < p; i++) sk += K[i] * (theta[i] - cp->cref[i]);
            sk *= cp->comega[o];
            ut[cp->cS[o]] = sk;
            for (int i = 0; i < p; i++) beta_eff[i] -= sk * a[i];
        }
        const double *A = g->A + tm->off_qq;
        for (int r = 0; r < q; r++) {
            double acc = ut[r];
            for (int cc = 0; cc < r; cc++) acc -= A[r * q + cc] * wt[cc];
            wt[r] = acc / A[r * q + r];
        }
        qo += q;
    }
}

/* The coupled guide's reference point cref [p] and shares comega [ns] from
 * the means `gpar` (beta and log sd): a span column's share of a direction
 * is its sd^2 / J among the columns with the same a (v: [ns] scratch). */
SVIR_MATH_HD void svir_coupling_shares(const svir_glmm *m, const svir_coupling *cp, int ns,
                                       const double *gpar, double *cref, double *comega,
                                       double *v)
{
    const int p = m->p;
    for (int i = 0; i < p; i++) cref[i] = gpar[i];
    for (int t = 0; t < m->nterms; t++) {
        const svir_term *tm = &m->terms[t];
        for (int s = 0; s < cp->cns[t]; s++) {
            const double sd = exp(gpar[tm->off_sd + cp->cS[cp->coff[t] + s]]);
            v[cp->coff[t] + s] = sd * sd / tm->ngroups;
        }
    }
    for (int i = 0; i < ns; i++) {
        double tot = 0.0;
        for (int j = 0; j < ns; j++) {
            int same = 1;
            for (int c = 0; c < p && same; c++)
                if (fabs(cp->ca[(size_t)i * p + c] - cp->ca[(size_t)j * p + c]) > 1e-10 *
                    (1.0 + fabs(cp->ca[(size_t)i * p + c]))) same = 0;
            if (same) tot += v[j];
        }
        comega[i] = tot > 0 ? v[i] / tot : 0.0;
    }
}

/* The coupled guide's backward pass per term, after the groups' sums dw
 * (cdw, [sum q]) and the likelihood's cds ([span columns]): dA (per term, at
 * off_qq) and gtheta [p]. */
SVIR_MATH_HD void svir_coupling_back_terms(const svir_glmm *m, const svir_coupling *cp,
                                           const svir_globals *g, const double *wv,
                                           const double *cdw, const double *cds, double *dAall,
                                           double *gtheta)
{
    const int p = m->p;
    for (int t = 0; t < m->nterms; t++) {
        if (cp->cns[t] == 0) continue;
        const svir_term *tm = &m->terms[t];
        const int q = tm->q;
        const double *A = g->A + tm->off_qq, *wt = wv + cp->qoff[t], *dw = cdw + cp->qoff[t];
        double du[SVIR_QMAX_STACK];
        /* w = A^{-1} u: du = A^{-T} dw, dA = -du w^T (lower part) */
        for (int r = q - 1; r >= 0; r--) {
            double acc = dw[r];
            for (int r2 = r + 1; r2 < q; r2++) acc -= A[r2 * q + r] * du[r2];
            du[r] = acc / A[r * q + r];
        }
        double *dA = dAall + tm->off_qq;
        for (int r = 0; r < q; r++)
            for (int cc = 0; cc <= r; cc++) dA[r * q + cc] -= du[r] * wt[cc];
        for (int s = 0; s < cp->cns[t]; s++) {
            const int o = cp->coff[t] + s;
            const double ds = cds[o] + du[cp->cS[o]];
            const double *K = cp->cK + (size_t)o * p;
            for (int i = 0; i < p; i++) gtheta[i] += cp->comega[o] * ds * K[i];
        }
    }
}

#endif
