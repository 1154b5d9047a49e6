// quarot — quantization module: parameters (bits, grid, granularity, clipping, clip
// search), round-to-nearest, per-token activation quantization, GPTQ, KV cache.
#pragma once

#include "core.hpp"
#include "quantize/activation.hpp"
#include "quantize/gptq.hpp"
#include "quantize/kv_cache.hpp"
#include "quantize/params.hpp"
#include "quantize/rtn.hpp"
