// A project that found quarot with find_package: rotate a vector and check the norm.
#include <cmath>
#include <cstdio>
#include <vector>

#include <quarot/quarot.hpp>

int main() {
  std::vector<float> x(96);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = float(i % 7) - 3.0f;
  double before = 0, after = 0;
  for (float v : x) before += double(v) * v;
  const quarot::randomized_hadamard q(96, 1);  // 96 = 12 x 8
  q.apply(quarot::make_matrix_view(x, 1, 96));
  for (float v : x) after += double(v) * v;
  std::printf("consumer: |x|^2 %.4f -> %.4f (%s)\n", before, after, q.plan().describe().c_str());
  return std::fabs(before - after) < 1e-3 * before ? 0 : 1;
}
