// quarot — the QuaRot transformation of a Llama-family model (Ashkboos et al. 2024, §4),
// as composable steps. Each step leaves the fp32 model's function unchanged (up to
// rounding); together they remove the outliers that make 4-bit activations fail.
//
//  1. fold_norms: RMSNorm(x)·γ followed by W equals RMSNorm(x) followed by W·diag(γ)
//     (exact). Afterwards every norm is scale-free, so it commutes with a rotation:
//     ‖Qx‖ = ‖x‖ (§4.1, "computational invariance"; SliceGPT, Ashkboos et al. 2024).
//  2. rotate_residual(Q): the residual stream becomes Q·x. Embedding rows e -> Q·e; every
//     reader of the stream (q, k, v, gate, up, head) W -> W·Qᵀ; every writer (o, down)
//     W -> Q·W. Q is any orthogonal transform (randomized Hadamard by default; a grouped,
//     dense or learned rotation works the same).
//  3. add_online_ffn_rotation: down_proj's input gets an online Hadamard H (x -> H·x)
//     with W_down -> W_down·Hᵀ (§4.2: the FFN activations have outliers of their own).
//  4. rotate_attention_values: a head-wise Hadamard fused into v_proj's output and undone
//     in o_proj's input, plus an online Hadamard over o_proj's whole input (QuaRot's
//     (H_heads ⊗ H_head_dim); for head counts without a Hadamard matrix, e.g. 9, the
//     online factor is the Hadamard of order heads·head_dim instead).
//  5. enable_qk_rotation: queries and keys rotated per head after RoPE (q·k unchanged)
//     so the key cache quantizes well (§4.3).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../transform/fuse.hpp"
#include "../transform/grouped.hpp"
#include "../transform/kronecker.hpp"
#include "llama.hpp"

namespace quarot::model {

/// Folds every RMSNorm scale into the linear layers that read the normalized stream; the
/// norms become all-ones. A tied head is untied (it now differs from the embedding).
inline void fold_norms(llama_model& m) {
  auto scale_columns = [](linear_layer& l, const std::vector<float>& g) {
    for (std::size_t r = 0; r < l.out; ++r)
      for (std::size_t c = 0; c < l.in; ++c) l.w[r * l.in + c] *= g[c];
  };
  for (auto& b : m.blocks) {
    for (auto* l : {&b.q, &b.k, &b.v}) scale_columns(*l, b.attn_norm);
    for (auto* l : {&b.gate, &b.up}) scale_columns(*l, b.ffn_norm);
    std::fill(b.attn_norm.begin(), b.attn_norm.end(), 1.0f);
    std::fill(b.ffn_norm.begin(), b.ffn_norm.end(), 1.0f);
  }
  if (m.cfg.tied_head) {
    m.head = linear_layer(m.cfg.vocab, m.cfg.hidden, m.embed);
    m.cfg.tied_head = false;
  }
  scale_columns(m.head, m.final_norm);
  std::fill(m.final_norm.begin(), m.final_norm.end(), 1.0f);
}

/// True when every norm scale is 1 (fold_norms has run).
[[nodiscard]] inline bool norms_folded(const llama_model& m) {
  auto ones = [](const std::vector<float>& v) { return std::all_of(v.begin(), v.end(), [](float x) { return x == 1.0f; }); };
  if (!ones(m.final_norm)) return false;
  for (const auto& b : m.blocks)
    if (!ones(b.attn_norm) || !ones(b.ffn_norm)) return false;
  return true;
}

/// Rotates the residual stream by Q (size hidden). Needs folded norms and an untied head.
template <class Q>
void rotate_residual(llama_model& m, const Q& q, thread_pool* pool = nullptr) {
  quarot::detail::require(q.size() == m.cfg.hidden, "rotate_residual: rotation of size ", q.size(), " for hidden size ",
                  m.cfg.hidden);
  quarot::detail::require(norms_folded(m) && !m.cfg.tied_head,
                  "rotate_residual: fold_norms must run first (norm scales do not commute with a rotation)");
  q.apply(matrix_view<float>(m.embed.data(), m.cfg.vocab, m.cfg.hidden, m.cfg.hidden), pool);
  for (auto& b : m.blocks) {
    for (auto* l : {&b.q, &b.k, &b.v, &b.gate, &b.up}) fuse_input_rotation(l->weights(), q, pool);
    for (auto* l : {&b.o, &b.down}) fuse_output_rotation(l->weights(), q, std::span<float>(l->b), pool);
  }
  fuse_input_rotation(m.head.weights(), q, pool);
}

namespace detail {
/// Makes `h` (a Hadamard transform shared by all users) the online rotation of l.
inline void set_online_hadamard(linear_layer& l, std::shared_ptr<const hadamard_transform> h) {
  l.online_size = h->size();
  l.online = [h](matrix_view<float> x, thread_pool* pool) { h->apply(x, pool); };
}
}  // namespace detail

/// QuaRot's online Hadamard before down_proj (any FFN size the planner supports, e.g.
/// 1536 = 12·128 or 11008 = 172·64).
inline void add_online_ffn_rotation(llama_model& m, thread_pool* pool = nullptr) {
  quarot::detail::require(hadamard_size_supported(m.cfg.ffn), "add_online_ffn_rotation: no Hadamard matrix of order ", m.cfg.ffn);
  auto h = std::make_shared<const hadamard_transform>(m.cfg.ffn);
  for (auto& b : m.blocks) {
    quarot::detail::require(!b.down.online, "add_online_ffn_rotation: down_proj already has an online rotation");
    fuse_input_rotation(b.down.weights(), *h, pool);
    detail::set_online_hadamard(b.down, h);
  }
}

/// SmoothRot-style channel scaling of down_proj's input before its online rotation
/// (Czakó et al. 2025, after SmoothQuant, Xiao et al. 2023): the FFN activation
/// h = SiLU(gate)·up has channels with massive outliers that one Hadamard only partly
/// spreads. With s_j = max|h_j|^α / max|W_down[:, j]|^(1−α) (maxima over `calibration`
/// tokens), up_proj's row j is divided by s_j and W_down's column j multiplied by it:
/// exact, since h_j is linear in up_j. Run it before add_online_ffn_rotation.
inline void smooth_ffn_channels(llama_model& m, const std::vector<std::vector<std::int32_t>>& calibration, float alpha,
                                thread_pool* pool = nullptr) {
  quarot::detail::require(alpha >= 0.0f && alpha <= 1.0f, "smooth_ffn_channels: alpha ", alpha, " outside [0, 1]");
  quarot::detail::require(!calibration.empty(), "smooth_ffn_channels: no calibration sequences");
  for (const auto& b : m.blocks)
    quarot::detail::require(!b.down.online, "smooth_ffn_channels: down_proj already rotates its input; smooth first");
  const std::size_t f = m.cfg.ffn;
  std::vector<std::vector<float>> amax(m.cfg.layers, std::vector<float>(f, 0.0f));
  for (std::size_t l = 0; l < m.cfg.layers; ++l)
    m.blocks[l].down.capture = [&, l](matrix_view<const float> x) {
      for (std::size_t r = 0; r < x.rows; ++r)
        for (std::size_t c = 0; c < f; ++c) amax[l][c] = std::max(amax[l][c], std::fabs(x(r, c)));
    };
  for (const auto& seq : calibration) (void)m.forward(seq, pool);
  for (std::size_t l = 0; l < m.cfg.layers; ++l) {
    auto& b = m.blocks[l];
    b.down.capture = nullptr;
    for (std::size_t c = 0; c < f; ++c) {
      float wmax = 0.0f;
      for (std::size_t r = 0; r < b.down.out; ++r) wmax = std::max(wmax, std::fabs(b.down.w[r * f + c]));
      if (!(amax[l][c] > 0.0f) || !(wmax > 0.0f)) continue;  // a dead channel: leave it
      const float sc = std::pow(amax[l][c], alpha) / std::pow(wmax, 1.0f - alpha);
      if (!(sc > 0.0f) || !std::isfinite(sc)) continue;
      for (std::size_t k = 0; k < b.up.in; ++k) b.up.w[c * b.up.in + k] /= sc;
      if (!b.up.b.empty()) b.up.b[c] /= sc;
      for (std::size_t r = 0; r < b.down.out; ++r) b.down.w[r * f + c] *= sc;
    }
  }
}

/// Head-wise Hadamard on the values (fused into v_proj and o_proj) plus the online
/// Hadamard over o_proj's input.
inline void rotate_attention_values(llama_model& m, thread_pool* pool = nullptr) {
  const std::size_t hd = m.cfg.head_dim, qd = m.cfg.heads * hd;
  quarot::detail::require(hadamard_size_supported(hd), "rotate_attention_values: no Hadamard matrix of order head_dim ", hd);
  quarot::detail::require(hadamard_size_supported(qd), "rotate_attention_values: no Hadamard matrix of order heads x head_dim ",
                  qd);
  const block_diagonal<hadamard_transform> per_kv_head(m.cfg.kv_heads * hd, hadamard_transform(hd));
  const block_diagonal<hadamard_transform> per_head(qd, hadamard_transform(hd));
  auto online = std::make_shared<const hadamard_transform>(qd);
  for (auto& b : m.blocks) {
    quarot::detail::require(!b.o.online, "rotate_attention_values: o_proj already has an online rotation");
    // v -> (I ⊗ H)·v per KV head, so each head's attention output comes out as H·o_h and
    // o_proj's input is (I_heads ⊗ H)·o: undo it with W_o·(I ⊗ H)ᵀ.
    fuse_output_rotation(b.v.weights(), per_kv_head, std::span<float>(b.v.b), pool);
    fuse_input_rotation(b.o.weights(), per_head, pool);
    fuse_input_rotation(b.o.weights(), *online, pool);
    detail::set_online_hadamard(b.o, online);
  }
}

/// Queries and keys rotated per head after RoPE by the Hadamard of order head_dim.
inline void enable_qk_rotation(llama_model& m) {
  quarot::detail::require(hadamard_size_supported(m.cfg.head_dim), "enable_qk_rotation: no Hadamard matrix of order head_dim ",
                  m.cfg.head_dim);
  auto h = std::make_shared<const hadamard_transform>(m.cfg.head_dim);
  m.qk_rotate = [h](matrix_view<float> x) { h->apply(x); };
  m.attn.qk_rotation = true;
}

struct quarot_options {
  std::uint64_t seed = 0;          ///< of the randomized Hadamard Q
  bool online_ffn = true;          ///< step 3
  bool rotate_values = true;       ///< step 4
  bool qk_rotation = true;         ///< step 5
};

/// All five steps with Q = the randomized Hadamard of order hidden (H·diag(s)/√n).
inline void apply_quarot(llama_model& m, const quarot_options& opt = {}, thread_pool* pool = nullptr) {
  fold_norms(m);
  rotate_residual(m, randomized_hadamard(m.cfg.hidden, opt.seed), pool);
  if (opt.online_ffn) add_online_ffn_rotation(m, pool);
  if (opt.rotate_values) rotate_attention_values(m, pool);
  if (opt.qk_rotation) enable_qk_rotation(m);
}

/// The same with any orthogonal Q of order hidden in place of the randomized Hadamard.
template <class Q>
void apply_quarot(llama_model& m, const Q& q, const quarot_options& opt = {}, thread_pool* pool = nullptr) {
  fold_norms(m);
  rotate_residual(m, q, pool);
  if (opt.online_ffn) add_online_ffn_rotation(m, pool);
  if (opt.rotate_values) rotate_attention_values(m, pool);
  if (opt.qk_rotation) enable_qk_rotation(m);
}

}  // namespace quarot::model
