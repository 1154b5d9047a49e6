// quarot — CUDA backend basics: error checking that turns a failed CUDA call into
// quarot::error naming the call, and a small owning device buffer.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "../../core/backend.hpp"
#include "../../core/error.hpp"
#include "../../core/matrix_view.hpp"
#include "../../core/numeric.hpp"

namespace quarot::cuda {

namespace detail {
inline void check(cudaError_t status, const char* call, const char* file, int line) {
  if (status != cudaSuccess)
    quarot::detail::fail(errc::cuda, call, " failed: ", cudaGetErrorName(status), " (", cudaGetErrorString(status),
                         ") at ", file, ":", line);
}

// A CUDA call whose failure becomes quarot::error (errc::cuda) naming the call.
#define QUAROT_CUDA_CHECK(call) ::quarot::cuda::detail::check((call), #call, __FILE__, __LINE__)

/// Launches `kernel` on grid x block threads with `shmem` bytes of dynamic shared memory
/// on `stream`. One launch point for every kernel of the backend, so that the CPU
/// emulation of the tests (tests/cuda/emulation/) can run the same kernels.
template <class... Params, class... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, std::size_t shmem, cudaStream_t stream,
            Args&&... args) {
#if defined(QUAROT_CUDA_EMULATION)
  (void)stream;
  ::quarot_cuda_emulation::launch(kernel, grid, block, shmem, static_cast<Params>(args)...);
#else
  kernel<<<grid, block, shmem, stream>>>(static_cast<Params>(args)...);
#endif
  check(cudaGetLastError(), "kernel launch", __FILE__, __LINE__);
}

/// launch() in thread-block clusters of `cluster` blocks (compute capability 9.0; the grid
/// a multiple of the cluster), through cudaLaunchKernelEx.
template <class... Params, class... Args>
void launch_cluster(void (*kernel)(Params...), dim3 grid, dim3 block, dim3 cluster, std::size_t shmem,
                    cudaStream_t stream, Args&&... args) {
#if defined(QUAROT_CUDA_EMULATION)
  (void)stream;
  ::quarot_cuda_emulation::launch_cluster(kernel, grid, block, cluster, shmem, static_cast<Params>(args)...);
  check(cudaGetLastError(), "kernel launch", __FILE__, __LINE__);
#else
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = shmem;
  config.stream = stream;
  cudaLaunchAttribute attribute{};
  attribute.id = cudaLaunchAttributeClusterDimension;
  attribute.val.clusterDim.x = cluster.x;
  attribute.val.clusterDim.y = cluster.y;
  attribute.val.clusterDim.z = cluster.z;
  config.attrs = &attribute;
  config.numAttrs = 1;
  check(cudaLaunchKernelEx(&config, kernel, static_cast<Params>(args)...), "cudaLaunchKernelEx (cluster launch)",
        __FILE__, __LINE__);
#endif
}

// Unrolls the loop that follows in device code (nothing on the emulation).
#if defined(QUAROT_CUDA_EMULATION)
#define QUAROT_CUDA_UNROLL
#else
#define QUAROT_CUDA_UNROLL _Pragma("unroll")
#endif

// The dynamic shared memory of a kernel (extern __shared__), as a pointer `name` to T.
#if defined(QUAROT_CUDA_EMULATION)
#define QUAROT_CUDA_DYNAMIC_SHARED(T, name) T* name = ::quarot_cuda_emulation::dynamic_shared<T>()
#else
#define QUAROT_CUDA_DYNAMIC_SHARED(T, name) \
  extern __shared__ __align__(16) unsigned char quarot_dynamic_shared_bytes[]; \
  T* name = reinterpret_cast<T*>(quarot_dynamic_shared_bytes)
#endif

// Element conversions of the storage types (quarot::half / bfloat16 hold the raw bits).
__device__ inline float load_as_float(const float* p) { return *p; }
__device__ inline float load_as_float(const quarot::half* p) { return __half2float(__ushort_as_half(p->bits)); }
__device__ inline float load_as_float(const quarot::bfloat16* p) {
  return __uint_as_float(static_cast<unsigned>(p->bits) << 16);
}
__device__ inline void store_from_float(float* p, float v) { *p = v; }
__device__ inline void store_from_float(quarot::half* p, float v) { p->bits = __half_as_ushort(__float2half_rn(v)); }
__device__ inline void store_from_float(quarot::bfloat16* p, float v) {
  p->bits = __bfloat16_as_ushort(__float2bfloat16_rn(v));
}

/// v rounded to bf16 (to nearest even, as quarot::bfloat16's conversion) and back.
__device__ inline float round_to_bf16(float v) {
  quarot::bfloat16 b;
  store_from_float(&b, v);
  return load_as_float(&b);
}

/// Whether v is neither infinite nor NaN (from its exponent bits).
__device__ __forceinline__ bool is_finite(float v) { return (__float_as_uint(v) & 0x7f800000u) != 0x7f800000u; }

/// The current device (cudaGetDevice).
inline int current_device() {
  int dev = 0;
  QUAROT_CUDA_CHECK(cudaGetDevice(&dev));
  return dev;
}

/// Throws errc::invalid_argument naming both devices when `what`, allocated on `device`
/// (-1: nothing allocated, no check), is used while another device is current: a kernel
/// there would fault on the pointers (or, with peer access, read across the bus).
inline void require_current_device(int device, const char* what) {
  if (device < 0) return;
  const int current = current_device();
  quarot::detail::require(current == device, what, " live on CUDA device ", device, " but the current device is ",
                          current, " (cudaSetDevice(", device, ") before the call)");
}

/// Whether the current device can read pageable host memory (HMM, or Grace's coherent
/// memory: cudaDevAttrPageableMemoryAccess); asked once per device.
inline bool pageable_memory_access();

/// Throws errc::invalid_argument naming `what` and the pointer when a kernel on the current
/// device could not read p, a caller's pointer: null, host memory the device cannot
/// address (not from cudaMalloc / cudaMallocManaged / cudaHostAlloc), or memory of another
/// device (refused as our own buffers are: without peer access a kernel would fault, and a
/// fault is a sticky error that ends the context). cudaPointerGetAttributes finds the
/// allocation of an interior pointer too; the extent of a view is the caller's to vouch
/// for (the runtime API does not tell an allocation's size). One runtime call, no
/// synchronization: a pure query, like the device-attribute ones, which stream capture
/// permits (not yet tried under capture on a device).
inline void require_device_pointer(const void* p, const char* what) {
  quarot::detail::require(p != nullptr, what, " is a null pointer");
  cudaPointerAttributes a{};
  if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
    (void)cudaGetLastError();  // not an error that names the pointer: leave it to the kernel
    return;
  }
  const int current = current_device();
  if (a.type == cudaMemoryTypeDevice)
    quarot::detail::require(a.device == current, what, " (", p, ") is memory of CUDA device ", a.device,
                            " but the current device is ", current, " (cudaSetDevice(", a.device, ") before the call)");
  else if (a.type == cudaMemoryTypeHost)
    quarot::detail::require(a.devicePointer == p, what, " (", p, ") is page-locked host memory not mapped at the ",
                            "same address on the device (cudaHostGetDevicePointer gives the device's address)");
  else if (a.type == cudaMemoryTypeUnregistered)
    quarot::detail::require(pageable_memory_access(), what, " (", p, ") is host memory, which CUDA device ", current,
                            " cannot read: copy it to device memory (device_buffer, cudaMalloc) first");
}

/// require_device_pointer for a view's data (nothing to check when it is empty), and its
/// shape: rows may not overlap (stride >= cols) and the data must be aligned for T.
template <class T>
void require_device_view(const matrix_view<T>& v, const char* what) {
  if (v.empty()) return;
  quarot::detail::require(v.stride >= v.cols, what, ": row stride ", v.stride, " is smaller than the row length ",
                          v.cols);
  quarot::detail::require(reinterpret_cast<std::uintptr_t>(v.data) % alignof(T) == 0, what, " (",
                          static_cast<const void*>(v.data), ") is not aligned to its ", alignof(T), "-byte elements");
  require_device_pointer(v.data, what);
}

/// The compute capability of the current device as 10·major + minor (80, 86, 89, 90, ...).
inline int compute_capability() {
  const int dev = current_device();
  int major = 0, minor = 0;
  QUAROT_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  QUAROT_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev));
  return 10 * major + minor;
}

/// The most dynamic shared memory one block of the current device may use (opt-in).
inline std::size_t max_shared_per_block() {
  const int dev = current_device();
  int bytes = 0;
  QUAROT_CUDA_CHECK(cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  return static_cast<std::size_t>(bytes);
}

/// A fact about the current device, `answer(device)`, asked once per device and process
/// (devices 0-63; others every time) with `known` as the caller's own table: 0 unknown,
/// else 4·c + 1 (no) or 4·c + 2 (yes), asked under configuration c. On a GPU c is always
/// 0; on the tests' emulation, whose device the tests change (compute capability,
/// pageable memory), it is the emulated settings, so an answer is asked again only when
/// they changed (the wgmma self-test had run at every GEMM construction).
template <class Answer>
bool once_per_device(std::atomic<int> (&known)[64], Answer&& answer) {
  const int dev = current_device();
  const bool cacheable = dev >= 0 && dev < 64;
#if defined(QUAROT_CUDA_EMULATION)
  const int configuration = ::quarot_cuda_emulation::device_configuration();
#else
  constexpr int configuration = 0;
#endif
  if (cacheable) {
    const int k = known[dev].load();
    if (k != 0 && k / 4 == configuration) return k % 4 == 2;
  }
  const bool yes = answer(dev);
  if (cacheable) known[dev].store(4 * configuration + (yes ? 2 : 1));
  return yes;
}

inline bool pageable_memory_access() {
  static std::atomic<int> known[64];
  return once_per_device(known, [](int dev) {
    int yes = 0;
    QUAROT_CUDA_CHECK(cudaDeviceGetAttribute(&yes, cudaDevAttrPageableMemoryAccess, dev));
    return yes != 0;
  });
}

/// Grid size for `rows` rows of `per_block` rows each, checked against the grid limit.
inline unsigned grid_for(std::size_t rows, std::size_t per_block) {
  const std::size_t blocks = (rows + per_block - 1) / per_block;
  quarot::detail::require(blocks <= 0x7fffffffu, "CUDA: ", rows, " rows need ", blocks, " blocks, over the grid limit");
  return static_cast<unsigned>(blocks);
}

/// Sets a kernel's dynamic shared memory limit to `bytes` when, with its `static_bytes` of
/// static shared memory, it needs more than the default 48 KiB per block.
template <class Kernel>
void allow_shared(Kernel* kernel, std::size_t bytes, std::size_t static_bytes = 0) {
  if (bytes + static_bytes > 48 * 1024) {
    const std::size_t limit = max_shared_per_block();
    quarot::detail::require(bytes + static_bytes <= limit, "CUDA kernel needs ", bytes + static_bytes,
                            " bytes of shared memory per block; this device allows ", limit);
    QUAROT_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
  }
}
}  // namespace detail

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

/// An owning array of T in device memory (cudaMalloc; no managed memory) on the device that
/// was current when it allocated. resize() keeps the allocation when the new size fits
/// (size() <= capacity()), so that a per-call buffer sized by a varying batch (decode)
/// allocates once, at its largest size, and never again: cudaMalloc and cudaFree may
/// synchronize the device, and neither is allowed while a stream is being captured into a
/// CUDA graph.
template <class T>
class device_buffer {
 public:
  device_buffer() = default;
  explicit device_buffer(std::size_t n) { resize(n); }
  device_buffer(const device_buffer&) = delete;
  device_buffer& operator=(const device_buffer&) = delete;
  device_buffer(device_buffer&& o) noexcept
      : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)), capacity_(std::exchange(o.capacity_, 0)),
        device_(std::exchange(o.device_, -1)) {}
  device_buffer& operator=(device_buffer&& o) noexcept {
    if (this != &o) {
      release();
      p_ = std::exchange(o.p_, nullptr);
      n_ = std::exchange(o.n_, 0);
      capacity_ = std::exchange(o.capacity_, 0);
      device_ = std::exchange(o.device_, -1);
    }
    return *this;
  }
  ~device_buffer() { release(); }

  [[nodiscard]] T* data() noexcept { return p_; }
  [[nodiscard]] const T* data() const noexcept { return p_; }
  [[nodiscard]] std::size_t size() const noexcept { return n_; }
  [[nodiscard]] bool empty() const noexcept { return n_ == 0; }
  /// Elements the allocation holds (size() <= capacity()).
  [[nodiscard]] std::size_t capacity() const noexcept { return capacity_; }
  /// The device the allocation lives on, or -1 when there is none.
  [[nodiscard]] int device() const noexcept { return device_; }

  /// Makes the size n. Reallocates, without keeping the contents, only when n exceeds the
  /// capacity; otherwise the contents stay as they are.
  void resize(std::size_t n) {
    if (n <= capacity_) {
      n_ = n;
      return;
    }
    quarot::detail::require(n <= static_cast<std::size_t>(-1) / sizeof(T), "device_buffer: ", n,
                            " elements overflow the byte count");
    release();
    QUAROT_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&p_), n * sizeof(T)));
    device_ = detail::current_device();
    n_ = capacity_ = n;
  }
  /// Frees the allocation (size and capacity 0).
  void clear() noexcept { release(); }

  /// The first rows x cols elements as a row-major view with the given row stride
  /// (default: cols), for the kernels' matrix_view arguments. Throws when the stride is
  /// smaller than cols or the buffer is too short for the last row (the extent check a raw
  /// device pointer cannot have).
  [[nodiscard]] matrix_view<T> view(std::size_t rows, std::size_t cols, std::size_t stride = 0) {
    return {p_, rows, cols, checked_stride(rows, cols, stride)};
  }
  [[nodiscard]] matrix_view<const T> view(std::size_t rows, std::size_t cols, std::size_t stride = 0) const {
    return {p_, rows, cols, checked_stride(rows, cols, stride)};
  }

  /// Sets every byte to `byte` (asynchronously on `stream`).
  void fill_bytes(int byte, cudaStream_t stream = nullptr) {
    if (n_) QUAROT_CUDA_CHECK(cudaMemsetAsync(p_, byte, n_ * sizeof(T), stream));
  }

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
  std::size_t checked_stride(std::size_t rows, std::size_t cols, std::size_t stride) const {
    if (stride == 0) stride = cols;
    quarot::detail::require(stride >= cols, "device_buffer::view: row stride ", stride,
                            " is smaller than the row length ", cols);
    if (rows && cols) {
      quarot::detail::require(stride <= (static_cast<std::size_t>(-1) - cols) / rows, "device_buffer::view: ", rows,
                              " rows of stride ", stride, " overflow the element count");
      const std::size_t need = (rows - 1) * stride + cols;
      quarot::detail::require(need <= n_, "device_buffer::view: ", rows, " x ", cols, " with stride ", stride,
                              " needs ", need, " elements, the buffer holds ", n_);
    }
    return stride;
  }
  void release() noexcept {
    if (p_) cudaFree(p_);
    p_ = nullptr;
    n_ = capacity_ = 0;
    device_ = -1;
  }
  T* p_ = nullptr;
  std::size_t n_ = 0, capacity_ = 0;
  int device_ = -1;
};

namespace detail {
/// A per-call device array of T from the stream-ordered allocator (cudaMallocAsync on
/// `stream`), freed on the same stream when it goes out of scope, that is after the work
/// queued on it meanwhile. Scratch of this kind keeps a const call reentrant: two calls on
/// two streams get two arrays, where a member buffer would be shared between them.
template <class T>
class stream_scratch {
 public:
  stream_scratch(std::size_t n, cudaStream_t stream) : stream_(stream) {
    if (n) QUAROT_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&p_), n * sizeof(T), stream));
  }
  stream_scratch(const stream_scratch&) = delete;
  stream_scratch& operator=(const stream_scratch&) = delete;
  ~stream_scratch() {
    if (p_) cudaFreeAsync(p_, stream_);
  }
  [[nodiscard]] T* data() const noexcept { return p_; }

 private:
  T* p_ = nullptr;
  cudaStream_t stream_;
};

}  // namespace detail

}  // namespace quarot::cuda
