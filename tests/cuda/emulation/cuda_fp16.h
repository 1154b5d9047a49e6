// CPU emulation of cuda_fp16.h's conversions (see cuda_runtime.h here): round to nearest
// even through quarot's own fp16 conversion.
#pragma once
#include <quarot/core/numeric.hpp>

struct __half {
  unsigned short x;
};
inline __half __ushort_as_half(unsigned short b) { return __half{b}; }
inline unsigned short __half_as_ushort(__half h) { return h.x; }
inline float __half2float(__half h) { return quarot::to_float(quarot::half{h.x}); }
inline __half __float2half_rn(float f) { return __half{quarot::to_half(f).bits}; }
