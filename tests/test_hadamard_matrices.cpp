#include <doctest/doctest.h>

#include <string>
#include <vector>

#include <quarot/transform/hadamard_matrices.hpp>

using namespace quarot;

namespace {
// Entries ±1 and H·Hᵀ = m·I exactly (integer arithmetic).
bool is_hadamard(const hadamard_matrix& h) {
  const std::size_t m = h.order;
  if (h.entries.size() != m * m) return false;
  for (auto v : h.entries)
    if (v != 1 && v != -1) return false;
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t j = i; j < m; ++j) {
      long dot = 0;
      for (std::size_t k = 0; k < m; ++k) dot += h.entries[i * m + k] * h.entries[j * m + k];
      if (dot != (i == j ? long(m) : 0)) return false;
    }
  return true;
}
}  // namespace

TEST_CASE("every supported order up to 256 gives a Hadamard matrix") {
  int count = 0;
  std::string missing;
  for (std::size_t m = 1; m <= 256; ++m) {
    if (!hadamard_order_supported(m)) {
      if (m % 4 == 0) missing += std::to_string(m) + " ";
      continue;
    }
    const auto h = make_hadamard_matrix(m);
    INFO("order " << m << " via " << h.construction);
    REQUIRE(is_hadamard(h));
    ++count;
  }
  MESSAGE(count << " orders <= 256 constructed; multiples of 4 without a construction: " << missing);
  CHECK(count >= 60);
  // The multiples of 4 up to 256 out of reach of Paley, the stored Williamson
  // quadruples and doubling: 188 = 4·47 and 236 = 4·59 (187, 93, 235, 117 are not prime
  // powers; no quadruple of order 47 or 59 is stored).
  CHECK(missing == "188 236 ");
}

TEST_CASE("orders needed by real models") {
  // m = dense factor of hidden/FFN/head sizes: 12 (BERT, MiniLM, Llama FFN 3·2^k), 20,
  // 28 (14336 = 28·512), 36 (SmolLM2 576, Gemma-2 2304/9216), 40, 52, 60 (SmolLM2-360M 960),
  // 68 (Qwen3-14B 17408 = 68·256), 76 (Qwen2.5-0.5B 4864), 100 (Qwen3-32B 25600),
  // 108 (13824), 140 (8960, 17920), 148 (18944), 156, 172 (11008), 924 (Qwen2.5-72B 29568).
  for (std::size_t m : {12, 20, 28, 36, 40, 52, 60, 68, 76, 100, 108, 140, 148, 156, 172, 924}) {
    INFO("order " << m);
    REQUIRE(hadamard_order_supported(m));
    const auto h = make_hadamard_matrix(m);
    CHECK(is_hadamard(h));
  }
  CHECK(make_hadamard_matrix(172).construction == "Williamson (quadruple of order 43)");
  CHECK(make_hadamard_matrix(156).construction == "Williamson (quadruple of order 39)");
  CHECK(make_hadamard_matrix(28).construction == "Paley I over GF(27)");
  CHECK(make_hadamard_matrix(52).construction == "Paley II over GF(25)");
  CHECK(make_hadamard_matrix(40).construction == "Paley I over GF(19) doubled");
}

TEST_CASE("Paley constructions over prime and prime-power fields") {
  for (std::size_t q : {3, 7, 11, 19, 23, 27, 43, 243}) {
    INFO("Paley I, q = " << q);
    CHECK(is_hadamard(paley1_hadamard(q)));
  }
  for (std::size_t q : {5, 9, 13, 17, 25, 29, 49, 81, 121, 125}) {
    INFO("Paley II, q = " << q);
    CHECK(is_hadamard(paley2_hadamard(q)));
  }
  CHECK_THROWS_WITH_AS(paley1_hadamard(25), doctest::Contains("q = 25"), error);  // 25 ≡ 1 (mod 4)
  CHECK_THROWS_WITH_AS(paley1_hadamard(15), doctest::Contains("q = 15"), error);  // not a prime power
  CHECK_THROWS_AS(paley2_hadamard(7), error);
}

TEST_CASE("GF(p^e) arithmetic satisfies the field axioms") {
  for (std::uint64_t q : {9u, 25u, 27u, 49u, 8u}) {
    const detail::galois_field f(q);
    INFO("GF(" << q << ")");
    for (std::uint64_t a = 0; a < q; ++a) {
      bool has_inverse = a == 0;
      for (std::uint64_t b = 0; b < q; ++b) {
        REQUIRE(f.add(a, b) == f.add(b, a));
        REQUIRE(f.mul(a, b) == f.mul(b, a));
        REQUIRE(f.sub(f.add(a, b), b) == a);
        if (f.mul(a, b) == 1) has_inverse = true;
        if (q % 2 == 1) REQUIRE(f.chi(f.mul(a, b)) == f.chi(a) * f.chi(b));
        const std::uint64_t c = (a * 7 + b * 3) % q;
        REQUIRE(f.mul(a, f.add(b, c)) == f.add(f.mul(a, b), f.mul(a, c)));
      }
      REQUIRE(has_inverse);
    }
  }
  CHECK_THROWS_AS(detail::galois_field(12), error);
}

TEST_CASE("Williamson table entries and doubling") {
  int count = 0;
  for (const auto& e : detail::williamson_table) {
    INFO("Williamson w = " << e.w);
    CHECK(is_hadamard(williamson_hadamard(std::size_t(4 * e.w))));
    ++count;
  }
  CHECK(count == 26);
  CHECK(is_hadamard(double_hadamard(make_hadamard_matrix(12))));
  CHECK(is_hadamard(sylvester_hadamard(64)));
  CHECK_THROWS_WITH_AS(williamson_hadamard(4 * 47), doctest::Contains("188"), error);
}

TEST_CASE("unsupported orders are clear errors") {
  CHECK_THROWS_WITH_AS(make_hadamard_matrix(6), doctest::Contains("multiple of 4"), error);
  CHECK_THROWS_WITH_AS(make_hadamard_matrix(188), doctest::Contains("order 188"), error);
  CHECK_THROWS_AS(make_hadamard_matrix(0), error);
  CHECK_THROWS_AS(sylvester_hadamard(12), error);
  try {
    (void)make_hadamard_matrix(188);
  } catch (const error& e) {
    CHECK(e.code() == errc::unsupported);
  }
}
