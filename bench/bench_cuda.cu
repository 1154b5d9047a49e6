// CUDA benchmarks (issue #8), each with its baseline in the same binary:
//   FWHT fp16 and fused rotate + int4 quantization   vs  cudaMemcpy device to device of the
//                                                         same bytes (read + write counted)
//   integer GEMM W4A4 / W8A8 / W4A8                  vs  cuBLAS int8 (cublasGemmEx, s8 x s8
//                                                         -> s32) and fp16 (cublasGemmEx,
//                                                         fp32 compute)
//   weight-only W4A16 decode (M = 1)                 vs  the memcpy of the weight bytes
// Times come from CUDA events (UseManualTime). Without a device every benchmark reports
// the reason through SkipWithError.
#include <benchmark/benchmark.h>
#include <cublas_v2.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <quarot/backend/cuda/gemm.cuh>
#include <quarot/quantize/rtn.hpp>

namespace {

using quarot::matrix_view;
namespace cuda = quarot::cuda;

bool skip_without_device(benchmark::State& state) {
  const std::string why = cuda::unavailable_reason();
  if (why.empty()) return false;
  state.SkipWithError(("no usable CUDA device: " + why).c_str());
  return true;
}

/// Runs f() (launches on the null stream) once per iteration, timed with CUDA events.
template <class F>
void timed_loop(benchmark::State& state, F&& f) {
  f();  // warm-up (and first-call setup)
  QUAROT_CUDA_CHECK(cudaDeviceSynchronize());
  cudaEvent_t start, stop;
  QUAROT_CUDA_CHECK(cudaEventCreate(&start));
  QUAROT_CUDA_CHECK(cudaEventCreate(&stop));
  for (auto _ : state) {
    QUAROT_CUDA_CHECK(cudaEventRecord(start));
    f();
    QUAROT_CUDA_CHECK(cudaEventRecord(stop));
    QUAROT_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    QUAROT_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    state.SetIterationTime(ms / 1e3);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
}

template <class T>
std::vector<T> random_rows(std::size_t n, std::uint64_t seed) {
  quarot::xoshiro256 rng(seed);
  std::vector<T> v(n);
  for (auto& x : v) x = quarot::from_float<T>(static_cast<float>(rng.normal()));
  return v;
}

constexpr std::size_t fwht_elements = std::size_t{1} << 25;  // 64 MiB of fp16

void BM_cuda_memcpy_d2d(benchmark::State& state) {
  if (skip_without_device(state)) return;
  const std::size_t bytes = static_cast<std::size_t>(state.range(0));
  cuda::device_buffer<std::uint8_t> a(bytes), b(bytes);
  a.fill_bytes(1);
  timed_loop(state, [&] { QUAROT_CUDA_CHECK(cudaMemcpyAsync(b.data(), a.data(), bytes, cudaMemcpyDeviceToDevice)); });
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * 2 * bytes));
}
BENCHMARK(BM_cuda_memcpy_d2d)->Arg(2 * fwht_elements)->UseManualTime()->Unit(benchmark::kMicrosecond);

/// FWHT of fp16 rows of 2^k, 2^25 elements in all, in place (read + write counted).
void BM_cuda_fwht_fp16(benchmark::State& state) {
  if (skip_without_device(state)) return;
  const std::size_t n = std::size_t{1} << state.range(0), rows = fwht_elements / n;
  const auto host = random_rows<quarot::half>(fwht_elements, 1);
  cuda::device_buffer<quarot::half> x(host.size());
  x.upload(host.data(), host.size());
  const cuda::randomized_hadamard q(n, 1);
  timed_loop(state, [&] { q.apply(cuda::device{}, matrix_view<quarot::half>(x.data(), rows, n, n)); });
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * 2 * fwht_elements * sizeof(quarot::half)));
}
BENCHMARK(BM_cuda_fwht_fp16)->DenseRange(8, 14)->UseManualTime()->Unit(benchmark::kMicrosecond);

/// Online rotation + per-token int4 quantization of fp16 rows (QuaRot's online step),
/// bytes = fp16 read + int4 and scales written.
void BM_cuda_rotate_quantize_int4(benchmark::State& state) {
  if (skip_without_device(state)) return;
  const std::size_t n = static_cast<std::size_t>(state.range(0)), rows = static_cast<std::size_t>(state.range(1));
  const auto host = random_rows<quarot::half>(rows * n, 2);
  cuda::device_buffer<quarot::half> x(host.size());
  x.upload(host.data(), host.size());
  const cuda::randomized_hadamard q(n, 1);
  cuda::device_activations out;
  timed_loop(state, [&] {
    cuda::rotate_quantize(cuda::device{}, q, matrix_view<const quarot::half>(x.data(), rows, n, n), 4, 1.0f, out);
  });
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * rows * (2 * n + n / 2 + 4)));
}
BENCHMARK(BM_cuda_rotate_quantize_int4)
    ->Args({4096, 2048})
    ->Args({11008, 2048})  // 172 x 64 (LLaMA-2-7B's down_proj)
    ->Args({14336, 2048})  // 28 x 512 (Llama-3-8B's)
    ->Args({16384, 2048})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

/// Random weights packed at `bits`, per channel (group 0) or per group; act_order: with
/// the groups dealt round-robin along K (g_idx[k] = k mod groups), the layout of GPTQ's
/// act-order for timing (the levels stay RTN's).
quarot::gemm::packed_weights random_packed(std::size_t n, std::size_t k, int bits, std::size_t group,
                                           bool act_order = false) {
  const auto w = random_rows<float>(n * k, 3);
  const quarot::quant_params p{.bits = bits,
                               .gran = group ? quarot::granularity::per_group : quarot::granularity::per_channel,
                               .group_size = group};
  auto q = quarot::rtn_quantizer(p).quantize(quarot::make_matrix_view(w, n, k));
  if (act_order) {
    q.g_idx.resize(k);
    for (std::size_t i = 0; i < k; ++i) q.g_idx[i] = static_cast<std::uint32_t>(i % q.groups_per_row);
  }
  return quarot::gemm::pack_weights(q, bits);
}

/// Our integer GEMM from device activations (quantized outside the timed loop); GOP/s.
/// ActOrder: act-order weights (g_idx), whose call first gathers the activations into the
/// packed K order; judge against the same shape without.
template <int WBits, int ABits, bool ActOrder = false>
void BM_cuda_gemm(benchmark::State& state) {
  if (skip_without_device(state)) return;
  const auto m = static_cast<std::size_t>(state.range(0)), n = static_cast<std::size_t>(state.range(1)),
             k = static_cast<std::size_t>(state.range(2)), group = static_cast<std::size_t>(state.range(3));
  const auto path = static_cast<cuda::mma_path>(state.range(4));
  const auto split_k = static_cast<int>(state.range(5));
  using gemm_type = quarot::gemm::integer_gemm<quarot::gemm::integer_policy<cuda::device, WBits, ABits>>;
  std::optional<gemm_type> made;
  try {
    made.emplace(random_packed(n, k, WBits, group, ActOrder), path);
    made->set_split_k(split_k);
  } catch (const quarot::error& e) {  // a forced path this device cannot run
    state.SkipWithError(e.what());
    return;
  }
  const gemm_type& op = *made;
  const auto xh = random_rows<float>(m * k, 4);
  cuda::device_buffer<float> x(xh.size());
  x.upload(xh.data(), xh.size());
  cuda::device_activations xa;
  cuda::quantize_activations(cuda::device{}, matrix_view<const float>(x.data(), m, k, k), ABits, 1.0f, xa);
  cuda::device_buffer<quarot::bfloat16> y(m * n);
  timed_loop(state, [&] { op(xa, nullptr, matrix_view<quarot::bfloat16>(y.data(), m, n, n)); });
  state.counters["GOP/s"] = benchmark::Counter(static_cast<double>(state.iterations()) * 2.0 * m * n * k,
                                               benchmark::Counter::kIsRate);
  // Decode reads the weights once per call: compare with BM_cuda_memcpy_d2d of their bytes.
  state.counters["weight_bytes/s"] = benchmark::Counter(static_cast<double>(state.iterations()) * n * k * WBits / 8,
                                                        benchmark::Counter::kIsRate);
  const int splits = op.splits_for(m);
  state.SetLabel(std::string(cuda::name(op.path_for(m))) + (splits > 1 ? ", " + std::to_string(splits) + " splits" : ""));
}

/// M x N x K, group size, path (0 automatic; on 2048 x 4096 x 4096 also the int8 mma.sync
/// path and, for W4A4, the int4 one forced, to compare with what automatic picks), split-K
/// (0 automatic; for decode, M = 1 and 16 at 4096 x 4096, also 1 = never and the wgmma
/// path forced, to judge the automatic split-K and the mma.sync hand-over on Hopper; for
/// short prefill, M = 128 and 512, automatic, never and 4 splits forced, to judge the
/// wgmma split-K and the bound on its partials).
template <bool W4A4>
void gemm_shapes(benchmark::internal::Benchmark* b) {
  const long automatic = static_cast<long>(cuda::mma_path::automatic);
  for (long m : {1, 16, 2048})
    for (auto nk : {std::pair<long, long>{4096, 4096}, {11008, 4096}, {4096, 11008}})
      for (long g : {0, 128}) b->Args({m, nk.first, nk.second, g, automatic, 0});
  for (auto path : {cuda::mma_path::int8_mma, cuda::mma_path::int4_mma})
    for (long g : {0, 128})
      if (W4A4 || path != cuda::mma_path::int4_mma) b->Args({2048, 4096, 4096, g, static_cast<long>(path), 0});
  for (long m : {1, 16})
    for (long g : {0, 128}) {
      b->Args({m, 4096, 4096, g, automatic, 1});
      b->Args({m, 4096, 4096, g, static_cast<long>(cuda::mma_path::wgmma), 0});
    }
  for (long m : {128, 512})
    for (long g : {0, 128})
      for (long split : {0, 1, 4}) b->Args({m, 4096, 4096, g, automatic, split});
  b->ArgNames({"m", "n", "k", "group", "path", "split"})->UseManualTime()->Unit(benchmark::kMicrosecond);
}
/// W8A8 per channel on sm_90a: the wgmma cluster path (two blocks share each weight
/// stage by TMA multicast; only taken when forced) beside the plain wgmma path on the same
/// prefill shapes, the comparison that decides whether `automatic` should take it (judge
/// both against BM_cublas_gemm_int8 of the same shape). Elsewhere both report skipped.
void gemm_cluster_shapes(benchmark::internal::Benchmark* b) {
  for (long m : {512, 2048, 4096})
    for (auto nk : {std::pair<long, long>{4096, 4096}, {11008, 4096}})
      for (auto path : {cuda::mma_path::wgmma, cuda::mma_path::wgmma_cluster})
        b->Args({m, nk.first, nk.second, 0, static_cast<long>(path), 0});
  b->ArgNames({"m", "n", "k", "group", "path", "split"})->UseManualTime()->Unit(benchmark::kMicrosecond);
}
BENCHMARK(BM_cuda_gemm<4, 4>)->Apply(gemm_shapes<true>);
BENCHMARK(BM_cuda_gemm<8, 8>)->Apply(gemm_shapes<false>);
BENCHMARK(BM_cuda_gemm<8, 8>)->Apply(gemm_cluster_shapes);
BENCHMARK(BM_cuda_gemm<4, 8>)->Apply(gemm_shapes<false>);
/// Act-order weights (g128, automatic path): the gather's cost in decode and prefill,
/// against BM_cuda_gemm<4, 4> on the same arguments.
void act_order_shapes(benchmark::internal::Benchmark* b) {
  for (long m : {1, 16, 2048}) b->Args({m, 4096, 4096, 128, static_cast<long>(cuda::mma_path::automatic), 0});
  b->ArgNames({"m", "n", "k", "group", "path", "split"})->UseManualTime()->Unit(benchmark::kMicrosecond);
}
BENCHMARK(BM_cuda_gemm<4, 4, true>)->Apply(act_order_shapes);

/// cuBLAS baselines: y (M x N, row-major) = x (M x K) · Wᵀ (N x K), as the column-major
/// product yᵀ = W·xᵀ (the "TN" form cuBLAS's int8 GEMM requires).
template <bool Int8>
void BM_cublas_gemm(benchmark::State& state) {
  if (skip_without_device(state)) return;
  const auto m = static_cast<int>(state.range(0)), n = static_cast<int>(state.range(1)),
             k = static_cast<int>(state.range(2));
  cublasHandle_t handle;
  if (cublasCreate(&handle) != CUBLAS_STATUS_SUCCESS) {
    state.SkipWithError("cublasCreate failed");
    return;
  }
  const std::size_t elem = Int8 ? 1 : 2;
  cuda::device_buffer<std::uint8_t> a(std::size_t(m) * k * elem), w(std::size_t(n) * k * elem),
      y(std::size_t(m) * n * (Int8 ? 4 : 2));
  a.fill_bytes(1);
  w.fill_bytes(1);
  const std::int32_t ione = 1, izero = 0;
  const float fone = 1.0f, fzero = 0.0f;
  cublasStatus_t status = CUBLAS_STATUS_SUCCESS;
  timed_loop(state, [&] {
    if constexpr (Int8)
      status = cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, n, m, k, &ione, w.data(), CUDA_R_8I, k, a.data(),
                            CUDA_R_8I, k, &izero, y.data(), CUDA_R_32I, n, CUBLAS_COMPUTE_32I, CUBLAS_GEMM_DEFAULT);
    else
      status = cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, n, m, k, &fone, w.data(), CUDA_R_16F, k, a.data(),
                            CUDA_R_16F, k, &fzero, y.data(), CUDA_R_16F, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  });
  cublasDestroy(handle);
  if (status != CUBLAS_STATUS_SUCCESS) state.SkipWithError("cublasGemmEx failed");
  state.counters["GOP/s"] = benchmark::Counter(static_cast<double>(state.iterations()) * 2.0 * m * n * k,
                                               benchmark::Counter::kIsRate);
}
void cublas_shapes(benchmark::internal::Benchmark* b) {
  for (long m : {16, 2048})
    for (auto nk : {std::pair<long, long>{4096, 4096}, {11008, 4096}, {4096, 11008}}) b->Args({m, nk.first, nk.second});
  for (long m : {128, 512}) b->Args({m, 4096, 4096});
  for (auto nk : {std::pair<long, long>{4096, 4096}, {11008, 4096}}) b->Args({4096, nk.first, nk.second});
  b->UseManualTime()->Unit(benchmark::kMicrosecond);
}
BENCHMARK(BM_cublas_gemm<true>)->Name("BM_cublas_gemm_int8")->Apply(cublas_shapes);
BENCHMARK(BM_cublas_gemm<false>)->Name("BM_cublas_gemm_fp16")->Apply(cublas_shapes);

/// W4A16 decode: one fp16 token times int4 weights (g128; act_order 1: act-order weights,
/// the token gathered first); bytes = packed weights read.
void BM_cuda_weight_only_w4a16(benchmark::State& state) {
  if (skip_without_device(state)) return;
  const auto n = static_cast<std::size_t>(state.range(0)), k = static_cast<std::size_t>(state.range(1));
  const auto w = cuda::device_weights::upload(random_packed(n, k, 4, 128, state.range(2) != 0));
  const auto xh = random_rows<quarot::half>(k, 5);
  cuda::device_buffer<quarot::half> x(k);
  x.upload(xh.data(), k);
  cuda::device_buffer<quarot::half> y(n);
  timed_loop(state, [&] {
    cuda::weight_only_gemm(cuda::device{}, w, matrix_view<const quarot::half>(x.data(), 1, k, k), nullptr,
                           matrix_view<quarot::half>(y.data(), 1, n, n));
  });
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * n * k / 2));
}
BENCHMARK(BM_cuda_weight_only_w4a16)
    ->Args({4096, 4096, 0})
    ->Args({11008, 4096, 0})
    ->Args({4096, 11008, 0})
    ->Args({4096, 4096, 1})
    ->ArgNames({"n", "k", "act_order"})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_cuda_memcpy_d2d)->Arg(4096 * 4096 / 2)->Arg(11008 * 4096 / 2)->UseManualTime()->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
