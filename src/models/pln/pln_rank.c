/* The Poisson-lognormal model's small dense algebra: rank q's p x q and
 * q x q parts (Woodbury), shared by the CPU objective (pln_eval.c), the
 * minibatch M step (pln_mb.c) and the CUDA host code (cuda/pln_*.cu).
 * Sigma's inverse (svir_pln_spd_inverse) is in pln_blas.c. R's BLAS and
 * LAPACK. */
#include "core/svir_lapack.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "models/pln/pln.h"

/* ---- rank q: the small (p x q, q x q) parts, shared with the CUDA host
 * code (src/cuda/pln_eval.cu) ---- */

int svir_pln_wb_small(int p, int q, const double *W, const double *lpsi, double *ipsi, double *V,
                      double *KmI, double *Kinv, double *G, double *omd, double *logdet, char *err,
                      size_t errlen)
{
    const double one = 1.0, zero = 0.0;
    for (int j = 0; j < p; j++) ipsi[j] = exp(-lpsi[j]);
    for (int k = 0; k < q; k++)
        for (int j = 0; j < p; j++) V[(ptrdiff_t)k * p + j] = W[(ptrdiff_t)k * p + j] * ipsi[j];
    F77_CALL(dgemm)("T", "N", &q, &q, &p, &one, W, &p, V, &p, &zero, KmI, &q FCONE FCONE);
    for (int k = 0; k < q; k++)
        for (int l = 0; l < q; l++) {
            const double v = 0.5 * (KmI[k * q + l] + KmI[l * q + k]);
            KmI[k * q + l] = v;
            Kinv[k * q + l] = v + (k == l ? 1.0 : 0.0);
        }
    int info = 0;
    F77_CALL(dpotrf)("L", &q, Kinv, &q, &info FCONE);
    if (info != 0) {
        snprintf(err, errlen, "I + W' Psi^-1 W is not positive definite");
        return 1;
    }
    double ld = 0.0;
    for (int k = 0; k < q; k++) ld += 2.0 * log(Kinv[k * q + k]);
    for (int j = 0; j < p; j++) ld += lpsi[j];
    F77_CALL(dpotri)("L", &q, Kinv, &q, &info FCONE);
    for (int k = 0; k < q; k++)
        for (int l = k + 1; l < q; l++) Kinv[l * q + k] = Kinv[k * q + l];
    /* G = V K^-1; diag(Omega) */
    F77_CALL(dgemm)("N", "N", &p, &q, &q, &one, V, &p, Kinv, &q, &zero, G, &p FCONE FCONE);
    for (int j = 0; j < p; j++) {
        double s = 0.0;
        for (int k = 0; k < q; k++) s += G[(ptrdiff_t)k * p + j] * V[(ptrdiff_t)k * p + j];
        omd[j] = ipsi[j] - s;
    }
    *logdet = ld;
    return 0;
}

void svir_pln_rank_grad(int p, int q, double nd, const double *lpsi, const double *ipsi, const double *V, const double *KmI, const double *G,
                        const double *omd, const double *s2sum, const double *colt2, double *PQ,
                        double *OW, double *X2, double *Qs, double *gW, double *gl)
{
    const double one = 1.0, zero = 0.0, minus1 = -1.0;
    /* OW = Omega W = V - G (K - I) */
    memcpy(OW, V, sizeof(double) * (size_t)p * q);
    F77_CALL(dgemm)("N", "N", &p, &q, &q, &minus1, G, &p, KmI, &q, &one, OW, &p FCONE FCONE);
    /* PQ = Omega C Omega W = T'(T W) + Omega (s2 o OW) */
    for (int k = 0; k < q; k++)
        for (int j = 0; j < p; j++) {
            const ptrdiff_t e = (ptrdiff_t)k * p + j;
            X2[e] = s2sum[j] * OW[e];
            PQ[e] += ipsi[j] * X2[e];
        }
    /* Qs = V' X2 (then V' diag(s2) V, reusing it), PQ -= G Qs */
    F77_CALL(dgemm)("T", "N", &q, &q, &p, &one, V, &p, X2, &p, &zero, Qs, &q FCONE FCONE);
    F77_CALL(dgemm)("N", "N", &p, &q, &q, &minus1, G, &p, Qs, &q, &one, PQ, &p FCONE FCONE);
    for (ptrdiff_t e = 0; e < (ptrdiff_t)p * q; e++) gW[e] = PQ[e] - nd * OW[e];
    /* (Omega C Omega)_jj = sum_i T_ij^2 + sum_l Omega_jl^2 s2_l, with
     * Omega_jl = delta_jl / psi_j - (G V')_jl */
    for (int k = 0; k < q; k++)
        for (int j = 0; j < p; j++) X2[(ptrdiff_t)k * p + j] = s2sum[j] * V[(ptrdiff_t)k * p + j];
    F77_CALL(dgemm)("T", "N", &q, &q, &p, &one, V, &p, X2, &p, &zero, Qs, &q FCONE FCONE);
    for (int j = 0; j < p; j++) {
        double gv = 0.0, gqg = 0.0;
        for (int k = 0; k < q; k++) {
            const double gk = G[(ptrdiff_t)k * p + j];
            gv += gk * V[(ptrdiff_t)k * p + j];
            double r = 0.0;
            for (int l = 0; l < q; l++) r += Qs[l * q + k] * G[(ptrdiff_t)l * p + j];
            gqg += gk * r;
        }
        const double oco = colt2[j] + ipsi[j] * ipsi[j] * s2sum[j] - 2.0 * ipsi[j] * gv * s2sum[j] + gqg;
        gl[j] = exp(lpsi[j]) * (-0.5 * nd * omd[j] + 0.5 * oco);
    }
}

void svir_pln_rank_h0den(int p, int q, double nd, const double *W, const double *lpsi,
                         const double *OW, const double *omd, double *den)
{
    for (int k = 0; k < q; k++) {
        double wow = 0.0;
        for (int j = 0; j < p; j++) wow += W[(ptrdiff_t)k * p + j] * OW[(ptrdiff_t)k * p + j];
        for (int j = 0; j < p; j++) {
            const double ow = OW[(ptrdiff_t)k * p + j];
            den[(ptrdiff_t)k * p + j] = nd * (omd[j] * (wow + 0.01) + ow * ow);
        }
    }
    for (int j = 0; j < p; j++) {
        const double po = exp(lpsi[j]) * omd[j];
        den[(ptrdiff_t)p * q + j] = 0.5 * nd * po * po + 1e-8;
    }
}

void svir_pln_sigma_lowrank(int p, int q, const double *W, const double *lpsi, double *Sigma)
{
    const double one = 1.0, zero = 0.0;
    F77_CALL(dsyrk)("L", "N", &p, &q, &one, W, &p, &zero, Sigma, &p FCONE FCONE);
    for (int j = 0; j < p; j++) {
        Sigma[(ptrdiff_t)j * p + j] += exp(lpsi[j]);
        for (int i = j + 1; i < p; i++) Sigma[(ptrdiff_t)i * p + j] = Sigma[(ptrdiff_t)j * p + i];
    }
}
