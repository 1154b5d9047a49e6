// Integer GEMM policies vs oneDNN int8 and OpenBLAS fp32 (issue: "Quantized GEMM").
//
//   BM_quarot<policy>/M/N/K/G      y = x·Wᵀ from per-token quantized x and packed W with
//                                  weight groups of G (0: per channel); the call includes
//                                  preparing the activations
//   BM_onednn_u8s8s32/M/N/K        oneDNN matmul, u8 x s8 -> s32, weights pre-reordered
//   BM_openblas_sgemm/M/N/K        cblas_sgemm (M = 1: cblas_sgemv) in fp32
//   BM_weight_only<policy>/M/N/K   W4A16 / W8A16: fp32 x, packed int4/int8 W dequantized in registers
//   BM_linear<policy>/M/N/K/G      a quarot::linear forward from fp32 x (quantize + GEMM): W4A16i, W4A8
// Counters: ops/s = 2·M·N·K per second; weight_bytes/s = packed weight bytes per second
// (the decode figure to hold against memcpy bandwidth). Run with OMP_NUM_THREADS=2 and
// OPENBLAS_NUM_THREADS=2 for the baselines; quarot uses a 2-thread pool.
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>

#include <quarot/gemm.hpp>
#include <quarot/gemm/weight_only_gemm.hpp>
#include <quarot/transform.hpp>

#include "bench_common.hpp"

namespace {

void set_counters(benchmark::State& state, double m, double n, double k, double weight_bytes) {
  state.counters["ops/s"] = benchmark::Counter(2.0 * m * n * k, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["weight_bytes/s"] = benchmark::Counter(weight_bytes, benchmark::Counter::kIsIterationInvariantRate);
}

// Random N x K weights, RTN-quantized (symmetric; per channel when group = 0) and packed
// for the policy.
template <class Policy>
quarot::gemm::packed_weights random_packed_weights(std::size_t n, std::size_t k, std::size_t group) {
  const auto w = bench::random_buffer<float>(n * k, 1);
  const quarot::quant_params wp{.bits = Policy::weight_bits, .symmetric = true,
                                .gran = group ? quarot::granularity::per_group : quarot::granularity::per_channel,
                                .group_size = group};
  return quarot::gemm::pack_weights(quarot::rtn_quantizer(wp).quantize(quarot::make_matrix_view(w, n, k)),
                                    Policy::weight_bits);
}

// Whether the integer GEMM's backend B has its instructions on this CPU.
template <class B>
bool runs_here() {
  if constexpr (std::is_same_v<B, quarot::cpu::avx_vnni_backend>) return quarot::cpu::supports_avx_vnni_backend();
  else if constexpr (std::is_same_v<B, quarot::cpu::avx2_backend>) return quarot::cpu::supports(quarot::cpu::isa::avx2);
  else if constexpr (std::is_same_v<B, quarot::cpu::avx512vnni_backend>)
    return quarot::cpu::supports(quarot::cpu::isa::avx512vnni);
  else return true;
}

template <class Policy>
void BM_quarot(benchmark::State& state) {
  const auto m = std::size_t(state.range(0)), n = std::size_t(state.range(1)), k = std::size_t(state.range(2));
  const auto x = bench::random_buffer<float>(m * k, 2);
  const auto packed = random_packed_weights<Policy>(n, k, std::size_t(state.range(3)));
  if (!runs_here<typename Policy::backend>()) {
    state.SkipWithError("this CPU lacks the policy's instructions");
    return;
  }
  const quarot::gemm::integer_gemm<Policy> op(packed);
  quarot::quantized_activations xa;
  quarot::quantize_activations(quarot::make_matrix_view(x, m, k), Policy::activation_bits, 1.0f, xa);
  std::vector<float> y(m * n);
  quarot::thread_pool pool(2);
  for (auto _ : state) {
    op(xa, quarot::make_matrix_view(y, m, n), {}, &pool);
    benchmark::DoNotOptimize(y.data());
  }
  set_counters(state, double(m), double(n), double(k), double(packed.data.size()));
}

// A quarot::linear layer's forward from fp32 activations: per-token quantization (int16
// for the W4A16i policy), activation preparation and the GEMM — what a decode step pays,
// to hold against BM_weight_only (which also starts from fp32 activations).
template <class Policy>
void BM_linear(benchmark::State& state) {
  const auto m = std::size_t(state.range(0)), n = std::size_t(state.range(1)), k = std::size_t(state.range(2));
  const auto x = bench::random_buffer<float>(m * k, 2);
  const auto packed = random_packed_weights<Policy>(n, k, std::size_t(state.range(3)));
  const quarot::linear<Policy> layer(packed);
  std::vector<float> y(m * n);
  quarot::thread_pool pool(2);
  for (auto _ : state) {
    layer.forward(quarot::make_matrix_view(x, m, k), quarot::make_matrix_view(y, m, n), &pool);
    benchmark::DoNotOptimize(y.data());
  }
  set_counters(state, double(m), double(n), double(k), double(packed.data.size()));
}

void BM_onednn_u8s8s32(benchmark::State& state) {
  using namespace dnnl;
  const auto m = state.range(0), n = state.range(1), k = state.range(2);
  engine eng(engine::kind::cpu, 0);
  stream s(eng);
  const memory::desc a_md({m, k}, memory::data_type::u8, memory::format_tag::ab);
  const memory::desc b_any({k, n}, memory::data_type::s8, memory::format_tag::any);
  const memory::desc b_md({k, n}, memory::data_type::s8, memory::format_tag::ab);
  const memory::desc c_md({m, n}, memory::data_type::s32, memory::format_tag::ab);
  const matmul::primitive_desc pd(matmul::desc(a_md, b_any, c_md), eng);
  memory a(a_md, eng), b_plain(b_md, eng), b(pd.weights_desc(), eng), c(c_md, eng);
  std::memset(a.get_data_handle(), 3, std::size_t(m * k));
  std::memset(b_plain.get_data_handle(), 1, std::size_t(k * n));
  reorder(b_plain, b).execute(s, b_plain, b);
  const matmul prim(pd);
  for (auto _ : state) {
    prim.execute(s, {{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, b}, {DNNL_ARG_DST, c}});
    s.wait();
  }
  set_counters(state, double(m), double(n), double(k), double(n * k));
}

template <class Policy>
void BM_weight_only(benchmark::State& state) {
  const auto m = std::size_t(state.range(0)), n = std::size_t(state.range(1)), k = std::size_t(state.range(2));
  const auto w = bench::random_buffer<float>(n * k, 1);
  const auto x = bench::random_buffer<float>(m * k, 2);
  const quarot::quant_params wp{.bits = Policy::weight_bits, .symmetric = true,
                                .gran = quarot::granularity::per_group, .group_size = 128};
  const quarot::gemm::weight_only_gemm<Policy> op(
      quarot::gemm::pack_weights(quarot::rtn_quantizer(wp).quantize(quarot::make_matrix_view(w, n, k)), Policy::weight_bits));
  std::vector<float> y(m * n);
  quarot::thread_pool pool(2);
  for (auto _ : state) {
    op(quarot::make_matrix_view(x, m, k), quarot::make_matrix_view(y, m, n), {}, &pool);
    benchmark::DoNotOptimize(y.data());
  }
  set_counters(state, double(m), double(n), double(k), double(op.weights().data.size()));
}

void decode_shapes(benchmark::internal::Benchmark* b) {
  for (long m : {1L, 16L})
    for (auto nk : {std::pair{4096L, 4096L}, std::pair{11008L, 4096L}, std::pair{4096L, 11008L}}) b->Args({m, nk.first, nk.second});
}

void BM_openblas_sgemm(benchmark::State& state) {
  const auto m = int(state.range(0)), n = int(state.range(1)), k = int(state.range(2));
  const auto w = bench::random_buffer<float>(std::size_t(n) * std::size_t(k), 1);
  const auto x = bench::random_buffer<float>(std::size_t(m) * std::size_t(k), 2);
  std::vector<float> y(std::size_t(m) * std::size_t(n));
  for (auto _ : state) {
    if (m == 1) cblas_sgemv(CblasRowMajor, CblasNoTrans, n, k, 1.0f, w.data(), k, x.data(), 1, 0.0f, y.data(), 1);
    else cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, x.data(), k, w.data(), k, 0.0f, y.data(), n);
    benchmark::DoNotOptimize(y.data());
  }
  set_counters(state, double(m), double(n), double(k), 4.0 * double(n) * double(k));
}

// down_proj of Llama-2-7B: M = 2048 tokens, K = 11008 = 172·64, N = 4096, W4A4 with
// groups of 128; the weights optionally carry the randomized Hadamard that the layer then
// applies online.
struct down_proj_case {
  static constexpr std::size_t m = 2048, n = 4096, k = 11008;
  std::vector<float> x = bench::random_buffer<float>(m * k, 2);
  quarot::randomized_hadamard q{k, 3};
  quarot::gemm::packed_weights packed;

  explicit down_proj_case(bool rotate) {
    auto w = bench::random_buffer<float>(n * k, 1);
    if (rotate) quarot::fuse_input_rotation(quarot::make_matrix_view(w, n, k), q);
    packed = quarot::gemm::pack_weights(
        quarot::rtn_quantizer({.bits = 4, .gran = quarot::granularity::per_group, .group_size = 128})
            .quantize(quarot::make_matrix_view(std::as_const(w), n, k)),
        4);
  }
  [[nodiscard]] quarot::linear<quarot::gemm::w4a4_policy<>> layer(bool rotate) const {
    quarot::linear<quarot::gemm::w4a4_policy<>> l(packed, {}, 4);
    if (rotate) l.with_online_rotation(q);
    return l;
  }
};

// The layer's forward (fp32 activations in): with online Hadamard (arg 1) or without (arg
// 0), against BM_quarot<w4a4>/2048/4096/11008/128, the GEMM alone on already-quantized
// activations.
void BM_linear_down_proj(benchmark::State& state) {
  const bool rotate = state.range(0) != 0;
  const down_proj_case d(rotate);
  const auto layer = d.layer(rotate);
  const std::size_t m = d.m, n = d.n, k = d.k;
  std::vector<float> y(m * n);
  quarot::thread_pool pool(2);
  for (auto _ : state) {
    layer.forward(quarot::make_matrix_view(d.x, m, k), quarot::make_matrix_view(y, m, n), &pool);
    benchmark::DoNotOptimize(y.data());
  }
  set_counters(state, double(m), double(n), double(k), double(n * k / 2));
}

// The same comparison alternating within one benchmark, for this noisy shared machine:
// each iteration runs the GEMM alone on quantized activations and then the fused layer
// (online H_172 ⊗ H_64 + per-token int4 quantization + W4A4 GEMM) from fp32; counters:
// median ms of each and the median per-iteration ratio fused / GEMM (target ≤ 1.10).
void BM_down_proj_overhead(benchmark::State& state) {
  const down_proj_case d(true);
  const auto layer = d.layer(true);
  const std::size_t m = d.m, n = d.n, k = d.k;
  const quarot::gemm::integer_gemm<quarot::gemm::w4a4_policy<>> gemm(d.packed);
  quarot::quantized_activations xa;
  quarot::quantize_activations(quarot::make_matrix_view(d.x, m, k), 4, 1.0f, xa);
  std::vector<float> y(m * n);
  quarot::thread_pool pool(2);
  std::vector<double> tg, tf, ratio;
  const auto seconds = [](auto&& f) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  for (auto _ : state) {
    const double a = seconds([&] { gemm(xa, quarot::make_matrix_view(y, m, n), {}, &pool); });
    const double b =
        seconds([&] { layer.forward(quarot::make_matrix_view(d.x, m, k), quarot::make_matrix_view(y, m, n), &pool); });
    benchmark::DoNotOptimize(y.data());
    tg.push_back(a);
    tf.push_back(b);
    ratio.push_back(b / a);
  }
  const auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0.0 : v[v.size() / 2];
  };
  state.counters["gemm_ms"] = median(tg) * 1e3;
  state.counters["fused_ms"] = median(tf) * 1e3;
  state.counters["fused/gemm"] = median(ratio);
  state.counters["fused_ops/s"] = 2.0 * double(m) * double(n) * double(k) / std::max(median(tf), 1e-12);
}

void shapes(benchmark::internal::Benchmark* b) {
  for (long m : {1L, 16L, 2048L})
    for (auto nk : {std::pair{4096L, 4096L}, std::pair{11008L, 4096L}, std::pair{4096L, 11008L}}) b->Args({m, nk.first, nk.second});
}

// The quarot policies on every shape, with per-channel weight scales (group 0: QuaRot's
// configuration, and what oneDNN's plain s32 output compares with) and with groups of 128.
void grouped_shapes(benchmark::internal::Benchmark* b) {
  for (long group : {0L, 128L})
    for (long m : {1L, 16L, 2048L})
      for (auto nk : {std::pair{4096L, 4096L}, std::pair{11008L, 4096L}, std::pair{4096L, 11008L}})
        b->Args({m, nk.first, nk.second, group});
}

void grouped_decode_shapes(benchmark::internal::Benchmark* b) {
  for (long group : {0L, 128L})
    for (long m : {1L, 16L})
      for (auto nk : {std::pair{4096L, 4096L}, std::pair{11008L, 4096L}, std::pair{4096L, 11008L}})
        b->Args({m, nk.first, nk.second, group});
}

void memcpy_weights(benchmark::State& state) {
  bench::memcpy_baseline(state, std::size_t(state.range(0)), 2);
}

}  // namespace

BENCHMARK(memcpy_weights)->Name("BM_memcpy")->Arg(4096L * 11008 / 2)->Arg(4096L * 11008)->UseRealTime();
BENCHMARK_TEMPLATE(BM_quarot, quarot::gemm::w8a8_policy<>)->Apply(grouped_shapes)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_quarot, quarot::gemm::w4a8_policy<>)->Apply(grouped_shapes)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_quarot, quarot::gemm::w4a4_policy<>)->Apply(grouped_shapes)->UseRealTime()->Unit(benchmark::kMillisecond);
// The 256-bit kernels (AVX-VNNI, or its EVEX form where AVX-512 VNNI exists; plain AVX2) on
// the same shapes: what CPUs without AVX-512 get.
BENCHMARK_TEMPLATE(BM_quarot, quarot::gemm::w8a8_policy<quarot::cpu::avx_vnni_backend>)->Apply(grouped_shapes)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_quarot, quarot::gemm::w4a4_policy<quarot::cpu::avx_vnni_backend>)->Apply(grouped_shapes)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_quarot, quarot::gemm::w4a16i_policy<quarot::cpu::avx_vnni_backend>)->Apply(grouped_decode_shapes)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_quarot, quarot::gemm::w8a8_policy<quarot::cpu::avx2_backend>)->Apply(grouped_shapes)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_quarot, quarot::gemm::w4a4_policy<quarot::cpu::avx2_backend>)->Apply(grouped_shapes)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_quarot, quarot::gemm::w4a16i_policy<>)->Apply(grouped_decode_shapes)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_linear, quarot::gemm::w4a16i_policy<>)->Apply(grouped_decode_shapes)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_linear, quarot::gemm::w4a8_policy<>)->Apply(grouped_decode_shapes)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_weight_only, quarot::gemm::w4a16_policy<>)->Apply(decode_shapes)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_weight_only, quarot::gemm::w8a16_policy<>)->Apply(decode_shapes)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_linear_down_proj)->Arg(0)->Arg(1)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_down_proj_overhead)->Iterations(11)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_onednn_u8s8s32)->Apply(shapes)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_openblas_sgemm)->Apply(shapes)->UseRealTime()->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
