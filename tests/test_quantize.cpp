#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include <quarot/quantize.hpp>

#include "test_util.hpp"

using namespace quarot;
using test_util::machine_isas;
using test_util::random_matrix;

namespace {
// The plain definition of RTN for one group, independent of quarot's kernels.
struct ref_group {
  std::vector<int> q;
  double scale, zero;
};
ref_group ref_rtn(const float* x, std::size_t n, int bits, bool sym, float clip) {
  float lo = x[0], hi = x[0];
  for (std::size_t i = 0; i < n; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
  }
  ref_group g;
  int qmin, qmax;
  if (sym) {
    qmax = (1 << (bits - 1)) - 1;
    qmin = -qmax - 1;
    g.scale = std::max(std::fabs(lo), std::fabs(hi)) * clip / float(qmax);
    g.zero = 0;
  } else {
    qmin = 0;
    qmax = (1 << bits) - 1;
    const float l = std::min(lo, 0.0f) * clip, h = std::max(hi, 0.0f) * clip;
    g.scale = float((h - l) / float(qmax));
  }
  if (!(g.scale > 0)) g.scale = 1;
  if (!sym) g.zero = std::nearbyint(-std::min(lo * clip, 0.0f) / float(g.scale));
  for (std::size_t i = 0; i < n; ++i) {
    const float v = std::nearbyint(x[i] / float(g.scale)) + float(g.zero);
    g.q.push_back(int(std::min(std::max(v, float(qmin)), float(qmax))));
  }
  return g;
}
}  // namespace

TEST_CASE("RTN matches the definition for every bit width, grid, granularity and ISA; SIMD bit-exact") {
  const std::size_t rows = 5, cols = 96;  // 96: three 32-groups, tails of 16- and 8-wide vectors
  auto x = random_matrix(rows, cols, 1);
  x[7] = 0.0f;
  for (std::size_t c = 0; c < cols; ++c) x[2 * cols + c] = 0.0f;  // an all-zero row
  for (int bits = 2; bits <= 8; ++bits)
    for (bool sym : {true, false})
      for (granularity gran : {granularity::per_tensor, granularity::per_channel, granularity::per_group,
                               granularity::per_token})
        for (float clip : {1.0f, 0.9f}) {
          const quant_params p{.bits = bits, .symmetric = sym, .gran = gran, .group_size = 32, .clip_ratio = clip};
          std::vector<std::int8_t> scalar_q;
          std::vector<float> scalar_fake;
          for (auto isa : machine_isas()) {
            INFO("bits " << bits << (sym ? " sym " : " asym ") << to_string(gran) << " clip " << clip << " isa "
                         << cpu::to_string(isa));
            const rtn_quantizer quant(p, isa);
            const auto qm = quant.quantize(make_matrix_view(x, rows, cols));
            // Against the definition, group by group.
            const std::size_t len = gran == granularity::per_group ? 32 : cols;
            if (gran != granularity::per_tensor)
              for (std::size_t r = 0; r < rows; ++r)
                for (std::size_t g0 = 0; g0 < cols; g0 += len) {
                  const auto ref = ref_rtn(&x[r * cols + g0], len, bits, sym, clip);
                  for (std::size_t i = 0; i < len; ++i) REQUIRE(qm.value(r, g0 + i) == ref.q[i]);
                  REQUIRE(qm.scales[qm.group_of(r, g0)] == float(ref.scale));
                }
            else {
              const auto ref = ref_rtn(x.data(), x.size(), bits, sym, clip);
              for (std::size_t i = 0; i < x.size(); ++i) REQUIRE(qm.value(i / cols, i % cols) == ref.q[i]);
            }
            // Dequantization error bounded by half a step (unclipped values).
            std::vector<float> deq(x.size()), fake(x.size());
            quant.dequantize(qm, make_matrix_view(deq, rows, cols));
            quant.fake_quantize(make_matrix_view(std::as_const(x), rows, cols), make_matrix_view(fake, rows, cols));
            for (std::size_t i = 0; i < x.size(); ++i) {
              REQUIRE(deq[i] == fake[i]);
              if (clip == 1.0f) REQUIRE(std::fabs(deq[i] - x[i]) <= qm.scales[qm.group_of(i / cols, i % cols)] * 0.5001f);
            }
            if (isa == cpu::isa::scalar) {
              scalar_q = qm.q;
              scalar_fake = fake;
            } else {
              REQUIRE(qm.q == scalar_q);
              REQUIRE(std::memcmp(fake.data(), scalar_fake.data(), fake.size() * 4) == 0);
            }
          }
        }
}

TEST_CASE("RTN edge cases: constant rows, zero rows, fp16 scales, in-place, bad input") {
  std::vector<float> x = {3, 3, 3, 3, 0, 0, 0, 0, -2, -2, -2, -2};
  const rtn_quantizer sym({.bits = 4, .gran = granularity::per_channel});
  std::vector<float> y(12);
  sym.fake_quantize(make_matrix_view(std::as_const(x), 3, 4), make_matrix_view(y, 3, 4));
  CHECK(y == x);  // constant rows are exact (max|x| is on the grid)
  const rtn_quantizer asym({.bits = 3, .symmetric = false, .gran = granularity::per_channel});
  asym.fake_quantize(make_matrix_view(std::as_const(x), 3, 4), make_matrix_view(y, 3, 4));
  for (std::size_t i = 0; i < 12; ++i) CHECK(std::fabs(y[i] - x[i]) <= 3.0f / 7 / 2 + 1e-6f);
  CHECK(y[4] == 0.0f);  // zero is exactly representable on the asymmetric grid

  auto w = random_matrix(4, 64, 3);
  const rtn_quantizer half_scales({.bits = 4, .gran = granularity::per_group, .group_size = 16, .scales = scale_type::fp16});
  const auto qm = half_scales.quantize(make_matrix_view(std::as_const(w), 4, 64));
  for (float s : qm.scales) CHECK(to_float(to_half(s)) == s);

  auto inplace = w;
  sym.fake_quantize(make_matrix_view(std::as_const(inplace), 4, 64), make_matrix_view(inplace, 4, 64));
  std::vector<float> out(w.size());
  sym.fake_quantize(make_matrix_view(std::as_const(w), 4, 64), make_matrix_view(out, 4, 64));
  CHECK(inplace == out);

  CHECK_THROWS_WITH_AS(rtn_quantizer({.bits = 9}), doctest::Contains("bits 9"), error);
  CHECK_THROWS_WITH_AS(rtn_quantizer({.bits = 1}), doctest::Contains("bits 1"), error);
  CHECK_THROWS_WITH_AS(rtn_quantizer({.clip_ratio = 1.5f}), doctest::Contains("1.5"), error);
  const rtn_quantizer g48({.gran = granularity::per_group, .group_size = 48});
  CHECK_THROWS_WITH_AS((void)g48.quantize(make_matrix_view(std::as_const(w), 4, 64)), doctest::Contains("48"), error);
  w[70] = std::numeric_limits<float>::quiet_NaN();
  try {
    (void)sym.quantize(make_matrix_view(std::as_const(w), 4, 64));
    FAIL("NaN accepted");
  } catch (const error& e) {
    CHECK(e.code() == errc::numerical);
    CHECK(std::string(e.what()).find("row 1, column 6") != std::string::npos);
  }
  w[70] = std::numeric_limits<float>::infinity();
  CHECK_THROWS_AS(sym.fake_quantize(make_matrix_view(std::as_const(w), 4, 64), make_matrix_view(w, 4, 64)), error);
}

TEST_CASE("MSE clip search never does worse than no clipping and helps heavy tails") {
  auto w = random_matrix(16, 128, 4);
  for (std::size_t r = 0; r < 16; ++r) w[r * 128 + 5] = 12.0f;  // an outlier per row
  auto err = [&](const quant_params& p) {
    std::vector<float> y(w.size());
    rtn_quantizer(p).fake_quantize(make_matrix_view(std::as_const(w), 16, 128), make_matrix_view(y, 16, 128));
    double e = 0;
    for (std::size_t i = 0; i < w.size(); ++i) e += double(y[i] - w[i]) * (y[i] - w[i]);
    return e;
  };
  quant_params p{.bits = 3, .gran = granularity::per_channel};
  const double plain = err(p);
  p.search = {.enabled = true, .grid = 100, .max_shrink = 0.8f, .norm = 2.0f};
  const double searched = err(p);
  CHECK(searched <= plain);
  CHECK(searched < 0.9 * plain);
  p.search.norm = 2.4f;
  CHECK(err(p) <= plain * 1.05);
  p.gran = granularity::per_tensor;
  CHECK(err(p) > 0);
  CHECK_THROWS_AS(rtn_quantizer({.search = {.enabled = true, .grid = 0}}), error);
}

TEST_CASE("clip search terms: |d|^p within 1e-8 of pow over the whole float range, exact where it should be") {
  using detail::clip_pow;
  std::vector<float> values = {1.0f, 2.0f, 0.5f, 3.0f, 1e-3f, 0.7071067f, 0.7071068f, 1.4142135f, 1.4142137f,
                               std::numeric_limits<float>::min(), std::numeric_limits<float>::denorm_min(),
                               std::numeric_limits<float>::max(), 1e-40f, 6e37f};
  xoshiro256 rng(11);
  for (int i = 0; i < 4000; ++i)  // log-uniform over every binade, subnormals included
    values.push_back(static_cast<float>(std::exp2(-149.0 + 277.0 * rng.uniform())));
  for (double p : {0.25, 1.0, 2.0, double(2.4f), 3.7, 8.0}) {
    CHECK(clip_pow(0.0, p) == 0.0);
    CHECK(clip_pow(-0.0, p) == 0.0);
    CHECK(clip_pow(INFINITY, p) == INFINITY);
    CHECK(clip_pow(1.0, p) == 1.0);
    CHECK(clip_pow(-1.0, p) == 1.0);
    for (float v : values) {
      const double ref = std::pow(double(v), p), got = clip_pow(-double(v), p);
      INFO("p " << p << " |d| " << v << " pow " << ref << " clip_pow " << got);
      if (ref < 0x1p-1021) {
        REQUIRE(got < 0x1p-1020);  // flushed to 0 below 2^-1021
      } else if (ref > 0x1p1023) {
        REQUIRE((got == INFINITY || std::fabs(got - ref) <= 1e-8 * ref));
      } else {
        REQUIRE(std::fabs(got - ref) <= 1e-8 * ref);
      }
    }
  }
  CHECK(clip_pow(2.0, 2.0) == 4.0);
  CHECK(clip_pow(0.25, 3.0) == 1.0 / 64);
  CHECK(clip_pow(1e38, 10.0) == INFINITY);
}

TEST_CASE("clip search scores: every ISA equals the scalar kernel bit for bit, which equals the definition") {
  const auto x = random_matrix(1, 1003, 21);
  const std::size_t lens[] = {1, 5, 8, 15, 16, 17, 63, 64, 65, 100, 128, 129, 200, 1003};
  for (std::size_t len : lens)
    for (float norm : {2.0f, 2.4f, 1.0f, 3.0f})
      for (bool sym : {true, false})
        for (float shrink : {1.0f, 0.55f}) {
          const auto r = detail::value_range(cpu::scalar{}, x.data(), len);
          const quant_params qp{.bits = 4, .symmetric = sym};
          const auto g = detail::rtn_grid(shrink * r.lo, shrink * r.hi, qp);
          // The definition: Σ |s·(q - z) - x|^p, x̂ - x rounded once to float.
          double ref = 0;
          for (std::size_t i = 0; i < len; ++i) {
            const float q = std::min(std::max(std::nearbyint(x[i] / g.scale) + g.zero, float(g.qmin)), float(g.qmax));
            const auto d = static_cast<float>(double(g.scale) * double(q - g.zero) - double(x[i]));
            ref += std::pow(std::fabs(double(d)), double(norm));
          }
          const double full = detail::clip_error(cpu::scalar{}, x.data(), len, g, norm, INFINITY);
          INFO("len " << len << " norm " << norm << (sym ? " sym" : " asym") << " shrink " << shrink);
          REQUIRE(std::fabs(full - ref) <= 1e-8 * ref);
          for (double bound : {double(INFINITY), 0.5 * full, 0.9 * full, 1e-30}) {
            const double scalar = detail::clip_error(cpu::scalar{}, x.data(), len, g, norm, bound);
            if (scalar < bound) REQUIRE(scalar == full);  // not abandoned: the whole sum
            REQUIRE(scalar <= full);
            if (len > 64 && bound < 0.5 * full) REQUIRE(scalar < full);  // abandoned early
            for (auto isa : machine_isas()) {
              INFO("isa " << cpu::to_string(isa) << " bound " << bound);
              const double got =
                  cpu::dispatch(isa, [&](auto tag) { return detail::clip_error(tag, x.data(), len, g, norm, bound); });
              REQUIRE(std::memcmp(&got, &scalar, sizeof got) == 0);
            }
          }
        }
}

TEST_CASE("clip search scores with zero, subnormal, overflowing and underflowing terms: every ISA equals scalar") {
  // Grid: scale 1, levels -8..7. Elements on the grid give d = 0; 3e38 clamps to 7 (d^9
  // overflows to +inf); subnormal and tiny ones give terms that flush to 0 at p = 9.
  const detail::grid g{1.0f, 0.0f, -8, 7};
  std::vector<float> x;
  xoshiro256 rng(41);
  for (int i = 0; i < 77; ++i) {
    switch (i % 7) {
      case 0: x.push_back(float(int(rng() % 15) - 8)); break;                          // d = 0
      case 1: x.push_back(1e-40f); break;                                               // subnormal
      case 2: x.push_back(-3e-30f); break;                                              // tiny
      case 3: x.push_back(i == 17 ? 3e38f : 0.25f); break;                              // one overflow
      default: x.push_back(float(rng.normal()) * 3.0f); break;
    }
  }
  for (float norm : {9.0f, 0.3f, 2.4f, 2.0f})
    for (std::size_t len : {16u, 17u, 40u, 66u, 67u, 77u}) {
      const double scalar = detail::clip_error(cpu::scalar{}, x.data(), len, g, norm, INFINITY);
      INFO("norm " << norm << " len " << len << " scalar " << scalar);
      if (len > 17 && norm == 9.0f) CHECK(scalar == INFINITY);  // (3e38 - 7)^9 overflows; ^2.4 is 1.6e92
      else CHECK(std::isfinite(scalar));
      for (auto isa : machine_isas()) {
        INFO("isa " << cpu::to_string(isa));
        const double got = cpu::dispatch(isa, [&](auto tag) { return detail::clip_error(tag, x.data(), len, g, norm, INFINITY); });
        CHECK(std::memcmp(&got, &scalar, sizeof got) == 0);
      }
    }
  // Only elements on the grid: every term is exactly 0, at any p.
  std::vector<float> on_grid(37);
  for (auto& v : on_grid) v = float(int(rng() % 16) - 8);
  for (float norm : {0.3f, 2.4f, 2.0f})
    for (auto isa : machine_isas()) {
      INFO("on the grid, norm " << norm << " isa " << cpu::to_string(isa));
      CHECK(cpu::dispatch(isa, [&](auto tag) { return detail::clip_error(tag, on_grid.data(), on_grid.size(), g, norm, INFINITY); }) == 0.0);
    }
  // Only tiny terms: at p = 9 every one is below 2^-1021 and flushed, so the sum is 0.
  const std::vector<float> tiny = {1e-40f, -3e-36f, 0.0f, 1e-44f, -2e-36f, 4e-39f, 0.0f, -1e-45f,
                                   1e-40f, -3e-36f, 0.0f, 1e-44f, -2e-36f, 4e-39f, 0.0f, -1e-45f,
                                   1e-40f, -3e-36f, 0.0f, 1e-44f, -2e-36f, 4e-39f, 0.0f, -1e-45f, 1e-40f};
  for (float norm : {9.0f, 0.3f}) {
    const double scalar = detail::clip_error(cpu::scalar{}, tiny.data(), tiny.size(), g, norm, INFINITY);
    INFO("tiny, norm " << norm);
    if (norm == 9.0f) CHECK(scalar == 0.0);
    else CHECK(scalar > 0.0);
    for (auto isa : machine_isas()) {
      const double got =
          cpu::dispatch(isa, [&](auto tag) { return detail::clip_error(tag, tiny.data(), tiny.size(), g, norm, INFINITY); });
      CHECK(std::memcmp(&got, &scalar, sizeof got) == 0);
    }
  }
}

TEST_CASE("clip search: the candidate scored first (the hint) changes nothing but the time") {
  auto w = random_matrix(64, 128, 51);
  for (std::size_t i = 0; i < w.size(); i += 37) w[i] *= 5.0f;
  quant_params p{.bits = 4, .symmetric = false};
  p.search = {.enabled = true, .grid = 100, .max_shrink = 0.8f, .norm = 2.4f};
  int chosen_elsewhere = 0;
  for (std::size_t r = 0; r < 64; ++r) {
    const float* v = w.data() + r * 128;
    const auto plain = detail::group_grid(cpu::scalar{}, v, 128, p, r, 0);
    int best = -1;
    for (int first : {0, 1, 17, 40, 79, 500, -3}) {
      int hint = first;
      const auto g = detail::group_grid(cpu::scalar{}, v, 128, p, r, 0, &hint);
      INFO("row " << r << " first " << first);
      CHECK(g.scale == plain.scale);
      CHECK(g.zero == plain.zero);
      if (best < 0) best = hint;
      CHECK(hint == best);  // the index of the choice, whatever came first
      const float shrink = 1.0f - float(hint) / 100.0f;
      const auto cand = detail::rtn_grid(shrink * std::min(0.0f, *std::min_element(v, v + 128)),
                                         shrink * std::max(0.0f, *std::max_element(v, v + 128)), p);
      CHECK(cand.scale == g.scale);
    }
    chosen_elsewhere += best != 0;
  }
  CHECK(chosen_elsewhere > 32);  // most rows clip, so the hint is exercised
  // A grid with no candidate below max_shrink (grid 1: 0.8 · 1 rounds down to none) is RTN.
  p.search.grid = 1;
  for (int first : {0, 5}) {
    int hint = first;
    const auto g = detail::group_grid(cpu::scalar{}, w.data(), 128, p, 0, 0, &hint);
    const auto plain = detail::rtn_grid(std::min(0.0f, *std::min_element(w.data(), w.data() + 128)),
                                        std::max(0.0f, *std::max_element(w.data(), w.data() + 128)), p);
    CHECK(g.scale == plain.scale);
    CHECK(g.zero == plain.zero);
    CHECK(hint == first);
  }
}

TEST_CASE("clip search picks the candidate with the least error by the definition, the same on every ISA") {
  const std::size_t rows = 6, cols = 256;
  auto w = random_matrix(rows, cols, 31);
  xoshiro256 rng(32);
  for (std::size_t r = 0; r < rows; ++r)  // heavy tails: a few loud weights per row
    for (int k = 0; k < 3; ++k) w[r * cols + rng() % cols] *= 6.0f + float(k);
  struct config {
    granularity gran;
    std::size_t group;
    bool sym;
    int bits;
    float norm;
  };
  for (const config c : {config{granularity::per_group, 128, true, 4, 2.4f}, config{granularity::per_group, 64, false, 3, 2.0f},
                         config{granularity::per_channel, 0, false, 4, 2.4f}, config{granularity::per_tensor, 0, true, 4, 2.4f}}) {
    quant_params p{.bits = c.bits, .symmetric = c.sym, .gran = c.gran, .group_size = c.group};
    p.search = {.enabled = true, .grid = 100, .max_shrink = 0.8f, .norm = c.norm};
    const std::size_t len = c.gran == granularity::per_group ? c.group : c.gran == granularity::per_tensor ? rows * cols : cols;
    INFO(to_string(c.gran) << " group " << c.group << (c.sym ? " sym" : " asym") << " bits " << c.bits << " norm " << c.norm);
    const auto qm = rtn_quantizer(p, cpu::isa::scalar).quantize(make_matrix_view(std::as_const(w), rows, cols));
    for (std::size_t g0 = 0; g0 < rows * cols; g0 += len) {
      const float* v = w.data() + g0;
      float lo = v[0], hi = v[0];
      for (std::size_t i = 0; i < len; ++i) {
        lo = std::min(lo, v[i]);
        hi = std::max(hi, v[i]);
      }
      double best = INFINITY, chosen = -1;
      for (int i = 0; i < 80; ++i) {
        const float shrink = 1.0f - float(i) / 100.0f;
        const auto g = detail::rtn_grid(shrink * lo, shrink * hi, p);
        double e = 0;
        for (std::size_t k = 0; k < len; ++k) {
          const float q = std::min(std::max(std::nearbyint(v[k] / g.scale) + g.zero, float(g.qmin)), float(g.qmax));
          e += std::pow(std::fabs(double(g.scale) * double(q - g.zero) - double(v[k])), double(c.norm));
        }
        best = std::min(best, e);
        const std::size_t slot = qm.group_of(g0 / cols, g0 % cols);
        if (g.scale == qm.scales[slot] && (c.sym || g.zero == qm.zeros[slot]) && chosen < 0) chosen = e;
      }
      INFO("group at " << g0);
      REQUIRE(chosen >= 0);  // the chosen grid is one of the candidates
      CHECK(chosen <= best * (1 + 1e-7));
    }
    // A search that matters: some group chose a clip.
    const auto plain = rtn_quantizer({.bits = c.bits, .symmetric = c.sym, .gran = c.gran, .group_size = c.group})
                           .quantize(make_matrix_view(std::as_const(w), rows, cols));
    CHECK(plain.scales != qm.scales);
    for (auto isa : machine_isas()) {
      INFO("isa " << cpu::to_string(isa));
      const auto got = rtn_quantizer(p, isa).quantize(make_matrix_view(std::as_const(w), rows, cols));
      CHECK(got.scales == qm.scales);
      CHECK(got.zeros == qm.zeros);
      CHECK(got.q == qm.q);
    }
  }
}

TEST_CASE("per-token activation quantization: packed int4 / int8, bit-exact across ISAs, equals RTN") {
  for (std::size_t cols : {1u, 7u, 64u, 100u, 4096u, 11008u}) {
    const std::size_t rows = 3;
    const auto x = random_matrix(rows, cols, cols);
    for (int bits : {2, 4, 6, 8}) {
      quantized_activations scalar_out;
      quantize_activations(cpu::scalar{}, make_matrix_view(x, rows, cols), bits, 0.9f, scalar_out);
      const rtn_quantizer ref({.bits = bits, .gran = granularity::per_token, .clip_ratio = 0.9f}, cpu::isa::scalar);
      const auto rq = ref.quantize(make_matrix_view(x, rows, cols));
      for (std::size_t r = 0; r < rows; ++r) {
        REQUIRE(scalar_out.scales[r] == rq.scales[r]);
        for (std::size_t c = 0; c < cols; ++c) REQUIRE(scalar_out.value(r, c) == rq.value(r, c));
      }
      for (auto isa : machine_isas()) {
        INFO("cols " << cols << " bits " << bits << " isa " << cpu::to_string(isa));
        quantized_activations out;
        thread_pool pool(2);
        cpu::dispatch(isa, [&](auto tag) { quantize_activations(tag, make_matrix_view(x, rows, cols), bits, 0.9f, out, &pool); });
        REQUIRE(out.data == scalar_out.data);
        REQUIRE(out.scales == scalar_out.scales);
        REQUIRE(out.row_bytes == (bits <= 4 ? (cols + 1) / 2 : cols));
      }
    }
  }
  quantized_activations out;
  std::vector<float> bad = {1, 2, std::numeric_limits<float>::infinity()};
  CHECK_THROWS_WITH_AS(quantize_activations(make_matrix_view(bad, 1, 3), 4, 1.0f, out), doctest::Contains("column 2"),
                       error);
  CHECK_THROWS_AS(quantize_activations(make_matrix_view(bad, 1, 3), 9, 1.0f, out), error);
}

namespace {
// Correlated inputs: x = z·A with a random mixing A (so XᵀX is far from diagonal), plus
// a few high-energy columns.
std::vector<float> correlated_inputs(std::size_t tokens, std::size_t k, std::uint64_t seed, bool heavy_columns) {
  xoshiro256 rng(seed);
  std::vector<float> mix(k * k);
  for (auto& v : mix) v = float(rng.normal()) / std::sqrt(float(k));
  std::vector<float> x(tokens * k, 0.0f);
  std::vector<float> z(k);
  for (std::size_t t = 0; t < tokens; ++t) {
    for (auto& v : z) v = float(rng.normal());
    for (std::size_t i = 0; i < k; ++i) {
      float acc = z[i];
      for (std::size_t j = 0; j < k; ++j) acc += 0.5f * z[j] * mix[j * k + i];
      x[t * k + i] = acc * ((heavy_columns && i % 16 == 3) ? 8.0f : 1.0f);
    }
  }
  return x;
}

double output_error(const std::vector<float>& w, const std::vector<float>& w_hat, const std::vector<float>& x,
                    std::size_t n, std::size_t k, std::size_t tokens) {
  double num = 0, den = 0;
  for (std::size_t t = 0; t < tokens; ++t)
    for (std::size_t o = 0; o < n; ++o) {
      double a = 0, b = 0;
      for (std::size_t i = 0; i < k; ++i) {
        a += double(w[o * k + i]) * x[t * k + i];
        b += double(w_hat[o * k + i]) * x[t * k + i];
      }
      num += (a - b) * (a - b);
      den += a * a;
    }
  return std::sqrt(num / den);
}
}  // namespace

TEST_CASE("GPTQ beats RTN on correlated inputs at 3 and 4 bits; act-order helps heavy columns") {
  const std::size_t n = 32, k = 128, tokens = 512;
  const auto w = random_matrix(n, k, 10, 0.05f);
  for (bool heavy : {false, true}) {
    const auto x = correlated_inputs(tokens, k, 11, heavy);
    hessian_accumulator acc(k);
    acc.add(make_matrix_view(x, tokens / 2, k));  // two batches: streaming accumulation
    acc.add(make_matrix_view(std::span<const float>(x).subspan(tokens / 2 * k), tokens / 2, k));
    CHECK(acc.samples() == tokens);
    const auto h = acc.hessian();
    for (int bits : {3, 4}) {
      for (auto gran : {granularity::per_channel, granularity::per_group}) {
        gptq_options opt;
        opt.quant = {.bits = bits, .symmetric = bits == 4, .gran = gran, .group_size = 32};
        opt.block_size = 32;
        thread_pool pool(2);
        const auto res = gptq_quantize(make_matrix_view(w, n, k), h, opt, &pool);
        std::vector<float> rtn(w.size());
        rtn_quantizer(opt.quant).fake_quantize(make_matrix_view(w, n, k), make_matrix_view(rtn, n, k));
        const double e_gptq = output_error(w, res.w_hat, x, n, k, tokens);
        const double e_rtn = output_error(w, rtn, x, n, k, tokens);
        INFO("bits " << bits << " " << std::string(to_string(gran)) << std::string(heavy ? " heavy" : "") << ": GPTQ " << e_gptq << ", RTN " << e_rtn);
        CHECK(e_gptq < e_rtn);
        opt.act_order = true;
        const auto ao = gptq_quantize(make_matrix_view(w, n, k), h, opt, &pool);
        const double e_ao = output_error(w, ao.w_hat, x, n, k, tokens);
        INFO("act-order " << e_ao);
        if (heavy) CHECK(e_ao <= e_gptq * 1.02);
        opt.static_groups = true;
        const auto st = gptq_quantize(make_matrix_view(w, n, k), h, opt, &pool);
        CHECK(output_error(w, st.w_hat, x, n, k, tokens) < e_rtn);
        // The dequantized weights are the levels on the recorded grids.
        const rtn_quantizer deq(opt.quant);
        std::vector<float> again(w.size());
        deq.dequantize(ao.q, make_matrix_view(again, n, k));
        CHECK(again == ao.w_hat);
      }
    }
  }
}

TEST_CASE("GPTQ with an identity Hessian is RTN; dead columns; threads do not change bits") {
  const std::size_t n = 24, k = 64;
  auto w = random_matrix(n, k, 5);
  const Eigen::MatrixXd id = Eigen::MatrixXd::Identity(k, k);
  for (auto gran : {granularity::per_channel, granularity::per_group})
    for (bool search : {false, true}) {
      INFO(to_string(gran) << (search ? " with" : " without") << " clip search");
      gptq_options opt;
      opt.quant = {.bits = 4, .symmetric = false, .gran = gran, .group_size = 16};
      opt.quant.search.enabled = search;
      opt.block_size = 16;
      const auto res = gptq_quantize(make_matrix_view(std::as_const(w), n, k), id, opt);
      const auto rq = rtn_quantizer(opt.quant).quantize(make_matrix_view(std::as_const(w), n, k));
      CHECK(res.q.q == rq.q);
      CHECK(res.q.scales == rq.scales);
      CHECK(res.q.zeros == rq.zeros);
      thread_pool pool(2);
      CHECK(gptq_quantize(make_matrix_view(std::as_const(w), n, k), id, opt, &pool).w_hat == res.w_hat);
      for (auto isa : machine_isas()) {
        INFO("isa " << cpu::to_string(isa));
        CHECK(gptq_quantize(make_matrix_view(std::as_const(w), n, k), id, opt, &pool, isa).w_hat == res.w_hat);
      }
    }
  Eigen::MatrixXd h = Eigen::MatrixXd::Identity(k, k);
  h(7, 7) = 0.0;  // an input that never fires
  const auto res = gptq_quantize(make_matrix_view(std::as_const(w), n, k), h, gptq_options{});
  for (std::size_t r = 0; r < n; ++r) CHECK(res.w_hat[r * k + 7] == 0.0f);
  CHECK(res.loss > 0);

  CHECK_THROWS_WITH_AS(gptq_quantize(make_matrix_view(std::as_const(w), n, k), Eigen::MatrixXd::Identity(3, 3), gptq_options{}),
                       doctest::Contains("3x3"), error);
  Eigen::MatrixXd neg = -Eigen::MatrixXd::Identity(k, k);
  CHECK_THROWS_WITH_AS(gptq_quantize(make_matrix_view(std::as_const(w), n, k), neg, gptq_options{}),
                       doctest::Contains("positive definite"), error);
  w[3] = std::nanf("");
  CHECK_THROWS_AS(gptq_quantize(make_matrix_view(std::as_const(w), n, k), id, gptq_options{}), error);
  hessian_accumulator acc(4);
  CHECK_THROWS_AS((void)acc.hessian(), error);
  std::vector<float> x5(5);
  CHECK_THROWS_AS(acc.add(make_matrix_view(x5, 1, 5)), error);
}

TEST_CASE("KV cache: append, read back within half a step, memory, errors") {
  for (int bits : {2, 4, 8})
    for (std::size_t group : {0u, 16u}) {
      quantized_kv_cache cache(3, 64, {.bits = bits, .group_size = group, .clip_ratio = 1.0f});
      const auto kv = random_matrix(10, 3 * 64, 8);
      for (std::size_t t = 0; t < 10; ++t) cache.append(std::span<const float>(kv).subspan(t * 192, 192));
      CHECK(cache.tokens() == 10);
      std::vector<float> out(10 * 64);
      for (std::size_t h = 0; h < 3; ++h) {
        cache.read(h, make_matrix_view(out, 10, 64));
        for (std::size_t t = 0; t < 10; ++t) {
          const float* v = &kv[t * 192 + h * 64];
          const std::size_t g = group ? group : 64;
          for (std::size_t i = 0; i < 64; i += g) {
            float lo = 0, hi = 0;
            for (std::size_t j = i; j < i + g; ++j) {
              lo = std::min(lo, v[j]);
              hi = std::max(hi, v[j]);
            }
            const float step = (hi - lo) / float((1 << bits) - 1);
            for (std::size_t j = i; j < i + g; ++j) REQUIRE(std::fabs(out[t * 64 + j] - v[j]) <= step * 0.5001f + 1e-7f);
          }
        }
      }
      const std::size_t level_bytes = 10 * 3 * (bits <= 4 ? 32 : 64);
      const std::size_t groups = 10 * 3 * (group ? 64 / group : 1);
      CHECK(cache.memory_bytes() == level_bytes + 8 * groups);  // 4-bit levels packed, fp32 scale + zero per group
    }
  quantized_kv_cache cache(2, 8, {});
  std::vector<float> wrong(15);
  CHECK_THROWS_WITH_AS(cache.append(wrong), doctest::Contains("15 values"), error);
  std::vector<float> out(8);
  CHECK_THROWS_AS(cache.read(2, make_matrix_view(out, 0, 8)), error);
  CHECK_THROWS_AS(quantized_kv_cache(2, 10, {.group_size = 4}), error);
  CHECK_THROWS_AS(quantized_kv_cache(2, 8, {.bits = 1}), error);
}

TEST_CASE("quantizers model the quantizer concept") {
  static_assert(quantizer<rtn_quantizer>);
  CHECK(true);
}

TEST_CASE("GPTQ's Hinv: upper U with Uᵀ·U = H⁻¹ (recursive triangular inverse, n > block)") {
  for (Eigen::Index k : {5, 97, 300}) {
    xoshiro256 rng{static_cast<std::uint64_t>(k)};
    Eigen::MatrixXd a(k, 2 * k);
    for (Eigen::Index i = 0; i < a.size(); ++i) a.data()[i] = rng.normal();
    Eigen::MatrixXd h = a * a.transpose() / double(k);
    h.diagonal().array() += 0.1;
    const Eigen::MatrixXf u = detail::upper_cholesky_of_inverse(h);
    CHECK(u.isUpperTriangular());
    for (Eigen::Index i = 0; i < k; ++i) CHECK(u(i, i) > 0);
    const Eigen::MatrixXd hinv = h.inverse();
    const double err = (u.cast<double>().transpose() * u.cast<double>() - hinv).cwiseAbs().maxCoeff();
    INFO("k = " << k << ", max error " << err);
    CHECK(err < 1e-4 * hinv.cwiseAbs().maxCoeff());
  }
}
