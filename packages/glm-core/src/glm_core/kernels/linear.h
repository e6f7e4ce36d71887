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
// The weights may be stored in four ways (see the storages below): float32; float16; int8 with one float16
// scale per output row; int4 with one float16 scale per group of inputs. The narrower ones are converted to
// float32 in registers as they stream, never into a float32 array, so a step reads 1/2, 1/4 or about 1/8 of
// the bytes. An int4 value times its scale is exact in float32 (at most 4 + 11 significant bits), so float16
// and int4 weights give, bit for bit, what the float32 kernel gives over the dequantized matrix; int8 sums x
// times the values and scales each sum once, which differs from that by float32 rounding.
//
// Every output element is computed with the same arithmetic whatever the number of rows or how the work is
// tiled and split among threads: LANES sums accumulated over K in steps of LANES, added up by a fixed
// tree, then the K % LANES tail. So a one-token decode step gives exactly the logits of a full forward.
#pragma once

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "common.h"

namespace glm {
namespace {

// tanh, 8 at a time, correctly rounded to float: evaluated in double (exp by range reduction and a degree-13
// polynomial, 1e-16 relative), then rounded once. glibc's tanhf is scalar, 15 ns a call here, and off by an
// ulp for one float in seven; the GELU of a glm_bench decode step took 0.8 ms of it.
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

// ---------------------------------------------------------------------------------------- weight storages
// Each storage reads row j of a [n, k] weight matrix as float32 values, LANES at a time: block(j, b) prepares
// the reading of the row's block b, inputs b * block_size() on (its scale, for the quantized ones); a STEP of
// inputs is read as STEP / LANES vectors, vector v summed in chain v % CHAINS; vector(i, v) of a block is then the
// LANES values from input i + v * LANES, for i at the start of a STEP; at(j, i) is one value (the k % LANES tail).
// address(j, i) is where input i of row j lies (the rows follow one another), BITS the bits of each value, and a
// decode step reads DECODE_ROWS rows side by side (see Product::outputs).

// A float16 as float32 (exact): with the CPU's instruction where there is one (GCC calls a library function
// for a plain _Float16 conversion on x86).
ALWAYS_INLINE float half_to_float(uint16_t bits) {
#if defined(__F16C__)
  return _cvtsh_ss(bits);
#else
  _Float16 half;
  std::memcpy(&half, &bits, sizeof half);
  return static_cast<float>(half);
#endif
}

// LANES float16 values from p as float32: with the CPU's conversion instruction where there is one.
ALWAYS_INLINE Lanes halves(const uint16_t *p) {
#if defined(__AVX512F__)
  return reinterpret_cast<Lanes>(_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(p))));
#elif defined(__F16C__) && !defined(__AVX512F__)
  return reinterpret_cast<Lanes>(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p))));
#else
  Lanes values;
  for (int lane = 0; lane < LANES; ++lane) values[lane] = half_to_float(p[lane]);
  return values;
#endif
}

struct Float32Weights {
  const float *w;
  int64_t k;
  static constexpr int STEP = LANES, CHAINS = 1, DECODE_ROWS = 1, PREFILL_COLUMNS = OUTPUT_TILE, BITS = 32;

  struct Block {
    const float *row;
    ALWAYS_INLINE Lanes vector(int64_t i, int) const { return load(row + i); }
  };
  int64_t block_size() const { return k; }
  ALWAYS_INLINE Block block(int64_t j, int64_t) const { return {w + j * k}; }
  ALWAYS_INLINE float at(int64_t j, int64_t i) const { return w[j * k + i]; }
  ALWAYS_INLINE const void *address(int64_t j, int64_t i) const { return w + j * k + i; }
};

struct Float16Weights {
  const uint16_t *w;
  int64_t k;
  static constexpr int STEP = LANES, CHAINS = 1, DECODE_ROWS = 1, PREFILL_COLUMNS = OUTPUT_TILE, BITS = 16;

  struct Block {
    const uint16_t *row;
    ALWAYS_INLINE Lanes vector(int64_t i, int) const { return halves(row + i); }
  };
  int64_t block_size() const { return k; }
  ALWAYS_INLINE Block block(int64_t j, int64_t) const { return {w + j * k}; }
  ALWAYS_INLINE float at(int64_t j, int64_t i) const { return half_to_float(w[j * k + i]); }
  ALWAYS_INLINE const void *address(int64_t j, int64_t i) const { return w + j * k + i; }
};

// int8 values q [n, k] and one float16 scale per row s [n]: w[j, i] = q[j, i] * s[j] (the original's quantize(8)).
// The sums run over x * q, and finish multiplies each by its row's scale: a multiply per LANES weights fewer,
// where the conversion already costs two instructions. Each output keeps two chains of lane sums (even and
// odd LANES of inputs), so that each row has two additions in flight, not one waiting for the other; a prompt's
// tiles are then half as wide, to keep their sums in registers.
struct Int8Weights {
  const int8_t *w;
  const uint16_t *scale;
  int64_t k;
  static constexpr int STEP = 2 * LANES, CHAINS = 2, DECODE_ROWS = 4, PREFILL_COLUMNS = OUTPUT_TILE / 2, BITS = 8;
  typedef int8_t Bytes __attribute__((vector_size(LANES), aligned(1)));
  typedef int32_t Ints __attribute__((vector_size(LANES * sizeof(int32_t))));

  struct Block {
    const int8_t *row;
    ALWAYS_INLINE Lanes vector(int64_t i, int v) const {
      const int8_t *bytes = row + i + v * LANES;
#if defined(__AVX512F__)
      const __m512i values = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(bytes)));
      return reinterpret_cast<Lanes>(_mm512_cvtepi32_ps(values));
#elif defined(__AVX2__)
      const __m256i values = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i *>(bytes)));
      return reinterpret_cast<Lanes>(_mm256_cvtepi32_ps(values));
#else
      return __builtin_convertvector(__builtin_convertvector(*reinterpret_cast<const Bytes *>(bytes), Ints), Lanes);
#endif
    }
  };
  int64_t block_size() const { return k; }
  ALWAYS_INLINE Block block(int64_t j, int64_t) const { return {w + j * k}; }
  ALWAYS_INLINE float at(int64_t j, int64_t i) const { return static_cast<float>(w[j * k + i]); }
  ALWAYS_INLINE const void *address(int64_t j, int64_t i) const { return w + j * k + i; }
  ALWAYS_INLINE float row_scale(int64_t j) const { return half_to_float(scale[j]); }
};

// int4 values, two to a byte [n, k / 2], and one float16 scale per group of `group` inputs [n, k / group]:
// w[j, i] = (nibble - 8) * s[j, i / group]. Each 32 inputs are 16 bytes, byte t holding input t in its low
// nibble and input t + 16 in its high one, so that 16 bytes widen to 16 lanes of either half alike.
struct Int4Weights {
  const uint8_t *w;
  const uint16_t *scale;
  int64_t k, group, groups;  // groups = k / group
  static constexpr int STEP = 32, CHAINS = 1, DECODE_ROWS = 8, PREFILL_COLUMNS = OUTPUT_TILE, BITS = 4;
  typedef uint8_t Bytes __attribute__((vector_size(LANES), aligned(1)));
  typedef int32_t Ints __attribute__((vector_size(LANES * sizeof(int32_t))));

  struct Block {
    const uint8_t *row;  // the row's first byte
    Lanes scale;
#if defined(__AVX512F__)
    Lanes table;  // the 16 values a nibble stands for, (nibble - 8) * scale
#endif
    // The LANES values from input i + v * LANES: bytes (v * LANES) % 16.. of i's 32, low or high nibbles.
    ALWAYS_INLINE Lanes vector(int64_t i, int v) const {
      const int offset = v * LANES;
      const uint8_t *bytes = row + i / 2 + offset % 16;
#if defined(__AVX512F__)
      // The permutation looks at the low 4 bits of each index: the high nibble needs the shift alone.
      __m512i nibbles = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(bytes)));
      if (offset >= 16) nibbles = _mm512_srli_epi32(nibbles, 4);
      return reinterpret_cast<Lanes>(_mm512_permutexvar_ps(nibbles, reinterpret_cast<__m512>(table)));
#else
      Ints nibbles = __builtin_convertvector(*reinterpret_cast<const Bytes *>(bytes), Ints);
      nibbles = offset >= 16 ? nibbles >> 4 : nibbles & 15;
      return __builtin_convertvector(nibbles - 8, Lanes) * scale;
#endif
    }
  };
  int64_t block_size() const { return group; }
  ALWAYS_INLINE Block block(int64_t j, int64_t b) const {
#if defined(__AVX512F__)
    // The scale widened in every lane at once (a block starts every group of a few dozen weights).
    const __m256i repeated = _mm256_set1_epi16(static_cast<int16_t>(scale[j * groups + b]));
    const Lanes s = reinterpret_cast<Lanes>(_mm512_cvtph_ps(repeated));
    const Lanes values = {-8.0f, -7.0f, -6.0f, -5.0f, -4.0f, -3.0f, -2.0f, -1.0f,
                          0.0f,  1.0f,  2.0f,  3.0f,  4.0f,  5.0f,  6.0f,  7.0f};
    return {w + j * (k / 2), s, values * s};
#else
    return {w + j * (k / 2), Lanes{} + half_to_float(scale[j * groups + b])};
#endif
  }
  ALWAYS_INLINE const void *address(int64_t j, int64_t i) const { return w + j * (k / 2) + i / 2; }
  ALWAYS_INLINE float at(int64_t j, int64_t i) const {
    const uint8_t byte = w[j * (k / 2) + i / 32 * 16 + i % 16];
    const int nibble = i % 32 >= 16 ? byte >> 4 : byte & 15;
    return static_cast<float>(nibble - 8) * half_to_float(scale[j * groups + i / group]);
  }
};

// y [rows, n] = x [rows, k] @ w [n, k].T (+ bias [n] when given), w read through the storage W.
template <typename W>
struct Product {
  const float *x;
  W weights;
  const float *bias, *residual;
  float alpha, *y;
  int64_t rows, k, n;
  bool gelu;

  // The chains added in order, the lane sums added up by halves, then the products of the k % LANES tail in
  // order, then (int8) the row's scale and the bias.
  ALWAYS_INLINE float finish(const Lanes (&chains)[W::CHAINS], int64_t r, int64_t j) const {
    Lanes sum = chains[0];
    for (int chain = 1; chain < W::CHAINS; ++chain) sum += chains[chain];
    float total = halving_sum(sum);
    for (int64_t i = k / LANES * LANES; i < k; ++i) total = __builtin_fmaf(x[r * k + i], weights.at(j, i), total);
    if constexpr (std::is_same_v<W, Int8Weights>) total *= weights.row_scale(j);
    if (bias) total += bias[j];
    if (!residual) return total;  // the GELU comes once a range of outputs is done (see outputs)
    float scaled = residual[r * n + j] * alpha;
    __asm__("" : "+x"(scaled));  // rounded on its own: no fused multiply-add here
    return scaled + total;
  }

  // Rows r..r+R-1 of x against rows j..j+C-1 of w: R * C lane sums held in registers, added to in the order of
  // the inputs whatever the storage (a block of a quantized row starts on a step: see check_storage). The usual
  // int4 groups get loops of a fixed length, which GCC unrolls: a group's loop of one or two steps, counted at
  // run time, took as many instructions as its products.
  template <int R, int C>
  ALWAYS_INLINE void tile(int64_t r, int64_t j) const {
    if constexpr (std::is_same_v<W, Int4Weights>) {
      switch (weights.group) {
        case 32: return R == 1 ? int4_decode_tile<C, 1>(r, j) : tile_of_blocks<R, C, 1>(r, j);
        case 64: return R == 1 ? int4_decode_tile<C, 2>(r, j) : tile_of_blocks<R, C, 2>(r, j);
        case 128: return R == 1 ? int4_decode_tile<C, 4>(r, j) : tile_of_blocks<R, C, 4>(r, j);
        default: break;
      }
    }
    tile_of_blocks<R, C, 0>(r, j);
  }

  // A decode step prefetches the weights at least this far ahead (see tile_of_blocks).
  static constexpr int64_t PREFETCH_BYTES = 8192;

  // tile, for blocks of BLOCK_STEPS steps (0: of block_size() inputs, the last one maybe shorter).
  template <int R, int C, int BLOCK_STEPS>
  ALWAYS_INLINE void tile_of_blocks(int64_t r, int64_t j) const {
    Lanes sum[R][C][W::CHAINS] = {};
    const int64_t size = BLOCK_STEPS > 0 ? BLOCK_STEPS * W::STEP : weights.block_size();
    // A decode step reads C rows side by side, which the CPU's prefetchers follow badly (four streams read half as
    // fast as one here), so each step prefetches the bytes of the rows that follow, in order, one tile or
    // PREFETCH_BYTES ahead, whichever is farther: C * STEP inputs' worth a step, as fast as the tile reads.
    const char *const first = static_cast<const char *>(weights.address(j, 0));
    const int64_t ahead = std::max(PREFETCH_BYTES, static_cast<const char *>(weights.address(j + C, 0)) - first);
    for (int64_t b = 0, start = 0; start < k; ++b, start += size) {
      typename W::Block block[C];
      for (int c = 0; c < C; ++c) block[c] = weights.block(j + c, b);
      const int64_t end = std::min(k, start + size);
      const auto add = [&](int64_t i, int v) __attribute__((always_inline)) {
        Lanes wv[C];
        for (int c = 0; c < C; ++c) wv[c] = block[c].vector(i, v);
        for (int q = 0; q < R; ++q) {
          Lanes xv = load(x + (r + q) * k + i + v * LANES);
#if defined(__AVX__)  // whose registers hold a Lanes whole
          // One load for the C rows: GCC would otherwise fold a load of x into each of their multiply-adds.
          if constexpr (C > 1) __asm__("" : "+v"(xv));
#endif
          for (int c = 0; c < C; ++c) sum[q][c][v % W::CHAINS] += xv * wv[c];
        }
      };
      const auto step = [&](int64_t i) __attribute__((always_inline)) {
        if constexpr (R == 1) {
          constexpr int lines = std::max(1, C * W::STEP * W::BITS / 8 / 64);
          const char *front = static_cast<const char *>(weights.address(j, i * C)) + ahead;
          for (int line = 0; line < lines; ++line) __builtin_prefetch(front + line * 64);
        }
        for (int v = 0; v < W::STEP / LANES; ++v) add(i, v);
      };
      if constexpr (BLOCK_STEPS > 0) {
        for (int s = 0; s < BLOCK_STEPS; ++s) step(start + s * W::STEP);
      } else {
        int64_t i = start;
        for (; i + W::STEP <= end; i += W::STEP) step(i);
        if constexpr (W::CHAINS > 1)  // a last vector short of a whole step (int4 blocks are whole steps)
          for (; i + LANES <= end; i += LANES) add(i, 0);
      }
    }
    for (int q = 0; q < R; ++q)
      for (int c = 0; c < C; ++c) y[(r + q) * n + j + c] = finish(sum[q][c], r + q, j + c);
  }

  // tile<1, C> for int4 weights, written out with AVX-512's instructions: a decode step over int4 weights is bound
  // by its instructions, not by memory, and the generic tile spent three of them on each row's scale per group
  // and more on addressing. Here each row's scales are widened 16 groups at a time, a group's table of the 16
  // values (nibble - 8) * scale is one multiply, and 16 bytes of a row give 32 weights by two permutations of it.
  // The products and sums are the generic tile's, in its order.
  template <int C, int STEPS>
  ALWAYS_INLINE void int4_decode_tile(int64_t r, int64_t j) const {
#if defined(__AVX512F__)
    const int64_t row_bytes = k / 2, groups = weights.groups;
    const uint8_t *rows = weights.w + j * row_bytes;
    const uint16_t *const scale = weights.scale;
    const float *const input = x + r * k;
    const __m512 levels = _mm512_setr_ps(-8.0f, -7.0f, -6.0f, -5.0f, -4.0f, -3.0f, -2.0f, -1.0f, 0.0f, 1.0f, 2.0f,
                                         3.0f, 4.0f, 5.0f, 6.0f, 7.0f);
    const int64_t ahead = std::max(PREFETCH_BYTES, C * row_bytes);  // as tile_of_blocks prefetches
    // The scales lie apart from the weights, C * groups of them a tile: those of the tile after next, fetched now, are
    // in the cache when it starts, where their first reads would stall it.
    const char *later_scales = reinterpret_cast<const char *>(scale + std::min(j + 2 * C, n - 1) * groups);
    for (int64_t offset = 0; offset < C * groups * 2; offset += 64) __builtin_prefetch(later_scales + offset);
    __m512 sum[C];
    for (int c = 0; c < C; ++c) sum[c] = _mm512_setzero_ps();
    alignas(64) float scales[C][16];
    for (int64_t first = 0; first < groups; first += 16) {
      const int64_t count = std::min<int64_t>(16, groups - first);
      const __mmask16 present = count == 16 ? 0xffff : (1u << count) - 1;
      for (int c = 0; c < C; ++c)
        _mm512_store_ps(scales[c], _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(present, scale + (j + c) * groups + first)));
      for (int64_t g = 0; g < count; ++g) {
        __m512 table[C];
        for (int c = 0; c < C; ++c) table[c] = _mm512_mul_ps(levels, _mm512_set1_ps(scales[c][g]));
        for (int s = 0; s < STEPS; ++s) {
          const int64_t i = ((first + g) * STEPS + s) * 32;
          const char *front = reinterpret_cast<const char *>(rows + i / 2 * C) + ahead;
          for (int line = 0; line < std::max(1, C * 16 / 64); ++line) __builtin_prefetch(front + line * 64);
          const __m512 low = _mm512_loadu_ps(input + i), high = _mm512_loadu_ps(input + i + 16);
          for (int c = 0; c < C; ++c) {
            const __m512i nibbles =
                _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(rows + c * row_bytes + i / 2)));
            sum[c] = _mm512_fmadd_ps(low, _mm512_permutexvar_ps(nibbles, table[c]), sum[c]);
            sum[c] = _mm512_fmadd_ps(high, _mm512_permutexvar_ps(_mm512_srli_epi32(nibbles, 4), table[c]), sum[c]);
          }
        }
      }
    }
    for (int c = 0; c < C; ++c) {
      const Lanes chains[1] = {reinterpret_cast<Lanes>(sum[c])};
      y[r * n + j + c] = finish(chains, r, j + c);
    }
#else
    tile_of_blocks<1, C, STEPS>(r, j);
#endif
  }

  template <int C>
  void columns(int64_t j) const {
    int64_t r = 0;
    for (; r + ROW_TILE <= rows; r += ROW_TILE) tile<ROW_TILE, C>(r, j);
    for (; r < rows; ++r) tile<1, C>(r, j);
  }

  // A decode step's x of more inputs than this leaves the L1 cache to the streaming weights only in part: each
  // row would read all of it again from L2 (4 bytes of x per byte of int8 weights), so at least WIDE_DECODE_ROWS
  // rows share each load of it (ChatGLM-6B's dense_4h_to_h, 16384 inputs: 1.5-1.9x faster here in every storage;
  // int4 keeps its eight, whose sums four rows left waiting on each other).
  static constexpr int64_t INPUTS_IN_L1 = 4096;
  static constexpr int WIDE_DECODE_ROWS = std::max(4, W::DECODE_ROWS);

  // Outputs begin..end-1 of every row: each weight row is read once, OUTPUT_TILE rows at a time, which
  // shares each load of x among them. A single row of x (a decode step) has nothing to share, and reads
  // W::DECODE_ROWS rows side by side: one for float32 and float16 weights, whose rows stream fastest alone; four
  // for int8 and eight for int4, whose conversion takes more instructions, and whose sums, each waiting for the
  // one before, would leave the CPU idle in between for a single row. The sums are the same either way.
  void outputs(int64_t begin, int64_t end) const {
    int64_t j = begin;
    if (rows > 1)
      for (; j + W::PREFILL_COLUMNS <= end; j += W::PREFILL_COLUMNS) columns<W::PREFILL_COLUMNS>(j);
    else if (k > INPUTS_IN_L1)
      for (; j + WIDE_DECODE_ROWS <= end; j += WIDE_DECODE_ROWS) columns<WIDE_DECODE_ROWS>(j);
    else
      for (; j + W::DECODE_ROWS <= end; j += W::DECODE_ROWS) columns<W::DECODE_ROWS>(j);
    for (; j < end; ++j) columns<1>(j);
    if (gelu)
      for (int64_t r = 0; r < rows; ++r) tanh_gelu(y + r * n + begin, end - begin);
  }
};

// -------------------------------------------------------------------------------------- choosing a storage
// The storage of a weight tensor by its MindSpore dtype: int4 values travel two to a uint8.
enum class Storage { FLOAT32, FLOAT16, INT8, INT4, NONE };

Storage storage_of(const char *dtype) {
  if (std::strcmp(dtype, "float32") == 0) return Storage::FLOAT32;
  if (std::strcmp(dtype, "float16") == 0) return Storage::FLOAT16;
  if (std::strcmp(dtype, "int8") == 0) return Storage::INT8;
  if (std::strcmp(dtype, "uint8") == 0) return Storage::INT4;
  return Storage::NONE;
}

// Whether a storage needs a scale tensor beside its weights.
bool is_quantized(Storage storage) { return storage == Storage::INT8 || storage == Storage::INT4; }

// One weight tensor of a [n, k] Linear as the operators receive it: the weights and, quantized, the scales
// (for float weights the operators take a scale too, which they ignore, so the inputs keep their order).
struct WeightInput {
  void *data;
  const char *dtype;
  int ndims;
  const int64_t *shape;
  void *scale;
  const char *scale_dtype;
  int scale_ndims;
  const int64_t *scale_shape;
};

// Whether `input` holds a [n, k] Linear's weights in a storage the kernels read: int8 with scales [n]; int4 as
// [n, k / 2] bytes with scales [n, k / group] for a group that is a multiple of 32 dividing k; scales float16.
bool check_storage(const WeightInput &input, int64_t n, int64_t k) {
  const Storage storage = storage_of(input.dtype);
  if (storage == Storage::NONE || input.ndims != 2 || input.shape[0] != n) return false;
  if (storage != Storage::INT4 && input.shape[1] != k) return false;
  if (!is_quantized(storage)) return true;
  if (std::strcmp(input.scale_dtype, "float16") != 0 || input.scale_shape[0] != n) return false;
  if (storage == Storage::INT8) return input.scale_ndims == 1;
  const int64_t groups = input.scale_ndims == 2 ? input.scale_shape[1] : 0;
  return k % 32 == 0 && input.shape[1] == k / 2 && groups > 0 && k % groups == 0 && (k / groups) % 32 == 0;
}

// Calls task(weights) with the reader of `input`, a [n, k] Linear's weights that check_storage
// accepted; returns what it returns.
template <typename Task>
auto with_storage(const WeightInput &input, int64_t k, Task &&task) {
  const auto *scale = static_cast<const uint16_t *>(input.scale);
  switch (storage_of(input.dtype)) {
    case Storage::FLOAT16:
      return task(Float16Weights{static_cast<const uint16_t *>(input.data), k});
    case Storage::INT8:
      return task(Int8Weights{static_cast<const int8_t *>(input.data), scale, k});
    case Storage::INT4:
      return task(Int4Weights{static_cast<const uint8_t *>(input.data), scale, k, k / input.scale_shape[1],
                              input.scale_shape[1]});
    default:
      return task(Float32Weights{static_cast<const float *>(input.data), k});
  }
}

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
template <typename W>
void run(const Product<W> &product, const float *gamma = nullptr, const float *beta = nullptr, float epsilon = 0.0f) {
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
