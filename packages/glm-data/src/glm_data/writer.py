"""Writing a MindRecord dataset whole or not at all, through MindSpore's public ``FileWriter``.

``MindRecordOutput`` hands the records to ``mindspore.mindrecord.FileWriter`` (``add_schema``,
``write_raw_data`` in batches, ``commit``) writing in a hidden directory beside the output, then
moves the files into place. An output is a set of files under one name: ``NAME`` (one file) or
``NAME0`` … ``NAME{N-1}`` (``num_splits`` files), each with its ``.db`` index. A new set replaces
the whole of an earlier one, whatever its number of files, so that an old file never reads as part
of the new dataset.

MindSpore is imported only when the output is opened: worker processes that import this module
never pay for it.
"""

import os
import re
import shutil
import signal
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import numpy as np

from glm_data.errors import DataError

MAX_SPLITS = 1000  # MindRecord's limit on files per dataset
PAGE_SIZE = 1 << 25  # MindRecord's default page (FileWriter.set_page_size): a record must fit in one
SCHEMA_DESCRIPTION = "glm-data"  # the "desc" of the files' schema
# Bytes of records handed to FileWriter.write_raw_data at once. Each call starts threads in MindSpore's
# C++ writer; a few thousand training records a call make that negligible.
BYTES_PER_WRITE = 1 << 21
SPLIT_SUFFIX_DIGITS = len(str(MAX_SPLITS - 1))  # NAME0 … NAME999: the longest split suffix


def output_files(output_file: Path, num_splits: int) -> list:
    """The data files MindRecord writes for ``output_file`` split ``num_splits`` ways (each has a ``.db`` index)."""
    if num_splits == 1:
        return [output_file]
    width = len(str(num_splits - 1))
    return [output_file.with_name(f"{output_file.name}{index:0{width}d}") for index in range(num_splits)]


def existing_output(output_file: Path) -> list:
    """The files of any MindRecord output already written under ``output_file``'s name, sorted: the
    name itself, the name followed by a split number (1 to 3 digits), and their ``.db`` indexes.

    Raises DataError if the folder cannot be listed."""
    directory = output_file.parent
    if not directory.is_dir():
        return []
    pattern = re.compile(rf"{re.escape(output_file.name)}(\d{{1,{SPLIT_SUFFIX_DIGITS}}})?(\.db)?")
    try:
        return sorted(path for path in directory.iterdir() if pattern.fullmatch(path.name))
    except OSError as error:
        raise DataError(f"cannot list the output folder {directory}: {error.strerror}") from error


def index_file(data_file: Path) -> Path:
    """The ``.db`` index MindRecord writes beside ``data_file``."""
    return data_file.with_name(data_file.name + ".db")


def record_bytes(schema: dict, seq_length: int) -> int:
    """The most bytes a record of ``schema`` holds uncompressed, a variable dimension counting
    ``seq_length`` values; strings are not counted."""
    sizes = [np.prod([seq_length if size == -1 else size for size in spec["shape"]]) * np.dtype(spec["type"]).itemsize
             for spec in schema.values() if "shape" in spec]
    return int(sum(sizes))


class MindRecordOutput:
    """A MindRecord dataset written by ``FileWriter`` in a hidden directory beside ``output_file``, moved
    into place by ``commit``.

    Use as a context manager: leaving it without a commit (an error, Ctrl-C, SIGTERM) removes everything
    written, so a reader never sees a partial file under the final name, and an earlier output stays
    as it was. ``schema`` is FileWriter's; ``write`` takes records as FileWriter's ``write_raw_data``
    takes them. With MindSpore's encryption key set (``mindspore.mindrecord.set_enc_key``) FileWriter
    encrypts the files, which MindSpore allows for a single file only.

    Raises DataError on construction if ``num_splits`` is out of range, the output path is a
    directory, or an output exists under its name and ``overwrite`` is false.
    """

    def __init__(self, output_file: Path, num_splits: int, schema: dict, overwrite: bool):
        if not 1 <= num_splits <= MAX_SPLITS:
            raise DataError(f"num_splits must be between 1 and {MAX_SPLITS}, got {num_splits}")
        self.output_file = Path(output_file)
        if self.output_file.is_dir():
            raise DataError(f"output {self.output_file} is a directory: give a file name inside it")
        self.num_splits = num_splits
        self.schema = schema
        self.data_files = output_files(self.output_file, num_splits)
        existing = existing_output(self.output_file)
        if existing and not overwrite:
            raise DataError(f"output already exists: {existing[0]} (pass --overwrite to replace it)")
        self._directory: Optional[Path] = None
        self._file_writer = None
        self._pending, self._pending_bytes = [], 0  # records not handed to FileWriter yet

    @property
    def files(self) -> list:
        """Every file this output writes, replaces or removes: its data files, their indexes, and the
        files of an earlier output under the same name."""
        written = self.data_files + [index_file(path) for path in self.data_files]
        return sorted(set(written) | set(existing_output(self.output_file)))

    def __enter__(self):
        # Imported before anything is created: an import interrupted midway leaves nothing to remove.
        from mindspore.mindrecord import FileWriter

        try:
            self.output_file.parent.mkdir(parents=True, exist_ok=True)
            self._directory = Path(tempfile.mkdtemp(prefix=f".{self.output_file.name}.", dir=self.output_file.parent))
        except OSError as error:
            reason = f"{error.filename} is a file" if isinstance(error, FileExistsError) else error.strerror
            raise DataError(f"cannot write in {self.output_file.parent}: {reason}") from error
        try:
            with _mindspore_errors(f"cannot write {self.output_file}"):
                self._file_writer = FileWriter(str(self._directory / self.output_file.name), shard_num=self.num_splits)
                self._file_writer.add_schema(self.schema, SCHEMA_DESCRIPTION)
        except BaseException:
            self._close()
            raise
        return self

    def write(self, records: list) -> None:
        """Append ``records`` (dicts of column -> value, as the schema states), in order."""
        self._pending += records
        self._pending_bytes += sum(_size(record) for record in records)
        if self._pending_bytes >= BYTES_PER_WRITE:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            with _mindspore_errors(f"cannot write {self.output_file}"):
                self._file_writer.write_raw_data(self._pending)
        self._pending, self._pending_bytes = [], 0

    def commit(self) -> None:
        """Finish the files (data, index; encrypted if MindSpore has a key) and put them in place of
        any earlier output under the same name.

        The files are moved while SIGINT and SIGTERM wait: an interruption then cannot leave half of
        the new dataset, nor new files beside old ones. Raises DataError if MindSpore cannot finish
        them (a full disk, for one).
        """
        self._flush()
        with _mindspore_errors(f"cannot write {self.output_file}"):
            self._file_writer.commit()
        written = [index_file(path) for path in self.data_files] + self.data_files[::-1]
        with _signals_deferred():
            moved = []
            try:
                for stale in set(existing_output(self.output_file)) - set(written):
                    stale.unlink(missing_ok=True)
                # Index files first and the first data file last: the name a reader opens appears last.
                for path in written:
                    os.replace(self._directory / path.name, path)
                    moved.append(path)
            except OSError as error:  # no half dataset either
                for path in moved:
                    path.unlink(missing_ok=True)
                raise DataError(f"cannot move the output into place at {self.output_file}: {error}") from error

    def _close(self) -> None:
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)

    def __exit__(self, *exc_info):
        self._close()


def _size(record: dict) -> int:
    return sum(value.nbytes if isinstance(value, np.ndarray) else len(value) for value in record.values())


@contextmanager
def _mindspore_errors(what: str):
    """Turn MindSpore's errors into a one-line DataError starting with ``what``.

    MindSpore raises RuntimeError for what its C++ writer refuses (a full disk: "No free disk to be
    used …"), with a report over many lines whose "[ERROR]" line says what went wrong, and its own
    MindRecordException for settings it refuses (such as several files with an encryption key).
    """
    from mindspore.mindrecord import MindRecordException

    try:
        yield
    except (RuntimeError, MindRecordException) as error:
        raise DataError(f"{what}: {_reason(error)}") from error


def _reason(error: Exception) -> str:
    """The line of a MindSpore error message that says what went wrong."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in lines:
        if line.startswith("[ERROR]"):
            return line.removeprefix("[ERROR]").strip()
    return lines[0] if lines else type(error).__name__


@contextmanager
def _signals_deferred():
    """Hold SIGINT and SIGTERM back while the block runs, then deliver them to the handlers that were set.

    Only the main thread handles signals in Python; elsewhere the block simply runs.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    handlers = {signum: signal.signal(signum, lambda number, frame: received.append(number))
                for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)  # None: a handler set outside Python
        for signum in dict.fromkeys(received):
            signal.raise_signal(signum)
