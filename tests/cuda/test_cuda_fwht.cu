// CUDA Hadamard transforms against the CPU scalar reference: n = 2^k bit for bit (fp32,
// fp16, bf16; strided rows; row counts that leave partial blocks), Kronecker sizes to fp32
// rounding. Argument errors are checked first (they need no device); then, without a
// usable device, it prints the reason and exits 77, which ctest reports as skipped.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <quarot/backend/cuda/fwht.cuh>
#include <quarot/transform/kronecker.hpp>

#include "cuda_test_util.hpp"

namespace {

using namespace quarot;  // test file

template <class T>
std::vector<T> convert(const std::vector<float>& x) {
  std::vector<T> out(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) out[i] = from_float<T>(x[i]);
  return out;
}

/// GPU randomized (or plain) Hadamard of rows x n (row stride n + pad) vs the CPU scalar
/// transform on the same storage type: every element bit for bit.
template <class T>
void check_pow2(cuda_test::counter& t, unsigned k, std::size_t rows, std::size_t pad, bool with_signs) {
  const std::size_t n = std::size_t{1} << k, stride = n + pad;
  const auto x = convert<T>(cuda_test::random_values(rows * stride, 100 + k));
  std::vector<T> expect = x;
  const randomized_hadamard cpu(n, 7 + k, cpu::isa::scalar);
  const hadamard_transform plain(n, cpu::isa::scalar);
  if (with_signs) cpu.apply(cpu::scalar{}, make_matrix_view(expect, rows, n, stride));
  else plain.apply(cpu::scalar{}, make_matrix_view(expect, rows, n, stride));

  cuda::device_buffer<T> dx(x.size());
  dx.upload(x.data(), x.size());
  const matrix_view<T> view(dx.data(), rows, n, stride);
  if (with_signs) cuda::randomized_hadamard(n, 7 + k).apply(cuda::device{}, view);
  else cuda::hadamard_transform(n).apply(cuda::device{}, view);
  std::vector<T> got(x.size());
  dx.download(got.data(), got.size());
  std::size_t bad = 0;
  for (std::size_t i = 0; i < got.size(); ++i) bad += std::memcmp(&got[i], &expect[i], sizeof(T)) != 0;
  t.check(bad == 0, "n = 2^" + std::to_string(k) + " rows " + std::to_string(rows) + " stride " +
                        std::to_string(stride) + (with_signs ? " signs" : "") + " " + cuda_test::type_name<T>() +
                        ": " + std::to_string(bad) + " elements differ from the CPU");
}

void check_kronecker(cuda_test::counter& t, std::size_t n, std::size_t rows) {
  const auto x = cuda_test::random_values(rows * n, n);
  std::vector<float> expect = x;
  randomized_hadamard(n, 5, cpu::isa::scalar).apply(cpu::scalar{}, make_matrix_view(expect, rows, n));
  cuda::device_buffer<float> dx(x.size());
  dx.upload(x.data(), x.size());
  const cuda::randomized_hadamard q(n, 5);
  q.apply(cuda::device{}, matrix_view<float>(dx.data(), rows, n, n));
  std::vector<float> got(x.size());
  dx.download(got.data(), got.size());
  double err = 0, mag = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    err = std::max(err, std::fabs(double(got[i]) - expect[i]));
    mag = std::max(mag, std::fabs(double(expect[i])));
  }
  t.check(err <= 1e-6 * mag * std::sqrt(double(q.plan().m)),
          "Kronecker n = " + std::to_string(n) + " (" + q.plan().describe() + "): max |gpu - cpu| = " +
              std::to_string(err) + " of max " + std::to_string(mag));
}

}  // namespace

int main() {
  cuda_test::counter t;
  // Argument errors (no device needed: they are checked before any CUDA call).
  t.expect_error(errc::invalid_argument, "walsh_hadamard of 48 columns", [] {
    cuda::walsh_hadamard(cuda::device{}, matrix_view<float>(nullptr, 2, 48, 48));
  });
  t.expect_error(errc::invalid_argument, "walsh_hadamard of 2^16 columns", [] {
    cuda::walsh_hadamard(cuda::device{}, matrix_view<float>(nullptr, 1, 65536, 65536));
  });
  t.expect_error(errc::unsupported, "Hadamard transform of order 3", [] { cuda::hadamard_transform h(3); });
  if (!cuda_test::device_ready()) return t.skip();

  for (unsigned k = 0; k <= 15; ++k) {
    check_pow2<float>(t, k, 5, 0, true);
    if (!cuda_test::quick) check_pow2<float>(t, k, cuda_test::emulated && k > 10 ? 3 : 130, 3, k % 2 == 0);
  }
  for (unsigned k : {3u, 8u, 11u, 14u, 15u}) {
    check_pow2<quarot::half>(t, k, 7, 1, true);
    check_pow2<bfloat16>(t, k, 7, 0, true);
  }
  // fp16 runs stored as 8-byte (2^13, 2^15) and 4-byte (2^14) words: rows 16-, 8-, 4- and
  // 2-byte aligned in turn (pad 2 puts rows at 4-byte steps, pad 4 at 8-byte steps).
  for (unsigned k : {13u, 14u, 15u})
    for (std::size_t pad : {2, 4}) check_pow2<quarot::half>(t, k, 4, pad, k != 14);
  for (std::size_t n : {12, 20, 28, 40, 5120, 11008}) check_kronecker(t, n, 3);
  t.expect_error(errc::invalid_argument, "transform applied to rows of another size", [] {
    cuda::hadamard_transform h(64);
    h.apply(cuda::device{}, matrix_view<float>(nullptr, 1, 32, 32));
  });
  return t.finish();
}
