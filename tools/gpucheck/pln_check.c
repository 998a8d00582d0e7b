/* gpucheck's Poisson-lognormal part (README.md here): the device objective
 * (src/cuda/pln_eval.cu) against svir_pln_eval (src/models/pln/pln_eval.c) in
 * every mode, dense and sparse counts, and whole fits against svir_pln_fit;
 * and the timing of issue 5's GPU target (n = 100,000, p = 2,000, rank 10).
 *
 * Data are simulated here: Z_i = X_i B + W u_i + e_i with u_i ~ N(0, I_q),
 * e_ij ~ N(0, psi_j), Y_ij ~ Poisson(exp(o_i + Z_ij)); normals from
 * svir_philox.h, Poisson counts by inversion of the CDF (a normal
 * approximation above a mean of 50). The start is R/pln.R's: M = log(1 + Y)
 * - O, S = 0.1, and for rank q svir_pln_pca_start's subspace iterations. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/svir_lapack.h"

#include "core/svir_philox.h"
#include "models/pln/pln.h"
#include "models/pln/pln_cuda.h"

#include "check_util.h"
#include "pln_check.h"

typedef struct {
    int n, p, d, q;
    double *Y, *O, *Orow, *X, *P, lgy;
    int *Yp, *Yi;
    double *Yx;
} pln_sim;

static void pln_sim_free(pln_sim *s)
{
    free(s->Y); free(s->O); free(s->Orow); free(s->X); free(s->P); free(s->Yp); free(s->Yi);
    free(s->Yx);
    memset(s, 0, sizeof *s);
}

/* a uniform in (0, 1): number `index` of (stream, step) */
static double unif(const uint32_t key[2], uint64_t stream, uint64_t step, uint64_t index)
{
    uint32_t ctr[4], w[4];
    svir_philox_ctr(stream, step, index, ctr);
    svir_philox4x32(ctr, key, w);
    return svir_u01_53(w[0], w[1]);
}

static double rpois1(double mu, double u, double z)
{
    if (mu > 50.0) {
        const double y = floor(mu + sqrt(mu) * z + 0.5);
        return y < 0.0 ? 0.0 : y;
    }
    double k = 0.0, pk = exp(-mu), cdf = pk;
    while (u > cdf && k < 1000.0) {
        k += 1.0;
        pk *= mu / k;
        cdf += pk;
    }
    return k;
}

/* n x p counts, d = 2 (intercept, x), offsets per row (o_i ~ N(log depth,
 * 0.3)), rank-q latent structure; O per entry as well when want_O; the
 * sparse (CSC) copy of the counts too when want_sparse */
static int pln_simulate(pln_sim *s, int n, int p, int q, double depth, uint64_t seed, int want_O,
                        int want_sparse)
{
    memset(s, 0, sizeof *s);
    s->n = n; s->p = p; s->d = 2; s->q = q;
    const ptrdiff_t np = (ptrdiff_t)n * p;
    uint32_t key[2];
    svir_philox_key(seed, key);
    s->Y = malloc(sizeof(double) * (size_t)np);
    s->Orow = malloc(sizeof(double) * (size_t)n);
    s->X = malloc(sizeof(double) * 2 * (size_t)n);
    s->P = malloc(sizeof(double) * 2 * (size_t)n);
    double *W = malloc(sizeof(double) * (size_t)p * q), *U = malloc(sizeof(double) * (size_t)n * q);
    double *B = malloc(sizeof(double) * 2 * (size_t)p);
    if (!s->Y || !s->Orow || !s->X || !s->P || !W || !U || !B) {
        free(W); free(U); free(B);
        pln_sim_free(s);
        return 2;
    }
    for (int i = 0; i < n; i++) {
        s->X[i] = 1.0;
        s->X[n + i] = svir_normal(key, 1, 0, (uint64_t)i);
        s->Orow[i] = log(depth) + 0.3 * svir_normal(key, 1, 1, (uint64_t)i);
    }
    for (int j = 0; j < p; j++) {
        B[2 * j] = 0.5 + unif(key, 2, 0, (uint64_t)j);
        B[2 * j + 1] = unif(key, 2, 1, (uint64_t)j) - 0.5;
    }
    for (ptrdiff_t e = 0; e < (ptrdiff_t)p * q; e++) W[e] = 0.3 * svir_normal(key, 3, 0, (uint64_t)e);
    for (ptrdiff_t e = 0; e < (ptrdiff_t)n * q; e++) U[e] = svir_normal(key, 3, 1, (uint64_t)e);
    double lgy = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : lgy)
    for (int j = 0; j < p; j++) {
        for (int i = 0; i < n; i++) {
            const uint64_t k = (uint64_t)j * n + i;
            double z = B[2 * j] + B[2 * j + 1] * s->X[n + i] + sqrt(0.2) * svir_normal(key, 4, 0, k);
            for (int l = 0; l < q; l++) z += W[(ptrdiff_t)l * p + j] * U[(ptrdiff_t)l * n + i];
            const double y = rpois1(exp(s->Orow[i] + z), unif(key, 5, 0, k), svir_normal(key, 5, 1, k));
            s->Y[k] = y;
            lgy += lgamma(y + 1.0);
        }
    }
    s->lgy = lgy;
    /* P = (X'X)^-1 X' */
    double a = 0, b = 0, c = 0;
    for (int i = 0; i < n; i++) {
        a += 1.0;
        b += s->X[n + i];
        c += s->X[n + i] * s->X[n + i];
    }
    const double det = a * c - b * b;
    for (int i = 0; i < n; i++) {
        s->P[2 * i] = (c - b * s->X[n + i]) / det;
        s->P[2 * i + 1] = (-b + a * s->X[n + i]) / det;
    }
    free(W); free(U); free(B);
    if (want_O) {
        s->O = malloc(sizeof(double) * (size_t)np);
        if (!s->O) { pln_sim_free(s); return 2; }
        for (int j = 0; j < p; j++)
            for (int i = 0; i < n; i++)
                s->O[(ptrdiff_t)j * n + i] = s->Orow[i] + 0.05 * svir_normal(key, 6, 0, (uint64_t)j * n + i);
    }
    if (want_sparse) {
        ptrdiff_t nz = 0;
        for (ptrdiff_t k = 0; k < np; k++) nz += s->Y[k] != 0.0;
        s->Yp = malloc(sizeof(int) * ((size_t)p + 1));
        s->Yi = malloc(sizeof(int) * (size_t)(nz + 1));
        s->Yx = malloc(sizeof(double) * (size_t)(nz + 1));
        if (!s->Yp || !s->Yi || !s->Yx) { pln_sim_free(s); return 2; }
        nz = 0;
        for (int j = 0; j < p; j++) {
            s->Yp[j] = (int)nz;
            for (int i = 0; i < n; i++)
                if (s->Y[(ptrdiff_t)j * n + i] != 0.0) {
                    s->Yi[nz] = i;
                    s->Yx[nz++] = s->Y[(ptrdiff_t)j * n + i];
                }
        }
        s->Yp[p] = (int)nz;
    }
    return 0;
}

static void pln_dat(const pln_sim *s, svir_pln_data *d, int cov, int sparse, int rowoff, double *colwork)
{
    memset(d, 0, sizeof *d);
    d->n = s->n; d->p = s->p; d->d = s->d; d->cov = cov; d->q = s->q;
    if (sparse) {
        d->Yp = s->Yp; d->Yi = s->Yi; d->Yx = s->Yx;
    } else {
        d->Y = s->Y;
    }
    if (rowoff || !s->O) d->Orow = s->Orow; else d->O = s->O;
    d->X = s->X; d->P = s->P; d->lgy = s->lgy; d->nd = s->n; d->threads = 4; d->colwork = colwork;
}

/* symmetric k x k A (destroyed): eigenvalues lam (descending) and vectors V
 * (columns), by cyclic Jacobi rotations */
static void jacobi_eigen(double *A, int k, double *lam, double *V)
{
    for (int i = 0; i < k * k; i++) V[i] = 0.0;
    for (int i = 0; i < k; i++) V[i * k + i] = 1.0;
    for (int sweep = 0; sweep < 100; sweep++) {
        double off = 0.0;
        for (int i = 0; i < k; i++)
            for (int j = i + 1; j < k; j++) off += A[i + j * k] * A[i + j * k];
        if (off < 1e-30) break;
        for (int r = 0; r < k; r++)
            for (int c = r + 1; c < k; c++) {
                const double arc = A[r + c * k];
                if (fabs(arc) < 1e-300) continue;
                const double th = (A[c + c * k] - A[r + r * k]) / (2.0 * arc);
                const double t = (th >= 0 ? 1.0 : -1.0) / (fabs(th) + sqrt(th * th + 1.0));
                const double cs = 1.0 / sqrt(t * t + 1.0), sn = t * cs;
                for (int l = 0; l < k; l++) { /* A = J' A J */
                    const double a1 = A[l + r * k], a2 = A[l + c * k];
                    A[l + r * k] = cs * a1 - sn * a2;
                    A[l + c * k] = sn * a1 + cs * a2;
                }
                for (int l = 0; l < k; l++) {
                    const double a1 = A[r + l * k], a2 = A[c + l * k];
                    A[r + l * k] = cs * a1 - sn * a2;
                    A[c + l * k] = sn * a1 + cs * a2;
                }
                for (int l = 0; l < k; l++) {
                    const double v1 = V[l + r * k], v2 = V[l + c * k];
                    V[l + r * k] = cs * v1 - sn * v2;
                    V[l + c * k] = sn * v1 + cs * v2;
                }
            }
    }
    for (int i = 0; i < k; i++) lam[i] = A[i + i * k];
    for (int i = 0; i < k; i++) { /* sort descending */
        int m = i;
        for (int j = i + 1; j < k; j++) if (lam[j] > lam[m]) m = j;
        if (m != i) {
            double t = lam[i]; lam[i] = lam[m]; lam[m] = t;
            for (int l = 0; l < k; l++) { t = V[l + i * k]; V[l + i * k] = V[l + m * k]; V[l + m * k] = t; }
        }
    }
}

/* the columns of Q (p x k) orthonormalised in place (modified Gram-Schmidt) */
static void mgs(double *Q, int p, int k)
{
    for (int c = 0; c < k; c++) {
        double *qc = Q + (ptrdiff_t)c * p;
        for (int b = 0; b < c; b++) {
            const double *qb = Q + (ptrdiff_t)b * p;
            double s = 0.0;
            for (int j = 0; j < p; j++) s += qb[j] * qc[j];
            for (int j = 0; j < p; j++) qc[j] -= s * qb[j];
        }
        double s = 0.0;
        for (int j = 0; j < p; j++) s += qc[j] * qc[j];
        s = sqrt(s);
        for (int j = 0; j < p; j++) qc[j] = s > 0 ? qc[j] / s : 0.0;
    }
}

/* Yo (n x k) = R Q; R n x p, Q p x k */
static void rq(const double *R, const double *Q, int n, int p, int k, double *Yo)
{
#pragma omp parallel for schedule(static)
    for (int i0 = 0; i0 < n; i0 += 512) {
        const int i1 = i0 + 512 < n ? i0 + 512 : n;
        for (int c = 0; c < k; c++)
            for (int i = i0; i < i1; i++) Yo[(ptrdiff_t)c * n + i] = 0.0;
        for (int j = 0; j < p; j++)
            for (int c = 0; c < k; c++) {
                const double qv = Q[(ptrdiff_t)c * p + j];
                const double *rj = R + (ptrdiff_t)j * n;
                double *yc = Yo + (ptrdiff_t)c * n;
                for (int i = i0; i < i1; i++) yc[i] += rj[i] * qv;
            }
    }
}

/* the start: par = (M0, log 0.1, and for rank q W and log psi from
 * svir_pln_pca_start's subspace iterations) */
static int pln_start(const pln_sim *s, const svir_pln_data *d, double *par)
{
    const int n = s->n, p = s->p, q = s->q, rank = d->cov == SVIR_PLN_RANK && !d->Bfix;
    const ptrdiff_t np = (ptrdiff_t)n * p;
    for (int j = 0; j < p; j++)
        for (int i = 0; i < n; i++) {
            const ptrdiff_t k = (ptrdiff_t)j * n + i;
            par[k] = log1p(s->Y[k]) - (d->O ? d->O[k] : d->Orow ? d->Orow[i] : 0.0);
            par[np + k] = log(0.1);
        }
    if (!rank) return 0;
    /* R = M0 - X P M0 */
    const int k = p < q + 10 ? p : q + 10;
    double *R = malloc(sizeof(double) * (size_t)np), *Q = malloc(sizeof(double) * (size_t)p * k);
    double *Yo = malloc(sizeof(double) * (size_t)n * k), *C = malloc(sizeof(double) * (size_t)k * k);
    double *V = malloc(sizeof(double) * (size_t)k * k), *lam = malloc(sizeof(double) * (size_t)k);
    if (!R || !Q || !Yo || !C || !V || !lam) {
        free(R); free(Q); free(Yo); free(C); free(V); free(lam);
        return 2;
    }
    double ss = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : ss)
    for (int j = 0; j < p; j++) {
        const double *m = par + (ptrdiff_t)j * n;
        double b0 = 0.0, b1 = 0.0;
        for (int i = 0; i < n; i++) {
            b0 += s->P[2 * i] * m[i];
            b1 += s->P[2 * i + 1] * m[i];
        }
        for (int i = 0; i < n; i++) {
            const double r = m[i] - b0 - b1 * s->X[n + i];
            R[(ptrdiff_t)j * n + i] = r;
            ss += r * r;
        }
    }
    for (int c = 0; c < k; c++)
        for (int j = 0; j < p; j++) Q[(ptrdiff_t)c * p + j] = R[(ptrdiff_t)j * n + (c < n ? c : 0)] + 1e-3;
    mgs(Q, p, k);
    for (int it = 0; it < 4; it++) {
        rq(R, Q, n, p, k, Yo);
#pragma omp parallel for schedule(static)
        for (int j = 0; j < p; j++)
            for (int c = 0; c < k; c++) {
                double v = 0.0;
                for (int i = 0; i < n; i++) v += R[(ptrdiff_t)j * n + i] * Yo[(ptrdiff_t)c * n + i];
                Q[(ptrdiff_t)c * p + j] = v;
            }
        mgs(Q, p, k);
    }
    rq(R, Q, n, p, k, Yo);
    const double nd = n;
    for (int a = 0; a < k; a++)
        for (int b = 0; b < k; b++) {
            double v = 0.0;
            for (int i = 0; i < n; i++) v += Yo[(ptrdiff_t)a * n + i] * Yo[(ptrdiff_t)b * n + i];
            C[a + b * k] = (v + (a == b ? 0.01 * n : 0.0)) / nd;
        }
    jacobi_eigen(C, k, lam, V);
    double s2 = (ss + 0.01 * n * p) / nd / p, top = 0.0;
    for (int c = 0; c < q; c++) top += lam[c];
    s2 = fmax((s2 * p - top) / (p - q > 0 ? p - q : 1), 1e-3 * s2);
    s2 = fmax(s2, 1e-3);
    double *W = par + 2 * np, *lpsi = W + (ptrdiff_t)p * q;
    for (int c = 0; c < q; c++) {
        const double sc = sqrt(fmax(lam[c] - s2, 1e-3));
        for (int j = 0; j < p; j++) {
            double v = 0.0;
            for (int b = 0; b < k; b++) v += Q[(ptrdiff_t)b * p + j] * V[b + c * k];
            W[(ptrdiff_t)c * p + j] = v * sc;
        }
    }
    for (int j = 0; j < p; j++) lpsi[j] = log(s2);
    free(R); free(Q); free(Yo); free(C); free(V); free(lam);
    return 0;
}
static const char *cov_name(int cov)
{
    return cov == SVIR_PLN_FULL ? "full" : cov == SVIR_PLN_DIAGONAL ? "diagonal"
           : cov == SVIR_PLN_SPHERICAL ? "spherical" : "rank";
}

/* one whole-fit comparison: svir_pln_fit against svir_cuda_pln_fit on d
 * from R's start (tol, maxit), and with sparse_too the device fit on the
 * sparse counts against the dense one. path: path by path (the same
 * iterations within one; ELBO, B, Sigma, M and log S to 1e-6), else the
 * converged optimum (ELBO 1e-7; B and Sigma 1e-4). Prints a line; returns
 * 1 on failure. par: room for npar doubles. */
static int fit_cmp(const pln_sim *s, const svir_pln_data *d, int sparse_too, double tol, int maxit,
                   int path, const char *lab, double *par, double *colwork, char *err, size_t errlen)
{
    const int p = d->p, fixed = d->Bfix != NULL;
    const ptrdiff_t L = svir_pln_npar(d);
    double *p0 = malloc(sizeof(double) * (size_t)L), *p1 = malloc(sizeof(double) * (size_t)L);
    double *p2 = malloc(sizeof(double) * (size_t)L);
    double J0 = 0, J1 = 0, J2 = 0, B0[2 * 30], B1[2 * 30], B2[2 * 30], S0[30 * 30], S1[30 * 30],
           S2[30 * 30];
    int it0 = 0, it1 = 0, it2 = 0, failed = 0;
    int st = !p0 || !p1 || !p2 || p > 30 || d->d > 2 || pln_start(s, d, par);
    if (st) snprintf(err, errlen, "out of host memory");
    if (!st) {
        memcpy(p0, par, sizeof(double) * (size_t)L);
        memcpy(p1, par, sizeof(double) * (size_t)L);
        memcpy(p2, par, sizeof(double) * (size_t)L);
        memset(B0, 0, sizeof B0); memset(B1, 0, sizeof B1); memset(B2, 0, sizeof B2);
        memset(S0, 0, sizeof S0); memset(S1, 0, sizeof S1); memset(S2, 0, sizeof S2);
        st = svir_pln_fit(d, p0, maxit, tol, &J0, &it0, NULL, B0, S0, err, errlen);
        if (!st) st = svir_cuda_pln_fit(d, p1, maxit, tol, &J1, &it1, NULL, B1, S1, NULL, err, errlen);
        if (!st && sparse_too) {
            svir_pln_data ds = *d;
            ds.Y = NULL;
            ds.Yp = s->Yp; ds.Yi = s->Yi; ds.Yx = s->Yx;
            st = svir_cuda_pln_fit(&ds, p2, maxit, tol, &J2, &it2, NULL, B2, S2, NULL, err, errlen);
        }
    }
    if (st) {
        gck_failed++;
        printf("PLN fit, %s, tol %.0e: FAILED to run: %s\n", lab, tol, err);
        failed = 1;
    } else {
        const double ej = fabs(J1 - J0) / fabs(J0);
        /* in the VE step B and Sigma are held (Sigma not reported) */
        const double eb = fixed ? 0.0 : fmax(gck_rel_diff(B0, B1, 2 * p), gck_rel_diff(S0, S1, (ptrdiff_t)p * p));
        const double ep = gck_rel_diff(p0, p1, L);
        const double es = !sparse_too ? 0.0
            : fmax(fmax(fabs(J2 - J1) / fabs(J1), gck_rel_diff(p1, p2, L)),
                   fmax(gck_rel_diff(B1, B2, 2 * p), gck_rel_diff(S1, S2, (ptrdiff_t)p * p)));
        const int ok = path ? abs(it1 - it0) <= 1 && ej < 1e-6 && eb < 1e-6 && ep < 1e-6 && es < 1e-6
                            : it0 < maxit && it1 < maxit && ej < 1e-7 && eb < 1e-4 && es < 1e-6;
        printf("PLN fit, %s, tol %.0e: iterations CPU %d, device %d", lab, tol, it0, it1);
        if (sparse_too) printf(" (sparse %d)", it2);
        printf("; rel. diff ELBO %.1e, B and Sigma %.1e, M and log S %.1e", ej, eb, ep);
        if (sparse_too) printf(", sparse vs dense %.1e", es);
        printf(": %s\n", gck_result(ok));
        failed = !ok;
    }
    free(p0); free(p1); free(p2);
    return failed;
}

int gpucheck_pln(void)
{
    int failed = 0;
    char err[512];
    const int n = 300, p = 30, q = 3;
    pln_sim s;
    if (pln_simulate(&s, n, p, q, 3.0, 77, 1, 1)) {
        printf("PLN: out of host memory\n");
        return 1;
    }
    const ptrdiff_t np = (ptrdiff_t)n * p, Lmax = 2 * np + (ptrdiff_t)p * (q + 1);
    double *colwork = malloc(sizeof(double) * 3 * (size_t)p);
    double *par = malloc(sizeof(double) * (size_t)Lmax), *pt = malloc(sizeof(double) * (size_t)Lmax);
    double *g0 = malloc(sizeof(double) * (size_t)Lmax), *g1 = malloc(sizeof(double) * (size_t)Lmax);
    double *w = NULL;
    double B0[2 * 30], B1[2 * 30], B2[2 * 30], S0[30 * 30], S1[30 * 30], Bve[2 * 30], Omve[30 * 30];
    double ldve = 0.0;
    uint32_t key[2];
    svir_philox_key(91, key);
    if (!colwork || !par || !pt || !g0 || !g1) {
        printf("PLN: out of host memory\n");
        failed = 1;
        goto done;
    }
    /* a. the objective at 3 random points: every mode, dense counts with an
     * offset per entry, sparse counts with one per row, nd = n - d with
     * Sigma's prior (k0, s0); and the VE step */
    for (int cov = 0; cov < 4; cov++)
        for (int variant = 0; variant < 3; variant++) {
            svir_pln_data d;
            const int sparse = variant == 1;
            pln_dat(&s, &d, cov, sparse, sparse, colwork);
            if (variant == 2) {
                /* globals = "bayes": nd = n - d, and Sigma's prior but for rank q */
                d.nd = n - 2;
                if (cov != SVIR_PLN_RANK) {
                    d.k0 = cov == SVIR_PLN_FULL ? p + 1 : 2.0;
                    d.s0 = 0.7;
                }
            }
            const ptrdiff_t L = svir_pln_npar(&d);
            free(w);
            w = malloc(sizeof(double) * (size_t)svir_pln_nwork(&d));
            if (!w || pln_start(&s, &d, par)) {
                printf("PLN: out of host memory\n");
                failed = 1;
                goto done;
            }
            double worst_j = 0.0, worst_g = 0.0, worst_b = 0.0;
            int bad = 0;
            for (int pt_i = 0; pt_i < 3; pt_i++) {
                for (ptrdiff_t k = 0; k < L; k++)
                    pt[k] = par[k] + 0.1 * svir_normal(key, 10 + cov, 3 * variant + pt_i, (uint64_t)k);
                double J0 = 0, J1 = 0;
                memset(S0, 0, sizeof S0);
                memset(S1, 0, sizeof S1);
                const int st0 = svir_pln_eval(&d, pt, &J0, g0, B0, S0, w, err, sizeof err);
                const int st1 = st0 ? 0 : svir_cuda_pln_eval_host(&d, pt, &J1, g1, B1, S1, err, sizeof err);
                if (st0 || st1) {
                    gck_failed++;
                    printf("PLN objective, %s: FAILED to run: %s\n", cov_name(cov), err);
                    bad = 1;
                    break;
                }
                worst_j = fmax(worst_j, fabs(J1 - J0) / fabs(J0));
                worst_g = fmax(worst_g, gck_rel_diff(g0, g1, L));
                worst_b = fmax(worst_b, fmax(gck_rel_diff(B0, B1, 2 * p), gck_rel_diff(S0, S1, (ptrdiff_t)p * p)));
            }
            const int ok = !bad && worst_j < 1e-11 && worst_g < 1e-10 && worst_b < 1e-10;
            printf("PLN objective, %s, %s: rel. diff J %.1e, gradient %.1e, B and Sigma %.1e: %s\n",
                   cov_name(cov), variant == 0 ? "dense, O per entry" : variant == 1 ? "sparse, O per row"
                                                                                   : "dense, nd = n - d, prior",
                   worst_j, worst_g, worst_b, gck_result(ok));
            failed |= !ok;
        }
    {
        /* the VE step: B and Omega fixed at those of a CPU evaluation */
        svir_pln_data d;
        pln_dat(&s, &d, SVIR_PLN_FULL, 0, 0, colwork);
        free(w);
        w = malloc(sizeof(double) * (size_t)svir_pln_nwork(&d));
        double J0 = 0, J1 = 0, Om[30 * 30];
        int info = 0;
        if (!w || pln_start(&s, &d, par) || svir_pln_eval(&d, par, &J0, g0, B0, S0, w, err, sizeof err)) {
            gck_failed++;
            printf("PLN objective, VE step: FAILED to set up\n");
            failed = 1;
            goto done;
        }
        memcpy(Om, S0, sizeof Om);
        F77_CALL(dpotrf)("L", &d.p, Om, &d.p, &info FCONE);
        double ld = 0.0;
        for (int j = 0; j < p; j++) ld -= 2.0 * log(Om[j * p + j]);
        F77_CALL(dpotri)("L", &d.p, Om, &d.p, &info FCONE);
        for (int j = 0; j < p; j++)
            for (int i = j + 1; i < p; i++) Om[i * p + j] = Om[j * p + i];
        memcpy(B1, B0, sizeof B1);
        d.Bfix = B1;
        d.Omfix = Om;
        d.logdet_om = ld;
        const ptrdiff_t L = svir_pln_npar(&d);
        for (ptrdiff_t k = 0; k < L; k++) pt[k] = par[k] + 0.1 * svir_normal(key, 20, 0, (uint64_t)k);
        double Bx[2 * 30];
        const int st0 = svir_pln_eval(&d, pt, &J0, g0, Bx, S0, w, err, sizeof err);
        const int st1 = st0 ? 0 : svir_cuda_pln_eval_host(&d, pt, &J1, g1, Bx, S1, err, sizeof err);
        const double ej = fabs(J1 - J0) / fabs(J0), eg = gck_rel_diff(g0, g1, L);
        const int ok = !st0 && !st1 && ej < 1e-11 && eg < 1e-10;
        printf("PLN objective, VE step: rel. diff J %.1e, gradient %.1e: %s%s\n", ej, eg,
               gck_result(ok), st0 || st1 ? err : "");
        failed |= !ok;
    }
    /* b. whole fits from R's start, CPU against device */
    {
        /* the VE step's B and Omega: a CPU evaluation at the start (full) */
        svir_pln_data d;
        pln_dat(&s, &d, SVIR_PLN_FULL, 0, 1, colwork);
        free(w);
        w = malloc(sizeof(double) * (size_t)svir_pln_nwork(&d));
        double J0 = 0;
        int info = 0;
        if (!w || pln_start(&s, &d, par) || svir_pln_eval(&d, par, &J0, g0, Bve, S0, w, err, sizeof err)) {
            gck_failed++;
            printf("PLN fit, VE step: FAILED to set up\n");
            failed = 1;
            goto done;
        }
        memcpy(Omve, S0, sizeof Omve);
        F77_CALL(dpotrf)("L", &d.p, Omve, &d.p, &info FCONE);
        ldve = 0.0;
        for (int j = 0; j < p; j++) ldve -= 2.0 * log(Omve[j * p + j]);
        F77_CALL(dpotri)("L", &d.p, Omve, &d.p, &info FCONE);
        for (int j = 0; j < p; j++)
            for (int i = j + 1; i < p; i++) Omve[i * p + j] = Omve[j * p + i];
    }
    /* (i) path by path at the default tolerance (1e-6): the device's L-BFGS
     * is the CPU's (the S start, pln_precond's H0; sums in another order),
     * so the same iterations (within one) and ELBO, B, Sigma, M and log S to
     * 1e-6; every mode, with offsets per row, then per entry, nd = n - d,
     * sparse counts and the VE step; and sparse against dense on the device */
    for (int c = 0; c < 9; c++) {
        const int cov = c < 4 ? c : c == 4 ? SVIR_PLN_DIAGONAL : c == 5 ? SVIR_PLN_RANK
                                    : c == 6 ? SVIR_PLN_FULL : c == 7 ? SVIR_PLN_RANK : SVIR_PLN_FULL;
        const int sparse = c == 7, rowoff = !(c == 4 || c == 5), nd2 = c == 6 || c == 7, ve = c == 8;
        svir_pln_data d;
        pln_dat(&s, &d, cov, sparse, rowoff, colwork);
        if (nd2) d.nd = n - 2;
        if (ve) {
            memcpy(B2, Bve, sizeof B2);
            d.Bfix = B2;
            d.Omfix = Omve;
            d.logdet_om = ldve;
        }
        char lab[96];
        snprintf(lab, sizeof lab, "%s, %s%s%s%s", ve ? "VE step" : cov_name(cov),
                 sparse ? "sparse" : "dense", rowoff ? ", O per row" : ", O per entry",
                 nd2 ? ", nd = n - d" : "", c < 4 ? " (and sparse on the device)" : "");
        failed |= fit_cmp(&s, &d, c < 4 ? 1 : 0, 1e-6, 2000, 1, lab, par, colwork, err, sizeof err);
    }
    /* (ii) converged: both to 1e-11, the same optimum (ELBO 1e-7, B and
     * Sigma 1e-4, as test-cuda.R) */
    for (int cov = 0; cov < 4; cov++) {
        svir_pln_data d;
        pln_dat(&s, &d, cov, 0, 1, colwork);
        failed |= fit_cmp(&s, &d, 0, 1e-11, 5000, 0, cov_name(cov), par, colwork, err, sizeof err);
    }
done:
    free(colwork); free(par); free(pt); free(g0); free(g1); free(w);
    pln_sim_free(&s);
    return failed;
}

/* Issue 5's GPU target: n x p counts, rank q, time to convergence on the
 * device (target <= 30 s at n = 100,000, p = 2,000, q = 10). The device
 * memory it needs is printed first; where it is more than the device has
 * free, n is halved until it fits, and the line says so. */
int gpucheck_pln_bench(int n, int p, int q)
{
    svir_pln_data d;
    pln_sim s;
    memset(&d, 0, sizeof d);
    d.n = n; d.p = p; d.d = 2; d.cov = SVIR_PLN_RANK; d.q = q; d.nd = n; d.Orow = (double *)1;
    d.Y = (double *)1;
    double need = svir_cuda_pln_bytes(&d, 1);
    printf("PLN benchmark: n = %d, p = %d, rank %d: the fit needs %.1f GB of device memory "
           "(15 vectors of 2 n p + p (q + 1) doubles, 6 n x p work arrays, dense counts)\n",
           n, p, q, need / 1e9);
    size_t fr = 0, tot = 0;
    if (svir_cuda_pln_mem(&fr, &tot) == 0) {
        printf("  device memory: %.1f GB free of %.1f GB\n", fr / 1e9, tot / 1e9);
        while (need > 0.97 * (double)fr && n > 1000) {
            n /= 2;
            d.n = n; d.nd = n;
            need = svir_cuda_pln_bytes(&d, 1);
            printf("  does NOT fit: sized down to n = %d (%.1f GB)\n", n, need / 1e9);
        }
    }
    double t0 = gck_now();
    if (pln_simulate(&s, n, p, q, 2.0, 2026, 0, 0)) {
        printf("PLN benchmark: out of host memory\n");
        return 1;
    }
    const ptrdiff_t np = (ptrdiff_t)n * p;
    double *colwork = malloc(sizeof(double) * 3 * (size_t)p);
    pln_dat(&s, &d, SVIR_PLN_RANK, 0, 1, colwork);
    const ptrdiff_t L = svir_pln_npar(&d);
    double *par = malloc(sizeof(double) * (size_t)L), *B = malloc(sizeof(double) * 2 * (size_t)p);
    double *Sig = malloc(sizeof(double) * (size_t)p * p);
    const int maxit = 2000;
    double *trace = malloc(sizeof(double) * maxit);
    int failed = 0;
    if (!colwork || !par || !B || !Sig || !trace || pln_start(&s, &d, par)) {
        printf("PLN benchmark: out of host memory\n");
        failed = 1;
    } else {
        double mean = 0.0;
        for (ptrdiff_t k = 0; k < np; k++) mean += s.Y[k];
        printf("  simulated and started in %.1f s (mean count %.2f)\n", gck_now() - t0, mean / np);
        double J = 0.0, secs = 0.0;
        int iters = 0;
        char err[512];
        const double tol = n >= 1.5 * p ? 1e-6 : 1e-8;
        t0 = gck_now();
        const int st = svir_cuda_pln_fit(&d, par, maxit, tol, &J, &iters, trace, B, Sig, &secs, err, sizeof err);
        const double all = gck_now() - t0;
        if (st) {
            printf("PLN benchmark: FAILED: %s\n", err);
            failed = 1;
        } else {
            printf("PLN benchmark: %d iterations, %.2f s on the device (%.2f s with the upload; "
                   "target <= 30 s), %.1f ms per iteration, final ELBO %.10g, %s\n", iters, secs, all,
                   1e3 * secs / (iters > 0 ? iters : 1), J,
                   iters < maxit ? "converged" : "NOT converged (max iterations)");
            printf("  ELBO trace:");
            for (int k = 0; k < iters; k += (iters / 10 > 0 ? iters / 10 : 1)) printf(" [%d] %.8g", k + 1, trace[k]);
            printf("\n");
        }
    }
    free(colwork); free(par); free(B); free(Sig); free(trace);
    pln_sim_free(&s);
    return failed;
}
