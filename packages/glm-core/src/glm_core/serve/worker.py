"""One model, one generation at a time: the thread that runs the server's generations, and their text.

The model is one MindSpore network with one set of KV caches, so requests queue for it. A
:class:`GenerationWorker` thread takes :class:`GenerationJob` s in arrival order and iterates
:meth:`glm_core.generation.Generator.stream` for each, handing every token to the job's event loop; the
event loop itself never runs the model, so it keeps answering (``/health``, new requests, disconnects)
while a generation runs. A job that is cancelled (its client went away, a stop string was met) is left
after the current step, which frees the model for the next; one cancelled while queued never starts.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import AsyncIterator, Callable

import numpy as np

from glm_core.chat import HOLD_BACK_CHARACTERS
from glm_core.generation import Generator
from glm_core.generation_config import GenerationConfig

logger = logging.getLogger(__name__)

_END = object()  # the job's last item: generation is over


class GenerationJob:
    """One request's generation: ``input_ids`` under ``config``; tokens go from the worker thread to the
    asyncio ``loop`` that submitted it, read with :meth:`tokens`."""

    def __init__(self, input_ids: list[int], config: GenerationConfig, loop: asyncio.AbstractEventLoop):
        self.input_ids, self.config, self.loop = input_ids, config, loop
        self.cancelled = threading.Event()
        self._items: asyncio.Queue = asyncio.Queue()

    def cancel(self) -> None:
        """Stop generating after the current step (or never start); safe from any thread, any number of times."""
        self.cancelled.set()

    def put(self, item) -> None:
        """From the worker thread: a token id, an exception, or the end."""
        try:
            self.loop.call_soon_threadsafe(self._items.put_nowait, item)
        except RuntimeError:  # the loop is closed: the server stopped, nobody reads this job any more
            self.cancel()

    async def tokens(self) -> AsyncIterator[int]:
        """The generated token ids as they come (``<eop>`` included when met); raises what generation raised."""
        while True:
            item = await self._items.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item


class GenerationWorker:
    """The thread that runs every generation of ``generator``'s model, one after the other.

    ``num_pieces``: ids at or past it are never generated (the tokenizer's vocabulary size).
    """

    def __init__(self, generator: Generator, num_pieces: int):
        self.generator, self.num_pieces = generator, num_pieces
        self._jobs: queue.Queue[GenerationJob | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self.running: GenerationJob | None = None

    @property
    def queued(self) -> int:
        """Jobs waiting for the model (the running one not counted)."""
        return self._jobs.qsize()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="glm-generation", daemon=True)
        self._thread.start()

    def submit(self, job: GenerationJob) -> None:
        self._jobs.put(job)

    def stop(self, timeout: float = 30.0) -> None:
        """Cancel the running job and every queued one, then end the thread (waiting up to ``timeout`` s)."""
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.cancel()
                job.put(_END)
        if self.running is not None:
            self.running.cancel()
        self._jobs.put(None)
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            self.running = job
            try:
                if not job.cancelled.is_set():
                    self._generate(job)
            except Exception as error:  # a failed generation fails its request, never the server
                logger.exception("generation failed")
                job.put(error)
            finally:
                self.running = None
                job.put(_END)

    def _generate(self, job: GenerationJob) -> None:
        steps = self.generator.stream(np.array([job.input_ids]), job.config, num_pieces=self.num_pieces)
        try:
            for tokens in steps:
                job.put(int(tokens[0]))
                if job.cancelled.is_set():
                    break
        finally:
            steps.close()  # leaving the generator's loop now is what frees the model for the next job


class TextStream:
    """The text of a growing answer, handed out as deltas that are never taken back.

    ``render(ids)`` turns the answer's ids into its text (``tokenizer.decode``, and ``process_response`` for
    chat). The last characters of the text can still change as tokens arrive (a half-decoded character,
    ``process_response``'s punctuation rules, the start of a stop string), so the last
    ``max(HOLD_BACK_CHARACTERS, longest stop - 1)`` are held back until the answer is complete. A stop
    string ends the answer before it.
    """

    def __init__(self, render: Callable[[list[int]], str], eos_token_id: int, stop: list[str]):
        self.render, self.eos_token_id, self.stop = render, eos_token_id, stop
        self.hold_back = max([HOLD_BACK_CHARACTERS, *(len(s) - 1 for s in stop)])
        self.ids: list[int] = []
        self.text = ""  # the whole answer so far, as rendered
        self.sent = ""  # what the deltas handed out add up to
        self.finish_reason: str | None = None  # "stop" (end token or stop string) once the answer is over

    def add(self, token: int) -> str:
        """Take the next token; returns the text that became final (maybe empty)."""
        if self.finish_reason is not None:
            return ""
        if token == self.eos_token_id:
            self.finish_reason = "stop"
            return ""
        self.ids.append(token)
        self.text = self.render(self.ids)
        for stop in self.stop:
            if stop in self.text:
                self.text = self.text[:self.text.index(stop)]
                self.finish_reason = "stop"
        stable = self.text if self.finish_reason else self.text[:max(len(self.text) - self.hold_back, 0)]
        return self._advance(stable)

    def close(self) -> str:
        """The answer is complete (ended, or out of tokens): the text held back."""
        return self._advance(self.text)

    def _advance(self, stable: str) -> str:
        if self.sent.startswith(stable):  # nothing new (the text may shrink: [[训练时间]] becomes 2023年)
            return ""
        if not stable.startswith(self.sent):
            # Cannot happen within the held-back tail (process_response rewrites the last character or a
            # complete [[训练时间]]; a stop string is cut where it starts, past what was handed out). Should
            # it, the client gets the new text from where the two differ: nothing is lost, something repeats.
            logger.warning("streamed text rewritten beyond the held-back tail: %r -> %r", self.sent, stable)
            common = next((i for i, (old, new) in enumerate(zip(self.sent, stable)) if old != new),
                          min(len(self.sent), len(stable)))
            self.sent = self.sent[:common]
        delta = stable[len(self.sent):]
        self.sent += delta
        return delta
