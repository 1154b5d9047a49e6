// quarot — CUDA backend basics: error checking that turns a failed CUDA call into
// quarot::error naming the call, and a small owning device buffer.
#pragma once

#include <cstddef>
#include <string>
#include <utility>

#include <cuda_runtime.h>

#include "../../core/backend.hpp"
#include "../../core/error.hpp"

namespace quarot::cuda {

namespace detail {
inline void check(cudaError_t status, const char* call, const char* file, int line) {
  if (status != cudaSuccess)
    quarot::detail::fail(errc::cuda, call, " failed: ", cudaGetErrorName(status), " (", cudaGetErrorString(status),
                         ") at ", file, ":", line);
}
}  // namespace detail

#define QUAROT_CUDA_CHECK(call) ::quarot::cuda::detail::check((call), #call, __FILE__, __LINE__)

/// Number of CUDA devices, 0 when there is no driver or no device (never throws).
inline int device_count() noexcept {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky "no device" error
    return 0;
  }
  return n;
}

/// Why no device can be used, or "" when one can.
inline std::string unavailable_reason() {
  int n = 0;
  const cudaError_t st = cudaGetDeviceCount(&n);
  if (st != cudaSuccess) {
    (void)cudaGetLastError();
    return std::string("cudaGetDeviceCount: ") + cudaGetErrorString(st);
  }
  return n == 0 ? "no CUDA device" : "";
}

/// An owning array of T in device memory (cudaMalloc; no managed memory).
template <class T>
class device_buffer {
 public:
  device_buffer() = default;
  explicit device_buffer(std::size_t n) : n_(n) {
    if (n) QUAROT_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&p_), n * sizeof(T)));
  }
  device_buffer(const device_buffer&) = delete;
  device_buffer& operator=(const device_buffer&) = delete;
  device_buffer(device_buffer&& o) noexcept : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  device_buffer& operator=(device_buffer&& o) noexcept {
    if (this != &o) {
      reset();
      p_ = std::exchange(o.p_, nullptr);
      n_ = std::exchange(o.n_, 0);
    }
    return *this;
  }
  ~device_buffer() { reset(); }

  [[nodiscard]] T* data() noexcept { return p_; }
  [[nodiscard]] const T* data() const noexcept { return p_; }
  [[nodiscard]] std::size_t size() const noexcept { return n_; }

  void upload(const T* host, std::size_t n, cudaStream_t stream = nullptr) {
    quarot::detail::require(n <= n_, "device_buffer::upload: ", n, " elements into a buffer of ", n_);
    QUAROT_CUDA_CHECK(cudaMemcpyAsync(p_, host, n * sizeof(T), cudaMemcpyHostToDevice, stream));
  }
  void download(T* host, std::size_t n, cudaStream_t stream = nullptr) const {
    quarot::detail::require(n <= n_, "device_buffer::download: ", n, " elements from a buffer of ", n_);
    QUAROT_CUDA_CHECK(cudaMemcpyAsync(host, p_, n * sizeof(T), cudaMemcpyDeviceToHost, stream));
    QUAROT_CUDA_CHECK(cudaStreamSynchronize(stream));
  }

 private:
  void reset() noexcept {
    if (p_) cudaFree(p_);
    p_ = nullptr;
    n_ = 0;
  }
  T* p_ = nullptr;
  std::size_t n_ = 0;
};

}  // namespace quarot::cuda
