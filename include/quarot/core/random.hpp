// quarot — a portable PRNG. std::mt19937 is portable but its distributions are not
// (std::normal_distribution differs between standard libraries), so randomized
// rotations draw from our own generator: the same seed gives the same signs on every
// platform and compiler.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

namespace quarot {

/// SplitMix64 (Steele, Lea, Flood 2014), used to expand a 64-bit seed.
constexpr std::uint64_t splitmix64(std::uint64_t& state) noexcept {
  std::uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/// xoshiro256** (Blackman and Vigna 2018), seeded through SplitMix64 as its authors advise.
class xoshiro256 {
 public:
  using result_type = std::uint64_t;
  explicit constexpr xoshiro256(std::uint64_t seed) noexcept {
    for (auto& w : s_) w = splitmix64(seed);
  }
  static constexpr result_type min() noexcept { return 0; }
  static constexpr result_type max() noexcept { return ~result_type{0}; }

  constexpr result_type operator()() noexcept {
    const std::uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const std::uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }

  /// Uniform in [0, 1) with 53 random bits: portable to the last bit.
  constexpr double uniform() noexcept { return double((*this)() >> 11) * 0x1.0p-53; }

  /// Standard normal by Box-Muller. Uses std::log/cos/sqrt, so it is reproducible for a
  /// given libm (the signs of random_signs do not depend on libm at all).
  double normal() noexcept {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    double u1;
    do u1 = uniform();
    while (u1 <= 0.0);
    const double u2 = uniform();
    const double r = std::sqrt(-2.0 * std::log(u1));
    const double a = 6.283185307179586476925 * u2;
    spare_ = r * std::sin(a);
    has_spare_ = true;
    return r * std::cos(a);
  }

 private:
  static constexpr std::uint64_t rotl(std::uint64_t x, int k) noexcept { return (x << k) | (x >> (64 - k)); }
  std::uint64_t s_[4]{};
  double spare_ = 0.0;
  bool has_spare_ = false;
};

/// n signs in {+1, -1}, one bit (the top bit) of each xoshiro256** draw.
inline std::vector<float> random_signs(std::size_t n, std::uint64_t seed) {
  xoshiro256 rng(seed);
  std::vector<float> s(n);
  for (auto& v : s) v = (rng() >> 63) ? -1.0f : 1.0f;
  return s;
}

}  // namespace quarot
