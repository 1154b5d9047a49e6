#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include <quarot/transform.hpp>

#include "test_util.hpp"

#include "reference.hpp"

using namespace quarot;
using test_util::machine_isas;
using test_util::random_matrix;

namespace {

template <class T>
std::vector<T> to_type(const std::vector<float>& x) {
  std::vector<T> y(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) y[i] = from_float<T>(x[i]);
  return y;
}

template <class T>
bool bitwise_equal(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

}  // namespace

TEST_CASE("FWHT natural order = dense Sylvester H/sqrt(n) for n = 2^0..2^12, every ISA, bit-exact across ISAs") {
  for (unsigned k = 0; k <= 12; ++k) {
    const std::size_t n = std::size_t{1} << k, rows = 3;
    const auto x = random_matrix(rows, n, k);
    std::vector<float> scalar_out;
    for (auto isa : machine_isas()) {
      INFO("n = " << n << ", isa = " << cpu::to_string(isa));
      auto y = x;
      walsh_hadamard_transform(n, {}, isa).apply(make_matrix_view(y, rows, n));
      for (std::size_t r = 0; r < rows; ++r)
        for (std::size_t i = 0; i < n; i += (n > 512 ? 37 : 1)) {  // a sample of outputs for large n
          double ref = 0;
          for (std::size_t j = 0; j < n; ++j) ref += ref::sylvester(i, j) * double(x[r * n + j]);
          ref /= std::sqrt(double(n));
          REQUIRE(std::fabs(y[r * n + i] - ref) <= 1e-5 * (1 + std::fabs(ref)) * std::sqrt(double(k + 1)));
        }
      if (isa == cpu::isa::scalar) scalar_out = y;
      else REQUIRE(bitwise_equal(y, scalar_out));
    }
  }
}

TEST_CASE("FWHT large sizes 2^13..2^20 against a double-precision FWHT; SIMD bit-exact with scalar") {
  for (unsigned k : {13u, 14u, 15u, 17u, 20u}) {
    const std::size_t n = std::size_t{1} << k;
    const auto x = random_matrix(1, n, 100 + k);
    std::vector<double> ref(x.begin(), x.end());
    ref::fwht_double(ref.data(), n);
    std::vector<float> scalar_out;
    for (auto isa : machine_isas()) {
      INFO("n = 2^" << k << ", isa = " << cpu::to_string(isa));
      auto y = x;
      walsh_hadamard_transform(n, {.normalize = false}, isa).apply(make_matrix_view(y, 1, n));
      double err = 0, scale = 0;
      for (std::size_t i = 0; i < n; ++i) {
        err = std::max(err, std::fabs(y[i] - ref[i]));
        scale = std::max(scale, std::fabs(ref[i]));
      }
      CHECK(err <= 1e-6 * scale * k);
      if (isa == cpu::isa::scalar) scalar_out = y;
      else CHECK(bitwise_equal(y, scalar_out));
    }
  }
}

TEST_CASE("sequency order: row k of the Walsh matrix has k sign changes; transpose inverts") {
  for (unsigned k = 0; k <= 10; ++k) {
    const std::size_t n = std::size_t{1} << k;
    for (auto isa : machine_isas()) {
      INFO("n = " << n << ", isa = " << cpu::to_string(isa));
      const walsh_hadamard_transform w(n, {hadamard_order::sequency, false}, isa);
      // Applying to the identity gives Wᵀ row by row (row j = W e_j = column j of W).
      std::vector<float> id(n * n, 0.0f);
      for (std::size_t i = 0; i < n; ++i) id[i * n + i] = 1.0f;
      w.apply(make_matrix_view(id, n, n));
      for (std::size_t row = 0; row < n; ++row) {
        std::vector<int> r(n);
        for (std::size_t j = 0; j < n; ++j) r[j] = id[j * n + row] > 0 ? 1 : -1;  // W[row][j]
        REQUIRE(ref::sign_changes(r) == int(row));
      }
      const walsh_hadamard_transform wn(n, {hadamard_order::sequency, true}, isa);
      const auto x = random_matrix(5, n, k);
      auto y = x;
      wn.apply(make_matrix_view(y, 5, n));
      wn.apply_transpose(make_matrix_view(y, 5, n));
      for (std::size_t i = 0; i < x.size(); ++i) REQUIRE(std::fabs(y[i] - x[i]) < 1e-5);
    }
  }
}

TEST_CASE("strided rows: padding is untouched, results equal the contiguous case") {
  const std::size_t n = 256, rows = 7, stride = n + 13;
  const float pad = 12345.0f;
  auto x = random_matrix(rows, stride, 3);
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t j = n; j < stride; ++j) x[r * stride + j] = pad;
  std::vector<float> dense(rows * n);
  for (std::size_t r = 0; r < rows; ++r) std::copy_n(x.begin() + long(r * stride), n, dense.begin() + long(r * n));
  for (auto isa : machine_isas()) {
    auto y = x;
    auto d = dense;
    randomized_hadamard q(n, 5, isa);
    q.apply(make_matrix_view(y, rows, n, stride));
    q.apply(make_matrix_view(d, rows, n));
    for (std::size_t r = 0; r < rows; ++r) {
      for (std::size_t j = 0; j < n; ++j) REQUIRE(y[r * stride + j] == d[r * n + j]);
      for (std::size_t j = n; j < stride; ++j) REQUIRE(y[r * stride + j] == pad);
    }
  }
}

TEST_CASE_TEMPLATE("16-bit storage: SIMD bit-exact with scalar, close to the fp32 result", T, half, bfloat16) {
  const double tol = std::is_same_v<T, half> ? 2e-3 : 1.6e-2;
  for (std::size_t n : {8u, 64u, 1024u, 96u, 11008u}) {
    const std::size_t rows = 3;
    const auto xf = random_matrix(rows, n, n);
    const auto x = to_type<T>(xf);
    std::vector<float> exact(rows * n);
    for (std::size_t i = 0; i < exact.size(); ++i) exact[i] = to_float(x[i]);
    const hadamard_transform href(n, cpu::isa::scalar);
    href.apply(make_matrix_view(exact, rows, n));
    std::vector<T> scalar_out;
    for (auto isa : machine_isas()) {
      INFO(type_name<T>() << " n = " << n << ", isa = " << cpu::to_string(isa));
      auto y = x;
      hadamard_transform(n, isa).apply(make_matrix_view(y, rows, n));
      for (std::size_t i = 0; i < y.size(); ++i)
        REQUIRE(std::fabs(to_float(y[i]) - exact[i]) <= tol * (std::fabs(exact[i]) + 1e-3));
      if (isa == cpu::isa::scalar) scalar_out = y;
      else REQUIRE(bitwise_equal(y, scalar_out));
    }
  }
}

TEST_CASE("Kronecker transform = dense (H_m ⊗ H_p)/sqrt(n) for every supported non-power-of-two n <= 32768") {
  // Every n <= 32768 that is not a power of two and that the planner supports with a
  // dense factor m <= 256 (the cost of the check grows as n·m), plus model sizes with
  // larger factors; each against the double-precision reference, on an odd number of
  // rows, for every ISA (and SIMD bit-exact with scalar). The plans of all the other
  // supported sizes <= 32768 are checked for consistency.
  std::vector<std::size_t> sizes;
  std::size_t planned = 0;
  for (std::size_t n = 12; n <= 32768; n += 4) {
    if (detail::is_power_of_two(n) || !hadamard_size_supported(n)) continue;
    const auto plan = plan_hadamard(n);
    REQUIRE(plan.m * plan.p == n);
    REQUIRE(detail::is_power_of_two(plan.p));
    REQUIRE(hadamard_order_supported(plan.m));
    ++planned;
    if (plan.m <= 256) sizes.push_back(n);
  }
  const std::size_t below = sizes.size();
  for (std::size_t n : {1000u, 4864u, 18944u, 29568u}) sizes.push_back(n);
  MESSAGE(planned << " supported non-power-of-two sizes <= 32768 planned; " << below
                  << " of them (m <= 256) and 4 model sizes checked against the dense reference");
  CHECK(below > 250);
  std::map<std::size_t, hadamard_matrix> dense_factors;
  const auto isas = machine_isas();
  for (std::size_t n : sizes) {
    const auto plan = plan_hadamard(n);
    if (!dense_factors.count(plan.m)) dense_factors.emplace(plan.m, make_hadamard_matrix(plan.m));
    const auto& hm = dense_factors.at(plan.m).entries;
    const std::size_t rows = n <= 2048 ? 3 : 1;
    const auto x = random_matrix(rows, n, n);
    std::vector<float> scalar_out;
    for (auto isa : isas) {
      INFO("n = " << n << " (" << plan.describe() << "), isa = " << cpu::to_string(isa));
      const hadamard_transform h(n, isa);
      auto y = x, z = x;
      h.apply(make_matrix_view(y, rows, n));
      h.apply_transpose(make_matrix_view(z, rows, n));
      for (std::size_t r = 0; r < rows; ++r) {
        const std::vector<double> xr(x.begin() + long(r * n), x.begin() + long((r + 1) * n));
        const auto ry = ref::kronecker_apply(hm, plan.m, plan.p, xr, false);
        const auto rz = ref::kronecker_apply(hm, plan.m, plan.p, xr, true);
        double worst = 0;  // largest error relative to the 2e-5·(1 + |ref|) bound
        for (std::size_t i = 0; i < n; ++i) {
          worst = std::max(worst, std::fabs(y[r * n + i] - ry[i]) / (2e-5 * (1 + std::fabs(ry[i]))));
          worst = std::max(worst, std::fabs(z[r * n + i] - rz[i]) / (2e-5 * (1 + std::fabs(rz[i]))));
        }
        REQUIRE(worst <= 1.0);
      }
      if (isa == cpu::isa::scalar) scalar_out = y;
      else REQUIRE(bitwise_equal(y, scalar_out));
    }
  }
}

TEST_CASE("round trip x -> Q x -> Qᵀ Q x = x for non-symmetric dense factors") {
  for (std::size_t n : {12u * 16, 28u * 4, 172u * 64, 108u * 128, 60u * 16}) {
    for (auto isa : machine_isas()) {
      INFO("n = " << n << ", isa = " << cpu::to_string(isa));
      const hadamard_transform h(n, isa);
      const auto x = random_matrix(3, n, 9);
      auto y = x;
      h.apply(make_matrix_view(y, 3, n));
      h.apply_transpose(make_matrix_view(y, 3, n));
      for (std::size_t i = 0; i < x.size(); ++i) REQUIRE(std::fabs(y[i] - x[i]) < 1e-5);
    }
  }
}

TEST_CASE("planner explains its choice and covers the model families' dimensions") {
  CHECK(plan_hadamard(11008).describe() ==
        "11008 = 172 x 64: H_172 (Williamson (quadruple of order 43)) ⊗ H_64 (Sylvester, FWHT)");
  CHECK(plan_hadamard(4096).describe() == "4096 = 2^12: H_4096 (Sylvester, FWHT)");
  CHECK(plan_hadamard(14336).m == 28);
  CHECK(plan_hadamard(576).m == 36);
  // hidden, FFN and head sizes of Llama 2/3, Mistral/Mixtral, Qwen 2/2.5/3, Gemma 1/2,
  // Phi-3, SmolLM2 and BERT/MiniLM (docs/TRANSFORMS.md lists which model uses which).
  for (std::size_t n : {4096u, 5120u, 8192u, 11008u, 13824u, 14336u, 28672u, 896u, 1536u, 2048u, 3584u, 4864u,
                        8960u, 18944u, 27648u, 29568u, 2560u, 9728u, 12288u, 17408u, 25600u, 1024u, 3072u,
                        16384u, 24576u, 2304u, 9216u, 4608u, 36864u, 17920u, 576u, 960u, 384u, 768u, 64u, 80u,
                        96u, 128u, 256u}) {
    INFO("n = " << n);
    CHECK(hadamard_size_supported(n));
  }
}

TEST_CASE("bad sizes and buffers are clear errors") {
  CHECK_THROWS_WITH_AS(walsh_hadamard_transform(12), doctest::Contains("12"), error);
  CHECK_THROWS_AS(walsh_hadamard_transform(0), error);
  CHECK_THROWS_AS(walsh_hadamard_transform(std::size_t{1} << 21), error);
  CHECK_THROWS_AS(hadamard_transform(0), error);
  CHECK_THROWS_WITH_AS(hadamard_transform(6), doctest::Contains("n = 6"), error);
  try {
    (void)plan_hadamard(188);
    FAIL("188 should be unsupported");
  } catch (const error& e) {
    CHECK(e.code() == errc::unsupported);
    const std::string what = e.what();
    CHECK(what.find("n = 188") != std::string::npos);
    CHECK(what.find("184 and 192") != std::string::npos);
  }
  std::vector<float> x(100);
  const hadamard_transform h(64);
  CHECK_THROWS_WITH_AS(h.apply(make_matrix_view(x, 1, 100)), doctest::Contains("rows of length 100"), error);
  CHECK_THROWS_AS((void)make_matrix_view(x, 2, 64), error);
}

TEST_CASE("two threads give the same bits as one") {
  thread_pool pool(2);
  for (std::size_t n : {128u, 4096u, 11008u}) {
    const auto x = random_matrix(33, n, 1);
    auto a = x, b = x;
    const randomized_hadamard q(n, 77);
    q.apply(make_matrix_view(a, 33, n));
    q.apply(make_matrix_view(b, 33, n), &pool);
    CHECK(bitwise_equal(a, b));
  }
}

TEST_CASE("sign_matmul by table lookup = the dense ±1 product, every ISA bit-exact; bad orders rejected") {
  // Random ±1 matrices (not Hadamard): the lookup must not depend on orthogonality.
  for (std::size_t m : {4u, 8u, 12u, 20u, 36u}) {
    xoshiro256 rng(m);
    std::vector<float> h(m * m);
    for (auto& v : h) v = (rng() & 1) ? 1.0f : -1.0f;
    const auto lut = detail::make_sign_lut(h.data(), m);
    for (std::size_t p : {1u, 8u, 16u, 24u, 48u}) {
      const auto a = random_matrix(m, p, m * 100 + p);
      std::vector<float> scalar_out;
      for (auto isa : machine_isas()) {
        INFO("m " << m << " p " << p << " isa " << cpu::to_string(isa));
        std::vector<float> y(m * p, -1.0f);
        cpu::dispatch(isa, [&](auto tag) { detail::sign_matmul(tag, lut, a.data(), y.data(), p, detail::scratch(3, 32 * m)); });
        for (std::size_t i = 0; i < m; ++i)
          for (std::size_t j = 0; j < p; ++j) {
            double d = 0;
            for (std::size_t l = 0; l < m; ++l) d += double(h[i * m + l]) * a[l * p + j];
            REQUIRE(std::fabs(y[i * p + j] - d) <= 1e-5 * (1 + std::fabs(d)) * double(m));
          }
        if (isa == cpu::isa::scalar) scalar_out = y;
        else REQUIRE(bitwise_equal(y, scalar_out));
        // In place with a scale: the same sums, each multiplied once by the scale.
        auto z = a;
        cpu::dispatch(isa, [&](auto tag) {
          detail::sign_matmul(tag, lut, z.data(), z.data(), p, detail::scratch(3, 32 * m), 0.3f);
        });
        for (std::size_t i = 0; i < z.size(); ++i) {
          const float want = y[i] * 0.3f;
          REQUIRE(std::memcmp(&z[i], &want, 4) == 0);
        }
      }
    }
  }
  const std::vector<float> h6(36, 1.0f);
  CHECK_THROWS_WITH_AS(detail::make_sign_lut(h6.data(), 6), doctest::Contains("order 6"), error);
}

TEST_CASE("randomized Kronecker transform = the plain one on s ⊙ x, bit for bit, every ISA, fp32 and bf16 rows, in and out of place") {
  // Q x = H (s ⊙ x) / √n: the signs are exact, so the randomized transform must give the
  // plain transform's bits on the sign-flipped input whichever pass applies them.
  for (std::size_t n : {96u, 256u, 1000u, 11008u}) {
    const std::size_t rows = n > 2000 ? 1 : 3;
    const auto x = random_matrix(rows, n, n + 5);
    std::vector<float> scalar_out;
    for (auto isa : machine_isas()) {
      INFO("n " << n << " isa " << cpu::to_string(isa));
      const randomized_hadamard q(n, 9, isa);
      const hadamard_transform h(n, isa);
      auto y = x, z = x;
      q.apply(make_matrix_view(y, rows, n));
      for (std::size_t r = 0; r < rows; ++r)
        for (std::size_t i = 0; i < n; ++i) z[r * n + i] *= q.signs()[i];
      h.apply(make_matrix_view(z, rows, n));
      REQUIRE(bitwise_equal(y, z));
      // Out of place (the input untouched) = in place, both transforms.
      std::vector<float> o(x.size(), -7.0f), o2(x.size(), -7.0f);
      q.apply(make_matrix_view(std::as_const(x), rows, n), make_matrix_view(o, rows, n));
      REQUIRE(bitwise_equal(o, y));
      auto xs = x;
      for (std::size_t r = 0; r < rows; ++r)
        for (std::size_t i = 0; i < n; ++i) xs[r * n + i] *= q.signs()[i];
      h.apply(make_matrix_view(std::as_const(xs), rows, n), make_matrix_view(o2, rows, n));
      REQUIRE(bitwise_equal(o2, z));
      if (isa == cpu::isa::scalar) scalar_out = y;
      else REQUIRE(bitwise_equal(y, scalar_out));
      // bf16 rows go through the work buffer (the other path): the same fp32 values,
      // rounded once on the way out.
      std::vector<bfloat16> yb(x.size());
      for (std::size_t i = 0; i < x.size(); ++i) yb[i] = to_bfloat16(x[i]);
      std::vector<float> xb(x.size());
      for (std::size_t i = 0; i < x.size(); ++i) xb[i] = to_float(yb[i]);
      q.apply(make_matrix_view(yb, rows, n));
      q.apply(make_matrix_view(xb, rows, n));
      for (std::size_t i = 0; i < x.size(); ++i) REQUIRE(yb[i].bits == to_bfloat16(xb[i]).bits);
    }
  }
}
