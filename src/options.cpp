// Every option's names and limits, in one place for the C++, C and Python APIs.
#include <fmt/format.h>

#include <string>

#include "dermal/dermal.hpp"

namespace dermal {

namespace {

template <typename Enum>
struct Named {
  Enum value;
  const char* name;
};

constexpr Named<CamMethod> kCamMethods[] = {
    {CamMethod::gradcam, "gradcam"},   {CamMethod::gradcam_plus_plus, "gradcam++"},
    {CamMethod::xgradcam, "xgradcam"}, {CamMethod::hirescam, "hirescam"},
    {CamMethod::layercam, "layercam"}, {CamMethod::eigencam, "eigencam"},
    {CamMethod::gradcam_elementwise, "gradcamelementwise"}, {CamMethod::eigengradcam, "eigengradcam"},
    {CamMethod::finercam, "finercam"}, {CamMethod::fem, "fem"}, {CamMethod::kpcacam, "kpcacam"},
    {CamMethod::ablationcam, "ablationcam"}, {CamMethod::scorecam, "scorecam"},
};
constexpr Named<Colormap> kColormaps[] = {{Colormap::jet, "jet"}, {Colormap::viridis, "viridis"}};
constexpr Named<ImageFormat> kImageFormats[] = {{ImageFormat::jpeg, "jpeg"}, {ImageFormat::png, "png"}};

template <typename Enum, std::size_t N>
Enum parse(const Named<Enum> (&table)[N], const std::string& name, const char* what) {
  std::string valid;
  for (const Named<Enum>& entry : table) {
    if (name == entry.name) return entry.value;
    valid += fmt::format("{}\"{}\"", valid.empty() ? "" : ", ", entry.name);
  }
  throw Error(ErrorCode::invalid_argument, fmt::format("unknown {} \"{}\"; expected one of {}", what, name, valid));
}

template <typename Enum, std::size_t N>
const char* name_of(const Named<Enum> (&table)[N], Enum value, const char* what) {
  for (const Named<Enum>& entry : table)
    if (entry.value == value) return entry.name;
  throw Error(ErrorCode::invalid_argument, fmt::format("unknown {} value {}", what, static_cast<int>(value)));
}

[[noreturn]] void out_of_range(const char* option, const char* range, const std::string& value) {
  throw Error(ErrorCode::invalid_argument, fmt::format("{} must be {}, not {}", option, range, value));
}

}  // namespace

CamMethod parse_cam_method(const std::string& name) { return parse(kCamMethods, name, "CAM method"); }
const char* cam_method_name(CamMethod method) { return name_of(kCamMethods, method, "CAM method"); }
Colormap parse_colormap(const std::string& name) { return parse(kColormaps, name, "colormap"); }
const char* colormap_name(Colormap colormap) { return name_of(kColormaps, colormap, "colormap"); }
ImageFormat parse_image_format(const std::string& name) { return parse(kImageFormats, name, "overlay format"); }
const char* image_format_name(ImageFormat format) { return name_of(kImageFormats, format, "overlay format"); }

void check_options(const LoadOptions& options) {
  if (options.threads < 1) out_of_range("threads", "at least 1", std::to_string(options.threads));
  if (options.max_concurrent < 1) out_of_range("max_concurrent", "at least 1", std::to_string(options.max_concurrent));
  if (options.queue_timeout_ms < 0)
    out_of_range("queue_timeout_ms", "at least 0", std::to_string(options.queue_timeout_ms));
  if (options.decode.max_pixels < 1) out_of_range("max_pixels", "at least 1", "0");
}

void check_options(const PredictOptions& options) {
  if (options.top_k < 1) out_of_range("top_k", "at least 1", std::to_string(options.top_k));
  if (options.cam_top_k < 1) out_of_range("cam_top_k", "at least 1", std::to_string(options.cam_top_k));
  if (!(options.overlay_alpha >= 0.0f && options.overlay_alpha <= 1.0f))
    out_of_range("overlay_alpha", "within 0..1", fmt::format("{}", options.overlay_alpha));
  if (options.jpeg_quality < 1 || options.jpeg_quality > 100)
    out_of_range("jpeg_quality", "within 1..100", std::to_string(options.jpeg_quality));
  cam_method_name(options.cam_method);
  colormap_name(options.colormap);
  image_format_name(options.overlay_format);
}

}  // namespace dermal
