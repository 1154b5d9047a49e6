// Each public header was compiled alone in its own translation unit (see
// tests/CMakeLists.txt); this program checks that one unit exists per header.
#include <cstdio>
#include <filesystem>

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  std::size_t count = 0;
  for (const auto& e : std::filesystem::directory_iterator(argv[1]))
    if (e.path().extension() == ".cpp") ++count;
  std::printf("%zu public headers compiled on their own\n", count);
  return count >= 10 ? 0 : 1;
}
