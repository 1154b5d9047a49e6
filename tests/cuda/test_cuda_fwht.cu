// CUDA Hadamard transforms against the CPU scalar reference, bit for bit: n = 2^k (fp32,
// fp16, bf16; strided rows; row counts that leave partial blocks) and Kronecker sizes
// (the same, on fewer shapes). Argument errors are checked first (they need no device);
// then, without a usable device, it prints the reason and exits 77, which ctest reports as
// skipped.
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

/// GPU randomized Hadamard of a Kronecker size (n = m·p) vs the CPU scalar transform on
/// the same storage type: every element bit for bit (both sum H_m's terms by the CPU's
/// table lookup, in its order).
template <class T>
void check_kronecker(cuda_test::counter& t, std::size_t n, std::size_t rows, std::size_t pad = 0) {
  const std::size_t stride = n + pad;
  const auto x = convert<T>(cuda_test::random_values(rows * stride, n));
  std::vector<T> expect = x;
  randomized_hadamard(n, 5, cpu::isa::scalar).apply(cpu::scalar{}, make_matrix_view(expect, rows, n, stride));
  cuda::device_buffer<T> dx(x.size());
  dx.upload(x.data(), x.size());
  const cuda::randomized_hadamard q(n, 5);
  q.apply(cuda::device{}, matrix_view<T>(dx.data(), rows, n, stride));
  std::vector<T> got(x.size());
  dx.download(got.data(), got.size());
  std::size_t bad = 0;
  for (std::size_t i = 0; i < got.size(); ++i) bad += std::memcmp(&got[i], &expect[i], sizeof(T)) != 0;
  t.check(bad == 0, "Kronecker n = " + std::to_string(n) + " (" + q.plan().describe() + ") rows " +
                        std::to_string(rows) + " stride " + std::to_string(stride) + " " + cuda_test::type_name<T>() +
                        ": " + std::to_string(bad) + " elements differ from the CPU");
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
  // Kronecker sizes: H_12 .. H_40 alone (p = 1: one to ten chunks of 4 in tiles of one
  // column), 80 (p = 2 or 4), 5120, 172 x 64 (tiles of 32 or 64 columns), 28 x 512
  // (Llama-3's 14336).
  for (std::size_t n : {12, 20, 28, 40, 40 * 2, 5120, 11008}) check_kronecker<float>(t, n, 3);
  if (!cuda_test::quick) check_kronecker<float>(t, 14336, 2, 5);
  check_kronecker<quarot::half>(t, 11008, 2, 3);
  check_kronecker<bfloat16>(t, 96, 5);
  t.expect_error(errc::invalid_argument, "transform applied to rows of another size", [] {
    cuda::hadamard_transform h(64);
    h.apply(cuda::device{}, matrix_view<float>(nullptr, 1, 32, 32));
  });
  return t.finish();
}
