/* Checks of the CPU emulation itself (src/cuda/svir_cuda_emu.cuh; built
 * only in gpucheck's emu build): what a device does that the emulation
 * must do too, and what the emulation must catch. Each is one check of the
 * tally (gck_result). */
#include "cuda/svir_cuda_common.cuh"
#include "cuda/svir_cublas_emu.cuh"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

extern "C" {
extern int gck_passed, gck_failed;
}

static const char *result(bool ok)
{
    if (ok)
        gck_passed++;
    else
        gck_failed++;
    return ok ? "ok" : "FAILED";
}

/* a block's sum by warp shuffles, then across warps through shared memory
 * (the pattern HIP-CPU gets wrong above 64 threads) */
__global__ void k_warp_sum(const double *x, double *out)
{
    SVIR_SHARED(double, sh, [32]);
    const int t = threadIdx.x, lane = t % 32, w = t / 32;
    double v = x[blockIdx.x * blockDim.x + t];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    if (lane == 0) sh[w] = v;
    __syncthreads();
    if (t == 0) {
        double s = 0.0;
        for (int k = 0; k < (int)blockDim.x / 32; k++) s += sh[k];
        out[blockIdx.x] = s;
    }
}

/* a warp operation in some warps only: the odd warps sum, the others not */
__global__ void k_some_warps(double *out)
{
    const int t = threadIdx.x, w = t / 32;
    double v = t;
    if (w % 2 == 1) {
        for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
        if (t % 32 == 0) out[w] = v;
    } else if (t % 32 == 0) {
        out[w] = -1.0;
    }
}

/* a barrier orders writes before reads: each thread reads its mirror's */
__global__ void k_mirror(int *out, int sync)
{
    SVIR_SHARED(int, sh, [256]);
    const int t = threadIdx.x, n = blockDim.x;
    sh[t] = 3 * t + 1;
    if (sync) __syncthreads();
    out[t] = sh[n - 1 - t];
}

__global__ void k_ballot(unsigned *out)
{
    const int t = threadIdx.x;
    const unsigned b = __ballot_sync(0xffffffffu, t % 3 == 0);
    if (t % 32 == 0) out[t / 32] = b;
}

/* lane 31 exits before the shuffle its mask names it in */
__global__ void k_exited_lane(double *out)
{
    const int t = threadIdx.x;
    if (t == 31) return;
    out[t] = __shfl_down_sync(0xffffffffu, (double)t, 1);
}

__global__ void k_noop(int *out) { out[threadIdx.x] = 1; }

/* every thread but 0 writes its slot; all read slot 0, which nobody wrote */
__global__ void k_uninit(double *out)
{
    SVIR_SHARED(double, sh, [64]);
    const int t = threadIdx.x;
    if (t > 0) sh[t] = t;
    __syncthreads();
    out[t] = sh[0];
}

/* every thread writes the same value to one shared slot: a race whose values
 * coincide, which only the per-byte tracking finds */
__global__ void k_same_value(double *out)
{
    SVIR_SHARED(double, sh, [1]);
    sh[0] = 1.0;
    __syncthreads();
    out[threadIdx.x] = sh[0];
}

/* one element past the end */
__global__ void k_past_end(double *x, int n) { x[n + threadIdx.x] = 1.0; }

/* one element past a shared array's end (i = 64) */
__global__ void k_shared_past_end(double *out, int i)
{
    SVIR_SHARED(double, sh, [64]);
    sh[i] = 1.0;
    out[threadIdx.x] = sh[0];
}

/* runs f in a child process; true when the child was killed by SIGABRT (the
 * emulation's report of an error a device would hang or fault on), or, with
 * any_failure, when it failed in any way (AddressSanitizer exits with 1) */
template <typename F> static bool aborts(F f, bool any_failure = false)
{
    fflush(stdout);
    const pid_t pid = fork();
    if (pid == 0) {
        /* the child's report goes to /dev/null: the check says what it is */
        if (!freopen("/dev/null", "w", stderr)) _exit(3);
        f();
        _exit(0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    if (any_failure) return WIFSIGNALED(st) || (WIFEXITED(st) && WEXITSTATUS(st) != 0);
    return WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT;
}

extern "C" int gpucheck_emu_selftest(void)
{
    int bad = 0;
    /* 1. shuffles in blocks of 64, 256 and 1024 threads */
    for (int nt : {64, 256, 1024}) {
        const int nb = 3;
        std::vector<double> x((size_t)nb * nt), s((size_t)nb), want((size_t)nb, 0.0);
        for (int i = 0; i < nb * nt; i++) {
            x[(size_t)i] = (double)((i * 7) % 13) - 4.0;
            want[(size_t)(i / nt)] += x[(size_t)i];
        }
        double *dx, *ds;
        cudaMalloc(&dx, sizeof(double) * x.size());
        cudaMalloc(&ds, sizeof(double) * nb);
        cudaMemcpy(dx, x.data(), sizeof(double) * x.size(), cudaMemcpyHostToDevice);
        SVIR_LAUNCH(nb, nt, k_warp_sum)(dx, ds);
        cudaMemcpy(s.data(), ds, sizeof(double) * nb, cudaMemcpyDeviceToHost);
        const bool ok = cudaGetLastError() == cudaSuccess && s == want;
        bad += !ok;
        printf("emulation: block sums by warp shuffles, %4d threads a block: %s\n", nt, result(ok));
        cudaFree(dx);
        cudaFree(ds);
    }
    /* 2. a warp operation in some warps of a block */
    {
        double *d;
        std::vector<double> h(8);
        cudaMalloc(&d, sizeof(double) * 8);
        SVIR_LAUNCH(1, 256, k_some_warps)(d);
        cudaMemcpy(h.data(), d, sizeof(double) * 8, cudaMemcpyDeviceToHost);
        bool ok = true;
        for (int w = 0; w < 8; w++) {
            const double want = w % 2 ? 32.0 * (32 * w) + 496.0 : -1.0;
            ok = ok && h[(size_t)w] == want;
        }
        bad += !ok;
        printf("emulation: shuffles in the odd warps of a block only: %s\n", result(ok));
        cudaFree(d);
    }
    /* 3. __syncthreads orders the block; the race check finds the kernel
     * without it, and not the kernel with it */
    {
        int *d;
        std::vector<int> h(256);
        cudaMalloc(&d, sizeof(int) * 256);
        const int saved = svir_emu::racecheck;
        svir_emu::racecheck = 1;
        const long r0 = svir_emu::races;
        SVIR_LAUNCH(1, 256, k_mirror)(d, 1);
        cudaMemcpy(h.data(), d, sizeof(int) * 256, cudaMemcpyDeviceToHost);
        bool ok = svir_emu::races == r0;
        for (int t = 0; t < 256; t++) ok = ok && h[(size_t)t] == 3 * (255 - t) + 1;
        bad += !ok;
        printf("emulation: __syncthreads() orders a block's writes before its reads: %s\n", result(ok));
        svir_emu::quiet = 1; /* the race is expected: no report on stderr */
        SVIR_LAUNCH(1, 256, k_mirror)(d, 0);
        svir_emu::quiet = 0;
        /* one race (more in the tracking build, which counts each access) */
        ok = svir_emu::races >= r0 + 1;
        svir_emu::races = r0; /* expected: not a failure of the code under test */
        svir_emu::racecheck = saved;
        bad += !ok;
        printf("emulation: the race check finds reads of another thread's write without a "
               "barrier: %s\n", result(ok));
        cudaFree(d);
    }
    /* 4. a ballot over each warp */
    {
        unsigned *d;
        std::vector<unsigned> h(4);
        cudaMalloc(&d, sizeof(unsigned) * 4);
        SVIR_LAUNCH(1, 128, k_ballot)(d);
        cudaMemcpy(h.data(), d, sizeof(unsigned) * 4, cudaMemcpyDeviceToHost);
        bool ok = true;
        for (int w = 0; w < 4; w++) {
            unsigned want = 0;
            for (int l = 0; l < 32; l++)
                if ((32 * w + l) % 3 == 0) want |= 1u << l;
            ok = ok && h[(size_t)w] == want;
        }
        bad += !ok;
        printf("emulation: __ballot_sync over each warp: %s\n", result(ok));
        cudaFree(d);
    }
    /* 5. launches beyond the device's limits fail as on a device, and
     * the error is sticky until read */
    {
        int *d;
        cudaMalloc(&d, sizeof(int) * 2048);
        (void)cudaGetLastError();
        svir_emu::quiet = 1;
        SVIR_LAUNCH(1, 1025, k_noop)(d);
        const cudaError_t e1 = cudaGetLastError(), e1b = cudaGetLastError();
        SVIR_LAUNCH(dim3(1, 70000), 32, k_noop)(d);
        const cudaError_t e2 = cudaGetLastError();
        SVIR_LAUNCH(1, dim3(2, 2, 65), k_noop)(d);
        const cudaError_t e3 = cudaGetLastError();
        svir_emu::quiet = 0;
        const bool ok = e1 == cudaErrorInvalidConfiguration && e1b == cudaSuccess &&
                        e2 == cudaErrorInvalidConfiguration && e3 == cudaErrorInvalidConfiguration;
        bad += !ok;
        printf("emulation: launches past 1024 threads a block, a grid's y past 65535, a block's z "
               "past 64 fail: %s\n", result(ok));
        cudaFree(d);
    }
    /* 6. copies and frees of pointers that are not the device's */
    {
        std::vector<double> hv{0, 1, 2, 3}, h2v(4);
        double *h = hv.data(), *h2 = h2v.data(), *d;
        const size_t sz = sizeof(double) * 4;
        cudaMalloc(&d, sz);
        void *volatile hp = h; /* not freed: cudaFree must refuse it */
        svir_emu::quiet = 1;
        const bool ok = cudaMemcpy(h2, h, sz, cudaMemcpyHostToDevice) == cudaErrorInvalidValue &&
                        cudaMemcpy(d, h, sz + 8, cudaMemcpyHostToDevice) == cudaErrorInvalidValue &&
                        cudaMemcpy(d, h, sz, cudaMemcpyHostToDevice) == cudaSuccess &&
                        cudaFree(hp) == cudaErrorInvalidDevicePointer && cudaFree(d) == cudaSuccess;
        svir_emu::quiet = 0;
        (void)cudaGetLastError();
        bad += !ok;
        printf("emulation: copies to a host pointer named as the device's, past an allocation's "
               "end, and frees of host pointers fail: %s\n", result(ok));
    }
    /* 6b. cuBLAS's stand-in: a product right, and one on a host pointer,
     * past an allocation's end or with a short leading dimension refused */
    {
        std::vector<double> hv{1, 2, 3, 4, 5, 6}, out(4);
        double *a, *c;
        cudaMalloc(&a, sizeof(double) * 6);
        cudaMalloc(&c, sizeof(double) * 4);
        cudaMemcpy(a, hv.data(), sizeof(double) * 6, cudaMemcpyHostToDevice);
        cublasHandle_t hd;
        cublasCreate(&hd);
        const double one = 1.0, zero = 0.0;
        /* C (2 x 2) = A A' with A 2 x 3 column-major: [[35, 44], [44, 56]] */
        bool ok = cublasDgemm(hd, CUBLAS_OP_N, CUBLAS_OP_T, 2, 2, 3, &one, a, 2, a, 2, &zero, c, 2) ==
                  CUBLAS_STATUS_SUCCESS;
        cudaMemcpy(out.data(), c, sizeof(double) * 4, cudaMemcpyDeviceToHost);
        ok = ok && out[0] == 35 && out[1] == 44 && out[2] == 44 && out[3] == 56;
        svir_emu::quiet = 1;
        ok = ok && cublasDgemm(hd, CUBLAS_OP_N, CUBLAS_OP_T, 2, 2, 3, &one, hv.data(), 2, a, 2, &zero, c,
                               2) == CUBLAS_STATUS_INVALID_VALUE &&
             cublasDgemm(hd, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 4, &one, a, 2, a, 2, &zero, c, 2) ==
                 CUBLAS_STATUS_INVALID_VALUE &&
             cublasDgemm(hd, CUBLAS_OP_N, CUBLAS_OP_T, 2, 2, 3, &one, a, 1, a, 2, &zero, c, 2) ==
                 CUBLAS_STATUS_INVALID_VALUE;
        svir_emu::quiet = 0;
        ok = ok && cublasDestroy(hd) == CUBLAS_STATUS_SUCCESS &&
             cublasDgemm(hd, CUBLAS_OP_N, CUBLAS_OP_T, 2, 2, 3, &one, a, 2, a, 2, &zero, c, 2) ==
                 CUBLAS_STATUS_NOT_INITIALIZED;
        cudaFree(a);
        cudaFree(c);
        bad += !ok;
        printf("emulation: cuBLAS's stand-in multiplies, and refuses a host pointer, a matrix past "
               "an allocation's end, a short leading dimension and a destroyed handle: %s\n",
               result(ok));
    }
    /* 7. a warp operation whose mask names an exited lane is reported */
    {
        const bool ok = aborts([] {
            double *d;
            cudaMalloc(&d, sizeof(double) * 32);
            SVIR_LAUNCH(1, 32, k_exited_lane)(d);
        });
        bad += !ok;
        printf("emulation: a shuffle whose mask names an exited lane is reported: %s\n", result(ok));
    }
    /* 7b. shared memory is uninitialised in each block: a read of a slot
     * nobody wrote gives the poison (NaN), and the race check reports it */
    {
        double *d;
        std::vector<double> h(64);
        cudaMalloc(&d, sizeof(double) * 64);
        const int saved = svir_emu::racecheck;
        const long r0 = svir_emu::races;
        svir_emu::racecheck = 0;
        SVIR_LAUNCH(2, 64, k_uninit)(d);
        cudaMemcpy(h.data(), d, sizeof(double) * 64, cudaMemcpyDeviceToHost);
        bool ok = true;
        for (int t = 0; t < 64; t++) ok = ok && std::isnan(h[(size_t)t]);
        svir_emu::racecheck = 1;
        svir_emu::quiet = 1;
        SVIR_LAUNCH(2, 64, k_uninit)(d);
        svir_emu::quiet = 0;
        ok = ok && svir_emu::races >= r0 + 1;
        svir_emu::races = r0;
        svir_emu::racecheck = saved;
        bad += !ok;
        printf("emulation: a read of shared memory nobody wrote gives NaN and is reported: %s\n",
               result(ok));
        cudaFree(d);
    }
#if defined(__SANITIZE_ADDRESS__)
    /* 7c. under AddressSanitizer, a kernel's write past an allocation */
    {
        const bool ok = aborts([] {
            double *d;
            cudaMalloc(&d, sizeof(double) * 100);
            SVIR_LAUNCH(1, 1, k_past_end)(d, 100);
        }, true) && !aborts([] {
            double *d;
            cudaMalloc(&d, sizeof(double) * 100);
            SVIR_LAUNCH(1, 1, k_past_end)(d, 99);
        }, true);
        bad += !ok;
        printf("emulation: AddressSanitizer finds a kernel's write past an allocation: %s\n",
               result(ok));
        /* and, as a control, the same launch inside the array runs clean */
        const bool ok2 = aborts([] {
            double *d;
            cudaMalloc(&d, sizeof(double) * 64);
            SVIR_LAUNCH(1, 1, k_shared_past_end)(d, 64);
        }, true) && !aborts([] {
            double *d;
            cudaMalloc(&d, sizeof(double) * 64);
            SVIR_LAUNCH(1, 1, k_shared_past_end)(d, 63);
        }, true);
        bad += !ok2;
        printf("emulation: AddressSanitizer finds a kernel's write past a shared array: %s\n",
               result(ok2));
    }
#endif
#if defined(__SANITIZE_THREAD__)
    /* 7d. the per-byte tracking: the race whose values coincide, and none in
     * the barrier-ordered mirror */
    {
        double *d;
        int *di;
        cudaMalloc(&d, sizeof(double) * 64);
        cudaMalloc(&di, sizeof(int) * 256);
        const long t0 = svir_emu::tracked_races, r0 = svir_emu::races;
        SVIR_LAUNCH(1, 256, k_mirror)(di, 1);
        const bool clean = svir_emu::tracked_races == t0;
        svir_emu::quiet = 1;
        SVIR_LAUNCH(1, 64, k_same_value)(d);
        svir_emu::quiet = 0;
        const bool ok = clean && svir_emu::tracked_races > t0;
        svir_emu::tracked_races = t0; /* expected: not a failure of the code under test */
        svir_emu::races = r0;
        bad += !ok;
        printf("emulation: per-byte tracking finds threads writing one shared byte between barriers "
               "(values equal), and no race where a barrier orders them: %s\n", result(ok));
        cudaFree(d);
        cudaFree(di);
    }
#endif
    /* 8. the radix sort's stand-in is stable by key */
    {
        const int n = 1000;
        std::vector<unsigned long long> k((size_t)n), ko((size_t)n);
        std::vector<int> v((size_t)n), vo((size_t)n);
        for (int i = 0; i < n; i++) {
            k[(size_t)i] = (unsigned long long)((i * 37) % 11);
            v[(size_t)i] = i;
        }
        unsigned long long *dk, *dko;
        int *dv, *dvo;
        cudaMalloc(&dk, sizeof(unsigned long long) * n);
        cudaMalloc(&dko, sizeof(unsigned long long) * n);
        cudaMalloc(&dv, sizeof(int) * n);
        cudaMalloc(&dvo, sizeof(int) * n);
        cudaMemcpy(dk, k.data(), sizeof(unsigned long long) * n, cudaMemcpyHostToDevice);
        cudaMemcpy(dv, v.data(), sizeof(int) * n, cudaMemcpyHostToDevice);
        size_t bytes = 0;
        cub::DeviceRadixSort::SortPairs(NULL, bytes, dk, dko, dv, dvo, n);
        void *tmp;
        cudaMalloc(&tmp, bytes);
        cub::DeviceRadixSort::SortPairs(tmp, bytes, dk, dko, dv, dvo, n, 0, 4);
        cudaMemcpy(ko.data(), dko, sizeof(unsigned long long) * n, cudaMemcpyDeviceToHost);
        cudaMemcpy(vo.data(), dvo, sizeof(int) * n, cudaMemcpyDeviceToHost);
        bool ok = true;
        for (int i = 1; i < n; i++)
            ok = ok && (ko[(size_t)i - 1] < ko[(size_t)i] ||
                        (ko[(size_t)i - 1] == ko[(size_t)i] && vo[(size_t)i - 1] < vo[(size_t)i]));
        bad += !ok;
        printf("emulation: the radix sort's stand-in sorts pairs stably by key: %s\n", result(ok));
        cudaFree(dk); cudaFree(dko); cudaFree(dv); cudaFree(dvo); cudaFree(tmp);
    }
    return bad != 0;
}
