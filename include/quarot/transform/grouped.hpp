// quarot — grouped (block-diagonal) rotations: Q = diag(B, B, ..., B) with one block
// transform B of size g repeated n/g times. GSR (Grouped Sequency-arranged Rotation)
// uses B = the sequency-ordered Walsh matrix of size g: like a group-wise quantizer, it
// keeps the mixing inside each quantization group, and the sequency order puts
// low-frequency rows first.
#pragma once

#include <cstddef>
#include <utility>

#include "../core/concepts.hpp"
#include "../core/error.hpp"
#include "../core/matrix_view.hpp"
#include "../core/numeric.hpp"
#include "walsh_hadamard.hpp"

namespace quarot {

template <class Block>
class block_diagonal {
 public:
  block_diagonal(std::size_t n, Block block) : n_(n), block_(std::move(block)) {
    const std::size_t g = block_.size();
    detail::require(g > 0 && n > 0 && n % g == 0, "block_diagonal: size ", n, " is not a multiple of the block size ",
                    g);
  }

  [[nodiscard]] std::size_t size() const noexcept { return n_; }
  [[nodiscard]] std::size_t block_size() const noexcept { return block_.size(); }
  [[nodiscard]] const Block& block() const noexcept { return block_; }

  template <storage_float T>
  void apply(matrix_view<T> x, thread_pool* pool = nullptr) const {
    for_blocks(x, [&](matrix_view<T> v) { block_.apply(v, pool); });
  }
  template <storage_float T>
  void apply_transpose(matrix_view<T> x, thread_pool* pool = nullptr) const {
    for_blocks(x, [&](matrix_view<T> v) { block_.apply_transpose(v, pool); });
  }

 private:
  // A row of n = (n/g)·g elements is n/g consecutive rows of g: when the rows are
  // contiguous the whole matrix is one (rows·n/g) x g matrix.
  template <class T, class F>
  void for_blocks(matrix_view<T> x, F&& f) const {
    if (x.empty()) return;
    detail::require(x.cols == n_, "block_diagonal of size ", n_, " applied to rows of length ", x.cols);
    const std::size_t g = block_.size(), per_row = n_ / g;
    if (x.contiguous()) {
      f(matrix_view<T>(x.data, x.rows * per_row, g, g));
    } else {
      for (std::size_t r = 0; r < x.rows; ++r) f(matrix_view<T>(x.row(r), per_row, g, g));
    }
  }

  std::size_t n_;
  Block block_;
};

/// GSR: block-diagonal normalized sequency-ordered Walsh-Hadamard blocks of size
/// `group` (a power of two dividing n, typically the quantization group size).
inline block_diagonal<walsh_hadamard_transform> grouped_sequency_rotation(std::size_t n, std::size_t group,
                                                                          cpu::isa isa = cpu::default_isa()) {
  return {n, walsh_hadamard_transform(group, {hadamard_order::sequency, true}, isa)};
}

}  // namespace quarot
