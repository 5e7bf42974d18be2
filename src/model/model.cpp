// dermal::Model: the model file, its network loaded once (eagerly or at the
// first request), the inference threads requests run on, and what keeps a
// loaded model usable in a child of fork().
#include <fmt/format.h>
#include <pthread.h>
#include <ATen/Config.h>
#include <ATen/Parallel.h>
#if AT_PARALLEL_OPENMP
#include <omp.h>
#endif

#include <map>
#include <mutex>

#include "dermal/dermal.hpp"
#include "model/allocator.hpp"
#include "model/inference_threads.hpp"
#include "model/network.hpp"
#include "model/predict.hpp"
#include "model/torch_errors.hpp"

namespace dermal {

namespace {

// Makes LibTorch and oneDNN on the calling thread (one of the model's
// inference threads) use `threads` threads; nothing to do when they already
// do. Under LibTorch's
// OpenMP build (Debian's) only this thread's OpenMP team size is set: the
// host's threads and LibTorch's process-wide default, which threads that have
// not used LibTorch yet start from, stay as the host left them (at::
// set_num_threads would change both, and recreate LibTorch's pthreadpool).
void use_threads_on_this_thread(int threads) {
  const int current = at::get_num_threads();  // after LibTorch's per-thread start-up, which would undo what follows
  if (current == threads) return;
#if AT_PARALLEL_OPENMP
  omp_set_num_threads(threads);
#else
  at::set_num_threads(threads);  // other builds have no per-thread setting
#endif
}

// The process's live models. Around fork() its handlers wait until no
// request runs and hold every model's locks, so a child starts from a
// consistent state: the network shared copy-on-write, no lock held by a
// thread that does not exist there, and threads of its own at its first
// request. Registered once, at the first model.
class ForkHandlers {
 public:
  static ForkHandlers& instance() {
    static ForkHandlers* handlers = new ForkHandlers;  // never destroyed: fork() may come during exit
    return *handlers;
  }

  // A model's lock and its threads, from its creation to its destruction.
  void add(std::mutex& model_mutex, InferenceThreads& threads) {
    std::lock_guard<std::mutex> lock(mutex_);
    models_.emplace(&threads, &model_mutex);
  }

  void remove(InferenceThreads& threads) {
    std::lock_guard<std::mutex> lock(mutex_);
    models_.erase(&threads);
  }

 private:
  ForkHandlers() {
    pthread_atfork([] { instance().prepare(); }, [] { instance().in_parent(); }, [] { instance().in_child(); });
  }

  // Requests in progress finish first (a load runs as one), so no thread
  // holds a lock inside LibTorch or a model while the process is copied.
  void prepare() {
    mutex_.lock();
    for (auto& [threads, model_mutex] : models_) {
      threads->before_fork();
      model_mutex->lock();
    }
  }

  void in_parent() {
    for (auto& [threads, model_mutex] : models_) {
      model_mutex->unlock();
      threads->after_fork_in_parent();
    }
    mutex_.unlock();
  }

  void in_child() {
    for (auto& [threads, model_mutex] : models_) {
      model_mutex->unlock();
      threads->after_fork_in_child();
    }
    mutex_.unlock();
  }

  std::mutex mutex_;
  std::map<InferenceThreads*, std::mutex*> models_;
};

}  // namespace

struct Model::Impl {
  Impl(std::string path, LoadOptions options)
      : path(std::move(path)), options(std::move(options)),
        threads(this->options.max_concurrent, this->options.queue_timeout_ms) {
    ForkHandlers::instance().add(mutex, threads);
  }
  ~Impl() { ForkHandlers::instance().remove(threads); }
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  const std::string path;
  const LoadOptions options;
  mutable std::mutex mutex;                // guards what follows; held while loading
  std::shared_ptr<const Network> network;  // requests in flight keep their own reference
  std::vector<std::string> labels;         // kept after unload()
  int load_count = 0;
  InferenceThreads threads;                // last: joined before the rest is destroyed

  // The process's check of oneDNN's tensor ops when this model optimises,
  // else null. Its first call forks, so a host-facing call makes it before a
  // load is handed to the inference threads (onednn_ops_check.hpp).
  const OnednnOpsCheck* onednn_ops() const { return options.optimise ? &onednn_ops_check() : nullptr; }

  // The loaded network, loading it first if needed.
  std::shared_ptr<const Network> acquire() {
    std::lock_guard<std::mutex> lock(mutex);
    if (!network) {
      use_threads_on_this_thread(options.threads);
      {
        LoadingAllocatorSettings allocator(options.tune_allocator);
        network = translate_failures("loading the model", [&] {
          return load_network(path, options.cam_layer, options.explain, onednn_ops());
        });
      }
      if (labels.empty()) labels = network->description.labels;  // never changes again: references stay valid
      ++load_count;
      release_free_memory();  // what loading and optimising left on the heap
    }
    return network;
  }

  // The loaded network, loaded on an inference thread if need be: the load's
  // transient copies and the requests then share that thread's malloc arena,
  // so a request reuses what the load freed (reference model: peak 344 ->
  // 320 MB against loading on the host's thread). For host-facing calls only:
  // on an inference thread, call acquire().
  std::shared_ptr<const Network> acquire_from_host() {
    {
      std::lock_guard<std::mutex> lock(mutex);
      if (network) return network;
    }
    onednn_ops();  // here, not on an inference thread
    std::shared_ptr<const Network> loaded;
    threads.run([&] { loaded = acquire(); });
    return loaded;
  }

  // Runs the request on an inference thread; `decode` makes the photo there.
  template <typename Decode>
  Prediction predict(const PredictOptions& predict_options, Decode&& decode) {
    check_options(predict_options);
    const bool explain = predict_options.explain.value_or(options.explain);
    if (explain && !options.explain)
      throw Error(ErrorCode::explain_disabled, "explain was switched off when this model was loaded");
    Prediction prediction;
    onednn_ops();  // here, not on an inference thread, in case this request loads the model
    threads.run([&] {
      use_threads_on_this_thread(options.threads);
      prediction = predict_photo(*acquire(), decode(), predict_options, explain);
      if (options.release_memory_after_predict) release_free_memory();
    });
    return prediction;
  }
};


Model::Model(std::string path, LoadOptions options) {
  check_options(options);
  impl_ = std::make_unique<Impl>(std::move(path), std::move(options));
  if (impl_->options.preload) impl_->acquire_from_host();
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

void Model::load() { impl_->acquire_from_host(); }

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
  impl_->acquire_from_host();
  return impl_->labels;
}

ModelDescription Model::description() { return impl_->acquire_from_host()->description; }

std::string Model::cam_layer() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->network ? impl_->network->cam_layer : impl_->options.cam_layer;
}

std::uint64_t Model::weight_bytes() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->network ? impl_->network->weight_bytes : 0;
}

const std::string& Model::path() const { return impl_->path; }

ProbeResult Model::probe_result() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->network ? impl_->network->probe_result : ProbeResult::none;
}

const char* probe_result_name(ProbeResult result) {
  switch (result) {
    case ProbeResult::none: return "none";
    case ProbeResult::passed: return "passed";
    case ProbeResult::frozen_fallback: return "frozen_fallback";
  }
  return "unknown";
}

}  // namespace dermal
