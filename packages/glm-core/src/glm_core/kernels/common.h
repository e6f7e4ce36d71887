// What glm-core's CPU kernels share: the vector type their sums use and the helper threads they split work
// among. Compiled into one library with linear.cc and attention.cc (see kernels/__init__.py).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#define ALWAYS_INLINE inline __attribute__((always_inline))

namespace glm {

// LANES-wide sums; ROW_TILE x OUTPUT_TILE of them stay in registers with room left for the loaded rows
// (24 of AVX-512's 32 registers, 4 of AVX2's 16).
#if defined(__AVX512F__)
constexpr int LANES = 16;
constexpr int ROW_TILE = 4;
constexpr int OUTPUT_TILE = 6;
#else
constexpr int LANES = 8;
constexpr int ROW_TILE = 2;
constexpr int OUTPUT_TILE = 2;
#endif

typedef float Lanes __attribute__((vector_size(LANES * sizeof(float))));
typedef float UnalignedLanes __attribute__((vector_size(LANES * sizeof(float)), aligned(4)));

ALWAYS_INLINE Lanes load(const float *p) { return *reinterpret_cast<const UnalignedLanes *>(p); }

// Lets the other hardware thread run while this one waits.
ALWAYS_INLINE void relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Helper threads kept between calls: a decode step makes one call per Linear, and starting threads for
// each would cost more than the smaller products themselves. Between calls the helpers sleep, leaving the
// CPUs to MindSpore's ops (spinning for the next call measured no faster).
class Helpers {
 public:
  ~Helpers() { resize(0); }

  // Runs task(0..count-1), task(0) on the calling thread and the others on helpers; returns when all are done.
  void run(int count, const std::function<void(int)> &task) {
    std::lock_guard<std::mutex> calls(call_mutex_);
    if (static_cast<int>(threads_.size()) != count - 1) resize(count - 1);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      task_ = &task;
      unfinished_.store(count - 1, std::memory_order_relaxed);
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    task(0);
    while (unfinished_.load(std::memory_order_acquire) != 0) relax();
  }

 private:
  void resize(int helpers) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_.store(true);
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    for (auto &thread : threads_) thread.join();
    threads_.clear();
    stopping_.store(false);
    const uint64_t current = generation_.load();
    for (int index = 1; index <= helpers; ++index) threads_.emplace_back(&Helpers::serve, this, index, current);
  }

  // Helper `index` runs each task published after generation `seen`.
  void serve(int index, uint64_t seen) {
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
      }
      seen = generation_.load(std::memory_order_acquire);
      if (stopping_.load()) return;
      (*task_)(index);
      unfinished_.fetch_sub(1, std::memory_order_acq_rel);
    }
  }

  std::mutex call_mutex_, mutex_;
  std::condition_variable wake_;
  std::vector<std::thread> threads_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> unfinished_{0};
  const std::function<void(int)> *task_ = nullptr;
  std::atomic<bool> stopping_{false};
};


// Threads the kernels split their work among; set by glm_set_threads.
inline std::atomic<int> thread_count{1};
inline Helpers helpers;

}  // namespace glm
