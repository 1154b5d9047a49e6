// quarot — the fast Walsh-Hadamard transform for n = 2^k, k = 0..20.
//
// Natural (Sylvester/Hadamard) order: y = H_n x with H_n[i][j] = (-1)^popcount(i & j),
// computed in n·log2(n) additions by the butterfly recursion H_2n = [[H, H], [H, -H]].
// Sequency (Walsh) order: rows sorted by their number of sign changes; row k of the
// Walsh matrix is row bitrev(gray(k)) of H_n, so y_seq[k] = y_nat[bitrev(k ^ (k >> 1))]
// (Fino and Algazi 1976). GSR (Grouped Sequency-arranged Rotation) uses this order.
// Normalized (default): multiplied by 1/√n, which makes it orthogonal (and for natural
// order, symmetric and its own inverse).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "../core/backend.hpp"
#include "../core/matrix_view.hpp"
#include "../core/numeric.hpp"
#include "../core/thread_pool.hpp"

#define QUAROT_TRANSFORM_INTERNAL
#include "detail/row_engine.hpp"
#undef QUAROT_TRANSFORM_INTERNAL

namespace quarot {

enum class hadamard_order { natural, sequency };

struct fwht_options {
  hadamard_order order = hadamard_order::natural;
  bool normalize = true;  ///< multiply by 1/√n (orthonormal)
};

/// The largest power-of-two size the CPU FWHT accepts (2^20).
inline constexpr std::size_t max_fwht_size = std::size_t{1} << 20;

namespace detail {
inline void check_fwht_size(std::size_t n) {
  require(is_power_of_two(n) && n <= max_fwht_size, "Walsh-Hadamard size ", n,
          " is not a power of two in [1, 2^20]; use hadamard_transform for other sizes");
}

/// perm[k] = bitrev_k(gray(k)): the natural-order row that is sequency row k.
inline std::vector<std::uint32_t> sequency_permutation(std::size_t n) {
  const unsigned bits = log2_exact(n);
  std::vector<std::uint32_t> perm(n);
  for (std::size_t k = 0; k < n; ++k) {
    const std::size_t g = k ^ (k >> 1);
    std::size_t r = 0;
    for (unsigned b = 0; b < bits; ++b)
      if (g & (std::size_t{1} << b)) r |= std::size_t{1} << (bits - 1 - b);
    perm[k] = static_cast<std::uint32_t>(r);
  }
  return perm;
}

}  // namespace detail

/// The Walsh-Hadamard transform of size n as an object: it precomputes the sequency
/// permutation and models quarot::orthogonal_transform when normalized.
class walsh_hadamard_transform {
 public:
  explicit walsh_hadamard_transform(std::size_t n, fwht_options opt = {}, cpu::isa isa = cpu::default_isa())
      : n_(n), opt_(opt), isa_(isa) {
    detail::check_fwht_size(n);
    if (!cpu::supports(isa)) detail::fail(errc::unsupported, "CPU ISA ", cpu::to_string(isa), " is not supported here");
    if (opt.order == hadamard_order::sequency) perm_ = detail::sequency_permutation(n);
  }

  [[nodiscard]] std::size_t size() const noexcept { return n_; }
  [[nodiscard]] const fwht_options& options() const noexcept { return opt_; }
  [[nodiscard]] cpu::isa isa() const noexcept { return isa_; }

  /// Each row x becomes W·x (W = H_n, rows reordered by sequency if asked, scaled).
  template <storage_float T>
  void apply(matrix_view<T> x, thread_pool* pool = nullptr) const {
    detail::transform_rows(isa_, plan(false), x, pool);
  }
  /// Each row x becomes Wᵀ·x.
  template <storage_float T>
  void apply_transpose(matrix_view<T> x, thread_pool* pool = nullptr) const {
    detail::transform_rows(isa_, plan(true), x, pool);
  }
  /// The same with an explicit backend tag (e.g. cpu::scalar{} for the reference).
  template <cpu_backend B, storage_float T>
  void apply(B tag, matrix_view<T> x, thread_pool* pool = nullptr) const {
    detail::transform_rows(tag, plan(false), x, pool);
  }
  template <cpu_backend B, storage_float T>
  void apply_transpose(B tag, matrix_view<T> x, thread_pool* pool = nullptr) const {
    detail::transform_rows(tag, plan(true), x, pool);
  }

 private:
  detail::row_plan plan(bool transpose) const {
    detail::row_plan pl;
    pl.n = pl.p = n_;
    pl.log2p = detail::log2_exact(n_);
    pl.scale = opt_.normalize ? detail::inv_sqrt(n_) : 1.0f;
    // W = P·H with (P·t)[k] = t[perm[k]]; Wᵀ = H·Pᵀ and (Pᵀ·y)[perm[k]] = y[k].
    if (!perm_.empty()) (transpose ? pl.in_perm : pl.out_perm) = perm_.data();
    return pl;
  }

  std::size_t n_;
  fwht_options opt_;
  cpu::isa isa_;
  std::vector<std::uint32_t> perm_;
};

/// Transforms every row of x in place with the backend `tag`.
template <cpu_backend B, storage_float T>
void walsh_hadamard(B tag, matrix_view<T> x, fwht_options opt = {}, thread_pool* pool = nullptr) {
  walsh_hadamard_transform(x.cols, opt, cpu::isa::scalar).apply(tag, x, pool);
}

/// Transforms every row of x in place with the best backend of this machine.
template <storage_float T>
void walsh_hadamard(matrix_view<T> x, fwht_options opt = {}, thread_pool* pool = nullptr) {
  walsh_hadamard_transform(x.cols, opt).apply(x, pool);
}

}  // namespace quarot
