// GLM's 2D rotary embedding as a MindSpore "aot" Custom operator; the arithmetic is in rotary.h.
#include "rotary.h"


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
  glm::run(rotary);
  return 0;
}
