#include "model/inference_threads.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>

#include "dermal/dermal.hpp"

namespace dermal {

InferenceThreads::InferenceThreads(int count, int queue_timeout_ms)
    : count_(count), queue_timeout_ms_(queue_timeout_ms), state_(new State) {}

InferenceThreads::~InferenceThreads() {
  {
    std::lock_guard<std::mutex> lock(state_->mutex);
    state_->stopping = true;
  }
  state_->queued.notify_all();
  for (std::thread& thread : state_->threads) thread.join();
  delete state_;
}

void InferenceThreads::run(const std::function<void()>& work) {
  State& state = *state_;
  Request request;
  request.work = &work;
  std::unique_lock<std::mutex> lock(state.mutex);
  if (state.threads.empty()) {
    state.idle = count_;  // each new thread is idle until it takes a request
    for (int i = 0; i < count_; ++i) state.threads.emplace_back([this, &state] { serve(state); });
  }
  state.queue.push_back(&request);
  state.queued.notify_one();
  // An idle thread for every request up to this one: it is as good as taken.
  const bool has_a_thread = !state.held && state.idle >= state.queue.size();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(queue_timeout_ms_);
  if (!has_a_thread && !state.changed.wait_until(lock, deadline, [&] { return request.taken; })) {
    state.queue.erase(std::find(state.queue.begin(), state.queue.end(), &request));
    throw Error(ErrorCode::busy, fmt::format("no inference thread took the request within {} ms ({} thread{})",
                                             queue_timeout_ms_, count_, count_ == 1 ? "" : "s"));
  }
  state.changed.wait(lock, [&] { return request.done; });
  if (request.failure) std::rethrow_exception(request.failure);
}

void InferenceThreads::serve(State& state) {
  std::unique_lock<std::mutex> lock(state.mutex);
  while (true) {
    // Counted in idle while it waits.
    state.queued.wait(lock, [&] { return state.stopping || (!state.held && !state.queue.empty()); });
    if (state.queue.empty() || state.held) return;  // stopping, nothing left to take
    --state.idle;
    Request* request = state.queue.front();
    state.queue.pop_front();
    request->taken = true;
    state.changed.notify_all();
    lock.unlock();
    try {
      (*request->work)();
    } catch (...) {
      request->failure = std::current_exception();
    }
    lock.lock();
    request->done = true;
    ++state.idle;
    state.changed.notify_all();
  }
}

void InferenceThreads::before_fork() {
  std::unique_lock<std::mutex> lock(state_->mutex);
  state_->held = true;
  state_->changed.wait(lock, [&] { return state_->idle == state_->threads.size(); });
  lock.release();  // held across fork(); unlocked by after_fork_in_parent()
}

void InferenceThreads::after_fork_in_parent() {
  state_->held = false;
  state_->mutex.unlock();
  state_->queued.notify_all();
}

void InferenceThreads::after_fork_in_child() {
  state_ = new State;  // the parent's State, its locked mutex and its threads' handles are left as they are
}

}  // namespace dermal
