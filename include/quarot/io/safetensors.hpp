// quarot — reading .safetensors files (memory-mapped). Layout: an 8-byte little-endian
// header length N, N bytes of JSON {"name": {"dtype", "shape", "data_offsets": [b, e]},
// "__metadata__": {...}}, then the data; offsets are relative to the data start. Every
// entry is validated (known dtype, offsets inside the data, size = numel · element size)
// when the file is opened, so a lying header is an error there, not a crash later.
#pragma once


#include <cstddef>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "tensor.hpp"

#define QUAROT_IO_INTERNAL
#include "detail/json.hpp"
#include "detail/mapped_file.hpp"
#undef QUAROT_IO_INTERNAL

namespace quarot::io {

struct tensor_info {
  dtype type = dtype::f32;
  std::vector<std::size_t> shape;
  std::size_t begin = 0, end = 0;  ///< byte offsets into the data section
};

class safetensors_file {
 public:
  explicit safetensors_file(const std::string& path)
      : path_(path), file_(path), map_(file_.data()), size_(file_.size()) {
    parse();
  }
  safetensors_file(const safetensors_file&) = delete;
  safetensors_file& operator=(const safetensors_file&) = delete;

  [[nodiscard]] std::vector<std::string> names() const {
    std::vector<std::string> v;
    for (const auto& [k, _] : tensors_) v.push_back(k);
    return v;
  }
  [[nodiscard]] bool contains(const std::string& name) const { return tensors_.count(name) != 0; }
  [[nodiscard]] const std::map<std::string, std::string>& metadata() const noexcept { return metadata_; }

  [[nodiscard]] const tensor_info& info(const std::string& name) const {
    auto it = tensors_.find(name);
    if (it == tensors_.end()) quarot::detail::fail(errc::invalid_argument, "'", path_, "' has no tensor named '", name, "'");
    return it->second;
  }
  /// The raw bytes of a tensor, inside the mapping.
  [[nodiscard]] std::span<const std::uint8_t> bytes(const std::string& name) const {
    const auto& i = info(name);
    return {map_ + data_start_ + i.begin, i.end - i.begin};
  }
  /// A copy of a tensor.
  [[nodiscard]] tensor get(const std::string& name) const {
    const auto& i = info(name);
    tensor t;
    t.type = i.type;
    t.shape = i.shape;
    const auto b = bytes(name);
    t.data.assign(b.begin(), b.end());
    return t;
  }

 private:
  [[noreturn]] void bad(const std::string& why) const {
    quarot::detail::fail(errc::io, "'", path_, "' is not a valid .safetensors file: ", why);
  }

  void parse() {
    if (size_ < 8) bad("shorter than the 8-byte header length");
    std::uint64_t n = 0;
    for (int i = 0; i < 8; ++i) n |= std::uint64_t(map_[i]) << (8 * i);
    if (n > size_ - 8) bad("header length " + std::to_string(n) + " exceeds the file size " + std::to_string(size_));
    data_start_ = 8 + static_cast<std::size_t>(n);
    const std::size_t data_size = size_ - data_start_;
    const auto root = quarot::detail::json_parser(
                          std::string_view(reinterpret_cast<const char*>(map_ + 8), static_cast<std::size_t>(n)), path_)
                          .parse();
    if (root.type != quarot::detail::json_value::kind::object) bad("header is not a JSON object");
    for (const auto& [name, v] : root.obj) {
      if (name == "__metadata__") {
        if (v.type != quarot::detail::json_value::kind::object) bad("__metadata__ is not an object");
        for (const auto& [k, mv] : v.obj)
          if (mv.type == quarot::detail::json_value::kind::string) metadata_[k] = mv.str;
        continue;
      }
      const auto* dt = v.find("dtype");
      const auto* sh = v.find("shape");
      const auto* off = v.find("data_offsets");
      if (!dt || !sh || !off || dt->type != quarot::detail::json_value::kind::string ||
          sh->type != quarot::detail::json_value::kind::array || off->type != quarot::detail::json_value::kind::array ||
          off->arr.size() != 2)
        bad("tensor '" + name + "' lacks dtype, shape or data_offsets");
      tensor_info ti;
      const std::string& d = dt->str;
      if (d == "F32") ti.type = dtype::f32;
      else if (d == "F16") ti.type = dtype::f16;
      else if (d == "BF16") ti.type = dtype::bf16;
      else if (d == "I8") ti.type = dtype::i8;
      else if (d == "U8") ti.type = dtype::u8;
      else if (d == "I32") ti.type = dtype::i32;
      else if (d == "F64") ti.type = dtype::f64;
      else if (d == "I64") ti.type = dtype::i64;
      else if (d == "I16") ti.type = dtype::i16;
      else if (d == "U16") ti.type = dtype::u16;
      else if (d == "U32") ti.type = dtype::u32;
      else if (d == "U64") ti.type = dtype::u64;
      else if (d == "BOOL") ti.type = dtype::boolean;
      else quarot::detail::fail(errc::unsupported, "'", path_, "': tensor '", name, "' has unsupported dtype ", d);
      // A named reference, not the structured binding: clang before 16 cannot capture those.
      const std::string& tensor_name = name;
      auto as_index = [&](const quarot::detail::json_value& x, const char* what) -> std::size_t {
        if (x.type != quarot::detail::json_value::kind::number || x.num < 0 || x.num != double(std::uint64_t(x.num)) ||
            x.num > 9.0e15)
          bad("tensor '" + tensor_name + "' has a bad " + what);
        return static_cast<std::size_t>(x.num);
      };
      for (const auto& e : sh->arr) ti.shape.push_back(as_index(e, "shape"));
      ti.begin = as_index(off->arr[0], "data offset");
      ti.end = as_index(off->arr[1], "data offset");
      if (ti.begin > ti.end || ti.end > data_size)
        bad("tensor '" + name + "' data [" + std::to_string(ti.begin) + ", " + std::to_string(ti.end) +
            ") lies outside the " + std::to_string(data_size) + "-byte data section");
      if (ti.end - ti.begin != shape_numel(ti.shape) * element_size(ti.type))
        bad("tensor '" + name + "' has " + std::to_string(ti.end - ti.begin) + " bytes but its shape needs " +
            std::to_string(shape_numel(ti.shape) * element_size(ti.type)));
      tensors_[name] = std::move(ti);
    }
  }


  std::string path_;
  quarot::detail::mapped_file file_;
  const std::uint8_t* map_;
  std::size_t size_;
  std::size_t data_start_ = 0;
  std::map<std::string, tensor_info> tensors_;
  std::map<std::string, std::string> metadata_;
};

/// Writes tensors (and string metadata) as a .safetensors file, in name order.
inline void write_safetensors(const std::string& path, const std::map<std::string, tensor>& tensors,
                              const std::map<std::string, std::string>& metadata = {}) {
  auto quote = [](const std::string& s) {
    std::string o = "\"";
    for (char c : s) {
      if (c == '"' || c == '\\') o += '\\';
      o += c;
    }
    return o + "\"";
  };
  std::string header = "{";
  bool first = true;
  if (!metadata.empty()) {
    header += "\"__metadata__\":{";
    bool f2 = true;
    for (const auto& [k, v] : metadata) {
      header += (f2 ? "" : ",") + quote(k) + ":" + quote(v);
      f2 = false;
    }
    header += "}";
    first = false;
  }
  std::size_t offset = 0;
  for (const auto& [name, t] : tensors) {
    quarot::detail::require(t.data.size() == t.numel() * element_size(t.type), "write_safetensors: tensor '", name,
                            "' data size does not match its shape");
    header += (first ? "" : ",") + quote(name) + ":{\"dtype\":\"" + to_string(t.type) + "\",\"shape\":[";
    for (std::size_t i = 0; i < t.shape.size(); ++i) {
      if (i) header += ',';
      header += std::to_string(t.shape[i]);  // (appending piecewise: GCC 12 -Wrestrict false positive otherwise)
    }
    header += "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(offset + t.data.size()) + "]}";
    offset += t.data.size();
    first = false;
  }
  header += "}";
  header += std::string((8 - header.size() % 8) % 8, ' ');
  std::ofstream f(path, std::ios::binary);
  if (!f) quarot::detail::fail(errc::io, "cannot create '", path, "'");
  std::uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<std::uint8_t>(std::uint64_t(header.size()) >> (8 * i));
  f.write(reinterpret_cast<const char*>(len), 8);
  f.write(header.data(), std::streamsize(header.size()));
  for (const auto& [_, t] : tensors) f.write(reinterpret_cast<const char*>(t.data.data()), std::streamsize(t.data.size()));
  if (!f) quarot::detail::fail(errc::io, "writing '", path, "' failed");
}

}  // namespace quarot::io
