// quarot — quantizing a (rotated) Llama-family model: weights by RTN or GPTQ (calibrated
// sequentially, block by block, on the outputs of the already-quantized blocks), per-token
// activations and the KV cache; and running the quantized linears on the integer GEMM
// kernels (quarot::linear) instead of the fake-quantized simulation.
//
// QuaRot's settings (Ashkboos et al. 2024, §5): symmetric per-channel weights with an MSE
// clip search, activations clipped at 0.9, KV cache asymmetric per head clipped at 0.95,
// the output head kept in full precision.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "../core/error.hpp"
#include "../gemm/linear.hpp"
#include "../gemm/packing.hpp"
#include "../quantize/gptq.hpp"
#include "../quantize/rtn.hpp"
#include "../transform/kronecker.hpp"
#include "llama.hpp"

namespace quarot::model {

enum class weight_method { rtn, gptq };

inline const char* to_string(weight_method w) noexcept { return w == weight_method::rtn ? "RTN" : "GPTQ"; }

struct weight_quant_options {
  int bits = 4;
  bool symmetric = true;
  std::size_t group_size = 0;  ///< 0 = per output channel
  bool clip_search = true;     ///< MSE clip search (GPTQ's find_params(mse=True), QuaRot's w_clip)
  weight_method method = weight_method::rtn;
  double damp_percent = 0.01;  ///< GPTQ
  bool act_order = true;       ///< GPTQ; with groups, static groups keep the weights packable

  [[nodiscard]] quant_params params() const {
    quant_params p{.bits = bits, .symmetric = symmetric,
                   .gran = group_size ? granularity::per_group : granularity::per_channel, .group_size = group_size};
    p.search.enabled = clip_search;
    return p;
  }
};

namespace detail {
inline void set_quantized(linear_layer& l, quantized_matrix qm, std::vector<float> w_hat) {
  l.w = std::move(w_hat);
  l.qw = std::make_shared<const quantized_matrix>(std::move(qm));
}
}  // namespace detail

namespace detail {
inline void quantize_linears_rtn(const std::vector<linear_layer*>& layers, const weight_quant_options& opt,
                                 thread_pool* pool) {
  const auto p = opt.params();
  const rtn_quantizer rtn(p);
  for (auto* l : layers) {
    p.validate(l->in);
    auto qm = rtn.quantize(l->weights(), pool);
    std::vector<float> w_hat(l->w.size());
    rtn.dequantize(qm, {w_hat.data(), l->out, l->in, l->in});
    set_quantized(*l, std::move(qm), std::move(w_hat));
  }
}
inline gptq_options gptq_options_of(const weight_quant_options& opt) {
  gptq_options go;
  go.quant = opt.params();
  go.damp_percent = opt.damp_percent;
  go.act_order = opt.act_order;
  go.static_groups = opt.group_size > 0;
  return go;
}
inline void check_quantization_settings(int act_bits, float act_clip, int kv_bits, float kv_clip) {
  quarot::detail::require(act_bits == 16 || (act_bits >= 2 && act_bits <= 8), "activation bits ", act_bits,
                          " must be 2..8 or 16 (off)");
  quarot::detail::require(kv_bits == 16 || (kv_bits >= 2 && kv_bits <= 8), "KV-cache bits ", kv_bits,
                          " must be 2..8 or 16 (off)");
  quarot::detail::require(act_clip > 0 && act_clip <= 1, "activation clip ratio ", act_clip, " outside (0, 1]");
  quarot::detail::require(kv_clip > 0 && kv_clip <= 1, "KV-cache clip ratio ", kv_clip, " outside (0, 1]");
}
}  // namespace detail

namespace detail {
/// The linears of a layer that read one input; the first carries the capture hook.
using shared_input = std::vector<linear_layer*>;

/// One layer of sequential GPTQ: the calibration hidden states `xs` run through the layer
/// (`forward(x)`, in place, on a copy) while one Hessian per distinct input is collected
/// (after any online rotation), every linear is quantized with its input's Hessian, in
/// the order given, and `xs` then advance through the quantized layer.
template <class Forward>
void gptq_layer(const std::vector<shared_input>& inputs, std::vector<std::vector<float>>& xs, Forward&& forward,
                const gptq_options& go, thread_pool* pool) {
  std::vector<hessian_accumulator> hs;
  hs.reserve(inputs.size());
  for (const auto& in : inputs) hs.emplace_back(in.front()->in);
  struct capture_scope {  // the hooks reference hs: never leave them behind, even on an error
    const std::vector<shared_input>& inputs;
    ~capture_scope() {
      for (const auto& in : inputs) in.front()->capture = nullptr;
    }
  } scope{inputs};
  for (std::size_t i = 0; i < inputs.size(); ++i)
    inputs[i].front()->capture = [&h = hs[i]](matrix_view<const float> x) { h.add(x); };
  for (const auto& x : xs) {
    std::vector<float> tmp(x);
    forward(tmp);
  }
  for (const auto& in : inputs) in.front()->capture = nullptr;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const Eigen::MatrixXd h = hs[i].hessian();
    for (auto* lin : inputs[i]) {
      auto r = gptq_quantize(lin->weights(), h, go, pool);
      set_quantized(*lin, std::move(r.q), std::move(r.w_hat));
    }
  }
  for (auto& x : xs) forward(x);
}
}  // namespace detail

/// Round-to-nearest quantization of every linear layer except the head.
inline void quantize_weights_rtn(llama_model& m, const weight_quant_options& opt, thread_pool* pool = nullptr) {
  std::vector<linear_layer*> layers;
  for (auto& b : m.blocks)
    for (auto* l : b.linears()) layers.push_back(l);
  detail::quantize_linears_rtn(layers, opt, pool);
}

// `template <class Lazy = void>` on the GPTQ and integer-kernel entry points below (and
// quantize_bert_weights): called exactly as plain functions, but their bodies, which
// instantiate GPTQ's Eigen factorizations and the integer GEMM of every policy on four
// ISAs, are compiled only in translation units that call them. As plain inline functions
// they cost every includer of quarot/quarot.hpp ~4 s of GCC, called or not.

/// GPTQ (Frantar et al. 2023) of every linear layer except the head, block by block: the
/// calibration sequences run through the blocks already quantized, each linear's Hessian
/// 2·XᵀX is collected from its input (after any online rotation), then the block's seven
/// linears are quantized and the sequences advance through the quantized block.
template <class Lazy = void>
void quantize_weights_gptq(llama_model& m, const std::vector<std::vector<std::int32_t>>& calibration,
                           const weight_quant_options& opt, thread_pool* pool = nullptr,
                           const std::function<void(std::size_t, std::size_t)>& progress = {}) {
  quarot::detail::require(!calibration.empty(), "quantize_weights_gptq: no calibration sequences");
  const gptq_options go = detail::gptq_options_of(opt);
  std::vector<std::vector<float>> xs;
  for (const auto& seq : calibration) {
    quarot::detail::require(!seq.empty(), "quantize_weights_gptq: empty calibration sequence");
    xs.push_back(m.embed_tokens(seq));
  }
  const std::size_t h = m.cfg.hidden;
  for (std::size_t l = 0; l < m.cfg.layers; ++l) {
    auto& b = m.blocks[l];
    // One Hessian per distinct input: q/k/v read the same, gate/up read the same.
    detail::gptq_layer(
        {{&b.q, &b.k, &b.v}, {&b.o}, {&b.gate, &b.up}, {&b.down}}, xs,
        [&](std::vector<float>& x) {
          auto cache = m.make_cache();
          m.forward_block(l, {x.data(), x.size() / h, h, h}, cache, pool);
        },
        go, pool);
    if (progress) progress(l + 1, m.cfg.layers);
  }
}

/// Per-token activation quantization of every linear's input except the head's, and the
/// KV cache (16 = off).
inline void set_activation_quantization(llama_model& m, int act_bits, float act_clip, int kv_bits, float kv_clip = 0.95f) {
  detail::check_quantization_settings(act_bits, act_clip, kv_bits, kv_clip);
  for (auto& b : m.blocks)
    for (auto* l : b.linears()) {
      l->act_bits = act_bits;
      l->act_clip = act_clip;
    }
  m.attn.kv_bits = kv_bits;
  m.attn.kv_clip = kv_clip;
}

namespace detail {
template <class Policy>
void attach_integer_kernel(linear_layer& l) {
  // 16-bit activations stand for unquantized ones: full range (no clipping), int16 levels.
  const float clip = l.act_bits == 16 ? 1.0f : l.act_clip;
  auto lin = std::make_shared<quarot::linear<Policy>>(gemm::pack_weights(*l.qw, Policy::weight_bits), l.b, l.act_bits,
                                                      clip);
  if (l.online) lin->with_online_rotation(hadamard_transform(l.online_size));
  l.kernel = [lin](matrix_view<const float> x, matrix_view<float> y, thread_pool* pool) { lin->forward(x, y, pool); };
}
template <class Backend>
void attach_integer_kernel(linear_layer& l, int wbits) {
  if (l.act_bits == 16) {
    if (wbits <= 4) attach_integer_kernel<gemm::w4a16i_policy<Backend>>(l);
    else attach_integer_kernel<gemm::w8a16i_policy<Backend>>(l);
  } else if (wbits <= 4 && l.act_bits <= 4) attach_integer_kernel<gemm::w4a4_policy<Backend>>(l);
  else if (wbits <= 4) attach_integer_kernel<gemm::w4a8_policy<Backend>>(l);
  else attach_integer_kernel<gemm::w8a8_policy<Backend>>(l);
}
}  // namespace detail

/// Runs every quantized linear on the quantized kernels instead of the fp32 simulation:
/// the integer GEMM with pre-packed weights and the fused online Hadamard + per-token
/// quantization. Unquantized activations (16) become per-token int16 levels (W4A16i /
/// W8A16i: rounding error at most 2^-16 of a token's largest magnitude, the decode path).
/// Online rotations must be Hadamard transforms (as apply_quarot makes them). The outputs
/// equal the simulation's up to fp32 rounding (and, at 16 bits, that int16 rounding).
template <class Lazy = void>
void use_integer_kernels(const std::vector<linear_layer*>& layers) {
  // The ISA the default-dispatched code uses (QUAROT_CPU_ISA can lower it for testing).
  const cpu::isa isa = cpu::default_isa();
  for (auto* l : layers) {
    quarot::detail::require(l->qw != nullptr, "use_integer_kernels: a linear layer has no quantized weights");
    quarot::detail::require(l->act_bits <= 8 || l->act_bits == 16, "use_integer_kernels: ", l->act_bits,
                            "-bit activations");
    const int wbits = l->qw->params.bits;
    quarot::detail::require(wbits <= 8, "use_integer_kernels: ", wbits, "-bit weights");
    // The best kernel this CPU has: AVX-512 VNNI, else AVX-VNNI, else AVX2, else scalar.
    if (isa >= cpu::isa::avx512vnni) detail::attach_integer_kernel<cpu::avx512vnni_backend>(*l, wbits);
    else if (isa >= cpu::isa::avx2 && cpu::has_avx_vnni()) detail::attach_integer_kernel<cpu::avx_vnni_backend>(*l, wbits);
    else if (isa >= cpu::isa::avx2) detail::attach_integer_kernel<cpu::avx2_backend>(*l, wbits);
    else detail::attach_integer_kernel<cpu::scalar>(*l, wbits);
  }
}
/// Every linear of the decoder except the head.
template <class Lazy = void>
void use_integer_kernels(llama_model& m) {
  std::vector<linear_layer*> layers;
  for (auto& b : m.blocks)
    for (auto* l : b.linears()) layers.push_back(l);
  use_integer_kernels<Lazy>(layers);
}

}  // namespace quarot::model
