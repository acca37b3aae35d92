// Runs files through a fuzz target's LLVMFuzzerTestOneInput without libFuzzer, so the committed
// corpus (seeds and every crash ever found) is an ordinary test in every build.
//
// Usage: <target>_fuzz_replay PATH...   (files, or directories whose regular files are all run)
// A broken invariant aborts inside the target; the last "replay" line names the input.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

namespace {

namespace fs = std::filesystem;

bool collect(const fs::path& path, std::vector<fs::path>& files) {
  std::error_code error;
  if (fs::is_directory(path, error)) {
    std::vector<fs::path> found;
    for (const fs::directory_entry& entry : fs::directory_iterator(path, error)) {
      if (entry.is_regular_file()) {
        found.push_back(entry.path());
      }
    }
    if (error) {
      std::fprintf(stderr, "cannot list %s: %s\n", path.c_str(), error.message().c_str());
      return false;
    }
    std::sort(found.begin(), found.end());
    files.insert(files.end(), found.begin(), found.end());
    return true;
  }
  if (fs::is_regular_file(path, error)) {
    files.push_back(path);
    return true;
  }
  std::fprintf(stderr, "no such file or directory: %s\n", path.c_str());
  return false;
}

bool readFile(const fs::path& path, std::vector<std::uint8_t>& bytes) {
  std::error_code error;
  const std::uintmax_t size = fs::file_size(path, error);
  std::ifstream in(path, std::ios::binary);
  if (error || !in) {
    return false;
  }
  // Read in one call rather than through istreambuf_iterator, which trips a GCC 12
  // -Wnull-dereference false positive at -O2.
  bytes.resize(static_cast<std::size_t>(size));
  in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  return in.gcount() == static_cast<std::streamsize>(bytes.size());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s FILE_OR_DIRECTORY...\n", argv[0]);
    return 2;
  }
  std::vector<fs::path> files;
  for (int i = 1; i < argc; ++i) {
    if (!collect(argv[i], files)) {
      return 1;
    }
  }
  if (files.empty()) {
    std::fprintf(stderr, "no inputs found: the corpus is missing\n");
    return 1;
  }
  std::size_t total_bytes = 0;
  for (const fs::path& file : files) {
    std::vector<std::uint8_t> bytes;
    if (!readFile(file, bytes)) {
      std::fprintf(stderr, "cannot read %s\n", file.c_str());
      return 1;
    }
    std::printf("replay %s (%zu bytes)\n", file.c_str(), bytes.size());
    std::fflush(stdout);
    LLVMFuzzerTestOneInput(bytes.data(), bytes.size());
    total_bytes += bytes.size();
  }
  std::printf("replayed %zu inputs, %zu bytes: no invariant broken\n", files.size(), total_bytes);
  return 0;
}
