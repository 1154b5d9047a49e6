// quarot — Hadamard matrices of orders that are not powers of two.
//
// A Hadamard matrix H of order m has entries ±1 and H·Hᵀ = m·I; m is 1, 2 or a multiple
// of 4. The constructions here (each verified by the tests for every order offered):
//   Sylvester      m = 2^k                         H_2m = [[H, H], [H, -H]]
//   Paley I        m = q + 1, q ≡ 3 (mod 4)        q a prime power (Paley 1933)
//   Paley II       m = 2(q + 1), q ≡ 1 (mod 4)     q a prime power (Paley 1933)
//   Williamson     m = 4w, w in a stored table     (Williamson 1944; see williamson_table.hpp)
//   doubling       m = 2·m', m' constructible      Sylvester's step on any Hadamard matrix
// Prime-power fields GF(p^e) are built here from a primitive polynomial found by search,
// so Paley works over GF(25), GF(27), GF(49), ... as well as over prime fields.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "../core/error.hpp"

#define QUAROT_TRANSFORM_INTERNAL
#include "detail/williamson_table.hpp"
#undef QUAROT_TRANSFORM_INTERNAL

namespace quarot {

/// A dense ±1 Hadamard matrix, row-major, with the construction it came from.
struct hadamard_matrix {
  std::size_t order = 0;
  std::vector<std::int8_t> entries;  ///< order x order, row-major, each +1 or -1
  std::string construction;          ///< e.g. "Paley I over GF(27)"

  [[nodiscard]] int operator()(std::size_t i, std::size_t j) const noexcept { return entries[i * order + j]; }
};

namespace detail {

/// q = p^e with p prime, e >= 1; nullopt otherwise.
struct prime_power {
  std::uint64_t p, e;
};
inline std::optional<prime_power> as_prime_power(std::uint64_t q) {
  if (q < 2) return std::nullopt;
  std::uint64_t p = 0;
  for (std::uint64_t d = 2; d * d <= q; ++d)
    if (q % d == 0) {
      p = d;
      break;
    }
  if (p == 0) return prime_power{q, 1};
  std::uint64_t e = 0;
  while (q % p == 0) {
    q /= p;
    ++e;
  }
  if (q != 1) return std::nullopt;
  return prime_power{p, e};
}

/// The finite field GF(p^e). Elements are coded 0..q-1 as base-p digit strings of
/// their polynomial coefficients; multiplication goes through log/exp tables of a
/// primitive element x (a root of a primitive polynomial found by search).
class galois_field {
 public:
  explicit galois_field(std::uint64_t q) : q_(q) {
    const auto pp = as_prime_power(q);
    require(pp.has_value(), "GF(", q, "): ", q, " is not a prime power");
    require(q <= (1u << 20), "GF(", q, "): field too large for table arithmetic (max 2^20)");
    p_ = pp->p;
    e_ = pp->e;
    build_tables();
  }

  [[nodiscard]] std::uint64_t size() const noexcept { return q_; }
  [[nodiscard]] std::uint64_t characteristic() const noexcept { return p_; }

  [[nodiscard]] std::uint64_t add(std::uint64_t a, std::uint64_t b) const noexcept { return digitwise(a, b, +1); }
  [[nodiscard]] std::uint64_t sub(std::uint64_t a, std::uint64_t b) const noexcept { return digitwise(a, b, -1); }
  [[nodiscard]] std::uint64_t mul(std::uint64_t a, std::uint64_t b) const noexcept {
    if (a == 0 || b == 0) return 0;
    return exp_[(log_[a] + log_[b]) % (q_ - 1)];
  }
  /// Quadratic character: 0 for 0, +1 for a nonzero square, -1 otherwise. With x
  /// primitive, a = x^k is a square exactly when k is even (q odd).
  [[nodiscard]] int chi(std::uint64_t a) const noexcept {
    if (a == 0) return 0;
    return (log_[a] % 2 == 0) ? 1 : -1;
  }

 private:
  std::uint64_t digitwise(std::uint64_t a, std::uint64_t b, int sign) const noexcept {
    std::uint64_t r = 0, place = 1;
    for (std::uint64_t i = 0; i < e_; ++i) {
      const std::uint64_t da = a % p_, db = b % p_;
      const std::uint64_t d = sign > 0 ? (da + db) % p_ : (da + p_ - db) % p_;
      r += d * place;
      place *= p_;
      a /= p_;
      b /= p_;
    }
    return r;
  }

  // Multiplies the element coded `a` by x modulo the monic polynomial whose lower
  // coefficients are `f` (x^e = -(f[e-1] x^{e-1} + ... + f[0])).
  std::uint64_t times_x(std::uint64_t a, const std::vector<std::uint64_t>& f) const {
    std::vector<std::uint64_t> c(e_ + 1, 0);
    for (std::uint64_t i = 0; i < e_; ++i) {
      c[i + 1] = a % p_;
      a /= p_;
    }
    const std::uint64_t top = c[e_];
    for (std::uint64_t i = 0; i < e_; ++i) c[i] = (c[i] + (p_ - (top * f[i]) % p_)) % p_;
    std::uint64_t r = 0, place = 1;
    for (std::uint64_t i = 0; i < e_; ++i) {
      r += c[i] * place;
      place *= p_;
    }
    return r;
  }

  void build_tables() {
    exp_.assign(q_ - 1, 0);
    log_.assign(q_, 0);
    if (q_ == 2) {
      exp_[0] = 1;
      log_[1] = 0;
      return;
    }
    if (e_ == 1) {
      // Prime field: the first g = 2, 3, ... of order q-1 is a primitive root.
      for (std::uint64_t g = 2; g < q_; ++g)
        if (try_generator([&](std::uint64_t v) { return (v * g) % q_; })) return;
      fail(errc::numerical, "GF(", q_, "): no primitive root found");
    }
    // Extension field: search monic degree-e polynomials for one where x has order q-1
    // (such a polynomial is primitive, hence irreducible).
    std::uint64_t count = 1;
    for (std::uint64_t i = 0; i < e_; ++i) count *= p_;
    for (std::uint64_t code = 1; code < count; ++code) {  // f[0] != 0 needed, code 0 skipped
      std::vector<std::uint64_t> f(e_);
      std::uint64_t c = code;
      for (std::uint64_t i = 0; i < e_; ++i) {
        f[i] = c % p_;
        c /= p_;
      }
      if (f[0] == 0) continue;
      if (try_generator([&](std::uint64_t v) { return times_x(v, f); })) return;
    }
    fail(errc::numerical, "GF(", q_, "): no primitive polynomial found");
  }

  // Walks v = 1, g, g^2, ...; succeeds when g has order q-1, filling the tables.
  template <class Step>
  bool try_generator(Step step) {
    std::vector<std::uint8_t> seen(q_, 0);
    std::uint64_t v = 1;
    for (std::uint64_t k = 0; k < q_ - 1; ++k) {
      if (v == 0 || seen[v]) return false;
      seen[v] = 1;
      exp_[k] = v;
      log_[v] = k;
      v = step(v);
    }
    return v == 1;
  }

  std::uint64_t q_, p_ = 0, e_ = 0;
  std::vector<std::uint64_t> exp_, log_;
};

inline hadamard_matrix make_hadamard(std::size_t m, std::string how) {
  hadamard_matrix h;
  h.order = m;
  h.entries.assign(m * m, 1);
  h.construction = std::move(how);
  return h;
}

}  // namespace detail

/// Sylvester's construction of order 2^k (natural order: H[i][j] = (-1)^popcount(i & j)).
inline hadamard_matrix sylvester_hadamard(std::size_t m) {
  detail::require(m >= 1 && (m & (m - 1)) == 0, "Sylvester Hadamard order ", m, " is not a power of two");
  auto h = detail::make_hadamard(m, "Sylvester");
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t j = 0; j < m; ++j) h.entries[i * m + j] = (__builtin_popcountll(i & j) & 1) ? -1 : 1;
  return h;
}

/// Paley's first construction, order q + 1 for a prime power q ≡ 3 (mod 4):
/// H = I + S with S = [[0, 1ᵀ], [-1, Q]], Q[a][b] = χ(a - b) the Jacobsthal matrix;
/// Q is skew for q ≡ 3 (mod 4), so S·Sᵀ = q·I and H·Hᵀ = (q + 1)·I.
inline hadamard_matrix paley1_hadamard(std::size_t q) {
  const auto pp = detail::as_prime_power(q);
  detail::require(pp.has_value() && q % 4 == 3, "Paley I needs a prime power q ≡ 3 (mod 4), got q = ", q);
  const detail::galois_field f(q);
  const std::size_t m = q + 1;
  auto h = detail::make_hadamard(m, detail::concat("Paley I over GF(", q, ")"));
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t j = 0; j < m; ++j) {
      int s;
      if (i == 0) s = (j == 0) ? 0 : 1;
      else if (j == 0) s = -1;
      else s = f.chi(f.sub(i - 1, j - 1));
      h.entries[i * m + j] = static_cast<std::int8_t>(s + (i == j ? 1 : 0));
    }
  return h;
}

/// Paley's second construction, order 2(q + 1) for a prime power q ≡ 1 (mod 4): with the
/// symmetric conference matrix C = [[0, 1ᵀ], [1, Q]],
/// H = C ⊗ [[1, 1], [1, -1]] + I ⊗ [[1, -1], [-1, -1]].
inline hadamard_matrix paley2_hadamard(std::size_t q) {
  const auto pp = detail::as_prime_power(q);
  detail::require(pp.has_value() && q % 4 == 1, "Paley II needs a prime power q ≡ 1 (mod 4), got q = ", q);
  const detail::galois_field f(q);
  const std::size_t c = q + 1, m = 2 * c;
  auto h = detail::make_hadamard(m, detail::concat("Paley II over GF(", q, ")"));
  for (std::size_t i = 0; i < c; ++i)
    for (std::size_t j = 0; j < c; ++j) {
      int cij;
      if (i == 0) cij = (j == 0) ? 0 : 1;
      else if (j == 0) cij = 1;
      else cij = f.chi(f.sub(i - 1, j - 1));
      for (int a = 0; a < 2; ++a)
        for (int b = 0; b < 2; ++b) {
          int v;
          if (cij != 0) v = cij * ((a == 1 && b == 1) ? -1 : 1);
          else v = (a == 0 && b == 0) ? 1 : -1;  // diagonal block [[1, -1], [-1, -1]]
          h.entries[(2 * i + a) * m + (2 * j + b)] = static_cast<std::int8_t>(v);
        }
    }
  return h;
}

/// Orders 4w for which a Williamson quadruple is stored.
inline bool has_williamson(std::size_t w) noexcept {
  for (const auto& e : detail::williamson_table)
    if (static_cast<std::size_t>(e.w) == w) return true;
  return false;
}

/// Williamson's construction of order 4w from the stored quadruple (A, B, C, D of
/// symmetric circulants): H = [[A, B, C, D], [-B, A, -D, C], [-C, D, A, -B], [-D, -C, B, A]].
inline hadamard_matrix williamson_hadamard(std::size_t m) {
  detail::require(m % 4 == 0 && has_williamson(m / 4), "no stored Williamson quadruple for order ", m);
  const std::size_t w = m / 4;
  const detail::williamson_quadruple* quad = nullptr;
  for (const auto& e : detail::williamson_table)
    if (static_cast<std::size_t>(e.w) == w) quad = &e;
  auto h = detail::make_hadamard(m, detail::concat("Williamson (quadruple of order ", w, ")"));
  // Block (bi, bj) is sign * circulant(which).
  static constexpr int which[4][4] = {{0, 1, 2, 3}, {1, 0, 3, 2}, {2, 3, 0, 1}, {3, 2, 1, 0}};
  static constexpr int sign[4][4] = {{1, 1, 1, 1}, {-1, 1, -1, 1}, {-1, 1, 1, -1}, {-1, -1, 1, 1}};
  for (std::size_t bi = 0; bi < 4; ++bi)
    for (std::size_t bj = 0; bj < 4; ++bj) {
      const std::string_view row = quad->rows[which[bi][bj]];
      for (std::size_t i = 0; i < w; ++i)
        for (std::size_t j = 0; j < w; ++j) {
          const int v = row[(j + w - i) % w] == '+' ? 1 : -1;  // circulant: C[i][j] = a[(j - i) mod w]
          h.entries[(bi * w + i) * m + bj * w + j] = static_cast<std::int8_t>(sign[bi][bj] * v);
        }
    }
  return h;
}

/// Sylvester's doubling step applied to any Hadamard matrix: [[H, H], [H, -H]].
inline hadamard_matrix double_hadamard(const hadamard_matrix& h) {
  const std::size_t n = h.order, m = 2 * n;
  auto d = detail::make_hadamard(m, detail::concat(h.construction, " doubled"));
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t j = 0; j < n; ++j) {
      const std::int8_t v = h.entries[i * n + j];
      d.entries[i * m + j] = v;
      d.entries[i * m + j + n] = v;
      d.entries[(i + n) * m + j] = v;
      d.entries[(i + n) * m + j + n] = static_cast<std::int8_t>(-v);
    }
  return d;
}

namespace detail {
enum class hadamard_method { none, sylvester, paley1, paley2, williamson, doubling };

/// Which construction builds order m (preferring the direct ones over doubling).
inline hadamard_method hadamard_method_for(std::size_t m) {
  if (m == 0) return hadamard_method::none;
  if ((m & (m - 1)) == 0) return hadamard_method::sylvester;
  if (m % 4 != 0) return hadamard_method::none;
  if (auto pp = as_prime_power(m - 1); pp && (m - 1) % 4 == 3) return hadamard_method::paley1;
  if (auto pp = as_prime_power(m / 2 - 1); pp && (m / 2 - 1) % 4 == 1) return hadamard_method::paley2;
  if (has_williamson(m / 4)) return hadamard_method::williamson;
  if (hadamard_method_for(m / 2) != hadamard_method::none) return hadamard_method::doubling;
  return hadamard_method::none;
}
}  // namespace detail

/// Whether quarot can build a Hadamard matrix of order m.
inline bool hadamard_order_supported(std::size_t m) {
  return detail::hadamard_method_for(m) != detail::hadamard_method::none;
}

/// A Hadamard matrix of order m from the first construction that reaches it; throws
/// errc::unsupported naming m when none does.
inline hadamard_matrix make_hadamard_matrix(std::size_t m) {
  using detail::hadamard_method;
  switch (detail::hadamard_method_for(m)) {
    case hadamard_method::sylvester: return sylvester_hadamard(m);
    case hadamard_method::paley1: return paley1_hadamard(m - 1);
    case hadamard_method::paley2: return paley2_hadamard(m / 2 - 1);
    case hadamard_method::williamson: return williamson_hadamard(m);
    case hadamard_method::doubling: return double_hadamard(make_hadamard_matrix(m / 2));
    case hadamard_method::none: break;
  }
  detail::fail(errc::unsupported, "no Hadamard matrix construction known to quarot for order ", m,
               m % 4 != 0 && m > 2 ? " (a Hadamard order must be 1, 2 or a multiple of 4)" : "");
}

}  // namespace quarot
