// quarot — CPU kernels that the transforms run per row: storage conversion
// (fp32/fp16/bf16 <-> fp32 work buffer, with an optional ±1 sign vector and scale), and
// the small dense ±1 matrix product of the Kronecker Hadamard transform (sign_matmul,
// by table lookup: see sign_lut).
//
// Internal header: use the quarot/transform/ headers. As in fwht_kernels.hpp, each
// SIMD kernel performs the reference's operations in the reference's order (the sign
// product x·s and the scale product are exact or rounded once; the ±1 products
// σ·t are exact, so fma(σ, t, acc) equals acc + σ·t), so results are bit-identical.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "../../core/backend.hpp"
#include "../../core/error.hpp"
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

/// Y = H·A for an m x m matrix H of ±1 entries (m a multiple of 4), by table lookup
/// ("Four Russians"): the rows of A in chunks of four, a0..a3, have only 16 signed sums
/// ±a0 ± a1 ± a2 ± a3; the kernels form them per chunk (12 additions and 8 negations)
/// and each output row then adds one of them per chunk. That is m/4 additions per output
/// element instead of m multiply-adds: for H_172 (K = 11008 = 172·64) about a quarter
/// of the dense product's work.
struct sign_lut {
  std::size_t m = 0, chunks = 0;
  /// Per output row and chunk, 4·e for the chunk's table entry e (so that a kernel can
  /// address the 32-byte entry as base + 8·(4·e)): e's bits 0..2 say which of a1..a3
  /// enter negated relative to a0, bit 3 that the whole sum is negated. Rows in groups of
  /// 8 (a last group of 4 when m is not a multiple of 8), chunk-major within a group, so
  /// that a kernel's 8 accumulator chains read one stream.
  std::vector<std::uint8_t> entry;

  [[nodiscard]] std::size_t index(std::size_t i, std::size_t c) const noexcept {
    const std::size_t full = m / 8 * 8;
    return i < full ? (i / 8) * 8 * chunks + c * 8 + i % 8 : full * chunks + c * 4 + (i - full);
  }
};

/// The lookup plan of a row-major m x m ±1 matrix.
inline sign_lut make_sign_lut(const float* h, std::size_t m) {
  require(m % 4 == 0, "sign_lut: order ", m, " is not a multiple of 4");
  sign_lut l;
  l.m = m;
  l.chunks = m / 4;
  l.entry.resize(m * l.chunks);
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t c = 0; c < l.chunks; ++c) {
      const float* hc = h + i * m + 4 * c;
      const bool negated = hc[0] < 0;
      std::size_t e = negated ? 8 : 0;
      for (int t = 1; t < 4; ++t)
        if ((hc[t] < 0) != negated) e += std::size_t{1} << (t - 1);
      l.entry[l.index(i, c)] = static_cast<std::uint8_t>(4 * e);
    }
  return l;
}

/// The 16 sums of one chunk, t[e] as sign_lut::entry describes. Every kernel forms them
/// with these operations, in this order, lane by lane.
template <class V, class Add, class Sub>
QUAROT_ALWAYS_INLINE void chunk_sums(V a0, V a1, V a2, V a3, V zero, V* t, Add add, Sub sub) noexcept {
  const V p01 = add(a0, a1), m01 = sub(a0, a1), p23 = add(a2, a3), m23 = sub(a2, a3);
  t[0] = add(p01, p23);
  t[1] = add(m01, p23);
  t[2] = sub(p01, m23);
  t[3] = sub(m01, m23);
  t[4] = add(p01, m23);
  t[5] = add(m01, m23);
  t[6] = sub(p01, p23);
  t[7] = sub(m01, p23);
  for (int k = 0; k < 8; ++k) t[8 + k] = sub(zero, t[k]);
}

/// Y (m x p) = scale · (H · A) for A (m x p), row-major and contiguous; `table` holds 4·m
/// floats. The scale is one multiply per element after the sum, as store_row applies it
/// (skipped when 1). Y may be A: a column block is written only after its table is built.
inline void sign_matmul(cpu::scalar, const sign_lut& h, const float* a, float* y, std::size_t p, float* table,
                        float scale = 1.0f) noexcept {
  const std::size_t m = h.m, nc = h.chunks;
  const auto add = [](float x, float z) { return x + z; };
  const auto sub = [](float x, float z) { return x - z; };
  for (std::size_t j = 0; j < p; ++j) {
    for (std::size_t c = 0; c < nc; ++c) {
      const float* ac = a + 4 * c * p + j;
      chunk_sums(ac[0], ac[p], ac[2 * p], ac[3 * p], 0.0f, table + 16 * c, add, sub);
    }
    for (std::size_t i = 0; i < m; ++i) {
      float acc = 0.0f;
      for (std::size_t c = 0; c < nc; ++c) acc += table[16 * c + h.entry[h.index(i, c)] / 4];
      if (scale != 1.0f) acc *= scale;
      y[i * p + j] = acc;
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

/// R output rows of one 8-column block: acc_r += table[entry_rc] over the chunks, R
/// independent chains. Each term is one byte load and one addition with a memory
/// operand (base + 8·(4·e)): the loop is bound by loads, not by integer work.
template <int R>
QUAROT_TARGET_AVX2 QUAROT_ALWAYS_INLINE void sign_rows_avx2(const sign_lut& h, std::size_t i, const float* table,
                                                            float* y, std::size_t p, float scale) noexcept {
  __m256 acc[R];
  QUAROT_UNROLL
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  const std::uint8_t* e = h.entry.data() + h.index(i, 0);
  const char* base = reinterpret_cast<const char*>(table);
  for (std::size_t c = 0; c < h.chunks; ++c, e += R, base += 16 * 32)
    QUAROT_UNROLL
    for (int r = 0; r < R; ++r)
      acc[r] = _mm256_add_ps(acc[r], _mm256_load_ps(reinterpret_cast<const float*>(base + 8 * std::size_t{e[r]})));
  QUAROT_UNROLL
  for (int r = 0; r < R; ++r)
    _mm256_storeu_ps(y + (i + r) * p, scale != 1.0f ? _mm256_mul_ps(acc[r], _mm256_set1_ps(scale)) : acc[r]);
}

/// sign_matmul on 8-column blocks; `table` holds 32·m floats (22 KiB for m = 172: it
/// stays in L1), 32-byte aligned. The AVX-512 backends use it too: with the table in
/// 256-bit rows the 16 sums per chunk fit L1, and the loads, not the adds, set the pace.
QUAROT_TARGET_AVX2 inline void sign_matmul_avx2(const sign_lut& h, const float* a, float* y, std::size_t p,
                                                float* table, float scale) noexcept {
  if (p % 8 != 0) return sign_matmul(cpu::scalar{}, h, a, y, p, table, scale);
  const auto add = [](__m256 x, __m256 z) QUAROT_TARGET_AVX2 { return _mm256_add_ps(x, z); };
  const auto sub = [](__m256 x, __m256 z) QUAROT_TARGET_AVX2 { return _mm256_sub_ps(x, z); };
  for (std::size_t j = 0; j < p; j += 8) {
    for (std::size_t c = 0; c < h.chunks; ++c) {
      const float* ac = a + 4 * c * p + j;
      __m256 t[16];
      chunk_sums(_mm256_loadu_ps(ac), _mm256_loadu_ps(ac + p), _mm256_loadu_ps(ac + 2 * p), _mm256_loadu_ps(ac + 3 * p),
                 _mm256_setzero_ps(), t, add, sub);
      QUAROT_UNROLL
      for (int k = 0; k < 16; ++k) _mm256_store_ps(table + (16 * c + k) * 8, t[k]);
    }
    std::size_t i = 0;
    for (; i + 8 <= h.m; i += 8) sign_rows_avx2<8>(h, i, table, y + j, p, scale);
    for (; i < h.m; i += 4) sign_rows_avx2<4>(h, i, table, y + j, p, scale);
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

template <class Arch, class T>
void load_row(cpu::simd<Arch>, const T* src, float* dst, std::size_t n, const float* signs) noexcept {
  load_row_arch(Arch{}, src, dst, n, signs);
}
template <class Arch, class T>
void store_row(cpu::simd<Arch>, const float* src, T* dst, std::size_t n, float scale, const float* signs) noexcept {
  store_row_arch(Arch{}, src, dst, n, scale, signs);
}
template <class Arch>
void sign_matmul(cpu::simd<Arch>, const sign_lut& h, const float* a, float* y, std::size_t p, float* table,
                 float scale = 1.0f) noexcept {
  sign_matmul_avx2(h, a, y, p, table, scale);
}

#endif  // QUAROT_HAS_X86_SIMD

}  // namespace quarot::detail

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
