/* The Poisson-lognormal model's large BLAS and LAPACK work in pieces of
 * about PLN_BLAS_FLOPS flops (a fraction of a second), with an interrupt
 * poll (svir_poll) between them: one call of n p^2 or n p q flops, or a
 * p^3 inverse, runs for seconds at large n, p or q, and Ctrl-C cannot
 * stop a BLAS call. Problems of one piece or less make the one call they
 * made before, so their results do not change. Every function returns 1
 * when the host asked to stop (its output is then incomplete), else 0.
 * Used by pln_eval.c (full-batch fits and the VE step), pln_mb.c (a
 * minibatch's sums and M step). */
#include "core/svir_lapack.h"
#include "core/svir_result.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/pln/pln_work.h"

/* the piece size in flops: PLN_BLAS_FLOPS, or smaller for the tests */
static double blas_flops = PLN_BLAS_FLOPS;

double svir_pln_blas_flops(double set)
{
    const double old = blas_flops;
    if (set > 0.0) blas_flops = set;
    return old;
}

/* the number of rows (of n) per piece, for work of `per` flops per row */
int svir_pln_piece_rows(int n, double per)
{
    const double r = blas_flops / (per > 1.0 ? per : 1.0);
    return r >= n ? n : (r < 64 ? 64 : (int)r);
}

/* Om = alpha A' A (lower, p x p) + beta Om, the sum over A's n rows in
 * piece order. trans "N": At is A', p x n (leading dimension ld); "T": A
 * is n x p (leading dimension ld). */
int svir_pln_syrk_polled(const char *trans, int p, int n, double alpha, const double *A, int ld,
                         double beta, double *Om)
{
    const int step = svir_pln_piece_rows(n, (double)p * p);
    const int tn = trans[0] == 'N';
    for (int i0 = 0; i0 < n; i0 += step) {
        if (svir_poll()) return 1;
        const int m = n - i0 < step ? n - i0 : step;
        const double b = i0 == 0 ? beta : 1.0;
        const double *Ai = tn ? A + (ptrdiff_t)i0 * ld : A + i0;
        F77_CALL(dsyrk)("L", trans, &p, &m, &alpha, Ai, &ld, &b, Om, &p FCONE FCONE);
    }
    return 0;
}

/* C = alpha R Om + beta C (Om p x p symmetric, lower; R and C n x p, leading
 * dimension n), in pieces of R's rows (each row's sums as in one call) */
int svir_pln_symm_polled(int n, int p, double alpha, const double *Om, const double *R, double beta,
                         double *C)
{
    const int step = svir_pln_piece_rows(n, 2.0 * p * p);
    for (int i0 = 0; i0 < n; i0 += step) {
        if (svir_poll()) return 1;
        const int m = n - i0 < step ? n - i0 : step;
        F77_CALL(dsymm)("R", "L", &m, &p, &alpha, Om, &p, R + i0, &n, &beta, C + i0, &n FCONE FCONE);
    }
    return 0;
}

/* C = alpha A op(B) + beta C, A n x k, C n x ncol (leading dimensions lda,
 * ldc), in pieces of A's and C's rows (each row's sums as in one call) */
int svir_pln_gemm_rows_polled(const char *tb, int n, int ncol, int k, double alpha, const double *A,
                              int lda, const double *B, int ldb, double beta, double *C, int ldc)
{
    const int step = svir_pln_piece_rows(n, 2.0 * ncol * k);
    for (int i0 = 0; i0 < n; i0 += step) {
        if (svir_poll()) return 1;
        const int m = n - i0 < step ? n - i0 : step;
        F77_CALL(dgemm)("N", tb, &m, &ncol, &k, &alpha, A + i0, &lda, B, &ldb, &beta, C + i0, &ldc
                        FCONE FCONE);
    }
    return 0;
}

/* C = alpha op(A) B + beta C, C rows x cols, summed over n (B n x cols;
 * op(A) rows x n: A is n x rows for "T", rows x n for "N") in piece order */
int svir_pln_gemm_inner_polled(const char *ta, int rows, int cols, int n, double alpha,
                               const double *A, int lda, const double *B, int ldb, double beta,
                               double *C, int ldc)
{
    const int step = svir_pln_piece_rows(n, 2.0 * rows * cols);
    const int tt = ta[0] == 'T';
    for (int i0 = 0; i0 < n; i0 += step) {
        if (svir_poll()) return 1;
        const int m = n - i0 < step ? n - i0 : step;
        const double b = i0 == 0 ? beta : 1.0;
        const double *Ai = tt ? A + i0 : A + (ptrdiff_t)i0 * lda;
        F77_CALL(dgemm)(ta, "N", &rows, &cols, &m, &alpha, Ai, &lda, B + i0, &ldb, &b, C, &ldc
                        FCONE FCONE);
    }
    return 0;
}

/* The inverse of the p x p SPD matrix whose lower triangle is in Om, in
 * place (lower), and its log determinant. At one piece or less (p^3 / 3
 * flops per stage), LAPACK's dpotrf and dpotri. Above,
 * the same three stages blocked by columns, with a poll between blocks:
 * L L' = Om (right-looking: dpotrf on the diagonal block, dtrsm below it,
 * dsyrk on the trailing matrix), X = L^-1 (by block columns: X_JJ = L_JJ^-1
 * by dtrtri, then the rows below by dtrmm and a forward solve against the
 * trailing L), and Om = X'X (block column J: X[J:, J:]' X[J:, J] by
 * dtrmm). Returns 0, 1 when interrupted, or 2 when Om is not positive
 * definite (info: the leading minor, as dpotrf's). */
static int pln_chol_inv(int p, double *Om, double *work, double *logdet, int *info_out)
{
    int info = 0;
    const double one = 1.0, minus1 = -1.0;
    const ptrdiff_t ld = p;
    const double cube = (double)p * p * p / 3.0;
    if (cube <= blas_flops) {
        F77_CALL(dpotrf)("L", &p, Om, &p, &info FCONE);
        if (info != 0) {
            *info_out = info;
            return 2;
        }
        double s = 0.0;
        for (int j = 0; j < p; j++) s += 2.0 * log(Om[(ptrdiff_t)j * ld + j]);
        *logdet = s;
        F77_CALL(dpotri)("L", &p, Om, &p, &info FCONE);
        if (info != 0) {
            *info_out = -info;
            return 2;
        }
        return 0;
    }
    /* block width: a block's updates, at most about p^2 nb flops, within
     * four pieces (narrower blocks run the BLAS slower: at p = 4000, blocks
     * of 62 columns took 1.3 times LAPACK's one call, of 250 about 1.1) */
    int nb = (int)(4.0 * blas_flops / ((double)p * p));
    if (nb < 32) nb = 32;
    if (nb > 256) nb = 256;
    /* (1) Cholesky */
    for (int j0 = 0; j0 < p; j0 += nb) {
        if (j0 > 0 && svir_poll()) return 1;
        int b = p - j0 < nb ? p - j0 : nb, r = p - j0 - b;
        double *Ljj = Om + (ptrdiff_t)j0 * ld + j0;
        F77_CALL(dpotrf)("L", &b, Ljj, &p, &info FCONE);
        if (info != 0) {
            *info_out = j0 + info;
            return 2;
        }
        if (r > 0) {
            double *Lrj = Ljj + b, *Lrr = Om + (ptrdiff_t)(j0 + b) * ld + j0 + b;
            F77_CALL(dtrsm)("R", "L", "T", "N", &r, &b, &one, Ljj, &p, Lrj, &p FCONE FCONE FCONE FCONE);
            F77_CALL(dsyrk)("L", "N", &r, &b, &minus1, Lrj, &p, &one, Lrr, &p FCONE FCONE);
        }
    }
    double s = 0.0;
    for (int j = 0; j < p; j++) s += 2.0 * log(Om[(ptrdiff_t)j * ld + j]);
    *logdet = s;
    /* (2) X = L^-1, in place, from the last block column to the first: block
     * column J of X is X_JJ = L_JJ^-1 and, below it, -X[R, R] L[R, J] X_JJ
     * (R the rows after J, X[R, R] already inverted) */
    const int nblk = (p + nb - 1) / nb;
    for (int k = nblk - 1; k >= 0; k--) {
        if (k < nblk - 1 && svir_poll()) return 1;
        const int j0 = k * nb;
        int b = p - j0 < nb ? p - j0 : nb, r = p - j0 - b;
        double *Xjj = Om + (ptrdiff_t)j0 * ld + j0;
        F77_CALL(dtrtri)("L", "N", &b, Xjj, &p, &info FCONE FCONE);
        if (info != 0) {
            *info_out = -(j0 + info);
            return 2;
        }
        if (r > 0) {
            double *Prj = Xjj + b, *Xrr = Om + (ptrdiff_t)(j0 + b) * ld + j0 + b;
            /* P = L[R, J] X_JJ, then P = -X[R, R] P */
            F77_CALL(dtrmm)("R", "L", "N", "N", &r, &b, &one, Xjj, &p, Prj, &p FCONE FCONE FCONE FCONE);
            F77_CALL(dtrmm)("L", "L", "N", "N", &r, &b, &minus1, Xrr, &p, Prj, &p FCONE FCONE FCONE FCONE);
        }
    }
    /* (3) Om = X'X, lower, by block columns from the first: block column J
     * reads X[J:, J:] only, which the earlier columns no longer need */
    for (int j0 = 0; j0 < p; j0 += nb) {
        if (j0 > 0 && svir_poll()) return 1;
        int b = p - j0 < nb ? p - j0 : nb, rr = p - j0;
        double *Xj = Om + (ptrdiff_t)j0 * ld + j0;
        /* the panel X[J:, J] (X_JJ lower: its upper part is 0) */
        for (int c = 0; c < b; c++)
            for (int i = 0; i < rr; i++)
                work[(ptrdiff_t)c * rr + i] = i < c ? 0.0 : Xj[(ptrdiff_t)c * ld + i];
        F77_CALL(dtrmm)("L", "L", "T", "N", &rr, &b, &one, Xj, &p, work, &rr FCONE FCONE FCONE FCONE);
        for (int c = 0; c < b; c++)
            for (int i = c; i < rr; i++) Xj[(ptrdiff_t)c * ld + i] = work[(ptrdiff_t)c * rr + i];
    }
    return 0;
}

int svir_pln_spd_inverse(int p, double *Om, double *omd, double *logdet, char *err, size_t errlen)
{
    double ld = 0.0;
    int info = 0;
    const int nbmax = 256;
    double *work = NULL;
    if ((double)p * p * p / 3.0 > blas_flops) {
        work = malloc(sizeof(double) * (size_t)p * nbmax);
        if (!work) {
            snprintf(err, errlen, "out of memory inverting the %d x %d covariance matrix", p, p);
            return 1;
        }
    }
    const int st = pln_chol_inv(p, Om, work, &ld, &info);
    free(work);
    if (st == 1) {
        snprintf(err, errlen, "interrupted");
        return 1;
    }
    if (st == 2) {
        if (info > 0)
            snprintf(err, errlen, "the estimated covariance matrix is not positive definite "
                     "(leading minor %d)", info);
        else
            snprintf(err, errlen, "the estimated covariance matrix is singular");
        return 1;
    }
    for (int j = 0; j < p; j++) {
        if (omd) omd[j] = Om[(ptrdiff_t)j * p + j];
        for (int i = j + 1; i < p; i++) Om[(ptrdiff_t)i * p + j] = Om[(ptrdiff_t)j * p + i];
    }
    *logdet = ld;
    return 0;
}
