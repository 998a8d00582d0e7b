/* Test-only entry points of the random number generator (registered
 * apart in src/init.c): Philox against its known answers, the keyed
 * permutation, normals and uniforms one at a time, in bulk and on the
 * device, and Box-Muller at chosen inputs. */
#include "glue/r_util.h"

#include <limits.h>
#include <math.h>
#include <stdint.h>

#include "core/svir_philox.h"
#include "core/svir_zig.h"
#ifdef SVIR_HAVE_CUDA
#include "models/glmm/glmm_cuda.h"
#endif

/* A whole number in [0, max] held in a double. */
static uint64_t as_u64(SEXP x, R_xlen_t i, double max, const char *what)
{
    double v = REAL(x)[i];
    if (!R_FINITE(v) || v < 0 || v > max || v != floor(v))
        Rf_error("`%s` must hold whole numbers in [0, %.0f]", what, max);
    return (uint64_t)v;
}

static SEXP as_real(SEXP x, R_xlen_t n, const char *what)
{
    if (!Rf_isNumeric(x) || (n >= 0 && XLENGTH(x) != n))
        Rf_error("`%s` must be a numeric vector of length %d", what, (int)n);
    return Rf_coerceVector(x, REALSXP);
}

#define U32MAX 4294967295.0
#define SEEDMAX 9007199254740992.0 /* 2^53: seeds travel as doubles */

SEXP svir_philox_r(SEXP key, SEXP ctr)
{
    SEXP k = PROTECT(as_real(key, 2, "key"));
    SEXP c = PROTECT(as_real(ctr, 4, "ctr"));
    uint32_t kk[2], cc[4], out[4];
    for (int i = 0; i < 2; i++) kk[i] = (uint32_t)as_u64(k, i, U32MAX, "key");
    for (int i = 0; i < 4; i++) cc[i] = (uint32_t)as_u64(c, i, U32MAX, "ctr");
    svir_philox4x32(cc, kk, out);
    SEXP ans = PROTECT(Rf_allocVector(REALSXP, 4));
    for (int i = 0; i < 4; i++) REAL(ans)[i] = (double)out[i];
    UNPROTECT(3);
    return ans;
}

static R_xlen_t as_count(SEXP n, const char *what)
{
    SEXP v = PROTECT(as_real(n, 1, what));
    const double d = REAL(v)[0];
    UNPROTECT(1);
    if (!R_FINITE(d) || d < 0 || d > (double)R_XLEN_T_MAX || d != floor(d))
        Rf_error("`%s` must be a non-negative whole number", what);
    return (R_xlen_t)d;
}

SEXP svir_perm_r(SEXP n, SEXP seed, SEXP round_key)
{
    const R_xlen_t nn = as_count(n, "n");
    if (nn > INT_MAX)
        Rf_error("`n` must be at most %d", INT_MAX);
    SEXP s = PROTECT(as_real(seed, 1, "seed"));
    SEXP rk = PROTECT(as_real(round_key, 1, "round_key"));
    uint32_t key[2];
    svir_philox_key(as_u64(s, 0, SEEDMAX, "seed"), key);
    const uint32_t r32 = (uint32_t)as_u64(rk, 0, U32MAX, "round_key");
    SEXP ans = PROTECT(Rf_allocVector(INTSXP, nn));
    int *p = INTEGER(ans);
    for (R_xlen_t r = 0; r < nn; r++)
        p[r] = (int)svir_perm_index((uint64_t)r, (uint64_t)nn, key, r32);
    UNPROTECT(3);
    return ans;
}

/* n draws number first..first+n-1 of (stream, step) under seed: kind 0
 * normals one at a time (svir_normal), 1 uniforms (svir_uniform), 2 normals
 * in bulk (svir_normal_fill, which must give the same numbers as kind 0),
 * 3 normals computed on the CUDA device (the same numbers again), 4 the
 * networks' fast normals (svir_zig_fill: block `first` of (stream, step)). */
static SEXP draws(SEXP seed, SEXP stream, SEXP step, SEXP first, SEXP n, int kind)
{
    const R_xlen_t nn = as_count(n, "n");
    SEXP s = PROTECT(as_real(seed, 1, "seed"));
    SEXP st = PROTECT(as_real(stream, 1, "stream"));
    SEXP sp = PROTECT(as_real(step, 1, "step"));
    SEXP fi = PROTECT(as_real(first, 1, "first"));
    uint32_t key[2];
    svir_philox_key(as_u64(s, 0, SEEDMAX, "seed"), key);
    const uint64_t strm = as_u64(st, 0, U32MAX, "stream");
    const uint64_t stp = as_u64(sp, 0, U32MAX, "step");
    const uint64_t f0 = as_u64(fi, 0, U32MAX, "first");
    SEXP ans = PROTECT(Rf_allocVector(REALSXP, nn));
    double *x = REAL(ans);
    if (kind == 3) {
#ifdef SVIR_HAVE_CUDA
        char err[512];
        const uint64_t sd = (uint64_t)key[0] | ((uint64_t)key[1] << 32);
        if (svir_cuda_normals_host(sd, strm, stp, f0, (ptrdiff_t)nn, x, err, sizeof err))
            Rf_error("svir: %s", err);
#else
        Rf_error("svir was built without CUDA");
#endif
    } else if (kind == 4) {
        svir_zig z;
        svir_zig_init(&z);
        svir_zig_fill(&z, key, strm, stp, f0, (ptrdiff_t)nn, x);
    } else if (kind == 2) {
        svir_normal_fill(key, strm, stp, f0, (ptrdiff_t)nn, x);
    } else {
        for (R_xlen_t i = 0; i < nn; i++)
            x[i] = kind == 0 ? svir_normal(key, strm, stp, f0 + (uint64_t)i)
                             : svir_uniform(key, strm, stp, f0 + (uint64_t)i);
    }
    UNPROTECT(5);
    return ans;
}

SEXP svir_normals_r(SEXP seed, SEXP stream, SEXP step, SEXP n)
{
    SEXP zero = PROTECT(Rf_ScalarReal(0));
    SEXP ans = draws(seed, stream, step, zero, n, 0);
    UNPROTECT(1);
    return ans;
}

SEXP svir_uniforms_r(SEXP seed, SEXP stream, SEXP step, SEXP n)
{
    SEXP zero = PROTECT(Rf_ScalarReal(0));
    SEXP ans = draws(seed, stream, step, zero, n, 1);
    UNPROTECT(1);
    return ans;
}

SEXP svir_normal_fill_r(SEXP seed, SEXP stream, SEXP step, SEXP first, SEXP n)
{
    return draws(seed, stream, step, first, n, 2);
}

SEXP svir_zig_fill_r(SEXP seed, SEXP stream, SEXP step, SEXP block, SEXP n)
{
    return draws(seed, stream, step, block, n, 4);
}

SEXP svir_cuda_normals_r(SEXP seed, SEXP stream, SEXP step, SEXP first, SEXP n)
{
    return draws(seed, stream, step, first, n, 3);
}

/* svir_box_muller(u1[j], u2[j]) for each j, one pair at a time or through
 * svir_box_muller_batch, for tests of the transform at chosen inputs */
SEXP svir_box_muller_r(SEXP u1, SEXP u2, SEXP batch)
{
    if (!Rf_isReal(u1) || !Rf_isReal(u2) || XLENGTH(u1) != XLENGTH(u2) || XLENGTH(u1) < 1 ||
        XLENGTH(u1) > SVIR_NORMAL_BATCH)
        Rf_error("u1 and u2 must be double vectors of the same length, 1 to %d",
                 SVIR_NORMAL_BATCH);
    const int n = (int)XLENGTH(u1), bat = Rf_asLogical(batch) == TRUE;
    double x[SVIR_NORMAL_BATCH], y[SVIR_NORMAL_BATCH];
    for (int j = 0; j < n; j++) {
        x[j] = REAL(u1)[j];
        y[j] = REAL(u2)[j];
        if (!(x[j] > 0.0 && x[j] < 1.0) || !(y[j] >= 0.0 && y[j] <= 1.0))
            Rf_error("u1 must be in (0, 1) and u2 in [0, 1]");
    }
    SEXP ans = PROTECT(Rf_allocVector(REALSXP, 2 * (R_xlen_t)n));
    if (bat) {
        svir_box_muller_batch(x, y, n, REAL(ans));
    } else {
        for (int j = 0; j < n; j++) svir_box_muller(x[j], y[j], REAL(ans) + 2 * j, REAL(ans) + 2 * j + 1);
    }
    UNPROTECT(1);
    return ans;
}
