/* The count mixtures' per-entry arithmetic, one source for the CPU
 * (mix_model.c, mix_qem.c) and the CUDA device (cuda/mix_dev.cu): what a
 * count's density needs that does not depend on the cluster (per row and
 * column), and one count's log density given the cluster with its
 * derivatives. The model is in mix_model.h. No R API. */
#ifndef SVIR_MIX_ENTRY_H
#define SVIR_MIX_ENTRY_H

#include "core/svir_math.h"

/* One count y_ij's parts that every cluster shares. NB and ZINB: phi, c0 =
 * lgamma(y + phi) - lgamma(phi) + phi log phi and c1 = psi(y + phi) -
 * psi(phi) + log phi + 1 (c1 only with grad). ZINB: lw, l1w, w = log
 * omega, log(1 - omega), omega. With a background: lw, l1w, w = log beta,
 * log(1 - beta), beta, and the background's log density lG, d lG/db and d
 * lG/dlog psi (gGp only with grad). */
typedef struct {
    double phi, c0, c1, lw, l1w, w, lG, gG, gGp;
} svir_mix_col;

/* lphi: log phi_j; zeta: logit omega_j; b, lpsi, zb: the background's b_j,
 * log psi_j, logit beta_j (each read only where the model has it) */
SVIR_ALWAYS_INLINE void svir_mix_col_prep(int nb, int zi, int bg, int grad, double y, double lphi,
                                          double zeta, double b, double lpsi, double zb,
                                          svir_mix_col *c)
{
    if (nb) {
        const double phi = exp(lphi);
        c->phi = phi;
        c->c0 = phi * lphi;
        c->c1 = lphi + 1.0;
        if (y > 0.0) {
            c->c0 += svir_lgamma(y + phi) - svir_lgamma(phi);
            if (grad) c->c1 += svir_digamma(y + phi) - svir_digamma(phi);
        }
    }
    if (bg) {
        const double psi = exp(lpsi), eb = exp(b), pm = psi + eb, lpm = log(pm);
        double l = y * b - (y + psi) * lpm + psi * lpsi, c1b = lpsi + 1.0;
        if (y > 0.0) {
            l += svir_lgamma(y + psi) - svir_lgamma(psi);
            if (grad) c1b += svir_digamma(y + psi) - svir_digamma(psi);
        }
        c->lG = l;
        c->gG = psi * (y - eb) / pm;
        c->gGp = grad ? psi * (c1b - lpm - (y + psi) / pm) : 0.0;
        c->lw = -svir_log1pexp(-zb);
        c->l1w = -svir_log1pexp(zb);
        c->w = exp(c->lw);
    }
    if (zi) {
        c->lw = -svir_log1pexp(-zeta);
        c->l1w = -svir_log1pexp(zeta);
        c->w = exp(c->lw);
    }
}

/* One count y at log mean eta = o_i + x_i gamma_j + mu_kj given cluster k:
 * returns its term of the row's log density (for plain NB without c0,
 * which the row adds once for all clusters) and *lk its whole log density
 * less lgamma(y + 1); with grad, *gl = d/deta, *gp = d/dlog phi and *gz =
 * d/dlogit omega (ZINB) or, with a background, the count's probability of
 * being background given k (else 0). */
SVIR_ALWAYS_INLINE double svir_mix_entry(int nb, int zi, int bg, int grad, const svir_mix_col *c,
                                         double y, double eta, double *gl, double *gp, double *gz,
                                         double *lk)
{
    const double mu = exp(eta);
    if (!nb) {
        const double l = y * eta - mu;
        if (grad) {
            *gl = y - mu;
            *gp = 0.0;
            *gz = 0.0;
        }
        *lk = l;
        return l;
    }
    const double phi = c->phi, pm = phi + mu, lpm = log(pm);
    const double l = y * eta - (y + phi) * lpm;
    double g1 = 0.0, g2 = 0.0, g3 = 0.0, s;
    if (grad) {
        g1 = phi * (y - mu) / pm;
        g2 = phi * (c->c1 - lpm - (y + phi) / pm);
    }
    if (bg) {
        /* log((1 - beta) F + beta G), the foreground's share f */
        const double u = c->l1w + l + c->c0, v0 = c->lw + c->lG, mx = v0 > u ? v0 : u;
        const double v = mx + log(exp(u - mx) + exp(v0 - mx));
        s = v;
        *lk = v;
        if (grad) {
            g1 *= exp(u - v);
            g2 *= exp(u - v);
            g3 = exp(v0 - v);
        }
    } else if (!zi) {
        s = l;
        *lk = l + c->c0;
    } else {
        const double lw = c->lw, l1w = c->l1w, w = c->w, lnb = l + c->c0;
        if (y > 0.0) {
            s = l1w + lnb;
            g3 = -w;
        } else {
            /* log(omega + (1 - omega) NB(0)), its NB part's share f */
            const double u = l1w + lnb, mx = lw > u ? lw : u;
            const double v = mx + log(exp(lw - mx) + exp(u - mx));
            s = v;
            if (grad) {
                const double f = exp(u - v);
                g1 *= f;
                g2 *= f;
                g3 = w * (1.0 - w) * (1.0 - exp(lnb)) * exp(-v);
            }
        }
        *lk = s;
    }
    if (grad) {
        *gl = g1;
        *gp = g2;
        *gz = g3;
    }
    return s;
}

#endif
