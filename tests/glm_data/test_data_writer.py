"""The MindRecord writer: rows encoded exactly as MindSpore's FileWriter encodes them, the index it builds,
files moved into place whole."""

import sqlite3
from contextlib import closing

import numpy as np
import pytest
from mindspore.mindrecord import FileWriter

from glm_data import read_records, records
from glm_data.writer import MindRecordOutput, encode_row, encode_rows, output_files, write_index


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
        rows = [encode_row(record, output.blob_fields) for record in written]
        output.write([blob for blob, _ in rows], [fields for _, fields in rows] if layout == records.EVAL else None)
        output.commit()

    ours, reference = list(read_records(tmp_path / "ours.mindrecord")), list(read_records(reference_file))
    assert len(ours) == len(reference) == 3
    for mine, theirs in zip(ours, reference):
        assert mine.keys() == theirs.keys()
        for name in mine:
            assert np.array_equal(mine[name], theirs[name]), name


def test_nothing_appears_until_commit_and_an_error_removes_the_work(tmp_path, tokenizer):
    schema = records.schema(records.TRAIN, 12)
    with pytest.raises(KeyError), MindRecordOutput(tmp_path / "out.mindrecord", 2, schema, False) as output:
        output.write([encode_row(record, output.blob_fields)[0] for record in sample_records(records.TRAIN, tokenizer)])
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
