// The Linear layers of glm_core's inference models on CPU, called by MindSpore as "aot" Custom operators (see
// kernels/__init__.py): glm_linear, and glm_linear_gelu with the MLP's GELU. The arithmetic is in linear.h.
#include "linear.h"

// Threads of every kernel; set from Python through ctypes on the same loaded library.
extern "C" void glm_set_threads(int threads) { glm::thread_count.store(threads < 1 ? 1 : threads); }

namespace {

// MindSpore's aot signature: params = {x, w, y}, {x, w, bias, y}, {x, w, bias, residual [rows, N], alpha [1], y}
// or {x, w, bias, residual, alpha, gamma [N], beta [N], epsilon [1], y}, w float32 or float16 [N, K]; a quantized
// w (int8 [N, K], or int4 as uint8 [N, K / 2]) is followed by its float16 scales (int8: [N]; int4: [N, groups]),
// see linear.h. Returns non-zero on shapes or dtypes it cannot handle.
int linear(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, bool gelu) {
  if (nparam < 3 || ndims[0] != 2 || ndims[1] < 1) return 1;
  const int scales = glm::is_quantized(glm::storage_of(dtypes[1])) ? 1 : 0;  // inputs after w shift by this
  const int count = nparam - scales;
  const bool has_bias = count >= 4, has_residual = count >= 6, has_norm = count == 9;
  if ((count != 3 && count != 4 && count != 6 && !has_norm) || (gelu && has_residual)) return 1;
  const int64_t rows = shapes[0][0], k = shapes[0][1], n = shapes[1][0];
  const glm::WeightInput weights{params[1], dtypes[1], ndims[1], shapes[1], params[1 + scales], dtypes[1 + scales],
                                 ndims[1 + scales], shapes[1 + scales]};
  if (!glm::check_storage(weights, n, k)) return 1;
  const auto at = [&](int input) { return input < 2 ? input : input + scales; };  // input `input` of {x, w, bias, ...}
  for (int i = 0; i < nparam; ++i)
    if (i != 1 && i != 1 + scales && std::strcmp(dtypes[i], "float32") != 0) return 1;
  if (has_bias && (ndims[at(2)] != 1 || shapes[at(2)][0] != n)) return 1;
  if (has_residual && (ndims[at(3)] != 2 || shapes[at(3)][0] != rows || shapes[at(3)][1] != n)) return 1;
  if (has_norm && (ndims[at(5)] != 1 || shapes[at(5)][0] != n || ndims[at(6)] != 1 || shapes[at(6)][0] != n))
    return 1;
  const auto in = [&](int input) { return static_cast<const float *>(params[at(input)]); };
  return glm::with_storage(weights, k, [&](auto storage) {
    const glm::Product<decltype(storage)> product{in(0), storage, has_bias ? in(2) : nullptr,
                                                  has_residual ? in(3) : nullptr, has_residual ? *in(4) : 0.0f,
                                                  static_cast<float *>(params[nparam - 1]), rows, k, n, gelu};
    if (has_norm)
      glm::run(product, in(5), in(6), *in(7));
    else
      glm::run(product);
    return 0;
  });
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
