/* Backend table (no R API). */
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
    if (len > 0)
        detail[0] = '\0';
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
        if (strcmp(svir_backend_table[i].name, name) == 0)
            return i;
    return -1;
}
