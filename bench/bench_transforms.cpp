// Fast Hadamard transforms vs memcpy of the same bytes (issue: "Orthogonal transforms").
//
// Each transform runs in place over a batch of rows; bytes/s counts bytes read + written,
// so a memory-bound transform approaches the memcpy figure of the same batch size.
//   BM_memcpy/<bytes>/<threads>
//   BM_hadamard<T>/<n>/<batch bytes>/<threads>     power-of-two and Kronecker sizes
//   BM_dense_eigen/<n>                             the same rotation as a dense Eigen matmul
#include <cmath>

#include <Eigen/Dense>

#include <quarot/transform.hpp>

#include "bench_common.hpp"

namespace {

template <class T>
void BM_hadamard(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const auto batch = static_cast<std::size_t>(state.range(1));
  const auto threads = static_cast<unsigned>(state.range(2));
  const std::size_t rows = std::max<std::size_t>(1, batch / (n * sizeof(T)));
  auto x = bench::random_buffer<T>(rows * n);
  const quarot::hadamard_transform h(n);
  quarot::thread_pool pool(threads);
  auto view = quarot::make_matrix_view(x, rows, n);
  for (auto _ : state) {
    h.apply(view, &pool);
    benchmark::ClobberMemory();
  }
  const double bytes = 2.0 * double(rows * n * sizeof(T));
  state.SetBytesProcessed(static_cast<int64_t>(double(state.iterations()) * bytes));
  state.counters["ns_per_row"] =
      benchmark::Counter(double(rows), benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
  state.counters["m"] = double(h.plan().m);
  state.SetLabel(quarot::cpu::to_string(h.isa()));
}

void BM_memcpy(benchmark::State& state) {
  bench::memcpy_baseline(state, static_cast<std::size_t>(state.range(0)), static_cast<unsigned>(state.range(1)));
}

void BM_dense_eigen(benchmark::State& state) {
  const auto n = static_cast<Eigen::Index>(state.range(0));
  const Eigen::Index rows = 64;
  const Eigen::MatrixXf h = Eigen::MatrixXf::Random(n, n);
  const Eigen::MatrixXf x = Eigen::MatrixXf::Random(rows, n);
  Eigen::MatrixXf y(rows, n);
  for (auto _ : state) {
    y.noalias() = x * h;
    benchmark::DoNotOptimize(y.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * 2 * rows * n * 4);
  state.counters["ns_per_row"] =
      benchmark::Counter(double(rows), benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}

constexpr long big = static_cast<long>(bench::out_of_cache_bytes);
constexpr long small = static_cast<long>(bench::in_cache_bytes);

void pow2_args(benchmark::internal::Benchmark* b) {
  for (long threads : {1, 2})
    for (long k = 7; k <= 15; ++k) b->Args({1L << k, big, threads});
  for (long k = 7; k <= 15; ++k) b->Args({1L << k, small, 1});
}

// n = m·2^k for the dense factors real models need, next to 16384 (their next power of two).
void kronecker_args(benchmark::internal::Benchmark* b) {
  for (long n : {12288L, 10240L, 14336L, 9216L, 13312L, 15360L, 13824L, 8960L, 9984L, 11008L, 16384L})
    b->Args({n, big, 1});
  for (long n : {11008L, 14336L, 16384L}) b->Args({n, big, 2});
}

}  // namespace

BENCHMARK(BM_memcpy)->Args({big, 1})->Args({big, 2})->Args({small, 1})->UseRealTime();
BENCHMARK_TEMPLATE(BM_hadamard, float)->Apply(pow2_args)->UseRealTime();
BENCHMARK_TEMPLATE(BM_hadamard, float)->Name("BM_hadamard_kronecker<float>")->Apply(kronecker_args)->UseRealTime();
BENCHMARK_TEMPLATE(BM_hadamard, quarot::half)->Args({4096, big, 1})->Args({16384, big, 1})->Args({11008, big, 1})->UseRealTime();
BENCHMARK_TEMPLATE(BM_hadamard, quarot::bfloat16)->Args({4096, big, 1})->Args({16384, big, 1})->UseRealTime();
BENCHMARK(BM_dense_eigen)->Arg(1024)->Arg(4096);

BENCHMARK_MAIN();
