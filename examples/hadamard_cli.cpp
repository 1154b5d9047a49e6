// quarot-hadamard: which Hadamard construction quarot uses for a size, whether its fast
// transform is orthogonal, and how fast it runs.
//
//   quarot-hadamard --n N [--check] [--bench] [--dtype fp32|fp16|bf16] [--isa ISA] [--threads T]
//
// --check   applies the fast transform to the identity (giving Qᵀ, Q = H/√n) and prints
//           max |Q·Qᵀ - I| (all rows for n <= 4096, 128 sampled rows above) and
//           max ||√n·Q_ij| - 1| (every entry must be ±1/√n)
// --bench   time per row on a 64 MiB batch, against memcpy of the same bytes
// An unsupported n exits with status 1 and the library's error message.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <quarot/quarot.hpp>

namespace {

void usage() {
  std::puts(
      "usage: quarot-hadamard --n N [--check] [--bench] [--dtype fp32|fp16|bf16] [--isa scalar|avx2|avx512|avx512vnni]"
      " [--threads T]");
}

double check(const quarot::hadamard_transform& h, quarot::thread_pool* pool) {
  const std::size_t n = h.size();
  quarot::dense_matrix t = quarot::dense_matrix::Identity(Eigen::Index(n), Eigen::Index(n));
  h.apply(quarot::make_matrix_view(t.data(), n, n), pool);  // row i = Q e_i = column i of Q
  double entry_err = 0;
  const double root = std::sqrt(double(n));
  for (Eigen::Index i = 0; i < t.size(); ++i) entry_err = std::max(entry_err, std::fabs(std::fabs(t.data()[i]) * root - 1));
  const std::size_t rows = n <= 4096 ? n : 128;
  quarot::dense_matrix sub(static_cast<Eigen::Index>(rows), static_cast<Eigen::Index>(n));
  for (std::size_t r = 0; r < rows; ++r) sub.row(Eigen::Index(r)) = t.row(Eigen::Index(rows == n ? r : (r * 7919) % n));
  const quarot::dense_matrix_d g = sub.cast<double>() * t.cast<double>().transpose();
  double orth_err = 0;
  for (std::size_t r = 0; r < rows; ++r) {
    const std::size_t i = rows == n ? r : (r * 7919) % n;
    for (std::size_t j = 0; j < n; ++j)
      orth_err = std::max(orth_err, std::fabs(g(Eigen::Index(r), Eigen::Index(j)) - (i == j ? 1.0 : 0.0)));
  }
  std::printf("check: max |Q·Qᵀ - I| = %.3g over %s; max ||√n·Q_ij| - 1| = %.3g\n", orth_err,
              rows == n ? "all rows" : "128 sampled rows", entry_err);
  return std::max(orth_err, entry_err / root);
}

template <class T>
void bench(const quarot::hadamard_transform& h, quarot::thread_pool* pool) {
  const std::size_t n = h.size();
  const std::size_t rows = std::max<std::size_t>(1, (std::size_t{64} << 20) / (n * sizeof(T)));
  std::vector<T> x(rows * n, quarot::from_float<T>(0.5f)), y(x.size());
  auto view = quarot::make_matrix_view(x, rows, n);
  auto time = [](auto&& f) {
    double best = 1e30;
    for (int rep = 0; rep < 5; ++rep) {
      const auto t0 = std::chrono::steady_clock::now();
      f();
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    return best;
  };
  const double t_h = time([&] { h.apply(view, pool); });
  const double t_m = time([&] { std::memcpy(y.data(), x.data(), x.size() * sizeof(T)); });
  const double bytes = 2.0 * double(x.size() * sizeof(T));  // read + write
  std::printf("bench: %zu rows of %zu %s: %.3f us/row, %.2f GB/s; memcpy %.2f GB/s; ratio %.2f of memcpy\n", rows, n,
              quarot::type_name<T>(), 1e6 * t_h / double(rows), bytes / t_h * 1e-9, bytes / t_m * 1e-9, t_m / t_h);
}

}  // namespace

int main(int argc, char** argv) {
  std::size_t n = 0;
  bool do_check = false, do_bench = false;
  std::string dtype = "fp32";
  unsigned threads = 1;
  quarot::cpu::isa isa;
  try {
    isa = quarot::cpu::default_isa();
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      auto value = [&]() -> std::string {
        if (i + 1 >= argc) throw quarot::error(quarot::errc::invalid_argument, "option " + a + " needs a value");
        return argv[++i];
      };
      if (a == "--n") {
        const std::string v = value();
        char* end = nullptr;
        const unsigned long long parsed = std::strtoull(v.c_str(), &end, 10);
        if (v.empty() || *end != '\0' || v[0] == '-')
          throw quarot::error(quarot::errc::invalid_argument, "--n: '" + v + "' is not a positive integer");
        n = static_cast<std::size_t>(parsed);
      } else if (a == "--check") do_check = true;
      else if (a == "--bench") do_bench = true;
      else if (a == "--dtype") dtype = value();
      else if (a == "--isa") isa = quarot::cpu::parse_isa(value());
      else if (a == "--threads") threads = static_cast<unsigned>(std::stoul(value()));
      else if (a == "--help" || a == "-h") {
        usage();
        return 0;
      } else {
        usage();
        throw quarot::error(quarot::errc::invalid_argument, "unknown option '" + a + "'");
      }
    }
    if (n == 0) {
      usage();
      throw quarot::error(quarot::errc::invalid_argument, "--n N (N >= 1) is required");
    }
    if (dtype != "fp32" && dtype != "fp16" && dtype != "bf16")
      throw quarot::error(quarot::errc::invalid_argument, "--dtype '" + dtype + "' is not fp32, fp16 or bf16");
    const quarot::hadamard_transform h(n, isa);
    std::printf("n = %zu: %s\n", n, h.plan().describe().c_str());
    std::printf("kernels: %s, %u thread(s)\n", quarot::cpu::to_string(isa), threads);
    quarot::thread_pool pool(threads);
    int rc = 0;
    if (do_check && check(h, &pool) > 1e-5) {
      std::puts("check FAILED");
      rc = 1;
    }
    if (do_bench) {
      if (dtype == "fp32") bench<float>(h, &pool);
      else if (dtype == "fp16") bench<quarot::half>(h, &pool);
      else bench<quarot::bfloat16>(h, &pool);
    }
    return rc;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}
