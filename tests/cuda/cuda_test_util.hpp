// Small helpers of the CUDA tests (plain executables: a check counter, skip-with-reason,
// expected-error checks, reproducible data).
#pragma once

#include <cstdio>
#include <string>
#include <type_traits>
#include <vector>

#include <quarot/backend/cuda/common.cuh>
#include <quarot/core/error.hpp>
#include <quarot/core/random.hpp>

namespace cuda_test {

/// Whether the kernels run on the CPU emulation (tests/cuda/emulation/): the same checks,
/// on smaller problems where the emulation would take minutes.
#if defined(QUAROT_CUDA_EMULATION)
inline constexpr bool emulated = true;
#else
inline constexpr bool emulated = false;
#endif
/// Emulated under AddressSanitizer or the race checker (ThreadSanitizer; several times
/// slower): every kernel and path still runs, on fewer shapes.
#if defined(QUAROT_CUDA_EMULATION) && (QUAROT_EMULATION_ASAN || QUAROT_EMULATION_TSAN)
inline constexpr bool quick = true;
#else
inline constexpr bool quick = false;
#endif

/// Whether a CUDA device can run kernels; prints the reason when not.
inline bool device_ready() {
  if (emulated) std::printf("running on the CPU emulation of CUDA (tests/cuda/emulation)\n");
  const std::string why = quarot::cuda::unavailable_reason();
  if (why.empty()) return true;
  std::printf("SKIPPED: %s\n", why.c_str());
  return false;
}

class counter {
 public:
  void check(bool ok, const std::string& what) {
    ++checks_;
    if (!ok) {
      ++failures_;
      std::printf("FAILED: %s\n", what.c_str());
    } else if (verbose_) {
      std::printf("ok: %s\n", what.c_str());
    }
  }
  /// f() must throw quarot::error with `code`.
  template <class F>
  void expect_error(quarot::errc code, const std::string& what, F&& f) {
    try {
      f();
      check(false, what + ": no error thrown");
    } catch (const quarot::error& e) {
      check(e.code() == code, what + " -> " + e.what());
    }
  }
  /// Exit code 77 (ctest: skipped) after the device-free checks, which must have passed.
  int skip() const {
    std::printf("%d device-free checks, %d failed; the rest needs a GPU\n", checks_, failures_);
    return failures_ ? 1 : 77;
  }
  int finish() const {
    std::printf("%d checks, %d failed\n", checks_, failures_);
    return failures_ ? 1 : 0;
  }

 private:
  int checks_ = 0, failures_ = 0;
  bool verbose_ = true;
};

/// n normal(0, 1) values with a few large outliers (what a rotation is for).
inline std::vector<float> random_values(std::size_t n, std::uint64_t seed, float outlier = 20.0f) {
  quarot::xoshiro256 rng(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(rng.normal());
  for (std::size_t i = 0; i < n; i += 97) v[i] *= outlier;
  return v;
}

/// On the emulation, makes the emulated device a Hopper (compute capability 9.0, which the
/// emulation treats as running sm_90a code: wgmma) for the object's lifetime when `hopper`;
/// on a GPU it changes nothing.
class emulated_hopper {
 public:
  explicit emulated_hopper(bool hopper) {
#if defined(QUAROT_CUDA_EMULATION)
    if (hopper) {
      quarot_cuda_emulation::compute_major = 9;
      quarot_cuda_emulation::compute_minor = 0;
    }
#else
    (void)hopper;
#endif
  }
  ~emulated_hopper() {
#if defined(QUAROT_CUDA_EMULATION)
    quarot_cuda_emulation::compute_major = major_;
    quarot_cuda_emulation::compute_minor = minor_;
#endif
  }
  emulated_hopper(const emulated_hopper&) = delete;
  emulated_hopper& operator=(const emulated_hopper&) = delete;

 private:
#if defined(QUAROT_CUDA_EMULATION)
  int major_ = quarot_cuda_emulation::compute_major, minor_ = quarot_cuda_emulation::compute_minor;
#endif
};

template <class T>
const char* type_name() {
  if constexpr (std::is_same_v<T, float>) return "fp32";
  else if constexpr (std::is_same_v<T, quarot::half>) return "fp16";
  else return "bf16";
}

}  // namespace cuda_test
