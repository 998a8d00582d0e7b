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

const svir_impl *svir_backend_impl(const svir_model_def *def, int method, int backend,
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
    const char *mname = svir_code_name(svir_core_code_table("method"), method);
    const svir_impl *cpu = svir_backend_impl(def, method, SVIR_BACKEND_CPU, minibatch);
    if (!cpu && !svir_backend_impl(def, method, SVIR_BACKEND_CUDA, minibatch)) {
        ch->refuse = SVIR_REFUSE_NO_METHOD;
        snprintf(ch->detail, sizeof ch->detail, "%s has no method \"%s\"%s", def->label, mname,
                 minibatch ? " with minibatches" : "");
        return 1;
    }
    if (requested == SVIR_BACKEND_CUDA) {
        const svir_impl *im = svir_backend_impl(def, method, SVIR_BACKEND_CUDA, minibatch);
        if (!im) {
            ch->refuse = SVIR_REFUSE_CPU_ONLY;
            if (minibatch && svir_backend_impl(def, method, SVIR_BACKEND_CUDA, 0))
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
    const int dev = svir_backend_table[SVIR_BACKEND_CUDA].available(detail, sizeof detail);
    svir_backend_auto(ch, dev, detail, svir_backend_impl(def, method, SVIR_BACKEND_CUDA, minibatch),
                      cpu_only, size, def->auto_cuda_min);
    return 0;
}

void svir_backend_auto(svir_choice *ch, int device, const char *detail, const svir_impl *cuda,
                       const char *cpu_only, double size, double min_size)
{
    if (!device) {
        snprintf(ch->reason, sizeof ch->reason, "no usable CUDA device: %s", detail);
        return;
    }
    if (!cuda || cpu_only) {
        snprintf(ch->reason, sizeof ch->reason,
                 "a CUDA device was found (%s), but %s on the CPU only, so it fits on the CPU",
                 detail, cpu_only ? cpu_only : "this method runs");
        return;
    }
    if (!(min_size > 0 && size >= min_size)) {
        if (min_size > 0 && size > 0)
            snprintf(ch->reason, sizeof ch->reason,
                     "a CUDA device was found (%s), but a step's work is only %.0f (observations; "
                     "the device is chosen from %.0f, where its steps were 4x faster than 16 CPU "
                     "threads), so it fits on the CPU", detail, size, min_size);
        else
            snprintf(ch->reason, sizeof ch->reason,
                     "a CUDA device was found (%s), but \"auto\" has no measured rule for this "
                     "model, so it fits on the CPU", detail);
        return;
    }
    ch->impl = cuda;
    ch->backend = SVIR_BACKEND_CUDA;
    snprintf(ch->reason, sizeof ch->reason,
             "a CUDA device was found (%s) and a step's work is %.0f (observations), at least "
             "%.0f, where the device's steps were 4x to 43x faster than 16 CPU threads", detail,
             size, min_size);
}
