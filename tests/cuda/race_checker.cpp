// The race checker's own test: built with -fsanitize=thread against the CPU emulation of
// CUDA (tests/cuda/emulation/, "race"), it runs one kernel with a fault that makes
// __syncthreads, every mbarrier, or every __threadfence order no memory, and
// ThreadSanitizer must report the data races that leaves in that kernel. ctest passes it
// on the report, which names the kernel (PASS_REGULAR_EXPRESSION in tests/CMakeLists.txt);
// a checker that saw nothing would fail it. Argument: syncthreads | mbarrier |
// threadfence.
#include <cstdio>
#include <string>
#include <vector>

#include <quarot/backend/cuda/fwht.cuh>
#include <quarot/backend/cuda/gemm.cuh>
#include <quarot/gemm/integer_gemm.hpp>
#include <quarot/quantize/activation.hpp>
#include <quarot/quantize/rtn.hpp>

#include "cuda_test_util.hpp"

#if !QUAROT_EMULATION_TSAN
#error "race_checker.cpp is built with -fsanitize=thread only"
#endif

int main(int argc, char** argv) {
  namespace emu = quarot_cuda_emulation;
  const std::string fault = argc == 2 ? argv[1] : "";
  if (fault == "syncthreads") {
    // 2^12 points a row: a row spans several warps, whose butterfly passes exchange through
    // shared memory between __syncthreads (fwht_levels).
    emu::race::syncthreads_orders_nothing = true;
    const std::size_t n = 4096, rows = 2;
    const auto x = cuda_test::random_values(rows * n, 1);
    quarot::cuda::device_buffer<float> dx(x.size());
    dx.upload(x.data(), x.size());
    quarot::cuda::hadamard_transform(n).apply(quarot::cuda::device{}, quarot::matrix_view<float>(dx.data(), rows, n, n));
  } else if (fault == "mbarrier") {
    // The cluster kernel's TMA producer and wgmma consumers hand each stage over through
    // the stage's full and empty mbarriers only.
    const cuda_test::emulated_hopper hopper(true);
    emu::race::mbarriers_order_nothing = true;
    const std::string failure = quarot::cuda::detail::wgmma_cluster_self_test();
    std::printf("cluster self-test: %s\n", failure.empty() ? "passed" : failure.c_str());
  } else if (fault == "threadfence") {
    // Split-K on one output tile: its two blocks run on different block workers, and the
    // partials of the one that counts first reach the last one only through the fences
    // around the tile's count (split_k_last).
    emu::race::fences_order_nothing = true;
    const std::size_t m = 8, n = 64, k = 2048;
    const auto x = cuda_test::random_values(m * k, 2);
    const auto w = cuda_test::random_values(n * k, 3, 3.0f);
    const quarot::quant_params wp{.bits = 8, .symmetric = true, .gran = quarot::granularity::per_channel};
    const auto packed = quarot::gemm::pack_weights(
        quarot::rtn_quantizer(wp, quarot::cpu::isa::scalar).quantize(quarot::make_matrix_view(w, n, k)), 8);
    quarot::cuda::device_buffer<float> dx(x.size()), dy(m * n);
    dx.upload(x.data(), x.size());
    quarot::cuda::device_activations xd;
    quarot::cuda::quantize_activations(quarot::cuda::device{}, quarot::matrix_view<const float>(dx.data(), m, k, k), 8,
                                       1.0f, xd);
    quarot::gemm::integer_gemm<quarot::gemm::integer_policy<quarot::cuda::device, 8, 8>> op(
        packed, quarot::cuda::mma_path::int8_mma);
    op.set_split_k(2);
    op(xd, nullptr, quarot::matrix_view<float>(dy.data(), m, n, n));
  } else {
    std::fprintf(stderr, "usage: %s syncthreads|mbarrier|threadfence\n", argv[0]);
    return 2;
  }
  std::printf("ran the kernel with the fault '%s'\n", fault.c_str());
  return 0;
}
