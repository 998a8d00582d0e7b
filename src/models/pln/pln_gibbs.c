/* The Poisson-lognormal model's posterior of B and Sigma by Metropolis
 * within Gibbs (pln_gibbs.h). Small dense algebra of its own: p is the
 * number of count columns of a table meant for an exact posterior (tens),
 * and every p x p factorisation here is O(p^3 / 3). */
#include "models/pln/pln_gibbs.h"
#include "core/svir_philox.h"
#include "core/svir_result.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* L L' = A (p x p, column-major, lower triangle of A read); 1 if A is not
 * positive definite */
static int chol_lower(const double *A, double *L, int p)
{
    for (int j = 0; j < p; j++) {
        double s = A[j + (size_t)j * p];
        for (int k = 0; k < j; k++) s -= L[j + (size_t)k * p] * L[j + (size_t)k * p];
        if (!(s > 0.0) || !isfinite(s)) return 1;
        const double d = sqrt(s);
        L[j + (size_t)j * p] = d;
        for (int i = j + 1; i < p; i++) {
            double t = A[i + (size_t)j * p];
            for (int k = 0; k < j; k++) t -= L[i + (size_t)k * p] * L[j + (size_t)k * p];
            L[i + (size_t)j * p] = t / d;
        }
        for (int i = 0; i < j; i++) L[i + (size_t)j * p] = 0.0;
    }
    return 0;
}

/* x = L^-1 b (in place) */
static void solve_lower(const double *L, double *x, int p)
{
    for (int i = 0; i < p; i++) {
        double s = x[i];
        for (int k = 0; k < i; k++) s -= L[i + (size_t)k * p] * x[k];
        x[i] = s / L[i + (size_t)i * p];
    }
}

/* x = L^-T b (in place) */
static void solve_upper_t(const double *L, double *x, int p)
{
    for (int i = p - 1; i >= 0; i--) {
        double s = x[i];
        for (int k = i + 1; k < p; k++) s -= L[k + (size_t)i * p] * x[k];
        x[i] = s / L[i + (size_t)i * p];
    }
}

/* Ainv = (L L')^-1 */
static void chol_inverse(const double *L, double *Ainv, double *col, int p)
{
    for (int j = 0; j < p; j++) {
        for (int i = 0; i < p; i++) col[i] = i == j ? 1.0 : 0.0;
        solve_lower(L, col, p);
        solve_upper_t(L, col, p);
        memcpy(Ainv + (size_t)j * p, col, sizeof(double) * (size_t)p);
    }
}

/* (X B)_ij for B's column Bj [d] */
static inline double xb(const double *X, const double *Bj, int i, int n, int d)
{
    double s = 0.0;
    for (int a = 0; a < d; a++) s += X[i + (size_t)a * n] * Bj[a];
    return s;
}

/* the random numbers of one iteration: normals and uniforms by counter */
typedef struct {
    uint32_t key[2];
    uint64_t step, kn, ku;
} rng_t;

static double rnorm1(rng_t *r) { return svir_normal(r->key, SVIR_STREAM_PLN_MCMC, r->step, r->kn++); }
static double runif1(rng_t *r) { return svir_uniform(r->key, SVIR_STREAM_PLN_MCMC_U, r->step, r->ku++); }

/* Gamma(a, 1) by Marsaglia and Tsang (2000); a < 1 through Gamma(a + 1) U^(1/a) */
static double rgamma1(rng_t *r, double a)
{
    if (a < 1.0) {
        const double g = rgamma1(r, a + 1.0);
        return g * pow(runif1(r), 1.0 / a);
    }
    const double d = a - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
    for (;;) {
        double x, v;
        do {
            x = rnorm1(r);
            v = 1.0 + c * x;
        } while (v <= 0.0);
        v = v * v * v;
        const double u = runif1(r);
        if (u < 1.0 - 0.0331 * x * x * x * x) return d * v;
        if (log(u) < 0.5 * x * x + d * (1.0 - v + log(v))) return d * v;
    }
}

/* log pi(z) of row i's conditional, up to a constant: y.z - sum exp(o + z)
 * - (z - mu)' Om (z - mu) / 2 */
static double row_logp(const double *y, const double *o, const double *mu, const double *Om,
                       const double *z, double *r, int p)
{
    double s = 0.0;
    for (int j = 0; j < p; j++) {
        s += y[j] * z[j] - exp(o[j] + z[j]);
        r[j] = z[j] - mu[j];
    }
    double q = 0.0;
    for (int j = 0; j < p; j++) {
        double t = 0.0;
        for (int k = 0; k < p; k++) t += Om[j + (size_t)k * p] * r[k];
        q += r[j] * t;
    }
    return s - 0.5 * q;
}

/* H = Om + diag(exp(o + z)) and its Cholesky factor LH; 1 if not positive definite */
static int hessian_chol(const double *Om, const double *o, const double *z, double *H, double *LH,
                        int p)
{
    memcpy(H, Om, sizeof(double) * (size_t)p * p);
    for (int j = 0; j < p; j++) H[j + (size_t)j * p] += exp(o[j] + z[j]);
    return chol_lower(H, LH, p);
}

int svir_pln_mcmc(const svir_pln_mcmc_data *dat, double *Z, double *B, double *Sigma, double *xstep,
                  long it0, long nit, long warmup, int thin, uint64_t seed, double *Bd, double *Sd,
                  long ld, long *nkept, double *cnt, char *err, size_t errlen)
{
#define FAIL(...)                               \
    do {                                        \
        st = 1;                                 \
        snprintf(err, errlen, __VA_ARGS__);     \
        goto done;                              \
    } while (0)
    const int n = dat->n, p = dat->p, d = dat->d;
    const size_t pp = (size_t)p * p;
    int st = 0;
    double *Om = malloc(sizeof(double) * pp), *L = malloc(sizeof(double) * pp);
    double *H = malloc(sizeof(double) * pp), *LH = malloc(sizeof(double) * pp);
    double *A = malloc(sizeof(double) * pp), *T = malloc(sizeof(double) * pp);
    double *S = malloc(sizeof(double) * pp), *col = malloc(sizeof(double) * (size_t)(p + d));
    double *mu = malloc(sizeof(double) * (size_t)n * p), *Bh = malloc(sizeof(double) * (size_t)d * p);
    double *G = malloc(sizeof(double) * (size_t)d * n), *XtX = malloc(sizeof(double) * (size_t)d * d);
    double *P = malloc(sizeof(double) * (size_t)d * d), *XtXi = malloc(sizeof(double) * (size_t)d * d);
    double *yi = malloc(sizeof(double) * (size_t)p), *oi = malloc(sizeof(double) * (size_t)p);
    double *zc = malloc(sizeof(double) * (size_t)p), *zn = malloc(sizeof(double) * (size_t)p);
    double *mi = malloc(sizeof(double) * (size_t)p), *g = malloc(sizeof(double) * (size_t)p);
    double *r = malloc(sizeof(double) * (size_t)p), *res = malloc(sizeof(double) * (size_t)n);
    double *Ysum = malloc(sizeof(double) * (size_t)p), *N = malloc(sizeof(double) * (size_t)d * p);
    double *omd = malloc(sizeof(double) * (size_t)p);
    if (!Om || !L || !H || !LH || !A || !T || !S || !col || !mu || !Bh || !G || !XtX || !P ||
        !XtXi || !yi || !oi || !zc || !zn || !mi || !g || !r || !res || !Ysum || !N || !omd) {
        snprintf(err, errlen, "out of memory");
        st = 2;
        goto done;
    }
    /* X'X, its inverse and Cholesky factor, and G = (X'X)^-1 X' */
    for (int a = 0; a < d; a++)
        for (int b = 0; b < d; b++) {
            double s = 0.0;
            for (int i = 0; i < n; i++) s += dat->X[i + (size_t)a * n] * dat->X[i + (size_t)b * n];
            XtX[a + (size_t)b * d] = s;
        }
    if (d > 0) {
        if (chol_lower(XtX, P, d)) FAIL("the design X'X is not positive definite");
        chol_inverse(P, XtXi, col, d);
        if (chol_lower(XtXi, P, d)) FAIL("the design X'X is not positive definite");
        for (int i = 0; i < n; i++)
            for (int a = 0; a < d; a++) {
                double s = 0.0;
                for (int b = 0; b < d; b++) s += XtXi[a + (size_t)b * d] * dat->X[i + (size_t)b * n];
                G[a + (size_t)i * d] = s;
            }
    }
    for (int j = 0; j < p; j++) {
        double s = 0.0;
        for (int i = 0; i < n; i++) s += dat->Y[i + (size_t)j * n];
        Ysum[j] = s;
    }
    rng_t rg;
    svir_philox_key(seed, rg.key);
    long nacc = 0, nscale = 0, nscale_acc = 0, nshift = 0, nshift_acc = 0, kept = 0;
    *nkept = 0;
    const double nu = dat->nu0 + n - d;
    for (long it = it0; it < it0 + nit; it++) {
        /* the chains' streams: iteration it of chain c is step it + c 2^40 */
        rg.step = (uint64_t)it + ((uint64_t)dat->chain << 40);
        rg.kn = rg.ku = 0;
        if (chol_lower(Sigma, L, p)) FAIL("Sigma is not positive definite at iteration %ld", it + 1);
        chol_inverse(L, Om, col, p);
        /* mu = X B */
        for (int j = 0; j < p; j++)
            for (int i = 0; i < n; i++) mu[i + (size_t)j * n] = xb(dat->X, B + (size_t)j * d, i, n, d);
        /* 1. the rows */
        for (int i = 0; i < n; i++) {
            for (int j = 0; j < p; j++) {
                yi[j] = dat->Y[i + (size_t)j * n];
                oi[j] = dat->O[i + (size_t)j * n];
                zc[j] = Z[i + (size_t)j * n];
                mi[j] = mu[i + (size_t)j * n];
                zn[j] = zc[j];
            }
            /* Newton's method for the mode (the conditional is log-concave) */
            for (int k = 0; k < 100; k++) {
                for (int j = 0; j < p; j++) r[j] = zn[j] - mi[j];
                for (int j = 0; j < p; j++) {
                    double t = 0.0;
                    for (int l = 0; l < p; l++) t += Om[j + (size_t)l * p] * r[l];
                    const double e = exp(oi[j] + zn[j]);
                    g[j] = yi[j] - e - t;
                }
                if (hessian_chol(Om, oi, zn, H, LH, p))
                    FAIL("row %d's Hessian is not positive definite", i + 1);
                solve_lower(LH, g, p);
                solve_upper_t(LH, g, p);
                double mx = 0.0;
                for (int j = 0; j < p; j++) {
                    /* steps of at most 5 on the log scale keep exp() finite */
                    const double s = g[j] > 5.0 ? 5.0 : (g[j] < -5.0 ? -5.0 : g[j]);
                    zn[j] += s;
                    mx = fabs(s) > mx ? fabs(s) : mx;
                }
                if (mx < 1e-9) break;
            }
            /* the proposal N(mode, H^-1) at the mode: z' = mode + L_H^-T eps */
            if (hessian_chol(Om, oi, zn, H, LH, p))
                FAIL("row %d's Hessian is not positive definite", i + 1);
            for (int j = 0; j < p; j++) g[j] = rnorm1(&rg);
            double lq_new = 0.0;
            for (int j = 0; j < p; j++) lq_new -= 0.5 * g[j] * g[j];
            solve_upper_t(LH, g, p);
            /* log q of the current row: -|L_H' (z - mode)|^2 / 2 */
            for (int j = 0; j < p; j++) r[j] = zc[j] - zn[j];
            double lq_cur = 0.0;
            for (int j = 0; j < p; j++) {
                double t = 0.0;
                for (int k = j; k < p; k++) t += LH[k + (size_t)j * p] * r[k];
                lq_cur -= 0.5 * t * t;
            }
            for (int j = 0; j < p; j++) g[j] += zn[j]; /* the proposed row */
            const double la = row_logp(yi, oi, mi, Om, g, r, p) - row_logp(yi, oi, mi, Om, zc, r, p) -
                lq_new + lq_cur;
            if (log(runif1(&rg)) < la) {
                for (int j = 0; j < p; j++) Z[i + (size_t)j * n] = g[j];
                nacc++;
            }
        }
        /* 2. (B, Sigma) | Z: B^ = G Z, S = s0 I + R'R */
        for (int j = 0; j < p; j++)
            for (int a = 0; a < d; a++) {
                double s = 0.0;
                for (int i = 0; i < n; i++) s += G[a + (size_t)i * d] * Z[i + (size_t)j * n];
                Bh[a + (size_t)j * d] = s;
            }
        for (int j = 0; j < p; j++) /* the residuals, in mu's place */
            for (int i = 0; i < n; i++)
                mu[i + (size_t)j * n] = Z[i + (size_t)j * n] - xb(dat->X, Bh + (size_t)j * d, i, n, d);
        if (dat->cov != 0) {
            /* diagonal: each variance inverse-gamma(a0 + (n - d) / 2, (s0 + RSS_j) / 2);
             * spherical: the one variance, (a0 + p (n - d) / 2, (s0 + sum RSS_j) / 2) */
            double tot = 0.0;
            for (int j = 0; j < p; j++) {
                double rss = 0.0;
                for (int i = 0; i < n; i++) rss += mu[i + (size_t)j * n] * mu[i + (size_t)j * n];
                col[j] = rss;
                tot += rss;
            }
            memset(Sigma, 0, sizeof(double) * pp);
            memset(T, 0, sizeof(double) * pp);
            const double vs = dat->cov == 2
                ? 0.5 * (dat->s0 + tot) / rgamma1(&rg, dat->a0 + 0.5 * p * (double)(n - d))
                : 0.0;
            for (int j = 0; j < p; j++) {
                const double v = dat->cov == 2
                    ? vs
                    : 0.5 * (dat->s0 + col[j]) / rgamma1(&rg, dat->a0 + 0.5 * (double)(n - d));
                Sigma[j + (size_t)j * p] = v;
                T[j + (size_t)j * p] = sqrt(v);
            }
        } else {
            for (int j = 0; j < p; j++)
                for (int k = 0; k <= j; k++) {
                    double s = 0.0;
                    for (int i = 0; i < n; i++) s += mu[i + (size_t)j * n] * mu[i + (size_t)k * n];
                    S[j + (size_t)k * p] = S[k + (size_t)j * p] = s + (j == k ? dat->s0 : 0.0);
                }
            if (chol_lower(S, L, p))
                FAIL("the latent scatter is not positive definite at iteration %ld", it + 1);
            /* Bartlett: A A' ~ Wishart(nu, I), A lower; Sigma = T T', T = C A^-T */
            memset(A, 0, sizeof(double) * pp);
            for (int j = 0; j < p; j++) {
                A[j + (size_t)j * p] = sqrt(2.0 * rgamma1(&rg, 0.5 * (nu - j)));
                for (int i = j + 1; i < p; i++) A[i + (size_t)j * p] = rnorm1(&rg);
            }
            /* T' = A^-1 C' column by column: column k of T' solves A x = C'[, k] */
            for (int k = 0; k < p; k++) {
                for (int i = 0; i < p; i++) col[i] = L[k + (size_t)i * p]; /* C'[i, k] = C[k, i] */
                solve_lower(A, col, p);
                for (int i = 0; i < p; i++) T[k + (size_t)i * p] = col[i]; /* T[k, i] = T'[i, k] */
            }
            for (int j = 0; j < p; j++)
                for (int k = 0; k <= j; k++) {
                    double s = 0.0;
                    for (int i = 0; i < p; i++) s += T[j + (size_t)i * p] * T[k + (size_t)i * p];
                    Sigma[j + (size_t)k * p] = Sigma[k + (size_t)j * p] = s;
                }
        }
        /* B = B^ + P N T' */
        for (size_t k = 0; k < (size_t)d * p; k++) N[k] = rnorm1(&rg);
        for (int j = 0; j < p; j++)
            for (int a = 0; a < d; a++) {
                double s = Bh[a + (size_t)j * d];
                for (int b = 0; b <= a; b++) {
                    double t = 0.0; /* (N T')[b, j] */
                    for (int k = 0; k < p; k++) t += N[b + (size_t)k * d] * T[j + (size_t)k * p];
                    s += P[a + (size_t)b * d] * t;
                }
                B[a + (size_t)j * d] = s;
            }
        /* 3. the moves per column */
        if (dat->tau > 0.0) {
            if (chol_lower(Sigma, L, p)) FAIL("Sigma is not positive definite at iteration %ld", it + 1);
            chol_inverse(L, Om, col, p);
            for (int j = 0; j < p; j++) omd[j] = Om[j + (size_t)j * p];
        }
        for (int j = 0; j < p; j++) {
            double *zj = Z + (size_t)j * n;
            const double *oj = dat->O + (size_t)j * n, *yj = dat->Y + (size_t)j * n;
            if (dat->icpt >= 0 && Ysum[j] > 0.0) {
                double s = 0.0;
                for (int i = 0; i < n; i++) s += exp(oj[i] + zj[i]);
                const double sh = log(rgamma1(&rg, Ysum[j]) / s);
                for (int i = 0; i < n; i++) zj[i] += sh;
                B[dat->icpt + (size_t)j * d] += sh;
            }
            /* the shift along each other covariate k: Z_.j + delta X_.k with
             * B_kj + delta, random-walk MH with the step fixed at the start */
            for (int k = 0; k < d; k++) {
                if (k == dat->icpt) continue;
                const double *xk = dat->X + (size_t)k * n;
                double *stp = &xstep[k + (size_t)j * d];
                if (it == 0) {
                    double h = 0.0;
                    for (int i = 0; i < n; i++) h += xk[i] * xk[i] * exp(oj[i] + zj[i]);
                    *stp = 2.4 / sqrt(h + 1e-8);
                }
                const double dl = *stp * rnorm1(&rg);
                double la = 0.0;
                for (int i = 0; i < n; i++) {
                    const double e = exp(oj[i] + zj[i]);
                    la += yj[i] * xk[i] * dl - e * (exp(dl * xk[i]) - 1.0);
                }
                nshift++;
                if (log(runif1(&rg)) < la) {
                    for (int i = 0; i < n; i++) zj[i] += dl * xk[i];
                    B[k + (size_t)j * d] += dl;
                    nshift_acc++;
                }
            }
            if (dat->tau > 0.0 && dat->cov != 2) {
                /* the prior's part: c^-nu0 (inverse-Wishart) or c^-2 a0
                 * (a diagonal's inverse-gamma), times exp(-s0 Omega_jj (c^-2 - 1) / 2) */
                const double lc = dat->tau * rnorm1(&rg), c = exp(lc);
                double la = -(dat->cov == 1 ? 2.0 * dat->a0 : dat->nu0) * lc -
                    0.5 * dat->s0 * omd[j] * (1.0 / (c * c) - 1.0);
                for (int i = 0; i < n; i++) {
                    const double m = xb(dat->X, B + (size_t)j * d, i, n, d);
                    const double znew = m + c * (zj[i] - m);
                    res[i] = znew;
                    la += yj[i] * (znew - zj[i]) - (exp(oj[i] + znew) - exp(oj[i] + zj[i]));
                }
                nscale++;
                if (log(runif1(&rg)) < la) {
                    memcpy(zj, res, sizeof(double) * (size_t)n);
                    for (int k = 0; k < p; k++) {
                        Sigma[j + (size_t)k * p] *= c;
                        Sigma[k + (size_t)j * p] *= c;
                    }
                    omd[j] /= c * c;
                    nscale_acc++;
                }
            }
        }
        if (it >= warmup && (it - warmup + 1) % thin == 0 && kept < ld) {
            for (size_t k = 0; k < (size_t)d * p; k++) Bd[(size_t)kept + k * (size_t)ld] = B[k];
            for (size_t k = 0; k < pp; k++) Sd[(size_t)kept + k * (size_t)ld] = Sigma[k];
            kept++;
        }
    }
    *nkept = kept;
    cnt[0] += (double)nacc;
    cnt[1] += (double)nit * n;
    cnt[2] += (double)nscale_acc;
    cnt[3] += (double)nscale;
    cnt[4] += (double)nshift_acc;
    cnt[5] += (double)nshift;
done:
    free(Om); free(L); free(H); free(LH); free(A); free(T); free(S); free(col); free(mu);
    free(Bh); free(G); free(XtX); free(P); free(XtXi); free(yi); free(oi); free(zc); free(zn);
    free(mi); free(g); free(r); free(res); free(Ysum); free(N); free(omd);
    return st;
#undef FAIL
}
