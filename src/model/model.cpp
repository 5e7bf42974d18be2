// dermal::Model: the model file, its network loaded once (eagerly or at the
// first request), and the gate that bounds how many requests run at once.
#include <fmt/format.h>
#include <ATen/Parallel.h>

#include <chrono>
#include <condition_variable>
#include <mutex>

#include "dermal/dermal.hpp"
#include "model/allocator.hpp"
#include "model/network.hpp"
#include "model/predict.hpp"
#include "model/torch_errors.hpp"

namespace dermal {

namespace {

// Bounds how many predictions run at once; a waiter gives up after a timeout.
class InferenceSlots {
 public:
  explicit InferenceSlots(int limit) : free_(limit) {}

  // Takes a slot, or throws Error(busy) after timeout_ms.
  void acquire(int timeout_ms) {
    std::unique_lock<std::mutex> lock(mutex_);
    if (!freed_.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] { return free_ > 0; }))
      throw Error(ErrorCode::busy, fmt::format("no inference slot became free within {} ms", timeout_ms));
    --free_;
  }

  void release() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ++free_;
    }
    freed_.notify_one();
  }

 private:
  std::mutex mutex_;
  std::condition_variable freed_;
  int free_;
};

// Holds one inference slot for its lifetime.
class SlotGuard {
 public:
  SlotGuard(InferenceSlots& slots, int timeout_ms) : slots_(slots) { slots_.acquire(timeout_ms); }
  ~SlotGuard() { slots_.release(); }
  SlotGuard(const SlotGuard&) = delete;
  SlotGuard& operator=(const SlotGuard&) = delete;

 private:
  InferenceSlots& slots_;
};

}  // namespace

struct Model::Impl {
  Impl(std::string path, LoadOptions options)
      : path(std::move(path)), options(std::move(options)),
        slots(this->options.max_concurrent) {}

  const std::string path;
  const LoadOptions options;
  mutable std::mutex mutex;                // guards what follows; held while loading
  std::shared_ptr<const Network> network;  // requests in flight keep their own reference
  std::vector<std::string> labels;         // kept after unload()
  int load_count = 0;
  InferenceSlots slots;

  // The loaded network, loading it first if needed.
  std::shared_ptr<const Network> acquire() {
    std::lock_guard<std::mutex> lock(mutex);
    if (!network) {
      at::set_num_threads(options.threads);  // LibTorch's intra-op pool: a per-process setting
      {
        LoadingAllocatorSettings allocator(options.tune_allocator);
        network = translate_failures("loading the model",
                                     [&] { return load_network(path, options.cam_layer, options.explain); });
      }
      if (labels.empty()) labels = network->description.labels;  // never changes again: references stay valid
      ++load_count;
      release_free_memory();  // what loading and optimising left on the heap
    }
    return network;
  }

  // Runs the request on the calling thread once a slot is free; `decode` makes the photo.
  template <typename Decode>
  Prediction predict(const PredictOptions& predict_options, Decode&& decode) {
    check_options(predict_options);
    const bool explain = predict_options.explain.value_or(options.explain);
    if (explain && !options.explain)
      throw Error(ErrorCode::explain_disabled, "explain was switched off when this model was loaded");
    SlotGuard slot(slots, options.queue_timeout_ms);
    return predict_photo(*acquire(), decode(), predict_options, explain);
  }
};

Model::Model(std::string path, LoadOptions options) {
  check_options(options);
  impl_ = std::make_unique<Impl>(std::move(path), std::move(options));
  if (impl_->options.preload) impl_->acquire();
}

Model::~Model() = default;
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;

Prediction Model::predict(const std::uint8_t* data, std::size_t size, const PredictOptions& options) {
  return impl_->predict(options, [&] { return decode_image(data, size, impl_->options.decode); });
}

Prediction Model::predict(const Image& photo, const PredictOptions& options) {
  const std::uint64_t pixels = static_cast<std::uint64_t>(std::max(photo.width, 0)) * std::max(photo.height, 0);
  if (pixels > impl_->options.decode.max_pixels)
    throw Error(ErrorCode::image_too_large, fmt::format("a {}x{} picture has {} pixels, over the limit of {}",
                                                        photo.width, photo.height, pixels,
                                                        impl_->options.decode.max_pixels));
  return impl_->predict(options, [&]() -> const Image& { return photo; });
}

void Model::load() { impl_->acquire(); }

void Model::unload() {
  std::shared_ptr<const Network> released;
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    released.swap(impl_->network);
  }
  released.reset();  // frees the weights unless a prediction still runs on them
  release_free_memory();
}

bool Model::loaded() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->network != nullptr;
}

int Model::load_count() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->load_count;
}

const std::vector<std::string>& Model::labels() {
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    if (!impl_->labels.empty()) return impl_->labels;
  }
  impl_->acquire();
  return impl_->labels;
}

ModelDescription Model::description() { return impl_->acquire()->description; }

std::string Model::cam_layer() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->network ? impl_->network->cam_layer : impl_->options.cam_layer;
}

std::uint64_t Model::weight_bytes() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->network ? impl_->network->weight_bytes : 0;
}

const std::string& Model::path() const { return impl_->path; }

}  // namespace dermal
