// Pieces the model-pipeline examples (quarot-llama, quarot-bert) share: where
// cmake/setup.sh put the models, fortune(6) text files, option parsing, timing.
#pragma once

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include <quarot/core/error.hpp>

namespace pipeline {

/// `name` inside the model cache: $QUAROT_MODEL_DIR, else the directory CMake configured.
inline std::string model_cache_path(const std::string& name) {
  if (const char* d = std::getenv("QUAROT_MODEL_DIR")) return std::string(d) + "/" + name;
#ifdef QUAROT_MODEL_DIR
  return std::string(QUAROT_MODEL_DIR) + "/" + name;
#else
  return name;
#endif
}

/// The lines of a fortune(6) file; a line holding only "%" separates entries.
inline std::vector<std::string> fortune_lines(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw quarot::error(quarot::errc::io, "cannot open text file '" + path + "' (Debian package fortunes?)");
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

/// The value of a count option; `allow_zero` decides whether 0 is accepted.
inline std::size_t parse_count(const std::string& option, const std::string& v, bool allow_zero) {
  char* end = nullptr;
  const unsigned long long n = std::strtoull(v.c_str(), &end, 10);
  if (v.empty() || *end || v[0] == '-' || (!allow_zero && n == 0))
    throw quarot::error(quarot::errc::invalid_argument, "option " + option + ": '" + v + "' is not a " +
                                                           (allow_zero ? "non-negative" : "positive") + " integer");
  return std::size_t(n);
}

inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace pipeline
