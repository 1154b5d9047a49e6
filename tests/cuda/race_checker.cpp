// The race checker's own test: built with -fsanitize=thread against the CPU emulation of
// CUDA (tests/cuda/emulation/, "race"), it runs one kernel with a fault that makes
// __syncthreads, or every mbarrier, order no memory, and ThreadSanitizer must report the
// data races that leaves in that kernel. ctest passes it on the report, which names the
// kernel (PASS_REGULAR_EXPRESSION in tests/CMakeLists.txt); a checker that saw nothing
// would fail it. Argument: syncthreads | mbarrier.
#include <cstdio>
#include <string>
#include <vector>

#include <quarot/backend/cuda/fwht.cuh>
#include <quarot/backend/cuda/gemm.cuh>

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
  } else {
    std::fprintf(stderr, "usage: %s syncthreads|mbarrier\n", argv[0]);
    return 2;
  }
  std::printf("ran the kernel with the fault '%s'\n", fault.c_str());
  return 0;
}
