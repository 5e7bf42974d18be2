// Classifies one photo with an installed dermal; prints the top label.
#include <dermal/dermal.hpp>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <vector>

int main(int argc, char** argv) {
  if (argc != 3) return 2;
  std::ifstream file(argv[2], std::ios::binary);
  const std::vector<std::uint8_t> photo{std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
  try {
    dermal::Model model(argv[1]);
    std::printf("%s\n", model.predict(photo.data(), photo.size()).top.at(0).label.c_str());
  } catch (const dermal::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
