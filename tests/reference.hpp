// Plain, slow reference computations the tests compare the library against. Written
// from the definitions, sharing no code with the kernels.
#pragma once

#include <cmath>
#include <cstddef>
#include <vector>

#include <quarot/transform/hadamard_matrices.hpp>

namespace ref {

/// Sylvester entry by definition: (-1)^popcount(i & j).
inline int sylvester(std::size_t i, std::size_t j) { return (__builtin_popcountll(i & j) & 1) ? -1 : 1; }

/// y = H_n x in double by the O(n log n) recursion written out plainly, in double.
inline void fwht_double(double* x, std::size_t n) {
  for (std::size_t h = 1; h < n; h *= 2)
    for (std::size_t i = 0; i < n; i += 2 * h)
      for (std::size_t j = i; j < i + h; ++j) {
        const double a = x[j], b = x[j + h];
        x[j] = a + b;
        x[j + h] = a - b;
      }
}

/// y = (H_m ⊗ H_p) x / sqrt(n) in double, with H_m given densely (±1, row-major) or
/// transposed. Blocks of x are rows of an m x p matrix.
inline std::vector<double> kronecker_apply(const std::vector<std::int8_t>& hm, std::size_t m, std::size_t p,
                                           const std::vector<double>& x, bool transpose) {
  const std::size_t n = m * p;
  std::vector<double> t = x, y(n, 0.0);
  for (std::size_t i = 0; i < m; ++i) fwht_double(t.data() + i * p, p);
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t l = 0; l < m; ++l) {
      const double h = transpose ? hm[l * m + i] : hm[i * m + l];
      for (std::size_t j = 0; j < p; ++j) y[i * p + j] += h * t[l * p + j];
    }
  const double s = 1.0 / std::sqrt(double(n));
  for (auto& v : y) v *= s;
  return y;
}

/// Number of sign changes along a ±1 row.
inline int sign_changes(const std::vector<int>& row) {
  int c = 0;
  for (std::size_t j = 1; j < row.size(); ++j) c += row[j] != row[j - 1];
  return c;
}

inline double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  double d = 0;
  for (std::size_t i = 0; i < a.size(); ++i) d = std::max(d, std::fabs(a[i] - b[i]));
  return d;
}

}  // namespace ref
