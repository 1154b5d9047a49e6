// quarot — fusing a rotation into a linear layer's weights (QuaRot §4, "computational
// invariance"). A linear layer computes y = W·x with W stored row-major as
// out_features x in_features (PyTorch's layout).
//  - Its input is rotated (x' = Q·x, e.g. the residual stream after QuaRot's rotation):
//    W' = W·Qᵀ gives W'·x' = W·x. (fuse_input_rotation)
//  - Its output should come out rotated (y' = Q·y, a layer that writes the residual
//    stream): W' = Q·W, b' = Q·b. (fuse_output_rotation)
// Q is any quarot::orthogonal_transform; the fusion uses its fast apply, never a dense
// product (except for dense rotations, where that is what apply is).
#pragma once

#include <cstddef>
#include <span>
#include <vector>

#include "../core/concepts.hpp"
#include "../core/error.hpp"
#include "../core/matrix_view.hpp"
#include "../core/numeric.hpp"

namespace quarot {

/// W <- W·Qᵀ (every row w of W becomes Q·w). W is out x in, Q of size in.
template <class Q, storage_float T>
void fuse_input_rotation(matrix_view<T> w, const Q& q, thread_pool* pool = nullptr) {
  detail::require(w.cols == q.size(), "fuse_input_rotation: weight has ", w.cols, " input features but the rotation has size ",
                  q.size());
  q.apply(w, pool);
}

/// W <- Q·W and, when given, bias <- Q·bias. W is out x in, Q of size out.
template <class Q, storage_float T>
void fuse_output_rotation(matrix_view<T> w, const Q& q, std::span<T> bias = {}, thread_pool* pool = nullptr) {
  detail::require(w.rows == q.size(), "fuse_output_rotation: weight has ", w.rows,
                  " output features but the rotation has size ", q.size());
  detail::require(bias.empty() || bias.size() == w.rows, "fuse_output_rotation: bias has ", bias.size(),
                  " entries for ", w.rows, " outputs");
  // Q·W = (Wᵀ·Qᵀ)ᵀ: transpose, rotate the rows (the columns of W), transpose back.
  std::vector<T> wt(w.rows * w.cols);
  for (std::size_t i = 0; i < w.rows; ++i)
    for (std::size_t j = 0; j < w.cols; ++j) wt[j * w.rows + i] = w(i, j);
  q.apply(matrix_view<T>(wt.data(), w.cols, w.rows, w.rows), pool);
  for (std::size_t i = 0; i < w.rows; ++i)
    for (std::size_t j = 0; j < w.cols; ++j) w(i, j) = wt[j * w.rows + i];
  if (!bias.empty()) q.apply(matrix_view<T>(bias.data(), 1, bias.size(), bias.size()), pool);
}

}  // namespace quarot
