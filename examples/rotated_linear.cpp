// A rotated, 4-bit linear layer in 20 lines: y = W·x with x rotated online by a
// randomized Hadamard Q and W rotated offline (W·Qᵀ), both quantized to 4 bits.
#include <cstdio>
#include <vector>

#include <quarot/quarot.hpp>

int main() {
  const std::size_t tokens = 8, in = 11008, out = 64;  // in = 172 x 64: a Llama-2 down_proj width
  quarot::xoshiro256 rng(1);
  std::vector<float> x(tokens * in), w(out * in), y(tokens * out, 0.0f);
  for (auto& v : x) v = float(rng.normal());
  for (auto& v : w) v = float(rng.normal()) * 0.02f;
  auto X = quarot::make_matrix_view(x, tokens, in);
  auto W = quarot::make_matrix_view(w, out, in);

  const quarot::randomized_hadamard q(in, /*seed=*/42);  // Q = H·diag(s)/√n, H = H_172 ⊗ H_64
  quarot::fuse_input_rotation(W, q);                        // offline: W <- W·Qᵀ
  quarot::rtn_quantizer({.bits = 4, .gran = quarot::granularity::per_channel}).fake_quantize(W, W);
  q.apply(X);                                               // online: x <- Q·x
  quarot::rtn_quantizer({.bits = 4, .gran = quarot::granularity::per_token}).fake_quantize(X, X);

  for (std::size_t t = 0; t < tokens; ++t)  // y = x·Wᵀ (the int4 GEMM policies replace this loop)
    for (std::size_t o = 0; o < out; ++o)
      for (std::size_t k = 0; k < in; ++k) y[t * out + o] += X(t, k) * W(o, k);
  std::printf("y[0][0..3] = %.4f %.4f %.4f %.4f  (%s)\n", y[0], y[1], y[2], y[3], q.plan().describe().c_str());
}
