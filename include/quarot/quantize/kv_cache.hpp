// quarot — KV-cache quantization (QuaRot §4: keys and values are quantized per head,
// asymmetric, in groups along head_dim, after the online Hadamard that spreads their
// outliers). A small cache container appends tokens and dequantizes on read.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "../core/error.hpp"
#include "../core/int4.hpp"
#include "../core/matrix_view.hpp"
#include "params.hpp"
#include "rtn.hpp"

namespace quarot {

struct kv_cache_params {
  int bits = 4;                ///< 2..8
  std::size_t group_size = 0;  ///< elements per scale along head_dim; 0 = the whole head
  float clip_ratio = 1.0f;     ///< QuaRot clips the KV cache at 0.95
};

/// Quantized keys or values for `heads` heads of `head_dim` each, one token at a time.
/// Each (token, head, group) has its own asymmetric scale and zero point.
class quantized_kv_cache {
 public:
  quantized_kv_cache(std::size_t heads, std::size_t head_dim, kv_cache_params p)
      : heads_(heads), dim_(head_dim), p_(p), group_(p.group_size ? p.group_size : head_dim) {
    detail::require(heads > 0 && head_dim > 0, "KV cache needs heads and head_dim > 0, got ", heads, " and ", head_dim);
    detail::require(p.bits >= 2 && p.bits <= 8, "KV cache bits ", p.bits, " outside [2, 8]");
    detail::require(head_dim % group_ == 0, "KV cache group size ", group_, " does not divide head_dim ", head_dim);
    detail::require(p.clip_ratio > 0.0f && p.clip_ratio <= 1.0f, "KV cache clip ratio ", p.clip_ratio,
                    " outside (0, 1]");
    qp_ = quant_params{.bits = p.bits, .symmetric = false, .gran = granularity::per_group, .group_size = group_,
                       .clip_ratio = p.clip_ratio};
    token_bytes_ = heads_ * (p.bits <= 4 ? int4_packed_size(dim_) : dim_);
  }

  [[nodiscard]] std::size_t tokens() const noexcept { return tokens_; }
  [[nodiscard]] std::size_t heads() const noexcept { return heads_; }
  [[nodiscard]] std::size_t head_dim() const noexcept { return dim_; }
  /// Bytes held for levels and parameters (fp32 scale + zero per group).
  [[nodiscard]] std::size_t memory_bytes() const noexcept { return levels_.size() + 4 * (scales_.size() + zeros_.size()); }

  /// Appends one token: `kv` holds heads x head_dim values (row-major).
  void append(std::span<const float> kv) {
    detail::require(kv.size() == heads_ * dim_, "KV cache append: got ", kv.size(), " values, expected heads x head_dim = ",
                    heads_ * dim_);
    const std::size_t groups = dim_ / group_;
    std::vector<std::int8_t> lv(dim_);
    std::vector<std::uint8_t> packed;
    for (std::size_t h = 0; h < heads_; ++h) {
      const float* v = kv.data() + h * dim_;
      for (std::size_t g = 0; g < groups; ++g) {
        const auto grid = detail::group_grid(cpu::scalar{}, v + g * group_, group_, qp_, tokens_, h * dim_ + g * group_);
        scales_.push_back(grid.scale);
        zeros_.push_back(grid.zero);
        detail::quantize_levels(cpu::scalar{}, v + g * group_, group_, grid, lv.data() + g * group_);
      }
      if (p_.bits <= 4) {
        packed.assign(int4_packed_size(dim_), 0);
        std::vector<std::uint8_t> u(dim_);
        for (std::size_t i = 0; i < dim_; ++i) u[i] = static_cast<std::uint8_t>(lv[i]);
        pack_uint4(u, packed);
        levels_.insert(levels_.end(), packed.begin(), packed.end());
      } else {
        for (auto l : lv) levels_.push_back(static_cast<std::uint8_t>(l));
      }
    }
    ++tokens_;
  }

  /// Dequantized values of one head for every token so far: out is tokens x head_dim.
  void read(std::size_t head, matrix_view<float> out) const {
    detail::require(head < heads_, "KV cache read: head ", head, " out of range (", heads_, " heads)");
    detail::require(out.rows == tokens_ && out.cols == dim_, "KV cache read: output is ", out.rows, "x", out.cols,
                    ", expected ", tokens_, "x", dim_);
    const std::size_t groups = dim_ / group_, head_bytes = token_bytes_ / heads_;
    for (std::size_t t = 0; t < tokens_; ++t) {
      const std::uint8_t* lv = levels_.data() + t * token_bytes_ + head * head_bytes;
      for (std::size_t i = 0; i < dim_; ++i) {
        const int q = p_.bits <= 4 ? ((i % 2) ? lv[i / 2] >> 4 : lv[i / 2] & 0x0f) : lv[i];
        const std::size_t slot = (t * heads_ + head) * groups + i / group_;
        out(t, i) = scales_[slot] * (static_cast<float>(q) - zeros_[slot]);
      }
    }
  }

 private:
  std::size_t heads_, dim_;
  kv_cache_params p_;
  std::size_t group_;
  quant_params qp_;
  std::size_t token_bytes_ = 0, tokens_ = 0;
  std::vector<std::uint8_t> levels_;
  std::vector<float> scales_, zeros_;
};

}  // namespace quarot
