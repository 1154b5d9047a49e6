// quarot — CUDA integer GEMM policies (W8A8, W4A8, W4A4 on tensor cores) and the W4A16
// weight-only decode GEMM, behind the CPU's templates: gemm::integer_gemm of an
// integer_policy<cuda::device, W, A> and gemm::weight_only_gemm of a
// weight_only_policy<cuda::device, W, A> take the same packed_weights as the CPU kernels.
//
// Integer GEMM: y = x·Wᵀ with x quantized per token on the device (device_activations)
// and W quantized per channel or per group (pack_weights). Tensor-core MMA:
//   wgmma.m64nNk32 s8 x s8 -> s32      (sm_90a, every policy; Hopper has no int4 MMA, so
//                                      4-bit operands are widened to s8 in shared memory;
//                                      sm90.cuh),
//   mma.sync.m16n8k64 s4 x s4 -> s32  (W4A4 on sm_80-sm_89),
//   mma.sync.m16n8k32 s8 x s8 -> s32  (W8A8, W4A8, and W4A4 where neither of the above
//                                      runs), 4-bit operands widened to s8 in registers.
// Fragment layouts (PTX ISA, "Matrix fragments for mma.m16n8k32 / m16n8k64"): with
// g = lane / 4 and c = lane % 4, A's registers 0..3 hold 32 bits of row g, g + 8, g, g + 8
// at K bytes 4c, 4c, 16 + 4c, 16 + 4c of the step; B's registers 0..1 hold 32 bits of
// column g at K bytes 4c and 16 + 4c; the int32 results c0..c3 are (g, 2c), (g, 2c + 1),
// (g + 8, 2c), (g + 8, 2c + 1). Both MMAs eat 32 bytes of K per row and step, so A and W
// are plain K-contiguous rows: a fragment register is one aligned 32-bit load.
//
// Epilogue (the CPU kernels' operations in their order, so outputs are bit-identical to
// gemm::integer_gemm on the CPU): per weight group the exact int32 Σ q_a·(w - z), then
// c = fma(scale, float(acc), c) from c = 0; finally y = fma(row scale, c, bias).
//
// mma.sync tiles: 128 x 64 outputs per 4-warp block, K through a 3-stage cp.async
// pipeline in shared memory (rows XOR-swizzled by 16-byte chunk so fragment loads are
// conflict-free); fragments are read from shared memory with 32-bit loads (no ldmatrix
// yet). wgmma tiles: 128 x 256 (per-channel weights) or 128 x 128 (groups) per two
// warpgroups (wgmma_tile_shape).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "../../core/int4.hpp"
#include "../../core/matrix_view.hpp"
#include "../../gemm/integer_gemm.hpp"
#include "../../gemm/packing.hpp"
#include "../../gemm/policies.hpp"
#include "../../gemm/weight_only_gemm.hpp"
#include "common.cuh"
#include "fwht.cuh"
#include "quantize.cuh"
#include "sm90.cuh"

namespace quarot::cuda {

/// Packed weights in device memory: N_padded rows (N rounded up to 128, zero rows) of
/// k_padded signed levels w - offset (int4: raw - 8, two per byte, low nibble first; int8:
/// raw), with per (group, column) scales and zero points z - offset, group-major
/// ([g · n_padded + col]). Act-order weights (GPTQ's g_idx) keep the CPU's packed K order,
/// in which every group is a contiguous run: position kk holds input column k_order[kk],
/// and the GEMMs gather the activations' columns in that order first
/// (gather_activation_levels, gather_activation_values).
struct device_weights {
  std::size_t n = 0, k = 0, n_padded = 0, k_padded = 0, row_bytes = 0;
  std::size_t groups = 1, group_size = 0;
  int bits = 4;
  bool symmetric = true;  ///< every zero point (after the offset) is 0: no row-sum correction
  device_buffer<std::uint8_t> data;
  device_buffer<float> scales;
  device_buffer<std::int32_t> zeros;
  device_buffer<std::uint32_t> k_order;  ///< act-order: K entries, a permutation; else empty

  [[nodiscard]] bool act_order() const noexcept { return !k_order.empty(); }

  /// Uploads the CPU's packed weights (gemm::pack_weights), act-order ones included.
  static device_weights upload(const gemm::packed_weights& w, cudaStream_t stream = nullptr) {
    check_k_order(w);
    device_weights d;
    d.n = w.n;
    d.k = w.k;
    d.bits = w.bits;
    d.groups = w.groups;
    d.group_size = w.groups == 1 ? 0 : w.group_size;
    d.n_padded = (w.n + 127) / 128 * 128;  // whole tiles for either kernel (64 or 128 columns)
    d.k_padded = (w.k + 63) / 64 * 64;
    d.row_bytes = w.bits == 4 ? d.k_padded / 2 : d.k_padded;
    const int offset = w.bits == 4 ? 8 : 0;
    std::vector<std::uint8_t> data(d.n_padded * d.row_bytes, 0);
    std::vector<float> scales(d.groups * d.n_padded, 0.0f);
    std::vector<std::int32_t> zeros(d.groups * d.n_padded, 0);
    std::vector<std::int8_t> levels(w.k);
    for (std::size_t col = 0; col < w.n; ++col) {
      for (std::size_t kk = 0; kk < w.k; ++kk) levels[kk] = static_cast<std::int8_t>(w.raw(col, kk) - offset);
      const std::span<std::uint8_t> row(data.data() + col * d.row_bytes, d.row_bytes);
      if (w.bits == 8) std::memcpy(row.data(), levels.data(), w.k);
      else pack_int4(levels, row);  // the plain int4 layout (core/int4.hpp)
      for (std::size_t g = 0; g < d.groups; ++g) {
        scales[g * d.n_padded + col] = w.scales[w.group_index(g, col)];
        const int z = w.zeros[w.group_index(g, col)] - offset;
        zeros[g * d.n_padded + col] = z;
        d.symmetric = d.symmetric && z == 0;
      }
    }
    d.data = device_buffer<std::uint8_t>(data.size());
    d.data.upload(data.data(), data.size(), stream);
    d.scales = device_buffer<float>(scales.size());
    d.scales.upload(scales.data(), scales.size(), stream);
    d.zeros = device_buffer<std::int32_t>(zeros.size());
    d.zeros.upload(zeros.data(), zeros.size(), stream);
    if (!w.k_order.empty()) {
      d.k_order = device_buffer<std::uint32_t>(w.k_order.size());
      d.k_order.upload(w.k_order.data(), w.k_order.size(), stream);
    }
    QUAROT_CUDA_CHECK(cudaStreamSynchronize(stream));  // the host vectors die here
    return d;
  }

 private:
  /// A k_order must be a permutation of the K columns: the gather kernels index the
  /// activation rows with it, so an entry past K would read outside them.
  static void check_k_order(const gemm::packed_weights& w) {
    if (w.k_order.empty()) return;
    quarot::detail::require(w.k_order.size() == w.k, "CUDA GEMM: act-order weights have ", w.k_order.size(),
                            " k_order entries for K = ", w.k);
    std::vector<bool> seen(w.k, false);
    for (std::size_t kk = 0; kk < w.k; ++kk) {
      const std::uint32_t c = w.k_order[kk];
      quarot::detail::require(c < w.k, "CUDA GEMM: act-order k_order[", kk, "] = ", c, " is not a column of K = ",
                              w.k);
      quarot::detail::require(!seen[c], "CUDA GEMM: act-order k_order[", kk, "] = ", c, " repeats an earlier entry");
      seen[c] = true;
    }
  }
};

namespace detail {

/// Which MMA a kernel runs: s4 x s4 (k64) or s8 x s8 (k32).
enum class mma_kind { s4, s8 };

/// Four signed nibbles (16 bits, low first) as four s8 bytes.
__device__ __forceinline__ std::uint32_t widen_s4x4(std::uint32_t x) {
  const std::uint32_t u = (x & 0xfu) | ((x & 0xf0u) << 4) | ((x & 0xf00u) << 8) | ((x & 0xf000u) << 12);
  return __vsub4(u ^ 0x08080808u, 0x08080808u);  // per byte: (n ^ 8) - 8, no borrow between bytes
}

template <mma_kind Kind>
__device__ __forceinline__ void mma(int (&d)[4], const std::uint32_t (&a)[4], const std::uint32_t (&b)[2]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  if constexpr (Kind == mma_kind::s4)
    asm volatile(
        "mma.sync.aligned.m16n8k64.row.col.s32.s4.s4.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  else
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#elif defined(QUAROT_CUDA_EMULATION)
  ::quarot_cuda_emulation::mma(Kind == mma_kind::s4, d, a, b);  // the tests' CPU emulation
#else
  __trap();  // integer MMA needs sm_80 or later
#endif
}

/// The kernel's operands (device pointers).
struct cuda_gemm_operands {
  const std::uint8_t* a;           // M rows of a_row_bytes
  std::size_t a_row_bytes;
  const float* row_scales;         // M
  const std::int32_t* rowsums;     // M x groups level sums (asymmetric weights only)
  const std::uint8_t* w;           // n_padded rows of w_row_bytes
  std::size_t w_row_bytes;
  const float* scales;             // groups x n_padded
  const std::int32_t* zeros;       // groups x n_padded
  const float* bias;               // N or null
  std::size_t m, n, n_padded;
  int steps, group_steps, groups;  // K steps in all, per group, groups
  bool symmetric;

  // K is padded (to 64) past the last group, which the padding steps join: K = 96 in groups
  // of 32 is 3 groups over 4 steps of 32.
  /// The weight group of K step `step`.
  __device__ int group_of(int step) const { return min(step / group_steps, groups - 1); }
  /// Whether `step` is the first of its group (its MMA starts from zero).
  __device__ bool starts_group(int step) const {
    return (step % group_steps == 0) & (step / group_steps < groups);  // no branch: see integer_gemm_wgmma_kernel
  }
  /// Whether `step` is the last of its group (the group's sums are folded after it).
  __device__ bool ends_group(int step) const {
    return step + 1 == steps || ((step + 1) % group_steps == 0 && (step + 1) / group_steps < groups);
  }
};

/// Split-K of the mma.sync kernel (a parameter of its own: the wgmma kernel does not
/// split, and its parameters stay as they were). Split z (blockIdx.z of `splits`) runs K
/// steps [z · split_steps, min(steps, (z + 1) · split_steps)), the last one to the end,
/// and stores its exact int32 sums in `partials` (units x m x n_padded: one unit per group
/// for grouped weights, whose splits are whole groups, else one per split); the tile's
/// last split to finish, counted in `tile_done` (zeroed), folds them in the CPU's order.
/// splits <= 1: no split (the pointers unused).
struct split_k_operands {
  int splits, split_steps;
  std::int32_t* partials;
  unsigned* tile_done;

  /// The slot of unit `unit`'s int32 sum of output (r, col).
  __device__ std::int32_t* partial(const cuda_gemm_operands& op, int unit, std::size_t r, std::size_t col) const {
    return partials + (static_cast<std::size_t>(unit) * op.m + r) * op.n_padded + col;
  }
};

/// 16 bytes from global to shared memory, asynchronously (cp.async, sm_80+); `bytes` = 0
/// writes zeros instead (rows past M, K past the row's end).
__device__ __forceinline__ void copy16_async(void* smem, const void* gmem, int bytes) {
#if defined(QUAROT_CUDA_EMULATION)
  ::quarot_cuda_emulation::cp_async16(smem, gmem, bytes);  // lands at the wait that retires it
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(shared_u32(smem)), "l"(gmem), "r"(bytes));
#else
  __trap();
#endif
}
__device__ __forceinline__ void copy_async_commit() {
#if defined(QUAROT_CUDA_EMULATION)
  ::quarot_cuda_emulation::cp_async_commit();
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}
/// Waits until at most N committed copy groups are still in flight.
template <int N>
__device__ __forceinline__ void copy_async_wait() {
#if defined(QUAROT_CUDA_EMULATION)
  ::quarot_cuda_emulation::cp_async_wait(N);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#endif
}

/// The block tile of the integer GEMM: 128 x 64 outputs, 4 warps of 64 x 32 (4 x 4 MMA
/// tiles of 16 x 8); K in stages of KS elements (two MMA steps) through a 3-deep
/// cp.async pipeline in shared memory.
template <mma_kind Kind, int ABits, int WBits>
struct gemm_tile_shape {
  static constexpr int bm = 128, bn = 64, stages = 3;
  static constexpr int k_step = Kind == mma_kind::s4 ? 64 : 32;  // K per MMA
  static constexpr int ks = 2 * k_step;                          // K per stage
  static constexpr int a_chunks = ks * ABits / 8 / 16;           // 16-byte chunks per row and stage
  static constexpr int w_chunks = ks * WBits / 8 / 16;
  static constexpr int a_stage_bytes = bm * a_chunks * 16, w_stage_bytes = bn * w_chunks * 16;
  static constexpr int shared_bytes = stages * (a_stage_bytes + w_stage_bytes);
};

/// Byte offset of (row, byte) in a stage whose rows have C 16-byte chunks: the chunk index
/// is XORed with row bits so that the 8 rows a fragment load touches fall on different
/// banks (C = 4: rows differ in bits 1-2; C = 2: in bit 2).
template <int C>
__device__ __forceinline__ int swizzled(int row, int byte) {
  const int swz = (row >> (C == 4 ? 1 : 2)) & (C - 1);
  return row * C * 16 + ((((byte >> 4) ^ swz) << 4) | (byte & 15));
}

/// The two fragment words of one row (A) or column (B) for step j of a stage in shared
/// memory: K bytes 4c and 16 + 4c of the step as the MMA's element type.
template <mma_kind Kind, int Bits, int C>
__device__ __forceinline__ void shared_fragment_pair(const unsigned char* stage, int row, int j, int c,
                                                     std::uint32_t& lo, std::uint32_t& hi) {
  if constexpr (Kind == mma_kind::s4 || Bits == 8) {
    lo = *reinterpret_cast<const std::uint32_t*>(stage + swizzled<C>(row, j * 32 + 4 * c));
    hi = *reinterpret_cast<const std::uint32_t*>(stage + swizzled<C>(row, j * 32 + 16 + 4 * c));
  } else {  // s8 MMA on 4-bit data: 16 bytes per step, 2 bytes per 4 elements
    lo = widen_s4x4(*reinterpret_cast<const unsigned short*>(stage + swizzled<C>(row, j * 16 + 2 * c)));
    hi = widen_s4x4(*reinterpret_cast<const unsigned short*>(stage + swizzled<C>(row, j * 16 + 8 + 2 * c)));
  }
}

/// Row and column (in the block tile) of result register i of MMA tile (mt, nt) of the
/// warp at (wm, wn): c0..c3 = (g, 2c), (g, 2c + 1), (g + 8, 2c), (g + 8, 2c + 1).
__device__ __forceinline__ int result_row(int wm, int mt, int g, int i) { return wm + mt * 16 + g + 8 * (i / 2); }
__device__ __forceinline__ int result_col(int wn, int nt, int c, int i) { return wn + nt * 8 + 2 * c + (i % 2); }
/// f(mt, nt, i) for each of a warp's 4 x 4 MMA tiles and their 4 result registers.
template <class F>
__device__ __forceinline__ void for_each_result(F&& f) {
  QUAROT_CUDA_UNROLL
  for (int mt = 0; mt < 4; ++mt)
    QUAROT_CUDA_UNROLL
    for (int nt = 0; nt < 4; ++nt)
      QUAROT_CUDA_UNROLL
      for (int i = 0; i < 4; ++i) f(mt, nt, i);
}

/// Group `grp`'s int32 sum `acc` of output (r, col) into its fp32 partial `cf`: the exact
/// zero-point correction (asymmetric weights), then cf = fma(scale, float(acc), cf) from
/// cf = 0 — the CPU kernels' operations in their order.
__device__ __forceinline__ void fold_group(const cuda_gemm_operands& op, int grp, std::size_t r, std::size_t col,
                                          int acc, float& cf) {
  const std::size_t gi = static_cast<std::size_t>(grp) * op.n_padded + col;
  if (!op.symmetric && r < op.m) acc -= op.zeros[gi] * op.rowsums[r * op.groups + grp];
  cf = fmaf(op.scales[gi], static_cast<float>(acc), grp == 0 ? 0.0f : cf);
}

/// y(r, col) = fma(row scale, cf, bias), for (r, col) inside the M x N result.
__device__ __forceinline__ float result_value(const cuda_gemm_operands& op, std::size_t r, std::size_t col, float cf) {
  return fmaf(op.row_scales[r], cf, op.bias ? op.bias[col] : 0.0f);
}

/// result_value inside the M x N result, 0 outside (a staged tile's cells that are not
/// copied out).
__device__ __forceinline__ float staged_value(const cuda_gemm_operands& op, std::size_t r, std::size_t col, float cf) {
  return r < op.m && col < op.n ? result_value(op, r, col, cf) : 0.0f;
}

/// A block's 128 x BN results in shared memory on their way to y (both integer GEMM
/// kernels reuse their K-loop buffers for it): stored straight from the MMA result layout,
/// each warp instruction would write 2 or 4 bytes into each of 8 rows of y; staged, y gets
/// whole 16-byte pieces of rows from consecutive threads. Rows are `pitch` bytes apart:
/// the padding (8 words for fp32, 4 for 16-bit types) puts the 8 rows that one warp's
/// register pairs touch on different banks, and keeps rows 16-byte aligned.
template <class Out, int BN>
struct output_tile {
  static constexpr int pitch = BN * static_cast<int>(sizeof(Out)) + (sizeof(Out) == 4 ? 32 : 16);
  static constexpr int bytes = 128 * pitch;
};

/// Results (r, col) and (r, col + 1), already computed, into the output tile at (row, col).
template <class Out, int BN>
__device__ __forceinline__ void stage_result_pair(unsigned char* tile, int row, int col, float v0, float v1) {
  unsigned char* dst = tile + row * output_tile<Out, BN>::pitch + col * static_cast<int>(sizeof(Out));
  if constexpr (sizeof(Out) == 4) {
    *reinterpret_cast<uint2*>(dst) = uint2{__float_as_uint(v0), __float_as_uint(v1)};
  } else {
    Out pair[2];
    store_from_float(pair, v0);
    store_from_float(pair + 1, v1);
    std::uint32_t word;
    std::memcpy(&word, static_cast<const void*>(pair), 4);
    *reinterpret_cast<std::uint32_t*>(dst) = word;
  }
}

/// The output tile (block rows from m0, columns from n0) to y: consecutive threads copy
/// consecutive 16-byte pieces of a row, one 16-byte store each where the piece lies inside
/// N and is aligned in y, else value by value; nothing outside the M x N result.
template <class Out, int BN>
__device__ __forceinline__ void copy_out_tile(const unsigned char* tile, const cuda_gemm_operands& op, std::size_t m0,
                                              std::size_t n0, Out* y, std::size_t ldy, int tid, int threads) {
  constexpr int per = 16 / static_cast<int>(sizeof(Out)), pieces = BN / per;
  for (int i = tid; i < 128 * pieces; i += threads) {
    const int row = i / pieces, piece = i % pieces;
    const std::size_t r = m0 + row, col = n0 + static_cast<std::size_t>(piece) * per;
    if (r >= op.m || col >= op.n) continue;
    const unsigned char* src = tile + row * output_tile<Out, BN>::pitch + piece * 16;
    Out* dst = y + r * ldy + col;
    if (col + per <= op.n && reinterpret_cast<std::uintptr_t>(dst) % 16 == 0) {
      *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(src);
    } else {
      for (int e = 0; e < per && col + e < op.n; ++e)
        std::memcpy(static_cast<void*>(dst + e), src + e * static_cast<int>(sizeof(Out)), sizeof(Out));
    }
  }
}

/// Split-K, at the end of a block's K range (its partials stored): counts the block in
/// sk.tile_done after making its partials visible to every block, and says whether it was
/// its tile's last split, which then folds them all (fold_split_partials). Every thread of
/// the block calls it; the stage buffers are free afterwards.
__device__ __forceinline__ bool split_k_last(const split_k_operands& sk, int tid) {
  __shared__ int last;
  __threadfence();  // this block's partials are visible to every block before it is counted
  __syncthreads();  // (and every warp is done with the stage buffers)
  if (tid == 0) last = atomicAdd(sk.tile_done + blockIdx.y * gridDim.x + blockIdx.x, 1u) + 1 == unsigned(sk.splits);
  __syncthreads();
  if (!last) return false;  // another split of the tile finishes it
  __threadfence();
  return true;
}

/// The tile's last split folds every unit's partials in the CPU's order, straight into
/// the output tile (128 x BN at (m0, n0)): consecutive threads take consecutive column
/// pairs (coalesced partials), and a flat loop keeps the fold out of the per-register code
/// (unrolled over a thread's 64 results, it took ptxas ~10 s per kernel instead of 0.3 and
/// 20 more registers). Groups fold in order with fold_group; per channel the splits' int32
/// sums add exactly (no overflow under K <= 65536) and fold once — the results are those
/// of the unsplit kernel, bit for bit.
template <class Out, int BN>
__device__ __forceinline__ void fold_split_partials(unsigned char* tile, const cuda_gemm_operands& op,
                                                    const split_k_operands& sk, std::size_t m0, std::size_t n0,
                                                    int tid, int threads) {
  for (int e = tid; e < 128 * BN / 2; e += threads) {
    const int row = e / (BN / 2), col = 2 * (e % (BN / 2));
    const std::size_t r = m0 + row;
    if (r >= op.m) break;                   // rows only grow with e
    if (n0 + col >= op.n_padded) continue;  // a 256-wide wgmma tile may reach past the padded N
    float v[2];
    for (int h = 0; h < 2; ++h) {
      const std::size_t cl = n0 + col + h;
      v[h] = 0.0f;
      if (op.groups > 1) {
        for (int grp = 0; grp < op.groups; ++grp) fold_group(op, grp, r, cl, __ldcg(sk.partial(op, grp, r, cl)), v[h]);
      } else {
        int sum = 0;
        for (int u = 0; u < sk.splits; ++u) sum += __ldcg(sk.partial(op, u, r, cl));
        fold_group(op, 0, r, cl, sum, v[h]);
      }
    }
    stage_result_pair<Out, BN>(tile, row, col, staged_value(op, r, n0 + col, v[0]), staged_value(op, r, n0 + col + 1, v[1]));
  }
}

template <mma_kind Kind, int ABits, int WBits, class Out>
__global__ void __launch_bounds__(128, 2) integer_gemm_kernel(cuda_gemm_operands op, split_k_operands sk, Out* y,
                                                                 std::size_t ldy) {
  using S = gemm_tile_shape<Kind, ABits, WBits>;
  using T = output_tile<Out, S::bn>;
  __shared__ __align__(16) unsigned char tiles[S::shared_bytes > T::bytes ? S::shared_bytes : T::bytes];
  const int tid = static_cast<int>(threadIdx.x), warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, c = lane % 4;
  const std::size_t m0 = static_cast<std::size_t>(blockIdx.y) * S::bm, n0 = static_cast<std::size_t>(blockIdx.x) * S::bn;
  const int wm = (warp / 2) * 64, wn = (warp % 2) * 32;  // the warp's tile in the block tile
  const int a_row_bytes = static_cast<int>(op.a_row_bytes), w_row_bytes = static_cast<int>(op.w_row_bytes);
  // This block's K steps (all of them without split-K); split_steps is even, so a split
  // starts at a stage, and the last split runs to the end of the padded K.
  const int split = static_cast<int>(blockIdx.z);
  const int first_step = split * sk.split_steps;
  const int end_step = split + 1 >= sk.splits ? op.steps : min(op.steps, first_step + sk.split_steps);
  const int first_stage = first_step / 2, kstages = (end_step - first_step + 1) / 2;

  // The block's stage s (K stage first_stage + s) of A and W into buffer s % stages (rows
  // past M and bytes past a row: zeros).
  const auto load_stage = [&](int s) {
    unsigned char* a_dst = tiles + (s % S::stages) * (S::a_stage_bytes + S::w_stage_bytes);
    unsigned char* w_dst = a_dst + S::a_stage_bytes;
    for (int i = tid; i < S::bm * S::a_chunks; i += 128) {
      const int row = i / S::a_chunks, chunk = i % S::a_chunks;
      const std::size_t r = m0 + row;
      const int byte = (first_stage + s) * S::a_chunks * 16 + chunk * 16;
      const bool live = r < op.m && byte < a_row_bytes;
      copy16_async(a_dst + swizzled<S::a_chunks>(row, chunk * 16),
                   op.a + (live ? r * op.a_row_bytes + byte : 0), live ? 16 : 0);
    }
    for (int i = tid; i < S::bn * S::w_chunks; i += 128) {
      const int row = i / S::w_chunks, chunk = i % S::w_chunks;
      const int byte = (first_stage + s) * S::w_chunks * 16 + chunk * 16;
      const bool live = byte < w_row_bytes;  // columns are padded to 64: every row exists
      copy16_async(w_dst + swizzled<S::w_chunks>(row, chunk * 16),
                   op.w + (live ? (n0 + row) * op.w_row_bytes + byte : 0), live ? 16 : 0);
    }
  };

  int acc[4][4][4] = {};
  float cf[4][4][4];
  for (int s = 0; s < S::stages - 1; ++s) {
    if (s < kstages) load_stage(s);
    copy_async_commit();
  }
  for (int s = 0; s < kstages; ++s) {
    copy_async_wait<S::stages - 2>();
    __syncthreads();  // stage s is in; everyone is done with the buffer the next load reuses
    if (s + S::stages - 1 < kstages) load_stage(s + S::stages - 1);
    copy_async_commit();
    const unsigned char* a_src = tiles + (s % S::stages) * (S::a_stage_bytes + S::w_stage_bytes);
    const unsigned char* w_src = a_src + S::a_stage_bytes;
    for (int j = 0; j < 2; ++j) {
      const int step = first_step + 2 * s + j;
      if (step >= end_step) break;
      std::uint32_t a[4][4], b[4][2];
      QUAROT_CUDA_UNROLL
      for (int mt = 0; mt < 4; ++mt) {
        shared_fragment_pair<Kind, ABits, S::a_chunks>(a_src, wm + mt * 16 + g, j, c, a[mt][0], a[mt][2]);
        shared_fragment_pair<Kind, ABits, S::a_chunks>(a_src, wm + mt * 16 + g + 8, j, c, a[mt][1], a[mt][3]);
      }
      QUAROT_CUDA_UNROLL
      for (int nt = 0; nt < 4; ++nt)
        shared_fragment_pair<Kind, WBits, S::w_chunks>(w_src, wn + nt * 8 + g, j, c, b[nt][0], b[nt][1]);
      QUAROT_CUDA_UNROLL
      for (int mt = 0; mt < 4; ++mt)
        QUAROT_CUDA_UNROLL
        for (int nt = 0; nt < 4; ++nt) mma<Kind>(acc[mt][nt], a[mt], b[nt]);
      if (sk.splits > 1) {
        // Split-K: the exact sums of a group (or of the split) go to the partials.
        if (!op.ends_group(step) && step + 1 != end_step) continue;
        const int unit = op.groups > 1 ? op.group_of(step) : split;
        for_each_result([&](int mt, int nt, int i) {
          const std::size_t r = m0 + result_row(wm, mt, g, i);
          if (r < op.m) *sk.partial(op, unit, r, n0 + result_col(wn, nt, c, i)) = acc[mt][nt][i];
          acc[mt][nt][i] = 0;
        });
        continue;
      }
      if (!op.ends_group(step)) continue;
      // The group ends: exact integer correction, c = fma(scale, float(acc), c), acc = 0.
      const int grp = op.group_of(step);
      for_each_result([&](int mt, int nt, int i) {
        fold_group(op, grp, m0 + result_row(wm, mt, g, i), n0 + result_col(wn, nt, c, i), acc[mt][nt][i],
                   cf[mt][nt][i]);
        acc[mt][nt][i] = 0;
      });
    }
  }
  copy_async_wait<0>();
  if (sk.splits > 1) {
    if (!split_k_last(sk, tid)) return;
    fold_split_partials<Out, S::bn>(tiles, op, sk, m0, n0, tid, 128);
  } else {
    __syncthreads();  // every warp is done with the stage buffers
    QUAROT_CUDA_UNROLL
    for (int mt = 0; mt < 4; ++mt)
      QUAROT_CUDA_UNROLL
      for (int nt = 0; nt < 4; ++nt)
        QUAROT_CUDA_UNROLL
        for (int i = 0; i < 4; i += 2) {  // results i and i + 1: columns 2c and 2c + 1 of one row
          const int row = result_row(wm, mt, g, i), col = result_col(wn, nt, c, i);
          stage_result_pair<Out, S::bn>(tiles, row, col, staged_value(op, m0 + row, n0 + col, cf[mt][nt][i]),
                                        staged_value(op, m0 + row, n0 + col + 1, cf[mt][nt][i + 1]));
        }
  }
  __syncthreads();
  copy_out_tile<Out, S::bn>(tiles, op, m0, n0, y, ldy, tid, 128);
}

// ------------------------------------------------------------------ sm_90a: wgmma
/// The sm_90a block tile: 128 x BN outputs, two warpgroups of 64 x BN (one
/// wgmma.m64nBNk32 per 32 K each), K in stages of `ks` through a ring of shared-memory
/// buffers, refilled `ahead` = stages - 2 stages ahead: a buffer is overwritten only after
/// the MMAs that read it have retired (each stage ends with wgmma.wait_group 1, and the
/// barrier before the refill orders that for both warpgroups). 8-bit operands are copied
/// with cp.async straight into the interleaved s8 layout (sm90.cuh); 4-bit ones are copied
/// packed and widened to s8 in shared memory, as Hopper has no int4 MMA. BN = 256
/// (per-channel weights) reads half the shared-memory bytes per multiply-add of BN = 128
/// (A is read once per MMA either way), but holds 128 accumulators per thread: per-group
/// weights, which also keep an fp32 partial per output, use BN = 128.
/// Depth: at ~200 registers per thread only one block fits on an SM, so the ring takes the
/// shared memory it can use (up to 227 KiB, 6 buffers at most): W8A8 stages of 128 K (one
/// barrier per 4 MMAs per warpgroup), 4 buffers at BN = 256; with a 4-bit operand, whose
/// packed copy also needs room, stages of 64 K and 6 buffers. That keeps 256–512 K of
/// operands in flight ahead of the MMAs (the first version had 128 K: 2 stages of 64),
/// for L2 latency under load.
template <int ABits, int WBits, int BN>
struct wgmma_tile_shape {
  static constexpr int bm = 128, bn = BN, threads = 256;
  static constexpr int ks = ABits == 8 && WBits == 8 ? 128 : 64;
  static constexpr int steps = ks / 32;      // MMAs per stage and warpgroup
  static constexpr int sbo = ks / 16 * 128;  // bytes between 8-row groups of a stage's s8 tile
  static constexpr int a_tile = bm * ks, w_tile = bn * ks;
  static constexpr int a_packed = ABits == 4 ? bm * ks / 2 : 0, w_packed = WBits == 4 ? bn * ks / 2 : 0;
  // A stage: [A s8 tile][W s8 tile][A packed][W packed].
  static constexpr int stage_bytes = a_tile + w_tile + a_packed + w_packed;
  static constexpr int stages = 227 * 1024 / stage_bytes < 6 ? 227 * 1024 / stage_bytes : 6;
  static constexpr int ahead = stages - 2;
  static constexpr int shared_bytes = stages * stage_bytes;
  static_assert(ahead >= 1, "the wgmma ring needs at least 3 buffers");
};

/// Stage s of one operand — rows [r0, r0 + R) of `src` (row_bytes each; rows from `rows`
/// on and bytes past a row are zeros) — into shared memory: 8-bit data into the s8 tile
/// (consecutive threads fill consecutive 16-byte slots of it), 4-bit data into `packed`
/// (R rows of ks / 2 bytes) for widen_stage.
template <int Bits, int R, class S>
__device__ __forceinline__ void load_wgmma_stage(unsigned char* tile, unsigned char* packed, const std::uint8_t* src,
                                                 std::size_t row_bytes, std::size_t r0, std::size_t rows, int s,
                                                 int tid) {
  constexpr int row_chunks = S::ks * Bits / 8 / 16;
  for (int i = tid; i < R * row_chunks; i += S::threads) {
    const int row = Bits == 8 ? (i / (8 * row_chunks)) * 8 + i % 8 : i / row_chunks;
    const int chunk = Bits == 8 ? (i / 8) % row_chunks : i % row_chunks;
    const std::size_t r = r0 + row, byte = static_cast<std::size_t>(s) * (S::ks * Bits / 8) + chunk * 16;
    const bool live = r < rows && byte < row_bytes;
    unsigned char* dst =
        Bits == 8 ? tile + interleaved_offset(row, chunk * 16, S::sbo) : packed + row * (S::ks / 2) + chunk * 16;
    copy16_async(dst, src + (live ? r * row_bytes + byte : 0), live ? 16 : 0);
  }
}

/// The packed 4-bit stage of an operand (R rows) as s8 in its interleaved tile: each
/// thread widens 16 nibbles into one 16-byte slot.
template <int R, class S>
__device__ __forceinline__ void widen_stage(unsigned char* tile, const unsigned char* packed, int tid) {
  constexpr int chunks = S::ks / 16;
  for (int i = tid; i < R * chunks; i += S::threads) {
    const int row = (i / (8 * chunks)) * 8 + i % 8, chunk = (i / 8) % chunks;
    const uint2 p = *reinterpret_cast<const uint2*>(packed + row * (S::ks / 2) + chunk * 8);
    uint4 v;
    v.x = widen_s4x4(p.x & 0xffffu);
    v.y = widen_s4x4(p.x >> 16);
    v.z = widen_s4x4(p.y & 0xffffu);
    v.w = widen_s4x4(p.y >> 16);
    *reinterpret_cast<uint4*>(tile + interleaved_offset(row, chunk * 16, S::sbo)) = v;
  }
}

/// f(reg, row, col) for each even accumulator register of thread `tid`'s m64nBNk32 wgmma,
/// warpgroup tid / 128 holding rows 64 · (tid / 128) on of the block tile: register
/// 4j + 2i + e is row 64·wg + 16·warp + g + 8i, column 8j + 2c + e (sm90.cuh), so (row,
/// col) is reg's place and (row, col + 1) reg + 1's.
template <int BN, class F>
__device__ __forceinline__ void for_each_wgmma_pair(int tid, F&& f) {
  const int wg = tid / 128, warp = (tid % 128) / 32, g = tid % 32 / 4, c = tid % 4;
  QUAROT_CUDA_UNROLL
  for (int j = 0; j < BN / 8; ++j)
    QUAROT_CUDA_UNROLL
    for (int i = 0; i < 2; ++i) f(4 * j + 2 * i, 64 * wg + 16 * warp + g + 8 * i, 8 * j + 2 * c);
}

/// The wgmma kernels' epilogue, from the K loop's shared memory (free by now, every
/// thread past a barrier): the two warpgroups (threads tid < 256) stage the block tile —
/// value(reg, r, col) the fp32 result of accumulator register reg at output (r, col) —
/// then all `threads` copy it out (output_tile, copy_out_tile).
template <class Out, int BN, class Value>
__device__ __forceinline__ void store_wgmma_tile(unsigned char* smem, const cuda_gemm_operands& op, std::size_t m0,
                                                 std::size_t n0, Out* y, std::size_t ldy, int tid, int threads,
                                                 Value&& value) {
  if (tid < 256)
    for_each_wgmma_pair<BN>(tid, [&](int reg, int row, int col) {
      const std::size_t r = m0 + row, c = n0 + col;
      stage_result_pair<Out, BN>(smem, row, col, staged_value(op, r, c, value(reg, r, c)),
                                 staged_value(op, r, c + 1, value(reg + 1, r, c + 1)));
    });
  __syncthreads();
  copy_out_tile<Out, BN>(smem, op, m0, n0, y, ldy, tid, threads);
}

/// A per-channel accumulator's result at output (r, col): 0 past M or N (the tile may
/// reach past n_padded).
__device__ __forceinline__ float per_channel_value(const cuda_gemm_operands& op, std::size_t r, std::size_t col,
                                                   int acc) {
  float v = 0.0f;
  if (r < op.m && col < op.n) fold_group(op, 0, r, col, acc, v);
  return v;
}

/// The integer GEMM on sm_90a warpgroup MMAs (s8 x s8 -> s32); the epilogue is the
/// mma.sync kernel's (fold_group, result_value, through output_tile), so results are
/// bit-identical to it and to the CPU. Needs K padded to 64 (device_weights does it);
/// BN = 256 only for one group. Split-K as in the mma.sync kernel (split_k_operands), in
/// whole stages of S::steps K steps: per channel a later split's accumulators start at
/// zero as the first's do; grouped splits start at a group, whose first MMA starts from
/// zero anyway.
template <int ABits, int WBits, int BN, class Out>
__global__ void __launch_bounds__(256, 1) integer_gemm_wgmma_kernel(cuda_gemm_operands op, split_k_operands sk, Out* y,
                                                                     std::size_t ldy) {
  using S = wgmma_tile_shape<ABits, WBits, BN>;
  constexpr bool grouped = BN == 128;  // BN = 256: per-channel weights, folded once at the end
  QUAROT_CUDA_DYNAMIC_SHARED(unsigned char, smem);
  const int tid = static_cast<int>(threadIdx.x), wg = tid / 128;
  const std::size_t m0 = static_cast<std::size_t>(blockIdx.y) * S::bm, n0 = static_cast<std::size_t>(blockIdx.x) * S::bn;
  // This block's K steps (all of them without split-K): split_steps is a whole number of
  // stages, and the last split runs to the end of the padded K (K is padded to 64, so its
  // last stage may be half).
  const int split = static_cast<int>(blockIdx.z);
  const int first_step = split * sk.split_steps;
  const int end_step = split + 1 >= sk.splits ? op.steps : min(op.steps, first_step + sk.split_steps);
  const int first_stage = first_step / S::steps, kstages = (end_step - first_step + S::steps - 1) / S::steps;
  const auto stage = [&](int s) { return smem + (s % S::stages) * S::stage_bytes; };
  const auto load_stage = [&](int s) {  // the block's stage s: K stage first_stage + s
    unsigned char* base = stage(s);
    load_wgmma_stage<ABits, S::bm, S>(base, base + S::a_tile + S::w_tile, op.a, op.a_row_bytes, m0, op.m,
                                      first_stage + s, tid);
    load_wgmma_stage<WBits, S::bn, S>(base + S::a_tile, base + S::a_tile + S::w_tile + S::a_packed, op.w,
                                      op.w_row_bytes, n0, op.n_padded, first_stage + s, tid);
  };
  int acc[BN / 2] = {};
  float cf[grouped ? BN / 2 : 1];
  // Split-K: the accumulators of registers (reg, reg + 1) to unit `unit`'s partials.
  const auto store_partials = [&](int unit) {
    for_each_wgmma_pair<BN>(tid, [&](int reg, int row, int col) {
      const std::size_t r = m0 + row, cl = n0 + col;
      if (r < op.m && cl < op.n_padded)
        *reinterpret_cast<int2*>(sk.partial(op, unit, r, cl)) = make_int2(acc[reg], acc[reg + 1]);
    });
  };
  for (int s = 0; s < S::ahead; ++s) {
    if (s < kstages) load_stage(s);
    copy_async_commit();
  }
  for (int s = 0; s < kstages; ++s) {
    copy_async_wait<S::ahead - 1>();
    unsigned char* base = stage(s);
    if constexpr (ABits == 4 || WBits == 4) {
      __syncthreads();  // every thread's packed copies of stage s are in
      if constexpr (ABits == 4) widen_stage<S::bm, S>(base, base + S::a_tile + S::w_tile, tid);
      if constexpr (WBits == 4) widen_stage<S::bn, S>(base + S::a_tile, base + S::a_tile + S::w_tile + S::a_packed, tid);
    }
    fence_shared_for_async();
    __syncthreads();  // stage s is in for every thread; stage s - 2's MMAs have retired in both warpgroups
    if (s + S::ahead < kstages) load_stage(s + S::ahead);
    copy_async_commit();
    for (int j = 0; j < S::steps; ++j) {
      const int step = first_step + S::steps * s + j;
      if (step == end_step) break;  // the half stage past a K of 64 mod 128
      const std::uint64_t a = shared_matrix_descriptor(base + interleaved_offset(64 * wg, 32 * j, S::sbo), S::sbo);
      const std::uint64_t b = shared_matrix_descriptor(base + S::a_tile + interleaved_offset(0, 32 * j, S::sbo), S::sbo);
      const bool accumulate = !op.starts_group(step);  // a group's first MMA starts from zero
      // The fence and the MMA in one basic block (a branch between them makes ptxas inject
      // another fence).
      wgmma_fence();
      wgmma_m64nNk32_s8<BN>(acc, a, b, accumulate);
      wgmma_commit();
      if constexpr (!grouped) continue;
      if (!op.ends_group(step)) continue;
      // The group ends: wait for its MMAs, then fold (the next MMA overwrites acc).
      wgmma_wait<0>();
      wgmma_fence_operands(acc);
      const int grp = op.group_of(step);
      if (sk.splits > 1) {  // the group's exact sums to its partials
        store_partials(grp);
        continue;
      }
      for_each_wgmma_pair<BN>(tid, [&](int reg, int row, int col) {
        if constexpr (grouped)
          for (int e = 0; e < 2; ++e) fold_group(op, grp, m0 + row, n0 + col + e, acc[reg + e], cf[reg + e]);
      });
    }
    wgmma_wait<1>();
    wgmma_fence_operands(acc);
  }
  // Nothing is in flight (the last step ended a group); saying so lets ptxas reuse the
  // accumulator registers in the epilogue without injecting a wait of its own.
  wgmma_wait<0>();
  wgmma_fence_operands(acc);
  copy_async_wait<0>();
  // The epilogue goes through shared memory (output_tile).
  static_assert(output_tile<Out, BN>::bytes <= S::shared_bytes, "the output tile fits in the ring");
  if (sk.splits > 1) {
    if constexpr (!grouped) store_partials(split);
    if (!split_k_last(sk, tid)) return;  // (its barriers: both warpgroups are done with the ring)
    fold_split_partials<Out, BN>(smem, op, sk, m0, n0, tid, S::threads);
    __syncthreads();
    copy_out_tile<Out, BN>(smem, op, m0, n0, y, ldy, tid, S::threads);
    return;
  }
  __syncthreads();  // both warpgroups are done with the ring
  store_wgmma_tile<Out, BN>(smem, op, m0, n0, y, ldy, tid, S::threads, [&](int reg, std::size_t r, std::size_t col) {
    if constexpr (grouped) return cf[reg];
    else return per_channel_value(op, r, col, acc[reg]);
  });
}

/// The W8A8 per-channel GEMM on sm_90a in clusters of two blocks along M that share their
/// weight tile. Why: a 128 x 256 s8 tile does 85 multiply-adds per operand byte, so at the
/// int8 tensor-core peak the SMs would draw ~11.6 TB/s from L2 — about twice what an
/// H100's L2 is reported to deliver. The two blocks of a cluster (rows m0 and m0 + 128,
/// the same 256 columns) each load their own A stage and one half of the W stage, the
/// latter multicast into both blocks' shared memory (TMA .multicast::cluster): 32 KiB per
/// block and stage from L2 instead of 48, 1.5x the MACs per byte.
/// Pipeline: a ring of `stages` buffers of 128 K (A 128 x 128 and W 256 x 128 bytes, both
/// in the 128-byte swizzle that TMA writes and the wgmma descriptors read), each with a
/// `full` mbarrier (one arrival — the producer's expect_tx of the stage's 48 KiB — and the
/// bytes of the three TMA copies that land in this block) and an `empty` mbarrier (16
/// arrivals: each consumer warp of both blocks, once its MMAs that read the buffer
/// retired, as the partner's multicast writes into this block's buffer too; per warp
/// rather than per warpgroup, so that no warp can lag a whole ring behind the others'
/// releases). Warp-specialized as in CUTLASS 3's TMA pipelines: warps 0-7 (two
/// warpgroups of 64 x 256) only wait, multiply and release; one lane of warp 8 only waits
/// for empty buffers and issues the copies, `stages` stages ahead. (With the producer in a
/// consumer warp, its waits are a divergent path around the wgmma and ptxas serializes
/// them, C7518.) Both warpgroups keep one stage of MMAs in flight (wgmma.wait_group 1).
/// The epilogue is the per-channel wgmma kernel's (fold_group, through output_tile), so
/// results are the CPU's bit for bit. M is padded to an even number of 128-row tiles (a
/// block past M reads zeros and stores nothing); no split-K.
struct wgmma_cluster_shape {
  static constexpr int bm = 128, bn = 256, ks = 128, steps = ks / 32, cluster = 2;
  static constexpr int consumers = 256, threads = consumers + 32;  // two warpgroups + the producer warp
  static constexpr int a_tile = bm * ks, w_tile = bn * ks, stage_bytes = a_tile + w_tile;
  static constexpr int stages = 4;
  /// 1024 bytes of slack to align the ring (the swizzle follows the shared address), then
  /// the buffers, then the full and empty barriers.
  static constexpr int shared_bytes = 1024 + stages * stage_bytes + 2 * stages * 8;
  static_assert(shared_bytes <= 227 * 1024, "the ring fits in an SM's shared memory");
};

template <class Out>
__global__ void __launch_bounds__(wgmma_cluster_shape::threads, 1)
    integer_gemm_wgmma_cluster_kernel(cuda_gemm_operands op, const __grid_constant__ CUtensorMap a_map,
                                      const __grid_constant__ CUtensorMap w_map, Out* y, std::size_t ldy) {
  using S = wgmma_cluster_shape;
  QUAROT_CUDA_DYNAMIC_SHARED(unsigned char, raw);
  unsigned char* const smem = raw + (1024 - shared_u32(raw) % 1024) % 1024;
  std::uint64_t* const full = reinterpret_cast<std::uint64_t*>(smem + S::stages * S::stage_bytes);
  std::uint64_t* const empty = full + S::stages;
  const int tid = static_cast<int>(threadIdx.x), lane = tid % 32;
  // The warp index through a shuffle, so that the compiler knows it is the same in every
  // lane and the role branch below is not divergent (as CUTLASS's canonical_warp_idx_sync).
  const int warp = __shfl_sync(0xffffffffu, tid / 32, 0);
  const unsigned rank = cluster_rank();
  const std::size_t m0 = static_cast<std::size_t>(blockIdx.y) * S::bm, n0 = static_cast<std::size_t>(blockIdx.x) * S::bn;
  const int kstages = (op.steps + S::steps - 1) / S::steps;  // the last one half when K = 64 mod 128 (TMA reads zeros)
  if (tid == 0) {
    for (int b = 0; b < S::stages; ++b) {
      mbarrier_init(full + b, 1);
      mbarrier_init(empty + b, S::cluster * S::consumers / 32);
    }
    fence_barrier_init();
  }
  cluster_sync();  // both blocks' barriers are initialized before a multicast signals them
  int acc[S::bn / 2] = {};
  if (warp == S::consumers / 32) {
    // The producer: K stage s into buffer s % stages once the MMAs of stage s - stages (in
    // both blocks) have released it — A's 128 rows, and this block's half of W's 256 rows
    // into both blocks.
    if (lane == 0)
      for (int s = 0; s < kstages; ++s) {
        const int b = s % S::stages;
        if (s >= S::stages) mbarrier_wait(empty + b, static_cast<unsigned>(s / S::stages - 1) & 1u);
        unsigned char* base = smem + b * S::stage_bytes;
        mbarrier_arrive_expect_tx(full + b, S::stage_bytes);
        tma_load_2d(base, &a_map, full + b, s * S::ks, static_cast<int>(m0));
        tma_load_2d(base + S::a_tile + rank * (S::w_tile / 2), &w_map, full + b, s * S::ks,
                    static_cast<int>(n0 + rank * (S::bn / 2)), std::uint16_t{(1u << S::cluster) - 1});
      }
  } else {
    const int wg = warp / 4;
    for (int s = 0; s < kstages; ++s) {
      const int b = s % S::stages;
      mbarrier_wait(full + b, static_cast<unsigned>(s / S::stages) & 1u);
      unsigned char* base = smem + b * S::stage_bytes;
      for (int j = 0; j < S::steps; ++j) {
        const std::uint64_t a = swizzled_matrix_descriptor(base + swizzled_offset(64 * wg, 0) + 32 * j);
        const std::uint64_t w = swizzled_matrix_descriptor(base + S::a_tile + 32 * j);
        wgmma_fence();
        wgmma_m64nNk32_s8<S::bn>(acc, a, w, (s | j) != 0);
      }
      wgmma_commit();
      wgmma_wait<1>();  // stage s - 1's MMAs have retired
      wgmma_fence_operands(acc);
      // Lane c < cluster of each warp releases stage s - 1's buffer in block c.
      if (s > 0) mbarrier_arrive_cluster(empty + (s - 1) % S::stages, lane % S::cluster, lane < S::cluster);
    }
    wgmma_wait<0>();
    wgmma_fence_operands(acc);
  }
  // Every copy into this block landed (each was part of a stage it waited for); the
  // partner may still arrive on this block's empty barriers until it is past its loop.
  cluster_sync();
  static_assert(output_tile<Out, S::bn>::bytes <= S::stages * S::stage_bytes, "the output tile fits in the ring");
  store_wgmma_tile<Out, S::bn>(smem, op, m0, n0, y, ldy, tid, S::threads,
                               [&](int reg, std::size_t r, std::size_t col) { return per_channel_value(op, r, col, acc[reg]); });
}

/// Launches the cluster kernel over `grid` (row tiles in whole clusters of 2) with the
/// two tensor maps made from op (A: 128-row boxes; W: each block's half of the 256-row
/// tile, multicast to both). The GEMM and its self-test launch it through here.
template <class Out>
void launch_wgmma_cluster(const cuda_gemm_operands& op, dim3 grid, Out* y, std::size_t ldy, cudaStream_t stream) {
  using S = wgmma_cluster_shape;
  const auto kernel = integer_gemm_wgmma_cluster_kernel<Out>;
  const CUtensorMap a_map = swizzled_tensor_map(op.a, op.a_row_bytes, op.m, S::bm);
  const CUtensorMap w_map = swizzled_tensor_map(op.w, op.w_row_bytes, op.n_padded, S::bn / 2);
  allow_shared(kernel, S::shared_bytes);
  launch_cluster(kernel, grid, S::threads, dim3(1, S::cluster, 1), S::shared_bytes, stream, op, a_map, w_map, y, ldy);
}

/// A W8A8 product of pseudo-random s8 levels with unit scales, on the device, and its
/// exact result computed here (the sums stay far below 2^24, so fp32 holds them exactly;
/// checked): what the wgmma self-tests run.
struct self_test_product {
  std::size_t m, n, k;
  device_buffer<std::uint8_t> a, w;
  device_buffer<float> ones, y;
  std::vector<std::int32_t> expect;
  cuda_gemm_operands op{};

  self_test_product(std::size_t m_, std::size_t n_, std::size_t k_, std::size_t groups, cudaStream_t stream)
      : m(m_), n(n_), k(k_), a(m_ * k_), w(n_ * k_), ones(groups * n_), y(m_ * n_), expect(m_ * n_) {
    const auto level = [](std::size_t i, std::size_t j, unsigned salt) {
      std::uint32_t h = static_cast<std::uint32_t>(i) * 0x9e3779b1u ^ static_cast<std::uint32_t>(j) * 0x85ebca77u ^ salt;
      h ^= h >> 15;
      h *= 0x2c1b3c6du;
      h ^= h >> 12;
      return static_cast<std::int8_t>(h & 0xffu);
    };
    std::vector<std::uint8_t> ha(m * k), hw(n * k);
    for (std::size_t r = 0; r < m; ++r)
      for (std::size_t j = 0; j < k; ++j) ha[r * k + j] = static_cast<std::uint8_t>(level(r, j, 0x1234u));
    for (std::size_t c = 0; c < n; ++c)
      for (std::size_t j = 0; j < k; ++j) hw[c * k + j] = static_cast<std::uint8_t>(level(c, j, 0xbeefu));
    const std::vector<float> hones(groups * n, 1.0f);
    a.upload(ha.data(), ha.size(), stream);
    w.upload(hw.data(), hw.size(), stream);
    ones.upload(hones.data(), hones.size(), stream);
    for (std::size_t r = 0; r < m; ++r)  // |sum| ≤ K · 2^14 < 2^31
      for (std::size_t c = 0; c < n; ++c) {
        std::int32_t sum = 0;
        for (std::size_t j = 0; j < k; ++j)
          sum += static_cast<std::int8_t>(ha[r * k + j]) * static_cast<std::int8_t>(hw[c * k + j]);
        quarot::detail::require(sum > -(1 << 24) && sum < (1 << 24), "wgmma self-test: the reference sum ", sum,
                                " is not exact in fp32");
        expect[r * n + c] = sum;
      }
    op.a = a.data();
    op.a_row_bytes = k;
    op.row_scales = ones.data();
    op.w = w.data();
    op.w_row_bytes = k;
    op.scales = ones.data();
    op.m = m;
    op.n = op.n_padded = n;
    op.steps = static_cast<int>(k / 32);
    op.groups = 1;
    op.group_steps = op.steps;
    op.symmetric = true;
  }
  /// y filled with NaN (an output the kernel skips cannot pass) before a launch.
  void clear(cudaStream_t stream) { y.fill_bytes(0xff, stream); }
  /// "" when every output equals the exact sum, else the first mismatch, named by `what`.
  [[nodiscard]] std::string compare(const std::string& what, cudaStream_t stream) const {
    std::vector<float> got(m * n);
    y.download(got.data(), got.size(), stream);
    for (std::size_t i = 0; i < m * n; ++i)
      if (got[i] != static_cast<float>(expect[i]))
        return quarot::detail::concat("the ", what, " gave y(", i / n, ", ", i % n, ") = ", got[i], ", expected ",
                                      expect[i]);
    return {};
  }
};

/// Runs both wgmma kernels — the per-channel 128 x 256 tile and the grouped 128 x 128
/// tiles (groups of 128, the last one of 64) — on a W8A8 product of 128 x 960 by 960 x 256
/// pseudo-random s8 levels with unit scales, and compares every output with the exact
/// integer result computed here (the sums stay far below 2^24, so fp32 holds them
/// exactly; checked). K = 960 is 7.5 stages of 128: the shared-memory ring wraps, buffers
/// are refilled while other MMAs are in flight, and the last stage is the half one that K
/// padded to 64 leaves. Returns "" when every output matches, else the first mismatch.
/// The descriptor and accumulator layouts (sm90.cuh) are the PTX ISA's as we read it, and
/// the emulation models them the same way, so only a run on the hardware can confirm them:
/// `automatic` selects wgmma only after this passes (wgmma_verified).
inline std::string wgmma_self_test(cudaStream_t stream = nullptr) {
  constexpr std::size_t m = 128, n = 256, k = 960, group = 128, groups = (k + group - 1) / group;
  self_test_product p(m, n, k, groups, stream);
  const auto run = [&](auto bn, int groups_used) -> std::string {
    using S = wgmma_tile_shape<8, 8, decltype(bn)::value>;
    const auto kernel = integer_gemm_wgmma_kernel<8, 8, S::bn, float>;
    p.op.groups = groups_used;
    p.op.group_steps = groups_used == 1 ? p.op.steps : static_cast<int>(group / 32);
    p.clear(stream);
    allow_shared(kernel, S::shared_bytes);
    launch(kernel, dim3(n / S::bn, m / S::bm), S::threads, S::shared_bytes, stream, p.op,
           split_k_operands{1, p.op.steps, nullptr, nullptr}, p.y.data(), n);
    return p.compare(quarot::detail::concat(S::bm, " x ", S::bn, " wgmma tile"), stream);
  };
  std::string failure = run(std::integral_constant<int, 256>{}, 1);
  if (failure.empty()) failure = run(std::integral_constant<int, 128>{}, static_cast<int>(groups));
  return failure;
}

/// The same check for the cluster kernel (mma_path::wgmma_cluster), whose operands reach
/// shared memory through TMA in the 128-byte swizzle and whose weight tile is multicast:
/// a 256 x 256 by 960 product, so one cluster of two live blocks shares every weight
/// stage, the ring of 4 wraps, and the last stage is a half one. The swizzle, the
/// swizzled descriptors and the multicast are the PTX ISA's as we read it (the emulation
/// models them the same way), so only a run on a Hopper confirms them: `automatic` may
/// take this path only after it passes there (with a measured win; it does not yet).
inline std::string wgmma_cluster_self_test(cudaStream_t stream = nullptr) {
  using S = wgmma_cluster_shape;
  constexpr std::size_t m = S::cluster * S::bm, n = S::bn, k = 960;
  self_test_product p(m, n, k, 1, stream);
  p.clear(stream);
  launch_wgmma_cluster<float>(p.op, dim3(n / S::bn, m / S::bm), p.y.data(), n, stream);
  return p.compare("wgmma cluster kernel (256 x 256, TMA multicast)", stream);
}

/// Whether the integer GEMM may take the wgmma path on its own: the device runs this
/// program's sm_90a code (has_wgmma) and the kernels reproduced wgmma_self_test's product
/// there. Asked once per device; a failure is reported once on stderr, and the GEMM then
/// takes mma.sync (correct, slower) unless wgmma is forced.
inline bool wgmma_verified() {
  if (!has_wgmma()) return false;
  static std::atomic<int> known[64];
  return once_per_device(known, [](int dev) {
    const std::string failure = wgmma_self_test();
    if (!failure.empty())
      std::fprintf(stderr, "quarot: the wgmma GEMM failed its self-test on CUDA device %d (%s); using mma.sync\n",
                   dev, failure.c_str());
    return failure.empty();
  });
}

/// rowsums[r · groups + g] = Σ of row r's levels in group g (int4 or int8 rows). A
/// template, as every kernel in these headers: a header's non-template kernel would be
/// defined in every translation unit that includes it.
template <bool Packed4>
__global__ void activation_group_sums(const std::uint8_t* a, std::size_t row_bytes, std::size_t rows, int groups,
                                      int group_size, int cols, std::int32_t* rowsums) {
  const std::size_t item = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (item >= rows * groups) return;
  const std::size_t r = item / groups;
  const int grp = static_cast<int>(item % groups);
  const std::uint8_t* row = a + r * row_bytes;
  int s = 0;
  const int k_end = min(cols, (grp + 1) * group_size);
  for (int k = grp * group_size; k < k_end; ++k) s += quarot::detail::level_at(row, Packed4, k);
  rowsums[item] = s;
}

/// Act-order weights (device_weights::k_order), integer GEMM: row r of `out` holds, at
/// packed K position kk, the level of column k_order[kk] of row r of `a` (int4 or int8
/// rows of row_bytes, a multiple of 32), and level 0 in the K padding (kk >= cols), as
/// the CPU's prepare_activation_row gathers them. A thread writes one 32-bit word (8 int4
/// or 4 int8 levels) and reads its levels from the row, which L1 / L2 hold (K / 2 or K
/// bytes): the gather costs a read and a write of the quantized activations, small beside
/// the GEMM's weight and tile traffic.
template <bool Packed4>
__global__ void gather_activation_levels(const std::uint8_t* a, std::size_t row_bytes, std::size_t rows, int cols,
                                         const std::uint32_t* k_order, std::uint8_t* out) {
  constexpr int per = Packed4 ? 8 : 4, bits = Packed4 ? 4 : 8;
  const std::size_t words = row_bytes / 4;
  const std::size_t item = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (item >= rows * words) return;
  const std::size_t r = item / words;
  const int wd = static_cast<int>(item % words);
  const std::uint8_t* row = a + r * row_bytes;
  std::uint32_t word = 0;
  QUAROT_CUDA_UNROLL
  for (int j = 0; j < per; ++j) {
    const int kk = wd * per + j;
    const int level = kk < cols ? quarot::detail::level_at(row, Packed4, __ldg(k_order + kk)) : 0;
    word |= (static_cast<std::uint32_t>(level) & ((1u << bits) - 1u)) << (j * bits);  // low nibble first
  }
  reinterpret_cast<std::uint32_t*>(out + r * row_bytes)[wd] = word;
}

/// Act-order weights, weight-only GEMM: out(r, kk) = x(r, k_order[kk]) for kk < cols
/// (rows ldo apart), one value per thread.
template <class In>
__global__ void gather_activation_values(const In* x, std::size_t ldx, std::size_t rows, std::size_t cols,
                                         const std::uint32_t* k_order, In* out, std::size_t ldo) {
  const std::size_t item = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (item >= rows * cols) return;
  const std::size_t r = item / cols, kk = item % cols;
  out[r * ldo + kk] = x[r * ldx + __ldg(k_order + kk)];
}

/// W4A16 / W8A16 weight-only GEMM for decode: y[m][n] = Σ_g scale(g, n) · Σ_{k in g}
/// x[m][k] · (w - z) + bias[n] in fp32. One warp per output column, lanes over K: each
/// lane takes 32 consecutive levels per step with 16-byte loads (one for int4, two for
/// int8; rows are padded to 64 levels, so a step never leaves its row), the warp 1024
/// levels; the scale and zero point per 8 levels (group sizes are multiples of 8). Rows in
/// passes of R (4, or 1 for a single row). RoundBf16: each activation rounded to bf16 as
/// it is loaded (a W4A16 policy's activations, as the CPU policy rounds them).
template <int WBits, int R, class In, class Out, bool RoundBf16 = false>
__global__ void __launch_bounds__(128) weight_only_kernel(const In* x, std::size_t ldx, std::size_t m_rows,
                                                          const std::uint8_t* w, std::size_t w_row_bytes,
                                                          const float* scales, const std::int32_t* zeros,
                                                          std::size_t n_padded, std::size_t n, std::size_t k,
                                                          std::size_t group_size, const float* bias, Out* y,
                                                          std::size_t ldy) {
  constexpr int per_lane = 32, words = per_lane * WBits / 8 / 4;  // 32-bit words of levels per step
  const std::size_t col = static_cast<std::size_t>(blockIdx.x) * 4 + threadIdx.x / 32;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  if (col >= n) return;
  const std::uint8_t* wrow = w + col * w_row_bytes;
  // Runs of 8 activations (kk a multiple of 8) are whole aligned words in every row when
  // the rows start aligned and the stride keeps them so.
  const bool vector_x = vector_runs<8>(x) && ldx * sizeof(In) % run_word_bytes<8, In> == 0;
  // A lane's weight words of one step, one to two 16-byte loads.
  const auto load_step = [&](std::size_t k0, std::uint32_t(&q)[words]) {
    QUAROT_CUDA_UNROLL
    for (int c = 0; c < words / 4; ++c) {
      const uint4 v = __ldg(reinterpret_cast<const uint4*>(wrow + k0 * WBits / 8) + c);
      q[4 * c] = v.x;
      q[4 * c + 1] = v.y;
      q[4 * c + 2] = v.z;
      q[4 * c + 3] = v.w;
    }
  };
  for (std::size_t m0 = 0; m0 < m_rows; m0 += R) {
    float acc[R];
    QUAROT_CUDA_UNROLL
    for (int r = 0; r < R; ++r) acc[r] = 0.0f;
    // The next step's weights are loaded before this step's arithmetic: two steps in
    // flight per lane, as decode is bound by the bytes in flight.
    std::uint32_t next[words] = {};
    if (per_lane * static_cast<std::size_t>(lane) < k) load_step(per_lane * static_cast<std::size_t>(lane), next);
    for (std::size_t k0 = per_lane * static_cast<std::size_t>(lane); k0 < k; k0 += 32 * per_lane) {
      std::uint32_t q[words];
      QUAROT_CUDA_UNROLL
      for (int c = 0; c < words; ++c) q[c] = next[c];
      if (k0 + 32 * per_lane < k) load_step(k0 + 32 * per_lane, next);
      QUAROT_CUDA_UNROLL
      for (int sub = 0; sub < per_lane / 8; ++sub) {  // 8 levels: one scale and zero point
        const std::size_t kk = k0 + 8 * sub;
        if (kk >= k) break;
        const std::size_t gi = (group_size ? kk / group_size : 0) * n_padded + col;
        const float s = scales[gi];
        // w - z as float, exactly (|w - z| < 2^9): the level's offset-binary bits u = w + 2^(b-1)
        // as the mantissa of 2^23 (0x4B000000 | u is 2^23 + u), minus 2^23 + 2^(b-1) + z —
        // a shift, a LOP3 and an add per level instead of a sign extension and a conversion.
        const float bias_z = static_cast<float>((1 << 23) + (1 << (WBits - 1)) + zeros[gi]);
        float wv[8];
        QUAROT_CUDA_UNROLL
        for (int j = 0; j < 8; ++j) {
          if constexpr (WBits == 4) {
            const std::uint32_t u = ((q[sub] ^ 0x88888888u) >> (4 * j)) & 0x0fu;
            wv[j] = __uint_as_float(0x4B000000u | u) - bias_z;
          } else {
            const std::uint32_t u = ((q[2 * sub + j / 4] ^ 0x80808080u) >> (8 * (j % 4))) & 0xffu;
            wv[j] = __uint_as_float(0x4B000000u | u) - bias_z;
          }
        }
        const bool full = kk + 8 <= k;
        QUAROT_CUDA_UNROLL
        for (int r = 0; r < R; ++r) {
          if (m0 + r >= m_rows) break;
          const In* xr = x + (m0 + r) * ldx + kk;
          float xv[8];
          if (full && vector_x) {
            load_run<8>(xr, xv);  // one 16-byte load (fp16 / bf16; two for fp32)
          } else {
            QUAROT_CUDA_UNROLL
            for (int j = 0; j < 8; ++j) xv[j] = kk + j < k ? load_as_float(xr + j) : 0.0f;
          }
          if constexpr (RoundBf16)
            QUAROT_CUDA_UNROLL
            for (int j = 0; j < 8; ++j) xv[j] = round_to_bf16(xv[j]);
          float dot = 0.0f;
          QUAROT_CUDA_UNROLL
          for (int j = 0; j < 8; ++j)
            if (full || kk + j < k) dot = fmaf(xv[j], wv[j], dot);
          acc[r] = fmaf(s, dot, acc[r]);
        }
      }
    }
    QUAROT_CUDA_UNROLL
    for (int r = 0; r < R; ++r) {
      float v = acc[r];
      for (int d = 16; d >= 1; d /= 2) v += __shfl_xor_sync(0xffffffffu, v, d);
      if (lane == 0 && m0 + r < m_rows) store_from_float(y + (m0 + r) * ldy + col, v + (bias ? bias[col] : 0.0f));
    }
  }
}

}  // namespace detail

namespace detail {

/// The weight-only kernel takes a scale and zero point per 8 levels: per channel, or groups
/// of a multiple of 8.
inline void require_weight_only_groups(std::size_t groups, std::size_t group_size) {
  quarot::detail::require(groups == 1 || group_size % 8 == 0, "CUDA weight_only_gemm: group size ", group_size,
                          " is not a multiple of 8");
}

/// The weight-only GEMM's checks, act-order gather and launch (weight_only_gemm below and
/// the gemm::weight_only_gemm class), the activations rounded to bf16 when RoundBf16.
template <bool RoundBf16, storage_float In, class Out>
void launch_weight_only(const device_weights& w, matrix_view<const In> x, const float* bias, matrix_view<Out> y,
                        cudaStream_t stream) {
  static_assert(std::is_same_v<Out, float> || std::is_same_v<Out, bfloat16> || std::is_same_v<Out, half>,
                "weight-only GEMM output is fp32, bf16 or fp16");
  quarot::detail::require(x.cols == w.k, "CUDA weight_only_gemm: activations have ", x.cols, " columns, weights K = ",
                          w.k);
  quarot::detail::require(y.rows == x.rows && y.cols == w.n, "CUDA weight_only_gemm: output is ", y.rows, " x ",
                          y.cols, ", expected ", x.rows, " x ", w.n);
  require_weight_only_groups(w.groups, w.group_size);
  if (x.rows == 0 || w.n == 0) return;
  detail::require_current_device(w.data.device(), "CUDA weight_only_gemm: the weights");
  detail::require_device_view(x, "CUDA weight_only_gemm: the activations");
  detail::require_device_view(y, "CUDA weight_only_gemm: the output");
  if (bias) detail::require_device_pointer(bias, "CUDA weight_only_gemm: the bias");
  // Act-order weights: x's columns in the weights' packed K order first, into rows of
  // k_padded values (aligned for the kernel's 16-byte loads).
  quarot::detail::require(!w.act_order() || x.rows <= static_cast<std::size_t>(-1) / sizeof(In) / w.k_padded,
                          "CUDA weight_only_gemm: ", x.rows, " rows of ", w.k_padded,
                          " values overflow the byte count");
  const detail::stream_scratch<In> gathered(w.act_order() ? x.rows * w.k_padded : 0, stream);
  matrix_view<const In> xs = x;
  if (w.act_order()) {
    detail::launch(detail::gather_activation_values<In>, detail::grid_for(x.rows * x.cols, 256), 256, 0, stream,
                   x.data, x.stride, x.rows, x.cols, w.k_order.data(), gathered.data(), w.k_padded);
    xs = matrix_view<const In>(gathered.data(), x.rows, x.cols, w.k_padded);
  }
  const unsigned blocks = detail::grid_for(w.n, 4);
  // Rows in passes of R = 4 (each weight word feeds 4 rows), or R = 1 for one row (decode's
  // case: a quarter of the accumulator and activation registers).
  const auto run = [&](auto bits, auto rows) {
    detail::launch(detail::weight_only_kernel<decltype(bits)::value, decltype(rows)::value, In, Out, RoundBf16>,
                   blocks, 128, 0, stream, xs.data, xs.stride, xs.rows, w.data.data(), w.row_bytes, w.scales.data(),
                   w.zeros.data(), w.n_padded, w.n, w.k, w.group_size, bias, y.data, y.stride);
  };
  const auto with_rows = [&](auto bits) {
    if (x.rows == 1) run(bits, std::integral_constant<int, 1>{});
    else run(bits, std::integral_constant<int, 4>{});
  };
  if (w.bits == 4) with_rows(std::integral_constant<int, 4>{});
  else with_rows(std::integral_constant<int, 8>{});
}

}  // namespace detail

/// W4A16 / W8A16 weight-only GEMM on the device for decode: y = x·Wᵀ (+ bias) with x
/// fp32, fp16 or bf16 rows, used as given, and W's levels dequantized in registers (fp32
/// arithmetic; agrees with quarot::weight_only_gemm to fp32 rounding). All pointers are
/// device memory. (gemm::weight_only_gemm of a weight_only_policy on cuda::device is the
/// CPU class's interface over the same kernel.)
template <storage_float In, class Out>
void weight_only_gemm(device, const device_weights& w, matrix_view<const In> x, const float* bias, matrix_view<Out> y,
                      cudaStream_t stream = nullptr) {
  detail::launch_weight_only<false>(w, x, bias, y, stream);
}

/// The same for a view of mutable activation rows (a device_buffer's view()).
template <storage_float In, class Out>
void weight_only_gemm(device d, const device_weights& w, matrix_view<In> x, const float* bias, matrix_view<Out> y,
                      cudaStream_t stream = nullptr) {
  weight_only_gemm(d, w, matrix_view<const In>(x), bias, y, stream);
}

namespace detail {

/// How the mma.sync integer GEMM splits K over blockIdx.z (split_k_operands).
struct split_k_plan {
  int splits = 1, split_steps = 0;
  int units = 0;  ///< int32 partial sums per output: the groups, or the splits
};

/// Split-K for the integer GEMM kernels: `tiles` output tiles leave SMs idle when M is
/// small (decode: N / 64 mma.sync blocks, N / 256 wgmma blocks for any M <= 128), so K is
/// split until the blocks fill the device. The time in waves of `slots` blocks running at
/// once (mma.sync: 2 per SM, which its registers allow; wgmma: 1) over the work per block
/// is ceil(tiles · s / slots) / s for s splits; the count is the smallest s in 1..16 within
/// a tenth of the fewest waves. Each split is whole stages of `stage_steps` K steps (the
/// kernel's pipeline unit) and keeps at least 4 of them for the pipeline to fill; grouped
/// weights split at group boundaries. The partials (units · m · n_padded int32, written
/// once and read once) may at most double the bytes the unsplit grid moves:
/// `operand_bytes`, each column of tiles reading A's M rows and each row of tiles W's
/// rows. At decode that is the weights (the tenth session's bound, half the weight bytes
/// one way); at M >= 128 the A tiles add to it, and the SMs a split wakes are worth more.
/// `requested`: 0 automatic, 1 never, s >= 2 at most s splits (no minimum per split and
/// no size bound; tests and tuning).
inline split_k_plan plan_split_k(int steps, int stage_steps, int group_steps, int groups, std::size_t m,
                                 std::size_t n_padded, std::size_t operand_bytes, std::size_t tiles, std::size_t slots,
                                 int requested) {
  const split_k_plan none{1, steps, 0};
  if (requested == 1 || steps < 2 || m == 0 || tiles == 0) return none;
  const bool automatic = requested == 0;
  int want = requested;
  if (automatic) {
    slots = std::max<std::size_t>(slots, 1);
    const auto waves = [&](int s) {
      return static_cast<double>((tiles * static_cast<std::size_t>(s) + slots - 1) / slots) / s;
    };
    // The smallest count within a tenth of the fewest waves: partials and a pipeline fill
    // per split are not free (M = 2048 would otherwise take 13 splits for 3.92 waves
    // instead of 4).
    double fewest = waves(1);
    for (int s = 2; s <= 16; ++s) fewest = std::min(fewest, waves(s));
    want = 1;
    while (waves(want) > 1.1 * fewest) ++want;
    const std::size_t unit_bytes = m * n_padded * sizeof(std::int32_t);
    const std::size_t max_units = operand_bytes / 2 / unit_bytes;
    if (groups > 1 && static_cast<std::size_t>(groups) > max_units) return none;
    if (groups == 1 && static_cast<std::size_t>(want) > max_units) want = static_cast<int>(max_units);
  }
  const auto ceil_div = [](int a, int b) { return (a + b - 1) / b; };
  split_k_plan p;
  if (groups > 1) {  // whole groups per split, and whole stages
    const int q = stage_steps / std::gcd(group_steps, stage_steps);  // groups per whole number of stages
    const int per = ceil_div(ceil_div(groups, std::max(1, std::min(want, ceil_div(groups, q)))), q) * q;
    p = {ceil_div(groups, per), per * group_steps, groups};
  } else {
    const int min_steps = (automatic ? 4 : 1) * stage_steps;
    const int splits = std::max(1, std::min(want, steps / min_steps));
    const int per = ceil_div(ceil_div(steps, splits), stage_steps) * stage_steps;
    p = {ceil_div(steps, per), per, 0};
    p.units = p.splits;
  }
  return p.splits < 2 ? none : p;
}

}  // namespace detail

/// Which tensor-core path an integer GEMM takes: automatic (warpgroup MMA where the device
/// runs this program's sm_90a code and the kernels passed their self-test there,
/// detail::wgmma_verified; else int4 mma.sync for W4A4 on sm_80 to sm_89 and int8 mma.sync
/// otherwise), or one forced (tests run each one the device has; a forced wgmma skips the
/// self-test, so that a failure shows in the caller's own results). wgmma_cluster is only
/// taken when forced: W8A8 per channel in two-block clusters sharing the weight tile by
/// TMA multicast (detail::integer_gemm_wgmma_cluster_kernel), not yet measured against
/// the plain wgmma kernel on a GPU.
enum class mma_path {
  automatic,
  int4_mma,      ///< mma.sync m16n8k64 s4 (W4A4)
  int8_mma,      ///< mma.sync m16n8k32 s8, 4-bit operands widened in registers
  wgmma,         ///< sm_90a wgmma m64n{256,128}k32 s8, 4-bit operands widened in shared memory
  wgmma_cluster  ///< sm_90a wgmma m64n256k32 s8, W8A8 per channel, TMA multicast in clusters of 2
};

/// The path's name, for logs and benchmark labels.
constexpr const char* name(mma_path p) noexcept {
  switch (p) {
    case mma_path::automatic: return "automatic";
    case mma_path::int4_mma: return "int4 mma.sync";
    case mma_path::int8_mma: return "int8 mma.sync";
    case mma_path::wgmma: return "wgmma";
    case mma_path::wgmma_cluster: return "wgmma cluster";
  }
  return "?";
}

}  // namespace quarot::cuda

namespace quarot::gemm {

/// The integer GEMM of an integer_policy on the CUDA backend: the CPU class's interface,
/// with device activations (cuda::device_activations, from cuda::quantize_activations or
/// cuda::rotate_quantize), a device bias pointer and a device output view. A call holds no
/// state of the object (asymmetric weights' row sums and split-K partials are
/// stream-ordered scratch), so calls on several streams may run at once; each needs the
/// weights' device current.
template <int WeightBits, int ActivationBits>
class integer_gemm<integer_policy<cuda::device, WeightBits, ActivationBits>> {
 public:
  using policy = integer_policy<cuda::device, WeightBits, ActivationBits>;
  static_assert(ActivationBits <= 8, "16-bit activations are not implemented on the CUDA backend");
  static_assert(WeightBits == 4 || ActivationBits > 4, "4-bit activations need 4-bit weights (W4A4)");

  explicit integer_gemm(const packed_weights& w, cuda::mma_path path = cuda::mma_path::automatic,
                        cudaStream_t stream = nullptr)
      : w_(cuda::device_weights::upload(w, stream)), path_(path), automatic_(path == cuda::mma_path::automatic) {
    quarot::detail::require(w.bits == WeightBits, "GEMM policy expects ", WeightBits, "-bit packed weights, got ",
                            w.bits, "-bit");
    quarot::detail::require(w.k <= 65536, "GEMM: K = ", w.k, " exceeds 65536 (int32 accumulator bound)");
    const int cc = cuda::detail::compute_capability();
    const bool wgmma = cuda::detail::has_wgmma();
    if (path_ == cuda::mma_path::automatic)
      path_ = wgmma && cuda::detail::wgmma_verified()                         ? cuda::mma_path::wgmma
              : WeightBits == 4 && ActivationBits <= 4 && cc >= 80 && cc < 90 ? cuda::mma_path::int4_mma
                                                                              : cuda::mma_path::int8_mma;
    quarot::detail::require(path_ != cuda::mma_path::int4_mma || (WeightBits == 4 && ActivationBits <= 4),
                            "CUDA GEMM: the int4 MMA path needs W4A4");
    quarot::detail::require((path_ != cuda::mma_path::wgmma && path_ != cuda::mma_path::wgmma_cluster) || wgmma,
                            "CUDA GEMM: the ", cuda::name(path_), " path needs a compute capability 9.0 device running "
                            "code built for sm_90a (CMake CUDA architecture 90a); this device has compute capability ", cc);
    quarot::detail::require(path_ != cuda::mma_path::wgmma_cluster || (WeightBits == 8 && ActivationBits == 8),
                            "CUDA GEMM: the wgmma cluster path needs W8A8, not W", WeightBits, "A", ActivationBits);
    quarot::detail::require(path_ != cuda::mma_path::wgmma_cluster || w.groups == 1,
                            "CUDA GEMM: the wgmma cluster path needs per-channel weights, not ", w.groups,
                            " groups of ", w.group_size);
    const std::size_t k_step = path_ == cuda::mma_path::int4_mma ? 64 : 32;
    quarot::detail::require(w.groups == 1 || w.group_size % k_step == 0, "CUDA GEMM: group size ", w.group_size,
                            " is not a multiple of the MMA's K step ", k_step);
    QUAROT_CUDA_CHECK(
        cudaDeviceGetAttribute(&sm_count_, cudaDevAttrMultiProcessorCount, cuda::detail::current_device()));
  }

  /// Split-K (bit-identical results either way): 0 automatic (the default: K is split
  /// when the output tiles leave SMs idle, as in decode or short prefill; see
  /// detail::plan_split_k), 1 never, s >= 2 at most s splits. Every path splits but the
  /// wgmma cluster one, which refuses s >= 2.
  integer_gemm& set_split_k(int s) {
    quarot::detail::require(s >= 0 && s <= 64, "CUDA GEMM: split-K ", s, " is not in [0, 64]");
    quarot::detail::require(s < 2 || path_ != cuda::mma_path::wgmma_cluster, "CUDA GEMM: split-K ", s,
                            " on the wgmma cluster path, which does not split K");
    split_k_ = s;
    return *this;
  }
  [[nodiscard]] int split_k() const noexcept { return split_k_; }

  /// The path a call with m activation rows takes: path(), except that an automatic wgmma
  /// gives small products to int8 mma.sync: at m <= 64 with fewer wgmma tiles (128 x 256,
  /// grouped 128 x 128) than SMs. Both split K there; mma.sync's 128 x 64 tiles need fewer
  /// splits (smaller partials) to fill the SMs, and its tensor-core rate is enough for
  /// a product bound by the weight stream (prediction, docs/PERFORMANCE.md; BM_cuda_gemm
  /// has both, the wgmma one with the path forced).
  [[nodiscard]] cuda::mma_path path_for(std::size_t m) const noexcept {
    if (path_ != cuda::mma_path::wgmma || !automatic_ || m > 64) return path_;
    const std::size_t bn = tile_cols(cuda::mma_path::wgmma);
    const std::size_t tiles = (w_.n_padded + bn - 1) / bn * ((m + 127) / 128);
    return tiles < static_cast<std::size_t>(sm_count_) ? cuda::mma_path::int8_mma : path_;
  }

  [[nodiscard]] std::size_t n() const noexcept { return w_.n; }
  [[nodiscard]] std::size_t k() const noexcept { return w_.k; }
  [[nodiscard]] const cuda::device_weights& weights() const noexcept { return w_; }
  [[nodiscard]] cuda::mma_path path() const noexcept { return path_; }

  /// y = x·Wᵀ (+ bias, a device array of N floats or null), y an M x N device view.
  template <output_element Out>
  void operator()(const cuda::device_activations& x, const float* bias, matrix_view<Out> y,
                  cudaStream_t stream = nullptr) const {
    quarot::detail::require(x.bits <= ActivationBits && x.packed() == (ActivationBits <= 4), "GEMM policy expects ",
                            ActivationBits, "-bit activations, got ", x.bits, "-bit");
    quarot::detail::require(x.cols == w_.k, "CUDA GEMM: activations have ", x.cols, " columns, weights K = ", w_.k);
    quarot::detail::require(x.k_padded == w_.k_padded, "CUDA GEMM: activation padding ", x.k_padded,
                            " != weight padding ", w_.k_padded);
    quarot::detail::require(y.rows == x.rows && y.cols == w_.n, "CUDA GEMM: output is ", y.rows, " x ", y.cols,
                            ", expected ", x.rows, " x ", w_.n);
    if (x.rows == 0 || w_.n == 0) return;
    cuda::detail::require_current_device(w_.data.device(), "CUDA GEMM: the weights");
    cuda::detail::require_current_device(x.data.device(), "CUDA GEMM: the activations");
    cuda::detail::require_device_view(y, "CUDA GEMM: the output");
    if (bias) cuda::detail::require_device_pointer(bias, "CUDA GEMM: the bias");
    const cuda::mma_path path = path_for(x.rows);
    const launch_geometry geo = geometry(x.rows, path);
    cuda::detail::cuda_gemm_operands op{};
    op.a = x.data.data();
    op.a_row_bytes = x.row_bytes;
    op.row_scales = x.scales.data();
    op.w = w_.data.data();
    op.w_row_bytes = w_.row_bytes;
    op.scales = w_.scales.data();
    op.zeros = w_.zeros.data();
    op.bias = bias;
    op.m = x.rows;
    op.n = w_.n;
    op.n_padded = w_.n_padded;
    op.steps = geo.steps;
    op.groups = static_cast<int>(w_.groups);
    op.group_steps = geo.group_steps;
    op.symmetric = w_.symmetric;
    // Act-order weights: the activations' levels in the weights' packed K order first
    // (per-call scratch, as below).
    const cuda::detail::stream_scratch<std::uint8_t> gathered(w_.act_order() ? x.rows * x.row_bytes : 0, stream);
    if (w_.act_order()) {
      const unsigned blocks = cuda::detail::grid_for(x.rows * (x.row_bytes / 4), 256);
      if (x.packed())
        cuda::detail::launch(cuda::detail::gather_activation_levels<true>, blocks, 256, 0, stream, x.data.data(),
                             x.row_bytes, x.rows, static_cast<int>(x.cols), w_.k_order.data(), gathered.data());
      else
        cuda::detail::launch(cuda::detail::gather_activation_levels<false>, blocks, 256, 0, stream, x.data.data(),
                             x.row_bytes, x.rows, static_cast<int>(x.cols), w_.k_order.data(), gathered.data());
      op.a = gathered.data();
    }
    // Asymmetric weights: per-call scratch, so that calls on two streams do not share it.
    const cuda::detail::stream_scratch<std::int32_t> rowsums(w_.symmetric ? 0 : x.rows * w_.groups, stream);
    if (!w_.symmetric) {
      const std::size_t items = x.rows * w_.groups;
      const int group_size = static_cast<int>(w_.groups == 1 ? w_.k_padded : w_.group_size);
      const unsigned blocks = cuda::detail::grid_for(items, 256);
      if (x.packed())
        cuda::detail::launch(cuda::detail::activation_group_sums<true>, blocks, 256, 0, stream, op.a, x.row_bytes,
                             x.rows, op.groups, group_size, static_cast<int>(x.cols), rowsums.data());
      else
        cuda::detail::launch(cuda::detail::activation_group_sums<false>, blocks, 256, 0, stream, op.a, x.row_bytes,
                             x.rows, op.groups, group_size, static_cast<int>(x.cols), rowsums.data());
      op.rowsums = rowsums.data();
    }
    // Split-K scratch (detail::plan_split_k), then the kernel over tiles x splits.
    const auto& plan = geo.split;
    const bool split = plan.splits > 1;
    const cuda::detail::stream_scratch<std::int32_t> partials(
        split ? static_cast<std::size_t>(plan.units) * x.rows * w_.n_padded : 0, stream);
    const cuda::detail::stream_scratch<unsigned> tile_done(split ? geo.tile_count : 0, stream);
    if (split) QUAROT_CUDA_CHECK(cudaMemsetAsync(tile_done.data(), 0, geo.tile_count * sizeof(unsigned), stream));
    const cuda::detail::split_k_operands sk{plan.splits, plan.split_steps, partials.data(), tile_done.data()};
    const dim3 grid(geo.tiles.x, geo.tiles.y, static_cast<unsigned>(plan.splits));
    if constexpr (WeightBits == 8 && ActivationBits == 8) {
      if (path == cuda::mma_path::wgmma_cluster) {
        cuda::detail::launch_wgmma_cluster(op, grid, y.data, y.stride, stream);
        return;
      }
    }
    if (path == cuda::mma_path::wgmma) {
      const auto run = [&](auto bn) {
        using S = cuda::detail::wgmma_tile_shape<a_bits, WeightBits, decltype(bn)::value>;
        const auto kernel = cuda::detail::integer_gemm_wgmma_kernel<a_bits, WeightBits, S::bn, Out>;
        cuda::detail::allow_shared(kernel, S::shared_bytes);
        cuda::detail::launch(kernel, grid, S::threads, S::shared_bytes, stream, op, sk, y.data, y.stride);
      };
      if (w_.groups == 1) run(std::integral_constant<int, 256>{});
      else run(std::integral_constant<int, 128>{});
      return;
    }
    using K = cuda::detail::mma_kind;
    if (path == cuda::mma_path::int4_mma)
      cuda::detail::launch(cuda::detail::integer_gemm_kernel<K::s4, 4, 4, Out>, grid, 128, 0, stream, op, sk, y.data,
                           y.stride);
    else
      cuda::detail::launch(cuda::detail::integer_gemm_kernel<K::s8, a_bits, WeightBits, Out>, grid, 128, 0, stream, op,
                           sk, y.data, y.stride);
  }

  /// The number of K splits a call with m activation rows takes (1: none): see
  /// set_split_k and detail::plan_split_k.
  [[nodiscard]] int splits_for(std::size_t m) const { return geometry(m, path_for(m)).split.splits; }

 private:
  static constexpr int a_bits = ActivationBits <= 4 ? 4 : 8;  // the kernels' activation storage

  /// The output columns of one block tile on `path` (its rows are 128): wgmma 256 per
  /// channel and 128 for groups (wgmma_tile_shape's BN, as operator() launches it),
  /// mma.sync 64 (gemm_tile_shape).
  [[nodiscard]] std::size_t tile_cols(cuda::mma_path path) const noexcept {
    if (path == cuda::mma_path::wgmma_cluster) return 256;
    if (path != cuda::mma_path::wgmma) return 64;
    return w_.groups == 1 ? 256 : 128;
  }

  /// A call's grid and K steps on `path`: output tiles of 128 rows by the kernel's width
  /// (wgmma 256, grouped 128; mma.sync 64), K steps of its MMA (int4 64, else 32), and
  /// the split-K plan over them, in the kernel's stages (wgmma: S::steps; mma.sync: 2) and
  /// for the blocks resident at once (wgmma 1 per SM, mma.sync 2).
  struct launch_geometry {
    dim3 tiles;
    std::size_t tile_count;
    int steps, group_steps;
    cuda::detail::split_k_plan split;
  };
  [[nodiscard]] launch_geometry geometry(std::size_t m, cuda::mma_path path) const {
    const bool wgmma = path == cuda::mma_path::wgmma;
    const int k_step = path == cuda::mma_path::int4_mma ? 64 : 32;
    launch_geometry g{};
    g.steps = static_cast<int>(w_.k_padded / k_step);
    g.group_steps = w_.groups == 1 ? g.steps : static_cast<int>(w_.group_size / k_step);
    g.tiles = dim3(cuda::detail::grid_for(w_.n_padded, tile_cols(path)), cuda::detail::grid_for(m, 128));
    const bool cluster = path == cuda::mma_path::wgmma_cluster;
    if (cluster) g.tiles.y += g.tiles.y % 2;  // row tiles in whole clusters of 2
    g.tile_count = static_cast<std::size_t>(g.tiles.x) * g.tiles.y;
    if (cluster) {  // K not split
      g.split = cuda::detail::split_k_plan{1, g.steps, 0};
      return g;
    }
    const int stage_steps = wgmma ? cuda::detail::wgmma_tile_shape<a_bits, WeightBits, 128>::steps : 2;
    const std::size_t slots = static_cast<std::size_t>(sm_count_) * (wgmma ? 1 : 2);
    const std::size_t a_row_bytes = a_bits == 4 ? w_.k_padded / 2 : w_.k_padded;
    const std::size_t operand_bytes = g.tiles.x * m * a_row_bytes + g.tiles.y * w_.n_padded * w_.row_bytes;
    g.split = cuda::detail::plan_split_k(g.steps, stage_steps, g.group_steps, static_cast<int>(w_.groups), m,
                                         w_.n_padded, operand_bytes, g.tile_count, slots, split_k_);
    return g;
  }

  cuda::device_weights w_;
  cuda::mma_path path_;
  bool automatic_;  // path_ was chosen here (path_for may then trade wgmma for mma.sync)
  int split_k_ = 0;
  int sm_count_ = 1;
};

/// The weight-only GEMM of a weight_only_policy on the CUDA backend (W4A16, W8A16, W4A32):
/// the CPU class's interface on device memory, over cuda::weight_only_gemm's kernel. As on
/// the CPU, a bf16 policy (w4a16_policy, w8a16_policy) rounds its activations to bf16
/// before the products (fp32 and fp16 inputs, as they are loaded; bf16 ones are already)
/// and a float policy (w4a32_policy) keeps them as given; sums in fp32, so results agree
/// with the CPU class to fp32 rounding (the order of the sums differs). Non-finite inputs
/// give non-finite outputs (the CPU class throws; a kernel cannot). A call holds no state
/// of the object: calls on several streams may run at once.
template <int WeightBits, class Activation>
class weight_only_gemm<weight_only_policy<cuda::device, WeightBits, Activation>> {
 public:
  using policy = weight_only_policy<cuda::device, WeightBits, Activation>;

  /// W packed with gemm::pack_weights (act-order too), uploaded to the current device.
  explicit weight_only_gemm(const packed_weights& w, cudaStream_t stream = nullptr)
      : w_(cuda::device_weights::upload(check(w), stream)) {}

  [[nodiscard]] std::size_t n() const noexcept { return w_.n; }
  [[nodiscard]] std::size_t k() const noexcept { return w_.k; }
  [[nodiscard]] const cuda::device_weights& weights() const noexcept { return w_; }

  /// y (M x N, fp32, bf16 or fp16) = x·Wᵀ + bias for x (M x K, fp32, fp16 or bf16), all
  /// device memory (bias: N floats or null), on `stream` with the weights' device current.
  template <storage_float T, class Out>
  void operator()(matrix_view<const T> x, matrix_view<Out> y, const float* bias = nullptr,
                  cudaStream_t stream = nullptr) const {
    constexpr bool round = std::is_same_v<Activation, bfloat16> && !std::is_same_v<T, bfloat16>;
    cuda::detail::launch_weight_only<round>(w_, x, bias, y, stream);
  }
  /// The same for a view of mutable activation rows (a device_buffer's view()).
  template <storage_float T, class Out>
  void operator()(matrix_view<T> x, matrix_view<Out> y, const float* bias = nullptr,
                  cudaStream_t stream = nullptr) const {
    (*this)(matrix_view<const T>(x), y, bias, stream);
  }

 private:
  /// The weights' checks before the upload, so that a bad matrix allocates nothing.
  static const packed_weights& check(const packed_weights& w) {
    quarot::detail::require(w.bits == WeightBits, "weight-only GEMM policy expects ", WeightBits,
                            "-bit packed weights, got ", w.bits, "-bit");
    cuda::detail::require_weight_only_groups(w.groups, w.group_size);
    return w;
  }

  cuda::device_weights w_;
};

}  // namespace quarot::gemm
