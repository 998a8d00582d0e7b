/* The CPU emulation of the device (issue 19): the same .cu files of src/cuda,
 * compiled as C++ (g++ -x c++ -DSVIR_CUDA_EMU), run on the CPU. Everything
 * that differs between the real and the emulated build is in this header;
 * svir_cuda_common.cuh includes it instead of <cuda_runtime.h>.
 *
 * What it models:
 * - A launch (SVIR_LAUNCH in svir_cuda_common.cuh) checks its geometry
 *   against the limits of the devices svir targets (compute capability 8.0
 *   and 9.0: at most 1024 threads a block, block dimensions 1024 x 1024 x
 *   64, grid dimensions 2^31 - 1 x 65535 x 65535) and fails like a device
 *   (cudaErrorInvalidConfiguration, sticky until cudaGetLastError) when it
 *   is exceeded; then it runs the blocks one after another.
 * - The threads of a block are cooperative fibers on one OS thread: a
 *   thread runs until it reaches __syncthreads() or a warp operation, and
 *   the barrier releases when every thread of the block that has not exited
 *   reached it, so __syncthreads keeps its meaning. A thread gets a fiber
 *   (its own stack) only when it first runs and gives it back when it
 *   exits, so a kernel without barriers needs one.
 * - Warp operations (__shfl*_sync, __ballot_sync, __any_sync, __all_sync,
 *   __syncwarp) synchronise the lanes of their mask within their warp of
 *   32 consecutive threads, and only those: a warp operation executed by
 *   some warps of a block works. A mask naming a lane that has exited or
 *   does not exist (a block not a multiple of 32) is reported.
 * - Shared memory (SVIR_SHARED in svir_cuda_common.cuh) is static storage,
 *   and blocks run one at a time, so each block has it to itself; a block's
 *   first thread to reach a declaration fills it with a poison pattern
 *   (0xff bytes: doubles read as NaN), as a block's shared memory is
 *   uninitialised on a device. A block whose shared memory passes the
 *   48 KiB of static shared memory a block may have is reported.
 * - The runtime calls the code uses: cudaMalloc / cudaFree (each
 *   allocation recorded; a free of an unknown pointer fails as on a
 *   device), cudaMemcpy (a device-side range outside every allocation
 *   fails with cudaErrorInvalidValue), cudaMemset, streams and events
 *   (synchronous; events read the clock), the device query (one device,
 *   compute capability 9.0, 80 GiB), the sticky last error.
 * - cub::DeviceRadixSort::SortPairs: a stable sort by key, as a radix sort
 *   is.
 * - Races: with SVIR_EMU_RACECHECK=1 in the environment, each launch runs
 *   twice from the same snapshot of every allocation, once with blocks and
 *   threads in order and shared memory poisoned with 0xff bytes, once in
 *   reverse order with 0x7f bytes, and the two results are compared byte
 *   for byte. A thread that reads shared (or global) memory written by
 *   another thread since the last barrier sees a different value in one of
 *   the two orders, and a read of shared memory nobody wrote sees the two
 *   poisons; the difference is reported with the kernel, its launch site
 *   and the first differing byte (svir_cuda_emu_races() counts them). It
 *   finds the races that change a result, in global and shared memory.
 * - Per-byte tracking of shared memory (the build whose .cu files carry
 *   -fsanitize=thread's instrumentation, `make run-emu-track`; the
 *   callbacks near the end of this header are its runtime): each byte's
 *   last writer and reader since the last barrier; another thread's
 *   access in between is reported with both threads, even where the
 *   values agree.
 * - Out-of-bounds accesses are left to AddressSanitizer: device
 *   allocations are plain heap blocks of their exact size, so a build
 *   with -fsanitize=address reports an access past one.
 *
 * What it does not model: timing and occupancy; concurrency between
 * blocks or between streams; lanes of a warp running in lock step between
 * warp operations (code that relies on it is a race here, and the race
 * check reports it); register and shared-memory limits per block (the real
 * build's ptxas reports them); memory fences, atomics and the memory
 * model; the device's float rounding (fused multiply-add is off in the
 * real build, --fmad=false; the device's exp, log and lgamma are not the C
 * library's, so parity tolerances still apply); a kernel that dereferences
 * a host pointer (it works here, it faults on a device). */
#ifndef SVIR_CUDA_EMU_CUH
#define SVIR_CUDA_EMU_CUH

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <deque>
#include <numeric>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <sys/mman.h>

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

/* ---- the language ------------------------------------------------------ */

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
/* shared memory is declared with SVIR_SHARED (below), which the emulation
 * can track; a bare __shared__ does not compile here */
#define __shared__ static_assert(false, "declare shared memory with SVIR_SHARED(type, name, [dims])");
#define __constant__ static
#define __launch_bounds__(...)

struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
};
typedef dim3 uint3;

namespace svir_emu {
inline dim3 cur_thread, cur_block, cur_bdim(1), cur_gdim(1);
}
#define threadIdx (static_cast<const dim3 &>(svir_emu::cur_thread))
#define blockIdx (static_cast<const dim3 &>(svir_emu::cur_block))
#define blockDim (static_cast<const dim3 &>(svir_emu::cur_bdim))
#define gridDim (static_cast<const dim3 &>(svir_emu::cur_gdim))
constexpr int warpSize = 32;

/* device-side functions the code uses that C++ lacks */
#define SVIR_EMU_MINMAX(T)                                              \
    static inline T min(T a, T b) { return a < b ? a : b; }             \
    static inline T max(T a, T b) { return a > b ? a : b; }
SVIR_EMU_MINMAX(int)
SVIR_EMU_MINMAX(unsigned)
SVIR_EMU_MINMAX(long)
SVIR_EMU_MINMAX(unsigned long)
SVIR_EMU_MINMAX(long long)
SVIR_EMU_MINMAX(unsigned long long)
SVIR_EMU_MINMAX(float)
SVIR_EMU_MINMAX(double)
#undef SVIR_EMU_MINMAX
static inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
template <typename T> static inline T __ldg(const T *p) { return *p; }

/* ---- the runtime API ----------------------------------------------------- */

typedef enum cudaError {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInitializationError = 3,
    cudaErrorLaunchFailure = 4,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorInvalidDevicePointer = 17,
    cudaErrorInsufficientDriver = 35,
    cudaErrorNoDevice = 100,
    cudaErrorInvalidDevice = 101,
    cudaErrorInvalidResourceHandle = 400,
} cudaError_t;

enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4
};

struct CUstream_st {
    int id;
};
typedef CUstream_st *cudaStream_t;
struct CUevent_st {
    double t;
    int recorded;
};
typedef CUevent_st *cudaEvent_t;

struct cudaDeviceProp {
    char name[256];
    size_t totalGlobalMem, sharedMemPerBlock;
    int regsPerBlock, warpSize, maxThreadsPerBlock, maxThreadsDim[3], maxGridSize[3];
    int major, minor, multiProcessorCount, clockRate, memoryClockRate, memoryBusWidth;
    size_t totalConstMem, l2CacheSize, sharedMemPerMultiprocessor;
    int maxThreadsPerMultiProcessor;
};

namespace svir_emu {

/* the limits of the targeted devices (compute capability 8.0 and 9.0) */
constexpr unsigned max_threads = 1024, max_bdim[3] = {1024, 1024, 64};
constexpr unsigned long long max_gdim[3] = {2147483647ull, 65535ull, 65535ull};
constexpr size_t device_bytes = (size_t)80 << 30;

inline cudaError_t last_error = cudaSuccess;
/* quiet: no report on stderr (the emulation's own checks of the errors it
 * reports); racecheck: -1 until read from SVIR_EMU_RACECHECK */
inline int quiet = 0, racecheck = -1;
inline std::map<uintptr_t, size_t> allocs; /* device allocations: start -> bytes */
inline size_t allocated = 0;
inline long races = 0, launches = 0;

inline cudaError_t fail(cudaError_t e)
{
    if (e != cudaSuccess && last_error == cudaSuccess) last_error = e;
    return e;
}
/* the allocation holding [p, p + n), or allocs.end() */
inline std::map<uintptr_t, size_t>::iterator find(const void *p, size_t n)
{
    const uintptr_t a = (uintptr_t)p;
    auto it = allocs.upper_bound(a);
    if (it == allocs.begin()) return allocs.end();
    --it;
    if (a + n < a || a < it->first || a + n > it->first + it->second + (it->second == 0 && n == 0))
        return allocs.end();
    return it;
}
inline double now_ms()
{
    using namespace std::chrono;
    return duration<double, std::milli>(steady_clock::now().time_since_epoch()).count();
}
inline bool is_dev(const void *p, size_t n) { return find(p, n) != allocs.end(); }
/* a copy's sides: the device side(s) must lie in one allocation, the host
 * side(s) in none */
inline cudaError_t check_copy(void *dst, const void *src, size_t n, cudaMemcpyKind k)
{
    if (n == 0) return cudaSuccess;
    const bool dd = k == cudaMemcpyDeviceToDevice || k == cudaMemcpyHostToDevice;
    const bool sd = k == cudaMemcpyDeviceToDevice || k == cudaMemcpyDeviceToHost;
    if (k == cudaMemcpyDefault) return cudaSuccess;
    if (is_dev(dst, n) != dd || is_dev(src, n) != sd) {
        if (!quiet)
            std::fprintf(stderr, "svir emulation: cudaMemcpy of %zu bytes, kind %d: the %s pointer "
                             "is not where the kind says (device side outside every allocation, "
                             "or host side inside one)\n",
                     n, (int)k, is_dev(dst, n) != dd ? "destination" : "source");
        return fail(cudaErrorInvalidValue);
    }
    return cudaSuccess;
}

} /* namespace svir_emu */

static inline const char *cudaGetErrorName(cudaError_t e)
{
    switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInitializationError: return "cudaErrorInitializationError";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevicePointer: return "cudaErrorInvalidDevicePointer";
    case cudaErrorInsufficientDriver: return "cudaErrorInsufficientDriver";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    }
    return "cudaErrorUnknown";
}
static inline const char *cudaGetErrorString(cudaError_t e)
{
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevicePointer: return "invalid device pointer";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    default: return cudaGetErrorName(e);
    }
}
static inline cudaError_t cudaGetLastError(void)
{
    const cudaError_t e = svir_emu::last_error;
    svir_emu::last_error = cudaSuccess;
    return e;
}
static inline cudaError_t cudaPeekAtLastError(void) { return svir_emu::last_error; }
static inline cudaError_t cudaRuntimeGetVersion(int *v) { *v = 13000; return cudaSuccess; }
static inline cudaError_t cudaDriverGetVersion(int *v) { *v = 13000; return cudaSuccess; }
static inline cudaError_t cudaGetDeviceCount(int *n) { *n = 1; return cudaSuccess; }
static inline cudaError_t cudaSetDevice(int d) { return d == 0 ? cudaSuccess : svir_emu::fail(cudaErrorInvalidDevice); }
static inline cudaError_t cudaGetDevice(int *d) { *d = 0; return cudaSuccess; }
static inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int d)
{
    if (d != 0) return svir_emu::fail(cudaErrorInvalidDevice);
    std::memset(p, 0, sizeof *p);
    std::snprintf(p->name, sizeof p->name, "svir CPU emulation");
    p->totalGlobalMem = svir_emu::device_bytes;
    p->sharedMemPerBlock = 48 << 10;
    p->regsPerBlock = 65536;
    p->warpSize = 32;
    p->maxThreadsPerBlock = (int)svir_emu::max_threads;
    for (int k = 0; k < 3; k++) {
        p->maxThreadsDim[k] = (int)svir_emu::max_bdim[k];
        p->maxGridSize[k] = (int)svir_emu::max_gdim[k];
    }
    p->major = 9;
    p->minor = 0;
    p->multiProcessorCount = 1;
    p->maxThreadsPerMultiProcessor = 2048;
    return cudaSuccess;
}
static inline cudaError_t cudaDeviceSynchronize(void) { return cudaSuccess; }
static inline cudaError_t cudaMemGetInfo(size_t *fr, size_t *tot)
{
    *tot = svir_emu::device_bytes;
    *fr = svir_emu::device_bytes - std::min(svir_emu::allocated, svir_emu::device_bytes);
    return cudaSuccess;
}
static inline cudaError_t cudaMalloc(void **p, size_t n)
{
    *p = NULL;
    if (svir_emu::allocated + n > svir_emu::device_bytes) return svir_emu::fail(cudaErrorMemoryAllocation);
    void *q = NULL;
    /* the exact size (AddressSanitizer's red zone starts right after it),
     * aligned as cudaMalloc's are */
    if (posix_memalign(&q, 256, n > 0 ? n : 1)) return svir_emu::fail(cudaErrorMemoryAllocation);
    /* uninitialised memory is not zero on a device either */
    std::memset(q, 0xA5, n);
    svir_emu::allocs[(uintptr_t)q] = n;
    svir_emu::allocated += n;
    *p = q;
    return cudaSuccess;
}
template <typename T> static inline cudaError_t cudaMalloc(T **p, size_t n)
{
    return cudaMalloc((void **)p, n);
}
static inline cudaError_t cudaFree(void *p)
{
    if (!p) return cudaSuccess;
    auto it = svir_emu::allocs.find((uintptr_t)p);
    if (it == svir_emu::allocs.end()) {
        if (!svir_emu::quiet)
            std::fprintf(stderr, "svir emulation: cudaFree of %p, not a device allocation\n", p);
        return svir_emu::fail(cudaErrorInvalidDevicePointer);
    }
    svir_emu::allocated -= it->second;
    svir_emu::allocs.erase(it);
    std::free(p);
    return cudaSuccess;
}
static inline cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, cudaMemcpyKind k)
{
    const cudaError_t e = svir_emu::check_copy(dst, src, n, k);
    if (e != cudaSuccess) return e;
    if (n) std::memmove(dst, src, n);
    return cudaSuccess;
}
static inline cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind k,
                                          cudaStream_t = 0)
{
    return cudaMemcpy(dst, src, n, k);
}
static inline cudaError_t cudaMemset(void *p, int v, size_t n)
{
    if (n && !svir_emu::is_dev(p, n)) {
        if (!svir_emu::quiet)
            std::fprintf(stderr, "svir emulation: cudaMemset of %zu bytes outside every allocation\n", n);
        return svir_emu::fail(cudaErrorInvalidValue);
    }
    if (n) std::memset(p, v, n);
    return cudaSuccess;
}
static inline cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t = 0)
{
    return cudaMemset(p, v, n);
}
static inline cudaError_t cudaStreamCreate(cudaStream_t *s)
{
    *s = new CUstream_st{1};
    return cudaSuccess;
}
static inline cudaError_t cudaStreamDestroy(cudaStream_t s)
{
    delete s;
    return cudaSuccess;
}
static inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
static inline cudaError_t cudaEventCreate(cudaEvent_t *e)
{
    *e = new CUevent_st{0.0, 0};
    return cudaSuccess;
}
static inline cudaError_t cudaEventDestroy(cudaEvent_t e)
{
    delete e;
    return cudaSuccess;
}
static inline cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t = 0)
{
    if (!e) return svir_emu::fail(cudaErrorInvalidResourceHandle);
    e->t = svir_emu::now_ms();
    e->recorded = 1;
    return cudaSuccess;
}
static inline cudaError_t cudaEventSynchronize(cudaEvent_t e)
{
    return e ? cudaSuccess : svir_emu::fail(cudaErrorInvalidResourceHandle);
}
static inline cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b)
{
    if (!a || !b || !a->recorded || !b->recorded) return svir_emu::fail(cudaErrorInvalidResourceHandle);
    *ms = (float)(b->t - a->t);
    return cudaSuccess;
}

/* ---- fibers ------------------------------------------------------------ */

namespace svir_emu {

constexpr size_t stack_bytes = (size_t)1 << 20; /* address space only until touched */

#if defined(__x86_64__)
/* save the callee-saved registers on this stack, store its pointer in
 * *save, switch to the stack at load and return into what it saved (the
 * floating-point control words are the process's: kernels do not change
 * them) */
extern "C" void svir_emu_swap(void **save, void *load);
asm(".text\n"
    ".weak svir_emu_swap\n"
    ".type svir_emu_swap,@function\n"
    "svir_emu_swap:\n"
    "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
    "  movq %rsp, (%rdi)\n"
    "  movq %rsi, %rsp\n"
    "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n"
    "  ret\n"
    ".size svir_emu_swap,.-svir_emu_swap\n");
#endif

struct fiber {
    char *stack;
#if defined(__x86_64__)
    void *sp;
#else
    ucontext_t ctx;
#endif
};

enum { T_NEW, T_RUN, T_BAR, T_WARP, T_DONE };
struct thread_rec {
    int state;
    int fib;           /* index in the pool, -1 without one */
    unsigned wmask;    /* the mask of the warp operation it waits at */
};

struct block_state {
    int nthreads;
    std::vector<thread_rec> th;
    int cur;
    unsigned char wslot[1024][16]; /* each lane's value for a shuffle */
    std::vector<std::pair<void *, size_t>> shared; /* declarations reached */
    size_t shared_bytes;
    /* the per-byte race tracking (a build with -fsanitize=thread's
     * instrumentation, below): the barrier epoch and each warp's epoch */
    unsigned epoch, wepoch[32];
    uintptr_t shared_lo, shared_hi; /* the span of the block's shared arrays */
    std::vector<std::vector<uint64_t>> wshadow, rshadow; /* per shared array, per byte */
    unsigned char poison;
    bool rev;  /* threads in reverse order */
    int scan;  /* the position, in that order, of the next thread to start */
};

inline std::deque<fiber> pool; /* a deque: a fiber never moves */
inline std::vector<int> free_fibs;
#if defined(__x86_64__)
inline void *sched_sp = nullptr;
#else
inline ucontext_t sched_ctx;
#endif
inline block_state *blk = nullptr;
/* in_body: a kernel's own code runs (not the emulation's); in_track: the
 * race tracking's own accesses (both for the tracking build, below) */
inline int in_body = 0, in_track = 0;
inline void (*body)(void *) = nullptr;
inline void *body_arg = nullptr;
inline const char *kname = "";
inline const char *ksite = "";

[[noreturn]] inline void die(const char *what)
{
    std::fprintf(stderr, "svir emulation: %s, in kernel %s launched at %s, block (%u, %u, %u), "
                         "thread (%u, %u, %u)\n",
                 what, kname, ksite, cur_block.x, cur_block.y, cur_block.z, cur_thread.x,
                 cur_thread.y, cur_thread.z);
    std::abort();
}

/* a shared-memory declaration reached: poisoned the first time in a block */
inline void shared_touch(void *p, size_t n)
{
    for (auto &e : blk->shared)
        if (e.first == p) return;
    in_body = 0; /* the emulation's bookkeeping, not the kernel's accesses */
    blk->shared.emplace_back(p, n);
    blk->shared_bytes += n;
    blk->wshadow.emplace_back(n, 0);
    blk->rshadow.emplace_back(n, 0);
    blk->shared_lo = std::min(blk->shared_lo, (uintptr_t)p);
    blk->shared_hi = std::max(blk->shared_hi, (uintptr_t)p + n);
    if (blk->shared_bytes > ((size_t)48 << 10)) die("the block's shared memory passes 48 KiB");
    std::memset(p, blk->poison, n);
    in_body = 1;
}

inline void yield_to_sched()
{
    fiber &f = pool[blk->th[blk->cur].fib];
    in_body = 0;
#if defined(__x86_64__)
    svir_emu_swap(&f.sp, sched_sp);
#else
    swapcontext(&f.ctx, &sched_ctx);
#endif
    in_body = 1;
}

inline int next_new();
inline void set_thread_index(int t);

/* a fiber runs threads: when one exits, the fiber goes on with the next
 * thread that has not started (in the block's order), and returns to the
 * scheduler only when a thread waits at a barrier or none is left, so a
 * block without barriers costs one switch */
inline void fiber_main()
{
    for (;;) {
        in_body = 1;
        body(body_arg);
        in_body = 0;
        const int c = blk->cur, f = blk->th[c].fib;
        blk->th[c].state = T_DONE;
        const int nx = next_new();
        if (nx >= 0) {
            blk->th[c].fib = -1;
            blk->th[nx].fib = f;
            blk->th[nx].state = T_RUN;
            blk->cur = nx;
            set_thread_index(nx);
            continue;
        }
        yield_to_sched();
    }
}

inline int new_fiber()
{
    if (!free_fibs.empty()) {
        const int k = free_fibs.back();
        free_fibs.pop_back();
        return k;
    }
    pool.emplace_back();
    fiber &f = pool.back();
    void *m = mmap(nullptr, stack_bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) die("cannot map a fiber's stack");
    f.stack = (char *)m;
#if defined(__x86_64__)
    /* the frame svir_emu_swap returns into: fiber_main as the return
     * address, six registers below it */
    /* the stacks' tops staggered (not all 1 MiB apart: they would share
     * the caches' sets) */
    uintptr_t top = ((uintptr_t)(f.stack + stack_bytes - (pool.size() % 61) * 832)) & ~(uintptr_t)63;
    void **s = (void **)top;
    *--s = nullptr;                   /* fiber_main's own return address (never used) */
    *--s = (void *)&fiber_main;
    for (int r = 0; r < 6; r++) *--s = nullptr;
    f.sp = s;
#else
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = f.stack;
    f.ctx.uc_stack.ss_size = stack_bytes;
    f.ctx.uc_link = nullptr;
    makecontext(&f.ctx, (void (*)())fiber_main, 0);
#endif
    return (int)pool.size() - 1;
}

inline void set_thread_index(int t)
{
    cur_thread = dim3((unsigned)t % cur_bdim.x, ((unsigned)t / cur_bdim.x) % cur_bdim.y,
                      (unsigned)t / (cur_bdim.x * cur_bdim.y));
}

/* the next thread that has not started, -1 when none */
inline int next_new()
{
    block_state &b = *blk;
    while (b.scan < b.nthreads) {
        const int t = b.rev ? b.nthreads - 1 - b.scan : b.scan;
        b.scan++;
        if (b.th[t].state == T_NEW) return t;
    }
    return -1;
}

/* runs thread t (and, on the same fiber, the threads that start after it)
 * until one waits at a barrier or exits with none left to start */
inline void resume(int t)
{
    thread_rec &r = blk->th[t];
    if (r.fib < 0) r.fib = new_fiber();
    r.state = T_RUN;
    blk->cur = t;
    set_thread_index(t);
    fiber &f = pool[r.fib];
#if defined(__x86_64__)
    svir_emu_swap(&sched_sp, f.sp);
#else
    swapcontext(&sched_ctx, &f.ctx);
#endif
    thread_rec &c = blk->th[blk->cur];
    if (c.state == T_DONE) {
        free_fibs.push_back(c.fib);
        c.fib = -1;
    }
}

/* one block: the threads in order (rev: in reverse order), each until it
 * blocks, then the barriers that can release */
inline void run_block(bool rev)
{
    block_state &b = *blk;
    const int n = b.nthreads;
    for (int t = 0; t < n; t++) b.th[t] = thread_rec{T_NEW, -1, 0u};
    b.shared.clear();
    b.shared_bytes = 0;
    b.wshadow.clear();
    b.rshadow.clear();
    b.shared_lo = UINTPTR_MAX;
    b.shared_hi = 0;
    b.epoch = 1;
    std::fill(b.wepoch, b.wepoch + 32, 0u);
    b.poison = rev ? 0x7f : 0xff;
    b.rev = rev;
    b.scan = 0;
    for (;;) {
        /* the threads a barrier released, then those not started */
        for (int k = 0; k < n; k++) {
            const int t = rev ? n - 1 - k : k;
            if (b.th[t].state == T_RUN) resume(t);
        }
        for (int t = next_new(); t >= 0; t = next_new()) resume(t);
        int done = 0, bar = 0, warp = 0;
        for (int t = 0; t < n; t++) {
            done += b.th[t].state == T_DONE;
            bar += b.th[t].state == T_BAR;
            warp += b.th[t].state == T_WARP;
        }
        if (done == n) return;
        bool released = false;
        /* warp operations whose every lane has arrived */
        for (int w = 0; warp && w < (n + 31) / 32; w++) {
            unsigned m = 0;
            for (int l = 0; l < 32 && 32 * w + l < n; l++)
                if (b.th[32 * w + l].state == T_WARP) m = b.th[32 * w + l].wmask;
            if (!m) continue;
            bool all = true;
            for (int l = 0; l < 32; l++) {
                if (!(m >> l & 1u)) continue;
                const int t = 32 * w + l;
                if (t >= n) {
                    cur_thread = dim3((unsigned)t);
                    die("a warp operation's mask names a lane beyond the block");
                }
                if (b.th[t].state == T_DONE) {
                    set_thread_index(t);
                    die("a warp operation's mask names a lane that has exited");
                }
                if (b.th[t].state != T_WARP) all = false;
                else if (b.th[t].wmask != m) {
                    set_thread_index(t);
                    die("lanes of a warp wait at warp operations with different masks");
                }
            }
            if (all) {
                for (int l = 0; l < 32; l++)
                    if (m >> l & 1u) b.th[32 * w + l].state = T_RUN;
                b.wepoch[w]++;
                released = true;
            }
        }
        if (released) continue;
        if (bar && bar + done == n) {
            for (int t = 0; t < n; t++)
                if (b.th[t].state == T_BAR) b.th[t].state = T_RUN;
            b.epoch++;
            continue;
        }
        for (int t = 0; t < n; t++)
            if (b.th[t].state == T_BAR || b.th[t].state == T_WARP) {
                set_thread_index(t);
                break;
            }
        die("deadlock: threads wait at __syncthreads() while others wait at a warp operation that "
            "cannot complete");
    }
}

inline void block_barrier()
{
    blk->th[blk->cur].state = T_BAR;
    yield_to_sched();
    set_thread_index(blk->cur);
}

inline void warp_barrier(unsigned mask)
{
    const int t = blk->cur;
    if (!(mask >> (t % 32) & 1u)) die("a warp operation's mask leaves out the lane that calls it");
    blk->th[t].state = T_WARP;
    blk->th[t].wmask = mask;
    yield_to_sched();
    set_thread_index(t);
}

template <typename T> inline T shuffle(unsigned mask, T v, int src_lane)
{
    static_assert(sizeof(T) <= 16, "shuffle of a value wider than 16 bytes");
    const int t = blk->cur, w0 = t - t % 32;
    std::memcpy(blk->wslot[t], &v, sizeof(T));
    warp_barrier(mask);
    T out = v;
    const int s = w0 + src_lane;
    if (s < blk->nthreads && (mask >> src_lane & 1u)) std::memcpy(&out, blk->wslot[s], sizeof(T));
    warp_barrier(mask); /* nobody overwrites a slot before every lane read it */
    return out;
}

inline unsigned vote(unsigned mask, int pred)
{
    const int t = blk->cur, w0 = t - t % 32;
    blk->wslot[t][0] = pred != 0;
    warp_barrier(mask);
    unsigned r = 0;
    for (int l = 0; l < 32; l++)
        if ((mask >> l & 1u) && w0 + l < blk->nthreads && blk->wslot[w0 + l][0]) r |= 1u << l;
    warp_barrier(mask);
    return r;
}

/* every allocation's bytes, for the race check */
inline std::vector<std::vector<unsigned char>> snapshot()
{
    std::vector<std::vector<unsigned char>> s;
    s.reserve(allocs.size());
    for (auto &a : allocs) s.emplace_back((unsigned char *)a.first, (unsigned char *)a.first + a.second);
    return s;
}
inline void restore(const std::vector<std::vector<unsigned char>> &s)
{
    size_t k = 0;
    for (auto &a : allocs) std::memcpy((void *)a.first, s[k++].data(), a.second);
}

inline bool racecheck_on()
{
    if (racecheck < 0) {
        const char *e = std::getenv("SVIR_EMU_RACECHECK");
        racecheck = e && *e && std::strcmp(e, "0") != 0;
    }
    return racecheck == 1;
}

inline void run_grid(dim3 g, dim3 bd, bool rev)
{
    const unsigned long long nb = (unsigned long long)g.x * g.y * g.z;
    block_state *b = new block_state;
    b->nthreads = (int)(bd.x * bd.y * bd.z);
    b->th.resize((size_t)b->nthreads);
    blk = b;
    cur_gdim = g;
    cur_bdim = bd;
    for (unsigned long long k = 0; k < nb; k++) {
        const unsigned long long q = rev ? nb - 1 - k : k;
        cur_block = dim3((unsigned)(q % g.x), (unsigned)((q / g.x) % g.y), (unsigned)(q / ((unsigned long long)g.x * g.y)));
        run_block(rev);
    }
    blk = nullptr;
    delete b;
}

/* the launch sites that ran, with their counts; with SVIR_EMU_SITES=path
 * in the environment they are written there at exit ("site count kernel"
 * per line), for tools/gpucheck/emu_sites.sh, which lists the sites of
 * src/cuda that never ran */
inline std::map<std::string, long> sites;
inline void write_sites()
{
    const char *path = std::getenv("SVIR_EMU_SITES");
    FILE *f = path && *path ? std::fopen(path, "w") : nullptr;
    if (!f) return;
    for (auto &e : sites) std::fprintf(f, "%s %ld\n", e.first.c_str(), e.second);
    std::fclose(f);
}

/* a launch: the geometry checked, then the grid run (twice, in both
 * orders, under the race check) */
inline void launch(dim3 g, dim3 bd, const char *name, const char *site, void (*fn)(void *), void *arg)
{
    if (launches++ == 0) std::atexit(write_sites);
    {
        const char *b = std::strrchr(site, '/');
        sites[std::string(b ? b + 1 : site) + " " + name]++;
    }
    kname = name;
    ksite = site;
    const unsigned long long nt = (unsigned long long)bd.x * bd.y * bd.z;
    const unsigned bdv[3] = {bd.x, bd.y, bd.z}, gdv[3] = {g.x, g.y, g.z};
    bool bad = nt == 0 || nt > max_threads;
    for (int k = 0; k < 3; k++) bad = bad || bdv[k] > max_bdim[k] || gdv[k] == 0 || gdv[k] > max_gdim[k];
    if (bad) {
        if (!quiet)
            std::fprintf(stderr, "svir emulation: launch of %s at %s with grid (%u, %u, %u) and block "
                             "(%u, %u, %u) exceeds the device's limits\n",
                     name, site, g.x, g.y, g.z, bd.x, bd.y, bd.z);
        fail(cudaErrorInvalidConfiguration);
        return;
    }
    if (blk) die("a kernel launched from device code");
    body = fn;
    body_arg = arg;
    if (!racecheck_on()) {
        run_grid(g, bd, false);
        return;
    }
    const auto before = snapshot();
    run_grid(g, bd, false);
    const auto fwd = snapshot();
    restore(before);
    run_grid(g, bd, true);
    size_t k = 0;
    for (auto &a : allocs) {
        const unsigned char *p = (const unsigned char *)a.first;
        const auto &f = fwd[k++];
        if (a.second == 0 || std::memcmp(p, f.data(), a.second) == 0) continue;
        for (size_t i = 0; i < a.second; i++)
            if (p[i] != f[i]) {
                if (!quiet)
                    std::fprintf(stderr, "svir emulation: race in kernel %s launched at %s: run in the "
                                     "reverse order its blocks and threads leave byte %zu of an "
                                     "allocation of %zu bytes different (0x%02x, in order 0x%02x)\n",
                             name, site, i, a.second, p[i], f[i]);
                races++;
                break;
            }
    }
}

template <typename... P> struct launcher {
    void (*k)(P...);
    dim3 g, b;
    const char *name, *site;
    /* the arguments converted to the kernel's parameters at the call, as
     * for a launch; each thread's call copies them again, as each device
     * thread has its own */
    void operator()(P... a) const
    {
        struct pack {
            void (*k)(P...);
            std::tuple<typename std::decay<P>::type...> args;
        } pk{k, std::tuple<typename std::decay<P>::type...>(a...)};
        launch(g, b, name, site, [](void *v) {
            pack *q = (pack *)v;
            std::apply(q->k, q->args);
        }, &pk);
    }
};
template <typename... P>
inline launcher<P...> make_launcher(dim3 g, dim3 b, const char *name, const char *site, void (*k)(P...))
{
    return launcher<P...>{k, g, b, name, site};
}

} /* namespace svir_emu */

/* for the checks (tools/gpucheck, in C): the launches and the kernels
 * the race check found order-dependent; weak, one copy per object file */
extern "C" __attribute__((weak)) long svir_cuda_emu_races(void) { return svir_emu::races; }
extern "C" __attribute__((weak)) long svir_cuda_emu_launches(void) { return svir_emu::launches; }
extern "C" __attribute__((weak)) int svir_cuda_emu_racecheck(void) { return svir_emu::racecheck_on(); }

#define SVIR_EMU_STR2(x) #x
#define SVIR_EMU_STR(x) SVIR_EMU_STR2(x)
/* SVIR_SHARED(T, name, [dims]): __shared__ T name[dims] */
#define SVIR_SHARED(T, name, dims) \
    static T name dims;            \
    svir_emu::shared_touch((void *)&name, sizeof(name))
/* SVIR_LAUNCH(grid, block, kernel)(arguments): kernel<<<grid, block>>>(arguments) */
#define SVIR_LAUNCH(g, b, ...) \
    svir_emu::make_launcher(dim3(g), dim3(b), #__VA_ARGS__, __FILE__ ":" SVIR_EMU_STR(__LINE__), __VA_ARGS__)

/* ---- per-byte race tracking of shared memory --------------------------------
 * In a build whose .cu files carry -fsanitize=thread's instrumentation
 * (every load and store calls __tsan_readN / __tsan_writeN) and that links
 * no ThreadSanitizer runtime (tools/gpucheck's `make run-emu-track`), these
 * callbacks are that runtime: an access to a block's shared memory is
 * checked against each byte's last writer and last reader, recorded as
 * (barrier epoch, warp epoch, thread). Another thread's write or read of
 * the byte since the last __syncthreads(), unless both threads are lanes of
 * one warp with a warp operation between, is a race: reported with the
 * kernel, its launch site, the byte and both threads, and counted. */
#if defined(__SANITIZE_THREAD__)
namespace svir_emu {
inline long tracked_races = 0;
__attribute__((no_sanitize_thread)) inline void track_body(const void *a, size_t len, bool write);
__attribute__((no_sanitize_thread)) inline void track(const void *a, size_t len, bool write)
{
    if (in_track || !in_body || !blk) return;
    const uintptr_t x = (uintptr_t)a;
    if (x >= blk->shared_hi || x + len <= blk->shared_lo) return; /* not shared memory */
    in_track = 1;
    track_body(a, len, write);
    in_track = 0;
}
__attribute__((no_sanitize_thread)) inline void track_body(const void *a, size_t len, bool write)
{
    block_state *b = blk;
    if (b->shared.empty()) return;
    const uintptr_t x = (uintptr_t)a;
    for (size_t k = 0; k < b->shared.size(); k++) {
        const uintptr_t s0 = (uintptr_t)b->shared[k].first;
        const size_t n = b->shared[k].second;
        if (x + len <= s0 || x >= s0 + n) continue;
        const int t = b->cur, w = t / 32;
        /* the record: epoch (32 bits), warp epoch (16), thread + 1 (16) */
        const uint64_t me = ((uint64_t)b->epoch << 32) | ((uint64_t)(b->wepoch[w] & 0xffffu) << 16) |
                            (uint64_t)(t + 1);
        for (size_t i = (x > s0 ? x - s0 : 0); i < n && s0 + i < x + len; i++) {
            const uint64_t lw = b->wshadow[k][i], lr = b->rshadow[k][i];
            for (uint64_t last : {lw, write ? lr : (uint64_t)0}) {
                const int o = (int)(last & 0xffffu) - 1;
                if (!last || o == t || (last >> 32) != b->epoch) continue;
                /* lanes of one warp ordered by a warp operation */
                if (o / 32 == w && ((last >> 16) & 0xffffu) != (me >> 16 & 0xffffu)) continue;
                if (!quiet)
                    std::fprintf(stderr, "svir emulation: shared-memory race in kernel %s launched at "
                                         "%s, block (%u, %u, %u): thread %d %s byte %zu of a shared "
                                         "array of %zu bytes that thread %d %s since the last "
                                         "barrier\n",
                                 kname, ksite, cur_block.x, cur_block.y, cur_block.z, t,
                                 write ? "writes" : "reads", i, n, o,
                                 last == lw ? "wrote" : "read");
                tracked_races++;
                races++;
                return; /* one report per access */
            }
            if (write) b->wshadow[k][i] = me;
            else b->rshadow[k][i] = me;
        }
        return;
    }
}
} /* namespace svir_emu */
#define SVIR_EMU_TSAN_RW(N)                                                                       \
    extern "C" __attribute__((weak, no_sanitize_thread)) void __tsan_read##N(void *a)              \
    {                                                                                             \
        svir_emu::track(a, N, false);                                                             \
    }                                                                                             \
    extern "C" __attribute__((weak, no_sanitize_thread)) void __tsan_write##N(void *a)             \
    {                                                                                             \
        svir_emu::track(a, N, true);                                                              \
    }                                                                                             \
    extern "C" __attribute__((weak, no_sanitize_thread)) void __tsan_unaligned_read##N(void *a)    \
    {                                                                                             \
        svir_emu::track(a, N, false);                                                             \
    }                                                                                             \
    extern "C" __attribute__((weak, no_sanitize_thread)) void __tsan_unaligned_write##N(void *a)   \
    {                                                                                             \
        svir_emu::track(a, N, true);                                                              \
    }
SVIR_EMU_TSAN_RW(1)
SVIR_EMU_TSAN_RW(2)
SVIR_EMU_TSAN_RW(4)
SVIR_EMU_TSAN_RW(8)
SVIR_EMU_TSAN_RW(16)
#undef SVIR_EMU_TSAN_RW
extern "C" __attribute__((weak, no_sanitize_thread)) void __tsan_read_range(void *a, unsigned long n)
{
    svir_emu::track(a, n, false);
}
extern "C" __attribute__((weak, no_sanitize_thread)) void __tsan_write_range(void *a, unsigned long n)
{
    svir_emu::track(a, n, true);
}
extern "C" __attribute__((weak, no_sanitize_thread)) void __tsan_func_entry(void *) {}
extern "C" __attribute__((weak, no_sanitize_thread)) void __tsan_func_exit(void) {}
extern "C" __attribute__((weak, no_sanitize_thread)) void __tsan_init(void) {}
extern "C" __attribute__((weak, no_sanitize_thread)) void __tsan_vptr_update(void **, void *) {}
extern "C" __attribute__((weak, no_sanitize_thread)) void __tsan_vptr_read(void **) {}
extern "C" __attribute__((weak)) long svir_cuda_emu_tracked(void) { return svir_emu::tracked_races; }
#else
extern "C" __attribute__((weak)) long svir_cuda_emu_tracked(void) { return -1; }
#endif

/* ---- device functions: barriers and warp operations ---------------------- */

static inline void __syncthreads(void)
{
    if (!svir_emu::blk) svir_emu::die("__syncthreads() outside a kernel");
    svir_emu::block_barrier();
}
static inline void __syncwarp(unsigned mask = 0xffffffffu) { svir_emu::warp_barrier(mask); }
template <typename T> static inline T __shfl_sync(unsigned mask, T v, int src, int width = 32)
{
    const int lane = (int)(svir_emu::blk->cur % 32);
    return svir_emu::shuffle(mask, v, (lane / width) * width + ((src % width) + width) % width);
}
template <typename T> static inline T __shfl_down_sync(unsigned mask, T v, unsigned d, int width = 32)
{
    const int lane = (int)(svir_emu::blk->cur % 32), base = (lane / width) * width;
    const int s = lane % width + (int)d;
    return svir_emu::shuffle(mask, v, s < width ? base + s : lane);
}
template <typename T> static inline T __shfl_up_sync(unsigned mask, T v, unsigned d, int width = 32)
{
    const int lane = (int)(svir_emu::blk->cur % 32), base = (lane / width) * width;
    const int s = lane % width - (int)d;
    return svir_emu::shuffle(mask, v, s >= 0 ? base + s : lane);
}
template <typename T> static inline T __shfl_xor_sync(unsigned mask, T v, int m, int width = 32)
{
    const int lane = (int)(svir_emu::blk->cur % 32), base = (lane / width) * width;
    const int s = (lane % width) ^ m;
    return svir_emu::shuffle(mask, v, s < width ? base + s : lane);
}
static inline unsigned __ballot_sync(unsigned mask, int p) { return svir_emu::vote(mask, p); }
static inline int __any_sync(unsigned mask, int p) { return svir_emu::vote(mask, p) != 0; }
static inline int __all_sync(unsigned mask, int p) { return svir_emu::vote(mask, p) == mask; }

/* ---- CUB's device-wide radix sort: a stable sort by key ------------------ */

namespace cub {
struct DeviceRadixSort {
    template <typename K, typename V>
    static cudaError_t SortPairs(void *tmp, size_t &bytes, const K *kin, K *kout, const V *vin, V *vout,
                                 int n, int begin_bit = 0, int end_bit = (int)(sizeof(K) * 8),
                                 cudaStream_t = 0, bool = false)
    {
        if (!tmp) {
            bytes = 1;
            return cudaSuccess;
        }
        if (n < 0 || (n > 0 && (!svir_emu::is_dev(kin, sizeof(K) * (size_t)n) ||
                                !svir_emu::is_dev(kout, sizeof(K) * (size_t)n) ||
                                !svir_emu::is_dev(vin, sizeof(V) * (size_t)n) ||
                                !svir_emu::is_dev(vout, sizeof(V) * (size_t)n))))
            return svir_emu::fail(cudaErrorInvalidValue);
        typedef typename std::make_unsigned<K>::type U;
        const int nb = end_bit - begin_bit;
        const U mask = (U)(nb >= (int)(sizeof(U) * 8) ? ~(U)0 : (((U)1 << nb) - 1));
        auto key = [&](int i) { return (U)(((U)kin[i] >> begin_bit) & mask); };
        std::vector<int> ix((size_t)n);
        std::iota(ix.begin(), ix.end(), 0);
        std::stable_sort(ix.begin(), ix.end(), [&](int a, int b) { return key(a) < key(b); });
        std::vector<K> ks((size_t)n);
        std::vector<V> vs((size_t)n);
        for (int i = 0; i < n; i++) {
            ks[(size_t)i] = kin[ix[(size_t)i]];
            vs[(size_t)i] = vin[ix[(size_t)i]];
        }
        std::copy(ks.begin(), ks.end(), kout);
        std::copy(vs.begin(), vs.end(), vout);
        return cudaSuccess;
    }
};
} /* namespace cub */

#endif
