// test_cuda_fwht.cu compiled by the host compiler against the CPU emulation of CUDA
// (tests/cuda/emulation/): the same checks on the same kernels, run on every machine.
#include "test_cuda_fwht.cu"
