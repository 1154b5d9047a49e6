// quarot — saving and loading a rotated, quantized Llama-family model: the "quarot-llama/1"
// format, a .safetensors file (so any safetensors reader can inspect it) with
//
//   metadata (all strings)
//     format            "quarot-llama/1"
//     hidden ffn heads kv_heads head_dim layers vocab norm_eps rope_base
//     rope              "interleaved" | "halves"         tied_head "0" | "1"
//     act_bits act_clip kv_bits kv_clip                  (16 = not quantized)
//     qk_rotation       "0" | "1"   (per-head Hadamard on q and k after RoPE)
//     blk.L.NAME.online "hadamard:N" when that linear rotates its input online
//   tensors
//     embed [vocab, hidden] F32, final_norm [hidden] F32, head.weight [vocab, hidden] F32 (untied)
//     blk.L.attn_norm, blk.L.ffn_norm [hidden] F32
//     for NAME in q k v o gate up down, either
//       blk.L.NAME.weight [out, in] F32                  (not quantized), or
//       blk.L.NAME.levels [out, in] I8 (5..8 bits; asymmetric levels 0..255 as their uint8 bit
//         pattern) or blk.L.NAME.levels4 [out, ceil(in/2)] U8 (2..4 bits, two levels per byte,
//         low nibble first, two's complement nibbles when symmetric)
//       blk.L.NAME.scales [out, groups] F32, blk.L.NAME.zeros [out, groups] F32 (asymmetric)
//       blk.L.NAME.g_idx [in] I32 (GPTQ act-order groups), and metadata
//       blk.L.NAME.quant "bits=4,symmetric=1,group=0"
//     blk.L.NAME.bias [out] F32 when present
//
// Loading rebuilds the weights the forward pass uses (dequantized levels), the quantized
// matrices (for use_integer_kernels), the online Hadamards and the activation settings.
#pragma once

#include <cstdio>
#include <map>
#include <memory>
#include <string>

#include "../core/error.hpp"
#include "../core/int4.hpp"
#include "../io/safetensors.hpp"
#include "../transform/kronecker.hpp"
#include "llama.hpp"
#include "quantize.hpp"
#include "rotate.hpp"

namespace quarot::model {

namespace detail {
inline std::string fmt_float(double v) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}
}  // namespace detail

inline constexpr const char* llama_format_version = "quarot-llama/1";

/// Writes m (rotated or not, quantized or not) to `path`.
inline void save_llama(const llama_model& m, const std::string& path) {
  m.validate();
  std::map<std::string, io::tensor> t;
  std::map<std::string, std::string> meta;
  const auto& c = m.cfg;
  meta["format"] = llama_format_version;
  for (auto [k, v] : {std::pair{"hidden", c.hidden}, {"ffn", c.ffn}, {"heads", c.heads}, {"kv_heads", c.kv_heads},
                      {"head_dim", c.head_dim}, {"layers", c.layers}, {"vocab", c.vocab}})
    meta[k] = std::to_string(v);
  meta["norm_eps"] = detail::fmt_float(c.norm_eps);
  meta["rope_base"] = detail::fmt_float(c.rope_base);
  meta["rope"] = c.rope == rope_style::interleaved ? "interleaved" : "halves";
  meta["tied_head"] = c.tied_head ? "1" : "0";
  meta["kv_bits"] = std::to_string(m.attn.kv_bits);
  meta["kv_clip"] = detail::fmt_float(m.attn.kv_clip);
  meta["qk_rotation"] = m.attn.qk_rotation ? "1" : "0";
  const auto& b0 = m.blocks.front().q;
  meta["act_bits"] = std::to_string(b0.act_bits);
  meta["act_clip"] = detail::fmt_float(b0.act_clip);

  t["embed"] = io::tensor::from(m.embed, {c.vocab, c.hidden});
  t["final_norm"] = io::tensor::from(m.final_norm, {c.hidden});
  if (!c.tied_head) t["head.weight"] = io::tensor::from(m.head.w, {c.vocab, c.hidden});
  for (std::size_t l = 0; l < c.layers; ++l) {
    const auto& b = m.blocks[l];
    const std::string p = "blk." + std::to_string(l) + ".";
    t[p + "attn_norm"] = io::tensor::from(b.attn_norm, {c.hidden});
    t[p + "ffn_norm"] = io::tensor::from(b.ffn_norm, {c.hidden});
    const auto lins = b.linears();
    for (std::size_t i = 0; i < lins.size(); ++i) {
      const linear_layer& L = *lins[i];
      const std::string n = p + block_linear_names[i];
      quarot::detail::require(L.act_bits == b0.act_bits && L.act_clip == b0.act_clip, "save_llama: ", n,
                              " has activation settings that differ from the other layers (not representable)");
      if (L.online) meta[n + ".online"] = "hadamard:" + std::to_string(L.online_size);
      if (!L.b.empty()) t[n + ".bias"] = io::tensor::from(L.b, {L.out});
      if (!L.qw) {
        t[n + ".weight"] = io::tensor::from(L.w, {L.out, L.in});
        continue;
      }
      const auto& q = *L.qw;
      quarot::detail::require(q.params.gran == granularity::per_channel || q.params.gran == granularity::per_group,
                              "save_llama: ", n, " is quantized ", to_string(q.params.gran),
                              " (per-channel or per-group expected)");
      meta[n + ".quant"] = "bits=" + std::to_string(q.params.bits) + ",symmetric=" + (q.params.symmetric ? "1" : "0") +
                           ",group=" + std::to_string(q.params.gran == granularity::per_group ? q.params.group_size : 0);
      if (q.params.bits <= 4) {  // two levels per byte, low nibble first (quarot/core/int4.hpp)
        const std::size_t row_bytes = int4_packed_size(q.cols);
        std::vector<std::uint8_t> packed(q.rows * row_bytes);
        for (std::size_t r = 0; r < q.rows; ++r) {
          const std::span<const std::int8_t> row(q.q.data() + r * q.cols, q.cols);
          const std::span<std::uint8_t> dst(packed.data() + r * row_bytes, row_bytes);
          if (q.params.symmetric) pack_int4(row, dst);
          else pack_uint4({reinterpret_cast<const std::uint8_t*>(row.data()), row.size()}, dst);
        }
        t[n + ".levels4"] = io::tensor::from(packed, {q.rows, row_bytes});
      } else {
        t[n + ".levels"] = io::tensor::from(q.q, {q.rows, q.cols});
      }
      t[n + ".scales"] = io::tensor::from(q.scales, {q.rows, q.groups_per_row});
      if (!q.zeros.empty()) t[n + ".zeros"] = io::tensor::from(q.zeros, {q.rows, q.groups_per_row});
      if (!q.g_idx.empty()) {
        std::vector<std::int32_t> g(q.g_idx.begin(), q.g_idx.end());
        t[n + ".g_idx"] = io::tensor::from(g, {q.cols});
      }
    }
  }
  io::write_safetensors(path, t, meta);
}

/// Reads a model written by save_llama.
inline llama_model load_llama(const std::string& path) {
  io::safetensors_file f(path);
  const auto& meta = f.metadata();
  auto get = [&](const std::string& key) -> const std::string& {
    auto it = meta.find(key);
    if (it == meta.end()) quarot::detail::fail(errc::io, "load_llama: '", path, "' has no metadata '", key, "'");
    return it->second;
  };
  auto num = [&](const std::string& key) {
    const auto& s = get(key);
    char* end = nullptr;
    const double v = std::strtod(s.c_str(), &end);
    if (s.empty() || *end != '\0') quarot::detail::fail(errc::io, "load_llama: metadata '", key, "' = '", s, "' is not a number");
    return v;
  };
  quarot::detail::require(meta.count("format") && meta.at("format") == llama_format_version, "load_llama: '", path,
                          "' is not a ", llama_format_version, " file");
  auto size = [&](const char* key) {
    const double v = num(key);
    quarot::detail::require(v >= 0 && v < 1e9 && v == double(std::size_t(v)), "load_llama: metadata '", key, "' = ", v,
                            " is not a size");
    return std::size_t(v);
  };
  llama_model m;
  auto& c = m.cfg;
  c.hidden = size("hidden");
  c.ffn = size("ffn");
  c.heads = size("heads");
  c.kv_heads = size("kv_heads");
  c.head_dim = size("head_dim");
  c.layers = size("layers");
  c.vocab = size("vocab");
  c.norm_eps = float(num("norm_eps"));
  c.rope_base = float(num("rope_base"));
  c.rope = get("rope") == "halves" ? rope_style::halves : rope_style::interleaved;
  c.tied_head = get("tied_head") == "1";
  c.validate();
  auto floats = [&](const std::string& name, std::vector<std::size_t> shape) {
    const auto t = f.get(name);
    quarot::detail::require(t.type == io::dtype::f32 && t.shape == shape, "load_llama: tensor '", name,
                            "' has the wrong dtype or shape");
    return t.to_float();
  };
  m.embed = floats("embed", {c.vocab, c.hidden});
  m.final_norm = floats("final_norm", {c.hidden});
  if (!c.tied_head) m.head = linear_layer(c.vocab, c.hidden, floats("head.weight", {c.vocab, c.hidden}));
  const auto shapes = c.linear_shapes();
  const int act_bits = int(num("act_bits"));
  const float act_clip = float(num("act_clip"));
  std::map<std::size_t, std::shared_ptr<const hadamard_transform>> hadamards;
  m.blocks.resize(c.layers);
  for (std::size_t l = 0; l < c.layers; ++l) {
    auto& b = m.blocks[l];
    const std::string p = "blk." + std::to_string(l) + ".";
    b.attn_norm = floats(p + "attn_norm", {c.hidden});
    b.ffn_norm = floats(p + "ffn_norm", {c.hidden});
    const auto lins = b.linears();
    for (std::size_t i = 0; i < lins.size(); ++i) {
      const std::string n = p + block_linear_names[i];
      const auto [out, in] = shapes[i];
      linear_layer& L = *lins[i];
      if (f.contains(n + ".weight")) {
        L = linear_layer(out, in, floats(n + ".weight", {out, in}));
      } else {
        quantized_matrix q;
        q.rows = out;
        q.cols = in;
        int bits = 0, sym = 0;
        unsigned long group = 0;
        const auto& spec = get(n + ".quant");
        quarot::detail::require(std::sscanf(spec.c_str(), "bits=%d,symmetric=%d,group=%lu", &bits, &sym, &group) == 3,
                                "load_llama: '", n, ".quant' = '", spec, "' is malformed");
        q.params = quant_params{.bits = bits, .symmetric = sym == 1,
                                .gran = group ? granularity::per_group : granularity::per_channel, .group_size = group};
        q.params.validate(in);
        q.groups_per_row = group ? in / group : 1;
        q.q.resize(out * in);
        if (bits <= 4) {
          const std::size_t row_bytes = int4_packed_size(in);
          const auto lv = f.get(n + ".levels4");
          quarot::detail::require(lv.type == io::dtype::u8 && lv.shape == std::vector<std::size_t>{out, row_bytes},
                                  "load_llama: '", n, ".levels4' has the wrong dtype or shape");
          for (std::size_t r = 0; r < out; ++r) {
            const std::span<const std::uint8_t> src(lv.data.data() + r * row_bytes, row_bytes);
            const std::span<std::int8_t> row(q.q.data() + r * in, in);
            if (q.params.symmetric) unpack_int4(src, row);
            else unpack_uint4(src, {reinterpret_cast<std::uint8_t*>(row.data()), row.size()});
          }
        } else {
          const auto lv = f.get(n + ".levels");
          quarot::detail::require(lv.type == io::dtype::i8 && lv.shape == std::vector<std::size_t>{out, in},
                                  "load_llama: '", n, ".levels' has the wrong dtype or shape");
          std::memcpy(q.q.data(), lv.data.data(), q.q.size());
        }
        for (std::size_t e = 0; e < q.q.size(); ++e) {
          const int v = q.value(e / in, e % in);
          quarot::detail::require(v >= q.params.qmin() && v <= q.params.qmax(), "load_llama: '", n, ".levels' holds ", v,
                                  " outside the ", bits, "-bit grid");
        }
        q.scales = floats(n + ".scales", {out, q.groups_per_row});
        if (!q.params.symmetric) q.zeros = floats(n + ".zeros", {out, q.groups_per_row});
        if (f.contains(n + ".g_idx")) {
          const auto g = f.get(n + ".g_idx");
          quarot::detail::require(g.type == io::dtype::i32 && g.shape == std::vector<std::size_t>{in}, "load_llama: '", n,
                                  ".g_idx' has the wrong dtype or shape");
          for (std::size_t e = 0; e < in; ++e) {
            const auto v = io::tensor::load<std::int32_t>(g.data.data(), e);
            quarot::detail::require(v >= 0 && std::size_t(v) < q.groups_per_row, "load_llama: '", n, ".g_idx' holds ", v);
            q.g_idx.push_back(std::uint32_t(v));
          }
        }
        std::vector<float> w(out * in);
        rtn_quantizer(q.params).dequantize(q, {w.data(), out, in, in});
        L = linear_layer(out, in, std::move(w));
        L.qw = std::make_shared<const quantized_matrix>(std::move(q));
      }
      if (f.contains(n + ".bias")) L.b = floats(n + ".bias", {out});
      if (auto it = meta.find(n + ".online"); it != meta.end()) {
        unsigned long sz = 0;
        quarot::detail::require(std::sscanf(it->second.c_str(), "hadamard:%lu", &sz) == 1 && sz == in, "load_llama: '",
                                n, ".online' = '", it->second, "' (expected hadamard:", in, ")");
        auto& h = hadamards[sz];
        if (!h) h = std::make_shared<const hadamard_transform>(sz);
        detail::set_online_hadamard(L, h);
      }
    }
  }
  set_activation_quantization(m, act_bits, act_clip, int(num("kv_bits")), float(num("kv_clip")));
  if (get("qk_rotation") == "1") enable_qk_rotation(m);
  m.validate();
  return m;
}

}  // namespace quarot::model
