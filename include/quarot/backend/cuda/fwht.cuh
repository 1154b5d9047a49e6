// quarot — CUDA Hadamard transforms: the fast Walsh-Hadamard transform for n = 2^k,
// k = 0..15, and the Kronecker transform H_m ⊗ H_p of every size the CPU planner supports,
// on rows of fp32, fp16 or bf16 (computed in fp32), optionally with a ±1 sign vector first
// (randomized Hadamard) and scaled by 1/√n.
//
// FWHT (n = 2^k): each row is read from global memory once and written once. Its n values
// live in registers, E per thread (fwht_shape): the butterfly levels of the low index bits
// run inside a thread's registers, the next five across the 32 lanes of a warp
// (__shfl_xor_sync), and for n >= 2048 the top log2(warps) bits through one exchange in
// shared memory that moves those bits into the registers. The levels run in the CPU
// reference's order (h = 1, 2, 4, ..., each (a + b, a - b), the scale applied once at the
// end), so results are bit-identical to quarot's CPU transforms (fwht_kernels.hpp).
//
// Kronecker (n = m·p): one block per row in shared memory; the FWHT of each of the m
// blocks of length p in the same level order, then the dense ±1 factor H_m across blocks
// by the CPU's table lookup (its sign_lut and chunk_sums, in its order), so results are
// the CPU's bit for bit here too.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "../../core/matrix_view.hpp"
#include "../../core/numeric.hpp"
#include "../../core/random.hpp"
#include "../../transform/kronecker.hpp"
#include "common.cuh"

namespace quarot::cuda {

namespace detail {

/// How a row of n = 2^LOG2N values is spread over threads: E = 2^log2e registers per
/// thread, `threads` threads per row (1 for n <= 32, a warp for n <= 1024, 64 to 512
/// above: then a block is one row), rows_per_block rows per block.
template <int LOG2N>
struct fwht_shape {
  static constexpr int log2n = LOG2N;
  static constexpr int n = 1 << LOG2N;
  static constexpr int log2e = LOG2N <= 5 ? LOG2N : LOG2N <= 10 ? LOG2N - 5 : LOG2N <= 14 ? 5 : 6;
  static constexpr int e = 1 << log2e;
  static constexpr int threads = n / e;
  static constexpr int log2lanes = threads >= 32 ? 5 : 0;
  static constexpr int log2warps = LOG2N - log2e - log2lanes;  // index bits exchanged in shared memory
  static constexpr int warps = 1 << log2warps;
  static constexpr int rows_per_block = threads >= 64 ? 1 : 128 / threads;
  static constexpr int block = rows_per_block * threads;
  // After the exchange a thread holds `warps` runs of `run` consecutive values.
  static constexpr int log2run = log2warps ? log2e - log2warps : log2e;
  static constexpr int run = 1 << log2run;
  // 2^15 values exchange in two passes through 64 KiB (sm_86/89 allow 99 KiB per block).
  static constexpr int passes = LOG2N == 15 ? 2 : 1;
  static constexpr int smem_floats = log2warps ? (n / passes) + (n / passes) / 32 : 0;  // per row, padded
  static constexpr std::size_t shared_bytes = rows_per_block * smem_floats * sizeof(float);  // per block
  static_assert(log2run >= (passes == 2 ? 1 : 0), "the pass bit must be a run bit");
};

/// Shared-memory slot of exchange index i: one float of padding per 32 keeps the 32 lanes
/// of a warp, which write values E apart, on different banks.
__device__ __forceinline__ int fwht_pad(int i) { return i + (i >> 5); }

/// Index i without the pass bit b (two-pass exchange), so that a pass fills n/2 slots.
template <int PASSES, int B>
__device__ __forceinline__ int fwht_compact(int i) {
  if constexpr (PASSES == 1) return i;
  else return ((i >> (B + 1)) << B) | (i & ((1 << B) - 1));
}

/// The row index of register e of thread t after fwht_levels: fwht_index(t, 0) +
/// fwht_index(0, e) (disjoint bit fields, written as a sum), so that the stores take the
/// thread's base once and the register's part as a constant offset. (With the fields
/// or-ed and the index per store, ptxas spilled 204-256 bytes in the 2^15 fp16 / bf16
/// kernels and used 100-114 registers at 2^14; now no size spills and 2^11-2^14 take
/// 48-64, so that two 512-thread blocks fit an SM.)
template <class S>
__device__ __forceinline__ int fwht_index(int t, int e) {
  if constexpr (S::log2warps == 0) return t * S::e + e;
  else return ((e >> S::log2run) << (S::log2n - S::log2warps)) + (t << S::log2run) + (e & (S::run - 1));
}

/// The widest access (16, 8, 4 or 2 bytes) that a run of N values of T splits into whole
/// words of; sizeof(T) when none does (a single byte).
template <int N, class T>
inline constexpr int run_word_bytes = N * sizeof(T) % 16 == 0  ? 16
                                      : N * sizeof(T) % 8 == 0 ? 8
                                      : N * sizeof(T) % 4 == 0 ? 4
                                      : N * sizeof(T) % 2 == 0 ? 2
                                                               : static_cast<int>(sizeof(T));
/// The unsigned word type of `Bytes` bytes (uint4, uint2, unsigned, unsigned short,
/// unsigned char).
template <int Bytes>
struct run_word;
template <>
struct run_word<16> {
  using type = uint4;
};
template <>
struct run_word<8> {
  using type = uint2;
};
template <>
struct run_word<4> {
  using type = unsigned;
};
template <>
struct run_word<2> {
  using type = unsigned short;
};
template <>
struct run_word<1> {
  using type = unsigned char;
};

/// Stores the `Bytes` bytes at src as one word at dst (aligned to `Bytes`).
template <int Bytes>
__device__ __forceinline__ void store_word(void* dst, const void* src) {
  using word = typename run_word<Bytes>::type;
  word q;
  std::memcpy(&q, src, Bytes);
  *static_cast<word*>(dst) = q;
}

/// Whether runs of N values of T can move as whole-word accesses from `row` (the runs
/// start at multiples of N): a word size that divides the run, and a row aligned to it.
/// fp16 runs of 4 (n = 2^13, 2^15) move 8 bytes at a time, of 2 (2^14) 4 bytes: a quarter
/// and a half of the store instructions of element-wise stores.
template <int N, class T>
__device__ __forceinline__ bool vector_runs(const T* row) {
  return reinterpret_cast<std::uintptr_t>(row) % run_word_bytes<N, T> == 0;
}

/// N consecutive values at p (aligned to the run's word) as floats, a word per load.
template <int N, class T>
__device__ __forceinline__ void load_run(const T* p, float* v) {
  constexpr int bytes = run_word_bytes<N, T>, per = bytes / static_cast<int>(sizeof(T));
  using word = typename run_word<bytes>::type;
  QUAROT_CUDA_UNROLL
  for (int c = 0; c < N / per; ++c) {
    const word q = *reinterpret_cast<const word*>(p + c * per);
    T e[per];
    std::memcpy(static_cast<void*>(e), &q, bytes);  // T is trivially copyable (void*: -Wclass-memaccess)
    QUAROT_CUDA_UNROLL
    for (int j = 0; j < per; ++j) v[c * per + j] = load_as_float(e + j);
  }
}

/// N floats to N consecutive T at p (aligned to the run's word), times `scale`, a word
/// per store.
template <int N, class T>
__device__ __forceinline__ void store_run(T* p, const float* v, float scale) {
  constexpr int bytes = run_word_bytes<N, T>, per = bytes / static_cast<int>(sizeof(T));
  QUAROT_CUDA_UNROLL
  for (int c = 0; c < N / per; ++c) {
    T e[per];
    QUAROT_CUDA_UNROLL
    for (int j = 0; j < per; ++j) store_from_float(e + j, v[c * per + j] * scale);
    store_word<bytes>(p + c * per, e);
  }
}

/// Thread t's values of one row, loaded in the first layout (t·E + e), times the signs.
/// Each thread's E values are contiguous: loads of whole words (up to 16 bytes) where the
/// row allows.
template <class S, class T>
__device__ __forceinline__ void fwht_load(const T* row, const float* signs, int t, bool live, float (&v)[S::e]) {
  if (live && vector_runs<S::e>(row)) {
    load_run<S::e>(row + t * S::e, v);
  } else {
    QUAROT_CUDA_UNROLL
    for (int e = 0; e < S::e; ++e) v[e] = live ? load_as_float(row + t * S::e + e) : 0.0f;
  }
  if (signs && live)
    QUAROT_CUDA_UNROLL
    for (int e = 0; e < S::e; ++e) v[e] *= signs[t * S::e + e];
}

/// Stores thread t's values, register e to index fwht_index<S>(t, e), times `scale`: runs
/// of S::run consecutive indices, as 16-byte stores where the row allows.
template <class S, class T>
__device__ __forceinline__ void fwht_store(T* row, int t, const float (&v)[S::e], float scale) {
  const bool vector = vector_runs<S::run>(row);
  row += fwht_index<S>(t, 0);  // the thread's part; fwht_index<S>(0, e), a constant, the rest
  if (vector) {
    QUAROT_CUDA_UNROLL
    for (int e = 0; e < S::e; e += S::run) store_run<S::run>(row + fwht_index<S>(0, e), v + e, scale);
  } else {
    QUAROT_CUDA_UNROLL
    for (int e = 0; e < S::e; ++e) store_from_float(row + fwht_index<S>(0, e), v[e] * scale);
  }
}

/// The butterfly levels h = H0, 2·H0, ... < E between a thread's own registers.
template <int H0, int E>
__device__ __forceinline__ void register_levels(float (&v)[E]) {
  QUAROT_CUDA_UNROLL
  for (int h = H0; h < E; h *= 2)
    QUAROT_CUDA_UNROLL
    for (int e = 0; e < E; ++e)
      if (!(e & h)) {
        const float a = v[e], b = v[e + h];
        v[e] = a + b;
        v[e + h] = a - b;
      }
}

/// All log2(n) butterfly levels of the row held in v (loaded by fwht_load), in ascending
/// order; afterwards register e of thread t holds index fwht_index<S>(t, e). `smem` is the
/// row's S::smem_floats floats; every thread of the block calls this (it synchronizes).
template <class S>
__device__ __forceinline__ void fwht_levels(float (&v)[S::e], float* smem, int t) {
  register_levels<1>(v);
  if constexpr (S::log2lanes > 0) {
    const int lane = threadIdx.x & 31;
    QUAROT_CUDA_UNROLL
    for (int d = 1; d < 32; d *= 2)
      QUAROT_CUDA_UNROLL
      for (int e = 0; e < S::e; ++e) {
        const float other = __shfl_xor_sync(0xffffffffu, v[e], d);
        v[e] = (lane & d) ? other - v[e] : v[e] + other;  // upper lane: a - b with a = other
      }
  }
  if constexpr (S::log2warps > 0) {
    // Exchange: the registers e with the same low log2run bits hold, before and after,
    // the same set of indices' low bits, so each pass reads back into the registers it
    // wrote out.
    constexpr int pass_bit = S::log2run - 1;
    QUAROT_CUDA_UNROLL
    for (int pass = 0; pass < S::passes; ++pass) {
      QUAROT_CUDA_UNROLL
      for (int e = 0; e < S::e; ++e)
        if (S::passes == 1 || ((e >> pass_bit) & 1) == pass)
          smem[fwht_pad(fwht_compact<S::passes, pass_bit>(t * S::e + e))] = v[e];
      __syncthreads();
      QUAROT_CUDA_UNROLL
      for (int e = 0; e < S::e; ++e)
        if (S::passes == 1 || ((e >> pass_bit) & 1) == pass)
          v[e] = smem[fwht_pad(fwht_compact<S::passes, pass_bit>(fwht_index<S>(t, e)))];
      __syncthreads();
    }
    register_levels<S::run>(v);
  }
}

template <int LOG2N, class T>
__global__ void __launch_bounds__(fwht_shape<LOG2N>::block)
    fwht_kernel(T* x, std::size_t stride, std::size_t rows, float scale, const float* signs) {
  using S = fwht_shape<LOG2N>;
  QUAROT_CUDA_DYNAMIC_SHARED(float, smem);
  const int r_in_block = static_cast<int>(threadIdx.x) / S::threads, t = static_cast<int>(threadIdx.x) % S::threads;
  const std::size_t row = static_cast<std::size_t>(blockIdx.x) * S::rows_per_block + r_in_block;
  const bool live = row < rows;
  T* p = x + (live ? row : 0) * stride;
  float v[S::e];
  fwht_load<S>(p, signs, t, live, v);
  fwht_levels<S>(v, smem + r_in_block * S::smem_floats, t);
  if (live) fwht_store<S>(p, t, v, scale);
}

/// f(std::integral_constant<int, k>) for the runtime log2n = k in 0..15: the kernels are
/// templates on the size.
template <class F>
void with_log2n(unsigned log2n, F&& f) {
  switch (log2n) {
#define QUAROT_CUDA_LOG2N(k) \
  case k: f(std::integral_constant<int, k>{}); return;
    QUAROT_CUDA_LOG2N(0) QUAROT_CUDA_LOG2N(1) QUAROT_CUDA_LOG2N(2) QUAROT_CUDA_LOG2N(3) QUAROT_CUDA_LOG2N(4)
    QUAROT_CUDA_LOG2N(5) QUAROT_CUDA_LOG2N(6) QUAROT_CUDA_LOG2N(7) QUAROT_CUDA_LOG2N(8) QUAROT_CUDA_LOG2N(9)
    QUAROT_CUDA_LOG2N(10) QUAROT_CUDA_LOG2N(11) QUAROT_CUDA_LOG2N(12) QUAROT_CUDA_LOG2N(13)
    QUAROT_CUDA_LOG2N(14) QUAROT_CUDA_LOG2N(15)
#undef QUAROT_CUDA_LOG2N
    default: quarot::detail::fail(errc::invalid_argument, "CUDA Walsh-Hadamard: 2^", log2n, " exceeds 2^15");
  }
}

template <class T>
void fwht_rows(matrix_view<T> x, unsigned log2n, float scale, const float* signs, cudaStream_t stream) {
  with_log2n(log2n, [&](auto k) {
    using S = fwht_shape<decltype(k)::value>;
    allow_shared(fwht_kernel<S::log2n, T>, S::shared_bytes);
    launch(fwht_kernel<S::log2n, T>, grid_for(x.rows, S::rows_per_block), S::block, S::shared_bytes, stream, x.data,
           x.stride, x.rows, scale, signs);
  });
}

// ------------------------------------------------------------------ Kronecker sizes

/// The 16-bit entries of one row's record in device_hadamard's copy of H_m's sign_lut:
/// entry 0 the count of the row's added terms, then its m/4 terms (added ones first, as the
/// CPU lists them), each the table row 8·c + e of its chunk's sum, zero-padded to whole
/// 16-byte words, which kronecker_lut_dense loads 8 entries at a time.
__host__ __device__ inline int kronecker_record_length(int m) { return (1 + m / 4 + 7) / 8 * 8; }

/// The dense step Y = H_m·T of (H_m ⊗ H_p) as the CPU's sign_matmul computes it (row
/// kernels, "Four Russians"), so that its results are the CPU's bit for bit: T (t, shared
/// memory, the m FWHT'd blocks of p as rows) in column tiles of w (a power of two that
/// divides p). Per tile, each chunk of 4 rows gives its 8 signed sums per column with the
/// CPU's chunk_sums into `table` (shared, 2·m·w floats: entry (8c + e)·w + column); then
/// output (a, b) sums row a's terms, the added ones alternately into p0 and p1 and the
/// subtracted ones into n0 and n1, from 0.0f, and hands (p0 + p1) - (n0 + n1) — the CPU's
/// value before its scale multiply — to f(a·p + b, value). f may overwrite t at that
/// index: the tile's columns are in the table by then. m/4 additions per output instead
/// of m multiply-adds. Consecutive threads take consecutive columns, so a warp's table
/// reads are contiguous and, for w >= 32, it reads one record (a broadcast, 16 bytes per
/// load). All threads of the block call it (it synchronizes).
template <class F>
__device__ __forceinline__ void kronecker_lut_dense(float* t, float* table, const std::uint16_t* records, int m, int p,
                                                    int w, F&& f) {
  const int chunks = m / 4, words = kronecker_record_length(m) / 8;
  const auto add = [](float& o, float a, float b) { o = a + b; };
  const auto sub = [](float& o, float a, float b) { o = a - b; };
  for (int b0 = 0; b0 < p; b0 += w) {
    for (int item = static_cast<int>(threadIdx.x); item < chunks * w; item += static_cast<int>(blockDim.x)) {
      const int c = item / w, col = item % w;
      const float* a = t + 4 * c * p + b0 + col;
      float sums[8];
      quarot::detail::chunk_sums(a[0], a[p], a[2 * p], a[3 * p], sums, add, sub);
      QUAROT_CUDA_UNROLL
      for (int e = 0; e < 8; ++e) table[(8 * c + e) * w + col] = sums[e];
    }
    __syncthreads();
    for (int item = static_cast<int>(threadIdx.x); item < m * w; item += static_cast<int>(blockDim.x)) {
      const int a = item / w, col = item % w;
      const uint4* record = reinterpret_cast<const uint4*>(records) + static_cast<std::size_t>(a) * words;
      float p0 = 0.0f, p1 = 0.0f, n0 = 0.0f, n1 = 0.0f;
      int plus = 0;
      for (int q = 0; q < words; ++q) {
        const uint4 word = __ldg(record + q);
        const unsigned halves[4] = {word.x, word.y, word.z, word.w};
        QUAROT_CUDA_UNROLL
        for (int h = 0; h < 8; ++h) {
          const int entry = static_cast<int>((halves[h / 2] >> (16 * (h % 2))) & 0xffffu);
          const int k = 8 * q + h - 1;  // the term's place in the row's list (-1: the count)
          if (k < 0) {
            plus = entry;
          } else if (k < chunks) {
            const float v = table[entry * w + col];
            if (k < plus) {
              if (k % 2 == 0) p0 += v;
              else p1 += v;
            } else {
              if ((k - plus) % 2 == 0) n0 += v;
              else n1 += v;
            }
          }
        }
      }
      f(a * p + b0 + col, (p0 + p1) - (n0 + n1));
    }
    __syncthreads();  // the table is rebuilt for the next tile
  }
}

/// Loads row `src` (n = m·p values, times the signs) into t and runs the FWHT levels of
/// each block of p in place (all threads of the block; synchronizes).
template <class T>
__device__ void kronecker_fwht_blocks(const T* src, const float* signs, float* t, int n, int p) {
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const float v = load_as_float(src + i);
    t[i] = signs ? v * signs[i] : v;
  }
  __syncthreads();
  const int half = p / 2;
  for (int h = 1; h < p; h *= 2) {
    for (int j = threadIdx.x; j < n / 2; j += blockDim.x) {
      const int blk = j / half, jj = j % half;
      const int i = blk * p + (jj / h) * 2 * h + jj % h;
      const float a = t[i], b = t[i + h];
      t[i] = a + b;
      t[i + h] = a - b;
    }
    __syncthreads();
  }
}

template <class T>
__global__ void kronecker_kernel(T* x, std::size_t stride, int m, int p, int w, const std::uint16_t* records,
                                 float scale, const float* signs) {
  QUAROT_CUDA_DYNAMIC_SHARED(float, t);
  const int n = m * p;
  T* row = x + static_cast<std::size_t>(blockIdx.x) * stride;
  kronecker_fwht_blocks(row, signs, t, n, p);
  kronecker_lut_dense(t, t + n, records, m, p, w, [&](int i, float v) { store_from_float(row + i, v * scale); });
}

/// A Hadamard transform's device data: its plan, H_m's terms (when m > 1) and the signs
/// (or none).
class device_hadamard {
 public:
  device_hadamard(std::size_t n, const float* signs) : plan_(plan_hadamard(n)) {
    quarot::detail::require(n <= 0x7fffffff, "CUDA Hadamard transform: size ", n, " is too large");
    if (plan_.m > 1) {
      // The CPU transform's own lookup plan of H_m (sign_lut), one record per row
      // (kronecker_record_length), so that both backends add the same terms in one order.
      const quarot::hadamard_transform cpu_transform(n, quarot::cpu::isa::scalar);
      const quarot::detail::sign_lut& lut = *cpu_transform.row_plan(false, nullptr).h;
      const int m = static_cast<int>(plan_.m), len = kronecker_record_length(m);
      std::vector<std::uint16_t> records(static_cast<std::size_t>(m) * len, 0);
      for (int a = 0; a < m; ++a) {
        const std::uint32_t b = lut.start[a], e = lut.start[a + 1];
        quarot::detail::require(e - b == lut.chunks && lut.plus[a] <= lut.chunks, "CUDA Hadamard transform: H_m's row ",
                                a, " has ", e - b, " terms, expected ", lut.chunks);
        std::uint16_t* r = records.data() + static_cast<std::size_t>(a) * len;
        r[0] = static_cast<std::uint16_t>(lut.plus[a]);
        for (std::uint32_t k = b; k < e; ++k) r[1 + (k - b)] = static_cast<std::uint16_t>(lut.term[k] / 8);
      }
      records_ = device_buffer<std::uint16_t>(records.size());
      records_.upload(records.data(), records.size());
    }
    if (signs) {
      for (std::size_t i = 0; i < n; ++i)
        quarot::detail::require(signs[i] == 1.0f || signs[i] == -1.0f, "CUDA randomized Hadamard: sign ", signs[i],
                                " at index ", i, " is not +1 or -1");
      signs_ = device_buffer<float>(n);
      signs_.upload(signs, n);
    }
    // The host arrays die here: wait for the uploads (null stream).
    if (!records_.empty() || !signs_.empty()) QUAROT_CUDA_CHECK(cudaStreamSynchronize(nullptr));
  }

  [[nodiscard]] std::size_t size() const noexcept { return plan_.n; }
  [[nodiscard]] const hadamard_plan& plan() const noexcept { return plan_; }
  [[nodiscard]] const float* signs() const noexcept { return signs_.empty() ? nullptr : signs_.data(); }
  /// H_m's terms, a record per row (kronecker_lut_dense), or null for 2^k.
  [[nodiscard]] const std::uint16_t* kronecker_records() const noexcept {
    return records_.empty() ? nullptr : records_.data();
  }
  /// The device that holds the signs and H_m, -1 when there are neither (2^k, no signs).
  [[nodiscard]] int device() const noexcept { return signs_.empty() ? records_.device() : signs_.device(); }
  /// Throws errc::invalid_argument when another device than this transform's is current.
  void require_current_device() const { detail::require_current_device(device(), "CUDA Hadamard transform: its data"); }
  [[nodiscard]] float scale() const noexcept { return quarot::detail::inv_sqrt(plan_.n); }  // the CPU's 1/√n
  /// Itself: rotate_quantize takes any transform with data().
  [[nodiscard]] const device_hadamard& data() const noexcept { return *this; }

  /// The column tile w of the Kronecker kernels' table (kronecker_lut_dense) on the
  /// current device: the widest power of two up to min(p, 64) whose table (2·m·w floats)
  /// fits beside the row (n floats) in a block's shared memory, less `reserved` bytes (a
  /// kernel's static shared memory); 1 when none fits (the launch then names the bytes it
  /// needs). n = 11008 (172 x 64): 64 on Hopper (227 KiB), 32 on sm_86/89 (99 KiB).
  [[nodiscard]] int kronecker_table_width(std::size_t reserved = 0) const {
    const std::size_t limit = max_shared_per_block();
    for (std::size_t w = std::min<std::size_t>(plan_.p, 64); w > 1; w /= 2)
      if (kronecker_shared_bytes(static_cast<int>(w)) + reserved <= limit) return static_cast<int>(w);
    return 1;
  }
  /// Dynamic shared memory of the Kronecker kernels at table width w: the fp32 row and the
  /// table.
  [[nodiscard]] std::size_t kronecker_shared_bytes(int w) const noexcept {
    return (plan_.n + 2 * plan_.m * static_cast<std::size_t>(w)) * sizeof(float);
  }

  template <storage_float T>
  void apply(matrix_view<T> x, cudaStream_t stream) const {
    quarot::detail::require(x.cols == plan_.n, "CUDA Hadamard transform of size ", plan_.n, " applied to rows of ",
                            x.cols);
    if (x.empty()) return;
    require_current_device();
    require_device_view(x, "CUDA Hadamard transform: the rows");
    if (plan_.m == 1) {
      fwht_rows(x, quarot::detail::log2_exact(plan_.n), scale(), signs(), stream);
      return;
    }
    const int w = kronecker_table_width();
    const std::size_t shmem = kronecker_shared_bytes(w);
    allow_shared(kronecker_kernel<T>, shmem);
    launch(kronecker_kernel<T>, grid_for(x.rows, 1), 256, shmem, stream, x.data, x.stride, static_cast<int>(plan_.m),
           static_cast<int>(plan_.p), w, kronecker_records(), scale(), signs());
  }

 private:
  hadamard_plan plan_;
  device_buffer<std::uint16_t> records_;
  device_buffer<float> signs_;
};

}  // namespace detail

/// Transforms every row of x (device memory) in place: x_row <- scale · H_n (signs ⊙ x_row),
/// scale = 1/√n when normalize. n = 2^k, k <= 15; `signs` is a device array of n ±1
/// values or null. Bit-identical to quarot::walsh_hadamard on the CPU.
template <storage_float T>
void walsh_hadamard(device, matrix_view<T> x, bool normalize = true, const float* signs = nullptr,
                    cudaStream_t stream = nullptr) {
  if (x.empty()) return;
  const std::size_t n = x.cols;
  quarot::detail::require(n >= 1 && (n & (n - 1)) == 0 && n <= (std::size_t{1} << 15), "CUDA Walsh-Hadamard size ",
                          n, " is not a power of two in [1, 2^15]");
  detail::require_device_view(x, "CUDA Walsh-Hadamard: the rows");
  if (signs) detail::require_device_pointer(signs, "CUDA Walsh-Hadamard: the signs");
  const float scale = normalize ? quarot::detail::inv_sqrt(n) : 1.0f;
  detail::fwht_rows(x, quarot::detail::log2_exact(n), scale, signs, stream);
}

/// The orthonormal Hadamard transform (H_m ⊗ H_p)/√n of any size the CPU planner supports
/// (quarot::hadamard_transform), on device rows. Holds H_m in device memory.
class hadamard_transform {
 public:
  explicit hadamard_transform(std::size_t n) : h_(n, nullptr) {}
  [[nodiscard]] std::size_t size() const noexcept { return h_.size(); }
  [[nodiscard]] const hadamard_plan& plan() const noexcept { return h_.plan(); }
  /// x <- Q·x for every row of x (device memory), in place.
  template <storage_float T>
  void apply(device, matrix_view<T> x, cudaStream_t stream = nullptr) const {
    h_.apply(x, stream);
  }
  [[nodiscard]] const detail::device_hadamard& data() const noexcept { return h_; }

 private:
  detail::device_hadamard h_;
};

/// The randomized Hadamard transform Q = H·diag(s)/√n (quarot::randomized_hadamard): the
/// same signs for the same seed as on the CPU.
class randomized_hadamard {
 public:
  randomized_hadamard(std::size_t n, std::uint64_t seed) : signs_(random_signs(n, seed)), h_(n, signs_.data()) {}
  /// With signs given by the caller (each must be +1 or -1).
  explicit randomized_hadamard(std::vector<float> signs) : signs_(std::move(signs)), h_(signs_.size(), signs_.data()) {}

  [[nodiscard]] std::size_t size() const noexcept { return h_.size(); }
  [[nodiscard]] const hadamard_plan& plan() const noexcept { return h_.plan(); }
  [[nodiscard]] const std::vector<float>& signs() const noexcept { return signs_; }
  /// x <- Q·x = H(s ⊙ x)/√n for every row of x (device memory), in place.
  template <storage_float T>
  void apply(device, matrix_view<T> x, cudaStream_t stream = nullptr) const {
    h_.apply(x, stream);
  }
  [[nodiscard]] const detail::device_hadamard& data() const noexcept { return h_; }

 private:
  std::vector<float> signs_;
  detail::device_hadamard h_;
};

}  // namespace quarot::cuda
