/* The package-wide codes, defined once: each list is an X-macro of (C
 * name, value, R name). C gets enums from them; R's copies (R/enum.R) are
 * generated from these files by tools/enum.R, and a test compares R/enum.R
 * with what the compiled code reports (svir_codes_r). A model's own codes
 * live beside it (models/<name>/<name>_codes.h), in the same form. */
#ifndef SVIR_CODES_H
#define SVIR_CODES_H

/* why a fit stopped */
#define SVIR_STOP_CODES(X)                                                                     \
    X(CONVERGED, 0, "converged")                                                               \
    X(MAX_STEPS, 1, "max_steps")                                                               \
    X(DIVERGED, 2, "diverged")                                                                 \
    X(INTERRUPTED, 3, "interrupted")                                                           \
    X(EARLY_STOP, 4, "early_stop")

/* the Gaussian guide over the global block */
#define SVIR_GUIDE_CODES(X)                                                                    \
    X(MEANFIELD, 0, "meanfield")                                                               \
    X(FULLRANK, 1, "fullrank")

/* Adam's step-size schedule */
#define SVIR_LR_CODES(X)                                                                       \
    X(CONSTANT, 0, "constant")                                                                 \
    X(PLATEAU, 1, "plateau")                                                                   \
    X(DECAY, 2, "decay")                                                                       \
    X(ONECYCLE, 3, "onecycle")

/* the inference drivers (infer/) */
#define SVIR_METHOD_CODES(X)                                                                   \
    X(SVI, 0, "svi")                                                                           \
    X(QEM, 1, "qem")                                                                           \
    X(VEM, 2, "vem")

/* where a fit runs (backend/) */
#define SVIR_BACKEND_CODES(X)                                                                  \
    X(CPU, 0, "cpu")                                                                           \
    X(CUDA, 1, "cuda")

/* the phases of a step, for the fit's time split */
#define SVIR_PHASE_CODES(X)                                                                    \
    X(DRAW, 0, "draw")                                                                         \
    X(OBS, 1, "observations")                                                                  \
    X(BACKWARD, 2, "backward")                                                                 \
    X(UPDATE, 3, "update")                                                                     \
    X(POSTERIOR, 4, "posterior_draws")

/* the stopping rules of core/svir_loop.h */
#define SVIR_RULE_CODES(X)                                                                     \
    X(WINDOW, 0, "window")                                                                     \
    X(ROLLING, 1, "rolling")

#define SVIR_CODE_ENUM_(PFX, NAME, VAL, RNAME) PFX##NAME = VAL,
#define SVIR_STOP_E(N, V, R) SVIR_CODE_ENUM_(SVIR_STOP_, N, V, R)
#define SVIR_GUIDE_E(N, V, R) SVIR_CODE_ENUM_(SVIR_GUIDE_, N, V, R)
#define SVIR_LR_E(N, V, R) SVIR_CODE_ENUM_(SVIR_LR_, N, V, R)
#define SVIR_METHOD_E(N, V, R) SVIR_CODE_ENUM_(SVIR_METHOD_, N, V, R)
#define SVIR_BACKEND_E(N, V, R) SVIR_CODE_ENUM_(SVIR_BACKEND_, N, V, R)
#define SVIR_PHASE_E(N, V, R) SVIR_CODE_ENUM_(SVIR_PHASE_, N, V, R)
#define SVIR_RULE_E(N, V, R) SVIR_CODE_ENUM_(SVIR_RULE_, N, V, R)
enum { SVIR_STOP_CODES(SVIR_STOP_E) SVIR_N_STOPS };
enum { SVIR_GUIDE_CODES(SVIR_GUIDE_E) SVIR_N_GUIDES };
enum { SVIR_LR_CODES(SVIR_LR_E) SVIR_N_LR };
enum { SVIR_METHOD_CODES(SVIR_METHOD_E) SVIR_N_METHODS };
enum { SVIR_BACKEND_CODES(SVIR_BACKEND_E) SVIR_N_BACKENDS };
enum { SVIR_PHASE_CODES(SVIR_PHASE_E) SVIR_N_PHASES };
enum { SVIR_RULE_CODES(SVIR_RULE_E) SVIR_N_RULES };

#ifdef __cplusplus
extern "C" {
#endif

/* One list of codes as data: its name in R/enum.R, its R names and values. */
typedef struct {
    const char *list;
    int n;
    const char *const *names;
    const int *values;
} svir_code_table;

/* the lists above, as "stop", "guide", "lr", "method", "backend", "phase",
 * "rule" */
extern const svir_code_table svir_core_codes[];
extern const int svir_n_core_codes;

/* The R name of code v in table t, or "?"; the code of R name s, or -1. */
const char *svir_code_name(const svir_code_table *t, int v);
int svir_code_value(const svir_code_table *t, const char *s);
/* the core table called `list`, or NULL */
const svir_code_table *svir_core_code_table(const char *list);

/* Builds a static svir_code_table called TNAME from an X-macro LIST. */
#define SVIR_CODE_NAME_(N, V, R) R,
#define SVIR_CODE_VALUE_(N, V, R) V,
#define SVIR_CODE_TABLE(TNAME, LIST)                                                           \
    static const char *const TNAME##_names_[] = {LIST(SVIR_CODE_NAME_)};                       \
    static const int TNAME##_values_[] = {LIST(SVIR_CODE_VALUE_)};
#define SVIR_CODE_ENTRY(RLIST, TNAME)                                                          \
    {RLIST, (int)(sizeof TNAME##_values_ / sizeof(int)), TNAME##_names_, TNAME##_values_}

#ifdef __cplusplus
}
#endif

#endif
