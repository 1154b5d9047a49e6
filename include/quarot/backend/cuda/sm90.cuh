// quarot — Hopper (sm_90a) primitives for the CUDA GEMM: warpgroup MMA (wgmma) on
// operands in shared memory, its fences, and the shared-memory matrix descriptor.
//
// wgmma.mma_async (PTX ISA, "Asynchronous Warpgroup Level Matrix Multiply-Accumulate"):
// the four warps of a warpgroup (128 threads, warp rank a multiple of 4) multiply a 64 x K
// tile of A by a K x N tile of B, both read from shared memory through 64-bit descriptors,
// into per-thread accumulator registers. It is issued asynchronously: results may be read
// only after wgmma.commit_group + wgmma.wait_group, and shared memory written by threads
// (st.shared, cp.async) must be made visible to the MMA's async proxy first
// (fence.proxy.async). The instructions need the arch-specific target sm_90a
// (__CUDA_ARCH_FEAT_SM90_ALL); built for anything else the wrappers trap, and the host
// side only selects them after probing the running binary (cuda::detail::has_wgmma).
//
// Shared-memory layout used here: 8-bit operands, K-major, no swizzle ("interleave"): a
// core matrix is 8 rows x 16 bytes stored as 128 contiguous bytes; the descriptor's
// leading byte offset (LBO) steps between core matrices along K, its stride byte offset
// (SBO) between groups of 8 rows, i.e. byte(row, k) = (row / 8)·SBO + (k / 16)·LBO +
// (row % 8)·16 + k % 16 from the descriptor's start address.
//
// Accumulators of an m64nNk32 .s32 wgmma (N / 2 registers per thread): with warp w of the
// warpgroup, g = lane / 4 and c = lane % 4, register 4j + 2i + e holds row 16w + g + 8i,
// column 8j + 2c + e — the mma.sync m16n8 layout, one 16-row slab per warp, repeated for
// every 8 columns.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include <cuda.h>  // CUtensorMap (the driver API's tensor map; encoded through cudart's entry point)

#include "common.cuh"

namespace quarot::cuda::detail {

/// The layout's LBO: the K chunks of an 8-row group are adjacent core matrices.
inline constexpr int interleaved_lbo = 128;

/// Byte offset of (row, k) in the no-swizzle K-major layout with the given SBO.
__device__ __forceinline__ int interleaved_offset(int row, int k, int sbo) {
  return (row / 8) * sbo + (k / 16) * interleaved_lbo + (row % 8) * 16 + k % 16;
}

/// A shared-memory pointer as the 32-bit shared-window address PTX operands take.
__device__ __forceinline__ std::uint32_t shared_u32(const void* p) {
  return static_cast<std::uint32_t>(__cvta_generic_to_shared(p));
}

/// The descriptor of a no-swizzle K-major operand (interleaved_offset's layout) starting at
/// `p` (shared memory, 16-byte aligned): start address, LBO and SBO in 16-byte units; base
/// offset 0, layout type 0.
__device__ __forceinline__ std::uint64_t shared_matrix_descriptor(const void* p, int sbo) {
  const std::uint32_t address = shared_u32(p);
  return static_cast<std::uint64_t>((address >> 4) & 0x3fffu) |
         static_cast<std::uint64_t>((static_cast<unsigned>(interleaved_lbo) >> 4) & 0x3fffu) << 16 |
         static_cast<std::uint64_t>((static_cast<unsigned>(sbo) >> 4) & 0x3fffu) << 32;
}

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define QUAROT_CUDA_SM90A 1
#endif

/// Makes this thread's earlier shared-memory writes visible to the async proxy (wgmma).
__device__ __forceinline__ void fence_shared_for_async() {
#if defined(QUAROT_CUDA_SM90A)
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

/// Orders this thread's register accesses before the wgmma instructions that follow.
__device__ __forceinline__ void wgmma_fence() {
#if defined(QUAROT_CUDA_SM90A)
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}

/// Closes the group of the wgmma instructions issued since the last commit.
__device__ __forceinline__ void wgmma_commit() {
#if defined(QUAROT_CUDA_SM90A)
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#elif defined(QUAROT_CUDA_EMULATION)
  ::quarot_cuda_emulation::wgmma_commit();
#endif
}

/// Waits until at most N committed wgmma groups are pending.
template <int N>
__device__ __forceinline__ void wgmma_wait() {
#if defined(QUAROT_CUDA_SM90A)
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#elif defined(QUAROT_CUDA_EMULATION)
  ::quarot_cuda_emulation::wgmma_wait(N);
#endif
}

/// Keeps the compiler from moving accesses of the accumulators across the asynchronous
/// MMA's issue and wait points (the registers change behind its back in between).
template <int R>
__device__ __forceinline__ void wgmma_fence_operands(int (&d)[R]) {
#if defined(QUAROT_CUDA_SM90A)
  QUAROT_CUDA_UNROLL
  for (int i = 0; i < R; ++i) asm volatile("" : "+r"(d[i])::"memory");
#else
  (void)d;
#endif
}

/// d (+)= A·Bᵀ for a 64 x 32 s8 tile A and an N x 32 s8 tile B (N = 128 or 256; both
/// K-major, from their descriptors), int32 results, N / 2 per thread; `accumulate` false
/// starts from zero.
template <int N>
__device__ __forceinline__ void wgmma_m64nNk32_s8(int (&d)[N / 2], std::uint64_t a, std::uint64_t b, bool accumulate) {
  static_assert(N == 128 || N == 256, "wgmma tiles of 128 or 256 columns");
#if defined(QUAROT_CUDA_SM90A)
  if constexpr (N == 128)
    asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k32.s32.s8.s8 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, "
      "%22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, "
      "%42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, "
      "%62, %63}, "
      "%64, %65, p;\n"
      "}\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3]), "+r"(d[4]), "+r"(d[5]), "+r"(d[6]), "+r"(d[7]),
        "+r"(d[8]), "+r"(d[9]), "+r"(d[10]), "+r"(d[11]), "+r"(d[12]), "+r"(d[13]), "+r"(d[14]), "+r"(d[15]),
        "+r"(d[16]), "+r"(d[17]), "+r"(d[18]), "+r"(d[19]), "+r"(d[20]), "+r"(d[21]), "+r"(d[22]), "+r"(d[23]),
        "+r"(d[24]), "+r"(d[25]), "+r"(d[26]), "+r"(d[27]), "+r"(d[28]), "+r"(d[29]), "+r"(d[30]), "+r"(d[31]),
        "+r"(d[32]), "+r"(d[33]), "+r"(d[34]), "+r"(d[35]), "+r"(d[36]), "+r"(d[37]), "+r"(d[38]), "+r"(d[39]),
        "+r"(d[40]), "+r"(d[41]), "+r"(d[42]), "+r"(d[43]), "+r"(d[44]), "+r"(d[45]), "+r"(d[46]), "+r"(d[47]),
        "+r"(d[48]), "+r"(d[49]), "+r"(d[50]), "+r"(d[51]), "+r"(d[52]), "+r"(d[53]), "+r"(d[54]), "+r"(d[55]),
        "+r"(d[56]), "+r"(d[57]), "+r"(d[58]), "+r"(d[59]), "+r"(d[60]), "+r"(d[61]), "+r"(d[62]), "+r"(d[63])
      : "l"(a), "l"(b), "r"(static_cast<int>(accumulate)));
  else
    asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %130, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n256k32.s32.s8.s8 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, "
      "%22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, "
      "%42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, "
      "%62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, "
      "%82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, %96, %97, %98, %99, %100, %101, "
      "%102, %103, %104, %105, %106, %107, %108, %109, %110, %111, %112, %113, %114, %115, %116, %117, %118, "
      "%119, %120, %121, %122, %123, %124, %125, %126, %127}, "
      "%128, %129, p;\n"
      "}\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3]), "+r"(d[4]), "+r"(d[5]), "+r"(d[6]), "+r"(d[7]),
        "+r"(d[8]), "+r"(d[9]), "+r"(d[10]), "+r"(d[11]), "+r"(d[12]), "+r"(d[13]), "+r"(d[14]), "+r"(d[15]),
        "+r"(d[16]), "+r"(d[17]), "+r"(d[18]), "+r"(d[19]), "+r"(d[20]), "+r"(d[21]), "+r"(d[22]), "+r"(d[23]),
        "+r"(d[24]), "+r"(d[25]), "+r"(d[26]), "+r"(d[27]), "+r"(d[28]), "+r"(d[29]), "+r"(d[30]), "+r"(d[31]),
        "+r"(d[32]), "+r"(d[33]), "+r"(d[34]), "+r"(d[35]), "+r"(d[36]), "+r"(d[37]), "+r"(d[38]), "+r"(d[39]),
        "+r"(d[40]), "+r"(d[41]), "+r"(d[42]), "+r"(d[43]), "+r"(d[44]), "+r"(d[45]), "+r"(d[46]), "+r"(d[47]),
        "+r"(d[48]), "+r"(d[49]), "+r"(d[50]), "+r"(d[51]), "+r"(d[52]), "+r"(d[53]), "+r"(d[54]), "+r"(d[55]),
        "+r"(d[56]), "+r"(d[57]), "+r"(d[58]), "+r"(d[59]), "+r"(d[60]), "+r"(d[61]), "+r"(d[62]), "+r"(d[63]),
        "+r"(d[64]), "+r"(d[65]), "+r"(d[66]), "+r"(d[67]), "+r"(d[68]), "+r"(d[69]), "+r"(d[70]), "+r"(d[71]),
        "+r"(d[72]), "+r"(d[73]), "+r"(d[74]), "+r"(d[75]), "+r"(d[76]), "+r"(d[77]), "+r"(d[78]), "+r"(d[79]),
        "+r"(d[80]), "+r"(d[81]), "+r"(d[82]), "+r"(d[83]), "+r"(d[84]), "+r"(d[85]), "+r"(d[86]), "+r"(d[87]),
        "+r"(d[88]), "+r"(d[89]), "+r"(d[90]), "+r"(d[91]), "+r"(d[92]), "+r"(d[93]), "+r"(d[94]), "+r"(d[95]),
        "+r"(d[96]), "+r"(d[97]), "+r"(d[98]), "+r"(d[99]), "+r"(d[100]), "+r"(d[101]), "+r"(d[102]),
        "+r"(d[103]), "+r"(d[104]), "+r"(d[105]), "+r"(d[106]), "+r"(d[107]), "+r"(d[108]), "+r"(d[109]),
        "+r"(d[110]), "+r"(d[111]), "+r"(d[112]), "+r"(d[113]), "+r"(d[114]), "+r"(d[115]), "+r"(d[116]),
        "+r"(d[117]), "+r"(d[118]), "+r"(d[119]), "+r"(d[120]), "+r"(d[121]), "+r"(d[122]), "+r"(d[123]),
        "+r"(d[124]), "+r"(d[125]), "+r"(d[126]), "+r"(d[127])
      : "l"(a), "l"(b), "r"(static_cast<int>(accumulate)));
#elif defined(QUAROT_CUDA_EMULATION)
  ::quarot_cuda_emulation::wgmma_s8(d, N, a, b, accumulate);  // the tests' CPU emulation
#else
  (void)d, (void)a, (void)b, (void)accumulate;
  __trap();  // wgmma needs a binary built for sm_90a
#endif
}

/// 1 where the code that runs on the device was built for sm_90a (wgmma available), else 0.
template <int = 0>
__global__ void wgmma_probe(int* out) {
#if defined(QUAROT_CUDA_SM90A)
  *out = 1;
#elif defined(QUAROT_CUDA_EMULATION)
  *out = ::quarot_cuda_emulation::compute_major >= 9;
#else
  *out = 0;
#endif
}

/// Whether the current device runs this program's sm_90a code: compute capability 9.0 and
/// kernels built for sm_90a (CMake architecture "90a"; plain "90" has no wgmma). A probe
/// kernel answers once per device.
inline bool has_wgmma() {
  if (compute_capability() != 90) return false;
  static std::atomic<int> known[64];
  return once_per_device(known, [](int) {
    device_buffer<int> flag(1);
    launch(wgmma_probe<0>, 1, 1, 0, nullptr, flag.data());
    int yes = 0;
    flag.download(&yes, 1);
    return yes != 0;
  });
}

// ------------------------------------------------ clusters, mbarriers and TMA (sm_90a)
// The cluster kernel of the W8A8 GEMM (integer_gemm_wgmma_cluster_kernel) loads its
// operands with the Tensor Memory Accelerator: cp.async.bulk.tensor copies a box of a 2-D
// tensor (described by a CUtensorMap) into shared memory and signals an mbarrier by the
// bytes it wrote (complete_tx), optionally into the same place of several blocks of a
// thread-block cluster at once (.multicast::cluster). The PTX ISA sections are
// "Parallel Synchronization and Communication Instructions: mbarrier" and "Data Movement
// and Conversion Instructions: cp.async.bulk.tensor".
//
// Layout: a TMA box of rows x 128 bytes with CU_TENSOR_MAP_SWIZZLE_128B stores row r at
// byte 128·r with its 16-byte chunk c at chunk c ^ (r % 8) — the swizzle is a function of
// the shared-memory address (bits 4-6 ^= bits 7-9), so a tile must start 1024-aligned.
// wgmma reads the same layout through a descriptor of layout type 1 (128-byte swizzle),
// K-major: 8-row groups SBO = 1024 bytes apart, LBO unused; a K step of 32 bytes within
// the 128-byte row advances the start address by 32 (the hardware applies the XOR to the
// address it forms, as the TMA did).

/// The byte offset of (row, byte) in a 128-byte-swizzled tile of 128-byte rows.
__host__ __device__ constexpr int swizzled_offset(int row, int byte) {
  return row * 128 + ((((byte / 16) ^ row) & 7) * 16) + byte % 16;
}

/// The wgmma descriptor of a K-major s8 operand in the 128-byte swizzle layout starting at
/// `p` (shared memory; the tile 1024-aligned, p at most 96 bytes past a row start): start
/// address, LBO 1 (unused), SBO 1024, base offset 0, layout type 1.
__device__ __forceinline__ std::uint64_t swizzled_matrix_descriptor(const void* p) {
  const std::uint32_t address = shared_u32(p);
  return static_cast<std::uint64_t>((address >> 4) & 0x3fffu) | std::uint64_t{1} << 16 |
         std::uint64_t{1024 >> 4} << 32 | std::uint64_t{1} << 62;
}

/// This block's rank in its cluster.
__device__ __forceinline__ unsigned cluster_rank() {
#if defined(QUAROT_CUDA_SM90A)
  unsigned r;
  asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(r));
  return r;
#elif defined(QUAROT_CUDA_EMULATION)
  return ::quarot_cuda_emulation::cluster_rank();
#else
  return 0;
#endif
}

/// Every thread of every block of the cluster arrives here before any goes on (release /
/// acquire: shared-memory writes before it are visible to the cluster after it). Not the
/// .aligned form, which needs every lane of a warp to execute it together: the GEMM's
/// producer warp reaches it after a loop that only its lane 0 ran.
__device__ __forceinline__ void cluster_sync() {
#if defined(QUAROT_CUDA_SM90A)
  asm volatile("barrier.cluster.arrive.release;\nbarrier.cluster.wait.acquire;\n" ::: "memory");
#elif defined(QUAROT_CUDA_EMULATION)
  ::quarot_cuda_emulation::cluster_sync();
#endif
}

/// mbarrier.init: `count` arrivals complete a phase (with the transaction bytes at zero).
__device__ __forceinline__ void mbarrier_init(std::uint64_t* bar, unsigned count) {
#if defined(QUAROT_CUDA_SM90A)
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(shared_u32(bar)), "r"(count) : "memory");
#elif defined(QUAROT_CUDA_EMULATION)
  ::quarot_cuda_emulation::mbarrier_init(bar, count);
#else
  (void)bar, (void)count;
#endif
}

/// Makes this thread's mbarrier.init visible to the cluster and to the async proxy (TMA).
__device__ __forceinline__ void fence_barrier_init() {
#if defined(QUAROT_CUDA_SM90A)
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#endif
}

/// One arrival that also expects `bytes` of transactions (the TMA copies of a stage).
__device__ __forceinline__ void mbarrier_arrive_expect_tx(std::uint64_t* bar, unsigned bytes) {
#if defined(QUAROT_CUDA_SM90A)
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(shared_u32(bar)), "r"(bytes)
               : "memory");
#elif defined(QUAROT_CUDA_EMULATION)
  ::quarot_cuda_emulation::mbarrier_arrive(bar, bytes, ::quarot_cuda_emulation::cluster_rank());
#else
  (void)bar, (void)bytes;
#endif
}

/// One arrival (release, cluster scope) on the barrier at bar's place in the shared memory
/// of the cluster's block `cta` (this block included), where `signal` holds. The predicate
/// is applied inside the instruction rather than by a branch: a branch around it in a
/// loop of wgmma would be a divergent path, and ptxas then serializes the wgmma (C7518).
__device__ __forceinline__ void mbarrier_arrive_cluster(std::uint64_t* bar, unsigned cta, bool signal) {
#if defined(QUAROT_CUDA_SM90A)
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      ".reg .b32 remote;\n"
      "setp.ne.b32 p, %2, 0;\n"
      "mapa.shared::cluster.u32 remote, %0, %1;\n"
      "@p mbarrier.arrive.release.cluster.shared::cluster.b64 _, [remote];\n"
      "}\n" ::"r"(shared_u32(bar)),
      "r"(cta), "r"(static_cast<unsigned>(signal))
      : "memory");
#elif defined(QUAROT_CUDA_EMULATION)
  if (signal) ::quarot_cuda_emulation::mbarrier_arrive(bar, 0, cta);
#else
  (void)bar, (void)cta, (void)signal;
#endif
}

/// Waits until the barrier's phase of parity `parity` has completed. On the device a wait
/// longer than 10 s traps (the launch fails with an error instead of hanging: an arrival
/// or a transaction byte count that never comes).
__device__ __forceinline__ void mbarrier_wait(std::uint64_t* bar, unsigned parity) {
#if defined(QUAROT_CUDA_SM90A)
  const auto try_wait = [&] {
    std::uint32_t done;
    asm volatile(
        "{\n"
        ".reg .pred p;\n"
        "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        "selp.u32 %0, 1, 0, p;\n"
        "}\n"
        : "=r"(done)
        : "r"(shared_u32(bar)), "r"(parity)
        : "memory");
    return done != 0;
  };
  if (try_wait()) return;
  const auto now = [] {
    std::uint64_t t;
    asm volatile("mov.u64 %0, %%globaltimer;\n" : "=l"(t));
    return t;
  };
  const std::uint64_t start = now();
  while (!try_wait())
    if (now() - start > 10'000'000'000ull) __trap();
#elif defined(QUAROT_CUDA_EMULATION)
  ::quarot_cuda_emulation::mbarrier_wait(bar, parity);
#else
  (void)bar, (void)parity;
#endif
}

/// TMA: the box at (x bytes, y rows) of `map` into `dst` (shared memory, 1024-aligned for
/// the 128-byte swizzle), completing its bytes on `bar` — in this block, or with
/// `cta_mask` != 0 at the same places in each block of the cluster whose bit is set.
__device__ __forceinline__ void tma_load_2d(void* dst, const CUtensorMap* map, std::uint64_t* bar, int x, int y,
                                            std::uint16_t cta_mask = 0) {
#if defined(QUAROT_CUDA_SM90A)
  if (cta_mask == 0)
    asm volatile(
        "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4}], [%2];\n" ::
            "r"(shared_u32(dst)),
        "l"(reinterpret_cast<std::uint64_t>(map)), "r"(shared_u32(bar)), "r"(x), "r"(y)
        : "memory");
  else
    asm volatile(
        "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster "
        "[%0], [%1, {%4, %5}], [%2], %3;\n" ::"r"(shared_u32(dst)),
        "l"(reinterpret_cast<std::uint64_t>(map)), "r"(shared_u32(bar)), "h"(cta_mask), "r"(x), "r"(y)
        : "memory");
#elif defined(QUAROT_CUDA_EMULATION)
  ::quarot_cuda_emulation::tma_load_2d(dst, map, bar, x, y, cta_mask);
#else
  (void)dst, (void)map, (void)bar, (void)x, (void)y, (void)cta_mask;
#endif
}

/// The tensor map of `rows` rows of `row_bytes` bytes at `base` (device memory, 16-byte
/// aligned; row_bytes a multiple of 16) for TMA boxes of `box_rows` rows x 128 bytes in the
/// 128-byte swizzle; bytes outside the tensor read as zeros. cuTensorMapEncodeTiled is a
/// driver function: it is taken through cudart (cudaGetDriverEntryPointByVersion), so the
/// program links no libcuda of its own.
inline CUtensorMap swizzled_tensor_map(const void* base, std::size_t row_bytes, std::size_t rows, unsigned box_rows) {
  using encode_fn = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*,
                                 const cuuint64_t*, const cuuint32_t*, const cuuint32_t*, CUtensorMapInterleave,
                                 CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);
  static const encode_fn encode = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found{};
    QUAROT_CUDA_CHECK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &found));
    quarot::detail::require(fn != nullptr && found == cudaDriverEntryPointSuccess,
                            "CUDA: the driver has no cuTensorMapEncodeTiled (query result ", static_cast<int>(found), ")");
    return reinterpret_cast<encode_fn>(fn);
  }();
  CUtensorMap map{};
  const cuuint64_t dims[2] = {row_bytes, rows}, strides[1] = {row_bytes};
  const cuuint32_t box[2] = {128, box_rows}, element_strides[2] = {1, 1};
  const CUresult r = encode(&map, CU_TENSOR_MAP_DATA_TYPE_UINT8, 2, const_cast<void*>(base), dims, strides, box,
                            element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                            CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  quarot::detail::require(r == CUDA_SUCCESS, "CUDA: cuTensorMapEncodeTiled failed (CUresult ", static_cast<int>(r),
                          ") for ", rows, " rows of ", row_bytes, " bytes in boxes of ", box_rows, " x 128");
  return map;
}

}  // namespace quarot::cuda::detail
