#include "image/jpeg.hpp"

#include <fmt/format.h>
#include <turbojpeg.h>

#include <memory>
#include <string>

namespace dermal {

namespace {

struct TurboJpegHandleFree {
  void operator()(void* handle) const { tjDestroy(handle); }
};
using TurboJpegHandle = std::unique_ptr<void, TurboJpegHandleFree>;

struct TurboJpegBufferFree {
  void operator()(unsigned char* buffer) const { tjFree(buffer); }
};

// Above this quality the chroma planes keep full resolution (4:4:4);
// at or below it they are halved in both directions (4:2:0).
constexpr int kMaxSubsampledQuality = 90;

}  // namespace

Image decode_jpeg(const std::uint8_t* data, std::size_t size, std::int64_t expected_width,
                  std::int64_t expected_height) {
  const TurboJpegHandle decoder(tjInitDecompress());
  if (!decoder) throw Error(ErrorCode::out_of_memory, "cannot start a JPEG decoder: " + std::string(tjGetErrorStr2(nullptr)));
  const auto failure = [&decoder] {
    return Error(ErrorCode::invalid_image, fmt::format("could not decode the JPEG data: {}", tjGetErrorStr2(decoder.get())));
  };
  int width = 0, height = 0, subsampling = 0, colorspace = 0;
  if (tjDecompressHeader3(decoder.get(), data, static_cast<unsigned long>(size), &width, &height, &subsampling,
                          &colorspace) != 0)
    throw failure();
  if (width != expected_width || height != expected_height)
    throw Error(ErrorCode::invalid_image,
                fmt::format("corrupt JPEG data: the frame header says {}x{}, the decoder reads {}x{}", expected_width,
                            expected_height, width, height));
  Image image;
  image.width = width;
  image.height = height;
  image.rgb.resize(static_cast<std::size_t>(width) * height * 3);
  if (tjDecompress2(decoder.get(), data, static_cast<unsigned long>(size), image.rgb.data(), width, 0, height,
                    TJPF_RGB, 0) != 0 &&
      tjGetErrorCode(decoder.get()) != TJERR_WARNING)
    throw failure();
  return image;
}

std::vector<std::uint8_t> encode_jpeg(const Image& image, int quality) {
  const TurboJpegHandle encoder(tjInitCompress());
  if (!encoder) throw Error(ErrorCode::out_of_memory, "cannot start a JPEG encoder: " + std::string(tjGetErrorStr2(nullptr)));
  unsigned char* jpeg = nullptr;
  unsigned long size = 0;
  const int subsampling = quality > kMaxSubsampledQuality ? TJSAMP_444 : TJSAMP_420;
  const int status = tjCompress2(encoder.get(), image.rgb.data(), image.width, 0, image.height, TJPF_RGB, &jpeg, &size,
                                 subsampling, quality, 0);
  const std::unique_ptr<unsigned char, TurboJpegBufferFree> owned(jpeg);
  if (status != 0)
    throw Error(ErrorCode::internal, fmt::format("cannot encode a {}x{} image as JPEG: {}", image.width, image.height,
                                                 tjGetErrorStr2(encoder.get())));
  return std::vector<std::uint8_t>(jpeg, jpeg + size);
}

}  // namespace dermal
