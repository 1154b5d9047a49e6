// quarot — what a transform, a quantizer and a GEMM policy must provide, in one place
// (CUTLASS keeps its dispatch policies together the same way). A user type that models
// a concept plugs into the library's pipeline.
#pragma once

#include <concepts>
#include <cstddef>

#include "matrix_view.hpp"
#include "thread_pool.hpp"

namespace quarot {

/// An orthogonal n x n matrix Q applied to the rows of a matrix in place: apply turns
/// each row x into Q·x (so X becomes X·Qᵀ), apply_transpose into Qᵀ·x.
template <class T>
concept orthogonal_transform = requires(const T& t, matrix_view<float> x, thread_pool* pool) {
  { t.size() } -> std::convertible_to<std::size_t>;
  t.apply(x);
  t.apply(x, pool);
  t.apply_transpose(x);
  t.apply_transpose(x, pool);
};

/// A quantizer maps real rows to a low-bit grid; fake_quantize writes the dequantized
/// values (quantize -> dequantize), which is what error measurements and the
/// simulated-quantization model passes use.
template <class Q>
concept quantizer = requires(const Q& q, matrix_view<const float> in, matrix_view<float> out) {
  { q.bits() } -> std::convertible_to<int>;
  q.fake_quantize(in, out);
};

/// A GEMM policy names its backend, element types and tile shape as members, and the
/// layers read them (CUTLASS's dispatch policies: `typename Policy::arch_tag`).
template <class P>
concept gemm_policy = requires {
  typename P::backend;
  typename P::weight_element;
  typename P::activation_element;
  typename P::accumulator;
  { P::weight_bits } -> std::convertible_to<int>;
  { P::activation_bits } -> std::convertible_to<int>;
  { P::tile_m } -> std::convertible_to<int>;
  { P::tile_n } -> std::convertible_to<int>;
  { P::tile_k } -> std::convertible_to<int>;
};

}  // namespace quarot
