/* Backend table: which engines this build has and whether each can run here.
 * Plain C, no R API. The fit and the user-facing svir_backends() both read it,
 * so "why did this run on the CPU" always has the same answer. */
#ifndef SVIR_BACKEND_H
#define SVIR_BACKEND_H

#include <stddef.h>

typedef struct {
    const char *name;
    /* 1 if the backend can run here, else 0; writes a one-line,
     * NUL-terminated explanation (device, threads, or why not) to detail. */
    int (*available)(char *detail, size_t len);
} svir_backend;

enum { SVIR_BACKEND_CPU = 0, SVIR_BACKEND_CUDA = 1, SVIR_N_BACKENDS = 2 };

/* The table, indexed by SVIR_BACKEND_*; read-only. */
extern const svir_backend svir_backend_table[SVIR_N_BACKENDS];

/* Index of the backend called name, or -1. */
int svir_backend_find(const char *name);

#ifdef SVIR_HAVE_CUDA
/* src/cuda/svir_cuda_query.cu: queries the CUDA runtime/driver. Never fails
 * hard: with no driver or no device it returns 0 and says so in buf. */
#ifdef __cplusplus
extern "C"
#endif
int svir_cuda_query(char *buf, size_t len);
#endif

#endif
