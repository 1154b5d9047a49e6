// CUDA quantization and GEMM against the CPU scalar reference:
// - quantize_activations: levels and scales bit for bit (2..8 bits, K tails);
// - rotate_quantize: bit for bit against the CPU's rotate-then-quantize, n = 2^k and
//   Kronecker sizes (their table tiles on 99 and 227 KiB of shared memory);
// - non-finite rows: scale NaN, require_finite() -> errc::numerical;
// - integer GEMM W8A8 / W4A8 / W4A4, symmetric and asymmetric, per channel and g128, M, N,
//   K tails, bias, fp32 and bf16 output, every MMA path (mma.sync int8 / int4, sm_90a
//   wgmma where the device runs it; the emulation runs all): bit for bit against
//   gemm::integer_gemm<... cpu::scalar>;
// - weight-only W4A16 / W8A16 (fp32, fp16 activations) against a double reference, and
//   gemm::weight_only_gemm's policy classes on the device (bf16 rounding of the inputs);
// - act-order weights (GPTQ's g_idx: groups scattered along K) in every GEMM and the
//   linear layer, against the CPU's (which gathers the activations in the packed order);
//   k_order entries that would index outside a row are refused at upload.
// Without a usable device it prints the reason and exits 77 (ctest: skipped).
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <quarot/backend/cuda/gemm.cuh>
#include <quarot/backend/cuda/linear.cuh>
#include <quarot/gemm/integer_gemm.hpp>
#include <quarot/gemm/linear.hpp>
#include <quarot/gemm/weight_only_gemm.hpp>
#include <quarot/quantize/activation.hpp>
#include <quarot/quantize/rtn.hpp>
#include <quarot/transform/kronecker.hpp>

#include "cuda_test_util.hpp"

namespace {

using namespace quarot;  // test file

std::string shape(std::size_t m, std::size_t n, std::size_t k) {
  return std::to_string(m) + "x" + std::to_string(n) + "x" + std::to_string(k);
}

/// Host quantized activations vs a device download: same levels and scale bits.
bool same(const quantized_activations& a, const quantized_activations& b, std::string& why) {
  if (a.rows != b.rows || a.cols != b.cols || a.bits != b.bits) {
    why = "shapes differ";
    return false;
  }
  for (std::size_t r = 0; r < a.rows; ++r) {
    if (std::memcmp(&a.scales[r], &b.scales[r], 4) != 0) {
      why = "scale of row " + std::to_string(r) + ": " + std::to_string(a.scales[r]) + " vs " + std::to_string(b.scales[r]);
      return false;
    }
    for (std::size_t c = 0; c < a.cols; ++c)
      if (a.value(r, c) != b.value(r, c)) {
        why = "level (" + std::to_string(r) + ", " + std::to_string(c) + "): " + std::to_string(a.value(r, c)) +
              " vs " + std::to_string(b.value(r, c));
        return false;
      }
  }
  return true;
}

void check_quantize(cuda_test::counter& t, std::size_t rows, std::size_t cols, int bits) {
  const auto x = cuda_test::random_values(rows * cols, rows * 31 + cols);
  quantized_activations expect;
  quantize_activations(cpu::scalar{}, make_matrix_view(x, rows, cols), bits, 0.9f, expect);
  cuda::device_buffer<float> dx(x.size());
  dx.upload(x.data(), x.size());
  cuda::device_activations out;
  cuda::quantize_activations(cuda::device{}, matrix_view<const float>(dx.data(), rows, cols, cols), bits, 0.9f, out);
  std::string why;
  t.check(same(out.download(), expect, why) && !out.first_non_finite_row(),
          "quantize_activations " + std::to_string(rows) + "x" + std::to_string(cols) + " int" + std::to_string(bits) +
              " = CPU " + why);
}

void check_rotate_quantize(cuda_test::counter& t, std::size_t rows, std::size_t n, int bits) {
  const auto x = cuda_test::random_values(rows * n, n + bits);
  cuda::device_buffer<float> dx(x.size());
  dx.upload(x.data(), x.size());
  const cuda::randomized_hadamard q(n, 11);
  cuda::device_activations fused;
  cuda::rotate_quantize(cuda::device{}, q, matrix_view<const float>(dx.data(), rows, n, n), bits, 1.0f, fused);
  quantized_activations expect;
  std::vector<float> r = x;
  randomized_hadamard(n, 11, cpu::isa::scalar).apply(cpu::scalar{}, make_matrix_view(r, rows, n));
  quantize_activations(cpu::scalar{}, make_matrix_view(r, rows, n), bits, 1.0f, expect);
  const std::string what = "rotate_quantize n = " + std::to_string(n) + " (" + q.plan().describe() + ") rows " +
                           std::to_string(rows) + " int" + std::to_string(bits) + " = CPU rotate + quantize ";
  std::string why;
  t.check(same(fused.download(), expect, why), what + why);
}

void check_non_finite(cuda_test::counter& t) {
  const std::size_t rows = 6, n = 256;
  auto x = cuda_test::random_values(rows * n, 3);
  x[3 * n + 17] = std::nanf("");
  x[5 * n + 2] = INFINITY;
  cuda::device_buffer<float> dx(x.size());
  dx.upload(x.data(), x.size());
  cuda::device_activations out;
  cuda::rotate_quantize(cuda::device{}, cuda::randomized_hadamard(n, 1), matrix_view<const float>(dx.data(), rows, n, n),
                        4, 1.0f, out);
  const auto host = out.download();
  t.check(out.first_non_finite_row() == std::size_t{3} && std::isnan(host.scales[3]) && std::isnan(host.scales[5]) &&
              !std::isnan(host.scales[4]),
          "non-finite rows 3 and 5: first recorded row 3, their scales NaN");
  t.expect_error(errc::numerical, "require_finite after a NaN row", [&] { out.require_finite(); });
}

/// Act-order weights without GPTQ (whose Eigen the CUDA compiler would have to take):
/// w's columns (n x k) permuted by a random π, quantized per group of p by RTN, then put
/// back in the original column order with g_idx[π(j)] = j / group size: each group's
/// columns scattered along K, as GPTQ's act-order leaves them.
quantized_matrix act_order_weights(const std::vector<float>& w, std::size_t n, std::size_t k, const quant_params& p,
                                   std::uint64_t seed) {
  std::vector<std::uint32_t> perm(k);
  std::iota(perm.begin(), perm.end(), 0u);
  xoshiro256 rng(seed);
  for (std::size_t i = k - 1; i > 0; --i) std::swap(perm[i], perm[rng() % (i + 1)]);
  std::vector<float> wp(n * k);
  for (std::size_t r = 0; r < n; ++r)
    for (std::size_t j = 0; j < k; ++j) wp[r * k + j] = w[r * k + perm[j]];
  const auto qp = rtn_quantizer(p, cpu::isa::scalar).quantize(make_matrix_view(wp, n, k));
  quantized_matrix q = qp;  // scales and zeros per (row, group), as quantized
  q.g_idx.resize(k);
  for (std::size_t j = 0; j < k; ++j) {
    q.g_idx[perm[j]] = static_cast<std::uint32_t>(j / p.group_size);
    for (std::size_t r = 0; r < n; ++r) q.q[r * k + perm[j]] = qp.q[r * k + j];
  }
  return q;
}

/// RTN weights of w (n x k) at `bits`, per channel (group 0) or per group, act-order
/// (act_order_weights) when asked.
quantized_matrix test_weights(const std::vector<float>& w, std::size_t n, std::size_t k, int bits, bool sym,
                              std::size_t group, bool act_order) {
  const quant_params p{.bits = bits, .symmetric = sym, .gran = group ? granularity::per_group : granularity::per_channel,
                       .group_size = group};
  if (act_order) return act_order_weights(w, n, k, p, n * 31 + k);
  return rtn_quantizer(p, cpu::isa::scalar).quantize(make_matrix_view(w, n, k));
}

template <int WBits, int ABits>
void check_gemm(cuda_test::counter& t, std::size_t m, std::size_t n, std::size_t k, bool sym, std::size_t group,
                bool bias_on, cuda::mma_path path, int split_k = 0, bool act_order = false) {
  const bool sm90a = path == cuda::mma_path::wgmma || path == cuda::mma_path::wgmma_cluster;
  const cuda_test::emulated_hopper hopper(sm90a);
  if (sm90a && !cuda::detail::has_wgmma()) return;  // reported once in main
  const auto x = cuda_test::random_values(m * k, m * 7 + k);
  auto w = cuda_test::random_values(n * k, n * 13 + k, 3.0f);
  for (auto& v : w) v *= 0.05f;
  std::vector<float> bias = bias_on ? cuda_test::random_values(n, 3) : std::vector<float>{};
  const auto packed = gemm::pack_weights(test_weights(w, n, k, WBits, sym, group, act_order), WBits);
  quantized_activations xa;
  quantize_activations(cpu::scalar{}, make_matrix_view(x, m, k), ABits, 1.0f, xa);
  std::vector<float> expect(m * n);
  std::vector<bfloat16> expect16(m * n);
  const gemm::integer_gemm<gemm::integer_policy<cpu::scalar, WBits, ABits>> cpu_op(packed);
  cpu_op(xa, make_matrix_view(expect, m, n), bias);
  cpu_op(xa, make_matrix_view(expect16, m, n), bias);

  cuda::device_buffer<float> dx(x.size()), dbias(bias.size()), dy(m * n);
  cuda::device_buffer<bfloat16> dy16(m * n);
  dx.upload(x.data(), x.size());
  if (bias_on) dbias.upload(bias.data(), bias.size());
  cuda::device_activations xd;
  cuda::quantize_activations(cuda::device{}, matrix_view<const float>(dx.data(), m, k, k), ABits, 1.0f, xd);
  gemm::integer_gemm<gemm::integer_policy<cuda::device, WBits, ABits>> op(packed, path);
  op.set_split_k(split_k);
  op(xd, bias_on ? dbias.data() : nullptr, matrix_view<float>(dy.data(), m, n, n));
  op(xd, bias_on ? dbias.data() : nullptr, matrix_view<bfloat16>(dy16.data(), m, n, n));
  std::vector<float> got(m * n);
  std::vector<bfloat16> got16(m * n);
  dy.download(got.data(), got.size());
  dy16.download(got16.data(), got16.size());
  std::size_t bad = 0, bad16 = 0, first = m * n;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (std::memcmp(&got[i], &expect[i], 4) != 0 && first == m * n) first = i;
    bad += std::memcmp(&got[i], &expect[i], 4) != 0;
    bad16 += got16[i].bits != expect16[i].bits;
  }
  std::string what = "W" + std::to_string(WBits) + "A" + std::to_string(ABits) + " " + shape(m, n, k) +
                     (sym ? " sym" : " asym") + " g" + std::to_string(group) + (act_order ? " act-order" : "") +
                     (bias_on ? " bias" : "") + " " + cuda::name(op.path_for(m)) + (split_k ? " split-K " + std::to_string(split_k) : "") + ": " +
                     std::to_string(bad) + " fp32 and " + std::to_string(bad16) + " bf16 outputs differ from the CPU";
  if (bad) what += " (first at " + std::to_string(first) + ": " + std::to_string(got[first]) + " vs " +
                   std::to_string(expect[first]) + ")";
  t.check(bad == 0 && bad16 == 0, what);
}

template <class In>
void check_weight_only(cuda_test::counter& t, int bits, std::size_t m, std::size_t n, std::size_t k, bool sym,
                       std::size_t group, std::size_t ldx = 0, bool act_order = false) {
  if (ldx == 0) ldx = k;
  auto x = cuda_test::random_values(m * k, k + m);
  std::vector<In> xin(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    xin[i] = from_float<In>(x[i]);
    x[i] = to_float(xin[i]);  // the reference sees the stored values
  }
  auto w = cuda_test::random_values(n * k, n + k);
  const auto packed = gemm::pack_weights(test_weights(w, n, k, bits, sym, group, act_order), bits);
  const auto bias = cuda_test::random_values(n, 9);
  std::vector<double> expect(m * n);
  double mag = 0;
  for (std::size_t r = 0; r < m; ++r)
    for (std::size_t c = 0; c < n; ++c) {
      double s = bias[c];
      for (std::size_t i = 0; i < k; ++i) {  // i: packed K position, input column k_order[i] under act-order
        const std::size_t gi = packed.group_index(packed.groups == 1 ? 0 : i / packed.group_size, c);
        const std::size_t col = act_order ? packed.k_order[i] : i;
        s += double(x[r * k + col]) * packed.scales[gi] * (packed.raw(c, i) - packed.zeros[gi]);
      }
      expect[r * n + c] = s;
      mag = std::max(mag, std::fabs(s));
    }
  const auto dw = cuda::device_weights::upload(packed);
  std::vector<In> xpad(m * ldx, from_float<In>(1e30f));  // the gaps between rows must not be read
  for (std::size_t r = 0; r < m; ++r) std::copy(xin.begin() + r * k, xin.begin() + (r + 1) * k, xpad.begin() + r * ldx);
  cuda::device_buffer<In> dx(xpad.size());
  cuda::device_buffer<float> dbias(n), dy(m * n);
  dx.upload(xpad.data(), xpad.size());
  dbias.upload(bias.data(), n);
  cuda::weight_only_gemm(cuda::device{}, dw, matrix_view<const In>(dx.data(), m, k, ldx), dbias.data(),
                         matrix_view<float>(dy.data(), m, n, n));
  std::vector<float> got(m * n);
  dy.download(got.data(), got.size());
  double err = 0;
  for (std::size_t i = 0; i < got.size(); ++i) err = std::max(err, std::fabs(got[i] - expect[i]));
  t.check(err <= 1e-5 * mag * std::sqrt(double(k)),
          "weight-only W" + std::to_string(bits) + "A16 " + cuda_test::type_name<In>() + " " + shape(m, n, k) +
              (sym ? " sym" : " asym") + " g" + std::to_string(group) + (act_order ? " act-order" : "") + " stride " +
              std::to_string(ldx) +
              ": max error " + std::to_string(err) +
              " of max |y| " + std::to_string(mag));
}

/// gemm::weight_only_gemm of a weight_only_policy on cuda::device: a bf16 policy rounds
/// fp32 / fp16 rows to bf16 as they are loaded, so its outputs equal cuda::weight_only_gemm's
/// on the rows rounded on the host, bit for bit (and differ from the unrounded rows'); a
/// float policy equals cuda::weight_only_gemm on the same rows; both agree with the CPU
/// class of the same policy (scalar) to fp32 rounding.
template <int Bits, class Activation, class In>
void check_weight_only_policy(cuda_test::counter& t, std::size_t m, std::size_t n, std::size_t k, std::size_t group,
                              bool act_order) {
  const auto x = cuda_test::random_values(m * k, 5 * k + m);
  std::vector<In> xin(x.size());
  std::vector<float> xf(x.size());  // the stored inputs
  std::vector<bfloat16> xb(x.size());  // and rounded to bf16
  for (std::size_t i = 0; i < x.size(); ++i) {
    xin[i] = from_float<In>(x[i]);
    xf[i] = to_float(xin[i]);
    xb[i] = from_float<bfloat16>(xf[i]);
  }
  const auto w = cuda_test::random_values(n * k, n + 3 * k);
  const auto packed = gemm::pack_weights(test_weights(w, n, k, Bits, false, group, act_order), Bits);
  const auto bias = cuda_test::random_values(n, 11);
  std::vector<float> expect(m * n);
  gemm::weight_only_gemm<gemm::weight_only_policy<cpu::scalar, Bits, Activation>>{packed}(
      make_matrix_view(xf, m, k), make_matrix_view(expect, m, n), bias);

  const gemm::weight_only_gemm<gemm::weight_only_policy<cuda::device, Bits, Activation>> op(packed);
  cuda::device_buffer<In> dx(x.size());
  cuda::device_buffer<bfloat16> dxb(x.size());
  cuda::device_buffer<float> dbias(n), dy(m * n), dref(m * n), draw(m * n);
  dx.upload(xin.data(), xin.size());
  dxb.upload(xb.data(), xb.size());
  dbias.upload(bias.data(), n);
  op(dx.view(m, k), dy.view(m, n), dbias.data());
  constexpr bool rounds = std::is_same_v<Activation, bfloat16>;
  if constexpr (rounds)
    cuda::weight_only_gemm(cuda::device{}, op.weights(), dxb.view(m, k), dbias.data(), dref.view(m, n));
  else
    cuda::weight_only_gemm(cuda::device{}, op.weights(), dx.view(m, k), dbias.data(), dref.view(m, n));
  cuda::weight_only_gemm(cuda::device{}, op.weights(), dx.view(m, k), dbias.data(), draw.view(m, n));
  std::vector<float> got(m * n), ref(m * n), raw(m * n);
  dy.download(got.data(), got.size());
  dref.download(ref.data(), ref.size());
  draw.download(raw.data(), raw.size());
  std::size_t same_as_ref = 0, same_as_raw = 0;
  double err = 0, mag = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    same_as_ref += std::memcmp(&got[i], &ref[i], 4) == 0;
    same_as_raw += std::memcmp(&got[i], &raw[i], 4) == 0;
    err = std::max(err, std::fabs(double(got[i]) - expect[i]));
    mag = std::max(mag, std::fabs(double(expect[i])));
  }
  // fp32 / fp16 inputs rounded to bf16 change some outputs; bf16 inputs are already bf16
  const bool input_rounded = rounds && !std::is_same_v<In, bfloat16>;
  const bool ok = same_as_ref == got.size() && (input_rounded ? same_as_raw < got.size() : same_as_raw == got.size()) &&
                  err <= 1e-5 * mag * std::sqrt(double(k));
  t.check(ok, std::string("weight_only_gemm<") + (Bits == 4 ? "W4" : "W8") + (rounds ? "A16" : "A32") +
                  " policy, cuda::device> on " + cuda_test::type_name<In>() + " " + shape(m, n, k) + " g" +
                  std::to_string(group) + (act_order ? " act-order" : "") + ": " + std::to_string(same_as_ref) + " of " +
                  std::to_string(got.size()) + " outputs equal cuda::weight_only_gemm on the " +
                  (rounds ? "bf16-rounded" : "same") + " rows, " + std::to_string(same_as_raw) +
                  " on the rows as given; max error " + std::to_string(err) + " against the CPU class, of max |y| " +
                  std::to_string(mag));
}

/// quarot::linear on the device vs the CPU layer (scalar kernels): same packed weights,
/// bias and online rotation, every output bit for bit; with `decode_loop` the device layer
/// runs M rows, then 1, then (M + 1) / 2 (its activation buffer shrinks and regrows).
template <int WBits, int ABits>
void check_linear(cuda_test::counter& t, std::size_t m, std::size_t n, std::size_t k, int bits, bool rotate,
                  bool decode_loop = false, bool act_order = false) {
  auto w = cuda_test::random_values(n * k, 19 + n, 3.0f);
  for (auto& v : w) v *= 0.05f;
  const auto bias = cuda_test::random_values(n, 23);
  const bool grouped = k % 128 == 0;  // g128, else per channel
  const auto packed =
      gemm::pack_weights(test_weights(w, n, k, WBits, true, grouped ? 128 : 0, act_order && grouped), WBits);
  linear<gemm::integer_policy<cpu::scalar, WBits, ABits>> cpu_layer(packed, bias, bits, 0.9f);
  linear<gemm::integer_policy<cuda::device, WBits, ABits>> gpu_layer(packed, bias, bits, 0.9f);
  if (rotate) {
    const randomized_hadamard q(k, 29, cpu::isa::scalar);
    cpu_layer.with_online_rotation(q);
    gpu_layer.with_online_rotation(q);
  }
  for (const std::size_t rows : {m, std::size_t{1}, (m + 1) / 2}) {
    if (rows != m && !decode_loop) break;
    const auto x = cuda_test::random_values(rows * k, 17 + k + rows);
    std::vector<float> expect(rows * n), got(rows * n);
    cpu_layer.forward(make_matrix_view(x, rows, k), make_matrix_view(expect, rows, n));
    cuda::device_buffer<float> dx(x.size()), dy(rows * n);
    dx.upload(x.data(), x.size());
    gpu_layer.forward(matrix_view<const float>(dx.data(), rows, k, k), matrix_view<float>(dy.data(), rows, n, n));
    dy.download(got.data(), got.size());
    std::size_t bad = 0;
    for (std::size_t i = 0; i < got.size(); ++i) bad += std::memcmp(&got[i], &expect[i], 4) != 0;
    t.check(bad == 0, "linear W" + std::to_string(WBits) + "A" + std::to_string(ABits) + " (" +
                          std::to_string(bits) + "-bit levels) " + shape(rows, n, k) + (rotate ? " rotated" : "") +
                          (act_order && grouped ? " act-order" : "") +
                          " bias: " + std::to_string(bad) + " outputs differ from the CPU layer");
  }
}

/// detail::plan_split_k on many shapes, for both kernels' stages (mma.sync: 2 K steps, 2
/// blocks per SM; wgmma: 2 or 4 steps, 1 block per SM): the splits cover K's steps in
/// order, start at stages and, for grouped weights, at group starts; units are the groups
/// or the splits; automatic plans keep 4 stages per split and the partials' traffic within
/// the operand bytes. (Host code: checked without a device too.)
void check_split_plans(cuda_test::counter& t) {
  std::size_t bad = 0, plans = 0;
  std::string first;
  for (int stage : {2, 4})
    for (int steps = 1; steps <= 70; ++steps)
      for (int group_steps : {0, 1, 2, 3, 4, 8}) {
        const int groups = group_steps ? std::max(1, steps / group_steps) : 1;
        const int gs = group_steps && groups > 1 ? group_steps : steps;
        if (groups > 1 && steps - groups * gs > 1) continue;  // K padding is at most one step past the groups
        for (std::size_t tiles : {1, 2, 64, 130, 300, 500})
          for (int requested : {0, 2, 3, 7, 16}) {
            const std::size_t m = 3, n_padded = 128 * tiles, operand_bytes = n_padded * 32 * steps;
            const std::size_t slots = stage == 2 ? 264 : 132;
            const auto p = cuda::detail::plan_split_k(steps, stage, gs, groups, m, n_padded, operand_bytes, tiles,
                                                      slots, requested);
            ++plans;
            bool ok = p.splits >= 1 && (p.splits == 1 || p.split_steps % stage == 0);
            if (p.splits > 1) {
              ok = ok && (p.splits - 1) * p.split_steps < steps && (requested == 0 || p.splits <= requested);
              ok = ok && p.units == (groups > 1 ? groups : p.splits);
              if (groups > 1) ok = ok && p.split_steps % gs == 0 && (p.splits - 1) * p.split_steps / gs < groups;
              if (requested == 0)
                ok = ok && (groups > 1 || p.split_steps >= 4 * stage) &&
                     2 * static_cast<std::size_t>(p.units) * m * n_padded * 4 <= operand_bytes;
            }
            if (!ok && bad++ == 0)
              first = "stage " + std::to_string(stage) + " steps " + std::to_string(steps) + " group_steps " +
                      std::to_string(gs) + " groups " + std::to_string(groups) + " tiles " + std::to_string(tiles) +
                      " requested " + std::to_string(requested) + ": " + std::to_string(p.splits) + " splits of " +
                      std::to_string(p.split_steps) + " steps, " + std::to_string(p.units) + " units";
          }
      }
  t.check(bad == 0, "split-K plans: " + std::to_string(bad) + " of " + std::to_string(plans) + " invalid" +
                        (bad ? " (first: " + first + ")" : ""));
  const auto plan_text = [](const cuda::detail::split_k_plan& p) {
    return std::to_string(p.splits) + " splits of " + std::to_string(p.split_steps) + " steps";
  };
  // N = K = 4096 on 132 SMs.
  const auto decode = cuda::detail::plan_split_k(128, 2, 4, 32, 1, 4096, 4096 * 2048, 64, 264, 0);
  t.check(decode.splits == 4 && decode.split_steps == 32,
          "split-K plan for W4A4 decode (M = 1, g128, mma.sync): " + plan_text(decode) +
              " (expected 4 of 32: 256 blocks, one wave)");
  const auto prefill = cuda::detail::plan_split_k(128, 2, 4, 32, 2048, 4096, 4096 * 2048, 64 * 16, 264, 0);
  t.check(prefill.splits == 1, "no split-K at M = 2048 (1024 tiles; 13 splits would save 2% of a wave)");
  const auto wide = cuda::detail::plan_split_k(128, 2, 128, 1, 1, 19200, 19200 * 4096, 300, 264, 0);
  t.check(wide.splits == 4, "split-K plan for 300 tiles in 264 slots (two waves, the second 36 tiles): " +
                                plan_text(wide) + " (expected 4: 1.25 waves of unsplit work, the fewest 1.14 at 7)");
  // W8A8 wgmma at M = 128, per channel: 16 tiles; the grid reads A 16 times (8 MiB) and
  // W once (16 MiB), and a split's partials are 2 MiB (written and read).
  const auto w8a8 = cuda::detail::plan_split_k(128, 4, 128, 1, 128, 4096, 16 * 128 * 4096 + 4096 * 4096, 16, 132, 0);
  t.check(w8a8.splits == 6 && w8a8.split_steps == 24,
          "split-K plan for W8A8 wgmma at M = 128, per channel: " + plan_text(w8a8) +
              " (expected 6 of 24: 8 would fill the SMs, the partials' bound allows 6)");
}

/// Number of cudaMalloc calls so far (the emulation counts them; -1 on a device).
long malloc_calls() {
#if defined(QUAROT_CUDA_EMULATION)
  return quarot_cuda_emulation::malloc_calls.load();
#else
  return -1;
#endif
}

/// device_buffer keeps its allocation while a new size fits; device_activations reshapes
/// within it (a decode loop's varying batch) without allocating, and every row's padding
/// is zero after each reshape, also when the row layout changes inside the same bytes.
void check_buffer_reuse(cuda_test::counter& t) {
  cuda::device_buffer<float> b(100);
  const float* p = b.data();
  const long calls = malloc_calls();
  b.resize(10);
  b.resize(100);
  t.check(b.data() == p && b.size() == 100 && b.capacity() == 100 && malloc_calls() == calls,
          "device_buffer: resize within the capacity keeps the allocation");
  b.resize(101);
  t.check(b.size() == 101 && b.capacity() == 101 && b.device() == cuda::detail::current_device(),
          "device_buffer: resize past the capacity reallocates on the current device");
  b.clear();
  t.check(b.empty() && b.capacity() == 0 && b.device() == -1, "device_buffer: clear frees the allocation");

  cuda::device_activations a;
  long allocations = 0;  // cudaMalloc calls in quantize_activations (emulation)
  const auto quantize = [&](std::size_t rows, std::size_t cols, int bits, std::uint64_t seed) {
    const auto x = cuda_test::random_values(rows * cols, seed);
    cuda::device_buffer<float> dx(x.size());
    dx.upload(x.data(), x.size());
    const long calls_before = malloc_calls();
    cuda::quantize_activations(cuda::device{}, matrix_view<const float>(dx.data(), rows, cols, cols), bits, 1.0f, a);
    allocations += malloc_calls() - calls_before;
    quantized_activations expect;
    quantize_activations(cpu::scalar{}, make_matrix_view(x, rows, cols), bits, 1.0f, expect);
    std::vector<std::uint8_t> raw(a.rows * a.row_bytes);
    a.data.download(raw.data(), raw.size());
    const std::size_t used = bits <= 4 ? (cols + 1) / 2 : cols;  // bytes the kernel writes per row
    std::size_t dirty = 0;
    for (std::size_t r = 0; r < a.rows; ++r)
      for (std::size_t j = used; j < a.row_bytes; ++j) dirty += raw[r * a.row_bytes + j] != 0;
    std::string why;
    const bool levels = same(a.download(), expect, why);
    t.check(levels && dirty == 0, "activations " + std::to_string(rows) + "x" + std::to_string(cols) + " at " +
                                      std::to_string(bits) + " bits after reshape: " + std::to_string(dirty) +
                                      " padding bytes not zero" + (levels ? "" : ", " + why));
  };
  quantize(6, 100, 4, 1);  // 6 rows of 64 bytes, 6 scales
  const std::uint8_t* data = a.data.data();
  allocations = 0;
  quantize(3, 100, 8, 2);  // 3 rows of 128 bytes in the same 384
  quantize(6, 100, 4, 3);  // int8 levels where the int4 padding goes: cleared
  quantize(2, 100, 4, 4);
  quantize(6, 100, 4, 5);  // rows 2..5 still zero-padded from before
  quantize(1, 128, 4, 6);  // no padding at all
  quantize(5, 100, 4, 7);
  t.check(a.data.data() == data && allocations == 0,
          "device_activations: reshapes within the capacity do not allocate (" + std::to_string(allocations) +
              " cudaMalloc calls)");
  quantize(7, 100, 4, 7);  // grows
}

/// Data allocated on one device is refused, with both devices named, while another is
/// current (on two or more devices; the emulation has two).
void check_wrong_device(cuda_test::counter& t) {
  if (cuda::device_count() < 2) {
    std::printf("wrong-device checks not run: one device\n");
    return;
  }
  const auto w = cuda_test::random_values(64 * 128, 1);
  const auto wq = rtn_quantizer({.bits = 4}, cpu::isa::scalar).quantize(make_matrix_view(w, 64, 128));
  const gemm::integer_gemm<gemm::integer_policy<cuda::device, 4, 8>> op(gemm::pack_weights(wq, 4));
  const cuda::randomized_hadamard q(128, 3);
  cuda::device_activations a;
  cuda::device_buffer<float> x(2 * 128), y(2 * 64);
  x.fill_bytes(0);
  cuda::quantize_activations(cuda::device{}, matrix_view<const float>(x.data(), 2, 128, 128), 8, 1.0f, a);
  const linear<gemm::integer_policy<cuda::device, 4, 8>> layer(gemm::pack_weights(wq, 4));
  QUAROT_CUDA_CHECK(cudaSetDevice(1));
  t.expect_error(errc::invalid_argument, "linear layer built on device 0, called on device 1",
                 [&] { layer.forward(matrix_view<const float>(x.data(), 2, 128, 128), matrix_view<float>(y.data(), 2, 64, 64)); });
  t.expect_error(errc::invalid_argument, "GEMM with weights on device 0 while device 1 is current",
                 [&] { op(a, nullptr, matrix_view<float>(y.data(), 2, 64, 64)); });
  t.expect_error(errc::invalid_argument, "randomized Hadamard from device 0 on device 1",
                 [&] { q.apply(cuda::device{}, matrix_view<float>(x.data(), 2, 128, 128)); });
  cuda::device_buffer<float> x1(2 * 128);
  x1.fill_bytes(0);
  cuda::quantize_activations(cuda::device{}, matrix_view<const float>(x1.data(), 2, 128, 128), 8, 1.0f, a);
  t.check(a.data.device() == 1 && a.scales.device() == 1 && a.status.device() == 1,
          "device_activations reshaped on device 1 move there");
  QUAROT_CUDA_CHECK(cudaSetDevice(0));
  t.expect_error(errc::invalid_argument, "GEMM with activations on device 1 while device 0 is current",
                 [&] { op(a, nullptr, matrix_view<float>(y.data(), 2, 64, 64)); });
}

/// Caller pointers a kernel could not read are refused, naming the argument: host memory
/// (unless the device reads pageable memory), another device's memory, null, overlapping
/// rows, misaligned elements. Interior pointers of a device allocation are accepted.
void check_caller_pointers(cuda_test::counter& t) {
  const auto w = cuda_test::random_values(64 * 128, 1);
  const auto wq = rtn_quantizer({.bits = 4}, cpu::isa::scalar).quantize(make_matrix_view(w, 64, 128));
  const linear<gemm::integer_policy<cuda::device, 4, 8>> layer(gemm::pack_weights(wq, 4));
  const cuda::device_weights dw = cuda::device_weights::upload(gemm::pack_weights(wq, 4));
  std::vector<float> host(3 * 128, 1.0f);
  cuda::device_buffer<float> x(3 * 128), y(3 * 64), bias(64);
  x.fill_bytes(0);
  bias.fill_bytes(0);
  const matrix_view<const float> dx(x.data(), 3, 128, 128), hx(host.data(), 3, 128, 128);
  const matrix_view<float> dy(y.data(), 3, 64, 64);
  const auto is_refusal = [&](const std::string& what, const std::string& needle, auto&& f) {
    try {
      f();
      t.check(false, what + ": no error thrown");
    } catch (const quarot::error& e) {
      t.check(e.code() == errc::invalid_argument && std::string(e.what()).find(needle) != std::string::npos,
              what + " -> " + e.what());
    }
  };
  is_refusal("host rows into walsh_hadamard", "CUDA Walsh-Hadamard: the rows (0x", [&] {
    cuda::walsh_hadamard(cuda::device{}, matrix_view<float>(host.data(), 3, 128, 128));
  });
  is_refusal("host signs into walsh_hadamard", "the signs", [&] {
    cuda::walsh_hadamard(cuda::device{}, matrix_view<float>(x.data(), 3, 128, 128), true, host.data());
  });
  is_refusal("host rows into quantize_activations", "is host memory", [&] {
    cuda::device_activations a;
    cuda::quantize_activations(cuda::device{}, hx, 8, 1.0f, a);
  });
  is_refusal("host rows into rotate_quantize", "rotate_quantize: the rows", [&] {
    cuda::device_activations a;
    cuda::rotate_quantize(cuda::device{}, cuda::randomized_hadamard(128, 1), hx, 8, 1.0f, a);
  });
  is_refusal("host rows into linear", "the rows", [&] { layer.forward(hx, dy); });
  is_refusal("host output of linear", "CUDA GEMM: the output", [&] {
    std::vector<float> hy(3 * 64);
    layer.forward(dx, matrix_view<float>(hy.data(), 3, 64, 64));
  });
  is_refusal("host bias into the GEMM", "CUDA GEMM: the bias", [&] {
    const gemm::integer_gemm<gemm::integer_policy<cuda::device, 4, 8>> op(gemm::pack_weights(wq, 4));
    op(layer.last_activations(), host.data(), dy);
  });
  is_refusal("host rows into weight_only_gemm", "weight_only_gemm: the activations", [&] {
    cuda::weight_only_gemm(cuda::device{}, dw, hx, nullptr, dy);
  });
  is_refusal("host bias into weight_only_gemm", "weight_only_gemm: the bias", [&] {
    cuda::weight_only_gemm(cuda::device{}, dw, dx, host.data(), dy);
  });
  is_refusal("null rows", "is a null pointer", [&] {
    cuda::walsh_hadamard(cuda::device{}, matrix_view<float>(nullptr, 3, 128, 128));
  });
  is_refusal("overlapping output rows", "row stride 32 is smaller than the row length 64", [&] {
    cuda::weight_only_gemm(cuda::device{}, dw, dx, nullptr, matrix_view<float>(y.data(), 3, 64, 32));
  });
  is_refusal("misaligned fp16 rows", "is not aligned to its 2-byte elements", [&] {
    auto* odd = reinterpret_cast<quarot::half*>(reinterpret_cast<unsigned char*>(x.data()) + 1);
    cuda::walsh_hadamard(cuda::device{}, matrix_view<quarot::half>(odd, 2, 128, 128));
  });
  // Interior pointers (row blocks of a larger allocation) and a device bias are fine, and
  // so are a buffer's mutable views where the API reads const rows.
  bool ok = true;
  try {
    cuda::walsh_hadamard(cuda::device{}, matrix_view<float>(x.data() + 128, 2, 128, 128));
    cuda::weight_only_gemm(cuda::device{}, dw, dx.block_rows(1, 2), bias.data(), dy.block_rows(1, 2));
    layer.forward(dx.block_rows(2, 1), dy.block_rows(2, 1));
    cuda::weight_only_gemm(cuda::device{}, dw, x.view(3, 128), bias.data(), y.view(3, 64));
    layer.forward(x.view(2, 128), y.view(2, 64));
    cuda::device_activations a;
    cuda::quantize_activations(cuda::device{}, x.view(3, 128), 8, 1.0f, a);
    cuda::rotate_quantize(cuda::device{}, cuda::randomized_hadamard(128, 1), x.view(3, 128), 8, 1.0f, a);
  } catch (const quarot::error& e) {
    ok = false;
    std::printf("%s\n", e.what());
  }
  t.check(ok, "interior device pointers accepted");
  t.expect_error(errc::invalid_argument, "device_buffer::view past the end (3 x 128, stride 129)",
                 [&] { (void)x.view(3, 128, 129); });
  t.expect_error(errc::invalid_argument, "device_buffer::view of overlapping rows", [&] { (void)x.view(2, 128, 64); });
  t.expect_error(errc::invalid_argument, "device_buffer::view whose element count overflows",
                 [&] { (void)x.view(std::size_t{1} << 62, 128, std::size_t{1} << 40); });
  t.check(x.view(3, 128).stride == 128 && x.view(1, 100, 500).stride == 500 && x.view(0, 7).rows == 0,
          "device_buffer::view: default stride, one long-strided row, no rows");
  if (cuda::device_count() >= 2) {
    QUAROT_CUDA_CHECK(cudaSetDevice(1));
    is_refusal("device 0 rows while device 1 is current", "is memory of CUDA device 0 but the current device is 1", [&] {
      cuda::walsh_hadamard(cuda::device{}, matrix_view<float>(x.data(), 3, 128, 128));
    });
    QUAROT_CUDA_CHECK(cudaSetDevice(0));
  }
#if defined(QUAROT_CUDA_EMULATION)
  {  // a device that reads pageable host memory (HMM, Grace Hopper) takes host rows
    quarot_cuda_emulation::pageable_memory_access = true;
    std::vector<float> rows = cuda_test::random_values(3 * 128, 9), expect = rows;
    bool taken = true;
    try {
      cuda::walsh_hadamard(cuda::device{}, matrix_view<float>(rows.data(), 3, 128, 128));
    } catch (const quarot::error&) {
      taken = false;
    }
    hadamard_transform(128, cpu::isa::scalar).apply(cpu::scalar{}, make_matrix_view(expect, 3, 128));
    t.check(taken && rows == expect, "host rows on a device with pageable memory access: transformed as on the CPU");
    quarot_cuda_emulation::pageable_memory_access = false;
  }
#endif
}

/// A rotated W4A4 layer, 96 x 1024 with bias and asymmetric g128 weights, on the CPU (the
/// reference) and on the device, from one seed (weights; bias seed + 2, signs seed + 6).
struct w4a4_layer_pair {
  static constexpr std::size_t n = 96, k = 1024;
  gemm::packed_weights packed;
  std::vector<float> bias;
  randomized_hadamard q;
  linear<gemm::integer_policy<cpu::scalar, 4, 4>> cpu_layer;
  linear<gemm::integer_policy<cuda::device, 4, 4>> gpu_layer;

  explicit w4a4_layer_pair(std::uint64_t seed)
      : packed(make_packed(seed)),
        bias(cuda_test::random_values(n, seed + 2)),
        q(k, seed + 6, cpu::isa::scalar),
        cpu_layer(packed, bias, 4, 0.9f),
        gpu_layer(packed, bias, 4, 0.9f) {
    cpu_layer.with_online_rotation(q);
    gpu_layer.with_online_rotation(q);
  }

 private:
  static gemm::packed_weights make_packed(std::uint64_t seed) {
    auto w = cuda_test::random_values(n * k, seed, 3.0f);
    for (auto& v : w) v *= 0.05f;
    const quant_params p{.bits = 4, .symmetric = false, .gran = granularity::per_group, .group_size = 128};
    return gemm::pack_weights(rtn_quantizer(p, cpu::isa::scalar).quantize(make_matrix_view(w, n, k)), 4);
  }
};

/// One layer, two non-blocking streams, a workspace each (linear::forward's workspace
/// overload): calls on both in flight at once, of different M (one with split-K), give the
/// CPU layer's outputs bit for bit, and the layer's own activation buffer stays unused.
/// On a GPU the streams overlap, so a write to shared layer state would show here.
void check_concurrent_streams(cuda_test::counter& t) {
  w4a4_layer_pair layers(61);
  const std::size_t n = layers.n, k = layers.k;
  auto& cpu_layer = layers.cpu_layer;
  auto& gpu_layer = layers.gpu_layer;
  struct lane {
    std::size_t m;
    std::vector<float> x[2], expect[2], got[2];
    cuda::device_buffer<float> dx[2], dy[2];
    cuda::device_activations workspace;
    cudaStream_t stream = nullptr;
  };
  lane lanes[2];
  lanes[0].m = 33;
  lanes[1].m = 1;  // split-K
  for (lane& l : lanes) {
    QUAROT_CUDA_CHECK(cudaStreamCreateWithFlags(&l.stream, cudaStreamNonBlocking));
    for (int call = 0; call < 2; ++call) {
      l.x[call] = cuda_test::random_values(l.m * k, 73 + 7 * l.m + call);
      l.expect[call].assign(l.m * n, 0.0f);
      l.got[call].assign(l.m * n, 0.0f);
      cpu_layer.forward(make_matrix_view(l.x[call], l.m, k), make_matrix_view(l.expect[call], l.m, n));
      l.dx[call] = cuda::device_buffer<float>(l.x[call].size());
      l.dy[call] = cuda::device_buffer<float>(l.m * n);
      l.dx[call].upload(l.x[call].data(), l.x[call].size());
    }
  }
  QUAROT_CUDA_CHECK(cudaDeviceSynchronize());
  for (int call = 0; call < 2; ++call)  // issued interleaved, nothing waits in between
    for (lane& l : lanes)
      gpu_layer.forward(l.dx[call].view(l.m, k), l.dy[call].view(l.m, n), l.workspace, l.stream);
  std::size_t bad = 0;
  for (lane& l : lanes) {
    for (int call = 0; call < 2; ++call) l.dy[call].download(l.got[call].data(), l.got[call].size(), l.stream);
    QUAROT_CUDA_CHECK(cudaStreamSynchronize(l.stream));
    for (int call = 0; call < 2; ++call)
      for (std::size_t i = 0; i < l.got[call].size(); ++i)
        bad += std::memcmp(&l.got[call][i], &l.expect[call][i], 4) != 0;
    QUAROT_CUDA_CHECK(cudaStreamDestroy(l.stream));
  }
  t.check(bad == 0 && lanes[0].workspace.rows == 33 && lanes[1].workspace.rows == 1 &&
              gpu_layer.last_activations().rows == 0,
          "linear W4A4 on two streams at once (M = 33 and 1), a workspace each: " + std::to_string(bad) +
              " outputs differ from the CPU layer; workspace rows " + std::to_string(lanes[0].workspace.rows) + ", " +
              std::to_string(lanes[1].workspace.rows) + ", the layer's own " +
              std::to_string(gpu_layer.last_activations().rows));
}

/// A decode step captured into a CUDA graph in the strictest mode (global: a call that may
/// synchronize or allocate outside the stream fails the capture) and replayed twice equals
/// the CPU layer bit for bit: after one call at the batch, linear::forward allocates
/// nothing, its scratch (split-K partials, row sums) is stream-ordered, and the pointer
/// checks are allowed under capture. Asymmetric g128 weights; M = 1 takes split-K.
void check_graph_capture(cuda_test::counter& t, std::size_t m) {
  w4a4_layer_pair layers(41);
  const std::size_t n = layers.n, k = layers.k;
  auto& cpu_layer = layers.cpu_layer;
  auto& gpu_layer = layers.gpu_layer;
  const auto x = cuda_test::random_values(m * k, 53 + m);
  std::vector<float> expect(m * n), got(m * n, 0.0f);
  cpu_layer.forward(make_matrix_view(x, m, k), make_matrix_view(expect, m, n));

  cuda::device_buffer<float> dx(x.size()), dy(m * n);
  dx.upload(x.data(), x.size());
  cudaStream_t stream = nullptr;
  QUAROT_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  gpu_layer.forward(dx.view(m, k), dy.view(m, n), stream);  // sizes the layer's buffers
  dy.fill_bytes(0, stream);
  QUAROT_CUDA_CHECK(cudaStreamSynchronize(stream));

  std::string error;
  QUAROT_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  try {
    gpu_layer.forward(dx.view(m, k), dy.view(m, n), stream);
  } catch (const quarot::error& e) {
    error = e.what();
  }
  cudaGraph_t graph = nullptr;
  const cudaError_t end = cudaStreamEndCapture(stream, &graph);
  if (error.empty() && end == cudaSuccess) {
    cudaGraphExec_t exec = nullptr;
    QUAROT_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
    for (int replay = 0; replay < 2; ++replay) QUAROT_CUDA_CHECK(cudaGraphLaunch(exec, stream));
    QUAROT_CUDA_CHECK(cudaStreamSynchronize(stream));
    dy.download(got.data(), got.size());
    QUAROT_CUDA_CHECK(cudaGraphExecDestroy(exec));
    QUAROT_CUDA_CHECK(cudaGraphDestroy(graph));
  } else if (end != cudaSuccess) {
    (void)cudaGetLastError();
    error += std::string(error.empty() ? "" : "; ") + "cudaStreamEndCapture: " + cudaGetErrorName(end);
  }
  QUAROT_CUDA_CHECK(cudaStreamDestroy(stream));
  std::size_t bad = 0;
  for (std::size_t i = 0; i < got.size(); ++i) bad += std::memcmp(&got[i], &expect[i], 4) != 0;
  t.check(error.empty() && bad == 0, "linear W4A4 " + shape(m, n, k) + " captured into a CUDA graph, replayed twice: " +
                                         (error.empty() ? std::to_string(bad) + " outputs differ from the CPU layer"
                                                        : "capture failed: " + error));
}

}  // namespace

int main() {
  cuda_test::counter t;
  t.expect_error(errc::invalid_argument, "device_activations of 16 bits",
                 [] { cuda::device_activations a; a.reshape(1, 1, 16); });
  check_split_plans(t);
  {  // k_order entries that would index outside the activation rows: refused at upload
    const auto w = cuda_test::random_values(8 * 128, 1);
    auto packed = gemm::pack_weights(
        act_order_weights(w, 8, 128, {.bits = 4, .gran = granularity::per_group, .group_size = 64}, 5), 4);
    packed.k_order[7] = 128;
    t.expect_error(errc::invalid_argument, "act-order k_order entry past K",
                   [&] { (void)cuda::device_weights::upload(packed); });
    packed.k_order[7] = packed.k_order[8];
    t.expect_error(errc::invalid_argument, "act-order k_order entry repeated",
                   [&] { (void)cuda::device_weights::upload(packed); });
    packed.k_order.pop_back();
    t.expect_error(errc::invalid_argument, "act-order k_order of K - 1 entries",
                   [&] { (void)cuda::device_weights::upload(packed); });
  }
  t.expect_error(errc::invalid_argument, "8-bit packed weights in a W4A16 weight-only GEMM", [] {
    const auto w = cuda_test::random_values(64 * 64, 1);
    const auto wq = rtn_quantizer({.bits = 8}, cpu::isa::scalar).quantize(make_matrix_view(w, 64, 64));
    const gemm::weight_only_gemm<gemm::w4a16_policy<cuda::device>> op(gemm::pack_weights(wq, 8));
  });
  if (!cuda_test::device_ready()) return t.skip();

  for (int bits : {2, 3, 4, 6, 8})
    for (std::size_t cols : {1, 63, 64, 4101}) check_quantize(t, 7, cols, bits);
  for (std::size_t n : {1, 2, 32, 64, 1024, 2048, 4096, 16384, 32768})
    for (int bits : {4, 8}) check_rotate_quantize(t, n <= 1024 && !cuda_test::quick ? 133 : 5, n, bits);
  for (std::size_t n : {12, 28, 5120, 11008}) check_rotate_quantize(t, 3, n, 4);
  {  // The Kronecker table's column tiles (kronecker_lut_dense) on the shared memory of a
     // Hopper (227 KiB) and of the emulation's default sm_86 (99 KiB), bit for bit either way
    const auto widths = [](std::size_t n) {
      const cuda::detail::device_hadamard h(n, nullptr);
      const std::size_t reserved = cuda::detail::kronecker_quantize_static_floats * sizeof(float);
      return std::to_string(h.kronecker_table_width()) + "/" + std::to_string(h.kronecker_table_width(reserved));
    };
    std::string got;
    {
      const cuda_test::emulated_hopper hopper(true);
      got += widths(13824) + " " + widths(44032) + " " + widths(344) + " on 227 KiB, ";
      check_rotate_quantize(t, 2, 13824, 8);  // 108 x 128: tiles of 64 columns
      check_rotate_quantize(t, 2, 44032, 4);  // 172 x 256: the row (172 KiB) and tiles of 32
    }
    got += widths(13824) + " " + widths(11008) + " on 99 KiB";
    check_rotate_quantize(t, 2, 13824, 8);  // tiles of 32
    check_rotate_quantize(t, 3, 344, 4);    // 172 x 2: tiles of 2 columns
#if defined(QUAROT_CUDA_EMULATION)  // (a GPU has its own limits)
    t.check(got == "64/64 32/32 2/2 on 227 KiB, 32/32 32/32 on 99 KiB",
            "Kronecker table widths (transform/quantizer) for 13824, 44032, 344: " + got);
    t.expect_error(errc::invalid_argument, "Kronecker size 44032 on 99 KiB of shared memory (its row takes 172 KiB)",
                   [] {
                     cuda::device_buffer<float> dx(44032);
                     cuda::device_activations out;
                     cuda::rotate_quantize(cuda::device{}, cuda::randomized_hadamard(44032, 1), dx.view(1, 44032), 4,
                                           1.0f, out);
                   });
#endif
  }
  check_non_finite(t);
  check_buffer_reuse(t);
  check_wrong_device(t);
  check_caller_pointers(t);

  using P = cuda::mma_path;
  // Split-K (mma.sync kernels), forced, bit for bit: per channel (the splits' int32 sums
  // add), grouped (whole groups; g32 with int8 steps of 32 puts two groups in a stage),
  // asymmetric, two row blocks, K padding inside the last split.
  // (Under the sanitizers two shapes at 3 splits; the automatic plans split the small
  // GEMMs above too, the emulated device having 2 SMs.)
  for (int split : {2, 3, 5}) {
    if (cuda_test::quick && split != 3) continue;
    check_gemm<8, 8>(t, 5, 72, 96, false, 32, true, P::int8_mma, split);
    check_gemm<4, 4>(t, 1, 136, 520, false, 0, true, P::int4_mma, split);
    if (cuda_test::quick) continue;
    check_gemm<8, 8>(t, 3, 72, 704, true, 0, true, P::int8_mma, split);
    check_gemm<8, 8>(t, 5, 72, 960, false, 64, false, P::int8_mma, split);
    check_gemm<4, 8>(t, cuda_test::emulated ? 130 : 150, 72, 320, false, 64, true, P::int8_mma, split);
    check_gemm<4, 4>(t, 17, 72, 1024, true, 128, false, P::int4_mma, split);
  }
  // Split-K on the wgmma kernel, forced, in its stages (W8A8: 4 K steps, else 2): per
  // channel with the last stage a half one in the last split (K = 704: 22 steps) and a
  // 256-column tile reaching past the padded N (N = 300: 384 padded, partials only below
  // it); grouped with two groups per W8A8 stage (g64) and asymmetric; two row blocks;
  // W4A4 g128 over 8 groups.
  for (int split : {2, 3, 5}) {
    if (cuda_test::quick && split != 3) continue;
    check_gemm<8, 8>(t, 3, 72, 704, true, 0, true, P::wgmma, split);
    check_gemm<4, 4>(t, 1, 300, 520, false, 0, true, P::wgmma, split);
    if (cuda_test::quick) continue;
    check_gemm<8, 8>(t, 5, 72, 960, false, 64, false, P::wgmma, split);
    check_gemm<4, 8>(t, 150, 72, 320, false, 64, true, P::wgmma, split);
    check_gemm<4, 4>(t, 17, 136, 1024, true, 128, false, P::wgmma, split);
  }
  // The wgmma cluster kernel (W8A8 per channel, clusters of 2 blocks along M sharing the
  // weight tile by TMA multicast), forced: one row block, so the cluster's second block
  // lies wholly past M (M = 1, 3), with K a single half stage (64) and the ring of 4
  // buffers wrapping (K = 704: 5.5 stages; 1600: 12.5); N past the padded N in a 256-wide
  // tile (300); two row blocks in one cluster (130) and three padded to four (257).
  check_gemm<8, 8>(t, 1, 72, 64, true, 0, false, P::wgmma_cluster);
  check_gemm<8, 8>(t, 3, 300, 704, false, 0, true, P::wgmma_cluster);
  if (!cuda_test::quick) {
    check_gemm<8, 8>(t, 130, 72, 1600, true, 0, true, P::wgmma_cluster);
    check_gemm<8, 8>(t, 257, 200, 256, false, 0, false, P::wgmma_cluster);
  }
  {  // what the cluster path refuses, each named
    const cuda_test::emulated_hopper hopper(true);
    const auto w = cuda_test::random_values(64 * 256, 1);
    const auto packed = [&](int bits, std::size_t group) {
      const quant_params p{.bits = bits, .gran = group ? granularity::per_group : granularity::per_channel,
                           .group_size = group};
      return gemm::pack_weights(rtn_quantizer(p, cpu::isa::scalar).quantize(make_matrix_view(w, 64, 256)), bits);
    };
    if (cuda::detail::has_wgmma()) {
      t.expect_error(errc::invalid_argument, "wgmma cluster path for W4A8", [&] {
        gemm::integer_gemm<gemm::integer_policy<cuda::device, 4, 8>> op(packed(4, 0), P::wgmma_cluster);
      });
      t.expect_error(errc::invalid_argument, "wgmma cluster path for g128 weights", [&] {
        gemm::integer_gemm<gemm::integer_policy<cuda::device, 8, 8>> op(packed(8, 128), P::wgmma_cluster);
      });
      t.expect_error(errc::invalid_argument, "split-K 2 on the wgmma cluster path", [&] {
        gemm::integer_gemm<gemm::integer_policy<cuda::device, 8, 8>> op(packed(8, 0), P::wgmma_cluster);
        op.set_split_k(2);
      });
      const gemm::integer_gemm<gemm::integer_policy<cuda::device, 8, 8>> op(packed(8, 0), P::wgmma_cluster);
      t.check(op.splits_for(1) == 1 && op.path_for(1) == P::wgmma_cluster,
              "wgmma cluster path at M = 1: " + std::to_string(op.splits_for(1)) + " splits on " +
                  cuda::name(op.path_for(1)));
    }
  }

  {  // automatic: a small M on a Hopper leaves wgmma for int8 mma.sync with split-K
    const cuda_test::emulated_hopper hopper(true);
    if (cuda::detail::has_wgmma()) {
      const auto w = cuda_test::random_values(72 * 1024, 1);
      const auto wq = rtn_quantizer({.bits = 4}, cpu::isa::scalar).quantize(make_matrix_view(w, 72, 1024));
      const gemm::integer_gemm<gemm::integer_policy<cuda::device, 4, 4>> op(gemm::pack_weights(wq, 4));
      t.check(op.path() == P::wgmma && op.path_for(1) == P::int8_mma && op.path_for(64) == P::int8_mma &&
                  op.path_for(65) == P::wgmma,
              std::string("automatic Hopper path: ") + cuda::name(op.path()) + ", " + cuda::name(op.path_for(1)) +
                  " for M = 1, " + cuda::name(op.path_for(65)) + " for M = 65");
      check_gemm<4, 4>(t, 3, 72, 512, false, 128, true, P::automatic);
      // M > 64: wgmma, which the plan splits in 2 on the emulation's 2 SMs (K = 1152: 36
      // steps, 4 stages per split; partials 2 x 65 x 128 int32, within the operand bytes)
      check_gemm<8, 8>(t, 65, 72, 1152, true, 0, false, P::automatic);
      {
        const auto w8 = cuda_test::random_values(72 * 1152, 2);
        const auto wq8 = rtn_quantizer({.bits = 8}, cpu::isa::scalar).quantize(make_matrix_view(w8, 72, 1152));
        const gemm::integer_gemm<gemm::integer_policy<cuda::device, 8, 8>> op8(gemm::pack_weights(wq8, 8));
        t.check(op8.path_for(65) == P::wgmma && op8.splits_for(65) == 2 && op8.splits_for(129) == 1,
                "automatic wgmma split-K on 2 SMs, K = 1152: " + std::to_string(op8.splits_for(65)) +
                    " splits at M = 65 (expected 2), " + std::to_string(op8.splits_for(129)) +
                    " at M = 129 (2 tiles: expected 1)");
      }
    }
  }

  if (!cuda::detail::has_wgmma())  // a GPU other than Hopper/sm_90a, or the emulation's default sm_86
    t.expect_error(errc::invalid_argument, "wgmma path forced without sm_90a", [] {
      const auto w = cuda_test::random_values(64 * 64, 1);
      const auto wq = rtn_quantizer({.bits = 8}, cpu::isa::scalar).quantize(make_matrix_view(w, 64, 64));
      gemm::integer_gemm<gemm::integer_policy<cuda::device, 8, 8>> op(gemm::pack_weights(wq, 8), P::wgmma);
    });
  {
    const cuda_test::emulated_hopper hopper(true);
    if (!cuda::detail::has_wgmma()) {
      std::printf("wgmma path not checked: no sm_90a code runs on this device\n");
    } else {  // the check `automatic` relies on before it picks wgmma
      const std::string failure = cuda::detail::wgmma_self_test();
      t.check(failure.empty(), "wgmma self-test: " + (failure.empty() ? std::string("passed") : failure));
      // The cluster kernel's (TMA, 128-byte swizzle, multicast): what `automatic` would
      // need before taking that path (it does not yet).
      const std::string cluster = cuda::detail::wgmma_cluster_self_test();
      t.check(cluster.empty(), "wgmma cluster self-test: " + (cluster.empty() ? std::string("passed") : cluster));
    }
  }
#if defined(QUAROT_CUDA_EMULATION)
  {  // a device that reads the descriptors' LBO and SBO the other way round: the self-test
     // names a wrong output, and `automatic` takes int8 mma.sync, still bit-exact
    const cuda_test::emulated_hopper hopper(true);
    quarot_cuda_emulation::wgmma_swapped_offsets = true;
    const std::string failure = cuda::detail::wgmma_self_test();
    t.check(failure.find("wgmma tile gave y(") != std::string::npos,
            "wgmma self-test on swapped descriptor offsets reports a wrong output: \"" + failure + "\"");
    t.check(!cuda::detail::wgmma_verified(), "wgmma not verified on swapped descriptor offsets");
    const auto w = cuda_test::random_values(64 * 64, 1);
    const auto wq = rtn_quantizer({.bits = 8}, cpu::isa::scalar).quantize(make_matrix_view(w, 64, 64));
    const gemm::integer_gemm<gemm::integer_policy<cuda::device, 8, 8>> op(gemm::pack_weights(wq, 8));
    t.check(op.path() == P::int8_mma, std::string("automatic path after a failed self-test: ") + cuda::name(op.path()));
    check_linear<4, 4>(t, 9, 96, 1024, 4, true);
    quarot_cuda_emulation::wgmma_swapped_offsets = false;
    // a device whose swizzle differs from TMA's as modelled: the cluster self-test names
    // a wrong output
    quarot_cuda_emulation::wgmma_ignores_swizzle = true;
    const std::string cluster = cuda::detail::wgmma_cluster_self_test();
    quarot_cuda_emulation::wgmma_ignores_swizzle = false;
    t.check(cluster.find("wgmma cluster kernel (256 x 256, TMA multicast) gave y(") != std::string::npos,
            "wgmma cluster self-test on unswizzled operand reads reports a wrong output: \"" + cluster + "\"");
  }
#endif
  // N: a partial 64- and 128-column tile either way; fewer tiles under the sanitizers.
  const std::size_t n_pc = cuda_test::quick ? 72 : 200, n_g = cuda_test::quick ? 72 : 136;
  for (std::size_t m : {std::size_t{1}, std::size_t{3}, std::size_t{17}, std::size_t{cuda_test::emulated ? 70 : 130}})
    for (bool sym : {true, false}) {
      if (cuda_test::quick && (m == 17 || (m == 1 && sym))) continue;
      for (P path : {P::int8_mma, P::wgmma}) {
        check_gemm<8, 8>(t, m, n_pc, 200, sym, 0, m == 3, path);
        check_gemm<8, 8>(t, m, n_g, 384, sym, 128, true, path);
        check_gemm<4, 8>(t, m, n_pc, 200, sym, 0, false, path);
        check_gemm<4, 8>(t, m, n_g, 384, sym, 128, m == 17, path);
      }
      for (P path : {P::int8_mma, P::int4_mma, P::wgmma}) {
        check_gemm<4, 4>(t, m, n_pc, 200, sym, 0, m == 1, path);
        check_gemm<4, 4>(t, m, n_g, 384, sym, 128, true, path);
      }
    }
  if (!cuda_test::emulated) {  // model-sized shapes (minutes on the emulation)
    check_gemm<4, 4>(t, 64, 4096, 4096, true, 128, false, P::automatic);
    check_gemm<8, 8>(t, 64, 256, 11008, true, 0, false, P::automatic);
    // the cluster kernel (Hopper only) at the benchmarks' K = 4096: 32 stages through its
    // ring of 4, 8 clusters of two live blocks
    check_gemm<8, 8>(t, 256, 2048, 4096, false, 0, true, P::wgmma_cluster);
  }
  check_gemm<4, 4>(t, 20, 72, 1024, false, 128, true, P::automatic);
  check_gemm<4, 8>(t, 150, 72, 320, false, 64, true, P::int8_mma);  // two row blocks, groups of 64
  check_gemm<4, 8>(t, 150, 72, 320, false, 64, true, P::wgmma);
  for (P path : {P::int8_mma, P::wgmma})  // groups end inside a K stage; K padding past the last group
    check_gemm<8, 8>(t, 5, 72, 96, false, 32, true, path);
  check_gemm<4, 4>(t, 3, 300, 256, false, 0, true, P::wgmma);  // a 256-column tile past the padded N
  // Act-order weights (groups scattered along K): the activations gathered into the
  // packed K order on the device, every path, asymmetric (row sums of the gathered
  // levels), split-K over the gathered rows.
  for (P path : {P::int8_mma, P::int4_mma, P::wgmma}) {
    check_gemm<4, 4>(t, 5, 72, 512, false, 128, true, path, 0, true);
    if (cuda_test::quick) continue;
    check_gemm<4, 4>(t, 17, 72, 384, true, 64, false, path, 0, true);
    if (path == P::int4_mma) continue;
    check_gemm<8, 8>(t, 3, 72, 192, false, 32, true, path, 0, true);  // K = 192: 6 groups, 3 int8 stages
    check_gemm<4, 8>(t, 70, 72, 256, true, 64, false, path, 0, true);
  }
  check_gemm<4, 4>(t, 1, 136, 1024, false, 128, true, P::int4_mma, 3, true);
  for (P path : {P::int8_mma, P::wgmma})  // N = 75: rows of y off 16-byte alignment, a partial last piece
    check_gemm<8, 8>(t, 5, 75, 128, true, 0, true, path);
  for (P path : {P::int8_mma, P::wgmma}) {  // wgmma rings that wrap; W8A8's stages of 128 K end in a half one
    check_gemm<8, 8>(t, 17, 72, 704, true, 0, true, path);
    check_gemm<8, 8>(t, 17, 72, 960, false, 64, false, path);
    check_gemm<4, 8>(t, 17, 72, 520, true, 0, false, path);  // 4-bit weights: 9 stages of 64 through 6 buffers
    check_gemm<4, 4>(t, 17, 72, 520, false, 0, true, path);
  }

  for (int bits : {4, 8}) {
    check_weight_only<float>(t, bits, 1, 100, 200, true, 0);
    check_weight_only<float>(t, bits, 5, 100, 384, false, 128);
    check_weight_only<quarot::half>(t, bits, 1, cuda_test::emulated ? 256 : 4096, 4096, true, 128);
    check_weight_only<bfloat16>(t, bits, 3, 64, 264, false, 8);
    // K = 203: a last run of 3 levels; rows off 16-byte alignment (stride 203, scalar
    // loads) or aligned by the stride (208: 16-byte loads up to the tail).
    check_weight_only<float>(t, bits, 3, 100, 203, true, 0);
    check_weight_only<quarot::half>(t, bits, 5, 64, 203, false, 0, 208);
    check_weight_only<bfloat16>(t, bits, 2, 64, 256, true, 64, 260);  // stride 520 bytes: scalar loads
    // Act-order: x's columns gathered into rows of k_padded values (aligned loads) whatever
    // the caller's stride.
    check_weight_only<quarot::half>(t, bits, 1, 100, 384, false, 128, 0, true);
    check_weight_only<bfloat16>(t, bits, 3, 64, 264, true, 8, 270, true);
  }
  // The policy classes: bf16 policies round fp32 / fp16 inputs (and take bf16 as is), the
  // float policy keeps fp32; act-order weights; K tails of 8-level steps.
  check_weight_only_policy<4, bfloat16, float>(t, 3, 100, 384, 128, false);
  check_weight_only_policy<4, bfloat16, quarot::half>(t, 1, 64, 264, 8, true);
  if (!cuda_test::quick) {
    check_weight_only_policy<8, bfloat16, bfloat16>(t, 2, 64, 256, 64, false);
    check_weight_only_policy<4, float, float>(t, 5, 100, 203, 0, false);
  }

  check_linear<4, 4>(t, 9, 96, 1024, 4, true);
  check_linear<4, 4>(t, 9, 96, 1024, 4, true, false, true);  // act-order weights behind the rotation
  check_linear<4, 4>(t, 7, 64, 1536, 4, true);  // a Kronecker rotation (12 x 128): bit for bit too
  check_linear<4, 4>(t, 3, 64, 256, 3, false);
  for (std::size_t m : {1, 5})  // (M = 1, split-K, under the sanitizers)
    if (!cuda_test::quick || m == 1) check_graph_capture(t, m);
  check_concurrent_streams(t);
  check_linear<4, 8>(t, 6, 64, 200, 8, false, true);  // K padding: the regrown activation rows stay zero-padded
  check_linear<4, 8>(t, 5, 80, 512, 8, true);
  check_linear<8, 8>(t, 4, 64, 512, 6, true, true);  // power-of-two K: the rotation is bit-exact too
  {
    const cuda_test::emulated_hopper hopper(true);  // automatic path on Hopper: wgmma
    if (cuda::detail::has_wgmma()) check_linear<4, 4>(t, 9, 96, 1024, 4, true);
  }

  t.expect_error(errc::invalid_argument, "8-bit packed weights in a W4A4 GEMM", [] {
    const auto w = cuda_test::random_values(64 * 64, 1);
    const auto wq = rtn_quantizer({.bits = 8}, cpu::isa::scalar).quantize(make_matrix_view(w, 64, 64));
    gemm::integer_gemm<gemm::integer_policy<cuda::device, 4, 4>> op(gemm::pack_weights(wq, 8));
  });
  t.expect_error(errc::invalid_argument, "int4 MMA path for W8A8", [] {
    const auto w = cuda_test::random_values(64 * 64, 1);
    const auto wq = rtn_quantizer({.bits = 8}, cpu::isa::scalar).quantize(make_matrix_view(w, 64, 64));
    gemm::integer_gemm<gemm::integer_policy<cuda::device, 8, 8>> op(gemm::pack_weights(wq, 8), cuda::mma_path::int4_mma);
  });
  t.expect_error(errc::invalid_argument, "activations of another K", [] {
    const auto w = cuda_test::random_values(64 * 128, 1);
    const auto wq = rtn_quantizer({.bits = 4}, cpu::isa::scalar).quantize(make_matrix_view(w, 64, 128));
    const gemm::integer_gemm<gemm::integer_policy<cuda::device, 4, 8>> op(gemm::pack_weights(wq, 4));
    cuda::device_activations a;
    a.reshape(2, 64, 8);
    cuda::device_buffer<float> y(2 * 64);
    op(a, nullptr, matrix_view<float>(y.data(), 2, 64, 64));
  });
#if defined(QUAROT_CUDA_EMULATION)
  t.check(quarot_cuda_emulation::async_live == 0, "every stream-ordered scratch freed (" +
                                                      std::to_string(quarot_cuda_emulation::async_live.load()) +
                                                      " live)");
#endif
  return t.finish();
}
