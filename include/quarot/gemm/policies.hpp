// quarot — GEMM policies (CUTLASS 3 style: small types that name the backend, the element
// types and bit widths, and the tile shape; kernels and layers read them).
//
// y = x·Wᵀ with x (M x K) quantized per token (symmetric, `activation_bits`) and W (N x K)
// quantized per output channel or per group along K (`weight_bits`, symmetric or with
// zero points). Integer products accumulate in int32 per weight group; the epilogue
// applies the weight scale per group, the activation scale per row, and the bias.
#pragma once

#include <cstdint>

#include <type_traits>

#include "../core/backend.hpp"
#include "../core/concepts.hpp"
#include "../core/numeric.hpp"

namespace quarot::gemm {

/// Integer GEMM policy. Weights of `WeightBits` (4 or 8) bits, activations of
/// `ActivationBits` bits: 2..8 held as int8 levels, or 16 (int16 levels, each split into
/// two int8 halves that the same kernels multiply: the integer W4A16 / W8A16); tile_m x
/// tile_n output tile (in kernel rows), tile_k = 4 (one vpdpbusd step).
template <class Backend, int WeightBits, int ActivationBits>
struct integer_policy {
  static_assert(WeightBits == 4 || WeightBits == 8, "weights are 4- or 8-bit");
  static_assert((ActivationBits >= 2 && ActivationBits <= 8) || ActivationBits == 16, "activations are 2..8- or 16-bit");
  using backend = Backend;
  using weight_element = std::conditional_t<WeightBits == 4, std::uint8_t, std::int8_t>;  // 4-bit: two per byte
  using activation_element = std::conditional_t<ActivationBits == 16, std::int16_t, std::int8_t>;
  using accumulator = std::int32_t;
  static constexpr int weight_bits = WeightBits;
  static constexpr int activation_bits = ActivationBits;
  static constexpr int tile_m = 6;
  static constexpr int tile_n = 64;
  static constexpr int tile_k = 4;
};

template <class Backend = cpu::avx512vnni_backend>
using w8a8_policy = integer_policy<Backend, 8, 8>;
template <class Backend = cpu::avx512vnni_backend>
using w4a8_policy = integer_policy<Backend, 4, 8>;
template <class Backend = cpu::avx512vnni_backend>
using w4a4_policy = integer_policy<Backend, 4, 4>;
/// Integer W4A16 / W8A16: per-token int16 activations (levels within ±32639: rounding error at most
/// 2^-16 of the row's largest magnitude) on the int8 kernels, two kernel rows per token. The
/// fast decode path: it streams the weights at the W4A8 kernel's rate (docs/PERFORMANCE.md).
/// weight_only_gemm (w4a16_policy) keeps bf16 / fp32 activations instead.
template <class Backend = cpu::avx512vnni_backend>
using w4a16i_policy = integer_policy<Backend, 4, 16>;
template <class Backend = cpu::avx512vnni_backend>
using w8a16i_policy = integer_policy<Backend, 8, 16>;

/// Output element types of the GEMM epilogues: fp32, or bf16 (rounded to nearest even
/// from the fp32 result).
template <class T>
concept output_element = std::is_same_v<T, float> || std::is_same_v<T, bfloat16>;

/// An fp32 epilogue result as the output element type.
template <output_element Out>
inline Out to_output(float v) noexcept {
  if constexpr (std::is_same_v<Out, float>) return v;
  else return to_bfloat16(v);
}

static_assert(gemm_policy<w8a8_policy<>>);
static_assert(gemm_policy<w4a4_policy<cpu::scalar>>);

}  // namespace quarot::gemm
