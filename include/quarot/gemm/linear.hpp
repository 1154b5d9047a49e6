// quarot — a rotated, quantized linear layer: y = x·Wᵀ + b where W is stored packed and
// quantized, and the activations go through an optional online rotation (QuaRot's
// Hadamard before down_proj, any size the transform planner supports) and per-token
// quantization on the way in.
//
// The front end is fused per block of rows: each thread rotates a few rows into a buffer
// that stays in its cache, quantizes them, and prepares the GEMM's activation operand from
// each row's levels while they are in L1, so rotated fp32 activations are never written to
// memory and the levels are not read back.
#pragma once

#include <algorithm>
#include <cstddef>
#include <functional>
#include <span>
#include <utility>
#include <vector>

#include "../core/concepts.hpp"
#include "../core/error.hpp"
#include "../core/matrix_view.hpp"
#include "../core/thread_pool.hpp"
#include "../quantize/activation.hpp"
#include "integer_gemm.hpp"

namespace quarot {

template <class Policy>
class linear {
 public:
  /// W packed with gemm::pack_weights (N x K); bias empty or N values.
  explicit linear(gemm::packed_weights w, std::vector<float> bias = {}, int activation_bits = Policy::activation_bits,
                  float clip_ratio = 1.0f)
      : gemm_(std::move(w)), bias_(std::move(bias)), bits_(activation_bits), clip_(clip_ratio) {
    detail::check_activation_params(bits_, clip_);
    detail::require(bits_ <= Policy::activation_bits, "linear: ", bits_, "-bit activations exceed the policy's ",
                    Policy::activation_bits);
    detail::require(bias_.empty() || bias_.size() == gemm_.weights().n, "linear: bias has ", bias_.size(),
                    " entries for ", gemm_.weights().n, " outputs");
  }

  [[nodiscard]] std::size_t in_features() const noexcept { return gemm_.weights().k; }
  [[nodiscard]] std::size_t out_features() const noexcept { return gemm_.weights().n; }

  /// Rotates the input online by q (x -> Q·x) before quantizing it; W must already hold
  /// the matching W·Qᵀ (fuse_input_rotation before quantizing the weights).
  template <class Q>
    requires orthogonal_transform<Q>
  linear& with_online_rotation(Q q) {
    detail::require(q.size() == in_features(), "linear: rotation of size ", q.size(), " for ", in_features(),
                    " input features");
    if constexpr (requires(const Q& t, matrix_view<const float> in, matrix_view<float> out) { t.apply(in, out); }) {
      // Hadamard transforms read the input rows once, straight into the work buffer.
      rotate_into_ = [q](matrix_view<const float> in, matrix_view<float> out) { q.apply(in, out); };
    } else {
      rotate_into_ = nullptr;
    }
    rotate_ = [q = std::move(q)](matrix_view<float> block) { q.apply(block); };
    return *this;
  }

  /// y (M x N) = quantize(rotate(x))·Wᵀ + b for x (M x K); y fp32 or bf16.
  template <gemm::output_element Out>
  void forward(matrix_view<const float> x, matrix_view<Out> y, thread_pool* pool = nullptr) const {
    detail::require(x.cols == in_features(), "linear: input has ", x.cols, " features, expected ", in_features());
    quantize_input(x, pool);
    gemm_.run(prepared_, bits_, y, bias_, pool);
  }

  /// The quantized activations of the last forward call (for inspection and tests).
  [[nodiscard]] const quantized_activations& last_activations() const noexcept { return qa_; }

 private:
  void quantize_input(matrix_view<const float> x, thread_pool* pool) const {
    detail::shape_activations(qa_, x.rows, x.cols, bits_);
    gemm::detail::shape_prepared(prepared_, x.rows, bits_, gemm_.weights());
    constexpr std::size_t block_rows = 8;
    const std::size_t blocks = (x.rows + block_rows - 1) / block_rows;
    cpu::dispatch(cpu::default_isa(), [&](auto tag) {
      detail::parallel_for(pool, blocks, [&](std::size_t b, std::size_t e) {
        std::vector<float> buf(rotate_ ? block_rows * x.cols : 0);
        std::vector<std::uint8_t> gathered;
        for (std::size_t blk = b; blk < e; ++blk) {
          const std::size_t r0 = blk * block_rows, rows = std::min(block_rows, x.rows - r0);
          if (rotate_into_) {
            rotate_into_(x.block_rows(r0, rows), matrix_view<float>(buf.data(), rows, x.cols, x.cols));
          } else if (rotate_) {
            for (std::size_t r = 0; r < rows; ++r) std::copy_n(x.row(r0 + r), x.cols, buf.data() + r * x.cols);
            rotate_(matrix_view<float>(buf.data(), rows, x.cols, x.cols));
          }
          for (std::size_t r = 0; r < rows; ++r) {
            const float* src = rotate_ ? buf.data() + r * x.cols : x.row(r0 + r);
            detail::quantize_token(tag, src, x.cols, bits_, clip_, qa_.data.data() + (r0 + r) * qa_.row_bytes,
                                   &qa_.scales[r0 + r], r0 + r);
            // The GEMM operand from the row's levels while they are in L1.
            gemm::detail::prepare_activation_row(tag, qa_, r0 + r, gemm_.weights(), prepared_, gathered);
          }
        }
      });
    });
  }

  gemm::integer_gemm<Policy> gemm_;
  std::vector<float> bias_;
  int bits_;
  float clip_;
  std::function<void(matrix_view<float>)> rotate_;
  std::function<void(matrix_view<const float>, matrix_view<float>)> rotate_into_;  // out of place, when Q has it
  mutable quantized_activations qa_;           // reused buffers (a layer is not re-entrant)
  mutable gemm::prepared_activations prepared_;
};

}  // namespace quarot
