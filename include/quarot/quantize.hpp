// quarot — quantization module: parameters (bits, grid, granularity, clipping) and
// round-to-nearest quantization.
#pragma once

#include "core.hpp"
#include "quantize/params.hpp"
#include "quantize/rtn.hpp"
