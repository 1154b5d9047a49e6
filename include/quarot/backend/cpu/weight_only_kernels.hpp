// quarot — weight-only GEMM micro-kernels (W4A16 / W8A16; internal: use quarot/gemm.hpp).
//
// A tile of MR fp32 activation rows x 64 weight columns over all of K, on the packed
// weights of gemm/packing.hpp. A (panel, k-quad) block holds 16 columns x 4 k; loaded as
// 16 dwords, dword c holds the 4 raw weights of column c, so byte kk of every dword is a
// 16-column vector for k = 4·quad + kk: a shift and a table permute (4-bit) or a shift
// and an int->float conversion (8-bit) dequantize it in registers, and it meets a
// broadcast activation in an FMA. Per weight
// group g the kernel accumulates acc = Σ_k w_raw·x in fp32 (w_raw is an exact small
// integer) in two chains, a over k ≡ 2, 0 and b over k ≡ 3, 1 (mod 4) in that order per
// quad, and folds a + b into the tile with the group's scale and zero:
//   total = fma(s, fma(-z, Σ_{k∈g} x, a + b), total).
// Every product w_raw·x is exact in fp32 when x is a bf16 value (8 x 8 significant bits),
// so each step a += w·x is one rounding: an FMA, or half of a vdpbf16ps, which adds the
// odd (k ≡ 2) product of a pair before the even one. With AVX512_BF16 the 4-bit kernel
// therefore turns 16 nibbles into 16 bf16 pairs with one shift and one vpermw and does
// 32 multiply-adds per instruction, and still equals the scalar kernel bit for bit
// (vdpbf16ps flushes denormals: inputs below 1e-38 are the one exception).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "../../core/backend.hpp"
#include "../../core/config.hpp"
#include "../../core/numeric.hpp"
#include "gemm_kernels.hpp"

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
  const std::uint32_t* xpairs; ///< rows x quads x 2 bf16 pairs {x0 | x2 << 16, x1 | x3 << 16}; null: fp32 x
  std::size_t ldx;
  const float* xsum;         ///< rows x groups: Σ x over each weight group
  const std::uint8_t* w;     ///< packed weights
  std::size_t quads, group_quads, groups, n_padded, block_bytes;
  int bits;
  const float* scales;       ///< per (group, column) at group_data_index (gemm/kernel.hpp)
  const std::int32_t* zeros; ///< ditto
};

/// The fp32 sum of x[0..n) in the order every backend uses: 16 lane sums (lane i % 16),
/// then lanes j += j + h for h = 8, 4, 2, 1 — what a 16-wide vector accumulation and its
/// halving reduction compute, so that the scalar and SIMD front ends agree bit for bit.
inline float lane_order_sum(const float* x, std::size_t n) noexcept {
  float lanes[16] = {};
  for (std::size_t i = 0; i < n; ++i) lanes[i % 16] += x[i];
  for (std::size_t h = 8; h > 0; h /= 2)
    for (std::size_t j = 0; j < h; ++j) lanes[j] += lanes[j + h];
  return lanes[0];
}

/// One activation row (K values in packed K order) as the weight-only kernels' operand:
/// xp = the row (rounded to bf16 when round_bf16) zero-padded to k_padded, xsum = its sum
/// over each weight group (lane_order_sum), and, when pairs is not null, the bf16 k-pairs
/// {x0 | x2 << 16, x1 | x3 << 16} of each quad. Returns the position of the first
/// non-finite input, or k when there is none (the outputs are then incomplete).
inline std::size_t prepare_weight_only_row(cpu::scalar, const float* src, std::size_t k, std::size_t k_padded,
                                           std::size_t group_size, bool round_bf16, float* xp, float* xsum,
                                           std::uint32_t* pairs) noexcept {
  for (std::size_t kk = 0; kk < k_padded; ++kk) {
    float v = kk < k ? src[kk] : 0.0f;
    if (!std::isfinite(v)) return kk;
    if (round_bf16) v = to_float(to_bfloat16(v));
    xp[kk] = v;
  }
  if (pairs)
    for (std::size_t q = 0; q < k_padded / 4; ++q) {
      auto bits = [&](std::size_t i) { return float_bits(xp[4 * q + i]) >> 16; };
      pairs[2 * q] = bits(0) | bits(2) << 16;
      pairs[2 * q + 1] = bits(1) | bits(3) << 16;
    }
  for (std::size_t g = 0; g * group_size < k; ++g)
    xsum[g] = lane_order_sum(xp + g * group_size, std::min(group_size, k - g * group_size));
  return k;
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
        float a = 0.0f, b = 0.0f;
        for (std::size_t q = g * op.group_quads; q < (g + 1) * op.group_quads; ++q)
          for (std::size_t kk : {2, 0, 3, 1}) {
            float& chain = kk % 2 ? b : a;
            chain = std::fma(static_cast<float>(gemm::packed_weight_raw(op.w, op.quads, op.bits, col, 4 * q + kk)), x[4 * q + kk], chain);
          }
        const float acc = a + b;
        const std::size_t gi = group_data_index(op.groups, g, col);
        const float z = static_cast<float>(op.zeros[gi]);
        const float t = std::fma(-z, op.xsum[(m0 + r) * op.groups + g], acc);
        total = std::fma(op.scales[gi], t, total);
      }
      c[r * 64 + j] = total;
    }
  }
}

#if QUAROT_HAS_X86_SIMD
/// The AVX-512 front end: the same values as the scalar one, 16 at a time (a decode step
/// spends as long here as in a 64-column tile of the kernel when it is done scalar).
template <class Arch>
  requires std::is_base_of_v<xsimd::avx512bw, Arch>
QUAROT_TARGET_AVX512 std::size_t prepare_weight_only_row(cpu::simd<Arch>, const float* src, std::size_t k,
                                                         std::size_t k_padded, std::size_t group_size, bool round_bf16,
                                                         float* xp, float* xsum, std::uint32_t* pairs) noexcept {
  const __m512 inf = _mm512_set1_ps(INFINITY);
  // Word t of a quad's pair output takes the bf16 (high) word of lane {0, 2, 1, 3}[t % 4].
  const __m512i pair_index = _mm512_set_epi16(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,  //
                                              31, 27, 29, 25, 23, 19, 21, 17, 15, 11, 13, 9, 7, 3, 5, 1);
  for (std::size_t kk = 0; kk < k_padded; kk += 16) {
    const std::size_t in = kk < k ? std::min<std::size_t>(16, k - kk) : 0, out = std::min<std::size_t>(16, k_padded - kk);
    const __mmask16 in_mask = static_cast<__mmask16>((1u << in) - 1u), out_mask = static_cast<__mmask16>((1u << out) - 1u);
    __m512 v = _mm512_maskz_loadu_ps(in_mask, src + kk);
    // |v| >= inf, or unordered: Inf or NaN.
    if (_mm512_cmp_ps_mask(_mm512_abs_ps(v), inf, _CMP_NLT_UQ))
      for (std::size_t i = kk;; ++i)
        if (!std::isfinite(src[i])) return i;
    if (round_bf16) {  // to_bfloat16's round to nearest even on finite values
      const __m512i u = _mm512_castps_si512(v);
      const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
      const __m512i r = _mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), lsb);
      v = _mm512_castsi512_ps(_mm512_and_si512(r, _mm512_set1_epi32(static_cast<int>(0xffff0000u))));
    }
    _mm512_mask_storeu_ps(xp + kk, out_mask, v);
    if (pairs) {  // out is a multiple of 4: one pair of dwords per quad
      const __m512i words = _mm512_permutexvar_epi16(pair_index, _mm512_castps_si512(v));
      _mm512_mask_storeu_epi32(pairs + kk / 2, static_cast<__mmask16>((1u << (out / 2)) - 1u), words);
    }
  }
  for (std::size_t g = 0; g * group_size < k; ++g) {
    const float* x = xp + g * group_size;
    const std::size_t n = std::min(group_size, k - g * group_size);
    __m512 acc = _mm512_setzero_ps();
    for (std::size_t i = 0; i < n; i += 16) {
      const std::size_t left = std::min<std::size_t>(16, n - i);
      acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << left) - 1u), x + i));
    }
    // lane_order_sum's reduction: j += j + 8, + 4, + 2, + 1.
    __m256 h8 = _mm256_add_ps(_mm512_castps512_ps256(acc), _mm512_extractf32x8_ps(acc, 1));
    __m128 h4 = _mm_add_ps(_mm256_castps256_ps128(h8), _mm256_extractf128_ps(h8, 1));
    __m128 h2 = _mm_add_ps(h4, _mm_movehl_ps(h4, h4));
    xsum[g] = _mm_cvtss_f32(_mm_add_ss(h2, _mm_movehdup_ps(h2)));
  }
  return k;
}

/// Byte kk of every dword of an 8-bit block as 16 floats (signed raw values). (4-bit
/// blocks are expanded by the table permute in weight_only_fma_quad instead.)
template <int KK>
QUAROT_TARGET_AVX512 QUAROT_ALWAYS_INLINE __m512 int8_column_vector(__m512i v) noexcept {
  const __m512i shifted = KK == 3 ? v : _mm512_slli_epi32(v, 24 - 8 * KK);
  return _mm512_cvtepi32_ps(_mm512_srai_epi32(shifted, 24));
}

template <int MR, int Bits>
QUAROT_TARGET_AVX512 QUAROT_ALWAYS_INLINE void weight_only_fma_quad(const weight_only_operands& op, std::size_t m0,
                                                                   const std::uint8_t* blk, std::size_t q,
                                                                   __m512 (&acc)[MR][4], __m512 (&acc_odd)[MR][4]) noexcept {
  const __m512 table = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i shift0 = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 4, 4, 4, 4, 4, 4, 4, 4);
  __m512 xb[MR][4];
  QUAROT_UNROLL
  for (int r = 0; r < MR; ++r)
    QUAROT_UNROLL
    for (int kk = 0; kk < 4; ++kk) xb[r][kk] = _mm512_set1_ps(op.x[(m0 + std::size_t(r)) * op.ldx + 4 * q + std::size_t(kk)]);
  QUAROT_UNROLL
  for (int p = 0; p < 4; ++p) {
    __m512 w0, w1, w2, w3;
    if constexpr (Bits == 4) {
      // Both halves hold the 32 packed bytes; lane c < 8 takes the low nibble of byte kk
      // of dword c (column c), lane 8 + c the high nibble (column 8 + c). vpermps reads
      // only the low 4 bits of each index, so one variable shift and one permute of the
      // table {0, 1, ..., 15} turn 16 nibbles into 16 exact floats.
      const __m512i v = _mm512_broadcast_i64x4(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + std::size_t(p) * op.block_bytes)));
      w0 = _mm512_permutexvar_ps(_mm512_srlv_epi32(v, shift0), table);
      w1 = _mm512_permutexvar_ps(_mm512_srlv_epi32(v, _mm512_add_epi32(shift0, _mm512_set1_epi32(8))), table);
      w2 = _mm512_permutexvar_ps(_mm512_srlv_epi32(v, _mm512_add_epi32(shift0, _mm512_set1_epi32(16))), table);
      w3 = _mm512_permutexvar_ps(_mm512_srlv_epi32(v, _mm512_add_epi32(shift0, _mm512_set1_epi32(24))), table);
    } else {
      const __m512i v = _mm512_loadu_si512(blk + std::size_t(p) * op.block_bytes);
      w0 = int8_column_vector<0>(v);
      w1 = int8_column_vector<1>(v);
      w2 = int8_column_vector<2>(v);
      w3 = int8_column_vector<3>(v);
    }
    QUAROT_UNROLL
    for (int r = 0; r < MR; ++r) {
      acc[r][p] = _mm512_fmadd_ps(w2, xb[r][2], acc[r][p]);
      acc[r][p] = _mm512_fmadd_ps(w0, xb[r][0], acc[r][p]);
      acc_odd[r][p] = _mm512_fmadd_ps(w3, xb[r][3], acc_odd[r][p]);
      acc_odd[r][p] = _mm512_fmadd_ps(w1, xb[r][1], acc_odd[r][p]);
    }
  }
}

/// The same quad with vdpbf16ps (4-bit weights, bf16 activations): per panel one shift
/// and one vpermw per pair of k.
template <int MR>
QUAROT_TARGET_AVX512BF16 QUAROT_ALWAYS_INLINE void weight_only_bf16_quad(const weight_only_operands& op,
                                                                        std::size_t m0, const std::uint8_t* blk,
                                                                        std::size_t q, __m512 (&acc)[MR][4],
                                                                        __m512 (&acc_odd)[MR][4]) noexcept {
  // bf16 of 0..15, twice (vpermw reads 5 index bits; the fifth is a neighbouring nibble's).
  const __m512i table = _mm512_setr_epi32(0x3f800000, 0x40404000, 0x40a04080, 0x40e040c0, 0x41104100, 0x41304120,
                                          0x41504140, 0x41704160, 0x3f800000, 0x40404000, 0x40a04080, 0x40e040c0,
                                          0x41104100, 0x41304120, 0x41504140, 0x41704160);
  // Word 2c of lane c holds nibbles (c, k0), (c+8, k0), (c, k1), (c+8, k1); word 2c+1 the
  // same for k2, k3. Shift 0 / 4 (columns 0-7 / 8-15) puts k0 and k2 in the low bits, 8 / 12 k1 and k3.
  const __m512i shift_a = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 0x00040004, 0x00040004, 0x00040004, 0x00040004,
                                            0x00040004, 0x00040004, 0x00040004, 0x00040004);
  const __m512i shift_b = _mm512_add_epi16(shift_a, _mm512_set1_epi16(8));
  __m512i xa[MR], xb[MR];
  QUAROT_UNROLL
  for (int r = 0; r < MR; ++r) {
    const std::uint32_t* pr = op.xpairs + ((m0 + std::size_t(r)) * op.quads + q) * 2;
    xa[r] = _mm512_set1_epi32(static_cast<int>(pr[0]));
    xb[r] = _mm512_set1_epi32(static_cast<int>(pr[1]));
  }
  QUAROT_UNROLL
  for (int p = 0; p < 4; ++p) {
    const __m512i v = _mm512_broadcast_i64x4(
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + std::size_t(p) * op.block_bytes)));
    const __m512i wa = _mm512_permutexvar_epi16(_mm512_srlv_epi16(v, shift_a), table);
    const __m512i wb = _mm512_permutexvar_epi16(_mm512_srlv_epi16(v, shift_b), table);
    QUAROT_UNROLL
    for (int r = 0; r < MR; ++r) {
      acc[r][p] = _mm512_dpbf16_ps(acc[r][p], (__m512bh)wa, (__m512bh)xa[r]);
      acc_odd[r][p] = _mm512_dpbf16_ps(acc_odd[r][p], (__m512bh)wb, (__m512bh)xb[r]);
    }
  }
}

/// Folds a group's two chains into the tile: total = fma(s, fma(-z, Σx, a + b), total).
template <int MR>
QUAROT_TARGET_AVX512 QUAROT_ALWAYS_INLINE void weight_only_group_epilogue(const weight_only_operands& op,
                                                                         std::size_t m0, std::size_t n0, std::size_t g,
                                                                         __m512 (&acc)[MR][4], __m512 (&acc_odd)[MR][4],
                                                                         __m512 (&total)[MR][4]) noexcept {
  QUAROT_UNROLL
  for (int p = 0; p < 4; ++p) {
    const std::size_t at = group_data_index(op.groups, g, n0) + 16 * std::size_t(p);
    const __m512 s = _mm512_loadu_ps(op.scales + at);
    const __m512 z = _mm512_cvtepi32_ps(_mm512_loadu_si512(op.zeros + at));
    QUAROT_UNROLL
    for (int r = 0; r < MR; ++r) {
      const __m512 sum = _mm512_add_ps(acc[r][p], acc_odd[r][p]);
      const __m512 t = _mm512_fnmadd_ps(z, _mm512_set1_ps(op.xsum[(m0 + std::size_t(r)) * op.groups + g]), sum);
      total[r][p] = _mm512_fmadd_ps(s, t, total[r][p]);
      acc[r][p] = acc_odd[r][p] = _mm512_setzero_ps();
    }
  }
}

template <int MR>
QUAROT_TARGET_AVX512 QUAROT_ALWAYS_INLINE void weight_only_store(float* c, __m512 (&total)[MR][4]) noexcept {
  QUAROT_UNROLL
  for (int r = 0; r < MR; ++r)
    QUAROT_UNROLL
    for (int p = 0; p < 4; ++p) _mm512_storeu_ps(c + r * 64 + 16 * p, total[r][p]);
}

// The two tile drivers differ only in the quad step (and their target attributes, which
// is why they are two functions): two accumulators per (row, panel), so that at one row
// eight independent chains cover the multiply-add latency.
#define QUAROT_WEIGHT_ONLY_TILE_BODY(QUAD_STEP)                                              \
  __m512 total[MR][4], acc[MR][4], acc_odd[MR][4];                                           \
  QUAROT_UNROLL                                                                              \
  for (int r = 0; r < MR; ++r)                                                               \
    QUAROT_UNROLL                                                                            \
    for (int p = 0; p < 4; ++p) total[r][p] = acc[r][p] = acc_odd[r][p] = _mm512_setzero_ps(); \
  const std::uint8_t* tile = op.w + (n0 / 64) * op.quads * 4 * op.block_bytes;              \
  for (std::size_t g = 0; g < op.groups; ++g) {                                              \
    for (std::size_t q = g * op.group_quads; q < (g + 1) * op.group_quads; ++q)              \
      QUAD_STEP(op, m0, tile + q * 4 * op.block_bytes, q, acc, acc_odd);                     \
    weight_only_group_epilogue<MR>(op, m0, n0, g, acc, acc_odd, total);                      \
  }                                                                                          \
  weight_only_store<MR>(c, total);

template <int MR, int Bits>
QUAROT_TARGET_AVX512 void weight_only_tile_fma(const weight_only_operands& op, std::size_t m0, std::size_t n0,
                                               float* c) noexcept {
  QUAROT_WEIGHT_ONLY_TILE_BODY((weight_only_fma_quad<MR, Bits>))
}

template <int MR>
QUAROT_TARGET_AVX512BF16 void weight_only_tile_bf16(const weight_only_operands& op, std::size_t m0, std::size_t n0,
                                                    float* c) noexcept {
  QUAROT_WEIGHT_ONLY_TILE_BODY(weight_only_bf16_quad<MR>)
}
#undef QUAROT_WEIGHT_ONLY_TILE_BODY

/// AVX-512 backends (avx512bw and its VNNI refinement): rows in register tiles of 2.
template <class Arch>
  requires std::is_base_of_v<xsimd::avx512bw, Arch>
void weight_only_tile(cpu::simd<Arch>, const weight_only_operands& op, std::size_t m0, std::size_t rows,
                      std::size_t n0, std::size_t /*cols*/, float* c) noexcept {
  // op.xpairs is set only for 4-bit weights with bf16 activations on a CPU with AVX512_BF16.
  for (std::size_t r = 0; r < rows; r += 2) {
    const bool two = rows - r >= 2;
    float* cr = c + r * 64;
    if (op.xpairs) {
      if (two) weight_only_tile_bf16<2>(op, m0 + r, n0, cr);
      else weight_only_tile_bf16<1>(op, m0 + r, n0, cr);
    } else if (op.bits == 4) {
      if (two) weight_only_tile_fma<2, 4>(op, m0 + r, n0, cr);
      else weight_only_tile_fma<1, 4>(op, m0 + r, n0, cr);
    } else {
      if (two) weight_only_tile_fma<2, 8>(op, m0 + r, n0, cr);
      else weight_only_tile_fma<1, 8>(op, m0 + r, n0, cr);
    }
  }
}
#endif

}  // namespace quarot::detail

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
