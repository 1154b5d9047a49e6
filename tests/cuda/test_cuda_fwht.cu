// CUDA FWHT against the CPU scalar reference. Without a usable device it prints the
// reason and exits 77, which ctest reports as skipped (SKIP_RETURN_CODE).
#include <cmath>
#include <cstdio>
#include <vector>

#include <quarot/backend/cuda/fwht.cuh>
#include <quarot/transform/kronecker.hpp>

int main() {
  const std::string why = quarot::cuda::unavailable_reason();
  if (!why.empty()) {
    std::printf("SKIPPED: %s\n", why.c_str());
    return 77;
  }
  int failures = 0;
  for (unsigned k = 0; k <= 15; ++k) {
    const std::size_t n = std::size_t{1} << k, rows = 5;
    std::vector<float> x(rows * n);
    quarot::xoshiro256 rng(k);
    for (auto& v : x) v = static_cast<float>(rng.normal());
    const quarot::randomized_hadamard cpu(n, 3, quarot::cpu::isa::scalar);
    std::vector<float> expect = x;
    cpu.apply(quarot::cpu::scalar{}, quarot::make_matrix_view(expect, rows, n));

    quarot::cuda::device_buffer<float> dx(x.size()), ds(n);
    dx.upload(x.data(), x.size());
    ds.upload(cpu.signs().data(), n);
    quarot::cuda::walsh_hadamard(quarot::cuda::device{}, quarot::matrix_view<float>(dx.data(), rows, n, n), true,
                                 ds.data());
    std::vector<float> got(x.size());
    dx.download(got.data(), got.size());
    double err = 0;
    for (std::size_t i = 0; i < got.size(); ++i) err = std::max(err, double(std::fabs(got[i] - expect[i])));
    const bool ok = err <= 1e-5 * std::sqrt(double(k + 1));
    std::printf("n = 2^%-2u max |gpu - cpu| = %.3g %s\n", k, err, ok ? "ok" : "FAILED");
    failures += !ok;
  }
  std::printf("%d passed, %d failed\n", 16 - failures, failures);
  return failures ? 1 : 0;
}
