// quarot — umbrella header: everything the library offers on the CPU.
// (CUDA kernels live in quarot/backend/cuda/*.cuh and are included separately by .cu files.)
#pragma once

#include "core.hpp"
#include "gemm.hpp"
#include "io.hpp"
#include "model.hpp"
#include "quantize.hpp"
#include "transform.hpp"
