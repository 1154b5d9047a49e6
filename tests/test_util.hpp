// Helpers shared by the tests.
#pragma once

#include <cstdint>
#include <vector>

#include <quarot/core.hpp>

namespace test_util {

/// Every CPU ISA this machine can run, scalar first.
inline std::vector<quarot::cpu::isa> machine_isas() {
  std::vector<quarot::cpu::isa> v;
  for (auto i : {quarot::cpu::isa::scalar, quarot::cpu::isa::avx2, quarot::cpu::isa::avx512, quarot::cpu::isa::avx512vnni})
    if (quarot::cpu::supports(i)) v.push_back(i);
  return v;
}

/// rows x cols standard normal values (times scale) from quarot's portable PRNG.
inline std::vector<float> random_matrix(std::size_t rows, std::size_t cols, std::uint64_t seed, float scale = 1.0f) {
  quarot::xoshiro256 rng(seed);
  std::vector<float> x(rows * cols);
  for (auto& v : x) v = static_cast<float>(rng.normal()) * scale;
  return x;
}

}  // namespace test_util
