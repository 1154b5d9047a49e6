// quarot — CPU kernels of the fast Walsh-Hadamard transform (natural order, fp32).
//
// Internal header: use quarot/transform/walsh_hadamard.hpp.
//
// Every kernel performs exactly the butterflies of the radix-2 reference, level by
// level (h = 1, 2, 4, ...), each as (a + b, a - b), and multiplies by the scale once at
// the end. The SIMD kernels only regroup them (several levels per pass over memory,
// the first levels inside one register), so their results are bit-identical to the
// scalar reference; the tests check that with exact equality.
#pragma once

#include <cstddef>

#include "../../core/backend.hpp"
#include "../../core/config.hpp"

#if QUAROT_HAS_X86_SIMD
#include <immintrin.h>
#endif

// GCC 12 warns that the AVX-512 intrinsics' internal _mm512_undefined_* operands "may be
// used uninitialized"; they are don't-care inputs by design.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace quarot::detail {

/// Scalar reference: x <- scale * H_n x, n = 2^log2n, natural (Sylvester) order.
inline void fwht_f32(cpu::scalar, float* x, unsigned log2n, float scale) noexcept {
  const std::size_t n = std::size_t{1} << log2n;
  for (std::size_t h = 1; h < n; h *= 2)
    for (std::size_t i = 0; i < n; i += 2 * h)
      for (std::size_t j = i; j < i + h; ++j) {
        const float a = x[j], b = x[j + h];
        x[j] = a + b;
        x[j + h] = a - b;
      }
  if (scale != 1.0f)
    for (std::size_t i = 0; i < n; ++i) x[i] *= scale;
}

#if QUAROT_HAS_X86_SIMD

// ---------------------------------------------------------------- AVX2 (8 lanes)

/// Levels h = 1, 2, 4 inside one 8-float register.
QUAROT_TARGET_AVX2 QUAROT_ALWAYS_INLINE __m256 fwht8_in_register(__m256 v) noexcept {
  __m256 p = _mm256_permute_ps(v, 0xB1);  // swap neighbours
  v = _mm256_blend_ps(_mm256_add_ps(v, p), _mm256_sub_ps(p, v), 0xAA);
  p = _mm256_permute_ps(v, 0x4E);  // swap pairs
  v = _mm256_blend_ps(_mm256_add_ps(v, p), _mm256_sub_ps(p, v), 0xCC);
  p = _mm256_permute2f128_ps(v, v, 0x01);  // swap 128-bit halves
  v = _mm256_blend_ps(_mm256_add_ps(v, p), _mm256_sub_ps(p, v), 0xF0);
  return v;
}

/// One pass of log2(R) levels at stride h (floats, a multiple of 8), scaling on store
/// when this is the last pass.
template <int R>
QUAROT_TARGET_AVX2 void fwht_pass_avx2(float* x, std::size_t n, std::size_t h, bool last, float scale) noexcept {
  const __m256 vs = _mm256_set1_ps(scale);
  const bool do_scale = last && scale != 1.0f;
  for (std::size_t blk = 0; blk < n; blk += R * h)
    for (std::size_t j = blk; j < blk + h; j += 8) {
      __m256 v[R];
      QUAROT_UNROLL
      for (int r = 0; r < R; ++r) v[r] = _mm256_loadu_ps(x + j + r * h);
      QUAROT_UNROLL
      for (int s = 1; s < R; s *= 2)
        QUAROT_UNROLL
        for (int i = 0; i < R; i += 2 * s)
          QUAROT_UNROLL
          for (int k = i; k < i + s; ++k) {
            const __m256 a = v[k], b = v[k + s];
            v[k] = _mm256_add_ps(a, b);
            v[k + s] = _mm256_sub_ps(a, b);
          }
      if (do_scale)
        QUAROT_UNROLL
        for (int r = 0; r < R; ++r) v[r] = _mm256_mul_ps(v[r], vs);
      QUAROT_UNROLL
      for (int r = 0; r < R; ++r) _mm256_storeu_ps(x + j + r * h, v[r]);
    }
}

/// First pass: levels h = 1, 2, 4 in registers plus log2(V) levels across V consecutive registers.
template <int V>
QUAROT_TARGET_AVX2 void fwht_first_pass_avx2(float* x, std::size_t n, bool last, float scale) noexcept {
  const __m256 vs = _mm256_set1_ps(scale);
  const bool do_scale = last && scale != 1.0f;
  for (std::size_t blk = 0; blk < n; blk += 8 * V) {
    __m256 v[V];
    QUAROT_UNROLL
    for (int r = 0; r < V; ++r) v[r] = fwht8_in_register(_mm256_loadu_ps(x + blk + 8 * r));
    QUAROT_UNROLL
    for (int s = 1; s < V; s *= 2)
      QUAROT_UNROLL
      for (int i = 0; i < V; i += 2 * s)
        QUAROT_UNROLL
        for (int k = i; k < i + s; ++k) {
          const __m256 a = v[k], b = v[k + s];
          v[k] = _mm256_add_ps(a, b);
          v[k + s] = _mm256_sub_ps(a, b);
        }
    if (do_scale)
      QUAROT_UNROLL
      for (int r = 0; r < V; ++r) v[r] = _mm256_mul_ps(v[r], vs);
    QUAROT_UNROLL
    for (int r = 0; r < V; ++r) _mm256_storeu_ps(x + blk + 8 * r, v[r]);
  }
}

QUAROT_TARGET_AVX2 inline void fwht_f32_avx2(float* x, unsigned log2n, float scale) noexcept {
  if (log2n < 3) return fwht_f32(cpu::scalar{}, x, log2n, scale);
  const std::size_t n = std::size_t{1} << log2n;
  const unsigned first = log2n < 6 ? log2n : 6;
  const bool single = first == log2n;
  switch (first) {
    case 3: fwht_first_pass_avx2<1>(x, n, single, scale); break;
    case 4: fwht_first_pass_avx2<2>(x, n, single, scale); break;
    case 5: fwht_first_pass_avx2<4>(x, n, single, scale); break;
    default: fwht_first_pass_avx2<8>(x, n, single, scale); break;
  }
  unsigned level = first;
  while (level < log2n) {
    const unsigned left = log2n - level;
    const std::size_t h = std::size_t{1} << level;
    if (left >= 3) {
      fwht_pass_avx2<8>(x, n, h, left == 3, scale);
      level += 3;
    } else if (left == 2) {
      fwht_pass_avx2<4>(x, n, h, true, scale);
      level += 2;
    } else {
      fwht_pass_avx2<2>(x, n, h, true, scale);
      level += 1;
    }
  }
}

// ------------------------------------------------------------- AVX-512 (16 lanes)

/// Levels h = 1, 2, 4, 8 inside one 16-float register: a shuffle, an add and a masked
/// subtract per level (the odd half of each pair takes partner - self = a - b).
QUAROT_TARGET_AVX512 QUAROT_ALWAYS_INLINE __m512 fwht16_in_register(__m512 v) noexcept {
  __m512 p = _mm512_permute_ps(v, 0xB1);
  v = _mm512_mask_sub_ps(_mm512_add_ps(v, p), 0xAAAA, p, v);
  p = _mm512_permute_ps(v, 0x4E);
  v = _mm512_mask_sub_ps(_mm512_add_ps(v, p), 0xCCCC, p, v);
  p = _mm512_shuffle_f32x4(v, v, 0xB1);
  v = _mm512_mask_sub_ps(_mm512_add_ps(v, p), 0xF0F0, p, v);
  p = _mm512_shuffle_f32x4(v, v, 0x4E);
  v = _mm512_mask_sub_ps(_mm512_add_ps(v, p), 0xFF00, p, v);
  return v;
}

template <int R>
QUAROT_TARGET_AVX512 void fwht_pass_avx512(float* x, std::size_t n, std::size_t h, bool last, float scale) noexcept {
  const __m512 vs = _mm512_set1_ps(scale);
  const bool do_scale = last && scale != 1.0f;
  for (std::size_t blk = 0; blk < n; blk += R * h)
    for (std::size_t j = blk; j < blk + h; j += 16) {
      __m512 v[R];
      QUAROT_UNROLL
      for (int r = 0; r < R; ++r) v[r] = _mm512_loadu_ps(x + j + r * h);
      QUAROT_UNROLL
      for (int s = 1; s < R; s *= 2)
        QUAROT_UNROLL
        for (int i = 0; i < R; i += 2 * s)
          QUAROT_UNROLL
          for (int k = i; k < i + s; ++k) {
            const __m512 a = v[k], b = v[k + s];
            v[k] = _mm512_add_ps(a, b);
            v[k + s] = _mm512_sub_ps(a, b);
          }
      if (do_scale)
        QUAROT_UNROLL
        for (int r = 0; r < R; ++r) v[r] = _mm512_mul_ps(v[r], vs);
      QUAROT_UNROLL
      for (int r = 0; r < R; ++r) _mm512_storeu_ps(x + j + r * h, v[r]);
    }
}

template <int V>
QUAROT_TARGET_AVX512 void fwht_first_pass_avx512(float* x, std::size_t n, bool last, float scale) noexcept {
  const __m512 vs = _mm512_set1_ps(scale);
  const bool do_scale = last && scale != 1.0f;
  for (std::size_t blk = 0; blk < n; blk += 16 * V) {
    __m512 v[V];
    QUAROT_UNROLL
    for (int r = 0; r < V; ++r) v[r] = fwht16_in_register(_mm512_loadu_ps(x + blk + 16 * r));
    QUAROT_UNROLL
    for (int s = 1; s < V; s *= 2)
      QUAROT_UNROLL
      for (int i = 0; i < V; i += 2 * s)
        QUAROT_UNROLL
        for (int k = i; k < i + s; ++k) {
          const __m512 a = v[k], b = v[k + s];
          v[k] = _mm512_add_ps(a, b);
          v[k + s] = _mm512_sub_ps(a, b);
        }
    if (do_scale)
      QUAROT_UNROLL
      for (int r = 0; r < V; ++r) v[r] = _mm512_mul_ps(v[r], vs);
    QUAROT_UNROLL
    for (int r = 0; r < V; ++r) _mm512_storeu_ps(x + blk + 16 * r, v[r]);
  }
}

QUAROT_TARGET_AVX512 inline void fwht_f32_avx512(float* x, unsigned log2n, float scale) noexcept {
  if (log2n < 4) return fwht_f32_avx2(x, log2n, scale);
  const std::size_t n = std::size_t{1} << log2n;
  const unsigned first = log2n < 7 ? log2n : 7;
  const bool single = first == log2n;
  switch (first) {
    case 4: fwht_first_pass_avx512<1>(x, n, single, scale); break;
    case 5: fwht_first_pass_avx512<2>(x, n, single, scale); break;
    case 6: fwht_first_pass_avx512<4>(x, n, single, scale); break;
    default: fwht_first_pass_avx512<8>(x, n, single, scale); break;
  }
  unsigned level = first;
  while (level < log2n) {
    const unsigned left = log2n - level;
    const std::size_t h = std::size_t{1} << level;
    if (left >= 3) {
      fwht_pass_avx512<8>(x, n, h, left == 3, scale);
      level += 3;
    } else if (left == 2) {
      fwht_pass_avx512<4>(x, n, h, true, scale);
      level += 2;
    } else {
      fwht_pass_avx512<2>(x, n, h, true, scale);
      level += 1;
    }
  }
}

/// Kernels overload on xsimd arch tags; the most derived match wins (avx512vnni and
/// avx512bw take the AVX-512 kernel, avx2 the AVX2 one).
inline void fwht_f32_arch(const xsimd::avx2&, float* x, unsigned log2n, float scale) noexcept {
  fwht_f32_avx2(x, log2n, scale);
}
inline void fwht_f32_arch(const xsimd::avx512bw&, float* x, unsigned log2n, float scale) noexcept {
  fwht_f32_avx512(x, log2n, scale);
}

template <class Arch>
void fwht_f32(cpu::simd<Arch>, float* x, unsigned log2n, float scale) noexcept {
  fwht_f32_arch(Arch{}, x, log2n, scale);
}

#endif  // QUAROT_HAS_X86_SIMD

}  // namespace quarot::detail

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
