// quarot — a small persistent thread pool. No global state: the caller owns the pool
// and passes it to the algorithms that can use it (nullptr = run on the calling thread).
// Workers are created once; a call hands them a range, the calling thread takes a share
// too, and the call returns when every share is done (rethrowing the first exception).
#pragma once

#include <algorithm>
#include <condition_variable>
#include <cstddef>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "error.hpp"

namespace quarot {

class thread_pool {
 public:
  /// `threads` is the number of threads that work on a call, the caller included.
  explicit thread_pool(unsigned threads = std::max(1u, std::thread::hardware_concurrency())) : size_(threads) {
    detail::require(threads >= 1 && threads <= 1024, "thread_pool needs 1..1024 threads, got ", threads);
    workers_.reserve(threads - 1);
    for (unsigned t = 1; t < threads; ++t) workers_.emplace_back([this, t] { worker_loop(t); });
  }
  thread_pool(const thread_pool&) = delete;
  thread_pool& operator=(const thread_pool&) = delete;
  ~thread_pool() {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    for (auto& w : workers_) w.join();
  }

  [[nodiscard]] unsigned size() const noexcept { return size_; }

  /// Runs f(begin, end) over [0, n) split into at most size() contiguous chunks of at
  /// least `grain` items. A call made from inside a task runs serially (no deadlock).
  template <class F>
  void parallel_for(std::size_t n, F&& f, std::size_t grain = 1) {
    if (n == 0) return;
    grain = std::max<std::size_t>(grain, 1);
    const std::size_t chunks = std::min<std::size_t>(size_, (n + grain - 1) / grain);
    if (chunks <= 1 || inside_task()) {
      f(std::size_t{0}, n);
      return;
    }
    std::lock_guard call_lock(call_mutex_);  // one call at a time per pool
    std::exception_ptr first_error;
    std::mutex error_mutex;
    auto run_chunk = [&](unsigned c) {
      const std::size_t begin = n * c / chunks, end = n * (c + 1) / chunks;
      try {
        inside_task() = true;
        f(begin, end);
        inside_task() = false;
      } catch (...) {
        inside_task() = false;
        std::lock_guard lock(error_mutex);
        if (!first_error) first_error = std::current_exception();
      }
    };
    {
      std::lock_guard lock(mutex_);
      job_ = [&](unsigned t) {
        if (t < chunks) run_chunk(t);
      };
      pending_ = static_cast<unsigned>(workers_.size());
      ++generation_;
    }
    wake_.notify_all();
    run_chunk(0);
    {
      std::unique_lock lock(mutex_);
      done_.wait(lock, [&] { return pending_ == 0; });
      job_ = nullptr;
    }
    if (first_error) std::rethrow_exception(first_error);
  }

 private:
  static bool& inside_task() noexcept {
    thread_local bool flag = false;
    return flag;
  }

  void worker_loop(unsigned t) {
    std::size_t seen = 0;
    for (;;) {
      std::function<void(unsigned)> job;
      {
        std::unique_lock lock(mutex_);
        wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
        job = job_;
      }
      job(t);
      {
        std::lock_guard lock(mutex_);
        if (--pending_ == 0) done_.notify_one();
      }
    }
  }

  unsigned size_;
  std::vector<std::thread> workers_;
  std::mutex mutex_, call_mutex_;
  std::condition_variable wake_, done_;
  std::function<void(unsigned)> job_;
  std::size_t generation_ = 0;
  unsigned pending_ = 0;
  bool stop_ = false;
};

namespace detail {
/// parallel_for on a pool, or serially when pool is null.
template <class F>
void parallel_for(thread_pool* pool, std::size_t n, F&& f, std::size_t grain = 1) {
  if (pool) pool->parallel_for(n, std::forward<F>(f), grain);
  else if (n) f(std::size_t{0}, n);
}
}  // namespace detail

}  // namespace quarot
