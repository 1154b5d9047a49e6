// quarot — a read-only memory mapping of a whole file (internal; used by the .safetensors
// and GGUF readers). The descriptor is closed as soon as the mapping exists; the mapping
// is released by the destructor.
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

#include "../../core/error.hpp"

#ifndef QUAROT_IO_INTERNAL
#error "quarot/io/detail/mapped_file.hpp is internal: include quarot/io.hpp"
#endif

namespace quarot::detail {

class mapped_file {
 public:
  explicit mapped_file(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY);
    if (fd < 0) fail(errc::io, "cannot open '", path, "'");
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      ::close(fd);
      fail(errc::io, "cannot stat '", path, "'");
    }
    size_ = static_cast<std::size_t>(st.st_size);
    if (size_ > 0) {
      void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (p == MAP_FAILED) {
        ::close(fd);
        fail(errc::io, "cannot map '", path, "'");
      }
      data_ = static_cast<const std::uint8_t*>(p);
    }
    ::close(fd);
  }
  mapped_file(const mapped_file&) = delete;
  mapped_file& operator=(const mapped_file&) = delete;
  ~mapped_file() {
    if (data_) ::munmap(const_cast<std::uint8_t*>(data_), size_);
  }

  [[nodiscard]] const std::uint8_t* data() const noexcept { return data_; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }

 private:
  const std::uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace quarot::detail
