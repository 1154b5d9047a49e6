// A user GEMM kernel behind the library's policies (gemm/kernel.hpp): a portable C++
// kernel that unpacks each k-quad of a 64-column weight tile once and reuses it for all
// rows of the tile, which the compiler vectorizes for whatever -march it is given. It
// plugs into integer_gemm and quarot::linear through its policy, keeps the library
// kernels' order of operations, and so must equal them bit for bit; the example checks
// that and times the three (scalar tag, this kernel, the best built-in kernel).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include <quarot/quarot.hpp>

namespace {

struct portable_kernel {
  static constexpr std::size_t tile_rows = 4;  // rows per call (even, 2..16)

  static void tile(const quarot::gemm::kernel_operands& op, std::size_t m0, std::size_t rows, std::size_t n0,
                   std::size_t cols, float* /*scratch*/, float* out, std::size_t ldo) noexcept {
    float c[tile_rows][64] = {};
    for (std::size_t g = 0; g < op.groups; ++g) {
      const std::size_t q_end = std::min(op.quads, (g + 1) * op.group_quads);
      std::int32_t acc[tile_rows][64] = {};
      for (std::size_t q = g * op.group_quads; q < q_end; ++q) {
        // The tile's four (panel, quad) blocks are adjacent: 16 columns x 4 k each, value
        // 4·column + kk; 4-bit blocks hold value v in the low nibble of byte v (v < 32) or
        // the high nibble of byte v - 32.
        const std::uint8_t* blocks = op.w + ((n0 / 64) * op.quads + q) * 4 * op.block_bytes;
        std::int16_t w[4][64];  // [kk][column]
        for (std::size_t j = 0; j < 64; ++j)
          for (std::size_t kk = 0; kk < 4; ++kk) {
            const std::uint8_t* blk = blocks + (j / 16) * op.block_bytes;
            const std::size_t v = (j % 16) * 4 + kk;
            w[kk][j] = op.bits == 8 ? std::int16_t(std::int8_t(blk[v]))
                                    : std::int16_t(v < 32 ? blk[v] & 0x0f : blk[v - 32] >> 4);
          }
        for (std::size_t r = 0; r < rows; ++r) {
          const std::uint8_t* a = op.a + (m0 + r) * op.lda + 4 * q;
          for (std::size_t kk = 0; kk < 4; ++kk)
            for (std::size_t j = 0; j < 64; ++j) acc[r][j] += std::int32_t(a[kk]) * w[kk][j];
        }
      }
      // The exact group sum, corrected (gemm/kernel.hpp), folded as the library does.
      const std::size_t gi = quarot::gemm::group_data_index(op.groups, g, n0);
      for (std::size_t r = 0; r < rows; ++r) {
        const std::int32_t rs = op.rowsum[(m0 + r) * op.groups + g];
        for (std::size_t j = 0; j < 64; ++j) {
          const std::int32_t exact = acc[r][j] - 128 * op.colsums[gi + j] - op.zeros[gi + j] * rs;
          c[r][j] = std::fma(op.scales[gi + j], static_cast<float>(exact), c[r][j]);
        }
      }
    }
    for (std::size_t r = 0; r < rows; ++r)
      for (std::size_t j = 0; j < cols; ++j)
        out[r * ldo + j] = std::fma(op.row_scales[m0 + r], c[r][j], op.bias ? op.bias[n0 + j] : 0.0f);
  }
};
static_assert(quarot::gemm::integer_tile_kernel<portable_kernel>);

template <class F>
double milliseconds(F&& f) {
  f();
  const auto t = std::chrono::steady_clock::now();
  for (int i = 0; i < 3; ++i) f();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count() / 3;
}

}  // namespace

int main() {
  const std::size_t m = 64, n = 1024, k = 4096;  // 64 tokens through a 4096 -> 1024 layer
  quarot::xoshiro256 rng(3);
  std::vector<float> x(m * k), w(n * k), bias(n);
  for (auto& v : x) v = static_cast<float>(rng.normal());
  for (auto& v : w) v = 0.02f * static_cast<float>(rng.normal());
  for (auto& v : bias) v = static_cast<float>(rng.normal());
  const auto wq = quarot::rtn_quantizer({.bits = 4, .symmetric = false, .gran = quarot::granularity::per_group,
                                         .group_size = 128})
                      .quantize(quarot::make_matrix_view(w, n, k));
  const auto packed = quarot::gemm::pack_weights(wq, 4);

  // The same layer three times; only the policy's backend differs.
  quarot::linear<quarot::gemm::integer_policy<portable_kernel, 4, 8>> mine(packed, bias);
  quarot::linear<quarot::gemm::w4a8_policy<quarot::cpu::scalar>> scalar(packed, bias);
  quarot::thread_pool pool(2);
  std::vector<float> y_mine(m * n), y_scalar(m * n), y_best(m * n);
  const auto xv = quarot::make_matrix_view(std::as_const(x), m, k);
  const double t_mine = milliseconds([&] { mine.forward(xv, quarot::make_matrix_view(y_mine, m, n), &pool); });
  const double t_scalar = milliseconds([&] { scalar.forward(xv, quarot::make_matrix_view(y_scalar, m, n), &pool); });
  bool same = std::memcmp(y_mine.data(), y_scalar.data(), y_mine.size() * 4) == 0;
  std::printf("W4A8 %zux%zux%zu, groups of 128, 2 threads\n", m, n, k);
  std::printf("  cpu::scalar tag       %8.2f ms\n", t_scalar);
  std::printf("  portable_kernel       %8.2f ms  (bit-identical to scalar: %s)\n", t_mine, same ? "yes" : "NO");
  if (quarot::cpu::supports(quarot::cpu::isa::avx512vnni)) {
    quarot::linear<quarot::gemm::w4a8_policy<quarot::cpu::avx512vnni_backend>> best(packed, bias);
    const double t_best = milliseconds([&] { best.forward(xv, quarot::make_matrix_view(y_best, m, n), &pool); });
    const bool same_best = std::memcmp(y_mine.data(), y_best.data(), y_mine.size() * 4) == 0;
    same = same && same_best;
    std::printf("  AVX-512 VNNI kernel   %8.2f ms  (bit-identical: %s)\n", t_best, same_best ? "yes" : "NO");
  }
  return same ? 0 : 1;
}
