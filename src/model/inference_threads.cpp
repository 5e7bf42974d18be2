#include "model/inference_threads.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>

#include "dermal/dermal.hpp"

namespace dermal {

InferenceThreads::InferenceThreads(int count, int queue_timeout_ms)
    : count_(count), queue_timeout_ms_(queue_timeout_ms) {}

InferenceThreads::~InferenceThreads() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (threads_ == nullptr || owner_ != getpid()) return;  // none here (a forked child leaves its parent's alone)
    stopping_ = true;
  }
  queued_.notify_all();
  for (std::thread& thread : *threads_) thread.join();
  delete threads_;
}

void InferenceThreads::start_if_needed() {
  const pid_t self = getpid();
  if (threads_ != nullptr && owner_ == self) return;
  // In a child of fork() the parent's threads do not exist: start new ones and
  // leave the parent's std::thread objects untouched (destroying them would
  // terminate the process).
  threads_ = new std::vector<std::thread>();
  owner_ = self;
  queue_.clear();
  idle_ = count_;  // each new thread is idle until it takes a request
  for (int i = 0; i < count_; ++i) threads_->emplace_back([this] { serve(); });
}

void InferenceThreads::run(const std::function<void()>& work) {
  Request request;
  request.work = &work;
  std::unique_lock<std::mutex> lock(mutex_);
  start_if_needed();
  queue_.push_back(&request);
  queued_.notify_one();
  // An idle thread for every request up to this one: it is as good as taken.
  const bool has_a_thread = idle_ >= queue_.size();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(queue_timeout_ms_);
  if (!has_a_thread && !changed_.wait_until(lock, deadline, [&] { return request.taken; })) {
    queue_.erase(std::find(queue_.begin(), queue_.end(), &request));
    throw Error(ErrorCode::busy, fmt::format("no inference thread took the request within {} ms ({} thread{})",
                                             queue_timeout_ms_, count_, count_ == 1 ? "" : "s"));
  }
  changed_.wait(lock, [&] { return request.done; });
  if (request.failure) std::rethrow_exception(request.failure);
}

void InferenceThreads::serve() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (true) {
    queued_.wait(lock, [&] { return stopping_ || !queue_.empty(); });  // counted in idle_ while it waits
    --idle_;
    if (queue_.empty()) return;  // stopping, nothing left
    Request* request = queue_.front();
    queue_.pop_front();
    request->taken = true;
    changed_.notify_all();
    lock.unlock();
    try {
      (*request->work)();
    } catch (...) {
      request->failure = std::current_exception();
    }
    lock.lock();
    request->done = true;
    ++idle_;
    changed_.notify_all();
  }
}

}  // namespace dermal

