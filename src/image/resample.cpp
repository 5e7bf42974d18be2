#include "image/resample.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "image/image.hpp"

namespace dermal {

namespace {

// Pillow's filter kernels and their supports (in source pixels at scale 1).
double box_kernel(double x) { return x > -0.5 && x <= 0.5 ? 1.0 : 0.0; }

double bilinear_kernel(double x) {
  x = std::abs(x);
  return x < 1.0 ? 1.0 - x : 0.0;
}

double hamming_kernel(double x) {
  x = std::abs(x);
  if (x == 0.0) return 1.0;
  if (x >= 1.0) return 0.0;
  x *= M_PI;
  // Pillow writes the window's constants as float literals; so do we.
  return std::sin(x) / x * (0.54f + 0.46f * std::cos(x));
}

double bicubic_kernel(double x) {
  constexpr double a = -0.5;
  x = std::abs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

double sinc(double x) {
  if (x == 0.0) return 1.0;
  x *= M_PI;
  return std::sin(x) / x;
}

double lanczos_kernel(double x) { return -3.0 <= x && x < 3.0 ? sinc(x) * sinc(x / 3) : 0.0; }

struct Kernel {
  double (*weight)(double);
  double support;
};

Kernel kernel_of(ResampleFilter filter) {
  switch (filter) {
    case ResampleFilter::box: return {box_kernel, 0.5};
    case ResampleFilter::bilinear: return {bilinear_kernel, 1.0};
    case ResampleFilter::hamming: return {hamming_kernel, 1.0};
    case ResampleFilter::bicubic: return {bicubic_kernel, 2.0};
    case ResampleFilter::lanczos: return {lanczos_kernel, 3.0};
    case ResampleFilter::nearest: break;
  }
  throw Error(ErrorCode::internal, "nearest has no convolution kernel");
}

// Pillow's 8-bit passes keep 22 fractional bits (8 for the value, 2 spare).
constexpr int kPrecisionBits = 22;

std::uint8_t clip8(std::int32_t sum) {
  return static_cast<std::uint8_t>(std::clamp(sum >> kPrecisionBits, 0, 255));
}

// For outputs first..first+count-1 of a resize of `in_size` pixels, box
// [in0, in1), to `out_size`: the first contributing input and the weights,
// normalised to sum 1 and then rounded to fixed point, as Pillow does.
struct Taps {
  int stride = 0;                     // weights per output (some may be 0)
  std::vector<int> start;             // first input index, per output
  std::vector<int> length;            // inputs used, per output
  std::vector<std::int32_t> weights;  // stride per output
  int input_begin() const { return start.front(); }
  int input_end() const {
    int end = 0;
    for (std::size_t i = 0; i < start.size(); ++i) end = std::max(end, start[i] + length[i]);
    return end;
  }
};

Taps pillow_taps(int in_size, float in0, float in1, int out_size, const Kernel& kernel, int first, int count) {
  // Pillow subtracts the box's ends in float, then works in double.
  const double scale = static_cast<double>(in1 - in0) / out_size;
  const double filter_scale = scale < 1.0 ? 1.0 : scale;
  const double support = kernel.support * filter_scale;
  Taps taps;
  taps.stride = static_cast<int>(std::ceil(support)) * 2 + 1;
  taps.start.resize(count);
  taps.length.resize(count);
  taps.weights.assign(static_cast<std::size_t>(count) * taps.stride, 0);
  std::vector<double> raw(taps.stride);
  for (int i = 0; i < count; ++i) {
    const double center = in0 + (first + i + 0.5) * scale;
    const int lo = std::max(static_cast<int>(center - support + 0.5), 0);
    const int hi = std::min(static_cast<int>(center + support + 0.5), in_size);
    const int length = std::clamp(hi - lo, 0, taps.stride);
    const double reciprocal = 1.0 / filter_scale;  // Pillow multiplies by it rather than divide
    double total = 0.0;
    for (int k = 0; k < length; ++k) {
      raw[k] = kernel.weight((k + lo - center + 0.5) * reciprocal);
      total += raw[k];
    }
    std::int32_t* fixed = &taps.weights[static_cast<std::size_t>(i) * taps.stride];
    for (int k = 0; k < length; ++k) {
      const double w = total != 0.0 ? raw[k] / total : raw[k];
      fixed[k] = static_cast<std::int32_t>(w < 0 ? -0.5 + w * (1 << kPrecisionBits) : 0.5 + w * (1 << kPrecisionBits));
    }
    taps.start[i] = lo;
    taps.length[i] = length;
  }
  return taps;
}

// Horizontal pass: rows of `source` (width source_width) -> rows of
// taps.start.size() pixels.
void convolve_rows(const std::uint8_t* source, int source_width, int rows, const Taps& taps, std::uint8_t* out) {
  const int out_width = static_cast<int>(taps.start.size());
  for (int y = 0; y < rows; ++y) {
    const std::uint8_t* line = source + static_cast<std::size_t>(y) * source_width * 3;
    std::uint8_t* target = out + static_cast<std::size_t>(y) * out_width * 3;
    for (int x = 0; x < out_width; ++x) {
      const std::int32_t* w = &taps.weights[static_cast<std::size_t>(x) * taps.stride];
      const std::uint8_t* px = line + static_cast<std::size_t>(taps.start[x]) * 3;
      std::int32_t r = 1 << (kPrecisionBits - 1), g = r, b = r;
      for (int k = 0; k < taps.length[x]; ++k, px += 3) {
        r += px[0] * w[k];
        g += px[1] * w[k];
        b += px[2] * w[k];
      }
      target[3 * x] = clip8(r);
      target[3 * x + 1] = clip8(g);
      target[3 * x + 2] = clip8(b);
    }
  }
}

// Vertical pass: `source` rows (width pixels, the first being input row
// `row_offset`) -> taps.start.size() rows.
void convolve_columns(const std::uint8_t* source, int width, int row_offset, const Taps& taps, std::uint8_t* out) {
  const std::size_t line = static_cast<std::size_t>(width) * 3;
  std::vector<std::int32_t> sums(line);
  for (std::size_t y = 0; y < taps.start.size(); ++y) {
    std::fill(sums.begin(), sums.end(), 1 << (kPrecisionBits - 1));
    const std::int32_t* w = &taps.weights[y * taps.stride];
    for (int k = 0; k < taps.length[y]; ++k) {
      const std::uint8_t* row = source + (taps.start[y] - row_offset + k) * line;
      for (std::size_t i = 0; i < line; ++i) sums[i] += row[i] * w[k];
    }
    std::uint8_t* target = out + y * line;
    for (std::size_t i = 0; i < line; ++i) target[i] = clip8(sums[i]);
  }
}

// Pillow's coordinate of a sampling position: -1 left of the picture, else truncated.
int nearest_coordinate(double position) { return position < 0.0 ? -1 : static_cast<int>(position); }

// Pillow's NEAREST resize: an affine map sampled at pixel centres, stepped
// by repeated addition from the first output pixel; positions outside the
// picture give black.
Image resize_nearest(const Image& image, const ResizeWindow& window) {
  const double step_x = static_cast<double>(window.box_right - window.box_left) / window.resized_width;
  const double step_y = static_cast<double>(window.box_bottom - window.box_top) / window.resized_height;
  std::vector<int> columns(window.width);
  double x_position = window.box_left + step_x * 0.5;
  for (int x = 0; x < window.left + window.width; ++x, x_position += step_x)
    if (x >= window.left) columns[x - window.left] = nearest_coordinate(x_position);
  Image out;
  out.width = window.width;
  out.height = window.height;
  out.rgb.assign(static_cast<std::size_t>(window.width) * window.height * 3, 0);
  double y_position = window.box_top + step_y * 0.5;
  for (int y = 0; y < window.top + window.height; ++y, y_position += step_y) {
    if (y < window.top) continue;
    const int source_y = nearest_coordinate(y_position);
    if (source_y < 0 || source_y >= image.height) continue;
    const std::uint8_t* line = &image.rgb[static_cast<std::size_t>(source_y) * image.width * 3];
    std::uint8_t* target = &out.rgb[static_cast<std::size_t>(y - window.top) * window.width * 3];
    for (int x = 0; x < window.width; ++x)
      if (columns[x] >= 0 && columns[x] < image.width) std::memcpy(target + 3 * x, line + 3 * columns[x], 3);
  }
  return out;
}

// The window of the picture itself, from (left, top).
Image crop(const Image& image, int left, int top, int width, int height) {
  Image out;
  out.width = width;
  out.height = height;
  out.rgb.resize(static_cast<std::size_t>(width) * height * 3);
  for (int y = 0; y < height; ++y)
    std::memcpy(&out.rgb[static_cast<std::size_t>(y) * width * 3],
                &image.rgb[(static_cast<std::size_t>(top + y) * image.width + left) * 3], static_cast<std::size_t>(width) * 3);
  return out;
}

void check_window(const Image& image, const ResizeWindow& w) {
  const bool window_fits = w.resized_width >= 1 && w.resized_height >= 1 && w.width >= 1 && w.height >= 1 &&
                           w.left >= 0 && w.top >= 0 && w.left + w.width <= w.resized_width &&
                           w.top + w.height <= w.resized_height;
  const bool box_fits = w.box_left >= 0 && w.box_top >= 0 && w.box_right <= image.width &&
                        w.box_bottom <= image.height && w.box_right - w.box_left >= 0 &&
                        w.box_bottom - w.box_top >= 0;
  check_image(image, "picture");
  if (!window_fits || !box_fits)
    throw Error(ErrorCode::invalid_argument,
                fmt::format("cannot take the {}x{} window at ({}, {}) of box ({}, {}, {}, {}) of a {}x{} picture "
                            "resized to {}x{}",
                            w.width, w.height, w.left, w.top, w.box_left, w.box_top, w.box_right, w.box_bottom,
                            image.width, image.height, w.resized_width, w.resized_height));
}

}  // namespace

Image resize_like_pillow(const Image& image, ResampleFilter filter, const ResizeWindow& window) {
  check_window(image, window);
  // A box of whole pixels as large as the output is a plain crop in Pillow.
  if (window.box_left == static_cast<int>(window.box_left) && window.box_top == static_cast<int>(window.box_top) &&
      window.box_right - window.box_left == window.resized_width &&
      window.box_bottom - window.box_top == window.resized_height)
    return crop(image, static_cast<int>(window.box_left) + window.left, static_cast<int>(window.box_top) + window.top,
                window.width, window.height);
  if (filter == ResampleFilter::nearest) return resize_nearest(image, window);

  const Kernel kernel = kernel_of(filter);
  // A pass runs only when its dimension or the box changes it.
  const bool across = window.resized_width != image.width || window.box_left != 0 ||
                      window.box_right != window.resized_width;
  const bool down = window.resized_height != image.height || window.box_top != 0 ||
                    window.box_bottom != window.resized_height;
  Taps rows_taps;
  int row_begin = window.top, row_end = window.top + window.height;
  if (down) {
    rows_taps = pillow_taps(image.height, window.box_top, window.box_bottom, window.resized_height, kernel, window.top,
                            window.height);
    row_begin = rows_taps.input_begin();
    row_end = rows_taps.input_end();
  }
  // Horizontal pass over the source rows the window needs.
  Image rows;
  if (across) {
    const Taps columns_taps = pillow_taps(image.width, window.box_left, window.box_right, window.resized_width, kernel,
                                          window.left, window.width);
    rows.width = window.width;
    rows.height = row_end - row_begin;
    rows.rgb.resize(static_cast<std::size_t>(rows.width) * rows.height * 3);
    convolve_rows(&image.rgb[static_cast<std::size_t>(row_begin) * image.width * 3], image.width, rows.height,
                  columns_taps, rows.rgb.data());
  } else {
    rows = crop(image, window.left, row_begin, window.width, row_end - row_begin);
  }
  if (!down) return rows;
  Image out;
  out.width = window.width;
  out.height = window.height;
  out.rgb.resize(static_cast<std::size_t>(out.width) * out.height * 3);
  convolve_columns(rows.rgb.data(), rows.width, row_begin, rows_taps, out.rgb.data());
  return out;
}

}  // namespace dermal
