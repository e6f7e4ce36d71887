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
#include <algorithm>
#include <cmath>

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

  // Every query of (batch row, head) pairs first..last-1, numbered b * heads + h.
  void pairs(int64_t first, int64_t last, std::vector<float> &score) const {
    const int64_t stride = batch * heads * dim;  // from one slot to the next in k and v
    for (int64_t pair = first; pair < last; ++pair) {
      const int64_t b = pair / heads, h = pair % heads;
      const float *keys = k + (b * heads + h) * dim, *values = v + (b * heads + h) * dim;
      for (int64_t s = 0; s < seq; ++s) {
        const float *query = q + ((b * seq + s) * heads + h) * dim;
        const bool *masked = mask + (b * seq + s) * length;
        float top = -INFINITY;
        for (int64_t l = 0; l < length; ++l) {
          score[l] = (masked[l] ? MASKED_SCORE : dot(query, keys + l * stride)) * scale;
          top = std::max(top, score[l]);
        }
        float total = 0.0f;
        for (int64_t l = 0; l < length; ++l) {
          const float shifted = score[l] - top;  // below UNDERFLOW exp gives exactly 0: masked slots, mostly
          total += score[l] = shifted < UNDERFLOW ? 0.0f : std::exp(shifted);
        }
        float *result = out + ((b * seq + s) * heads + h) * dim;
        std::fill(result, result + dim, 0.0f);
        for (int64_t l = 0; l < length; ++l) {
          if (score[l] == 0.0f) continue;  // adds exact zeros: skipped, same bits
          const float p = score[l] / total;
          const float *value = values + l * stride;
          for (int64_t d = 0; d < dim; ++d) result[d] = __builtin_fmaf(p, value[d], result[d]);
        }
      }
    }
  }
};

}  // namespace
}  // namespace glm

// MindSpore's aot signature: params = {q [B, S, H, D], k [L, B, H, D], v [L, B, H, D], mask [B, 1, S, L]
// bool, scale [1], out [B, S, H, D]}; returns non-zero on shapes or dtypes it cannot handle.
extern "C" int glm_attention(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                             void *stream, void *extra) {
  (void)stream;
  (void)extra;
  if (nparam != 6 || ndims[0] != 4 || ndims[1] != 4 || ndims[2] != 4 || ndims[3] != 4) return 1;
  for (int i : {0, 1, 2, 4, 5})
    if (std::strcmp(dtypes[i], "float32") != 0) return 1;
  if (std::strcmp(dtypes[3], "bool") != 0) return 1;
  const int64_t *q = shapes[0], *k = shapes[1], *m = shapes[3];
  for (int i = 0; i < 4; ++i)
    if (shapes[2][i] != k[i]) return 1;
  if (k[1] != q[0] || k[2] != q[2] || k[3] != q[3] || m[0] != q[0] || m[1] != 1 || m[2] != q[1] || m[3] != k[0])
    return 1;
  const glm::Attention attention{static_cast<const float *>(params[0]), static_cast<const float *>(params[1]),
                                 static_cast<const float *>(params[2]), static_cast<const bool *>(params[3]),
                                 *static_cast<const float *>(params[4]), static_cast<float *>(params[5]),
                                 q[0], q[1], q[2], k[0], q[3]};
  const int64_t pairs = attention.batch * attention.heads;
  // A decode step's attention is a few microseconds of work: threads only pay off for prompts.
  const int64_t work = pairs * attention.seq * attention.length * attention.dim;
  const int threads = static_cast<int>(std::min<int64_t>({glm::thread_count.load(), pairs, 1 + work / (1 << 20)}));
  const int64_t share = (pairs + threads - 1) / threads;
  glm::helpers.run(threads, [&](int index) {
    std::vector<float> score(attention.length);
    attention.pairs(std::min(pairs, index * share), std::min(pairs, (index + 1) * share), score);
  });
  return 0;
}
