/* The GLMM's coupled guide: where a column of a term's Z lies in the span
 * of X, the random effects' guide moves with the fixed effects (see below),
 * so that q(beta) is not pinned by the groups' common level. */
#include "models/glmm/glmm_work.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void *xcalloc(size_t n, size_t size, int *fail)
{
    void *p = calloc(n ? n : 1, size);
    if (!p) *fail = 1;
    return p;
}

/* ---- coupled guide ---------------------------------------------------------
 * Under the plain guide q(theta) q(z) the fixed effects cannot trade off
 * against the common level of the random effects (the intercept against the
 * groups' mean, a fixed slope against the random slopes' mean): the
 * likelihood pins their sum, so q(beta) comes out far too narrow. Where a
 * column k of a term's Z lies in X's span (Z[, k] = X a_k), the guide couples
 * the two: with d = beta - c (c a fixed reference point),
 *   s_tk = omega_tk (K_t d)_k,   K_t = (a_t^T a_t)^{-1} a_t^T,
 *   z_tj = z0_tj - w_t,          w_t = A_t^{-1} E_t s_t,   z0_tj ~ N(m_tj, C_tj C_tj^T),
 * so b_tj = A_t z0_tj - E_t s_t and the linear predictor sees
 * beta_eff = beta - sum_tk s_tk a_tk. The shares omega_tk of columns with
 * the same a add to one, so a deviation of beta along the span reaches the
 * likelihood not at all and the random effects' prior alone sets its spread
 * (sd^2 / J for a random intercept), as in the exact posterior. This is
 * still a valid guide q(theta) q(z | theta), with the same entropy. */
int glmm_coupling_init(glmm_work *w)
{
    const svir_glmm *m = w->m;
    const int p = m->p, nt = m->nterms;
    int fail = 0;
    w->cns = xcalloc((size_t)nt, sizeof(int), &fail);
    w->coff = xcalloc((size_t)nt, sizeof(int), &fail);
    w->qoff = xcalloc((size_t)nt, sizeof(int), &fail);
    if (fail) return 1;
    int ns = 0, qs = 0;
    for (int t = 0; t < nt; t++) {
        const svir_term *tm = &m->terms[t];
        w->coff[t] = ns;
        w->qoff[t] = qs;
        qs += tm->q;
        if (!w->m->couple || !tm->xmap || p == 0 || tm->ngroups < 2) continue;
        for (int k = 0; k < tm->q; k++)
            if (!isnan(tm->xmap[(ptrdiff_t)k * p])) w->cns[t]++;
        ns += w->cns[t];
    }
    w->couple = ns > 0;
    w->sumq = qs;
    w->cS = xcalloc((size_t)ns, sizeof(int), &fail);
    w->ca = xcalloc((size_t)ns * (size_t)p, sizeof(double), &fail);
    w->cK = xcalloc((size_t)ns * (size_t)p, sizeof(double), &fail);
    w->comega = xcalloc((size_t)ns, sizeof(double), &fail);
    w->cref = xcalloc((size_t)p, sizeof(double), &fail);
    w->cu = xcalloc((size_t)qs, sizeof(double), &fail);
    w->cw = xcalloc((size_t)qs, sizeof(double), &fail);
    w->cdw = xcalloc((size_t)qs, sizeof(double), &fail);
    w->cds = xcalloc((size_t)ns, sizeof(double), &fail);
    if (fail) return 1;
    for (int t = 0; t < nt; t++) {
        const svir_term *tm = &m->terms[t];
        const int n_s = w->cns[t], o = w->coff[t];
        if (n_s == 0) continue;
        int s = 0;
        for (int k = 0; k < tm->q; k++)
            if (!isnan(tm->xmap[(ptrdiff_t)k * p])) {
                w->cS[o + s] = k;
                memcpy(w->ca + (size_t)(o + s) * p, tm->xmap + (ptrdiff_t)k * p, sizeof(double) * (size_t)p);
                s++;
            }
        /* K = (a^T a)^{-1} a^T by Gauss-Jordan on [a^T a | a^T] */
        const int wd = n_s + p;
        double *N = calloc((size_t)n_s * (size_t)wd, sizeof(double));
        if (!N) return 1;
        for (int r = 0; r < n_s; r++) {
            const double *ar = w->ca + (size_t)(o + r) * p;
            for (int cc = 0; cc < n_s; cc++) {
                const double *ac = w->ca + (size_t)(o + cc) * p;
                double acc = 0.0;
                for (int i = 0; i < p; i++) acc += ar[i] * ac[i];
                N[r * wd + cc] = acc;
            }
            for (int i = 0; i < p; i++) N[r * wd + n_s + i] = ar[i];
        }
        for (int r = 0; r < n_s; r++) {
            const double piv = N[r * wd + r];
            if (!(fabs(piv) > 1e-12)) { free(N); return 1; }
            for (int cc = 0; cc < wd; cc++) N[r * wd + cc] /= piv;
            for (int r2 = 0; r2 < n_s; r2++) {
                if (r2 == r) continue;
                const double f = N[r2 * wd + r];
                for (int cc = 0; cc < wd; cc++) N[r2 * wd + cc] -= f * N[r * wd + cc];
            }
        }
        for (int r = 0; r < n_s; r++)
            for (int i = 0; i < p; i++) w->cK[(size_t)(o + r) * p + i] = N[r * wd + n_s + i];
        free(N);
    }
    return 0;
}

/* Reference point and shares from the means `gpar` (beta and log sd): a
 * column's share of a direction is its sd^2 / J among the columns with the
 * same a. */
void glmm_coupling_update(glmm_work *w, const double *gpar)
{
    const svir_glmm *m = w->m;
    if (!w->couple) return;
    const int ns = w->coff[m->nterms - 1] + w->cns[m->nterms - 1];
    /* the constants alone (svir_coupling_new calls this before w->cp is set) */
    svir_coupling cp;
    svir_coupling_view(&cp, 1, w->sumq, w->cns, w->coff, w->qoff, w->cS, w->ca, w->cK, w->comega,
                       w->cref);
    svir_coupling_shares(m, &cp, ns, gpar, w->cref, w->comega, w->cds /* scratch */);
}

/* s, beta_eff, u = E s and w = A^{-1} u for the draw theta (A from g). */
void glmm_coupling_forward(const glmm_work *w, const double *theta, const svir_globals *g,
                             double *beta_eff, double *u, double *wv)
{
    svir_coupling_forward(w->m, &w->cp, theta, g, beta_eff, u, wv);
}

/* Re-anchors the coupling at new means `src` (reference point and shares).
 * Each parameter set (gpars[i], lpars[i]) keeps its conditional mean of z at
 * theta = its own mean: m -= w_old - w_new. */
int glmm_coupling_reanchor(glmm_work *w, const double *src, int nsets, double *const *gpars,
                           double *const *lpars)
{
    const svir_glmm *m = w->m;
    if (!w->couple) return 0;
    const int p = m->p, ns = w->coff[m->nterms - 1] + w->cns[m->nterms - 1];
    int moved = 0;
    double *old_ref = malloc(sizeof(double) * (size_t)(p + 1));
    double *old_om = malloc(sizeof(double) * (size_t)(ns + 1));
    double *new_ref = malloc(sizeof(double) * (size_t)(p + 1));
    double *new_om = malloc(sizeof(double) * (size_t)(ns + 1));
    double *wold = malloc(sizeof(double) * (size_t)(w->sumq + 1));
    if (!old_ref || !old_om || !new_ref || !new_om || !wold) goto out;
    moved = 1;
    memcpy(old_ref, w->cref, sizeof(double) * (size_t)p);
    memcpy(old_om, w->comega, sizeof(double) * (size_t)ns);
    glmm_coupling_update(w, src);
    memcpy(new_ref, w->cref, sizeof(double) * (size_t)p);
    memcpy(new_om, w->comega, sizeof(double) * (size_t)ns);
    for (int i = 0; i < nsets; i++) {
        svir_unpack_globals(m, gpars[i], &w->g);
        if (w->ncentred) svir_centre_A(m, &w->g, w->kap);
        memcpy(w->cref, old_ref, sizeof(double) * (size_t)p);
        memcpy(w->comega, old_om, sizeof(double) * (size_t)ns);
        glmm_coupling_forward(w, gpars[i], &w->g, w->beta_eff, w->cu, wold);
        memcpy(w->cref, new_ref, sizeof(double) * (size_t)p);
        memcpy(w->comega, new_om, sizeof(double) * (size_t)ns);
        glmm_coupling_forward(w, gpars[i], &w->g, w->beta_eff, w->cu, w->cw);
        for (int t = 0; t < m->nterms; t++) {
            if (w->cns[t] == 0) continue;
            const svir_term *tm = &m->terms[t];
            const int q = tm->q;
            for (int j = 0; j < tm->ngroups; j++) {
                double *mj = lpars[i] + tm->off_loc + (ptrdiff_t)j * svir_local_block(q);
                for (int r = 0; r < q; r++) mj[r] -= wold[w->qoff[t] + r] - w->cw[w->qoff[t] + r];
            }
        }
    }
out:
    free(old_ref); free(old_om); free(new_ref); free(new_om); free(wold);
    return moved;
}

/* After the local gradients of one draw: the coupling's share of the ELBO
 * (returned: minus the change of the weighted local KL terms, whose mean is
 * m - w rather than m) and its gradient, back through w = A^{-1} E s and
 * s = omega K (beta - c) into A (w->dA) and beta (w->gtheta). */
double glmm_coupling_backward(glmm_work *w, const double *lpar, int stl)
{
    const svir_glmm *m = w->m;
    double val = 0.0;
    memset(w->cdw, 0, sizeof(double) * (size_t)w->sumq);
    for (ptrdiff_t k = 0; k < w->npres; k++) {
        const int t = w->pres_term[k];
        /* a centred term's share came from back_q1_centred, in cdwc */
        if (w->cns[t] == 0 || w->m->terms[t].lambda != 0.0) continue;
        const svir_term *tm = &m->terms[t];
        const int q = tm->q, j = w->pres_group[k];
        const double wt = w->scale * w->pres_cnt[k] / tm->nobs[j];
        const double *wv = w->cw + w->qoff[t];
        const double *mj = lpar + tm->off_loc + (ptrdiff_t)j * svir_local_block(q);
        const double *z0 = w->z + tm->off_z + (ptrdiff_t)j * q;
        double *dw = w->cdw + w->qoff[t];
        for (int r = 0; r < q; r++) {
            val -= wt * (-mj[r] * wv[r] + 0.5 * wv[r] * wv[r]);
            dw[r] += wt * (stl ? z0[r] - wv[r] : mj[r] - wv[r]);
        }
    }
    if (w->cdwc)
        for (int r = 0; r < w->sumq; r++) w->cdw[r] += w->cdwc[r];
    svir_coupling_back_terms(m, &w->cp, &w->g, w->cw, w->cdw, w->cds, w->dA, w->gtheta);
    return val;
}

int svir_coupling_new(const svir_glmm *m, const svir_control *c, const double *ref,
                      svir_coupling *out, int *ns_out)
{
    /* coupling_init and coupling_update read only the model and the control:
     * a work with nothing else set, whose coupling arrays then pass to out */
    glmm_work w;
    memset(&w, 0, sizeof w);
    memset(out, 0, sizeof *out);
    *ns_out = 0;
    w.m = m;
    w.c = c;
    int fail = glmm_coupling_init(&w);
    if (!fail && w.couple) {
        double *r0 = calloc((size_t)m->D + 1, sizeof(double));
        if (r0) {
            if (ref) memcpy(r0, ref, sizeof(double) * (size_t)m->D);
            glmm_coupling_update(&w, r0);
            free(r0);
        } else {
            fail = 1;
        }
    }
    if (fail) {
        glmm_work_free(&w);
        return 2;
    }
    out->couple = w.couple;
    out->sumq = w.sumq;
    out->cns = w.cns;
    out->coff = w.coff;
    out->qoff = w.qoff;
    out->cS = w.cS;
    out->ca = w.ca;
    out->cK = w.cK;
    out->comega = w.comega;
    out->cref = w.cref;
    *ns_out = m->nterms > 0 ? w.coff[m->nterms - 1] + w.cns[m->nterms - 1] : 0;
    w.cns = w.coff = w.qoff = w.cS = NULL;
    w.ca = w.cK = w.comega = w.cref = NULL;
    glmm_work_free(&w);
    return 0;
}

void svir_coupling_free(svir_coupling *cp)
{
    free((void *)cp->cns); free((void *)cp->coff); free((void *)cp->qoff); free((void *)cp->cS);
    free((void *)cp->ca); free((void *)cp->cK); free((void *)cp->comega); free((void *)cp->cref);
    memset(cp, 0, sizeof *cp);
}
