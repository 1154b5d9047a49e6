// quarot — GEMM module: integer GEMM policies (W8A8, W4A8, W4A4, W4A16i), weight-only GEMM
// policies (W4A16, W8A16, W4A32), weight pre-packing,
// the CPU kernels (scalar reference, AVX-512 VNNI, AVX-VNNI, AVX2), the kernel interface for
// user kernels (gemm/kernel.hpp) and the rotated quantized linear layer.
#pragma once

#include "core.hpp"
#include "gemm/integer_gemm.hpp"
#include "gemm/kernel.hpp"
#include "gemm/linear.hpp"
#include "gemm/packing.hpp"
#include "gemm/policies.hpp"
#include "gemm/weight_only_gemm.hpp"
#include "quantize.hpp"
