// quarot — weight-only GEMM micro-kernels (W4A16 / W8A16; internal: use quarot/gemm.hpp).
//
// A tile of MR fp32 activation rows x 64 weight columns over all of K, on the packed
// weights of gemm/packing.hpp. A (panel, k-quad) block holds 16 columns x 4 k; loaded as
// 16 dwords, dword c holds the 4 raw weights of column c, so byte kk of every dword is a
// 16-column vector for k = 4·quad + kk: one shift/mask and one int->float conversion
// dequantize it in registers, and it meets a broadcast activation in an FMA. Per weight
// group g the kernel accumulates acc = Σ_k w_raw·x in fp32 (w_raw is an exact small
// integer) and folds it into the tile with the group's scale and zero:
//   total = fma(s, fma(-z, Σ_{k∈g} x, acc), total).
// The scalar kernel performs the same fp32 operations in the same order (std::fma), so the
// two agree bit for bit.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "../../core/backend.hpp"
#include "../../core/config.hpp"

#if QUAROT_HAS_X86_SIMD
#include <immintrin.h>
#endif

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // see gemm_kernels.hpp
#endif

namespace quarot::detail {

struct weight_only_operands {
  const float* x;            ///< rows x ldx activations, K zero-padded to k_padded
  std::size_t ldx;
  const float* xsum;         ///< rows x groups: Σ x over each weight group
  const std::uint8_t* w;     ///< packed weights
  std::size_t quads, group_quads, groups, n_padded, block_bytes;
  int bits;
  const float* scales;       ///< groups x n_padded
  const std::int32_t* zeros; ///< groups x n_padded
};

inline int weight_only_raw(const weight_only_operands& op, std::size_t col, std::size_t k) noexcept {
  const std::size_t panel = col / 16, quad = k / 4, v = (col % 16) * 4 + k % 4;
  const std::uint8_t* blk = op.w + (((panel / 4) * op.quads + quad) * 4 + panel % 4) * op.block_bytes;
  if (op.bits == 8) return static_cast<std::int8_t>(blk[v]);
  return v < 32 ? (blk[v] & 0x0f) : (blk[v - 32] >> 4);
}

/// c[r·64 + j] = Σ_g s·(Σ_k w_raw·x − z·xsum) for rows m0.. and columns n0 + j, j < cols.
inline void weight_only_tile(cpu::scalar, const weight_only_operands& op, std::size_t m0, std::size_t rows,
                             std::size_t n0, std::size_t cols, float* c) noexcept {
  for (std::size_t r = 0; r < rows; ++r) {
    const float* x = op.x + (m0 + r) * op.ldx;
    for (std::size_t j = 0; j < cols; ++j) {
      const std::size_t col = n0 + j;
      float total = 0.0f;
      for (std::size_t g = 0; g < op.groups; ++g) {
        float acc = 0.0f;
        for (std::size_t q = g * op.group_quads; q < (g + 1) * op.group_quads; ++q)
          for (std::size_t kk = 0; kk < 4; ++kk)
            acc = std::fma(static_cast<float>(weight_only_raw(op, col, 4 * q + kk)), x[4 * q + kk], acc);
        const float z = static_cast<float>(op.zeros[g * op.n_padded + col]);
        const float t = std::fma(-z, op.xsum[(m0 + r) * op.groups + g], acc);
        total = std::fma(op.scales[g * op.n_padded + col], t, total);
      }
      c[r * 64 + j] = total;
    }
  }
}

#if QUAROT_HAS_X86_SIMD
template <int Bits>
QUAROT_TARGET_AVX512 QUAROT_ALWAYS_INLINE __m512i load_weight_block(const std::uint8_t* blk) noexcept {
  if constexpr (Bits == 8) {
    return _mm512_loadu_si512(blk);
  } else {  // interleaved nibbles: low nibbles are columns 0-7, high nibbles columns 8-15
    const __m256i packed = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk));
    const __m256i mask = _mm256_set1_epi8(0x0f);
    const __m256i lo = _mm256_and_si256(packed, mask);
    const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(packed, 4), mask);
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
  }
}

/// Byte kk of every dword as 16 floats (unsigned for 4-bit raw values, signed for 8-bit).
template <int Bits, int KK>
QUAROT_TARGET_AVX512 QUAROT_ALWAYS_INLINE __m512 weight_column_vector(__m512i v) noexcept {
  if constexpr (Bits == 8) {
    const __m512i shifted = KK == 3 ? v : _mm512_slli_epi32(v, 24 - 8 * KK);
    return _mm512_cvtepi32_ps(_mm512_srai_epi32(shifted, 24));
  } else {
    const __m512i shifted = KK == 0 ? v : _mm512_srli_epi32(v, 8 * KK);
    return _mm512_cvtepi32_ps(KK == 3 ? shifted : _mm512_and_si512(shifted, _mm512_set1_epi32(0xff)));
  }
}

template <int MR, int Bits>
QUAROT_TARGET_AVX512 void weight_only_tile_avx512(const weight_only_operands& op, std::size_t m0, std::size_t n0,
                                                  float* c) noexcept {
  __m512 total[MR][4];
  QUAROT_UNROLL
  for (int r = 0; r < MR; ++r)
    QUAROT_UNROLL
    for (int p = 0; p < 4; ++p) total[r][p] = _mm512_setzero_ps();
  const std::uint8_t* tile = op.w + (n0 / 64) * op.quads * 4 * op.block_bytes;
  for (std::size_t g = 0; g < op.groups; ++g) {
    __m512 acc[MR][4];
    QUAROT_UNROLL
    for (int r = 0; r < MR; ++r)
      QUAROT_UNROLL
      for (int p = 0; p < 4; ++p) acc[r][p] = _mm512_setzero_ps();
    for (std::size_t q = g * op.group_quads; q < (g + 1) * op.group_quads; ++q) {
      const std::uint8_t* blk = tile + q * 4 * op.block_bytes;
      __m512 xb[MR][4];
      QUAROT_UNROLL
      for (int r = 0; r < MR; ++r)
        QUAROT_UNROLL
        for (int kk = 0; kk < 4; ++kk) xb[r][kk] = _mm512_set1_ps(op.x[(m0 + std::size_t(r)) * op.ldx + 4 * q + std::size_t(kk)]);
      QUAROT_UNROLL
      for (int p = 0; p < 4; ++p) {
        const __m512i v = load_weight_block<Bits>(blk + std::size_t(p) * op.block_bytes);
        const __m512 w0 = weight_column_vector<Bits, 0>(v), w1 = weight_column_vector<Bits, 1>(v);
        const __m512 w2 = weight_column_vector<Bits, 2>(v), w3 = weight_column_vector<Bits, 3>(v);
        QUAROT_UNROLL
        for (int r = 0; r < MR; ++r) {
          acc[r][p] = _mm512_fmadd_ps(w0, xb[r][0], acc[r][p]);
          acc[r][p] = _mm512_fmadd_ps(w1, xb[r][1], acc[r][p]);
          acc[r][p] = _mm512_fmadd_ps(w2, xb[r][2], acc[r][p]);
          acc[r][p] = _mm512_fmadd_ps(w3, xb[r][3], acc[r][p]);
        }
      }
    }
    QUAROT_UNROLL
    for (int p = 0; p < 4; ++p) {
      const std::size_t at = g * op.n_padded + n0 + 16 * std::size_t(p);
      const __m512 s = _mm512_loadu_ps(op.scales + at);
      const __m512 z = _mm512_cvtepi32_ps(_mm512_loadu_si512(op.zeros + at));
      QUAROT_UNROLL
      for (int r = 0; r < MR; ++r) {
        const __m512 t = _mm512_fnmadd_ps(z, _mm512_set1_ps(op.xsum[(m0 + std::size_t(r)) * op.groups + g]), acc[r][p]);
        total[r][p] = _mm512_fmadd_ps(s, t, total[r][p]);
      }
    }
  }
  QUAROT_UNROLL
  for (int r = 0; r < MR; ++r)
    QUAROT_UNROLL
    for (int p = 0; p < 4; ++p) _mm512_storeu_ps(c + r * 64 + 16 * p, total[r][p]);
}

/// AVX-512 backends (avx512bw and its VNNI refinement): rows in register tiles of 2.
template <class Arch>
  requires std::is_base_of_v<xsimd::avx512bw, Arch>
void weight_only_tile(cpu::simd<Arch>, const weight_only_operands& op, std::size_t m0, std::size_t rows,
                      std::size_t n0, std::size_t /*cols*/, float* c) noexcept {
  for (std::size_t r = 0; r < rows; r += 2) {
    const bool two = rows - r >= 2;
    if (op.bits == 4) {
      if (two) weight_only_tile_avx512<2, 4>(op, m0 + r, n0, c + r * 64);
      else weight_only_tile_avx512<1, 4>(op, m0 + r, n0, c + r * 64);
    } else {
      if (two) weight_only_tile_avx512<2, 8>(op, m0 + r, n0, c + r * 64);
      else weight_only_tile_avx512<1, 8>(op, m0 + r, n0, c + r * 64);
    }
  }
}
#endif

}  // namespace quarot::detail

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
