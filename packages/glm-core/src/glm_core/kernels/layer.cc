// A whole GLM block of an inference model with a KV cache, float32 on CPU, as one MindSpore "aot" Custom
// operator: the six kernels and two cache writes a block otherwise takes, each with MindSpore's launch
// overhead (about 25 us a kernel on a glm_bench decode step, a few percent of the step).
//
// x is the block's input already through its input_layernorm (the previous block's last Linear applies it);
// the output goes through next_norm, the next block's input_layernorm or the final one (see GLMBlock):
//   qkv = x Wqkv^T + b                                   (linear.h)
//   query, keys, values = 2D rotary of qkv; keys and values written into the cache at `slots` (rotary.h)
//   context = attention of query over the cache          (attention.h)
//   h = post_attention_layernorm(x * alpha + (context Wdense^T + b))
//   out = next_norm(h * alpha + (gelu(h W4h^T + b) Wh^T + b))
// Each step runs the code of the operator it replaces, so the results are those operators' bit for bit. Each
// weight comes with a scale input, read for quantized weights only (see linear.h's storages).
#include "attention.h"
#include "linear.h"
#include "rotary.h"

namespace {

// The operator's inputs, in order: one list gives the enum below and the names glm_layer_inputs() returns,
// which kernels/__init__.py checks against its LAYER_INPUTS before it calls the operator.
#define GLM_LAYER_INPUTS(INPUT)                                                                              \
  INPUT(X, x) INPUT(POSITION_IDS, position_ids) INPUT(MASK, mask) INPUT(SLOTS, slots)                      \
  INPUT(KEY_CACHE, key_cache) INPUT(VALUE_CACHE, value_cache) INPUT(COS, cos) INPUT(SIN, sin)              \
  INPUT(QKV_W, qkv_weight) INPUT(QKV_S, qkv_weight_scale) INPUT(QKV_B, qkv_bias) INPUT(DENSE_W, dense_weight) \
  INPUT(DENSE_S, dense_weight_scale) INPUT(DENSE_B, dense_bias) INPUT(POST_GAMMA, post_gamma)                \
  INPUT(POST_BETA, post_beta) INPUT(H_TO_4H_W, h_to_4h_weight) INPUT(H_TO_4H_S, h_to_4h_weight_scale)       \
  INPUT(H_TO_4H_B, h_to_4h_bias) INPUT(FOUR_H_TO_H_W, four_h_to_h_weight)                                  \
  INPUT(FOUR_H_TO_H_S, four_h_to_h_weight_scale) INPUT(FOUR_H_TO_H_B, four_h_to_h_bias)                    \
  INPUT(NEXT_GAMMA, next_gamma) INPUT(NEXT_BETA, next_beta) INPUT(SCALARS, scalars)

#define GLM_ENUM_ENTRY(name, text) name,
enum Param { GLM_LAYER_INPUTS(GLM_ENUM_ENTRY) OUT, COUNT };
#undef GLM_ENUM_ENTRY

bool shape_is(int *ndims, int64_t **shapes, int param, std::initializer_list<int64_t> shape) {
  if (ndims[param] != static_cast<int>(shape.size())) return false;
  int axis = 0;
  for (int64_t size : shape)
    if (shapes[param][axis++] != size) return false;
  return true;
}

// The block's intermediate arrays, kept between calls (a decode step would otherwise allocate five) and
// shared by every caller, one at a time: a long prompt on ChatGLM-6B needs some 300 MB of them, which one
// copy per MindSpore thread would multiply.
struct Scratch {
  std::mutex mutex;
  std::vector<float> qkv, query, context, mlp_input, activations, kept_x, kept_out;
  std::vector<int32_t> kept_positions;
  std::vector<char> kept_mask;

  template <typename T>
  static T *at_least(std::vector<T> &buffer, int64_t size) {
    if (static_cast<int64_t>(buffer.size()) < size) buffer.resize(size);
    return buffer.data();
  }
};

// The rows [skip, seq) of each of `batch` blocks of `seq` rows of `width` elements, gathered into `to`.
template <typename T>
void gather_rows(const T *from, T *to, int64_t batch, int64_t seq, int64_t skip, int64_t width) {
  for (int64_t b = 0; b < batch; ++b)
    std::memcpy(to + b * (seq - skip) * width, from + (b * seq + skip) * width, (seq - skip) * width * sizeof(T));
}
Scratch scratch;

}  // namespace

// The input names, comma-separated, in the operator's order.
extern "C" const char *glm_layer_inputs() {
#define GLM_NAME_ENTRY(name, text) #text ","
  static const char names[] = GLM_LAYER_INPUTS(GLM_NAME_ENTRY);
#undef GLM_NAME_ENTRY
  return names;
}

// MindSpore's aot signature: params in the order of Param above. x [B, S, H]; position_ids [B, 2, S] int32;
// mask [B, 1, S, L] bool (True = masked); slots [S] int32, where a leading run of -1 marks rows the block skips
// (their output rows are zeros): a prompt graph of one fixed width then serves every prompt length, costing
// only the rows that hold prompts; key and value caches [L, B, heads, D], written in
// place; the rotary tables cos and sin [P, D / 2]; the Linears' weights [out, in] (any storage of linear.h: int4
// [out, in / 2]), each followed by its scales, and biases; the layernorms' gamma and beta [H]; scalars [4] = (query scale, layer scale, alpha, layernorm epsilon); out [B, S, H].
// Returns non-zero on shapes or dtypes it cannot handle, and on a position or slot out of range.
extern "C" int glm_layer(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                         void *extra) {
  (void)stream;
  (void)extra;
  if (nparam != COUNT || ndims[X] != 3 || ndims[KEY_CACHE] != 4 || ndims[H_TO_4H_W] != 2) return 1;
  const auto weight_input = [&](int weight, int scale) {
    return glm::WeightInput{params[weight], dtypes[weight], ndims[weight], shapes[weight],
                            params[scale],  dtypes[scale],  ndims[scale],  shapes[scale]};
  };
  const glm::WeightInput qkv_w = weight_input(QKV_W, QKV_S), dense_w = weight_input(DENSE_W, DENSE_S);
  const glm::WeightInput h_to_4h_w = weight_input(H_TO_4H_W, H_TO_4H_S);
  const glm::WeightInput four_h_to_h_w = weight_input(FOUR_H_TO_H_W, FOUR_H_TO_H_S);
  for (int i = 0; i < nparam; ++i) {
    if (i == QKV_W || i == QKV_S || i == DENSE_W || i == DENSE_S || i == H_TO_4H_W || i == H_TO_4H_S ||
        i == FOUR_H_TO_H_W || i == FOUR_H_TO_H_S)
      continue;  // checked by check_storage below
    const char *expected = i == POSITION_IDS || i == SLOTS ? "int32" : i == MASK ? "bool" : "float32";
    if (std::strcmp(dtypes[i], expected) != 0) return 1;
  }
  const int64_t batch = shapes[X][0], seq = shapes[X][1], hidden = shapes[X][2];
  const int64_t length = shapes[KEY_CACHE][0], heads = shapes[KEY_CACHE][2], dim = shapes[KEY_CACHE][3];
  const int64_t inner = shapes[H_TO_4H_W][0], table_rows = shapes[COS][0];
  if (heads * dim != hidden || dim % 4 != 0 || !shape_is(ndims, shapes, POSITION_IDS, {batch, 2, seq}) ||
      !shape_is(ndims, shapes, MASK, {batch, 1, seq, length}) || !shape_is(ndims, shapes, SLOTS, {seq}) ||
      !shape_is(ndims, shapes, KEY_CACHE, {length, batch, heads, dim}) ||
      !shape_is(ndims, shapes, VALUE_CACHE, {length, batch, heads, dim}) ||
      !shape_is(ndims, shapes, COS, {table_rows, dim / 2}) || !shape_is(ndims, shapes, SIN, {table_rows, dim / 2}) ||
      !glm::check_storage(qkv_w, 3 * hidden, hidden) || !shape_is(ndims, shapes, QKV_B, {3 * hidden}) ||
      !glm::check_storage(dense_w, hidden, hidden) || !shape_is(ndims, shapes, DENSE_B, {hidden}) ||
      !glm::check_storage(h_to_4h_w, inner, hidden) || !shape_is(ndims, shapes, H_TO_4H_B, {inner}) ||
      !glm::check_storage(four_h_to_h_w, hidden, inner) || !shape_is(ndims, shapes, FOUR_H_TO_H_B, {hidden}) ||
      !shape_is(ndims, shapes, SCALARS, {4}) || !shape_is(ndims, shapes, OUT, {batch, seq, hidden}))
    return 1;
  for (int norm : {POST_GAMMA, POST_BETA, NEXT_GAMMA, NEXT_BETA})
    if (!shape_is(ndims, shapes, norm, {hidden})) return 1;
  const auto in = [&](int param) { return static_cast<const float *>(params[param]); };
  const int32_t *position_ids = static_cast<const int32_t *>(params[POSITION_IDS]);
  const int32_t *slots = static_cast<const int32_t *>(params[SLOTS]);
  int64_t skip = 0;
  while (skip < seq && slots[skip] == -1) ++skip;
  const int64_t kept = seq - skip;
  if (kept == 0) return 1;
  for (int64_t s = skip; s < seq; ++s)
    if (slots[s] < 0 || slots[s] >= length) return 1;
  for (int64_t i = 0; i < batch * 2; ++i)
    for (int64_t s = skip; s < seq; ++s)
      if (position_ids[i * seq + s] < 0 || position_ids[i * seq + s] >= table_rows) return 1;
  const float query_scale = in(SCALARS)[0], layer_scale = in(SCALARS)[1], alpha = in(SCALARS)[2];
  const float epsilon = in(SCALARS)[3];
  float *key_cache = static_cast<float *>(params[KEY_CACHE]), *value_cache = static_cast<float *>(params[VALUE_CACHE]);
  float *out = static_cast<float *>(params[OUT]);

  const int64_t rows = batch * kept;
  std::lock_guard<std::mutex> lock(scratch.mutex);
  const float *x = in(X);
  const bool *mask = static_cast<const bool *>(params[MASK]);
  float *result = out;
  if (skip > 0) {  // the kernels below see a batch of `kept` tokens: the kept rows, gathered (in place for one row)
    int32_t *kept_positions = Scratch::at_least(scratch.kept_positions, batch * 2 * kept);
    gather_rows(position_ids, kept_positions, batch * 2, seq, skip, 1);
    position_ids = kept_positions, slots += skip;
    if (batch == 1) {
      x += skip * hidden, mask += skip * length, result += skip * hidden;
    } else {
      float *kept_x = Scratch::at_least(scratch.kept_x, rows * hidden);
      gather_rows(x, kept_x, batch, seq, skip, hidden);
      char *kept_mask = Scratch::at_least(scratch.kept_mask, rows * length);
      gather_rows(reinterpret_cast<const char *>(mask), kept_mask, batch, seq, skip, length);
      x = kept_x, mask = reinterpret_cast<const bool *>(kept_mask);
      result = Scratch::at_least(scratch.kept_out, rows * hidden);
    }
  }
  float *qkv = Scratch::at_least(scratch.qkv, rows * 3 * hidden);
  float *query = Scratch::at_least(scratch.query, rows * hidden);
  float *context = Scratch::at_least(scratch.context, rows * hidden);
  float *mlp_input = Scratch::at_least(scratch.mlp_input, rows * hidden);
  float *activations = Scratch::at_least(scratch.activations, rows * inner);

  glm::with_storage(qkv_w, hidden, [&](auto weights) {
    glm::run(glm::Product<decltype(weights)>{x, weights, in(QKV_B), nullptr, 0.0f, qkv, rows, hidden,
                                             3 * hidden, false});
    return 0;
  });
  glm::Rotary rotary{qkv, position_ids, in(COS), in(SIN), query_scale, query, key_cache, value_cache,
                     batch, kept, heads, dim};
  rotary.slots = slots;
  glm::run(rotary);
  glm::run(glm::Attention{query, key_cache, value_cache, mask, layer_scale,
                          context, batch, kept, heads, length, dim});
  glm::with_storage(dense_w, hidden, [&](auto weights) {
    glm::run(glm::Product<decltype(weights)>{context, weights, in(DENSE_B), x, alpha, mlp_input, rows, hidden,
                                             hidden, false},
             in(POST_GAMMA), in(POST_BETA), epsilon);
    return 0;
  });
  glm::with_storage(h_to_4h_w, hidden, [&](auto weights) {
    glm::run(glm::Product<decltype(weights)>{mlp_input, weights, in(H_TO_4H_B), nullptr, 0.0f, activations, rows,
                                             hidden, inner, true});
    return 0;
  });
  glm::with_storage(four_h_to_h_w, inner, [&](auto weights) {
    glm::run(glm::Product<decltype(weights)>{activations, weights, in(FOUR_H_TO_H_B), mlp_input, alpha, result,
                                             rows, inner, hidden, false},
             in(NEXT_GAMMA), in(NEXT_BETA), epsilon);
    return 0;
  });
  for (int64_t b = 0; skip > 0 && b < batch; ++b) {  // skipped rows are zeros; gathered ones go back in place
    std::fill(out + b * seq * hidden, out + (b * seq + skip) * hidden, 0.0f);
    if (batch > 1)
      std::memcpy(out + (b * seq + skip) * hidden, result + b * kept * hidden, kept * hidden * sizeof(float));
  }
  return 0;
}
