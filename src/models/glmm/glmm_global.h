/* The global block's transforms, priors and their gradients: host/device
 * functions (SVIR_MATH_HD) on plain arrays, with no allocation, shared by
 * the CPU engine and (for a fit on the device) the CUDA backend. Included by
 * glmm.h after the types it needs. */
#ifndef SVIR_GLOBAL_H
#define SVIR_GLOBAL_H

/* 1 if global parameter k is a log-transformed positive parameter. */
SVIR_MATH_HD int svir_is_positive_par(const svir_glmm *m, ptrdiff_t k)
{
    if (k == m->off_sigma || k == m->off_phi) return 1;
    for (int t = 0; t < m->nterms; t++) {
        const svir_term *tm = &m->terms[t];
        if (k >= tm->off_sd && k < tm->off_sd + tm->q) return 1;
    }
    return 0;
}

SVIR_MATH_HD double svir_term_lkj_eta(const svir_glmm *m, const svir_term *tm)
{
    const ptrdiff_t k = tm->off_cpc;
    return m->prior_type[k] == SVIR_PRIOR_LKJ ? m->prior_df[k] : 1.0;
}

/* ---- Stan's cholesky_corr transform with LKJ prior ---------------------- */

/* Stan's cholesky_corr transform: unconstrained y (q(q-1)/2) -> L (q x q
 * row-major); returns log-Jacobian + LKJ(eta) log density (without its
 * normalising constant). */
SVIR_MATH_HD double svir_cpc_forward(const double *y, int q, double eta, double *L)
{
    double lp = 0.0;
    for (int k = 0; k < q * q; k++) L[k] = 0.0;
    L[0] = 1.0;
    int k = 0;
    for (int i = 1; i < q; i++) {
        double z = tanh(y[k++]);
        lp += log1p(-z * z);
        L[i * q] = z;
        double s = z * z;
        for (int j = 1; j < i; j++) {
            z = tanh(y[k++]);
            lp += log1p(-z * z);
            lp += 0.5 * log1p(-s);
            L[i * q + j] = z * sqrt(1.0 - s);
            s += L[i * q + j] * L[i * q + j];
        }
        L[i * q + i] = sqrt(1.0 - s);
        /* LKJ on the Cholesky factor (Stan's lkj_corr_cholesky_lpdf) */
        lp += (q - i - 1 + 2.0 * (eta - 1.0)) * log(L[i * q + i]);
    }
    return lp;
}

/* Adds to dy the gradient w.r.t. y of sum(dL .* L) (dL may be NULL: zero),
 * plus that of the log-Jacobian and LKJ density when with_density. */
SVIR_MATH_HD void svir_cpc_backward(const double *y, int q, double eta, const double *L,
                                    const double *dL, double *dy, int with_density)
{
    const double wd = with_density ? 1.0 : 0.0;
    int k0 = 0;
    for (int i = 1; i < q; i++) {
        /* y indices of row i: k0 .. k0 + i - 1; s_j = sum_{l<=j} L_il^2 */
        const double Lii = L[i * q + i];
        const double ci = wd * (q - i - 1 + 2.0 * (eta - 1.0));
        double gs = ((dL ? dL[i * q + i] : 0.0) + ci / Lii) * (-0.5 / Lii); /* adjoint of s_{i-1} */
        double s = 1.0 - Lii * Lii;
        for (int j = i - 1; j >= 1; j--) {
            const double Lij = L[i * q + j];
            const double z = tanh(y[k0 + j]);
            const double sprev = s - Lij * Lij; /* s_{j-1} */
            const double w = sqrt(1.0 - sprev);
            const double aL = (dL ? dL[i * q + j] : 0.0) + gs * 2.0 * Lij;
            dy[k0 + j] += aL * w * (1.0 - z * z) - wd * 2.0 * z;
            gs += aL * z * (-0.5 / w) - wd * 0.5 / (1.0 - sprev);
            s = sprev;
        }
        const double z0 = L[i * q];
        const double aL0 = (dL ? dL[i * q] : 0.0) + gs * 2.0 * z0;
        dy[k0] += aL0 * (1.0 - z0 * z0) - wd * 2.0 * z0;
        k0 += i;
    }
}

/* Global parameters unpacked to the natural scale (g's arrays from
 * svir_globals_alloc or the caller). */
SVIR_MATH_HD void svir_unpack_globals(const svir_glmm *m, const double *theta, svir_globals *g)
{
    g->beta = theta;
    for (int t = 0; t < m->nterms; t++) {
        const svir_term *tm = &m->terms[t];
        const int q = tm->q;
        double *sd = g->sd + (tm->off_sd - m->p);
        double *L = g->L + tm->off_qq, *A = g->A + tm->off_qq;
        for (int k = 0; k < q; k++) sd[k] = exp(theta[tm->off_sd + k]);
        if (tm->correlated) {
            svir_cpc_forward(theta + tm->off_cpc, q, 1.0, L);
        } else {
            for (int k = 0; k < q * q; k++) L[k] = 0.0;
            for (int k = 0; k < q; k++) L[k * q + k] = 1.0;
        }
        for (int r = 0; r < q; r++)
            for (int c = 0; c < q; c++) A[r * q + c] = sd[r] * L[r * q + c];
    }
    g->sigma = m->off_sigma >= 0 ? exp(theta[m->off_sigma]) : 1.0;
    g->phi = m->off_phi >= 0 ? exp(theta[m->off_phi]) : 1.0;
}

/* ---- priors ------------------------------------------------------------- */

SVIR_MATH_HD double svir_prior_lpdf(int type, double df, double loc, double scale, double x,
                                    int half, double *dx)
{
    switch (type) {
    case SVIR_PRIOR_NORMAL: {
        const double r = (x - loc) / scale;
        *dx = -r / scale;
        return -0.5 * r * r - log(scale) - SVIR_LOG_SQRT_2PI + (half ? SVIR_LOG2 : 0.0);
    }
    case SVIR_PRIOR_STUDENT_T: {
        const double r = (x - loc) / scale;
        *dx = -(df + 1.0) * (x - loc) / (df * scale * scale + (x - loc) * (x - loc));
        return svir_lgamma(0.5 * (df + 1.0)) - svir_lgamma(0.5 * df) -
            0.5 * log(df * 3.14159265358979323846) - log(scale) - 0.5 * (df + 1.0) * log1p(r * r / df) +
            (half ? SVIR_LOG2 : 0.0);
    }
    case SVIR_PRIOR_EXPONENTIAL:
        *dx = -scale;
        return log(scale) - scale * x;
    default:
        *dx = 0.0;
        return 0.0;
    }
}

/* log p(theta) including the log-Jacobians of the unconstraining transforms;
 * adds its gradient to grad (if not NULL). ws: workspace of qmax^2 doubles
 * (used by correlated terms). */
SVIR_MATH_HD double svir_log_prior_ws(const svir_glmm *m, const double *theta, double *grad,
                                      double *ws)
{
    double lp = 0.0, dx;
    for (int k = 0; k < m->p; k++) {
        lp += svir_prior_lpdf(m->prior_type[k], m->prior_df[k], m->prior_loc[k],
                              m->prior_scale[k], theta[k], 0, &dx);
        if (grad) grad[k] += dx;
    }
    /* zero inflation's coefficients, on the logit scale */
    for (ptrdiff_t k = m->off_zi; m->zi && k < m->off_zi + m->pz; k++) {
        lp += svir_prior_lpdf(m->prior_type[k], m->prior_df[k], m->prior_loc[k],
                              m->prior_scale[k], theta[k], 0, &dx);
        if (grad) grad[k] += dx;
    }
    /* positive parameters on the log scale: log p(x) + log x */
    for (ptrdiff_t k = m->p; k < m->D; k++) {
        if (!svir_is_positive_par(m, k)) continue;
        const double x = exp(theta[k]);
        lp += svir_prior_lpdf(m->prior_type[k], m->prior_df[k], m->prior_loc[k],
                              m->prior_scale[k], x, 1, &dx) + theta[k];
        if (grad) grad[k] += x * dx + 1.0;
    }
    for (int t = 0; t < m->nterms; t++) {
        const svir_term *tm = &m->terms[t];
        if (!tm->correlated) continue;
        const int q = tm->q;
        const double eta = svir_term_lkj_eta(m, tm);
        lp += svir_cpc_forward(theta + tm->off_cpc, q, eta, ws);
        if (grad) svir_cpc_backward(theta + tm->off_cpc, q, eta, ws, NULL, grad + tm->off_cpc, 1);
    }
    return lp;
}

/* Backpropagate dL/dA for term t into the global gradient (log sd, cpc).
 * ws: workspace of q^2 doubles (used when the term is correlated). */
SVIR_MATH_HD void svir_backprop_A_ws(const svir_glmm *m, int t, const double *theta,
                                     const svir_globals *g, const double *dA, double *grad,
                                     double *ws)
{
    const svir_term *tm = &m->terms[t];
    const int q = tm->q;
    const double *sd = g->sd + (tm->off_sd - m->p);
    const double *L = g->L + tm->off_qq;
    /* A_rc = sd_r L_rc */
    for (int r = 0; r < q; r++) {
        double ds = 0.0;
        for (int c = 0; c <= r; c++) ds += dA[r * q + c] * L[r * q + c];
        grad[tm->off_sd + r] += ds * sd[r];
    }
    if (tm->correlated) {
        double *dL = ws;
        for (int r = 0; r < q; r++)
            for (int c = 0; c < q; c++) dL[r * q + c] = c <= r ? sd[r] * dA[r * q + c] : 0.0;
        /* the LKJ density and Jacobian are counted in svir_log_prior */
        svir_cpc_backward(theta + tm->off_cpc, q, 1.0, L, dL, grad + tm->off_cpc, 0);
    }
}

#endif
