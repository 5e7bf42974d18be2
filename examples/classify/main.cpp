// dermal-classify: classify photos of skin lesions and optionally write a
// Grad-CAM overlay. The scores are a model's output, not a diagnosis.
#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "dermal/dermal.hpp"

namespace {

constexpr const char* kUsage = R"(usage: dermal-classify [options] IMAGE...

Classifies each photo (JPEG, PNG or BMP) with a dermal model.
The scores are a model's output, not a diagnosis.

options:
  --model PATH      dermal model file (default: the bundled demo model)
  --top-k N         how many classes to list (default 3)
  --threads N       intra-op threads (default 1)
  --json            print JSON instead of text
  --heatmap PATH    write a Grad-CAM overlay (.jpg or .png); one image only
  --cam-method M    gradcam, gradcam++, xgradcam, hirescam, layercam, eigencam,
                    gradcamelementwise, eigengradcam, finercam, fem, kpcacam,
                    ablationcam, scorecam
  --class LABEL     explain this class instead of the top one
  --layer NAME      CAM layer (default: the model's own)
  --colormap NAME   jet or viridis (default jet)
  --faithfulness    with --heatmap: the map's faithfulness figures (changes of
                    the class's probability; docs/cam-methods.md)
  --eigen-smooth    the map's first principal component (docs/cam-methods.md)
  --aug-smooth      the mean map of six flipped and scaled copies of the photo
                    (six passes: up to six times the time; docs/cam-methods.md)
  --stats           print load time, per-image latency and peak memory to stderr
  -h, --help        this text
)";

struct Arguments {
  std::string model = DERMAL_DEMO_MODEL;
  int top_k = 3;
  int threads = 1;
  bool json = false;
  bool stats = false;
  std::string heatmap;
  std::string cam_method = "gradcam";
  std::string cam_class;
  std::string layer;
  std::string colormap = "jet";
  bool faithfulness = false;
  bool eigen_smooth = false;
  bool aug_smooth = false;
  std::vector<std::string> images;
};

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

int to_int(const std::string& flag, const std::string& value) {
  try {
    std::size_t used = 0;
    const int number = std::stoi(value, &used);
    if (used == value.size()) return number;
  } catch (const std::exception&) {
  }
  throw UsageError(fmt::format("{} needs a whole number, not \"{}\"", flag, value));
}

Arguments parse_arguments(int argc, char** argv) {
  Arguments args;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw UsageError(fmt::format("{} needs a value", flag));
      return argv[++i];
    };
    if (flag == "-h" || flag == "--help") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    } else if (flag == "--model") args.model = value();
    else if (flag == "--top-k") args.top_k = to_int(flag, value());
    else if (flag == "--threads") args.threads = to_int(flag, value());
    else if (flag == "--json") args.json = true;
    else if (flag == "--stats") args.stats = true;
    else if (flag == "--heatmap") args.heatmap = value();
    else if (flag == "--cam-method") args.cam_method = value();
    else if (flag == "--class") args.cam_class = value();
    else if (flag == "--layer") args.layer = value();
    else if (flag == "--colormap") args.colormap = value();
    else if (flag == "--faithfulness") args.faithfulness = true;
    else if (flag == "--eigen-smooth") args.eigen_smooth = true;
    else if (flag == "--aug-smooth") args.aug_smooth = true;
    else if (flag.rfind("-", 0) == 0 && flag.size() > 1) throw UsageError(fmt::format("unknown option {}", flag));
    else args.images.push_back(flag);
  }
  if (args.images.empty()) throw UsageError("no image given");
  if (!args.heatmap.empty() && args.images.size() > 1) throw UsageError("--heatmap takes one image only");
  if (args.faithfulness && args.heatmap.empty()) throw UsageError("--faithfulness needs --heatmap");
  return args;
}

std::vector<std::uint8_t> read_file(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw dermal::Error(dermal::ErrorCode::io, fmt::format("cannot open \"{}\"", path));
  return {std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
}

void write_file(const std::string& path, const std::vector<std::uint8_t>& bytes) {
  std::ofstream file(path, std::ios::binary);
  file.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!file) throw dermal::Error(dermal::ErrorCode::io, fmt::format("cannot write \"{}\"", path));
}

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

double milliseconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

int run(const Arguments& args) {
  const bool heatmap = !args.heatmap.empty();
  dermal::LoadOptions load_options;
  load_options.threads = args.threads;
  load_options.cam_layer = args.layer;
  load_options.explain = heatmap;
  load_options.tune_allocator = true;  // this program owns its process: the lower load peak (README)
  dermal::PredictOptions options;
  options.top_k = args.top_k;
  options.cam_method = dermal::parse_cam_method(args.cam_method);
  options.colormap = dermal::parse_colormap(args.colormap);
  if (!args.cam_class.empty()) options.cam_class = args.cam_class;
  options.faithfulness = args.faithfulness;
  options.eigen_smooth = args.eigen_smooth;
  options.aug_smooth = args.aug_smooth;
  options.overlay_format = ends_with(args.heatmap, ".png") ? dermal::ImageFormat::png : dermal::ImageFormat::jpeg;

  const auto load_start = std::chrono::steady_clock::now();
  dermal::Model model(args.model, load_options);
  if (args.stats) std::fprintf(stderr, "load: %.1f ms\n", milliseconds_since(load_start));

  nlohmann::json results = nlohmann::json::array();
  int failures = 0;
  for (const std::string& path : args.images) {
    nlohmann::json entry = {{"image", path}};
    try {
      const std::vector<std::uint8_t> bytes = read_file(path);
      const auto start = std::chrono::steady_clock::now();
      const dermal::Prediction prediction = model.predict(bytes.data(), bytes.size(), options);
      if (args.stats) std::fprintf(stderr, "%s: %.1f ms\n", path.c_str(), milliseconds_since(start));
      entry["top"] = nlohmann::json::array();
      for (const dermal::ClassScore& score : prediction.top)
        entry["top"].push_back({{"label", score.label}, {"index", score.index}, {"probability", score.probability}});
      if (heatmap) {
        const dermal::Explanation& cam = prediction.explanations.front();
        write_file(args.heatmap, cam.overlay);
        entry["heatmap"] = {{"path", args.heatmap}, {"label", cam.label}, {"cam_method", dermal::cam_method_name(cam.cam_method)},
                            {"flat", cam.flat}};
        if (cam.faithfulness) {
          nlohmann::json road = nlohmann::json::object();
          for (int i = 0; i < 4; ++i) road[std::to_string(dermal::kRoadPercents[i])] = cam.faithfulness->road[i];
          entry["heatmap"]["faithfulness"] = {{"cam_mult_image_change", cam.faithfulness->cam_mult_image_change},
                                              {"road", road}};
        }
      }
    } catch (const dermal::Error& e) {
      ++failures;
      entry["error"] = {{"code", dermal::error_code_name(e.code())}, {"message", e.what()}};
    }
    if (!args.json) {
      if (entry.contains("error")) {
        std::fprintf(stderr, "%s: error (%s): %s\n", path.c_str(), entry["error"]["code"].get<std::string>().c_str(),
                     entry["error"]["message"].get<std::string>().c_str());
        continue;
      }
      std::printf("%s\n", path.c_str());
      for (const auto& score : entry["top"])
        std::printf("  %-12s %6.2f%%\n", score["label"].get<std::string>().c_str(),
                    100.0 * score["probability"].get<double>());
      if (heatmap) std::printf("  heatmap (%s, %s): %s\n", entry["heatmap"]["cam_method"].get<std::string>().c_str(),
                               entry["heatmap"]["label"].get<std::string>().c_str(), args.heatmap.c_str());
      if (heatmap && entry["heatmap"].contains("faithfulness")) {
        const auto& f = entry["heatmap"]["faithfulness"];
        std::printf("  faithfulness: probability change %+.4f with the photo x map; ROAD",
                    f["cam_mult_image_change"].get<double>());
        for (const auto& [percent, change] : f["road"].items())
          std::printf(" %s%% %+.4f", percent.c_str(), change.get<double>());
        std::printf("\n");
      }
    }
    results.push_back(entry);
  }
  if (args.json) std::printf("%s\n", results.dump(2).c_str());
  else std::printf("(model scores, not a diagnosis)\n");
  if (args.stats) {
    const dermal::MemoryStatus memory = dermal::memory_status();
    std::fprintf(stderr, "peak RSS: %.1f MB\n", memory.peak_rss_bytes / 1e6);
  }
  return failures == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(parse_arguments(argc, argv));
  } catch (const UsageError& e) {
    std::fprintf(stderr, "dermal-classify: %s\n\n%s", e.what(), kUsage);
    return 2;
  } catch (const dermal::Error& e) {
    std::fprintf(stderr, "dermal-classify: %s: %s\n", dermal::error_code_name(e.code()), e.what());
    return 1;
  }
}
