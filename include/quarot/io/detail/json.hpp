// quarot — a small strict JSON reader for file headers (safetensors, config.json).
// Internal: include quarot/io/safetensors.hpp. Depth, size and syntax are checked; any
// malformation is a quarot::error (errc::io) naming the offset.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "../../core/error.hpp"

#ifndef QUAROT_IO_INTERNAL
#error "quarot/io/detail/json.hpp is internal: include quarot/io/safetensors.hpp"
#endif

namespace quarot::detail {

struct json_value {
  enum class kind { null, boolean, number, string, array, object } type = kind::null;
  bool b = false;
  double num = 0;
  std::string str;
  std::vector<json_value> arr;
  std::map<std::string, json_value> obj;

  [[nodiscard]] const json_value* find(const std::string& key) const {
    if (type != kind::object) return nullptr;
    auto it = obj.find(key);
    return it == obj.end() ? nullptr : &it->second;
  }
};

class json_parser {
 public:
  explicit json_parser(std::string_view text, std::string what) : s_(text), what_(std::move(what)) {}

  json_value parse() {
    json_value v = value(0);
    ws();
    if (i_ != s_.size()) error("trailing characters");
    return v;
  }

 private:
  [[noreturn]] void error(const char* msg) const { fail(errc::io, what_, ": malformed JSON (", msg, ") at offset ", i_); }
  void ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) ++i_;
  }
  char peek() {
    ws();
    if (i_ >= s_.size()) error("unexpected end");
    return s_[i_];
  }
  void expect(char c) {
    if (peek() != c) error("unexpected character");
    ++i_;
  }
  json_value value(int depth) {
    if (depth > 64) error("nesting deeper than 64");
    json_value v;
    const char c = peek();
    if (c == '{') {
      v.type = json_value::kind::object;
      ++i_;
      if (peek() == '}') {
        ++i_;
        return v;
      }
      for (;;) {
        if (peek() != '"') error("expected a key");
        std::string key = string();
        expect(':');
        v.obj[key] = value(depth + 1);
        if (peek() == ',') {
          ++i_;
          continue;
        }
        expect('}');
        return v;
      }
    }
    if (c == '[') {
      v.type = json_value::kind::array;
      ++i_;
      if (peek() == ']') {
        ++i_;
        return v;
      }
      for (;;) {
        v.arr.push_back(value(depth + 1));
        if (peek() == ',') {
          ++i_;
          continue;
        }
        expect(']');
        return v;
      }
    }
    if (c == '"') {
      v.type = json_value::kind::string;
      v.str = string();
      return v;
    }
    if (literal("true")) {
      v.type = json_value::kind::boolean;
      v.b = true;
      return v;
    }
    if (literal("false")) {
      v.type = json_value::kind::boolean;
      return v;
    }
    if (literal("null")) return v;
    v.type = json_value::kind::number;
    v.num = number();
    return v;
  }
  bool literal(std::string_view lit) {
    if (s_.substr(i_, lit.size()) == lit) {
      i_ += lit.size();
      return true;
    }
    return false;
  }
  double number() {
    const std::size_t start = i_;
    if (i_ < s_.size() && (s_[i_] == '-' || s_[i_] == '+')) ++i_;
    bool digits = false;
    while (i_ < s_.size() && ((s_[i_] >= '0' && s_[i_] <= '9') || s_[i_] == '.' || s_[i_] == 'e' || s_[i_] == 'E' ||
                              s_[i_] == '-' || s_[i_] == '+')) {
      digits = digits || (s_[i_] >= '0' && s_[i_] <= '9');
      ++i_;
    }
    if (!digits) error("expected a value");
    const std::string text(s_.substr(start, i_ - start));
    char* end = nullptr;
    const double d = std::strtod(text.c_str(), &end);
    if (end != text.c_str() + text.size()) error("bad number");
    return d;
  }
  std::string string() {
    expect('"');
    std::string out;
    for (;;) {
      if (i_ >= s_.size()) error("unterminated string");
      const char c = s_[i_++];
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) error("control character in string");
      if (c != '\\') {
        out += c;
        continue;
      }
      if (i_ >= s_.size()) error("unterminated escape");
      const char e = s_[i_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          if (i_ + 4 > s_.size()) error("short \\u escape");
          unsigned cp = 0;
          for (int k = 0; k < 4; ++k) {
            const char h = s_[i_++];
            cp <<= 4;
            if (h >= '0' && h <= '9') cp |= unsigned(h - '0');
            else if (h >= 'a' && h <= 'f') cp |= unsigned(h - 'a' + 10);
            else if (h >= 'A' && h <= 'F') cp |= unsigned(h - 'A' + 10);
            else error("bad \\u escape");
          }
          // UTF-8 encode (surrogate pairs are kept as two code points; names are ASCII in practice).
          if (cp < 0x80) out += char(cp);
          else if (cp < 0x800) {
            out += char(0xc0 | (cp >> 6));
            out += char(0x80 | (cp & 0x3f));
          } else {
            out += char(0xe0 | (cp >> 12));
            out += char(0x80 | ((cp >> 6) & 0x3f));
            out += char(0x80 | (cp & 0x3f));
          }
          break;
        }
        default: error("bad escape");
      }
    }
  }

  std::string_view s_;
  std::string what_;
  std::size_t i_ = 0;
};

}  // namespace quarot::detail
