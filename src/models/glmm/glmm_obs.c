/* The GLMM's pass over the observations of a batch: the linear predictor,
 * the log-likelihood and its gradients, in chunks, specialised per family
 * and link and for random-intercept models (see below), in parallel over
 * observations with per-thread sums reduced in thread order. */
#include "models/glmm/glmm_work.h"
#include "core/svir_result.h"
#include "core/svir_math.h"

#include <math.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

/* sum_k x[k], in svir_dot4's order: the same as svir_dot4 with a column of ones */
static inline double sum4(const double *x, int n)
{
    double a0 = 0.0, a1 = 0.0, a2 = 0.0, a3 = 0.0;
    int k = 0;
    for (; k + 4 <= n; k += 4) {
        a0 += x[k];
        a1 += x[k + 1];
        a2 += x[k + 2];
        a3 += x[k + 3];
    }
    for (; k < n; k++) a0 += x[k];
    return (a0 + a1) + (a2 + a3);
}

/* Observations lo..hi-1 of the batch: adds log p(y_i | eta_i) (without
 * constants) to *ll and the gradients to g (beta), G (b) and *ga (log aux).
 * Inlined once per family and link, so the switch leaves the hot loop.
 *
 * Observations go in chunks. The fixed part X beta and the gradient X^T de
 * are column passes over a chunk (streaming, no dependencies between
 * elements); the random-effect part, the likelihood and the scatter of de
 * into the groups are one fused loop, specialised (NT = 1..4) for models
 * whose terms are all random intercepts so that every group pointer stays in
 * a register. A term whose data are sorted by group (w->runs) adds each run
 * of equal groups in a register instead of through memory; the first such
 * term sits in slot 0 of w->gcat and the loop is specialised on whether
 * there is one (NR), so no per-term test is left inside it. */
#define SVIR_CHUNK 512

SVIR_ALWAYS_INLINE void chunk_terms_fast(const glmm_work *w, const int NT, const int NR,
                                         const int family, const int link, const int ZI,
                                         const svir_aux *aux, const ptrdiff_t *ix, ptrdiff_t k0,
                                         int nk, const double *eta, const double *etaz,
                                         double *de, double *dez, double *G, double *ll_out,
                                         double *ga_out)
{
    /* ix == NULL: the full batch, observations k0 .. k0 + nk - 1. Each
     * observation's NT positions in b (and G) sit side by side in w->gcat,
     * so the loop needs one index pointer and one base pointer each for b
     * and G, whatever NT is: few enough registers that nothing spills. */
    const svir_glmm *m = w->m;
    /* a local copy: the stores into G cannot alias it, so sigma and phi
     * stay in registers */
    const svir_aux al = *aux;
    const int *gc = w->gcat;
    const double *b = w->bobs;
    int gp = gc[(ix ? ix[0] : k0) * NT];
    double acc = 0.0;
    double ll = 0.0, ga = 0.0, ss = 0.0;
    for (int k = 0; k < nk; k++) {
        const ptrdiff_t i = ix ? ix[k] : k0 + k;
        const int *gi = gc + i * NT;
        double e = eta[k];
        SVIR_UNROLL4
        for (int t = 0; t < NT; t++) e += b[gi[t]];
        double d;
        if (family == SVIR_GAUSSIAN) {
            /* only the sum of u = r^2 / sigma^2 (svir_loglik_gauss_sum):
             * three operations per observation instead of seven */
            const double r = m->y[i] - e;
            d = r * al.inv_s2;
            ss += r * d;
        } else {
            double da, dz;
            ll += svir_loglik_obs(m, family, link, ZI, i, e, ZI ? etaz[k] : 0.0, &al, &d, &da, &dz);
            ga += da;
            if (ZI) dez[k] = dz;
        }
        de[k] = d;
        if (NR) {
            const int gk = gi[0];
            if (gk != gp) {
                G[gp] += acc;
                acc = 0.0;
                gp = gk;
            }
            acc += d;
        }
        SVIR_UNROLL4
        for (int t = NR; t < NT; t++) G[gi[t]] += d;
    }
    if (NR) G[gp] += acc;
    /* (no prior weights here: a weighted model has nt_fast = 0) */
    if (family == SVIR_GAUSSIAN) ll = svir_loglik_gauss_sum(&al, ss, (double)nk, &ga);
    *ll_out += ll;
    *ga_out += ga;
}

/* any terms: the general loop */
SVIR_ALWAYS_INLINE void chunk_terms_general(const glmm_work *w, const int family, const int link,
                                            const int ZI, const svir_aux *aux,
                                            const ptrdiff_t *ix, int nk, double *eta,
                                            const double *etaz, double *de, double *dez,
                                            double *G, double *ll_out, double *ga_out)
{
    const svir_glmm *m = w->m;
    const ptrdiff_t n = m->n;
    for (int t = 0; t < m->nterms; t++) {
        const svir_term *tm = &m->terms[t];
        const int *grp = tm->group, q = tm->q;
        const double *bt = w->b + tm->off_z;
        if (tm->z_ones) {
            for (int k = 0; k < nk; k++) eta[k] += bt[grp[ix[k]]];
        } else {
            for (int c = 0; c < q; c++) {
                const double *zc = tm->Z + (ptrdiff_t)c * n;
                for (int k = 0; k < nk; k++) {
                    const ptrdiff_t i = ix[k];
                    eta[k] += zc[i] * bt[(ptrdiff_t)grp[i] * q + c];
                }
            }
        }
    }
    double ll = 0.0, ga = 0.0;
    for (int k = 0; k < nk; k++) {
        double da, dz;
        ll += svir_loglik_obs_w(m, family, link, ZI, ix[k], eta[k], ZI ? etaz[k] : 0.0, aux, &de[k],
                              &da, &dz);
        ga += da;
        if (ZI) dez[k] = dz;
    }
    *ll_out += ll;
    *ga_out += ga;
    for (int t = 0; t < m->nterms; t++) {
        const svir_term *tm = &m->terms[t];
        const int *grp = tm->group, q = tm->q;
        double *Gt = G + tm->off_z;
        if (tm->z_ones && w->runs[t]) {
            int gp = grp[ix[0]];
            double acc = 0.0;
            for (int k = 0; k < nk; k++) {
                const int gk = grp[ix[k]];
                if (gk != gp) {
                    Gt[gp] += acc;
                    acc = 0.0;
                    gp = gk;
                }
                acc += de[k];
            }
            Gt[gp] += acc;
        } else if (tm->z_ones) {
            for (int k = 0; k < nk; k++) Gt[grp[ix[k]]] += de[k];
        } else {
            for (int c = 0; c < q; c++) {
                const double *zc = tm->Z + (ptrdiff_t)c * n;
                for (int k = 0; k < nk; k++) {
                    const ptrdiff_t i = ix[k];
                    Gt[(ptrdiff_t)grp[i] * q + c] += de[k] * zc[i];
                }
            }
        }
    }
}

SVIR_ALWAYS_INLINE void range_part(const glmm_work *w, ptrdiff_t lo, ptrdiff_t hi, const int family,
                                   const int link, const int ZI, const svir_aux *aux, double *g,
                                   double *gz, double *G, double *ll_io, double *ga_io)
{
    const svir_glmm *m = w->m;
    const ptrdiff_t n = m->n;
    const int p = m->p;
    const double *beta = w->beta_eff, *gamma = ZI ? w->theta + m->off_zi : NULL;
    double eta[SVIR_CHUNK], de[SVIR_CHUNK], xv[SVIR_CHUNK];
    double etaz[SVIR_CHUNK], dez[SVIR_CHUNK];
    ptrdiff_t ix[SVIR_CHUNK];
    double ll = *ll_io, ga = *ga_io;
    for (ptrdiff_t k0 = lo; k0 < hi; k0 += SVIR_CHUNK) {
        const int nk = (int)(hi - k0 < SVIR_CHUNK ? hi - k0 : SVIR_CHUNK);
        if (w->full) {
            if (!w->nt_fast)
                for (int k = 0; k < nk; k++) ix[k] = k0 + k;
        } else {
            for (int k = 0; k < nk; k++) ix[k] = w->idx[k0 + k];
        }
        /* eta = offset + X beta; the intercept column is not read (adding
         * 1 * b0 to 0 or to the offset is the same as adding b0) */
        const double b0 = m->x_ones >= 0 ? beta[m->x_ones] : 0.0;
        if (m->offset && w->full) {
            SVIR_SIMD
            for (int k = 0; k < nk; k++) eta[k] = m->offset[k0 + k] + b0;
        } else if (m->offset) {
            for (int k = 0; k < nk; k++) eta[k] = m->offset[ix[k]] + b0;
        } else {
            SVIR_SIMD
            for (int k = 0; k < nk; k++) eta[k] = b0;
        }
        for (int c = 0; c < p; c++) {
            if (c == m->x_ones) continue;
            const double *xc = m->X + (ptrdiff_t)c * n, bc = beta[c];
            if (w->full) {
                xc += k0;
                SVIR_SIMD
                for (int k = 0; k < nk; k++) eta[k] += xc[k] * bc;
            } else {
                for (int k = 0; k < nk; k++) eta[k] += xc[ix[k]] * bc;
            }
        }
        /* the zero inflation's predictor Xz gamma */
        if (ZI) {
            for (int k = 0; k < nk; k++) etaz[k] = 0.0;
            for (int c = 0; c < m->pz; c++) {
                const double *xc = m->Xz + (ptrdiff_t)c * n, gc = gamma[c];
                if (w->full) {
                    xc += k0;
                    for (int k = 0; k < nk; k++) etaz[k] += xc[k] * gc;
                } else {
                    for (int k = 0; k < nk; k++) etaz[k] += xc[ix[k]] * gc;
                }
            }
        }
        /* + Z b, likelihood, d/d b */
        /* full batches pass ix = NULL as a constant: a loop of their own */
#define FAST1(NT, NR)                                                                          \
        if (w->full)                                                                           \
            chunk_terms_fast(w, NT, NR, family, link, ZI, aux, NULL, k0, nk, eta, etaz, de, dez, \
                             G, &ll, &ga);                                                      \
        else                                                                                   \
            chunk_terms_fast(w, NT, NR, family, link, ZI, aux, ix, k0, nk, eta, etaz, de, dez,  \
                             G, &ll, &ga);
#define FAST(NT)                                                                               \
    case NT:                                                                                   \
        if (w->nrun) { FAST1(NT, 1) } else { FAST1(NT, 0) }                                    \
        break;
        switch (w->nt_fast) {
        FAST(1) FAST(2) FAST(3) FAST(4)
        default:
            chunk_terms_general(w, family, link, ZI, aux, ix, nk, eta, etaz, de, dez, G, &ll, &ga);
            break;
        }
#undef FAST
#undef FAST1
        /* d/d beta = X^T de */
        for (int c = 0; c < p; c++) {
            const double *xc = m->X + (ptrdiff_t)c * n;
            if (c == m->x_ones) {
                g[c] += sum4(de, nk);
            } else if (w->full) {
                g[c] += svir_dot4(xc + k0, de, nk);
            } else {
                for (int k = 0; k < nk; k++) xv[k] = xc[ix[k]];
                g[c] += svir_dot4(xv, de, nk);
            }
        }
        /* d/d gamma = Xz^T dez */
        for (int c = 0; ZI && c < m->pz; c++) {
            const double *xc = m->Xz + (ptrdiff_t)c * n;
            if (w->full) {
                gz[c] += svir_dot4(xc + k0, dez, nk);
            } else {
                for (int k = 0; k < nk; k++) xv[k] = xc[ix[k]];
                gz[c] += svir_dot4(xv, dez, nk);
            }
        }
    }
    *ll_io = ll;
    *ga_io = ga;
}

/* range_part over [lo, hi) in spans of SVIR_POLL_SPAN observations, with
 * svir_poll() between them, outside the chunk loop's code. The sums run on
 * through the spans in the same order. */
#define SVIR_POLL_SPAN ((ptrdiff_t)64 * SVIR_CHUNK)
SVIR_ALWAYS_INLINE void range_loglik(const glmm_work *w, ptrdiff_t lo, ptrdiff_t hi, const int family,
                                     const int link, const int ZI, const svir_aux *aux, double *g,
                                     double *gz, double *G, double *ll_out, double *ga_out)
{
    double ll = 0.0, ga = 0.0;
    for (ptrdiff_t s0 = lo; s0 < hi; s0 += SVIR_POLL_SPAN) {
        if (s0 > lo && svir_poll()) break;
        const ptrdiff_t s1 = hi - s0 > SVIR_POLL_SPAN ? s0 + SVIR_POLL_SPAN : hi;
        range_part(w, s0, s1, family, link, ZI, aux, g, gz, G, &ll, &ga);
    }
    *ll_out = ll;
    *ga_out = ga;
}

/* Sum over the batch of log p(y_i | eta_i) (without constants) and its
 * gradients: beta (gb, [p]), b (w->Gt thread 0, present groups), log aux,
 * and the zero inflation's gamma (gz, [pz]). */
double glmm_batch_loglik(glmm_work *w, double *gb, double *gaux, double *gz)
{
    const svir_glmm *m = w->m;
    const ptrdiff_t nb = w->B, nz = m->nz;
    const int T = w->T, p = m->p, pz = m->zi ? m->pz : 0;
    svir_aux aux;
    svir_aux_set(&aux, w->g.sigma, w->g.phi);
    /* zero the per-thread d/db buffers at the present groups */
#ifdef _OPENMP
#pragma omp parallel for num_threads(T) schedule(static) if (w->npres >= SVIR_PAR_GROUPS)
#endif
    for (ptrdiff_t k = 0; k < w->npres; k++) {
        const svir_term *tm = &m->terms[w->pres_term[k]];
        const ptrdiff_t pos = tm->off_z + (ptrdiff_t)w->pres_group[k] * tm->q;
        for (int tid = 0; tid < T; tid++) {
            double *Gp = w->Gt + (size_t)tid * (size_t)nz + pos;
            for (int c = 0; c < tm->q; c++) Gp[c] = 0.0;
        }
    }
    /* folded terms (fold_init): their effect rides on their child's */
    if (w->nfold) {
        memcpy(w->bf, w->b, sizeof(double) * (size_t)nz);
        for (int f = 0; f < w->nfold; f++) {
            const svir_term *tc = &m->terms[w->fold_into[f]];
            const double *bp = w->b + m->terms[w->fold_term[f]].off_z;
            const int *map = w->fold_map[f];
            double *bc = w->bf + tc->off_z;
            for (int j = 0; j < tc->ngroups; j++) bc[j] += bp[map[j]];
        }
    }
#ifdef _OPENMP
#pragma omp parallel num_threads(T)
#endif
    {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        const ptrdiff_t lo = nb * tid / T, hi = nb * (tid + 1) / T;
        double *G = w->Gt + (size_t)tid * (size_t)nz;
        double *g = w->gbt + (size_t)tid * (size_t)p;
        double *gzt = w->gzt + (size_t)tid * (size_t)pz;
        double ll = 0.0, ga = 0.0;
        for (int k = 0; k < p; k++) g[k] = 0.0;
        for (int k = 0; k < pz; k++) gzt[k] = 0.0;
#define RANGE(FAM, LINK, ZI) range_loglik(w, lo, hi, FAM, LINK, ZI, &aux, g, gzt, G, &ll, &ga)
        SVIR_FAMILY_DISPATCH_ZI(m, RANGE)
#undef RANGE
        /* a folded term's gradient: the sum of its children's */
        for (int f = 0; f < w->nfold; f++) {
            const svir_term *tc = &m->terms[w->fold_into[f]];
            double *Gp = G + m->terms[w->fold_term[f]].off_z;
            const double *Gc = G + tc->off_z;
            const int *map = w->fold_map[f];
            for (int j = 0; j < tc->ngroups; j++) Gp[map[j]] += Gc[j];
        }
        w->llt[tid] = ll;
        w->gauxt[tid] = ga;
    }
    /* deterministic reductions: thread order */
    double ll = 0.0;
    *gaux = 0.0;
    for (int k = 0; k < p; k++) gb[k] = 0.0;
    for (int k = 0; k < pz; k++) gz[k] = 0.0;
    for (int tid = 0; tid < T; tid++) {
        ll += w->llt[tid];
        *gaux += w->gauxt[tid];
        for (int k = 0; k < p; k++) gb[k] += w->gbt[(size_t)tid * (size_t)p + k];
        for (int k = 0; k < pz; k++) gz[k] += w->gzt[(size_t)tid * (size_t)pz + k];
    }
    if (T > 1) {
#ifdef _OPENMP
#pragma omp parallel for num_threads(T) schedule(static) if (w->npres >= SVIR_PAR_GROUPS)
#endif
        for (ptrdiff_t k = 0; k < w->npres; k++) {
            const svir_term *tm = &m->terms[w->pres_term[k]];
            const ptrdiff_t pos = tm->off_z + (ptrdiff_t)w->pres_group[k] * tm->q;
            for (int tid = 1; tid < T; tid++)
                for (int c = 0; c < tm->q; c++)
                    w->Gt[pos + c] += w->Gt[(size_t)tid * (size_t)nz + pos + c];
        }
    }
    return ll;
}
