"""Writing MindRecord files: whole or not at all, and without MindSpore's per-record overhead.

Records whose columns are all int32 arrays (the train and mindformers layouts) are written here, in
the file MindSpore 2.10's ``FileWriter`` writes for the same writes, byte for byte (tested against it
in ``tests/glm_data/test_data_writer.py``):

- ``pack_rows``, in the tokenizing processes, turns a batch of records into their blob-page rows with
  numpy: each column compressed as MindRecord compresses int32 arrays (a count, 2 bits per value
  giving its width, then each value in 1, 2 or 4 bytes), prefixed by its length, each row by its
  size. MindSpore's C++ writer does this a value at a time in the one process that writes: with its
  index, 0.9 s for 100,000 training records, which no number of tokenizing processes could share;
  here the packing takes 0.2 s spread over them, and this process 0.2 s for pages and index.
- ``MindRecordOutput`` lays the rows into pages as ``ShardWriter`` does: a blob page per row group
  (``page_size`` bytes at most), and raw pages holding MindSpore's placeholder row for each record,
  a group of them moved to a new raw page when the page overflows; a write is split over the
  ``num_splits`` files in runs of consecutive rows. At commit it writes each file's header (the
  page list, as JSON), and builds the ``.db`` index with ``write_index`` (MindSpore's
  ``ShardIndexGenerator`` tables, from the header and the pages).

Records with string columns (``eval``) go through MindSpore's writer: ``encode_rows`` builds the
blobs FileWriter builds (in Python it spends about 40 µs a record on them), and ``MindRecordOutput``
hands them to the C++ writer FileWriter calls, which makes the strings index fields and indexes
them by value. Either way, with MindSpore's encryption key set the files are encrypted at commit as
FileWriter encrypts them. These are MindSpore 2.10 internals, hence the ``mindspore<2.11`` pin.

This module imports MindSpore only inside ``MindRecordOutput``: workers use ``pack_rows`` and
``encode_rows`` alone.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from glm_data.errors import DataError

MAX_SPLITS = 1000  # MindRecord's limit on files per dataset
# MindSpore's defaults (FileWriter.set_header_size, set_page_size) and the bounds it accepts for a page.
HEADER_SIZE = 1 << 24
PAGE_SIZE = 1 << 25
PAGE_SIZE_RANGE = (1 << 15, 1 << 28)
MINDRECORD_VERSION = "3.0"  # what MindSpore 2.10 writes in a header
SCHEMA_DESCRIPTION = "glm-data"  # the "desc" of the files' schema
# Rows handed to MindSpore's writer at once (about 2,000 training records). Each call starts a few
# threads, and on a busy machine each start waits for a core: 350 rows a call took twice as long.
# Not many more either: a call holds this process (GIL included), and the workers' chunks wait meanwhile.
BYTES_PER_WRITE = 1 << 21
_SIZE = struct.Struct("=Q")  # MindRecord's sizes: 8 bytes, native byte order
# The raw data MindSpore stores for a record whose columns are all blobs: {"id": 0} in msgpack, after its size.
_PLACEHOLDER_ROW = _SIZE.pack(5) + b"\x81\xa2id\x00"
# Which bytes of a little-endian int32 MindRecord keeps for width code 0, 1, 2 (1, 2 or 4 bytes).
_KEPT_BYTES = np.array([0x00000001, 0x00000101, 0x01010101], "<u4")
_WIDTHS = np.array([1, 2, 4], np.int64)

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
    """The MindRecord blobs of a batch of records, as FileWriter hands them to its C++ writer:
    ``columns`` maps each of ``blob_fields`` to an array ``[batch, …]`` of the schema's dtype; row
    ``i`` of the result holds row ``i`` of each.

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


@dataclass(frozen=True)
class PackedRows:
    """A batch of records as ``pack_rows`` builds them, ready for a MindRecord blob page."""

    data: bytes  # the rows one after another: the blob's size (8 bytes), then the compressed blob
    sizes: np.ndarray  # the bytes of each row in ``data``, int64
    saved_bytes: int  # how much smaller than FileWriter's blobs (MindRecord's "compression_size")

    def __len__(self) -> int:
        return len(self.sizes)

    def __eq__(self, other) -> bool:
        if not isinstance(other, PackedRows):
            return NotImplemented
        same_sizes = np.array_equal(self.sizes, other.sizes)
        return same_sizes and (self.data, self.saved_bytes) == (other.data, other.saved_bytes)


def pack_rows(columns: dict, blob_fields: tuple) -> PackedRows:
    """The rows of a batch of records whose columns are all int32 arrays, as MindSpore's writer lays
    them in a blob page: ``columns`` maps each of ``blob_fields`` (the file's order) to an array
    ``[batch, …]``.

    MindRecord compresses each int32 column: the value count (4 bytes, big-endian), a bitmap of 2 bits
    per value (0, 1, 2: the value fits 1, 2 or 4 bytes, signed), then each value's low bytes,
    little-endian. With more than one column each is preceded by its compressed length (8 bytes,
    big-endian), and each row by the size of the whole (8 bytes, native order).
    """
    batch = len(columns[blob_fields[0]])
    if not batch:
        return PackedRows(b"", np.zeros(0, np.int64), 0)
    several = len(blob_fields) > 1
    pieces, kept = [], []  # [batch, n] byte arrays side by side, and which of their bytes a row keeps
    blob_sizes = np.zeros(batch, np.int64)
    uncompressed = 0
    for name in blob_fields:
        values = np.ascontiguousarray(columns[name], dtype="<i4").reshape(batch, -1)
        count = values.shape[1]
        codes = ((values < -128) | (values > 127)).view(np.uint8) + ((values < -32768) | (values > 32767))
        # Four codes a byte, the first in the top bits.
        padded = np.zeros((batch, -(-count // 4) * 4), np.uint8)
        padded[:, :count] = codes
        bitmap = (padded[:, 0::4] << 6) | (padded[:, 1::4] << 4) | (padded[:, 2::4] << 2) | padded[:, 3::4]
        kept_bytes = _KEPT_BYTES.take(codes).view(bool).reshape(batch, 4 * count)
        size = 4 + bitmap.shape[1] + _WIDTHS.take(codes).sum(axis=1)
        prefix = np.frombuffer(count.to_bytes(4, "big"), np.uint8)
        if several:
            length = size.astype(">u8").view(np.uint8).reshape(batch, 8)
            prefix = np.concatenate([length, np.broadcast_to(prefix, (batch, 4))], axis=1)
        else:
            prefix = np.broadcast_to(prefix, (batch, 4))
        pieces += [prefix, bitmap, values.view(np.uint8)]
        kept += [np.ones((batch, prefix.shape[1] + bitmap.shape[1]), bool), kept_bytes]
        blob_sizes += size + (8 if several else 0)
        uncompressed += batch * (4 * count + (8 if several else 0))
    pieces.insert(0, blob_sizes.astype("=u8").view(np.uint8).reshape(batch, 8))
    kept.insert(0, np.ones((batch, 8), bool))
    rows = np.compress(np.concatenate(kept, axis=1).ravel(), np.concatenate(pieces, axis=1).ravel())
    return PackedRows(rows.tobytes(), blob_sizes + 8, uncompressed - int(blob_sizes.sum()))


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
    order ``pack_rows`` and ``encode_row`` need; ``packs_rows`` says which of them ``write`` takes.
    ``page_size`` is MindRecord's page size (MindSpore's default; tests set small ones).

    Raises DataError on construction if the output exists and ``overwrite`` is false.
    """

    def __init__(self, output_file: Path, num_splits: int, schema: dict, overwrite: bool, page_size: int = PAGE_SIZE):
        if not 1 <= num_splits <= MAX_SPLITS:
            raise DataError(f"num_splits must be between 1 and {MAX_SPLITS}, got {num_splits}")
        if not (PAGE_SIZE_RANGE[0] <= page_size <= PAGE_SIZE_RANGE[1] and page_size % 4 == 0):
            raise ValueError(f"MindRecord pages are 32 KB to 256 MB, a multiple of 4 bytes: got {page_size}")
        self.output_file = Path(output_file)
        self.num_splits = num_splits
        self.schema = schema
        self.page_size = page_size
        self.data_files = output_files(self.output_file, num_splits)
        # MindRecord keeps arrays in one blob per row, ordered by name; strings are separate fields.
        self.blob_fields = tuple(sorted(name for name, spec in schema.items() if "shape" in spec))
        self.packs_rows = all("shape" in spec and spec["type"] == "int32" for spec in schema.values())
        existing = [path for path in self.data_files if path.exists() or _index_file(path).exists()]
        if existing and not overwrite:
            raise DataError(f"output already exists: {existing[0]} (pass --overwrite to replace it)")
        self._directory: Optional[Path] = None
        self._paged_files = []  # with packs_rows: the files being written, here
        self._saved_bytes = 0  # what compression saved, over all files
        self._file_writer = None  # otherwise: MindSpore's writer
        self._blobs, self._fields = [], []  # rows not handed to MindSpore yet
        self._buffered_bytes = 0

    def __enter__(self):
        # Imported before anything is created: an import interrupted midway leaves nothing to remove.
        from mindspore.mindrecord import FileWriter
        from mindspore.mindrecord.config import _get_enc_key

        if self.packs_rows and self.num_splits > 1 and _get_enc_key() is not None:
            raise DataError("MindSpore encrypts a MindRecord dataset of one file only: use num_splits 1, or no key")
        self.output_file.parent.mkdir(parents=True, exist_ok=True)
        self._directory = Path(tempfile.mkdtemp(prefix=f".{self.output_file.name}.", dir=self.output_file.parent))
        try:
            if self.packs_rows:
                for path in self.data_files:
                    self._paged_files.append(_PagedFile(self._directory / path.name, self.page_size))
            else:
                self._open_writer(FileWriter)
        except BaseException:
            self._close()
            raise
        return self

    def _open_writer(self, file_writer_class) -> None:
        self._file_writer = file_writer_class(str(self._directory / self.output_file.name), shard_num=self.num_splits)
        self._file_writer.add_schema(self.schema, SCHEMA_DESCRIPTION)
        # What FileWriter.write_raw_data does before its first write.
        shard_writer = self._file_writer._writer
        shard_writer.open(self._file_writer._paths, False)
        shard_writer.set_shard_header(self._file_writer._header)
        if tuple(self._file_writer._header.blob_fields) != self.blob_fields:
            raise RuntimeError(
                f"MindSpore orders the blob fields {self._file_writer._header.blob_fields}, not {self.blob_fields}:"
                " its row layout changed, and glm_data.writer.encode_row must follow it"
            )

    def write(self, rows, fields: Optional[list] = None) -> None:
        """Append rows, in order: with ``packs_rows`` a ``PackedRows``, else their blobs (``encode_rows``,
        ``encode_row``) and, for a schema with string columns, their fields."""
        if self.packs_rows:
            self._write_packed(rows)
            return
        self._blobs += rows
        self._fields += fields or []
        self._buffered_bytes += sum(map(len, rows))
        if self._buffered_bytes >= BYTES_PER_WRITE:
            self._hand_over()

    def _write_packed(self, rows: PackedRows) -> None:
        if not len(rows):
            return
        largest = int(rows.sizes.max())
        if largest > self.page_size:
            raise DataError(f"a record of {largest} bytes does not fit in a MindRecord page of {self.page_size} bytes")
        self._saved_bytes += rows.saved_bytes
        # As ShardWriter splits a write: a run of consecutive rows per file, the first len(rows) %
        # num_splits files taking one row more (MindSpore draws which files at random).
        per_file, extra = divmod(len(rows), self.num_splits)
        bounds = np.cumsum([0] + [per_file + (index < extra) for index in range(self.num_splits)])
        offsets = np.concatenate([[0], np.cumsum(rows.sizes)])
        data = memoryview(rows.data)
        for paged_file, start, end in zip(self._paged_files, bounds[:-1], bounds[1:]):
            if start < end:
                paged_file.append(data[offsets[start] : offsets[end]], offsets[start : end + 1] - offsets[start])

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
        from mindspore.mindrecord.config import _get_enc_key, _get_enc_mode, encrypt

        if self.packs_rows:
            for shard_id, paged_file in enumerate(self._paged_files):
                paged_file.finish(self._header(shard_id, paged_file))
            for path in self.data_files:
                write_index(self._directory / path.name)
                for written in (path, _index_file(path)):  # as FileWriter.commit leaves them
                    os.chmod(self._directory / written.name, stat.S_IRUSR | stat.S_IWUSR)
                    if _get_enc_key() is not None:
                        encrypt(str(self._directory / written.name), _get_enc_key(), _get_enc_mode())
        else:
            self._hand_over()
            # MindSpore's commit: it makes string columns index fields, which the index holds the values
            # of, and it encrypts the files when given a key.
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

    def _header(self, shard_id: int, paged_file: "_PagedFile") -> bytes:
        """File ``shard_id``'s header, JSON as MindSpore's ShardHeader writes it (keys in its order)."""
        schema = {"blob_fields": list(self.blob_fields), "desc": SCHEMA_DESCRIPTION, "schema": self.schema}
        parts = {
            "header_size": HEADER_SIZE,
            "index_fields": None,
            "page": [page.describe(shard_id) for page in paged_file.pages] or None,
            "page_size": self.page_size,
            "compression_size": max(self._saved_bytes, 0),
            "schema": [schema],
            "shard_addresses": [path.name for path in self.data_files],
            "shard_id": shard_id,
            "statistics": None,
            "version": MINDRECORD_VERSION,
        }
        text = ",".join(f'"{key}":{_json(value)}' for key, value in parts.items())
        return ("{" + text + "}").encode()

    def _close(self) -> None:
        for paged_file in self._paged_files:
            paged_file.close()
        shutil.rmtree(self._directory, ignore_errors=True)

    def __exit__(self, *exc_info):
        self._close()


def _json(value) -> str:
    # nlohmann::json's dump: sorted keys, no spaces, UTF-8 as is.
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass
class _Page:
    """A page of a MindRecord file, as its header lists it."""

    page_id: int  # its place in the file, after the header
    page_type: str  # "RAW_DATA" or "BLOB_DATA"
    page_type_id: int
    start_row_id: int  # blob pages: the rows they hold; raw pages: 0
    end_row_id: int
    row_group_ids: list  # raw pages: [group id, offset of its first record in the page] for each group
    page_size: int  # bytes used

    def describe(self, shard_id: int) -> dict:
        groups = self.row_group_ids or [(0, 0)]  # MindSpore lists no group as group 0 at offset 0
        return {
            "page_id": self.page_id, "shard_id": shard_id, "page_type": self.page_type,
            "page_type_id": self.page_type_id, "start_row_id": self.start_row_id, "end_row_id": self.end_row_id,
            "row_group_ids": [{"id": group, "offset": offset} for group, offset in groups],
            "page_size": self.page_size,
        }


class _PagedFile:
    """One MindRecord data file, its rows laid into pages as MindSpore's ShardWriter lays them.

    Page ``i`` starts at ``HEADER_SIZE + i * page_size`` whatever it holds, so a file is sparse: its
    pages' unused ends are holes. A row group is a run of rows whose blobs fill one blob page, and
    whose placeholder raw rows follow each other in a raw page; the raw page lists where each group
    starts in it.
    """

    def __init__(self, path: Path, page_size: int):
        self.page_size = page_size
        self.pages = []
        self.last_raw: Optional[_Page] = None
        self.last_blob: Optional[_Page] = None
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)

    def append(self, data: memoryview, offsets: np.ndarray) -> None:
        """Append rows, as ShardWriter::WriteByShard does for one write: ``data`` holds them one after
        another, row ``i`` at ``offsets[i]:offsets[i + 1]``."""
        groups = self._row_groups(offsets)
        first_start, first_end = groups[0]
        if first_start < first_end:  # the first group continues the last blob page
            self._write(self.last_blob, data[offsets[first_start] : offsets[first_end]])
            self.last_blob.end_row_id += first_end - first_start
        row = self.last_blob.end_row_id if self.last_blob else 0
        for start, end in groups[1:]:
            type_id = self.last_blob.page_type_id + 1 if self.last_blob else 0
            self.last_blob = self._new_page("BLOB_DATA", type_id, row, row + end - start, [])
            self._write(self.last_blob, data[offsets[start] : offsets[end]])
            row += end - start
        raw_size = len(_PLACEHOLDER_ROW)
        if first_start < first_end and self.last_raw.page_size + raw_size * (first_end - first_start) > self.page_size:
            self._move_last_group()
        group_id = self.last_raw.row_group_ids[-1][0] if self.last_raw else -1
        for index, (start, end) in enumerate(groups):
            if start == end:
                continue
            if self.last_raw is None or self.last_raw.page_size + raw_size * (end - start) > self.page_size:
                # MindSpore numbers a new raw page after the last raw page's page id, not its type id.
                type_id = self.last_raw.page_id + 1 if self.last_raw else 0
                self.last_raw = self._new_page("RAW_DATA", type_id, 0, 0, [])
            if index > 0:
                group_id += 1
                self.last_raw.row_group_ids.append((group_id, self.last_raw.page_size))
            self._write(self.last_raw, _PLACEHOLDER_ROW * (end - start))

    def _row_groups(self, offsets: np.ndarray) -> list:
        """ShardWriter::CutRowGroup: ``[(start, end), …]``, the rows that continue the last blob page
        (maybe none), then the rows of each new one."""
        rows, raw_size = len(offsets) - 1, len(_PLACEHOLDER_ROW)
        if self.last_blob is None:
            groups, blob_used, raw_used = [(0, 0)], 0, 0
        else:
            groups, blob_used = [], self.last_blob.page_size
            raw_used = self.last_raw.page_size - self.last_raw.row_group_ids[-1][1]  # the last group's raw rows
        start = 0
        while start < rows:
            # A group takes rows while both its blob page and its raw rows fit in a page.
            end_blob = int(np.searchsorted(offsets, offsets[start] + self.page_size - blob_used, side="right")) - 1
            end = min(end_blob, start + (self.page_size - raw_used) // raw_size, rows)
            groups.append((start, end))
            start, blob_used, raw_used = end, 0, 0
        return groups

    def _move_last_group(self) -> None:
        """ShardWriter::ShiftRawPage: copy the last raw page's last group to a new raw page, leaving the
        old copy where it was (past the page's new size)."""
        old = self.last_raw
        group_id, offset = old.row_group_ids.pop()
        moved_size = old.page_size - offset
        old.page_size = offset
        self.last_raw = self._new_page("RAW_DATA", old.page_id + 1, 0, 0, [(group_id, 0)])
        self._write(self.last_raw, _PLACEHOLDER_ROW * (moved_size // len(_PLACEHOLDER_ROW)))

    def _new_page(self, page_type: str, page_type_id: int, start_row_id: int, end_row_id: int, groups: list) -> _Page:
        page = _Page(len(self.pages), page_type, page_type_id, start_row_id, end_row_id, groups, 0)
        self.pages.append(page)
        return page

    def _write(self, page: _Page, data) -> None:
        """Write ``data`` at the end of ``page``'s used bytes."""
        os.pwrite(self._fd, data, HEADER_SIZE + self.page_size * page.page_id + page.page_size)
        page.page_size += len(data)

    def finish(self, header: bytes) -> None:
        """Write the header (its size, then itself) and close the file."""
        if _SIZE.size + len(header) > HEADER_SIZE:
            raise DataError(f"{len(self.pages)} pages do not fit in a MindRecord header: use a larger page size")
        os.pwrite(self._fd, _SIZE.pack(len(header)) + header, 0)
        self.close()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


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
    pages = sorted(header["page"] or [], key=lambda page: page["page_id"])  # null: a file without records
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
