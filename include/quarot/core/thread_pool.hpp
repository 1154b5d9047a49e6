// quarot — a small persistent thread pool. No global state: the caller owns the pool
// and passes it to the algorithms that can use it (nullptr = run on the calling thread).
// Workers are created once; a call hands them a range, the calling thread takes a share
// too, and the call returns when every share is done (rethrowing the first exception).
//
// Waiting spins briefly before it blocks: a worker that finished a call, and the caller
// waiting for the workers, poll for up to `spin_window` first. Decode calls the pool a few
// hundred times per token with microseconds of work each; blocking on a condition variable
// every time cost a futex wake-up and a context switch per call (a fifth of a SmolLM2
// decode step's samples were the scheduler's). Threads that sleep are woken as before.
// The window is a constructor argument: 0 always blocks (cores shared with other work,
// e.g. a server's request threads), longer keeps threads hot across gaps between calls.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
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
  static constexpr std::chrono::microseconds default_spin_window{100};

  /// `threads` is the number of threads that work on a call, the caller included;
  /// `spin_window` how long a waiting thread polls before it blocks (0 .. 1 s).
  explicit thread_pool(unsigned threads = std::max(1u, std::thread::hardware_concurrency()),
                       std::chrono::microseconds spin_window = default_spin_window)
      : size_(threads), spin_window_(spin_window) {
    detail::require(threads >= 1 && threads <= 1024, "thread_pool needs 1..1024 threads, got ", threads);
    detail::require(spin_window.count() >= 0 && spin_window <= std::chrono::seconds(1),
                    "thread_pool spin window must be 0 .. 1000000 us, got ", spin_window.count(), " us");
    workers_.reserve(threads - 1);
    for (unsigned t = 1; t < threads; ++t) workers_.emplace_back([this, t] { worker_loop(t); });
  }
  thread_pool(const thread_pool&) = delete;
  thread_pool& operator=(const thread_pool&) = delete;
  ~thread_pool() {
    {
      std::lock_guard lock(mutex_);
      stop_.store(true, std::memory_order_release);
    }
    wake_.notify_all();
    for (auto& w : workers_) w.join();
  }

  [[nodiscard]] unsigned size() const noexcept { return size_; }
  [[nodiscard]] std::chrono::microseconds spin_window() const noexcept { return spin_window_; }

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
      pending_.store(static_cast<unsigned>(workers_.size()), std::memory_order_relaxed);
      generation_.fetch_add(1, std::memory_order_release);  // publishes job_ and pending_
      if (sleepers_ > 0) wake_.notify_all();  // under the lock: a worker going to sleep sees the new generation
    }
    run_chunk(0);
    if (!spin_until([&] { return pending_.load(std::memory_order_acquire) == 0; })) {
      std::unique_lock lock(mutex_);
      done_.wait(lock, [&] { return pending_.load(std::memory_order_acquire) == 0; });
    }
    {
      std::lock_guard lock(mutex_);
      job_ = nullptr;
    }
    if (first_error) std::rethrow_exception(first_error);
  }

 private:
  static bool& inside_task() noexcept {
    thread_local bool flag = false;
    return flag;
  }

  /// Polls `ready` for up to spin_window_; whether it became true.
  template <class Ready>
  bool spin_until(Ready&& ready) const {
    if (spin_window_.count() == 0) return ready();
    const auto until = std::chrono::steady_clock::now() + spin_window_;
    for (unsigned i = 1;; ++i) {
      if (ready()) return true;
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#else
      std::this_thread::yield();
#endif
      if (i % 64 == 0 && std::chrono::steady_clock::now() > until) return ready();
    }
  }

  void worker_loop(unsigned t) {
    std::size_t seen = 0;
    for (;;) {
      const auto fresh = [&] {
        return stop_.load(std::memory_order_acquire) || generation_.load(std::memory_order_acquire) != seen;
      };
      if (!spin_until(fresh)) {
        std::unique_lock lock(mutex_);
        ++sleepers_;
        wake_.wait(lock, fresh);
        --sleepers_;
      }
      if (stop_.load(std::memory_order_acquire)) return;
      seen = generation_.load(std::memory_order_acquire);
      job_(t);  // job_ stays set until every worker has counted itself done
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        std::lock_guard lock(mutex_);  // the caller may be between its check and its wait
        done_.notify_one();
      }
    }
  }

  unsigned size_;
  std::chrono::microseconds spin_window_;
  std::vector<std::thread> workers_;
  std::mutex mutex_, call_mutex_;
  std::condition_variable wake_, done_;
  std::function<void(unsigned)> job_;
  std::atomic<std::size_t> generation_{0};
  std::atomic<unsigned> pending_{0};
  std::atomic<bool> stop_{false};
  unsigned sleepers_ = 0;  // workers blocked on wake_ (guarded by mutex_)
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
