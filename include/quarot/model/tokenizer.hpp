// quarot — GPT-2 style byte-level BPE tokenizer (Radford et al. 2019; Sennrich et al. 2016),
// built from a model file's own vocabulary and merge list (GGUF `tokenizer.ggml.*`).
//
// Encoding = pre-tokenization + byte-level BPE:
//  1. Pre-tokenization splits the text with the GPT-2 pattern
//       's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//     after (for `digits_split`, SmolLM/StarCoder's `Digits(individual_digits)`) every
//     digit has been made a piece of its own. Letters, digits and spaces are classified
//     exactly for ASCII; code points >= 0x80 count as letters except the Unicode spaces and
//     the General Punctuation / CJK punctuation blocks (no ICU tables — a documented
//     approximation that only matters for non-Latin text).
//  2. Each piece's UTF-8 bytes are mapped to printable code points (GPT-2's
//     bytes_to_unicode) and merged pairwise, lowest merge rank first, until no listed
//     pair remains; the resulting symbols are looked up in the vocabulary.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "../core/error.hpp"
#include "../io/gguf.hpp"

namespace quarot::model {

namespace detail {

inline void append_utf8(std::string& s, std::uint32_t cp) {
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    s += static_cast<char>(0xE0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    s += static_cast<char>(0xF0 | (cp >> 18));
    s += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

/// Decodes UTF-8; each code point keeps the byte range it came from. Invalid bytes
/// become U+FFFD covering one byte (so no input is rejected or lost: the byte-level BPE
/// still encodes the original bytes).
struct code_point {
  std::uint32_t cp;
  std::size_t begin, end;
};
inline std::vector<code_point> decode_utf8(std::string_view s) {
  std::vector<code_point> out;
  out.reserve(s.size());
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    std::size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    std::uint32_t cp = len == 1 ? c : len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
    bool ok = len != 0 && i + len <= s.size();
    for (std::size_t k = 1; ok && k < len; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      ok = (cc >> 6) == 2;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if (!ok) {
      out.push_back({0xFFFD, i, i + 1});
      ++i;
    } else {
      out.push_back({cp, i, i + len});
      i += len;
    }
  }
  return out;
}

inline bool is_space(std::uint32_t c) noexcept {
  return c == ' ' || (c >= 0x09 && c <= 0x0D) || c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
         c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}
inline bool is_digit(std::uint32_t c) noexcept { return c >= '0' && c <= '9'; }
inline bool is_letter(std::uint32_t c) noexcept {
  if (c < 0x80) return (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
  if (is_space(c)) return false;
  if (c < 0xC0) return c == 0xAA || c == 0xB5 || c == 0xBA;  // Latin-1 punctuation and symbols otherwise
  if (c == 0xD7 || c == 0xF7) return false;                   // × ÷
  if (c >= 0x2000 && c <= 0x2BFF) return false;               // punctuation, symbols, arrows, ...
  if (c >= 0x3000 && c <= 0x303F) return false;               // CJK punctuation
  if (c >= 0xFF00 && c <= 0xFF20) return false;               // full-width punctuation
  return c != 0xFFFD;
}

/// GPT-2's bytes_to_unicode: printable Latin-1 bytes map to themselves, the other 68
/// bytes to U+0100 + i in byte order.
inline std::vector<std::uint32_t> byte_to_code_point() {
  std::vector<std::uint32_t> m(256);
  std::uint32_t next = 256;
  for (std::uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    m[b] = printable ? b : next++;
  }
  return m;
}

}  // namespace detail

class bpe_tokenizer {
 public:
  /// tokens[i] is the byte-level string of id i; merges are "left right" in rank order.
  bpe_tokenizer(std::vector<std::string> tokens, const std::vector<std::string>& merges, bool digits_split)
      : tokens_(std::move(tokens)), digits_split_(digits_split) {
    quarot::detail::require(!tokens_.empty(), "bpe_tokenizer: empty vocabulary");
    for (std::size_t i = 0; i < tokens_.size(); ++i) ids_.emplace(tokens_[i], static_cast<std::int32_t>(i));
    for (std::size_t r = 0; r < merges.size(); ++r) {
      const auto sp = merges[r].find(' ');
      quarot::detail::require(sp != std::string::npos && sp > 0 && sp + 1 < merges[r].size(), "bpe_tokenizer: merge ",
                              r, " ('", merges[r], "') is not 'left right'");
      ranks_.emplace(merges[r], static_cast<std::uint32_t>(r));
    }
    const auto b2u = detail::byte_to_code_point();
    for (int b = 0; b < 256; ++b) {
      detail::append_utf8(byte_str_[b], b2u[b]);
      code_point_byte_[b2u[b]] = static_cast<std::uint8_t>(b);
    }
  }

  /// The tokenizer a GGUF file describes (tokenizer.ggml.model must be "gpt2").
  static bpe_tokenizer from_gguf(const io::gguf_file& f) {
    const auto& model = f.meta("tokenizer.ggml.model");
    quarot::detail::require(model.s == "gpt2", "bpe_tokenizer: tokenizer.ggml.model is '", model.s,
                            "', only byte-level BPE ('gpt2') is supported");
    std::vector<std::string> tokens, merges;
    for (const auto& v : f.meta("tokenizer.ggml.tokens").arr) tokens.push_back(v.s);
    for (const auto& v : f.meta("tokenizer.ggml.merges").arr) merges.push_back(v.s);
    std::string pre;
    if (auto it = f.metadata().find("tokenizer.ggml.pre"); it != f.metadata().end()) pre = it->second.s;
    // llama.cpp's pre-tokenizer names: these split digits one by one before the GPT-2 pattern.
    const bool digits = pre == "smollm" || pre == "starcoder" || pre == "refact" || pre == "smaug-bpe";
    return bpe_tokenizer(std::move(tokens), merges, digits);
  }

  [[nodiscard]] std::size_t vocab_size() const noexcept { return tokens_.size(); }
  [[nodiscard]] const std::string& token(std::int32_t id) const {
    quarot::detail::require(id >= 0 && std::size_t(id) < tokens_.size(), "bpe_tokenizer: token id ", id, " outside [0, ",
                            tokens_.size(), ")");
    return tokens_[std::size_t(id)];
  }

  /// Token ids of `text` (no BOS/EOS added).
  [[nodiscard]] std::vector<std::int32_t> encode(std::string_view text) const {
    std::vector<std::int32_t> out;
    for (const auto& [b, e] : pre_tokenize(text)) encode_piece(text.substr(b, e - b), out);
    return out;
  }

  /// The text of a token sequence (inverse of encode for any byte string).
  [[nodiscard]] std::string decode(const std::vector<std::int32_t>& ids) const {
    std::string out;
    for (auto id : ids)
      for (const auto& c : detail::decode_utf8(token(id))) {
        auto it = code_point_byte_.find(c.cp);
        if (it != code_point_byte_.end()) out += static_cast<char>(it->second);
        else out.append(tokens_[std::size_t(id)], c.begin, c.end - c.begin);  // special tokens stay as they are
      }
    return out;
  }

  /// The byte ranges [begin, end) of the pre-tokenizer's pieces.
  [[nodiscard]] std::vector<std::pair<std::size_t, std::size_t>> pre_tokenize(std::string_view text) const {
    const auto cps = detail::decode_utf8(text);
    std::vector<std::pair<std::size_t, std::size_t>> pieces;
    auto emit = [&](std::size_t i, std::size_t j) {  // code points [i, j)
      if (j > i) pieces.emplace_back(cps[i].begin, cps[j - 1].end);
    };
    // Segments between single digits (digits_split), each matched with the GPT-2 pattern.
    std::size_t seg = 0;
    for (std::size_t i = 0; i <= cps.size(); ++i) {
      const bool cut = i == cps.size() || (digits_split_ && detail::is_digit(cps[i].cp));
      if (!cut) continue;
      gpt2_split(cps, seg, i, emit);
      if (i < cps.size()) emit(i, i + 1);
      seg = i + 1;
    }
    return pieces;
  }

 private:
  template <class Emit>
  static void gpt2_split(const std::vector<detail::code_point>& cps, std::size_t b, std::size_t e, Emit&& emit) {
    using detail::is_digit;
    using detail::is_letter;
    using detail::is_space;
    auto at = [&](std::size_t i) -> std::uint32_t { return i < e ? cps[i].cp : 0xFFFFFFFFu; };
    auto is_other = [](std::uint32_t c) { return c != 0xFFFFFFFFu && !is_space(c) && !is_letter(c) && !is_digit(c); };
    std::size_t i = b;
    while (i < e) {
      const std::uint32_t c = at(i);
      // 's 't 're 've 'm 'll 'd (case-sensitive, as in GPT-2)
      if (c == '\'') {
        const std::uint32_t c1 = at(i + 1), c2 = at(i + 2);
        std::size_t len = 0;
        if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') len = 2;
        else if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) len = 3;
        if (len) {
          emit(i, i + len);
          i += len;
          continue;
        }
      }
      const std::size_t s = (c == ' ') ? i + 1 : i;  // the optional leading space of the next three
      const std::uint32_t cs = at(s);
      auto run = [&](auto pred) {
        std::size_t j = s;
        while (j < e && pred(cps[j].cp)) ++j;
        emit(i, j);
        i = j;
      };
      if (s < e && is_letter(cs)) { run(is_letter); continue; }
      if (s < e && is_digit(cs)) { run(is_digit); continue; }
      if (s < e && is_other(cs)) { run(is_other); continue; }
      // \s+(?!\S) then \s+: a whitespace run leaves its last character to the next piece
      // when a non-space follows it (so " word" keeps its space).
      std::size_t j = i;
      while (j < e && is_space(cps[j].cp)) ++j;
      if (j < e && j - i > 1) --j;
      emit(i, j);
      i = j;
    }
  }

  void encode_piece(std::string_view piece, std::vector<std::int32_t>& out) const {
    std::vector<std::string> sym;
    sym.reserve(piece.size());
    for (char ch : piece) sym.push_back(byte_str_[static_cast<unsigned char>(ch)]);
    // Merge the lowest-ranked adjacent pair until none is in the merge list (pieces are
    // short: the quadratic scan is cheaper than a heap here).
    std::string key;
    while (sym.size() > 1) {
      std::uint32_t best = std::numeric_limits<std::uint32_t>::max();
      std::size_t at = 0;
      for (std::size_t k = 0; k + 1 < sym.size(); ++k) {
        key.assign(sym[k]).append(" ").append(sym[k + 1]);
        auto it = ranks_.find(key);
        if (it != ranks_.end() && it->second < best) {
          best = it->second;
          at = k;
        }
      }
      if (best == std::numeric_limits<std::uint32_t>::max()) break;
      sym[at] += sym[at + 1];
      sym.erase(sym.begin() + std::ptrdiff_t(at) + 1);
    }
    for (const auto& s : sym) {
      auto it = ids_.find(s);
      if (it != ids_.end()) {
        out.push_back(it->second);
        continue;
      }
      // A symbol the vocabulary lacks: fall back to its single bytes (each must exist).
      for (const auto& c : detail::decode_utf8(s)) {
        auto b = code_point_byte_.find(c.cp);
        auto id = b == code_point_byte_.end() ? ids_.end() : ids_.find(byte_str_[b->second]);
        quarot::detail::require(id != ids_.end(), "bpe_tokenizer: byte symbol '", s, "' is not in the vocabulary");
        out.push_back(id->second);
      }
    }
  }

  std::vector<std::string> tokens_;
  std::unordered_map<std::string, std::int32_t> ids_;
  std::unordered_map<std::string, std::uint32_t> ranks_;
  std::string byte_str_[256];
  std::unordered_map<std::uint32_t, std::uint8_t> code_point_byte_;
  bool digits_split_ = false;
};

}  // namespace quarot::model
