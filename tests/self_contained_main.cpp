// Each public header was compiled alone in its own translation unit (see
// tests/CMakeLists.txt); this program checks that one unit exists per header.
#include <cstdio>
#include <cstdlib>
#include <filesystem>

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  const std::size_t expected = argc > 2 ? std::strtoul(argv[2], nullptr, 10) : 10;  // at least
  std::size_t count = 0;
  for (const auto& e : std::filesystem::directory_iterator(argv[1]))
    if (e.path().extension() == ".cpp") ++count;
  std::printf("%zu public headers compiled on their own\n", count);
  return count >= expected ? 0 : 1;
}
