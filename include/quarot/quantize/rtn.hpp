// quarot — round-to-nearest (RTN) quantization of matrices at 2..8 bits, every
// granularity (see params.hpp for the grids), with an optional MSE clip search.
// Runs on the backend chosen at construction (SIMD kernels bit-identical to the scalar
// reference) and splits rows over a thread pool when given one.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "../backend/cpu/quant_kernels.hpp"
#include "../core/backend.hpp"
#include "../core/error.hpp"
#include "../core/matrix_view.hpp"
#include "../core/numeric.hpp"
#include "../core/thread_pool.hpp"
#include "params.hpp"

namespace quarot {

/// Levels, scales and zero points of a quantized rows x cols matrix. Group g of row r has
/// scale scales[r * groups_per_row + g] (per_tensor: the single scales[0]). zeros is
/// empty for symmetric grids.
struct quantized_matrix {
  std::size_t rows = 0, cols = 0;
  std::size_t groups_per_row = 1;
  quant_params params;
  std::vector<std::int8_t> q;  ///< rows x cols levels; asymmetric levels (0..255) as uint8 bit patterns
  std::vector<float> scales;
  std::vector<float> zeros;
  /// Optional group of each column (GPTQ with act-order: groups follow the permuted column
  /// order); empty means groups are contiguous runs of cols / groups_per_row columns.
  std::vector<std::uint32_t> g_idx;

  /// The integer level of element (r, c), in [qmin, qmax].
  [[nodiscard]] int value(std::size_t r, std::size_t c) const noexcept {
    const int v = q[r * cols + c];
    return params.symmetric ? v : static_cast<int>(static_cast<std::uint8_t>(v));
  }
  /// Index into scales/zeros of element (r, c).
  [[nodiscard]] std::size_t group_of(std::size_t r, std::size_t c) const noexcept {
    if (params.gran == granularity::per_tensor) return 0;
    if (!g_idx.empty()) return r * groups_per_row + g_idx[c];
    return r * groups_per_row + c / (cols / groups_per_row);
  }
};

namespace detail {

/// Scale and zero for values in [lo, hi] on the grid of p (before any clip search).
inline grid rtn_grid(float lo, float hi, const quant_params& p) noexcept {
  grid g{1.0f, 0.0f, p.qmin(), p.qmax()};
  if (p.symmetric) {
    const float amax = std::max(std::fabs(lo), std::fabs(hi)) * p.clip_ratio;
    g.scale = amax / static_cast<float>(p.qmax());
  } else {
    lo = std::min(lo, 0.0f) * p.clip_ratio;
    hi = std::max(hi, 0.0f) * p.clip_ratio;
    g.scale = (hi - lo) / static_cast<float>(p.qmax());
  }
  if (p.scales == scale_type::fp16) g.scale = to_float(to_half(g.scale));
  if (!(g.scale > 0.0f) || !std::isfinite(g.scale)) g.scale = g.scale > 0.0f ? 65504.0f : 1.0f;
  if (!p.symmetric) g.zero = std::nearbyint(-(std::min(lo, 0.0f)) / g.scale);
  return g;
}

/// The clip search's candidates: how many, and candidate i of the range [lo, hi], the range
/// shrunk by 1 - i/grid (see clip_search).
inline int clip_candidates(const quant_params& p) noexcept {
  return static_cast<int>(p.search.max_shrink * static_cast<float>(p.search.grid));
}
inline grid clip_candidate(float lo, float hi, const quant_params& p, int i) noexcept {
  const float shrink = 1.0f - static_cast<float>(i) / static_cast<float>(p.search.grid);
  return rtn_grid(shrink * lo, shrink * hi, p);
}

/// The grid of one contiguous group, with the clip search when enabled: the candidate with
/// the least Σ|x - x̂|^norm (clip_error: the same score on every ISA), the first one on ties.
///
/// `hint` (optional, in/out) is the candidate to score first, typically the previous
/// group's choice: neighbouring rows of a layer choose alike, and once the best is known
/// the others are abandoned after a few elements, where in index order every improvement
/// on the way to the best is scored in full. The choice does not depend on the order: a
/// candidate ahead of the best may still tie it (and then wins), one behind must beat it.
template <class B>
grid group_grid(B tag, const float* x, std::size_t len, const quant_params& p, std::size_t row, std::size_t col,
                int* hint = nullptr) {
  const auto r = value_range(tag, x, len);
  if (!r.finite) {
    for (std::size_t i = 0; i < len; ++i)
      if (!std::isfinite(x[i])) fail(errc::numerical, "quantize: non-finite input ", x[i], " at row ", row, ", column ", col + i);
  }
  grid best = rtn_grid(r.lo, r.hi, p);
  if (!p.search.enabled) return best;
  const int steps = clip_candidates(p);
  if (steps < 1) return best;  // e.g. grid 1: no shrunk candidate, the range as it is
  double best_err = INFINITY;
  int best_i = -1;
  auto score = [&](int i) {
    const grid g = clip_candidate(r.lo, r.hi, p, i);
    // The error only grows along the row, so clip_error abandons a candidate once it
    // reaches the bound: same choice, most candidates stop early.
    const double bound = i < best_i ? std::nextafter(best_err, INFINITY) : best_err;
    const double err = clip_error(tag, x, len, g, p.search.norm, bound);
    if (err < best_err || (err == best_err && i < best_i)) {
      best_err = err;
      best_i = i;
      best = g;
    }
  };
  const int first = hint ? std::clamp(*hint, 0, steps - 1) : 0;
  score(first);
  for (int i = 0; i < steps; ++i)
    if (i != first) score(i);
  if (hint && best_i >= 0) *hint = best_i;
  return best;
}

}  // namespace detail

/// Round-to-nearest quantizer. Models quarot::quantizer.
class rtn_quantizer {
 public:
  explicit rtn_quantizer(quant_params p, cpu::isa isa = cpu::default_isa()) : p_(p), isa_(isa) {
    p_.validate(p.gran == granularity::per_group ? p.group_size : 1);
    if (!cpu::supports(isa)) detail::fail(errc::unsupported, "CPU ISA ", cpu::to_string(isa), " is not supported here");
  }

  [[nodiscard]] int bits() const noexcept { return p_.bits; }
  [[nodiscard]] const quant_params& params() const noexcept { return p_; }

  /// Levels, scales and zero points of x.
  [[nodiscard]] quantized_matrix quantize(matrix_view<const float> x, thread_pool* pool = nullptr) const {
    return cpu::dispatch(isa_, [&](auto tag) { return quantize(tag, x, pool); });
  }
  template <cpu_backend B>
  [[nodiscard]] quantized_matrix quantize(B tag, matrix_view<const float> x, thread_pool* pool = nullptr) const {
    p_.validate(x.cols);
    quantized_matrix out;
    out.rows = x.rows;
    out.cols = x.cols;
    out.params = p_;
    out.groups_per_row = p_.gran == granularity::per_tensor || x.cols == 0 ? 1 : x.cols / p_.group_length(x.cols);
    out.q.resize(x.rows * x.cols);
    const std::size_t slots = p_.gran == granularity::per_tensor ? 1 : x.rows * out.groups_per_row;
    out.scales.resize(slots);
    if (!p_.symmetric) out.zeros.resize(slots);
    for_each_group(tag, x, pool, [&](std::size_t slot, std::size_t r, std::size_t c0, std::size_t len, const detail::grid& g) {
      if (p_.gran != granularity::per_tensor || r == 0) {  // per-tensor: one writer of the single scale
        out.scales[slot] = g.scale;
        if (!p_.symmetric) out.zeros[slot] = g.zero;
      }
      detail::quantize_levels(tag, x.row(r) + c0, len, g, out.q.data() + r * x.cols + c0);
    });
    return out;
  }

  /// out = s · (q - z) for every element.
  void dequantize(const quantized_matrix& qm, matrix_view<float> out) const {
    detail::require(out.rows == qm.rows && out.cols == qm.cols, "dequantize: output is ", out.rows, "x", out.cols,
                    " but the quantized matrix is ", qm.rows, "x", qm.cols);
    for (std::size_t r = 0; r < qm.rows; ++r)
      for (std::size_t c = 0; c < qm.cols; ++c) {
        const std::size_t g = qm.group_of(r, c);
        const float z = qm.params.symmetric ? 0.0f : qm.zeros[g];
        out(r, c) = qm.scales[g] * (static_cast<float>(qm.value(r, c)) - z);
      }
  }

  /// out = dequantize(quantize(in)); in and out may be the same matrix.
  void fake_quantize(matrix_view<const float> in, matrix_view<float> out, thread_pool* pool = nullptr) const {
    cpu::dispatch(isa_, [&](auto tag) { fake_quantize(tag, in, out, pool); });
  }
  template <cpu_backend B>
  void fake_quantize(B tag, matrix_view<const float> in, matrix_view<float> out, thread_pool* pool = nullptr) const {
    detail::require(out.rows == in.rows && out.cols == in.cols, "fake_quantize: output is ", out.rows, "x", out.cols,
                    " but the input is ", in.rows, "x", in.cols);
    p_.validate(in.cols);
    for_each_group(tag, in, pool, [&](std::size_t, std::size_t r, std::size_t c0, std::size_t len, const detail::grid& g) {
      detail::fake_quantize_run(tag, in.row(r) + c0, len, g, out.row(r) + c0);
    });
  }

 private:
  // Calls f(slot, row, first column, length, grid) for every group; each group's grid is
  // computed before any of its elements is written (in-place use is safe).
  template <class B, class F>
  void for_each_group(B tag, matrix_view<const float> x, thread_pool* pool, F&& f) const {
    if (x.empty()) return;
    if (p_.gran == granularity::per_tensor) {
      float lo = INFINITY, hi = -INFINITY;
      for (std::size_t r = 0; r < x.rows; ++r) {
        const auto rr = detail::value_range(tag, x.row(r), x.cols);
        if (!rr.finite) (void)detail::group_grid(tag, x.row(r), x.cols, p_, r, 0);  // throws naming the value
        lo = std::min(lo, rr.lo);
        hi = std::max(hi, rr.hi);
      }
      detail::grid g = detail::rtn_grid(lo, hi, p_);
      if (p_.search.enabled) {
        // The search over the whole tensor: the sum of the per-row errors for each shrink.
        double best_err = INFINITY;
        const int steps = detail::clip_candidates(p_);
        for (int i = 0; i < steps; ++i) {
          const auto cand = detail::clip_candidate(lo, hi, p_, i);
          double err = 0;
          for (std::size_t r = 0; r < x.rows && err < best_err; ++r)  // abandoned once it cannot win
            err += detail::clip_error(tag, x.row(r), x.cols, cand, p_.search.norm, INFINITY);
          if (err < best_err) {
            best_err = err;
            g = cand;
          }
        }
      }
      detail::parallel_for(pool, x.rows, [&](std::size_t b, std::size_t e) {
        for (std::size_t r = b; r < e; ++r) f(0, r, 0, x.cols, g);
      });
      return;
    }
    const std::size_t len = p_.group_length(x.cols), per_row = x.cols / len;
    detail::parallel_for(
        pool, x.rows,
        [&](std::size_t b, std::size_t e) {
          int hint = 0;  // the clip search starts from the previous group's choice (speed only)
          for (std::size_t r = b; r < e; ++r)
            for (std::size_t gi = 0; gi < per_row; ++gi) {
              const float* v = x.row(r) + gi * len;
              f(r * per_row + gi, r, gi * len, len, detail::group_grid(tag, v, len, p_, r, gi * len, &hint));
            }
        },
        std::max<std::size_t>(1, 16384 / x.cols));
  }

  quant_params p_;
  cpu::isa isa_;
};

}  // namespace quarot
