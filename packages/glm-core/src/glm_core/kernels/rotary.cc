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
// Keys and values come out slot-major, the KV cache's layout. Every product and sum is rounded on its own,
// as MindSpore's ops round them, so the results equal the operators it replaces bit for bit.
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
        const int64_t slot_major = ((s * batch + b) * heads + h) * dim;
        rotate(head, c.data(), sn.data(), query + (token * heads + h) * dim, scale);
        rotate(head + dim, c.data(), sn.data(), key + slot_major, 1.0f);
        std::copy(head + 2 * dim, head + 3 * dim, value + slot_major);
      }
    }
  }
};

}  // namespace
}  // namespace glm

#pragma GCC pop_options

// MindSpore's aot signature: params = {qkv [B, S, H * 3 * D], position_ids [B, 2, S] int32, cos [P, D / 2],
// sin [P, D / 2], scale [1], query [B, S, H, D], key [S, B, H, D], value [S, B, H, D]}; returns non-zero on
// shapes or dtypes it cannot handle, and on a position outside the tables.
extern "C" int glm_rotary(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                          void *extra) {
  (void)stream;
  (void)extra;
  if (nparam != 8 || ndims[0] != 3 || ndims[1] != 3 || ndims[2] != 2 || ndims[3] != 2 || ndims[5] != 4) return 1;
  for (int i = 0; i < nparam; ++i)
    if (std::strcmp(dtypes[i], i == 1 ? "int32" : "float32") != 0) return 1;
  const int64_t *out = shapes[5], batch = out[0], seq = out[1], heads = out[2], dim = out[3];
  if (dim % 4 != 0 || shapes[0][0] != batch || shapes[0][1] != seq || shapes[0][2] != heads * 3 * dim) return 1;
  if (shapes[1][0] != batch || shapes[1][1] != 2 || shapes[1][2] != seq) return 1;
  const int64_t table_rows = shapes[2][0];
  for (int i : {2, 3})
    if (shapes[i][0] != table_rows || shapes[i][1] != dim / 2) return 1;
  const int32_t *position_ids = static_cast<const int32_t *>(params[1]);
  for (int64_t i = 0; i < batch * 2 * seq; ++i)
    if (position_ids[i] < 0 || position_ids[i] >= table_rows) return 1;
  const glm::Rotary rotary{static_cast<const float *>(params[0]), position_ids, static_cast<const float *>(params[2]),
                           static_cast<const float *>(params[3]), *static_cast<const float *>(params[4]),
                           static_cast<float *>(params[5]), static_cast<float *>(params[6]),
                           static_cast<float *>(params[7]), batch, seq, heads, dim};
  const int64_t tokens = batch * seq;
  // A decode step's rotation is a few microseconds: threads only pay off for prompts.
  const int threads = static_cast<int>(std::min<int64_t>({glm::thread_count.load(), tokens,
                                                          1 + tokens * heads * dim / (1 << 16)}));
  glm::helpers.split(threads, tokens, [&](int64_t first, int64_t last) { rotary.tokens(first, last); });
  return 0;
}
