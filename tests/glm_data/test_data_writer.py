"""The MindRecord writer: the files MindSpore's FileWriter writes, byte for byte, rows encoded as it encodes
them, the index it builds, files moved into place whole."""

import sqlite3
from contextlib import closing

import numpy as np
import pytest
from mindspore.mindrecord import FileWriter

from glm_data import read_records, records
from glm_data.writer import MindRecordOutput, encode_row, encode_rows, output_files, pack_rows, write_index


def sample_records(layout, tokenizer):
    train = records.train_record(tokenizer, [300, 301, 302], [400, 401], 6, 6)
    if layout == records.TRAIN:
        return [train]
    if layout == records.EVAL:
        return [records.eval_record(tokenizer, [300, 301], [400], 6, 6, "内容", "摘要")]
    return [records.mindformers_record(train, tokenizer.bos_token_id, tokenizer.gmask_token_id)]


@pytest.mark.parametrize("layout", [records.TRAIN, records.EVAL, records.MINDFORMERS])
def test_encode_row_is_what_filewriter_builds(layout, tokenizer, tmp_path):
    schema = records.schema(layout, 12)
    file_writer = FileWriter(str(tmp_path / "reference.mindrecord"))
    file_writer.add_schema(schema)
    file_writer._writer.open(file_writer._paths, False)  # as FileWriter.write_raw_data prepares its first write
    file_writer._writer.set_shard_header(file_writer._header)
    output = MindRecordOutput(tmp_path / "ours.mindrecord", 1, schema, overwrite=False)
    # MindSpore's own row encoding (ShardWriter._merge_blob over FileWriter's blob fields, in its order).
    assert output.blob_fields == tuple(file_writer._header.blob_fields)
    for record in sample_records(layout, tokenizer):
        blob, fields = encode_row(record, output.blob_fields)
        reference = file_writer._writer._merge_blob({name: record[name] for name in file_writer._header.blob_fields})
        assert blob == reference
        assert fields == ({"content": "内容", "summary": "摘要"} if layout == records.EVAL else None)


@pytest.mark.parametrize("layout", [records.TRAIN, records.MINDFORMERS])
def test_encode_rows_of_a_batch_are_the_rows_of_its_records(layout, tokenizer):
    batch = records.train_records(tokenizer, [[300, 301, 302], [303], []], [[400, 401], [402, 403, 404], [405]], 6, 6)
    if layout == records.MINDFORMERS:
        batch = records.mindformers_record(batch, tokenizer.bos_token_id, tokenizer.gmask_token_id)
    blob_fields = tuple(sorted(batch))  # MindRecord's order
    each = [encode_row({name: column[index] for name, column in batch.items()}, blob_fields)[0] for index in range(3)]
    assert encode_rows(batch, blob_fields) == each


def test_pack_rows_compresses_each_value_to_the_bytes_it_needs():
    columns = {
        "input_ids": np.array([[1, 200, 70000, -100]], np.int32),
        "labels": np.array([[-100, -40000, -200, 127]], np.int32),
    }
    rows = pack_rows(columns, ("input_ids", "labels"))
    # Per column: its length (8 bytes, big-endian), the value count (4, big-endian), 2 bits a value
    # (0: 1 byte, 1: 2 bytes, 2: 4 bytes), the values (little-endian); the row: its size (8, native).
    input_ids = bytes.fromhex("000000000000000d" "00000004" "18" "01" "c800" "70110100" "9c")
    labels = bytes.fromhex("000000000000000d" "00000004" "24" "9c" "c063ffff" "38ff" "7f")
    blob = input_ids + labels
    assert rows.data == len(blob).to_bytes(8, "little") + blob
    assert rows.sizes.tolist() == [8 + len(blob)]
    assert rows.saved_bytes == 2 * (8 + 16) - len(blob)  # FileWriter's blob: two lengths and 32 bytes of values


def random_columns(layout, count, rng):
    """``count`` records of ``layout``'s shapes, whose values need 1, 2 and 4 bytes, negative ones too."""
    values = np.array([0, 3, 127, -100, -128, 128, 255, 3000, 32767, -200, -32768, 32768, 65536, 130001, -32769])
    return {
        name: rng.choice(values, size=(count, *spec["shape"])).astype(np.int32)
        for name, spec in records.schema(layout, 24).items()
    }


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


@pytest.mark.parametrize("num_splits", [1, 2])
@pytest.mark.parametrize("page_size", [None, 1 << 15], ids=["one-page", "32KB-pages"])
@pytest.mark.parametrize("layout", [records.TRAIN, records.MINDFORMERS])
def test_mindrecord_output_writes_the_files_filewriter_writes(layout, page_size, num_splits, tmp_path):
    # Writes of varied sizes. With 32 KB pages: several blob pages per write, raw pages that fill (2,520
    # records each), and the third write's first row group moved to a new raw page, the last one being
    # full. Each write is a multiple of num_splits records: FileWriter splits a write over its files at
    # random otherwise.
    rng = np.random.default_rng(0)
    schema = records.schema(layout, 24)
    writes = [count * num_splits for count in ([1, 2515, 10, 1700] if page_size else [1, 20, 5])]
    columns = [random_columns(layout, count, rng) for count in writes]
    (tmp_path / "reference").mkdir()
    file_writer = FileWriter(str(tmp_path / "reference" / "data.mindrecord"), shard_num=num_splits)
    file_writer.add_schema(schema, "glm-data")
    options = {}
    if page_size:
        file_writer.set_page_size(page_size)
        options["page_size"] = page_size
    with MindRecordOutput(tmp_path / "ours" / "data.mindrecord", num_splits, schema, False, **options) as output:
        for batch in columns:
            file_writer.write_raw_data([{name: column[index] for name, column in batch.items()}
                                        for index in range(len(next(iter(batch.values()))))])
            output.write(pack_rows(batch, output.blob_fields))
        output.commit()
    file_writer.commit()

    for reference in output_files(tmp_path / "reference" / "data.mindrecord", num_splits):
        ours = tmp_path / "ours" / reference.name
        assert read_bytes(ours) == read_bytes(reference)
        assert index_tables(f"{ours}.db") == index_tables(f"{reference}.db")


def test_a_single_column_is_compressed_without_a_length_as_filewriter_does(tmp_path):
    # No layout has one column, but pack_rows follows MindRecord there too: the blob is the column alone.
    schema = {"input_ids": {"type": "int32", "shape": [5]}}
    columns = {"input_ids": np.array([[1, 300, -100, 70000, 3], [-40000, 2, 2, 2, 2]], np.int32)}
    (tmp_path / "reference").mkdir()
    file_writer = FileWriter(str(tmp_path / "reference" / "data.mindrecord"))  # the header holds the file name
    file_writer.add_schema(schema, "glm-data")
    file_writer.write_raw_data([{"input_ids": row} for row in columns["input_ids"]])
    file_writer.commit()
    with MindRecordOutput(tmp_path / "ours" / "data.mindrecord", 1, schema, False) as output:
        output.write(pack_rows(columns, output.blob_fields))
        output.commit()
    assert read_bytes(tmp_path / "ours" / "data.mindrecord") == read_bytes(tmp_path / "reference" / "data.mindrecord")


@pytest.mark.parametrize("layout", [records.TRAIN, records.EVAL, records.MINDFORMERS])
def test_written_records_read_back_as_filewriter_writes_them(layout, tokenizer, tmp_path):
    schema = records.schema(layout, 12)
    written = sample_records(layout, tokenizer) * 3
    reference_file = tmp_path / "reference.mindrecord"
    file_writer = FileWriter(str(reference_file))
    file_writer.add_schema(schema)
    file_writer.write_raw_data(written)
    file_writer.commit()
    with MindRecordOutput(tmp_path / "ours.mindrecord", 1, schema, overwrite=False) as output:
        if output.packs_rows:
            output.write(pack_rows({name: np.stack([record[name] for record in written]) for name in schema},
                                   output.blob_fields))
        else:
            rows = [encode_row(record, output.blob_fields) for record in written]
            output.write([blob for blob, _ in rows], [fields for _, fields in rows])
        output.commit()

    ours, reference = list(read_records(tmp_path / "ours.mindrecord")), list(read_records(reference_file))
    assert len(ours) == len(reference) == 3
    for mine, theirs in zip(ours, reference):
        assert mine.keys() == theirs.keys()
        for name in mine:
            assert np.array_equal(mine[name], theirs[name]), name


def test_with_mindspore_s_encryption_key_the_files_are_encrypted_and_read_back(tmp_path, tokenizer):
    from mindspore.mindrecord import set_enc_key

    schema = records.schema(records.TRAIN, 12)
    [record] = sample_records(records.TRAIN, tokenizer)
    set_enc_key("0123456789abcdef")
    try:
        with MindRecordOutput(tmp_path / "out.mindrecord", 1, schema, False) as output:
            output.write(pack_rows({name: np.stack([record[name]] * 3) for name in schema}, output.blob_fields))
            output.commit()
        written = list(read_records(tmp_path / "out.mindrecord"))
    finally:
        set_enc_key(None)
    for path in (tmp_path / "out.mindrecord", tmp_path / "out.mindrecord.db"):
        assert read_bytes(path).endswith(b"ENCRYPT")  # MindSpore's mark of an encrypted file
    assert len(written) == 3
    for name in schema:
        assert all(np.array_equal(mine[name], record[name]) for mine in written), name


def test_nothing_appears_until_commit_and_an_error_removes_the_work(tmp_path, tokenizer):
    schema = records.schema(records.TRAIN, 12)
    [record] = sample_records(records.TRAIN, tokenizer)
    with pytest.raises(KeyError), MindRecordOutput(tmp_path / "out.mindrecord", 2, schema, False) as output:
        output.write(pack_rows({name: np.stack([record[name]] * 4) for name in schema}, output.blob_fields))
        assert [path.name for path in tmp_path.iterdir()] == [output._directory.name]
        raise KeyError("interrupted")
    assert list(tmp_path.iterdir()) == []


def index_tables(db_file):
    with closing(sqlite3.connect(db_file)) as db:
        return {
            "sql": db.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name").fetchall(),
            "INDEXES": db.execute("SELECT * FROM INDEXES ORDER BY ROW_ID").fetchall(),
            "SHARD_NAME": db.execute("SELECT * FROM SHARD_NAME").fetchall(),
        }


@pytest.mark.parametrize("layout", [records.TRAIN, records.MINDFORMERS])
def test_write_index_builds_the_index_mindspore_builds(layout, tokenizer, tmp_path):
    # Records of varied lengths (MindRecord compresses int32 blobs), in writes of varied sizes, over
    # 32 KB pages and two files: many pages, row groups and raw pages moved as MindSpore fills them.
    rng = np.random.default_rng(0)
    prompts = [list(rng.integers(300, 3000, rng.integers(1, 12))) for _ in range(6000)]
    batch = records.train_records(tokenizer, prompts, prompts[::-1], 12, 12)
    if layout == records.MINDFORMERS:
        batch = records.mindformers_record(batch, tokenizer.bos_token_id, tokenizer.gmask_token_id)
    written = [{name: column[index] for name, column in batch.items()} for index in range(len(prompts))]
    file_writer = FileWriter(str(tmp_path / "data.mindrecord"), shard_num=2)
    file_writer.add_schema(records.schema(layout, 24))
    file_writer.set_page_size(1 << 15)
    for start, end in [(0, 1), (1, 2500), (2500, 2510), (2510, 6000)]:
        file_writer.write_raw_data(written[start:end])
    file_writer.commit()  # MindSpore's index

    for data_file in output_files(tmp_path / "data.mindrecord", 2):
        index_file = data_file.with_name(data_file.name + ".db")
        reference = index_tables(index_file)
        raw_pages, blob_pages = ({row[column] for row in reference["INDEXES"]} for column in (1, 5))
        assert len(raw_pages) > 1 and len(blob_pages) > 2
        index_file.unlink()
        write_index(data_file)
        assert index_tables(index_file) == reference
