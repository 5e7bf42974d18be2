// A libjpeg-turbo (TurboJPEG) encoder or decoder handle, destroyed with its owner.
#pragma once

#include <turbojpeg.h>

#include <memory>

namespace dermal {

struct TurboJpegHandleFree {
  void operator()(void* handle) const { tjDestroy(handle); }
};
using TurboJpegHandle = std::unique_ptr<void, TurboJpegHandleFree>;

}  // namespace dermal
