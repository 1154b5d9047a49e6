// quarot — the rotated, quantized linear layer on the CUDA backend: quarot::linear of an
// integer_policy<cuda::device, W, A>, the CPU layer's interface on device memory. A forward
// call is two kernels: the online rotation fused with per-token quantization
// (cuda::rotate_quantize; quantization alone without a rotation), then the tensor-core GEMM
// with the bias in its epilogue. The outputs equal the CPU layer's
// (linear<integer_policy<cpu::scalar, W, A>>) bit for bit, for rotations of every size.
#pragma once

#include <cstddef>
#include <memory>
#include <utility>
#include <vector>

#include "../../core/matrix_view.hpp"
#include "../../gemm/linear.hpp"
#include "../../transform/kronecker.hpp"
#include "common.cuh"
#include "fwht.cuh"
#include "gemm.cuh"
#include "quantize.cuh"

namespace quarot {

template <int WeightBits, int ActivationBits>
class linear<gemm::integer_policy<cuda::device, WeightBits, ActivationBits>> {
 public:
  using policy = gemm::integer_policy<cuda::device, WeightBits, ActivationBits>;

  /// W packed with gemm::pack_weights (N x K), uploaded; bias empty or N values.
  explicit linear(const gemm::packed_weights& w, std::vector<float> bias = {},
                  int activation_bits = ActivationBits, float clip_ratio = 1.0f,
                  cuda::mma_path path = cuda::mma_path::automatic)
      : gemm_(w, path), bits_(activation_bits), clip_(clip_ratio) {
    cuda::detail::check_quantize_args(w.k, bits_, clip_);
    quarot::detail::require(bits_ <= ActivationBits && (bits_ <= 4) == (ActivationBits <= 4), "linear: ", bits_,
                            "-bit activations do not fit the policy's ", ActivationBits, "-bit storage");
    quarot::detail::require(bias.empty() || bias.size() == w.n, "linear: bias has ", bias.size(), " entries for ",
                            w.n, " outputs");
    if (!bias.empty()) {
      bias_ = cuda::device_buffer<float>(bias.size());
      bias_.upload(bias.data(), bias.size());
      QUAROT_CUDA_CHECK(cudaStreamSynchronize(nullptr));  // the host vector dies here
    }
  }

  [[nodiscard]] std::size_t in_features() const noexcept { return gemm_.k(); }
  [[nodiscard]] std::size_t out_features() const noexcept { return gemm_.n(); }

  /// Rotates the input online by q (x -> Q·x) before quantizing it, with q's signs copied
  /// to the device; W must already hold the matching W·Qᵀ.
  linear& with_online_rotation(const randomized_hadamard& q) {
    check_rotation_size(q.size());
    rotation_ = std::make_unique<cuda::detail::device_hadamard>(q.size(), q.signs().data());
    return *this;
  }
  linear& with_online_rotation(const hadamard_transform& q) {
    check_rotation_size(q.size());
    rotation_ = std::make_unique<cuda::detail::device_hadamard>(q.size(), nullptr);
    return *this;
  }

  /// y (M x N) = quantize(rotate(x))·Wᵀ + b, x (M x K, fp32, fp16 or bf16) and y (fp32 or
  /// bf16) in device memory, on `stream`, with the device that built the layer current.
  /// The quantized activations go through one buffer of the layer (last_activations()),
  /// allocated at the largest M seen and then reused, so forward calls on one layer must
  /// be ordered (one stream, or synchronized between streams); for concurrent streams,
  /// pass each its own workspace (the overload below).
  template <storage_float T, gemm::output_element Out>
  void forward(matrix_view<const T> x, matrix_view<Out> y, cudaStream_t stream = nullptr) const {
    forward(x, y, qa_, stream);
  }

  /// The same with the quantized activations in `workspace` (grown as needed, on the
  /// layer's device) instead of the layer's buffer: nothing else of the layer is written
  /// during a call, so calls on several streams at once, each with its own workspace, do
  /// not race — one set of weights serves them all. A workspace must not be shared
  /// between calls in flight on different streams.
  template <storage_float T, gemm::output_element Out>
  void forward(matrix_view<const T> x, matrix_view<Out> y, cuda::device_activations& workspace,
               cudaStream_t stream = nullptr) const {
    quarot::detail::require(x.cols == in_features(), "linear: input has ", x.cols, " features, expected ",
                            in_features());
    cuda::detail::require_current_device(gemm_.weights().data.device(), "linear: the layer's weights");
    if (rotation_) cuda::rotate_quantize(cuda::device{}, *rotation_, x, bits_, clip_, workspace, stream);
    else cuda::quantize_activations(cuda::device{}, x, bits_, clip_, workspace, stream);
    gemm_(workspace, bias_.empty() ? nullptr : bias_.data(), y, stream);
  }

  /// The same for a view of mutable input rows (a device_buffer's view()).
  template <storage_float T, gemm::output_element Out>
  void forward(matrix_view<T> x, matrix_view<Out> y, cudaStream_t stream = nullptr) const {
    forward(matrix_view<const T>(x), y, qa_, stream);
  }
  template <storage_float T, gemm::output_element Out>
  void forward(matrix_view<T> x, matrix_view<Out> y, cuda::device_activations& workspace,
               cudaStream_t stream = nullptr) const {
    forward(matrix_view<const T>(x), y, workspace, stream);
  }

  /// The quantized activations of the last forward call (device memory; require_finite()
  /// reports a non-finite input row).
  [[nodiscard]] const cuda::device_activations& last_activations() const noexcept { return qa_; }

 private:
  void check_rotation_size(std::size_t n) const {
    quarot::detail::require(n == in_features(), "linear: rotation of size ", n, " for ", in_features(),
                            " input features");
  }

  gemm::integer_gemm<policy> gemm_;
  cuda::device_buffer<float> bias_;
  int bits_;
  float clip_;
  std::unique_ptr<cuda::detail::device_hadamard> rotation_;
  mutable cuda::device_activations qa_;
};

}  // namespace quarot
