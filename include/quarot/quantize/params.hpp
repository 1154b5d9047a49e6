// quarot — quantization parameters.
//
// Grids (b = bits):
//   symmetric   q ∈ [-2^(b-1), 2^(b-1) - 1], x ≈ s·q,        s = clip·max|x| / (2^(b-1) - 1)
//   asymmetric  q ∈ [0, 2^b - 1],            x ≈ s·(q - z),  s = clip·(max - min) / (2^b - 1),
//               z = round(-clip·min / s), with min <= 0 <= max enforced (as GPTQ's reference
//               quantizer does, so that 0 is exactly representable)
// The symmetric grid is QuaRot's (its activation quantizer divides by 2^(b-1) - 1); the
// level -2^(b-1) is reached only by clipped values. Rounding is round-half-to-even
// (std::nearbyint in the default rounding mode; the SIMD paths use the same mode).
#pragma once

#include <cmath>
#include <cstddef>

#include "../core/error.hpp"

namespace quarot {

enum class granularity {
  per_tensor,   ///< one scale for the whole matrix
  per_channel,  ///< one scale per row (a weight's output channel)
  per_group,    ///< one scale per `group_size` consecutive elements of a row (along K)
  per_token,    ///< one scale per row (an activation's token); same grid as per_channel
};

inline const char* to_string(granularity g) noexcept {
  switch (g) {
    case granularity::per_tensor: return "per-tensor";
    case granularity::per_channel: return "per-channel";
    case granularity::per_group: return "per-group";
    case granularity::per_token: return "per-token";
  }
  return "?";
}

/// How the scales are stored. fp16 scales are rounded before use, so dequantizing with
/// the stored scale reproduces exactly what the quantizer computed.
enum class scale_type { fp32, fp16 };

/// MSE clip search (GPTQ's reference quantizer, `find_params(mse=True)`): for each group
/// try the shrunk ranges p·[min, max] with p = 1 - i/grid, i < max_shrink·grid, and keep
/// the one minimizing Σ|x - x̂|^norm (the first on ties). The sum is evaluated in double
/// without a library pow (detail::clip_error: each term within 1e-8 of |x - x̂|^norm), by
/// the same operations on every ISA, so the chosen clip does not depend on the machine.
struct clip_search {
  bool enabled = false;
  int grid = 100;
  float max_shrink = 0.8f;
  float norm = 2.4f;
};

struct quant_params {
  int bits = 4;
  bool symmetric = true;
  granularity gran = granularity::per_channel;
  std::size_t group_size = 0;  ///< for per_group: elements per group (must divide the row length)
  float clip_ratio = 1.0f;     ///< shrink factor on the range, in (0, 1]
  clip_search search = {};
  scale_type scales = scale_type::fp32;

  [[nodiscard]] int qmin() const noexcept { return symmetric ? -(1 << (bits - 1)) : 0; }
  [[nodiscard]] int qmax() const noexcept { return symmetric ? (1 << (bits - 1)) - 1 : (1 << bits) - 1; }

  /// Throws naming the offending value; `cols` is the row length it will be used on.
  void validate(std::size_t cols) const {
    detail::require(bits >= 2 && bits <= 8, "quantization bits ", bits, " outside [2, 8]");
    detail::require(std::isfinite(clip_ratio) && clip_ratio > 0.0f && clip_ratio <= 1.0f, "clip ratio ", clip_ratio,
                    " outside (0, 1]");
    if (search.enabled) {
      detail::require(search.grid >= 1 && search.grid <= 10000, "clip search grid ", search.grid,
                      " outside [1, 10000]");
      detail::require(search.max_shrink > 0.0f && search.max_shrink < 1.0f, "clip search max_shrink ",
                      search.max_shrink, " outside (0, 1)");
      detail::require(std::isfinite(search.norm) && search.norm > 0.0f, "clip search norm ", search.norm,
                      " is not positive");
    }
    if (gran == granularity::per_group) {
      detail::require(group_size > 0, "per-group quantization needs a group size > 0");
      detail::require(cols % group_size == 0, "group size ", group_size, " does not divide the row length ", cols);
    }
  }

  /// Elements per scale along a row of length `cols` (0 for per-tensor: all of them).
  [[nodiscard]] std::size_t group_length(std::size_t cols) const noexcept {
    switch (gran) {
      case granularity::per_group: return group_size;
      case granularity::per_tensor: return 0;
      default: return cols;
    }
  }
};

}  // namespace quarot
