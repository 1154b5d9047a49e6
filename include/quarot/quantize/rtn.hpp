// quarot — round-to-nearest (RTN) quantization of matrices at 2..8 bits, every
// granularity (see params.hpp for the grids).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "../core/error.hpp"
#include "../core/matrix_view.hpp"
#include "params.hpp"

namespace quarot {

/// Integers, scales and zero points of a quantized rows x cols matrix. Group g of row r
/// (per_group/per_channel/per_token) has scale scales[r * groups_per_row + g]; a
/// per-tensor matrix has one scale. zeros is empty for symmetric grids.
struct quantized_matrix {
  std::size_t rows = 0, cols = 0;
  std::size_t groups_per_row = 1;
  quant_params params;
  std::vector<std::int8_t> q;  ///< rows x cols levels; asymmetric levels (0..255) are stored as uint8 bit patterns
  std::vector<float> scales;
  std::vector<float> zeros;

  /// The integer level of element (r, c): in [qmin, qmax].
  [[nodiscard]] int value(std::size_t r, std::size_t c) const noexcept {
    const int v = q[r * cols + c];
    return params.symmetric ? v : static_cast<int>(static_cast<std::uint8_t>(v));
  }
  [[nodiscard]] std::size_t group_of(std::size_t r, std::size_t c) const noexcept {
    if (params.gran == granularity::per_tensor) return 0;
    return r * groups_per_row + c / (cols / groups_per_row);
  }
};

namespace detail {

struct grid_point {
  float scale, zero;  // zero = 0 for symmetric grids
};

/// Scale (and zero) for values with range [lo, hi].
inline grid_point rtn_grid(float lo, float hi, const quant_params& p) noexcept {
  if (p.symmetric) {
    const float amax = std::max(std::fabs(lo), std::fabs(hi)) * p.clip_ratio;
    const float s = amax / static_cast<float>(p.qmax());
    return {s > 0.0f ? s : 1.0f, 0.0f};
  }
  lo = std::min(lo, 0.0f) * p.clip_ratio;
  hi = std::max(hi, 0.0f) * p.clip_ratio;
  float s = (hi - lo) / static_cast<float>(p.qmax());
  if (!(s > 0.0f)) s = 1.0f;
  return {s, std::nearbyint(-lo / s)};
}

inline int rtn_level(float x, grid_point g, const quant_params& p) noexcept {
  const float v = std::nearbyint(x / g.scale) + g.zero;
  return static_cast<int>(std::clamp(v, static_cast<float>(p.qmin()), static_cast<float>(p.qmax())));
}

inline float rtn_dequant(int q, grid_point g) noexcept { return g.scale * (static_cast<float>(q) - g.zero); }

inline void check_finite(matrix_view<const float> x, const char* who) {
  for (std::size_t r = 0; r < x.rows; ++r)
    for (std::size_t c = 0; c < x.cols; ++c)
      if (!std::isfinite(x(r, c)))
        fail(errc::numerical, who, ": non-finite input ", x(r, c), " at row ", r, ", column ", c);
}

}  // namespace detail

/// Round-to-nearest quantizer. Models quarot::quantizer.
class rtn_quantizer {
 public:
  explicit rtn_quantizer(quant_params p) : p_(p) { p_.validate(p.gran == granularity::per_group ? p.group_size : 1); }

  [[nodiscard]] int bits() const noexcept { return p_.bits; }
  [[nodiscard]] const quant_params& params() const noexcept { return p_; }

  [[nodiscard]] quantized_matrix quantize(matrix_view<const float> x) const {
    p_.validate(x.cols);
    detail::check_finite(x, "rtn_quantizer");
    quantized_matrix out;
    out.rows = x.rows;
    out.cols = x.cols;
    out.params = p_;
    out.q.resize(x.rows * x.cols);
    for_each_group(x, [&](std::size_t slot, std::size_t r, std::size_t c0, std::size_t len, detail::grid_point g) {
      if (out.scales.size() <= slot) {
        out.scales.resize(slot + 1);
        if (!p_.symmetric) out.zeros.resize(slot + 1);
      }
      out.scales[slot] = g.scale;
      if (!p_.symmetric) out.zeros[slot] = g.zero;
      for (std::size_t c = c0; c < c0 + len; ++c) {
        const int v = detail::rtn_level(x(r, c), g, p_);
        out.q[r * x.cols + c] = static_cast<std::int8_t>(static_cast<std::uint8_t>(v));
      }
    });
    out.groups_per_row = p_.gran == granularity::per_tensor ? 1 : x.cols / p_.group_length(x.cols);
    return out;
  }

  void dequantize(const quantized_matrix& qm, matrix_view<float> out) const {
    detail::require(out.rows == qm.rows && out.cols == qm.cols, "dequantize: output is ", out.rows, "x", out.cols,
                    " but the quantized matrix is ", qm.rows, "x", qm.cols);
    for (std::size_t r = 0; r < qm.rows; ++r)
      for (std::size_t c = 0; c < qm.cols; ++c) {
        const std::size_t g = qm.group_of(r, c);
        out(r, c) = detail::rtn_dequant(qm.value(r, c), {qm.scales[g], qm.params.symmetric ? 0.0f : qm.zeros[g]});
      }
  }

  /// out = dequantize(quantize(in)); in and out may be the same matrix.
  void fake_quantize(matrix_view<const float> in, matrix_view<float> out) const {
    detail::require(out.rows == in.rows && out.cols == in.cols, "fake_quantize: output is ", out.rows, "x", out.cols,
                    " but the input is ", in.rows, "x", in.cols);
    p_.validate(in.cols);
    detail::check_finite(in, "rtn_quantizer");
    for_each_group(in, [&](std::size_t, std::size_t r, std::size_t c0, std::size_t len, detail::grid_point g) {
      for (std::size_t c = c0; c < c0 + len; ++c) out(r, c) = detail::rtn_dequant(detail::rtn_level(in(r, c), g, p_), g);
    });
  }

 private:
  // Calls f(slot, row, first column, length, grid) for every group, computing its grid
  // before any element of it is written (so in-place fake quantization is safe).
  template <class F>
  void for_each_group(matrix_view<const float> x, F&& f) const {
    if (x.empty()) return;
    if (p_.gran == granularity::per_tensor) {
      float lo = x(0, 0), hi = x(0, 0);
      for (std::size_t r = 0; r < x.rows; ++r)
        for (std::size_t c = 0; c < x.cols; ++c) {
          lo = std::min(lo, x(r, c));
          hi = std::max(hi, x(r, c));
        }
      const auto g = detail::rtn_grid(lo, hi, p_);
      for (std::size_t r = 0; r < x.rows; ++r) f(0, r, 0, x.cols, g);
      return;
    }
    const std::size_t len = p_.group_length(x.cols), per_row = x.cols / len;
    for (std::size_t r = 0; r < x.rows; ++r)
      for (std::size_t gi = 0; gi < per_row; ++gi) {
        const float* v = x.row(r) + gi * len;
        const auto [lo, hi] = std::minmax_element(v, v + len);
        f(r * per_row + gi, r, gi * len, len, detail::rtn_grid(*lo, *hi, p_));
      }
  }

  quant_params p_;
};

}  // namespace quarot
