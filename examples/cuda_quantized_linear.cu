// A rotated W4A4 linear layer on the GPU (QuaRot's online step, issue #8): fp16
// activations -> randomized Hadamard + per-token int4 quantization in one kernel
// (cuda::rotate_quantize) -> int4 tensor-core GEMM (gemm::integer_gemm on cuda::device)
// -> bf16 outputs; checked against the same layer on the CPU. Then a decode step on the
// same packed weights without quantizing the activations: one rotated token through the
// W4A16 weight-only GEMM (gemm::weight_only_gemm<w4a16_policy<cuda::device>>), checked
// against the CPU class of the same policy.
//
//   cuda_quantized_linear [--tokens M] [--n N] [--k K]     (defaults 64, 4096, 4096)
//
// Without a usable GPU it says why and exits 77 (ctest: skipped).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <quarot/backend/cuda/gemm.cuh>
#include <quarot/core/random.hpp>
#include <quarot/gemm/weight_only_gemm.hpp>
#include <quarot/quantize/activation.hpp>
#include <quarot/quantize/rtn.hpp>
#include <quarot/transform/kronecker.hpp>

int main(int argc, char** argv) {
  std::size_t m = 64, n = 4096, k = 4096;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string opt = argv[i];
    const auto v = static_cast<std::size_t>(std::strtoull(argv[i + 1], nullptr, 10));
    if (opt == "--tokens") m = v;
    else if (opt == "--n") n = v;
    else if (opt == "--k") k = v;
    else {
      std::fprintf(stderr, "unknown option %s\n", opt.c_str());
      return 2;
    }
  }
  const std::string why = quarot::cuda::unavailable_reason();
  if (!why.empty()) {
    std::printf("no usable CUDA device (%s): nothing to run\n", why.c_str());
    return 77;
  }
  try {
    // A weight matrix, rotated offline (W·Qᵀ would be fused into the previous layer; here
    // the rotation is explicit so that x·Wᵀ = (Qx)·(WQᵀ)ᵀ), quantized to int4 per group.
    quarot::xoshiro256 rng(1);
    std::vector<float> w(n * k), x(m * k);
    for (auto& v : w) v = static_cast<float>(rng.normal()) * 0.02f;
    for (auto& v : x) v = static_cast<float>(rng.normal());
    for (std::size_t r = 0; r < m; ++r) x[r * k + (r * 37) % k] *= 40.0f;  // an outlier per token
    const quarot::randomized_hadamard q(k, 7);
    std::vector<float> wr = w;
    q.apply(quarot::make_matrix_view(wr, n, k));  // rows of W rotated: W·Qᵀ
    const auto wq = quarot::rtn_quantizer({.bits = 4, .gran = quarot::granularity::per_group, .group_size = 128})
                        .quantize(quarot::make_matrix_view(wr, n, k));
    const auto packed = quarot::gemm::pack_weights(wq, 4);

    // GPU: fp16 activations in, bf16 outputs out.
    std::vector<quarot::half> xh(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) xh[i] = quarot::to_half(x[i]);
    quarot::cuda::device_buffer<quarot::half> dx(xh.size());
    quarot::cuda::device_buffer<quarot::bfloat16> dy(m * n);
    dx.upload(xh.data(), xh.size());
    const quarot::cuda::randomized_hadamard dq(k, 7);  // the same signs as q
    const quarot::gemm::integer_gemm<quarot::gemm::w4a4_policy<quarot::cuda::device>> gemm(packed);
    quarot::cuda::device_activations xa;
    const auto run = [&] {
      quarot::cuda::rotate_quantize(quarot::cuda::device{}, dq, dx.view(m, k), 4, 1.0f, xa);
      gemm(xa, nullptr, dy.view(m, n));  // views with their extent checked against the buffer
    };
    run();
    xa.require_finite();
    QUAROT_CUDA_CHECK(cudaDeviceSynchronize());
    const auto t0 = std::chrono::steady_clock::now();
    const int reps = 10;
    for (int i = 0; i < reps; ++i) run();
    QUAROT_CUDA_CHECK(cudaDeviceSynchronize());
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / reps;
    std::vector<quarot::bfloat16> y(m * n);
    dy.download(y.data(), y.size());

    // CPU: the same layer from the same fp16 inputs (rotation, quantization, scalar GEMM).
    std::vector<float> xr(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) xr[i] = quarot::to_float(xh[i]);
    q.apply(quarot::cpu::scalar{}, quarot::make_matrix_view(xr, m, k));
    quarot::quantized_activations xq;
    quarot::quantize_activations(quarot::cpu::scalar{}, quarot::make_matrix_view(xr, m, k), 4, 1.0f, xq);
    std::vector<quarot::bfloat16> expect(m * n);
    const quarot::gemm::integer_gemm<quarot::gemm::w4a4_policy<quarot::cpu::scalar>> cpu_gemm(packed);
    cpu_gemm(xq, quarot::make_matrix_view(expect, m, n));
    std::size_t same = 0;
    double err = 0, ref = 0;
    for (std::size_t r = 0; r < m; ++r)
      for (std::size_t c = 0; c < n; ++c) {
        same += y[r * n + c].bits == expect[r * n + c].bits;
        double d = 0;
        for (std::size_t i = 0; i < k; ++i) d += double(x[r * k + i]) * w[c * k + i];
        const double e = quarot::to_float(y[r * n + c]) - d;
        err += e * e;
        ref += d * d;
      }
#if defined(QUAROT_CUDA_EMULATION)
    const char* where = "the CPU emulation of CUDA (tests only; times mean nothing)";
#else
    const char* where = "the GPU";
#endif
    std::printf("rotated W4A4 linear %zu x %zu x %zu on %s (%s)\n", m, n, k, where,
                quarot::cuda::name(gemm.path()));
    std::printf("  rotate + quantize + GEMM: %.3f ms per call (%.1f GOP/s)\n", ms, 2.0 * m * n * k / ms / 1e6);
    std::printf("  outputs equal to the CPU's bit for bit: %zu of %zu\n", same, m * n);
    std::printf("  relative error against the fp32 product x·Wᵀ: %.4f (4-bit weights and activations)\n",
                std::sqrt(err / ref));

    // Decode: token 0, rotated (xr), times the int4 weights dequantized in registers; the
    // bf16 policy rounds the fp32 token to bf16 as the CPU policy does.
    const quarot::gemm::weight_only_gemm<quarot::gemm::w4a16_policy<quarot::cuda::device>> decode(packed);
    quarot::cuda::device_buffer<float> dtok(k), dout(n);
    dtok.upload(xr.data(), k);
    decode(dtok.view(1, k), dout.view(1, n));
    QUAROT_CUDA_CHECK(cudaDeviceSynchronize());
    const auto t1 = std::chrono::steady_clock::now();
    for (int i = 0; i < reps; ++i) decode(dtok.view(1, k), dout.view(1, n));
    QUAROT_CUDA_CHECK(cudaDeviceSynchronize());
    const double decode_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t1).count() / reps;
    std::vector<float> yd(n), yd_cpu(n);
    dout.download(yd.data(), n);
    quarot::gemm::weight_only_gemm<quarot::gemm::w4a16_policy<quarot::cpu::scalar>>{packed}(
        quarot::make_matrix_view(xr.data(), 1, k), quarot::make_matrix_view(yd_cpu, 1, n));
    double diff = 0, mag = 0;
    for (std::size_t c = 0; c < n; ++c) {
      diff = std::max(diff, std::fabs(double(yd[c]) - yd_cpu[c]));
      mag = std::max(mag, std::fabs(double(yd_cpu[c])));
    }
    const bool decode_ok = diff <= 1e-5 * mag * std::sqrt(double(k));  // fp32 sums in another order
    std::printf("W4A16 decode, one token x %zu x %zu: %.3f ms per call (%.1f GB/s of weights)\n", n, k, decode_ms,
                n * k / 2.0 / decode_ms / 1e6);
    std::printf("  largest difference to the CPU class: %.3g of max |y| %.3g (%s)\n", diff, mag,
                decode_ok ? "fp32 rounding" : "TOO LARGE");
    return same == m * n && decode_ok ? 0 : 1;
  } catch (const quarot::error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
