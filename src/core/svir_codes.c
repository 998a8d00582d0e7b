/* The core code lists as data (core/svir_codes.h). */
#include "core/svir_codes.h"

#include <string.h>

SVIR_CODE_TABLE(stop, SVIR_STOP_CODES)
SVIR_CODE_TABLE(guide, SVIR_GUIDE_CODES)
SVIR_CODE_TABLE(lr, SVIR_LR_CODES)
SVIR_CODE_TABLE(method, SVIR_METHOD_CODES)
SVIR_CODE_TABLE(backend, SVIR_BACKEND_CODES)
SVIR_CODE_TABLE(phase, SVIR_PHASE_CODES)
SVIR_CODE_TABLE(rule, SVIR_RULE_CODES)

const svir_code_table svir_core_codes[] = {
    SVIR_CODE_ENTRY("stop", stop),       SVIR_CODE_ENTRY("guide", guide),
    SVIR_CODE_ENTRY("lr", lr),           SVIR_CODE_ENTRY("method", method),
    SVIR_CODE_ENTRY("backend", backend), SVIR_CODE_ENTRY("phase", phase),
    SVIR_CODE_ENTRY("rule", rule),
};
const int svir_n_core_codes = (int)(sizeof svir_core_codes / sizeof svir_core_codes[0]);

const char *svir_code_name(const svir_code_table *t, int v)
{
    for (int k = 0; t && k < t->n; k++)
        if (t->values[k] == v) return t->names[k];
    return "?";
}

int svir_code_value(const svir_code_table *t, const char *s)
{
    for (int k = 0; t && s && k < t->n; k++)
        if (strcmp(t->names[k], s) == 0) return t->values[k];
    return -1;
}

const svir_code_table *svir_core_code_table(const char *list)
{
    for (int k = 0; k < svir_n_core_codes; k++)
        if (strcmp(svir_core_codes[k].list, list) == 0) return &svir_core_codes[k];
    return NULL;
}
