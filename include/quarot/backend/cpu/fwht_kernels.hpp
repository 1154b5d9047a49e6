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
#include "../../core/numeric.hpp"
#include "simd_io.hpp"

#include <type_traits>

#if QUAROT_HAS_X86_SIMD
#include <immintrin.h>
#endif

// GCC 12 warns that the AVX-512 intrinsics' internal _mm512_undefined_* operands "may be
// used uninitialized"; they are don't-care inputs by design.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
// The fully unrolled butterfly loops (for s = 1; s < R; s *= 2) leave dead copies with
// s >= R after unrolling, which -Warray-bounds reports at -O3; they are never executed.
#pragma GCC diagnostic ignored "-Warray-bounds"
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

/// Scalar reference of the fused row transform: dst = post ⊙ (scale · H (pre ⊙ src)),
/// exactly load_row + fwht + store_row.
template <class TIn, class TOut>
void fwht_row(cpu::scalar, const TIn* src, TOut* dst, float* work, unsigned log2n, float scale, const float* pre,
              const float* post) noexcept {
  const std::size_t n = std::size_t{1} << log2n;
  for (std::size_t i = 0; i < n; ++i) {
    const float v = to_float(src[i]);
    work[i] = pre ? v * pre[i] : v;
  }
  fwht_f32(cpu::scalar{}, work, log2n, 1.0f);
  for (std::size_t i = 0; i < n; ++i) {
    float v = work[i];
    if (scale != 1.0f) v *= scale;
    if (post) v *= post[i];
    dst[i] = from_float<TOut>(v);
  }
}

#if QUAROT_HAS_X86_SIMD


// ---------------------------------------------------------------- in-register levels

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

// ------------------------------------------------------------- AVX2 (8 lanes)

/// The first pass: reads the row in its storage type (times the pre-signs), runs levels
/// h = 1..4 inside each register and log2(V) levels across V consecutive
/// registers, and writes fp32 to `out` — or, when it is also the last pass, the scaled
/// result (times the post-signs) in the output type.
template <int V, class TIn, class TOut>
QUAROT_TARGET_AVX2 void fwht_first_pass_avx2(const TIn* src, TOut* out, std::size_t n, bool last, float scale,
                                   const float* pre, const float* post) noexcept {
  const __m256 vs = _mm256_set1_ps(scale);
  const bool do_scale = last && scale != 1.0f;
  for (std::size_t blk = 0; blk < n; blk += 8 * V) {
    __m256 v[V];
    QUAROT_UNROLL
    for (int r = 0; r < V; ++r) {
      __m256 a = load8_avx2(src + blk + 8 * r);
      if (pre) a = _mm256_mul_ps(a, _mm256_loadu_ps(pre + blk + 8 * r));
      v[r] = fwht8_in_register(a);
    }
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
    QUAROT_UNROLL
    for (int r = 0; r < V; ++r) {
      __m256 a = v[r];
      if (do_scale) a = _mm256_mul_ps(a, vs);
      if (last && post) a = _mm256_mul_ps(a, _mm256_loadu_ps(post + blk + 8 * r));
      store8_avx2(out + blk + 8 * r, a);
    }
  }
}

/// A pass of log2(R) levels at stride h over the fp32 work row, writing fp32 back — or,
/// when last, the scaled result in the output type.
template <int R, class TOut>
QUAROT_TARGET_AVX2 void fwht_pass_avx2(float* x, TOut* out, std::size_t n, std::size_t h, bool last, float scale,
                             const float* post) noexcept {
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
      QUAROT_UNROLL
      for (int r = 0; r < R; ++r) {
        __m256 a = v[r];
        if (do_scale) a = _mm256_mul_ps(a, vs);
        if (last && post) a = _mm256_mul_ps(a, _mm256_loadu_ps(post + j + r * h));
        store8_avx2(out + j + r * h, a);
      }
    }
}

/// dst = post ⊙ (scale · H_n (pre ⊙ src)), n = 2^log2n >= 8, with `work` (n floats) for the
/// intermediate passes; work may alias src and dst when both are fp32.
template <class TIn, class TOut>
QUAROT_TARGET_AVX2 void fwht_row_avx2(const TIn* src, TOut* dst, float* work, unsigned log2n, float scale,
                            const float* pre, const float* post) noexcept {
  const std::size_t n = std::size_t{1} << log2n;
  const unsigned first = log2n < 6 ? log2n : 6;
  const bool single = first == log2n;
  auto first_pass = [&](auto vcount) {
    constexpr int V = decltype(vcount)::value;
    if (single) fwht_first_pass_avx2<V>(src, dst, n, true, scale, pre, post);
    else fwht_first_pass_avx2<V>(src, work, n, false, scale, pre, post);
  };
  switch (first) {
    case 3: first_pass(std::integral_constant<int, 1>{}); break;
    case 4: first_pass(std::integral_constant<int, 2>{}); break;
    case 5: first_pass(std::integral_constant<int, 4>{}); break;
    default: first_pass(std::integral_constant<int, 8>{}); break;
  }
  unsigned level = first;
  while (level < log2n) {
    const unsigned left = log2n - level;
    const std::size_t h = std::size_t{1} << level;
    const unsigned step = left >= 3 ? 3 : left;
    const bool last = level + step == log2n;
    switch (step) {
      case 3:
        if (last) fwht_pass_avx2<8>(work, dst, n, h, true, scale, post);
        else fwht_pass_avx2<8>(work, work, n, h, false, scale, post);
        break;
      case 2: fwht_pass_avx2<4>(work, dst, n, h, true, scale, post); break;
      default: fwht_pass_avx2<2>(work, dst, n, h, true, scale, post); break;
    }
    level += step;
  }
}

// ------------------------------------------------------------- AVX-512 (16 lanes)

/// The first pass: reads the row in its storage type (times the pre-signs), runs levels
/// h = 1..8 inside each register and log2(V) levels across V consecutive
/// registers, and writes fp32 to `out` — or, when it is also the last pass, the scaled
/// result (times the post-signs) in the output type.
template <int V, class TIn, class TOut>
QUAROT_TARGET_AVX512 void fwht_first_pass_avx512(const TIn* src, TOut* out, std::size_t n, bool last, float scale,
                                   const float* pre, const float* post) noexcept {
  const __m512 vs = _mm512_set1_ps(scale);
  const bool do_scale = last && scale != 1.0f;
  for (std::size_t blk = 0; blk < n; blk += 16 * V) {
    __m512 v[V];
    QUAROT_UNROLL
    for (int r = 0; r < V; ++r) {
      __m512 a = load16_avx512(src + blk + 16 * r);
      if (pre) a = _mm512_mul_ps(a, _mm512_loadu_ps(pre + blk + 16 * r));
      v[r] = fwht16_in_register(a);
    }
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
    QUAROT_UNROLL
    for (int r = 0; r < V; ++r) {
      __m512 a = v[r];
      if (do_scale) a = _mm512_mul_ps(a, vs);
      if (last && post) a = _mm512_mul_ps(a, _mm512_loadu_ps(post + blk + 16 * r));
      store16_avx512(out + blk + 16 * r, a);
    }
  }
}

/// A pass of log2(R) levels at stride h over the fp32 work row, writing fp32 back — or,
/// when last, the scaled result in the output type.
template <int R, class TOut>
QUAROT_TARGET_AVX512 void fwht_pass_avx512(float* x, TOut* out, std::size_t n, std::size_t h, bool last, float scale,
                             const float* post) noexcept {
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
      QUAROT_UNROLL
      for (int r = 0; r < R; ++r) {
        __m512 a = v[r];
        if (do_scale) a = _mm512_mul_ps(a, vs);
        if (last && post) a = _mm512_mul_ps(a, _mm512_loadu_ps(post + j + r * h));
        store16_avx512(out + j + r * h, a);
      }
    }
}

/// dst = post ⊙ (scale · H_n (pre ⊙ src)), n = 2^log2n >= 16, with `work` (n floats) for the
/// intermediate passes; work may alias src and dst when both are fp32.
template <class TIn, class TOut>
QUAROT_TARGET_AVX512 void fwht_row_avx512(const TIn* src, TOut* dst, float* work, unsigned log2n, float scale,
                            const float* pre, const float* post) noexcept {
  const std::size_t n = std::size_t{1} << log2n;
  const unsigned first = log2n < 7 ? log2n : 7;
  const bool single = first == log2n;
  auto first_pass = [&](auto vcount) {
    constexpr int V = decltype(vcount)::value;
    if (single) fwht_first_pass_avx512<V>(src, dst, n, true, scale, pre, post);
    else fwht_first_pass_avx512<V>(src, work, n, false, scale, pre, post);
  };
  switch (first) {
    case 4: first_pass(std::integral_constant<int, 1>{}); break;
    case 5: first_pass(std::integral_constant<int, 2>{}); break;
    case 6: first_pass(std::integral_constant<int, 4>{}); break;
    default: first_pass(std::integral_constant<int, 8>{}); break;
  }
  unsigned level = first;
  while (level < log2n) {
    const unsigned left = log2n - level;
    const std::size_t h = std::size_t{1} << level;
    const unsigned step = left >= 3 ? 3 : left;
    const bool last = level + step == log2n;
    switch (step) {
      case 3:
        if (last) fwht_pass_avx512<8>(work, dst, n, h, true, scale, post);
        else fwht_pass_avx512<8>(work, work, n, h, false, scale, post);
        break;
      case 2: fwht_pass_avx512<4>(work, dst, n, h, true, scale, post); break;
      default: fwht_pass_avx512<2>(work, dst, n, h, true, scale, post); break;
    }
    level += step;
  }
}

// ---------------------------------------------------------- tag overloads (dispatch)

template <class TIn, class TOut>
void fwht_row_arch(const xsimd::avx2&, const TIn* src, TOut* dst, float* work, unsigned log2n, float scale,
                   const float* pre, const float* post) noexcept {
  if (log2n < 3) return fwht_row(cpu::scalar{}, src, dst, work, log2n, scale, pre, post);
  fwht_row_avx2(src, dst, work, log2n, scale, pre, post);
}
template <class TIn, class TOut>
void fwht_row_arch(const xsimd::avx512bw&, const TIn* src, TOut* dst, float* work, unsigned log2n, float scale,
                   const float* pre, const float* post) noexcept {
  if (log2n < 4) return fwht_row_arch(xsimd::avx2{}, src, dst, work, log2n, scale, pre, post);
  fwht_row_avx512(src, dst, work, log2n, scale, pre, post);
}

template <class Arch, class TIn, class TOut>
void fwht_row(cpu::simd<Arch>, const TIn* src, TOut* dst, float* work, unsigned log2n, float scale, const float* pre,
              const float* post) noexcept {
  fwht_row_arch(Arch{}, src, dst, work, log2n, scale, pre, post);
}

/// In-place fp32 transform (the Kronecker blocks use it).
template <class Arch>
void fwht_f32(cpu::simd<Arch>, float* x, unsigned log2n, float scale) noexcept {
  fwht_row_arch(Arch{}, x, x, x, log2n, scale, nullptr, nullptr);
}

#endif  // QUAROT_HAS_X86_SIMD

}  // namespace quarot::detail

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
