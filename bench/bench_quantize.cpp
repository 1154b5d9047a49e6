// Quantizers (issue: "Quantizers"):
//   BM_quantize_activations/<bits>/<threads>  per-token RTN, fp32 in -> packed levels + scales;
//                                             bytes/s counts the fp32 input bytes
//   BM_memcpy_input/<threads>                 memcpy of the same input bytes (read + write)
//   BM_rtn_weights                            RTN of a 4096 x 4096 layer, 4-bit, group 128
//   BM_clip_search/<10·norm>                  RTN with the MSE clip search (80 candidates per
//                                             group, GPTQ's find_params) of 256 rows of that
//                                             layer, one thread; bytes/s counts the weights
//   BM_clip_search_pow_reference/<10·norm>    baseline: the same search done the plain way
//                                             (fake-quantize, then std::pow per element, or
//                                             d·d for norm 2, as quarot did before
//                                             clip_error), same rows
//   BM_gptq                                   GPTQ of a 4096 x 4096 layer (Hessian from 2048
//                                             rows, given), 4-bit, group 128, act-order;
//                                             counters: output error of GPTQ and RTN
#include <cmath>
#include <cstring>

#include <quarot/quantize.hpp>

#include "bench_common.hpp"

namespace {

constexpr std::size_t act_cols = 4096;

void BM_quantize_activations(benchmark::State& state) {
  const int bits = static_cast<int>(state.range(0));
  const auto threads = static_cast<unsigned>(state.range(1));
  const std::size_t rows = bench::out_of_cache_bytes / (act_cols * sizeof(float));
  const auto x = bench::random_buffer<float>(rows * act_cols);
  quarot::quantized_activations out;
  quarot::thread_pool pool(threads);
  const auto view = quarot::make_matrix_view(x, rows, act_cols);
  quarot::quantize_activations(view, bits, 1.0f, out, &pool);  // allocate outside the loop
  for (auto _ : state) {
    quarot::quantize_activations(view, bits, 1.0f, out, &pool);
    benchmark::DoNotOptimize(out.data.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * x.size() * sizeof(float)));
  state.SetLabel(quarot::cpu::to_string(quarot::cpu::default_isa()));
}

void BM_memcpy_input(benchmark::State& state) {
  // Counted like the quantizer: the input bytes once (so the ratio is "share of a copy").
  const std::size_t bytes = bench::out_of_cache_bytes;
  std::vector<char> src(bytes, 1), dst(bytes, 2);
  quarot::thread_pool pool(static_cast<unsigned>(state.range(0)));
  for (auto _ : state) {
    pool.parallel_for(bytes / 4096, [&](std::size_t b, std::size_t e) {
      std::memcpy(dst.data() + b * 4096, src.data() + b * 4096, (e - b) * 4096);
    });
    benchmark::DoNotOptimize(dst.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * bytes));
}

struct layer {
  std::size_t n = 4096, k = 4096, tokens = 2048;
  std::vector<float> w, x;
  Eigen::MatrixXd h;
  layer() {
    w = bench::random_buffer<float>(n * k, 1);
    for (auto& v : w) v *= 0.02f;
    // Correlated calibration inputs: a rank-64 signal plus noise, a few loud channels.
    quarot::xoshiro256 rng(2);
    Eigen::MatrixXf basis = Eigen::MatrixXf::NullaryExpr(64, Eigen::Index(k), [&] { return float(rng.normal()); });
    Eigen::MatrixXf coef = Eigen::MatrixXf::NullaryExpr(Eigen::Index(tokens), 64, [&] { return float(rng.normal()); });
    Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> xm = coef * basis;
    for (Eigen::Index c = 0; c < Eigen::Index(k); c += 97) xm.col(c) *= 10.0f;
    x.assign(xm.data(), xm.data() + xm.size());
    for (auto& v : x) v += 0.3f * float(rng.normal());
    quarot::hessian_accumulator acc(k);
    acc.add(quarot::make_matrix_view(x, tokens, k));
    h = acc.hessian();
  }
  double output_error(const std::vector<float>& w_hat) const {
    using M = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    const Eigen::Map<const M> W(w.data(), Eigen::Index(n), Eigen::Index(k)), Wh(w_hat.data(), Eigen::Index(n), Eigen::Index(k));
    const Eigen::Map<const M> X(x.data(), 256, Eigen::Index(k));  // 256 of the calibration rows
    const M ref = X * W.transpose(), got = X * Wh.transpose();
    return double((ref - got).norm() / ref.norm());
  }
};

const layer& the_layer() {
  static const layer l;
  return l;
}

const quarot::quant_params w4g128{.bits = 4, .symmetric = true, .gran = quarot::granularity::per_group, .group_size = 128};

void BM_rtn_weights(benchmark::State& state) {
  const auto& l = the_layer();
  quarot::thread_pool pool(2);
  const quarot::rtn_quantizer rtn(w4g128);
  std::vector<float> w_hat(l.w.size());
  for (auto _ : state) rtn.fake_quantize(quarot::make_matrix_view(l.w, l.n, l.k), quarot::make_matrix_view(w_hat, l.n, l.k), &pool);
  state.counters["output_error"] = l.output_error(w_hat);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * l.w.size() * 4));
}

constexpr std::size_t search_rows = 256;

quarot::quant_params searched(float norm) {
  auto p = w4g128;
  p.search = {.enabled = true, .grid = 100, .max_shrink = 0.8f, .norm = norm};
  return p;
}

void BM_clip_search(benchmark::State& state) {
  const auto& l = the_layer();
  const quarot::rtn_quantizer rtn(searched(float(state.range(0)) / 10));
  quarot::quantized_matrix q;
  for (auto _ : state) {
    q = rtn.quantize(quarot::make_matrix_view(l.w.data(), search_rows, l.k));
    benchmark::DoNotOptimize(q.scales.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * search_rows * l.k * 4));
  state.SetLabel(quarot::cpu::to_string(quarot::cpu::default_isa()));
}

void BM_clip_search_pow_reference(benchmark::State& state) {
  const auto& l = the_layer();
  const auto p = searched(float(state.range(0)) / 10);
  std::vector<float> work(128);
  std::vector<float> scales(search_rows * l.k / 128);
  quarot::cpu::dispatch(quarot::cpu::default_isa(), [&](auto tag) {
    for (auto _ : state) {
      for (std::size_t g = 0; g < scales.size(); ++g) {
        const float* x = l.w.data() + g * 128;
        const auto r = quarot::detail::value_range(tag, x, 128);
        double best_err = INFINITY;
        for (int i = 0; i < 80; ++i) {
          const float shrink = 1.0f - float(i) / 100.0f;
          const auto cand = quarot::detail::rtn_grid(shrink * r.lo, shrink * r.hi, p);
          quarot::detail::fake_quantize_run(tag, x, 128, cand, work.data());
          double err = 0;
          for (std::size_t k0 = 0; k0 < 128 && err < best_err; k0 += 64)  // the same early exit
            for (std::size_t k = k0; k < k0 + 64; ++k) {
              const double d = work[k] - x[k];
              err += p.search.norm == 2.0f ? d * d : double(std::pow(std::fabs(work[k] - x[k]), p.search.norm));
            }
          if (err < best_err) {
            best_err = err;
            scales[g] = cand.scale;
          }
        }
      }
      benchmark::DoNotOptimize(scales.data());
    }
  });
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * search_rows * l.k * 4));
}

void BM_gptq(benchmark::State& state) {
  const auto& l = the_layer();
  quarot::thread_pool pool(static_cast<unsigned>(state.range(0)));
  quarot::gptq_options opt;
  opt.quant = w4g128;
  opt.act_order = state.range(1) != 0;
  quarot::gptq_result res;
  for (auto _ : state) res = quarot::gptq_quantize(quarot::make_matrix_view(l.w, l.n, l.k), l.h, opt, &pool);
  std::vector<float> rtn_hat(l.w.size());
  quarot::rtn_quantizer(w4g128).fake_quantize(quarot::make_matrix_view(l.w, l.n, l.k), quarot::make_matrix_view(rtn_hat, l.n, l.k));
  state.counters["output_error_gptq"] = l.output_error(res.w_hat);
  state.counters["output_error_rtn"] = l.output_error(rtn_hat);
}

}  // namespace

BENCHMARK(BM_memcpy_input)->Arg(1)->Arg(2)->UseRealTime();
BENCHMARK(BM_quantize_activations)->Args({4, 1})->Args({8, 1})->Args({4, 2})->UseRealTime();
BENCHMARK(BM_rtn_weights)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_clip_search)->Arg(24)->Arg(20)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_clip_search_pow_reference)->Arg(24)->Arg(20)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_gptq)->Args({2, 1})->Args({2, 0})->Args({1, 1})->Unit(benchmark::kMillisecond)->Iterations(1)->UseRealTime();

BENCHMARK_MAIN();
