"""ADGEN JSON lines -> MindRecord training or evaluation records (``glm-data adgen``).

This process reads the input in blocks of whole lines; checking, tokenizing and building the rows
of a block happen in ``_LineEncoder``, in a pool of worker processes (each loads the tokenizer once)
or here, whenever this process would otherwise wait. It writes the rows in input order, so the
output does not depend on the number of workers.

MindSpore is imported only where the output is written (``glm_data.writer``): the workers import
this module and would otherwise spend seconds each importing a library they never use. The records
go to MindSpore's ``FileWriter`` here, in this process, in input order.
"""

import io
import json
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Optional, Union

from glm_data import records
from glm_data.errors import DataError
from glm_data.writer import PAGE_SIZE, MindRecordOutput, record_bytes
from glm_tokenizer import ChatGLMTokenizer, chat_prompt

MODES = ("train", "eval")
FORMATS = ("glm", "mindformers")

# Reasons a line is skipped. The reference drops empty examples silently; the others are bad input,
# which --strict turns into an error. Non-UTF-8 bytes always stop the run.
EMPTY_PROMPT, EMPTY_ANSWER = "empty prompt", "empty answer"
MALFORMED_JSON, MISSING_COLUMN, INVALID_VALUE = "malformed JSON", "missing column", "invalid value"
NOT_UTF8 = "not UTF-8"
BAD_INPUT = (MALFORMED_JSON, MISSING_COLUMN, INVALID_VALUE)

BYTES_PER_CHUNK = 1 << 17  # input a worker encodes per task (about 350 ADGEN lines): one message each way
CHUNKS_IN_FLIGHT = 8  # per encoding process: enough to keep a worker busy while this one writes
WORKER_EXIT_SECONDS = 5  # how long a worker may take to stop before it is killed
# Beyond any GLM model's context; a record is padded to the sum of both lengths, so this also bounds
# the memory a chunk of records takes.
MAX_LENGTH = 1 << 15
# Processes beyond a few per core only compete for it, each with its own tokenizer in memory.
MAX_WORKERS = 4 * (os.cpu_count() or 1)
PROBLEMS_SHOWN = 10


@dataclass
class ConversionSummary:
    """What ``adgen_to_mindrecord`` did. ``str()`` gives the report the command prints."""

    output_files: list
    mode: str
    lines: int = 0
    written: int = 0
    skipped: Counter = field(default_factory=Counter)
    problems: list = field(default_factory=list)  # "line N: what was wrong", the first PROBLEMS_SHOWN
    longest_prompt: int = 0  # in tokens, before truncation, without special tokens
    longest_answer: int = 0
    prompts_truncated: int = 0
    answers_truncated: int = 0
    startup_seconds: float = 0.0  # starting the workers and MindSpore's writer (its import: seconds)
    seconds: float = 0.0  # converting, from the first line read to the files in place

    def add(self, chunk: "_EncodedChunk") -> None:
        """Count a chunk of encoded lines in (its skipped lines are noted by the caller)."""
        self.lines += chunk.lines
        self.written += len(chunk)
        self.longest_prompt = max(self.longest_prompt, chunk.longest_prompt)
        self.longest_answer = max(self.longest_answer, chunk.longest_answer)
        self.prompts_truncated += chunk.prompts_truncated
        self.answers_truncated += chunk.answers_truncated

    def __str__(self) -> str:
        rate = self.written / self.seconds if self.seconds else 0.0
        files = f" ({len(self.output_files)} files)" if len(self.output_files) > 1 else ""
        report = [
            f"wrote {self.written} {self.mode} records to {self.output_files[0]}{files} "
            f"in {self.seconds:.1f} s ({rate:.0f} examples/s; start-up {self.startup_seconds:.1f} s)",
            f"skipped {sum(self.skipped.values())} of {self.lines} lines"
            + "".join(f", {reason}: {count}" for reason, count in sorted(self.skipped.items())),
            f"longest prompt {self.longest_prompt} tokens, {self.prompts_truncated} truncated; "
            f"longest answer {self.longest_answer} tokens, {self.answers_truncated} truncated",
        ]
        bad_lines = sum(self.skipped[reason] for reason in BAD_INPUT)
        report += [f"  {problem}" for problem in self.problems]
        if bad_lines > len(self.problems):
            report.append(f"  … and {bad_lines - len(self.problems)} more bad lines")
        return "\n".join(report)


def adgen_to_mindrecord(
    input_file: Union[str, Path],
    vocab_file: Union[str, Path],
    output_file: Union[str, Path],
    *,
    max_source_length: int = 64,
    max_target_length: int = 64,
    mode: str = "train",
    record_format: str = "glm",
    num_splits: int = 1,
    prefix: str = "",
    prompt_column: str = "content",
    response_column: str = "summary",
    history_column: Optional[str] = None,
    overwrite: bool = False,
    workers: int = 1,
    strict: bool = False,
    progress: bool = False,
) -> ConversionSummary:
    """Convert an ADGEN JSON-lines file into MindRecord training or evaluation records.

    Args:
        input_file: UTF-8 JSON lines, one ``{prompt_column: …, response_column: …}`` object each.
        vocab_file: the ``ice_text.model`` SentencePiece file of the model to train.
        output_file: the MindRecord file to write (with ``num_splits > 1``: ``output_file0``, ``…1``, …).
        max_source_length, max_target_length: token budgets of prompt and answer, special tokens included.
        mode: ``"train"`` (padded prompt + answer records) or ``"eval"`` (prompt ids, answer ids, raw text).
        record_format: ``"glm"`` (this project's compact records) or ``"mindformers"`` (MindFormers'
            four training columns; train mode only). See ``glm_data.records``.
        num_splits: number of MindRecord files to spread the records over.
        prefix: text put before every prompt.
        prompt_column, response_column: the JSON keys of prompt and answer.
        history_column: the JSON key of earlier rounds ``[[query, response], …]``, if any: the prompt
            then follows ChatGLM-6B's chat format (see ``glm_tokenizer.chat_prompt``). A line without it, or with
            null or ``[]``, has no earlier round.
        overwrite: replace an existing output instead of refusing: every file of it goes, whatever
            its number of splits (see ``glm_data.writer.existing_output``), once the new one is complete.
        workers: processes tokenizing in parallel, this one included; the output is the same for any
            number. The others are spawned, so a script calling this with ``workers > 1`` needs
            ``if __name__ == "__main__":``.
        strict: stop at the first malformed line instead of skipping it.
        progress: show a progress bar on stderr.

    Returns:
        A ``ConversionSummary``.

    Raises:
        DataError: invalid settings, a missing or unreadable input or vocab file, an output that would
            replace one of them, an existing output without ``overwrite``, non-UTF-8 input, a bad line
            under ``strict``, no example left to write, or an output MindSpore cannot write (a full
            disk). Nothing is left at the output path when it is raised, nor when the run is
            interrupted, and an earlier output stays as it was.
    """
    input_file, vocab_file, output_file = Path(input_file), Path(vocab_file), Path(output_file)
    _check_settings(mode, record_format, max_source_length, max_target_length, workers)
    if not input_file.exists():
        raise DataError(f"input file not found: {input_file}")
    if input_file.is_dir():
        raise DataError(f"input file {input_file} is a directory: give the JSON-lines file in it")
    load_tokenizer(vocab_file)  # fails here, with a clear message, rather than in every worker
    layout = records.MINDFORMERS if record_format == "mindformers" else mode
    seq_length = max_source_length + max_target_length
    schema = records.schema(layout, seq_length)
    if record_bytes(schema, seq_length) > PAGE_SIZE:
        raise DataError(
            f"a {layout} record of {seq_length} tokens (max_source_length + max_target_length) takes up to "
            f"{record_bytes(schema, seq_length) / 2**20:.0f} MB, more than a MindRecord page "
            f"({PAGE_SIZE >> 20} MB): use shorter lengths"
        )
    output = MindRecordOutput(output_file, num_splits, schema, overwrite)
    for source in (input_file, vocab_file):
        if any(_same_file(source, path) for path in output.files):
            raise DataError(f"output {output_file} would replace {source}, an input of this run: choose another one")
    summary = ConversionSummary([str(path) for path in output.data_files], mode)
    settings = _EncoderSettings(
        str(vocab_file), layout, max_source_length, max_target_length, prompt_column, response_column,
        history_column, prefix,
    )

    start = time.perf_counter()
    total_lines = _count_lines(input_file) if progress and input_file.is_file() else None
    # Imported here: a worker imports this module, and tqdm's import (40 ms) would delay its first chunk.
    from tqdm import tqdm

    # The workers start first: they boot while this process imports MindSpore to open the output.
    with _LineEncoders(settings, workers) as encoders, output, tqdm(
        total=total_lines, unit="ex", desc="adgen", disable=not progress
    ) as bar:
        summary.startup_seconds = time.perf_counter() - start
        for chunk in encoders.encode(input_file):
            for line_number, skipped in chunk.skipped:
                _note_skipped(summary, input_file, line_number, skipped, strict)
            summary.add(chunk)
            bar.update(chunk.lines)
            output.write(chunk.records())
        if summary.written == 0:
            skipped = ", ".join(f"{reason}: {count}" for reason, count in sorted(summary.skipped.items()))
            raise DataError(f"no example to write from {input_file}: {summary.lines} lines, skipped {skipped or '-'}")
        output.commit()
    summary.seconds = time.perf_counter() - start - summary.startup_seconds
    return summary


def _check_settings(mode, record_format, max_source_length, max_target_length, workers):
    if mode not in MODES:
        raise DataError(f"unknown mode {mode!r}: choose one of {', '.join(MODES)}")
    if record_format not in FORMATS:
        raise DataError(f"unknown format {record_format!r}: choose one of {', '.join(FORMATS)}")
    if record_format == "mindformers" and mode != "train":
        raise DataError("the mindformers format holds training records only: use --format glm with --mode eval")
    for name, value in (("max_source_length", max_source_length), ("max_target_length", max_target_length)):
        # Three tokens at least: [gMASK] <sop> (and <eop>) take two of them, text needs one.
        if not 3 <= value <= MAX_LENGTH:
            raise DataError(
                f"{name} must be between 3 (two special tokens and one of text) and {MAX_LENGTH}, got {value}"
            )
    if not 1 <= workers <= MAX_WORKERS:
        raise DataError(f"workers must be between 1 and {MAX_WORKERS} (4 per CPU core), got {workers}")


def load_tokenizer(vocab_file: Union[str, Path]) -> ChatGLMTokenizer:
    """The ChatGLM tokenizer of ``vocab_file`` (an ice_text.model); DataError if missing or unreadable."""
    vocab_file = Path(vocab_file)
    if not vocab_file.is_file():
        raise DataError(f"vocab file not found: {vocab_file} (the model's ice_text.model)")
    try:
        return ChatGLMTokenizer(str(vocab_file))
    except (OSError, ValueError) as error:
        raise DataError(f"cannot load vocab file {vocab_file} as a SentencePiece model: {error}") from error


def _note_skipped(summary, input_file, line_number, skipped, strict):
    if skipped.reason == NOT_UTF8:
        raise DataError(f"{input_file}, line {line_number}: {skipped.detail}; convert the file to UTF-8")
    if strict and skipped.reason in BAD_INPUT:
        raise DataError(f"{input_file}, line {line_number}: {skipped.detail} (stopped by --strict)")
    summary.skipped[skipped.reason] += 1
    if skipped.reason in BAD_INPUT and len(summary.problems) < PROBLEMS_SHOWN:
        summary.problems.append(f"line {line_number}: {skipped.detail}")


def _count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b""))
    except OSError as error:
        raise DataError(f"cannot read input file {path}: {error.strerror}") from error


def _same_file(path: Path, other: Path) -> bool:
    try:
        return os.path.samefile(path, other)
    except OSError:  # one of them does not exist
        return False


# --- reading and tokenizing, in this process or in workers ------------------------------------------


@dataclass(frozen=True)
class _EncoderSettings:
    vocab_file: str
    layout: str  # records.TRAIN, EVAL or MINDFORMERS
    max_source_length: int
    max_target_length: int
    prompt_column: str
    response_column: str
    history_column: Optional[str]
    prefix: str


@dataclass(frozen=True)
class _Skipped:
    reason: str
    detail: str


@dataclass
class _EncodedChunk:
    """Consecutive input lines, encoded: records to write, lines skipped, and the counts the summary needs."""

    lines: int = 0
    # The records to write, in input order: a list of them, or for a fixed-length layout a dict of
    # columns [records, …] (sent between processes, one array a column pickles 20 times faster).
    batch: Union[list, dict] = field(default_factory=list)
    skipped: list = field(default_factory=list)  # (line number, _Skipped), in input order
    longest_prompt: int = 0  # tokens before truncation
    longest_answer: int = 0
    prompts_truncated: int = 0
    answers_truncated: int = 0

    def records(self) -> list:
        """The chunk's records, each a dict of column -> value."""
        if isinstance(self.batch, list):
            return self.batch
        columns = self.batch.items()
        return [{name: column[index] for name, column in columns} for index in range(len(self))]

    def __len__(self) -> int:
        """The number of records."""
        if isinstance(self.batch, list):
            return len(self.batch)
        return len(next(iter(self.batch.values())))


class _Example(NamedTuple):  # a tuple: one is made per line
    prompt: str  # what is tokenized: prefix, earlier rounds and query
    query: str
    answer: str


class _LineEncoder:
    """Reads and checks input lines, tokenizes them, and encodes their records as MindRecord rows."""

    def __init__(self, settings: _EncoderSettings):
        self.settings = settings
        self.tokenizer = ChatGLMTokenizer(settings.vocab_file)
        # As records.train_records and eval_record cut them.
        self.prompt_room = settings.max_source_length - (2 if settings.layout == records.EVAL else 1)
        self.answer_room = settings.max_target_length - 2

    def encode_chunk(self, first_line_number: int, block: bytes) -> _EncodedChunk:
        """Encode ``block``, whole input lines of which the first is line ``first_line_number``."""
        chunk = _EncodedChunk()
        examples = []
        for line_number, raw in enumerate(io.BytesIO(block), start=first_line_number):
            chunk.lines += 1
            outcome = self.read_line(line_number, raw)
            if isinstance(outcome, _Skipped):
                chunk.skipped.append((line_number, outcome))
            elif outcome is not None:
                examples.append(outcome)
        if not examples:
            return chunk
        encode = self.tokenizer.encode
        prompt_ids = [encode(example.prompt, add_special_tokens=False) for example in examples]
        answer_ids = [encode(example.answer, add_special_tokens=False) for example in examples]
        prompt_lengths, answer_lengths = list(map(len, prompt_ids)), list(map(len, answer_ids))
        chunk.longest_prompt, chunk.longest_answer = max(prompt_lengths), max(answer_lengths)
        chunk.prompts_truncated = sum(length > self.prompt_room for length in prompt_lengths)
        chunk.answers_truncated = sum(length > self.answer_room for length in answer_lengths)
        chunk.batch = self.build_records(examples, prompt_ids, answer_ids)
        return chunk

    def build_records(self, examples: list, prompt_ids: list, answer_ids: list) -> Union[list, dict]:
        """The records of tokenized examples, as ``_EncodedChunk.batch`` holds them."""
        s, tokenizer = self.settings, self.tokenizer
        lengths = (s.max_source_length, s.max_target_length)
        if s.layout == records.EVAL:  # variable lengths: record by record
            return [
                records.eval_record(tokenizer, prompt, answer, *lengths, example.query, example.answer)
                for example, prompt, answer in zip(examples, prompt_ids, answer_ids)
            ]
        batch = records.train_records(tokenizer, prompt_ids, answer_ids, *lengths)
        if s.layout == records.MINDFORMERS:
            batch = records.mindformers_record(batch, tokenizer)
        return batch

    def read_line(self, line_number: int, raw: bytes):
        """The ``_Example`` on line ``line_number``, ``_Skipped``, or None for a blank line."""
        s = self.settings
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            return _Skipped(NOT_UTF8, f"not UTF-8: byte {raw[error.start]:#04x} at byte {error.start + 1}")
        if line_number == 1:
            text = text.lstrip("\ufeff")  # a byte-order mark some editors write
        if not text.strip():
            return None
        try:
            example = json.loads(text)
        except json.JSONDecodeError as error:
            return _Skipped(MALFORMED_JSON, f"malformed JSON: {error.msg} at column {error.colno}")
        if not isinstance(example, dict):
            return _Skipped(MALFORMED_JSON, f"expected a JSON object, got {type(example).__name__}")
        for column in (s.prompt_column, s.response_column):
            if column not in example:
                return _Skipped(MISSING_COLUMN, f"missing column {column!r} (the line has {sorted(example)})")
        for column in (s.prompt_column, s.response_column):
            if example[column] is not None and not isinstance(example[column], str):
                found = type(example[column]).__name__
                return _Skipped(INVALID_VALUE, f"column {column!r} must be a string, not {found}")
        history = example.get(s.history_column) if s.history_column else None  # absent: a first round
        if not _is_history(history):
            return _Skipped(INVALID_VALUE, f"column {s.history_column!r} must be a list of [query, response] pairs")
        query, answer = example[s.prompt_column], example[s.response_column]
        if "\\u" in text:  # only a JSON escape can make a lone surrogate, which no tokenizer can encode
            for column, value in ((s.prompt_column, query), (s.response_column, answer), (s.history_column, history)):
                surrogate = _lone_surrogate(value)
                if surrogate:
                    return _Skipped(INVALID_VALUE, f"column {column!r} holds a lone surrogate {surrogate}, not Unicode")
        if not query:
            return _Skipped(EMPTY_PROMPT, f"empty {s.prompt_column!r}")
        if not answer:
            return _Skipped(EMPTY_ANSWER, f"empty {s.response_column!r}")
        return _Example(s.prefix + chat_prompt(query, history), query, answer)


def _lone_surrogate(value) -> str:
    """The first lone surrogate in a string or a history (as ``\\udXXX``), or ``""``."""
    texts = [value] if isinstance(value, str) else [text for turn in value or () for text in turn]
    for text in texts:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as error:
            return f"\\u{ord(text[error.start]):04x}"
    return ""


def _is_history(history) -> bool:
    if history is None:
        return True
    return isinstance(history, list) and all(
        isinstance(turn, list) and len(turn) == 2 and all(isinstance(text, str) for text in turn) for turn in history
    )


class _LineEncoders:
    """Encodes the lines of a file in order, in this process and ``workers - 1`` worker processes.

    This process sends blocks of lines to the workers and yields what comes back, in order; rather
    than wait for a worker, it encodes the next block itself (so ``workers=1`` is this process alone).

    Each worker has a pipe of its own, whose far end only the worker holds: a worker that dies (killed,
    out of memory) reads here as the end of its pipe, never as a wait. (A concurrent.futures pool keeps
    both ends of its pipes here, and waits forever for the rest of a reply a killed worker had begun.)
    """

    def __init__(self, settings: _EncoderSettings, workers: int):
        self.settings = settings
        self.workers = workers
        self.processes = []
        self.connections = []  # this process's end of each worker's pipe
        self.running = []  # whether each worker has said it is ready
        self.pending = Counter()  # blocks sent to each worker whose chunk has not been read yet

    def __enter__(self):
        # spawn, not fork: this process may hold MindSpore's threads, which a forked child inherits mid-state.
        context = multiprocessing.get_context("spawn")
        for _ in range(self.workers - 1):  # started now, to boot while this process opens the output
            connection, worker_end = context.Pipe()
            process = context.Process(target=_work, args=(worker_end, self.settings, os.getpid()), daemon=True)
            process.start()
            worker_end.close()
            self.processes.append(process)
            self.connections.append(connection)
            self.running.append(False)
        return self

    def encode(self, input_file: Path) -> Iterator[_EncodedChunk]:
        """Yield the lines of ``input_file`` encoded, chunk by chunk, in order.

        Raises DataError if a worker process dies.
        """
        encoder = _LineEncoder(self.settings)
        # In input order: chunks encoded here, and the connections of workers encoding one. A bounded
        # window of them, so that the input is read as fast as it is encoded, not at once.
        in_flight = deque()
        try:
            with open(input_file, "rb") as f:
                for first_line_number, block in _blocks(f, BYTES_PER_CHUNK):
                    while in_flight and (len(in_flight) == CHUNKS_IN_FLIGHT * self.workers or _back(in_flight[0])):
                        yield self._take(in_flight.popleft())
                    worker = self._free_worker()
                    if worker is None:
                        in_flight.append(encoder.encode_chunk(first_line_number, block))
                    else:
                        self.connections[worker].send((first_line_number, block))
                        self.pending[worker] += 1
                        in_flight.append(self.connections[worker])
            while in_flight:
                yield self._take(in_flight.popleft())
        except (EOFError, ConnectionError) as error:  # the end of a worker's pipe
            raise DataError(f"a worker process died while encoding {input_file} (killed, or out of memory?)") from error
        except OSError as error:
            raise DataError(f"cannot read input file {input_file}: {error.strerror}") from error

    def started(self, timeout: float = 0) -> bool:
        """Whether every worker is running, waiting up to ``timeout`` seconds for each."""
        for worker, connection in enumerate(self.connections):
            if not self.running[worker] and connection.poll(timeout):
                self.running[worker] = connection.recv() == _READY
        return all(self.running)

    def _free_worker(self) -> Optional[int]:
        """The running worker with the fewest blocks in hand, if it has room for one more."""
        self.started()
        ready = [worker for worker, running in enumerate(self.running) if running]
        worker = min(ready, key=self.pending.__getitem__, default=None)
        return worker if worker is not None and self.pending[worker] < CHUNKS_IN_FLIGHT else None

    def _take(self, chunk) -> _EncodedChunk:
        """``chunk`` if encoded here, else the chunk read from that connection."""
        if isinstance(chunk, _EncodedChunk):
            return chunk
        reply = chunk.recv()
        self.pending[self.connections.index(chunk)] -= 1
        if isinstance(reply, Exception):  # raised in the worker
            raise reply
        return reply

    def __exit__(self, exc_type, *exc_info):
        for connection, process in zip(self.connections, self.processes):
            if exc_type is None:
                with suppress(ConnectionError):
                    connection.send(None)  # no more work
            else:  # an error or an interruption: its work is of no use
                process.terminate()
            process.join(WORKER_EXIT_SECONDS)
            if process.is_alive():
                process.kill()
                process.join()
            connection.close()


def _back(chunk) -> bool:
    """Whether ``chunk`` (see ``_LineEncoders.encode``) is encoded, or can be read without waiting."""
    return isinstance(chunk, _EncodedChunk) or chunk.poll()


def _blocks(f, size: int) -> Iterator[tuple]:
    """``(first line number, block)``: the lines of binary file ``f`` in blocks of about ``size`` bytes."""
    line_number = 1
    while block := f.read(size) + f.readline():
        yield line_number, block
        line_number += block.count(b"\n")


_READY = "ready"


def _work(connection, settings: _EncoderSettings, parent_pid: int) -> None:
    """A worker process: encode the blocks that come through ``connection``, until None, and send back their chunks."""
    # Ctrl-C reaches the whole process group: the parent handles it and stops the workers, which
    # would otherwise each print a KeyboardInterrupt traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(parent_pid,), daemon=True).start()
    encoder = _LineEncoder(settings)
    # Threads read the blocks and send the chunks: encoding never waits for the parent to read a chunk
    # (larger than a pipe holds), nor the parent to send a block while this process waits for it.
    blocks, chunks = queue.SimpleQueue(), queue.SimpleQueue()
    threading.Thread(target=_receive_blocks, args=(connection, blocks), daemon=True).start()
    sender = threading.Thread(target=_send_chunks, args=(connection, chunks))
    sender.start()
    chunks.put(_READY)
    while (block := blocks.get()) is not None:
        try:
            chunks.put(encoder.encode_chunk(*block))
        except Exception as error:  # for the parent to raise
            chunks.put(error)
    chunks.put(None)
    sender.join()


def _receive_blocks(connection, blocks: queue.SimpleQueue) -> None:
    while True:
        try:
            block = connection.recv()
        except EOFError:  # the parent is gone
            block = None
        blocks.put(block)
        if block is None:
            return


def _send_chunks(connection, chunks: queue.SimpleQueue) -> None:
    with suppress(ConnectionError):  # the parent is gone
        while (chunk := chunks.get()) is not None:
            connection.send(chunk)


def _exit_with_parent(parent_pid: int) -> None:
    # A parent killed outright cannot stop its workers, and they would wait for work forever.
    while os.getppid() == parent_pid:
        time.sleep(0.5)
    os._exit(1)
