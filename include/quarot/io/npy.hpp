// quarot — NumPy .npy files (format versions 1.0, 2.0 and 3.0 read; 1.0 written):
// little-endian f4, f2, i1, u1 and i4 arrays in C order. A truncated file, a bad magic
// string, Fortran order or an unsupported dtype is an error naming the file and the
// problem.
#pragma once

#include <cstddef>
#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "tensor.hpp"

namespace quarot::io {

namespace detail {
inline std::string npy_descr(dtype t) {
  switch (t) {
    case dtype::f32: return "<f4";
    case dtype::f16: return "<f2";
    case dtype::i8: return "|i1";
    case dtype::u8: return "|u1";
    case dtype::i32: return "<i4";
    case dtype::f64: return "<f8";
    case dtype::i64: return "<i8";
    case dtype::i16: return "<i2";
    case dtype::u16: return "<u2";
    case dtype::u32: return "<u4";
    case dtype::u64: return "<u8";
    case dtype::boolean: return "|b1";
    case dtype::bf16: break;
  }
  quarot::detail::fail(errc::unsupported, ".npy has no bfloat16 dtype; convert to fp32 first");
}

inline std::vector<char> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) quarot::detail::fail(errc::io, "cannot open '", path, "'");
  std::vector<char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  return bytes;
}
}  // namespace detail

/// Reads a .npy file.
inline tensor read_npy(const std::string& path) {
  const std::vector<char> b = detail::read_file(path);
  auto bad = [&](const std::string& why) { quarot::detail::fail(errc::io, "'", path, "' is not a valid .npy file: ", why); };
  if (b.size() < 10 || std::string(b.data(), 6) != "\x93NUMPY") bad("missing the \\x93NUMPY magic string");
  const int major = static_cast<unsigned char>(b[6]);
  std::size_t header_len = 0, offset = 0;
  if (major == 1) {
    header_len = static_cast<unsigned char>(b[8]) | (std::size_t(static_cast<unsigned char>(b[9])) << 8);
    offset = 10;
  } else if (major == 2 || major == 3) {
    if (b.size() < 12) bad("truncated header");
    header_len = 0;
    for (int i = 0; i < 4; ++i) header_len |= std::size_t(static_cast<unsigned char>(b[8 + i])) << (8 * i);
    offset = 12;
  } else {
    bad("unsupported format version " + std::to_string(major));
  }
  if (offset + header_len > b.size()) bad("header of " + std::to_string(header_len) + " bytes runs past the end");
  const std::string header(b.data() + offset, header_len);
  auto field = [&](const std::string& key) -> std::string {
    const auto k = header.find("'" + key + "'");
    if (k == std::string::npos) bad("header has no '" + key + "'");
    const auto colon = header.find(':', k);
    if (colon == std::string::npos) bad("header field '" + key + "' has no value");
    return header.substr(colon + 1);
  };
  std::string descr = field("descr");
  const auto q1 = descr.find('\''), q2 = descr.find('\'', q1 + 1);
  if (q1 == std::string::npos || q2 == std::string::npos) bad("unreadable descr");
  descr = descr.substr(q1 + 1, q2 - q1 - 1);
  tensor t;
  if (descr == "<f4") t.type = dtype::f32;
  else if (descr == "<f2") t.type = dtype::f16;
  else if (descr == "|i1" || descr == "<i1") t.type = dtype::i8;
  else if (descr == "|u1" || descr == "<u1") t.type = dtype::u8;
  else if (descr == "<i4") t.type = dtype::i32;
  else if (descr == "<f8") t.type = dtype::f64;
  else if (descr == "<i8") t.type = dtype::i64;
  else if (descr == "<i2") t.type = dtype::i16;
  else if (descr == "<u2") t.type = dtype::u16;
  else if (descr == "<u4") t.type = dtype::u32;
  else if (descr == "<u8") t.type = dtype::u64;
  else if (descr == "|b1") t.type = dtype::boolean;
  else
    quarot::detail::fail(errc::unsupported, "'", path, "': unsupported .npy dtype '", descr,
                         "' (little-endian f2, f4, f8, i1, i2, i4, i8, u1, u2, u4, u8, b1)");
  const std::string fortran = field("fortran_order");
  if (fortran.find("True") < fortran.find_first_of(",}")) bad("Fortran-order arrays are not supported");
  std::string shape = field("shape");
  const auto p1 = shape.find('('), p2 = shape.find(')');
  if (p1 == std::string::npos || p2 == std::string::npos || p2 < p1) bad("unreadable shape");
  std::stringstream dims(shape.substr(p1 + 1, p2 - p1 - 1));
  std::string dim;
  while (std::getline(dims, dim, ',')) {
    const auto first = dim.find_first_not_of(" \t");
    if (first == std::string::npos) continue;
    const std::string d = dim.substr(first, dim.find_last_not_of(" \tL") - first + 1);
    if (d.empty() || d.find_first_not_of("0123456789") != std::string::npos) bad("bad dimension '" + d + "'");
    t.shape.push_back(std::stoull(d));
  }
  const std::size_t bytes = shape_numel(t.shape) * element_size(t.type);
  const std::size_t data_start = offset + header_len;
  if (b.size() - data_start < bytes)
    bad("data truncated: " + std::to_string(b.size() - data_start) + " bytes for " + std::to_string(bytes));
  t.data.assign(b.begin() + long(data_start), b.begin() + long(data_start + bytes));
  return t;
}

/// Writes t as a version 1.0 .npy file.
inline void write_npy(const std::string& path, const tensor& t) {
  std::string header = "{'descr': '" + detail::npy_descr(t.type) + "', 'fortran_order': False, 'shape': (";
  for (std::size_t i = 0; i < t.shape.size(); ++i) header += std::to_string(t.shape[i]) + (t.shape.size() == 1 ? "," : (i + 1 < t.shape.size() ? ", " : ""));
  header += "), }";
  // Pad with spaces so that the data starts on a 64-byte boundary, ending in '\n'.
  const std::size_t total = 10 + header.size() + 1;
  header += std::string((64 - total % 64) % 64, ' ') + "\n";
  quarot::detail::require(header.size() < 65536, "write_npy: header too long");
  quarot::detail::require(t.data.size() == t.numel() * element_size(t.type), "write_npy: tensor data size does not match its shape");
  std::ofstream f(path, std::ios::binary);
  if (!f) quarot::detail::fail(errc::io, "cannot create '", path, "'");
  const char preamble[8] = {'\x93', 'N', 'U', 'M', 'P', 'Y', 1, 0};
  f.write(preamble, 8);
  const std::uint16_t len = static_cast<std::uint16_t>(header.size());
  const char len_bytes[2] = {static_cast<char>(len & 0xff), static_cast<char>(len >> 8)};
  f.write(len_bytes, 2);
  f.write(header.data(), std::streamsize(header.size()));
  f.write(reinterpret_cast<const char*>(t.data.data()), std::streamsize(t.data.size()));
  if (!f) quarot::detail::fail(errc::io, "writing '", path, "' failed");
}

}  // namespace quarot::io
