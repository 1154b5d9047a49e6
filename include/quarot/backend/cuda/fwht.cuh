// quarot — CUDA fast Walsh-Hadamard transform for n = 2^k, k = 0..15, on rows of fp32,
// fp16 or bf16 (computed in fp32), optionally with a ±1 sign vector first (randomized
// Hadamard) and scaled by 1/√n. One thread block per row: the row is read once into
// shared memory, the log2(n) butterfly levels run there, and it is written once.
//
// This is the first, straightforward kernel (correctness reference for the GPU);
// the register/warp-shuffle version is the work of the CUDA issue.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstddef>

#include "../../core/matrix_view.hpp"
#include "../../core/numeric.hpp"
#include "common.cuh"

namespace quarot::cuda {

namespace detail {

__device__ inline float load_as_float(const float* p) { return *p; }
__device__ inline float load_as_float(const quarot::half* p) {
  return __half2float(__ushort_as_half(p->bits));
}
__device__ inline float load_as_float(const quarot::bfloat16* p) {
  return __uint_as_float(static_cast<unsigned>(p->bits) << 16);
}
__device__ inline void store_from_float(float* p, float v) { *p = v; }
__device__ inline void store_from_float(quarot::half* p, float v) { p->bits = __half_as_ushort(__float2half_rn(v)); }
__device__ inline void store_from_float(quarot::bfloat16* p, float v) {
  p->bits = __bfloat16_as_ushort(__float2bfloat16_rn(v));
}

template <class T>
__global__ void fwht_rows_kernel(T* x, std::size_t stride, unsigned log2n, float scale, const float* signs) {
  extern __shared__ float buf[];
  const std::size_t n = std::size_t{1} << log2n;
  T* row = x + blockIdx.x * stride;
  for (std::size_t i = threadIdx.x; i < n; i += blockDim.x) {
    const float v = load_as_float(row + i);
    buf[i] = signs ? v * signs[i] : v;
  }
  __syncthreads();
  for (std::size_t h = 1; h < n; h *= 2) {
    for (std::size_t t = threadIdx.x; t < n / 2; t += blockDim.x) {
      const std::size_t i = (t / h) * 2 * h + (t % h);
      const float a = buf[i], b = buf[i + h];
      buf[i] = a + b;
      buf[i + h] = a - b;
    }
    __syncthreads();
  }
  for (std::size_t i = threadIdx.x; i < n; i += blockDim.x) store_from_float(row + i, buf[i] * scale);
}

}  // namespace detail

/// Transforms every row of x (device memory) in place: x_row <- scale · H_n (signs ⊙ x_row),
/// scale = 1/√n when normalize. `signs` is a device array of n ±1 values or null.
template <storage_float T>
void walsh_hadamard(device, matrix_view<T> x, bool normalize = true, const float* signs = nullptr,
                    cudaStream_t stream = nullptr) {
  if (x.empty()) return;
  const std::size_t n = x.cols;
  quarot::detail::require(n >= 1 && (n & (n - 1)) == 0 && n <= (std::size_t{1} << 15), "CUDA Walsh-Hadamard size ",
                          n, " is not a power of two in [1, 2^15]");
  quarot::detail::require(x.rows <= 0x7fffffffu, "CUDA Walsh-Hadamard: ", x.rows, " rows exceed the grid limit");
  unsigned log2n = 0;
  while ((std::size_t{1} << log2n) < n) ++log2n;
  const float scale = normalize ? static_cast<float>(1.0 / std::sqrt(double(n))) : 1.0f;
  const std::size_t shmem = n * sizeof(float);
  if (shmem > 48 * 1024)
    QUAROT_CUDA_CHECK(cudaFuncSetAttribute(detail::fwht_rows_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(shmem)));
  const unsigned threads = static_cast<unsigned>(n / 2 < 32 ? 32 : (n / 2 > 1024 ? 1024 : n / 2));
  detail::fwht_rows_kernel<T><<<static_cast<unsigned>(x.rows), threads, shmem, stream>>>(x.data, x.stride, log2n,
                                                                                          scale, signs);
  QUAROT_CUDA_CHECK(cudaGetLastError());
}

}  // namespace quarot::cuda
