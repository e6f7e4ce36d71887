// GLM's attention as a MindSpore "aot" Custom operator, over the KV cache as it lies in memory; the
// arithmetic is in attention.h.
#include "attention.h"


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
  glm::run(attention);
  return 0;
}
