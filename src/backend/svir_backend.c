/* Backends and the choice of one (backend/svir_backend.h). */
#include "backend/svir_backend.h"

#include <stdio.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

static int cpu_available(char *detail, size_t len)
{
#ifdef _OPENMP
    const int nt = omp_get_max_threads();
    snprintf(detail, len, "OpenMP, %d thread%s", nt, nt == 1 ? "" : "s");
#else
    snprintf(detail, len, "single-threaded (built without OpenMP)");
#endif
    return 1;
}

static int cuda_available(char *detail, size_t len)
{
#ifdef SVIR_HAVE_CUDA
    if (len > 0) detail[0] = '\0';
    return svir_cuda_query(detail, len);
#else
    snprintf(detail, len, "svir was built without CUDA (toolkit not found at "
             "install time, or SVIR_CUDA=no)");
    return 0;
#endif
}

const svir_backend svir_backend_table[SVIR_N_BACKENDS] = {
    {"cpu", cpu_available},
    {"cuda", cuda_available},
};

int svir_backend_find(const char *name)
{
    for (int i = 0; i < SVIR_N_BACKENDS; i++)
        if (strcmp(svir_backend_table[i].name, name) == 0) return i;
    return -1;
}

static const svir_impl *find_impl(const svir_model_def *def, int method, int backend,
                                  int minibatch)
{
    for (int k = 0; k < def->nimpls; k++) {
        const svir_impl *im = &def->impls[k];
        if (im->method == method && im->backend == backend && (minibatch ? im->mini : im->full))
            return im;
    }
    return NULL;
}

int svir_backend_choose(const svir_model_def *def, int method, int minibatch, int requested,
                        double size, const char *cpu_only, svir_choice *ch)
{
    memset(ch, 0, sizeof *ch);
    (void)size; /* no size rule has been measured yet (bench/README.md) */
    const char *mname = svir_code_name(svir_core_code_table("method"), method);
    const svir_impl *cpu = find_impl(def, method, SVIR_BACKEND_CPU, minibatch);
    if (!cpu && !find_impl(def, method, SVIR_BACKEND_CUDA, minibatch)) {
        ch->refuse = SVIR_REFUSE_NO_METHOD;
        snprintf(ch->detail, sizeof ch->detail, "%s has no method \"%s\"%s", def->label, mname,
                 minibatch ? " with minibatches" : "");
        return 1;
    }
    if (requested == SVIR_BACKEND_CUDA) {
        const svir_impl *im = find_impl(def, method, SVIR_BACKEND_CUDA, minibatch);
        if (!im) {
            ch->refuse = SVIR_REFUSE_CPU_ONLY;
            if (minibatch && find_impl(def, method, SVIR_BACKEND_CUDA, 0))
                snprintf(ch->detail, sizeof ch->detail, "Minibatches of %s fits run", def->label);
            else
                snprintf(ch->detail, sizeof ch->detail, "method = \"%s\" for %s runs",
                         method == SVIR_METHOD_VEM ? "svi" : mname, def->label);
            return 1;
        }
        if (cpu_only) {
            ch->refuse = SVIR_REFUSE_CPU_ONLY;
            snprintf(ch->detail, sizeof ch->detail, "%s", cpu_only);
            return 1;
        }
        char detail[300] = "";
        if (!svir_backend_table[SVIR_BACKEND_CUDA].available(detail, sizeof detail)) {
            ch->refuse = SVIR_REFUSE_NO_DEVICE;
            snprintf(ch->detail, sizeof ch->detail, "%s", detail);
            return 1;
        }
        ch->impl = im;
        ch->backend = SVIR_BACKEND_CUDA;
        snprintf(ch->reason, sizeof ch->reason, "backend = \"cuda\" was requested (%s)", detail);
        return 0;
    }
    ch->impl = cpu;
    ch->backend = SVIR_BACKEND_CPU;
    if (!cpu) {
        ch->refuse = SVIR_REFUSE_NO_METHOD;
        snprintf(ch->detail, sizeof ch->detail, "%s runs \"%s\" on the GPU only", def->label, mname);
        return 1;
    }
    if (requested == SVIR_BACKEND_CPU) {
        snprintf(ch->reason, sizeof ch->reason, "backend = \"cpu\" was requested");
        return 0;
    }
    char detail[300] = "";
    if (svir_backend_table[SVIR_BACKEND_CUDA].available(detail, sizeof detail))
        snprintf(ch->reason, sizeof ch->reason,
                 "a CUDA device was found (%s), but \"auto\" has no measured rule yet for when "
                 "it is faster, so it fits on the CPU", detail);
    else
        snprintf(ch->reason, sizeof ch->reason, "no usable CUDA device: %s", detail);
    return 0;
}
