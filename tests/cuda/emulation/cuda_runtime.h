// quarot's CPU emulation of the slice of the CUDA runtime and device language that
// include/quarot/backend/cuda/ uses, so that its kernels run (slowly, exactly) on a machine
// without a GPU: __syncthreads is a block barrier, warp shuffles / votes / MMAs exchange
// through per-warp slots between two warp barriers.
// Only for the tests (tests/cuda/emulated_*.cpp): it checks the kernels' indexing,
// synchronization and arithmetic against the CPU reference on every CI run, and under
// -fsanitize=thread their synchronization against data races (namespace race below).
// What it cannot check is the hardware itself: the MMA fragment layout is the PTX ISA's as
// written here, timing does not exist, and the memory model only as the race checker
// models it (barriers, mbarriers, fences through atomics).
//
// A block's threads run as fibers (switch_context) on one host thread, a block worker, one
// block after the other: the calling thread, or under the race checker several worker threads
// that each take a share of the launch's blocks (run_grid). `__shared__` variables (here:
// static thread_local, so one per worker) and the dynamic shared memory are thus the
// block's own. The blocks of a thread-block cluster (launch_cluster) run together on one
// worker, each with its own dynamic shared memory; kernels launched in clusters must not
// use static `__shared__` variables, which the emulation would share between them.
#pragma once

#define QUAROT_CUDA_EMULATION 1

#include <math.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#if !defined(__x86_64__)
#include <ucontext.h>  // (execution_context's fallback)
#endif

#include "cuda.h"

#if defined(__SANITIZE_ADDRESS__)
#define QUAROT_EMULATION_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define QUAROT_EMULATION_ASAN 1
#endif
#endif
#ifndef QUAROT_EMULATION_ASAN
#define QUAROT_EMULATION_ASAN 0
#endif
#if QUAROT_EMULATION_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#if defined(__SANITIZE_THREAD__)
#define QUAROT_EMULATION_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define QUAROT_EMULATION_TSAN 1
#endif
#endif
#ifndef QUAROT_EMULATION_TSAN
#define QUAROT_EMULATION_TSAN 0
#endif
#if QUAROT_EMULATION_TSAN
#include <sanitizer/tsan_interface.h>
// Exported by libtsan, declared by no header: the running thread's (fiber's) memory
// accesses go unchecked from begin to the matching end; a function's exit, and the depth
// of the running fiber's stack of functions (race::unwind_to).
extern "C" {
void __tsan_ignore_thread_begin();
void __tsan_ignore_thread_end();
// (Under a name of its own: GCC has a built-in __tsan_func_exit(void*), declared under
// -std=gnu++20 but not under -std=c++20.)
void quarot_tsan_func_exit() __asm__("__tsan_func_exit");
std::size_t __tsan_testonly_shadow_stack_current_size();
}
// The emulation's own bookkeeping (barrier counters, mbarrier words, scheduler state) and
// its register exchanges (shuffle slots): not instrumented, so not checked, at no cost
// (an ignore region records a stack each time it opens).
#define QUAROT_EMULATION_UNCHECKED __attribute__((no_sanitize("thread")))
#else
#define QUAROT_EMULATION_UNCHECKED
#endif

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
// Static shared variables are per block worker (run_grid): a worker runs one block (or
// cluster) at a time, and blocks of other workers must not see its values.
#define __shared__ static thread_local
#define __align__(n) __attribute__((aligned(n)))
#define __grid_constant__

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
// Aligned as CUDA's (8 and 16 bytes), so that UBSan reports a vector access the device
// would fault on.
struct alignas(8) uint2 {
  unsigned x, y;
};
struct alignas(8) int2 {
  int x, y;
};
inline int2 make_int2(int x, int y) { return int2{x, y}; }
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
struct alignas(16) float4 {
  float x, y, z, w;
};

struct CUstream_st;
using cudaStream_t = CUstream_st*;
enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorStreamCaptureUnsupported = 900,
  cudaErrorStreamCaptureInvalidated = 901
};
enum cudaStreamCaptureMode { cudaStreamCaptureModeGlobal = 0, cudaStreamCaptureModeThreadLocal, cudaStreamCaptureModeRelaxed };
enum { cudaStreamNonBlocking = 1 };
struct CUgraph_st;
using cudaGraph_t = CUgraph_st*;
struct CUgraphExec_st;
using cudaGraphExec_t = CUgraphExec_st*;
enum cudaMemcpyKind {
  cudaMemcpyHostToHost,
  cudaMemcpyHostToDevice,
  cudaMemcpyDeviceToHost,
  cudaMemcpyDeviceToDevice,
  cudaMemcpyDefault
};
enum cudaDeviceAttr {
  cudaDevAttrComputeCapabilityMajor,
  cudaDevAttrComputeCapabilityMinor,
  cudaDevAttrMaxSharedMemoryPerBlockOptin,
  cudaDevAttrMultiProcessorCount,
  cudaDevAttrPageableMemoryAccess
};
enum cudaMemoryType { cudaMemoryTypeUnregistered = 0, cudaMemoryTypeHost, cudaMemoryTypeDevice, cudaMemoryTypeManaged };
struct cudaPointerAttributes {
  cudaMemoryType type = cudaMemoryTypeUnregistered;
  int device = 0;
  void* devicePointer = nullptr;
  void* hostPointer = nullptr;
};
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize };

namespace quarot_cuda_emulation {

/// The emulated device: sm_86-like (int4 MMA, 99 KiB of opt-in shared memory per block);
/// the tests make it a Hopper (9.0) for the wgmma path.
inline int compute_major = 8, compute_minor = 6;
/// Opt-in shared memory per block: 99 KiB (sm_86), 227 KiB on the emulated Hopper.
inline int max_shared_optin() { return compute_major >= 9 ? 232448 : 101376; }
constexpr int default_shared = 48 * 1024;
/// Streaming multiprocessors: few, so that the automatic split-K plans of the tests' small
/// GEMMs stay at 2 splits or none (an emulated block costs its whole fiber set-up whatever its
/// K range; with a real device's 84-132 SMs they took up to 16).
inline int multiprocessors = 2;
/// Two emulated devices, alike, and the current one (cudaSetDevice): the tests check that
/// data allocated on one is not used while the other is current.
constexpr int devices = 2;
inline int current_device = 0;
/// cudaMalloc calls so far (the tests check that a buffer within its capacity does not
/// allocate) and stream-ordered allocations not yet freed (cudaMallocAsync / cudaFreeAsync).
inline std::atomic<long> malloc_calls{0}, async_live{0};

/// Whether the emulated devices read pageable host memory (as with HMM or on Grace
/// Hopper; the tests switch it on to check that such memory is then accepted).
inline bool pageable_memory_access = false;

/// Live device allocations, start -> (bytes, device), for cudaPointerGetAttributes.
struct allocation {
  std::size_t bytes;
  int device;
};
inline std::map<std::uintptr_t, allocation>& allocations() {
  static std::map<std::uintptr_t, allocation> m;
  return m;
}
inline std::mutex& allocation_mutex() {
  static std::mutex m;
  return m;
}
/// Device memory of `bytes` on the current device, filled with garbage (fresh device
/// memory is not zeros) and recorded for cudaPointerGetAttributes.
inline void* device_allocate(std::size_t bytes) {
  void* p = std::aligned_alloc(256, (bytes + 255) / 256 * 256);
  if (!p) return nullptr;
  std::memset(p, 0xa5, bytes);
  const std::lock_guard<std::mutex> lock(allocation_mutex());
  allocations()[reinterpret_cast<std::uintptr_t>(p)] = {bytes, current_device};
  return p;
}
inline void device_free(void* p) {
  if (!p) return;
  {
    const std::lock_guard<std::mutex> lock(allocation_mutex());
    allocations().erase(reinterpret_cast<std::uintptr_t>(p));
  }
  std::free(p);
}

/// Stream capture (cudaStreamBeginCapture .. cudaStreamEndCapture, any stream): kernels,
/// memsets and copies queued meanwhile are recorded, not run, and run at each
/// cudaGraphLaunch; stream-ordered allocations made meanwhile belong to the graph (made
/// once, freed with it). Calls the global capture mode forbids, because they may
/// synchronize or allocate outside the stream (cudaMalloc, cudaFree, cudaMemcpy,
/// cudaStreamSynchronize, cudaDeviceSynchronize), fail and invalidate the capture, as on
/// CUDA.
struct graph {
  std::vector<std::function<void()>> work;
  std::vector<void*> allocations;
  graph() = default;
  graph(graph&&) = default;
  graph& operator=(graph&&) = default;
  graph(const graph&) = delete;
  graph& operator=(const graph&) = delete;
  ~graph() {  // the graph's stream-ordered allocations go with it
    for (void* p : allocations) {
      --async_live;
      device_free(p);
    }
  }
};
struct capture_state {
  bool active = false, invalidated = false;
  graph recording;
};
inline capture_state& capture() {
  static capture_state c;
  return c;
}
/// cudaSuccess, or the error of a call the capture in progress forbids (invalidating it).
inline cudaError_t outside_capture() {
  if (!capture().active) return cudaSuccess;
  capture().invalidated = true;
  return cudaErrorStreamCaptureUnsupported;
}
/// Runs `work` now, or records it for the graph when a capture is in progress.
inline void enqueue(std::function<void()> work) {
  if (capture().active) capture().recording.work.push_back(std::move(work));
  else work();
}

inline thread_local cudaError_t last_error = cudaSuccess;
inline std::map<const void*, int>& shared_limits() {
  static std::map<const void*, int> m;
  return m;
}

/// One wgmma.mma_async issued by a thread, run when a wait_group retires its group (so
/// that a kernel which reads the accumulators or overwrites the operands too early sees
/// the consequences, as it would on the device).
struct wgmma_op {
  int* d;
  int n;
  std::uint64_t a, b;
  bool accumulate;
};
/// One 16-byte cp.async issued by a thread: its destination reads as poison from the issue
/// on and gets the data (read from global memory at the issue) only when a
/// cp.async.wait_group retires its group, so that a kernel which reads a buffer before
/// waiting, or refills one that is still being read, computes garbage, as it may on the
/// device.
struct copy_op {
  unsigned char* dst;
  unsigned char data[16];
};
/// One kind of a thread's asynchronous operations: those issued since the last commit, and
/// the committed groups, oldest first (*.commit_group / *.wait_group).
template <class Op>
struct async_queue {
  std::vector<Op> open;
  std::vector<std::vector<Op>> groups;
  void commit() {
    groups.push_back(std::move(open));
    open.clear();
  }
  /// Runs `complete` on every operation of the groups older than the `pending` newest.
  template <class F>
  void retire(int pending, F&& complete) {
    while (static_cast<int>(groups.size()) > pending) {
      for (const Op& op : groups.front()) complete(op);
      groups.erase(groups.begin());
    }
  }
};
/// A thread's wgmma and cp.async operations.
struct async_state {
  async_queue<wgmma_op> mma;
  async_queue<copy_op> copies;
};

/// ThreadSanitizer as the emulation's race checker. Built with -fsanitize=thread, every
/// emulated thread is a TSan fiber, switched to without synchronization, so TSan orders two
/// threads' memory accesses only by the happens-before edges that the device promises and
/// that the emulation annotates here: __syncthreads and the cluster barrier order each
/// arrival before every departure of the same generation; an mbarrier orders each arrival
/// on a phase (a TMA copy's completion of its bytes included) before every wait that sees
/// that phase complete; wgmma.wait_group is warp-synchronous; __threadfence orders as
/// fence.sc through the atomics an execution observes (threadfence()), and atomics alone
/// order nothing; a block's threads start after the host's launch and end before the
/// host's next step. Shuffles, votes and mma.sync order nothing. Anything else two threads
/// touch, one of them writing, is a data race that TSan reports with both stacks, whatever
/// order the scheduler happened to run them in. Asynchronous copies and MMAs access memory at
/// the wait that retires them, so a buffer refilled while an MMA in flight still reads it
/// is reported too. The emulation's own bookkeeping (barrier counters, mbarrier words,
/// scheduler state) and register exchanges are not checked (QUAROT_EMULATION_UNCHECKED,
/// `unchecked`). Blocks: the launch's scrambled block order is dealt to max_workers
/// threads, each running its share one block after another, each of its blocks ordered
/// after its previous one (its thread t is the worker's fiber t); blocks of different
/// workers are ordered only by what the kernel orders, so races between them are looked
/// for too (split-K's partials and tile counts), between any two blocks that fall to
/// different workers.
namespace race {
#if QUAROT_EMULATION_TSAN
inline void* current() { return __tsan_get_current_fiber(); }
/// Block workers (run_grid): threads that each run a share of a launch's blocks. Several
/// under the race checker, so that blocks of different workers are unordered; without
/// it, one (the launching thread).
constexpr unsigned max_workers = 4;
/// The race checker's fibers of worker w for `count` emulated threads. Made once and kept
/// (creating one maps TSan's per-thread state: per block, that was most of the checked
/// run's time); thread t of each of the worker's blocks is its fiber t, so the worker's
/// blocks are ordered one after another, and races are looked for between workers.
/// `snapshots`: the slots of the fibers that join the clocks of the fences before each
/// thread instead (fiber::race_snapshot), each made when first needed (snapshot()): few
/// threads fence, and TSan has room for about 8000 threads and fibers.
inline void** fibers(unsigned worker, std::size_t count, bool snapshots = false) {
  static std::vector<void*> made[2 * max_workers];  // each touched by its worker only
  std::vector<void*>& pool = made[2 * worker + (snapshots ? 1 : 0)];
  while (pool.size() < count) pool.push_back(snapshots ? nullptr : __tsan_create_fiber(0));
  return pool.data();
}
inline void* snapshot(void*& slot) {
  if (!slot) slot = __tsan_create_fiber(0);
  return slot;
}
inline void switch_to(void* fiber) { __tsan_switch_to_fiber(fiber, __tsan_switch_to_fiber_no_sync); }
/// Switches to `fiber` and orders everything the running fiber did before all it does next
/// (the fiber switch with synchronization).
inline void switch_to_after(void* fiber) { __tsan_switch_to_fiber(fiber, 0); }
/// The running fiber's depth of TSan's shadow stack, and unwinding it to `depth`: a
/// finished emulated thread never returns from fiber_main, and its fiber runs the same
/// thread of the worker's next block, so without the unwinding each block would leave its
/// frames there (a fiber runs thousands of blocks).
inline std::size_t depth() { return __tsan_testonly_shadow_stack_current_size(); }
inline void unwind_to(std::size_t d) {
  for (std::size_t n = depth(); n > d; --n) quarot_tsan_func_exit();
}
inline void release(const void* token) { __tsan_release(const_cast<void*>(token)); }
inline void acquire(const void* token) { __tsan_acquire(const_cast<void*>(token)); }
/// While alive, the running fiber's memory accesses are not checked.
struct unchecked {
  unchecked() { __tsan_ignore_thread_begin(); }
  ~unchecked() { __tsan_ignore_thread_end(); }
  unchecked(const unchecked&) = delete;
  unchecked& operator=(const unchecked&) = delete;
};
#else
inline void* current() { return nullptr; }
constexpr unsigned max_workers = 1;
inline void** fibers(unsigned, std::size_t, bool = false) { return nullptr; }
inline void* snapshot(void*&) { return nullptr; }
inline void switch_to(void*) {}
inline void switch_to_after(void*) {}
inline std::size_t depth() { return 0; }
inline void unwind_to(std::size_t) {}
inline void release(const void*) {}
inline void acquire(const void*) {}
struct unchecked {
  unchecked() {}  // user-provided: a guard variable is not "unused"
  unchecked(const unchecked&) = delete;
  unchecked& operator=(const unchecked&) = delete;
};
#endif
/// Faults for the race checker's own test (tests/cuda/race_checker.cpp): __syncthreads, or
/// every mbarrier, still keeps the threads in step but orders no memory, as a kernel
/// without them would be. TSan must then report the races that the missing order leaves.
inline bool syncthreads_orders_nothing = false;
inline bool mbarriers_order_nothing = false;
/// __threadfence orders nothing (threadfence()).
inline bool fences_order_nothing = false;
}  // namespace race

/// A few addresses of atomics (the race checker's fence model, threadfence()): plain
/// arrays, handled by unchecked functions only, as they are the emulation's bookkeeping.
struct atomic_addresses {
  static constexpr unsigned capacity = 8;
  const void* address[capacity];
  unsigned count = 0;
};
/// Adds `a` to `to` unless there.
QUAROT_EMULATION_UNCHECKED inline void note(atomic_addresses& to, const void* a) {
  for (unsigned i = 0; i < to.count; ++i)
    if (to.address[i] == a) return;
  if (to.count == atomic_addresses::capacity) {
    std::fprintf(stderr, "emulation: a thread observed more than %u atomics between fences\n", atomic_addresses::capacity);
    std::abort();
  }
  to.address[to.count++] = a;
}
QUAROT_EMULATION_UNCHECKED inline void note_all(atomic_addresses& to, const atomic_addresses& from) {
  for (unsigned i = 0; i < from.count; ++i) note(to, from.address[i]);
}

struct barrier_state;
struct thread_context {
  dim3 thread_idx, block_idx, block_dim, grid_dim;
  unsigned lane, warp;
  std::uint32_t* warp_slots;  // 32 lanes x 16 words
  unsigned char* shared;
  std::size_t shared_bytes;
  async_state* async;
  barrier_state* block_barrier;  // __syncthreads of the thread's block
  barrier_state* warp_barriers;  // its block's warps'
  unsigned cluster_rank, cluster_size;
  unsigned char* const* cluster_shared;  // each block's of the cluster, by rank
};

/// The fibers' context switch: on x86-64 our own (quarot_emulation_switch), elsewhere
/// ucontext. glibc's swapcontext makes a system call per switch (it swaps the signal
/// mask), and ASan's interceptor of it clears the shadow of the target's whole stack
/// before and after each switch (32 KiB of shadow per 256 KiB stack): that was two thirds
/// of the ASan build's emulated GEMM time, and it wiped the redzones of a suspended
/// emulated thread's frames, so that ASan missed a kernel's stack overflow after the
/// thread's first wait at a barrier (tests/cuda/stack_checker.cpp). The sanitizers do not
/// see our switch; the callers tell them of each one (__sanitizer_start/finish_switch_fiber,
/// race::switch_to).
#if defined(__x86_64__)
/// A suspended context: its stack pointer, where switch_context left (upwards) the SSE
/// and x87 control words, the callee-saved registers and the address to return to.
struct execution_context {
  void* sp = nullptr;
};
extern "C" void quarot_emulation_switch(void** save_sp, void* load_sp);
extern "C" void quarot_emulation_fiber_entry();
// System V x86-64: rbx, rbp, r12-r15, MXCSR's control bits and the x87 control word are
// the callee's to preserve; everything else a call may clobber. A COMDAT group, so that
// each executable keeps one copy however many of its translation units include this.
// quarot_emulation_fiber_entry is where a new context's first switch "returns" to: it
// calls the entry function that make_context left in r12's slot, on a stack aligned as a
// call wants; rbp's slot is 0, which ends frame-pointer unwinding there, as does the CFI.
__asm__(R"(
  .pushsection .text.quarot_emulation_switch,"axG",@progbits,quarot_emulation_switch,comdat
  .globl quarot_emulation_switch
  .hidden quarot_emulation_switch
  .type quarot_emulation_switch, @function
  .p2align 4
quarot_emulation_switch:
  .cfi_startproc
  pushq %rbp
  .cfi_adjust_cfa_offset 8
  pushq %rbx
  .cfi_adjust_cfa_offset 8
  pushq %r12
  .cfi_adjust_cfa_offset 8
  pushq %r13
  .cfi_adjust_cfa_offset 8
  pushq %r14
  .cfi_adjust_cfa_offset 8
  pushq %r15
  .cfi_adjust_cfa_offset 8
  subq $8, %rsp
  .cfi_adjust_cfa_offset 8
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .cfi_endproc
  .size quarot_emulation_switch, .-quarot_emulation_switch

  .globl quarot_emulation_fiber_entry
  .hidden quarot_emulation_fiber_entry
  .type quarot_emulation_fiber_entry, @function
  .p2align 4
quarot_emulation_fiber_entry:
  .cfi_startproc
  .cfi_undefined rip
  callq *%r12
  ud2
  .cfi_endproc
  .size quarot_emulation_fiber_entry, .-quarot_emulation_fiber_entry
  .popsection
)");
/// Suspends the running context into `from`, resumes `to`.
inline void switch_context(execution_context& from, const execution_context& to) {
  quarot_emulation_switch(&from.sp, to.sp);
}
/// A context that, resumed the first time, runs `entry` (which must never return) on
/// [stack, stack + bytes), with the running thread's SSE and x87 control words.
inline void make_context(execution_context& c, unsigned char* stack, std::size_t bytes, void (*entry)()) {
  auto top = reinterpret_cast<std::uintptr_t>(stack + bytes) & ~std::uintptr_t{15};
  // Eight slots (control words, r15 ... rbp, return address) from a 16-byte boundary:
  // quarot_emulation_fiber_entry's call then leaves the stack as the ABI asks.
  auto* slots = reinterpret_cast<std::uint64_t*>(top - 8 * 8);
  std::uint32_t mxcsr = 0;
  std::uint16_t x87 = 0;
  __asm__ volatile("stmxcsr %0\n\tfnstcw %1" : "=m"(mxcsr), "=m"(x87));
  slots[0] = mxcsr | (static_cast<std::uint64_t>(x87) << 32);
  slots[1] = slots[2] = slots[3] = slots[5] = slots[6] = 0;  // r15, r14, r13, rbx, rbp
  slots[4] = reinterpret_cast<std::uint64_t>(entry);  // r12
  slots[7] = reinterpret_cast<std::uint64_t>(&quarot_emulation_fiber_entry);
  c.sp = slots;
}
#else
struct execution_context {
  ucontext_t context;
};
inline void switch_context(execution_context& from, const execution_context& to) {
  swapcontext(&from.context, &to.context);
}
// getcontext returns twice: its caller's variables must not be live across it
// (-Wclobbered), hence a function of its own.
__attribute__((noinline)) inline void make_context(execution_context& c, unsigned char* stack, std::size_t bytes,
                                                   void (*entry)()) {
  getcontext(&c.context);
  c.context.uc_stack.ss_sp = stack;
  c.context.uc_stack.ss_size = bytes;
  c.context.uc_link = nullptr;
  makecontext(&c.context, entry, 0);
}
#endif

/// A block's threads are fibers run by one host thread: each runs until it
/// waits at a barrier, then the next one runs. A barrier releases when every thread that
/// has not returned has arrived (returned threads stop counting, as on the device).
struct barrier_state {
  explicit barrier_state(unsigned live_threads = 0) : live(live_threads) {}
  unsigned live = 0, arrived = 0, generation = 0;
  /// The race checker's tokens: generation g's arrivals release token[g % 2], its
  /// departures acquire it (two, since a thread may arrive at g + 1 before a slower one
  /// has left g).
  char token[2] = {};
  /// The race checker's fence model (threadfence()): the atomics that generation g's
  /// arrivals had observed, which its departures observe too, and a token on which its
  /// arrivals release the fences before them, which its departures acquire (null: none
  /// yet; a fresh one per generation, from block_run::fence_tokens).
  atomic_addresses observed[2];
  char* fences[2] = {nullptr, nullptr};
};
struct fiber {
  execution_context context;
  unsigned char* stack = nullptr;  // fiber_stacks()
  thread_context thread;
  async_state async;
  bool done = false;
  /// The barrier the fiber waits at and its generation then (null: not waiting); the
  /// scheduler resumes it only once that generation has passed.
  const barrier_state* waiting_on = nullptr;
  unsigned wait_generation = 0;
  /// The phase byte of the mbarrier the fiber waits on and the parity it waits to see
  /// completed (null: none).
  const std::uint8_t* waiting_phase = nullptr;
  unsigned wait_parity = 0;
  void* race_fiber = nullptr;  // the race checker's fiber (race::fibers)
  /// The race checker's model of __threadfence (fence.sc) and atomics (threadfence()):
  /// `race_snapshot` holds a fiber whose clock joins the clocks of the fences that happen
  /// before this thread's present (its own, and those barriers carry to it; `fenced`:
  /// any in this block), which each atomic the thread performs releases on the atomic's
  /// address; `observed` are the addresses of the atomics that happen before this
  /// thread's next fence, which that fence acquires.
  void** race_snapshot = nullptr;  // its slot (race::fibers(..., true), race::snapshot)
  bool fenced = false;
  atomic_addresses observed;
  std::size_t race_depth = 0;  // the shadow stack's depth where the thread began
  [[nodiscard]] bool runnable() const noexcept {
    return !done && (waiting_on == nullptr || waiting_on->generation != wait_generation) &&
           (waiting_phase == nullptr || (*waiting_phase & 1u) != wait_parity);
  }
};
/// The fibers of one block, or of a cluster's blocks (block r's thread t is fiber
/// r · threads + t).
struct block_run {
  execution_context scheduler;
  std::vector<fiber> fibers;
  std::size_t current = 0;
  std::vector<barrier_state> blocks;  // per block of the cluster
  std::vector<barrier_state> warps;   // block r's warp w at r · warps + w
  barrier_state cluster;
  void (*body)(void*) = nullptr;
  void* body_arg = nullptr;
  void* scheduler_stack_bottom = nullptr;
  std::size_t scheduler_stack_size = 0;
  void* race_scheduler = nullptr;  // the race checker's fiber of the launching thread
  char race_start = 0, race_end = 0;  // tokens: launch -> threads, threads -> host
  /// The barriers' fence tokens (barrier_state::fences) of the block running: freed with
  /// it, as freeing a token's memory is what makes TSan forget its clock.
  std::vector<std::unique_ptr<char>> fence_tokens;
};
constexpr std::size_t fiber_stack_bytes = 256 * 1024;
/// Worker w's stacks for `count` emulated threads, kept from launch to launch: thread t of
/// each of the worker's blocks runs on its stack t (and, under the race checker, as its
/// fiber t). Fresh stacks per launch cost page faults, twice under the race checker (its
/// shadow memory). Not zeroed (value-initializing 256 KiB per thread took a third of the
/// emulated tests' time).
inline const std::vector<std::unique_ptr<unsigned char[]>>& fiber_stacks(unsigned worker, std::size_t count) {
  static std::vector<std::unique_ptr<unsigned char[]>> kept[race::max_workers];  // each its worker's
  while (kept[worker].size() < count)
    kept[worker].push_back(std::make_unique_for_overwrite<unsigned char[]>(fiber_stack_bytes));
  return kept[worker];
}

inline block_run*& current_block() {
  static thread_local block_run* run = nullptr;
  return run;
}
inline thread_local thread_context* ctx = nullptr;

template <class T>
T* dynamic_shared() {
  return reinterpret_cast<T*>(ctx->shared);
}

/// Switches from the running fiber back to the scheduler (ASan and TSan are told). Not
/// QUAROT_EMULATION_UNCHECKED: TSan crashed switching fibers from such a function.
inline void yield_to_scheduler(bool finished = false) {
  block_run& b = *current_block();
  fiber& f = b.fibers[b.current];
  void* const scheduler_fiber = b.race_scheduler;
#if QUAROT_EMULATION_ASAN
  void* fake = nullptr;
  if (finished) {
    // The redzones of this thread's last frames (this one's, around `fake`) would stay
    // poisoned under the next thread that runs on its stack (fiber_stacks): cleared, from
    // a margin below this frame to the stack's top.
    unsigned char* const top = f.stack + fiber_stack_bytes;
    unsigned char* const low = std::max(f.stack, static_cast<unsigned char*>(__builtin_frame_address(0)) - 4096);
    __asan_unpoison_memory_region(low, static_cast<std::size_t>(top - low));
  }
  __sanitizer_start_switch_fiber(finished ? nullptr : &fake, b.scheduler_stack_bottom, b.scheduler_stack_size);
#endif
  // A finished thread ends before the host goes on; released after its last access of
  // the scheduler's state (on the host's stack). Its functions never return.
  if (finished) {
    race::release(&b.race_end);
    race::unwind_to(f.race_depth);
  }
  race::switch_to(scheduler_fiber);
  switch_context(f.context, b.scheduler);
#if QUAROT_EMULATION_ASAN
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
}

/// Generation g of a barrier is complete: every thread has left g - 1, whose observed
/// atomics then go (the slot serves g + 1).
QUAROT_EMULATION_UNCHECKED inline void advance(barrier_state& bar) {
  bar.arrived = 0;
  ++bar.generation;
  bar.observed[bar.generation % 2].count = 0;
  bar.fences[bar.generation % 2] = nullptr;
}

/// The fences before this thread (its snapshot's clock) released on `token` (an
/// atomic's address, a barrier generation's fence token), or `token` acquired into them
/// (`release` false: a barrier's departure). Instrumented, as it switches fibers.
inline void through_snapshot(fiber& me, const void* token, bool release) {
  race::switch_to(race::snapshot(*me.race_snapshot));
  if (release) race::release(token);
  else race::acquire(token);
  race::switch_to(me.race_fiber);
}

QUAROT_EMULATION_UNCHECKED inline void wait_at(barrier_state& bar, bool orders = true) {
  const unsigned generation = bar.generation;
  block_run& b = *current_block();
  fiber& me = b.fibers[b.current];
  atomic_addresses& carried = bar.observed[generation % 2];
  if (orders) {
    race::release(&bar.token[generation % 2]);
    note_all(carried, me.observed);
    if (me.fenced) {
      char*& fences = bar.fences[generation % 2];
      if (!fences) {  // (the vector's own accesses unchecked: bookkeeping)
        const race::unchecked guard;
        fences = b.fence_tokens.emplace_back(std::make_unique<char>()).get();
      }
      through_snapshot(me, fences, true);
    }
  }
  if (++bar.arrived == bar.live) {  // the last to arrive goes on at once
    advance(bar);
  } else {
    me.waiting_on = &bar;
    me.wait_generation = generation;
    while (bar.generation == generation) yield_to_scheduler();
    me.waiting_on = nullptr;
  }
  if (orders) {
    race::acquire(&bar.token[generation % 2]);
    note_all(me.observed, carried);
    if (char* const fences = bar.fences[generation % 2]) {
      through_snapshot(me, fences, false);
      me.fenced = true;
    }
  }
}

QUAROT_EMULATION_UNCHECKED inline void leave(barrier_state& bar) {
  --bar.live;
  if (bar.arrived > 0 && bar.arrived == bar.live) advance(bar);
}

/// The race checker's model of fence.sc (__threadfence) and relaxed atomics. The device's
/// fence.sc operations are totally ordered, each synchronizing with every later one (PTX
/// ISA, memory consistency model: Fence-SC order), but which comes first is decided as they
/// run; an execution proves fence F before fence G when an atomic write that F happens
/// before is observed by an atomic read that happens before G (else G before F would
/// make the read observe a write that follows it). So an atomic releases, on its address,
/// the clocks of the fences that happen before it (joined in its thread's snapshot fiber:
/// not the clock at the atomic, which would order the accesses after those fences too),
/// and a fence acquires on the addresses of the atomics that happen before it; barriers
/// carry both to the threads that leave them (mbarrier phases do not: no kernel fences
/// around one). A split-K block's partials are then ordered before the tile's last
/// block's reads only by fences between the stores and the count, and between the last
/// block's count and its reads, wherever the blocks run.
inline void observe_atomic(const void* address) {
  if (!QUAROT_EMULATION_TSAN) return;
  block_run& b = *current_block();
  fiber& me = b.fibers[b.current];
  if (me.fenced) through_snapshot(me, address, true);
  note(me.observed, address);
}
inline void threadfence() {
  if (!QUAROT_EMULATION_TSAN || race::fences_order_nothing) return;
  block_run& b = *current_block();
  fiber& me = b.fibers[b.current];
  for (unsigned i = 0; i < me.observed.count; ++i) race::acquire(me.observed.address[i]);
  me.observed.count = 0;
  race::switch_to_after(race::snapshot(*me.race_snapshot));  // the snapshot takes this clock
  race::switch_to(me.race_fiber);
  me.fenced = true;
}

inline void syncthreads() { wait_at(*ctx->block_barrier, !race::syncthreads_orders_nothing); }
/// A warp barrier; `orders`: whether it orders memory as __syncwarp does (a shuffle's,
/// vote's or mma.sync's does not: they exchange registers only).
inline void syncwarp(bool orders) { wait_at(ctx->warp_barriers[ctx->warp], orders); }
inline void cluster_sync() { wait_at(current_block()->cluster); }
inline unsigned cluster_rank() { return ctx->cluster_rank; }

/// Every lane publishes `count` 32-bit words, then may read any lane's (until the caller's
/// closing syncwarp(false)). Register exchanges: the callers run it and read the slots
/// unchecked, as the device orders no memory by them.
QUAROT_EMULATION_UNCHECKED inline std::uint32_t* publish(const std::uint32_t* words, int count) {
  for (int i = 0; i < count; ++i) ctx->warp_slots[16 * ctx->lane + i] = words[i];  // no memcpy: intercepted
  syncwarp(false);
  return ctx->warp_slots;
}

/// Fisher-Yates with a fixed xorshift (reproducible runs): the emulation's stand-in for
/// the orders the device does not promise.
template <class T>
void shuffle(std::vector<T>& v, std::uint64_t& state) {
  for (std::size_t i = v.size(); i > 1; --i) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    std::swap(v[i - 1], v[state % i]);
  }
}

QUAROT_EMULATION_UNCHECKED inline void fiber_main() {
  block_run& b = *current_block();
#if QUAROT_EMULATION_ASAN
  __sanitizer_finish_switch_fiber(nullptr, const_cast<const void**>(&b.scheduler_stack_bottom), &b.scheduler_stack_size);
#endif
  race::acquire(&b.race_start);  // the thread starts after the launch
  fiber& f = b.fibers[b.current];
  f.race_depth = race::depth() - 1;  // (the depth includes this function)
  b.body(b.body_arg);
  leave(*f.thread.block_barrier);
  leave(f.thread.warp_barriers[f.thread.warp]);
  leave(b.cluster);
  f.done = true;
  yield_to_scheduler(true);
}

inline void start_fiber(fiber& f) { make_context(f.context, f.stack, fiber_stack_bytes, fiber_main); }

/// Runs fiber f until it waits at a barrier or returns. Out of line: with the ucontext
/// fallback the switch returns twice, and the caller's loop variables must not be live
/// across it (-Wclobbered).
__attribute__((noinline)) inline void resume(block_run& b, fiber& f) {
  ctx = &f.thread;
#if QUAROT_EMULATION_ASAN
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, f.stack, fiber_stack_bytes);
#endif
  race::switch_to(f.race_fiber);
  switch_context(b.scheduler, f.context);
#if QUAROT_EMULATION_ASAN
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
  ctx = nullptr;
}

/// What every block of a launch shares: the kernel (type-erased), its geometry.
struct launch_shape {
  void (*body)(void*);
  void* body_arg;
  dim3 grid, block, cluster;
  std::size_t shmem;
  unsigned threads, per_cluster, warps;
};

/// Worker `worker`'s share of a launch: the clusters (single blocks without one) whose first
/// blocks are `firsts`, run one after another on the calling thread. A block's threads are
/// fibers; its shared memory, warp slots, and the worker's thread stacks serve each cluster
/// in turn (the race checker orders each cluster of a worker after the one before, so
/// reuse is no race). `state` seeds the schedule.
inline void run_clusters(const launch_shape& s, const std::vector<dim3>& firsts, unsigned worker, std::uint64_t state) {
  // The scheduler's accesses are bookkeeping, unchecked: among them resume()'s write of
  // ctx, the thread-local every emulated thread reads, at each switch.
  const race::unchecked scheduler;
  const unsigned threads = s.threads, per_cluster = s.per_cluster, warps = s.warps;
  block_run b;
  b.race_scheduler = race::current();
  void* const* const race_fibers = race::fibers(worker, static_cast<std::size_t>(per_cluster) * threads);
  void** const race_snapshots = race::fibers(worker, static_cast<std::size_t>(per_cluster) * threads, true);
  std::vector<std::vector<unsigned char>> shared(per_cluster, std::vector<unsigned char>(std::max<std::size_t>(s.shmem, 16)));
  std::vector<unsigned char*> shared_bases(per_cluster);
  for (unsigned r = 0; r < per_cluster; ++r) shared_bases[r] = shared[r].data();
  std::vector<std::uint32_t> slots(static_cast<std::size_t>(per_cluster) * warps * 32 * 16);
  b.fibers = std::vector<fiber>(static_cast<std::size_t>(per_cluster) * threads);
  const auto& stacks = fiber_stacks(worker, b.fibers.size());
  for (std::size_t i = 0; i < b.fibers.size(); ++i) b.fibers[i].stack = stacks[i].get();
  b.body = s.body;
  b.body_arg = s.body_arg;
  block_run* const outer = current_block();
  current_block() = &b;
  const unsigned all_warps = per_cluster * warps;
  std::vector<unsigned> warp_order(all_warps);
  std::vector<std::vector<unsigned>> lane_orders(all_warps);
  for (unsigned r = 0; r < per_cluster; ++r)
    for (unsigned w = 0; w < warps; ++w) {
      warp_order[r * warps + w] = r * warps + w;
      for (unsigned t = 32 * w; t < std::min(threads, 32 * w + 32); ++t) lane_orders[r * warps + w].push_back(r * threads + t);
    }
  for (const dim3 first : firsts) {
    b.blocks.assign(per_cluster, barrier_state(threads));
    b.warps.assign(all_warps, barrier_state());
    b.cluster = barrier_state(per_cluster * threads);
    for (unsigned r = 0; r < per_cluster; ++r) {
      std::fill(shared[r].begin(), shared[r].end(), static_cast<unsigned char>(0xcd));  // no stale values
      for (unsigned w = 0; w < warps; ++w) b.warps[r * warps + w].live = std::min(32u, threads - 32 * w);
      const dim3 block_index(first.x + r % s.cluster.x, first.y + (r / s.cluster.x) % s.cluster.y,
                             first.z + r / (s.cluster.x * s.cluster.y));
      for (unsigned t = 0; t < threads; ++t) {
        fiber& f = b.fibers[r * threads + t];
        f.done = false;
        f.waiting_on = nullptr;
        f.waiting_phase = nullptr;
        f.thread = thread_context{dim3(t % s.block.x, (t / s.block.x) % s.block.y, t / (s.block.x * s.block.y)),
                                  block_index,
                                  s.block,
                                  s.grid,
                                  t % 32,
                                  t / 32,
                                  slots.data() + (static_cast<std::size_t>(r) * warps + t / 32) * 32 * 16,
                                  shared[r].data(),
                                  shared[r].size(),
                                  &f.async,
                                  &b.blocks[r],
                                  b.warps.data() + static_cast<std::size_t>(r) * warps,
                                  r,
                                  per_cluster,
                                  shared_bases.data()};
        f.async = async_state{};
        f.race_fiber = race_fibers ? race_fibers[r * threads + t] : nullptr;
        f.race_snapshot = race_snapshots ? race_snapshots + (r * threads + t) : nullptr;
        f.fenced = false;
        f.observed.count = 0;
        start_fiber(f);
      }
    }
    race::release(&b.race_start);
    // The threads run warp by warp, in an order shuffled afresh for each phase: a warp
    // runs, its lanes in a shuffled order per round, until every lane waits at a barrier
    // (or has returned), then the next warp. The device promises no order between warps
    // outside barriers and lets warps run far ahead of one another, so a kernel that lacks
    // a __syncthreads between one warp's shared-memory write and another's read (or
    // between a read and the overwrite) reads the wrong value in some phase. (Fibers run
    // round-robin in thread order, the warps kept in step by their per-MMA warp barriers,
    // hid such a race in the GEMM's epilogue.) A cluster's warps mix in the same order.
    for (;;) {
      bool any = false;
      shuffle(warp_order, state);
      for (const unsigned w : warp_order)
        for (bool ran = true; ran;) {
          ran = false;
          std::vector<unsigned>& lanes = lane_orders[w];
          shuffle(lanes, state);
          for (const unsigned t : lanes) {
            fiber& f = b.fibers[t];
            if (!f.runnable()) continue;
            b.current = t;
            resume(b, f);
            ran = any = true;
          }
        }
      if (!any) break;
    }
    for (const fiber& f : b.fibers)
      if (!f.done) {
        std::fprintf(stderr,
                     "emulation: deadlock in block (%u, %u, %u): threads wait at barriers that never release%s\n",
                     f.thread.block_idx.x, f.thread.block_idx.y, f.thread.block_idx.z,
                     f.waiting_phase ? " (an mbarrier phase that never completes)" : "");
        std::abort();
      }
    race::acquire(&b.race_end);
    b.fence_tokens.clear();
  }
  current_block() = outer;
  ctx = nullptr;
}

template <class... P>
void run_grid(void (*kernel)(P...), dim3 grid, dim3 block, std::size_t shmem, dim3 cluster, P... args) {
  const unsigned threads = block.x * block.y * block.z;
  const unsigned per_cluster = cluster.x * cluster.y * cluster.z;
  const auto it = shared_limits().find(reinterpret_cast<const void*>(kernel));
  const int limit = it == shared_limits().end() ? default_shared : it->second;
  if (threads == 0 || threads > 1024 || grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 ||
      shmem > static_cast<std::size_t>(limit) || per_cluster == 0 || per_cluster > 8 || grid.x % cluster.x != 0 ||
      grid.y % cluster.y != 0 || grid.z % cluster.z != 0 || (per_cluster > 1 && compute_major < 9)) {
    last_error = cudaErrorInvalidConfiguration;
    return;
  }
  std::tuple<P...> arguments(args...);
  auto body = [](void* p) { std::apply(*static_cast<void (**)(P...)>(static_cast<void**>(p)[0]), *static_cast<std::tuple<P...>*>(static_cast<void**>(p)[1])); };
  void (*kernel_copy)(P...) = kernel;
  void* body_arg[2] = {&kernel_copy, &arguments};
  const launch_shape shape{body, body_arg, grid, block, cluster, shmem, threads, per_cluster, (threads + 31) / 32};
  // The clusters in a scrambled order (the device promises none): a kernel whose blocks
  // depend on one another's order (split-K's last block per tile) is checked for it.
  std::vector<dim3> order;
  order.reserve(static_cast<std::size_t>(grid.x) * grid.y * grid.z / per_cluster);
  for (unsigned bz = 0; bz < grid.z; bz += cluster.z)
    for (unsigned by = 0; by < grid.y; by += cluster.y)
      for (unsigned bx = 0; bx < grid.x; bx += cluster.x) order.push_back(dim3(bx, by, bz));
  std::uint64_t state = 0x9e3779b97f4a7c15ull ^ order.size();
  shuffle(order, state);
  // The clusters are dealt to the workers in that order; worker 0 is the launching thread,
  // the others (under the race checker) threads of their own: clusters of different
  // workers run at once, unordered but for what the kernel orders itself (atomics,
  // fences), so the race checker sees races between them, while a worker's clusters run
  // one after another. So clusters that differ only in z, the splits of one split-K tile
  // (the place where blocks of a launch talk), go to different workers, up to `workers`
  // of them: the column (x, y) starts at worker i % workers, i its first place in the
  // order, and its z-th cluster is z workers on. Without a z dimension, worker w takes
  // clusters w, w + workers, ... of the order.
  const unsigned workers = static_cast<unsigned>(std::min<std::size_t>(race::max_workers, order.size()));
  std::vector<std::vector<dim3>> shares(workers);
  std::map<std::pair<unsigned, unsigned>, std::size_t> column_start;
  for (std::size_t i = 0; i < order.size(); ++i) {
    const dim3 c = order[i];
    const std::size_t start = column_start.try_emplace({c.x, c.y}, i % workers).first->second;
    shares[(start + c.z / cluster.z) % workers].push_back(c);
  }
  std::vector<std::thread> pool;
  for (unsigned w = 1; w < workers; ++w)
    pool.emplace_back(run_clusters, std::cref(shape), std::cref(shares[w]), w, state ^ (0x2545f4914f6cdd1dull * w));
  run_clusters(shape, shares[0], 0, state);
  for (std::thread& t : pool) t.join();
}

/// A kernel launch: run now, or recorded by a stream capture in progress (the arguments
/// by value, as the device's launch copies them).
template <class... P>
void launch(void (*kernel)(P...), dim3 grid, dim3 block, std::size_t shmem, P... args) {
  enqueue([=] { run_grid(kernel, grid, block, shmem, dim3(1, 1, 1), args...); });
}
/// A launch in thread-block clusters of `cluster` blocks (cudaLaunchKernelEx with
/// cudaLaunchAttributeClusterDimension): compute capability 9.0, grid a multiple of it.
template <class... P>
void launch_cluster(void (*kernel)(P...), dim3 grid, dim3 block, dim3 cluster, std::size_t shmem, P... args) {
  enqueue([=] { run_grid(kernel, grid, block, shmem, cluster, args...); });
}

/// mma.sync.aligned.m16n8k{32,64}.row.col.s32.{s8,s4}.{s8,s4}.s32 on one warp, with the
/// PTX ISA's fragment layouts: g = lane / 4, c = lane % 4; A's registers 0..3 hold row g,
/// g + 8, g, g + 8 at K elements [E·c, E·c + E) of the first (registers 0, 1) or second
/// (2, 3) half of the step, E = 4 (s8) or 8 (s4), low byte / nibble first; B's registers
/// 0, 1 hold column g at the same K elements of each half; D's c0..c3 are (g, 2c),
/// (g, 2c + 1), (g + 8, 2c), (g + 8, 2c + 1).
/// Element `pos` (low first) of an MMA operand register: s4 nibbles or s8 bytes.
QUAROT_EMULATION_UNCHECKED inline int mma_element(bool s4, std::uint32_t reg, int pos) {
  if (s4) return ((static_cast<int>(reg >> (4 * pos)) & 0xf) ^ 8) - 8;
  return static_cast<int>(static_cast<std::int8_t>((reg >> (8 * pos)) & 0xffu));
}
QUAROT_EMULATION_UNCHECKED inline void mma(bool s4, int (&d)[4], const std::uint32_t (&a)[4],
                                           const std::uint32_t (&b)[2]) {
  const std::uint32_t words[6] = {a[0], a[1], a[2], a[3], b[0], b[1]};
  const std::uint32_t* all = publish(words, 6);
  const int per = s4 ? 8 : 4, steps = 8 * per;  // elements per register, K per MMA
  // (No lambdas: a lambda here would be a function of its own, instrumented.)
  const int g = static_cast<int>(ctx->lane) / 4, c = static_cast<int>(ctx->lane) % 4;
  for (int i = 0; i < 4; ++i) {
    const int row = g + 8 * (i / 2), col = 2 * c + i % 2;
    int s = 0;
    for (int k = 0; k < steps; ++k) {
      const int half = k / (4 * per), kk = k % (4 * per), pos = kk % per;
      const std::uint32_t a_reg = all[16 * ((row % 8) * 4 + kk / per) + 2 * half + row / 8];
      const std::uint32_t b_reg = all[16 * (col * 4 + kk / per) + 4 + half];
      s += mma_element(s4, a_reg, pos) * mma_element(s4, b_reg, pos);
    }
    d[i] += s;
  }
  syncwarp(false);
}

/// The shared-memory address of p (an offset into the block's dynamic shared memory).
inline std::size_t shared_address(const void* p) {
  const auto* b = static_cast<const unsigned char*>(p);
  if (b < ctx->shared || b >= ctx->shared + ctx->shared_bytes) {
    std::fprintf(stderr, "emulation: __cvta_generic_to_shared of a pointer outside dynamic shared memory\n");
    std::abort();
  }
  return static_cast<std::size_t>(b - ctx->shared);
}

/// A fault the tests inject: decode descriptors with LBO and SBO in each other's places — a
/// device that read the layout otherwise than sm90.cuh does, which the GEMM's self-test
/// (detail::wgmma_self_test) must catch.
inline bool wgmma_swapped_offsets = false;
/// Another: read 128-byte-swizzle operands without the swizzle — a device whose swizzle
/// differs from the one TMA applies here, which detail::wgmma_cluster_self_test must catch.
inline bool wgmma_ignores_swizzle = false;

/// The emulated devices' present settings (compute capability, pageable memory, the
/// wgmma faults above) as one positive number, for the library's per-device caches
/// (detail::once_per_device): a cached answer holds while the settings it was asked
/// under do.
inline int device_configuration() {
  return 1 + 8 * (10 * compute_major + compute_minor) + (pageable_memory_access ? 4 : 0) +
         (wgmma_swapped_offsets ? 2 : 0) + (wgmma_ignores_swizzle ? 1 : 0);
}

/// The 128-byte swizzle (TMA's CU_TENSOR_MAP_SWIZZLE_128B, wgmma's layout type 1): the
/// 16-byte chunk of shared address `at` (bits 4-6) XORed with its bits 7-9.
constexpr std::size_t swizzle128(std::size_t at) { return at ^ (((at >> 7) & 7u) << 4); }

/// An s8 operand in shared memory through a wgmma descriptor, decoded once per MMA. Only
/// the no-swizzle K-major layout is emulated: element (row, k) is byte (row / 8)·SBO +
/// (k / 16)·LBO + (row % 8)·16 + k % 16 from the start address (PTX ISA, "Shared Memory
/// Matrix Layout").
struct shared_operand {
  std::size_t start, lbo, sbo;
  bool swizzled;  // 128-byte swizzle
  explicit shared_operand(std::uint64_t desc)
      : start((desc & 0x3fffu) << 4), lbo(((desc >> 16) & 0x3fffu) << 4), sbo(((desc >> 32) & 0x3fffu) << 4),
        swizzled((desc >> 62) == 1) {
    if ((desc >> 49 & 7u) != 0 || ((desc >> 62) != 0 && !swizzled)) {
      std::fprintf(stderr, "emulation: only no-swizzle and 128-byte-swizzle wgmma descriptors with base offset 0 are emulated\n");
      std::abort();
    }
    if (wgmma_swapped_offsets) std::swap(lbo, sbo);
  }
  /// The 32 bytes (k = 0..31) of `row`, gathered 16 at a time: k = 16h..16h + 15 are
  /// contiguous in either layout (the swizzle moves whole 16-byte chunks), so the race
  /// checker sees two accesses, not 32.
  void row(int row, std::int8_t (&out)[32]) const {
    for (int h = 0; h < 2; ++h) {
      // 128-byte swizzle, K-major: rows of 128 bytes in 8-row groups SBO apart, the 16-byte
      // chunk of address bits 4-6 XORed with bits 7-9 of the address formed.
      const std::size_t swizzled_at = start + (row / 8) * sbo + (row % 8) * 128 + 16 * h;
      const std::size_t at = swizzled ? (wgmma_ignores_swizzle ? swizzled_at : swizzle128(swizzled_at))
                                      : start + (row / 8) * sbo + h * lbo + (row % 8) * 16;
      if (at + 16 > ctx->shared_bytes) {
        std::fprintf(stderr, "emulation: wgmma operand bytes %zu..%zu past the %zu bytes of shared memory\n", at,
                     at + 15, ctx->shared_bytes);
        std::abort();
      }
      std::memcpy(out + 16 * h, ctx->shared + at, 16);
    }
  }
};

/// wgmma.mma_async.m64nNk32.s32.s8.s8 for this thread's N / 2 accumulators (warp w of its
/// warpgroup, g = lane / 4, c = lane % 4: register 4j + 2i + e is row 16w + g + 8i,
/// column 8j + 2c + e), deferred to the wait_group that retires it.
inline void wgmma_s8(int* d, int n, std::uint64_t a, std::uint64_t b, bool accumulate) {
  ctx->async->mma.open.push_back(wgmma_op{d, n, a, b, accumulate});
}
/// One output's 32-term s8 dot product, on the thread's private copies of the operands
/// (unchecked: the copies were, when made).
QUAROT_EMULATION_UNCHECKED inline int dot32(const std::int8_t* a, const std::int8_t* b) {
  int s = 0;
  for (int k = 0; k < 32; ++k) s += a[k] * b[k];
  return s;
}
inline void run_wgmma(const wgmma_op& op) {
  const int w = static_cast<int>(ctx->warp % 4), g = static_cast<int>(ctx->lane / 4), c = static_cast<int>(ctx->lane % 4);
  const shared_operand a(op.a), b(op.b);
  std::int8_t a_rows[2][32], b_row[32];
  for (int i = 0; i < 2; ++i) a.row(16 * w + g + 8 * i, a_rows[i]);
  for (int j = 0; j < op.n / 8; ++j)
    for (int e = 0; e < 2; ++e) {
      b.row(8 * j + 2 * c + e, b_row);
      for (int i = 0; i < 2; ++i) {
        const int s = dot32(a_rows[i], b_row);
        int& out = op.d[4 * j + 2 * i + e];
        out = op.accumulate ? out + s : s;
      }
    }
}
inline void wgmma_commit() { ctx->async->mma.commit(); }
/// wgmma.wait_group.sync.aligned: the warp's lanes leave it together (.sync), so once any
/// lane goes on, every lane's retired MMAs have read their operands — what lets one lane
/// release a stage buffer for its whole warp, as the cluster kernel's consumers do (and
/// CUTLASS's TMA pipelines).
inline void wgmma_wait(int pending) {
  ctx->async->mma.retire(pending, run_wgmma);
  syncwarp(true);
}

/// cp.async.cg.shared.global of 16 bytes (`bytes` = 0: zeros), deferred as copy_op says.
inline void cp_async16(void* smem, const void* gmem, int bytes) {
  copy_op op{static_cast<unsigned char*>(smem), {}};
  if (bytes) std::memcpy(op.data, gmem, 16);
  std::memset(smem, 0xa5, 16);  // poison until the wait that retires it
  ctx->async->copies.open.push_back(op);
}
inline void cp_async_commit() { ctx->async->copies.commit(); }
inline void cp_async_wait(int pending) {
  ctx->async->copies.retire(pending, [](const copy_op& op) { std::memcpy(op.dst, op.data, 16); });
}

[[noreturn]] inline void fault(const char* what) {
  std::fprintf(stderr, "emulation: %s\n", what);
  std::abort();
}

/// An mbarrier (PTX ISA "mbarrier"), kept in its 8 bytes of shared memory: the pending
/// arrivals of the current phase, the arrival count that restarts each phase, the
/// transaction bytes still expected (negative while copies land before their
/// expect_tx), and the phase parity (with a mark that it was initialized). A phase
/// completes when no arrival is pending and the byte count is zero.
struct mbarrier_word {
  std::int32_t tx;
  std::uint16_t pending;
  std::uint8_t count;
  std::uint8_t phase;  // 0xb0 | parity
};
static_assert(sizeof(mbarrier_word) == 8);
/// The 8 bytes at bar's offset in the shared memory of the cluster's block `cta`.
QUAROT_EMULATION_UNCHECKED inline mbarrier_word& mbarrier_word_at(const void* bar, unsigned cta) {
  if (cta >= ctx->cluster_size) fault("mbarrier of a block outside the cluster");
  const std::size_t at = shared_address(bar);
  if (at % 8 != 0 || at + 8 > ctx->shared_bytes) fault("mbarrier misaligned or past shared memory");
  return *reinterpret_cast<mbarrier_word*>(ctx->cluster_shared[cta] + at);
}
/// The initialized barrier there.
QUAROT_EMULATION_UNCHECKED inline mbarrier_word& mbarrier_in(const void* bar, unsigned cta) {
  mbarrier_word& w = mbarrier_word_at(bar, cta);
  if ((w.phase & 0xfeu) != 0xb0u) fault("mbarrier used before mbarrier.init");
  return w;
}
/// For the race checker: an arrival on barrier w's current phase (a copy's completion of
/// bytes included) releases the phase's token; a wait that sees phase parity `parity`
/// complete acquires it.
QUAROT_EMULATION_UNCHECKED inline void phase_release(const mbarrier_word& w) {
  if (!race::mbarriers_order_nothing) race::release(reinterpret_cast<const char*>(&w) + (w.phase & 1u));
}
QUAROT_EMULATION_UNCHECKED inline void phase_acquire(const mbarrier_word& w, unsigned parity) {
  if (!race::mbarriers_order_nothing) race::acquire(reinterpret_cast<const char*>(&w) + parity);
}
QUAROT_EMULATION_UNCHECKED inline void mbarrier_init(std::uint64_t* bar, unsigned count) {
  if (count == 0 || count > 255) fault("mbarrier.init count out of the emulated range");
  mbarrier_word_at(bar, ctx->cluster_rank) =
      mbarrier_word{0, static_cast<std::uint16_t>(count), static_cast<std::uint8_t>(count), 0xb0};
}
QUAROT_EMULATION_UNCHECKED inline void mbarrier_settle(mbarrier_word& w) {
  if (w.pending == 0 && w.tx == 0) {
    w.phase ^= 1u;
    w.pending = w.count;
  }
}
/// One arrival on block cta's barrier, expecting `tx` more bytes first.
QUAROT_EMULATION_UNCHECKED inline void mbarrier_arrive(std::uint64_t* bar, unsigned tx, unsigned cta) {
  mbarrier_word& w = mbarrier_in(bar, cta);
  if (w.pending == 0) fault("mbarrier arrival with none pending");
  phase_release(w);
  w.tx += static_cast<std::int32_t>(tx);
  --w.pending;
  mbarrier_settle(w);
}
QUAROT_EMULATION_UNCHECKED inline void mbarrier_wait(std::uint64_t* bar, unsigned parity) {
  const mbarrier_word& w = mbarrier_in(bar, ctx->cluster_rank);
  if ((w.phase & 1u) == parity) {
    fiber& me = current_block()->fibers[current_block()->current];
    me.waiting_phase = &w.phase;
    me.wait_parity = parity;
    while ((w.phase & 1u) == parity) yield_to_scheduler();
    me.waiting_phase = nullptr;
  }
  phase_acquire(w, parity);
}

/// A copy's completion of `bytes` on barrier w (its writes ordered before the waits that
/// see the phase complete).
QUAROT_EMULATION_UNCHECKED inline void mbarrier_complete_tx(mbarrier_word& w, std::size_t bytes) {
  phase_release(w);
  w.tx -= static_cast<std::int32_t>(bytes);
  mbarrier_settle(w);
}

/// The emulated tensor map (cuTensorMapEncodeTiled's arguments that the emulation
/// supports: 2-D, u8, no interleave, no swizzle or 128-byte swizzle), in CUtensorMap's
/// 128 bytes.
struct tensor_map_2d {
  const unsigned char* base;
  std::uint64_t dims[2], stride;
  std::uint32_t box[2];
  bool swizzled;  // 128-byte swizzle
};
static_assert(sizeof(tensor_map_2d) <= sizeof(CUtensorMap));
inline CUresult encode_tensor_map(CUtensorMap* map, CUtensorMapDataType type, cuuint32_t rank, void* address,
                                  const cuuint64_t* dims, const cuuint64_t* strides, const cuuint32_t* box,
                                  const cuuint32_t* element_strides, CUtensorMapInterleave interleave,
                                  CUtensorMapSwizzle swizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill fill) {
  // The driver's rules (cuTensorMapEncodeTiled) for what is emulated.
  const bool ok = type == CU_TENSOR_MAP_DATA_TYPE_UINT8 && rank == 2 && reinterpret_cast<std::uintptr_t>(address) % 16 == 0 &&
                  strides[0] % 16 == 0 && strides[0] >= dims[0] && dims[0] >= 1 && dims[1] >= 1 && box[0] >= 1 &&
                  box[0] <= 256 && box[1] >= 1 && box[1] <= 256 && box[0] % 16 == 0 && element_strides[0] == 1 &&
                  element_strides[1] == 1 && interleave == CU_TENSOR_MAP_INTERLEAVE_NONE &&
                  (swizzle == CU_TENSOR_MAP_SWIZZLE_NONE || (swizzle == CU_TENSOR_MAP_SWIZZLE_128B && box[0] <= 128)) &&
                  fill == CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE;
  if (!ok) return CUDA_ERROR_INVALID_VALUE;
  const tensor_map_2d t{static_cast<const unsigned char*>(address), {dims[0], dims[1]}, strides[0], {box[0], box[1]},
                        swizzle == CU_TENSOR_MAP_SWIZZLE_128B};
  *map = CUtensorMap{};
  std::memcpy(static_cast<void*>(map), &t, sizeof t);
  return CUDA_SUCCESS;
}
/// cp.async.bulk.tensor.2d (.multicast::cluster when cta_mask != 0): the box at (x, y),
/// zeros outside the tensor, to dst in this block or in each masked block of the cluster,
/// each completing the box's bytes on its barrier at bar's offset. The copy lands at the
/// issue: a buffer refilled while MMAs that read it are in flight (emulated wgmma reads
/// at its wait_group) gives those MMAs the new data.
inline void tma_load_2d(void* dst, const CUtensorMap* map, std::uint64_t* bar, int x, int y, std::uint16_t cta_mask) {
  tensor_map_2d t;
  std::memcpy(&t, static_cast<const void*>(map), sizeof t);
  const std::size_t at = shared_address(dst), bytes = std::size_t{t.box[0]} * t.box[1];
  if (at % (t.swizzled ? 1024 : 128) != 0) fault("TMA destination not aligned for its swizzle");
  if (at + bytes > ctx->shared_bytes) fault("TMA box past the end of shared memory");
  if (cta_mask >> ctx->cluster_size) fault("TMA multicast to a block outside the cluster");
  const unsigned targets = cta_mask ? cta_mask : 1u << ctx->cluster_rank;
  for (unsigned r = 0; r < ctx->cluster_size; ++r) {
    if (!(targets >> r & 1u)) continue;
    mbarrier_in(bar, r);  // initialized before the copy lands
    unsigned char* s = ctx->cluster_shared[r];
    for (std::uint32_t i = 0; i < t.box[1]; ++i)
      for (std::uint32_t j = 0; j < t.box[0]; ++j) {
        const std::int64_t row = std::int64_t{y} + i, col = std::int64_t{x} + j;
        const bool inside = row >= 0 && col >= 0 && static_cast<std::uint64_t>(row) < t.dims[1] &&
                            static_cast<std::uint64_t>(col) < t.dims[0];
        const std::size_t o = t.swizzled ? swizzle128(at + i * t.box[0] + j) : at + i * t.box[0] + j;
        s[o] = inside ? t.base[static_cast<std::uint64_t>(row) * t.stride + static_cast<std::uint64_t>(col)] : 0;
      }
    mbarrier_complete_tx(mbarrier_in(bar, r), bytes);
  }
}

}  // namespace quarot_cuda_emulation

inline std::size_t __cvta_generic_to_shared(const void* p) { return ::quarot_cuda_emulation::shared_address(p); }

#define threadIdx (::quarot_cuda_emulation::ctx->thread_idx)
#define blockIdx (::quarot_cuda_emulation::ctx->block_idx)
#define blockDim (::quarot_cuda_emulation::ctx->block_dim)
#define gridDim (::quarot_cuda_emulation::ctx->grid_dim)

inline void __syncthreads() { ::quarot_cuda_emulation::syncthreads(); }

template <class T>
QUAROT_EMULATION_UNCHECKED T __shfl_sync(unsigned /*mask*/, T v, int src_lane) {
  static_assert(sizeof(T) == 4);
  std::uint32_t w;
  std::memcpy(&w, &v, 4);
  const std::uint32_t* all = ::quarot_cuda_emulation::publish(&w, 1);
  const std::uint32_t source = all[16 * (static_cast<unsigned>(src_lane) % 32)];  // a plain read: unchecked
  T out;
  std::memcpy(&out, &source, 4);
  ::quarot_cuda_emulation::syncwarp(false);
  return out;
}

template <class T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask) {
  return __shfl_sync(mask, v, static_cast<int>(::quarot_cuda_emulation::ctx->lane ^ static_cast<unsigned>(lane_mask)));
}

QUAROT_EMULATION_UNCHECKED inline int __all_sync(unsigned /*mask*/, int predicate) {
  const std::uint32_t w = predicate != 0;
  const std::uint32_t* all = ::quarot_cuda_emulation::publish(&w, 1);
  const unsigned lanes = std::min(32u, blockDim.x * blockDim.y * blockDim.z -
                                           32 * ((threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)) / 32));
  int result = 1;
  for (unsigned l = 0; l < lanes; ++l) result &= all[16 * l] != 0;
  ::quarot_cuda_emulation::syncwarp(false);
  return result;
}

template <class T>
T __ldg(const T* p) {
  return *p;
}

inline unsigned __vsub4(unsigned a, unsigned b) {
  unsigned r = 0;
  for (int i = 0; i < 4; ++i) r |= ((((a >> (8 * i)) & 0xffu) - ((b >> (8 * i)) & 0xffu)) & 0xffu) << (8 * i);
  return r;
}

inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __int_as_float(int i) {
  float f;
  std::memcpy(&f, &i, 4);
  return f;
}
inline float __uint_as_float(unsigned u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline unsigned __float_as_uint(float f) {
  unsigned u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline int min(int a, int b) { return a < b ? a : b; }
// Atomics are relaxed, as CUDA's: by themselves they order no other memory; the kernels
// order through __threadfence, whose fence-to-fence order the race checker follows
// through the atomics (observe_atomic, threadfence).
inline unsigned long long atomicMin(unsigned long long* p, unsigned long long v) {
  ::quarot_cuda_emulation::observe_atomic(p);
  std::atomic_ref<unsigned long long> word(*p);
  unsigned long long old = word.load(std::memory_order_relaxed);
  while (v < old && !word.compare_exchange_weak(old, v, std::memory_order_relaxed)) {
  }
  return old;
}
inline unsigned atomicAdd(unsigned* p, unsigned v) {
  ::quarot_cuda_emulation::observe_atomic(p);
  return std::atomic_ref<unsigned>(*p).fetch_add(v, std::memory_order_relaxed);
}
inline void __threadfence() { ::quarot_cuda_emulation::threadfence(); }
template <class T>
T __ldcg(const T* p) {
  return *p;
}
[[noreturn]] inline void __trap() { std::abort(); }

// ---------------------------------------------------------------------- runtime API
enum cudaDriverEntryPointQueryResult { cudaDriverEntryPointSuccess = 0, cudaDriverEntryPointSymbolNotFound = 1 };
enum { cudaEnableDefault = 0 };
/// The driver functions the backend takes through cudart: cuTensorMapEncodeTiled.
inline cudaError_t cudaGetDriverEntryPointByVersion(const char* symbol, void** fn, unsigned, unsigned long long,
                                                    cudaDriverEntryPointQueryResult* result) {
  const bool known = std::strcmp(symbol, "cuTensorMapEncodeTiled") == 0;
  *fn = known ? reinterpret_cast<void*>(&::quarot_cuda_emulation::encode_tensor_map) : nullptr;
  if (result) *result = known ? cudaDriverEntryPointSuccess : cudaDriverEntryPointSymbolNotFound;
  return cudaSuccess;
}
inline cudaError_t cudaGetLastError() {
  const cudaError_t e = ::quarot_cuda_emulation::last_error;
  ::quarot_cuda_emulation::last_error = cudaSuccess;
  return e;
}
inline const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated: return "cudaErrorStreamCaptureInvalidated";
  }
  return "cudaErrorUnknown";
}
inline const char* cudaGetErrorString(cudaError_t e) { return cudaGetErrorName(e); }
inline cudaError_t cudaGetDeviceCount(int* n) {
  *n = ::quarot_cuda_emulation::devices;
  return cudaSuccess;
}
inline cudaError_t cudaGetDevice(int* d) {
  *d = ::quarot_cuda_emulation::current_device;
  return cudaSuccess;
}
inline cudaError_t cudaSetDevice(int d) {
  if (d < 0 || d >= ::quarot_cuda_emulation::devices) return cudaErrorInvalidValue;
  ::quarot_cuda_emulation::current_device = d;
  return cudaSuccess;
}
inline cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr a, int /*device*/) {
  switch (a) {
    case cudaDevAttrComputeCapabilityMajor: *v = ::quarot_cuda_emulation::compute_major; break;
    case cudaDevAttrComputeCapabilityMinor: *v = ::quarot_cuda_emulation::compute_minor; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *v = ::quarot_cuda_emulation::max_shared_optin(); break;
    case cudaDevAttrMultiProcessorCount: *v = ::quarot_cuda_emulation::multiprocessors; break;
    case cudaDevAttrPageableMemoryAccess: *v = ::quarot_cuda_emulation::pageable_memory_access ? 1 : 0; break;
  }
  return cudaSuccess;
}
template <class Kernel>
cudaError_t cudaFuncSetAttribute(Kernel* kernel, cudaFuncAttribute, int value) {
  if (value > ::quarot_cuda_emulation::max_shared_optin()) return cudaErrorInvalidValue;
  ::quarot_cuda_emulation::shared_limits()[reinterpret_cast<const void*>(kernel)] = value;
  return cudaSuccess;
}
inline cudaError_t cudaMalloc(void** p, std::size_t bytes) {
  if (const cudaError_t e = ::quarot_cuda_emulation::outside_capture()) return e;
  ++::quarot_cuda_emulation::malloc_calls;
  *p = ::quarot_cuda_emulation::device_allocate(bytes);
  return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
inline cudaError_t cudaFree(void* p) {
  if (const cudaError_t e = ::quarot_cuda_emulation::outside_capture()) return e;
  ::quarot_cuda_emulation::device_free(p);
  return cudaSuccess;
}
inline cudaError_t cudaMallocAsync(void** p, std::size_t bytes, cudaStream_t) {
  *p = ::quarot_cuda_emulation::device_allocate(bytes);
  if (!*p) return cudaErrorMemoryAllocation;
  ++::quarot_cuda_emulation::async_live;
  if (::quarot_cuda_emulation::capture().active) ::quarot_cuda_emulation::capture().recording.allocations.push_back(*p);
  return cudaSuccess;
}
inline cudaError_t cudaFreeAsync(void* p, cudaStream_t) {
  if (::quarot_cuda_emulation::capture().active) return cudaSuccess;  // the graph's: freed with it
  if (p) --::quarot_cuda_emulation::async_live;
  ::quarot_cuda_emulation::device_free(p);
  return cudaSuccess;
}
/// Device memory (an interior pointer too) by the allocation that holds it; anything else
/// is unregistered host memory (the emulation has no page-locked or managed memory).
inline cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* a, const void* p) {
  namespace emu = ::quarot_cuda_emulation;
  *a = cudaPointerAttributes{};
  a->device = -2;  // CUDA's value for unregistered memory
  const auto at = reinterpret_cast<std::uintptr_t>(p);
  const std::lock_guard<std::mutex> lock(emu::allocation_mutex());
  auto it = emu::allocations().upper_bound(at);  // the first allocation after p
  if (it == emu::allocations().begin()) return cudaSuccess;
  --it;  // the last one starting at or before p
  if (at < it->first + it->second.bytes) {
    a->type = cudaMemoryTypeDevice;
    a->device = it->second.device;
    a->devicePointer = const_cast<void*>(p);
  }
  return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind, cudaStream_t = nullptr) {
  if (bytes) ::quarot_cuda_emulation::enqueue([=] { std::memcpy(dst, src, bytes); });
  return cudaSuccess;
}
inline cudaError_t cudaMemcpy(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind k) {
  if (const cudaError_t e = ::quarot_cuda_emulation::outside_capture()) return e;
  return cudaMemcpyAsync(dst, src, bytes, k);
}
inline cudaError_t cudaMemsetAsync(void* p, int v, std::size_t bytes, cudaStream_t = nullptr) {
  if (bytes) ::quarot_cuda_emulation::enqueue([=] { std::memset(p, v, bytes); });
  return cudaSuccess;
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return ::quarot_cuda_emulation::outside_capture(); }
inline cudaError_t cudaDeviceSynchronize() { return ::quarot_cuda_emulation::outside_capture(); }
inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) {
  static int streams = 0;  // distinct non-null handles; the emulation runs all work in order
  *s = reinterpret_cast<cudaStream_t>(static_cast<std::uintptr_t>(0x1000 + 16 * ++streams));
  return cudaSuccess;
}
inline cudaError_t cudaStreamDestroy(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode) {
  namespace emu = ::quarot_cuda_emulation;
  if (s == nullptr || emu::capture().active) return cudaErrorInvalidValue;  // not the legacy stream, not nested
  emu::capture() = emu::capture_state{};
  emu::capture().active = true;
  return cudaSuccess;
}
inline cudaError_t cudaStreamEndCapture(cudaStream_t, cudaGraph_t* g) {
  namespace emu = ::quarot_cuda_emulation;
  emu::capture().active = false;
  auto* recorded = new emu::graph(std::move(emu::capture().recording));
  *g = reinterpret_cast<cudaGraph_t>(recorded);
  if (!emu::capture().invalidated) return cudaSuccess;
  delete recorded;
  *g = nullptr;
  return cudaErrorStreamCaptureInvalidated;
}
inline cudaError_t cudaGraphInstantiate(cudaGraphExec_t* e, cudaGraph_t g, unsigned long long = 0) {
  *e = reinterpret_cast<cudaGraphExec_t>(g);  // the emulation replays the recording itself
  return g ? cudaSuccess : cudaErrorInvalidValue;
}
inline cudaError_t cudaGraphLaunch(cudaGraphExec_t e, cudaStream_t) {
  if (::quarot_cuda_emulation::capture().active) return cudaErrorInvalidValue;
  for (const auto& work : reinterpret_cast<::quarot_cuda_emulation::graph*>(e)->work) work();
  return cudaSuccess;
}
inline cudaError_t cudaGraphExecDestroy(cudaGraphExec_t) { return cudaSuccess; }
inline cudaError_t cudaGraphDestroy(cudaGraph_t g) {
  delete reinterpret_cast<::quarot_cuda_emulation::graph*>(g);
  return cudaSuccess;
}
