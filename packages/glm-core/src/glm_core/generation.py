"""Incremental generation: a static KV cache, a prompt graph, a one-token graph, and sampling (gpt-fast's
``prefill`` / ``decode_one_token`` / ``sample``, with static shapes for MindSpore's graph mode).

A :class:`Generator` holds, per batch size, one :class:`~glm_core.model.KVCache` per layer of the model's
``seq_length`` slots and two compiled graphs that write it, a prompt graph and a one-token step graph, so a
session compiles twice per batch size, whatever the prompt lengths and numbers of new tokens it is asked for:
- the prompt graph takes any prompt: on the kernels it has the fixed width ``seq_length``, the prompt
  right-aligned in it and the rows before it marked to be skipped (slot -1: the kernels compute nothing for
  them); on MindSpore's operators its sequence axis is dynamic (``Cell.set_inputs``);
- every row of a left-padded batch writes its new token at the same cache slot (rows are aligned by the left
  padding, which is masked); masked slots cost the kernels nothing;
- the prompt's layout (:class:`glm_tokenizer.PromptLayout`) is computed once, in numpy, and gives both
  graphs their position ids and attention masks.

The graphs run on glm-core's CPU kernels (``kernel_model.py``) whenever the model's dtypes allow, however
the model was built, else on MindSpore's operators. Their ``construct`` is ``@ms.jit``: they compile even
when the caller left MindSpore in PyNative mode. The Python loop per step does only the sampling (numpy, on
``[batch, vocab]`` logits) and feeds four small tensors to the compiled step.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn

from glm_core.generation_config import GenerationConfig
from glm_core.kernel_model import KernelGLM, runs_on_kernels
from glm_core.model import GLMForPreTraining, KVCache, mindspore_dtype
from glm_tokenizer import PromptLayout

logger = logging.getLogger(__name__)

MAX_BATCH_SIZES = 2  # batch sizes whose caches and graphs a Generator keeps, least recently used dropped
INVALID_SCORE_TOKEN = 5  # the original chat's fallback when logits hold NaN/Inf


@dataclass
class GenerationStats:
    """Timing of one generation, in wall time; compile time is kept apart from generation time.

    ``prefill_seconds``: the prompt's graph and choosing the first token; ``decode_seconds``: the later
    steps, each with its inputs and its token choice (sampling included). Time the caller spends between
    steps (a streamer printing, say) counts in neither.
    """

    batch_size: int = 0
    prompt_length: int = 0
    graphs_compiled: int = 0  # graphs this generation had to compile (0 once its batch size ran)
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

    def add(self, other: GenerationStats) -> None:
        """Count ``other`` (another batch's) in."""
        self.batch_size += other.batch_size
        for name in ("new_tokens", "steps", "graphs_compiled", "compile_seconds", "prefill_seconds",
                     "decode_seconds"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


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


# ------------------------------------------------------------------------------------------- the graphs
class ForwardWithCache(nn.Cell):
    """``S`` tokens ``[B, S]`` written at cache ``slots`` ``[S]``, with their position ids ``[B, 2, S]`` and
    mask ``[B, 1, S, cache length]`` → the logits of the last ``[B, V]``: a prompt or a decode step (``S`` = 1).
    ``kernel_network``: the model's :class:`KernelGLM`, or None for MindSpore's ops. It holds the model only for
    MindSpore's ops: each call walks the graph's cells (see :class:`KernelGLM`)."""

    def __init__(self, model: GLMForPreTraining, caches: nn.CellList, kernel_network: KernelGLM | None):
        super().__init__(auto_prefix=False)  # keep the model's checkpoint parameter names
        self.caches, self.kernel_network = caches, kernel_network
        self.model = model if kernel_network is None else None

    @ms.jit
    def construct(self, input_ids, position_ids, mask, slots):
        if self.kernel_network is not None:
            return self.kernel_network(input_ids, position_ids, mask, self.caches, slots)
        hidden = self.model.transformer(input_ids, position_ids, mask, self.caches, slots)
        return self.model.lm_head(hidden[:, -1:]).reshape(input_ids.shape[0], -1).astype(ms.float32)


class _BatchGraphs:
    """The caches of one batch size and the two graphs that write them: the prompt's and the step's."""

    def __init__(self, model: GLMForPreTraining, kernel_network: KernelGLM | None, batch: int):
        config = model.config
        self.cache_length = config.seq_length
        dtype = mindspore_dtype(config.compute_dtype)
        self.caches = nn.CellList([KVCache(i, batch, config.num_heads, self.cache_length, config.head_dim, dtype)
                                   for i in range(config.num_layers)])
        self.pad_token_id, self.on_kernels = config.pad_token_id, kernel_network is not None
        self.graphs = {kind: ForwardWithCache(model, self.caches, kernel_network) for kind in ("prompt", "step")}
        if not self.on_kernels:  # one graph for every prompt length: its sequence axis is left dynamic
            self.graphs["prompt"].set_inputs(
                Tensor(shape=[batch, None], dtype=ms.int32), Tensor(shape=[batch, 2, None], dtype=ms.int32),
                Tensor(shape=[batch, 1, None, self.cache_length], dtype=ms.bool_), Tensor(shape=[None], dtype=ms.int32))
        self.compiled: set[tuple[str, int]] = set()  # (graph, MindSpore mode)

    def prompt(self, stats: GenerationStats, ids: np.ndarray, layout: PromptLayout) -> tuple[np.ndarray, float]:
        """Run the prompt ``ids`` ``[B, S]`` (its cache slots 0..S-1): the last token's logits and the seconds
        spent compiling. On the kernels the prompt is right-aligned in the graph's ``seq_length`` rows, the
        rows before it skipped (slot -1, masked, position 0)."""
        length = ids.shape[1]
        inputs = (ids, layout.position_ids(0, length), layout.attention_mask(0, length, self.cache_length),
                  np.arange(length))
        if self.on_kernels:
            skip = self.cache_length - length
            inputs = (np.pad(inputs[0], ((0, 0), (skip, 0)), constant_values=self.pad_token_id),
                      np.pad(inputs[1], ((0, 0), (0, 0), (skip, 0))),
                      np.pad(inputs[2], ((0, 0), (0, 0), (skip, 0), (0, 0)), constant_values=True),
                      np.concatenate([np.full(skip, -1), inputs[3]]))
        return self.run("prompt", stats, *inputs)

    def step(self, stats: GenerationStats, tokens: np.ndarray, layout: PromptLayout, slot: int
             ) -> tuple[np.ndarray, float]:
        """Run one token per row ``tokens`` ``[B]`` written at cache ``slot``: its logits and the seconds spent
        compiling."""
        return self.run("step", stats, tokens.reshape(-1, 1), layout.position_ids(slot, slot + 1),
                        layout.attention_mask(slot, slot + 1, self.cache_length), np.array([slot]))

    def run(self, kind: str, stats: GenerationStats, input_ids, position_ids, mask, slots
            ) -> tuple[np.ndarray, float]:
        """Run graph ``kind``, compiling it on first use: the logits, and the seconds spent compiling (also
        added to ``stats``). In PyNative mode the first call compiles as it runs, and counts whole as compile
        time."""
        graph = self.graphs[kind]
        arguments = (Tensor(input_ids, ms.int32), Tensor(position_ids, ms.int32), Tensor(mask),
                     Tensor(slots, ms.int32))
        mode = ms.get_context("mode")
        if (kind, mode) in self.compiled:
            return graph(*arguments).asnumpy(), 0.0
        start = time.perf_counter()
        if mode == ms.GRAPH_MODE:
            graph.compile(*arguments)
            compile_seconds = time.perf_counter() - start
            logits = graph(*arguments).asnumpy()
        else:
            logits = graph(*arguments).asnumpy()
            compile_seconds = time.perf_counter() - start
        self.compiled.add((kind, mode))
        stats.graphs_compiled += 1
        stats.compile_seconds += compile_seconds
        return logits, compile_seconds


# --------------------------------------------------------------------------------------------- generate
class Generator:
    """Generates with ``model``: holds its KV caches and compiled graphs, per batch size (the
    :data:`MAX_BATCH_SIZES` last used), and the timing of the last generation in ``stats``.

    The graphs run on glm-core's CPU kernels when :func:`glm_core.kernel_model.runs_on_kernels` says the
    model's dtypes allow it (``uses_kernels``), whether or not the model was built for inference.
    """

    def __init__(self, model: GLMForPreTraining):
        self.model = model
        self.uses_kernels = runs_on_kernels(model.config)
        self.kernel_network = KernelGLM(model) if self.uses_kernels else None
        self.stats = GenerationStats()
        self._batches: OrderedDict[int, _BatchGraphs] = OrderedDict()

    def generate(self, input_ids, config: GenerationConfig | None = None, *, streamer=None,
                 num_pieces: int | None = None, **overrides: Any) -> np.ndarray:
        """Generate continuations of one prompt or a left-padded batch.

        ``input_ids``: ``[length]`` or ``[batch, length]`` ids (left padding with ``<pad>`` allowed).
        ``config`` (default: greedy up to the model's ``seq_length``) with ``overrides`` of its fields
        (``max_new_tokens=…``, ``do_sample=…``). Each row stops at ``eos_token_id`` and is then filled with
        ``pad_token_id``; generation ends when every row has stopped. ``streamer``: a callable, or an object
        with ``put``/``end`` (Hugging Face's streamer protocol), receiving each step's tokens ``[batch]``.
        ``num_pieces``: ids at or past it are never produced. Returns numpy ids ``[batch, length +
        generated]`` (prompt included).

        Raises ``ValueError`` before any compile for an empty batch, a ``<pad>`` inside a prompt, an id
        outside the vocabulary, a length beyond the model's ``seq_length`` or a bad sampling option.
        """
        ids = _as_batch(input_ids)
        generated = []
        for tokens in self.stream(ids, config, num_pieces=num_pieces, **overrides):
            generated.append(tokens)
            if streamer is not None:
                (streamer.put if hasattr(streamer, "put") else streamer)(tokens.copy())
        if streamer is not None and hasattr(streamer, "end"):
            streamer.end()
        return np.concatenate([ids, np.stack(generated, axis=1)], axis=1)

    def stream(self, input_ids, config: GenerationConfig | None = None, *, num_pieces: int | None = None,
               **overrides: Any) -> Iterator[np.ndarray]:
        """:meth:`generate` as an iterator of each step's new tokens ``[batch]``, as they are produced.

        Checks its arguments before returning. Rows that have stopped yield ``pad_token_id``. Leaving the loop
        early stops generation; ``stats`` is set either way.
        """
        model_config = self.model.config
        config = (config or GenerationConfig()).updated(**overrides)
        ids = _as_batch(input_ids)
        length = ids.shape[-1] if ids.ndim == 2 else 0
        if config.max_new_tokens is not None:
            total = length + config.max_new_tokens
        else:
            total = config.max_length if config.max_length is not None else model_config.seq_length
        _validate(ids, model_config, total)
        choose = _token_chooser(config, num_pieces)
        eos = model_config.eos_token_id if config.eos_token_id is None else config.eos_token_id
        pad = model_config.pad_token_id if config.pad_token_id is None else config.pad_token_id
        return self._decode_loop(ids, total - length, choose, eos, pad)

    def _graphs(self, batch: int) -> _BatchGraphs:
        if batch in self._batches:
            self._batches.move_to_end(batch)
        else:
            while len(self._batches) >= MAX_BATCH_SIZES:
                self._batches.popitem(last=False)
            self._batches[batch] = _BatchGraphs(self.model, self.kernel_network, batch)
        return self._batches[batch]

    def _decode_loop(self, ids: np.ndarray, new_tokens: int, choose, eos: int, pad: int) -> Iterator[np.ndarray]:
        """Prefill, then one decode step per token; yields each step's tokens."""
        config = self.model.config
        batch, length = ids.shape
        layout = PromptLayout.of(ids, pad_token_id=config.pad_token_id, bos_token_id=config.bos_token_id,
                                 mask_token_id=config.mask_token_id, gmask_token_id=config.gmask_token_id)
        graphs = self._graphs(batch)
        stats = self.stats = GenerationStats(batch_size=batch, prompt_length=length)
        # The clock runs from the prefill call to the end, but for compiling and for the caller's time after
        # each yield: prefill_seconds holds the prompt and the first token, decode_seconds every later step,
        # its inputs and its token choice included.
        start = time.perf_counter()
        logits, compile_seconds = graphs.prompt(stats, ids, layout)
        sequences = [row.tolist() for row in ids]
        finished = np.zeros(batch, dtype=bool)
        try:
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
                logits, compile_seconds = graphs.step(stats, tokens, layout, slot=length + step)
        finally:
            logger.info("generated %d tokens in %.3fs (%.1f tokens/s; compile %.2fs apart)", stats.new_tokens,
                        stats.prefill_seconds + stats.decode_seconds, stats.tokens_per_second,
                        stats.compile_seconds)


_GENERATORS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def generator_for(model: GLMForPreTraining) -> Generator:
    """The :class:`Generator` that :func:`generate` uses for ``model``, made on first use and kept as long as
    the model lives: later calls reuse its compiled graphs."""
    if model not in _GENERATORS:
        _GENERATORS[model] = Generator(model)
    return _GENERATORS[model]


def forget_generator(model: GLMForPreTraining) -> None:
    """Drop the :class:`Generator` kept for ``model``, if any: its graphs hold the model's weights as they were
    (:func:`glm_core.quantized_model.quantize_model` replaces them)."""
    _GENERATORS.pop(model, None)


def generate(model: GLMForPreTraining, input_ids, config: GenerationConfig | None = None, *, streamer=None,
             num_pieces: int | None = None, **overrides: Any) -> np.ndarray:
    """:meth:`Generator.generate` with ``model``'s generator (see :func:`generator_for`)."""
    return generator_for(model).generate(input_ids, config, streamer=streamer, num_pieces=num_pieces, **overrides)


def generate_tokens(model: GLMForPreTraining, input_ids, config: GenerationConfig | None = None, *,
                    num_pieces: int | None = None, **overrides: Any) -> Iterator[np.ndarray]:
    """:meth:`Generator.stream` with ``model``'s generator (see :func:`generator_for`)."""
    return generator_for(model).stream(input_ids, config, num_pieces=num_pieces, **overrides)


def _as_batch(input_ids) -> np.ndarray:
    ids = np.asarray(input_ids, dtype=np.int64)
    return ids[None] if ids.ndim == 1 else ids


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


def _token_chooser(config: GenerationConfig, num_pieces: int | None):
    """``choose(logits, sequences) -> tokens``: the logits processors, then greedy or a seeded draw."""
    rng = np.random.default_rng(config.seed)

    def choose(logits: np.ndarray, sequences: list[list[int]]) -> np.ndarray:
        scores = process_logits(logits, sequences, repetition_penalty=config.repetition_penalty,
                                num_pieces=num_pieces)
        if not config.do_sample:
            return scores.argmax(axis=-1)
        probabilities = filtered_probabilities(scores, temperature=config.temperature, top_k=config.top_k,
                                               top_p=config.top_p)
        return sample(probabilities, rng)

    return choose
