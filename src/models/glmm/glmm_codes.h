/* The GLMM's codes, defined once (as core/svir_codes.h): families, links,
 * prior types, and the family x link pairs the engine has. R's copies in
 * R/enum.R are generated from this file (tools/enum.R). */
#ifndef SVIR_GLMM_CODES_H
#define SVIR_GLMM_CODES_H

#include "core/svir_codes.h"

#define SVIR_FAMILY_CODES(X)                                                                   \
    X(GAUSSIAN, 0, "gaussian")                                                                 \
    X(BINOMIAL, 1, "binomial")                                                                 \
    X(POISSON, 2, "poisson")                                                                   \
    X(NEGBIN, 3, "negbin")

#define SVIR_LINK_CODES(X)                                                                     \
    X(IDENTITY, 0, "identity")                                                                 \
    X(LOGIT, 1, "logit")                                                                       \
    X(LOG, 2, "log")                                                                           \
    X(PROBIT, 3, "probit")                                                                     \
    X(CLOGLOG, 4, "cloglog")

#define SVIR_PRIOR_CODES(X)                                                                    \
    X(FLAT, 0, "flat")                                                                         \
    X(NORMAL, 1, "normal")                                                                     \
    X(STUDENT_T, 2, "student_t")                                                               \
    X(EXPONENTIAL, 3, "exponential")                                                           \
    X(LKJ, 4, "lkj")

#define SVIR_FAMILY_E(N, V, R) SVIR_CODE_ENUM_(SVIR_, N, V, R)
#define SVIR_LINK_E(N, V, R) SVIR_CODE_ENUM_(SVIR_LINK_, N, V, R)
#define SVIR_PRIOR_E(N, V, R) SVIR_CODE_ENUM_(SVIR_PRIOR_, N, V, R)
enum { SVIR_FAMILY_CODES(SVIR_FAMILY_E) SVIR_N_FAMILIES };
enum { SVIR_LINK_CODES(SVIR_LINK_E) SVIR_N_LINKS };
enum { SVIR_PRIOR_CODES(SVIR_PRIOR_E) SVIR_N_PRIORS };

/* The family x link pairs the engine has, the one list: M(ARG, family,
 * link) for each. Every hot loop is specialised once per pair, with both
 * as compile-time constants (SVIR_FAMILY_DISPATCH, and the CUDA kernels'
 * templates). */
#define SVIR_GLMM_PAIRS(M, ARG)                                                                \
    M(ARG, SVIR_GAUSSIAN, SVIR_LINK_IDENTITY)                                                  \
    M(ARG, SVIR_BINOMIAL, SVIR_LINK_LOGIT)                                                     \
    M(ARG, SVIR_BINOMIAL, SVIR_LINK_PROBIT)                                                    \
    M(ARG, SVIR_BINOMIAL, SVIR_LINK_CLOGLOG)                                                   \
    M(ARG, SVIR_POISSON, SVIR_LINK_LOG)                                                        \
    M(ARG, SVIR_NEGBIN, SVIR_LINK_LOG)

/* the pairs that take zero inflation (ziformula): the count families */
#define SVIR_GLMM_ZI_PAIRS(M, ARG)                                                             \
    M(ARG, SVIR_POISSON, SVIR_LINK_LOG)                                                        \
    M(ARG, SVIR_NEGBIN, SVIR_LINK_LOG)

#define SVIR_PAIR_KEY(F, L) ((F) * 8 + (L))
#define SVIR_PAIR_CASE_(CALL, F, L)                                                            \
    case SVIR_PAIR_KEY(F, L):                                                                  \
        CALL(F, L);                                                                            \
        break;
/* Runs CALL(family, link) with both as compile-time constants, for family
 * and link fam, lnk (a pair of the list: svir_glmm_pair_ok). */
#define SVIR_PAIR_DISPATCH(fam, lnk, CALL)                                                     \
    switch (SVIR_PAIR_KEY(fam, lnk)) {                                                         \
        SVIR_GLMM_PAIRS(SVIR_PAIR_CASE_, CALL)                                                 \
    default:                                                                                   \
        break;                                                                                 \
    }
#define SVIR_FAMILY_DISPATCH(m, CALL) SVIR_PAIR_DISPATCH((m)->family, (m)->link, CALL)

#define SVIR_PAIR_OK_(ARG, F, L) || SVIR_PAIR_KEY(F, L) == (ARG)
/* 1 when (family, link) is a pair of the list, of the zero-inflated list */
#define svir_glmm_pair_ok(fam, lnk) (0 SVIR_GLMM_PAIRS(SVIR_PAIR_OK_, SVIR_PAIR_KEY(fam, lnk)))
#define svir_glmm_zi_ok(fam, lnk) (0 SVIR_GLMM_ZI_PAIRS(SVIR_PAIR_OK_, SVIR_PAIR_KEY(fam, lnk)))

/* Runs CALL(family, link, ZI) with all three as compile-time constants, for
 * the model m: ZI = 1 for a zero-inflated model (a pair of
 * SVIR_GLMM_ZI_PAIRS), else 0. */
#define SVIR_ZI_KEY(F, L, Z) (SVIR_PAIR_KEY(F, L) * 2 + (Z))
#define SVIR_PAIR_CASE0_(CALL, F, L)                                                           \
    case SVIR_ZI_KEY(F, L, 0):                                                                 \
        CALL(F, L, 0);                                                                         \
        break;
#define SVIR_PAIR_CASE1_(CALL, F, L)                                                           \
    case SVIR_ZI_KEY(F, L, 1):                                                                 \
        CALL(F, L, 1);                                                                         \
        break;
#define SVIR_FAMILY_DISPATCH_ZI(m, CALL)                                                       \
    switch (SVIR_ZI_KEY((m)->family, (m)->link, (m)->zi ? 1 : 0)) {                            \
        SVIR_GLMM_PAIRS(SVIR_PAIR_CASE0_, CALL)                                                \
        SVIR_GLMM_ZI_PAIRS(SVIR_PAIR_CASE1_, CALL)                                             \
    default:                                                                                   \
        break;                                                                                 \
    }

#endif
