// quarot — Hadamard transforms of any order n = m·2^k that has a construction, applied
// fast as H_m ⊗ H_{2^k} (QuaRot, Ashkboos et al. 2024, §4: "for dimensions that are not
// powers of two ... a Kronecker product of a small Hadamard matrix and a power-of-two
// one"): the row, viewed as an m x 2^k matrix X, becomes H_m · X · H_{2^k}, i.e. an FWHT
// of each of its m blocks and a small dense ±1 product across them — O(n·(log n + m))
// work, never a dense n x n matmul.
//
// The planner picks the smallest m (the cheapest dense part) that a construction in
// hadamard_matrices.hpp reaches, and explains its choice; an n with none gets an error
// listing the nearest supported sizes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "../core/backend.hpp"
#include "../core/error.hpp"
#include "../core/matrix_view.hpp"
#include "../core/random.hpp"
#include "../core/thread_pool.hpp"
#include "hadamard_matrices.hpp"
#include "walsh_hadamard.hpp"

namespace quarot {

/// How a Hadamard transform of order n is built: n = m · p, H_n = H_m ⊗ H_p.
struct hadamard_plan {
  std::size_t n = 0;
  std::size_t m = 1;  ///< order of the dense factor (1 = pure Walsh-Hadamard)
  std::size_t p = 1;  ///< power-of-two order of the FWHT factor
  std::string dense_construction;  ///< how H_m is built (empty when m = 1)

  /// e.g. "11008 = 172 x 64: H_172 (Williamson (quadruple of order 43)) ⊗ H_64 (Sylvester, FWHT)"
  [[nodiscard]] std::string describe() const {
    if (m == 1) return detail::concat(n, " = 2^", detail::log2_exact(n), ": H_", n, " (Sylvester, FWHT)");
    return detail::concat(n, " = ", m, " x ", p, ": H_", m, " (", dense_construction, ") ⊗ H_", p,
                          " (Sylvester, FWHT)");
  }
};

/// The largest dense factor the planner accepts (its m x m fp32 matrix is kept in memory
/// and costs m operations per element).
inline constexpr std::size_t max_dense_hadamard_order = 2048;

namespace detail {
inline bool plan_exists(std::size_t n, std::size_t* m_out = nullptr) {
  if (n == 0) return false;
  std::size_t p = 1;
  while (n % (2 * p) == 0) p *= 2;
  const std::size_t odd = n / p;
  if (odd == 1) {
    if (m_out) *m_out = 1;
    return n <= max_fwht_size;
  }
  // Try m = odd·2^j for j = 2.. (a Hadamard order > 2 is a multiple of 4), smallest first.
  for (std::size_t m = odd * 4; m <= n && m <= max_dense_hadamard_order; m *= 2) {
    if (n / m > max_fwht_size) continue;
    if (hadamard_order_supported(m)) {
      if (m_out) *m_out = m;
      return true;
    }
  }
  return false;
}
}  // namespace detail

/// Whether quarot has a fast Hadamard transform of order n.
inline bool hadamard_size_supported(std::size_t n) { return detail::plan_exists(n); }

/// Plans H_n; throws errc::unsupported naming n and the nearest supported sizes.
inline hadamard_plan plan_hadamard(std::size_t n) {
  std::size_t m = 0;
  if (!detail::plan_exists(n, &m)) {
    std::size_t below = 0, above = 0;
    for (std::size_t d = 1; d <= n + 4096 && (below == 0 || above == 0); ++d) {
      if (below == 0 && d < n && detail::plan_exists(n - d)) below = n - d;
      if (above == 0 && detail::plan_exists(n + d)) above = n + d;
    }
    std::string near;
    if (below) near += detail::concat(below);
    if (above) near += detail::concat(near.empty() ? "" : " and ", above);
    detail::fail(errc::unsupported, "no Hadamard construction known to quarot for n = ", n,
                 n == 0 ? "" : detail::concat(" (n = 2^k · odd needs a Hadamard matrix of order odd·2^j, j >= 2); "
                                              "nearest supported sizes: ",
                                              near));
  }
  hadamard_plan pl;
  pl.n = n;
  pl.m = m;
  pl.p = n / m;
  if (m > 1) pl.dense_construction = make_hadamard_matrix(m).construction;
  return pl;
}

/// The orthonormal Hadamard transform Q = (H_m ⊗ H_p)/√n of any supported order n.
/// Models quarot::orthogonal_transform. For n = 2^k it is the natural-order FWHT.
class hadamard_transform {
 public:
  explicit hadamard_transform(std::size_t n, cpu::isa isa = cpu::default_isa()) : plan_(plan_hadamard(n)), isa_(isa) {
    if (!cpu::supports(isa)) detail::fail(errc::unsupported, "CPU ISA ", cpu::to_string(isa), " is not supported here");
    if (plan_.m > 1) {
      const auto hm = make_hadamard_matrix(plan_.m);
      const std::size_t m = plan_.m;
      h_.resize(m * m);
      ht_.resize(m * m);
      for (std::size_t i = 0; i < m; ++i)
        for (std::size_t j = 0; j < m; ++j) {
          h_[i * m + j] = hm(i, j);
          ht_[j * m + i] = hm(i, j);
        }
      lut_ = detail::make_sign_lut(h_.data(), m);
      lut_t_ = detail::make_sign_lut(ht_.data(), m);
    }
  }

  [[nodiscard]] std::size_t size() const noexcept { return plan_.n; }
  [[nodiscard]] const hadamard_plan& plan() const noexcept { return plan_; }
  [[nodiscard]] cpu::isa isa() const noexcept { return isa_; }

  template <storage_float T>
  void apply(matrix_view<T> x, thread_pool* pool = nullptr) const {
    detail::transform_rows(isa_, row_plan(false, nullptr), x, pool);
  }
  template <storage_float T>
  void apply_transpose(matrix_view<T> x, thread_pool* pool = nullptr) const {
    detail::transform_rows(isa_, row_plan(true, nullptr), x, pool);
  }
  template <cpu_backend B, storage_float T>
  void apply(B tag, matrix_view<T> x, thread_pool* pool = nullptr) const {
    detail::transform_rows(tag, row_plan(false, nullptr), x, pool);
  }
  template <cpu_backend B, storage_float T>
  void apply_transpose(B tag, matrix_view<T> x, thread_pool* pool = nullptr) const {
    detail::transform_rows(tag, row_plan(true, nullptr), x, pool);
  }
  /// out = Q·in for fp32 rows without touching in (serial: for callers that own a block of
  /// rows per thread, like linear's fused front end); bit-identical to copy + apply.
  void apply(matrix_view<const float> in, matrix_view<float> out) const {
    detail::transform_rows_to(isa_, row_plan(false, nullptr), in, out);
  }

  /// The dense factor H_m (row-major, ±1 as float); empty when m = 1.
  [[nodiscard]] const std::vector<float>& dense_factor() const noexcept { return h_; }

  /// Internal: the row plan, optionally with a diagonal of signs (randomized_hadamard).
  [[nodiscard]] detail::row_plan row_plan(bool transpose, const float* signs) const {
    detail::row_plan pl;
    pl.n = plan_.n;
    pl.m = plan_.m;
    pl.p = plan_.p;
    pl.log2p = detail::log2_exact(plan_.p);
    pl.h = plan_.m > 1 ? (transpose ? &lut_t_ : &lut_) : nullptr;
    pl.scale = detail::inv_sqrt(plan_.n);
    (transpose ? pl.post_signs : pl.pre_signs) = signs;
    return pl;
  }

 private:
  hadamard_plan plan_;
  cpu::isa isa_;
  std::vector<float> h_, ht_;
  detail::sign_lut lut_, lut_t_;
};

/// The randomized Hadamard transform Q = H·diag(s)/√n with s ∈ {±1}ⁿ drawn from `seed`
/// by quarot's portable PRNG (QuIP#, Tseng et al. 2024; QuaRot §3): the same signs on
/// every platform. apply: x -> Q·x = H(s ⊙ x)/√n; apply_transpose: x -> Qᵀ·x = s ⊙ (Hᵀx)/√n.
class randomized_hadamard {
 public:
  randomized_hadamard(std::size_t n, std::uint64_t seed, cpu::isa isa = cpu::default_isa())
      : h_(n, isa), seed_(seed), signs_(random_signs(n, seed)) {}

  /// With signs given by the caller (each must be +1 or -1).
  randomized_hadamard(std::vector<float> signs, cpu::isa isa = cpu::default_isa())
      : h_(signs.size(), isa), seed_(0), signs_(std::move(signs)) {
    for (std::size_t i = 0; i < signs_.size(); ++i)
      detail::require(signs_[i] == 1.0f || signs_[i] == -1.0f, "randomized_hadamard: sign ", signs_[i], " at index ",
                      i, " is not +1 or -1");
  }

  [[nodiscard]] std::size_t size() const noexcept { return h_.size(); }
  [[nodiscard]] std::uint64_t seed() const noexcept { return seed_; }
  [[nodiscard]] const std::vector<float>& signs() const noexcept { return signs_; }
  [[nodiscard]] const hadamard_plan& plan() const noexcept { return h_.plan(); }

  template <storage_float T>
  void apply(matrix_view<T> x, thread_pool* pool = nullptr) const {
    detail::transform_rows(h_.isa(), h_.row_plan(false, signs_.data()), x, pool);
  }
  template <storage_float T>
  void apply_transpose(matrix_view<T> x, thread_pool* pool = nullptr) const {
    detail::transform_rows(h_.isa(), h_.row_plan(true, signs_.data()), x, pool);
  }
  template <cpu_backend B, storage_float T>
  void apply(B tag, matrix_view<T> x, thread_pool* pool = nullptr) const {
    detail::transform_rows(tag, h_.row_plan(false, signs_.data()), x, pool);
  }
  template <cpu_backend B, storage_float T>
  void apply_transpose(B tag, matrix_view<T> x, thread_pool* pool = nullptr) const {
    detail::transform_rows(tag, h_.row_plan(true, signs_.data()), x, pool);
  }
  /// out = Q·in for fp32 rows without touching in (serial; bit-identical to copy + apply).
  void apply(matrix_view<const float> in, matrix_view<float> out) const {
    detail::transform_rows_to(h_.isa(), h_.row_plan(false, signs_.data()), in, out);
  }

 private:
  hadamard_transform h_;
  std::uint64_t seed_;
  std::vector<float> signs_;
};

}  // namespace quarot
