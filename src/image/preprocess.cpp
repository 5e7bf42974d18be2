#include "image/preprocess.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "image/image.hpp"

namespace dermal {

namespace {

// For each output index first..first+count-1: the first contributing input
// index and the normalised weights of the inputs from there on.
struct Taps {
  std::vector<int> first;
  std::vector<std::vector<float>> weights;
};

Taps bilinear_taps(int in_size, int out_size, int first, int count) {
  const double scale = static_cast<double>(in_size) / out_size;
  const double filter_scale = std::max(scale, 1.0);
  const double support = filter_scale;  // the triangle filter reaches 1 unit
  Taps taps;
  taps.first.resize(count);
  taps.weights.resize(count);
  for (int i = 0; i < count; ++i) {
    const double center = (first + i + 0.5) * scale;
    const int lo = std::max(static_cast<int>(center - support + 0.5), 0);
    const int hi = std::min(static_cast<int>(center + support + 0.5), in_size);
    std::vector<double> raw;
    double total = 0;
    for (int j = lo; j < hi; ++j) {
      const double x = std::abs((j - center + 0.5) / filter_scale);
      raw.push_back(x < 1.0 ? 1.0 - x : 0.0);
      total += raw.back();
    }
    for (double r : raw) taps.weights[i].push_back(static_cast<float>(total > 0 ? r / total : 0));
    taps.first[i] = lo;
  }
  return taps;
}

// k when `scale` is float(1/k) for a whole k from 1 to 65535 (1/255:
// torchvision's ToTensor, Keras's Rescaling(1/255)), else 0.
float whole_divisor(float scale) {
  const double k = std::nearbyint(1.0 / scale);
  return k >= 1 && k <= 65535 && static_cast<float>(1.0 / k) == scale ? static_cast<float>(k) : 0.0f;
}

// (value * scale - mean) / std for 8-bit RGB, planar, in float32: through a
// table of the 256 values per channel. A scale of 1/k divides by k instead,
// as x / 255 does (value * float(1/255) differs from it in the last bit for
// about half the values).
std::vector<float> normalise(const Image& resized, const ModelDescription& d) {
  const std::size_t plane = static_cast<std::size_t>(resized.width) * resized.height;
  std::vector<float> input(3 * plane);
  const float divisor = whole_divisor(d.scale);
  for (int c = 0; c < 3; ++c) {
    float table[256];
    for (int v = 0; v < 256; ++v) {
      const float scaled = divisor > 0 ? static_cast<float>(v) / divisor : static_cast<float>(v) * d.scale;
      table[v] = (scaled - d.mean[c]) / d.std[c];
    }
    for (std::size_t i = 0; i < plane; ++i) input[c * plane + i] = table[resized.rgb[3 * i + c]];
  }
  return input;
}

}  // namespace

std::vector<float> resize_bilinear(const Image& image, const ResizeWindow& window) {
  const int in_w = image.width, in_h = image.height;
  const int out_w = window.width, out_h = window.height;
  const Taps across = bilinear_taps(in_w, window.resized_width, window.left, out_w);
  const Taps down = bilinear_taps(in_h, window.resized_height, window.top, out_h);
  // Horizontal pass over the input rows the window needs, planar.
  const int row_first = down.first.front();
  const int row_count = down.first.back() + static_cast<int>(down.weights.back().size()) - row_first;
  std::vector<float> rows(static_cast<std::size_t>(3) * row_count * out_w);
  for (int r = 0; r < row_count; ++r) {
    const std::uint8_t* line = &image.rgb[static_cast<std::size_t>(row_first + r) * in_w * 3];
    for (int x = 0; x < out_w; ++x) {
      float sum[3] = {0, 0, 0};
      const std::vector<float>& w = across.weights[x];
      const std::uint8_t* px = line + static_cast<std::size_t>(across.first[x]) * 3;
      for (std::size_t k = 0; k < w.size(); ++k, px += 3) {
        sum[0] += w[k] * px[0];
        sum[1] += w[k] * px[1];
        sum[2] += w[k] * px[2];
      }
      for (int c = 0; c < 3; ++c) rows[(static_cast<std::size_t>(c) * row_count + r) * out_w + x] = sum[c];
    }
  }
  // Vertical pass.
  std::vector<float> out(static_cast<std::size_t>(3) * out_h * out_w, 0.0f);
  for (int c = 0; c < 3; ++c) {
    const float* plane = &rows[static_cast<std::size_t>(c) * row_count * out_w];
    for (int y = 0; y < out_h; ++y) {
      const std::vector<float>& w = down.weights[y];
      float* target = &out[(static_cast<std::size_t>(c) * out_h + y) * out_w];
      for (std::size_t k = 0; k < w.size(); ++k) {
        const float* source = plane + static_cast<std::size_t>(down.first[y] - row_first + k) * out_w;
        for (int x = 0; x < out_w; ++x) target[x] += w[k] * source[x];
      }
    }
  }
  return out;
}

ResizeWindow input_window(const Image& image, const ModelDescription& description) {
  ResizeWindow window;
  window.width = window.resized_width = description.input_width;
  window.height = window.resized_height = description.input_height;
  window.box_right = static_cast<float>(image.width);
  window.box_bottom = static_cast<float>(image.height);
  if (description.resize == ResizePolicy::fit) {
    // PIL.ImageOps.fit with bleed 0 and centering (0.5, 0.5), in Python's
    // doubles; Pillow then holds the box as float.
    const double photo_ratio = static_cast<double>(image.width) / image.height;
    const double input_ratio = static_cast<double>(description.input_width) / description.input_height;
    double crop_width = image.width, crop_height = image.height;
    if (photo_ratio != input_ratio) {
      if (photo_ratio >= input_ratio) crop_width = input_ratio * image.height;
      else crop_height = image.width / input_ratio;
    }
    const double crop_left = (image.width - crop_width) * 0.5;
    const double crop_top = (image.height - crop_height) * 0.5;
    window.box_left = static_cast<float>(crop_left);
    window.box_top = static_cast<float>(crop_top);
    window.box_right = static_cast<float>(crop_left + crop_width);
    window.box_bottom = static_cast<float>(crop_top + crop_height);
  } else if (description.resize == ResizePolicy::center_crop) {
    // As torchvision: Resize(shorter) truncates the longer side, CenterCrop rounds half to even.
    const std::int64_t shorter = description.resize_shorter_to;
    const std::int64_t longer = shorter * std::max(image.width, image.height) / std::min(image.width, image.height);
    if (longer > (1 << 24))
      throw Error(ErrorCode::invalid_image,
                  fmt::format("a {}x{} picture is too elongated to crop a square from", image.width, image.height));
    window.resized_width = static_cast<int>(image.width <= image.height ? shorter : longer);
    window.resized_height = static_cast<int>(image.width <= image.height ? longer : shorter);
    window.left = static_cast<int>(std::nearbyint((window.resized_width - window.width) / 2.0));
    window.top = static_cast<int>(std::nearbyint((window.resized_height - window.height) / 2.0));
  }
  return window;
}

PixelRect ResizeWindow::on_picture(int picture_width, int picture_height) const {
  const double to_picture_x = static_cast<double>(box_right - box_left) / resized_width;
  const double to_picture_y = static_cast<double>(box_bottom - box_top) / resized_height;
  PixelRect rect;
  rect.left = static_cast<int>(std::lround(box_left + left * to_picture_x));
  rect.top = static_cast<int>(std::lround(box_top + top * to_picture_y));
  rect.width = std::clamp(static_cast<int>(std::lround(width * to_picture_x)), 1, picture_width - rect.left);
  rect.height = std::clamp(static_cast<int>(std::lround(height * to_picture_y)), 1, picture_height - rect.top);
  return rect;
}

std::vector<float> preprocess(const Image& image, const ModelDescription& description) {
  check_image(image, "picture");
  const ResizeWindow window = input_window(image, description);
  if (description.resample) return normalise(resize_like_pillow(image, *description.resample, window), description);
  std::vector<float> input = resize_bilinear(image, window);
  const std::size_t plane = static_cast<std::size_t>(window.width) * window.height;
  for (int c = 0; c < 3; ++c) {
    const float gain = description.scale / description.std[c];
    const float offset = description.mean[c] / description.std[c];
    for (std::size_t i = 0; i < plane; ++i) input[c * plane + i] = input[c * plane + i] * gain - offset;
  }
  return input;
}

}  // namespace dermal
