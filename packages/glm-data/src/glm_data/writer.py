"""Writing MindRecord files: whole or not at all, and without MindSpore's per-record Python overhead.

``FileWriter.write_raw_data`` spends about 40 µs a record in Python (it fetches its schema from C++
several times per record and re-checks every array), more than tokenizing the record. So the rows
are encoded by ``encode_rows``, a batch at a time -- byte for byte what FileWriter builds, checked
against MindSpore's own code in ``tests/glm_data/test_data_writer.py`` -- in the tokenizing processes,
and ``MindRecordOutput`` hands finished rows to the C++ writer that FileWriter itself calls. These are
MindSpore 2.10 internals, hence the ``mindspore<2.11`` pin.

Committing, MindSpore builds each file's ``.db`` index (SQLite: where each record lies in the file's
pages) at about 10 µs a record, as long as writing the records. For files without index fields, which
is every layout but ``eval``, ``write_index`` builds the same tables from the file's header and page
sizes in a fraction of that (checked against MindSpore's in ``tests/glm_data/test_data_writer.py``).

This module imports MindSpore only inside ``MindRecordOutput``: workers use ``encode_rows`` alone.
"""

import json
import mmap
import os
import shutil
import sqlite3
import stat
import struct
import tempfile
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Optional

import numpy as np

from glm_data.errors import DataError

MAX_SPLITS = 1000  # MindRecord's limit on files per dataset
# Rows handed to MindSpore's writer at once (about 2,000 training records). Each call starts a few
# threads, and on a busy machine each start waits for a core: 350 rows a call took twice as long.
# Not many more either: a call holds this process (GIL included), and the workers' chunks wait meanwhile.
BYTES_PER_WRITE = 1 << 21
_SIZE = struct.Struct("=Q")  # MindRecord's sizes: 8 bytes, native byte order

# MindSpore's ShardIndexGenerator's tables for a file without index fields, in its words.
_CREATE_INDEXES = (
    "CREATE TABLE INDEXES("
    "  ROW_ID               INT  NOT NULL, PAGE_ID_RAW          INT  NOT NULL"
    ", PAGE_OFFSET_RAW      INT  NOT NULL, PAGE_OFFSET_RAW_END  INT  NOT NULL"
    ", ROW_GROUP_ID         INT  NOT NULL, PAGE_ID_BLOB         INT  NOT NULL"
    ", PAGE_OFFSET_BLOB     INT  NOT NULL, PAGE_OFFSET_BLOB_END INT  NOT NULL"
    ", PRIMARY KEY(ROW_ID));"
)
_INSERT_INDEXES = (
    "INSERT INTO INDEXES (ROW_ID,PAGE_ID_RAW,PAGE_OFFSET_RAW,PAGE_OFFSET_RAW_END,ROW_GROUP_ID,"
    "PAGE_ID_BLOB,PAGE_OFFSET_BLOB,PAGE_OFFSET_BLOB_END) VALUES (?,?,?,?,?,?,?,?)"
)
_CREATE_SHARD_NAME = "CREATE TABLE SHARD_NAME(NAME TEXT NOT NULL);"


def encode_rows(columns: dict, blob_fields: tuple) -> list:
    """The MindRecord blobs of a batch of records: ``columns`` maps each of ``blob_fields`` to an array
    ``[batch, …]`` of the schema's dtype; row ``i`` of the result holds row ``i`` of each.

    A blob joins the arrays in ``blob_fields`` order (the file's), each preceded by its byte length
    as 8 big-endian bytes when there is more than one.
    """
    parts = []
    for name in blob_fields:
        array = np.ascontiguousarray(columns[name])
        if not len(array):
            return []
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
        self._blobs, self._fields = [], []  # rows not handed to MindSpore yet
        self._buffered_bytes = 0

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
        self._blobs += blobs
        self._fields += fields or []
        self._buffered_bytes += sum(map(len, blobs))
        if self._buffered_bytes >= BYTES_PER_WRITE:
            self._hand_over()

    def _hand_over(self) -> None:
        from mindspore.mindrecord import SUCCESS

        if not self._blobs:
            return
        raw_data = {0: self._fields} if self._fields else {}
        # MindSpore checks the string columns against the schema; rows without any (all blob) would
        # only be copied to find nothing to check, a tenth of the write's time.
        validate = bool(self._fields)
        status = self._file_writer._writer._writer.write_raw_data(raw_data, self._blobs, validate, False)
        if status != SUCCESS:
            raise RuntimeError(f"MindRecord failed to write {len(self._blobs)} records to {self._directory}")
        self._blobs, self._fields = [], []
        self._buffered_bytes = 0

    def commit(self) -> None:
        """Finish the files (data and index) and move them to their final names."""
        from mindspore.mindrecord.config import _get_enc_key

        self._hand_over()
        if len(self.blob_fields) < len(self.schema) or _get_enc_key() is not None:
            # MindSpore's commit: it makes string columns index fields, which the index holds the values
            # of, and it encrypts the files when given a key.
            self._file_writer.commit()
        else:
            self._file_writer._writer.commit()  # the data files' headers
            for path in self.data_files:
                write_index(self._directory / path.name)
                for written in (path, _index_file(path)):  # as FileWriter.commit leaves them
                    os.chmod(self._directory / written.name, stat.S_IRUSR | stat.S_IWUSR)
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


def write_index(data_file: Path) -> None:
    """Write the ``.db`` index beside ``data_file``, a committed MindRecord file without index fields, as
    MindSpore's ``ShardIndexGenerator`` does: a row per record, with the pages and offsets of its raw
    data and its blob, and the file's name."""
    with open(data_file, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        (header_length,) = _SIZE.unpack_from(data, 0)
        header = json.loads(data[_SIZE.size : _SIZE.size + header_length])
        if header["index_fields"]:
            raise ValueError(f"{data_file} has index fields {header['index_fields']}: its index holds their values")
        rows = list(_index_rows(header, data))
    with closing(sqlite3.connect(_index_file(data_file))) as db:
        db.execute(_CREATE_INDEXES)
        db.execute(_CREATE_SHARD_NAME)
        db.execute("INSERT INTO SHARD_NAME (NAME) VALUES (?)", (header["shard_addresses"][header["shard_id"]],))
        db.executemany(_INSERT_INDEXES, rows)
        db.commit()


def _index_rows(header: dict, data) -> Iterator[tuple]:
    """The ``INDEXES`` rows of a MindRecord file: its ``header`` and its bytes, ``data``."""
    pages = sorted(header["page"], key=lambda page: page["page_id"])
    blob_pages = {page["page_type_id"]: page for page in pages if page["page_type"] == "BLOB_DATA"}
    # A record's raw data: its size for each schema, then the data; its blob: its size, then the blob.
    raw_sizes = struct.Struct(f"={len(header['schema'])}Q")
    blob_size = _SIZE

    def page_start(page):
        return header["header_size"] + header["page_size"] * page["page_id"]

    for raw_page in (page for page in pages if page["page_type"] == "RAW_DATA"):
        # A row group: records whose raw data follow each other from an offset in this raw page, and
        # whose blobs fill the blob page of the group's id from its start.
        for group in raw_page["row_group_ids"]:
            blob_page = blob_pages[group["id"]]
            raw_start, blob_start = page_start(raw_page), page_start(blob_page)
            raw_offset, blob_offset = group["offset"], 0
            for row_id in range(blob_page["start_row_id"], blob_page["end_row_id"]):
                raw_end = raw_offset + raw_sizes.size + sum(raw_sizes.unpack_from(data, raw_start + raw_offset))
                blob_end = blob_offset + blob_size.size + blob_size.unpack_from(data, blob_start + blob_offset)[0]
                yield (row_id, raw_page["page_id"], raw_offset, raw_end, group["id"],
                       blob_page["page_id"], blob_offset, blob_end)
                raw_offset, blob_offset = raw_end, blob_end


def _index_file(data_file: Path) -> Path:
    return data_file.with_name(data_file.name + ".db")
