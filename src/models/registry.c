/* The models svir has: one line each. Adding a model is a folder under
 * models/ with its table (svir_model_def) and a line here; see
 * dev/ARCHITECTURE.md. */
#include <string.h>

#include "infer/svir_model.h"
#include "models/glmm/glmm_svi.h"
#include "models/pln/pln_model.h"
#include "models/mixture/mix_model.h"
#include "models/bnn/bnn_model.h"

const svir_model_def *const svir_models[] = {
    &svir_glmm_def,
    &svir_pln_def,
    &svir_mix_def,
    &svir_bnn_def,
};
const int svir_n_models = (int)(sizeof svir_models / sizeof svir_models[0]);

const svir_model_def *svir_model_find(const char *name)
{
    for (int k = 0; k < svir_n_models; k++)
        if (strcmp(svir_models[k]->name, name) == 0) return svir_models[k];
    return NULL;
}
