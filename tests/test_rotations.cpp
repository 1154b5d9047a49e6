#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include <quarot/transform.hpp>

#include "test_util.hpp"

#include "reference.hpp"

using namespace quarot;
using test_util::machine_isas;
using test_util::random_matrix;

namespace {
// Applies a transform to the identity: row j of the result is Q e_j, i.e. Qᵀ.
template <class Q>
dense_matrix_d transpose_of(const Q& q) {
  const std::size_t n = q.size();
  std::vector<float> id(n * n, 0.0f);
  for (std::size_t i = 0; i < n; ++i) id[i * n + i] = 1.0f;
  q.apply(make_matrix_view(id, n, n));
  dense_matrix_d t(static_cast<Eigen::Index>(n), static_cast<Eigen::Index>(n));
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t j = 0; j < n; ++j) t(Eigen::Index(i), Eigen::Index(j)) = id[i * n + j];
  return t;
}
}  // namespace

TEST_CASE("randomized Hadamard: golden signs, Q = H·diag(s)/sqrt(n), orthogonal, inverse") {
  const randomized_hadamard q(96, 42);  // 96 = 12 x 8: Kronecker path
  std::string str;
  for (std::size_t i = 0; i < 32; ++i) str += q.signs()[i] > 0 ? '+' : '-';
  CHECK(str == "++---------+-+------+++-+++--++-");  // same on every platform
  CHECK(randomized_hadamard(96, 42).signs() == q.signs());
  CHECK(randomized_hadamard(96, 43).signs() != q.signs());

  const auto plan = q.plan();
  const auto hm = make_hadamard_matrix(plan.m);
  const dense_matrix_d qt = transpose_of(q);  // Qᵀ
  for (std::size_t j = 0; j < 96; ++j) {
    // Column j of Q = H (s_j e_j)/sqrt(n) = s_j · column j of H/sqrt(n).
    std::vector<double> e(96, 0.0);
    e[j] = q.signs()[j];
    const auto col = ref::kronecker_apply(hm.entries, plan.m, plan.p, e, false);
    for (std::size_t i = 0; i < 96; ++i) REQUIRE(std::fabs(qt(Eigen::Index(j), Eigen::Index(i)) - col[i]) < 1e-6);
  }
  CHECK(orthogonality_error(qt) < 1e-6);

  for (std::size_t n : {64u, 4096u, 11008u, 576u}) {
    const randomized_hadamard r(n, 7);
    const auto x = random_matrix(5, n, 1);
    auto y = x;
    r.apply(make_matrix_view(y, 5, n));
    double nx = 0, ny = 0;
    for (std::size_t i = 0; i < x.size(); ++i) {
      nx += double(x[i]) * x[i];
      ny += double(y[i]) * y[i];
    }
    CHECK(std::fabs(nx - ny) < 1e-5 * nx);  // norm preserved
    r.apply_transpose(make_matrix_view(y, 5, n));
    for (std::size_t i = 0; i < x.size(); ++i) REQUIRE(std::fabs(y[i] - x[i]) < 1e-5);
  }
  std::vector<float> bad(8, 1.0f);
  bad[3] = 0.5f;
  CHECK_THROWS_WITH_AS(randomized_hadamard{bad}, doctest::Contains("index 3"), error);
}

TEST_CASE("GSR grouped sequency rotation = block-diagonal Walsh matrices") {
  const std::size_t n = 256, g = 64;
  const auto gsr = grouped_sequency_rotation(n, g);
  CHECK(gsr.block_size() == g);
  const dense_matrix_d qt = transpose_of(gsr);
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t j = 0; j < n; ++j) {
      const double v = qt(Eigen::Index(j), Eigen::Index(i));  // Q[i][j]
      if (i / g != j / g) REQUIRE(v == 0.0);
      else REQUIRE(std::fabs(std::fabs(v) - 1.0 / 8.0) < 1e-7);
    }
  // Within a block, row k has k sign changes (sequency order).
  for (std::size_t k = 0; k < g; ++k) {
    std::vector<int> row(g);
    for (std::size_t j = 0; j < g; ++j) row[j] = qt(Eigen::Index(g + j), Eigen::Index(g + k)) > 0 ? 1 : -1;
    REQUIRE(ref::sign_changes(row) == int(k));
  }
  CHECK(orthogonality_error(qt) < 1e-6);
  // Strided input goes block by block per row.
  std::vector<float> x = random_matrix(3, n + 4, 2), y = x;
  gsr.apply(make_matrix_view(x, 3, n, n + 4));
  gsr.apply_transpose(make_matrix_view(x, 3, n, n + 4));
  for (std::size_t i = 0; i < x.size(); ++i) REQUIRE(std::fabs(y[i] - x[i]) < 1e-5);
  CHECK_THROWS_WITH_AS(grouped_sequency_rotation(100, 64), doctest::Contains("100"), error);
  CHECK_THROWS_AS(grouped_sequency_rotation(96, 48), error);  // 48 is not a power of two
}

TEST_CASE("dense rotations: random orthogonal, user matrix check, apply = X·Qᵀ") {
  const auto r = random_orthogonal(48, 11);
  CHECK(orthogonality_error(r.matrix()) < 1e-5);
  CHECK(random_orthogonal(48, 11).matrix() == r.matrix());  // reproducible from the seed
  const auto x = random_matrix(7, 48, 3);
  auto y = x;
  thread_pool pool(2);
  r.apply(make_matrix_view(y, 7, 48), &pool);
  for (std::size_t t = 0; t < 7; ++t)
    for (std::size_t i = 0; i < 48; ++i) {
      double ref = 0;
      for (std::size_t j = 0; j < 48; ++j) ref += double(r.matrix()(Eigen::Index(i), Eigen::Index(j))) * x[t * 48 + j];
      REQUIRE(std::fabs(y[t * 48 + i] - ref) < 1e-5);
    }
  r.apply_transpose(make_matrix_view(y, 7, 48));
  for (std::size_t i = 0; i < x.size(); ++i) REQUIRE(std::fabs(y[i] - x[i]) < 1e-5);

  dense_matrix not_orth = dense_matrix::Identity(4, 4);
  not_orth(0, 1) = 0.1f;
  CHECK_THROWS_WITH_AS(dense_rotation{not_orth}, doctest::Contains("not orthogonal"), error);
  CHECK_THROWS_AS(dense_rotation(dense_matrix::Identity(3, 4)), error);
  dense_matrix nan_m = dense_matrix::Identity(2, 2);
  nan_m(1, 1) = std::nanf("");
  CHECK_THROWS_WITH_AS(dense_rotation{nan_m}, doctest::Contains("NaN"), error);
  CHECK_NOTHROW(dense_rotation(dense_matrix::Identity(5, 5)));
  // Any real Eigen matrix or expression, stored in fp32.
  const dense_rotation from_double(dense_matrix_d::Identity(6, 6) * -1.0);
  CHECK(from_double.matrix() == -dense_matrix::Identity(6, 6));
}

TEST_CASE("random_orthogonal<float>: the QR in fp32, orthogonal to its precision's bound") {
  constexpr std::size_t n = 256;
  const auto qf = random_orthogonal<float>(n, 5);
  const auto qd = random_orthogonal(n, 5);
  const double ef = orthogonality_error(qf.matrix()), ed = orthogonality_error(qd.matrix());
  CHECK(ef < 4.0 * n * std::numeric_limits<float>::epsilon());
  CHECK(random_orthogonal<float>(n, 5).matrix() == qf.matrix());  // reproducible
  // The fp32 QR is really in fp32: further from orthogonal than the fp64 one (whose only
  // error is the final rounding to fp32), and a different matrix from the same seed only
  // by rounding (the same Gaussian draws).
  CHECK(ef > ed);
  CHECK((qf.matrix() - qd.matrix()).cwiseAbs().maxCoeff() < 1e-4f);  // 1.5e-6 measured
  CHECK(qf.matrix() != qd.matrix());
}

TEST_CASE("Cayley map and Cayley SGD keep orthogonality and descend") {
  xoshiro256 rng(5);
  dense_matrix_d a(16, 16);
  for (Eigen::Index i = 0; i < 16; ++i)
    for (Eigen::Index j = 0; j < 16; ++j) a(i, j) = rng.normal();
  const dense_matrix_d skew = 0.5 * (a - a.transpose());
  CHECK(orthogonality_error(cayley(skew)) < 1e-12);
  CHECK_THROWS_WITH_AS(cayley(a), doctest::Contains("skew"), error);

  // Minimize f(R) = ||R - T||_F² over orthogonal R, gradient 2(R - T); T orthogonal.
  const dense_matrix_d target = cayley(0.3 * skew);
  dense_matrix_d r = dense_matrix_d::Identity(16, 16);
  double loss = (r - target).squaredNorm();
  const double first = loss;
  for (int step = 0; step < 50; ++step) {
    r = cayley_sgd_step(r, 2.0 * (r - target), 0.1);
    const double next = (r - target).squaredNorm();
    REQUIRE(next <= loss + 1e-12);
    loss = next;
    REQUIRE(orthogonality_error(r) < 1e-10);
  }
  CHECK(loss < 1e-3 * first);
  CHECK_THROWS_AS(cayley_sgd_step(r, dense_matrix_d::Zero(3, 3), 0.1), error);
  CHECK_THROWS_AS(cayley_sgd_step(r, r, -1.0), error);
}

TEST_CASE("fusing rotations into weights preserves the layer's function") {
  const std::size_t in = 96, out = 64;  // 96 = 12·8 (Kronecker), 64 = 2^6
  const auto w = random_matrix(out, in, 21);
  const auto x = random_matrix(1, in, 22);
  std::vector<float> b = random_matrix(1, out, 23);
  auto matvec = [](const std::vector<float>& m, std::size_t rows, std::size_t cols, const std::vector<float>& v) {
    std::vector<double> y(rows, 0.0);
    for (std::size_t i = 0; i < rows; ++i)
      for (std::size_t j = 0; j < cols; ++j) y[i] += double(m[i * cols + j]) * v[j];
    return y;
  };
  const auto y = matvec(w, out, in, x);

  // Input side: W' (Q x) = W x.
  const randomized_hadamard qin(in, 1);
  auto w_in = w;
  fuse_input_rotation(make_matrix_view(w_in, out, in), qin);
  auto xr = x;
  qin.apply(make_matrix_view(xr, 1, in));
  const auto y1 = matvec(w_in, out, in, xr);
  CHECK(ref::max_abs_diff(y, y1) < 1e-4);

  // Output side: W' x + b' = Q (W x + b).
  const randomized_hadamard qout(out, 2);
  auto w_out = w;
  auto b_out = b;
  fuse_output_rotation(make_matrix_view(w_out, out, in), qout, std::span<float>(b_out));
  auto y2 = matvec(w_out, out, in, x);
  for (std::size_t i = 0; i < out; ++i) y2[i] += b_out[i];
  std::vector<float> yb(out);
  for (std::size_t i = 0; i < out; ++i) yb[i] = float(y[i] + b[i]);
  qout.apply(make_matrix_view(yb, 1, out));
  CHECK(ref::max_abs_diff(y2, std::vector<double>(yb.begin(), yb.end())) < 1e-4);

  CHECK_THROWS_WITH_AS(fuse_input_rotation(make_matrix_view(w_in, in, out), qin), doctest::Contains("64 input"),
                       error);
  CHECK_THROWS_AS(fuse_output_rotation(make_matrix_view(w_out, out, in), qin), error);
}

TEST_CASE("the library's transforms model the orthogonal_transform concept") {
  static_assert(orthogonal_transform<walsh_hadamard_transform>);
  static_assert(orthogonal_transform<hadamard_transform>);
  static_assert(orthogonal_transform<randomized_hadamard>);
  static_assert(orthogonal_transform<block_diagonal<walsh_hadamard_transform>>);
  static_assert(orthogonal_transform<dense_rotation>);
  CHECK(true);
}
