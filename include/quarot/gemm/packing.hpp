// quarot — weight pre-packing for the integer GEMM kernels.
//
// Layout (docs/ARCHITECTURE.md, "GEMM"): columns (output channels) in panels of 16, four
// panels to a 64-column tile; K in steps of 4 ("k-quads"). Each (panel, k-quad) block
// holds the 16 x 4 weights as 64 values ordered column-major — value c·4 + kk is column c,
// k = 4·quad + kk — which is exactly the B operand of one AVX-512 vpdpbusd. The four
// blocks of a tile for one k-quad are adjacent, so a kernel reads one contiguous stream
// per tile (separate panels 64 KiB apart would all fall into one L1 set). 8-bit weights
// store the 64 values as bytes; 4-bit weights store them in 32 bytes in the interleaved
// int4 layout (byte j = value j | value j + 32 << 4), so a 256-bit load and two nibble
// masks rebuild the 64 bytes without shuffles. N is padded to a multiple of 64 and K to a
// multiple of 4 with zero weights.
//
// Stored values are "raw" non-negative-or-signed bytes w_raw with an integer zero z per
// (column, group) such that the weight level is w_raw - z:
//   8-bit symmetric: w_raw = q ∈ [-128, 127], z = 0
//   8-bit asymmetric: w_raw = q - 128, z = zero - 128
//   4-bit symmetric: w_raw = q + 8 ∈ [0, 15], z = 8
//   4-bit asymmetric: w_raw = q ∈ [0, 15], z = zero
// Activations enter the kernel as u8 = q_a + 128 (vpdpbusd multiplies u8 by s8), so the
// kernel subtracts 128·Σ_k w_raw (colsum, per column and group) and z·Σ_k q_a.
//
// GPTQ with act-order (g_idx: the group of each input column, groups interleaved along K)
// is packed with K reordered so that every group is a contiguous run again: packed
// position kk holds input column k_order[kk] (sorted by group, stable). The GEMMs then
// gather the activation columns in that order when they prepare them (a permutation of
// the row, exact), as GPTQ kernels with act-order do.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "../backend/cpu/gemm_kernels.hpp"
#include "kernel.hpp"
#include "../core/error.hpp"
#include "../quantize/rtn.hpp"

namespace quarot::gemm {

struct packed_weights {
  std::size_t n = 0, k = 0;          ///< logical shape (N x K)
  std::size_t n_padded = 0, k_padded = 0;
  int bits = 8;
  std::size_t group_size = 0;        ///< K elements per scale (k for per-channel)
  std::size_t groups = 1;            ///< groups per column (k / group_size)
  std::vector<std::uint8_t> data;    ///< panels x k-quads x (64 or 32) bytes
  // Per (group, column), at group_index(g, col): tile-major (per 64-column tile, its groups
  // in order, 64 columns each), so 16 consecutive columns are one vector load and a tile's
  // group data is one contiguous stream. (Group-major rows n_padded apart cost a cache
  // miss per group and array at M = 1: 1.8x the per-channel time at groups of 128.)
  std::vector<float> scales;         ///< n_padded x groups
  std::vector<std::int32_t> zeros;   ///< n_padded x groups, integer zero of w_raw
  std::vector<std::int32_t> colsums; ///< n_padded x groups, Σ_k w_raw over the group
  bool uniform_zero = false;         ///< symmetric weights: every zero is zero0
  std::int32_t zero0 = 0;
  /// Act-order weights: packed K position kk holds input column k_order[kk]; empty when
  /// K is in its original order.
  std::vector<std::uint32_t> k_order;

  [[nodiscard]] std::size_t block_bytes() const noexcept { return bits == 4 ? 32 : 64; }
  /// Index of (group g, column col) in scales, zeros and colsums.
  [[nodiscard]] std::size_t group_index(std::size_t g, std::size_t col) const noexcept {
    return group_data_index(groups, g, col);
  }
  [[nodiscard]] std::size_t quads() const noexcept { return k_padded / 4; }
  /// Byte offset of the block of (column col, k-quad quad).
  [[nodiscard]] std::size_t block_offset(std::size_t col, std::size_t quad) const noexcept {
    return packed_block_offset(quads(), block_bytes(), col, quad);
  }
  /// The raw stored value of (column n, packed K position kk) (for tests and the scalar
  /// reference; kk is the input column unless k_order reorders K).
  [[nodiscard]] int raw(std::size_t col, std::size_t kk) const noexcept {
    return packed_weight_raw(data.data(), quads(), bits, col, kk);
  }
};

/// Packs a quantized weight matrix (from rtn_quantizer or GPTQ, act-order included) for
/// the integer and weight-only kernels.
inline packed_weights pack_weights(const quantized_matrix& q, int bits) {
  detail::require(bits == 4 || bits == 8, "pack_weights: weight bits must be 4 or 8, got ", bits);
  detail::require(q.params.bits <= bits, "pack_weights: ", q.params.bits, "-bit levels do not fit ", bits, "-bit storage");
  detail::require(q.params.gran == granularity::per_channel || q.params.gran == granularity::per_group,
                  "pack_weights: weights must be quantized per channel or per group, not ", to_string(q.params.gran));
  packed_weights p;
  p.n = q.rows;
  p.k = q.cols;
  p.bits = bits;
  p.n_padded = (q.rows + 63) / 64 * 64;
  p.k_padded = (q.cols + 3) / 4 * 4;
  p.groups = q.groups_per_row;
  p.group_size = q.cols / q.groups_per_row;
  detail::require(p.groups == 1 || p.group_size % 4 == 0, "pack_weights: group size ", p.group_size,
                  " must be a multiple of 4 for the kernels");
  if (!q.g_idx.empty()) {
    detail::require(q.g_idx.size() == q.cols, "pack_weights: g_idx has ", q.g_idx.size(), " entries for K = ", q.cols);
    std::vector<std::size_t> count(p.groups, 0);
    for (const auto g : q.g_idx) {
      detail::require(g < p.groups, "pack_weights: g_idx holds group ", g, " of ", p.groups);
      ++count[g];
    }
    for (std::size_t g = 0; g < p.groups; ++g)
      detail::require(count[g] == p.group_size, "pack_weights: act-order group ", g, " has ", count[g],
                      " columns, expected ", p.group_size);
    p.k_order.resize(q.cols);
    std::vector<std::size_t> next(p.groups);
    for (std::size_t g = 0; g < p.groups; ++g) next[g] = g * p.group_size;
    for (std::size_t k = 0; k < q.cols; ++k) p.k_order[next[q.g_idx[k]]++] = static_cast<std::uint32_t>(k);
  }
  p.data.assign(p.n_padded / 16 * p.quads() * p.block_bytes(), 0);
  p.scales.assign(p.n_padded * p.groups, 0.0f);
  p.zeros.assign(p.n_padded * p.groups, 0);
  p.colsums.assign(p.n_padded * p.groups, 0);
  const bool sym = q.params.symmetric;
  p.uniform_zero = sym;
  p.zero0 = bits == 8 ? 0 : 8;
  for (std::size_t col = 0; col < p.n_padded; ++col) {
    for (std::size_t g = 0; g < p.groups; ++g) {
      if (col >= q.rows) continue;  // padded columns: raw 0, zero 0, scale 0
      const std::size_t slot = q.group_of(col, p.k_order.empty() ? g * p.group_size : p.k_order[g * p.group_size]);
      p.scales[p.group_index(g, col)] = q.scales[slot];
      const int zero = sym ? 0 : static_cast<int>(q.zeros[slot]);
      p.zeros[p.group_index(g, col)] = bits == 8 ? (sym ? 0 : zero - 128) : (sym ? 8 : zero);
    }
    for (std::size_t kk = 0; kk < p.k_padded; ++kk) {
      int raw = 0;  // padding (N or K): zero weight
      if (col < q.rows && kk < q.cols) {
        const int level = q.value(col, p.k_order.empty() ? kk : p.k_order[kk]);
        raw = bits == 8 ? (sym ? level : level - 128) : (sym ? level + 8 : level);
        p.colsums[p.group_index(kk / p.group_size, col)] += raw;
      }
      const std::size_t v = (col % 16) * 4 + kk % 4;
      std::uint8_t* blk = p.data.data() + p.block_offset(col, kk / 4);
      if (bits == 8) {
        blk[v] = static_cast<std::uint8_t>(static_cast<std::int8_t>(raw));
      } else {
        const auto nib = static_cast<std::uint8_t>(raw & 0x0f);
        if (v < 32) blk[v] = static_cast<std::uint8_t>((blk[v] & 0xf0) | nib);
        else blk[v - 32] = static_cast<std::uint8_t>((blk[v - 32] & 0x0f) | (nib << 4));
      }
    }
  }
  return p;
}

}  // namespace quarot::gemm
