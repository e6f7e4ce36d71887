// GLM's attention for float32 on CPU, over keys and values laid out slot-major, [L, B, H, D]: the layout of
// glm_core's KV cache, which MindSpore's ScatterUpdate writes in place. Reading it needs no copy, where
// BatchMatMul would need the cache transposed to [B, H, L, D] on every step.
//
// For each batch row b, head h and query s, as SelfAttention in model.py computes it:
//   score[l] = q[b, s, h] . k[l, b, h]              (-10000 where mask[b, 0, s, l], the original's fill)
//   p = softmax(score * scale)                      (scale: the layer's (layer_id + 1))
//   out[b, s, h] = sum over l of p[l] * v[l, b, h]
// Masked slots contribute exact zeros, so a query gives the same bits over a longer, partly masked cache:
// a decode step reproduces a full forward exactly.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "common.h"

namespace glm {
namespace {

constexpr float MASKED_SCORE = -10000.0f;
constexpr float UNDERFLOW = -110.0f;  // float32 exp(x) is 0 for x < -103.98
constexpr int64_t PREFETCH_SLOTS = 4;  // how far ahead heads_of_row fetches keys and values

struct Attention {
  const float *q, *k, *v;
  const bool *mask;
  float scale, *out;
  int64_t batch, seq, heads, length, dim;

  ALWAYS_INLINE float dot(const float *a, const float *b) const {
    Lanes sum = {};
    int64_t i = 0;
    for (; i + LANES <= dim; i += LANES) sum += load(a + i) * load(b + i);
    float total = halving_sum(sum);
    for (; i < dim; ++i) total = __builtin_fmaf(a[i], b[i], total);
    return total;
  }

  // Fetches the `count` heads of slot `l` from `from` (keys or values) into the cache ahead of their use: the
  // heads of one slot lie side by side, but a thread's share of them is a part of each slot, which the CPU's
  // prefetchers, starting anew at each 4 KB page, do not follow.
  ALWAYS_INLINE void prefetch(const float *from, int64_t l, int64_t count, const bool *masked) const {
    if (l >= length || masked[l]) return;
    const char *start = reinterpret_cast<const char *>(from + l * batch * heads * dim);
    for (int64_t offset = 0; offset < count * dim * static_cast<int64_t>(sizeof(float)); offset += 64)
      __builtin_prefetch(start + offset);
  }

  // The softmax's numerators of one head's scores, in place: e^(score - max), exactly 0 below UNDERFLOW (masked
  // slots, mostly), 8 at a time in double (exp_of), each rounded once to float; returns their sum, taken in the
  // order of the slots (its zeros, exact, skipped).
  float exponentials(float *scores) const {
    Floats top = Floats{} + scores[0];
    int64_t l = 0;
    for (; l + 8 <= length; l += 8) {
      const Floats s = *reinterpret_cast<const UnalignedFloats *>(scores + l);
      top = s > top ? s : top;
    }
    float largest = top[0];
    for (int lane = 1; lane < 8; ++lane) largest = std::max(largest, top[lane]);
    for (; l < length; ++l) largest = std::max(largest, scores[l]);
    float total = 0.0f;
    for (l = 0; l < length; l += 8) {
      const int64_t count = std::min<int64_t>(8, length - l);
      Floats shifted = Floats{} + UNDERFLOW;
      std::memcpy(&shifted, scores + l, count * sizeof(float));
      shifted -= largest;
      const Floats e = __builtin_convertvector(exp_of(__builtin_convertvector(shifted, Doubles)), Floats);
      const Floats numerators = shifted < UNDERFLOW ? Floats{} : e;
      std::memcpy(scores + l, &numerators, count * sizeof(float));
      for (int64_t lane = 0; lane < count; ++lane)
        if (numerators[lane] != 0.0f) total += numerators[lane];
    }
    return total;
  }

  // Query row `row` (= b * seq + s), heads first..last-1. Slots are the outer loop, so each slot's keys and
  // values for these heads are read once, contiguously; every sum still runs over the slots in order.
  void heads_of_row(int64_t row, int64_t first, int64_t last, std::vector<float> &score) const {
    const int64_t b = row / seq, count = last - first;
    const int64_t stride = batch * heads * dim;  // from one slot to the next in k and v
    const bool *masked = mask + row * length;
    const float *query = q + (row * heads + first) * dim;
    const float *keys = k + (b * heads + first) * dim, *values = v + (b * heads + first) * dim;
    float *result = out + (row * heads + first) * dim;
    for (int64_t l = 0; l < length; ++l) {
      prefetch(keys, l + PREFETCH_SLOTS, count, masked);
      for (int64_t h = 0; h < count; ++h)
        score[h * length + l] =
            (masked[l] ? MASKED_SCORE : dot(query + h * dim, keys + l * stride + h * dim)) * scale;
    }
    std::vector<float> total(count, 0.0f);
    for (int64_t h = 0; h < count; ++h) total[h] = exponentials(score.data() + h * length);
    std::fill(result, result + count * dim, 0.0f);
    for (int64_t l = 0; l < length; ++l) {
      prefetch(values, l + PREFETCH_SLOTS, count, masked);
      for (int64_t h = 0; h < count; ++h) {
        const float weight = score[h * length + l];
        if (weight == 0.0f) continue;  // adds exact zeros: skipped, same bits
        const float p = weight / total[h];
        const float *value = values + l * stride + h * dim;
        float *sum = result + h * dim;
        for (int64_t d = 0; d < dim; ++d) sum[d] = __builtin_fmaf(p, value[d], sum[d]);
      }
    }
  }

  // Work items first..last-1, numbered (b * seq + s) * groups + g: heads g * group.. of a query row, in one
  // pass over the slots. A thread's share of a slot is then `group` heads side by side, read at once.
  void items(int64_t first, int64_t last, int64_t group) const {
    const int64_t groups = (heads + group - 1) / group;
    std::vector<float> score(group * length);
    for (int64_t item = first; item < last; ++item) {
      const int64_t row = item / groups, head = item % groups * group;
      heads_of_row(row, head, std::min(heads, head + group), score);
    }
  }
};

// Runs `attention`, split among the threads.
void run(const Attention &attention) {
  const int64_t rows = attention.batch * attention.seq, heads = attention.heads;
  // Split by heads when there are threads to spare: a decode step's attention is ~100 us of cache reads.
  const int64_t work = rows * heads * attention.length * attention.dim;
  const int threads =
      static_cast<int>(std::min<int64_t>({thread_count.load(), rows * heads, 1 + work / (1 << 16)}));
  // One query row (decode) is cut into one group of heads per thread; prompts keep each row whole.
  const int64_t group = rows >= threads ? heads : (heads + threads - 1) / threads;
  const int64_t items = rows * ((heads + group - 1) / group);
  helpers.split(threads, items, [&](int64_t first, int64_t last) { attention.items(first, last, group); });
}

}  // namespace
}  // namespace glm
