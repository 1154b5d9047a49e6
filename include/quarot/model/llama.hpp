// quarot — a Llama-family decoder (Touvron et al. 2023): configuration, fp32 weights read
// from GGUF or Hugging Face safetensors, and a reference forward pass (RMSNorm, RoPE,
// grouped-query attention with a KV cache, SwiGLU MLP, tied or untied head).
//
// Every linear layer is a model::linear_layer: y = act(x)·Wᵀ + b where act() is QuaRot's
// online part — an optional online rotation followed by optional per-token fake
// quantization — or, once a layer has been given integer weights, a quarot::linear GEMM.
// The same forward pass therefore runs the fp32 model, the rotated model, its fake-quantized
// simulation (for quality) and its integer kernels (for speed).
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/matrix_view.hpp"
#include "../core/thread_pool.hpp"
#include "../io/gguf.hpp"
#include "../io/safetensors.hpp"
#include "../quantize/rtn.hpp"

namespace quarot::model {

/// How RoPE pairs the dimensions of a head: llama.cpp's GGUF files hold Q/K weights
/// permuted for adjacent pairs (2i, 2i+1); Hugging Face checkpoints use halves (i, i+d/2).
enum class rope_style { interleaved, halves };

struct llama_config {
  std::size_t hidden = 0, ffn = 0, heads = 0, kv_heads = 0, head_dim = 0, layers = 0, vocab = 0;
  float norm_eps = 1e-5f;
  float rope_base = 10000.0f;
  rope_style rope = rope_style::interleaved;
  bool tied_head = false;  ///< the output head reuses the token embedding

  void validate() const {
    quarot::detail::require(hidden > 0 && ffn > 0 && heads > 0 && kv_heads > 0 && layers > 0 && vocab > 0,
                    "llama_config: hidden ", hidden, ", ffn ", ffn, ", heads ", heads, ", kv_heads ", kv_heads,
                    ", layers ", layers, ", vocab ", vocab, " must all be > 0");
    quarot::detail::require(heads % kv_heads == 0, "llama_config: ", heads, " heads are not a multiple of ", kv_heads,
                    " KV heads");
    quarot::detail::require(head_dim > 0 && head_dim % 2 == 0, "llama_config: head_dim ", head_dim, " must be even and > 0");
    quarot::detail::require(std::isfinite(norm_eps) && norm_eps > 0, "llama_config: norm eps ", norm_eps, " must be > 0");
    quarot::detail::require(std::isfinite(rope_base) && rope_base > 1, "llama_config: RoPE base ", rope_base, " must be > 1");
  }
  /// {out, in} of a block's linears, in llama_block::linears() order.
  [[nodiscard]] std::vector<std::pair<std::size_t, std::size_t>> linear_shapes() const {
    const std::size_t qd = heads * head_dim, kvd = kv_heads * head_dim;
    return {{qd, hidden}, {kvd, hidden}, {kvd, hidden}, {hidden, qd}, {ffn, hidden}, {ffn, hidden}, {hidden, ffn}};
  }
  [[nodiscard]] std::string describe() const {
    return quarot::detail::concat("hidden ", hidden, ", FFN ", ffn, ", ", heads, " heads / ", kv_heads, " KV heads of ", head_dim,
                          ", ", layers, " layers, vocab ", vocab, ", RoPE base ", rope_base,
                          tied_head ? ", tied head" : ", untied head");
  }
};

/// One linear layer, y = act(x)·Wᵀ + b (W out x in, row-major as in PyTorch).
struct linear_layer {
  std::size_t out = 0, in = 0;
  std::vector<float> w;  ///< fp32 weights, or the dequantized ones of a fake-quantized layer
  std::vector<float> b;  ///< empty or `out` values

  /// Online rotation of the input (x -> Q·x, QuaRot's online Hadamard); W must hold W·Qᵀ.
  std::function<void(matrix_view<float>, thread_pool*)> online;
  std::size_t online_size = 0;
  int act_bits = 16;        ///< per-token symmetric fake quantization of the input; 16 = off
  float act_clip = 1.0f;
  /// When set, the layer runs this instead (a quarot::linear integer GEMM that does its
  /// own rotation and quantization).
  std::function<void(matrix_view<const float>, matrix_view<float>, thread_pool*)> kernel;
  /// When set, called with the input as the weights see it (after the online rotation,
  /// before activation quantization): GPTQ's Hessian collection.
  std::function<void(matrix_view<const float>)> capture;
  /// The quantized weights behind `w` (levels, scales, zeros) once the layer is quantized.
  std::shared_ptr<const quantized_matrix> qw;

  linear_layer() = default;
  linear_layer(std::size_t out_features, std::size_t in_features, std::vector<float> weights)
      : out(out_features), in(in_features), w(std::move(weights)) {
    quarot::detail::require(w.size() == out * in, "linear_layer: ", w.size(), " weights for ", out, " x ", in);
  }
  [[nodiscard]] matrix_view<float> weights() { return {w.data(), out, in, in}; }
  [[nodiscard]] matrix_view<const float> weights() const { return {w.data(), out, in, in}; }

  /// y (rows x out) = act(x)·Wᵀ + b for x (rows x in).
  void forward(matrix_view<const float> x, matrix_view<float> y, thread_pool* pool) const {
    quarot::detail::require(x.cols == in && y.cols == out && y.rows == x.rows, "linear_layer: input ", x.rows, "x", x.cols,
                    ", output ", y.rows, "x", y.cols, " for a ", out, "x", in, " layer");
    if (kernel) {
      kernel(x, y, pool);
      return;
    }
    std::vector<float> buf;
    matrix_view<const float> src = x;
    if (online || act_bits < 16 || capture) {
      buf.resize(x.rows * in);
      for (std::size_t r = 0; r < x.rows; ++r) std::copy_n(x.row(r), in, buf.data() + r * in);
      matrix_view<float> v(buf.data(), x.rows, in, in);
      if (online) online(v, pool);
      if (capture) capture(v);
      if (act_bits < 16) {
        const quant_params p{.bits = act_bits, .symmetric = true, .gran = granularity::per_token, .clip_ratio = act_clip};
        rtn_quantizer(p).fake_quantize(v, v, pool);
      }
      src = v;
    }
    matmul_transposed(src, weights(), b, y, pool);
  }

  /// y = x·Wᵀ + b with Eigen, output columns split over the pool.
  static void matmul_transposed(matrix_view<const float> x, matrix_view<const float> w, const std::vector<float>& b,
                                matrix_view<float> y, thread_pool* pool) {
    using rm = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    using cmap = Eigen::Map<const rm, 0, Eigen::OuterStride<>>;
    using map = Eigen::Map<rm, 0, Eigen::OuterStride<>>;
    const auto rows = static_cast<Eigen::Index>(x.rows), k = static_cast<Eigen::Index>(x.cols);
    const cmap xm(x.data, rows, k, Eigen::OuterStride<>(static_cast<Eigen::Index>(x.stride)));
    constexpr std::size_t grain = 64;
    quarot::detail::parallel_for(
        pool, (w.rows + grain - 1) / grain,
        [&](std::size_t b0, std::size_t b1) {
          const std::size_t j0 = b0 * grain, j1 = std::min(w.rows, b1 * grain);
          const auto n = static_cast<Eigen::Index>(j1 - j0);
          const cmap wm(w.row(j0), n, k, Eigen::OuterStride<>(static_cast<Eigen::Index>(w.stride)));
          map ym(y.row(0) + j0, rows, n, Eigen::OuterStride<>(static_cast<Eigen::Index>(y.stride)));
          ym.noalias() = xm * wm.transpose();
          if (!b.empty())
            for (Eigen::Index r = 0; r < rows; ++r)
              for (Eigen::Index j = 0; j < n; ++j) ym(r, j) += b[j0 + std::size_t(j)];
        },
        1);
  }
};

/// Names of a block's seven linears, in execution order (llama_block::linears()).
inline constexpr const char* block_linear_names[7] = {"q", "k", "v", "o", "gate", "up", "down"};

struct llama_block {
  std::vector<float> attn_norm, ffn_norm;
  linear_layer q, k, v, o, gate, up, down;

  /// The seven linears in execution order (q, k, v share their input, as do gate/up).
  [[nodiscard]] std::vector<linear_layer*> linears() { return {&q, &k, &v, &o, &gate, &up, &down}; }
  [[nodiscard]] std::vector<const linear_layer*> linears() const { return {&q, &k, &v, &o, &gate, &up, &down}; }
};

/// KV-cache and query/key options of the attention (QuaRot §4: a Hadamard on queries and
/// keys after RoPE, which leaves q·k unchanged, makes the keys quantizable).
struct attention_options {
  int kv_bits = 16;            ///< asymmetric per-(token, head) fake quantization of K and V; 16 = off
  float kv_clip = 0.95f;       ///< QuaRot's KV-cache clip ratio
  bool qk_rotation = false;    ///< rotate q and k per head by the normalized Hadamard of order head_dim
};

/// Keys and values of every layer for the positions seen so far.
struct kv_cache {
  std::vector<std::vector<float>> k, v;  ///< per layer: positions x (kv_heads * head_dim)
  std::size_t length = 0;
  void clear() {
    for (auto& x : k) x.clear();
    for (auto& x : v) x.clear();
    length = 0;
  }
};

class llama_model {
 public:
  llama_config cfg;
  std::vector<float> embed;  ///< vocab x hidden
  std::vector<llama_block> blocks;
  std::vector<float> final_norm;
  linear_layer head;  ///< vocab x hidden; empty weights when cfg.tied_head
  attention_options attn;
  /// The per-head rotation of q/k when attn.qk_rotation (set by the QuaRot transform).
  std::function<void(matrix_view<float>)> qk_rotate;

  [[nodiscard]] kv_cache make_cache() const {
    kv_cache c;
    c.k.resize(cfg.layers);
    c.v.resize(cfg.layers);
    return c;
  }

  /// Checks every tensor's size against the configuration.
  void validate() const {
    cfg.validate();
    auto need = [](std::size_t got, std::size_t want, const std::string& what) {
      quarot::detail::require(got == want, "llama_model: ", what, " has ", got, " values, expected ", want);
    };
    auto lin = [&](const linear_layer& l, std::size_t out, std::size_t in, const std::string& what) {
      quarot::detail::require(l.out == out && l.in == in, "llama_model: ", what, " is ", l.out, "x", l.in, ", expected ", out,
                      "x", in);
      need(l.w.size(), out * in, what);
      quarot::detail::require(l.b.empty() || l.b.size() == out, "llama_model: ", what, " bias has ", l.b.size(), " values");
    };
    need(embed.size(), cfg.vocab * cfg.hidden, "token embedding");
    need(final_norm.size(), cfg.hidden, "final norm");
    quarot::detail::require(blocks.size() == cfg.layers, "llama_model: ", blocks.size(), " blocks for ", cfg.layers, " layers");
    const auto shapes = cfg.linear_shapes();
    for (std::size_t l = 0; l < blocks.size(); ++l) {
      const auto& b = blocks[l];
      const std::string p = "block " + std::to_string(l) + " ";
      need(b.attn_norm.size(), cfg.hidden, p + "attn_norm");
      need(b.ffn_norm.size(), cfg.hidden, p + "ffn_norm");
      const auto lins = b.linears();
      for (std::size_t i = 0; i < lins.size(); ++i)
        lin(*lins[i], shapes[i].first, shapes[i].second, p + block_linear_names[i]);
    }
    if (!cfg.tied_head) lin(head, cfg.vocab, cfg.hidden, "output head");
  }

  /// Hidden states (tokens x hidden) of the token embeddings.
  [[nodiscard]] std::vector<float> embed_tokens(std::span<const std::int32_t> tokens) const {
    std::vector<float> x(tokens.size() * cfg.hidden);
    for (std::size_t t = 0; t < tokens.size(); ++t) {
      quarot::detail::require(tokens[t] >= 0 && std::size_t(tokens[t]) < cfg.vocab, "llama_model: token id ", tokens[t],
                      " at position ", t, " outside [0, ", cfg.vocab, ")");
      std::copy_n(embed.data() + std::size_t(tokens[t]) * cfg.hidden, cfg.hidden, x.data() + t * cfg.hidden);
    }
    return x;
  }

  /// Runs block `l` on x (tokens x hidden, in place) at positions cache.length.. (the
  /// cache's layer-l entries grow by the tokens; the caller advances cache.length).
  void forward_block(std::size_t l, matrix_view<float> x, kv_cache& cache, thread_pool* pool) const {
    const auto& b = blocks.at(l);
    const std::size_t t = x.rows, h = cfg.hidden, hd = cfg.head_dim;
    const std::size_t qd = cfg.heads * hd, kvd = cfg.kv_heads * hd;
    std::vector<float> xn(t * h), q(t * qd), k(t * kvd), v(t * kvd), att(t * qd);
    rms_norm(x, b.attn_norm, xn);
    const matrix_view<const float> xnv(xn.data(), t, h, h);
    b.q.forward(xnv, {q.data(), t, qd, qd}, pool);
    b.k.forward(xnv, {k.data(), t, kvd, kvd}, pool);
    b.v.forward(xnv, {v.data(), t, kvd, kvd}, pool);
    rope({q.data(), t, qd, qd}, cache.length);
    rope({k.data(), t, kvd, kvd}, cache.length);
    if (attn.qk_rotation && qk_rotate) {
      qk_rotate({q.data(), t * cfg.heads, hd, hd});
      qk_rotate({k.data(), t * cfg.kv_heads, hd, hd});
    }
    if (attn.kv_bits < 16) {
      const quant_params p{.bits = attn.kv_bits, .symmetric = false, .gran = granularity::per_group, .group_size = hd,
                           .clip_ratio = attn.kv_clip};
      const rtn_quantizer kvq(p);
      kvq.fake_quantize(matrix_view<const float>(k.data(), t, kvd, kvd), matrix_view<float>(k.data(), t, kvd, kvd));
      kvq.fake_quantize(matrix_view<const float>(v.data(), t, kvd, kvd), matrix_view<float>(v.data(), t, kvd, kvd));
    }
    auto& kc = cache.k.at(l);
    auto& vc = cache.v.at(l);
    kc.insert(kc.end(), k.begin(), k.end());
    vc.insert(vc.end(), v.begin(), v.end());
    attention(q, kc, vc, cache.length, t, att, pool);
    std::vector<float> tmp(t * h);
    b.o.forward(matrix_view<const float>(att.data(), t, qd, qd), {tmp.data(), t, h, h}, pool);
    for (std::size_t r = 0; r < t; ++r)
      for (std::size_t c = 0; c < h; ++c) x(r, c) += tmp[r * h + c];

    rms_norm(x, b.ffn_norm, xn);
    std::vector<float> g(t * cfg.ffn), u(t * cfg.ffn);
    b.gate.forward(xnv, {g.data(), t, cfg.ffn, cfg.ffn}, pool);
    b.up.forward(xnv, {u.data(), t, cfg.ffn, cfg.ffn}, pool);
    for (std::size_t i = 0; i < g.size(); ++i) g[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];  // SiLU(gate) * up
    b.down.forward(matrix_view<const float>(g.data(), t, cfg.ffn, cfg.ffn), {tmp.data(), t, h, h}, pool);
    for (std::size_t r = 0; r < t; ++r)
      for (std::size_t c = 0; c < h; ++c) x(r, c) += tmp[r * h + c];
  }

  /// Final norm + head: logits (tokens x vocab) of hidden states x.
  void logits(matrix_view<const float> x, matrix_view<float> out, thread_pool* pool) const {
    std::vector<float> xn(x.rows * cfg.hidden);
    rms_norm(x, final_norm, xn);
    const matrix_view<const float> xnv(xn.data(), x.rows, cfg.hidden, cfg.hidden);
    if (cfg.tied_head)
      linear_layer::matmul_transposed(xnv, {embed.data(), cfg.vocab, cfg.hidden, cfg.hidden}, {}, out, pool);
    else
      head.forward(xnv, out, pool);
  }

  /// Logits (tokens x vocab) for `tokens` appended at the cache's current position.
  [[nodiscard]] std::vector<float> forward(std::span<const std::int32_t> tokens, kv_cache& cache,
                                           thread_pool* pool = nullptr) const {
    auto x = embed_tokens(tokens);
    const std::size_t t = tokens.size();
    for (std::size_t l = 0; l < cfg.layers; ++l) forward_block(l, {x.data(), t, cfg.hidden, cfg.hidden}, cache, pool);
    cache.length += t;
    std::vector<float> out(t * cfg.vocab);
    logits({x.data(), t, cfg.hidden, cfg.hidden}, {out.data(), t, cfg.vocab, cfg.vocab}, pool);
    return out;
  }
  [[nodiscard]] std::vector<float> forward(std::span<const std::int32_t> tokens, thread_pool* pool = nullptr) const {
    auto cache = make_cache();
    return forward(tokens, cache, pool);
  }

  void rms_norm(matrix_view<const float> x, const std::vector<float>& gamma, std::vector<float>& out) const {
    for (std::size_t r = 0; r < x.rows; ++r) {
      double ss = 0;
      for (std::size_t c = 0; c < x.cols; ++c) ss += double(x(r, c)) * x(r, c);
      const float inv = float(1.0 / std::sqrt(ss / double(x.cols) + double(cfg.norm_eps)));
      for (std::size_t c = 0; c < x.cols; ++c) out[r * x.cols + c] = x(r, c) * inv * gamma[c];
    }
  }

 private:
  /// RoPE (Su et al. 2021) on every head of x (tokens x heads*head_dim) at positions pos0...
  void rope(matrix_view<float> x, std::size_t pos0) const {
    const std::size_t hd = cfg.head_dim, half = hd / 2;
    std::vector<float> cs(half), sn(half);
    for (std::size_t t = 0; t < x.rows; ++t) {
      const double pos = double(pos0 + t);
      for (std::size_t i = 0; i < half; ++i) {
        const double ang = pos * std::pow(double(cfg.rope_base), -2.0 * double(i) / double(hd));
        cs[i] = float(std::cos(ang));
        sn[i] = float(std::sin(ang));
      }
      for (std::size_t h0 = 0; h0 < x.cols; h0 += hd) {
        float* p = x.row(t) + h0;
        for (std::size_t i = 0; i < half; ++i) {
          float& a = cfg.rope == rope_style::interleaved ? p[2 * i] : p[i];
          float& c = cfg.rope == rope_style::interleaved ? p[2 * i + 1] : p[i + half];
          const float x0 = a, x1 = c;
          a = x0 * cs[i] - x1 * sn[i];
          c = x0 * sn[i] + x1 * cs[i];
        }
      }
    }
  }

  /// Causal grouped-query attention of t new queries against the cache (past + t keys).
  void attention(const std::vector<float>& q, const std::vector<float>& kc, const std::vector<float>& vc,
                 std::size_t past, std::size_t t, std::vector<float>& out, thread_pool* pool) const {
    using rm = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    using cmap = Eigen::Map<const rm, 0, Eigen::OuterStride<>>;
    const std::size_t hd = cfg.head_dim, qd = cfg.heads * hd, kvd = cfg.kv_heads * hd, n = past + t;
    const std::size_t group = cfg.heads / cfg.kv_heads;
    const float scale = 1.0f / std::sqrt(float(hd));
    quarot::detail::parallel_for(pool, cfg.heads, [&](std::size_t h0, std::size_t h1) {
      rm s;
      for (std::size_t h = h0; h < h1; ++h) {
        const std::size_t g = h / group;
        const auto T = static_cast<Eigen::Index>(t), N = static_cast<Eigen::Index>(n), D = static_cast<Eigen::Index>(hd);
        const cmap qm(q.data() + h * hd, T, D, Eigen::OuterStride<>(Eigen::Index(qd)));
        const cmap km(kc.data() + g * hd, N, D, Eigen::OuterStride<>(Eigen::Index(kvd)));
        const cmap vm(vc.data() + g * hd, N, D, Eigen::OuterStride<>(Eigen::Index(kvd)));
        s.noalias() = qm * km.transpose();
        for (Eigen::Index i = 0; i < T; ++i) {
          const Eigen::Index visible = Eigen::Index(past) + i + 1;  // causal mask
          float mx = -INFINITY;
          for (Eigen::Index j = 0; j < visible; ++j) mx = std::max(mx, s(i, j) * scale);
          float sum = 0;
          for (Eigen::Index j = 0; j < visible; ++j) sum += (s(i, j) = std::exp(s(i, j) * scale - mx));
          for (Eigen::Index j = 0; j < visible; ++j) s(i, j) /= sum;
          for (Eigen::Index j = visible; j < N; ++j) s(i, j) = 0;
        }
        Eigen::Map<rm, 0, Eigen::OuterStride<>> om(out.data() + h * hd, T, D, Eigen::OuterStride<>(Eigen::Index(qd)));
        om.noalias() = s * vm;
      }
    });
  }
};

namespace detail {
inline std::size_t meta_uint(const io::gguf_file& f, const std::string& key) {
  return static_cast<std::size_t>(f.meta(key).as_uint());
}

/// A Hugging Face `config.json`, read for loader `who` (named in its errors).
class config_json {
 public:
  config_json(const std::string& dir, const char* who) : who_(who) {
    const std::string path = dir + "/config.json";
    std::ifstream in(path);
    if (!in) quarot::detail::fail(errc::io, who_, ": cannot open '", path, "'");
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string text = ss.str();
    root_ = quarot::detail::json_parser(text, path).parse();
  }
  [[nodiscard]] const quarot::detail::json_value* find(const char* key) const { return root_.find(key); }
  /// The number under `key`, else `fallback`, else an error naming the key.
  [[nodiscard]] double number(const char* key, std::optional<double> fallback = std::nullopt) const {
    const auto* v = root_.find(key);
    if (!v || v->type != quarot::detail::json_value::kind::number) {
      if (fallback) return *fallback;
      quarot::detail::fail(errc::io, who_, ": config.json has no number '", key, "'");
    }
    return v->num;
  }

 private:
  const char* who_;
  quarot::detail::json_value root_;
};
}  // namespace detail

/// A Llama-family model from a GGUF file (general.architecture "llama"), dequantized to fp32.
inline llama_model load_llama_gguf(const io::gguf_file& f) {
  const auto& arch = f.meta("general.architecture").s;
  quarot::detail::require(arch == "llama", "load_llama_gguf: general.architecture is '", arch,
                          "', only 'llama' is supported");
  llama_model m;
  auto& c = m.cfg;
  c.hidden = detail::meta_uint(f, "llama.embedding_length");
  c.ffn = detail::meta_uint(f, "llama.feed_forward_length");
  c.heads = detail::meta_uint(f, "llama.attention.head_count");
  c.kv_heads = f.metadata().count("llama.attention.head_count_kv") ? detail::meta_uint(f, "llama.attention.head_count_kv")
                                                                   : c.heads;
  c.layers = detail::meta_uint(f, "llama.block_count");
  c.head_dim = c.hidden / c.heads;
  if (f.metadata().count("llama.rope.dimension_count")) {
    const auto rd = detail::meta_uint(f, "llama.rope.dimension_count");
    quarot::detail::require(rd == c.head_dim, "load_llama_gguf: partial RoPE (", rd, " of ", c.head_dim,
                            " dimensions) is not supported");
  }
  c.norm_eps = float(f.meta("llama.attention.layer_norm_rms_epsilon").as_double());
  if (f.metadata().count("llama.rope.freq_base")) c.rope_base = float(f.meta("llama.rope.freq_base").as_double());
  c.rope = rope_style::interleaved;
  const auto& emb = f.info("token_embd.weight");
  quarot::detail::require(emb.dims.size() == 2 && emb.dims[0] == c.hidden, "load_llama_gguf: token_embd.weight is not ",
                          c.hidden, " x vocab");
  c.vocab = static_cast<std::size_t>(emb.dims[1]);
  c.tied_head = f.tensors().count("output.weight") == 0;
  m.embed = f.to_float("token_embd.weight");
  auto lin = [&](const std::string& name) {
    const auto& i = f.info(name);
    quarot::detail::require(i.dims.size() == 2, "load_llama_gguf: '", name, "' is not a matrix");
    return linear_layer(static_cast<std::size_t>(i.dims[1]), static_cast<std::size_t>(i.dims[0]), f.to_float(name));
  };
  m.blocks.resize(c.layers);
  for (std::size_t l = 0; l < c.layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    auto& b = m.blocks[l];
    b.attn_norm = f.to_float(p + "attn_norm.weight");
    b.ffn_norm = f.to_float(p + "ffn_norm.weight");
    b.q = lin(p + "attn_q.weight");
    b.k = lin(p + "attn_k.weight");
    b.v = lin(p + "attn_v.weight");
    b.o = lin(p + "attn_output.weight");
    b.gate = lin(p + "ffn_gate.weight");
    b.up = lin(p + "ffn_up.weight");
    b.down = lin(p + "ffn_down.weight");
  }
  m.final_norm = f.to_float("output_norm.weight");
  if (!c.tied_head) m.head = lin("output.weight");
  m.validate();
  return m;
}

/// A Llama-family model from a Hugging Face checkpoint: `dir`/config.json and
/// `dir`/model.safetensors (F32/F16/BF16 tensors, names model.layers.N.self_attn.q_proj.weight ...).
inline llama_model load_llama_safetensors(const std::string& dir) {
  const detail::config_json json(dir, "load_llama_safetensors");
  auto num = [&](const char* key, std::optional<double> fallback = std::nullopt) { return json.number(key, fallback); };
  llama_model m;
  auto& c = m.cfg;
  c.hidden = std::size_t(num("hidden_size"));
  c.ffn = std::size_t(num("intermediate_size"));
  c.heads = std::size_t(num("num_attention_heads"));
  c.kv_heads = std::size_t(num("num_key_value_heads", double(c.heads)));
  c.layers = std::size_t(num("num_hidden_layers"));
  c.vocab = std::size_t(num("vocab_size"));
  c.head_dim = std::size_t(num("head_dim", double(c.hidden / std::max<std::size_t>(1, c.heads))));
  c.norm_eps = float(num("rms_norm_eps", 1e-6));
  c.rope_base = float(num("rope_theta", 10000.0));
  c.rope = rope_style::halves;
  const auto* tie = json.find("tie_word_embeddings");
  io::safetensors_file st(dir + "/model.safetensors");
  c.tied_head = tie ? tie->b : !st.contains("lm_head.weight");
  auto get = [&](const std::string& name) {
    const auto t = st.get(name);
    quarot::detail::require(t.type == io::dtype::f32 || t.type == io::dtype::f16 || t.type == io::dtype::bf16,
                            "load_llama_safetensors: '", name, "' has dtype ", io::to_string(t.type),
                            " (F32, F16 or BF16 expected)");
    return t;
  };
  auto lin = [&](const std::string& name) {
    const auto t = get(name);
    quarot::detail::require(t.shape.size() == 2, "load_llama_safetensors: '", name, "' is not a matrix");
    return linear_layer(t.shape[0], t.shape[1], t.to_float());
  };
  m.embed = get("model.embed_tokens.weight").to_float();
  m.blocks.resize(c.layers);
  for (std::size_t l = 0; l < c.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    auto& b = m.blocks[l];
    b.attn_norm = get(p + "input_layernorm.weight").to_float();
    b.ffn_norm = get(p + "post_attention_layernorm.weight").to_float();
    b.q = lin(p + "self_attn.q_proj.weight");
    b.k = lin(p + "self_attn.k_proj.weight");
    b.v = lin(p + "self_attn.v_proj.weight");
    b.o = lin(p + "self_attn.o_proj.weight");
    b.gate = lin(p + "mlp.gate_proj.weight");
    b.up = lin(p + "mlp.up_proj.weight");
    b.down = lin(p + "mlp.down_proj.weight");
    for (auto [layer, name] : {std::pair{&b.q, "q_proj"}, {&b.k, "k_proj"}, {&b.v, "v_proj"}})
      if (st.contains(p + "self_attn." + name + ".bias")) layer->b = get(p + "self_attn." + name + ".bias").to_float();
  }
  m.final_norm = get("model.norm.weight").to_float();
  if (!c.tied_head) m.head = lin("lm_head.weight");
  m.validate();
  return m;
}

/// Perplexity of `tokens` in consecutive windows of `window` tokens (each window starts
/// with an empty cache; the first token of a window is context only), with progress.
struct perplexity_result {
  double ppl = 0, nll = 0;
  std::size_t predicted = 0, windows = 0;
};
inline perplexity_result perplexity(const llama_model& m, std::span<const std::int32_t> tokens, std::size_t window,
                                    thread_pool* pool = nullptr,
                                    const std::function<void(std::size_t, std::size_t)>& progress = {}) {
  quarot::detail::require(window >= 2, "perplexity: window ", window, " must be >= 2");
  quarot::detail::require(tokens.size() >= window, "perplexity: ", tokens.size(), " tokens are fewer than one window of ",
                          window);
  perplexity_result r;
  const std::size_t windows = tokens.size() / window;
  double nll = 0;
  for (std::size_t w = 0; w < windows; ++w) {
    const auto seq = tokens.subspan(w * window, window);
    const auto lg = m.forward(seq, pool);
    for (std::size_t t = 0; t + 1 < window; ++t) {
      const float* row = lg.data() + t * m.cfg.vocab;
      const float mx = *std::max_element(row, row + m.cfg.vocab);
      double sum = 0;
      for (std::size_t j = 0; j < m.cfg.vocab; ++j) sum += std::exp(double(row[j] - mx));
      nll += std::log(sum) + double(mx) - double(row[seq[t + 1]]);
      ++r.predicted;
    }
    if (progress) progress(w + 1, windows);
  }
  r.windows = windows;
  r.nll = nll / double(r.predicted);
  r.ppl = std::exp(r.nll);
  return r;
}

}  // namespace quarot::model
