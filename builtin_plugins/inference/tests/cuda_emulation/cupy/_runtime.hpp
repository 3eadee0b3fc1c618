// The CUDA execution model, emulated on one CPU thread for the CPU emulator's kernels.
//
// Included before the kernels' CUDA C, which is then compiled as C++ by g++. Every CUDA
// thread of a block is a fiber (its own stack); the fibers of a block run one at a time,
// each from one __syncthreads() to the next, so a block advances phase by phase just as
// the barrier semantics promise and no further. Blocks run one after another.
//
// What it checks on the way, failing the launch with a message:
//   - every thread of the block reaches the same __syncthreads() (not some of them
//     having returned, nor two different call sites);
//   - a block writes nothing past the dynamic shared memory it was launched with.
// Shared memory starts every block as NaN, so a value read before it is written shows.
//
// A schedule picks the order: ascending runs blocks and the threads of a phase in index
// order, descending in reverse. A race between threads of one phase (a missing barrier)
// or between blocks makes the two orders disagree.
#pragma once

#include <math.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <functional>
#include <vector>

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};

static dim3 gridDim, blockDim, blockIdx, threadIdx;

#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__
#define __shared__ static  // a static array: one per block, as blocks run one at a time
#define __syncthreads() noa_emu::sync(__LINE__)

namespace noa_emu {

constexpr size_t kStackBytes = 256 * 1024;
constexpr size_t kSharedGuardFloats = 64;
constexpr unsigned kGuardBits = 0x7FC0DEADu;  // a quiet NaN as a float

struct Fiber {
    ucontext_t start;
    jmp_buf resume;
    void* stack = nullptr;
    dim3 index;
    bool done = false;
    int waiting_at = 0;  // the line of the __syncthreads() it waits at; 0: running
};

static std::vector<Fiber> fibers;
static jmp_buf scheduler;
static Fiber* current = nullptr;
static const std::function<void()>* body = nullptr;
static float* shared_memory = nullptr;
static char error[512];

static void fail(const char* what) {
    snprintf(error, sizeof error, "block (%u,%u,%u): %s", blockIdx.x, blockIdx.y, blockIdx.z,
             what);
}

// Called by a thread at a barrier: park here and hand the CPU back to the scheduler.
static void sync(int line) {
    current->waiting_at = line;
    if (!_setjmp(current->resume)) _longjmp(scheduler, 1);
}

static void entry() {
    (*body)();
    current->done = true;
    _longjmp(scheduler, 1);
}

static void* new_stack() {
    // A page below the stack is left inaccessible: an overflow faults, not corrupts.
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    char* base = (char*)mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE,
                             MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == (char*)MAP_FAILED) return nullptr;
    mprotect(base, page, PROT_NONE);
    return base + page;
}

// Runs one block to completion; false (with ``error`` set) when its barriers diverge.
static bool run_block(unsigned threads, bool descending) {
    for (unsigned t = 0; t < threads; ++t) {
        Fiber& f = fibers[t];
        f.done = false;
        f.waiting_at = -1;  // not started
        f.index = {t % blockDim.x, (t / blockDim.x) % blockDim.y, t / (blockDim.x * blockDim.y)};
    }
    for (;;) {
        for (unsigned k = 0; k < threads; ++k) {
            Fiber& f = fibers[descending ? threads - 1 - k : k];
            if (f.done) continue;
            current = &f;
            threadIdx = f.index;
            const bool fresh = f.waiting_at < 0;
            f.waiting_at = 0;
            if (!_setjmp(scheduler)) {
                if (fresh) {
                    getcontext(&f.start);
                    f.start.uc_stack.ss_sp = f.stack;
                    f.start.uc_stack.ss_size = kStackBytes;
                    f.start.uc_link = nullptr;
                    makecontext(&f.start, entry, 0);
                    setcontext(&f.start);
                }
                _longjmp(f.resume, 1);
            }
        }
        unsigned finished = 0, waiting = 0;
        int line = 0, other_line = 0;
        for (unsigned t = 0; t < threads; ++t) {
            const Fiber& f = fibers[t];
            if (f.done) {
                ++finished;
            } else {
                ++waiting;
                if (line == 0) line = f.waiting_at;
                if (f.waiting_at != line) other_line = f.waiting_at;
            }
        }
        if (waiting == 0) return true;
        char what[256];
        if (finished) {
            snprintf(what, sizeof what,
                     "__syncthreads() at line %d reached by %u of %u threads; the rest had "
                     "returned (undefined behaviour on a GPU: a hang or a wrong result)",
                     line, waiting, threads);
            fail(what);
            return false;
        }
        if (other_line) {
            snprintf(what, sizeof what,
                     "the threads wait at different __syncthreads() (lines %d and %d); "
                     "a barrier must be reached by the whole block",
                     line, other_line);
            fail(what);
            return false;
        }
    }
}

// Runs ``kernel_body`` over the grid. 0 on success; otherwise ``error`` says what broke.
static int run(const std::function<void()>& kernel_body, dim3 grid, dim3 block,
               unsigned long shared_bytes, int descending) {
    error[0] = 0;
    const unsigned threads = block.x * block.y * block.z;
    while (fibers.size() < threads) {
        fibers.emplace_back();
        fibers.back().stack = new_stack();
        if (!fibers.back().stack) {
            fibers.pop_back();
            snprintf(error, sizeof error, "no memory for %u thread stacks", threads);
            return 1;
        }
    }
    const size_t floats = (shared_bytes + sizeof(float) - 1) / sizeof(float);
    std::vector<float> shared(floats + kSharedGuardFloats);
    shared_memory = shared.data();
    gridDim = grid;
    blockDim = block;
    body = &kernel_body;
    const unsigned long long blocks = (unsigned long long)grid.x * grid.y * grid.z;
    int status = 0;
    for (unsigned long long n = 0; n < blocks && status == 0; ++n) {
        const unsigned long long b = descending ? blocks - 1 - n : n;
        blockIdx = {(unsigned)(b % grid.x), (unsigned)((b / grid.x) % grid.y),
                    (unsigned)(b / ((unsigned long long)grid.x * grid.y))};
        for (size_t i = 0; i < shared.size(); ++i) memcpy(&shared[i], &kGuardBits, 4);
        if (!run_block(threads, descending != 0)) {
            status = 1;
            break;
        }
        for (size_t i = floats; i < shared.size(); ++i) {
            if (memcmp(&shared[i], &kGuardBits, 4) != 0) {
                char what[160];
                snprintf(what, sizeof what,
                         "wrote shared memory at byte %zu, past the %lu bytes it was launched "
                         "with",
                         i * sizeof(float), shared_bytes);
                fail(what);
                status = 1;
                break;
            }
        }
    }
    body = nullptr;
    shared_memory = nullptr;
    return status;
}

}  // namespace noa_emu

extern "C" const char* noa_emu_error() { return noa_emu::error; }
