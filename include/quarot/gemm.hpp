// quarot — GEMM module: integer GEMM policies (W8A8, W4A8, W4A4), weight pre-packing and
// the CPU kernels (scalar reference, AVX-512 VNNI).
#pragma once

#include "core.hpp"
#include "gemm/integer_gemm.hpp"
#include "gemm/packing.hpp"
#include "gemm/policies.hpp"
#include "quantize.hpp"
