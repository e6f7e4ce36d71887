// What glm-core's CPU kernels share: the vector types their sums use, e^x, and the helper threads they split work
// among. Included by the arithmetic headers (linear.h, rotary.h, attention.h), whose operators (linear.cc,
// rotary.cc, attention.cc, layer.cc) are compiled into one library (see kernels/__init__.py).
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

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

// Vectors of 8 for the functions evaluated in double (tanh, exp), and e^x itself.
typedef double Doubles __attribute__((vector_size(8 * sizeof(double))));
typedef int64_t Int64s __attribute__((vector_size(8 * sizeof(int64_t))));
typedef float Floats __attribute__((vector_size(8 * sizeof(float))));
typedef float UnalignedFloats __attribute__((vector_size(8 * sizeof(float)), aligned(4)));

// e^x, 8 at a time, to 1e-16 relative, for -700 <= x <= 700: 2^k by range reduction (k * ln 2 split in two so
// that k * ln2_high is exact for |k| < 2048) times a degree-13 polynomial of the rest, k added to its exponent.
ALWAYS_INLINE Doubles exp_of(Doubles x) {
  const double log2e = 1.4426950408889634, ln2_high = 0.6931471805598903, ln2_low = 5.497923018708371e-14;
  const double shifter = 0x1.8p52;  // adding it rounds to an integer, held in the low bits
  const Doubles shifted = x * log2e + shifter, k = shifted - shifter;
  const Doubles r = (x - k * ln2_high) - k * ln2_low;  // |r| <= ln 2 / 2
  static constexpr double factorials[] = {6227020800.0, 479001600.0, 39916800.0, 3628800.0, 362880.0, 40320.0,
                                          5040.0, 720.0, 120.0, 24.0, 6.0, 2.0, 1.0, 1.0};
  Doubles p = r * (1.0 / factorials[0]) + 1.0 / factorials[1];
  for (int i = 2; i < 14; ++i) p = p * r + 1.0 / factorials[i];
  return reinterpret_cast<Doubles>(reinterpret_cast<Int64s>(p) + (reinterpret_cast<Int64s>(shifted) << 52));
}

// The LANES sums added up by halves: lane i plus lane i + LANES / 2 for each i of the lower half, and so on down
// to one lane. The same additions lane by lane would take a store and a dozen scalar loads and adds per output.
ALWAYS_INLINE float halving_sum(Lanes sum) {
#if defined(__AVX__)
#if defined(__AVX512F__)
  const __m512 sixteen = reinterpret_cast<__m512>(sum);
  const __m256 eight = _mm256_add_ps(_mm512_castps512_ps256(sixteen),
                                     _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(sixteen), 1)));
#else
  const __m256 eight = reinterpret_cast<__m256>(sum);
#endif
  const __m128 four = _mm_add_ps(_mm256_castps256_ps128(eight), _mm256_extractf128_ps(eight, 1));
  const __m128 two = _mm_add_ps(four, _mm_movehl_ps(four, four));
  return _mm_cvtss_f32(_mm_add_ss(two, _mm_shuffle_ps(two, two, 1)));
#else
  float s[LANES];
  std::memcpy(s, &sum, sizeof s);
  for (int half = LANES / 2; half >= 1; half /= 2)
    for (int i = 0; i < half; ++i) s[i] += s[i + half];
  return s[0];
#endif
}

// Lets the other hardware thread run while this one waits.
ALWAYS_INLINE void relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Helper threads kept between calls: a decode step makes one call per Linear, and starting threads for
// each would cost more than the smaller products themselves. After a call a helper watches for the next one
// for SPIN_MICROSECONDS, then sleeps, leaving the CPUs to MindSpore's ops: a decode step's calls follow each
// other within tens of microseconds, and a sleeping helper takes about as long to wake, which left the
// smaller Linears of a step to the calling thread alone; between steps (the sampling, in Python) it sleeps.
//
// Work is cut into chunks that the calling thread and the helpers claim as they get to them, so a helper
// that wakes late, or a CPU that the machine lends elsewhere for a while, delays a call by one chunk at
// most, not by its whole share. Which thread computes a chunk never changes the result.
class Helpers {
 public:
  ~Helpers() { resize(0); }

  // Runs task(first, last) over consecutive ranges covering 0..items-1, on the calling thread and up to
  // threads - 1 helpers; returns when every range is done.
  void split(int threads, int64_t items, const std::function<void(int64_t, int64_t)> &task) {
    if (items <= 0) return;
    std::lock_guard<std::mutex> calls(call_mutex_);
    // The pool only grows: kernels asking for fewer threads (attention on one token, say) leave the rest
    // asleep rather than stopping and restarting them on every call.
    if (threads - 1 > static_cast<int>(threads_.size())) resize(threads - 1);
    const int64_t chunks = threads > 1 ? std::min<int64_t>(items, CHUNKS_PER_THREAD * threads) : 1;
    const uint64_t run = ++runs_ & 0xffffffffu;
    task_ = &task;
    items_ = items;
    chunks_.store(chunks, std::memory_order_relaxed);
    done_.store(0, std::memory_order_relaxed);
    cursor_.store(run << 32, std::memory_order_release);
    if (threads > 1) {
      {
        std::lock_guard<std::mutex> lock(mutex_);
        generation_.fetch_add(1, std::memory_order_release);
      }
      for (int helper = 1; helper < threads; ++helper) wake_.notify_one();
    }
    work(run);
    while (done_.load(std::memory_order_acquire) != chunks) relax();
    cursor_.store(run << 32 | CLOSED, std::memory_order_release);  // helpers waking late find nothing left
  }

 private:
  static constexpr int64_t CHUNKS_PER_THREAD = 8;
  static constexpr int64_t SPIN_MICROSECONDS = 250;
  static constexpr uint64_t CLOSED = 0xffffffffu;

  // Claims and runs chunks of run `run` until none is left. The claim (a compare-and-swap on the run and
  // the next chunk together) fails once the run is over, so a late helper never touches a finished call.
  void work(uint64_t run) {
    uint64_t cursor = cursor_.load(std::memory_order_acquire);
    for (;;) {
      const uint64_t chunk = cursor & CLOSED;
      if (cursor >> 32 != run || chunk >= static_cast<uint64_t>(chunks_.load(std::memory_order_relaxed))) return;
      if (!cursor_.compare_exchange_weak(cursor, cursor + 1, std::memory_order_acq_rel, std::memory_order_acquire))
        continue;
      const int64_t chunks = chunks_.load(std::memory_order_relaxed), index = static_cast<int64_t>(chunk);
      (*task_)(items_ * index / chunks, items_ * (index + 1) / chunks);
      done_.fetch_add(1, std::memory_order_acq_rel);
      cursor = cursor_.load(std::memory_order_acquire);
    }
  }

  void resize(int helpers) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    for (auto &thread : threads_) thread.join();
    threads_.clear();
    stopping_ = false;
    for (int index = 0; index < helpers; ++index) threads_.emplace_back(&Helpers::serve, this, generation_.load());
  }

  // A helper: watches for a call published after generation `seen`, then sleeps until one is, and joins it.
  void serve(uint64_t seen) {
    for (;;) {
      {
        const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(SPIN_MICROSECONDS);
        while (generation_.load(std::memory_order_acquire) == seen && std::chrono::steady_clock::now() < until)
          for (int i = 0; i < 16; ++i) relax();
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
        seen = generation_.load(std::memory_order_acquire);
        if (stopping_) return;
      }
      work(cursor_.load(std::memory_order_acquire) >> 32);
    }
  }

  std::mutex call_mutex_, mutex_;
  std::condition_variable wake_;
  std::vector<std::thread> threads_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<uint64_t> cursor_{CLOSED};  // (run << 32) | next chunk to claim
  std::atomic<int64_t> chunks_{0}, done_{0};
  uint64_t runs_ = 0;
  int64_t items_ = 0;
  const std::function<void(int64_t, int64_t)> *task_ = nullptr;
  bool stopping_ = false;  // guarded by mutex_
};


// Threads the kernels split their work among; set by glm_set_threads.
inline std::atomic<int> thread_count{1};
inline Helpers helpers;

}  // namespace glm
