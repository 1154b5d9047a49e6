// quarot — BERT encoders (Devlin et al. 2019) for sentence embeddings, e.g.
// all-MiniLM-L6-v2: WordPiece tokenizer, fp32 forward pass (post-norm LayerNorm, GELU,
// bidirectional attention), mean pooling + L2 normalization; and their quantization.
//
// Rotation for a post-norm model: the residual stream passes through a LayerNorm with a
// mean subtraction and per-channel scale after every block, so one rotation Q cannot be
// carried through it as in a pre-norm decoder (QuaRot §4 needs pre-norm). What stays exact
// is rotating each linear's input online: x -> H·x with W -> W·Hᵀ, which removes the
// outliers each linear's activation quantizer sees, at the cost of one online Hadamard per
// distinct input (hidden 384 = 12·32 and FFN 1536 = 12·128 here).
#pragma once

#include <Eigen/Core>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "../core/error.hpp"
#include "../io/safetensors.hpp"
#include "../quantize/gptq.hpp"
#include "../transform/kronecker.hpp"
#include "llama.hpp"
#include "quantize.hpp"
#include "rotate.hpp"
#include "tokenizer.hpp"

namespace quarot::model {

/// BERT's WordPiece tokenizer (uncased): clean text, lower-case and strip accents, split on
/// whitespace, punctuation and CJK characters, then greedy longest-match-first pieces
/// ("##" continuations); [CLS] ... [SEP] around the result. Accents are stripped for
/// Latin-1 and combining marks (U+0300–U+036F); Unicode punctuation is recognized in the
/// Latin-1, General Punctuation and CJK Symbols blocks (no ICU tables).
class wordpiece_tokenizer {
 public:
  explicit wordpiece_tokenizer(std::vector<std::string> vocab) : vocab_(std::move(vocab)) {
    for (std::size_t i = 0; i < vocab_.size(); ++i) ids_.emplace(vocab_[i], std::int32_t(i));
    for (const char* t : {"[UNK]", "[CLS]", "[SEP]"})
      quarot::detail::require(ids_.count(t), "wordpiece_tokenizer: the vocabulary has no ", t);
  }
  static wordpiece_tokenizer from_vocab_file(const std::string& path) {
    std::ifstream in(path);
    if (!in) quarot::detail::fail(errc::io, "wordpiece_tokenizer: cannot open '", path, "'");
    std::vector<std::string> v;
    for (std::string line; std::getline(in, line);) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      v.push_back(line);
    }
    return wordpiece_tokenizer(std::move(v));
  }

  [[nodiscard]] std::size_t vocab_size() const noexcept { return vocab_.size(); }
  [[nodiscard]] std::int32_t id(const std::string& token) const {
    auto it = ids_.find(token);
    quarot::detail::require(it != ids_.end(), "wordpiece_tokenizer: '", token, "' is not in the vocabulary");
    return it->second;
  }

  /// [CLS] pieces [SEP], at most max_tokens in all (longer text is cut, as BERT does).
  [[nodiscard]] std::vector<std::int32_t> encode(std::string_view text, std::size_t max_tokens = 512) const {
    quarot::detail::require(max_tokens >= 2, "wordpiece_tokenizer: max_tokens ", max_tokens, " < 2");
    std::vector<std::int32_t> out{id("[CLS]")};
    for (const auto& word : basic_tokenize(text)) {
      wordpiece(word, out);
      if (out.size() >= max_tokens - 1) {
        out.resize(max_tokens - 1);
        break;
      }
    }
    out.push_back(id("[SEP]"));
    return out;
  }

  /// The words of BERT's BasicTokenizer (UTF-8).
  [[nodiscard]] static std::vector<std::string> basic_tokenize(std::string_view text) {
    std::vector<std::string> words;
    std::string cur;
    auto flush = [&] {
      if (!cur.empty()) words.push_back(std::move(cur));
      cur.clear();
    };
    for (const auto& c : detail::decode_utf8(text)) {
      std::uint32_t cp = c.cp;
      if (cp == 0 || cp == 0xFFFD || (is_control(cp))) continue;
      if (detail::is_space(cp)) {
        flush();
        continue;
      }
      cp = fold(cp);
      if (cp == 0) continue;  // a combining mark: stripped with the accents
      if (is_punctuation(cp) || is_cjk(cp)) {
        flush();
        std::string s;
        detail::append_utf8(s, cp);
        words.push_back(s);
        continue;
      }
      detail::append_utf8(cur, cp);
    }
    flush();
    return words;
  }

 private:
  static bool is_control(std::uint32_t c) noexcept {
    return (c < 0x20 && c != '\t' && c != '\n' && c != '\r') || (c >= 0x7F && c < 0xA0);
  }
  static bool is_punctuation(std::uint32_t c) noexcept {
    if ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126)) return true;
    if (c == 0xA1 || c == 0xA7 || c == 0xAB || c == 0xB6 || c == 0xB7 || c == 0xBB || c == 0xBF) return true;
    return (c >= 0x2010 && c <= 0x2027) || (c >= 0x2030 && c <= 0x205E) || (c >= 0x3001 && c <= 0x3003) ||
           (c >= 0x3008 && c <= 0x3011);
  }
  static bool is_cjk(std::uint32_t c) noexcept {
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
  }
  /// Lower case and accent stripping (0 = drop the code point).
  static std::uint32_t fold(std::uint32_t c) noexcept {
    if (c >= 'A' && c <= 'Z') return c + 32;
    if (c >= 0x300 && c <= 0x36F) return 0;
    if (c >= 0xC0 && c <= 0xFF && c != 0xD7 && c != 0xF7) {
      // Latin-1 letters without their accents (NFD base letters), lower case.
      static constexpr char base[] = "aaaaaaaceeeeiiiidnooooo ouuuuyts" "aaaaaaaceeeeiiiidnooooo ouuuuyty";
      const char b = base[c - 0xC0];
      if (c == 0xC6 || c == 0xE6) return 0xE6;  // æ has no decomposition
      if (c == 0xD0 || c == 0xF0) return 0xF0;  // ð
      if (c == 0xDE || c == 0xFE) return 0xFE;  // þ
      if (c == 0xDF) return 0xDF;               // ß
      if (c == 0xD8 || c == 0xF8) return 0xF8;  // ø has no decomposition
      return static_cast<unsigned char>(b);
    }
    return c;
  }

  void wordpiece(const std::string& word, std::vector<std::int32_t>& out) const {
    if (detail::decode_utf8(word).size() > 100) {
      out.push_back(id("[UNK]"));
      return;
    }
    std::vector<std::int32_t> pieces;
    std::size_t start = 0;
    while (start < word.size()) {
      std::size_t end = word.size();
      std::int32_t found = -1;
      while (end > start) {
        // Only cut at UTF-8 character boundaries.
        if (end < word.size() && (static_cast<unsigned char>(word[end]) & 0xC0) == 0x80) {
          --end;
          continue;
        }
        std::string piece = (start > 0 ? "##" : "") + word.substr(start, end - start);
        auto it = ids_.find(piece);
        if (it != ids_.end()) {
          found = it->second;
          break;
        }
        --end;
      }
      if (found < 0) {
        out.push_back(id("[UNK]"));
        return;
      }
      pieces.push_back(found);
      start = end;
    }
    out.insert(out.end(), pieces.begin(), pieces.end());
  }

  std::vector<std::string> vocab_;
  std::unordered_map<std::string, std::int32_t> ids_;
};

struct bert_config {
  std::size_t hidden = 0, ffn = 0, heads = 0, layers = 0, vocab = 0, max_positions = 0, type_vocab = 0;
  float norm_eps = 1e-12f;
  [[nodiscard]] std::size_t head_dim() const noexcept { return heads ? hidden / heads : 0; }
  void validate() const {
    quarot::detail::require(hidden > 0 && ffn > 0 && heads > 0 && layers > 0 && vocab > 0 && max_positions > 0 &&
                                type_vocab > 0,
                            "bert_config: hidden ", hidden, ", ffn ", ffn, ", heads ", heads, ", layers ", layers,
                            ", vocab ", vocab, " must all be > 0");
    quarot::detail::require(hidden % heads == 0, "bert_config: hidden ", hidden, " is not a multiple of ", heads,
                            " heads");
  }
};

struct bert_layer {
  linear_layer q, k, v, o, up, down;  // up = intermediate.dense, down = output.dense
  std::vector<float> ln1_w, ln1_b, ln2_w, ln2_b;
};

class bert_model {
 public:
  bert_config cfg;
  std::vector<float> word, position, token_type, ln_w, ln_b;
  std::vector<bert_layer> layers;
  int kv_bits = 16;  ///< fake quantization of keys and values per (token, head); 16 = off
  float kv_clip = 0.95f;

  [[nodiscard]] std::vector<linear_layer*> linears() {
    std::vector<linear_layer*> v;
    for (auto& l : layers)
      for (auto* p : {&l.q, &l.k, &l.v, &l.o, &l.up, &l.down}) v.push_back(p);
    return v;
  }

  /// Token embeddings + positions + type 0, LayerNorm: tokens x hidden.
  [[nodiscard]] std::vector<float> embed(std::span<const std::int32_t> ids) const {
    quarot::detail::require(ids.size() <= cfg.max_positions, "bert_model: ", ids.size(), " tokens exceed ",
                            cfg.max_positions, " positions");
    const std::size_t h = cfg.hidden;
    std::vector<float> x(ids.size() * h);
    for (std::size_t t = 0; t < ids.size(); ++t) {
      quarot::detail::require(ids[t] >= 0 && std::size_t(ids[t]) < cfg.vocab, "bert_model: token id ", ids[t],
                              " at position ", t, " outside [0, ", cfg.vocab, ")");
      for (std::size_t c = 0; c < h; ++c)
        x[t * h + c] = word[std::size_t(ids[t]) * h + c] + position[t * h + c] + token_type[c];
    }
    layer_norm(x, ln_w, ln_b);
    return x;
  }

  /// Layer l on x (tokens x hidden), in place.
  void forward_layer(std::size_t l, std::vector<float>& x, thread_pool* pool) const {
    const auto& L = layers.at(l);
    const std::size_t t = x.size() / cfg.hidden, h = cfg.hidden, hd = cfg.head_dim();
    const matrix_view<const float> xv(x.data(), t, h, h);
    std::vector<float> q(t * h), k(t * h), v(t * h), ctx(t * h), tmp(t * h);
    L.q.forward(xv, {q.data(), t, h, h}, pool);
    L.k.forward(xv, {k.data(), t, h, h}, pool);
    L.v.forward(xv, {v.data(), t, h, h}, pool);
    if (kv_bits < 16) {
      const rtn_quantizer kvq({.bits = kv_bits, .symmetric = false, .gran = granularity::per_group, .group_size = hd,
                               .clip_ratio = kv_clip});
      for (auto* m : {&k, &v}) kvq.fake_quantize(matrix_view<const float>(m->data(), t, h, h), {m->data(), t, h, h});
    }
    using rm = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    using cmap = Eigen::Map<const rm, 0, Eigen::OuterStride<>>;
    const auto T = Eigen::Index(t), D = Eigen::Index(hd), S = Eigen::Index(h);
    quarot::detail::parallel_for(pool, cfg.heads, [&](std::size_t h0, std::size_t h1) {
      rm s;
      for (std::size_t hh = h0; hh < h1; ++hh) {
        const cmap qm(q.data() + hh * hd, T, D, Eigen::OuterStride<>(S));
        const cmap km(k.data() + hh * hd, T, D, Eigen::OuterStride<>(S));
        const cmap vm(v.data() + hh * hd, T, D, Eigen::OuterStride<>(S));
        s.noalias() = (qm * km.transpose()) * (1.0f / std::sqrt(float(hd)));
        for (Eigen::Index i = 0; i < T; ++i) {
          const float mx = s.row(i).maxCoeff();
          s.row(i) = (s.row(i).array() - mx).exp();
          s.row(i) /= s.row(i).sum();
        }
        Eigen::Map<rm, 0, Eigen::OuterStride<>>(ctx.data() + hh * hd, T, D, Eigen::OuterStride<>(S)).noalias() = s * vm;
      }
    });
    L.o.forward(matrix_view<const float>(ctx.data(), t, h, h), {tmp.data(), t, h, h}, pool);
    for (std::size_t i = 0; i < x.size(); ++i) x[i] += tmp[i];
    layer_norm(x, L.ln1_w, L.ln1_b);
    std::vector<float> mid(t * cfg.ffn);
    L.up.forward(xv, {mid.data(), t, cfg.ffn, cfg.ffn}, pool);
    for (auto& m : mid) m = 0.5f * m * (1.0f + std::erf(m * 0.70710678118654752f));  // exact GELU
    L.down.forward(matrix_view<const float>(mid.data(), t, cfg.ffn, cfg.ffn), {tmp.data(), t, h, h}, pool);
    for (std::size_t i = 0; i < x.size(); ++i) x[i] += tmp[i];
    layer_norm(x, L.ln2_w, L.ln2_b);
  }

  /// Hidden states of the last layer (tokens x hidden).
  [[nodiscard]] std::vector<float> forward(std::span<const std::int32_t> ids, thread_pool* pool = nullptr) const {
    auto x = embed(ids);
    for (std::size_t l = 0; l < cfg.layers; ++l) forward_layer(l, x, pool);
    return x;
  }

  /// Sentence embedding (sentence-transformers: mean over tokens, then L2-normalized).
  [[nodiscard]] std::vector<float> sentence_embedding(std::span<const std::int32_t> ids, thread_pool* pool = nullptr) const {
    const auto x = forward(ids, pool);
    const std::size_t t = ids.size(), h = cfg.hidden;
    std::vector<double> mean(h, 0.0);
    for (std::size_t r = 0; r < t; ++r)
      for (std::size_t c = 0; c < h; ++c) mean[c] += x[r * h + c];
    double norm = 0;
    for (auto& m : mean) {
      m /= double(t);
      norm += m * m;
    }
    norm = std::max(std::sqrt(norm), 1e-12);
    std::vector<float> e(h);
    for (std::size_t c = 0; c < h; ++c) e[c] = float(mean[c] / norm);
    return e;
  }

  void layer_norm(std::vector<float>& x, const std::vector<float>& w, const std::vector<float>& b) const {
    const std::size_t h = cfg.hidden;
    for (std::size_t r = 0; r < x.size() / h; ++r) {
      float* p = x.data() + r * h;
      double mean = 0, var = 0;
      for (std::size_t c = 0; c < h; ++c) mean += p[c];
      mean /= double(h);
      for (std::size_t c = 0; c < h; ++c) var += (p[c] - mean) * (p[c] - mean);
      const double inv = 1.0 / std::sqrt(var / double(h) + double(cfg.norm_eps));
      for (std::size_t c = 0; c < h; ++c) p[c] = float((p[c] - mean) * inv) * w[c] + b[c];
    }
  }
};

/// A BERT checkpoint in Hugging Face layout: `dir`/config.json + `dir`/model.safetensors
/// (names embeddings.*, encoder.layer.N.*, optionally prefixed "bert.").
inline bert_model load_bert_safetensors(const std::string& dir) {
  const detail::config_json json(dir, "load_bert_safetensors");
  auto num = [&](const char* key) { return json.number(key); };
  if (const auto* act = json.find("hidden_act"); act && act->str != "gelu")
    quarot::detail::fail(errc::unsupported, "load_bert_safetensors: hidden_act '", act->str, "' (only exact 'gelu')");
  bert_model m;
  auto& c = m.cfg;
  c.hidden = std::size_t(num("hidden_size"));
  c.ffn = std::size_t(num("intermediate_size"));
  c.heads = std::size_t(num("num_attention_heads"));
  c.layers = std::size_t(num("num_hidden_layers"));
  c.vocab = std::size_t(num("vocab_size"));
  c.max_positions = std::size_t(num("max_position_embeddings"));
  c.type_vocab = std::size_t(num("type_vocab_size"));
  c.norm_eps = float(num("layer_norm_eps"));
  c.validate();
  io::safetensors_file st(dir + "/model.safetensors");
  const std::string prefix = st.contains("bert.embeddings.word_embeddings.weight") ? "bert." : "";
  auto get = [&](const std::string& name, std::vector<std::size_t> shape) {
    const auto t = st.get(prefix + name);
    quarot::detail::require(t.shape == shape, "load_bert_safetensors: '", name, "' has the wrong shape");
    quarot::detail::require(t.type == io::dtype::f32 || t.type == io::dtype::f16 || t.type == io::dtype::bf16,
                            "load_bert_safetensors: '", name, "' has dtype ", io::to_string(t.type));
    return t.to_float();
  };
  auto lin = [&](const std::string& name, std::size_t out, std::size_t in) {
    linear_layer l(out, in, get(name + ".weight", {out, in}));
    l.b = get(name + ".bias", {out});
    return l;
  };
  const std::size_t h = c.hidden;
  m.word = get("embeddings.word_embeddings.weight", {c.vocab, h});
  m.position = get("embeddings.position_embeddings.weight", {c.max_positions, h});
  m.token_type = get("embeddings.token_type_embeddings.weight", {c.type_vocab, h});
  m.ln_w = get("embeddings.LayerNorm.weight", {h});
  m.ln_b = get("embeddings.LayerNorm.bias", {h});
  for (std::size_t l = 0; l < c.layers; ++l) {
    const std::string p = "encoder.layer." + std::to_string(l) + ".";
    bert_layer L;
    L.q = lin(p + "attention.self.query", h, h);
    L.k = lin(p + "attention.self.key", h, h);
    L.v = lin(p + "attention.self.value", h, h);
    L.o = lin(p + "attention.output.dense", h, h);
    L.ln1_w = get(p + "attention.output.LayerNorm.weight", {h});
    L.ln1_b = get(p + "attention.output.LayerNorm.bias", {h});
    L.up = lin(p + "intermediate.dense", c.ffn, h);
    L.down = lin(p + "output.dense", h, c.ffn);
    L.ln2_w = get(p + "output.LayerNorm.weight", {h});
    L.ln2_b = get(p + "output.LayerNorm.bias", {h});
    m.layers.push_back(std::move(L));
  }
  return m;
}

/// The rotation a post-norm encoder admits: every linear's input rotated online by the
/// Hadamard of its width (W -> W·Hᵀ offline). Exact in fp32.
inline void add_online_input_rotations(bert_model& m, thread_pool* pool = nullptr) {
  std::map<std::size_t, std::shared_ptr<const hadamard_transform>> hs;
  for (auto* l : m.linears()) {
    quarot::detail::require(!l->online, "add_online_input_rotations: a linear already rotates its input");
    auto& h = hs[l->in];
    if (!h) h = std::make_shared<const hadamard_transform>(l->in);
    fuse_input_rotation(l->weights(), *h, pool);
    detail::set_online_hadamard(*l, h);
  }
}

/// Weight quantization of every linear: RTN, or GPTQ calibrated layer by layer on the
/// outputs of the already-quantized layers (as for the decoder). (A template only to be
/// compiled where called: see quantize_weights_gptq.)
template <class Lazy = void>
void quantize_bert_weights(bert_model& m, const weight_quant_options& opt,
                           const std::vector<std::vector<std::int32_t>>& calibration = {},
                           thread_pool* pool = nullptr) {
  if (opt.method == weight_method::rtn) {
    detail::quantize_linears_rtn(m.linears(), opt, pool);
    return;
  }
  quarot::detail::require(!calibration.empty(), "quantize_bert_weights: GPTQ needs calibration sequences");
  const gptq_options go = detail::gptq_options_of(opt);
  std::vector<std::vector<float>> xs;
  for (const auto& seq : calibration) xs.push_back(m.embed(seq));
  for (std::size_t l = 0; l < m.cfg.layers; ++l) {
    auto& L = m.layers[l];
    detail::gptq_layer({{&L.q, &L.k, &L.v}, {&L.o}, {&L.up}, {&L.down}}, xs,
                       [&](std::vector<float>& x) { m.forward_layer(l, x, pool); }, go, pool);
  }
}

/// Per-token activation quantization of every linear's input, and of keys/values.
inline void set_bert_activation_quantization(bert_model& m, int act_bits, float act_clip, int kv_bits,
                                             float kv_clip = 0.95f) {
  detail::check_quantization_settings(act_bits, act_clip, kv_bits, kv_clip);
  for (auto* l : m.linears()) {
    l->act_bits = act_bits;
    l->act_clip = act_clip;
  }
  m.kv_bits = kv_bits;
  m.kv_clip = kv_clip;
}

}  // namespace quarot::model
