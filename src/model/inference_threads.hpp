// The threads a model runs its predictions on.
#pragma once

#include <sys/types.h>

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
// fork(): the threads do not exist in a child process. A child's first run()
// starts its own; the parent's are never joined there. Fork only while no
// run() is in progress in the parent.
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

 private:
  struct Request {
    const std::function<void()>* work = nullptr;
    bool taken = false;
    bool done = false;
    std::exception_ptr failure;
  };

  void start_if_needed();  // holds mutex_
  void serve();

  const int count_;
  const int queue_timeout_ms_;
  std::mutex mutex_;
  std::condition_variable queued_;   // a request arrived, or stopping
  std::condition_variable changed_;  // a request was taken or finished
  std::deque<Request*> queue_;
  std::vector<std::thread>* threads_ = nullptr;  // of process owner_; never destroyed in another process
  pid_t owner_ = 0;
  std::size_t idle_ = 0;  // threads waiting for a request
  bool stopping_ = false;
};

}  // namespace dermal
