// quarot — integer GEMM on the CPU: y = x·Wᵀ (+ bias) with per-token quantized
// activations x (M x K, from quantize_activations) and packed quantized weights W
// (N x K, from pack_weights), following a gemm policy (policies.hpp).
//
//   y[m, n] = s_a[m] · Σ_g s_w[n, g] · Σ_{k ∈ g} q_a[m, k] · (w[n, k] - z[n, g]) + bias[n]
//
// with exact int32 group sums (the products of 8-bit levels over K ≤ 2^16 cannot
// overflow). 16-bit activation levels (W4A16 / W8A16 on the integer kernels) are split
// into two int8 halves, L = 256·hi + lo, run as two kernel rows and added in fp32. Work
// is split over 64-column tiles of W on the thread pool, so decode (M = 1) uses every
// thread too.
#pragma once

#include <algorithm>
#include <concepts>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <type_traits>
#include <vector>

#include "../backend/cpu/gemm_kernels.hpp"
#include "../core/backend.hpp"
#include "../core/error.hpp"
#include "../core/matrix_view.hpp"
#include "../core/thread_pool.hpp"
#include "../quantize/activation.hpp"
#include "kernel.hpp"
#include "packing.hpp"
#include "policies.hpp"

namespace quarot::gemm {

/// Activations in the kernels' form: u8 = level + 128 with K padded by level 0, and the
/// level sums of each weight group. 16-bit activations are `split`: token row m becomes
/// the kernel rows 2m (hi, scale 256·s) and 2m + 1 (lo, scale s) of L = 256·hi + lo, and
/// the GEMM adds the two rows' results.
struct prepared_activations {
  std::size_t rows = 0, lda = 0, groups = 1;  ///< rows: tokens
  bool split = false;
  std::vector<std::uint8_t> a;
  std::vector<std::int32_t> rowsum;
  std::vector<float> scales;  ///< per kernel row

  [[nodiscard]] std::size_t kernel_rows() const noexcept { return split ? 2 * rows : rows; }
};

namespace detail {
/// Sizes `out` for `rows` tokens of `bits`-bit levels against the weights w.
inline void shape_prepared(prepared_activations& out, std::size_t rows, int bits, const packed_weights& w) {
  out.rows = rows;
  out.split = bits == 16;
  // Rows 64 bytes longer than K: a 6-row tile's rows then do not share one L1 set when K
  // is a multiple of 4096. (The extra bytes are never read.)
  out.lda = w.k_padded + 64;
  out.groups = w.groups;
  out.a.resize(out.kernel_rows() * out.lda);
  out.rowsum.resize(out.kernel_rows() * w.groups);
  out.scales.resize(out.kernel_rows());
}

/// Token r of x (levels and scale) into its kernel row(s) of `out` (shaped by
/// shape_prepared); `gathered` is scratch for act-order weights.
template <class Tag>
void prepare_activation_row(Tag tag, const quantized_activations& x, std::size_t r, const packed_weights& w,
                            prepared_activations& out, std::vector<std::uint8_t>& gathered) {
  const std::uint8_t* src = x.data.data() + r * x.row_bytes;
  bool packed4 = x.packed();
  if (!w.k_order.empty()) {  // act-order weights: the row's levels in packed K order
    gathered.resize(x.cols * (out.split ? 2 : 1));
    for (std::size_t kk = 0; kk < x.cols; ++kk) {
      if (out.split) std::copy_n(src + 2 * w.k_order[kk], 2, gathered.data() + 2 * kk);
      else gathered[kk] = static_cast<std::uint8_t>(static_cast<std::int8_t>(x.value(r, w.k_order[kk])));
    }
    src = gathered.data();
    packed4 = false;
  }
  if (out.split) {
    out.scales[2 * r] = 256.0f * x.scales[r];  // exact: a power of two
    out.scales[2 * r + 1] = x.scales[r];
    quarot::detail::prepare_row_int16(tag, src, x.cols, w.k_padded, w.group_size, out.a.data() + 2 * r * out.lda,
                                      out.a.data() + (2 * r + 1) * out.lda, out.rowsum.data() + 2 * r * w.groups,
                                      out.rowsum.data() + (2 * r + 1) * w.groups);
  } else {
    out.scales[r] = x.scales[r];
    quarot::detail::prepare_row(tag, src, packed4, x.cols, w.k_padded, w.group_size, out.a.data() + r * out.lda,
                                out.rowsum.data() + r * w.groups);
  }
}
}  // namespace detail

inline void prepare_activations(const quantized_activations& x, const packed_weights& w, prepared_activations& out,
                                thread_pool* pool = nullptr) {
  quarot::detail::require(x.cols == w.k, "GEMM: activations have K = ", x.cols, " but the weights have K = ", w.k);
  detail::shape_prepared(out, x.rows, x.bits, w);
  cpu::dispatch(cpu::default_isa(), [&](auto tag) {
    quarot::detail::parallel_for(
        pool, x.rows,
        [&](std::size_t b, std::size_t e) {
          std::vector<std::uint8_t> gathered;
          for (std::size_t r = b; r < e; ++r) detail::prepare_activation_row(tag, x, r, w, out, gathered);
        },
        std::max<std::size_t>(1, 16384 / std::max<std::size_t>(1, x.cols)));
  });
}

/// The library's scalar kernel as a reference for user kernels (gemm/kernel.hpp): the
/// tile's outputs in the built-in kernels' order of operations, so that a kernel keeping
/// that order can be compared with it bit for bit.
inline void reference_tile(const kernel_operands& op, std::size_t m0, std::size_t rows, std::size_t n0,
                           std::size_t cols, float* out, std::size_t ldo) noexcept {
  quarot::detail::gemm_tile(cpu::scalar{}, op, m0, rows, n0, cols, nullptr, out, ldo);
}

namespace detail {
/// A tag with a library kernel (quarot::detail::gemm_tile overload), as opposed to a user kernel.
template <class B>
concept builtin_integer_backend = requires(const kernel_operands& op, std::size_t i, float* f) {
  quarot::detail::gemm_tile(B{}, op, i, i, i, i, f, f, i);
};

/// Kernel rows per tile call: 6 for the library's kernels, K::tile_rows for a user kernel
/// that names it.
template <class B>
constexpr std::size_t kernel_tile_rows() {
  if constexpr (requires { B::tile_rows; }) return static_cast<std::size_t>(B::tile_rows);
  else return 6;
}

template <class B>
inline void call_tile(B tag, const kernel_operands& op, std::size_t m0, std::size_t rows, std::size_t n0,
                      std::size_t cols, float* scratch, float* out, std::size_t ldo) {
  if constexpr (builtin_integer_backend<B>) quarot::detail::gemm_tile(tag, op, m0, rows, n0, cols, scratch, out, ldo);
  else B::tile(op, m0, rows, n0, cols, scratch, out, ldo);
}

template <class B, output_element Out>
void run_integer_gemm(B tag, const prepared_activations& xa, const packed_weights& w, std::span<const float> bias,
                      matrix_view<Out> y, thread_pool* pool) {
  // One group per column covers all k-quads, the padded tail of K included.
  const std::size_t group_quads = w.groups == 1 ? w.quads() : w.group_size / 4;
  const kernel_operands op{xa.a.data(),      xa.lda,          xa.rowsum.data(), xa.scales.data(),
                           w.data.data(),    w.quads(),       group_quads,      w.groups,
                           w.n_padded,       w.block_bytes(), w.bits,           w.scales.data(),
                           w.zeros.data(),   w.colsums.data(), w.uniform_zero,  w.zero0,
                           bias.empty() || xa.split ? nullptr : bias.data()};
  // Work items: (64-column weight tile, block of up to 96 rows), tile-major, so that each
  // thread's contiguous range of items reuses a tile's weights (128-256 KiB for K = 4096,
  // held in L2) across its row blocks. Each kernel call covers all of K for up to six rows:
  // the int32 group sums stay in registers and only fp32 results leave the kernel.
  // Split (16-bit) activations: mr and rows_per_item are even, so a token's two kernel rows
  // meet in one call, which adds them (and the bias) on the way out.
  constexpr std::size_t mr = kernel_tile_rows<B>(), rows_per_item = 16 * mr;
  static_assert(mr % 2 == 0 && mr >= 2 && mr <= 16, "a kernel's tile_rows is even, 2..16");
  const std::size_t krows = xa.kernel_rows();
  const std::size_t tiles = (w.n + 63) / 64, row_blocks = (krows + rows_per_item - 1) / rows_per_item;
  quarot::detail::parallel_for(pool, tiles * row_blocks, [&](std::size_t ib, std::size_t ie) {
    float c[mr * 64], staging[mr * 64];
    for (std::size_t item = ib; item < ie; ++item) {
      const std::size_t t = item / row_blocks, rb = item % row_blocks;
      const std::size_t n0 = t * 64, cols = std::min<std::size_t>(64, w.n - n0);
      const std::size_t m_end = std::min(krows, (rb + 1) * rows_per_item);
      for (std::size_t m0 = rb * rows_per_item; m0 < m_end; m0 += mr) {
        const std::size_t rows = std::min(mr, m_end - m0);
        if (xa.split) {
          call_tile(tag, op, m0, rows, n0, cols, c, staging, 64);
          for (std::size_t r = 0; r < rows; r += 2)
            for (std::size_t j = 0; j < cols; ++j) {
              const float v = staging[r * 64 + j] + staging[(r + 1) * 64 + j];
              y((m0 + r) / 2, n0 + j) = gemm::to_output<Out>(bias.empty() ? v : v + bias[n0 + j]);
            }
        } else if constexpr (std::is_same_v<Out, float>) {
          call_tile(tag, op, m0, rows, n0, cols, c, &y(m0, n0), y.stride);
        } else {
          call_tile(tag, op, m0, rows, n0, cols, c, staging, 64);
          for (std::size_t r = 0; r < rows; ++r)
            for (std::size_t j = 0; j < cols; ++j) y(m0 + r, n0 + j) = gemm::to_output<Out>(staging[r * 64 + j]);
        }
      }
    }
  });
}
}  // namespace detail

/// An integer GEMM with its packed weights, for one policy.
template <class Policy>
class integer_gemm {
 public:
  using policy = Policy;

  explicit integer_gemm(packed_weights w) : w_(std::move(w)) {
    quarot::detail::require(w_.bits == Policy::weight_bits, "GEMM policy expects ", Policy::weight_bits,
                            "-bit packed weights, got ", w_.bits, "-bit");
    quarot::detail::require(w_.k <= 65536, "GEMM: K = ", w_.k, " exceeds 65536 (int32 accumulator bound)");
    using B = typename Policy::backend;
    static_assert(detail::builtin_integer_backend<B> || integer_tile_kernel<B>,
                  "integer GEMM kernels exist for cpu::scalar, cpu::avx2_backend, cpu::avx_vnni_backend and "
                  "cpu::avx512vnni_backend; a user kernel models gemm::integer_tile_kernel (gemm/kernel.hpp)");
    if constexpr (std::is_same_v<B, cpu::avx_vnni_backend>) {
      if (!cpu::supports_avx_vnni_backend())
        quarot::detail::fail(errc::unsupported, "GEMM policy needs AVX-VNNI or AVX-512 VNNI, this CPU has ",
                             cpu::to_string(cpu::detected_isa()), " without AVX-VNNI (use cpu::avx2_backend)");
    } else if constexpr (!detail::builtin_integer_backend<B>) {
      if constexpr (requires { { B::available() } -> std::convertible_to<bool>; }) {
        if (!B::available())
          quarot::detail::fail(errc::unsupported, "GEMM policy's user kernel reports that it cannot run on this "
                               "machine (its available() is false)");
      }
    } else if constexpr (!std::is_same_v<B, cpu::scalar>) {
      const auto need = std::is_same_v<B, cpu::avx2_backend> ? cpu::isa::avx2 : cpu::isa::avx512vnni;
      if (!cpu::supports(need))
        quarot::detail::fail(errc::unsupported, "GEMM policy needs ", cpu::to_string(need), ", this CPU has ",
                             cpu::to_string(cpu::detected_isa()), " (use the cpu::scalar policy)");
    }
  }

  [[nodiscard]] const packed_weights& weights() const noexcept { return w_; }

  /// y (M x N) = x·Wᵀ + bias, y fp32 or bf16. The prepared activations go to a buffer
  /// owned by the calling thread and reused by its later calls (it keeps the largest size
  /// asked for until the thread ends): a fresh 8.5 MB buffer per 2048 x 4096 call paid its
  /// page faults every time. (One buffer per policy and output type.) A call made while the
  /// buffer is in use (a user kernel running the same GEMM inside its tile) gets a buffer of
  /// its own. Use run() with your own prepared_activations to manage that memory yourself.
  template <output_element Out>
  void operator()(const quantized_activations& x, matrix_view<Out> y, std::span<const float> bias = {},
                  thread_pool* pool = nullptr) const {
    thread_local prepared_activations cached;
    thread_local bool cached_in_use = false;
    if (cached_in_use) {
      prepared_activations own;
      prepare_activations(x, w_, own, pool);
      run(own, x.bits, y, bias, pool);
      return;
    }
    cached_in_use = true;
    struct release {
      bool& flag;
      ~release() { flag = false; }
    } guard{cached_in_use};
    prepare_activations(x, w_, cached, pool);
    run(cached, x.bits, y, bias, pool);
  }

  /// The same on activations already prepared (reused buffers across calls).
  template <output_element Out>
  void run(const prepared_activations& xa, int activation_bits, matrix_view<Out> y, std::span<const float> bias = {},
           thread_pool* pool = nullptr) const {
    quarot::detail::require(activation_bits <= Policy::activation_bits, "GEMM policy takes ",
                            Policy::activation_bits, "-bit activations, got ", activation_bits, "-bit");
    quarot::detail::require(xa.split == (activation_bits == 16), "GEMM: activations were prepared as ",
                            xa.split ? "16" : "at most 8", "-bit levels, but the call says ", activation_bits, "-bit");
    quarot::detail::require(y.rows == xa.rows && y.cols == w_.n, "GEMM: output is ", y.rows, "x", y.cols,
                            ", expected ", xa.rows, "x", w_.n);
    quarot::detail::require(bias.empty() || bias.size() == w_.n, "GEMM: bias has ", bias.size(), " entries for N = ",
                            w_.n);
    quarot::detail::require(xa.lda == w_.k_padded + 64 && xa.groups == w_.groups &&
                                xa.rowsum.size() == xa.kernel_rows() * w_.groups,
                            "GEMM: activations were prepared for other weights");
    detail::run_integer_gemm(typename Policy::backend{}, xa, w_, bias, y, pool);
  }

 private:
  packed_weights w_;
};

}  // namespace quarot::gemm
