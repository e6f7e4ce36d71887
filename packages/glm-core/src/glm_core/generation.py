"""Incremental generation: a static KV cache, a prefill graph, a one-token decode graph, and sampling.

Shapes are static so MindSpore compiles each graph once and reuses it:
- prompts are left-padded with ``<pad>`` to a length bucket (multiples of ``PROMPT_BUCKET``); padding is
  masked and positions restart after it, so extra padding changes nothing;
- every row writes its new token at the same cache slot ``t`` (rows are aligned by the left padding);
- one cache ``[batch, heads, cache_length, head_dim]`` per layer is preallocated per (batch, cache length)
  and written in place; the decode graph reads the whole cache under a mask ``pad_count <= j <= t``.

Both graphs are ``@ms.jit``: they compile even when the caller left MindSpore in PyNative mode.
The Python loop per step does only the sampling (numpy, on ``[batch, vocab]`` logits) and feeds four
tiny tensors to the compiled decode graph.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from glm_core.model import GLMForPreTraining, mindspore_dtype, positions_and_mask

logger = logging.getLogger(__name__)

try:  # what Cell.__call__ ends in; see _run_compiled
    from mindspore.graph.api import _cell_graph_executor as _GRAPH_EXECUTOR
except ImportError:
    _GRAPH_EXECUTOR = None

PROMPT_BUCKET = 64  # prompts are padded to a multiple of this: one prefill graph per bucket
CACHE_BUCKET = 64  # cache lengths are rounded up to a multiple of this
MAX_CACHED_DECODERS = 2  # (batch, cache length) decoders kept compiled, least recently used dropped
INVALID_SCORE_TOKEN = 5  # the original chat's fallback when logits hold NaN/Inf


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


class KVCache(nn.Cell):
    """One layer's keys and values, slot-major ``[length, batch, heads, head_dim]``, written in place.

    ScatterUpdate writes the slots along the first axis without copying the rest (MindSpore's CPU
    ScatterNdUpdate on a ``[batch, heads, length, head_dim]`` cache copies all of it on every call: 1.8 GB
    per decode step for ChatGLM-6B's 2048-token cache). glm_core.kernels' attention reads this layout as is.
    """

    def __init__(self, layer: int, batch: int, heads: int, length: int, head_dim: int, dtype):
        super().__init__()
        shape = (length, batch, heads, head_dim)
        self.key = Parameter(Tensor(np.zeros(shape), dtype), name=f"kv_cache.{layer}.key", requires_grad=False)
        self.value = Parameter(Tensor(np.zeros(shape), dtype), name=f"kv_cache.{layer}.value", requires_grad=False)

    def update(self, positions, key, value):
        """Write ``key``/``value`` ``[S, B, H, D]`` at cache slots ``positions`` (int32 ``[S]``); return the caches."""
        return (ops.scatter_update(self.key, positions, key.astype(self.key.dtype)),
                ops.scatter_update(self.value, positions, value.astype(self.value.dtype)))


class Prefill(nn.Cell):
    """Runs a left-padded prompt ``[B, S]``, fills cache slots ``0..S-1``, returns last logits ``[B, V]``."""

    def __init__(self, model: GLMForPreTraining, caches: nn.CellList, cache_length: int):
        super().__init__(auto_prefix=False)  # keep the model's checkpoint parameter names
        self.model, self.caches, self.cache_length = model, caches, cache_length

    @ms.jit
    def construct(self, input_ids):
        batch, seq = input_ids.shape
        position_ids, mask = positions_and_mask(input_ids, self.model.config)
        unwritten = ops.ones((batch, 1, seq, self.cache_length - seq), ms.bool_)  # slots not filled yet
        mask = ops.concat([mask, unwritten], -1)
        slots = ops.arange(seq, dtype=ms.int32)
        hidden = self.model.transformer(input_ids, position_ids, mask, self.caches, slots)
        return self.model.lm_head(hidden[:, -1:]).reshape(batch, -1).astype(ms.float32)


class DecodeOneToken(nn.Cell):
    """One step: token ``[B, 1]`` at slot ``t`` with positions ``[B, 2, 1]`` and the mask ``decode_mask``
    gives → logits ``[B, V]``."""

    def __init__(self, model: GLMForPreTraining, caches: nn.CellList):
        super().__init__(auto_prefix=False)
        self.model, self.caches = model, caches

    @ms.jit
    def construct(self, token, position_ids, slot, mask):
        batch = token.shape[0]
        hidden = self.model.transformer(token, position_ids, mask, self.caches, slot)
        return self.model.lm_head(hidden).reshape(batch, -1).astype(ms.float32)


def decode_mask(pad_counts: np.ndarray, slot: int, cache_length: int) -> np.ndarray:
    """A decode step's attention mask, bool ``[B, 1, 1, cache_length]``, True = masked: row ``b`` sees cache
    slots ``pad_counts[b]`` to ``slot``. Built here, in microseconds: in the graph it took five operators."""
    slots = np.arange(cache_length)
    visible = (slots >= np.asarray(pad_counts).reshape(-1, 1)) & (slots <= slot)
    return ~visible.reshape(-1, 1, 1, cache_length)


class Decoder:
    """The compiled graphs and caches for one (batch size, cache length)."""

    def __init__(self, model: GLMForPreTraining, batch: int, cache_length: int):
        config = model.config
        dtype = mindspore_dtype(config.compute_dtype)
        self.caches = nn.CellList([KVCache(i, batch, config.num_heads, cache_length, config.head_dim, dtype)
                                   for i in range(config.num_layers)])
        self.model, self.batch, self.cache_length = model, batch, cache_length
        self.prefills: dict[int, Prefill] = {}
        self.decode = DecodeOneToken(model, self.caches)
        self.compiled: set[tuple] = set()  # (id(cell), MindSpore mode) of the cells already compiled

    def prefill(self, prompt_length: int) -> Prefill:
        if prompt_length not in self.prefills:
            self.prefills[prompt_length] = Prefill(self.model, self.caches, self.cache_length)
        return self.prefills[prompt_length]


@dataclass
class GenerationStats:
    """Timing of the last ``generate`` call, in wall time; compile time is kept apart from generation time.

    ``prefill_seconds``: the prompt's graph and choosing the first token; ``decode_seconds``: the later
    steps, each with its inputs and its token choice (sampling included). Time the caller spends between
    steps (a streamer printing, say) counts in neither.
    """

    batch_size: int = 0
    prompt_length: int = 0
    new_tokens: int = 0  # generated tokens summed over rows, up to each row's end
    steps: int = 0  # decode steps (the first token comes from the prefill)
    compile_seconds: float = 0.0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        """New tokens per second of generation (prefill + decode, compile excluded)."""
        seconds = self.prefill_seconds + self.decode_seconds
        return self.new_tokens / seconds if seconds > 0 else 0.0

    @property
    def decode_tokens_per_second(self) -> float:
        return self.batch_size * self.steps / self.decode_seconds if self.decode_seconds > 0 else 0.0


# ---------------------------------------------------------------------------------------------- sampling
def process_logits(logits: np.ndarray, generated: list[list[int]], *, repetition_penalty: float = 1.0,
                   num_pieces: int | None = None) -> np.ndarray:
    """The logits processors run before choosing a token, in the original's order.

    Rows holding NaN/Inf become a one-hot on token 5 (the original chat's ``InvalidScoreLogitsProcessor``);
    ids at or past ``num_pieces`` (embedding rows with no tokenizer piece) are forbidden; tokens already in
    the sequence are penalised as Hugging Face's ``RepetitionPenaltyLogitsProcessor`` does. Returns a new
    array, or ``logits`` itself (as float32) when no processor changes it: the common greedy step, where a
    copy of a 130528-wide row would be the step's only use of it.
    """
    logits = np.asarray(logits, dtype=np.float32)
    invalid = ~np.isfinite(logits).all(axis=-1)
    forbidden = num_pieces is not None and num_pieces < logits.shape[-1]
    if invalid.any() or forbidden or repetition_penalty != 1.0:
        logits = logits.copy()
    if invalid.any():
        logits[invalid] = 0.0
        logits[invalid, INVALID_SCORE_TOKEN] = 5e4
    if forbidden:
        logits[:, num_pieces:] = -np.inf
    if repetition_penalty != 1.0:
        for row, ids in enumerate(generated):
            seen = np.unique(np.asarray(ids, dtype=np.int64))
            scores = logits[row, seen]
            logits[row, seen] = np.where(scores < 0, scores * repetition_penalty, scores / repetition_penalty)
    return logits


def filtered_probabilities(logits: np.ndarray, *, temperature: float = 1.0, top_k: int = 0,
                           top_p: float = 1.0) -> np.ndarray:
    """The distribution a sampler draws from: temperature, then top-k, then top-p over what is left.

    ``top_p`` keeps the smallest set of most likely tokens whose renormalised probability reaches
    ``top_p`` (the most likely token always stays). Returns probabilities ``[batch, vocab]``.
    """
    scores = logits.astype(np.float64) / temperature
    if 0 < top_k < scores.shape[-1]:
        kth = np.partition(scores, -top_k, axis=-1)[:, -top_k][:, None]
        scores = np.where(scores < kth, -np.inf, scores)
    probs = np.exp(scores - scores.max(axis=-1, keepdims=True))
    probs /= probs.sum(axis=-1, keepdims=True)
    if top_p < 1.0:
        order = np.argsort(-probs, axis=-1, kind="stable")
        sorted_probs = np.take_along_axis(probs, order, axis=-1)
        before = np.cumsum(sorted_probs, axis=-1) - sorted_probs  # mass of strictly more likely tokens
        drop_sorted = before >= top_p
        drop = np.zeros_like(drop_sorted)
        np.put_along_axis(drop, order, drop_sorted, axis=-1)
        probs = np.where(drop, 0.0, probs)
        probs /= probs.sum(axis=-1, keepdims=True)
    return probs


def sample(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw one token per row from ``probs`` ``[batch, vocab]`` with ``rng``."""
    cumulative = np.cumsum(probs, axis=-1)
    draws = rng.random(probs.shape[0]) * cumulative[:, -1]
    return np.array([np.searchsorted(cumulative[row], draws[row], side="right")
                     for row in range(probs.shape[0])], dtype=np.int64).clip(0, probs.shape[-1] - 1)


# --------------------------------------------------------------------------------------------- generate
def _prompt_layout(ids: np.ndarray, config) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: leading pad count, absolute ``<sop>`` index, and the ``[MASK]``/``[gMASK]`` position."""
    length = ids.shape[1]
    pads = (ids != config.pad_token_id).argmax(axis=1)
    context = np.array([row.tolist().index(config.bos_token_id) if config.bos_token_id in row else length
                        for row in ids])
    positions = []
    for row, pad in zip(ids, pads):
        real = row[pad:].tolist()
        mask_id = config.mask_token_id if config.mask_token_id in real else config.gmask_token_id
        positions.append(real.index(mask_id) if mask_id in real else -1)
    return pads, context, np.array(positions)


def _validate(ids: np.ndarray, config, total_length: int) -> None:
    if ids.ndim != 2 or ids.shape[0] == 0 or ids.shape[1] == 0:
        raise ValueError(f"input_ids must be a non-empty [batch, length] array of token ids, got shape {ids.shape}")
    if ids.min() < 0 or ids.max() >= config.vocab_size:
        raise ValueError(f"input_ids hold ids outside [0, {config.vocab_size}): min {ids.min()}, max {ids.max()}")
    for row_index, row in enumerate(ids):
        real = row[(row != config.pad_token_id).argmax():]
        if (row == config.pad_token_id).all() or (real == config.pad_token_id).any():
            raise ValueError(f"input_ids row {row_index}: <pad> (id {config.pad_token_id}) may only appear as "
                             "left padding before the prompt")
    if total_length > config.seq_length:
        raise ValueError(f"max_length {total_length} exceeds the model's seq_length {config.seq_length}")
    if total_length <= ids.shape[1]:
        raise ValueError(f"max_length {total_length} leaves no room after the prompt of {ids.shape[1]} tokens")


def _decoder_for(model: GLMForPreTraining, batch: int, cache_length: int) -> Decoder:
    if model._decoders is None:
        model._decoders = OrderedDict()
    key = (batch, cache_length)
    if key in model._decoders:
        model._decoders.move_to_end(key)
    else:
        while len(model._decoders) >= MAX_CACHED_DECODERS:
            model._decoders.popitem(last=False)
        model._decoders[key] = Decoder(model, batch, cache_length)
    return model._decoders[key]


def _call(decoder: Decoder, cell: nn.Cell, stats: GenerationStats, *args) -> tuple[np.ndarray, float]:
    """Run ``cell`` on ``args``: its output, and the seconds a first call spent compiling the graph (also
    added to ``stats.compile_seconds``)."""
    mode = ms.get_context("mode")
    compile_seconds = 0.0
    if (id(cell), mode) not in decoder.compiled:
        # The first call compiles the graph (in graph and PyNative mode alike, construct is @ms.jit); running
        # it twice is harmless, since a call rewrites the same cache slots with the same values.
        start = time.perf_counter()
        cell(*args).asnumpy()
        compile_seconds = time.perf_counter() - start
        stats.compile_seconds += compile_seconds
        decoder.compiled.add((id(cell), mode))
    output = (_run_compiled(cell, args) if mode == ms.GRAPH_MODE else cell(*args)).asnumpy()
    return output, compile_seconds


def _run_compiled(cell: nn.Cell, args: tuple):
    """``cell(*args)`` for a cell that an earlier call compiled in graph mode.

    In graph mode ``Cell.__call__`` re-derives the compile key and walks every sub-cell on each call, about
    0.8 ms of Python for the decode graph (2 % of a glm_bench step), before it hands the arguments to
    MindSpore's graph executor under the cell's phase. This goes there directly; where MindSpore (glm-core
    pins 2.10) does not have that executor, the plain call runs.
    """
    if _GRAPH_EXECUTOR is None:
        return cell(*args)
    return _GRAPH_EXECUTOR(cell, *args, phase=cell.phase)


def generate(model: GLMForPreTraining, input_ids, max_length: int | None = None, max_new_tokens: int | None = None,
             do_sample: bool = False, top_k: int = 0, top_p: float = 1.0, temperature: float = 1.0,
             repetition_penalty: float = 1.0, eos_token_id: int | None = None, pad_token_id: int | None = None,
             seed: int | None = None, streamer=None, num_pieces: int | None = None) -> np.ndarray:
    """Generate continuations of one prompt or a left-padded batch with the KV-cache decoder.

    ``input_ids``: ``[length]`` or ``[batch, length]`` ids (left padding with ``<pad>`` allowed).
    ``max_length`` counts the prompt, as in Hugging Face; ``max_new_tokens`` counts new tokens only;
    with neither the model's ``seq_length`` is the limit. Each row stops at ``eos_token_id`` (default:
    the config's ``<eop>``) and is then filled with ``pad_token_id``; generation ends when every row has
    stopped. ``do_sample=False`` is greedy. ``streamer``: a callable, or an object with ``put``/``end``
    (Hugging Face's streamer protocol), receiving each step's tokens ``[batch]``. ``num_pieces``: ids at or
    past it are never produced. Returns numpy ids ``[batch, length + generated]`` (prompt included).
    Timing lands in ``model.generation_stats`` (:class:`GenerationStats`).

    Raises ``ValueError`` before any compile for an empty batch, a ``<pad>`` inside a prompt, or a length
    beyond the model's ``seq_length``.
    """
    steps = generate_tokens(model, input_ids, max_length, max_new_tokens, do_sample, top_k, top_p, temperature,
                            repetition_penalty, eos_token_id, pad_token_id, seed, num_pieces)
    ids = _as_batch(input_ids)
    generated = []
    for tokens in steps:
        generated.append(tokens)
        if streamer is not None:
            (streamer.put if hasattr(streamer, "put") else streamer)(tokens.copy())
    if streamer is not None and hasattr(streamer, "end"):
        streamer.end()
    return np.concatenate([ids, np.stack(generated, axis=1)], axis=1)


def generate_tokens(model: GLMForPreTraining, input_ids, max_length: int | None = None,
                    max_new_tokens: int | None = None, do_sample: bool = False, top_k: int = 0, top_p: float = 1.0,
                    temperature: float = 1.0, repetition_penalty: float = 1.0, eos_token_id: int | None = None,
                    pad_token_id: int | None = None, seed: int | None = None,
                    num_pieces: int | None = None) -> Iterator[np.ndarray]:
    """:func:`generate` as an iterator: each step's new tokens ``[batch]``, as they are produced.

    Takes the same arguments (less ``streamer``) and checks them before returning. Rows that have stopped
    yield ``pad_token_id``. Leaving the loop early stops generation; ``model.generation_stats`` is set
    either way.
    """
    config = model.config
    ids = _as_batch(input_ids)
    length = ids.shape[-1] if ids.ndim else 0
    if max_new_tokens is not None:
        total = length + max_new_tokens
    else:
        total = max_length if max_length is not None else config.seq_length
    _validate(ids, config, total)
    if temperature <= 0 or not 0 < top_p <= 1 or top_k < 0 or repetition_penalty <= 0:
        raise ValueError("need temperature > 0, 0 < top_p <= 1, top_k >= 0 and repetition_penalty > 0, got "
                         f"temperature={temperature}, top_p={top_p}, top_k={top_k}, "
                         f"repetition_penalty={repetition_penalty}")
    choose = _token_chooser(do_sample, top_k, top_p, temperature, repetition_penalty, num_pieces, seed)
    eos = config.eos_token_id if eos_token_id is None else eos_token_id
    pad = config.pad_token_id if pad_token_id is None else pad_token_id
    return _decode_loop(model, ids, total - length, choose, eos, pad)


def _as_batch(input_ids) -> np.ndarray:
    ids = np.asarray(input_ids, dtype=np.int64)
    return ids[None] if ids.ndim == 1 else ids


def _token_chooser(do_sample, top_k, top_p, temperature, repetition_penalty, num_pieces, seed):
    """``choose(logits, sequences) -> tokens``: the logits processors, then greedy or a seeded draw."""
    rng = np.random.default_rng(seed)

    def choose(logits: np.ndarray, sequences: list[list[int]]) -> np.ndarray:
        scores = process_logits(logits, sequences, repetition_penalty=repetition_penalty, num_pieces=num_pieces)
        if not do_sample:
            return scores.argmax(axis=-1)
        return sample(filtered_probabilities(scores, temperature=temperature, top_k=top_k, top_p=top_p), rng)

    return choose


def _decode_loop(model: GLMForPreTraining, ids: np.ndarray, new_tokens: int, choose, eos: int,
                 pad: int) -> Iterator[np.ndarray]:
    """Prefill, then one decode step per token; yields each step's tokens."""
    config = model.config
    batch, length = ids.shape
    # Align the prompt to its bucket with extra left padding (masked, so it changes nothing).
    bucket = _round_up(length, PROMPT_BUCKET)
    padded = np.concatenate([np.full((batch, bucket - length), config.pad_token_id, np.int64), ids], axis=1)
    pads, context, mask_positions = _prompt_layout(padded, config)
    decoder = _decoder_for(model, batch, _round_up(bucket + new_tokens, CACHE_BUCKET))
    stats = GenerationStats(batch_size=batch, prompt_length=length)
    # The clock runs from the prefill call to the end, but for compiling and for the caller's time after
    # each yield: prefill_seconds holds the prompt and the first token, decode_seconds every later step,
    # its inputs and its token choice included.
    try:
        start = time.perf_counter()
        logits, compile_seconds = _call(decoder, decoder.prefill(bucket), stats, Tensor(padded.astype(np.int32)))
        sequences = [row.tolist() for row in ids]
        finished = np.zeros(batch, dtype=bool)
        for step in range(new_tokens):
            tokens = np.where(finished, pad, choose(logits, sequences))
            stats.new_tokens += int((~finished).sum())
            for row, token in enumerate(tokens):
                sequences[row].append(int(token))
            seconds = time.perf_counter() - start - compile_seconds
            if step == 0:
                stats.prefill_seconds = seconds
            else:
                stats.decode_seconds += seconds
                stats.steps += 1
            yield tokens
            start = time.perf_counter()
            finished |= tokens == eos
            if finished.all() or step == new_tokens - 1:
                break
            slot = bucket + step  # the cache slot this token's keys and values go to
            positions = np.where(mask_positions >= 0, mask_positions, slot - pads)
            blocks = slot - context + 1
            position_ids = np.stack([positions, blocks], axis=1).reshape(batch, 2, 1).astype(np.int32)
            logits, compile_seconds = _call(decoder, decoder.decode, stats,
                                            Tensor(tokens.reshape(batch, 1).astype(np.int32)),
                                            Tensor(position_ids), Tensor(np.array([slot], np.int32)),
                                            Tensor(decode_mask(pads, slot, decoder.cache_length)))
    finally:
        model.generation_stats = stats
        logger.info("generated %d tokens in %.3fs (%.1f tokens/s; compile %.2fs apart)", stats.new_tokens,
                    stats.prefill_seconds + stats.decode_seconds, stats.tokens_per_second, stats.compile_seconds)
