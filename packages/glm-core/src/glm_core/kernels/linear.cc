// The Linear layers of glm_core's inference models on CPU, called by MindSpore as "aot" Custom operators (see
// kernels/__init__.py): glm_linear, and glm_linear_gelu with the MLP's GELU. The arithmetic is in linear.h.
#include "linear.h"

// Threads of every kernel; set from Python through ctypes on the same loaded library.
extern "C" void glm_set_threads(int threads) { glm::thread_count.store(threads < 1 ? 1 : threads); }

namespace {

// MindSpore's aot signature: params = {x, w, y}, {x, w, bias, y}, {x, w, bias, residual [rows, N], alpha [1], y}
// or {x, w, bias, residual, alpha, gamma [N], beta [N], epsilon [1], y}; returns non-zero on shapes or dtypes it
// cannot handle.
int linear(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, bool gelu) {
  const bool has_bias = nparam >= 4, has_residual = nparam >= 6, has_norm = nparam == 9;
  if ((nparam != 3 && nparam != 4 && nparam != 6 && !has_norm) || ndims[0] != 2 || ndims[1] != 2 ||
      shapes[0][1] != shapes[1][1] || (gelu && has_residual))
    return 1;
  for (int i = 0; i < nparam; ++i)
    if (std::strcmp(dtypes[i], "float32") != 0) return 1;
  if (has_bias && (ndims[2] != 1 || shapes[2][0] != shapes[1][0])) return 1;
  if (has_residual && (ndims[3] != 2 || shapes[3][0] != shapes[0][0] || shapes[3][1] != shapes[1][0])) return 1;
  if (has_norm && (ndims[5] != 1 || shapes[5][0] != shapes[1][0] || ndims[6] != 1 || shapes[6][0] != shapes[1][0]))
    return 1;
  const glm::Product product{static_cast<const float *>(params[0]), static_cast<const float *>(params[1]),
                             has_bias ? static_cast<const float *>(params[2]) : nullptr,
                             has_residual ? static_cast<const float *>(params[3]) : nullptr,
                             has_residual ? *static_cast<const float *>(params[4]) : 0.0f,
                             static_cast<float *>(params[nparam - 1]), shapes[0][0], shapes[0][1], shapes[1][0], gelu};
  if (has_norm)
    glm::run(product, static_cast<const float *>(params[5]), static_cast<const float *>(params[6]),
             *static_cast<const float *>(params[7]));
  else
    glm::run(product);
  return 0;
}

}  // namespace

extern "C" int glm_linear(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                          void *extra) {
  (void)stream;
  (void)extra;
  return linear(nparam, params, ndims, shapes, dtypes, false);
}

extern "C" int glm_linear_gelu(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                               void *stream, void *extra) {
  (void)stream;
  (void)extra;
  return linear(nparam, params, ndims, shapes, dtypes, true);
}
