// quarot — 4-bit packing.
//
// Layout ("plain", the storage format): element 2i in the low nibble of byte i, element
// 2i+1 in the high nibble; an odd count leaves the last high nibble zero. Signed values
// ([-8, 7], symmetric quantization) are stored in two's complement; unsigned values
// ([0, 15], asymmetric quantization with a zero point) as they are. The GEMM kernels'
// interleaved layout is built from this one by their pre-packing step
// (docs/ARCHITECTURE.md).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "error.hpp"

namespace quarot {

/// Bytes needed for n packed 4-bit values.
constexpr std::size_t int4_packed_size(std::size_t n) noexcept { return (n + 1) / 2; }

namespace detail {
template <bool Signed, class In>
void pack_nibbles(std::span<const In> values, std::span<std::uint8_t> out) {
  require(out.size() >= int4_packed_size(values.size()), "int4 pack: output of ", out.size(),
          " bytes is too short for ", values.size(), " values (needs ", int4_packed_size(values.size()), ")");
  constexpr int lo = Signed ? -8 : 0, hi = Signed ? 7 : 15;
  for (std::size_t i = 0; i < values.size(); ++i) {
    const int v = values[i];
    if (v < lo || v > hi)
      fail(errc::invalid_argument, "int4 pack: value ", v, " at index ", i, " is outside [", lo, ", ", hi, "]");
  }
  const std::size_t pairs = values.size() / 2;
  for (std::size_t i = 0; i < pairs; ++i)
    out[i] = std::uint8_t((std::uint8_t(values[2 * i]) & 0x0f) | (std::uint8_t(values[2 * i + 1]) << 4));
  if (values.size() % 2) out[pairs] = std::uint8_t(std::uint8_t(values[2 * pairs]) & 0x0f);
}
}  // namespace detail

/// Packs signed values in [-8, 7]; throws naming the first value out of range.
inline void pack_int4(std::span<const std::int8_t> values, std::span<std::uint8_t> out) {
  detail::pack_nibbles<true>(values, out);
}
/// Packs unsigned values in [0, 15].
inline void pack_uint4(std::span<const std::uint8_t> values, std::span<std::uint8_t> out) {
  detail::pack_nibbles<false>(values, out);
}

/// Unpacks n signed 4-bit values (sign-extended).
inline void unpack_int4(std::span<const std::uint8_t> packed, std::span<std::int8_t> out) {
  detail::require(packed.size() >= int4_packed_size(out.size()), "int4 unpack: ", packed.size(),
                  " bytes hold fewer than ", out.size(), " values");
  for (std::size_t i = 0; i < out.size(); ++i) {
    const std::uint8_t nib = (i % 2) ? (packed[i / 2] >> 4) : (packed[i / 2] & 0x0f);
    out[i] = static_cast<std::int8_t>(static_cast<std::int8_t>(nib << 4) >> 4);
  }
}
/// Unpacks n unsigned 4-bit values.
inline void unpack_uint4(std::span<const std::uint8_t> packed, std::span<std::uint8_t> out) {
  detail::require(packed.size() >= int4_packed_size(out.size()), "uint4 unpack: ", packed.size(),
                  " bytes hold fewer than ", out.size(), " values");
  for (std::size_t i = 0; i < out.size(); ++i)
    out[i] = (i % 2) ? std::uint8_t(packed[i / 2] >> 4) : std::uint8_t(packed[i / 2] & 0x0f);
}

}  // namespace quarot
