// Shared helpers for the benchmarks: buffers touched before timing, memcpy baseline.
#pragma once

#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstring>
#include <vector>

#include <quarot/core.hpp>

namespace bench {

inline constexpr std::size_t out_of_cache_bytes = std::size_t{64} << 20;  // 64 MiB
inline constexpr std::size_t in_cache_bytes = std::size_t{256} << 10;     // 256 KiB

template <class T>
std::vector<T> random_buffer(std::size_t n, std::uint64_t seed = 1) {
  quarot::xoshiro256 rng(seed);
  std::vector<T> v(n);
  for (auto& x : v) x = quarot::from_float<T>(static_cast<float>(rng.normal()));
  return v;
}

/// memcpy of `bytes` (counted as read + write, like the in-place transforms), split over
/// `threads` threads of a pool the same way the transforms split rows.
inline void memcpy_baseline(benchmark::State& state, std::size_t bytes, unsigned threads) {
  std::vector<char> src(bytes, 1), dst(bytes, 2);
  quarot::thread_pool pool(threads);
  for (auto _ : state) {
    pool.parallel_for(bytes / 4096, [&](std::size_t b, std::size_t e) {
      std::memcpy(dst.data() + b * 4096, src.data() + b * 4096, (e - b) * 4096);
    });
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * 2 * static_cast<int64_t>(bytes));
}

}  // namespace bench
