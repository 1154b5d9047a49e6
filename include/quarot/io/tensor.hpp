// quarot — an owning n-dimensional tensor of one of the element types quarot reads and
// writes (.npy, .safetensors), with conversion to fp32.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "../core/error.hpp"
#include "../core/numeric.hpp"

namespace quarot::io {

enum class dtype { f32, f16, bf16, i8, u8, i32, f64, i64, i16, u16, u32, u64, boolean };

inline std::size_t element_size(dtype t) noexcept {
  switch (t) {
    case dtype::f64:
    case dtype::i64:
    case dtype::u64: return 8;
    case dtype::f32:
    case dtype::i32:
    case dtype::u32: return 4;
    case dtype::f16:
    case dtype::bf16:
    case dtype::i16:
    case dtype::u16: return 2;
    case dtype::i8:
    case dtype::u8:
    case dtype::boolean: return 1;
  }
  return 0;
}

inline const char* to_string(dtype t) noexcept {
  switch (t) {
    case dtype::f32: return "F32";
    case dtype::f16: return "F16";
    case dtype::bf16: return "BF16";
    case dtype::i8: return "I8";
    case dtype::u8: return "U8";
    case dtype::i32: return "I32";
    case dtype::f64: return "F64";
    case dtype::i64: return "I64";
    case dtype::i16: return "I16";
    case dtype::u16: return "U16";
    case dtype::u32: return "U32";
    case dtype::u64: return "U64";
    case dtype::boolean: return "BOOL";
  }
  return "?";
}

/// Element count of a shape, checking for overflow.
inline std::size_t shape_numel(const std::vector<std::size_t>& shape) {
  std::size_t n = 1;
  for (std::size_t d : shape) {
    if (d != 0 && n > (std::size_t{1} << 62) / d) quarot::detail::fail(errc::io, "tensor shape overflows");
    n *= d;
  }
  return n;
}

struct tensor {
  dtype type = dtype::f32;
  std::vector<std::size_t> shape;
  std::vector<std::uint8_t> data;  ///< little-endian, row-major (C order)

  [[nodiscard]] std::size_t numel() const { return shape_numel(shape); }

  /// Values as fp32 (exact for the 8- and 16-bit types; wider integers and f64 are rounded).
  [[nodiscard]] std::vector<float> to_float() const {
    const std::size_t n = numel();
    std::vector<float> out(n);
    const std::uint8_t* p = data.data();
    for (std::size_t i = 0; i < n; ++i) {
      switch (type) {
        case dtype::f32: std::memcpy(&out[i], p + 4 * i, 4); break;
        case dtype::f16: {
          half h;
          std::memcpy(&h.bits, p + 2 * i, 2);
          out[i] = quarot::to_float(h);
          break;
        }
        case dtype::bf16: {
          bfloat16 b;
          std::memcpy(&b.bits, p + 2 * i, 2);
          out[i] = quarot::to_float(b);
          break;
        }
        case dtype::i8: out[i] = static_cast<float>(static_cast<std::int8_t>(p[i])); break;
        case dtype::u8: out[i] = static_cast<float>(p[i]); break;
        case dtype::i32: out[i] = static_cast<float>(load<std::int32_t>(p, i)); break;
        case dtype::f64: out[i] = static_cast<float>(load<double>(p, i)); break;
        case dtype::i64: out[i] = static_cast<float>(load<std::int64_t>(p, i)); break;
        case dtype::i16: out[i] = static_cast<float>(load<std::int16_t>(p, i)); break;
        case dtype::u16: out[i] = static_cast<float>(load<std::uint16_t>(p, i)); break;
        case dtype::u32: out[i] = static_cast<float>(load<std::uint32_t>(p, i)); break;
        case dtype::u64: out[i] = static_cast<float>(load<std::uint64_t>(p, i)); break;
        case dtype::boolean: out[i] = p[i] ? 1.0f : 0.0f; break;
      }
    }
    return out;
  }

  /// A tensor holding a copy of `values` (T: float, half, std::int8_t, std::uint8_t, std::int32_t).
  template <class T>
  static T load(const std::uint8_t* p, std::size_t i) noexcept {
    T v;
    std::memcpy(&v, p + sizeof(T) * i, sizeof(T));
    return v;
  }

  template <class T>
  static tensor from(const std::vector<T>& values, std::vector<std::size_t> shape) {
    tensor t;
    if constexpr (std::is_same_v<T, float>) t.type = dtype::f32;
    else if constexpr (std::is_same_v<T, half>) t.type = dtype::f16;
    else if constexpr (std::is_same_v<T, bfloat16>) t.type = dtype::bf16;
    else if constexpr (std::is_same_v<T, std::int8_t>) t.type = dtype::i8;
    else if constexpr (std::is_same_v<T, std::uint8_t>) t.type = dtype::u8;
    else if constexpr (std::is_same_v<T, std::int32_t>) t.type = dtype::i32;
    else static_assert(sizeof(T) == 0, "unsupported tensor element type");
    t.shape = std::move(shape);
    quarot::detail::require(shape_numel(t.shape) == values.size(), "tensor::from: ", values.size(),
                            " values do not match the shape");
    t.data.resize(values.size() * sizeof(T));
    if (!values.empty()) std::memcpy(t.data.data(), values.data(), t.data.size());
    return t;
  }
};

}  // namespace quarot::io
