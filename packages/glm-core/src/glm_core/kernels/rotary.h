// GLM's 2D rotary embedding for float32 on CPU, applied straight to the fused QKV output: one operator where
// SelfAttention in model.py runs a split, eight elementwise ops, the query scaling and two transposes, and
// RotaryEmbedding2D ten more to look the angles up.
//
// qkv [B, S, H * 3 * D] holds per head [q, k, v]; position_ids [B, 2, S] (positions, block positions) pick
// rows of RotaryEmbedding2D's tables cos and sin [P, D / 2] (sin carries rotate-half's signs): the first half
// of a head turns by the position, the second by the block position. With c and s those two rows side by
// side, and swap(d) exchanging the two quarters of each half of a head,
//   rotate(x)[d] = x[d] * c[d] + x[swap(d)] * s[d]
//   query [B, S, H, D] = rotate(q) * scale        key [S, B, H, D] = rotate(k)        value [S, B, H, D] = v
// Keys and values come out slot-major, the KV cache's layout (layer.cc writes them at their slots of the cache
// itself). Every product and sum is rounded on its own, as MindSpore's ops round them, so the results equal
// the operators it replaces bit for bit.
#pragma once

#include <algorithm>
#include <vector>

#include "common.h"

#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")

namespace glm {
namespace {

struct Rotary {
  const float *qkv;
  const int32_t *position_ids;
  const float *cos_table, *sin_table;
  float scale, *query, *key, *value;
  int64_t batch, seq, heads, dim;
  const int32_t *slots = nullptr;  // the slot of each of the seq tokens in key and value; none: 0..seq-1

  void rotate(const float *x, const float *c, const float *s, float *out, float factor) const {
    const int64_t quarter = dim / 4;
    for (int64_t d = 0; d < dim; ++d) {
      const int64_t swapped = (d / quarter) % 2 == 0 ? d + quarter : d - quarter;
      out[d] = (x[d] * c[d] + x[swapped] * s[d]) * factor;  // times 1 is exact: keys as MindSpore rounds them
    }
  }

  // The rows of `table` [P, dim / 2] for a token's position and block position, side by side.
  void angles(const float *table, int64_t position, int64_t block, float *out) const {
    const int64_t half = dim / 2;
    std::copy(table + position * half, table + (position + 1) * half, out);
    std::copy(table + block * half, table + (block + 1) * half, out + half);
  }

  // Tokens first..last-1, numbered b * seq + s.
  void tokens(int64_t first, int64_t last) const {
    std::vector<float> c(dim), sn(dim);
    for (int64_t token = first; token < last; ++token) {
      const int64_t b = token / seq, s = token % seq;
      const int32_t position = position_ids[(b * 2) * seq + s], block = position_ids[(b * 2 + 1) * seq + s];
      angles(cos_table, position, block, c.data());
      angles(sin_table, position, block, sn.data());
      for (int64_t h = 0; h < heads; ++h) {
        const float *head = qkv + (token * heads + h) * 3 * dim;
        const int64_t slot = slots ? slots[s] : s, slot_major = ((slot * batch + b) * heads + h) * dim;
        rotate(head, c.data(), sn.data(), query + (token * heads + h) * dim, scale);
        rotate(head + dim, c.data(), sn.data(), key + slot_major, 1.0f);
        std::copy(head + 2 * dim, head + 3 * dim, value + slot_major);
      }
    }
  }
};

// Runs `rotary`, split among the threads.
void run(const Rotary &rotary) {
  const int64_t tokens = rotary.batch * rotary.seq;
  // A decode step's rotation is a few microseconds: threads only pay off for prompts.
  const int threads = static_cast<int>(std::min<int64_t>({thread_count.load(), tokens,
                                                          1 + tokens * rotary.heads * rotary.dim / (1 << 16)}));
  helpers.split(threads, tokens, [&](int64_t first, int64_t last) { rotary.tokens(first, last); });
}

}  // namespace
}  // namespace glm

#pragma GCC pop_options
