#include <doctest/doctest.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <vector>

#include <quarot/gemm.hpp>
#include <quarot/gemm/weight_only_gemm.hpp>
#include <quarot/quantize.hpp>
#include <quarot/transform.hpp>

#include "test_util.hpp"

using namespace quarot;
using test_util::machine_isas;
using test_util::random_matrix;

namespace {
// y from the quantized operands by the definition, independent of the packing and kernels:
// exact int32 group dot products of levels, then the epilogue's operations in order.
// 16-bit levels L are split as the GEMM defines it, L = 256·hi + lo with hi = (L + 128) >> 8:
// each half's result is formed like an 8-bit row's (scale 256·s and s), then the two added.
std::vector<float> reference(const quantized_activations& xa, const quantized_matrix& wq, const std::vector<float>& bias) {
  const std::size_t m = xa.rows, n = wq.rows, k = wq.cols, groups = wq.groups_per_row;
  std::vector<float> y(m * n);
  for (std::size_t r = 0; r < m; ++r)
    for (std::size_t c = 0; c < n; ++c) {
      // Exact integer sums per group (act-order: a group's columns are wherever g_idx
      // puts them), folded in group order.
      const auto fold = [&](auto level) {
        std::vector<std::int64_t> acc(groups, 0);
        for (std::size_t i = 0; i < k; ++i) {
          const std::size_t slot = wq.group_of(c, i);
          const int zero = wq.params.symmetric ? 0 : int(wq.zeros[slot]);
          acc[slot - c * groups] += std::int64_t(level(i)) * (wq.value(c, i) - zero);
        }
        float acc_f = 0.0f;
        for (std::size_t g = 0; g < groups; ++g) {
          REQUIRE(acc[g] == std::int64_t(std::int32_t(acc[g])));
          acc_f = std::fma(wq.scales[c * groups + g], static_cast<float>(acc[g]), acc_f);
        }
        return acc_f;
      };
      const float b = bias.empty() ? 0.0f : bias[c];
      if (xa.bits == 16) {
        const auto hi = [&](std::size_t i) { return (xa.value(r, i) + 128) >> 8; };
        const auto lo = [&](std::size_t i) { return xa.value(r, i) - 256 * hi(i); };
        const float v = std::fma(256.0f * xa.scales[r], fold(hi), 0.0f) + std::fma(xa.scales[r], fold(lo), 0.0f);
        y[r * n + c] = bias.empty() ? v : v + b;
      } else {
        y[r * n + c] = std::fma(xa.scales[r], fold([&](std::size_t i) { return xa.value(r, i); }), b);
      }
    }
  return y;
}

template <class Policy>
void check_policy(std::size_t m, std::size_t n, std::size_t k, bool sym, std::size_t group, bool with_bias) {
  INFO("M " << m << " N " << n << " K " << k << " group " << group << std::string(sym ? " sym" : " asym")
             << std::string(with_bias ? " bias" : ""));
  const auto x = random_matrix(m, k, m * 7 + k);
  const auto w = random_matrix(n, k, n * 13 + k, 0.05f);
  std::vector<float> bias = with_bias ? random_matrix(1, n, 3) : std::vector<float>{};
  quant_params wp{.bits = Policy::weight_bits, .symmetric = sym,
                  .gran = group ? granularity::per_group : granularity::per_channel, .group_size = group};
  const auto wq = rtn_quantizer(wp, cpu::isa::scalar).quantize(make_matrix_view(w, n, k));
  quantized_activations xa;
  quantize_activations(cpu::scalar{}, make_matrix_view(x, m, k), Policy::activation_bits, 1.0f, xa);
  const auto expect = reference(xa, wq, bias);
  const auto packed = gemm::pack_weights(wq, Policy::weight_bits);
  // Every stored raw value decodes back to its level.
  for (std::size_t c = 0; c < n; c += 7)
    for (std::size_t i = 0; i < k; i += 5) {
      const int zero = packed.zeros[packed.group_index(i / packed.group_size, c)];
      const std::size_t slot = wq.group_of(c, i);
      REQUIRE(packed.raw(c, i) - zero == wq.value(c, i) - (sym ? 0 : int(wq.zeros[slot])));
    }
  const gemm::integer_gemm<Policy> op(packed);
  std::vector<float> y(m * n, -1.0f);
  thread_pool pool(2);
  op(xa, make_matrix_view(y, m, n), bias, &pool);
  for (std::size_t i = 0; i < y.size(); ++i) {
    INFO("element " << i << ": " << y[i] << " vs reference " << expect[i]);
    REQUIRE(std::memcmp(&y[i], &expect[i], 4) == 0);  // bit-exact
  }
  // And close to the float product (quantization error only).
  double err = 0, ref = 0;
  for (std::size_t r = 0; r < m; ++r)
    for (std::size_t c = 0; c < n; ++c) {
      double d = with_bias ? bias[c] : 0.0;
      for (std::size_t i = 0; i < k; ++i) d += double(x[r * k + i]) * w[c * k + i];
      err += (d - y[r * n + c]) * (d - y[r * n + c]);
      ref += d * d;
    }
  CHECK(std::sqrt(err / ref) < (Policy::weight_bits == 4 || Policy::activation_bits == 4 ? 0.25 : 0.05));
}
}  // namespace

TEST_CASE("16-bit activations: int16 levels within ±32639, scalar = SIMD, split rows = scalar") {
  for (std::size_t cols : {1u, 15u, 16u, 17u, 31u, 32u, 33u, 64u, 100u, 4097u}) {
    INFO("cols " << cols);
    auto x = random_matrix(3, cols, cols + 16);
    x[0] = -50.0f;  // row 0's largest magnitude is negative: its level is -32639
    quantized_activations ref;
    quantize_activations(cpu::scalar{}, make_matrix_view(x, 3, cols), 16, 1.0f, ref);
    REQUIRE(ref.row_bytes == 2 * cols);
    REQUIRE(ref.value(0, 0) == -detail::int16_split_max);
    for (std::size_t r = 0; r < 3; ++r)
      for (std::size_t c = 0; c < cols; ++c) {
        REQUIRE(std::abs(ref.value(r, c)) <= detail::int16_split_max);
        // within half a step (plus the float rounding of x / s and of L·s)
        REQUIRE(std::fabs(ref.value(r, c) * ref.scales[r] - x[r * cols + c]) <=
                0.5f * ref.scales[r] + 4e-7f * std::fabs(x[r * cols + c]));
      }
    for (auto isa : machine_isas()) {
      INFO("isa " << cpu::to_string(isa));
      quantized_activations got;
      cpu::dispatch(isa, [&](auto tag) { quantize_activations(tag, make_matrix_view(x, 3, cols), 16, 1.0f, got); });
      REQUIRE(got.data == ref.data);
      REQUIRE(got.scales == ref.scales);
    }
    // The split: L = 256·hi + lo, both halves in [-128, 127] as u8 = level + 128.
    for (std::size_t group : {std::size_t{0}, std::size_t{32}, std::size_t{20}}) {
      const std::size_t gs = group == 0 ? cols : group;
      if (cols % gs != 0) continue;
      const std::size_t k_padded = (cols + 3) / 4 * 4 + 4, groups = cols / gs;
      for (auto isa : machine_isas()) {
        INFO("isa " << cpu::to_string(isa) << " group " << gs);
        for (std::size_t r = 0; r < 3; ++r) {
          std::vector<std::uint8_t> hi(k_padded, 7), lo(k_padded, 7);
          std::vector<std::int32_t> hs(groups, -1), ls(groups, -1);
          cpu::dispatch(isa, [&](auto tag) {
            detail::prepare_row_int16(tag, ref.data.data() + r * ref.row_bytes, cols, k_padded, gs, hi.data(),
                                      lo.data(), hs.data(), ls.data());
          });
          std::vector<std::int32_t> ehs(groups, 0), els(groups, 0);
          for (std::size_t k = 0; k < cols; ++k) {
            const int h = int(hi[k]) - 128, l = int(lo[k]) - 128;
            REQUIRE(256 * h + l == ref.value(r, k));
            REQUIRE(h >= -127);
            REQUIRE(h <= 127);
            ehs[k / gs] += h;
            els[k / gs] += l;
          }
          for (std::size_t k = cols; k < k_padded; ++k) REQUIRE((hi[k] == 128 && lo[k] == 128));
          REQUIRE(hs == ehs);
          REQUIRE(ls == els);
        }
      }
    }
  }
}

TEST_CASE("prepared activations: u8 = level + 128, padded K, group level sums; SIMD = scalar") {
  for (int bits : {3, 4, 8})
    for (std::size_t cols : {1u, 31u, 32u, 33u, 64u, 100u, 4097u})
      for (std::size_t group : {std::size_t{0}, std::size_t{32}, std::size_t{64}, std::size_t{20}}) {
        const std::size_t gs = group == 0 ? cols : group;
        if (cols % gs != 0) continue;
        INFO("bits " << bits << " cols " << cols << " group " << gs);
        const auto x = random_matrix(3, cols, cols + bits);
        quantized_activations xa;
        quantize_activations(cpu::scalar{}, make_matrix_view(x, 3, cols), bits, 1.0f, xa);
        const std::size_t k_padded = (cols + 3) / 4 * 4 + 4, groups = cols / gs;
        for (auto isa : machine_isas()) {
          INFO("isa " << cpu::to_string(isa));
          for (std::size_t r = 0; r < 3; ++r) {
            std::vector<std::uint8_t> dst(k_padded, 7);
            std::vector<std::int32_t> sums(groups, -1);
            cpu::dispatch(isa, [&](auto tag) {
              detail::prepare_row(tag, xa.data.data() + r * xa.row_bytes, xa.packed(), cols, k_padded, gs, dst.data(),
                                  sums.data());
            });
            std::vector<std::int32_t> expect(groups, 0);
            for (std::size_t k = 0; k < cols; ++k) {
              REQUIRE(int(dst[k]) == xa.value(r, k) + 128);
              expect[k / gs] += xa.value(r, k);
            }
            for (std::size_t k = cols; k < k_padded; ++k) REQUIRE(dst[k] == 128);
            REQUIRE(sums == expect);
          }
        }
      }
}

TEST_CASE_TEMPLATE("integer GEMM policies equal the integer reference bit for bit (M, N, K tails)", Policy,
                   gemm::w8a8_policy<cpu::scalar>, gemm::w4a8_policy<cpu::scalar>, gemm::w4a4_policy<cpu::scalar>,
                   gemm::w8a8_policy<>, gemm::w4a8_policy<>, gemm::w4a4_policy<>,
                   gemm::w8a8_policy<cpu::avx2_backend>, gemm::w4a8_policy<cpu::avx2_backend>,
                   gemm::w4a4_policy<cpu::avx2_backend>, gemm::w4a16i_policy<cpu::scalar>, gemm::w8a16i_policy<>,
                   gemm::w4a16i_policy<>, gemm::w4a16i_policy<cpu::avx2_backend>,
                   gemm::w8a16i_policy<cpu::avx2_backend>, gemm::w8a8_policy<cpu::avx_vnni_backend>,
                   gemm::w4a4_policy<cpu::avx_vnni_backend>, gemm::w4a16i_policy<cpu::avx_vnni_backend>) {
  if constexpr (std::is_same_v<typename Policy::backend, cpu::avx_vnni_backend>) {
    if (!cpu::supports_avx_vnni_backend()) {
      MESSAGE("skipping: this CPU has neither AVX-VNNI nor AVX-512 VNNI");
      return;
    }
    MESSAGE("avx_vnni backend runs vpdpbusd's ", cpu::has_avx_vnni() ? "VEX" : "EVEX", " form here");
  }
  if constexpr (std::is_same_v<typename Policy::backend, cpu::avx512vnni_backend>) {
    if (!cpu::supports(cpu::isa::avx512vnni)) {
      MESSAGE("skipping: this CPU has no AVX-512 VNNI");
      return;
    }
  }
  if constexpr (std::is_same_v<typename Policy::backend, cpu::avx2_backend>) {
    if (!cpu::supports(cpu::isa::avx2)) {
      MESSAGE("skipping: this CPU has no AVX2");
      return;
    }
  }
  for (std::size_t m : {1u, 3u, 17u})
    for (std::size_t n : {16u, 40u, 100u})
      for (bool sym : {true, false}) {
        check_policy<Policy>(m, n, 64, sym, 0, true);     // per channel
        check_policy<Policy>(m, n, 256, sym, 128, false); // per group 128
        check_policy<Policy>(m, n, 30, sym, 0, false);    // K not a multiple of 4
        check_policy<Policy>(m, n, 60, sym, 20, true);    // groups of 5 k-quads (not a SIMD step)
      }
  check_policy<Policy>(2, 33, 11008, true, 128, true);  // down_proj K
  check_policy<Policy>(5, 20, 11008, false, 0, false);
}

namespace {
// A user kernel written from gemm/kernel.hpp's contract alone, in plain loops, with tiles
// of 4 rows; it records what the driver asks of it.
struct plain_tile_kernel {
  static constexpr std::size_t tile_rows = 4;
  static inline std::atomic<long> calls{0};
  static inline std::atomic<std::size_t> max_rows{0};
  static inline std::atomic<bool> contract_broken{false};
  static void tile(const gemm::kernel_operands& op, std::size_t m0, std::size_t rows, std::size_t n0, std::size_t cols,
                   float* scratch, float* out, std::size_t ldo) noexcept {
    ++calls;
    if (n0 % 64 != 0 || cols == 0 || cols > 64 || rows == 0 || rows > tile_rows || scratch == nullptr)
      contract_broken = true;
    std::size_t seen = max_rows;
    while (rows > seen && !max_rows.compare_exchange_weak(seen, rows)) {
    }
    for (std::size_t r = 0; r < rows; ++r)
      for (std::size_t j = 0; j < cols; ++j) {
        const std::size_t m = m0 + r, n = n0 + j;
        float c = 0.0f;
        for (std::size_t g = 0; g < op.groups; ++g) {
          std::int32_t acc = 0;
          const std::size_t k_end = 4 * std::min(op.quads, (g + 1) * op.group_quads);
          for (std::size_t k = 4 * g * op.group_quads; k < k_end; ++k)
            acc += std::int32_t(op.a[m * op.lda + k]) * gemm::packed_weight_raw(op, n, k);
          const std::size_t gi = gemm::group_data_index(op.groups, g, n);
          acc -= 128 * op.colsums[gi] + op.zeros[gi] * op.rowsum[m * op.groups + g];
          c = std::fma(op.scales[gi], float(acc), c);
        }
        out[r * ldo + j] = std::fma(op.row_scales[m], c, op.bias ? op.bias[n] : 0.0f);
      }
  }
};
// The smallest user kernel: the library's reference tile, default tile rows (6).
struct forwarding_kernel {
  static void tile(const gemm::kernel_operands& op, std::size_t m0, std::size_t rows, std::size_t n0, std::size_t cols,
                   float*, float* out, std::size_t ldo) noexcept {
    gemm::reference_tile(op, m0, rows, n0, cols, out, ldo);
  }
};
struct unavailable_kernel {
  static bool available() noexcept { return false; }
  static void tile(const gemm::kernel_operands&, std::size_t, std::size_t, std::size_t, std::size_t, float*, float*,
                   std::size_t) noexcept {}
};
// A kernel that runs a GEMM of its own type inside its tile, on the calling thread (once:
// the nested call's tiles do not nest again): that GEMM must not reuse the activation
// buffer the outer call is reading.
struct nesting_kernel {
  static inline const gemm::integer_gemm<gemm::integer_policy<nesting_kernel, 4, 8>>* inner = nullptr;
  static inline const quantized_activations* inner_x = nullptr;
  static inline thread_local bool nested = false;
  static void tile(const gemm::kernel_operands& op, std::size_t m0, std::size_t rows, std::size_t n0, std::size_t cols,
                   float*, float* out, std::size_t ldo) {
    if (!nested) {
      nested = true;
      std::vector<float> y(inner_x->rows * inner->weights().n);
      (*inner)(*inner_x, make_matrix_view(y, inner_x->rows, inner->weights().n));
      nested = false;
    }
    gemm::reference_tile(op, m0, rows, n0, cols, out, ldo);
  }
};
static_assert(gemm::integer_tile_kernel<plain_tile_kernel> && gemm::integer_tile_kernel<forwarding_kernel>);
static_assert(!gemm::integer_tile_kernel<cpu::scalar>);
}  // namespace

TEST_CASE("a user kernel (gemm::integer_tile_kernel) runs behind integer_gemm and linear, bit for bit") {
  plain_tile_kernel::calls = 0;
  for (std::size_t m : {1u, 5u, 13u}) {
    check_policy<gemm::integer_policy<plain_tile_kernel, 4, 8>>(m, 100, 200, false, 40, true);
    check_policy<gemm::integer_policy<forwarding_kernel, 4, 4>>(m, 70, 130, true, 0, true);
  }
  check_policy<gemm::integer_policy<plain_tile_kernel, 8, 8>>(7, 70, 130, true, 0, false);
  check_policy<gemm::integer_policy<plain_tile_kernel, 4, 16>>(5, 70, 128, false, 32, true);  // two kernel rows a token
  check_policy<gemm::integer_policy<forwarding_kernel, 8, 16>>(4, 33, 64, true, 0, true);
  CHECK(plain_tile_kernel::calls > 0);
  CHECK(plain_tile_kernel::max_rows == 4);
  CHECK(!plain_tile_kernel::contract_broken);

  // linear: the fused front end feeds a user kernel like the library's.
  const std::size_t m = 9, n = 80, k = 96;
  const auto x = random_matrix(m, k, 21);
  const auto w = random_matrix(n, k, 22, 0.05f);
  const auto bias = random_matrix(1, n, 23);
  const auto wq = rtn_quantizer({.bits = 4, .symmetric = false, .gran = granularity::per_group, .group_size = 32})
                      .quantize(make_matrix_view(w, n, k));
  const auto packed = gemm::pack_weights(wq, 4);
  const auto h = randomized_hadamard(k, 5);
  linear<gemm::integer_policy<plain_tile_kernel, 4, 8>> user(packed, bias, 4);
  linear<gemm::w4a8_policy<cpu::scalar>> library(packed, bias, 4);
  user.with_online_rotation(h);
  library.with_online_rotation(h);
  std::vector<float> yu(m * n, -1.0f), yl(m * n, -2.0f);
  thread_pool pool(2);
  user.forward(make_matrix_view(x, m, k), make_matrix_view(yu, m, n), &pool);
  library.forward(make_matrix_view(x, m, k), make_matrix_view(yl, m, n), &pool);
  CHECK(std::memcmp(yu.data(), yl.data(), yu.size() * 4) == 0);

  // A GEMM called from inside a tile (same thread) gets its own activation buffer.
  {
    quantized_activations xq, small;
    quantize_activations(make_matrix_view(x, m, k), 8, 1.0f, xq);
    const auto x2 = random_matrix(2, k, 99);
    quantize_activations(make_matrix_view(x2, 2, k), 8, 1.0f, small);  // other rows, another size
    const gemm::integer_gemm<gemm::w4a8_policy<cpu::scalar>> reference_op(packed);
    const gemm::integer_gemm<gemm::integer_policy<nesting_kernel, 4, 8>> outer(packed), inner(packed);
    nesting_kernel::inner = &inner;
    nesting_kernel::inner_x = &small;
    std::vector<float> yo(m * n, -1.0f), yr(m * n, -2.0f);
    outer(xq, make_matrix_view(yo, m, n), bias);
    reference_op(xq, make_matrix_view(yr, m, n), bias);
    CHECK(std::memcmp(yo.data(), yr.data(), yo.size() * 4) == 0);
  }

  using unavailable_gemm = gemm::integer_gemm<gemm::integer_policy<unavailable_kernel, 4, 8>>;
  CHECK_THROWS_WITH_AS(unavailable_gemm{packed}, doctest::Contains("available() is false"), error);
}

TEST_CASE("GEMM: mismatched shapes, packing and bits are clear errors") {
  const auto w = random_matrix(32, 64, 1);
  const auto wq = rtn_quantizer({.bits = 8, .gran = granularity::per_channel}).quantize(make_matrix_view(w, 32, 64));
  CHECK_THROWS_WITH_AS(gemm::pack_weights(wq, 4), doctest::Contains("8-bit levels"), error);
  CHECK_THROWS_AS(gemm::pack_weights(wq, 5), error);
  const auto packed = gemm::pack_weights(wq, 8);
  CHECK_THROWS_WITH_AS(gemm::integer_gemm<gemm::w4a8_policy<cpu::scalar>>{packed}, doctest::Contains("4-bit packed"), error);
  const gemm::integer_gemm<gemm::w8a8_policy<cpu::scalar>> op(packed);
  const auto x = random_matrix(3, 60, 2);
  quantized_activations xa;
  quantize_activations(make_matrix_view(x, 3, 60), 8, 1.0f, xa);
  std::vector<float> y(3 * 32);
  CHECK_THROWS_WITH_AS(op(xa, make_matrix_view(y, 3, 32)), doctest::Contains("K = 60"), error);
  const auto x64 = random_matrix(3, 64, 2);
  quantize_activations(make_matrix_view(x64, 3, 64), 8, 1.0f, xa);
  CHECK_THROWS_WITH_AS(op(xa, make_matrix_view(y, 3, 31)), doctest::Contains("3x31"), error);
  std::vector<float> bias(7);
  CHECK_THROWS_WITH_AS(op(xa, make_matrix_view(y, 3, 32), bias), doctest::Contains("bias has 7"), error);
  const auto wt = rtn_quantizer({.bits = 8, .gran = granularity::per_tensor}).quantize(make_matrix_view(w, 32, 64));
  CHECK_THROWS_AS(gemm::pack_weights(wt, 8), error);
  // Activation widths: 16-bit levels need a 16-bit policy, and only 2..8 and 16 exist.
  quantized_activations x16;
  quantize_activations(make_matrix_view(x64, 3, 64), 16, 1.0f, x16);
  CHECK_THROWS_WITH_AS(op(x16, make_matrix_view(y, 3, 32)), doctest::Contains("takes 8-bit activations, got 16-bit"), error);
  CHECK_THROWS_WITH_AS(quantize_activations(make_matrix_view(x64, 3, 64), 12, 1.0f, x16),
                       doctest::Contains("activation bits 12"), error);
  const gemm::integer_gemm<gemm::w8a16i_policy<cpu::scalar>> op16(packed);
  gemm::prepared_activations prepared;
  gemm::prepare_activations(xa, packed, prepared);  // 8-bit levels, called as 16-bit
  CHECK_THROWS_WITH_AS(op16.run(prepared, 16, make_matrix_view(y, 3, 32)), doctest::Contains("prepared as at most 8-bit"),
                       error);
}

namespace {
// The integer GEMM of Policy<backend> on every ISA this machine has equals `expect` bit for bit.
template <template <class> class Policy>
void check_every_isa(const gemm::packed_weights& packed, const quantized_activations& xa, const std::vector<float>& bias,
                     const std::vector<float>& expect, thread_pool& pool) {
  for (auto isa : machine_isas()) {
    INFO("isa " << cpu::to_string(isa) << ", " << xa.bits << "-bit activations");
    std::vector<float> y(xa.rows * packed.n);
    const auto out = make_matrix_view(y, xa.rows, packed.n);
    if (isa == cpu::isa::avx512vnni) gemm::integer_gemm<Policy<cpu::avx512vnni_backend>>{packed}(xa, out, bias, &pool);
    else if (isa == cpu::isa::avx2) gemm::integer_gemm<Policy<cpu::avx2_backend>>{packed}(xa, out, bias, &pool);
    else if (isa == cpu::isa::scalar) gemm::integer_gemm<Policy<cpu::scalar>>{packed}(xa, out, bias, &pool);
    else continue;
    REQUIRE(std::memcmp(y.data(), expect.data(), y.size() * 4) == 0);
  }
  if (cpu::supports_avx_vnni_backend()) {
    INFO("avx_vnni backend, " << xa.bits << "-bit activations");
    std::vector<float> y(xa.rows * packed.n);
    gemm::integer_gemm<Policy<cpu::avx_vnni_backend>>{packed}(xa, make_matrix_view(y, xa.rows, packed.n), bias, &pool);
    REQUIRE(std::memcmp(y.data(), expect.data(), y.size() * 4) == 0);
  }
}
}  // namespace

TEST_CASE("256-bit vpdpbusd kernel: each encoding this CPU has (VEX: AVX-VNNI, EVEX: AVX-512 VNNI) = scalar") {
  using detail::vnni_encoding;
  std::vector<vnni_encoding> encodings;
  if (cpu::has_avx_vnni()) encodings.push_back(vnni_encoding::vex);
  if (cpu::supports(cpu::isa::avx512vnni)) encodings.push_back(vnni_encoding::evex);
  if (encodings.empty()) {
    MESSAGE("skipping: this CPU has neither AVX-VNNI nor AVX-512 VNNI");
    return;
  }
  if (!cpu::has_avx_vnni()) MESSAGE("no AVX-VNNI here: the VEX form is not run (the EVEX form runs the same kernel)");
  thread_pool pool(2);
  for (int wbits : {4, 8})
    for (int abits : {4, 8, 16})
      for (std::size_t group : {std::size_t{0}, std::size_t{32}})
        for (bool sym : {true, false}) {
          const std::size_t m = 13, n = 72, k = 160;  // 13 rows: 6 + 6 + 1 (2·13 split rows: 6·4 + 2)
          INFO("W" << wbits << "A" << abits << " group " << group << std::string(sym ? " sym" : " asym"));
          const auto w = random_matrix(n, k, 91 + group, 0.05f);
          const auto wq = rtn_quantizer({.bits = wbits, .symmetric = sym,
                                         .gran = group ? granularity::per_group : granularity::per_channel,
                                         .group_size = group},
                                        cpu::isa::scalar)
                              .quantize(make_matrix_view(w, n, k));
          const auto packed = gemm::pack_weights(wq, wbits);
          const auto x = random_matrix(m, k, 92 + abits);
          quantized_activations xa;
          quantize_activations(cpu::scalar{}, make_matrix_view(x, m, k), abits, 1.0f, xa);
          const auto bias = random_matrix(1, n, 93);
          gemm::prepared_activations prepared;
          gemm::prepare_activations(xa, packed, prepared);
          std::vector<float> expect(m * n), y(m * n);
          gemm::detail::run_integer_gemm(cpu::scalar{}, prepared, packed, bias, make_matrix_view(expect, m, n), &pool);
          REQUIRE(expect == reference(xa, wq, bias));
          for (auto e : encodings) {
            INFO(std::string(e == vnni_encoding::vex ? "VEX" : "EVEX"));
            std::fill(y.begin(), y.end(), -1.0f);
            if (e == vnni_encoding::vex)
              gemm::detail::run_integer_gemm(detail::vnni256_encoding_backend<vnni_encoding::vex>{}, prepared, packed,
                                             bias, make_matrix_view(y, m, n), &pool);
            else
              gemm::detail::run_integer_gemm(detail::vnni256_encoding_backend<vnni_encoding::evex>{}, prepared, packed,
                                             bias, make_matrix_view(y, m, n), &pool);
            REQUIRE(std::memcmp(y.data(), expect.data(), y.size() * 4) == 0);
          }
        }
}

TEST_CASE("act-order GPTQ weights (g_idx) pack with K reordered; integer and weight-only GEMMs match the references") {
  const std::size_t n = 40, k = 256, m = 5;
  const auto w = random_matrix(n, k, 71, 0.05f);
  const auto calib = random_matrix(64, k, 72);
  Eigen::MatrixXd h = Eigen::MatrixXd::Zero(Eigen::Index(k), Eigen::Index(k));
  for (std::size_t r = 0; r < 64; ++r)
    for (std::size_t i = 0; i < k; ++i)
      for (std::size_t j = 0; j < k; ++j) h(Eigen::Index(i), Eigen::Index(j)) += double(calib[r * k + i]) * calib[r * k + j];
  for (bool sym : {true, false}) {
    INFO(std::string(sym ? "sym" : "asym"));
    gptq_options opt;
    opt.quant = {.bits = 4, .symmetric = sym, .gran = granularity::per_group, .group_size = 32};
    opt.act_order = true;
    const auto res = gptq_quantize(make_matrix_view(w, n, k), h, opt);
    const auto& wq = res.q;
    REQUIRE(wq.g_idx.size() == k);
    bool interleaved = false;  // act-order really scattered the groups along K
    for (std::size_t i = 1; i < k; ++i) interleaved |= wq.g_idx[i] < wq.g_idx[i - 1];
    REQUIRE(interleaved);
    const auto packed = gemm::pack_weights(wq, 4);
    REQUIRE(packed.k_order.size() == k);
    for (std::size_t c = 0; c < n; c += 3)
      for (std::size_t kk = 0; kk < k; ++kk) {
        const std::size_t col = packed.k_order[kk];
        REQUIRE(wq.g_idx[col] == kk / 32);
        const int zero = packed.zeros[packed.group_index(kk / 32, c)];
        REQUIRE(packed.raw(c, kk) - zero == wq.value(c, col) - (sym ? 0 : int(wq.zeros[wq.group_of(c, col)])));
      }
    const auto x = random_matrix(m, k, 73);
    quantized_activations xa;
    quantize_activations(cpu::scalar{}, make_matrix_view(x, m, k), 4, 1.0f, xa);
    const auto bias = random_matrix(1, n, 74);
    // The reference sums each group over its own (scattered) columns, in the packed order
    // of the group, which is the order of increasing column index.
    const auto expect = reference(xa, wq, bias);
    thread_pool pool(2);
    check_every_isa<gemm::w4a4_policy>(packed, xa, bias, expect, pool);
    // 16-bit activations gather their int16 levels in the packed order too.
    quantized_activations x16;
    quantize_activations(cpu::scalar{}, make_matrix_view(x, m, k), 16, 1.0f, x16);
    check_every_isa<gemm::w4a16i_policy>(packed, x16, bias, reference(x16, wq, bias), pool);
    // Weight-only: against the dequantized act-order weights in double.
    std::vector<float> y(m * n);
    gemm::weight_only_gemm<gemm::w4a32_policy<cpu::scalar>>{packed}(make_matrix_view(x, m, k), make_matrix_view(y, m, n), bias);
    for (std::size_t r = 0; r < m; ++r)
      for (std::size_t c = 0; c < n; ++c) {
        double d = bias[c];
        for (std::size_t i = 0; i < k; ++i) d += double(x[r * k + i]) * res.w_hat[c * k + i];
        REQUIRE(std::fabs(y[r * n + c] - d) <= 1e-4 * (1 + std::fabs(d)));
      }
  }
  // A g_idx whose groups are not all group_size long cannot be packed.
  auto bad = gptq_quantize(make_matrix_view(w, n, k), h, [] {
               gptq_options o;
               o.quant = {.bits = 4, .symmetric = true, .gran = granularity::per_group, .group_size = 32};
               o.act_order = true;
               return o;
             }()).q;
  bad.g_idx[0] = (bad.g_idx[0] + 1) % 8;
  CHECK_THROWS_WITH_AS(gemm::pack_weights(bad, 4), doctest::Contains("columns, expected 32"), error);
}

TEST_CASE_TEMPLATE("linear: fused online rotation + per-token quantization + GEMM equals the separate steps", policy,
                   gemm::w4a8_policy<cpu::scalar>, gemm::w4a16i_policy<cpu::scalar>, gemm::w4a16i_policy<cpu::avx2_backend>) {
  if (!cpu::supports(cpu::isa::avx2) && !std::is_same_v<typename policy::backend, cpu::scalar>) return;
  constexpr int bits = policy::activation_bits;
  for (std::size_t k : {96u, 256u}) {  // 96 = 12·8 (Kronecker), 256 = 2^8
    INFO("K " << k << " activation bits " << bits);
    const std::size_t m = 19, n = 48;
    const auto x = random_matrix(m, k, 40 + k);
    auto w = random_matrix(n, k, 41 + k, 0.05f);
    const auto bias = random_matrix(1, n, 42);
    const randomized_hadamard q(k, 7);
    fuse_input_rotation(make_matrix_view(w, n, k), q);  // W <- W·Qᵀ offline
    const auto wq = rtn_quantizer({.bits = 4, .gran = granularity::per_group, .group_size = 32}).quantize(make_matrix_view(std::as_const(w), n, k));
    linear<policy> layer(gemm::pack_weights(wq, 4), bias, bits, 0.95f);
    layer.with_online_rotation(q);
    std::vector<float> y(m * n);
    thread_pool pool(2);
    layer.forward(make_matrix_view(x, m, k), make_matrix_view(y, m, n), &pool);

    // The same by separate steps: rotate a copy, quantize, GEMM.
    auto xr = x;
    q.apply(make_matrix_view(xr, m, k));
    quantized_activations xa;
    quantize_activations(make_matrix_view(std::as_const(xr), m, k), bits, 0.95f, xa);
    std::vector<float> y2(m * n);
    gemm::integer_gemm<policy>(gemm::pack_weights(wq, 4))(xa, make_matrix_view(y2, m, n), bias);
    CHECK(layer.last_activations().data == xa.data);
    CHECK(std::memcmp(y.data(), y2.data(), y.size() * 4) == 0);

    // And it approximates the unrotated float layer (rotation is invisible up to quantization).
    const auto w0 = random_matrix(n, k, 41 + k, 0.05f);
    double err = 0, ref = 0;
    for (std::size_t r = 0; r < m; ++r)
      for (std::size_t c = 0; c < n; ++c) {
        double d = bias[c];
        for (std::size_t i = 0; i < k; ++i) d += double(x[r * k + i]) * w0[c * k + i];
        err += (d - y[r * n + c]) * (d - y[r * n + c]);
        ref += d * d;
      }
    CHECK(std::sqrt(err / ref) < 0.15);
  }
}

TEST_CASE("linear: bad rotation size, input width and bias are clear errors") {
  const auto wq = rtn_quantizer({.bits = 8}).quantize(make_matrix_view(random_matrix(8, 64, 1), 8, 64));
  linear<gemm::w8a8_policy<cpu::scalar>> layer(gemm::pack_weights(wq, 8));
  CHECK_THROWS_WITH_AS(layer.with_online_rotation(randomized_hadamard(32, 1)), doctest::Contains("size 32"), error);
  std::vector<float> x(3 * 60), y(3 * 8);
  CHECK_THROWS_WITH_AS(layer.forward(make_matrix_view(std::as_const(x), 3, 60), make_matrix_view(y, 3, 8)),
                       doctest::Contains("60 features"), error);
  CHECK_THROWS_AS(linear<gemm::w8a8_policy<cpu::scalar>>(gemm::pack_weights(wq, 8), std::vector<float>(3)), error);
}

namespace {
// W4A16 / W8A16 (bf16 activations) and W4A32 (fp32): the scalar kernel, the AVX-512 FMA
// kernel and the AVX512_BF16 kernel agree bit for bit, and equal the definition
// Σ_k dequant(w)·x + b (in double, on the activations the policy sees) within fp32 rounding.
template <int Bits, class Act>
void check_weight_only(std::size_t m, std::size_t n, std::size_t k, bool sym, std::size_t group, bool with_bias) {
  constexpr bool bf16 = std::is_same_v<Act, bfloat16>;
  INFO("W" << Bits << (bf16 ? "A16" : "A32") << " M " << m << " N " << n << " K " << k << " group " << group
           << (sym ? " sym" : " asym"));
  const auto x = random_matrix(m, k, m * 5 + k);
  const auto w = random_matrix(n, k, n * 11 + k, 0.05f);
  std::vector<float> bias = with_bias ? random_matrix(1, n, 4) : std::vector<float>{};
  quant_params wp{.bits = Bits, .symmetric = sym, .gran = group ? granularity::per_group : granularity::per_channel,
                  .group_size = group};
  const rtn_quantizer rtn(wp, cpu::isa::scalar);
  const auto wq = rtn.quantize(make_matrix_view(w, n, k));
  std::vector<float> wd(n * k);
  rtn.dequantize(wq, make_matrix_view(wd, n, k));
  const auto packed = gemm::pack_weights(wq, Bits);
  thread_pool pool(2);
  std::vector<float> ys(m * n, -1.0f);
  const gemm::weight_only_gemm<gemm::weight_only_policy<cpu::scalar, Bits, Act>> scalar_op{packed};
  scalar_op(make_matrix_view(x, m, k), make_matrix_view(ys, m, n), bias, &pool);
  for (std::size_t r = 0; r < m; ++r)
    for (std::size_t c = 0; c < n; ++c) {
      double d = with_bias ? bias[c] : 0.0, mag = std::fabs(d);
      for (std::size_t i = 0; i < k; ++i) {
        const double xv = bf16 ? to_float(to_bfloat16(x[r * k + i])) : x[r * k + i];
        d += double(wd[c * k + i]) * xv;
        mag += std::fabs(double(wd[c * k + i]) * xv);
      }
      // The kernel sums raw levels times x and subtracts zero·Σx: a few roundings of
      // quantities up to (levels + zero)·Σ|x|, hence the 16-level margin.
      REQUIRE(std::fabs(ys[r * n + c] - d) <= 1e-5 * mag * 16 + 1e-6);
    }
  if (cpu::supports(cpu::isa::avx512)) {
    for (bool dot : {false, true}) {
      std::vector<float> yv(m * n, -2.0f);
      const gemm::weight_only_gemm<gemm::weight_only_policy<cpu::avx512_backend, Bits, Act>> simd_op{packed, dot};
      CHECK(simd_op.uses_bf16_dot() == (dot && bf16 && Bits == 4 && cpu::has_avx512_bf16()));
      simd_op(make_matrix_view(x, m, k), make_matrix_view(yv, m, n), bias, &pool);
      REQUIRE(std::memcmp(ys.data(), yv.data(), ys.size() * 4) == 0);
    }
  }
}
}  // namespace

TEST_CASE("weight-only GEMM (W4A16, W8A16, W4A32): every kernel = scalar bit for bit = the definition (tails)") {
  const std::string bf16_status = cpu::has_avx512_bf16() ? "tested" : "not available on this CPU";
  MESSAGE("AVX512_BF16 kernel: ", bf16_status);
  for (std::size_t m : {1u, 3u, 17u})
    for (std::size_t n : {16u, 40u, 100u})
      for (bool sym : {true, false}) {
        check_weight_only<4, bfloat16>(m, n, 64, sym, 0, true);
        check_weight_only<4, bfloat16>(m, n, 256, sym, 128, false);
        check_weight_only<4, float>(m, n, 30, sym, 0, true);
        check_weight_only<8, bfloat16>(m, n, 30, sym, 0, true);
        check_weight_only<8, bfloat16>(m, n, 256, sym, 128, false);
      }
  check_weight_only<4, bfloat16>(1, 70, 11008, true, 128, true);  // decode down_proj
  check_weight_only<4, bfloat16>(2, 33, 11008, false, 0, false);
  check_weight_only<4, float>(1, 70, 11008, true, 128, true);
}

TEST_CASE("weight-only front end: AVX-512 = scalar bit for bit (bf16 rounding, k-pairs, group sums), non-finite found") {
  // Rounding ties, values that round up into the next binade or to Inf, denormals, and K
  // tails of the 16-wide loop.
  const float specials[] = {1.00390625f, 1.01171875f, -1.00390625f, 3.3961775e38f, 1e-40f, -0.0f, 0.0f, 65535.5f};
  for (std::size_t k : {1u, 4u, 15u, 16u, 17u, 30u, 64u, 130u, 11008u})
    for (std::size_t group : {std::size_t(4), std::size_t(12), std::size_t(16), std::size_t(128), k}) {
      if (group != k && (k % group != 0)) continue;
      INFO("K " << k << " group " << group);
      auto x = random_matrix(1, k, k + group, 3.0f);
      for (std::size_t i = 0; i < k; i += 7) x[i] = specials[(i / 7) % 8];
      const std::size_t kp = (k + 3) / 4 * 4, groups = (k + group - 1) / group;
      for (bool bf16 : {false, true}) {
        std::vector<float> xp_s(kp, -1.0f), xs_s(groups, -1.0f), xp_v(kp, -2.0f), xs_v(groups, -2.0f);
        std::vector<std::uint32_t> pr_s(kp / 2, 1), pr_v(kp / 2, 2);
        REQUIRE(detail::prepare_weight_only_row(cpu::scalar{}, x.data(), k, kp, group, bf16, xp_s.data(), xs_s.data(),
                                                bf16 ? pr_s.data() : nullptr) == k);
        for (std::size_t i = 0; i < kp; ++i)
          REQUIRE(xp_s[i] == (i < k ? (bf16 ? to_float(to_bfloat16(x[i])) : x[i]) : 0.0f));
        for (std::size_t g = 0; g < groups; ++g) {  // the lane order is a reordering of the exact sum
          double exact = 0, mag = 0;
          for (std::size_t i = g * group; i < std::min(k, (g + 1) * group); ++i) {
            exact += xp_s[i];
            mag += std::fabs(xp_s[i]);
          }
          if (mag < 1e38) REQUIRE(std::fabs(xs_s[g] - exact) <= 1e-6 * mag);  // else it may overflow
        }
        if (bf16)
          for (std::size_t q = 0; q < kp / 4; ++q) {
            REQUIRE(pr_s[2 * q] == (std::uint32_t(to_bfloat16(xp_s[4 * q]).bits) |
                                    std::uint32_t(to_bfloat16(xp_s[4 * q + 2]).bits) << 16));
            REQUIRE(pr_s[2 * q + 1] == (std::uint32_t(to_bfloat16(xp_s[4 * q + 1]).bits) |
                                        std::uint32_t(to_bfloat16(xp_s[4 * q + 3]).bits) << 16));
          }
        if (!cpu::supports(cpu::isa::avx512)) continue;
        REQUIRE(detail::prepare_weight_only_row(cpu::avx512_backend{}, x.data(), k, kp, group, bf16, xp_v.data(),
                                                xs_v.data(), bf16 ? pr_v.data() : nullptr) == k);
        REQUIRE(std::memcmp(xp_s.data(), xp_v.data(), kp * 4) == 0);
        REQUIRE(std::memcmp(xs_s.data(), xs_v.data(), groups * 4) == 0);
        if (bf16) REQUIRE(pr_s == pr_v);
      }
      // The first non-finite value is found wherever it sits, by both front ends.
      for (std::size_t at : {std::size_t(0), k / 2, k - 1})
        for (float bad : {NAN, INFINITY, -INFINITY}) {
          auto y = x;
          y[at] = bad;
          if (at + 1 < k) y[k - 1] = NAN;  // a later one must not be reported
          std::vector<float> xp(kp), xs(groups);
          std::vector<std::uint32_t> pr(kp / 2);
          CHECK(detail::prepare_weight_only_row(cpu::scalar{}, y.data(), k, kp, group, true, xp.data(), xs.data(),
                                                pr.data()) == at);
          if (cpu::supports(cpu::isa::avx512))
            CHECK(detail::prepare_weight_only_row(cpu::avx512_backend{}, y.data(), k, kp, group, true, xp.data(),
                                                  xs.data(), pr.data()) == at);
        }
    }
}

TEST_CASE("weight-only GEMM: bf16 activations, and clear errors") {
  const std::size_t m = 3, n = 40, k = 96;
  const auto x = random_matrix(m, k, 1);
  std::vector<bfloat16> xb(x.size());
  std::vector<float> xr(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    xb[i] = to_bfloat16(x[i]);
    xr[i] = to_float(xb[i]);
  }
  const auto w = random_matrix(n, k, 2, 0.05f);
  const auto wq = rtn_quantizer({.bits = 4}).quantize(make_matrix_view(w, n, k));
  const gemm::weight_only_gemm<gemm::w4a16_policy<cpu::scalar>> op(gemm::pack_weights(wq, 4));
  std::vector<float> y1(m * n), y2(m * n);
  op(make_matrix_view(xr, m, k), make_matrix_view(y1, m, n));
  op(matrix_view<const bfloat16>(xb.data(), m, k, k), make_matrix_view(y2, m, n));
  CHECK(y1 == y2);
  CHECK_THROWS_WITH_AS(op(make_matrix_view(xr, m, k).block_rows(0, 2), make_matrix_view(y1, m, n)),
                       doctest::Contains("output is 3x40, expected 2x40"), error);
  CHECK_THROWS_WITH_AS(op(make_matrix_view(x, 1, k - 1), make_matrix_view(y1, 1, n)), doctest::Contains("K = 95"), error);
  CHECK_THROWS_WITH_AS(gemm::weight_only_gemm<gemm::w8a16_policy<cpu::scalar>>(gemm::pack_weights(wq, 4)),
                       doctest::Contains("expects 8-bit packed weights, got 4-bit"), error);
  std::vector<float> bad = xr;
  bad[5] = NAN;
  CHECK_THROWS_WITH_AS(op(make_matrix_view(bad, m, k), make_matrix_view(y1, m, n)),
                       doctest::Contains("non-finite activation nan at row 0, column 5"), error);
}

TEST_CASE("GEMM epilogues write bf16 output: the fp32 result rounded to nearest even") {
  const std::size_t m = 5, n = 70, k = 128;
  const auto x = random_matrix(m, k, 7);
  const auto w = random_matrix(n, k, 8, 0.05f);
  const auto bias = random_matrix(1, n, 9);
  const auto wq = rtn_quantizer({.bits = 4, .gran = granularity::per_group, .group_size = 32}).quantize(make_matrix_view(w, n, k));
  const auto packed = gemm::pack_weights(wq, 4);
  std::vector<float> y32(m * n);
  std::vector<bfloat16> y16(m * n);
  auto same = [&] {
    for (std::size_t i = 0; i < y32.size(); ++i) REQUIRE(y16[i].bits == to_bfloat16(y32[i]).bits);
  };
  const gemm::integer_gemm<gemm::w4a4_policy<cpu::scalar>> op(packed);
  quantized_activations xa;
  quantize_activations(make_matrix_view(x, m, k), 4, 1.0f, xa);
  op(xa, make_matrix_view(y32, m, n), bias);
  op(xa, matrix_view<bfloat16>(y16.data(), m, n, n), bias);
  same();
  const gemm::weight_only_gemm<gemm::w4a16_policy<cpu::scalar>> wo(packed);
  wo(make_matrix_view(x, m, k), make_matrix_view(y32, m, n), bias);
  wo(make_matrix_view(x, m, k), matrix_view<bfloat16>(y16.data(), m, n, n), bias);
  same();
  linear<gemm::w4a4_policy<cpu::scalar>> layer(packed, bias, 4);
  layer.forward(make_matrix_view(x, m, k), make_matrix_view(y32, m, n));
  layer.forward(make_matrix_view(x, m, k), matrix_view<bfloat16>(y16.data(), m, n, n));
  same();
}
