// y = x @ w.T for float32 x [rows, K] and w [N, K] (the checkpoint layout): the Linear layers of glm_core's
// inference models on CPU, called by MindSpore as an "aot" Custom operator (see kernels/__init__.py).
//
// A one-token decode step is a matrix-vector product that reads every weight once, so it is bound by memory
// bandwidth. Each weight row is streamed contiguously, OUTPUT_TILE rows at a time, against x held in cache,
// and the output rows are split among threads.
//
// Every output element is computed with the same arithmetic whatever the number of rows or how the work is
// tiled and split among threads: LANES sums accumulated over K in steps of LANES, added up by a fixed
// tree, then the K % LANES tail. So a one-token decode step gives exactly the logits of a full forward.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

namespace {

// LANES-wide sums; ROW_TILE x OUTPUT_TILE of them stay in registers with room left for the loaded rows
// (24 of AVX-512's 32 registers, 4 of AVX2's 16).
#if defined(__AVX512F__)
constexpr int LANES = 16;
constexpr int ROW_TILE = 4;
constexpr int OUTPUT_TILE = 6;
#else
constexpr int LANES = 8;
constexpr int ROW_TILE = 2;
constexpr int OUTPUT_TILE = 2;
#endif

typedef float Lanes __attribute__((vector_size(LANES * sizeof(float))));
typedef float UnalignedLanes __attribute__((vector_size(LANES * sizeof(float)), aligned(4)));

#define ALWAYS_INLINE inline __attribute__((always_inline))

ALWAYS_INLINE Lanes load(const float *p) { return *reinterpret_cast<const UnalignedLanes *>(p); }

// The lane sums added up by halves, then the products of the k % LANES tail in order.
ALWAYS_INLINE float finish(Lanes sum, const float *x, const float *w, int64_t k) {
  float s[LANES];
  std::memcpy(s, &sum, sizeof s);
  for (int half = LANES / 2; half >= 1; half /= 2)
    for (int i = 0; i < half; ++i) s[i] += s[i + half];
  float total = s[0];
  for (int64_t i = k / LANES * LANES; i < k; ++i) total = __builtin_fmaf(x[i], w[i], total);
  return total;
}

// A tile of R rows of x against C rows of w: R * C lane sums held in registers.
template <int R, int C>
ALWAYS_INLINE void tile(const float *x, const float *w, float *y, int64_t k, int64_t n) {
  Lanes sum[R][C] = {};
  for (int64_t i = 0; i + LANES <= k; i += LANES) {
    Lanes wv[C];
    for (int c = 0; c < C; ++c) wv[c] = load(w + c * k + i);
    for (int r = 0; r < R; ++r) {
      Lanes xv = load(x + r * k + i);
      for (int c = 0; c < C; ++c) sum[r][c] += xv * wv[c];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) y[r * n + c] = finish(sum[r][c], x + r * k, w + c * k, k);
}

template <int C>
void columns(const float *x, const float *w, float *y, int64_t rows, int64_t k, int64_t n, int64_t j) {
  int64_t r = 0;
  for (; r + ROW_TILE <= rows; r += ROW_TILE) tile<ROW_TILE, C>(x + r * k, w + j * k, y + r * n + j, k, n);
  for (; r < rows; ++r) tile<1, C>(x + r * k, w + j * k, y + r * n + j, k, n);
}

void output_range(const float *x, const float *w, float *y, int64_t rows, int64_t k, int64_t n, int64_t begin,
                  int64_t end) {
  int64_t j = begin;
  for (; j + OUTPUT_TILE <= end; j += OUTPUT_TILE) columns<OUTPUT_TILE>(x, w, y, rows, k, n, j);
  for (; j < end; ++j) columns<1>(x, w, y, rows, k, n, j);
}

int thread_count = 1;

}  // namespace

// Threads used by glm_linear; set from Python through ctypes on the same loaded library.
extern "C" void glm_linear_set_threads(int threads) { thread_count = threads < 1 ? 1 : threads; }

// MindSpore's aot signature: params = {x, w, y}; returns non-zero on shapes or dtypes it cannot handle.
extern "C" int glm_linear(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                          void *extra) {
  (void)stream;
  (void)extra;
  if (nparam != 3 || ndims[0] != 2 || ndims[1] != 2 || std::strcmp(dtypes[0], "float32") != 0 ||
      std::strcmp(dtypes[1], "float32") != 0 || shapes[0][1] != shapes[1][1])
    return 1;
  const float *x = static_cast<const float *>(params[0]);
  const float *w = static_cast<const float *>(params[1]);
  float *y = static_cast<float *>(params[2]);
  const int64_t rows = shapes[0][0], k = shapes[0][1], n = shapes[1][0];
  const int64_t share = ((n + thread_count - 1) / thread_count + OUTPUT_TILE - 1) / OUTPUT_TILE * OUTPUT_TILE;
  std::vector<std::thread> helpers;
  for (int t = 1; t < thread_count && t * share < n; ++t)
    helpers.emplace_back(output_range, x, w, y, rows, k, n, t * share, std::min(n, (t + 1) * share));
  output_range(x, w, y, rows, k, n, 0, std::min(n, share));
  for (auto &helper : helpers) helper.join();
  return 0;
}
