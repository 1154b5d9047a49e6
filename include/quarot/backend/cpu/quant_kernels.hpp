// quarot — CPU kernels of round-to-nearest quantization (internal; use quarot/quantize/).
//
// The reference and the SIMD kernels perform the same operations per element: a true
// division x / s, round-half-to-even (nearbyint / vrndscaleps imm 0), + z, clamp, and for
// dequantization s · (q - z); min/max are exact. So the SIMD results equal the scalar
// reference bit for bit, which the tests check.
#pragma once

#include <algorithm>
#include <bit>
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

// ------------------------------------------------ clip-search error, Σ |x - x̂|^p
//
// The MSE clip search scores every candidate grid of every group by Σ |x - x̂|^p (GPTQ's
// norm 2.4). With a library pow per element this was most of the time of quantizing a
// model. The terms are computed here from +, -, ×, ÷ and explicit fma in double, each
// correctly rounded, in one fixed order that the SIMD kernels repeat lane by lane; the
// sum uses 8 lanes (element i into lane i mod 8) combined in a fixed tree. So the score,
// and the clip each group gets, is the same bit for bit on every ISA, and independent of
// whether the compiler contracts a·b + c (every product that meets an addition is either
// an explicit fma or exact).
//
// Terms: d = fma(s, q - z, -x) in float (x̂ - x with x̂ = s·(q - z) unrounded), then
// |d|^p = 2^(p·log2|d|) in double:
//   log2|d| = e + log2 m, m ∈ [√½, √2), log m = 2·atanh(t) = 2t·(1 + u/3 + ... + u^5/11),
//     t = (m - 1)/(m + 1), u = t² ≤ 0.0295: truncation 5e-11 relative;
//   2^f, |f| ≤ ½: Taylor series of e^(f·ln 2) to degree 8: truncation 2e-10 relative;
// measured: a term is within 3.2e-10 relative of |d|^p for p in [0.25, 8] (2 million
// values per p; the tests bound it by 1e-8 over the whole float range, subnormals
// included). Terms below 2^-1021 become 0 and terms above 2^1023 become +inf.

namespace clip_constants {
inline constexpr double sqrt2 = 1.4142135623730951;
inline constexpr double inv_ln2 = 1.4426950408889634;
inline constexpr double log_series[5] = {1.0 / 3, 1.0 / 5, 1.0 / 7, 1.0 / 9, 1.0 / 11};  // of u^0..u^4
// (ln 2)^k / k!, k = 0..8
inline constexpr double exp2_series[9] = {1.0,
                                          0.6931471805599453,
                                          0.2402265069591007,
                                          0.055504108664821576,
                                          0.009618129107628477,
                                          0.0013333558146428441,
                                          0.00015403530393381606,
                                          1.5252733804059838e-05,
                                          1.3215486790144305e-06};
inline constexpr std::uint64_t mantissa_bits = 0x000fffffffffffffull, one_bits = 0x3ff0000000000000ull;
}  // namespace clip_constants

/// |a|^p as described above; a finite or ±inf, p > 0.
inline double clip_pow(double a, double p) noexcept {
  namespace c = clip_constants;
  a = std::fabs(a);
  if (a == 0.0) return 0.0;
  if (a == INFINITY) return INFINITY;
  const auto bits = std::bit_cast<std::uint64_t>(a);
  double e = static_cast<double>(static_cast<std::int64_t>(bits >> 52) - 1023);
  double m = std::bit_cast<double>((bits & c::mantissa_bits) | c::one_bits);
  if (m > c::sqrt2) {
    m *= 0.5;
    e += 1.0;
  }
  const double t = (m - 1.0) / (m + 1.0), u = t * t, t2 = t + t;
  double r = c::log_series[4];
  for (int k = 3; k >= 0; --k) r = std::fma(r, u, c::log_series[k]);
  const double log2a = std::fma(std::fma(t2 * u, r, t2), c::inv_ln2, e);
  const double n = std::nearbyint(p * log2a);
  if (n > 1023.0) return INFINITY;
  if (n < -1021.0) return 0.0;  // keeps q · 2^n normal, so the product below is exact
  const double f = std::fma(p, log2a, -n);
  double q = c::exp2_series[8];
  for (int k = 7; k >= 0; --k) q = std::fma(q, f, c::exp2_series[k]);
  return q * std::bit_cast<double>(static_cast<std::uint64_t>(static_cast<std::int64_t>(n) + 1023) << 52);
}

/// x̂ - x for one element, rounded once.
inline float clip_residual(float x, const grid& g) noexcept {
  return std::fma(g.scale, static_cast<float>(quant_level(x, g)) - g.zero, -x);
}

/// A clip error is compared with its bound after every clip_check_every(norm) elements (a
/// power of two, a multiple of 16): often where terms are dear (pow), rarely where they
/// are cheap (squares).
constexpr std::size_t clip_check_every(float norm) noexcept { return norm == 2.0f ? 64 : 16; }

/// The 8 partial sums of a clip error and their fixed combination.
struct clip_lanes {
  double lane[8] = {};
  [[nodiscard]] double total() const noexcept {
    return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
  }
};

/// Continues a clip error at element i0 (a multiple of 8): adds the terms of x[i0..n) and
/// returns the total, or an earlier total ≥ bound (checked after every clip_check_every(norm) elements) once
/// the candidate cannot win. norm == 2 uses exact squares.
inline double clip_error_from(const float* x, std::size_t i0, std::size_t n, const grid& g, float norm, double bound,
                              clip_lanes acc) noexcept {
  const std::size_t check_mask = clip_check_every(norm) - 1;
  for (std::size_t i = i0; i < n; ++i) {
    const double d = clip_residual(x[i], g);
    acc.lane[i % 8] += norm == 2.0f ? d * d : clip_pow(d, norm);
    if (((i + 1) & check_mask) == 0 && i + 1 < n && acc.total() >= bound) return acc.total();
  }
  return acc.total();
}

/// Σ |x̂ - x|^norm over a run quantized on grid g (see the block comment above); stops early
/// with a partial sum ≥ bound when the sum reaches bound.
inline double clip_error(cpu::scalar, const float* x, std::size_t n, const grid& g, float norm, double bound) noexcept {
  return clip_error_from(x, 0, n, g, norm, bound, {});
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

/// 16 levels as floats (integers in [qmin, qmax], so exact).
QUAROT_TARGET_AVX512 QUAROT_ALWAYS_INLINE __m512 level_values16(__m512 v, __m512 s, __m512 z, __m512 lo,
                                                                __m512 hi) noexcept {
  const __m512 q =
      _mm512_add_ps(_mm512_roundscale_ps(_mm512_div_ps(v, s), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), z);
  return _mm512_min_ps(_mm512_max_ps(q, lo), hi);
}

/// 16 levels as int32.
QUAROT_TARGET_AVX512 QUAROT_ALWAYS_INLINE __m512i levels16(__m512 v, __m512 s, __m512 z, __m512 lo, __m512 hi) noexcept {
  return _mm512_cvttps_epi32(level_values16(v, s, z, lo, hi));
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
    const __m512 q = level_values16(_mm512_loadu_ps(x + i), s, z, lo, hi);
    _mm512_storeu_ps(out + i, _mm512_mul_ps(s, _mm512_sub_ps(q, z)));
  }
  fake_quantize_run(cpu::scalar{}, x + i, n - i, g, out + i);
}

/// clip_pow on 8 lanes: the same operations in the same order. AVX-512 has single
/// instructions for three of its steps, each exact and so equal to the scalar's bit
/// operations: getexp / getmant split a (normal: it was a float) into e and m ∈ [1, 2),
/// and scalef multiplies by 2^n (exactly, the product being normal for n ≥ -1021; n > 1023
/// and n < -1021 are replaced below, as the scalar returns early there).
QUAROT_TARGET_AVX512 QUAROT_ALWAYS_INLINE __m512d clip_pow8(__m512d a, __m512d p) noexcept {
  namespace c = clip_constants;
  __m512d e = _mm512_getexp_pd(a);
  __m512d m = _mm512_getmant_pd(a, _MM_MANT_NORM_1_2, _MM_MANT_SIGN_zero);
  const __m512d one = _mm512_set1_pd(1.0);
  const __mmask8 big = _mm512_cmp_pd_mask(m, _mm512_set1_pd(c::sqrt2), _CMP_GT_OQ);
  m = _mm512_mask_mul_pd(m, big, m, _mm512_set1_pd(0.5));
  e = _mm512_mask_add_pd(e, big, e, one);
  const __m512d t = _mm512_div_pd(_mm512_sub_pd(m, one), _mm512_add_pd(m, one)), u = _mm512_mul_pd(t, t),
                t2 = _mm512_add_pd(t, t);
  __m512d r = _mm512_set1_pd(c::log_series[4]);
  for (int k = 3; k >= 0; --k) r = _mm512_fmadd_pd(r, u, _mm512_set1_pd(c::log_series[k]));
  const __m512d log2a =
      _mm512_fmadd_pd(_mm512_fmadd_pd(_mm512_mul_pd(t2, u), r, t2), _mm512_set1_pd(c::inv_ln2), e);
  const __m512d n = _mm512_roundscale_pd(_mm512_mul_pd(p, log2a), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512d f = _mm512_fmsub_pd(p, log2a, n);
  __m512d q = _mm512_set1_pd(c::exp2_series[8]);
  for (int k = 7; k >= 0; --k) q = _mm512_fmadd_pd(q, f, _mm512_set1_pd(c::exp2_series[k]));
  const __m512d res = _mm512_scalef_pd(q, n);
  const __m512d zero = _mm512_setzero_pd(), inf = _mm512_set1_pd(INFINITY);
  const __mmask8 to_zero = _mm512_cmp_pd_mask(n, _mm512_set1_pd(-1021.0), _CMP_LT_OQ) |
                           _mm512_cmp_pd_mask(a, zero, _CMP_EQ_OQ);
  const __mmask8 to_inf = _mm512_cmp_pd_mask(n, _mm512_set1_pd(1023.0), _CMP_GT_OQ) |
                          _mm512_cmp_pd_mask(a, inf, _CMP_EQ_OQ);
  return _mm512_mask_blend_pd(to_inf, _mm512_mask_blend_pd(to_zero, res, zero), inf);
}

QUAROT_TARGET_AVX512 inline double clip_error_avx512(const float* x, std::size_t n, const grid& g, float norm,
                                                     double bound) noexcept {
  const __m512 s = _mm512_set1_ps(g.scale), z = _mm512_set1_ps(g.zero), lo = _mm512_set1_ps(float(g.qmin)),
               hi = _mm512_set1_ps(float(g.qmax)), sign = _mm512_set1_ps(-0.0f);
  const __m512d p = _mm512_set1_pd(norm);
  const bool square = norm == 2.0f;
  const std::size_t check_mask = clip_check_every(norm) - 1;
  __m512d acc = _mm512_setzero_pd();  // lane k holds the elements i ≡ k (mod 8)
  clip_lanes lanes;
  std::size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i), q = level_values16(v, s, z, lo, hi);
    const __m512 d = _mm512_andnot_ps(sign, _mm512_fmsub_ps(s, _mm512_sub_ps(q, z), v));
    const __m512d d0 = _mm512_cvtps_pd(_mm512_castps512_ps256(d)), d1 = _mm512_cvtps_pd(_mm512_extractf32x8_ps(d, 1));
    if (square) {
      acc = _mm512_add_pd(acc, _mm512_mul_pd(d0, d0));  // exact products: contraction changes nothing
      acc = _mm512_add_pd(acc, _mm512_mul_pd(d1, d1));
    } else {
      acc = _mm512_add_pd(acc, clip_pow8(d0, p));
      acc = _mm512_add_pd(acc, clip_pow8(d1, p));
    }
    if (((i + 16) & check_mask) == 0 && i + 16 < n) {
      _mm512_storeu_pd(lanes.lane, acc);
      if (lanes.total() >= bound) return lanes.total();
    }
  }
  _mm512_storeu_pd(lanes.lane, acc);
  return clip_error_from(x, i, n, g, norm, bound, lanes);
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

/// 8 levels as floats (integers in [qmin, qmax], so exact).
QUAROT_TARGET_AVX2 QUAROT_ALWAYS_INLINE __m256 level_values8(__m256 v, __m256 s, __m256 z, __m256 lo, __m256 hi) noexcept {
  const __m256 q =
      _mm256_add_ps(_mm256_round_ps(_mm256_div_ps(v, s), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), z);
  return _mm256_min_ps(_mm256_max_ps(q, lo), hi);
}

/// 8 levels as int32.
QUAROT_TARGET_AVX2 QUAROT_ALWAYS_INLINE __m256i levels8(__m256 v, __m256 s, __m256 z, __m256 lo, __m256 hi) noexcept {
  return _mm256_cvttps_epi32(level_values8(v, s, z, lo, hi));
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
    const __m256 q = level_values8(_mm256_loadu_ps(x + i), s, z, lo, hi);
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

/// clip_pow on 4 lanes: the same operations in the same order.
QUAROT_TARGET_AVX2 QUAROT_ALWAYS_INLINE __m256d clip_pow4(__m256d a, __m256d p) noexcept {
  namespace c = clip_constants;
  const __m256i bits = _mm256_castpd_si256(a);
  const __m256i magic = _mm256_set1_epi64x(0x4330000000000000ll);
  const __m256d magic_bias = _mm256_set1_pd(4503599627370496.0 + 1023.0);
  __m256d e = _mm256_sub_pd(_mm256_castsi256_pd(_mm256_or_si256(_mm256_srli_epi64(bits, 52), magic)), magic_bias);
  __m256d m = _mm256_castsi256_pd(_mm256_or_si256(_mm256_and_si256(bits, _mm256_set1_epi64x(std::int64_t(c::mantissa_bits))),
                                                  _mm256_set1_epi64x(std::int64_t(c::one_bits))));
  const __m256d one = _mm256_set1_pd(1.0);
  const __m256d big = _mm256_cmp_pd(m, _mm256_set1_pd(c::sqrt2), _CMP_GT_OQ);
  m = _mm256_blendv_pd(m, _mm256_mul_pd(m, _mm256_set1_pd(0.5)), big);
  e = _mm256_blendv_pd(e, _mm256_add_pd(e, one), big);
  const __m256d t = _mm256_div_pd(_mm256_sub_pd(m, one), _mm256_add_pd(m, one)), u = _mm256_mul_pd(t, t),
                t2 = _mm256_add_pd(t, t);
  __m256d r = _mm256_set1_pd(c::log_series[4]);
  for (int k = 3; k >= 0; --k) r = _mm256_fmadd_pd(r, u, _mm256_set1_pd(c::log_series[k]));
  const __m256d log2a =
      _mm256_fmadd_pd(_mm256_fmadd_pd(_mm256_mul_pd(t2, u), r, t2), _mm256_set1_pd(c::inv_ln2), e);
  const __m256d n = _mm256_round_pd(_mm256_mul_pd(p, log2a), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256d f = _mm256_fmsub_pd(p, log2a, n);
  __m256d q = _mm256_set1_pd(c::exp2_series[8]);
  for (int k = 7; k >= 0; --k) q = _mm256_fmadd_pd(q, f, _mm256_set1_pd(c::exp2_series[k]));
  const __m256d nc = _mm256_min_pd(_mm256_max_pd(n, _mm256_set1_pd(-1021.0)), _mm256_set1_pd(1023.0));
  const __m256d scale = _mm256_castsi256_pd(_mm256_slli_epi64(_mm256_castpd_si256(_mm256_add_pd(nc, magic_bias)), 52));
  __m256d res = _mm256_mul_pd(q, scale);
  const __m256d inf = _mm256_set1_pd(INFINITY), zero = _mm256_setzero_pd();
  res = _mm256_blendv_pd(res, inf, _mm256_cmp_pd(n, _mm256_set1_pd(1023.0), _CMP_GT_OQ));
  res = _mm256_blendv_pd(res, zero, _mm256_cmp_pd(n, _mm256_set1_pd(-1021.0), _CMP_LT_OQ));
  res = _mm256_blendv_pd(res, zero, _mm256_cmp_pd(a, zero, _CMP_EQ_OQ));
  return _mm256_blendv_pd(res, inf, _mm256_cmp_pd(a, inf, _CMP_EQ_OQ));
}

QUAROT_TARGET_AVX2 inline double clip_error_avx2(const float* x, std::size_t n, const grid& g, float norm,
                                                 double bound) noexcept {
  const __m256 s = _mm256_set1_ps(g.scale), z = _mm256_set1_ps(g.zero), lo = _mm256_set1_ps(float(g.qmin)),
               hi = _mm256_set1_ps(float(g.qmax)), sign = _mm256_set1_ps(-0.0f);
  const __m256d p = _mm256_set1_pd(norm);
  const bool square = norm == 2.0f;
  const std::size_t check_mask = clip_check_every(norm) - 1;
  __m256d acc0 = _mm256_setzero_pd(), acc1 = acc0;  // lanes 0-3 and 4-7 of the 8 (element i into lane i mod 8)
  clip_lanes lanes;
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i), q = level_values8(v, s, z, lo, hi);
    const __m256 d = _mm256_andnot_ps(sign, _mm256_fmsub_ps(s, _mm256_sub_ps(q, z), v));
    const __m256d d0 = _mm256_cvtps_pd(_mm256_castps256_ps128(d)), d1 = _mm256_cvtps_pd(_mm256_extractf128_ps(d, 1));
    if (square) {
      acc0 = _mm256_add_pd(acc0, _mm256_mul_pd(d0, d0));
      acc1 = _mm256_add_pd(acc1, _mm256_mul_pd(d1, d1));
    } else {
      acc0 = _mm256_add_pd(acc0, clip_pow4(d0, p));
      acc1 = _mm256_add_pd(acc1, clip_pow4(d1, p));
    }
    if (((i + 8) & check_mask) == 0 && i + 8 < n) {
      _mm256_storeu_pd(lanes.lane, acc0);
      _mm256_storeu_pd(lanes.lane + 4, acc1);
      if (lanes.total() >= bound) return lanes.total();
    }
  }
  _mm256_storeu_pd(lanes.lane, acc0);
  _mm256_storeu_pd(lanes.lane + 4, acc1);
  return clip_error_from(x, i, n, g, norm, bound, lanes);
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
inline double clip_error_arch(const xsimd::avx2&, const float* x, std::size_t n, const grid& g, float norm,
                              double bound) noexcept {
  return clip_error_avx2(x, n, g, norm, bound);
}
inline double clip_error_arch(const xsimd::avx512bw&, const float* x, std::size_t n, const grid& g, float norm,
                              double bound) noexcept {
  return clip_error_avx512(x, n, g, norm, bound);
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
template <class Arch>
double clip_error(cpu::simd<Arch>, const float* x, std::size_t n, const grid& g, float norm, double bound) noexcept {
  return clip_error_arch(Arch{}, x, n, g, norm, bound);
}

#endif  // QUAROT_HAS_X86_SIMD

}  // namespace quarot::detail

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
