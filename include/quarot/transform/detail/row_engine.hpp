// quarot — the per-row engine shared by every Hadamard-type transform (internal).
//
// One row x of length n = m·p (p = 2^k) goes through
//   t = x ⊙ pre_signs            (randomized Hadamard: the diagonal D)
//   t = t permuted by in_perm    (transpose of the sequency reordering)
//   t = (H_m ⊗ H_p) t            (FWHT of each of the m contiguous blocks of length p,
//                                 then the dense ±1 H_m across blocks)
//   t = t permuted by out_perm   (sequency order)
//   x = scale · t ⊙ post_signs   (normalization; Dᵀ of the transposed randomized transform)
// stored back in the row's own type. Everything is computed in fp32.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "../../backend/cpu/fwht_kernels.hpp"
#include "../../backend/cpu/row_kernels.hpp"
#include "../../core/backend.hpp"
#include "../../core/matrix_view.hpp"
#include "../../core/numeric.hpp"
#include "../../core/thread_pool.hpp"

#ifndef QUAROT_TRANSFORM_INTERNAL
#error "quarot/transform/detail/row_engine.hpp is internal: include a quarot/transform/ header"
#endif

namespace quarot::detail {

struct row_plan {
  std::size_t n = 0, m = 1, p = 1;
  unsigned log2p = 0;
  const sign_lut* h = nullptr;  // H_m's lookup plan (of Hᵀ for apply_transpose); null when m == 1
  const float* pre_signs = nullptr;
  const float* post_signs = nullptr;
  const std::uint32_t* in_perm = nullptr;   // t[in_perm[k]] = x[k]
  const std::uint32_t* out_perm = nullptr;  // y[k] = t[out_perm[k]]
  float scale = 1.0f;
};

/// A per-thread work buffer (slot 0..3) of at least n floats, 64-byte aligned.
inline float* scratch(int slot, std::size_t n) {
  thread_local std::vector<float> buffers[4];
  auto& b = buffers[slot];
  if (b.size() < n + 16) b.resize(n + 16);
  const auto addr = reinterpret_cast<std::uintptr_t>(b.data());
  return b.data() + ((64 - addr % 64) % 64) / sizeof(float);
}

/// Whether the plan reads its input once, at the start (no reordering, no signs after
/// the ±1 product): then a row goes from src to an fp32 dst with no work buffer.
inline bool reads_input_once(const row_plan& pl) noexcept {
  return pl.in_perm == nullptr && pl.out_perm == nullptr && (pl.m == 1 || pl.post_signs == nullptr);
}

/// The transform of the fp32 row src written to dst (src unchanged; dst may be src): the
/// same operations and bits as transforming a copy in place. When the plan reads its input
/// once, each block's first FWHT pass reads src (random signs included: fwht_row's v·s is
/// load_row's) and the ±1 product writes its scaled result in place (the scale multiply is
/// store_row's): no copy, sign, product-output or scale pass of their own.
template <class B>
void transform_row_to(B tag, const row_plan& pl, const float* src, float* dst);

template <class B, class T>
void transform_row(B tag, const row_plan& pl, T* row) {
  const std::size_t n = pl.n;
  constexpr bool is_f32 = std::is_same_v<T, float>;
  if constexpr (is_f32) {
    if (reads_input_once(pl)) return transform_row_to(tag, pl, row, row);
  }
  if (pl.m == 1 && pl.in_perm == nullptr && pl.out_perm == nullptr) {
    // Plain (randomized) Walsh-Hadamard of a 16-bit row: one fused kernel reads the row in
    // its storage type, transforms, scales and writes it back.
    fwht_row(tag, row, row, scratch(0, n), pl.log2p, pl.scale, pl.pre_signs, pl.post_signs);
    return;
  }
  // fp32 rows with no input reordering are transformed in place.
  const bool in_place = is_f32 && pl.in_perm == nullptr;
  float* buf = in_place ? reinterpret_cast<float*>(row) : scratch(0, n);
  if (pl.in_perm) {
    float* tmp = scratch(2, n);
    load_row(tag, row, tmp, n, pl.pre_signs);
    for (std::size_t k = 0; k < n; ++k) buf[pl.in_perm[k]] = tmp[k];
  } else if (!in_place || pl.pre_signs) {
    load_row(tag, row, buf, n, pl.pre_signs);
  }
  float* result = buf;
  if (pl.m == 1) {
    fwht_f32(tag, buf, pl.log2p, 1.0f);
  } else {
    for (std::size_t i = 0; i < pl.m; ++i) fwht_f32(tag, buf + i * pl.p, pl.log2p, 1.0f);
    result = scratch(1, n);
    sign_matmul(tag, *pl.h, buf, result, pl.p, scratch(3, 32 * pl.m));
  }
  if (pl.out_perm) {
    float* tmp = scratch(2, n);
    for (std::size_t k = 0; k < n; ++k) tmp[k] = result[pl.out_perm[k]];
    result = tmp;
  }
  store_row(tag, result, row, n, pl.scale, pl.post_signs);
}

template <class B>
void transform_row_to(B tag, const row_plan& pl, const float* src, float* dst) {
  if (!reads_input_once(pl)) {
    if (src != dst) std::copy_n(src, pl.n, dst);
    transform_row(tag, pl, dst);
    return;
  }
  if (pl.m == 1) {
    fwht_row(tag, src, dst, dst, pl.log2p, pl.scale, pl.pre_signs, pl.post_signs);
    return;
  }
  for (std::size_t i = 0; i < pl.m; ++i)
    fwht_row(tag, src + i * pl.p, dst + i * pl.p, dst + i * pl.p, pl.log2p, 1.0f,
             pl.pre_signs ? pl.pre_signs + i * pl.p : nullptr, nullptr);
  sign_matmul(tag, *pl.h, dst, dst, pl.p, scratch(3, 32 * pl.m), pl.scale);
}

inline void prefetch_l2(const void* p, std::size_t bytes) noexcept {
#if defined(__GNUC__) || defined(__clang__)
  const char* c = static_cast<const char*>(p);
  for (std::size_t off = 0; off < bytes; off += 64) __builtin_prefetch(c + off, 1, 2);
#else
  (void)p;
  (void)bytes;
#endif
}

/// Runs the plan on every row of x, split over the pool's threads.
template <class B, class T>
void transform_rows(B tag, const row_plan& pl, matrix_view<T> x, thread_pool* pool) {
  if (x.empty()) return;
  require(x.cols == pl.n, "transform of size ", pl.n, " applied to rows of length ", x.cols);
  require(x.data != nullptr, "null matrix data");
  const std::size_t grain = std::max<std::size_t>(1, 8192 / pl.n);
  parallel_for(
      pool, x.rows,
      [&](std::size_t begin, std::size_t end) {
        for (std::size_t r = begin; r < end; ++r) {
          // Rows with a dense factor are compute-bound: ask for the next row (into L2)
          // while this one is being transformed, so its DRAM latency overlaps the work.
          if (pl.m > 1 && r + 1 < end) prefetch_l2(x.row(r + 1), pl.n * sizeof(T));
          transform_row(tag, pl, x.row(r));
        }
      },
      grain);
}

/// The same, with the backend chosen at run time.
template <class T>
void transform_rows(cpu::isa isa, const row_plan& pl, matrix_view<T> x, thread_pool* pool) {
  cpu::dispatch(isa, [&](auto tag) { transform_rows(tag, pl, x, pool); });
}

/// out = Q·in row by row for fp32 rows (in unchanged), serially (the callers run it on
/// blocks of rows that each thread owns).
inline void transform_rows_to(cpu::isa isa, const row_plan& pl, matrix_view<const float> in, matrix_view<float> out) {
  require(in.cols == pl.n && out.cols == pl.n, "transform of size ", pl.n, " applied to rows of length ", in.cols,
          " -> ", out.cols);
  require(in.rows == out.rows, "transform: ", in.rows, " input rows but ", out.rows, " output rows");
  cpu::dispatch(isa, [&](auto tag) {
    for (std::size_t r = 0; r < in.rows; ++r) transform_row_to(tag, pl, in.row(r), out.row(r));
  });
}

inline unsigned log2_exact(std::size_t n) noexcept {
  unsigned k = 0;
  while ((std::size_t{1} << k) < n) ++k;
  return k;
}

inline bool is_power_of_two(std::size_t n) noexcept { return n != 0 && (n & (n - 1)) == 0; }

inline float inv_sqrt(std::size_t n) noexcept { return static_cast<float>(1.0 / std::sqrt(static_cast<double>(n))); }

}  // namespace quarot::detail
