// quarot — integer GEMM micro-kernels (internal; use quarot/gemm.hpp).
//
// A tile of MR activation rows x (16·NV) weight columns over all of K. Activations are
// u8 = q_a + 128 (K padded with 128, i.e. level 0), weights the packed raw bytes (see
// gemm/packing.hpp). Per weight group g the kernel accumulates Σ u8·w_raw in int32, then
// corrects it to the exact integer Σ q_a·(w_raw - z) = acc - 128·colsum - z·rowsum and
// folds it into the fp32 tile: c = fma(scale, float(acc), c); the epilogue is
// y = fma(row scale, c, bias). The scalar kernel performs
// the same integer and floating-point operations in the same order, so the two agree
// bit for bit.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "../../core/backend.hpp"
#include "../../core/config.hpp"
#include "../../core/int4.hpp"
#include "../../gemm/kernel.hpp"

#if QUAROT_HAS_X86_SIMD
#include <immintrin.h>
#endif

// GCC 12 warns that the AVX-512 intrinsics' internal _mm512_undefined_* operands "may be
// used uninitialized"; they are don't-care inputs by design.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

namespace quarot::detail {

// The operands and their layout are the public kernel interface (gemm/kernel.hpp).
using gemm_operands = gemm::kernel_operands;
using gemm::group_data_index;

/// Scalar kernel: out[r·ldo + j] = y(m0 + r, n0 + j) for rows x cols over all of K. Per
/// group g: the exact int32 sum, corrected, then c = fma(scale, float(acc), c) from c = 0;
/// finally y = fma(row scale, c, bias). The SIMD kernels perform these operations.
inline void gemm_tile(cpu::scalar, const gemm_operands& op, std::size_t m0, std::size_t rows, std::size_t n0,
                      std::size_t cols, float* /*scratch*/, float* out, std::size_t ldo) noexcept {
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t j = 0; j < cols; ++j) {
      const std::size_t col = n0 + j;
      float c = 0.0f;
      for (std::size_t g = 0; g < op.groups; ++g) {
        const std::size_t q_end = std::min(op.quads, (g + 1) * op.group_quads);
        std::int32_t a = 0;
        for (std::size_t k = g * op.group_quads * 4; k < q_end * 4; ++k)
          a += static_cast<std::int32_t>(op.a[(m0 + r) * op.lda + k]) * gemm::packed_weight_raw(op, col, k);
        const std::size_t gi = group_data_index(op.groups, g, col);
        a -= 128 * op.colsums[gi] + op.zeros[gi] * op.rowsum[(m0 + r) * op.groups + g];
        c = std::fma(op.scales[gi], static_cast<float>(a), c);
      }
      out[r * ldo + j] = std::fma(op.row_scales[m0 + r], c, op.bias ? op.bias[col] : 0.0f);
    }
}

/// One row of activation levels — int4 two per byte, low nibble first (bits <= 4), or
/// int8 — as the kernels' u8 operand (level + 128, K padded to k_padded with level 0) and
/// the level sum of each group of group_size columns.
inline void prepare_row(cpu::scalar, const std::uint8_t* src, bool packed4, std::size_t cols, std::size_t k_padded,
                        std::size_t group_size, std::uint8_t* dst, std::int32_t* rowsum) noexcept {
  for (std::size_t g = 0; g * group_size < cols; ++g) rowsum[g] = 0;
  for (std::size_t k = 0; k < cols; ++k) {
    const int level = level_at(src, packed4, k);
    dst[k] = static_cast<std::uint8_t>(level + 128);
    rowsum[k / group_size] += level;
  }
  for (std::size_t k = cols; k < k_padded; ++k) dst[k] = 128;
}

/// One row of int16 levels (little endian, within ±int16_split_max) as two kernel rows:
/// L = 256·hi + lo with hi = (L + 128) >> 8, lo = L - 256·hi, both in [-128, 127], each as
/// u8 = level + 128 with its group sums (K padded with level 0).
inline void prepare_row_int16(cpu::scalar, const std::uint8_t* src, std::size_t cols, std::size_t k_padded,
                              std::size_t group_size, std::uint8_t* hi, std::uint8_t* lo, std::int32_t* hi_sum,
                              std::int32_t* lo_sum) noexcept {
  for (std::size_t g = 0; g * group_size < cols; ++g) hi_sum[g] = lo_sum[g] = 0;
  for (std::size_t k = 0; k < cols; ++k) {
    const int level = int16_level_at(src, k);
    const int h = (level + 128) >> 8, l = level - 256 * h;
    hi[k] = static_cast<std::uint8_t>(h + 128);
    lo[k] = static_cast<std::uint8_t>(l + 128);
    hi_sum[k / group_size] += h;
    lo_sum[k / group_size] += l;
  }
  for (std::size_t k = cols; k < k_padded; ++k) hi[k] = lo[k] = 128;
}

#if QUAROT_HAS_X86_SIMD

/// The total of four int64 lanes (vpsadbw sums).
QUAROT_TARGET_AVX2 QUAROT_ALWAYS_INLINE std::int64_t horizontal_sum_epi64(__m256i sums) noexcept {
  const __m128i s2 = _mm_add_epi64(_mm256_castsi256_si128(sums), _mm256_extracti128_si256(sums, 1));
  return _mm_cvtsi128_si64(s2) + _mm_extract_epi64(s2, 1);
}

/// prepare_row_int16 with AVX2: 32 columns per step (the same group rule as prepare_row_avx2).
QUAROT_TARGET_AVX2 inline void prepare_row_int16_avx2(const std::uint8_t* src, std::size_t cols, std::size_t k_padded,
                                                      std::size_t group_size, std::uint8_t* hi, std::uint8_t* lo,
                                                      std::int32_t* hi_sum, std::int32_t* lo_sum) noexcept {
  if (group_size % 32 != 0 && group_size < cols) {
    prepare_row_int16(cpu::scalar{}, src, cols, k_padded, group_size, hi, lo, hi_sum, lo_sum);
    return;
  }
  const __m256i bias = _mm256_set1_epi16(128), flip = _mm256_set1_epi8(-128);
  // 32 int16 levels -> 32 hi and 32 lo bytes (+128); the saturating packs are exact (the
  // halves are within int8) and interleave 128-bit lanes, which the permute undoes.
  const auto split = [&](std::size_t k, __m256i& h, __m256i& l) QUAROT_TARGET_AVX2 {
    const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 2 * k));
    const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 2 * k + 32));
    const __m256i ha = _mm256_srai_epi16(_mm256_add_epi16(a, bias), 8), hb = _mm256_srai_epi16(_mm256_add_epi16(b, bias), 8);
    const __m256i la = _mm256_sub_epi16(a, _mm256_slli_epi16(ha, 8)), lb = _mm256_sub_epi16(b, _mm256_slli_epi16(hb, 8));
    h = _mm256_xor_si256(_mm256_permute4x64_epi64(_mm256_packs_epi16(ha, hb), 0xd8), flip);
    l = _mm256_xor_si256(_mm256_permute4x64_epi64(_mm256_packs_epi16(la, lb), 0xd8), flip);
  };
  std::size_t k = 0;
  for (std::size_t g = 0; k < cols; ++g) {
    const std::size_t g_end = std::min(cols, (g + 1) * group_size);
    __m256i hs = _mm256_setzero_si256(), ls = _mm256_setzero_si256();
    const std::size_t k0 = k;
    for (; k + 32 <= g_end; k += 32) {
      __m256i h, l;
      split(k, h, l);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(hi + k), h);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(lo + k), l);
      hs = _mm256_add_epi64(hs, _mm256_sad_epu8(h, _mm256_setzero_si256()));
      ls = _mm256_add_epi64(ls, _mm256_sad_epu8(l, _mm256_setzero_si256()));
    }
    const std::int64_t bias_sum = 128 * static_cast<std::int64_t>(k - k0);
    std::int64_t htotal = horizontal_sum_epi64(hs) - bias_sum, ltotal = horizontal_sum_epi64(ls) - bias_sum;
    for (; k < g_end; ++k) {  // the row's tail (only the last group can have one)
      const int level = int16_level_at(src, k);
      const int h = (level + 128) >> 8, l = level - 256 * h;
      hi[k] = static_cast<std::uint8_t>(h + 128);
      lo[k] = static_cast<std::uint8_t>(l + 128);
      htotal += h;
      ltotal += l;
    }
    hi_sum[g] = static_cast<std::int32_t>(htotal);
    lo_sum[g] = static_cast<std::int32_t>(ltotal);
  }
  for (; k < k_padded; ++k) hi[k] = lo[k] = 128;
}

template <class Arch>
void prepare_row_int16(cpu::simd<Arch>, const std::uint8_t* src, std::size_t cols, std::size_t k_padded,
                       std::size_t group_size, std::uint8_t* hi, std::uint8_t* lo, std::int32_t* hi_sum,
                       std::int32_t* lo_sum) noexcept {
  prepare_row_int16_avx2(src, cols, k_padded, group_size, hi, lo, hi_sum, lo_sum);
}

/// prepare_row with AVX2: 32 columns per step; sums by vpsadbw of the u8 values (minus
/// 128 per column). Groups that are not whole steps fall back to the scalar row.
QUAROT_TARGET_AVX2 inline void prepare_row_avx2(const std::uint8_t* src, bool packed4, std::size_t cols,
                                                std::size_t k_padded, std::size_t group_size, std::uint8_t* dst,
                                                std::int32_t* rowsum) noexcept {
  if (group_size % 32 != 0 && group_size < cols) {
    prepare_row(cpu::scalar{}, src, packed4, cols, k_padded, group_size, dst, rowsum);
    return;
  }
  const __m256i nib_mask = _mm256_set1_epi16(0x0f), high_mask = _mm256_set1_epi16(0x0f00);
  const __m256i eight = _mm256_set1_epi8(8), bias120 = _mm256_set1_epi8(120), flip = _mm256_set1_epi8(-128);
  std::size_t k = 0;
  for (std::size_t g = 0; k < cols; ++g) {
    const std::size_t g_end = std::min(cols, (g + 1) * group_size);
    __m256i sums = _mm256_setzero_si256();
    std::size_t k0 = k;
    for (; k + 32 <= g_end; k += 32) {
      __m256i u;
      if (packed4) {
        const __m256i x = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + k / 2)));
        const __m256i nibs = _mm256_or_si256(_mm256_and_si256(x, nib_mask), _mm256_and_si256(_mm256_slli_epi16(x, 4), high_mask));
        u = _mm256_add_epi8(_mm256_xor_si256(nibs, eight), bias120);  // (n ^ 8) - 8 + 128
      } else {
        u = _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + k)), flip);
      }
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + k), u);
      sums = _mm256_add_epi64(sums, _mm256_sad_epu8(u, _mm256_setzero_si256()));
    }
    std::int64_t total = horizontal_sum_epi64(sums) - 128 * static_cast<std::int64_t>(k - k0);
    for (; k < g_end; ++k) {  // the row's tail (only the last group can have one)
      const int level = level_at(src, packed4, k);
      dst[k] = static_cast<std::uint8_t>(level + 128);
      total += level;
    }
    rowsum[g] = static_cast<std::int32_t>(total);
  }
  for (; k < k_padded; ++k) dst[k] = 128;
}

template <class Arch>
void prepare_row(cpu::simd<Arch>, const std::uint8_t* src, bool packed4, std::size_t cols, std::size_t k_padded,
                 std::size_t group_size, std::uint8_t* dst, std::int32_t* rowsum) noexcept {
  prepare_row_avx2(src, packed4, cols, k_padded, group_size, dst, rowsum);
}

/// 64 weight bytes of one (panel, quad) block as an s8 vector.
template <int Bits>
QUAROT_TARGET_AVX512VNNI QUAROT_ALWAYS_INLINE __m512i load_weights_vnni(const std::uint8_t* blk) noexcept {
  if constexpr (Bits == 8) {
    return _mm512_loadu_si512(blk);
  } else {
    const __m256i packed = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk));
    const __m256i mask = _mm256_set1_epi8(0x0f);
    const __m256i lo = _mm256_and_si256(packed, mask);
    const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(packed, 4), mask);
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
  }
}

/// The epilogue of the last group: acc (MR x 16·NV int32, row stride 64) holds the
/// group's corrected sums; y = fma(row scale, fma(scale, float(acc), c), bias) for `cols`
/// columns. Out of line, so that its loop-invariant operands (bias, masks) do not take
/// registers from the kernel's accumulators.
template <int MR, int NV>
QUAROT_TARGET_AVX512VNNI __attribute__((noinline)) void last_group_vnni(const gemm_operands& op, std::size_t m0,
                                                                          std::size_t n0, std::size_t cols, std::size_t g,
                                                                          const std::int32_t* acc, const float* c,
                                                                          float* out, std::size_t ldo) noexcept {
  QUAROT_UNROLL
  for (int v = 0; v < NV; ++v) {
    const __m512 scale = _mm512_loadu_ps(op.scales + group_data_index(op.groups, g, n0) + 16 * v);
    const int left = static_cast<int>(cols) - 16 * v;
    const __mmask16 mask = left >= 16 ? __mmask16(0xffff) : static_cast<__mmask16>((1u << left) - 1u);
    const __m512 bias = op.bias ? _mm512_maskz_loadu_ps(mask, op.bias + n0 + 16 * v) : _mm512_setzero_ps();
    QUAROT_UNROLL
    for (int r = 0; r < MR; ++r) {
      const __m512 accf = _mm512_cvtepi32_ps(_mm512_load_si512(acc + r * 64 + 16 * v));
      const __m512 cv = _mm512_fmadd_ps(scale, accf, g == 0 ? _mm512_setzero_ps() : _mm512_loadu_ps(c + r * 64 + 16 * v));
      _mm512_mask_storeu_ps(out + r * ldo + 16 * v, mask,
                            _mm512_fmadd_ps(_mm512_set1_ps(op.row_scales[m0 + r]), cv, bias));
    }
  }
}

/// MR rows x (16·NV) columns over all of K, one weight group at a time, the group's int32
/// sums in MR·NV of the 32 zmm registers. Each group's sums start at the exact correction
/// -(128·colsum + z·rowsum) instead of 0, so they end as the corrected integer without a
/// pass over them; then c = fma(scale, float(acc), c) into `c`, an L1 scratch tile (row
/// stride 64) that per-channel weights (one group) never touch.
template <int MR, int NV, int Bits>
QUAROT_TARGET_AVX512VNNI void gemm_tile_vnni(const gemm_operands& op, std::size_t m0, std::size_t n0, std::size_t cols,
                                             float* c, float* out, std::size_t ldo) noexcept {
  // n0 is a multiple of 64: the tile's four blocks per k-quad are adjacent.
  const std::size_t quad_bytes = 4 * op.block_bytes;
  const std::uint8_t* wq = op.w + (n0 / 64) * op.quads * quad_bytes;
  const std::uint8_t* a0 = op.a + m0 * op.lda;
  for (std::size_t g = 0; g < op.groups; ++g) {
    const std::size_t q_begin = g * op.group_quads, q_end = std::min(op.quads, q_begin + op.group_quads);
    const std::size_t gi = group_data_index(op.groups, g, n0);
    __m512i acc[MR][NV];
    QUAROT_UNROLL
    for (int v = 0; v < NV; ++v) {
      const __m512i neg_colsum128 =
          _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(_mm512_loadu_si512(op.colsums + gi + 16 * v), 7));
      QUAROT_UNROLL
      for (int r = 0; r < MR; ++r) {
        const std::int32_t rs = op.rowsum[(m0 + r) * op.groups + g];
        acc[r][v] = op.uniform_zero
                        ? _mm512_sub_epi32(neg_colsum128, _mm512_set1_epi32(op.zero0 * rs))
                        : _mm512_sub_epi32(neg_colsum128,
                                           _mm512_mullo_epi32(_mm512_loadu_si512(op.zeros + gi + 16 * v), _mm512_set1_epi32(rs)));
      }
    }
    const std::uint8_t* arow = a0 + q_begin * 4;
    for (std::size_t q = q_begin; q < q_end; ++q, wq += quad_bytes, arow += 4) {
      __m512i b[NV];
      QUAROT_UNROLL
      for (int v = 0; v < NV; ++v) b[v] = load_weights_vnni<Bits>(wq + v * op.block_bytes);
      QUAROT_UNROLL
      for (int r = 0; r < MR; ++r) {
        std::int32_t a4;
        __builtin_memcpy(&a4, arow + r * op.lda, 4);
        const __m512i av = _mm512_set1_epi32(a4);
        QUAROT_UNROLL
        for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_dpbusd_epi32(acc[r][v], av, b[v]);
      }
    }
    if (g + 1 == op.groups) {
      alignas(64) std::int32_t spill[MR * 64];
      QUAROT_UNROLL
      for (int r = 0; r < MR; ++r)
        QUAROT_UNROLL
        for (int v = 0; v < NV; ++v) _mm512_store_si512(spill + r * 64 + 16 * v, acc[r][v]);
      last_group_vnni<MR, NV>(op, m0, n0, cols, g, spill, c, out, ldo);
      return;
    }
    QUAROT_UNROLL
    for (int v = 0; v < NV; ++v) {
      const __m512 scale = _mm512_loadu_ps(op.scales + gi + 16 * v);
      QUAROT_UNROLL
      for (int r = 0; r < MR; ++r) {
        float* cp = c + r * 64 + 16 * v;
        _mm512_storeu_ps(cp, _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(acc[r][v]),
                                             g == 0 ? _mm512_setzero_ps() : _mm512_loadu_ps(cp)));
      }
    }
  }
}

/// VNNI kernel entry: dispatches the tile shape (rows 1..6, 16-column vectors 1..4). Six
/// rows x 64 columns use 24 of the 32 zmm registers for accumulators and read each
/// weight block once for six rows (weights come from L2; rows are what amortizes them).
template <int Bits>
inline void gemm_tile_vnni_dispatch(const gemm_operands& op, std::size_t m0, std::size_t rows, std::size_t n0,
                                    std::size_t cols, float* c, float* out, std::size_t ldo) noexcept {
#define QUAROT_GEMM_CASE(MR, NV) \
  case (MR - 1) * 4 + (NV - 1): return gemm_tile_vnni<MR, NV, Bits>(op, m0, n0, cols, c, out, ldo);
  switch ((rows - 1) * 4 + (cols + 15) / 16 - 1) {
    QUAROT_GEMM_CASE(1, 1) QUAROT_GEMM_CASE(1, 2) QUAROT_GEMM_CASE(1, 3) QUAROT_GEMM_CASE(1, 4)
    QUAROT_GEMM_CASE(2, 1) QUAROT_GEMM_CASE(2, 2) QUAROT_GEMM_CASE(2, 3) QUAROT_GEMM_CASE(2, 4)
    QUAROT_GEMM_CASE(3, 1) QUAROT_GEMM_CASE(3, 2) QUAROT_GEMM_CASE(3, 3) QUAROT_GEMM_CASE(3, 4)
    QUAROT_GEMM_CASE(4, 1) QUAROT_GEMM_CASE(4, 2) QUAROT_GEMM_CASE(4, 3) QUAROT_GEMM_CASE(4, 4)
    QUAROT_GEMM_CASE(5, 1) QUAROT_GEMM_CASE(5, 2) QUAROT_GEMM_CASE(5, 3) QUAROT_GEMM_CASE(5, 4)
    QUAROT_GEMM_CASE(6, 1) QUAROT_GEMM_CASE(6, 2) QUAROT_GEMM_CASE(6, 3) QUAROT_GEMM_CASE(6, 4)
    default: break;
  }
#undef QUAROT_GEMM_CASE
}

/// AVX-512 VNNI backend: rows 1..6, cols 1..64 of one 64-column tile.
inline void gemm_tile(cpu::avx512vnni_backend, const gemm_operands& op, std::size_t m0, std::size_t rows,
                      std::size_t n0, std::size_t cols, float* c, float* out, std::size_t ldo) noexcept {
  if (op.bits == 8) gemm_tile_vnni_dispatch<8>(op, m0, rows, n0, cols, c, out, ldo);
  else gemm_tile_vnni_dispatch<4>(op, m0, rows, n0, cols, c, out, ldo);
}

// ---------------------------------------------------------------------------- AVX2
// For CPUs without VNNI, panels of 16 columns (two ymm of 8 int32 columns) or, for 4-bit
// weights and one or two rows, 64 or 32 (the 256-bit panel kernel below).
// 4-bit weights: vpmaddubsw (u8 x s8 -> pairs summed in saturating int16) then vpmaddwd
// by ones gives vpdpbusd's sum of four products exactly, since no pair sum exceeds int16
// (raw 0..15: |pair| <= 2·255·15 = 7650); the block's low nibbles are columns 0-7, its
// high nibbles columns 8-15. 8-bit weights would saturate vpmaddubsw (2·255·128), so they
// are widened to int16 and multiplied by vpmaddwd (4 columns x 2 k-pairs per register),
// the pairs added horizontally at the end of the group. Either way the group's integer is
// exact and the fold is the VNNI kernel's, so results are bit-identical to scalar.

/// The exact correction −(128·colsum + z·rowsum) of (row m, 8 columns at gi).
QUAROT_TARGET_AVX2 QUAROT_ALWAYS_INLINE __m256i neg_correction_avx2(const gemm_operands& op, std::size_t m,
                                                                     std::size_t g, std::size_t gi) noexcept {
  const __m256i colsum128 =
      _mm256_slli_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(op.colsums + gi)), 7);
  const std::int32_t rs = op.rowsum[m * op.groups + g];
  const __m256i zr = op.uniform_zero ? _mm256_set1_epi32(op.zero0 * rs)
                                     : _mm256_mullo_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(op.zeros + gi)),
                                                          _mm256_set1_epi32(rs));
  return _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_add_epi32(colsum128, zr));
}

/// Group g's corrected sums acc (MR rows x 16·NP columns at gi) into the panel: c =
/// fma(scale, float(acc), c) (c: MR x 16·NP scratch, row stride 16·NP), and after the last
/// group out = fma(row scale, c, bias) (out: the same shape; bias null or 16·NP values).
template <int MR, int NP = 1>
QUAROT_TARGET_AVX2 QUAROT_ALWAYS_INLINE void fold_panel_avx2(const gemm_operands& op, std::size_t m0, std::size_t g,
                                                             std::size_t gi, const __m256i (&acc)[MR][2 * NP],
                                                             const float* bias16, float* c, float* out) noexcept {
  constexpr int stride = 16 * NP;
  const bool first = g == 0, last = g + 1 == op.groups;
  QUAROT_UNROLL
  for (int v = 0; v < 2 * NP; ++v) {
    const __m256 scale = _mm256_loadu_ps(op.scales + gi + 8 * v);
    const __m256 bias = bias16 && last ? _mm256_loadu_ps(bias16 + 8 * v) : _mm256_setzero_ps();
    QUAROT_UNROLL
    for (int r = 0; r < MR; ++r) {
      float* cp = c + r * stride + 8 * v;
      const __m256 cv = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(acc[r][v]), first ? _mm256_setzero_ps() : _mm256_loadu_ps(cp));
      if (!last) _mm256_storeu_ps(cp, cv);
      else _mm256_storeu_ps(out + r * stride + 8 * v, _mm256_fmadd_ps(_mm256_set1_ps(op.row_scales[m0 + r]), cv, bias));
    }
  }
}

/// 8-bit weights on AVX2: MR rows x 16 columns (col0 a multiple of 16; out and c MR x 16,
/// row stride 16). The weights are widened to int16 for vpmaddwd (4 columns x 2 k-pairs
/// per register), the k-pairs added horizontally at the end of each group.
template <int MR>
QUAROT_TARGET_AVX2 void gemm_panel_avx2_w8(const gemm_operands& op, std::size_t m0, std::size_t col0,
                                           const float* bias16, float* c, float* out) noexcept {
  const std::size_t quad_bytes = 4 * op.block_bytes;
  const std::uint8_t* wq = op.w + (col0 / 64) * op.quads * quad_bytes + ((col0 / 16) % 4) * op.block_bytes;
  const std::uint8_t* a0 = op.a + m0 * op.lda;
  for (std::size_t g = 0; g < op.groups; ++g) {
    const std::size_t q_begin = g * op.group_quads, q_end = std::min(op.quads, q_begin + op.group_quads);
    const std::size_t gi = group_data_index(op.groups, g, col0);
    const std::uint8_t* wp = wq + q_begin * quad_bytes;
    const std::uint8_t* arow = a0 + q_begin * 4;
    __m256i acc[MR][2];
    __m256i pair[MR][4];  // columns 4t..4t+3, two k-pair sums each
    QUAROT_UNROLL
    for (int r = 0; r < MR; ++r)
      QUAROT_UNROLL
      for (int t = 0; t < 4; ++t) pair[r][t] = _mm256_setzero_si256();
    for (std::size_t q = q_begin; q < q_end; ++q, wp += quad_bytes, arow += 4) {
      __m256i b[4];
      QUAROT_UNROLL
      for (int t = 0; t < 4; ++t)
        b[t] = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(wp + 16 * t)));
      QUAROT_UNROLL
      for (int r = 0; r < MR; ++r) {
        std::int32_t a4;
        __builtin_memcpy(&a4, arow + r * op.lda, 4);
        const __m256i av = _mm256_broadcastq_epi64(_mm_cvtepu8_epi16(_mm_cvtsi32_si128(a4)));
        QUAROT_UNROLL
        for (int t = 0; t < 4; ++t) pair[r][t] = _mm256_add_epi32(pair[r][t], _mm256_madd_epi16(av, b[t]));
      }
    }
    QUAROT_UNROLL
    for (int r = 0; r < MR; ++r)
      QUAROT_UNROLL
      for (int v = 0; v < 2; ++v) {
        // hadd gives columns (0,1 | 4,5 | 2,3 | 6,7) of the two registers as 64-bit pairs.
        const __m256i sums = _mm256_permute4x64_epi64(_mm256_hadd_epi32(pair[r][2 * v], pair[r][2 * v + 1]), 0xd8);
        acc[r][v] = _mm256_add_epi32(neg_correction_avx2(op, m0 + r, g, gi + 8 * v), sums);
      }
    fold_panel_avx2<MR>(op, m0, g, gi, acc, bias16, c, out);
  }
}

/// A tile as panels of `width` columns (16, 32 or 64), each over the tile's rows in steps
/// of row_step, width · row_step <= 96: panel(m, mr, col0, bias, c, buf) computes mr rows
/// x width columns into buf (row stride width). Columns past N (up to the 64-column tile)
/// are computed on the zero padding and not stored.
template <class Panel>
inline void gemm_tile_panels(const gemm_operands& op, std::size_t m0, std::size_t rows, std::size_t n0,
                             std::size_t cols, std::size_t row_step, std::size_t width, float* c, float* out,
                             std::size_t ldo, Panel panel) noexcept {
  alignas(32) float buf[96];
  for (std::size_t j0 = 0; j0 < cols; j0 += width) {
    const std::size_t w = std::min(width, cols - j0);
    alignas(32) float bias[64] = {};  // the bias has N entries: a partial panel's tail is 0
    if (op.bias)
      for (std::size_t j = 0; j < w; ++j) bias[j] = op.bias[n0 + j0 + j];
    const float* b = op.bias ? bias : nullptr;
    for (std::size_t r0 = 0; r0 < rows; r0 += row_step) {
      const std::size_t mr = std::min(row_step, rows - r0);
      panel(m0 + r0, mr, n0 + j0, b, c, buf);
      for (std::size_t r = 0; r < mr; ++r)
        for (std::size_t j = 0; j < w; ++j) out[(r0 + r) * ldo + j0 + j] = buf[r * width + j];
    }
  }
}

// ---------------------------------------------------- 256-bit four-product kernels
// One panel kernel for the AVX2 backend's 4-bit weights and for vpdpbusd on ymm registers
// (cpu::avx_vnni_backend), parameterized by the four-product dot step:
//   maddubs_dot          vpmaddubsw + vpmaddwd by ones + vpaddd (AVX2; exact for 4-bit
//                        weights only: no pair sum of u8 x raw 0..15 saturates int16)
//   dpbusd_dot<E>        vpdpbusd, VEX (AVX-VNNI) or EVEX (AVX512-VNNI + VL) encoded; any
//                        weights, so 8-bit ones need no widening

/// The two encodings of vpdpbusd ymm: VEX (AVX-VNNI) and EVEX (AVX512-VNNI + VL).
enum class vnni_encoding { vex, evex };

/// acc + the four-byte dot products of u8 a and s8 b, in the encoding E. Inline assembly:
/// with the intrinsics the kernel would have to be compiled for AVX-VNNI or for AVX512VL,
/// and code compiled for AVX512VL may use EVEX instructions an AVX-VNNI-only CPU lacks;
/// this way the kernel is AVX2 code around one instruction, the same for both encodings.
template <vnni_encoding E>
QUAROT_TARGET_AVX2 QUAROT_ALWAYS_INLINE __m256i dpbusd_ymm(__m256i acc, __m256i a, __m256i b) noexcept {
  // AT&T: dst += src1 (u8) · src2 (s8), operands reversed; "%{" is a literal brace.
  if constexpr (E == vnni_encoding::vex)
    __asm__("%{vex%} vpdpbusd {%2, %1, %0|%0, %1, %2}" : "+x"(acc) : "x"(a), "x"(b));
  else
    __asm__("%{evex%} vpdpbusd {%2, %1, %0|%0, %1, %2}" : "+x"(acc) : "x"(a), "x"(b));
  return acc;
}

template <vnni_encoding E>
struct dpbusd_dot {
  static constexpr bool any_weights = true;     // 8-bit weights too
  static constexpr bool latency_bound = true;   // the accumulator chain runs through a multiply
  QUAROT_TARGET_AVX2 QUAROT_ALWAYS_INLINE static __m256i step(__m256i acc, __m256i a, __m256i b) noexcept {
    return dpbusd_ymm<E>(acc, a, b);
  }
};

struct maddubs_dot {
  static constexpr bool any_weights = false;    // 4-bit weights only
  static constexpr bool latency_bound = false;  // the chain is one vpaddd
  QUAROT_TARGET_AVX2 QUAROT_ALWAYS_INLINE static __m256i step(__m256i acc, __m256i a, __m256i b) noexcept {
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), _mm256_set1_epi16(1)));
  }
};

/// MR rows x 16·NP columns. A row's few accumulators each carry one dependency chain, so
/// few rows take several panels at once (NP: the panels' blocks of a quad are adjacent,
/// and the 4-bit blocks' cache lines are read whole) or, for vpdpbusd, whose latency is
/// several cycles, split the quads over KU accumulator sets whose int32 sums are added
/// exactly at the end of the group: 8-12 chains in flight.
template <int MR, int NP, int KU, int Bits, class Dot>
QUAROT_TARGET_AVX2 void gemm_panel_256(const gemm_operands& op, std::size_t m0, std::size_t col0, const float* bias,
                                       float* c, float* out) noexcept {
  // col0 a multiple of 16·NP; out and c MR x 16·NP (row stride 16·NP).
  const std::size_t quad_bytes = 4 * op.block_bytes;
  const std::uint8_t* wq = op.w + (col0 / 64) * op.quads * quad_bytes + ((col0 / 16) % 4) * op.block_bytes;
  const std::uint8_t* a0 = op.a + m0 * op.lda;
  const __m256i mask = _mm256_set1_epi8(0x0f);
  for (std::size_t g = 0; g < op.groups; ++g) {
    const std::size_t q_begin = g * op.group_quads, q_end = std::min(op.quads, q_begin + op.group_quads);
    const std::size_t gi = group_data_index(op.groups, g, col0);
    const std::uint8_t* wp = wq + q_begin * quad_bytes;
    const std::uint8_t* arow = a0 + q_begin * 4;
    __m256i acc[KU][MR][2 * NP];
    QUAROT_UNROLL
    for (int r = 0; r < MR; ++r)
      QUAROT_UNROLL
      for (int v = 0; v < 2 * NP; ++v) {
        acc[0][r][v] = neg_correction_avx2(op, m0 + r, g, gi + 8 * v);
        QUAROT_UNROLL
        for (int u = 1; u < KU; ++u) acc[u][r][v] = _mm256_setzero_si256();
      }
    // One quad into accumulator set u. Per panel, columns 0-7 and 8-15 of its block: a
    // 4-bit block's low and high nibbles, an 8-bit block's two halves.
    const auto broadcast = [&](const std::uint8_t* a, int r) QUAROT_TARGET_AVX2 {
      std::int32_t a4;
      __builtin_memcpy(&a4, a + r * op.lda, 4);
      return _mm256_set1_epi32(a4);
    };
    const auto quad = [&](int u, const std::uint8_t* w, const std::uint8_t* a) QUAROT_TARGET_AVX2 {
      // Several panels reuse each row's broadcast (MR <= 2); one panel broadcasts row by
      // row, which keeps six rows' worth of registers free for accumulators.
      __m256i av[MR];
      if constexpr (NP > 1)
        QUAROT_UNROLL
        for (int r = 0; r < MR; ++r) av[r] = broadcast(a, r);
      QUAROT_UNROLL
      for (int p = 0; p < NP; ++p) {
        const std::uint8_t* blk = w + p * op.block_bytes;
        __m256i b[2];
        if constexpr (Bits == 4) {
          const __m256i packed = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk));
          b[0] = _mm256_and_si256(packed, mask);
          b[1] = _mm256_and_si256(_mm256_srli_epi16(packed, 4), mask);
        } else {
          b[0] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk));
          b[1] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 32));
        }
        QUAROT_UNROLL
        for (int r = 0; r < MR; ++r) {
          if constexpr (NP == 1) av[r] = broadcast(a, r);
          QUAROT_UNROLL
          for (int v = 0; v < 2; ++v) acc[u][r][2 * p + v] = Dot::step(acc[u][r][2 * p + v], av[r], b[v]);
        }
      }
    };
    std::size_t q = q_begin;
    for (; q + KU <= q_end; q += KU, wp += KU * quad_bytes, arow += 4 * KU)
      QUAROT_UNROLL
      for (int u = 0; u < KU; ++u) quad(u, wp + u * quad_bytes, arow + 4 * u);
    for (; q < q_end; ++q, wp += quad_bytes, arow += 4) quad(0, wp, arow);
    QUAROT_UNROLL
    for (int u = 1; u < KU; ++u)
      QUAROT_UNROLL
      for (int r = 0; r < MR; ++r)
        QUAROT_UNROLL
        for (int v = 0; v < 2 * NP; ++v) acc[0][r][v] = _mm256_add_epi32(acc[0][r][v], acc[u][r][v]);
    fold_panel_avx2<MR, NP>(op, m0, g, gi, acc[0], bias, c, out);
  }
}

/// A tile on the 256-bit panel kernel with the dot step Dot, rows in steps of row_step.
/// Register tiles (16 ymm): 1 row x 64 columns (8 accumulators), 2 x 32 (8), 3 x 16 (6;
/// with vpdpbusd two quad sets, 12), 4..6 x 16 (8-12; maddubs_dot, which needs registers
/// for its products, goes to 4).
template <class Dot>
void gemm_tile_256(const gemm_operands& op, std::size_t m0, std::size_t rows, std::size_t n0, std::size_t cols,
                   std::size_t row_step, float* c, float* out, std::size_t ldo) noexcept {
  const std::size_t width = rows == 1 ? 64 : rows == 2 ? 32 : 16;
  const auto panel = [&]<int Bits>(std::size_t m, std::size_t mr, std::size_t col0, const float* bias, float* cs,
                                   float* o) {
    constexpr int ku3 = Dot::latency_bound ? 2 : 1;
    if (width == 64) return gemm_panel_256<1, 4, 1, Bits, Dot>(op, m, col0, bias, cs, o);
    if (width == 32) return gemm_panel_256<2, 2, 1, Bits, Dot>(op, m, col0, bias, cs, o);
    switch (mr) {
      case 1: return gemm_panel_256<1, 1, ku3, Bits, Dot>(op, m, col0, bias, cs, o);
      case 2: return gemm_panel_256<2, 1, ku3, Bits, Dot>(op, m, col0, bias, cs, o);
      case 3: return gemm_panel_256<3, 1, ku3, Bits, Dot>(op, m, col0, bias, cs, o);
      case 4: return gemm_panel_256<4, 1, 1, Bits, Dot>(op, m, col0, bias, cs, o);
      default:  // 5 or 6 rows: vpdpbusd only (maddubs_dot tiles step 4 rows)
        if constexpr (Dot::latency_bound) {
          if (mr == 5) return gemm_panel_256<5, 1, 1, Bits, Dot>(op, m, col0, bias, cs, o);
          return gemm_panel_256<6, 1, 1, Bits, Dot>(op, m, col0, bias, cs, o);
        }
    }
  };
  gemm_tile_panels(op, m0, rows, n0, cols, row_step, width, c, out, ldo,
                   [&](std::size_t m, std::size_t mr, std::size_t col0, const float* bias, float* cs, float* o) {
                     if constexpr (Dot::any_weights)
                       if (op.bits == 8) return panel.template operator()<8>(m, mr, col0, bias, cs, o);
                     panel.template operator()<4>(m, mr, col0, bias, cs, o);
                   });
}

/// AVX2 backend: 4-bit weights on the 256-bit panel kernel with vpmaddubsw (rows in steps
/// of 4); 8-bit weights on 16-column panels of 2 rows, widened to int16.
inline void gemm_tile(cpu::avx2_backend, const gemm_operands& op, std::size_t m0, std::size_t rows, std::size_t n0,
                      std::size_t cols, float* c, float* out, std::size_t ldo) noexcept {
  if (op.bits == 4) return gemm_tile_256<maddubs_dot>(op, m0, rows, n0, cols, 4, c, out, ldo);
  gemm_tile_panels(op, m0, rows, n0, cols, 2, 16, c, out, ldo,
                   [&](std::size_t m, std::size_t mr, std::size_t col0, const float* bias16, float* cs, float* o) {
                     if (mr == 1) gemm_panel_avx2_w8<1>(op, m, col0, bias16, cs, o);
                     else gemm_panel_avx2_w8<2>(op, m, col0, bias16, cs, o);
                   });
}

/// The encoding of 256-bit vpdpbusd that cpu::avx_vnni_backend uses here: VEX where the
/// CPU has AVX-VNNI, else EVEX (the backend's constructors check that one of them exists).
inline vnni_encoding avx_vnni_encoding() noexcept {
  static const vnni_encoding e = cpu::has_avx_vnni() ? vnni_encoding::vex : vnni_encoding::evex;
  return e;
}

/// A backend tag that pins the encoding (tests run each one the machine has).
template <vnni_encoding E>
struct vnni256_encoding_backend {
  static constexpr const char* name() noexcept { return E == vnni_encoding::vex ? "avx_vnni(vex)" : "avx_vnni(evex)"; }
};

template <vnni_encoding E>
inline void gemm_tile(vnni256_encoding_backend<E>, const gemm_operands& op, std::size_t m0, std::size_t rows,
                      std::size_t n0, std::size_t cols, float* c, float* out, std::size_t ldo) noexcept {
  gemm_tile_256<dpbusd_dot<E>>(op, m0, rows, n0, cols, 6, c, out, ldo);
}

/// AVX-VNNI backend: 256-bit vpdpbusd, VEX-encoded where the CPU has AVX-VNNI, else EVEX.
inline void gemm_tile(cpu::avx_vnni_backend, const gemm_operands& op, std::size_t m0, std::size_t rows,
                      std::size_t n0, std::size_t cols, float* c, float* out, std::size_t ldo) noexcept {
  if (avx_vnni_encoding() == vnni_encoding::vex)
    gemm_tile(vnni256_encoding_backend<vnni_encoding::vex>{}, op, m0, rows, n0, cols, c, out, ldo);
  else
    gemm_tile(vnni256_encoding_backend<vnni_encoding::evex>{}, op, m0, rows, n0, cols, c, out, ldo);
}

#endif  // QUAROT_HAS_X86_SIMD

}  // namespace quarot::detail

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
