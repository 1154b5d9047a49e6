// quarot — CPU kernels that the transforms run per row: storage conversion
// (fp32/fp16/bf16 <-> fp32 work buffer, with an optional ±1 sign vector and scale), and
// the small dense ±1 matrix product of the Kronecker Hadamard transform (sign_matmul,
// by table lookup: see sign_lut).
//
// Internal header: use the quarot/transform/ headers. As in fwht_kernels.hpp, each
// SIMD kernel performs the reference's operations in the reference's order (the sign
// product x·s is exact, the scale product rounded once; the ±1 product's table sums and
// their accumulation follow one fixed order), so results are bit-identical.
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
/// ("Four Russians"): the rows of A in chunks of four, a0..a3, have only 8 signed sums
/// a0 ± a1 ± a2 ± a3 up to an overall sign; the kernels form them per chunk (12
/// additions) and each output row then adds or subtracts one of them per chunk. That is
/// m/4 additions per output element instead of m multiply-adds: for H_172 (K = 11008 =
/// 172·64) about a quarter of the dense product's work.
///
/// Each row's terms are listed as its added entries, then its subtracted ones; a kernel
/// sums each list into two alternating accumulators and returns (p0 + p1) - (n0 + n1), so
/// no term needs a sign of its own and the table holds 8 entries per chunk (it stays in
/// L1 for two 8-column blocks at once, which then share each entry read).
struct sign_lut {
  std::size_t m = 0, chunks = 0;
  /// Per row: terms [start[i], start[i] + plus[i]) are added, [start[i] + plus[i],
  /// start[i + 1]) subtracted; a term is 8·(8·chunk + e) (so that a kernel addresses the
  /// 64-byte entry as base + 8·term), e's bits 0..2 saying which of a1..a3 enter negated
  /// relative to a0.
  std::vector<std::uint16_t> term;
  std::vector<std::uint32_t> start, plus;
};

/// The lookup plan of a row-major m x m ±1 matrix (m <= 4096).
inline sign_lut make_sign_lut(const float* h, std::size_t m) {
  require(m % 4 == 0, "sign_lut: order ", m, " is not a multiple of 4");
  require(m <= 4096, "sign_lut: order ", m, " exceeds 4096");
  sign_lut l;
  l.m = m;
  l.chunks = m / 4;
  l.term.reserve(m * l.chunks);
  for (std::size_t i = 0; i < m; ++i) {
    l.start.push_back(static_cast<std::uint32_t>(l.term.size()));
    std::vector<std::uint16_t> minus;
    for (std::size_t c = 0; c < l.chunks; ++c) {
      const float* hc = h + i * m + 4 * c;
      const bool negated = hc[0] < 0;
      std::size_t e = 0;
      for (int t = 1; t < 4; ++t)
        if ((hc[t] < 0) != negated) e += std::size_t{1} << (t - 1);
      const auto t = static_cast<std::uint16_t>(8 * (8 * c + e));
      (negated ? minus : l.term).push_back(t);
    }
    l.plus.push_back(static_cast<std::uint32_t>(l.term.size() - l.start.back()));
    l.term.insert(l.term.end(), minus.begin(), minus.end());
  }
  l.start.push_back(static_cast<std::uint32_t>(l.term.size()));
  return l;
}

/// The 8 sums of one chunk, t[e] as sign_lut::term describes. Every kernel forms them
/// with these operations, in this order, lane by lane (the CUDA Kronecker kernels too,
/// with V = float: backend/cuda/fwht.cuh). add(o, x, z) sets o = x + z, sub likewise:
/// vectors travel by reference only, because this function has no target attribute and
/// clang refuses AVX vectors passed to or returned from it by value. (Under nvcc the
/// CPU kernels' host lambdas instantiate it too: exec_check_disable, as Thrust does for
/// host/device templates, lets the host-only instantiations be.)
#if defined(__CUDACC__)
#pragma nv_exec_check_disable
#endif
template <class V, class Add, class Sub>
QUAROT_HOST_DEVICE_ALWAYS_INLINE void chunk_sums(const V& a0, const V& a1, const V& a2, const V& a3, V* t, Add add,
                                     Sub sub) noexcept {
  V p01, m01, p23, m23;
  add(p01, a0, a1);
  sub(m01, a0, a1);
  add(p23, a2, a3);
  sub(m23, a2, a3);
  add(t[0], p01, p23);
  add(t[1], m01, p23);
  sub(t[2], p01, m23);
  sub(t[3], m01, m23);
  add(t[4], p01, m23);
  add(t[5], m01, m23);
  sub(t[6], p01, p23);
  sub(t[7], m01, p23);
}

/// Y (m x p) = scale · (H · A) for A (m x p), row-major and contiguous; `table` holds 2·m
/// floats. The scale is one multiply per element after the sum, as store_row applies it
/// (skipped when 1). Y may be A: a column block is written only after its table is built.
inline void sign_matmul(cpu::scalar, const sign_lut& h, const float* a, float* y, std::size_t p, float* table,
                        float scale = 1.0f) noexcept {
  const auto add = [](float& o, float x, float z) { o = x + z; };
  const auto sub = [](float& o, float x, float z) { o = x - z; };
  for (std::size_t j = 0; j < p; ++j) {
    for (std::size_t c = 0; c < h.chunks; ++c) {
      const float* ac = a + 4 * c * p + j;
      chunk_sums(ac[0], ac[p], ac[2 * p], ac[3 * p], table + 8 * c, add, sub);
    }
    for (std::size_t i = 0; i < h.m; ++i) {
      float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};  // p0, p1, n0, n1
      const std::size_t b = h.start[i], mid = b + h.plus[i], e = h.start[i + 1];
      for (std::size_t t = b; t < mid; ++t) acc[(t - b) % 2] += table[h.term[t] / 8];
      for (std::size_t t = mid; t < e; ++t) acc[2 + (t - mid) % 2] += table[h.term[t] / 8];
      float v = (acc[0] + acc[1]) - (acc[2] + acc[3]);
      if (scale != 1.0f) v *= scale;
      y[i * p + j] = v;
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

/// One output row over NB 8-column blocks: the added terms into p0/p1, the subtracted
/// ones into n0/n1 (alternating), then (p0 + p1) - (n0 + n1). A term is one 16-bit load
/// shared by the NB blocks, whose table rows are adjacent (32·NB bytes per entry).
template <int NB>
QUAROT_TARGET_AVX2 QUAROT_ALWAYS_INLINE void sign_row_avx2(const sign_lut& h, std::size_t i, const char* table,
                                                           float* y, float scale) noexcept {
  constexpr std::size_t entry_bytes = 32 * NB;
  const std::size_t b = h.start[i], mid = b + h.plus[i], e = h.start[i + 1];
  const std::uint16_t* term = h.term.data();
  auto entry = [&](std::size_t offset, int k) QUAROT_TARGET_AVX2 {
    return _mm256_load_ps(reinterpret_cast<const float*>(table + offset * (entry_bytes / 8) + 32 * k));
  };
  __m256 acc[4][NB];
  QUAROT_UNROLL
  for (auto& r : acc)
    QUAROT_UNROLL
    for (auto& v : r) v = _mm256_setzero_ps();
  // Entries at offsets oa and ob into acc[s] and acc[s + 1].
  const auto add_pair = [&](int s, std::size_t oa, std::size_t ob) QUAROT_TARGET_AVX2 {
    QUAROT_UNROLL
    for (int k = 0; k < NB; ++k) {
      acc[s][k] = _mm256_add_ps(acc[s][k], entry(oa, k));
      acc[s + 1][k] = _mm256_add_ps(acc[s + 1][k], entry(ob, k));
    }
  };
  // Terms [from, to) into acc[s] and acc[s + 1], alternating, as the scalar kernel does.
  const auto sum_list = [&](std::size_t from, std::size_t to, int s) QUAROT_TARGET_AVX2 {
    std::size_t t = from;
    // Four terms per 64-bit load: the table reads alone fill the core's load slots.
    for (; t + 4 <= to; t += 4) {
      std::uint64_t four;
      __builtin_memcpy(&four, term + t, sizeof four);
      add_pair(s, four & 0xffff, (four >> 16) & 0xffff);
      add_pair(s, (four >> 32) & 0xffff, four >> 48);
    }
    for (; t + 2 <= to; t += 2) add_pair(s, term[t], term[t + 1]);
    if (t < to)
      QUAROT_UNROLL
      for (int k = 0; k < NB; ++k) acc[s][k] = _mm256_add_ps(acc[s][k], entry(term[t], k));
  };
  sum_list(b, mid, 0);
  sum_list(mid, e, 2);
  QUAROT_UNROLL
  for (int k = 0; k < NB; ++k) {
    __m256 v = _mm256_sub_ps(_mm256_add_ps(acc[0][k], acc[1][k]), _mm256_add_ps(acc[2][k], acc[3][k]));
    if (scale != 1.0f) v = _mm256_mul_ps(v, _mm256_set1_ps(scale));
    _mm256_storeu_ps(y + 8 * k, v);
  }
}

/// sign_matmul on pairs of 8-column blocks (one 8-block when p = 8); `table` holds 32·m
/// floats (per chunk 8 entries x 2 blocks of 32 bytes: 22 KiB for m = 172, in L1),
/// 32-byte aligned. The AVX-512 backends use it too: the loads, not the adds, set the pace, and a
/// pair of 256-bit blocks per term reads what one 512-bit block would.
QUAROT_TARGET_AVX2 inline void sign_matmul_avx2(const sign_lut& h, const float* a, float* y, std::size_t p,
                                                float* table, float scale) noexcept {
  if (p % 8 != 0) return sign_matmul(cpu::scalar{}, h, a, y, p, table, scale);
  const auto add = [](__m256& o, const __m256& x, const __m256& z) QUAROT_TARGET_AVX2 { o = _mm256_add_ps(x, z); };
  const auto sub = [](__m256& o, const __m256& x, const __m256& z) QUAROT_TARGET_AVX2 { o = _mm256_sub_ps(x, z); };
  const std::size_t nb = p % 16 == 0 ? 2 : 1;
  for (std::size_t j = 0; j < p; j += 8 * nb) {
    for (std::size_t c = 0; c < h.chunks; ++c)
      for (std::size_t k = 0; k < nb; ++k) {
        const float* ac = a + 4 * c * p + j + 8 * k;
        __m256 t[8];
        chunk_sums(_mm256_loadu_ps(ac), _mm256_loadu_ps(ac + p), _mm256_loadu_ps(ac + 2 * p),
                   _mm256_loadu_ps(ac + 3 * p), t, add, sub);
        QUAROT_UNROLL
        for (int q = 0; q < 8; ++q) _mm256_store_ps(table + ((8 * c + q) * nb + k) * 8, t[q]);
      }
    const char* tb = reinterpret_cast<const char*>(table);
    for (std::size_t i = 0; i < h.m; ++i) {
      if (nb == 2) sign_row_avx2<2>(h, i, tb, y + i * p + j, scale);
      else sign_row_avx2<1>(h, i, tb, y + i * p + j, scale);
    }
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
