// quarot — per-token activation quantization in one pass (QuaRot's online activation
// quantizer): each row x gets a symmetric scale s = clip·max|x| / (2^(b-1) - 1) and
// levels round(x / s) clamped to [-2^(b-1), 2^(b-1) - 1]; 2..4-bit levels are written
// packed two per byte (plain int4 layout), 5..8-bit levels one per byte. The row is read
// from memory once (its range and its levels are computed while it is in cache).
//
// 16-bit activations (the integer kernels' W4A16 / W8A16) are int16 levels in
// [-32640, 32639] with s = clip·max|x| / 32639: 127 short of int16's range, so that every
// level L splits exactly into two int8 halves, L = 256·hi + lo with
// hi = (L + 128) >> 8 in [-127, 127] and lo in [-128, 127], which the int8 GEMM kernels
// multiply separately (gemm/integer_gemm.hpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "../backend/cpu/quant_kernels.hpp"
#include "../core/backend.hpp"
#include "../core/error.hpp"
#include "../core/int4.hpp"
#include "../core/matrix_view.hpp"
#include "../core/thread_pool.hpp"

namespace quarot {

/// Quantized activations: rows x cols levels and one scale per row (token).
struct quantized_activations {
  std::size_t rows = 0, cols = 0;
  int bits = 8;
  std::size_t row_bytes = 0;        ///< bytes per row in `data`
  std::vector<std::uint8_t> data;   ///< packed int4 (bits <= 4), int8 (5..8) or little-endian int16 (16) levels
  std::vector<float> scales;        ///< one per row

  [[nodiscard]] bool packed() const noexcept { return bits <= 4; }
  /// The signed level of element (r, c).
  [[nodiscard]] int value(std::size_t r, std::size_t c) const noexcept {
    if (bits == 16) return detail::int16_level_at(data.data() + r * row_bytes, c);
    return detail::level_at(data.data() + r * row_bytes, packed(), c);
  }
};

namespace detail {
/// One row: its scale into *scale, its levels (packed when bits <= 4) into dst.
template <class B>
void quantize_token(B tag, const float* row, std::size_t cols, int bits, float clip_ratio, std::uint8_t* dst,
                    float* scale, std::size_t row_index) {
  const int qmax = bits == 16 ? int16_split_max : (1 << (bits - 1)) - 1;
  const auto range = value_range(tag, row, cols);
  if (!range.finite)
    for (std::size_t c = 0; c < cols; ++c)
      if (!std::isfinite(row[c]))
        fail(errc::numerical, "quantize_activations: non-finite input ", row[c], " at row ", row_index, ", column ", c);
  float s = std::max(std::fabs(range.lo), std::fabs(range.hi)) * clip_ratio / static_cast<float>(qmax);
  if (!(s > 0.0f)) s = 1.0f;
  *scale = s;
  const grid g{s, 0.0f, -qmax - 1, qmax};
  if (bits <= 4) quantize_pack_int4(tag, row, cols, g, dst);
  else if (bits == 16) quantize_levels_int16(tag, row, cols, g, dst);
  else quantize_levels(tag, row, cols, g, reinterpret_cast<std::int8_t*>(dst));
}

inline void check_activation_params(int bits, float clip_ratio) {
  require((bits >= 2 && bits <= 8) || bits == 16, "activation bits ", bits, " are neither in [2, 8] nor 16");
  require(clip_ratio > 0.0f && clip_ratio <= 1.0f, "clip ratio ", clip_ratio, " outside (0, 1]");
}

/// Sizes `out` for rows x cols at `bits`.
inline void shape_activations(quantized_activations& out, std::size_t rows, std::size_t cols, int bits) {
  out.rows = rows;
  out.cols = cols;
  out.bits = bits;
  out.row_bytes = bits <= 4 ? int4_packed_size(cols) : bits == 16 ? 2 * cols : cols;
  out.data.resize(rows * out.row_bytes);
  out.scales.resize(rows);
}
}  // namespace detail

/// Quantizes every row of x per token, symmetric, `bits` in [2, 8] or 16, with the backend `tag`.
template <cpu_backend B>
void quantize_activations(B tag, matrix_view<const float> x, int bits, float clip_ratio, quantized_activations& out,
                          thread_pool* pool = nullptr) {
  detail::check_activation_params(bits, clip_ratio);
  detail::shape_activations(out, x.rows, x.cols, bits);
  detail::parallel_for(
      pool, x.rows,
      [&](std::size_t b, std::size_t e) {
        for (std::size_t r = b; r < e; ++r)
          detail::quantize_token(tag, x.row(r), x.cols, bits, clip_ratio, out.data.data() + r * out.row_bytes,
                                 &out.scales[r], r);
      },
      std::max<std::size_t>(1, 16384 / std::max<std::size_t>(1, x.cols)));
}

/// The same with the best backend of this machine.
inline void quantize_activations(matrix_view<const float> x, int bits, float clip_ratio, quantized_activations& out,
                                 thread_pool* pool = nullptr) {
  cpu::dispatch(cpu::default_isa(), [&](auto tag) { quantize_activations(tag, x, bits, clip_ratio, out, pool); });
}

}  // namespace quarot
