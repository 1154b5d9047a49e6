// quarot — 16-bit storage types (IEEE binary16 and bfloat16) with exact, portable
// conversions. Arithmetic always happens in fp32; these only store.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "config.hpp"

namespace quarot {

/// IEEE 754 binary16 storage.
struct half {
  std::uint16_t bits = 0;
};
/// bfloat16 storage: the upper half of an fp32.
struct bfloat16 {
  std::uint16_t bits = 0;
};

namespace detail {

QUAROT_HOST_DEVICE std::uint32_t float_bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
QUAROT_HOST_DEVICE float bits_float(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

}  // namespace detail

/// binary16 -> fp32, exact (subnormals, Inf and NaN included).
QUAROT_HOST_DEVICE float to_float(half h) {
  const std::uint32_t sign = std::uint32_t(h.bits & 0x8000u) << 16;
  const std::uint32_t exp = (h.bits >> 10) & 0x1fu;
  std::uint32_t mant = h.bits & 0x3ffu;
  if (exp == 0x1f) return detail::bits_float(sign | 0x7f800000u | (mant << 13));  // Inf/NaN
  if (exp == 0) {
    if (mant == 0) return detail::bits_float(sign);
    // Subnormal: value = mant * 2^-24.
    const float v = float(mant) * 5.9604644775390625e-8f;
    return sign ? -v : v;
  }
  return detail::bits_float(sign | ((exp + 112u) << 23) | (mant << 13));
}

/// fp32 -> binary16 with round-to-nearest-even (the IEEE default, and what F16C's
/// vcvtps2ph with imm 0 does), overflow to Inf, NaN kept quiet.
QUAROT_HOST_DEVICE half to_half(float f) {
  const std::uint32_t u = detail::float_bits(f);
  const std::uint16_t sign = std::uint16_t((u >> 16) & 0x8000u);
  const std::uint32_t au = u & 0x7fffffffu;
  if (au >= 0x7f800000u) {  // Inf or NaN
    // NaN keeps the top payload bits and is made quiet, as F16C's vcvtps2ph does.
    return half{std::uint16_t(sign | 0x7c00u | (au > 0x7f800000u ? (0x200u | ((au >> 13) & 0x3ffu)) : 0u))};
  }
  if (au >= 0x477ff000u) return half{std::uint16_t(sign | 0x7c00u)};  // rounds to >= 65520 -> Inf
  if (au < 0x38800000u) {
    // Result is subnormal or zero: value / 2^-24, rounded to nearest even.
    const float a = detail::bits_float(au);
    // Adding 0.5 (2^-1) in fp32 rounds a*2^24 to an integer with RNE (magic number trick).
    const float scaled = a * 16777216.0f;  // exact: power of two
    const float r = (scaled + 8388608.0f) - 8388608.0f;
    return half{std::uint16_t(sign | std::uint16_t(r))};
  }
  // Normal: rebias exponent, round mantissa from 23 to 10 bits (RNE).
  std::uint32_t v = au - (112u << 23);
  const std::uint32_t lsb = (v >> 13) & 1u;
  v += 0xfffu + lsb;
  return half{std::uint16_t(sign | (v >> 13))};
}

/// bfloat16 -> fp32, exact.
QUAROT_HOST_DEVICE float to_float(bfloat16 b) { return detail::bits_float(std::uint32_t(b.bits) << 16); }

/// fp32 -> bfloat16 with round-to-nearest-even; NaN stays NaN.
QUAROT_HOST_DEVICE bfloat16 to_bfloat16(float f) {
  const std::uint32_t u = detail::float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bfloat16{std::uint16_t((u >> 16) | 0x40u)};
  const std::uint32_t lsb = (u >> 16) & 1u;
  return bfloat16{std::uint16_t((u + 0x7fffu + lsb) >> 16)};
}

QUAROT_HOST_DEVICE float to_float(float f) { return f; }

/// Converts fp32 to a storage type T (float, half or bfloat16).
template <class T>
QUAROT_HOST_DEVICE T from_float(float f) {
  if constexpr (std::is_same_v<T, half>) {
    return to_half(f);
  } else if constexpr (std::is_same_v<T, bfloat16>) {
    return to_bfloat16(f);
  } else {
    return static_cast<T>(f);
  }
}

/// The storage types the transforms accept.
template <class T>
concept storage_float = std::is_same_v<T, float> || std::is_same_v<T, half> || std::is_same_v<T, bfloat16>;

template <class T>
constexpr const char* type_name() noexcept {
  if constexpr (std::is_same_v<T, float>) return "fp32";
  else if constexpr (std::is_same_v<T, half>) return "fp16";
  else if constexpr (std::is_same_v<T, bfloat16>) return "bf16";
  else if constexpr (std::is_same_v<T, double>) return "fp64";
  else if constexpr (std::is_same_v<T, std::int8_t>) return "int8";
  else if constexpr (std::is_same_v<T, std::int32_t>) return "int32";
  else return "unknown";
}

}  // namespace quarot
