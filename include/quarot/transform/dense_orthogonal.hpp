// quarot — dense orthogonal rotations: a random orthogonal matrix (QR of a Gaussian),
// the Cayley map and Cayley SGD for learned rotations (SpinQuant, Liu et al. 2024), and
// a user-given matrix checked for orthogonality. Applied as dense products (Eigen);
// O(n²) per row, which is why QuaRot prefers Hadamard matrices online.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <concepts>
#include <cstdint>
#include <limits>
#include <vector>

#include <Eigen/Dense>

#include "../core/backend.hpp"
#include "../core/error.hpp"
#include "../core/matrix_view.hpp"
#include "../core/numeric.hpp"
#include "../core/random.hpp"
#include "../core/thread_pool.hpp"

namespace quarot {

using dense_matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using dense_matrix_d = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// max |Q·Qᵀ - I| over all entries.
template <class Derived>
double orthogonality_error(const Eigen::MatrixBase<Derived>& q) {
  const auto qd = q.template cast<double>();
  const dense_matrix_d e = qd * qd.transpose() - dense_matrix_d::Identity(q.rows(), q.cols());
  return e.cwiseAbs().maxCoeff();
}

// Compile time: everything below that runs an Eigen product or factorization is a
// template (the constructor on its matrix expression, random_orthogonal on the precision
// of its QR, the Cayley functions on their arguments), so it is instantiated only where it
// is called. As plain inline functions, Eigen's QR, LU and double GEMM were instantiated
// in every translation unit that included this header, called or not: ~5 s of GCC each.

/// An orthogonal n x n matrix Q applied densely. Models quarot::orthogonal_transform.
class dense_rotation {
 public:
  /// Takes Q (any real Eigen matrix or expression; stored in fp32), checking it is square
  /// and orthogonal to within `tolerance` (max entry of |Q·Qᵀ - I|); the error names the
  /// deviation found.
  template <class Derived>
  explicit dense_rotation(const Eigen::MatrixBase<Derived>& q, double tolerance = 1e-4)
      : q_(q.template cast<float>()) {
    detail::require(q_.rows() == q_.cols() && q_.rows() > 0, "dense_rotation: matrix is ", q_.rows(), "x", q_.cols(),
                    ", not square and non-empty");
    detail::require(q_.allFinite(), "dense_rotation: matrix has NaN or Inf entries");
    const double err = orthogonality_error(q_);
    if (!(err <= tolerance))
      detail::fail(errc::numerical, "dense_rotation: matrix is not orthogonal: max |Q·Qᵀ - I| = ", err,
                   " exceeds tolerance ", tolerance);
    qt_ = q_.transpose();
  }

  [[nodiscard]] std::size_t size() const noexcept { return static_cast<std::size_t>(q_.rows()); }
  [[nodiscard]] const dense_matrix& matrix() const noexcept { return q_; }

  /// Each row x becomes Q·x (X <- X·Qᵀ).
  template <storage_float T>
  void apply(matrix_view<T> x, thread_pool* pool = nullptr) const {
    multiply(x, qt_, pool);
  }
  /// Each row x becomes Qᵀ·x (X <- X·Q).
  template <storage_float T>
  void apply_transpose(matrix_view<T> x, thread_pool* pool = nullptr) const {
    multiply(x, q_, pool);
  }

 private:
  // X <- X·M, in row blocks (each thread its own block and buffer).
  template <class T>
  void multiply(matrix_view<T> x, const dense_matrix& m, thread_pool* pool) const {
    if (x.empty()) return;
    const std::size_t n = size();
    detail::require(x.cols == n, "dense_rotation of size ", n, " applied to rows of length ", x.cols);
    detail::parallel_for(
        pool, x.rows,
        [&](std::size_t begin, std::size_t end) {
          constexpr std::size_t block = 64;
          dense_matrix in(static_cast<Eigen::Index>(std::min(block, end - begin)), static_cast<Eigen::Index>(n));
          dense_matrix out;
          for (std::size_t r0 = begin; r0 < end; r0 += block) {
            const std::size_t rows = std::min(block, end - r0);
            in.resize(static_cast<Eigen::Index>(rows), static_cast<Eigen::Index>(n));
            for (std::size_t r = 0; r < rows; ++r)
              for (std::size_t j = 0; j < n; ++j) in(Eigen::Index(r), Eigen::Index(j)) = to_float(x(r0 + r, j));
            out.noalias() = in * m;
            for (std::size_t r = 0; r < rows; ++r)
              for (std::size_t j = 0; j < n; ++j) x(r0 + r, j) = from_float<T>(out(Eigen::Index(r), Eigen::Index(j)));
          }
        },
        16);
  }

  dense_matrix q_, qt_;
};

/// A Haar-distributed random orthogonal matrix: Q from the QR factorization of an
/// n x n standard Gaussian matrix, with column signs fixed so that diag(R) > 0
/// (Mezzadri 2007; without the fix the distribution is not uniform). `Real`: the precision
/// of the Gaussian matrix and its QR (the result is stored in fp32 either way); Q is
/// checked orthogonal to max(1e-4, 4·n·ε(Real)), Householder QR's n·ε bound with room
/// (fp32 at n = 4096: 2e-3).
template <std::floating_point Real = double>
dense_rotation random_orthogonal(std::size_t n, std::uint64_t seed) {
  using matrix = Eigen::Matrix<Real, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  detail::require(n >= 1 && n <= 16384, "random_orthogonal: size ", n, " outside [1, 16384]");
  xoshiro256 rng(seed);
  matrix g(static_cast<Eigen::Index>(n), static_cast<Eigen::Index>(n));
  for (Eigen::Index i = 0; i < g.rows(); ++i)
    for (Eigen::Index j = 0; j < g.cols(); ++j) g(i, j) = static_cast<Real>(rng.normal());
  Eigen::HouseholderQR<matrix> qr(g);
  matrix q = qr.householderQ();
  const matrix r = qr.matrixQR().template triangularView<Eigen::Upper>();
  for (Eigen::Index j = 0; j < q.cols(); ++j)
    if (r(j, j) < 0) q.col(j) *= Real(-1);
  return dense_rotation(q, std::max(1e-4, 4.0 * static_cast<double>(n) * std::numeric_limits<Real>::epsilon()));
}

/// The Cayley map of a skew-symmetric A: Q = (I - A)⁻¹(I + A), orthogonal for every
/// skew A (I - A is always invertible since A's eigenvalues are imaginary). A: any real
/// Eigen matrix or expression, evaluated once in fp64.
template <class Derived>
dense_matrix_d cayley(const Eigen::MatrixBase<Derived>& a_in) {
  const dense_matrix_d a = a_in.template cast<double>();
  detail::require(a.rows() == a.cols(), "cayley: matrix is ", a.rows(), "x", a.cols(), ", not square");
  const double skew_err = (a + a.transpose()).cwiseAbs().maxCoeff();
  const double scale = std::max(1.0, a.cwiseAbs().maxCoeff());
  if (!(skew_err <= 1e-9 * scale))
    detail::fail(errc::invalid_argument, "cayley: matrix is not skew-symmetric: max |A + Aᵀ| = ", skew_err);
  const dense_matrix_d i = dense_matrix_d::Identity(a.rows(), a.cols());
  return (i - a).partialPivLu().solve(i + a);
}

/// One step of Cayley SGD on the orthogonal group (Li, Fuxin and Todorovic 2020, used by
/// SpinQuant): with W = R·Gᵀ - G·Rᵀ (skew; the projected negative gradient),
/// R <- (I - (lr/2)·W)⁻¹ (I + (lr/2)·W) R. R stays orthogonal and, for a small enough
/// step, the loss whose gradient at R is G decreases. R and G: real Eigen matrices or
/// expressions, evaluated once in fp64.
template <class DerivedR, class DerivedG>
dense_matrix_d cayley_sgd_step(const Eigen::MatrixBase<DerivedR>& r_in, const Eigen::MatrixBase<DerivedG>& grad_in,
                               double lr) {
  const dense_matrix_d r = r_in.template cast<double>();
  const dense_matrix_d grad = grad_in.template cast<double>();
  detail::require(r.rows() == r.cols() && grad.rows() == r.rows() && grad.cols() == r.cols(),
                  "cayley_sgd_step: R is ", r.rows(), "x", r.cols(), " but the gradient is ", grad.rows(), "x",
                  grad.cols());
  detail::require(std::isfinite(lr) && lr > 0, "cayley_sgd_step: learning rate ", lr, " is not positive");
  const dense_matrix_d w = r * grad.transpose() - grad * r.transpose();
  const dense_matrix_d i = dense_matrix_d::Identity(r.rows(), r.cols());
  return (i - 0.5 * lr * w).partialPivLu().solve((i + 0.5 * lr * w) * r);
}

}  // namespace quarot
