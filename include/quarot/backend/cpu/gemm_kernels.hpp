// quarot — integer GEMM micro-kernels (internal; use quarot/gemm.hpp).
//
// A tile of MR activation rows x (16·NV) weight columns over one block of K. Activations are
// u8 = q_a + 128 (K padded with 128, i.e. level 0), weights the packed raw bytes (see
// gemm/packing.hpp). Per weight group g the kernel accumulates Σ u8·w_raw in int32, then
// corrects it to the exact integer Σ q_a·(w_raw - z) = acc - 128·colsum - z·rowsum and
// folds it into the fp32 tile: c = fma(scale, float(acc), c). The scalar kernel performs
// the same integer and floating-point operations in the same order, so the two agree
// bit for bit.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

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

struct gemm_operands {
  const std::uint8_t* a;       // M x k_padded, u8 = level + 128
  std::size_t lda;
  const std::int32_t* rowsum;  // M x groups, Σ_k level over each group
  const std::uint8_t* w;       // packed weights
  std::size_t quads, group_quads, groups, n_padded, block_bytes;
  int bits;
  const float* scales;         // groups x n_padded
  const std::int32_t* zeros;   // groups x n_padded
  const std::int32_t* colsums; // groups x n_padded
  bool uniform_zero;           // every zero equals zero0 (symmetric weights): no per-column multiply
  std::int32_t zero0;
};

/// Which part of K a kernel call covers: quads [q_begin, q_end) of group g. Partial sums
/// live in `acc` (int32, rows x 64) between calls; the call that ends the group folds them
/// into the fp32 tile c.
struct k_block {
  std::size_t g, q_begin, q_end;
  bool first, last;
};

/// The raw weight byte of (column col, k) from the packed layout.
inline int packed_raw(const gemm_operands& op, std::size_t col, std::size_t k) noexcept {
  const std::size_t panel = col / 16, v = (col % 16) * 4 + k % 4;
  const std::uint8_t* blk = op.w + (((panel / 4) * op.quads + k / 4) * 4 + panel % 4) * op.block_bytes;
  if (op.bits == 8) return static_cast<std::int8_t>(blk[v]);
  const std::uint8_t b = blk[v % 32];
  return v < 32 ? (b & 0x0f) : (b >> 4);
}

/// Scalar kernel for rows [m0, m0 + rows) and columns [n0, n0 + cols) over one k_block.
inline void gemm_tile(cpu::scalar, const gemm_operands& op, std::size_t m0, std::size_t rows, std::size_t n0,
                      std::size_t cols, const k_block& kb, std::int32_t* acc, float* c, std::size_t ldc) noexcept {
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t j = 0; j < cols; ++j) {
      const std::size_t col = n0 + j;
      std::int32_t a = kb.first ? 0 : acc[r * ldc + j];
      for (std::size_t k = kb.q_begin * 4; k < kb.q_end * 4; ++k)
        a += static_cast<std::int32_t>(op.a[(m0 + r) * op.lda + k]) * packed_raw(op, col, k);
      if (!kb.last) {
        acc[r * ldc + j] = a;
        continue;
      }
      const std::size_t gi = kb.g * op.n_padded + col;
      a -= 128 * op.colsums[gi] + op.zeros[gi] * op.rowsum[(m0 + r) * op.groups + kb.g];
      c[r * ldc + j] = std::fma(op.scales[gi], static_cast<float>(a), c[r * ldc + j]);
    }
}

#if QUAROT_HAS_X86_SIMD

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

template <int MR, int NV, int Bits>
QUAROT_TARGET_AVX512VNNI void gemm_tile_vnni(const gemm_operands& op, std::size_t m0, std::size_t n0, const k_block& kb,
                                             std::int32_t* accm, float* c, std::size_t ldc) noexcept {
  // n0 is a multiple of 64: the tile's four blocks per k-quad are adjacent.
  __m512i acc[MR][NV];
  QUAROT_UNROLL
  for (int r = 0; r < MR; ++r)
    QUAROT_UNROLL
    for (int v = 0; v < NV; ++v)
      acc[r][v] = kb.first ? _mm512_setzero_si512() : _mm512_loadu_si512(accm + r * ldc + 16 * v);
  const std::uint8_t* wq = op.w + ((n0 / 64) * op.quads + kb.q_begin) * 4 * op.block_bytes;
  const std::uint8_t* arow = op.a + m0 * op.lda + kb.q_begin * 4;
  for (std::size_t q = kb.q_begin; q < kb.q_end; ++q, wq += 4 * op.block_bytes, arow += 4) {
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
  if (!kb.last) {
    QUAROT_UNROLL
    for (int r = 0; r < MR; ++r)
      QUAROT_UNROLL
      for (int v = 0; v < NV; ++v) _mm512_storeu_si512(accm + r * ldc + 16 * v, acc[r][v]);
    return;
  }
  // Fold the group: exact integer correction, then c = fma(scale, float(acc), c).
  QUAROT_UNROLL
  for (int v = 0; v < NV; ++v) {
    const std::size_t gi = kb.g * op.n_padded + n0 + 16 * v;
    const __m512i colsum128 = _mm512_slli_epi32(_mm512_loadu_si512(op.colsums + gi), 7);
    const __m512 scale = _mm512_loadu_ps(op.scales + gi);
    const __m512i zero = op.uniform_zero ? _mm512_setzero_si512() : _mm512_loadu_si512(op.zeros + gi);
    QUAROT_UNROLL
    for (int r = 0; r < MR; ++r) {
      const std::int32_t rs = op.rowsum[(m0 + r) * op.groups + kb.g];
      const __m512i corr = op.uniform_zero ? _mm512_add_epi32(colsum128, _mm512_set1_epi32(op.zero0 * rs))
                                           : _mm512_add_epi32(colsum128, _mm512_mullo_epi32(zero, _mm512_set1_epi32(rs)));
      const __m512 accf = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc[r][v], corr));
      float* cp = c + r * ldc + 16 * v;
      _mm512_storeu_ps(cp, _mm512_fmadd_ps(scale, accf, _mm512_loadu_ps(cp)));
    }
  }
}

/// VNNI kernel entry: dispatches the tile shape (rows 1..6, 16-column vectors 1..4). Six
/// rows x 64 columns use 24 of the 32 zmm registers for accumulators and read each
/// weight block once for six rows (weights come from L2; rows are what amortizes them).
template <int Bits>
inline void gemm_tile_vnni_dispatch(const gemm_operands& op, std::size_t m0, std::size_t rows, std::size_t n0,
                                    std::size_t vecs, const k_block& kb, std::int32_t* acc, float* c,
                                    std::size_t ldc) noexcept {
#define QUAROT_GEMM_CASE(MR, NV) \
  case (MR - 1) * 4 + (NV - 1): return gemm_tile_vnni<MR, NV, Bits>(op, m0, n0, kb, acc, c, ldc);
  switch ((rows - 1) * 4 + (vecs - 1)) {
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

/// AVX-512 VNNI backend: the whole tile (cols a multiple of 16 within the padded N).
inline void gemm_tile(cpu::avx512vnni_backend, const gemm_operands& op, std::size_t m0, std::size_t rows,
                      std::size_t n0, std::size_t cols, const k_block& kb, std::int32_t* acc, float* c,
                      std::size_t ldc) noexcept {
  const std::size_t vecs = (cols + 15) / 16;
  if (op.bits == 8) gemm_tile_vnni_dispatch<8>(op, m0, rows, n0, vecs, kb, acc, c, ldc);
  else gemm_tile_vnni_dispatch<4>(op, m0, rows, n0, vecs, kb, acc, c, ldc);
}

#endif  // QUAROT_HAS_X86_SIMD

}  // namespace quarot::detail

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
