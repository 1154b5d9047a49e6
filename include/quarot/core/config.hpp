// quarot — configuration macros shared by every header.
#pragma once

#define QUAROT_VERSION_MAJOR 0
#define QUAROT_VERSION_MINOR 1
#define QUAROT_VERSION_PATCH 0

// One host/device macro (CuTe's cute/config.hpp does the same): functions that run
// on both sides are marked with it; under nvcc it adds __host__ __device__.
#if defined(__CUDACC__)
#define QUAROT_HOST_DEVICE __host__ __device__ inline
#else
#define QUAROT_HOST_DEVICE inline
#endif

// x86 SIMD kernels are compiled per function with target attributes and chosen at
// run time (simdjson's single-header dispatch does this), so a consumer needs no
// -march flag. They are left out of CUDA translation units: nvcc's front end does not
// accept every intrinsic in a target-attributed host function.
#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__)) && \
    !defined(__CUDACC__) && !defined(QUAROT_DISABLE_X86_SIMD)
#define QUAROT_HAS_X86_SIMD 1
#define QUAROT_TARGET(features) __attribute__((target(features)))
#else
#define QUAROT_HAS_X86_SIMD 0
#define QUAROT_TARGET(features)
#endif

#define QUAROT_TARGET_AVX2 QUAROT_TARGET("avx2,fma,f16c,bmi2")
#define QUAROT_TARGET_AVX512 QUAROT_TARGET("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c,bmi2")
#define QUAROT_TARGET_AVX512BF16 QUAROT_TARGET("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma,f16c,bmi2")
#define QUAROT_TARGET_AVX512VNNI \
  QUAROT_TARGET("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c,bmi2")

// Full unrolling of the short fixed-trip loops over register arrays in the kernels, so
// the arrays live in registers (without it GCC keeps them on the stack).
#if defined(__clang__)
#define QUAROT_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#define QUAROT_UNROLL _Pragma("GCC unroll 16")
#else
#define QUAROT_UNROLL
#endif

#if defined(__GNUC__) || defined(__clang__)
#define QUAROT_RESTRICT __restrict__
#define QUAROT_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define QUAROT_RESTRICT
#define QUAROT_ALWAYS_INLINE inline
#endif

// Always inlined, and under nvcc on both sides: the few CPU kernel steps that the CUDA
// kernels run too, so that both backends share one source of their order of operations.
#if defined(__CUDACC__)
#define QUAROT_HOST_DEVICE_ALWAYS_INLINE __host__ __device__ __forceinline__
#else
#define QUAROT_HOST_DEVICE_ALWAYS_INLINE QUAROT_ALWAYS_INLINE
#endif
