#include <doctest/doctest.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include <quarot/core.hpp>

using namespace quarot;

TEST_CASE("error messages name the bad value") {
  std::vector<float> buf(10);
  try {
    (void)make_matrix_view(buf, 3, 4);
    FAIL("expected an error");
  } catch (const error& e) {
    CHECK(e.code() == errc::invalid_argument);
    CHECK(std::string(e.what()).find("10 elements") != std::string::npos);
    CHECK(std::string(e.what()).find("3x4") != std::string::npos);
  }
  CHECK_THROWS_AS((void)make_matrix_view(buf, 2, 4, 3), error);  // stride < cols
  CHECK_NOTHROW((void)make_matrix_view(buf, 2, 4, 6));            // 6 + 4 = 10 fits
  CHECK_THROWS_AS((void)make_matrix_view(buf, 2, 4, 7), error);   // 7 + 4 = 11 does not
  CHECK_THROWS_AS((void)make_matrix_view(static_cast<float*>(nullptr), 2, 4), error);
  CHECK_NOTHROW((void)make_matrix_view(static_cast<float*>(nullptr), 0, 4));
}

TEST_CASE("matrix_view indexing and blocks") {
  std::vector<int> v(20);
  std::iota(v.begin(), v.end(), 0);
  auto m = make_matrix_view(v, 4, 3, 5);
  CHECK(m(2, 1) == 11);
  CHECK(m.row_span(3)[2] == 17);
  CHECK(!m.contiguous());
  auto b = m.block_rows(1, 2);
  CHECK(b(0, 0) == 5);
  CHECK(b.rows == 2);
  matrix_view<const int> c = m;
  CHECK(c(3, 0) == 15);
}

TEST_CASE("ISA parsing, detection and dispatch") {
  CHECK(cpu::parse_isa("avx2") == cpu::isa::avx2);
  CHECK_THROWS_WITH_AS(cpu::parse_isa("sse9"), doctest::Contains("sse9"), error);
  CHECK(cpu::supports(cpu::isa::scalar));
  CHECK(cpu::supports(cpu::detected_isa()));
  std::string name = cpu::dispatch(cpu::isa::scalar, [](auto tag) { return std::string(decltype(tag)::name()); });
  CHECK(name == "scalar");
  const auto best = cpu::detected_isa();
  name = cpu::dispatch(best, [](auto tag) { return std::string(decltype(tag)::name()); });
  const char* expect[] = {"scalar", "avx2", "avx512bw", "avx512vnni"};
  CHECK(name == expect[static_cast<int>(best)]);
  MESSAGE("detected CPU ISA: " << cpu::to_string(best));
  static_assert(cpu_backend<cpu::scalar>);
  static_assert(cpu_backend<cpu::avx512_backend>);
  static_assert(!cpu_backend<cuda::device>);
  static_assert(std::is_base_of_v<xsimd::avx512bw, cpu::avx512vnni>);
}

TEST_CASE("thread pool covers the range once, propagates exceptions, nests serially") {
  thread_pool pool(2);
  CHECK(pool.size() == 2);
  for (std::size_t n : {1u, 2u, 3u, 17u, 1000u}) {
    std::vector<std::atomic<int>> hits(n);
    pool.parallel_for(n, [&](std::size_t b, std::size_t e) {
      for (std::size_t i = b; i < e; ++i) hits[i]++;
    });
    for (auto& h : hits) CHECK(h.load() == 1);
  }
  CHECK_THROWS_AS(pool.parallel_for(10, [](std::size_t b, std::size_t) {
    if (b > 0) throw std::runtime_error("boom");
  }),
                  std::runtime_error);
  std::atomic<int> inner{0};
  pool.parallel_for(4, [&](std::size_t, std::size_t) {
    pool.parallel_for(3, [&](std::size_t b, std::size_t e) { inner += int(e - b); });
  });
  CHECK(inner.load() == 6);  // two outer chunks, each running the inner loop serially
  CHECK_THROWS_AS(thread_pool(0), error);
}

TEST_CASE("thread pool spin window: 0 always blocks, any window covers the range; bad windows are errors") {
  using std::chrono::microseconds;
  for (auto spin : {microseconds{0}, microseconds{1}, thread_pool::default_spin_window, microseconds{20000}}) {
    INFO("spin " << spin.count() << " us");
    thread_pool pool(3, spin);
    CHECK(pool.spin_window() == spin);
    for (int call = 0; call < 200; ++call) {  // back-to-back calls: workers both asleep and spinning
      std::vector<std::atomic<int>> hits(37);
      pool.parallel_for(hits.size(), [&](std::size_t b, std::size_t e) {
        for (std::size_t i = b; i < e; ++i) hits[i]++;
      });
      for (auto& h : hits) REQUIRE(h.load() == 1);
      if (call % 50 == 49) std::this_thread::sleep_for(microseconds{300});  // past short windows: workers block
    }
  }
  CHECK_THROWS_WITH_AS(thread_pool(2, microseconds{-5}), doctest::Contains("got -5 us"), error);
  CHECK_THROWS_WITH_AS(thread_pool(2, std::chrono::seconds{2}), doctest::Contains("got 2000000 us"), error);
}

TEST_CASE("xoshiro256** golden values (independent implementation) and signs") {
  xoshiro256 rng(42);
  CHECK(rng() == 0x15780b2e0c2ec716ull);
  CHECK(rng() == 0x6104d9866d113a7eull);
  CHECK(rng() == 0xae17533239e499a1ull);
  const auto s = random_signs(32, 42);
  std::string str;
  for (float v : s) str += v > 0 ? '+' : '-';
  CHECK(str == "++---------+-+------+++-+++--++-");
  // Box-Muller normals: mean ~ 0, variance ~ 1.
  xoshiro256 g(7);
  double sum = 0, sq = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    const double v = g.normal();
    sum += v;
    sq += v * v;
  }
  CHECK(std::fabs(sum / n) < 0.03);
  CHECK(std::fabs(sq / n - 1.0) < 0.05);
}

namespace {
// Reference binary16 decode by the definition (independent of quarot's bit tricks).
double half_value(std::uint16_t h) {
  const int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
  double v;
  if (e == 0) v = std::ldexp(m, -24);
  else if (e == 31) v = m ? std::numeric_limits<double>::quiet_NaN() : std::numeric_limits<double>::infinity();
  else v = std::ldexp(1024 + m, e - 25);
  return s ? -v : v;
}
}  // namespace

TEST_CASE("fp16 conversion: exact decode of all 65536 codes, RNE encode round-trips") {
  for (std::uint32_t c = 0; c < 65536; ++c) {
    const half h{static_cast<std::uint16_t>(c)};
    const double ref = half_value(h.bits);
    const float f = to_float(h);
    if (std::isnan(ref)) {
      CHECK(std::isnan(f));
      CHECK((to_half(f).bits & 0x7e00) == 0x7e00);
      continue;
    }
    REQUIRE(double(f) == ref);
    REQUIRE(to_half(f).bits == h.bits);  // every half is exactly representable
  }
  // Ties round to even, overflow to Inf, tiny to zero.
  CHECK(to_half(1.0f + 1.0f / 2048).bits == to_half(1.0f).bits);         // tie -> even (1.0)
  CHECK(to_half(1.0f + 3.0f / 2048).bits == to_half(1.0f).bits + 2);     // tie -> even (up)
  CHECK(to_half(65520.0f).bits == 0x7c00);
  CHECK(to_half(65519.0f).bits == 0x7bff);
  CHECK(to_half(-1e-10f).bits == 0x8000);
  CHECK(to_half(std::ldexp(1.0f, -25)).bits == 0x0000);                      // tie between 0 and 2^-24 -> 0
  CHECK(to_half(std::ldexp(3.0f, -25)).bits == 0x0002);                      // 1.5 ulp -> 2
}

TEST_CASE("bf16 conversion: RNE, NaN stays NaN") {
  CHECK(to_bfloat16(1.0f).bits == 0x3f80);
  CHECK(to_float(to_bfloat16(1.0f)) == 1.0f);
  const float tie = detail::bits_float(0x3f808000u);  // halfway between 0x3f80 and 0x3f81
  CHECK(to_bfloat16(tie).bits == 0x3f80);
  CHECK(to_bfloat16(detail::bits_float(0x3f818000u)).bits == 0x3f82);
  CHECK(std::isnan(to_float(to_bfloat16(std::numeric_limits<float>::quiet_NaN()))));
  CHECK(to_bfloat16(std::numeric_limits<float>::infinity()).bits == 0x7f80);
  for (std::uint32_t c = 0; c < 65536; c += 7) {
    const bfloat16 b{static_cast<std::uint16_t>(c)};
    const float f = to_float(b);
    if (!std::isnan(f)) CHECK(to_bfloat16(f).bits == b.bits);
  }
}

TEST_CASE("int4 packing round trip, layout and range errors") {
  std::vector<std::int8_t> v = {-8, 7, 0, -1, 3};
  std::vector<std::uint8_t> packed(int4_packed_size(v.size()));
  pack_int4(v, packed);
  CHECK(packed.size() == 3);
  CHECK(packed[0] == 0x78);  // low nibble -8 (0x8), high nibble 7
  CHECK(packed[1] == 0xF0);  // 0 low, -1 (0xF) high
  CHECK(packed[2] == 0x03);  // odd tail: high nibble zero
  std::vector<std::int8_t> back(v.size());
  unpack_int4(packed, back);
  CHECK(back == v);
  std::vector<std::int8_t> bad = {1, 8};
  CHECK_THROWS_WITH_AS(pack_int4(bad, packed), doctest::Contains("value 8 at index 1"), error);
  std::vector<std::uint8_t> u = {0, 15, 9};
  pack_uint4(u, packed);
  std::vector<std::uint8_t> ub(3);
  unpack_uint4(packed, ub);
  CHECK(ub == u);
  std::vector<std::uint8_t> too_short(1);
  CHECK_THROWS_AS(pack_int4(v, too_short), error);
  CHECK_THROWS_AS(unpack_int4(too_short, back), error);
}

namespace {
struct my_transform {
  std::size_t size() const { return 4; }
  void apply(matrix_view<float>, thread_pool* = nullptr) const {}
  void apply_transpose(matrix_view<float>, thread_pool* = nullptr) const {}
};
struct not_a_transform {
  std::size_t size() const { return 4; }
};
struct my_policy {
  using backend = cpu::scalar;
  using weight_element = std::int8_t;
  using activation_element = std::int8_t;
  using accumulator = std::int32_t;
  static constexpr int weight_bits = 8, activation_bits = 8, tile_m = 4, tile_n = 16, tile_k = 64;
};
}  // namespace

TEST_CASE("concepts accept conforming user types and reject others") {
  static_assert(orthogonal_transform<my_transform>);
  static_assert(!orthogonal_transform<not_a_transform>);
  static_assert(gemm_policy<my_policy>);
  static_assert(!gemm_policy<my_transform>);
  CHECK(true);
}

TEST_CASE("int4 interleaved layout: byte j of a 64-block holds elements j and j + 32") {
  std::vector<std::int8_t> v(100);
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<std::int8_t>(int(i % 16) - 8);
  std::vector<std::uint8_t> packed(int4_interleaved_size(v.size()));
  CHECK(packed.size() == 64);  // two blocks, the second zero-padded
  pack_int4_interleaved(v, packed);
  CHECK((packed[0] & 0x0f) == (std::uint8_t(v[0]) & 0x0f));
  CHECK((packed[0] >> 4) == (std::uint8_t(v[32]) & 0x0f));
  CHECK((packed[32 + 5] & 0x0f) == (std::uint8_t(v[64 + 5]) & 0x0f));
  CHECK((packed[32 + 3] >> 4) == (std::uint8_t(v[96 + 3]) & 0x0f));
  CHECK((packed[32 + 5] >> 4) == 0);  // element 101 does not exist: padding
  std::vector<std::int8_t> back(v.size());
  unpack_int4_interleaved(packed, back);
  CHECK(back == v);
  std::vector<std::int8_t> bad = {0, -9};
  CHECK_THROWS_WITH_AS(pack_int4_interleaved(bad, packed), doctest::Contains("-9 at index 1"), error);
  std::vector<std::uint8_t> small(31);
  CHECK_THROWS_AS(pack_int4_interleaved(v, small), error);
}
