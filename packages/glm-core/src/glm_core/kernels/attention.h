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

struct Attention {
  const float *q, *k, *v;
  const bool *mask;
  float scale, *out;
  int64_t batch, seq, heads, length, dim;

  ALWAYS_INLINE float dot(const float *a, const float *b) const {
    Lanes sum = {};
    int64_t i = 0;
    for (; i + LANES <= dim; i += LANES) sum += load(a + i) * load(b + i);
    float s[LANES];
    std::memcpy(s, &sum, sizeof s);
    for (int half = LANES / 2; half >= 1; half /= 2)
      for (int j = 0; j < half; ++j) s[j] += s[j + half];
    float total = s[0];
    for (; i < dim; ++i) total = __builtin_fmaf(a[i], b[i], total);
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
    for (int64_t l = 0; l < length; ++l)
      for (int64_t h = 0; h < count; ++h)
        score[h * length + l] =
            (masked[l] ? MASKED_SCORE : dot(query + h * dim, keys + l * stride + h * dim)) * scale;
    std::vector<float> total(count, 0.0f);
    for (int64_t h = 0; h < count; ++h) {
      float *head = score.data() + h * length;
      const float top = *std::max_element(head, head + length);
      for (int64_t l = 0; l < length; ++l) {
        const float shifted = head[l] - top;  // below UNDERFLOW exp gives exactly 0: masked slots, mostly
        total[h] += head[l] = shifted < UNDERFLOW ? 0.0f : std::exp(shifted);
      }
    }
    std::fill(result, result + count * dim, 0.0f);
    for (int64_t l = 0; l < length; ++l) {
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
