// CPU emulation of cuda_bf16.h's conversions (see cuda_runtime.h here).
#pragma once
#include <quarot/core/numeric.hpp>

struct __nv_bfloat16 {
  unsigned short x;
};
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 b) { return b.x; }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16{quarot::to_bfloat16(f).bits}; }
