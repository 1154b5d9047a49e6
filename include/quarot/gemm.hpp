// quarot — GEMM module: integer GEMM policies (W8A8, W4A8, W4A4), weight pre-packing,
// the CPU kernels (scalar reference, AVX-512 VNNI) and the rotated quantized linear layer.
#pragma once

#include "core.hpp"
#include "gemm/integer_gemm.hpp"
#include "gemm/linear.hpp"
#include "gemm/packing.hpp"
#include "gemm/policies.hpp"
#include "quantize.hpp"
