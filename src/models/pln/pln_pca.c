/* PLN-PCA (issue 15; dev/PLN.md): the Poisson-lognormal model of rank q
 * with its latent layer in q dimensions,
 *   Z_i = X_i B + C w_i,  w_i ~ N(0, I_q),  Y_ij ~ Poisson(exp(O_ij + Z_ij)),
 * so Sigma = C C' (PLNmodels' PLNPCA, pyPLNmodels' PlnPCA), and the guide
 * q(w_i) = N(m_i, diag(s_i^2)) over the q factors. With
 * A_ij = exp(O_ij + X_i B_j + m_i' C_j + sum_k C_jk^2 s_ik^2 / 2),
 *   J = sum_ij [Y_ij (O_ij + X_i B_j + m_i' C_j) - A_ij - log Y_ij!]
 *       + sum_ik [log s_ik - (m_ik^2 + s_ik^2) / 2 + 1 / 2],
 *   dJ/dm_ik = ((Y - A) C)_ik - m_ik,
 *   dJ/dlog s_ik = 1 - s_ik^2 ((A (C o C))_ik + 1),
 *   dJ/dC_jk = ((Y - A)' M)_jk - (A' S^2)_jk C_jk,
 *   dJ/dB = X' (Y - A).
 * The parameters x = [M (n x q), log S (n x q), C (p x q), B (d x p)] (the
 * VE step for new rows holds C = Wfix and B = Bfix and has M and log S
 * only). Nothing of size n x p is kept: the objective runs over blocks of
 * rows, each an nb x p product in BLAS-3 (about 2^18 entries), so a fit
 * holds O(n q + p (q + d)) numbers beyond the counts and L-BFGS's vectors
 * of that length. One evaluation costs about 2 n p (8 q + 3 d) flops and
 * n p exponentials. The L-BFGS's initial inverse Hessian is the inverse of
 * -J's Hessian's diagonal (its Gauss-Newton part for C and B), computed in
 * the same pass. */
#include "core/svir_lapack.h"
#include "core/svir_result.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/svir_lbfgs.h"
#include "core/svir_math.h"
#include "models/pln/pln_work.h"

/* entries per block of rows */
#define PCA_BLOCK 262144

typedef struct {
    svir_lbfgs_problem pb;
    const svir_pln_data *dat;
    const int *Rp, *Rj;     /* sparse counts by rows (NULL when dense) */
    const double *Rx;
    int fixed, nb;
    ptrdiff_t L;
    svir_vecspace *vs;
    double *h[2];           /* -J's Hessian's diagonal at the two slots' points */
    double *Z, *A, *Yb;     /* [nb x p] */
    double *S2b, *NQ, *NQ2; /* [nb x 2 q], [nb x q] x 2 */
    double *C2, *C4;        /* [p x q] */
    double *acc, *accB;     /* [p x 2 q], [p x d] */
    double *X2;             /* [n x d] X o X */
    double *colv;           /* [p] */
    double *part;           /* the preconditioner's chunk sums */
} pca_problem;

ptrdiff_t svir_pln_pca_npar(const svir_pln_data *dat)
{
    const ptrdiff_t nq = (ptrdiff_t)dat->n * dat->q;
    return 2 * nq + (dat->Bfix ? 0 : (ptrdiff_t)dat->p * dat->q + (ptrdiff_t)dat->d * dat->p);
}

static int pca_eval(pca_problem *c, const double *x, double *J, double *g, double *h, char *err,
                    size_t errlen)
{
    const svir_pln_data *dat = c->dat;
    const int n = dat->n, p = dat->p, d = dat->d, q = dat->q, fixed = c->fixed;
    const int T = dat->threads > 0 ? dat->threads : 1;
    const ptrdiff_t nq = (ptrdiff_t)n * q, pq = (ptrdiff_t)p * q;
    const double one = 1.0, zero = 0.0;
    const double *M = x, *lS = x + nq;
    const double *C = fixed ? dat->Wfix : x + 2 * nq, *B = fixed ? dat->Bfix : x + 2 * nq + pq;
    double *gM = g, *gS = g + nq, *gC = g + 2 * nq, *gB = gC + pq;
    double *hM = h, *hS = h + nq, *hC = h + 2 * nq, *hB = hC + pq;
    double *Z = c->Z, *A = c->A, *Yb = c->Yb, *S2b = c->S2b, *NQ = c->NQ, *NQ2 = c->NQ2;
    for (ptrdiff_t e = 0; e < pq; e++) {
        c->C2[e] = C[e] * C[e];
        c->C4[e] = c->C2[e] * c->C2[e];
    }
    if (!fixed) {
        memset(gC, 0, sizeof(double) * (size_t)pq);
        if (d > 0) memset(gB, 0, sizeof(double) * (size_t)d * p);
        memset(c->acc, 0, sizeof(double) * (size_t)(2 * pq));
        if (d > 0) memset(c->accB, 0, sizeof(double) * (size_t)p * d);
    }
    double Jl = 0.0;
    for (int i0 = 0; i0 < n; i0 += c->nb) {
        if (svir_poll()) break; /* the host asked to stop */
        const int m = n - i0 < c->nb ? n - i0 : c->nb, q2 = 2 * q;
        /* S^2 and M^2 of the block's rows [m x 2q] */
        for (int k = 0; k < q; k++)
            for (int i = 0; i < m; i++) {
                const double mk = M[(ptrdiff_t)k * n + i0 + i];
                S2b[(ptrdiff_t)k * m + i] = exp(2.0 * lS[(ptrdiff_t)k * n + i0 + i]);
                S2b[(ptrdiff_t)(q + k) * m + i] = mk * mk;
            }
        /* Z = M_b C' + X_b B; A's exponent's variance part S2_b (C o C)' */
        F77_CALL(dgemm)("N", "T", &m, &p, &q, &one, M + i0, &n, C, &p, &zero, Z, &m FCONE FCONE);
        if (d > 0)
            F77_CALL(dgemm)("N", "N", &m, &p, &d, &one, dat->X + i0, &n, B, &d, &one, Z, &m FCONE FCONE);
        F77_CALL(dgemm)("N", "T", &m, &p, &q, &one, S2b, &m, c->C2, &p, &zero, A, &m FCONE FCONE);
        if (!dat->Y) {
            memset(Yb, 0, sizeof(double) * (size_t)m * p);
            for (int i = 0; i < m; i++)
                for (int z = c->Rp[i0 + i]; z < c->Rp[i0 + i + 1]; z++)
                    Yb[(ptrdiff_t)c->Rj[z] * m + i] = c->Rx[z];
        }
        /* A, the likelihood per column, and G = Y - A (over Z) */
#ifdef _OPENMP
#pragma omp parallel for num_threads(T) schedule(static)
#endif
        for (int j = 0; j < p; j++) {
            const ptrdiff_t cb = (ptrdiff_t)j * m, cn = (ptrdiff_t)j * n + i0;
            const double *yj = dat->Y ? dat->Y + cn : Yb + cb;
            double s = 0.0;
            for (int i = 0; i < m; i++) {
                const double o = dat->O ? dat->O[cn + i] : dat->Orow ? dat->Orow[i0 + i] : 0.0;
                const double z = Z[cb + i] + o, a = exp(z + 0.5 * A[cb + i]), y = yj[i];
                s += y * z - a;
                A[cb + i] = a;
                Z[cb + i] = y - a;
            }
            c->colv[j] = s;
        }
        for (int j = 0; j < p; j++) Jl += c->colv[j];
        /* the scores: G C - M; A (C o C), A (C o C)^2 */
        F77_CALL(dgemm)("N", "N", &m, &q, &p, &one, Z, &m, C, &p, &zero, NQ, &m FCONE FCONE);
        for (int k = 0; k < q; k++)
            for (int i = 0; i < m; i++) {
                const ptrdiff_t e = (ptrdiff_t)k * n + i0 + i;
                gM[e] = NQ[(ptrdiff_t)k * m + i] - M[e];
            }
        F77_CALL(dgemm)("N", "N", &m, &q, &p, &one, A, &m, c->C2, &p, &zero, NQ, &m FCONE FCONE);
        F77_CALL(dgemm)("N", "N", &m, &q, &p, &one, A, &m, c->C4, &p, &zero, NQ2, &m FCONE FCONE);
        for (int k = 0; k < q; k++)
            for (int i = 0; i < m; i++) {
                const ptrdiff_t e = (ptrdiff_t)k * n + i0 + i, b = (ptrdiff_t)k * m + i;
                const double s2 = S2b[b], ac2 = NQ[b] + 1.0;
                gS[e] = 1.0 - s2 * ac2;
                hM[e] = ac2;
                hS[e] = 2.0 * s2 * ac2 + s2 * s2 * NQ2[b] + 1e-12;
            }
        if (!fixed) {
            /* C: G' M_b, and A' [S^2 | M^2]; B: X_b' G and A' (X o X)_b */
            F77_CALL(dgemm)("T", "N", &p, &q, &m, &one, Z, &m, M + i0, &n, &one, gC, &p FCONE FCONE);
            F77_CALL(dgemm)("T", "N", &p, &q2, &m, &one, A, &m, S2b, &m, &one, c->acc, &p FCONE FCONE);
            if (d > 0) {
                F77_CALL(dgemm)("T", "N", &d, &p, &m, &one, dat->X + i0, &n, Z, &m, &one, gB, &d FCONE FCONE);
                F77_CALL(dgemm)("T", "N", &p, &d, &m, &one, A, &m, c->X2 + i0, &n, &one, c->accB, &p FCONE FCONE);
            }
        }
    }
    if (!fixed) {
        for (ptrdiff_t e = 0; e < pq; e++) {
            gC[e] -= c->acc[e] * C[e];
            hC[e] = c->acc[e] + c->acc[pq + e] + 1e-8;
        }
        for (int j = 0; j < p; j++)
            for (int a = 0; a < d; a++)
                hB[(ptrdiff_t)j * d + a] = c->accB[(ptrdiff_t)a * p + j] + 1e-8;
    }
    /* the factors' prior and entropy */
    double Jk = 0.0;
    for (ptrdiff_t e = 0; e < nq; e++) Jk += lS[e] - 0.5 * (M[e] * M[e] + exp(2.0 * lS[e])) + 0.5;
    *J = Jl + Jk - dat->lgy;
    if (!isfinite(*J)) {
        snprintf(err, errlen, "the ELBO is not finite");
        return 1;
    }
    return 0;
}

static int pb_eval(void *ctx, int slot, const double *x, double *J, double *g, svir_err *e)
{
    pca_problem *c = ctx;
    char err[256] = "";
    const int st = pca_eval(c, x, J, g, c->h[slot], err, sizeof err);
    if (st) svir_err_set(e, st, "%s", err);
    return st;
}

/* out = v / h, v = gsign g - sum_l alpha_l Y_l; ydot_l = Y_l' out, summed
 * in chunks of PLN_CHUNK entries added in order (any number of threads
 * gives the same sums) */
static int pb_precond(void *ctx, int slot, const double *g, double gsign, int nm,
                      const double *alpha, double *const *Yr, double *out, double *ydot,
                      svir_err *e)
{
    pca_problem *c = ctx;
    (void)e;
    const double *h = c->h[slot];
    const ptrdiff_t L = c->L, nch = (L + PLN_CHUNK - 1) / PLN_CHUNK;
    const int T = c->dat->threads > 0 ? c->dat->threads : 1;
#ifdef _OPENMP
#pragma omp parallel for num_threads(T) schedule(static)
#endif
    for (ptrdiff_t ch = 0; ch < nch; ch++) {
        const ptrdiff_t k0 = ch * PLN_CHUNK, k1 = k0 + PLN_CHUNK < L ? k0 + PLN_CHUNK : L;
        for (ptrdiff_t k = k0; k < k1; k++) {
            double v = gsign * g[k];
            for (int l = 0; l < nm; l++) v -= alpha[l] * Yr[l][k];
            out[k] = v / h[k];
        }
        for (int l = 0; l < nm; l++)
            c->part[ch * SVIR_LBFGS_MAXMEM + l] = svir_dot4(Yr[l] + k0, out + k0, k1 - k0);
    }
    for (int l = 0; l < nm; l++) {
        double s = 0.0;
        for (ptrdiff_t ch = 0; ch < nch; ch++) s += c->part[ch * SVIR_LBFGS_MAXMEM + l];
        ydot[l] = s;
    }
    return 0;
}

/* the start's log S: each factor's optimum with A held, 1 - s^2 ((A (C o
 * C))_ik + 1) = 0 */
static int pb_start(void *ctx, int slot, double *x, svir_err *e)
{
    pca_problem *c = ctx;
    (void)e;
    const ptrdiff_t nq = (ptrdiff_t)c->dat->n * c->dat->q;
    for (ptrdiff_t k = 0; k < nq; k++) x[nq + k] = -0.5 * log(c->h[slot][k]);
    return 0;
}

static void pb_destroy(svir_lbfgs_problem *pb)
{
    if (!pb) return;
    pca_problem *c = pb->ctx;
    svir_vec_cpu_free(c->vs);
    free(c->h[0]); free(c->h[1]); free(c->Z); free(c->A); free(c->Yb); free(c->S2b);
    free(c->NQ); free(c->NQ2); free(c->C2); free(c->C4); free(c->acc); free(c->accB);
    free(c->X2); free(c->colv); free(c->part);
    free(c);
}

svir_lbfgs_problem *svir_pln_pca_problem(const svir_pln_data *dat, const int *Rp, const int *Rj,
                                         const double *Rx, double *x)
{
    const int n = dat->n, p = dat->p, d = dat->d, q = dat->q;
    const int T = dat->threads > 0 ? dat->threads : 1;
    pca_problem *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->dat = dat;
    c->Rp = Rp; c->Rj = Rj; c->Rx = Rx;
    c->fixed = dat->Bfix != NULL;
    c->L = svir_pln_pca_npar(dat);
    long nb = dat->block > 0 ? dat->block : PCA_BLOCK / p;
    if (nb < 64 && dat->block <= 0) nb = 64;
    if (nb > n) nb = n;
    c->nb = (int)nb;
    const size_t mp = (size_t)nb * p, pq = (size_t)p * q;
    c->vs = svir_vec_cpu_new(c->L, T);
    c->h[0] = malloc(sizeof(double) * (size_t)c->L);
    c->h[1] = malloc(sizeof(double) * (size_t)c->L);
    c->Z = malloc(sizeof(double) * mp);
    c->A = malloc(sizeof(double) * mp);
    c->Yb = dat->Y ? malloc(sizeof(double)) : malloc(sizeof(double) * mp);
    c->S2b = malloc(sizeof(double) * (size_t)nb * 2 * q);
    c->NQ = malloc(sizeof(double) * (size_t)nb * q);
    c->NQ2 = malloc(sizeof(double) * (size_t)nb * q);
    c->C2 = malloc(sizeof(double) * pq);
    c->C4 = malloc(sizeof(double) * pq);
    c->acc = malloc(sizeof(double) * 2 * pq);
    c->accB = malloc(sizeof(double) * ((size_t)p * d + 1));
    c->X2 = malloc(sizeof(double) * ((size_t)n * d + 1));
    c->colv = malloc(sizeof(double) * (size_t)p);
    c->part = malloc(sizeof(double) * (size_t)((c->L + PLN_CHUNK - 1) / PLN_CHUNK) * SVIR_LBFGS_MAXMEM);
    svir_lbfgs_problem *pb = &c->pb;
    pb->ctx = c;
    pb->destroy = pb_destroy;
    if (!c->vs || !c->h[0] || !c->h[1] || !c->Z || !c->A || !c->Yb || !c->S2b || !c->NQ ||
        !c->NQ2 || !c->C2 || !c->C4 || !c->acc || !c->accB || !c->X2 || !c->colv || !c->part ||
        (!dat->Y && !Rp)) {
        pb_destroy(pb);
        return NULL;
    }
    for (ptrdiff_t e = 0; e < (ptrdiff_t)n * d; e++) c->X2[e] = dat->X[e] * dat->X[e];
    pb->vs = c->vs;
    pb->x = x;
    pb->eval = pb_eval;
    pb->precond = pb_precond;
    pb->start = pb_start;
    /* a step moves no score by more than 2, no log S, loading or
     * coefficient by more than 1 */
    pb->cap_split = (ptrdiff_t)n * q;
    pb->cap_lo = 2.0;
    pb->cap_hi = 1.0;
    pb->memory = 5;
    return pb;
}

/* the objective and gradient at x (tests: r_test.c) */
int svir_pln_pca_eval(const svir_pln_data *dat, const int *Rp, const int *Rj, const double *Rx,
                      const double *x, double *J, double *g, char *err, size_t errlen)
{
    svir_lbfgs_problem *pb = svir_pln_pca_problem(dat, Rp, Rj, Rx, (double *)x);
    if (!pb) {
        snprintf(err, errlen, "out of memory evaluating the PLN-PCA objective");
        return 2;
    }
    const int st = pca_eval(pb->ctx, x, J, g, ((pca_problem *)pb->ctx)->h[0], err, errlen);
    pb->destroy(pb);
    return st;
}
