// quarot — tensor I/O module: NumPy .npy (read/write) and .safetensors (read, mmap; write).
#pragma once

#include "io/npy.hpp"
#include "io/safetensors.hpp"
#include "io/tensor.hpp"
