// dermal-batch: classifies every JPEG, PNG and BMP photo in a folder, writes
// OUT/results.csv and a Grad-CAM overlay OUT/<name>-gradcam.jpg per photo.
// The scores are a model's output, not a diagnosis.
#include <dermal/dermal.hpp>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

constexpr const char* kUsage = R"(usage: dermal-batch --model MODEL --out DIR FOLDER

Classifies every JPEG, PNG and BMP file in FOLDER with a dermal model and
writes DIR/results.csv (file, top label, probability, top 3, error) and a
Grad-CAM overlay DIR/<name>-gradcam.jpg for each photo. Progress goes to
stderr. Exits 1 if any photo could not be classified (see the error column).

The scores are a model's output, not a diagnosis.
)";

struct Arguments {
  std::string model;
  fs::path out;
  fs::path folder;
};

// Fills args; false unless the command line gives --model, --out and one FOLDER.
bool parse_arguments(int argc, char** argv, Arguments& args) {
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--model" && i + 1 < argc) {
      args.model = argv[++i];
    } else if (flag == "--out" && i + 1 < argc) {
      args.out = argv[++i];
    } else if (flag.rfind("-", 0) == 0 || !args.folder.empty()) {
      return false;
    } else {
      args.folder = flag;
    }
  }
  return !args.model.empty() && !args.out.empty() && !args.folder.empty();
}

bool is_photo(const fs::path& path) {
  std::string extension = path.extension().string();
  std::transform(extension.begin(), extension.end(), extension.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return extension == ".jpg" || extension == ".jpeg" || extension == ".png" || extension == ".bmp";
}

// The folder's photos, sorted by name, so the CSV's order is reproducible.
std::vector<fs::path> photos_in(const fs::path& folder) {
  std::vector<fs::path> photos;
  for (const fs::directory_entry& entry : fs::directory_iterator(folder))
    if (entry.is_regular_file() && is_photo(entry.path())) photos.push_back(entry.path());
  std::sort(photos.begin(), photos.end());
  return photos;
}

std::vector<std::uint8_t> read_file(const fs::path& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw dermal::Error(dermal::ErrorCode::io, "cannot open \"" + path.string() + "\"");
  return {std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
}

void write_file(const fs::path& path, const std::vector<std::uint8_t>& bytes) {
  std::ofstream file(path, std::ios::binary);
  file.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!file) throw dermal::Error(dermal::ErrorCode::io, "cannot write \"" + path.string() + "\"");
}

// A CSV field (RFC 4180): quoted when it holds a comma, a quote or a line break.
std::string csv(const std::string& text) {
  if (text.find_first_of(",\"\r\n") == std::string::npos) return text;
  std::string quoted = "\"";
  for (char c : text) quoted += c == '"' ? std::string("\"\"") : std::string(1, c);
  return quoted + "\"";
}

std::string probability_text(float probability) {
  char text[32];
  std::snprintf(text, sizeof text, "%.6f", probability);
  return text;
}

// Redraws one progress line on stderr: [#####.....] done/total name.
void show_progress(std::size_t done, std::size_t total, const std::string& name) {
  constexpr int kWidth = 30;
  const int filled = total == 0 ? kWidth : static_cast<int>(kWidth * done / total);
  std::fprintf(stderr, "\r[%s%s] %zu/%zu %-40.40s", std::string(filled, '#').c_str(),
               std::string(kWidth - filled, '.').c_str(), done, total, name.c_str());
  std::fflush(stderr);
}

// Classifies one photo and writes its overlay; returns its CSV row after the file name.
std::string classify(dermal::Model& model, const fs::path& photo, const fs::path& out) {
  dermal::PredictOptions options;
  options.explain = true;
  const std::vector<std::uint8_t> bytes = read_file(photo);
  const dermal::Prediction prediction = model.predict(bytes.data(), bytes.size(), options);
  write_file(out / (photo.stem().string() + "-gradcam.jpg"), prediction.explanations.at(0).overlay);
  std::string top3;
  for (const dermal::ClassScore& score : prediction.top)
    top3 += (top3.empty() ? "" : ";") + score.label + ":" + probability_text(score.probability);
  const dermal::ClassScore& best = prediction.top.at(0);
  return csv(best.label) + "," + probability_text(best.probability) + "," + csv(top3) + ",";
}

int run(const Arguments& args) {
  dermal::Model model(args.model);
  const std::vector<fs::path> photos = photos_in(args.folder);
  fs::create_directories(args.out);
  std::ofstream results(args.out / "results.csv");
  if (!results) throw dermal::Error(dermal::ErrorCode::io, "cannot write " + (args.out / "results.csv").string());
  results << "file,top_label,probability,top3,error\n";

  int failures = 0;
  for (std::size_t i = 0; i < photos.size(); ++i) {
    const std::string name = photos[i].filename().string();
    show_progress(i, photos.size(), name);
    std::string row;
    try {
      row = classify(model, photos[i], args.out);
    } catch (const dermal::Error& e) {
      ++failures;
      row = ",,," + csv(std::string(dermal::error_code_name(e.code())) + ": " + e.what());
    }
    results << csv(name) << "," << row << "\n";
  }
  show_progress(photos.size(), photos.size(), "");
  std::fprintf(stderr, "\n");
  results.close();
  if (!results) throw dermal::Error(dermal::ErrorCode::io, "cannot write " + (args.out / "results.csv").string());
  std::printf("%zu photos, %d failed: %s\n(model scores, not a diagnosis)\n", photos.size(), failures,
              (args.out / "results.csv").string().c_str());
  return failures == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  Arguments args;
  if (!parse_arguments(argc, argv, args)) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  try {
    return run(args);
  } catch (const dermal::Error& e) {
    std::fprintf(stderr, "dermal-batch: %s: %s\n", dermal::error_code_name(e.code()), e.what());
  } catch (const fs::filesystem_error& e) {
    std::fprintf(stderr, "dermal-batch: %s\n", e.what());
  }
  return 1;
}
