// quarot — the one error type. Every check on user input throws quarot::error with a
// message that names the offending value, so bad input never becomes UB or a silent
// wrong answer.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace quarot {

/// What kind of failure an error reports.
enum class errc {
  invalid_argument,  ///< a size, stride, bit width... out of its domain
  unsupported,       ///< valid but not implemented (e.g. no Hadamard construction of that order)
  io,                ///< file missing, truncated or malformed
  numerical,         ///< NaN/Inf input, singular or indefinite matrix
  cuda,              ///< a CUDA runtime call failed
};

inline const char* to_string(errc e) noexcept {
  switch (e) {
    case errc::invalid_argument: return "invalid argument";
    case errc::unsupported: return "unsupported";
    case errc::io: return "I/O error";
    case errc::numerical: return "numerical error";
    case errc::cuda: return "CUDA error";
  }
  return "error";
}

/// The exception every quarot function throws on bad input.
class error : public std::runtime_error {
 public:
  error(errc code, const std::string& what) : std::runtime_error(what), code_(code) {}
  [[nodiscard]] errc code() const noexcept { return code_; }

 private:
  errc code_;
};

namespace detail {

template <class... Parts>
std::string concat(const Parts&... parts) {
  std::ostringstream os;
  (os << ... << parts);
  return os.str();
}

/// Throws quarot::error; the parts are streamed into one message.
template <class... Parts>
[[noreturn]] void fail(errc code, const Parts&... parts) {
  throw error(code, concat("quarot: ", parts...));
}

template <class... Parts>
void require(bool ok, const Parts&... parts) {
  if (!ok) fail(errc::invalid_argument, parts...);
}

}  // namespace detail
}  // namespace quarot
