"""Writing MindRecord files: whole or not at all, and without MindSpore's per-record Python overhead.

``FileWriter.write_raw_data`` spends about 40 µs a record in Python (it fetches its schema from C++
several times per record and re-checks every array), more than tokenizing the record. So each row is
encoded by ``encode_row`` -- byte for byte what FileWriter builds, checked against MindSpore's own
code in ``tests/glm_data/test_data_writer.py`` -- in the tokenizing workers, and ``MindRecordOutput`` hands
finished rows to the C++ writer that FileWriter itself calls. These are MindSpore 2.10 internals,
hence the ``mindspore<2.11`` pin.

This module imports MindSpore only inside ``MindRecordOutput``: workers use ``encode_row`` alone.
"""

import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np

from glm_data.errors import DataError

MAX_SPLITS = 1000  # MindRecord's limit on files per dataset


def encode_rows(columns: dict, blob_fields: tuple) -> list:
    """The MindRecord blobs of a batch of records: ``columns`` maps each of ``blob_fields`` to an array
    ``[batch, …]`` of the schema's dtype; row ``i`` of the result holds row ``i`` of each.

    A blob joins the arrays in ``blob_fields`` order (the file's), each preceded by its byte length
    as 8 big-endian bytes when there is more than one.
    """
    parts = []
    for name in blob_fields:
        array = np.ascontiguousarray(columns[name])
        array = array.reshape(len(array), -1).view(np.uint8)
        if len(blob_fields) > 1:
            length = np.frombuffer(array.shape[1].to_bytes(8, "big"), np.uint8)
            parts.append(np.broadcast_to(length, (len(array), len(length))))
        parts.append(array)
    rows = np.concatenate(parts, axis=1)
    data, width = rows.tobytes(), rows.shape[1]
    return [data[start : start + width] for start in range(0, len(data), width)]


def encode_row(record: dict, blob_fields: tuple) -> tuple:
    """``record`` as a MindRecord row: ``(blob, fields)``, ``blob`` as ``encode_rows`` builds it and
    ``fields`` the other (string) columns, or None."""
    [blob] = encode_rows({name: np.asarray(record[name])[np.newaxis] for name in blob_fields}, blob_fields)
    fields = {name: value for name, value in record.items() if name not in blob_fields}
    return blob, fields or None


def output_files(output_file: Path, num_splits: int) -> list:
    """The data files MindRecord writes for ``output_file`` split ``num_splits`` ways (each has a ``.db`` index)."""
    if num_splits == 1:
        return [output_file]
    width = len(str(num_splits - 1))
    return [output_file.with_name(f"{output_file.name}{index:0{width}d}") for index in range(num_splits)]


class MindRecordOutput:
    """A MindRecord dataset written in a hidden directory beside ``output_file``, moved into place by ``commit``.

    Use as a context manager: leaving it without a commit (an error, Ctrl-C, SIGTERM) removes everything
    written, so a reader never sees a partial file under the final name. ``blob_fields`` is the column
    order ``encode_row`` needs.

    Raises DataError on construction if the output exists and ``overwrite`` is false.
    """

    def __init__(self, output_file: Path, num_splits: int, schema: dict, overwrite: bool):
        if not 1 <= num_splits <= MAX_SPLITS:
            raise DataError(f"num_splits must be between 1 and {MAX_SPLITS}, got {num_splits}")
        self.output_file = Path(output_file)
        self.num_splits = num_splits
        self.schema = schema
        self.data_files = output_files(self.output_file, num_splits)
        # MindRecord keeps arrays in one blob per row, ordered by name; strings are separate fields.
        self.blob_fields = tuple(sorted(name for name, spec in schema.items() if "shape" in spec))
        existing = [path for path in self.data_files if path.exists() or _index_file(path).exists()]
        if existing and not overwrite:
            raise DataError(f"output already exists: {existing[0]} (pass --overwrite to replace it)")
        self._directory: Optional[Path] = None
        self._file_writer = None

    def __enter__(self):
        # Imported before anything is created: an import interrupted midway leaves nothing to remove.
        from mindspore.mindrecord import FileWriter

        self.output_file.parent.mkdir(parents=True, exist_ok=True)
        self._directory = Path(tempfile.mkdtemp(prefix=f".{self.output_file.name}.", dir=self.output_file.parent))
        try:
            self._open_writer(FileWriter)
        except BaseException:
            shutil.rmtree(self._directory, ignore_errors=True)
            raise
        return self

    def _open_writer(self, file_writer_class) -> None:
        self._file_writer = file_writer_class(str(self._directory / self.output_file.name), shard_num=self.num_splits)
        self._file_writer.add_schema(self.schema, "glm-data")
        # What FileWriter.write_raw_data does before its first write.
        shard_writer = self._file_writer._writer
        shard_writer.open(self._file_writer._paths, False)
        shard_writer.set_shard_header(self._file_writer._header)
        if tuple(self._file_writer._header.blob_fields) != self.blob_fields:
            raise RuntimeError(
                f"MindSpore orders the blob fields {self._file_writer._header.blob_fields}, not {self.blob_fields}:"
                " its row layout changed, and glm_data.writer.encode_row must follow it"
            )

    def write(self, blobs: list, fields: Optional[list] = None) -> None:
        """Append rows, in order: their blobs (``encode_rows``, ``encode_row``) and, for a schema with
        string columns, their fields."""
        from mindspore.mindrecord import SUCCESS

        if not blobs:
            return
        status = self._file_writer._writer._writer.write_raw_data({0: fields} if fields else {}, blobs, True, False)
        if status != SUCCESS:
            raise RuntimeError(f"MindRecord failed to write {len(blobs)} records to {self._directory}")

    def commit(self) -> None:
        """Finish the files (data and index) and move them to their final names."""
        self._file_writer.commit()
        # Index files first and the first data file last: the name a reader opens appears last.
        moved = []
        try:
            for path in [_index_file(path) for path in self.data_files] + self.data_files[::-1]:
                os.replace(self._directory / path.name, path)
                moved.append(path)
        except BaseException:  # interrupted between two moves: no half dataset either
            for path in moved:
                path.unlink(missing_ok=True)
            raise

    def __exit__(self, *exc_info):
        shutil.rmtree(self._directory, ignore_errors=True)


def _index_file(data_file: Path) -> Path:
    return data_file.with_name(data_file.name + ".db")
