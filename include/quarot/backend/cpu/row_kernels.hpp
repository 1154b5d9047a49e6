// quarot — CPU kernels that the transforms run per row: storage conversion
// (fp32/fp16/bf16 <-> fp32 work buffer, with an optional ±1 sign vector and scale), and
// the small dense ±1 matrix product of the Kronecker Hadamard transform.
//
// Internal header: use the quarot/transform/ headers. As in fwht_kernels.hpp, each
// SIMD kernel performs the reference's operations in the reference's order (the sign
// product x·s and the scale product are exact or rounded once; the ±1 products
// h·a are exact, so fma(h, a, acc) equals acc + h·a), so results are bit-identical.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "../../core/backend.hpp"
#include "../../core/numeric.hpp"
#include "simd_io.hpp"

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

// ------------------------------------------------------------------ scalar reference

/// dst[i] = float(src[i]) * (signs ? signs[i] : 1)
template <class T>
void load_row(cpu::scalar, const T* src, float* dst, std::size_t n, const float* signs) noexcept {
  for (std::size_t i = 0; i < n; ++i) {
    const float v = to_float(src[i]);
    dst[i] = signs ? v * signs[i] : v;
  }
}

/// dst[i] = T(src[i] * scale * (signs ? signs[i] : 1)), rounding to nearest even.
template <class T>
void store_row(cpu::scalar, const float* src, T* dst, std::size_t n, float scale, const float* signs) noexcept {
  for (std::size_t i = 0; i < n; ++i) {
    float v = src[i];
    if (scale != 1.0f) v *= scale;
    if (signs) v *= signs[i];
    dst[i] = from_float<T>(v);
  }
}

/// Y (m x p) = H (m x m, entries ±1) · A (m x p), all row-major and contiguous.
inline void sign_matmul(cpu::scalar, const float* h, const float* a, float* y, std::size_t m, std::size_t p) noexcept {
  for (std::size_t i = 0; i < m; ++i) {
    float* yi = y + i * p;
    for (std::size_t j = 0; j < p; ++j) yi[j] = 0.0f;
    for (std::size_t l = 0; l < m; ++l) {
      const float hil = h[i * m + l];
      const float* al = a + l * p;
      for (std::size_t j = 0; j < p; ++j) yi[j] += hil * al[j];
    }
  }
}

#if QUAROT_HAS_X86_SIMD

// ---------------------------------------------------------------------- AVX2

template <class T>
QUAROT_TARGET_AVX2 void load_row_avx2(const T* src, float* dst, std::size_t n, const float* signs) noexcept {
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = load8_avx2(src + i);
    if (signs) v = _mm256_mul_ps(v, _mm256_loadu_ps(signs + i));
    _mm256_storeu_ps(dst + i, v);
  }
  load_row(cpu::scalar{}, src + i, dst + i, n - i, signs ? signs + i : nullptr);
}

template <class T>
QUAROT_TARGET_AVX2 void store_row_avx2(const float* src, T* dst, std::size_t n, float scale,
                                       const float* signs) noexcept {
  const __m256 vs = _mm256_set1_ps(scale);
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_loadu_ps(src + i);
    if (scale != 1.0f) v = _mm256_mul_ps(v, vs);
    if (signs) v = _mm256_mul_ps(v, _mm256_loadu_ps(signs + i));
    store8_avx2(dst + i, v);
  }
  store_row(cpu::scalar{}, src + i, dst + i, n - i, scale, signs ? signs + i : nullptr);
}

/// Y = H·A with a 4-row x 32-column register tile (16 accumulators), column tiles outer
/// (see the AVX-512 version).
QUAROT_TARGET_AVX2 inline void sign_matmul_avx2(const float* h, const float* a, float* y, std::size_t m,
                                                std::size_t p) noexcept {
  if (p % 8 != 0) return sign_matmul(cpu::scalar{}, h, a, y, m, p);
  std::size_t j = 0;
  for (; j + 32 <= p; j += 32) {
    std::size_t i = 0;
    for (; i + 4 <= m; i += 4) {
      __m256 acc[4][4];
      QUAROT_UNROLL
      for (auto& r : acc)
        QUAROT_UNROLL
        for (auto& c : r) c = _mm256_setzero_ps();
      for (std::size_t l = 0; l < m; ++l) {
        const float* al = a + l * p + j;
        const __m256 a0 = _mm256_loadu_ps(al), a1 = _mm256_loadu_ps(al + 8), a2 = _mm256_loadu_ps(al + 16),
                     a3 = _mm256_loadu_ps(al + 24);
        QUAROT_UNROLL
        for (int r = 0; r < 4; ++r) {
          const __m256 hv = _mm256_broadcast_ss(h + (i + r) * m + l);
          acc[r][0] = _mm256_fmadd_ps(hv, a0, acc[r][0]);
          acc[r][1] = _mm256_fmadd_ps(hv, a1, acc[r][1]);
          acc[r][2] = _mm256_fmadd_ps(hv, a2, acc[r][2]);
          acc[r][3] = _mm256_fmadd_ps(hv, a3, acc[r][3]);
        }
      }
      QUAROT_UNROLL
      for (int r = 0; r < 4; ++r)
        QUAROT_UNROLL
        for (int c = 0; c < 4; ++c) _mm256_storeu_ps(y + (i + r) * p + j + 8 * c, acc[r][c]);
    }
    for (; i < m; ++i) {
      __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
      for (std::size_t l = 0; l < m; ++l) {
        const __m256 hv = _mm256_broadcast_ss(h + i * m + l);
        const float* al = a + l * p + j;
        QUAROT_UNROLL
        for (int c = 0; c < 4; ++c) acc[c] = _mm256_fmadd_ps(hv, _mm256_loadu_ps(al + 8 * c), acc[c]);
      }
      QUAROT_UNROLL
      for (int c = 0; c < 4; ++c) _mm256_storeu_ps(y + i * p + j + 8 * c, acc[c]);
    }
  }
  for (; j < p; j += 8)
    for (std::size_t i = 0; i < m; ++i) {
      __m256 acc = _mm256_setzero_ps();
      for (std::size_t l = 0; l < m; ++l)
        acc = _mm256_fmadd_ps(_mm256_broadcast_ss(h + i * m + l), _mm256_loadu_ps(a + l * p + j), acc);
      _mm256_storeu_ps(y + i * p + j, acc);
    }
}

// ------------------------------------------------------------------- AVX-512

template <class T>
QUAROT_TARGET_AVX512 void load_row_avx512(const T* src, float* dst, std::size_t n, const float* signs) noexcept {
  std::size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m512 v = load16_avx512(src + i);
    if (signs) v = _mm512_mul_ps(v, _mm512_loadu_ps(signs + i));
    _mm512_storeu_ps(dst + i, v);
  }
  load_row(cpu::scalar{}, src + i, dst + i, n - i, signs ? signs + i : nullptr);
}

template <class T>
QUAROT_TARGET_AVX512 void store_row_avx512(const float* src, T* dst, std::size_t n, float scale,
                                           const float* signs) noexcept {
  const __m512 vs = _mm512_set1_ps(scale);
  std::size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m512 v = _mm512_loadu_ps(src + i);
    if (scale != 1.0f) v = _mm512_mul_ps(v, vs);
    if (signs) v = _mm512_mul_ps(v, _mm512_loadu_ps(signs + i));
    store16_avx512(dst + i, v);
  }
  store_row(cpu::scalar{}, src + i, dst + i, n - i, scale, signs ? signs + i : nullptr);
}

/// Y = H·A with a 4-row x 64-column register tile (16 zmm accumulators). Column tiles
/// are the outer loop so that an m x 64 slice of A stays in L1 while every group of
/// output rows reads it.
QUAROT_TARGET_AVX512 inline void sign_matmul_avx512(const float* h, const float* a, float* y, std::size_t m,
                                                    std::size_t p) noexcept {
  if (p % 16 != 0) return sign_matmul_avx2(h, a, y, m, p);
  std::size_t j = 0;
  for (; j + 64 <= p; j += 64) {
    std::size_t i = 0;
    for (; i + 4 <= m; i += 4) {
      __m512 acc[4][4];
      QUAROT_UNROLL
      for (auto& r : acc)
        QUAROT_UNROLL
        for (auto& c : r) c = _mm512_setzero_ps();
      for (std::size_t l = 0; l < m; ++l) {
        const float* al = a + l * p + j;
        const __m512 a0 = _mm512_loadu_ps(al), a1 = _mm512_loadu_ps(al + 16), a2 = _mm512_loadu_ps(al + 32),
                     a3 = _mm512_loadu_ps(al + 48);
        QUAROT_UNROLL
        for (int r = 0; r < 4; ++r) {
          const __m512 hv = _mm512_set1_ps(h[(i + r) * m + l]);
          acc[r][0] = _mm512_fmadd_ps(hv, a0, acc[r][0]);
          acc[r][1] = _mm512_fmadd_ps(hv, a1, acc[r][1]);
          acc[r][2] = _mm512_fmadd_ps(hv, a2, acc[r][2]);
          acc[r][3] = _mm512_fmadd_ps(hv, a3, acc[r][3]);
        }
      }
      QUAROT_UNROLL
      for (int r = 0; r < 4; ++r)
        QUAROT_UNROLL
        for (int c = 0; c < 4; ++c) _mm512_storeu_ps(y + (i + r) * p + j + 16 * c, acc[r][c]);
    }
    for (; i < m; ++i) {
      __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
      for (std::size_t l = 0; l < m; ++l) {
        const __m512 hv = _mm512_set1_ps(h[i * m + l]);
        const float* al = a + l * p + j;
        QUAROT_UNROLL
        for (int c = 0; c < 4; ++c) acc[c] = _mm512_fmadd_ps(hv, _mm512_loadu_ps(al + 16 * c), acc[c]);
      }
      QUAROT_UNROLL
      for (int c = 0; c < 4; ++c) _mm512_storeu_ps(y + i * p + j + 16 * c, acc[c]);
    }
  }
  for (; j < p; j += 16)  // column tail, 16 at a time
    for (std::size_t i = 0; i < m; ++i) {
      __m512 acc = _mm512_setzero_ps();
      for (std::size_t l = 0; l < m; ++l)
        acc = _mm512_fmadd_ps(_mm512_set1_ps(h[i * m + l]), _mm512_loadu_ps(a + l * p + j), acc);
      _mm512_storeu_ps(y + i * p + j, acc);
    }
}

// ------------------------------------------------------- tag overloads (dispatch)

template <class T>
void load_row_arch(const xsimd::avx2&, const T* s, float* d, std::size_t n, const float* sg) noexcept {
  load_row_avx2(s, d, n, sg);
}
template <class T>
void load_row_arch(const xsimd::avx512bw&, const T* s, float* d, std::size_t n, const float* sg) noexcept {
  load_row_avx512(s, d, n, sg);
}
template <class T>
void store_row_arch(const xsimd::avx2&, const float* s, T* d, std::size_t n, float sc, const float* sg) noexcept {
  store_row_avx2(s, d, n, sc, sg);
}
template <class T>
void store_row_arch(const xsimd::avx512bw&, const float* s, T* d, std::size_t n, float sc, const float* sg) noexcept {
  store_row_avx512(s, d, n, sc, sg);
}
inline void sign_matmul_arch(const xsimd::avx2&, const float* h, const float* a, float* y, std::size_t m,
                             std::size_t p) noexcept {
  sign_matmul_avx2(h, a, y, m, p);
}
inline void sign_matmul_arch(const xsimd::avx512bw&, const float* h, const float* a, float* y, std::size_t m,
                             std::size_t p) noexcept {
  sign_matmul_avx512(h, a, y, m, p);
}

template <class Arch, class T>
void load_row(cpu::simd<Arch>, const T* src, float* dst, std::size_t n, const float* signs) noexcept {
  load_row_arch(Arch{}, src, dst, n, signs);
}
template <class Arch, class T>
void store_row(cpu::simd<Arch>, const float* src, T* dst, std::size_t n, float scale, const float* signs) noexcept {
  store_row_arch(Arch{}, src, dst, n, scale, signs);
}
template <class Arch>
void sign_matmul(cpu::simd<Arch>, const float* h, const float* a, float* y, std::size_t m, std::size_t p) noexcept {
  sign_matmul_arch(Arch{}, h, a, y, m, p);
}

#endif  // QUAROT_HAS_X86_SIMD

}  // namespace quarot::detail

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
