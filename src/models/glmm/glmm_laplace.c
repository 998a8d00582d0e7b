/* The GLMM's Laplace step (glmm_laplace.h). The Newton system in u =
 * (beta, b) has the negative Hessian, with the Fisher information of each
 * observation (the observed one for the canonical links and the negative
 * binomial),
 *     H = [ D   B ]   D: the eliminated term's levels, block diagonal
 *         [ B'  C ]   C: beta and the other terms' levels, dense,
 * solved through the Schur complement S = C - B' D^{-1} B, so that a model
 * with one grouping factor costs O(n k^2 + p^3) per Newton step whatever
 * its number of levels. The mode is exact (the gradient is); the
 * curvature only shapes the Gaussian that the importance weights then
 * correct. */
#include "models/glmm/glmm_laplace.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/svir_philox.h"
#include "models/glmm/glmm_global.h"

#define LAP_LOG_2PI 1.8378770664093454836

/* ---- small dense Cholesky (column-major lower, in place) ----------------- */

static int chol_lower(double *a, ptrdiff_t n, double *logdet)
{
    /* left-looking by columns: column j minus the earlier columns times
     * their row-j entries, every access contiguous */
    double ld = 0.0;
    for (ptrdiff_t j = 0; j < n; j++) {
        double *aj = a + j * n;
        for (ptrdiff_t k = 0; k < j; k++) {
            const double *ak = a + k * n;
            const double f = ak[j];
            if (f == 0.0) continue;
            for (ptrdiff_t i = j; i < n; i++) aj[i] -= f * ak[i];
        }
        const double s = aj[j];
        if (!(s > 0.0) || !isfinite(s)) return 1;
        const double l = sqrt(s), il = 1.0 / l;
        aj[j] = l;
        ld += 2.0 * log(l);
        for (ptrdiff_t i = j + 1; i < n; i++) aj[i] *= il;
    }
    *logdet += ld;
    return 0;
}

/* x <- L^{-1} x (by columns) */
static void solve_l(const double *a, ptrdiff_t n, double *x)
{
    for (ptrdiff_t k = 0; k < n; k++) {
        const double *ak = a + k * n;
        const double xk = x[k] / ak[k];
        x[k] = xk;
        if (xk == 0.0) continue;
        for (ptrdiff_t i = k + 1; i < n; i++) x[i] -= ak[i] * xk;
    }
}

/* x <- L^{-T} x */
static void solve_lt(const double *a, ptrdiff_t n, double *x)
{
    for (ptrdiff_t i = n - 1; i >= 0; i--) {
        double s = x[i];
        for (ptrdiff_t k = i + 1; k < n; k++) s -= a[k + i * n] * x[k];
        x[i] = s / a[i + i * n];
    }
}

/* ---- Gauss-Hermite rule --------------------------------------------------- */

/* the orthonormal Hermite polynomials (weight e^{-x^2}) p_0..p_{N-1} at x
 * into pv, returns p_N(x) */
static double gh_poly(double x, double *pv)
{
    double pm = 0.0, pc = 0.7511255444649425; /* pi^{-1/4} */
    for (int j = 0; j < SVIR_LAP_GH; j++) {
        pv[j] = pc;
        const double pn = x * sqrt(2.0 / (j + 1.0)) * pc - sqrt(j / (j + 1.0)) * pm;
        pm = pc;
        pc = pn;
    }
    return pc;
}

/* The N-point rule: the roots of p_N, bracketed on a fine scan and refined
 * by bisection, and the Christoffel weights 1 / sum_j p_j(x)^2. */
static void gh_rule(double *x, double *w)
{
    double pv[SVIR_LAP_GH];
    const double L = sqrt(2.0 * SVIR_LAP_GH + 1.0) + 1.0, hstep = 1e-3;
    int k = 0;
    double a = -L, fa = gh_poly(a, pv);
    while (k < SVIR_LAP_GH && a < L) {
        const double b = a + hstep, fb = gh_poly(b, pv);
        if ((fa < 0.0) != (fb < 0.0)) {
            double lo = a, hi = b, flo = fa;
            for (int it = 0; it < 100; it++) {
                const double mid = 0.5 * (lo + hi), fm = gh_poly(mid, pv);
                if ((fm < 0.0) == (flo < 0.0)) {
                    lo = mid;
                    flo = fm;
                } else {
                    hi = mid;
                }
            }
            x[k++] = 0.5 * (lo + hi);
        }
        a = b;
        fa = fb;
    }
    for (int j = 0; j < SVIR_LAP_GH; j++) {
        gh_poly(x[j], pv);
        double s2 = 0.0;
        for (int c = 0; c < SVIR_LAP_GH; c++) s2 += pv[c] * pv[c];
        w[j] = 1.0 / s2;
    }
}

/* ---- the plan ------------------------------------------------------------ */

int svir_lap_pick_integrated(const svir_glmm *m)
{
    if (m->family == SVIR_GAUSSIAN || m->wt || m->zi) return -1;
    for (int t = 0; t < m->nterms; t++) {
        const svir_term *tm = &m->terms[t];
        if (tm->q != 1 || tm->ngroups != m->n) continue;
        unsigned char *seen = calloc((size_t)m->n + 1, 1);
        if (!seen) return -1;
        int ok = 1;
        for (ptrdiff_t i = 0; i < m->n && ok; i++) {
            const int j = tm->group[i];
            if (j < 0 || j >= tm->ngroups || seen[j]) ok = 0;
            else seen[j] = 1;
        }
        free(seen);
        if (ok) return t;
    }
    return -1;
}

int svir_lap_plan_init(svir_lap_plan *pl, const svir_glmm *m, int integrate)
{
    memset(pl, 0, sizeof *pl);
    pl->m = m;
    const ptrdiff_t n = m->n;
    const int nt = m->nterms;
    pl->O = integrate ? svir_lap_pick_integrated(m) : -1;
    gh_rule(pl->gh_x, pl->gh_w);
    pl->E = -1;
    ptrdiff_t best = -1;
    for (int t = 0; t < nt; t++) {
        if (t == pl->O) continue;
        const ptrdiff_t s = (ptrdiff_t)m->terms[t].ngroups * m->terms[t].q;
        if (s > best) {
            best = s;
            pl->E = t;
        }
    }
    pl->roff = malloc(sizeof(ptrdiff_t) * (size_t)(nt + 1));
    if (!pl->roff) return 2;
    ptrdiff_t r = m->p;
    for (int t = 0; t < nt; t++) {
        if (t == pl->E || t == pl->O) {
            pl->roff[t] = -1;
            continue;
        }
        pl->roff[t] = r;
        r += (ptrdiff_t)m->terms[t].ngroups * m->terms[t].q;
    }
    pl->nr = r;
    if (pl->E < 0) {
        pl->d = pl->nr;
        return 0;
    }
    const svir_term *tE = &m->terms[pl->E];
    const int JE = tE->ngroups;
    pl->qE = tE->q;
    pl->nE = (ptrdiff_t)JE * tE->q;
    pl->d = pl->nE + pl->nr;
    /* observations by level of E (counting sort) */
    pl->lev_start = calloc((size_t)JE + 1, sizeof(ptrdiff_t));
    pl->obs_order = malloc(sizeof(ptrdiff_t) * (size_t)(n + 1));
    pl->obs_pos = malloc(sizeof(ptrdiff_t) * (size_t)(n * nt + 1));
    ptrdiff_t *cnt = calloc((size_t)JE + 1, sizeof(ptrdiff_t));
    ptrdiff_t *stamp = malloc(sizeof(ptrdiff_t) * (size_t)(pl->nr + 1));
    ptrdiff_t *where = malloc(sizeof(ptrdiff_t) * (size_t)(pl->nr + 1));
    if (!pl->lev_start || !pl->obs_order || !pl->obs_pos || !cnt || !stamp || !where) {
        free(cnt);
        free(stamp);
        free(where);
        return 2;
    }
    for (ptrdiff_t i = 0; i < n; i++) cnt[tE->group[i] + 1]++;
    for (int j = 0; j < JE; j++) cnt[j + 1] += cnt[j];
    for (ptrdiff_t i = 0; i < n; i++) pl->obs_order[cnt[tE->group[i]]++] = i;
    /* cnt[j] is now the end of level j; level j starts at cnt[j - 1] */
    for (ptrdiff_t k = 0; k < pl->nr; k++) stamp[k] = -1;
    /* first pass: the lengths of the levels' lists */
    ptrdiff_t total = 0;
    for (int j = 0; j < JE; j++) {
        ptrdiff_t len = m->p;
        for (ptrdiff_t o = j ? cnt[j - 1] : 0; o < cnt[j]; o++) {
            const ptrdiff_t i = pl->obs_order[o];
            for (int t = 0; t < nt; t++) {
                if (t == pl->E || t == pl->O) continue;
                const ptrdiff_t c0 = pl->roff[t] + (ptrdiff_t)m->terms[t].group[i] * m->terms[t].q;
                if (stamp[c0] != j) {
                    stamp[c0] = j;
                    len += m->terms[t].q;
                }
            }
        }
        pl->lev_start[j + 1] = pl->lev_start[j] + len;
        total += len;
    }
    pl->lev_cols = malloc(sizeof(ptrdiff_t) * (size_t)(total + 1));
    if (!pl->lev_cols) {
        free(cnt);
        free(stamp);
        free(where);
        return 2;
    }
    for (ptrdiff_t k = 0; k < pl->nr; k++) stamp[k] = -1;
    for (int j = 0; j < JE; j++) {
        ptrdiff_t *cols = pl->lev_cols + pl->lev_start[j];
        ptrdiff_t len = 0;
        for (int k = 0; k < m->p; k++) cols[len++] = k;
        for (ptrdiff_t o = j ? cnt[j - 1] : 0; o < cnt[j]; o++) {
            const ptrdiff_t i = pl->obs_order[o];
            for (int t = 0; t < nt; t++) {
                pl->obs_pos[i * nt + t] = -1;
                if (t == pl->E || t == pl->O) continue;
                const int q = m->terms[t].q;
                const ptrdiff_t c0 = pl->roff[t] + (ptrdiff_t)m->terms[t].group[i] * q;
                if (stamp[c0] != j) {
                    stamp[c0] = j;
                    where[c0] = len;
                    for (int c = 0; c < q; c++) cols[len++] = c0 + c;
                }
                pl->obs_pos[i * nt + t] = where[c0];
            }
        }
    }
    pl->nbcoef = (ptrdiff_t)pl->qE * total;
    free(cnt);
    free(stamp);
    free(where);
    return 0;
}

void svir_lap_plan_free(svir_lap_plan *pl)
{
    free(pl->roff);
    free(pl->lev_start);
    free(pl->lev_cols);
    free(pl->obs_pos);
    free(pl->obs_order);
    memset(pl, 0, sizeof *pl);
}

/* ---- workspace ------------------------------------------------------------ */

typedef struct {
    double *sd, *L, *A, *P, *logdetA; /* globals, P = Sigma^{-1} per term */
    double *th;                       /* [D] theta with the current beta */
    double *gE, *gr;                  /* gradient, eliminated / rest */
    double *Dm, *Bm, *Cm;             /* Hessian blocks, then their factors */
    double *dl, *un, *tmp;            /* the step [d], a trial u [p + nz], scratch */
    double logdet;                    /* log det H after factoring */
    double nbc;                       /* negbin: sum_i w_i log Gamma(y_i + phi) / Gamma(phi),
                                       * fixed by theta, added once (lap_loglik leaves it out) */
    double *keep;                     /* [1]: log det H, kept in the work for svir_lap_draw */
    ptrdiff_t nr_, qmax_;             /* tmp: rv [nr], ev [qmax], Ai [qmax^2], idx [nr] */
} lap_ws;

ptrdiff_t svir_lap_work_size(const svir_lap_plan *pl)
{
    const svir_glmm *m = pl->m;
    ptrdiff_t nsd = 0;
    for (int t = 0; t < m->nterms; t++) nsd += m->terms[t].q;
    const ptrdiff_t JE = pl->E >= 0 ? m->terms[pl->E].ngroups : 0;
    return nsd + 3 * m->nqq + m->nterms + m->D + pl->nE + pl->nr +
        JE * pl->qE * pl->qE + pl->nbcoef + pl->nr * pl->nr + pl->d + (m->p + m->nz) +
        (2 * pl->nr + m->qmax + (ptrdiff_t)m->qmax * m->qmax + 8) + 16;
}

static double *take(double **w, ptrdiff_t n)
{
    double *p = *w;
    *w += n;
    return p;
}

static lap_ws lap_carve(const svir_lap_plan *pl, double *w)
{
    const svir_glmm *m = pl->m;
    lap_ws s;
    ptrdiff_t nsd = 0;
    for (int t = 0; t < m->nterms; t++) nsd += m->terms[t].q;
    const ptrdiff_t JE = pl->E >= 0 ? m->terms[pl->E].ngroups : 0;
    s.keep = take(&w, 2);
    s.sd = take(&w, nsd);
    s.L = take(&w, m->nqq);
    s.A = take(&w, m->nqq);
    s.P = take(&w, m->nqq);
    s.logdetA = take(&w, m->nterms);
    s.th = take(&w, m->D);
    s.gE = take(&w, pl->nE);
    s.gr = take(&w, pl->nr);
    s.Dm = take(&w, JE * pl->qE * pl->qE);
    s.Bm = take(&w, pl->nbcoef);
    s.Cm = take(&w, pl->nr * pl->nr);
    s.dl = take(&w, pl->d);
    s.un = take(&w, m->p + m->nz);
    s.tmp = w;
    s.logdet = 0.0;
    s.nr_ = pl->nr;
    s.qmax_ = m->qmax;
    return s;
}

static double lap_nb_const(const svir_glmm *m, double phi);

/* sd, L, A of theta; P = (A A')^{-1} = A^{-T} A^{-1} (row-major q x q) and
 * log |det A| per term */
static void lap_globals(const svir_glmm *m, const double *theta, lap_ws *s)
{
    svir_globals g;
    g.sd = s->sd;
    g.L = s->L;
    g.A = s->A;
    svir_unpack_globals(m, theta, &g);
    for (int t = 0; t < m->nterms; t++) {
        const svir_term *tm = &m->terms[t];
        const int q = tm->q;
        const double *A = s->A + tm->off_qq;
        double *P = s->P + tm->off_qq;
        double ld = 0.0;
        for (int k = 0; k < q; k++) ld += log(A[k * q + k]);
        s->logdetA[t] = ld;
        /* columns of A^{-1}: solve A x = e_c (lower triangular, row-major) */
        double *Ai = s->tmp + s->nr_ + s->qmax_; /* q x q, row-major */
        for (int c = 0; c < q; c++) {
            for (int r = 0; r < q; r++) {
                double v = r == c ? 1.0 : 0.0;
                for (int k = 0; k < r; k++) v -= A[r * q + k] * Ai[k * q + c];
                Ai[r * q + c] = v / A[r * q + r];
            }
        }
        for (int a = 0; a < q; a++)
            for (int b = 0; b < q; b++) {
                double v = 0.0;
                for (int k = 0; k < q; k++) v += Ai[k * q + a] * Ai[k * q + b];
                P[a * q + b] = v;
            }
    }
    s->nbc = m->family == SVIR_NEGBIN ? lap_nb_const(m, exp(theta[m->off_phi])) : 0.0;
}

/* negbin: the part of the log-likelihood that depends on phi alone, as
 * svir_loglik computes it */
static double lap_nb_const(const svir_glmm *m, double phi)
{
    double c = 0.0;
    for (ptrdiff_t i = 0; i < m->n; i++) {
        const double y = m->y[i];
        double lg = 0.0;
        if (y < 16) {
            for (int k = 0; k < (int)y; k++) lg += log(phi + k);
        } else {
            lg = svir_lgamma(y + phi) - svir_lgamma(phi);
        }
        c += m->wt ? m->wt[i] * lg : lg;
    }
    return c;
}

/* An observation's log-likelihood (times its weight) and d/d eta; for the
 * negative binomial without the part in phi alone (lap_nb_const) */
static double lap_loglik(const svir_glmm *m, ptrdiff_t i, double eta, const svir_aux *aux,
                         double *de)
{
    if (m->family != SVIR_NEGBIN) {
        double da, dz = 0.0;
        return svir_loglik_obs_w(m, m->family, m->link, 0, i, eta, 0.0, aux, de, &da, &dz);
    }
    const double y = m->y[i], phi = aux->phi, lphi = aux->log_phi;
    const double hi = lphi > eta ? lphi : eta;
    const double log_pm = hi + log1p(exp(-fabs(lphi - eta)));
    const double w = m->wt ? m->wt[i] : 1.0;
    *de = w * (y - (y + phi) * exp(eta - log_pm));
    return w * (phi * lphi + y * eta - (y + phi) * log_pm);
}

/* The information of eta for observation i (times its weight): Fisher's,
 * which is the observed one for the canonical links, and the observed one
 * for the negative binomial */
static double lap_info(const svir_glmm *m, ptrdiff_t i, double eta, const svir_aux *aux)
{
    double w;
    switch (m->family) {
    case SVIR_GAUSSIAN:
        w = aux->inv_s2;
        break;
    case SVIR_BINOMIAL: {
        const double t = m->trials ? m->trials[i] : 1.0;
        if (m->link == SVIR_LINK_PROBIT) {
            w = t * svir_mills_inv(eta) * svir_mills_inv(-eta);
        } else if (m->link == SVIR_LINK_CLOGLOG) {
            const double u = exp(eta);
            w = u > 700.0 ? 0.0 : t * u * u / expm1(u);
        } else {
            const double pr = eta >= 0 ? 1.0 / (1.0 + exp(-eta)) : exp(eta) / (1.0 + exp(eta));
            w = t * pr * (1.0 - pr);
        }
        break;
    }
    case SVIR_POISSON:
        w = exp(eta);
        break;
    default: {
        /* negbin: the observed information (y + phi) mu phi / (phi + mu)^2,
         * positive for every y. Its Fisher information mu phi / (phi + mu)
         * is smaller by (y + phi) / (mu + phi) where a count sits far above
         * its mean, and Newton's steps with it then overshoot and stall
         * (small phi, counts in the hundreds: 2 in 500 fits of the SBC's
         * design failed to find a mode at the start) */
        const double phi = aux->phi, lphi = aux->log_phi, y = m->y[i];
        const double hi = lphi > eta ? lphi : eta;
        const double log_pm = hi + log1p(exp(-fabs(lphi - eta)));
        w = (y + phi) * exp(eta - log_pm) * exp(lphi - log_pm);
    }
    }
    return m->wt ? w * m->wt[i] : w;
}

/* lap_loglik and lap_info together (one exp for the Poisson) */
static double lap_obs3(const svir_glmm *m, ptrdiff_t i, double eta, const svir_aux *aux,
                       double *de, double *info)
{
    if (m->family == SVIR_POISSON && !m->wt) {
        const double mu = exp(eta), y = m->y[i];
        *de = y - mu;
        *info = mu;
        return y * eta - mu;
    }
    const double l = lap_loglik(m, i, eta, aux, de);
    *info = lap_info(m, i, eta, aux);
    return l;
}

/* The mode vh of g(v) = log f(y_i | eta + v) - v^2 / (2 s^2) (concave for
 * the log-concave families here) by safeguarded Newton steps from 0, so
 * that the quadrature around it, and so each log density, is a function of
 * (eta, s) alone (a start carried over from an earlier pass made it depend
 * on the path at 1e-11, enough to keep Newton's outer steps cycling);
 * returns g(vh), with *tau = (the information at vh + 1 / s^2)^{-1/2}. */
static double lap_cond_mode(const svir_glmm *m, ptrdiff_t i, double eta, double s,
                            const svir_aux *aux, double *vh, double *tau)
{
    const double is2 = 1.0 / (s * s);
    double v = 0.0, d1, in1;
    double gv = lap_obs3(m, i, eta, aux, &d1, &in1);
    for (int it = 0; it < 100 && isfinite(gv); it++) {
        double step = (d1 - v * is2) / (in1 + is2);
        double vn = v, gn = gv, dn = d1, inn = in1;
        int ok = 0;
        for (int h = 0; h < 50; h++, step *= 0.5) {
            vn = v + step;
            gn = lap_obs3(m, i, eta + vn, aux, &dn, &inn) - 0.5 * vn * vn * is2;
            if (isfinite(gn) && gn >= gv - 1e-12 * (1.0 + fabs(gv))) {
                ok = 1;
                break;
            }
        }
        if (!ok) break;
        const double moved = fabs(vn - v);
        v = vn;
        gv = gn;
        d1 = dn;
        in1 = inn;
        if (moved < 1e-10 * (1.0 + fabs(v))) break;
    }
    *vh = v;
    *tau = 1.0 / sqrt(in1 + is2);
    return gv;
}

/* Observation i's log-likelihood with the integrated term's effect v ~
 * N(0, s^2) integrated out by adaptive Gauss-Hermite quadrature: log int
 * f(y_i | eta + v) N(v; 0, s^2) dv, its derivative in eta (*de: the
 * posterior mean of the score) and minus its second derivative (*info:
 * the posterior mean of the information less the posterior variance of
 * the score, at least 0; log-concave in eta, as a convolution of
 * log-concave functions). s = 0: the plain likelihood. */
static double lap_loglik_int(const svir_lap_plan *pl, ptrdiff_t i, double eta, double s,
                             const svir_aux *aux, double *de, double *info)
{
    const svir_glmm *m = pl->m;
    if (!(s > 0.0)) return lap_obs3(m, i, eta, aux, de, info);
    double vh, tau;
    (void)lap_cond_mode(m, i, eta, s, aux, &vh, &tau);
    const double is2 = 1.0 / (s * s), sc = sqrt(2.0) * tau;
    double L[SVIR_LAP_GH], D1[SVIR_LAP_GH], IN[SVIR_LAP_GH];
    double mx = -INFINITY;
    for (int k = 0; k < SVIR_LAP_GH; k++) {
        const double x = pl->gh_x[k], v = vh + sc * x;
        const double h = lap_obs3(m, i, eta + v, aux, &D1[k], &IN[k]);
        L[k] = log(pl->gh_w[k]) + x * x + h - 0.5 * v * v * is2;
        if (L[k] > mx) mx = L[k];
    }
    if (!isfinite(mx)) {
        *de = NAN;
        *info = NAN;
        return -INFINITY;
    }
    double z = 0.0;
    for (int k = 0; k < SVIR_LAP_GH; k++) z += exp(L[k] - mx);
    double m1 = 0.0, m2 = 0.0, ei = 0.0;
    for (int k = 0; k < SVIR_LAP_GH; k++) {
        const double pk = exp(L[k] - mx) / z;
        m1 += pk * D1[k];
        m2 += pk * D1[k] * D1[k];
        ei += pk * IN[k];
    }
    *de = m1;
    const double inf = ei - (m2 - m1 * m1);
    *info = inf > 0.0 ? inf : 0.0;
    return mx + log(z) + log(sc / s) - 0.5 * LAP_LOG_2PI;
}

/* the integrated term's sd times observation i's column of Z */
static double lap_int_scale(const svir_lap_plan *pl, const lap_ws *s, ptrdiff_t i)
{
    const svir_glmm *m = pl->m;
    const svir_term *tO = &m->terms[pl->O];
    return fabs(s->A[tO->off_qq] * tO->Z[i]);
}

/* curvature (minus the second derivative, at least 0) of a fixed effect's prior */
static double lap_prior_curv(int type, double df, double loc, double scale, double x)
{
    if (type == SVIR_PRIOR_NORMAL) return 1.0 / (scale * scale);
    if (type == SVIR_PRIOR_STUDENT_T) {
        const double r2 = (x - loc) * (x - loc) / (scale * scale);
        const double c = (df + 1.0) * (df - r2) / (scale * scale * (df + r2) * (df + r2));
        return c > 0.0 ? c : 0.0;
    }
    return 0.0;
}

/* log p(y, beta, b, theta_h) at u; with H, its gradient (gE, gr) and the
 * blocks of the negative Hessian (Dm, Bm, Cm, lower triangle of Cm). */
static double lap_pass(const svir_lap_plan *pl, const double *u, lap_ws *s, int H)
{
    const svir_glmm *m = pl->m;
    const ptrdiff_t n = m->n;
    const int nt = m->nterms, p = m->p, qE = pl->qE;
    const double *beta = u, *b = u + p;
    const svir_term *tE = pl->E >= 0 ? &m->terms[pl->E] : NULL;
    svir_aux aux;
    svir_aux_set(&aux, m->off_sigma >= 0 ? exp(s->th[m->off_sigma]) : 1.0,
                 m->off_phi >= 0 ? exp(s->th[m->off_phi]) : 1.0);
    if (H) {
        memset(s->gE, 0, sizeof(double) * (size_t)pl->nE);
        memset(s->gr, 0, sizeof(double) * (size_t)pl->nr);
        const ptrdiff_t JE = tE ? tE->ngroups : 0;
        memset(s->Dm, 0, sizeof(double) * (size_t)(JE * qE * qE));
        memset(s->Bm, 0, sizeof(double) * (size_t)pl->nbcoef);
        memset(s->Cm, 0, sizeof(double) * (size_t)(pl->nr * pl->nr));
    }
    double ll = 0.0;
    /* the rest's nonzeros of one observation: values rv, indices idx */
    double *rv = s->tmp, *ev = s->tmp + pl->nr;
    ptrdiff_t *idx = (ptrdiff_t *)(s->tmp + pl->nr + m->qmax + (ptrdiff_t)m->qmax * m->qmax);
    for (ptrdiff_t o = 0; o < n; o++) {
        const ptrdiff_t i = pl->obs_order ? pl->obs_order[o] : o;
        double de, wf;
        /* eta without the integrated term's effect, which the quadrature
         * takes (its scale 0 without one: the plain likelihood) */
        const double eta = svir_eta_obs_except(m, i, beta, b, pl->O);
        ll += lap_loglik_int(pl, i, eta, pl->O >= 0 ? lap_int_scale(pl, s, i) : 0.0, &aux, &de,
                             &wf);
        if (!H) continue;
        int nv = 0;
        for (int k = 0; k < p; k++) {
            idx[nv] = k;
            rv[nv++] = m->X[i + (ptrdiff_t)k * n];
        }
        for (int t = 0; t < nt; t++) {
            if (t == pl->E || t == pl->O) continue;
            const svir_term *tm = &m->terms[t];
            const ptrdiff_t c0 = pl->roff[t] + (ptrdiff_t)tm->group[i] * tm->q;
            for (int c = 0; c < tm->q; c++) {
                idx[nv] = c0 + c;
                rv[nv++] = tm->Z[i + (ptrdiff_t)c * n];
            }
        }
        for (int a = 0; a < nv; a++) s->gr[idx[a]] += rv[a] * de;
        const ptrdiff_t j = tE ? tE->group[i] : 0;
        if (tE) {
            for (int c = 0; c < qE; c++) {
                ev[c] = tE->Z[i + (ptrdiff_t)c * n];
                s->gE[j * qE + c] += ev[c] * de;
            }
        }
        if (wf == 0.0) continue;
        /* C += wf v v' (lower triangle) */
        for (int a = 0; a < nv; a++) {
            const double va = wf * rv[a];
            for (int bb = 0; bb < nv; bb++) {
                if (idx[bb] > idx[a]) continue;
                s->Cm[idx[a] + idx[bb] * pl->nr] += va * rv[bb];
            }
        }
        if (!tE) continue;
        /* D_j += wf e e'; B_j[c, pos] += wf e_c v */
        double *Dj = s->Dm + j * qE * qE;
        for (int a = 0; a < qE; a++)
            for (int c = 0; c < qE; c++) Dj[a + c * qE] += wf * ev[a] * ev[c];
        double *Bj = s->Bm + qE * pl->lev_start[j]; /* qE x len, column-major */
        int a = 0;
        for (int k = 0; k < p; k++, a++)
            for (int c = 0; c < qE; c++) Bj[c + (ptrdiff_t)k * qE] += wf * ev[c] * rv[a];
        for (int t = 0; t < nt; t++) {
            if (t == pl->E || t == pl->O) continue;
            const ptrdiff_t pos = pl->obs_pos[i * nt + t];
            for (int cc = 0; cc < m->terms[t].q; cc++, a++)
                for (int c = 0; c < qE; c++) Bj[c + (pos + cc) * qE] += wf * ev[c] * rv[a];
        }
    }
    double f = ll + s->nbc + m->ll_const;
    /* priors: theta_h's (with their Jacobians) and beta's */
    for (int k = 0; k < p; k++) s->th[k] = beta[k];
    f += svir_log_prior(m, s->th, NULL);
    if (H) {
        for (int k = 0; k < p; k++) {
            double dx;
            (void)svir_prior_lpdf(m->prior_type[k], m->prior_df[k], m->prior_loc[k],
                                  m->prior_scale[k], beta[k], 0, &dx);
            s->gr[k] += dx;
            s->Cm[k + k * pl->nr] += lap_prior_curv(m->prior_type[k], m->prior_df[k],
                                                    m->prior_loc[k], m->prior_scale[k], beta[k]);
        }
    }
    /* the random effects' N(0, A A') (the integrated term's is in the
     * quadrature) */
    for (int t = 0; t < nt; t++) {
        if (t == pl->O) continue;
        const svir_term *tm = &m->terms[t];
        const int q = tm->q;
        const double *P = s->P + tm->off_qq;
        for (int j = 0; j < tm->ngroups; j++) {
            const double *bj = b + tm->off_z + (ptrdiff_t)j * q;
            double quad = 0.0;
            for (int a = 0; a < q; a++) {
                double pa = 0.0;
                for (int c = 0; c < q; c++) pa += P[a * q + c] * bj[c];
                quad += bj[a] * pa;
                if (!H) continue;
                if (t == pl->E) {
                    s->gE[(ptrdiff_t)j * q + a] -= pa;
                    double *Dj = s->Dm + (ptrdiff_t)j * q * q;
                    for (int c = 0; c < q; c++) Dj[a + c * q] += P[a * q + c];
                } else {
                    const ptrdiff_t c0 = pl->roff[t] + (ptrdiff_t)j * q;
                    s->gr[c0 + a] -= pa;
                    for (int c = 0; c <= a; c++) s->Cm[(c0 + a) + (c0 + c) * pl->nr] += P[a * q + c];
                }
            }
            f += -0.5 * quad - s->logdetA[t] - 0.5 * q * LAP_LOG_2PI;
        }
    }
    return f;
}

/* Factor H (from lap_pass) and solve H dl = g; returns the Newton
 * decrement g' H^{-1} g, or NAN when H is not positive definite. On
 * return Dm holds the levels' factors L_j, Bm holds W_j = L_j^{-1} B_j,
 * Cm the factor of S, s->logdet log det H, and dl the step (in the
 * internal order: E's block, then the rest). */
static double lap_factor_solve(const svir_lap_plan *pl, lap_ws *s)
{
    const ptrdiff_t nr = pl->nr;
    const int qE = pl->qE;
    double dec = 0.0;
    s->logdet = 0.0;
    const svir_term *tE = pl->E >= 0 ? &pl->m->terms[pl->E] : NULL;
    const int JE = tE ? tE->ngroups : 0;
    for (int j = 0; j < JE; j++) {
        double *Dj = s->Dm + (ptrdiff_t)j * qE * qE;
        /* the lower triangle of D_j was accumulated whole: symmetric */
        if (chol_lower(Dj, qE, &s->logdet)) return NAN;
        const ptrdiff_t l0 = pl->lev_start[j], len = pl->lev_start[j + 1] - l0;
        const ptrdiff_t *cols = pl->lev_cols + l0;
        double *W = s->Bm + qE * l0;
        for (ptrdiff_t a = 0; a < len; a++) solve_l(Dj, qE, W + a * qE);
        double *v = s->gE + (ptrdiff_t)j * qE;
        solve_l(Dj, qE, v);
        for (int c = 0; c < qE; c++) dec += v[c] * v[c];
        for (ptrdiff_t a = 0; a < len; a++) {
            const double *wa = W + a * qE;
            double sv = 0.0;
            for (int c = 0; c < qE; c++) sv += wa[c] * v[c];
            s->gr[cols[a]] -= sv;
            for (ptrdiff_t bb = 0; bb < len; bb++) {
                if (cols[bb] > cols[a]) continue;
                const double *wb = W + bb * qE;
                double sw = 0.0;
                for (int c = 0; c < qE; c++) sw += wa[c] * wb[c];
                s->Cm[cols[a] + cols[bb] * nr] -= sw;
            }
        }
    }
    if (chol_lower(s->Cm, nr, &s->logdet)) return NAN;
    double *dr = s->dl + pl->nE;
    memcpy(dr, s->gr, sizeof(double) * (size_t)nr);
    solve_l(s->Cm, nr, dr);
    for (ptrdiff_t k = 0; k < nr; k++) dec += dr[k] * dr[k];
    solve_lt(s->Cm, nr, dr);
    for (int j = 0; j < JE; j++) {
        const ptrdiff_t l0 = pl->lev_start[j], len = pl->lev_start[j + 1] - l0;
        const ptrdiff_t *cols = pl->lev_cols + l0;
        const double *W = s->Bm + qE * l0;
        double *dE = s->dl + (ptrdiff_t)j * qE;
        for (int c = 0; c < qE; c++) dE[c] = s->gE[(ptrdiff_t)j * qE + c];
        for (ptrdiff_t a = 0; a < len; a++)
            for (int c = 0; c < qE; c++) dE[c] -= W[c + a * qE] * dr[cols[a]];
        solve_lt(s->Dm + (ptrdiff_t)j * qE * qE, qE, dE);
    }
    return dec;
}

/* un = u + step * dl (dl in the internal order) */
static void lap_apply(const svir_lap_plan *pl, const double *u, const double *dl, double step,
                      double *un)
{
    const svir_glmm *m = pl->m;
    const int p = m->p;
    memcpy(un, u, sizeof(double) * (size_t)(p + m->nz));
    const double *dr = dl + pl->nE;
    for (int k = 0; k < p; k++) un[k] += step * dr[k];
    for (int t = 0; t < m->nterms; t++) {
        if (t == pl->O) continue;
        const svir_term *tm = &m->terms[t];
        const ptrdiff_t len = (ptrdiff_t)tm->ngroups * tm->q;
        double *bt = un + p + tm->off_z;
        const double *src = t == pl->E ? dl : dr + pl->roff[t];
        for (ptrdiff_t k = 0; k < len; k++) bt[k] += step * src[k];
    }
}

int svir_lap_mode(const svir_lap_plan *pl, const double *theta, double *u, double *work,
                  double *logp, int *iters)
{
    const svir_glmm *m = pl->m;
    lap_ws s = lap_carve(pl, work);
    memcpy(s.th, theta, sizeof(double) * (size_t)m->D);
    lap_globals(m, theta, &s);
    const ptrdiff_t nu = m->p + m->nz;
    *iters = 0;
    double f = lap_pass(pl, u, &s, 1);
    for (int it = 0; it < 200; it++) {
        if (!isfinite(f)) return 1;
        const double dec = lap_factor_solve(pl, &s);
        if (!isfinite(dec)) return 1;
        if (dec < 1e-10 + 1e-13 * fabs(f)) {
            s.keep[0] = s.logdet;
            *logp = f + 0.5 * (double)pl->d * LAP_LOG_2PI - 0.5 * s.logdet;
            return 0;
        }
        /* the full step, evaluated with the next step's Hessian (one pass
         * when it is taken, as it nearly always is) */
        lap_apply(pl, u, s.dl, 1.0, s.un);
        double fn = lap_pass(pl, s.un, &s, 1);
        if (!(isfinite(fn) && fn >= f + 1e-4 * dec)) {
            /* backtracking (Armijo), then the Hessian at the point taken */
            double step = 0.5;
            int ok = 0;
            for (int h = 0; h < 60; h++, step *= 0.5) {
                lap_apply(pl, u, s.dl, step, s.un);
                fn = lap_pass(pl, s.un, &s, 0);
                /* a strict increase too: once 1e-4 step dec is below f's
                 * last bit, a step that changes nothing would pass and the
                 * loop would repeat it to the end (the integrated term's
                 * quadrature, whose gradient is the exact integral's, not
                 * the quadrature's, leaves a decrement of about 1e-7 there) */
                if (isfinite(fn) && fn > f && fn >= f + 1e-4 * step * dec) {
                    ok = 1;
                    break;
                }
            }
            if (!ok) {
                /* no ascent left at double precision: a mode if the
                 * decrement is negligible next to the log density. With
                 * an integrated term the gradient is the exact integral's
                 * while f is its quadrature, and their mismatch can leave
                 * a decrement of 1e-4 at sd 3 (1e-7 at sd 2) where no step
                 * ascends: up to 1e-2 (a log density at most 0.005 below
                 * the mode's) is taken as the mode, which only centres the
                 * proposal; the weights use f itself */
                const double stall = pl->O >= 0 ? 1e-2 : 0.0;
                if (dec >= fmax(1e-6 * (1.0 + fabs(f)), stall)) return 1;
                f = lap_pass(pl, u, &s, 1);
                if (!isfinite(lap_factor_solve(pl, &s))) return 1;
                s.keep[0] = s.logdet;
                *logp = f + 0.5 * (double)pl->d * LAP_LOG_2PI - 0.5 * s.logdet;
                return 0;
            }
            fn = lap_pass(pl, s.un, &s, 1);
        }
        memcpy(u, s.un, sizeof(double) * (size_t)nu);
        f = fn;
        *iters = it + 1;
    }
    return 1;
}

double svir_lap_draw(const svir_lap_plan *pl, const double *theta, const double *mode,
                     const double *eps, double *u_draw, double *work, double *logf)
{
    const svir_glmm *m = pl->m;
    lap_ws s = lap_carve(pl, work);
    const ptrdiff_t nr = pl->nr;
    const int qE = pl->qE;
    double *dr = s.dl + pl->nE;
    double e2 = 0.0;
    for (ptrdiff_t k = 0; k < pl->d; k++) e2 += eps[k] * eps[k];
    memcpy(dr, eps + pl->nE, sizeof(double) * (size_t)nr);
    solve_lt(s.Cm, nr, dr);
    const svir_term *tE = pl->E >= 0 ? &m->terms[pl->E] : NULL;
    for (int j = 0; tE && j < tE->ngroups; j++) {
        const ptrdiff_t l0 = pl->lev_start[j], len = pl->lev_start[j + 1] - l0;
        const ptrdiff_t *cols = pl->lev_cols + l0;
        const double *W = s.Bm + qE * l0;
        double *dE = s.dl + (ptrdiff_t)j * qE;
        for (int c = 0; c < qE; c++) dE[c] = eps[(ptrdiff_t)j * qE + c];
        for (ptrdiff_t a = 0; a < len; a++)
            for (int c = 0; c < qE; c++) dE[c] -= W[c + a * qE] * dr[cols[a]];
        solve_lt(s.Dm + (ptrdiff_t)j * qE * qE, qE, dE);
    }
    lap_apply(pl, mode, s.dl, 1.0, u_draw);
    const double logq = -0.5 * (double)pl->d * LAP_LOG_2PI + 0.5 * s.keep[0] - 0.5 * e2;
    memcpy(s.th, theta, sizeof(double) * (size_t)m->D);
    lap_globals(m, theta, &s);
    *logf = lap_pass(pl, u_draw, &s, 0);
    return logq;
}

/* One draw of v from p(v | y_i, eta) propto exp(g(v)), g(v) = log f(y_i |
 * eta + v) - v^2 / (2 s^2), by rejection from the upper hull of g made of
 * its tangents at 5 points around the mode (Gilks and Wild 1992, without
 * the adaptation: g is concave, so the hull lies above it and the draw is
 * exact). The uniforms come in pairs from Philox (stream
 * SVIR_STREAM_LAPLACE_INT, `step`, pairs obs * 64 + try); after 64
 * rejections, which the hull's fit makes practically impossible, the mode
 * is returned. */
#define LAP_HULL 5
static double lap_cond_draw(const svir_glmm *m, ptrdiff_t i, double eta, double s,
                            const svir_aux *aux, const uint32_t key[2], uint64_t step)
{
    double vh, tau;
    const double g0 = lap_cond_mode(m, i, eta, s, aux, &vh, &tau);
    const double is2 = 1.0 / (s * s);
    static const double at[LAP_HULL] = {-2.0, -0.8, 0.0, 0.8, 2.0};
    double x[LAP_HULL], g[LAP_HULL], d[LAP_HULL], zc[LAP_HULL + 1], mass[LAP_HULL];
    for (int k = 0; k < LAP_HULL; k++) {
        x[k] = vh + at[k] * tau;
        double dd;
        g[k] = lap_loglik(m, i, eta + x[k], aux, &dd) - 0.5 * x[k] * x[k] * is2 - g0;
        d[k] = dd - x[k] * is2;
    }
    d[2] = 0.0; /* the mode's tangent */
    /* the hull's breakpoints: where consecutive tangents meet */
    zc[0] = -INFINITY;
    zc[LAP_HULL] = INFINITY;
    for (int k = 0; k + 1 < LAP_HULL; k++) {
        const double den = d[k] - d[k + 1];
        zc[k + 1] = den > 0.0 ? (g[k + 1] - g[k] - x[k + 1] * d[k + 1] + x[k] * d[k]) / den
                              : 0.5 * (x[k] + x[k + 1]);
        if (zc[k + 1] < x[k]) zc[k + 1] = x[k];
        if (zc[k + 1] > x[k + 1]) zc[k + 1] = x[k + 1];
    }
    if (!(d[0] > 0.0) || !(d[LAP_HULL - 1] < 0.0)) return vh; /* not concave here */
    /* each piece's mass: int exp(g_k + d_k (v - x_k)) over [zc_k, zc_k+1] */
    double tot = 0.0;
    for (int k = 0; k < LAP_HULL; k++) {
        const double lo = zc[k], hi = zc[k + 1];
        double mk;
        if (k == 0) {
            mk = exp(g[k] + d[k] * (hi - x[k])) / d[k];
        } else if (k == LAP_HULL - 1) {
            mk = exp(g[k] + d[k] * (lo - x[k])) / -d[k];
        } else if (fabs(d[k]) * (hi - lo) < 1e-10) {
            mk = exp(g[k] + d[k] * (0.5 * (lo + hi) - x[k])) * (hi - lo);
        } else {
            mk = exp(g[k] + d[k] * (lo - x[k])) * expm1(d[k] * (hi - lo)) / d[k];
        }
        mass[k] = mk > 0.0 && isfinite(mk) ? mk : 0.0;
        tot += mass[k];
    }
    for (int t = 0; t < 64; t++) {
        uint32_t ctr[4], w[4];
        svir_philox_ctr(SVIR_STREAM_LAPLACE_INT, step, (uint64_t)i * 64u + (uint64_t)t, ctr);
        svir_philox4x32(ctr, key, w);
        const double u1 = svir_u01_53(w[0], w[1]), u2 = svir_u01_53(w[2], w[3]);
        /* the piece, then v by the inverse CDF of the exponential on it */
        double r = u1 * tot;
        int k = 0;
        while (k < LAP_HULL - 1 && r > mass[k]) r -= mass[k++];
        const double f = mass[k] > 0.0 ? r / mass[k] : 0.5; /* in (0, 1] */
        const double lo = zc[k], hi = zc[k + 1];
        double v;
        if (k == 0) {
            v = hi + log(f > 0.0 ? f : 1e-300) / d[k];
        } else if (k == LAP_HULL - 1) {
            v = lo + log1p(-(f < 1.0 ? f : 1.0 - 1e-16)) / d[k];
        } else if (fabs(d[k]) * (hi - lo) < 1e-10) {
            v = lo + f * (hi - lo);
        } else {
            v = lo + log1p(f * expm1(d[k] * (hi - lo))) / d[k];
        }
        if (!isfinite(v)) continue;
        double dd;
        const double gv = lap_loglik(m, i, eta + v, aux, &dd) - 0.5 * v * v * is2 - g0;
        const double hull = g[k] + d[k] * (v - x[k]);
        if (log(u2) <= gv - hull) return v;
    }
    return vh;
}

void svir_lap_fill(const svir_lap_plan *pl, const double *theta, double *u,
                   const uint32_t key[2], uint64_t step, double *work)
{
    if (pl->O < 0) return;
    const svir_glmm *m = pl->m;
    lap_ws s = lap_carve(pl, work);
    memcpy(s.th, theta, sizeof(double) * (size_t)m->D);
    lap_globals(m, theta, &s);
    svir_aux aux;
    svir_aux_set(&aux, m->off_sigma >= 0 ? exp(theta[m->off_sigma]) : 1.0,
                 m->off_phi >= 0 ? exp(theta[m->off_phi]) : 1.0);
    const svir_term *tO = &m->terms[pl->O];
    const double sd = s.A[tO->off_qq];
    double *bO = u + m->p + tO->off_z;
    for (ptrdiff_t i = 0; i < m->n; i++) {
        const double zi = tO->Z[i], sc = fabs(sd * zi);
        if (!(sc > 0.0)) {
            /* no data on it: its prior */
            bO[tO->group[i]] = sd * svir_normal(key, SVIR_STREAM_LAPLACE_INT, step,
                                                (uint64_t)i * 128u);
            continue;
        }
        const double eta = svir_eta_obs_except(m, i, u, u + m->p, pl->O);
        bO[tO->group[i]] = lap_cond_draw(m, i, eta, sc, &aux, key, step) / zi;
    }
}

double svir_lap_logf(const svir_lap_plan *pl, const double *theta, const double *u,
                     double *work)
{
    lap_ws s = lap_carve(pl, work);
    memcpy(s.th, theta, sizeof(double) * (size_t)pl->m->D);
    lap_globals(pl->m, theta, &s);
    return lap_pass(pl, u, &s, 0);
}

void svir_lap_z_from_b(const svir_glmm *m, const double *theta, const double *b, double *z,
                       double *work)
{
    ptrdiff_t nsd = 0;
    for (int t = 0; t < m->nterms; t++) nsd += m->terms[t].q;
    svir_globals g;
    g.sd = work;
    g.L = work + nsd;
    g.A = g.L + m->nqq;
    svir_unpack_globals(m, theta, &g);
    for (int t = 0; t < m->nterms; t++) {
        const svir_term *tm = &m->terms[t];
        const int q = tm->q;
        const double *A = g.A + tm->off_qq;
        for (int j = 0; j < tm->ngroups; j++) {
            const double *bj = b + tm->off_z + (ptrdiff_t)j * q;
            double *zj = z + tm->off_z + (ptrdiff_t)j * q;
            for (int r = 0; r < q; r++) {
                double v = bj[r];
                for (int k = 0; k < r; k++) v -= A[r * q + k] * zj[k];
                zj[r] = v / A[r * q + r];
            }
        }
    }
}
