// The emulation's own test under AddressSanitizer (the sanitizer build): an emulated
// thread's stack is checked like any other, across its barriers, which switch fibers. A
// kernel reads one element past a local array after a __syncthreads, and ASan must report
// a stack-buffer-overflow in it; ctest passes the test on that report
// (PASS_REGULAR_EXPRESSION in tests/CMakeLists.txt), so an emulation that hid it fails.
// (With glibc's swapcontext, ASan's interceptor cleared the shadow of a fiber's whole
// stack at each switch, and such a read went unreported.) Argument: the index read,
// 4 when none (in bounds: 0..3, a clean run).
#include <cstdio>
#include <cstdlib>
#include <vector>

#include <quarot/backend/cuda/common.cuh>

#if !QUAROT_EMULATION_ASAN
#error "stack_checker.cpp is built with -fsanitize=address only"
#endif

// Through a pointer, out of line: UBSan's bounds check would catch local[index] first.
__attribute__((noinline)) int element(const int* values, int index) { return values[index]; }

__global__ void read_past_local_kernel(int* out, unsigned* arrivals, int index) {
  int local[4];
  for (int i = 0; i < 4; ++i) local[i] = static_cast<int>(threadIdx.x) + i;
  // The first thread to arrive at the barrier waits there (a switch out and back in; the
  // last one goes on at once), and it is the one that reads at `index`.
  const bool first = atomicAdd(arrivals, 1u) == 0;
  __syncthreads();
  out[threadIdx.x] = element(local, first ? index : 0);
}

int main(int argc, char** argv) {
  const int index = argc == 2 ? std::atoi(argv[1]) : 4;
  const unsigned threads = 64;
  std::vector<int> out(threads, -1);  // (the emulation's device memory is the host's)
  unsigned arrivals = 0;
  quarot::cuda::detail::launch(read_past_local_kernel, dim3(1), dim3(threads), 0, nullptr, out.data(), &arrivals,
                               index);
  int readers = 0;
  for (unsigned t = 0; t < threads; ++t) {
    const int expected = static_cast<int>(t);
    if (out[t] == expected + index) ++readers;
    else if (out[t] != expected) {
      std::printf("thread %u read %d, expected %d or %d\n", t, out[t], expected, expected + index);
      return 1;
    }
  }
  if (index != 0 && readers != 1) {  // exactly one thread arrived first
    std::printf("%d threads read local[%d], expected 1\n", readers, index);
    return 1;
  }
  std::printf("read local[%d] in the first thread at the barrier, no report\n", index);
  return 0;
}
