/* The engine-side pieces of the global block of an SVI step, as host/device
 * functions on plain arrays (no allocation): the guide's draw of theta and
 * its backward pass, the entropy, and the coupled guide's forward pass and
 * per-term backward pass. Shared by the CPU engine (svir_engine.c) and, for
 * a fit on the device, the CUDA backend. */
#ifndef SVIR_STEP_H
#define SVIR_STEP_H

#include "svir_glmm.h"
#include "svir_local.h"

/* The coupled guide's constants (see coupling_init in svir_engine.c): per
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

/* theta = mu + L eps (fullrank, L packed with a log diagonal) or
 * mu + exp(omega) eps (meanfield); gpar = [mu (D), L or omega]. */
SVIR_MATH_HD void svir_guide_theta(ptrdiff_t D, int fullrank, const double *gpar,
                                   const double *eps, double *theta)
{
    if (fullrank) {
        const double *L = gpar + D;
        for (ptrdiff_t r = 0; r < D; r++) {
            const double *Lr = L + r * (r + 1) / 2;
            double s = gpar[r] + exp(Lr[r]) * eps[r];
            for (ptrdiff_t c = 0; c < r; c++) s += Lr[c] * eps[c];
            theta[r] = s;
        }
    } else {
        for (ptrdiff_t d = 0; d < D; d++) theta[d] = gpar[d] + exp(gpar[D + d]) * eps[d];
    }
}

/* From gtheta = d objective / d theta of one particle to the guide's
 * parameters (added to ggrad, times invS); with stl first adds the path
 * derivative of -log q to gtheta (u: workspace of D doubles). */
SVIR_MATH_HD void svir_guide_backward(ptrdiff_t D, int fullrank, int stl, const double *gpar,
                                      const double *eps, double *gtheta, double invS,
                                      double *ggrad, double *u)
{
    if (stl) {
        if (fullrank) {
            svir_local_back_solve(D, gpar + D, NULL, eps, u);
            for (ptrdiff_t d = 0; d < D; d++) gtheta[d] += u[d];
        } else {
            for (ptrdiff_t d = 0; d < D; d++) gtheta[d] += eps[d] * exp(-gpar[D + d]);
        }
    }
    for (ptrdiff_t d = 0; d < D; d++) ggrad[d] += invS * gtheta[d];
    if (fullrank) {
        double *gL = ggrad + D;
        const double *L = gpar + D;
        for (ptrdiff_t r = 0; r < D; r++) {
            const ptrdiff_t o = r * (r + 1) / 2;
            for (ptrdiff_t cc = 0; cc < r; cc++) gL[o + cc] += invS * gtheta[r] * eps[cc];
            gL[o + r] += invS * gtheta[r] * eps[r] * exp(L[o + r]);
        }
    } else {
        for (ptrdiff_t d = 0; d < D; d++) ggrad[D + d] += invS * gtheta[d] * eps[d] * exp(gpar[D + d]);
    }
}

/* The global guide's entropy, returned; its analytic gradient (without stl)
 * added to ggrad. */
SVIR_MATH_HD double svir_guide_entropy(ptrdiff_t D, int fullrank, int stl, const double *gpar,
                                       double *ggrad)
{
    double H = (double)D * 0.5 * (1.0 + SVIR_LOG_2PI);
    if (fullrank) {
        for (ptrdiff_t r = 0; r < D; r++) {
            const ptrdiff_t o = D + r * (r + 1) / 2 + r;
            H += gpar[o];
            if (!stl) ggrad[o] += 1.0;
        }
    } else {
        for (ptrdiff_t d = 0; d < D; d++) {
            H += gpar[D + d];
            if (!stl) ggrad[D + d] += 1.0;
        }
    }
    return H;
}

/* The coupled guide's forward pass: beta_eff = beta - sum s_tk a_tk, per
 * term u = E s and w = A^{-1} u (u, wv: [sum q]). */
SVIR_MATH_HD void svir_coupling_forward(const svir_model *m, const svir_coupling *cp,
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
SVIR_MATH_HD void svir_coupling_shares(const svir_model *m, const svir_coupling *cp, int ns,
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
SVIR_MATH_HD void svir_coupling_back_terms(const svir_model *m, const svir_coupling *cp,
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

/* ---- Adam ------------------------------------------------------------------ */

#define SVIR_ADAM_B1 0.9
#define SVIR_ADAM_B2 0.999
#define SVIR_ADAM_EPS 1e-8

/* One Adam update of element k: a = lr / bc1 and sb = 1 / sqrt(bc2), the
 * bias corrections taken out (svir_adam_consts). */
SVIR_MATH_HD void svir_adam1(double *par, double *mom, double *vel, const double *g,
                             ptrdiff_t k, double a, double sb)
{
    const double mk = SVIR_ADAM_B1 * mom[k] + (1.0 - SVIR_ADAM_B1) * g[k];
    const double vk = SVIR_ADAM_B2 * vel[k] + (1.0 - SVIR_ADAM_B2) * g[k] * g[k];
    mom[k] = mk;
    vel[k] = vk;
    par[k] += a * mk / (sqrt(vk) * sb + SVIR_ADAM_EPS);
}

/* a and sb of svir_adam1 for step size lr and bias corrections bc1, bc2 */
SVIR_MATH_HD void svir_adam_consts(double lr, double bc1, double bc2, double *a, double *sb)
{
    *a = lr / bc1;
    *sb = 1.0 / sqrt(bc2);
}

#endif
