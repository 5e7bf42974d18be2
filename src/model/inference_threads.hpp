// The threads a model runs its predictions on.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace dermal {

// A fixed number of threads, started at the first run(), that take requests
// from a queue in arrival order. Per-thread scratch memory (LibTorch's,
// oneDNN's, malloc arenas) therefore exists only on these threads, however
// many host threads call run(). The queue holds the callers that are
// waiting, so its length is bounded by the host's calling threads; each gives
// up after the queue timeout.
//
// fork(): the process's fork handlers (model.cpp) call before_fork() and one
// of the after_fork_*() functions. A child never touches its parent's
// threads or locks: its first run() starts threads of its own.
class InferenceThreads {
 public:
  InferenceThreads(int count, int queue_timeout_ms);
  // Waits for the requests in progress and joins the threads.
  ~InferenceThreads();
  InferenceThreads(const InferenceThreads&) = delete;
  InferenceThreads& operator=(const InferenceThreads&) = delete;

  // Runs work on one of the threads and waits for it; rethrows what work
  // throws. Throws Error(busy) if no thread took it within the queue timeout.
  void run(const std::function<void()>& work);

  // Waits until no request is running and holds the queue: none starts
  // until after_fork_in_parent() (queued ones then go on).
  void before_fork();
  void after_fork_in_parent();
  // Abandons the parent's threads and queue (they do not exist here) without
  // destroying them; the next run() starts this process's own threads.
  void after_fork_in_child();

 private:
  struct Request {
    const std::function<void()>* work = nullptr;
    bool taken = false;
    bool done = false;
    std::exception_ptr failure;
  };

  // Everything a process's threads share; a forked child starts a new one.
  struct State {
    std::mutex mutex;
    std::condition_variable queued;   // a request arrived, the queue resumed, or stopping
    std::condition_variable changed;  // a request was taken or finished
    std::deque<Request*> queue;
    std::vector<std::thread> threads;  // empty until the first run()
    std::size_t idle = 0;              // threads waiting for a request
    bool held = false;                 // by before_fork(): no request is taken
    bool stopping = false;
  };

  void serve(State& state);

  const int count_;
  const int queue_timeout_ms_;
  State* state_;  // owned; abandoned, never freed, in a forked child
};

}  // namespace dermal
