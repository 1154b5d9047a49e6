// quarot — CPU kernels of round-to-nearest quantization (internal; use quarot/quantize/).
//
// The reference and the SIMD kernels perform the same operations per element: a true
// division x / s, round-half-to-even (nearbyint / vrndscaleps imm 0), + z, clamp, and for
// dequantization s · (q - z); min/max are exact. So the SIMD results equal the scalar
// reference bit for bit, which the tests check.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "../../core/backend.hpp"
#include "../../core/config.hpp"

#if QUAROT_HAS_X86_SIMD
#include <immintrin.h>
#endif

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace quarot::detail {

struct range_result {
  float lo, hi;
  bool finite;
};

/// One quantization grid: levels in [qmin, qmax], x ≈ scale · (q - zero).
struct grid {
  float scale, zero;
  int qmin, qmax;
};

// ------------------------------------------------------------------ scalar reference

inline range_result value_range(cpu::scalar, const float* x, std::size_t n) noexcept {
  float lo = x[0], hi = x[0];
  bool finite = true;
  for (std::size_t i = 0; i < n; ++i) {
    finite = finite && std::isfinite(x[i]);
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
  }
  return {lo, hi, finite};
}

inline int quant_level(float x, const grid& g) noexcept {
  const float v = std::nearbyint(x / g.scale) + g.zero;
  return static_cast<int>(std::min(std::max(v, static_cast<float>(g.qmin)), static_cast<float>(g.qmax)));
}

/// q[i] = level of x[i] (stored as int8 bit pattern; asymmetric 8-bit levels > 127 wrap as uint8).
inline void quantize_levels(cpu::scalar, const float* x, std::size_t n, const grid& g, std::int8_t* q) noexcept {
  for (std::size_t i = 0; i < n; ++i) q[i] = static_cast<std::int8_t>(static_cast<std::uint8_t>(quant_level(x[i], g)));
}

/// Levels as little-endian int16 (2 bytes each).
inline void quantize_levels_int16(cpu::scalar, const float* x, std::size_t n, const grid& g, std::uint8_t* q) noexcept {
  for (std::size_t i = 0; i < n; ++i) {
    const auto v = static_cast<std::uint16_t>(quant_level(x[i], g));
    q[2 * i] = static_cast<std::uint8_t>(v & 0xff);
    q[2 * i + 1] = static_cast<std::uint8_t>(v >> 8);
  }
}

/// out[i] = scale · (level(x[i]) - zero).
inline void fake_quantize_run(cpu::scalar, const float* x, std::size_t n, const grid& g, float* out) noexcept {
  for (std::size_t i = 0; i < n; ++i) out[i] = g.scale * (static_cast<float>(quant_level(x[i], g)) - g.zero);
}

/// Levels packed two per byte (plain int4 layout: element 2i low nibble, 2i+1 high).
inline void quantize_pack_int4(cpu::scalar, const float* x, std::size_t n, const grid& g, std::uint8_t* out) noexcept {
  for (std::size_t i = 0; i + 1 < n; i += 2)
    out[i / 2] = static_cast<std::uint8_t>((quant_level(x[i], g) & 0x0f) | ((quant_level(x[i + 1], g) & 0x0f) << 4));
  if (n % 2) out[n / 2] = static_cast<std::uint8_t>(quant_level(x[n - 1], g) & 0x0f);
}

#if QUAROT_HAS_X86_SIMD

// ------------------------------------------------------------------- AVX-512

QUAROT_TARGET_AVX512 inline range_result value_range_avx512(const float* x, std::size_t n) noexcept {
  if (n < 16) return value_range(cpu::scalar{}, x, n);
  __m512 lo = _mm512_loadu_ps(x), hi = lo;
  __mmask16 bad = 0;
  std::size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i);
    bad |= _mm512_fpclass_ps_mask(v, 0x01 | 0x08 | 0x10 | 0x80);  // QNaN, +Inf, -Inf, SNaN
    lo = _mm512_min_ps(lo, v);
    hi = _mm512_max_ps(hi, v);
  }
  range_result r{_mm512_reduce_min_ps(lo), _mm512_reduce_max_ps(hi), bad == 0};
  if (i < n) {
    const auto t = value_range(cpu::scalar{}, x + i, n - i);
    r = {std::min(r.lo, t.lo), std::max(r.hi, t.hi), r.finite && t.finite};
  }
  return r;
}

/// 16 levels as int32.
QUAROT_TARGET_AVX512 QUAROT_ALWAYS_INLINE __m512i levels16(__m512 v, __m512 s, __m512 z, __m512 lo, __m512 hi) noexcept {
  __m512 q = _mm512_add_ps(_mm512_roundscale_ps(_mm512_div_ps(v, s), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), z);
  q = _mm512_min_ps(_mm512_max_ps(q, lo), hi);
  return _mm512_cvttps_epi32(q);
}

QUAROT_TARGET_AVX512 inline void quantize_levels_avx512(const float* x, std::size_t n, const grid& g,
                                                        std::int8_t* q) noexcept {
  const __m512 s = _mm512_set1_ps(g.scale), z = _mm512_set1_ps(g.zero), lo = _mm512_set1_ps(float(g.qmin)),
               hi = _mm512_set1_ps(float(g.qmax));
  std::size_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + i), _mm512_cvtepi32_epi8(levels16(_mm512_loadu_ps(x + i), s, z, lo, hi)));
  quantize_levels(cpu::scalar{}, x + i, n - i, g, q + i);
}

QUAROT_TARGET_AVX512 inline void quantize_levels_int16_avx512(const float* x, std::size_t n, const grid& g,
                                                              std::uint8_t* q) noexcept {
  const __m512 s = _mm512_set1_ps(g.scale), z = _mm512_set1_ps(g.zero), lo = _mm512_set1_ps(float(g.qmin)),
               hi = _mm512_set1_ps(float(g.qmax));
  std::size_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + 2 * i),
                        _mm512_cvtepi32_epi16(levels16(_mm512_loadu_ps(x + i), s, z, lo, hi)));
  quantize_levels_int16(cpu::scalar{}, x + i, n - i, g, q + 2 * i);
}

QUAROT_TARGET_AVX512 inline void fake_quantize_run_avx512(const float* x, std::size_t n, const grid& g,
                                                          float* out) noexcept {
  const __m512 s = _mm512_set1_ps(g.scale), z = _mm512_set1_ps(g.zero), lo = _mm512_set1_ps(float(g.qmin)),
               hi = _mm512_set1_ps(float(g.qmax));
  std::size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 q = _mm512_cvtepi32_ps(levels16(_mm512_loadu_ps(x + i), s, z, lo, hi));
    _mm512_storeu_ps(out + i, _mm512_mul_ps(s, _mm512_sub_ps(q, z)));
  }
  fake_quantize_run(cpu::scalar{}, x + i, n - i, g, out + i);
}

/// 64 values -> 32 bytes of plain-layout int4 per step: levels to int8, then each 16-bit
/// pair (b0, b1) becomes the byte (b0 & 0xf) | (b1 << 4).
QUAROT_TARGET_AVX512 inline void quantize_pack_int4_avx512(const float* x, std::size_t n, const grid& g,
                                                           std::uint8_t* out) noexcept {
  const __m512 s = _mm512_set1_ps(g.scale), z = _mm512_set1_ps(g.zero), lo = _mm512_set1_ps(float(g.qmin)),
               hi = _mm512_set1_ps(float(g.qmax));
  const __m512i low_mask = _mm512_set1_epi16(0x000f), high_mask = _mm512_set1_epi16(0x00f0);
  std::size_t i = 0;
  for (; i + 64 <= n; i += 64) {
    __m512i bytes = _mm512_castsi128_si512(_mm512_cvtepi32_epi8(levels16(_mm512_loadu_ps(x + i), s, z, lo, hi)));
    bytes = _mm512_inserti32x4(bytes, _mm512_cvtepi32_epi8(levels16(_mm512_loadu_ps(x + i + 16), s, z, lo, hi)), 1);
    bytes = _mm512_inserti32x4(bytes, _mm512_cvtepi32_epi8(levels16(_mm512_loadu_ps(x + i + 32), s, z, lo, hi)), 2);
    bytes = _mm512_inserti32x4(bytes, _mm512_cvtepi32_epi8(levels16(_mm512_loadu_ps(x + i + 48), s, z, lo, hi)), 3);
    const __m512i words = _mm512_or_si512(_mm512_and_si512(bytes, low_mask),
                                          _mm512_and_si512(_mm512_srli_epi16(bytes, 4), high_mask));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i / 2), _mm512_cvtepi16_epi8(words));
  }
  quantize_pack_int4(cpu::scalar{}, x + i, n - i, g, out + i / 2);
}

// ---------------------------------------------------------------------- AVX2

QUAROT_TARGET_AVX2 inline range_result value_range_avx2(const float* x, std::size_t n) noexcept {
  if (n < 8) return value_range(cpu::scalar{}, x, n);
  __m256 lo = _mm256_loadu_ps(x), hi = lo;
  const __m256 inf = _mm256_set1_ps(INFINITY), sign = _mm256_set1_ps(-0.0f);
  __m256 ok = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    ok = _mm256_and_ps(ok, _mm256_cmp_ps(_mm256_andnot_ps(sign, v), inf, _CMP_LT_OQ));  // |v| < Inf, false for NaN
    lo = _mm256_min_ps(lo, v);
    hi = _mm256_max_ps(hi, v);
  }
  alignas(32) float l[8], h[8];
  _mm256_store_ps(l, lo);
  _mm256_store_ps(h, hi);
  range_result r{*std::min_element(l, l + 8), *std::max_element(h, h + 8), _mm256_movemask_ps(ok) == 0xff};
  if (i < n) {
    const auto t = value_range(cpu::scalar{}, x + i, n - i);
    r = {std::min(r.lo, t.lo), std::max(r.hi, t.hi), r.finite && t.finite};
  }
  return r;
}

QUAROT_TARGET_AVX2 QUAROT_ALWAYS_INLINE __m256i levels8(__m256 v, __m256 s, __m256 z, __m256 lo, __m256 hi) noexcept {
  __m256 q = _mm256_add_ps(_mm256_round_ps(_mm256_div_ps(v, s), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), z);
  q = _mm256_min_ps(_mm256_max_ps(q, lo), hi);
  return _mm256_cvttps_epi32(q);
}

QUAROT_TARGET_AVX2 inline void quantize_levels_avx2(const float* x, std::size_t n, const grid& g,
                                                    std::int8_t* q) noexcept {
  const __m256 s = _mm256_set1_ps(g.scale), z = _mm256_set1_ps(g.zero), lo = _mm256_set1_ps(float(g.qmin)),
               hi = _mm256_set1_ps(float(g.qmax));
  alignas(32) std::int32_t tmp[8];
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_store_si256(reinterpret_cast<__m256i*>(tmp), levels8(_mm256_loadu_ps(x + i), s, z, lo, hi));
    for (int k = 0; k < 8; ++k) q[i + k] = static_cast<std::int8_t>(static_cast<std::uint8_t>(tmp[k]));
  }
  quantize_levels(cpu::scalar{}, x + i, n - i, g, q + i);
}

QUAROT_TARGET_AVX2 inline void fake_quantize_run_avx2(const float* x, std::size_t n, const grid& g,
                                                      float* out) noexcept {
  const __m256 s = _mm256_set1_ps(g.scale), z = _mm256_set1_ps(g.zero), lo = _mm256_set1_ps(float(g.qmin)),
               hi = _mm256_set1_ps(float(g.qmax));
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 q = _mm256_cvtepi32_ps(levels8(_mm256_loadu_ps(x + i), s, z, lo, hi));
    _mm256_storeu_ps(out + i, _mm256_mul_ps(s, _mm256_sub_ps(q, z)));
  }
  fake_quantize_run(cpu::scalar{}, x + i, n - i, g, out + i);
}

QUAROT_TARGET_AVX2 inline void quantize_levels_int16_avx2(const float* x, std::size_t n, const grid& g,
                                                          std::uint8_t* q) noexcept {
  const __m256 s = _mm256_set1_ps(g.scale), z = _mm256_set1_ps(g.zero), lo = _mm256_set1_ps(float(g.qmin)),
               hi = _mm256_set1_ps(float(g.qmax));
  std::size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    // Levels are within int16, so the saturating pack is exact; it interleaves 128-bit lanes.
    const __m256i words = _mm256_packs_epi32(levels8(_mm256_loadu_ps(x + i), s, z, lo, hi),
                                             levels8(_mm256_loadu_ps(x + i + 8), s, z, lo, hi));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + 2 * i), _mm256_permute4x64_epi64(words, 0xd8));
  }
  quantize_levels_int16(cpu::scalar{}, x + i, n - i, g, q + 2 * i);
}

QUAROT_TARGET_AVX2 inline void quantize_pack_int4_avx2(const float* x, std::size_t n, const grid& g,
                                                       std::uint8_t* out) noexcept {
  const __m256 s = _mm256_set1_ps(g.scale), z = _mm256_set1_ps(g.zero), lo = _mm256_set1_ps(float(g.qmin)),
               hi = _mm256_set1_ps(float(g.qmax));
  alignas(32) std::int32_t a[8];
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_store_si256(reinterpret_cast<__m256i*>(a), levels8(_mm256_loadu_ps(x + i), s, z, lo, hi));
    for (int k = 0; k < 8; k += 2) out[(i + k) / 2] = static_cast<std::uint8_t>((a[k] & 0x0f) | ((a[k + 1] & 0x0f) << 4));
  }
  quantize_pack_int4(cpu::scalar{}, x + i, n - i, g, out + i / 2);
}

// ---------------------------------------------------------- tag overloads (dispatch)

inline range_result value_range_arch(const xsimd::avx2&, const float* x, std::size_t n) noexcept {
  return value_range_avx2(x, n);
}
inline range_result value_range_arch(const xsimd::avx512bw&, const float* x, std::size_t n) noexcept {
  return value_range_avx512(x, n);
}
inline void quantize_levels_arch(const xsimd::avx2&, const float* x, std::size_t n, const grid& g, std::int8_t* q) noexcept {
  quantize_levels_avx2(x, n, g, q);
}
inline void quantize_levels_arch(const xsimd::avx512bw&, const float* x, std::size_t n, const grid& g,
                                 std::int8_t* q) noexcept {
  quantize_levels_avx512(x, n, g, q);
}
inline void quantize_levels_int16_arch(const xsimd::avx2&, const float* x, std::size_t n, const grid& g,
                                       std::uint8_t* q) noexcept {
  quantize_levels_int16_avx2(x, n, g, q);
}
inline void quantize_levels_int16_arch(const xsimd::avx512bw&, const float* x, std::size_t n, const grid& g,
                                       std::uint8_t* q) noexcept {
  quantize_levels_int16_avx512(x, n, g, q);
}
inline void fake_quantize_run_arch(const xsimd::avx2&, const float* x, std::size_t n, const grid& g, float* o) noexcept {
  fake_quantize_run_avx2(x, n, g, o);
}
inline void fake_quantize_run_arch(const xsimd::avx512bw&, const float* x, std::size_t n, const grid& g,
                                   float* o) noexcept {
  fake_quantize_run_avx512(x, n, g, o);
}
inline void quantize_pack_int4_arch(const xsimd::avx2&, const float* x, std::size_t n, const grid& g,
                                    std::uint8_t* o) noexcept {
  quantize_pack_int4_avx2(x, n, g, o);
}
inline void quantize_pack_int4_arch(const xsimd::avx512bw&, const float* x, std::size_t n, const grid& g,
                                    std::uint8_t* o) noexcept {
  quantize_pack_int4_avx512(x, n, g, o);
}

template <class Arch>
range_result value_range(cpu::simd<Arch>, const float* x, std::size_t n) noexcept {
  return value_range_arch(Arch{}, x, n);
}
template <class Arch>
void quantize_levels(cpu::simd<Arch>, const float* x, std::size_t n, const grid& g, std::int8_t* q) noexcept {
  quantize_levels_arch(Arch{}, x, n, g, q);
}
template <class Arch>
void quantize_levels_int16(cpu::simd<Arch>, const float* x, std::size_t n, const grid& g, std::uint8_t* q) noexcept {
  quantize_levels_int16_arch(Arch{}, x, n, g, q);
}
template <class Arch>
void fake_quantize_run(cpu::simd<Arch>, const float* x, std::size_t n, const grid& g, float* o) noexcept {
  fake_quantize_run_arch(Arch{}, x, n, g, o);
}
template <class Arch>
void quantize_pack_int4(cpu::simd<Arch>, const float* x, std::size_t n, const grid& g, std::uint8_t* o) noexcept {
  quantize_pack_int4_arch(Arch{}, x, n, g, o);
}

#endif  // QUAROT_HAS_X86_SIMD

}  // namespace quarot::detail

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
