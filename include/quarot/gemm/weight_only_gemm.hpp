// quarot — weight-only quantized GEMM (W4A16, W8A16): y = x·Wᵀ (+ bias) with bf16 (or,
// by policy, exact fp32) activations and the same packed int4/int8 weights as the integer GEMM
// (gemm/packing.hpp), dequantized in registers. The decode path: at M = 1 a linear layer
// is a matrix-vector product whose cost is reading the weights, and 4-bit weights are an
// eighth of fp32's bytes.
//
//   y[m, n] = Σ_g s[n, g] · (Σ_{k∈g} w_raw[n, k]·x[m, k] − z[n, g]·Σ_{k∈g} x[m, k]) + bias[n]
//
// Work is split over 64-column tiles of W on the thread pool (M = 1 uses every thread).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <type_traits>
#include <vector>

#include "../backend/cpu/weight_only_kernels.hpp"
#include "../core/backend.hpp"
#include "../core/concepts.hpp"
#include "../core/error.hpp"
#include "../core/matrix_view.hpp"
#include "../core/numeric.hpp"
#include "../core/thread_pool.hpp"
#include "packing.hpp"
#include "policies.hpp"

namespace quarot::gemm {

/// Weight-only policy: `WeightBits`-bit weights (4 or 8), activations of type
/// `Activation` — bfloat16 ("A16": fp32 inputs are rounded to bf16, as a W4A16 model's
/// activations are; with AVX512_BF16 the 4-bit kernel then runs on vdpbf16ps) or float
/// (exact fp32 activations, FMA kernel) — fp32 accumulation; tile 2 rows x 64 columns.
template <class Backend, int WeightBits, class Activation = bfloat16>
struct weight_only_policy {
  static_assert(WeightBits == 4 || WeightBits == 8, "weights are 4- or 8-bit");
  static_assert(std::is_same_v<Activation, bfloat16> || std::is_same_v<Activation, float>,
                "activations are bfloat16 or float");
  using backend = Backend;
  using weight_element = std::conditional_t<WeightBits == 4, std::uint8_t, std::int8_t>;
  using activation_element = Activation;
  using accumulator = float;
  static constexpr int weight_bits = WeightBits;
  static constexpr int activation_bits = std::is_same_v<Activation, float> ? 32 : 16;
  static constexpr int tile_m = 2;
  static constexpr int tile_n = 64;
  static constexpr int tile_k = 4;
};

template <class Backend = cpu::avx512_backend>
using w4a16_policy = weight_only_policy<Backend, 4, bfloat16>;
template <class Backend = cpu::avx512_backend>
using w8a16_policy = weight_only_policy<Backend, 8, bfloat16>;
/// fp32 activations kept exact (no bf16 rounding).
template <class Backend = cpu::avx512_backend>
using w4a32_policy = weight_only_policy<Backend, 4, float>;

static_assert(gemm_policy<w4a16_policy<>>);
static_assert(gemm_policy<w8a16_policy<cpu::scalar>>);

template <class Policy>
class weight_only_gemm {
 public:
  using policy = Policy;

  /// `use_bf16_dot = false` keeps the FMA kernel on AVX512_BF16 machines (same results).
  explicit weight_only_gemm(packed_weights w, bool use_bf16_dot = true) : w_(std::move(w)) {
    bf16_dot_ = use_bf16_dot && bf16_activations && w_.bits == 4 && !std::is_same_v<typename Policy::backend, cpu::scalar> &&
                cpu::has_avx512_bf16();
    quarot::detail::require(w_.bits == Policy::weight_bits, "weight-only GEMM policy expects ", Policy::weight_bits,
                            "-bit packed weights, got ", w_.bits, "-bit");
    if constexpr (!std::is_same_v<typename Policy::backend, cpu::scalar>) {
      if (!cpu::supports(cpu::isa::avx512))
        quarot::detail::fail(errc::unsupported, "weight-only GEMM policy needs AVX-512, this CPU has ",
                             cpu::to_string(cpu::detected_isa()), " (use the cpu::scalar policy)");
    }
  }

  [[nodiscard]] const packed_weights& weights() const noexcept { return w_; }
  /// Whether calls run on vdpbf16ps (4-bit weights, bf16 activations, AVX512_BF16).
  [[nodiscard]] bool uses_bf16_dot() const noexcept { return bf16_dot_; }

  /// y (M x N) = x·Wᵀ + bias for x (M x K) in fp32; y fp32 or bf16.
  template <output_element Out>
  void operator()(matrix_view<const float> x, matrix_view<Out> y, std::span<const float> bias = {},
                  thread_pool* pool = nullptr) const {
    run(x, y, bias, pool);
  }
  /// The same for bf16 activations (widened to fp32 exactly).
  template <output_element Out>
  void operator()(matrix_view<const bfloat16> x, matrix_view<Out> y, std::span<const float> bias = {},
                  thread_pool* pool = nullptr) const {
    run(x, y, bias, pool);
  }

 private:
  /// Row r of x in packed K order (act-order weights permute K) as fp32: the row itself
  /// when it already is one, else gathered into buf.
  template <class T>
  const float* packed_order_row(matrix_view<const T> x, std::size_t r, std::vector<float>& buf) const {
    if constexpr (std::is_same_v<T, float>) {
      if (w_.k_order.empty()) return x.row(r);
    }
    buf.resize(x.cols);
    for (std::size_t kk = 0; kk < x.cols; ++kk) buf[kk] = to_float(x(r, w_.k_order.empty() ? kk : w_.k_order[kk]));
    return buf.data();
  }

  template <class T, output_element Out>
  void run(matrix_view<const T> x, matrix_view<Out> y, std::span<const float> bias, thread_pool* pool) const {
    const std::size_t m = x.rows, k = x.cols;
    quarot::detail::require(k == w_.k, "weight-only GEMM: activations have K = ", k, " but the weights have K = ", w_.k);
    quarot::detail::require(y.rows == m && y.cols == w_.n, "weight-only GEMM: output is ", y.rows, "x", y.cols,
                            ", expected ", m, "x", w_.n);
    quarot::detail::require(bias.empty() || bias.size() == w_.n, "weight-only GEMM: bias has ", bias.size(),
                            " entries for N = ", w_.n);
    if (m == 0) return;
    // Activations zero-padded to k_padded (the padded weights are zero too) and their sums
    // per weight group, shared by every tile. With bf16 activations each value is rounded
    // to bf16 first (and the sums are of the rounded values); the bf16 kernel also wants
    // them as k-pairs {x0, x2}, {x1, x3}.
    const std::size_t ldx = w_.k_padded, quads = w_.quads();
    std::vector<float> xp(m * ldx), xsum(m * w_.groups), scratch;
    std::vector<std::uint32_t> pairs(bf16_dot_ ? m * quads * 2 : 0);
    for (std::size_t r = 0; r < m; ++r) {
      const float* row = packed_order_row(x, r, scratch);
      const std::size_t bad = quarot::detail::prepare_weight_only_row(
          typename Policy::backend{}, row, k, ldx, w_.group_size, bf16_activations, xp.data() + r * ldx,
          xsum.data() + r * w_.groups, bf16_dot_ ? pairs.data() + r * quads * 2 : nullptr);
      if (bad < k)
        quarot::detail::fail(errc::numerical, "weight-only GEMM: non-finite activation ", row[bad], " at row ",
                             r, ", column ", w_.k_order.empty() ? bad : w_.k_order[bad]);
    }
    const quarot::detail::weight_only_operands op{xp.data(),       bf16_dot_ ? pairs.data() : nullptr,
                                                  ldx,             xsum.data(),
                                                  w_.data.data(),  quads,
                                                  w_.groups == 1 ? quads : w_.group_size / 4,
                                                  w_.groups,       w_.n_padded,
                                                  w_.block_bytes(), w_.bits,
                                                  w_.scales.data(), w_.zeros.data()};
    const std::size_t tiles = (w_.n + 63) / 64;
    constexpr std::size_t mr = 8;  // rows per pass over a weight tile (kept in L1/L2 between passes)
    quarot::detail::parallel_for(pool, tiles, [&](std::size_t tb, std::size_t te) {
      std::vector<float> c(mr * 64);
      for (std::size_t t = tb; t < te; ++t) {
        const std::size_t n0 = t * 64, cols = std::min<std::size_t>(64, w_.n - n0);
        for (std::size_t m0 = 0; m0 < m; m0 += mr) {
          const std::size_t rows = std::min(mr, m - m0);
          quarot::detail::weight_only_tile(typename Policy::backend{}, op, m0, rows, n0, cols, c.data());
          for (std::size_t r = 0; r < rows; ++r)
            for (std::size_t j = 0; j < cols; ++j)
              y(m0 + r, n0 + j) = to_output<Out>(c[r * 64 + j] + (bias.empty() ? 0.0f : bias[n0 + j]));
        }
      }
    });
  }

  static constexpr bool bf16_activations = std::is_same_v<typename Policy::activation_element, bfloat16>;
  packed_weights w_;
  bool bf16_dot_ = false;
};

}  // namespace quarot::gemm
