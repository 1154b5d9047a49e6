// quarot — 4-bit packing.
//
// Plain layout (the storage format): element 2i in the low nibble of byte i, element 2i+1
// in the high nibble; an odd count leaves the last high nibble zero. Signed values
// ([-8, 7], symmetric quantization) are stored in two's complement; unsigned values
// ([0, 15], asymmetric quantization with a zero point) as they are.
//
// Interleaved layout (for kernels): blocks of 64 values in 32 bytes; byte j of a block
// holds element j in its low nibble and element j + 32 in its high nibble, so one 32-byte
// load gives elements 0..31 with `& 0xf` and 32..63 with `>> 4`, no shuffles (llama.cpp's
// Q4_0 blocks do the same with 32 values). The last block is zero-padded to 64 values.
// docs/ARCHITECTURE.md records the choice.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "config.hpp"
#include "error.hpp"

namespace quarot {

/// Bytes needed for n packed 4-bit values.
constexpr std::size_t int4_packed_size(std::size_t n) noexcept { return (n + 1) / 2; }

namespace detail {
/// Signed element i of a plain-layout int4 array (sign-extended). Host and device code.
QUAROT_HOST_DEVICE int int4_at(const std::uint8_t* packed, std::size_t i) noexcept {
  const std::uint8_t nib = (i % 2) ? (packed[i / 2] >> 4) : (packed[i / 2] & 0x0f);
  return (nib ^ 8) - 8;
}
/// Element i of a row of signed levels held as plain-layout int4 (packed4) or as int8.
QUAROT_HOST_DEVICE int level_at(const std::uint8_t* row, bool packed4, std::size_t i) noexcept {
  return packed4 ? int4_at(row, i) : static_cast<std::int8_t>(row[i]);
}
// Decoding 16-bit activation levels (kept beside level_at, which decodes the 4- and 8-bit ones).
/// Largest 16-bit activation level: levels in [-32640, 32639] split into two int8 halves
/// (quantize/activation.hpp).
inline constexpr int int16_split_max = 32639;
/// Element i of a row of little-endian int16 levels.
inline int int16_level_at(const std::uint8_t* row, std::size_t i) noexcept {
  return static_cast<std::int16_t>(static_cast<std::uint16_t>(row[2 * i] | (row[2 * i + 1] << 8)));
}

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
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = static_cast<std::int8_t>(detail::int4_at(packed.data(), i));
}
/// Unpacks n unsigned 4-bit values.
inline void unpack_uint4(std::span<const std::uint8_t> packed, std::span<std::uint8_t> out) {
  detail::require(packed.size() >= int4_packed_size(out.size()), "uint4 unpack: ", packed.size(),
                  " bytes hold fewer than ", out.size(), " values");
  for (std::size_t i = 0; i < out.size(); ++i)
    out[i] = (i % 2) ? std::uint8_t(packed[i / 2] >> 4) : std::uint8_t(packed[i / 2] & 0x0f);
}

/// Bytes needed for n values in the interleaved layout (whole 64-value blocks).
constexpr std::size_t int4_interleaved_size(std::size_t n) noexcept { return (n + 63) / 64 * 32; }

/// Packs signed values in [-8, 7] into the interleaved layout.
inline void pack_int4_interleaved(std::span<const std::int8_t> values, std::span<std::uint8_t> out) {
  const std::size_t n = values.size();
  detail::require(out.size() >= int4_interleaved_size(n), "int4 interleaved pack: output of ", out.size(),
                  " bytes is too short for ", n, " values (needs ", int4_interleaved_size(n), ")");
  for (std::size_t i = 0; i < n; ++i)
    if (values[i] < -8 || values[i] > 7)
      detail::fail(errc::invalid_argument, "int4 pack: value ", int(values[i]), " at index ", i, " is outside [-8, 7]");
  for (std::size_t b = 0; b < int4_interleaved_size(n) / 32; ++b)
    for (std::size_t j = 0; j < 32; ++j) {
      const std::size_t lo = b * 64 + j, hi = lo + 32;
      const std::uint8_t l = lo < n ? std::uint8_t(values[lo]) & 0x0f : 0;
      const std::uint8_t h = hi < n ? std::uint8_t(values[hi]) & 0x0f : 0;
      out[b * 32 + j] = static_cast<std::uint8_t>(l | (h << 4));
    }
}

/// Unpacks n signed values from the interleaved layout.
inline void unpack_int4_interleaved(std::span<const std::uint8_t> packed, std::span<std::int8_t> out) {
  detail::require(packed.size() >= int4_interleaved_size(out.size()), "int4 interleaved unpack: ", packed.size(),
                  " bytes hold fewer than ", out.size(), " values");
  for (std::size_t i = 0; i < out.size(); ++i) {
    const std::size_t b = i / 64, j = i % 64;
    const std::uint8_t byte = packed[b * 32 + (j % 32)];
    const std::uint8_t nib = j < 32 ? (byte & 0x0f) : (byte >> 4);
    out[i] = static_cast<std::int8_t>(static_cast<std::int8_t>(nib << 4) >> 4);
  }
}

}  // namespace quarot
