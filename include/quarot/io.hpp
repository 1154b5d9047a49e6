// quarot — tensor I/O module: NumPy .npy (read/write), .safetensors (read, mmap; write) and
// GGUF (read, mmap; F32/F16/Q4_0/Q4_1/Q8_0 dequantization).
#pragma once

#include "io/gguf.hpp"
#include "io/npy.hpp"
#include "io/safetensors.hpp"
#include "io/tensor.hpp"
