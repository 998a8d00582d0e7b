/* The CPU emulation's stand-in for the part of cuBLAS svir uses (issue 19;
 * included instead of <cublas_v2.h> where SVIR_CUDA_EMU is defined, after
 * svir_cuda_emu.cuh): a handle, its stream, and cublasDgemm, column-major
 * C = alpha op(A) op(B) + beta C, as a plain triple loop over the emulated
 * device memory (each entry's sum over k in order). Like the emulated
 * runtime's copies, it checks that every matrix lies inside one device
 * allocation (its last column's last entry included) and that each
 * leading dimension covers its rows, and fails with
 * CUBLAS_STATUS_INVALID_VALUE (reported on stderr) otherwise; a null or
 * destroyed handle gives CUBLAS_STATUS_NOT_INITIALIZED. beta = 0 does not
 * read C, as in cuBLAS. Not modelled: cuBLAS's own order of the sums
 * (blocked, architecture-dependent), tensor cores, workspaces. */
#ifndef SVIR_CUBLAS_EMU_CUH
#define SVIR_CUBLAS_EMU_CUH

#include <cstdio>
#include <set>

typedef enum {
    CUBLAS_STATUS_SUCCESS = 0,
    CUBLAS_STATUS_NOT_INITIALIZED = 1,
    CUBLAS_STATUS_ALLOC_FAILED = 3,
    CUBLAS_STATUS_INVALID_VALUE = 7,
    CUBLAS_STATUS_ARCH_MISMATCH = 8,
    CUBLAS_STATUS_MAPPING_ERROR = 11,
    CUBLAS_STATUS_EXECUTION_FAILED = 13,
    CUBLAS_STATUS_INTERNAL_ERROR = 14,
    CUBLAS_STATUS_NOT_SUPPORTED = 15,
    CUBLAS_STATUS_LICENSE_ERROR = 16
} cublasStatus_t;

typedef enum { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1, CUBLAS_OP_C = 2 } cublasOperation_t;

struct cublasContext {
    cudaStream_t stream;
};
typedef cublasContext *cublasHandle_t;

namespace svir_emu {
inline std::set<cublasHandle_t> cublas_handles;

inline bool cublas_live(cublasHandle_t h)
{
    return h && cublas_handles.count(h) > 0;
}

/* a column-major rows x cols matrix at p with leading dimension ld lies in
 * one allocation */
inline bool cublas_mat_ok(const double *p, int rows, int cols, int ld)
{
    if (rows < 0 || cols < 0 || ld < (rows > 1 ? rows : 1)) return false;
    if (rows == 0 || cols == 0) return true;
    const size_t last = (size_t)(cols - 1) * (size_t)ld + (size_t)rows;
    return is_dev(p, sizeof(double) * last);
}
} /* namespace svir_emu */

static inline const char *cublasGetStatusName(cublasStatus_t s)
{
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    default: return "CUBLAS_STATUS_INTERNAL_ERROR";
    }
}

static inline const char *cublasGetStatusString(cublasStatus_t s)
{
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "the library was not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED: return "the resource allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE: return "an invalid numeric value was used as an argument";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "the GPU program failed to execute";
    default: return "an internal operation failed";
    }
}

static inline cublasStatus_t cublasCreate(cublasHandle_t *h)
{
    *h = new cublasContext{nullptr};
    svir_emu::cublas_handles.insert(*h);
    return CUBLAS_STATUS_SUCCESS;
}

static inline cublasStatus_t cublasDestroy(cublasHandle_t h)
{
    if (!svir_emu::cublas_live(h)) return CUBLAS_STATUS_NOT_INITIALIZED;
    svir_emu::cublas_handles.erase(h);
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}

static inline cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s)
{
    if (!svir_emu::cublas_live(h)) return CUBLAS_STATUS_NOT_INITIALIZED;
    h->stream = s;
    return CUBLAS_STATUS_SUCCESS;
}

static inline cublasStatus_t cublasDgemm(cublasHandle_t h, cublasOperation_t ta,
                                         cublasOperation_t tb, int m, int n, int k,
                                         const double *alpha, const double *A, int lda,
                                         const double *B, int ldb, const double *beta, double *C,
                                         int ldc)
{
    if (!svir_emu::cublas_live(h)) return CUBLAS_STATUS_NOT_INITIALIZED;
    const bool at = ta != CUBLAS_OP_N, bt = tb != CUBLAS_OP_N;
    /* the arrays' own shapes: A is m x k (k x m transposed), B k x n (n x k) */
    const bool ok = m >= 0 && n >= 0 && k >= 0 && alpha && beta &&
                    (k == 0 || m == 0 || svir_emu::cublas_mat_ok(A, at ? k : m, at ? m : k, lda)) &&
                    (k == 0 || n == 0 || svir_emu::cublas_mat_ok(B, bt ? n : k, bt ? k : n, ldb)) &&
                    svir_emu::cublas_mat_ok(C, m, n, ldc);
    if (!ok) {
        if (!svir_emu::quiet)
            std::fprintf(stderr, "svir emulation: cublasDgemm(%c, %c, m = %d, n = %d, k = %d, lda = %d, "
                                 "ldb = %d, ldc = %d): a matrix outside every device allocation, or a "
                                 "leading dimension below its rows\n",
                         at ? 'T' : 'N', bt ? 'T' : 'N', m, n, k, lda, ldb, ldc);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    const double a = *alpha, b = *beta;
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++) {
            double s = 0.0;
            for (int q = 0; q < k; q++) {
                const double x = at ? A[q + (ptrdiff_t)i * lda] : A[i + (ptrdiff_t)q * lda];
                const double y = bt ? B[j + (ptrdiff_t)q * ldb] : B[q + (ptrdiff_t)j * ldb];
                s += x * y;
            }
            double *c = C + i + (ptrdiff_t)j * ldc;
            *c = b == 0.0 ? a * s : a * s + b * *c;
        }
    return CUBLAS_STATUS_SUCCESS;
}

#endif
