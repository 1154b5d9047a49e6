// quarot — the integer GEMM's kernel interface: what a tile kernel reads and writes, so
// that a user can plug in their own kernel behind the same policies, layers and packing
// (CUTLASS 3's collective mainloops are swapped the same way under one GEMM type).
//
// A policy's backend is either one of the library's tags (cpu::scalar, cpu::avx2_backend,
// cpu::avx_vnni_backend, cpu::avx512vnni_backend) or a user type that models
// gemm::integer_tile_kernel:
//
//   struct my_kernel {
//     static constexpr std::size_t tile_rows = 4;     // optional (default 6); even, 2..16
//     static bool available() noexcept;                // optional: false -> integer_gemm throws
//     static void tile(const gemm::kernel_operands& op, std::size_t m0, std::size_t rows,
//                      std::size_t n0, std::size_t cols, float* scratch, float* out,
//                      std::size_t ldo) noexcept;
//   };
//   gemm::integer_gemm<gemm::integer_policy<my_kernel, 4, 8>> w4a8(packed);
//
// The GEMM's driver (integer_gemm.hpp) prepares the activations, splits the output into
// 64-column tiles and blocks of kernel rows over the thread pool, and calls `tile` from
// several threads at once on disjoint tiles: n0 a multiple of 64, 1 <= cols <= 64,
// 1 <= rows <= tile_rows. `tile` writes, for r < rows and j < cols (and nothing else),
//
//   out[r·ldo + j] = s_a[m]·Σ_g s_w[g, n]·(acc_g − 128·colsum[g, n] − z[g, n]·rowsum[m, g]) + bias[n]
//   acc_g = Σ_{k ∈ g} a[m, k]·w_raw[n, k],   m = m0 + r, n = n0 + j,
//
// where a is u8 = activation level + 128, w_raw the stored weight (packed_weight_raw) and
// the weight level is w_raw − z. Every integer here is exact in int32 (K <= 65536). The
// library's kernels compute it as c = fma(s_w, float(exact group sum), c) from c = 0, group
// by group, then y = fma(s_a, c, bias); reference_tile (integer_gemm.hpp) is that order in
// plain C++, and a kernel that keeps it agrees with the built-in ones bit for bit.
// `scratch` is tile_rows x 64 floats of the calling thread's, free for the kernel's use.
// Kernel rows are tokens, except for 16-bit activations (integer W4A16/W8A16): token t is
// kernel rows 2t (high byte, s_a = 256·s) and 2t + 1 (low byte), and the driver adds the two
// rows' outputs (and the bias, which is then null in op) after the call.
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>

namespace quarot::gemm {

/// Index of (group g, column col) in the packed per-group arrays (scales, zeros, colsums):
/// tile-major — per 64-column tile its groups in order, 64 values each — so a kernel
/// reads its tile's group data as one contiguous stream (gemm/packing.hpp).
constexpr std::size_t group_data_index(std::size_t groups, std::size_t g, std::size_t col) noexcept {
  return ((col / 64) * groups + g) * 64 + col % 64;
}

/// The operands of one GEMM call, as the driver hands them to a tile kernel. Layouts:
/// gemm/packing.hpp (weights, group data) and prepared_activations (integer_gemm.hpp).
struct kernel_operands {
  const std::uint8_t* a;        ///< kernel rows x k_padded (row stride lda), u8 = level + 128, K padded with 128
  std::size_t lda;
  const std::int32_t* rowsum;   ///< kernel rows x groups: Σ_k level over each group
  const float* row_scales;      ///< per kernel row
  const std::uint8_t* w;        ///< packed weights
  std::size_t quads;            ///< k_padded / 4
  std::size_t group_quads;      ///< k-quads per group (all of them for per-channel weights)
  std::size_t groups, n_padded, block_bytes;
  int bits;                     ///< 4 or 8
  const float* scales;          ///< per (group, column) at group_data_index
  const std::int32_t* zeros;    ///< ditto
  const std::int32_t* colsums;  ///< ditto: Σ_k w_raw over the group
  bool uniform_zero;            ///< every zero equals zero0 (symmetric weights)
  std::int32_t zero0;
  const float* bias;            ///< N values, or null (always null for 16-bit activations)
};

/// Byte offset, in packed weights of `quads` k-quads, of the block of (column col, k-quad
/// quad): a block holds 16 columns x 4 k per (panel, k-quad), the four panels' blocks of a
/// 64-column tile adjacent per k-quad (gemm/packing.hpp).
constexpr std::size_t packed_block_offset(std::size_t quads, std::size_t block_bytes, std::size_t col,
                                          std::size_t quad) noexcept {
  const std::size_t panel = col / 16;
  return (((panel / 4) * quads + quad) * 4 + panel % 4) * block_bytes;
}

/// The stored weight w_raw of (column col, packed K position k) in `bits`-bit packed weights
/// w of `quads` k-quads: block value (col % 16)·4 + k % 4, a byte (8-bit) or, in 4-bit
/// blocks, the low nibble of byte v (v < 32) or the high nibble of byte v − 32.
inline int packed_weight_raw(const std::uint8_t* w, std::size_t quads, int bits, std::size_t col,
                             std::size_t k) noexcept {
  const std::size_t v = (col % 16) * 4 + k % 4;
  const std::uint8_t* blk = w + packed_block_offset(quads, bits == 4 ? 32 : 64, col, k / 4);
  if (bits == 8) return static_cast<std::int8_t>(blk[v]);
  const std::uint8_t b = blk[v % 32];
  return v < 32 ? (b & 0x0f) : (b >> 4);
}
inline int packed_weight_raw(const kernel_operands& op, std::size_t col, std::size_t k) noexcept {
  return packed_weight_raw(op.w, op.quads, op.bits, col, k);
}

/// A user integer GEMM kernel (see the top of this file for the contract).
template <class K>
concept integer_tile_kernel = requires(const kernel_operands& op, std::size_t i, float* f) {
  { K::tile(op, i, i, i, i, f, f, i) } -> std::same_as<void>;
};

}  // namespace quarot::gemm
