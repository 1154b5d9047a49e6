// quarot-quantize: quantize a weight matrix from a .npy file with RTN or GPTQ.
//
//   quarot-quantize --weights W.npy [--calib X.npy] --method rtn|gptq --bits B [--group G]
//                   [--sym|--asym] [--act-order] [--static-groups] [--clip-search] [--clip R]
//                   [--damp D] [--block B] [--threads T] --out DIR
//   quarot-quantize --make-example DIR     writes a synthetic W.npy (256 x 512) and X.npy
//                                           (1024 x 512, correlated) to try the tool on
//
// W is N x K (out x in), X holds calibration rows (tokens x K); both f4 or f2 .npy. Writes
// DIR/W_hat.npy (dequantized, f4), DIR/q.npy (levels, i1), DIR/scales.npy (f4, N x groups),
// DIR/zeros.npy (asymmetric), DIR/g_idx.npy and DIR/perm.npy (act-order), and prints the
// relative output error ||(W - Ŵ)·Xᵀ||_F / ||W·Xᵀ||_F (or the weight error without X) and
// the time.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <quarot/io.hpp>
#include <quarot/quantize.hpp>

namespace {

void usage() {
  std::puts(
      "usage: quarot-quantize --weights W.npy [--calib X.npy] --method rtn|gptq --bits B [--group G]\n"
      "                       [--sym|--asym] [--act-order] [--static-groups] [--clip-search] [--clip R]\n"
      "                       [--damp D] [--block B] [--threads T] --out DIR\n"
      "       quarot-quantize --make-example DIR");
}

[[noreturn]] void bad(const std::string& msg) { throw quarot::error(quarot::errc::invalid_argument, msg); }

struct matrix {
  std::size_t rows = 0, cols = 0;
  std::vector<float> v;
};

matrix load(const std::string& path, const char* what) {
  const auto t = quarot::io::read_npy(path);
  if (t.shape.size() != 2) bad(std::string(what) + " '" + path + "' must be 2-D, has " + std::to_string(t.shape.size()) + " dimensions");
  if (t.type != quarot::io::dtype::f32 && t.type != quarot::io::dtype::f16)
    bad(std::string(what) + " '" + path + "' must be f4 or f2, is " + quarot::io::to_string(t.type));
  return {t.shape[0], t.shape[1], t.to_float()};
}

double output_error(const matrix& w, const std::vector<float>& w_hat, const matrix* x) {
  using M = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const Eigen::Map<const M> W(w.v.data(), Eigen::Index(w.rows), Eigen::Index(w.cols));
  const Eigen::Map<const M> Wh(w_hat.data(), Eigen::Index(w.rows), Eigen::Index(w.cols));
  if (!x) return double((W - Wh).norm() / W.norm());
  const Eigen::Map<const M> X(x->v.data(), Eigen::Index(x->rows), Eigen::Index(x->cols));
  const M ref = X * W.transpose(), got = X * Wh.transpose();
  return double((ref - got).norm() / ref.norm());
}

void make_example(const std::string& dir) {
  std::filesystem::create_directories(dir);
  const std::size_t n = 256, k = 512, tokens = 1024;
  quarot::xoshiro256 rng(2024);
  std::vector<float> w(n * k), x(tokens * k), mix(k * 8);
  for (auto& v : w) v = float(rng.normal()) * 0.02f;
  for (auto& v : mix) v = float(rng.normal());
  for (std::size_t t = 0; t < tokens; ++t) {
    float f[8];
    for (auto& v : f) v = float(rng.normal());
    for (std::size_t i = 0; i < k; ++i) {
      float acc = 0.3f * float(rng.normal());
      for (int j = 0; j < 8; ++j) acc += f[j] * mix[i * 8 + std::size_t(j)];
      x[t * k + i] = acc * (i % 64 == 7 ? 10.0f : 1.0f);  // low-rank correlated, a few loud channels
    }
  }
  quarot::io::write_npy(dir + "/W.npy", quarot::io::tensor::from(w, {n, k}));
  quarot::io::write_npy(dir + "/X.npy", quarot::io::tensor::from(x, {tokens, k}));
  std::printf("wrote %s/W.npy (%zu x %zu) and %s/X.npy (%zu x %zu)\n", dir.c_str(), n, k, dir.c_str(), tokens, k);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    std::string weights, calib, method, out;
    quarot::gptq_options opt;
    opt.quant = {.bits = 0, .symmetric = true, .gran = quarot::granularity::per_channel};
    unsigned threads = 2;
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      auto value = [&]() -> std::string {
        if (i + 1 >= argc) bad("option " + a + " needs a value");
        return argv[++i];
      };
      auto number = [&](const std::string& v) {
        std::size_t used = 0;
        double d = 0;
        try {
          d = std::stod(v, &used);
        } catch (...) {
          used = 0;
        }
        if (used != v.size()) bad(a + ": '" + v + "' is not a number");
        return d;
      };
      if (a == "--weights") weights = value();
      else if (a == "--calib") calib = value();
      else if (a == "--method") method = value();
      else if (a == "--bits") opt.quant.bits = int(number(value()));
      else if (a == "--group") {
        opt.quant.group_size = std::size_t(number(value()));
        opt.quant.gran = quarot::granularity::per_group;
      } else if (a == "--sym") opt.quant.symmetric = true;
      else if (a == "--asym") opt.quant.symmetric = false;
      else if (a == "--act-order") opt.act_order = true;
      else if (a == "--static-groups") opt.static_groups = true;
      else if (a == "--clip-search") opt.quant.search.enabled = true;
      else if (a == "--clip") opt.quant.clip_ratio = float(number(value()));
      else if (a == "--damp") opt.damp_percent = number(value());
      else if (a == "--block") opt.block_size = std::size_t(number(value()));
      else if (a == "--threads") threads = unsigned(number(value()));
      else if (a == "--out") out = value();
      else if (a == "--make-example") {
        make_example(value());
        return 0;
      } else if (a == "--help" || a == "-h") {
        usage();
        return 0;
      } else {
        usage();
        bad("unknown option '" + a + "'");
      }
    }
    if (weights.empty() || out.empty() || opt.quant.bits == 0) {
      usage();
      bad("--weights, --bits and --out are required");
    }
    if (method != "rtn" && method != "gptq") bad("--method must be rtn or gptq, got '" + method + "'");
    if (method == "gptq" && calib.empty()) bad("--method gptq needs --calib X.npy");
    if (method == "rtn" && (opt.act_order || opt.static_groups)) bad("--act-order and --static-groups are GPTQ options");

    const matrix w = load(weights, "weights");
    matrix x;
    if (!calib.empty()) {
      x = load(calib, "calibration data");
      if (x.cols != w.cols)
        bad("calibration data has " + std::to_string(x.cols) + " columns but the weights have " + std::to_string(w.cols));
    }
    quarot::thread_pool pool(threads);
    const auto wv = quarot::make_matrix_view(w.v, w.rows, w.cols);
    const auto t0 = std::chrono::steady_clock::now();
    quarot::quantized_matrix q;
    std::vector<float> w_hat(w.v.size());
    std::vector<std::uint32_t> perm;
    double hessian_seconds = 0;
    if (method == "rtn") {
      const quarot::rtn_quantizer rtn(opt.quant);
      q = rtn.quantize(wv, &pool);
      rtn.dequantize(q, quarot::make_matrix_view(w_hat, w.rows, w.cols));
    } else {
      quarot::hessian_accumulator acc(w.cols);
      acc.add(quarot::make_matrix_view(x.v, x.rows, x.cols));
      const auto h = acc.hessian();
      hessian_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      auto res = quarot::gptq_quantize(wv, h, opt, &pool);
      q = std::move(res.q);
      w_hat = std::move(res.w_hat);
      if (opt.act_order) perm = std::move(res.perm);
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    std::filesystem::create_directories(out);
    namespace io = quarot::io;
    const std::size_t groups = q.scales.size() / std::max<std::size_t>(1, q.params.gran == quarot::granularity::per_tensor ? 1 : w.rows);
    io::write_npy(out + "/W_hat.npy", io::tensor::from(w_hat, {w.rows, w.cols}));
    io::write_npy(out + "/q.npy", io::tensor::from(q.q, {w.rows, w.cols}));
    io::write_npy(out + "/scales.npy", io::tensor::from(q.scales, {q.scales.size() / groups, groups}));
    if (!q.zeros.empty()) io::write_npy(out + "/zeros.npy", io::tensor::from(q.zeros, {q.zeros.size() / groups, groups}));
    if (!q.g_idx.empty()) {
      std::vector<std::int32_t> g(q.g_idx.begin(), q.g_idx.end());
      io::write_npy(out + "/g_idx.npy", io::tensor::from(g, {g.size()}));
    }
    if (!perm.empty()) {
      std::vector<std::int32_t> p(perm.begin(), perm.end());
      io::write_npy(out + "/perm.npy", io::tensor::from(p, {p.size()}));
    }
    std::printf("%s %d-bit %s%s%s, %zu x %zu: %s = %.5f, time %.3f s", method.c_str(), opt.quant.bits,
                opt.quant.symmetric ? "sym" : "asym",
                opt.quant.gran == quarot::granularity::per_group ? (" group " + std::to_string(opt.quant.group_size)).c_str() : " per-channel",
                opt.act_order ? " act-order" : "", w.rows, w.cols,
                calib.empty() ? "relative weight error ||W - W_hat||/||W||" : "relative output error ||(W - W_hat) X^T||/||W X^T||",
                output_error(w, w_hat, calib.empty() ? nullptr : &x), seconds);
    if (method == "gptq") std::printf(" (Hessian %.3f s)", hessian_seconds);
    std::printf("\nwrote %s/{W_hat,q,scales%s}.npy\n", out.c_str(), q.zeros.empty() ? "" : ",zeros");
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}
