// examples/cuda_quantized_linear.cu compiled by the host compiler against the CPU
// emulation of CUDA (tests/cuda/emulation/), run on a small layer: the example's kernels
// and its bit-for-bit check against the CPU run on every machine.
#include "../../examples/cuda_quantized_linear.cu"
