// quarot — GPTQ (Frantar, Ashkboos, Hoefler and Alistarh 2022, "GPTQ: Accurate
// Post-Training Quantization for Generative Pre-trained Transformers", Algorithm 1).
//
// For a linear layer W (N x K, out x in) and calibration inputs X (tokens x K), GPTQ
// minimizes ||W·Xᵀ - Ŵ·Xᵀ||² column by column: after quantizing column i, the error
// (w_i - q_i)/[H⁻¹]_ii is spread over the not-yet-quantized columns through the upper
// Cholesky factor of H⁻¹, H = 2·XᵀX/n. As in the paper and its reference code:
//  - H is accumulated over any number of calibration batches (in fp64 here);
//  - dead inputs (H_ii = 0) are zeroed, H is dampened by damp·mean(diag H);
//  - "lazy batch" updates: columns are processed in blocks of `block_size`, and the rest
//    of W is updated once per block with one matrix product;
//  - act-order: columns in order of decreasing H_ii, optionally with static groups
//    (group parameters computed up front, in natural column order);
//  - group-wise scales along K, symmetric or asymmetric, with the RTN quantizer's grids.
// Every row of W is independent given H⁻¹, so rows are split over the thread pool.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <vector>

#include <Eigen/Dense>

#include "../core/error.hpp"
#include "../core/matrix_view.hpp"
#include "../core/thread_pool.hpp"
#include "params.hpp"
#include "rtn.hpp"

namespace quarot {

/// Streaming H = 2·XᵀX / n over calibration batches, accumulated in fp64.
class hessian_accumulator {
 public:
  explicit hessian_accumulator(std::size_t k) : k_(k), sum_(Eigen::MatrixXd::Zero(Eigen::Index(k), Eigen::Index(k))) {
    detail::require(k > 0, "hessian_accumulator: input size must be positive");
  }

  /// Adds the rows of x (tokens x K).
  void add(matrix_view<const float> x) {
    if (x.rows == 0) return;
    detail::require(x.cols == k_, "hessian_accumulator: batch has ", x.cols, " columns, expected ", k_);
    for (std::size_t r = 0; r < x.rows; ++r)
      for (std::size_t c = 0; c < x.cols; ++c)
        if (!std::isfinite(x(r, c)))
          detail::fail(errc::numerical, "hessian_accumulator: non-finite input ", x(r, c), " at row ", r, ", column ", c);
    Eigen::MatrixXd b(static_cast<Eigen::Index>(x.rows), static_cast<Eigen::Index>(k_));
    for (std::size_t r = 0; r < x.rows; ++r)
      for (std::size_t c = 0; c < k_; ++c) b(Eigen::Index(r), Eigen::Index(c)) = x(r, c);
    sum_.selfadjointView<Eigen::Lower>().rankUpdate(b.transpose());
    n_ += x.rows;
  }

  [[nodiscard]] std::size_t samples() const noexcept { return n_; }
  [[nodiscard]] std::size_t size() const noexcept { return k_; }

  /// H = 2·XᵀX / n (symmetric, full).
  [[nodiscard]] Eigen::MatrixXd hessian() const {
    detail::require(n_ > 0, "hessian_accumulator: no calibration rows were added");
    Eigen::MatrixXd h = sum_.selfadjointView<Eigen::Lower>();
    return h * (2.0 / double(n_));
  }

 private:
  std::size_t k_;
  std::size_t n_ = 0;
  Eigen::MatrixXd sum_;
};

struct gptq_options {
  quant_params quant{.bits = 4, .symmetric = true, .gran = granularity::per_channel};
  double damp_percent = 0.01;  ///< fraction of mean(diag H) added to the diagonal
  std::size_t block_size = 128;
  bool act_order = false;
  bool static_groups = false;
};

struct gptq_result {
  quantized_matrix q;                 ///< levels in the original column order (+ g_idx under act-order)
  std::vector<float> w_hat;           ///< dequantized weights, N x K row-major
  std::vector<std::uint32_t> perm;    ///< column processing order (identity without act-order)
  double loss = 0;                    ///< Σ (w - q)² / [H⁻¹]_ii² / 2, the paper's objective
};

namespace detail {
/// In-place inverse of a lower-triangular matrix by recursive 2x2 blocking,
/// [[A, 0], [B, C]]⁻¹ = [[A⁻¹, 0], [-C⁻¹·B·A⁻¹, C⁻¹]]: n³/3 multiply-adds in two
/// triangular matrix products per level (a plain solve against the identity costs n³).
/// (Templates, as everything below that runs an Eigen factorization or product: as plain
/// inline functions they were instantiated in every translation unit including this
/// header, called or not; see transform/dense_orthogonal.hpp.)
template <class Real>
void invert_lower_in_place(Eigen::Ref<Eigen::Matrix<Real, Eigen::Dynamic, Eigen::Dynamic>> l) {
  using matrix = Eigen::Matrix<Real, Eigen::Dynamic, Eigen::Dynamic>;
  const Eigen::Index n = l.rows();
  if (n <= 96) {
    matrix inv = matrix::Identity(n, n);
    l.template triangularView<Eigen::Lower>().solveInPlace(inv);
    l = inv.template triangularView<Eigen::Lower>();
    return;
  }
  const Eigen::Index h = n / 2;
  invert_lower_in_place<Real>(l.topLeftCorner(h, h));
  invert_lower_in_place<Real>(l.bottomRightCorner(n - h, n - h));
  const matrix cb =
      l.bottomRightCorner(n - h, n - h).template triangularView<Eigen::Lower>() * l.bottomLeftCorner(n - h, h);
  l.bottomLeftCorner(n - h, h).noalias() = -(cb * l.topLeftCorner(h, h).template triangularView<Eigen::Lower>());
}

/// Upper U with Uᵀ·U = H⁻¹ (GPTQ's "Hinv"): from the Cholesky factor of the reversed H,
/// JHJ = L·Lᵀ gives H = (JLJ)(JLJ)ᵀ with JLJ upper, so H⁻¹ = Uᵀ·U with U = J·L⁻¹·J.
/// Factored in fp32, as GPTQ's reference does (H itself is accumulated in fp64).
template <class DerivedH>
Eigen::MatrixXf upper_cholesky_of_inverse(const Eigen::MatrixBase<DerivedH>& h) {
  const Eigen::MatrixXf rev = h.reverse().template cast<float>();
  Eigen::LLT<Eigen::MatrixXf> llt(rev);
  if (llt.info() != Eigen::Success)
    fail(errc::numerical, "GPTQ: the dampened Hessian is not positive definite (increase damp_percent)");
  Eigen::MatrixXf l = llt.matrixL();
  invert_lower_in_place<float>(l);
  if (!l.allFinite())
    fail(errc::numerical, "GPTQ: the dampened Hessian is too ill-conditioned for fp32 (increase damp_percent)");
  return l.reverse();
}
}  // namespace detail

/// Quantizes w (N x K) with GPTQ given the Hessian h (K x K) of its inputs (an Eigen
/// matrix or expression, copied in fp64).
template <class DerivedH>
gptq_result gptq_quantize(matrix_view<const float> w, const Eigen::MatrixBase<DerivedH>& h_in, const gptq_options& opt,
                          thread_pool* pool = nullptr, cpu::isa isa = cpu::default_isa()) {
  const std::size_t n = w.rows, k = w.cols;
  const quant_params& qp = opt.quant;
  detail::require(n > 0 && k > 0, "GPTQ: empty weight matrix ", n, "x", k);
  detail::require(h_in.rows() == Eigen::Index(k) && h_in.cols() == Eigen::Index(k), "GPTQ: Hessian is ", h_in.rows(),
                  "x", h_in.cols(), " but the weight has ", k, " input columns");
  detail::require(qp.gran == granularity::per_channel || qp.gran == granularity::per_group,
                  "GPTQ quantizes weights per channel or per group, not ", to_string(qp.gran));
  qp.validate(k);
  detail::require(opt.block_size > 0, "GPTQ: block size must be positive");
  detail::require(opt.damp_percent > 0 && std::isfinite(opt.damp_percent), "GPTQ: damp_percent ", opt.damp_percent,
                  " is not positive");
  detail::require(h_in.allFinite(), "GPTQ: Hessian has NaN or Inf entries");
  for (std::size_t r = 0; r < n; ++r)
    for (std::size_t c = 0; c < k; ++c)
      if (!std::isfinite(w(r, c)))
        detail::fail(errc::numerical, "GPTQ: non-finite weight ", w(r, c), " at row ", r, ", column ", c);

  using row_matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const auto rows_n = static_cast<Eigen::Index>(n), cols_k = static_cast<Eigen::Index>(k);
  row_matrix wm(rows_n, cols_k);
  for (std::size_t r = 0; r < n; ++r)
    for (std::size_t c = 0; c < k; ++c) wm(Eigen::Index(r), Eigen::Index(c)) = w(r, c);
  Eigen::MatrixXd h = h_in;

  // Dead inputs: no signal, so the weight is irrelevant; zero it and make H regular.
  for (Eigen::Index i = 0; i < Eigen::Index(k); ++i)
    if (h(i, i) == 0.0) {
      h(i, i) = 1.0;
      wm.col(i).setZero();
    }

  const std::size_t gs = qp.gran == granularity::per_group ? qp.group_size : k;
  const std::size_t groups = k / gs;
  const bool grouped = qp.gran == granularity::per_group;
  const rtn_quantizer rtn(qp, isa);

  // Static groups: parameters from the original (dead-zeroed) W, natural column order.
  std::vector<detail::grid> static_grids;
  // hint: the clip search scores the previous group's choice first (speed only).
  auto row_grid = [&](const float* v, std::size_t len, std::size_t row, std::size_t col, int& hint) {
    return cpu::dispatch(isa, [&](auto tag) { return detail::group_grid(tag, v, len, qp, row, col, &hint); });
  };
  if (grouped && opt.static_groups) {
    static_grids.resize(n * groups);
    int hint = 0;
    for (std::size_t r = 0; r < n; ++r)
      for (std::size_t g = 0; g < groups; ++g)
        static_grids[r * groups + g] = row_grid(&wm(Eigen::Index(r), Eigen::Index(g * gs)), gs, r, g * gs, hint);
  }

  std::vector<std::uint32_t> perm(k);
  std::iota(perm.begin(), perm.end(), 0u);
  if (opt.act_order) {
    std::stable_sort(perm.begin(), perm.end(), [&](std::uint32_t a, std::uint32_t b) { return h(a, a) > h(b, b); });
    row_matrix wp(rows_n, cols_k);
    for (std::size_t j = 0; j < k; ++j) wp.col(Eigen::Index(j)) = wm.col(Eigen::Index(perm[j]));
    Eigen::PermutationMatrix<Eigen::Dynamic, Eigen::Dynamic, int> pm(cols_k);
    for (std::size_t j = 0; j < k; ++j) pm.indices()[Eigen::Index(j)] = int(perm[j]);
    const Eigen::MatrixXd hp = pm.transpose() * h * pm;  // hp(i, j) = h(perm[i], perm[j])
    wm.swap(wp);
    h = hp;
  }

  const double damp = opt.damp_percent * h.diagonal().mean();
  h.diagonal().array() += damp;
  const row_matrix hinv = detail::upper_cholesky_of_inverse(h);

  std::vector<float> levels(n * k);              // levels in processing order
  std::vector<detail::grid> grids(n * groups);   // per (row, group); group = processing-order group unless static
  std::vector<double> row_loss(n, 0.0);

  detail::parallel_for(
      pool, n,
      [&](std::size_t rb, std::size_t re) {
        const Eigen::Index rows = Eigen::Index(re - rb);
        auto wr = wm.middleRows(Eigen::Index(rb), rows);
        row_matrix err(rows, static_cast<Eigen::Index>(opt.block_size));
        std::vector<float> work(gs);
        int hint = 0;
        // Per-channel grids come from the whole (permuted, dead-zeroed) row up front.
        if (!grouped)
          for (std::size_t r = rb; r < re; ++r) grids[r] = row_grid(&wm(Eigen::Index(r), 0), k, r, 0, hint);
        row_matrix snapshot;  // W's block columns as they were when the block started (reference semantics)
        for (std::size_t i1 = 0; i1 < k; i1 += opt.block_size) {
          const std::size_t i2 = std::min(k, i1 + opt.block_size), count = i2 - i1;
          if (grouped && !opt.static_groups) snapshot = wr.middleCols(Eigen::Index(i1), Eigen::Index(count));
          for (std::size_t i = i1; i < i2; ++i) {
            const float d = hinv(Eigen::Index(i), Eigen::Index(i));
            for (std::size_t r = rb; r < re; ++r) {
              const Eigen::Index lr = Eigen::Index(r - rb);
              detail::grid g;
              if (!grouped) {
                g = grids[r];
              } else if (opt.static_groups) {
                g = static_grids[r * groups + perm[i] / gs];
              } else {
                if (i % gs == 0) {
                  // Group parameters from W[:, i : i + gs]: block columns as at block start,
                  // later columns as updated so far (GPTQ's reference code does exactly this).
                  for (std::size_t c = 0; c < gs; ++c)
                    work[c] = (i + c < i2) ? snapshot(lr, Eigen::Index(i + c - i1)) : wr(lr, Eigen::Index(i + c));
                  grids[r * groups + i / gs] = row_grid(work.data(), gs, r, i, hint);
                }
                g = grids[r * groups + i / gs];
              }
              const float wv = wr(lr, Eigen::Index(i));
              const int lv = detail::quant_level(wv, g);
              const float qv = g.scale * (static_cast<float>(lv) - g.zero);
              levels[r * k + i] = static_cast<float>(lv);
              const float e = (wv - qv) / d;
              row_loss[r] += double(wv - qv) * double(wv - qv) / (double(d) * d) / 2.0;
              err(lr, Eigen::Index(i - i1)) = e;
              // Spread the error over the rest of the block: w[i:i2] -= e · Hinv[i, i:i2].
              float* wrow = &wr(lr, 0);
              const float* hrow = &hinv(Eigen::Index(i), 0);
              for (std::size_t c = i; c < i2; ++c) wrow[c] -= e * hrow[c];
            }
          }
          if (i2 < k)  // lazy batch update of the remaining columns
            wr.rightCols(Eigen::Index(k - i2)).noalias() -=
                err.leftCols(Eigen::Index(count)) *
                hinv.block(Eigen::Index(i1), Eigen::Index(i2), Eigen::Index(count), Eigen::Index(k - i2));
        }
      },
      4);

  gptq_result res;
  res.perm = perm;
  res.loss = std::accumulate(row_loss.begin(), row_loss.end(), 0.0);
  quantized_matrix& q = res.q;
  q.rows = n;
  q.cols = k;
  q.params = qp;
  q.groups_per_row = groups;
  q.q.resize(n * k);
  q.scales.resize(n * groups);
  if (!qp.symmetric) q.zeros.resize(n * groups);
  if (grouped && opt.act_order && !opt.static_groups) {
    q.g_idx.resize(k);
    for (std::size_t j = 0; j < k; ++j) q.g_idx[perm[j]] = static_cast<std::uint32_t>(j / gs);
  }
  const auto& gsrc = (grouped && opt.static_groups) ? static_grids : grids;
  for (std::size_t r = 0; r < n; ++r)
    for (std::size_t g = 0; g < groups; ++g) {
      const auto& gr = grouped ? gsrc[r * groups + g] : grids[r];
      q.scales[r * groups + g] = gr.scale;
      if (!qp.symmetric) q.zeros[r * groups + g] = gr.zero;
    }
  for (std::size_t r = 0; r < n; ++r)
    for (std::size_t j = 0; j < k; ++j)
      q.q[r * k + perm[j]] = static_cast<std::int8_t>(static_cast<std::uint8_t>(static_cast<int>(levels[r * k + j])));
  res.w_hat.resize(n * k);
  rtn.dequantize(q, make_matrix_view(res.w_hat, n, k));
  return res;
}

}  // namespace quarot
