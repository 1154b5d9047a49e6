// quarot — backend tags and run-time CPU selection.
//
// Backends are empty tag types (xsimd's arch tags, CUTLASS's Sm80): algorithms are
// overloads on them, the most specific one wins and a scalar fallback always exists.
//   quarot::cpu::scalar            plain C++, the reference every fast path is tested against
//   quarot::cpu::simd<Arch>        x86 SIMD, Arch an xsimd 8.1 arch tag (or cpu::avx512vnni,
//                                  cpu::avx_vnni)
//   quarot::cuda::device           NVIDIA GPUs (include/quarot/backend/cuda/)
#pragma once

#include <cstdlib>
#include <string>
#include <string_view>

#include <xsimd/config/xsimd_arch.hpp>

#include "config.hpp"
#include "error.hpp"

#if QUAROT_HAS_X86_SIMD
#include <cpuid.h>
#endif

namespace quarot {
namespace cpu {

/// The scalar reference backend.
struct scalar {
  static constexpr const char* name() noexcept { return "scalar"; }
};

/// AVX-512 with VNNI (vpdpbusd). xsimd 8.1 has no tag for it, so it is ours; it is a
/// superset of xsimd::avx512bw, which inheritance says (as xsimd does: avx2 : avx).
struct avx512vnni : xsimd::avx512bw {
  static constexpr const char* name() noexcept { return "avx512vnni"; }
};

/// vpdpbusd on 256-bit registers, for the integer GEMM on AVX2 machines with AVX-VNNI (the
/// VEX form: Alder Lake, Sapphire Rapids, Zen 5 and later, with or without AVX-512). On
/// CPUs with AVX-512 VNNI the same kernels run with the instruction's EVEX form, so they
/// are also tested where AVX-VNNI is absent. Everything else is AVX2, which it extends.
/// Not an isa level: AVX-VNNI sits beside AVX-512, not above or below it.
struct avx_vnni : xsimd::avx2 {
  static constexpr const char* name() noexcept { return "avx_vnni"; }
};

/// A SIMD backend for one instruction set. Arch is an xsimd arch tag
/// (xsimd::avx2, xsimd::avx512bw), cpu::avx512vnni or cpu::avx_vnni.
template <class Arch>
struct simd {
  using arch_type = Arch;
  static constexpr const char* name() noexcept { return Arch::name(); }
};

using avx2_backend = simd<xsimd::avx2>;
using avx512_backend = simd<xsimd::avx512bw>;
using avx512vnni_backend = simd<avx512vnni>;
using avx_vnni_backend = simd<avx_vnni>;

/// The instruction sets quarot has kernels for, in increasing order.
enum class isa { scalar = 0, avx2 = 1, avx512 = 2, avx512vnni = 3 };

inline const char* to_string(isa i) noexcept {
  switch (i) {
    case isa::scalar: return "scalar";
    case isa::avx2: return "avx2";
    case isa::avx512: return "avx512";
    case isa::avx512vnni: return "avx512vnni";
  }
  return "?";
}

/// Parses "scalar", "avx2", "avx512", "avx512vnni"; throws naming the text otherwise.
inline isa parse_isa(std::string_view s) {
  if (s == "scalar") return isa::scalar;
  if (s == "avx2") return isa::avx2;
  if (s == "avx512") return isa::avx512;
  if (s == "avx512vnni") return isa::avx512vnni;
  detail::fail(errc::invalid_argument, "unknown CPU ISA '", s, "' (expected scalar, avx2, avx512 or avx512vnni)");
}

}  // namespace cpu

namespace detail {
/// Bit `bit` of register `reg` (0 EAX .. 3 EDX) of CPUID leaf / subleaf; false where the
/// leaf does not exist. For the features `__builtin_cpu_supports` does not name on every
/// compiler (clang 14 knows neither "f16c" nor "avxvnni").
inline bool cpuid_bit([[maybe_unused]] unsigned leaf, [[maybe_unused]] unsigned subleaf, [[maybe_unused]] int reg,
                      [[maybe_unused]] int bit) noexcept {
#if QUAROT_HAS_X86_SIMD
  unsigned r[4] = {};
  if (!__get_cpuid_count(leaf, subleaf, &r[0], &r[1], &r[2], &r[3])) return false;
  return (r[reg] >> bit) & 1u;
#else
  return false;
#endif
}
}  // namespace detail

namespace cpu {

/// The best ISA this CPU and OS support (CPUID, with the OS's XSAVE state checked by
/// the compiler runtime).
inline isa detected_isa() noexcept {
#if QUAROT_HAS_X86_SIMD
  __builtin_cpu_init();
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  if (avx512 && __builtin_cpu_supports("avx512vnni")) return isa::avx512vnni;
  if (avx512) return isa::avx512;
  // F16C: CPUID.1:ECX[29] (its YMM state is AVX2's, checked by the builtin).
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && detail::cpuid_bit(1, 0, 2, 29) &&
      __builtin_cpu_supports("bmi2"))
    return isa::avx2;
#endif
  return isa::scalar;
}

/// AVX512_BF16 (vdpbf16ps), used inside the AVX-512 backends where present (the
/// weight-only GEMM's bf16 dot products); not an ISA level of its own.
inline bool has_avx512_bf16() noexcept {
#if QUAROT_HAS_X86_SIMD
  __builtin_cpu_init();
  return detected_isa() >= isa::avx512 && __builtin_cpu_supports("avx512bf16");
#else
  return false;
#endif
}

/// AVX-VNNI (VEX-encoded vpdpbusd on 128/256-bit registers; CPUID.(EAX=7, ECX=1):EAX[4]).
inline bool has_avx_vnni() noexcept {
#if QUAROT_HAS_X86_SIMD
  __builtin_cpu_init();
  return detected_isa() >= isa::avx2 && detail::cpuid_bit(7, 1, 0, 4);
#else
  return false;
#endif
}

/// Whether this machine can run kernels for `i`.
inline bool supports(isa i) noexcept { return static_cast<int>(i) <= static_cast<int>(detected_isa()); }

/// Whether the cpu::avx_vnni_backend kernels run here: with AVX-VNNI, or with AVX-512 VNNI
/// (the instruction's EVEX form).
inline bool supports_avx_vnni_backend() noexcept { return has_avx_vnni() || supports(isa::avx512vnni); }

/// The ISA the default-dispatched entry points use: the detected one, or the one named
/// by the environment variable QUAROT_CPU_ISA (for testing a slower path on a fast
/// machine). Asking for an ISA the machine lacks is an error, not a silent fallback.
inline isa default_isa() {
  const char* env = std::getenv("QUAROT_CPU_ISA");
  if (env == nullptr || *env == '\0') return detected_isa();
  const isa want = parse_isa(env);
  if (!supports(want))
    detail::fail(errc::unsupported, "QUAROT_CPU_ISA=", env, " but this CPU supports at most ", to_string(detected_isa()));
  return want;
}

/// Calls f with the backend tag for `i`: f(cpu::scalar{}), f(avx2_backend{}), ...
/// This is the one place where a run-time ISA becomes a compile-time tag.
template <class F>
decltype(auto) dispatch(isa i, F&& f) {
  if (!supports(i)) detail::fail(errc::unsupported, "CPU ISA ", to_string(i), " is not supported by this machine");
  switch (i) {
#if QUAROT_HAS_X86_SIMD
    case isa::avx512vnni: return f(avx512vnni_backend{});
    case isa::avx512: return f(avx512_backend{});
    case isa::avx2: return f(avx2_backend{});
#endif
    default: return f(scalar{});
  }
}

}  // namespace cpu

namespace cuda {
/// The CUDA backend tag (kernels in include/quarot/backend/cuda/).
struct device {
  static constexpr const char* name() noexcept { return "cuda"; }
};
}  // namespace cuda

namespace detail {
template <class T>
inline constexpr bool is_simd_backend = false;
template <class Arch>
inline constexpr bool is_simd_backend<cpu::simd<Arch>> = true;
}  // namespace detail

/// Satisfied by the CPU backend tags.
template <class B>
concept cpu_backend = std::is_same_v<B, cpu::scalar> || detail::is_simd_backend<B>;

}  // namespace quarot
