// quarot — weight-only quantized GEMM (W4A16, W8A16): y = x·Wᵀ (+ bias) with fp32 (or
// bf16) activations and the same packed int4/int8 weights as the integer GEMM
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

namespace quarot::gemm {

/// Weight-only policy: `WeightBits`-bit weights (4 or 8), fp32 activations and
/// accumulation; tile 2 rows x 64 columns, k in quads (the packed block).
template <class Backend, int WeightBits>
struct weight_only_policy {
  static_assert(WeightBits == 4 || WeightBits == 8, "weights are 4- or 8-bit");
  using backend = Backend;
  using weight_element = std::conditional_t<WeightBits == 4, std::uint8_t, std::int8_t>;
  using activation_element = float;
  using accumulator = float;
  static constexpr int weight_bits = WeightBits;
  static constexpr int activation_bits = 16;  // "A16": not quantized (fp32 or bf16 in)
  static constexpr int tile_m = 2;
  static constexpr int tile_n = 64;
  static constexpr int tile_k = 4;
};

template <class Backend = cpu::avx512_backend>
using w4a16_policy = weight_only_policy<Backend, 4>;
template <class Backend = cpu::avx512_backend>
using w8a16_policy = weight_only_policy<Backend, 8>;

static_assert(gemm_policy<w4a16_policy<>>);
static_assert(gemm_policy<w8a16_policy<cpu::scalar>>);

template <class Policy>
class weight_only_gemm {
 public:
  using policy = Policy;

  explicit weight_only_gemm(packed_weights w) : w_(std::move(w)) {
    quarot::detail::require(w_.bits == Policy::weight_bits, "weight-only GEMM policy expects ", Policy::weight_bits,
                            "-bit packed weights, got ", w_.bits, "-bit");
    if constexpr (!std::is_same_v<typename Policy::backend, cpu::scalar>) {
      if (!cpu::supports(cpu::isa::avx512))
        quarot::detail::fail(errc::unsupported, "weight-only GEMM policy needs AVX-512, this CPU has ",
                             cpu::to_string(cpu::detected_isa()), " (use the cpu::scalar policy)");
    }
  }

  [[nodiscard]] const packed_weights& weights() const noexcept { return w_; }

  /// y (M x N) = x·Wᵀ + bias for x (M x K) in fp32.
  void operator()(matrix_view<const float> x, matrix_view<float> y, std::span<const float> bias = {},
                  thread_pool* pool = nullptr) const {
    run(x.rows, x.cols, [&](std::size_t r, std::size_t k) { return x(r, k); }, y, bias, pool);
  }
  /// The same for bf16 activations (widened to fp32 exactly).
  void operator()(matrix_view<const bfloat16> x, matrix_view<float> y, std::span<const float> bias = {},
                  thread_pool* pool = nullptr) const {
    run(x.rows, x.cols, [&](std::size_t r, std::size_t k) { return to_float(x(r, k)); }, y, bias, pool);
  }

 private:
  template <class Get>
  void run(std::size_t m, std::size_t k, Get&& get, matrix_view<float> y, std::span<const float> bias,
           thread_pool* pool) const {
    quarot::detail::require(k == w_.k, "weight-only GEMM: activations have K = ", k, " but the weights have K = ", w_.k);
    quarot::detail::require(y.rows == m && y.cols == w_.n, "weight-only GEMM: output is ", y.rows, "x", y.cols,
                            ", expected ", m, "x", w_.n);
    quarot::detail::require(bias.empty() || bias.size() == w_.n, "weight-only GEMM: bias has ", bias.size(),
                            " entries for N = ", w_.n);
    if (m == 0) return;
    // Activations zero-padded to k_padded (the padded weights are zero too) and their sums
    // per weight group, shared by every tile.
    const std::size_t ldx = w_.k_padded;
    std::vector<float> xp(m * ldx, 0.0f), xsum(m * w_.groups, 0.0f);
    for (std::size_t r = 0; r < m; ++r)
      for (std::size_t kk = 0; kk < k; ++kk) {
        const float v = get(r, kk);
        quarot::detail::require(std::isfinite(v), "weight-only GEMM: non-finite activation ", v, " at row ", r,
                                ", column ", kk);
        xp[r * ldx + kk] = v;
        xsum[r * w_.groups + kk / w_.group_size] += v;
      }
    const quarot::detail::weight_only_operands op{xp.data(),       ldx,          xsum.data(),     w_.data.data(),
                                                  w_.quads(),      w_.groups == 1 ? w_.quads() : w_.group_size / 4,
                                                  w_.groups,       w_.n_padded,  w_.block_bytes(), w_.bits,
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
              y(m0 + r, n0 + j) = c[r * 64 + j] + (bias.empty() ? 0.0f : bias[n0 + j]);
        }
      }
    });
  }

  packed_weights w_;
};

}  // namespace quarot::gemm
