// quarot — a light row-major matrix view: pointer, rows, cols and a row stride (in
// elements). Built from a span, it checks that every row fits, so a short buffer is an
// error naming the sizes instead of an out-of-bounds write.
#pragma once

#include <cstddef>
#include <span>
#include <type_traits>
#include <vector>

#include "error.hpp"

namespace quarot {

template <class T>
struct matrix_view {
  T* data = nullptr;
  std::size_t rows = 0;
  std::size_t cols = 0;
  std::size_t stride = 0;  ///< elements between the starts of consecutive rows (>= cols)

  constexpr matrix_view() = default;
  constexpr matrix_view(T* d, std::size_t r, std::size_t c, std::size_t s) : data(d), rows(r), cols(c), stride(s) {}

  /// A const view of a mutable one.
  template <class U>
    requires(std::is_same_v<const U, T> && !std::is_same_v<U, T>)
  constexpr matrix_view(const matrix_view<U>& o) : data(o.data), rows(o.rows), cols(o.cols), stride(o.stride) {}

  [[nodiscard]] constexpr T* row(std::size_t i) const noexcept { return data + i * stride; }
  [[nodiscard]] constexpr std::span<T> row_span(std::size_t i) const noexcept { return {row(i), cols}; }
  [[nodiscard]] constexpr T& operator()(std::size_t i, std::size_t j) const noexcept { return data[i * stride + j]; }
  [[nodiscard]] constexpr bool empty() const noexcept { return rows == 0 || cols == 0; }
  [[nodiscard]] constexpr bool contiguous() const noexcept { return stride == cols || rows <= 1; }
  /// Rows [first, first + count).
  [[nodiscard]] constexpr matrix_view block_rows(std::size_t first, std::size_t count) const noexcept {
    return {data + first * stride, count, cols, stride};
  }
};

/// Views `buffer` as rows x cols with the given stride (default: cols). Throws when the
/// stride is smaller than cols or the buffer is too short for the last row.
template <class T>
matrix_view<T> make_matrix_view(std::span<T> buffer, std::size_t rows, std::size_t cols, std::size_t stride = 0) {
  if (stride == 0) stride = cols;
  detail::require(stride >= cols, "row stride ", stride, " is smaller than the row length ", cols);
  if (rows == 0 || cols == 0) return {buffer.data(), rows, cols, stride};
  detail::require(buffer.data() != nullptr, "null buffer for a ", rows, "x", cols, " matrix");
  const std::size_t need = (rows - 1) * stride + cols;
  detail::require(buffer.size() >= need, "buffer of ", buffer.size(), " elements is too short for ", rows, "x", cols,
                  " with stride ", stride, " (needs ", need, ")");
  return {buffer.data(), rows, cols, stride};
}

template <class T>
matrix_view<T> make_matrix_view(std::vector<T>& v, std::size_t rows, std::size_t cols, std::size_t stride = 0) {
  return make_matrix_view(std::span<T>(v), rows, cols, stride);
}
template <class T>
matrix_view<const T> make_matrix_view(const std::vector<T>& v, std::size_t rows, std::size_t cols,
                                      std::size_t stride = 0) {
  return make_matrix_view(std::span<const T>(v), rows, cols, stride);
}

/// A view of a raw pointer; the caller vouches for its extent.
template <class T>
matrix_view<T> make_matrix_view(T* data, std::size_t rows, std::size_t cols, std::size_t stride = 0) {
  if (stride == 0) stride = cols;
  detail::require(stride >= cols, "row stride ", stride, " is smaller than the row length ", cols);
  detail::require(data != nullptr || rows == 0 || cols == 0, "null pointer for a ", rows, "x", cols, " matrix");
  return {data, rows, cols, stride};
}

}  // namespace quarot
