// The Linear kernel's arithmetic, shared by linear.cc (one Linear per operator) and layer.cc (a whole GLM
// block): y = x @ w.T (+ bias) for float32 x [rows, K], w [N, K] (the checkpoint layout), with epilogues.
// glm_linear_gelu applies the MLP's tanh GELU to every output; given a residual r and a scale a, the result is
// r * a + (x @ w.T + bias), GLM's residual connection, rounded step by step as MindSpore's Mul and Add round
// it, and given a layernorm's gamma, beta and epsilon too, that layernorm of it, computed as MindSpore's CPU
// LayerNorm computes it.
//
// A one-token decode step is a matrix-vector product that reads every weight once, so it is bound by memory
// bandwidth. Each weight row is streamed contiguously against x held in cache (one row after another for a
// single row of x, OUTPUT_TILE side by side for several), and the output rows are split among threads.
//
// Every output element is computed with the same arithmetic whatever the number of rows or how the work is
// tiled and split among threads: LANES sums accumulated over K in steps of LANES, added up by a fixed
// tree, then the K % LANES tail. So a one-token decode step gives exactly the logits of a full forward.
#pragma once

#include <algorithm>
#include <cmath>

#include "common.h"

namespace glm {
namespace {

// tanh, 8 at a time, correctly rounded to float: evaluated in double (exp by range reduction and a degree-13
// polynomial, 1e-16 relative), then rounded once. glibc's tanhf is scalar, 15 ns a call here, and off by an
// ulp for one float in seven; the GELU of a glm_bench decode step took 0.8 ms of it.
typedef double Doubles __attribute__((vector_size(8 * sizeof(double))));
typedef int64_t Int64s __attribute__((vector_size(8 * sizeof(int64_t))));
typedef float Floats __attribute__((vector_size(8 * sizeof(float))));
typedef float UnalignedFloats __attribute__((vector_size(8 * sizeof(float)), aligned(4)));

ALWAYS_INLINE Doubles exp_of(Doubles x) {  // for |x| <= 20
  const double log2e = 1.4426950408889634, ln2_high = 0.6931471805598903, ln2_low = 5.497923018708371e-14;
  const double shifter = 0x1.8p52;  // adding it rounds to an integer, held in the low bits
  const Doubles shifted = x * log2e + shifter, k = shifted - shifter;
  const Doubles r = (x - k * ln2_high) - k * ln2_low;  // |r| <= ln 2 / 2
  static constexpr double factorials[] = {6227020800.0, 479001600.0, 39916800.0, 3628800.0, 362880.0, 40320.0,
                                          5040.0, 720.0, 120.0, 24.0, 6.0, 2.0, 1.0, 1.0};
  Doubles p = r * (1.0 / factorials[0]) + 1.0 / factorials[1];
  for (int i = 2; i < 14; ++i) p = p * r + 1.0 / factorials[i];
  return reinterpret_cast<Doubles>(reinterpret_cast<Int64s>(p) + (reinterpret_cast<Int64s>(shifted) << 52));
}

ALWAYS_INLINE Floats tanh_of(Floats v) {
  Doubles u = __builtin_convertvector(v, Doubles);
  u = u > 10.0 ? Doubles{} + 10.0 : u;  // tanh(10) rounds to 1.0f
  u = u < -10.0 ? Doubles{} - 10.0 : u;
  const Doubles e = exp_of(2.0 * u), u2 = u * u;
  const Doubles large = (e - 1.0) / (e + 1.0);
  const Doubles small = u * (1.0 + u2 * (-1.0 / 3.0 + u2 * (2.0 / 15.0 + u2 * (-17.0 / 315.0))));  // no cancellation
  return __builtin_convertvector((u < 0.0 ? -u : u) < 0x1p-6 ? small : large, Floats);
}

// The original's gelu_impl, in its order, on values[0..count): 0.5 x (1 + tanh(sqrt(2 / pi) x (1 + 0.044715 x^2))).
void tanh_gelu(float *values, int64_t count) {
  const auto gelu = [](Floats x) {
    return 0.5f * x * (1.0f + tanh_of(0.7978845608028654f * x * (1.0f + 0.044715f * x * x)));
  };
  int64_t i = 0;
  for (; i + 8 <= count; i += 8)
    *reinterpret_cast<UnalignedFloats *>(values + i) = gelu(*reinterpret_cast<const UnalignedFloats *>(values + i));
  if (i < count) {
    Floats tail = {};
    std::memcpy(&tail, values + i, (count - i) * sizeof(float));
    tail = gelu(tail);
    std::memcpy(values + i, &tail, (count - i) * sizeof(float));
  }
}

// y [rows, n] = x [rows, k] @ w [n, k].T (+ bias [n] when given).
struct Product {
  const float *x, *w, *bias, *residual;
  float alpha, *y;
  int64_t rows, k, n;
  bool gelu;

  // The lane sums added up by halves, then the products of the k % LANES tail in order, then the bias.
  ALWAYS_INLINE float finish(Lanes sum, int64_t r, int64_t j) const {
    float s[LANES];
    std::memcpy(s, &sum, sizeof s);
    for (int half = LANES / 2; half >= 1; half /= 2)
      for (int i = 0; i < half; ++i) s[i] += s[i + half];
    float total = s[0];
    for (int64_t i = k / LANES * LANES; i < k; ++i) total = __builtin_fmaf(x[r * k + i], w[j * k + i], total);
    if (bias) total += bias[j];
    if (!residual) return total;  // the GELU comes once a range of outputs is done (see outputs)
    float scaled = residual[r * n + j] * alpha;
    __asm__("" : "+x"(scaled));  // rounded on its own: no fused multiply-add here
    return scaled + total;
  }

  // Rows r..r+R-1 of x against rows j..j+C-1 of w: R * C lane sums held in registers.
  template <int R, int C>
  ALWAYS_INLINE void tile(int64_t r, int64_t j) const {
    Lanes sum[R][C] = {};
    for (int64_t i = 0; i + LANES <= k; i += LANES) {
      Lanes wv[C];
      for (int c = 0; c < C; ++c) wv[c] = load(w + (j + c) * k + i);
      for (int q = 0; q < R; ++q) {
        Lanes xv = load(x + (r + q) * k + i);
        for (int c = 0; c < C; ++c) sum[q][c] += xv * wv[c];
      }
    }
    for (int q = 0; q < R; ++q)
      for (int c = 0; c < C; ++c) y[(r + q) * n + j + c] = finish(sum[q][c], r + q, j + c);
  }

  template <int C>
  void columns(int64_t j) const {
    int64_t r = 0;
    for (; r + ROW_TILE <= rows; r += ROW_TILE) tile<ROW_TILE, C>(r, j);
    for (; r < rows; ++r) tile<1, C>(r, j);
  }

  // Outputs begin..end-1 of every row: each weight row is read once, OUTPUT_TILE rows at a time, which
  // shares each load of x among them. A single row of x (a decode step) has nothing to share, and reads the
  // weights one row after the other instead: a single stream, which the CPU prefetches best (8-15 % faster
  // than six streams side by side on the LM head here). The sums are the same either way.
  void outputs(int64_t begin, int64_t end) const {
    int64_t j = begin;
    if (rows > 1)
      for (; j + OUTPUT_TILE <= end; j += OUTPUT_TILE) columns<OUTPUT_TILE>(j);
    for (; j < end; ++j) columns<1>(j);
    if (gelu)
      for (int64_t r = 0; r < rows; ++r) tanh_gelu(y + r * n + begin, end - begin);
  }
};

// The layernorm of each of `rows` rows of `y` [rows, n], in place, with MindSpore's CPU LayerNorm's
// arithmetic (checked bit for bit in tests/glm_core/test_core_kernels.py): the mean and the variance from
// sums in double, in order, rounded to float; then (y - mean) / sqrt(variance + epsilon) * gamma + beta,
// each operation rounded to float on its own (no fused multiply-add: see the pragma).
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
void layer_norm(float *y, int64_t rows, int64_t n, const float *gamma, const float *beta, float epsilon) {
  for (int64_t r = 0; r < rows; ++r) {
    float *row = y + r * n;
    double sum = 0.0, square_sum = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      const double value = row[i];
      sum += value;
      square_sum += value * value;
    }
    const double mean = sum / static_cast<double>(n);
    const float mean_f = static_cast<float>(mean);
    const float variance = static_cast<float>(square_sum / static_cast<double>(n) - mean * mean);
    const float deviation = std::sqrt(variance + epsilon);
    for (int64_t i = 0; i < n; ++i) row[i] = (row[i] - mean_f) / deviation * gamma[i] + beta[i];
  }
}
#pragma GCC pop_options

// x @ w.T (+ bias, + residual) into product.y, split among the threads; then, given gamma, the layernorm of
// each row (every output of a row must be done first, so the rows are split anew).
void run(const Product &product, const float *gamma = nullptr, const float *beta = nullptr, float epsilon = 0.0f) {
  const int64_t n = product.n, tiles = (n + OUTPUT_TILE - 1) / OUTPUT_TILE;
  helpers.split(static_cast<int>(std::min<int64_t>(thread_count.load(), tiles)), tiles,
                [&](int64_t first, int64_t last) {
                  product.outputs(first * OUTPUT_TILE, std::min(n, last * OUTPUT_TILE));
                });
  if (gamma == nullptr) return;
  const int64_t rows = product.rows;
  helpers.split(static_cast<int>(std::min<int64_t>(thread_count.load(), rows)), rows,
                [&](int64_t first, int64_t last) {
                  layer_norm(product.y + first * n, last - first, n, gamma, beta, epsilon);
                });
}

}  // namespace
}  // namespace glm
