// quarot — CUDA per-token activation quantization, alone or fused with the online
// Hadamard transform (QuaRot's online rotation + quantization, one read and one write of
// global memory for n = 2^k).
//
// Each row gets the CPU quantizer's symmetric scale s = (clip·max|x|) / (2^(b-1) - 1) and
// levels rint(x / s) clamped to [-2^(b-1), 2^(b-1) - 1], with IEEE division and rounding
// to nearest even, so that the levels and scales equal quarot::quantize_activations' bit
// for bit on the same fp32 input (quantize/activation.hpp). 2..4-bit levels are stored as
// int4 two per byte, low nibble first; 5..8-bit ones as int8. Rows are padded with level 0
// to a multiple of 64 columns (device_activations::k_padded), the GEMM kernels' K step.
//
// A row with a non-finite value cannot be quantized: its scale is written as NaN, its
// levels as 0, and the first such row is recorded; device_activations::require_finite()
// turns it into errc::numerical (the CPU quantizer throws at once; a kernel cannot).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <vector>

#include "../../core/int4.hpp"
#include "../../core/matrix_view.hpp"
#include "../../quantize/activation.hpp"
#include "common.cuh"
#include "fwht.cuh"

namespace quarot::cuda {

/// Quantized activations in device memory: rows x k_padded levels (row_bytes per row),
/// one fp32 scale per row, and the first row that held a non-finite value.
struct device_activations {
  std::size_t rows = 0, cols = 0;
  std::size_t k_padded = 0;   ///< cols rounded up to a multiple of 64 (padding is level 0)
  std::size_t row_bytes = 0;  ///< k_padded / 2 (int4) or k_padded (int8)
  int bits = 8;
  device_buffer<std::uint8_t> data;
  device_buffer<float> scales;
  device_buffer<unsigned long long> status;  ///< first non-finite row, or ULLONG_MAX
  /// Rows of `data` whose padding is known to be zero (reshape's bookkeeping: the kernels
  /// write every real level and never the padding).
  std::size_t zero_padded_rows = 0;

  [[nodiscard]] bool packed() const noexcept { return bits <= 4; }

  /// Sizes the buffers for rows x cols at `bits` (2..8) on the current device, padding
  /// zeroed, status cleared. Nothing is allocated while the buffers' capacity holds the
  /// shape (a decode loop whose batch varies allocates once, at its largest batch), and
  /// only rows whose padding is not known to be zero are cleared.
  void reshape(std::size_t r, std::size_t c, int b, cudaStream_t stream = nullptr) {
    quarot::detail::require(b >= 2 && b <= 8, "CUDA activation bits ", b, " are not in [2, 8]");
    const std::size_t kp = (c + 63) / 64 * 64, rb = b <= 4 ? kp / 2 : kp;
    quarot::detail::require(r == 0 || rb <= static_cast<std::size_t>(-1) / r, "CUDA activations: ", r, " rows of ",
                            rb, " bytes overflow the byte count");
    if (data.device() >= 0 && data.device() != detail::current_device()) {  // follow the current device
      data.clear();
      scales.clear();
      status.clear();
    }
    // Rows keep zero padding only while the row layout and the allocation are the same.
    if (c != cols || b != bits || r * rb > data.capacity()) zero_padded_rows = 0;
    rows = r;
    cols = c;
    bits = b;
    k_padded = kp;
    row_bytes = rb;
    data.resize(rows * row_bytes);
    scales.resize(rows);
    status.resize(1);
    if (k_padded != cols && rows > zero_padded_rows)
      QUAROT_CUDA_CHECK(cudaMemsetAsync(data.data() + zero_padded_rows * row_bytes, 0,
                                        (rows - zero_padded_rows) * row_bytes, stream));
    if (rows > zero_padded_rows) zero_padded_rows = rows;
    status.fill_bytes(0xff, stream);
  }

  /// The first row with a non-finite value since reshape (synchronizes the stream).
  [[nodiscard]] std::optional<std::size_t> first_non_finite_row(cudaStream_t stream = nullptr) const {
    unsigned long long row = 0;
    status.download(&row, 1, stream);
    if (row == std::numeric_limits<unsigned long long>::max()) return std::nullopt;
    return static_cast<std::size_t>(row);
  }
  /// Throws errc::numerical naming the first row that held a non-finite value.
  void require_finite(cudaStream_t stream = nullptr) const {
    if (const auto row = first_non_finite_row(stream))
      quarot::detail::fail(errc::numerical, "CUDA quantize_activations: non-finite input in row ", *row, " of ", rows);
  }

  /// A host copy in the CPU layout (quarot::quantized_activations: unpadded rows).
  [[nodiscard]] quantized_activations download(cudaStream_t stream = nullptr) const {
    quantized_activations out;
    quarot::detail::shape_activations(out, rows, cols, bits);
    std::vector<std::uint8_t> all(rows * row_bytes);
    data.download(all.data(), all.size(), stream);
    for (std::size_t r = 0; r < rows; ++r)
      for (std::size_t j = 0; j < out.row_bytes; ++j) out.data[r * out.row_bytes + j] = all[r * row_bytes + j];
    scales.download(out.scales.data(), rows, stream);
    return out;
  }
};

namespace detail {

/// The row's scale from its largest magnitude (the CPU's expression and rounding).
__device__ __forceinline__ float token_scale(float max_abs, float clip, int qmax) {
  const float s = __fdiv_rn(__fmul_rn(max_abs, clip), static_cast<float>(qmax));
  return s > 0.0f ? s : 1.0f;
}

/// The level of y on the grid s: rint(y / s) clamped to [-qmax - 1, qmax].
__device__ __forceinline__ int token_level(float y, float s, int qmax) {
  const float v = rintf(__fdiv_rn(y, s)) + 0.0f;
  return static_cast<int>(fminf(fmaxf(v, static_cast<float>(-qmax - 1)), static_cast<float>(qmax)));
}

/// Warp-wide max of v and whether every lane's `finite` holds.
__device__ __forceinline__ float warp_max_finite(float v, bool& finite) {
  for (int d = 16; d >= 1; d /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, d));
  finite = __all_sync(0xffffffffu, finite);
  return v;
}

/// Block-wide max of v and whether every thread's `finite` holds; `red` holds 2·32 floats.
__device__ __forceinline__ float block_max_finite(float v, bool& finite, float* red) {
  v = warp_max_finite(v, finite);
  const int warps = (blockDim.x + 31) / 32;
  if (warps == 1) return v;
  const int w = threadIdx.x / 32;
  __syncthreads();  // red may still be read by a previous call
  if ((threadIdx.x & 31) == 0) {
    red[w] = v;
    red[32 + w] = finite ? 1.0f : 0.0f;
  }
  __syncthreads();
  float m = red[0];
  bool all = red[32] != 0.0f;
  for (int i = 1; i < warps; ++i) {
    m = fmaxf(m, red[i]);
    all = all && red[32 + i] != 0.0f;
  }
  finite = all;
  return m;
}

/// Output of one quantized row: levels at dst (row_bytes), the scale, the status word.
struct token_out {
  std::uint8_t* dst;
  float* scale;
  unsigned long long* status;
  std::size_t row;
  int bits;

  /// The row's scale from its largest magnitude m (NaN when the row is not finite);
  /// the row's leader thread stores it and records a non-finite row.
  __device__ __forceinline__ float publish_scale(float m, bool finite, float clip, bool leader) const {
    const float s = finite ? token_scale(m, clip, (1 << (bits - 1)) - 1) : __int_as_float(0x7fc00000);
    if (leader) {
      *scale = s;
      if (!finite) atomicMin(status, static_cast<unsigned long long>(row));
    }
    return s;
  }
};

/// Stores the levels of thread t's values (register e at row index fwht_index<S>(t, e),
/// consecutive within runs of S::run) at dst: int4 two a byte, low nibble first, or int8
/// a byte each, each run's bytes as the widest words that divide them (dst is 32-byte
/// aligned: rows are padded to 64 levels). One store per 4 to 16 bytes instead of one per
/// byte.
template <class S, int Bits>
__device__ __forceinline__ void store_level_runs(std::uint8_t* dst, int t, const float (&v)[S::e], float s, int qmax,
                                                 bool finite) {
  constexpr int run_bytes = Bits == 4 ? S::run / 2 : S::run;
  constexpr int word_bytes = run_word_bytes<run_bytes, std::uint8_t>;
  static_assert(Bits == 8 || S::run % 2 == 0, "4-bit levels pair up within a run");
  dst += fwht_index<S>(t, 0) / (Bits == 4 ? 2 : 1);
  QUAROT_CUDA_UNROLL
  for (int e0 = 0; e0 < S::e; e0 += S::run) {
    QUAROT_CUDA_UNROLL
    for (int w = 0; w < run_bytes; w += word_bytes) {
      std::uint8_t b[word_bytes];
      QUAROT_CUDA_UNROLL
      for (int j = 0; j < word_bytes; ++j) {
        if constexpr (Bits == 4) {
          const int e = e0 + 2 * (w + j);  // e, e + 1: consecutive indices, the first even
          const int lo = finite ? token_level(v[e], s, qmax) : 0, hi = finite ? token_level(v[e + 1], s, qmax) : 0;
          b[j] = static_cast<std::uint8_t>((lo & 0x0f) | ((hi & 0x0f) << 4));
        } else {
          b[j] = static_cast<std::uint8_t>(finite ? token_level(v[e0 + w + j], s, qmax) : 0);
        }
      }
      store_word<word_bytes>(dst + fwht_index<S>(0, e0) / (Bits == 4 ? 2 : 1) + w, b);
    }
  }
}

/// Static shared memory of fwht_quantize_kernel: block_max_finite's 2·32 floats when a row
/// is a whole block (allow_shared counts it beside the exchange buffer).
template <class S>
inline constexpr int fwht_quantize_static_floats = S::rows_per_block > 1 ? 1 : 64;

/// FWHT of a row of 2^LOG2N values and its quantization, from registers: one block of
/// S::threads threads per row (rows_per_block rows per block, each its own warps).
template <int LOG2N, class T>
__global__ void __launch_bounds__(fwht_shape<LOG2N>::block)
    fwht_quantize_kernel(const T* x, std::size_t stride, std::size_t rows, float scale, const float* signs, int bits,
                         float clip, std::uint8_t* out, std::size_t row_bytes, float* scales,
                         unsigned long long* status) {
  using S = fwht_shape<LOG2N>;
  QUAROT_CUDA_DYNAMIC_SHARED(float, smem);
  __shared__ float red[fwht_quantize_static_floats<S>];
  const int r_in_block = static_cast<int>(threadIdx.x) / S::threads, t = static_cast<int>(threadIdx.x) % S::threads;
  const std::size_t row = static_cast<std::size_t>(blockIdx.x) * S::rows_per_block + r_in_block;
  const bool live = row < rows;
  float v[S::e];
  fwht_load<S>(x + (live ? row : 0) * stride, signs, t, live, v);
  fwht_levels<S>(v, smem + r_in_block * S::smem_floats, t);
  float m = 0.0f;
  bool finite = true;
  QUAROT_CUDA_UNROLL
  for (int e = 0; e < S::e; ++e) {
    v[e] *= scale;
    m = fmaxf(m, fabsf(v[e]));
    finite = finite && is_finite(v[e]);
  }
  // A row is one thread (n <= 32), one warp (n <= 1024) or the whole block.
  if constexpr (S::threads == 32) {
    m = warp_max_finite(m, finite);
  } else if constexpr (S::threads > 32) {
    static_assert(S::rows_per_block == 1);
    m = block_max_finite(m, finite, red);
  }
  if (!live) return;
  const int qmax = (1 << (bits - 1)) - 1;
  std::uint8_t* dst = out + row * row_bytes;
  const float s = token_out{dst, scales + row, status, row, bits}.publish_scale(m, finite, clip, t == 0);
  if (bits <= 4) {
    if constexpr (S::e == 1) {
      dst[0] = finite ? static_cast<std::uint8_t>(token_level(v[0], s, qmax) & 0x0f) : 0;
    } else {
      store_level_runs<S, 4>(dst, t, v, s, qmax, finite);
    }
  } else {
    store_level_runs<S, 8>(dst, t, v, s, qmax, finite);
  }
}

/// Static shared memory of kronecker_quantize_kernel (block_max_finite's 2·32 floats),
/// which its dynamic shared memory must leave room for.
inline constexpr int kronecker_quantize_static_floats = 64;

/// Quantization of rows whose values come from value(i) (evaluated twice: for the range,
/// then for the levels; it must return the same bits both times). One block per row.
template <class Value>
__device__ void quantize_row_block(Value value, int n, float clip, const token_out& o, float* red) {
  float m = 0.0f;
  bool finite = true;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const float y = value(i);
    m = fmaxf(m, fabsf(y));
    finite = finite && is_finite(y);
  }
  m = block_max_finite(m, finite, red);
  const int qmax = (1 << (o.bits - 1)) - 1;
  const float s = o.publish_scale(m, finite, clip, threadIdx.x == 0);
  if (o.bits <= 4) {
    for (int j = threadIdx.x; 2 * j < n; j += blockDim.x) {
      const int lo = finite ? token_level(value(2 * j), s, qmax) : 0;
      const int hi = finite && 2 * j + 1 < n ? token_level(value(2 * j + 1), s, qmax) : 0;
      o.dst[j] = static_cast<std::uint8_t>((lo & 0x0f) | ((hi & 0x0f) << 4));
    }
  } else {
    for (int i = threadIdx.x; i < n; i += blockDim.x)
      o.dst[i] = static_cast<std::uint8_t>(finite ? token_level(value(i), s, qmax) : 0);
  }
}

template <class T>
__global__ void quantize_rows_kernel(const T* x, std::size_t stride, int n, int bits, float clip, std::uint8_t* out,
                                     std::size_t row_bytes, float* scales, unsigned long long* status) {
  __shared__ float red[64];
  const std::size_t row = blockIdx.x;
  const T* src = x + row * stride;
  quantize_row_block([&](int i) { return load_as_float(src + i); }, n, clip,
                     token_out{out + row * row_bytes, scales + row, status, row, bits}, red);
}

/// The Kronecker transform fused with the quantization: the row transformed in place in
/// shared memory (kronecker_lut_dense, the scale applied as the CPU's transform applies
/// it), then its range and levels read from there.
template <class T>
__global__ void kronecker_quantize_kernel(const T* x, std::size_t stride, int m, int p, int w,
                                          const std::uint16_t* records, float scale, const float* signs, int bits,
                                          float clip, std::uint8_t* out, std::size_t row_bytes, float* scales,
                                          unsigned long long* status) {
  QUAROT_CUDA_DYNAMIC_SHARED(float, t);
  __shared__ float red[kronecker_quantize_static_floats];
  const std::size_t row = blockIdx.x;
  const int n = m * p;
  const token_out o{out + row * row_bytes, scales + row, status, row, bits};
  kronecker_fwht_blocks(x + row * stride, signs, t, n, p);
  kronecker_lut_dense(t, t + n, records, m, p, w, [&](int i, float v) { t[i] = v * scale; });
  quantize_row_block([&](int i) { return t[i]; }, n, clip, o, red);
}

inline void check_quantize_args(std::size_t cols, int bits, float clip) {
  quarot::detail::require(bits >= 2 && bits <= 8, "CUDA activation bits ", bits, " are not in [2, 8]");
  quarot::detail::require(clip > 0.0f && clip <= 1.0f, "clip ratio ", clip, " outside (0, 1]");
  quarot::detail::require(cols >= 1 && cols <= 0x7fffffff, "CUDA quantize_activations: ", cols, " columns");
}

}  // namespace detail

/// Quantizes every row of x (device memory) per token, symmetric, `bits` in [2, 8], into
/// `out` (resized). Levels and scales equal quarot::quantize_activations' on the same
/// input; call out.require_finite() to learn of non-finite rows.
template <storage_float T>
void quantize_activations(device, matrix_view<const T> x, int bits, float clip_ratio, device_activations& out,
                          cudaStream_t stream = nullptr) {
  detail::check_quantize_args(x.cols, bits, clip_ratio);
  out.reshape(x.rows, x.cols, bits, stream);
  if (x.empty()) return;
  detail::require_device_view(x, "CUDA quantize_activations: the rows");
  detail::launch(detail::quantize_rows_kernel<T>, detail::grid_for(x.rows, 1), 256, 0, stream, x.data, x.stride,
                 static_cast<int>(x.cols), bits, clip_ratio, out.data.data(), out.row_bytes, out.scales.data(),
                 out.status.data());
}

/// The same for a view of mutable rows (a device_buffer's view()).
template <storage_float T>
void quantize_activations(device d, matrix_view<T> x, int bits, float clip_ratio, device_activations& out,
                          cudaStream_t stream = nullptr) {
  quantize_activations(d, matrix_view<const T>(x), bits, clip_ratio, out, stream);
}

/// The online rotation fused with the quantization: out = quantize(Q·x), Q the device
/// transform `q` (cuda::hadamard_transform or cuda::randomized_hadamard), x unchanged.
/// The result equals the CPU's rotate-then-quantize bit for bit; for n = 2^k the rotated
/// row never leaves registers, for Kronecker sizes it is transformed in shared memory.
template <class Transform, storage_float T>
void rotate_quantize(device, const Transform& q, matrix_view<const T> x, int bits, float clip_ratio,
                     device_activations& out, cudaStream_t stream = nullptr) {
  const detail::device_hadamard& h = q.data();
  quarot::detail::require(x.cols == h.size(), "CUDA rotate_quantize: transform of size ", h.size(),
                          " applied to rows of ", x.cols);
  detail::check_quantize_args(x.cols, bits, clip_ratio);
  out.reshape(x.rows, x.cols, bits, stream);
  if (x.empty()) return;
  h.require_current_device();
  detail::require_device_view(x, "CUDA rotate_quantize: the rows");
  const hadamard_plan& plan = h.plan();
  if (plan.m == 1) {
    detail::with_log2n(quarot::detail::log2_exact(plan.n), [&](auto k) {
      using S = detail::fwht_shape<decltype(k)::value>;
      detail::allow_shared(detail::fwht_quantize_kernel<S::log2n, T>, S::shared_bytes,
                           detail::fwht_quantize_static_floats<S> * sizeof(float));
      detail::launch(detail::fwht_quantize_kernel<S::log2n, T>, detail::grid_for(x.rows, S::rows_per_block), S::block,
                     S::shared_bytes, stream, x.data, x.stride, x.rows, h.scale(), h.signs(), bits, clip_ratio, out.data.data(),
                     out.row_bytes, out.scales.data(), out.status.data());
    });
  } else {
    const std::size_t reserved = detail::kronecker_quantize_static_floats * sizeof(float);
    const int w = h.kronecker_table_width(reserved);
    const std::size_t shmem = h.kronecker_shared_bytes(w);
    detail::allow_shared(detail::kronecker_quantize_kernel<T>, shmem, reserved);
    detail::launch(detail::kronecker_quantize_kernel<T>, detail::grid_for(x.rows, 1), 256, shmem, stream, x.data,
                   x.stride, static_cast<int>(plan.m), static_cast<int>(plan.p), w, h.kronecker_records(), h.scale(),
                   h.signs(), bits, clip_ratio, out.data.data(), out.row_bytes, out.scales.data(), out.status.data());
  }
}

/// The same for a view of mutable rows (a device_buffer's view()).
template <class Transform, storage_float T>
void rotate_quantize(device d, const Transform& q, matrix_view<T> x, int bits, float clip_ratio,
                     device_activations& out, cudaStream_t stream = nullptr) {
  rotate_quantize(d, q, matrix_view<const T>(x), bits, clip_ratio, out, stream);
}

}  // namespace quarot::cuda
