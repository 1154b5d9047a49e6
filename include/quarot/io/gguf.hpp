// quarot — reading GGUF files (llama.cpp's model format, versions 2 and 3), memory-mapped.
//
// Layout: "GGUF", version (u32), tensor count (u64), metadata count (u64); metadata as
// (string key, u32 type, value); tensor infos as (string name, u32 n_dims, u64 dims[],
// u32 ggml type, u64 offset); then the data, aligned to general.alignment (default 32),
// each tensor at its offset. Strings are a u64 length and bytes. dims[0] is the fastest
// varying dimension (a PyTorch [out, in] weight has dims {in, out}).
//
// Every count, length, offset and size is checked against the file when it is opened, so a
// truncated or lying header is an error naming the problem, never a read past the end.
// Dequantization to fp32: F32, F16, Q4_0, Q4_1, Q8_0 (block layouts from ggml: 32 values
// per block; Q4_x nibble j holds value j in its low half and value j + 16 in its high half).
#pragma once


#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/numeric.hpp"

#define QUAROT_IO_INTERNAL
#include "detail/mapped_file.hpp"
#undef QUAROT_IO_INTERNAL

namespace quarot::io {

enum class ggml_type : std::uint32_t { f32 = 0, f16 = 1, q4_0 = 2, q4_1 = 3, q8_0 = 8 };

/// A metadata value: numbers as int64/uint64/double, strings, arrays of either.
struct gguf_value {
  enum class kind { integer, unsigned_integer, floating, boolean, string, array } type = kind::integer;
  std::int64_t i = 0;
  std::uint64_t u = 0;
  double f = 0;
  bool b = false;
  std::string s;
  std::vector<gguf_value> arr;

  /// The value as an unsigned integer (any integer kind that is non-negative).
  [[nodiscard]] std::uint64_t as_uint() const {
    if (type == kind::unsigned_integer) return u;
    if (type == kind::integer && i >= 0) return static_cast<std::uint64_t>(i);
    quarot::detail::fail(errc::io, "GGUF metadata value is not a non-negative integer");
  }
  [[nodiscard]] double as_double() const {
    if (type == kind::floating) return f;
    if (type == kind::integer) return double(i);
    if (type == kind::unsigned_integer) return double(u);
    quarot::detail::fail(errc::io, "GGUF metadata value is not a number");
  }
};

struct gguf_tensor_info {
  std::uint32_t type = 0;             ///< raw ggml type id
  std::vector<std::uint64_t> dims;    ///< dims[0] fastest
  std::uint64_t offset = 0;           ///< relative to the data section
  std::uint64_t bytes = 0;
  [[nodiscard]] std::uint64_t numel() const {
    std::uint64_t n = 1;
    for (auto d : dims) n *= d;
    return n;
  }
};

namespace detail {
/// Bytes of n elements of a ggml type; 0 for types quarot does not know.
inline std::uint64_t ggml_bytes(std::uint32_t type, std::uint64_t n) noexcept {
  switch (static_cast<ggml_type>(type)) {
    case ggml_type::f32: return 4 * n;
    case ggml_type::f16: return 2 * n;
    case ggml_type::q4_0: return n % 32 ? 0 : n / 32 * 18;
    case ggml_type::q4_1: return n % 32 ? 0 : n / 32 * 20;
    case ggml_type::q8_0: return n % 32 ? 0 : n / 32 * 34;
  }
  return 0;
}
inline float f16_at(const std::uint8_t* p) noexcept {
  half h;
  std::memcpy(&h.bits, p, 2);
  return to_float(h);
}
}  // namespace detail

class gguf_file {
 public:
  explicit gguf_file(const std::string& path)
      : path_(path), file_(path), map_(file_.data()), size_(file_.size()) {
    parse();
  }
  gguf_file(const gguf_file&) = delete;
  gguf_file& operator=(const gguf_file&) = delete;

  [[nodiscard]] std::uint32_t version() const noexcept { return version_; }
  [[nodiscard]] const std::map<std::string, gguf_value>& metadata() const noexcept { return meta_; }
  [[nodiscard]] const gguf_value& meta(const std::string& key) const {
    auto it = meta_.find(key);
    if (it == meta_.end()) quarot::detail::fail(errc::io, "'", path_, "' has no metadata key '", key, "'");
    return it->second;
  }
  [[nodiscard]] const std::map<std::string, gguf_tensor_info>& tensors() const noexcept { return tensors_; }
  [[nodiscard]] const gguf_tensor_info& info(const std::string& name) const {
    auto it = tensors_.find(name);
    if (it == tensors_.end()) quarot::detail::fail(errc::invalid_argument, "'", path_, "' has no tensor named '", name, "'");
    return it->second;
  }

  /// The tensor's values as fp32 (dequantized), in storage order (dims[0] fastest).
  [[nodiscard]] std::vector<float> to_float(const std::string& name) const {
    const auto& t = info(name);
    const std::uint8_t* p = map_ + data_start_ + t.offset;
    const std::uint64_t n = t.numel();
    std::vector<float> out(static_cast<std::size_t>(n));
    switch (static_cast<ggml_type>(t.type)) {
      case ggml_type::f32: std::memcpy(out.data(), p, 4 * out.size()); break;
      case ggml_type::f16:
        for (std::size_t i = 0; i < out.size(); ++i) out[i] = detail::f16_at(p + 2 * i);
        break;
      case ggml_type::q4_0:
        for (std::size_t b = 0; b < out.size() / 32; ++b) {
          const std::uint8_t* blk = p + 18 * b;
          const float d = detail::f16_at(blk);
          for (int j = 0; j < 16; ++j) {
            out[32 * b + j] = d * float((blk[2 + j] & 0x0f) - 8);
            out[32 * b + j + 16] = d * float((blk[2 + j] >> 4) - 8);
          }
        }
        break;
      case ggml_type::q4_1:
        for (std::size_t b = 0; b < out.size() / 32; ++b) {
          const std::uint8_t* blk = p + 20 * b;
          const float d = detail::f16_at(blk), m = detail::f16_at(blk + 2);
          for (int j = 0; j < 16; ++j) {
            out[32 * b + j] = d * float(blk[4 + j] & 0x0f) + m;
            out[32 * b + j + 16] = d * float(blk[4 + j] >> 4) + m;
          }
        }
        break;
      case ggml_type::q8_0:
        for (std::size_t b = 0; b < out.size() / 32; ++b) {
          const std::uint8_t* blk = p + 34 * b;
          const float d = detail::f16_at(blk);
          for (int j = 0; j < 32; ++j) out[32 * b + j] = d * float(static_cast<std::int8_t>(blk[2 + j]));
        }
        break;
      default:
        quarot::detail::fail(errc::unsupported, "'", path_, "': tensor '", name, "' has ggml type ", t.type,
                             " (quarot dequantizes F32, F16, Q4_0, Q4_1, Q8_0)");
    }
    return out;
  }

 private:
  [[noreturn]] void bad(const std::string& why) const {
    quarot::detail::fail(errc::io, "'", path_, "' is not a valid GGUF file: ", why, " (at byte ", pos_, ")");
  }
  void need(std::uint64_t n) const {
    if (n > size_ - pos_) bad("truncated: " + std::to_string(n) + " more bytes needed");
  }
  template <class T>
  T read() {
    need(sizeof(T));
    T v;
    std::memcpy(&v, map_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string read_string() {
    const auto n = read<std::uint64_t>();
    need(n);
    std::string s(reinterpret_cast<const char*>(map_ + pos_), static_cast<std::size_t>(n));
    pos_ += static_cast<std::size_t>(n);
    return s;
  }
  gguf_value read_value(std::uint32_t type, int depth) {
    if (depth > 2) bad("nested arrays deeper than 2");
    gguf_value v;
    switch (type) {
      case 0: v.type = gguf_value::kind::unsigned_integer; v.u = read<std::uint8_t>(); break;
      case 1: v.i = read<std::int8_t>(); break;
      case 2: v.type = gguf_value::kind::unsigned_integer; v.u = read<std::uint16_t>(); break;
      case 3: v.i = read<std::int16_t>(); break;
      case 4: v.type = gguf_value::kind::unsigned_integer; v.u = read<std::uint32_t>(); break;
      case 5: v.i = read<std::int32_t>(); break;
      case 6: v.type = gguf_value::kind::floating; v.f = read<float>(); break;
      case 7: v.type = gguf_value::kind::boolean; v.b = read<std::uint8_t>() != 0; break;
      case 8: v.type = gguf_value::kind::string; v.s = read_string(); break;
      case 9: {
        v.type = gguf_value::kind::array;
        const auto elem = read<std::uint32_t>();
        const auto count = read<std::uint64_t>();
        if (count > size_ - pos_) bad("array of " + std::to_string(count) + " elements cannot fit in the file");
        v.arr.reserve(static_cast<std::size_t>(count));
        for (std::uint64_t k = 0; k < count; ++k) v.arr.push_back(read_value(elem, depth + 1));
        break;
      }
      case 10: v.type = gguf_value::kind::unsigned_integer; v.u = read<std::uint64_t>(); break;
      case 11: v.i = read<std::int64_t>(); break;
      case 12: v.type = gguf_value::kind::floating; v.f = read<double>(); break;
      default: bad("unknown metadata value type " + std::to_string(type));
    }
    return v;
  }

  void parse() {
    if (size_ < 24 || std::memcmp(map_, "GGUF", 4) != 0) bad("missing the GGUF magic");
    pos_ = 4;
    version_ = read<std::uint32_t>();
    if (version_ != 2 && version_ != 3) bad("unsupported version " + std::to_string(version_));
    const auto n_tensors = read<std::uint64_t>();
    const auto n_meta = read<std::uint64_t>();
    if (n_tensors > size_ / 8 || n_meta > size_ / 8) bad("tensor or metadata count larger than the file");
    for (std::uint64_t k = 0; k < n_meta; ++k) {
      std::string key = read_string();
      const auto type = read<std::uint32_t>();
      meta_[key] = read_value(type, 0);
    }
    std::uint64_t alignment = 32;
    if (auto it = meta_.find("general.alignment"); it != meta_.end()) {
      alignment = it->second.as_uint();
      if (alignment == 0 || (alignment & (alignment - 1)) != 0) bad("general.alignment " + std::to_string(alignment) + " is not a power of two");
    }
    std::vector<std::pair<std::string, gguf_tensor_info>> infos;
    for (std::uint64_t k = 0; k < n_tensors; ++k) {
      std::string name = read_string();
      gguf_tensor_info t;
      const auto n_dims = read<std::uint32_t>();
      if (n_dims == 0 || n_dims > 4) bad("tensor '" + name + "' has " + std::to_string(n_dims) + " dimensions");
      std::uint64_t numel = 1;
      for (std::uint32_t d = 0; d < n_dims; ++d) {
        const auto dim = read<std::uint64_t>();
        if (dim != 0 && numel > (std::uint64_t{1} << 62) / dim) bad("tensor '" + name + "' shape overflows");
        numel *= dim;
        t.dims.push_back(dim);
      }
      t.type = read<std::uint32_t>();
      t.offset = read<std::uint64_t>();
      t.bytes = detail::ggml_bytes(t.type, numel);
      infos.emplace_back(std::move(name), std::move(t));
    }
    data_start_ = (pos_ + alignment - 1) / alignment * alignment;
    if (data_start_ > size_) bad("data section starts past the end");
    const std::uint64_t data_size = size_ - data_start_;
    for (auto& [name, t] : infos) {
      // Unknown types are kept (with size 0) so that the file opens; to_float reports them.
      if (t.offset > data_size || t.bytes > data_size - t.offset)
        bad("tensor '" + name + "' data [" + std::to_string(t.offset) + ", +" + std::to_string(t.bytes) +
            ") lies outside the " + std::to_string(data_size) + "-byte data section");
      if (t.bytes == 0 && t.numel() != 0 && detail::ggml_bytes(t.type, 32) != 0)
        bad("tensor '" + name + "' has " + std::to_string(t.numel()) + " elements, not whole 32-value blocks");
      tensors_[name] = std::move(t);
    }
  }


  std::string path_;
  quarot::detail::mapped_file file_;
  const std::uint8_t* map_;
  std::size_t size_;
  std::size_t pos_ = 0, data_start_ = 0;
  std::uint32_t version_ = 0;
  std::map<std::string, gguf_value> meta_;
  std::map<std::string, gguf_tensor_info> tensors_;
};

}  // namespace quarot::io
