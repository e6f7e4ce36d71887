"""The MindRecord output: records read back as written, files that appear whole and only at commit, an
output set replaced as a whole, MindSpore's encryption key honoured."""

import os
import signal

import numpy as np
import pytest

from glm_data import DataError, read_records, records
from glm_data.writer import MindRecordOutput, existing_output, output_files


def sample_records(layout, tokenizer, count=5):
    """``count`` distinct records of ``layout``, from prompts and answers of varied lengths."""
    prompts = [[300 + index] * (index + 1) for index in range(count)]
    answers = [[400 + index] * (count - index) for index in range(count)]
    if layout == records.EVAL:
        return [
            records.eval_record(tokenizer, prompt, answer, 8, 8, f"内容{index}", f"摘要{index}")
            for index, (prompt, answer) in enumerate(zip(prompts, answers))
        ]
    batch = records.train_records(tokenizer, prompts, answers, 8, 8)
    if layout == records.MINDFORMERS:
        batch = records.mindformers_record(batch, tokenizer)
    return [{name: column[index] for name, column in batch.items()} for index in range(count)]


def write(output_file, written, layout=records.TRAIN, num_splits=1, overwrite=False):
    with MindRecordOutput(output_file, num_splits, records.schema(layout, 16), overwrite) as output:
        output.write(written)
        output.commit()


def assert_same_records(read, written):
    assert len(read) == len(written)
    for mine, theirs in zip(read, written):
        assert mine.keys() == theirs.keys()
        for name in mine:
            assert np.array_equal(mine[name], theirs[name]), name


def names(directory):
    return sorted(path.name for path in directory.iterdir())


@pytest.mark.parametrize("layout", [records.TRAIN, records.EVAL, records.MINDFORMERS])
def test_records_read_back_as_written(layout, tokenizer, tmp_path):
    written = sample_records(layout, tokenizer)
    write(tmp_path / "out.mindrecord", written, layout)
    assert_same_records(list(read_records(tmp_path / "out.mindrecord")), written)
    assert names(tmp_path) == ["out.mindrecord", "out.mindrecord.db"]


def test_many_writes_read_back_in_order(tokenizer, tmp_path, monkeypatch):
    from glm_data import writer

    monkeypatch.setattr(writer, "BYTES_PER_WRITE", 500)  # a FileWriter call every few records
    written = sample_records(records.TRAIN, tokenizer, count=40)
    with MindRecordOutput(tmp_path / "out.mindrecord", 1, records.schema(records.TRAIN, 16), False) as output:
        for start in range(0, 40, 3):
            output.write(written[start : start + 3])
        output.commit()
    assert_same_records(list(read_records(tmp_path / "out.mindrecord")), written)


def test_split_output_holds_every_record_once(tokenizer, tmp_path):
    written = sample_records(records.TRAIN, tokenizer, count=12)
    write(tmp_path / "out.mindrecord", written, num_splits=3)
    assert names(tmp_path) == [f"out.mindrecord{index}{suffix}" for index in range(3) for suffix in ("", ".db")]
    read = list(read_records(tmp_path / "out.mindrecord"))
    assert sorted(record["input_ids"].tobytes() for record in read) == sorted(
        record["input_ids"].tobytes() for record in written
    )


def test_nothing_appears_until_commit_and_an_error_removes_the_work(tokenizer, tmp_path):
    with pytest.raises(KeyError), MindRecordOutput(
        tmp_path / "out.mindrecord", 2, records.schema(records.TRAIN, 16), False
    ) as output:
        output.write(sample_records(records.TRAIN, tokenizer))
        [work_directory] = names(tmp_path)
        assert work_directory.startswith(".out.mindrecord.")
        raise KeyError("interrupted")
    assert names(tmp_path) == []


def test_an_error_keeps_the_earlier_output(tokenizer, tmp_path):
    earlier = sample_records(records.TRAIN, tokenizer, count=3)
    write(tmp_path / "out.mindrecord", earlier)
    with pytest.raises(KeyError), MindRecordOutput(
        tmp_path / "out.mindrecord", 2, records.schema(records.TRAIN, 16), overwrite=True
    ) as output:
        output.write(sample_records(records.TRAIN, tokenizer, count=5))
        raise KeyError("interrupted")
    assert names(tmp_path) == ["out.mindrecord", "out.mindrecord.db"]
    assert_same_records(list(read_records(tmp_path / "out.mindrecord")), earlier)


@pytest.mark.parametrize(("before", "after"), [(3, 2), (2, 1), (1, 3), (11, 2)])
def test_overwrite_replaces_every_file_of_the_earlier_output(before, after, tokenizer, tmp_path):
    write(tmp_path / "out.mindrecord", sample_records(records.TRAIN, tokenizer, count=11), num_splits=before)
    written = sample_records(records.TRAIN, tokenizer, count=4)
    write(tmp_path / "out.mindrecord", written, num_splits=after, overwrite=True)
    expected = output_files(tmp_path / "out.mindrecord", after)
    assert names(tmp_path) == sorted(name for path in expected for name in (path.name, f"{path.name}.db"))
    read = list(read_records(tmp_path / "out.mindrecord"))
    assert sorted(record["input_ids"].tobytes() for record in read) == sorted(
        record["input_ids"].tobytes() for record in written
    )


def test_an_earlier_output_of_another_split_count_is_refused_without_overwrite(tokenizer, tmp_path):
    write(tmp_path / "out.mindrecord", sample_records(records.TRAIN, tokenizer), num_splits=2)
    with pytest.raises(DataError, match=r"output already exists: .*out.mindrecord0 \(pass --overwrite"):
        MindRecordOutput(tmp_path / "out.mindrecord", 1, records.schema(records.TRAIN, 16), overwrite=False)


def test_the_output_set_is_the_name_its_split_numbers_and_their_indexes(tmp_path):
    kept = ["out.mindrecord.json", "out.mindrecord_old", "out.mindrecord1234", "out.mindrecordx", "xout.mindrecord"]
    output = ["out.mindrecord", "out.mindrecord.db", "out.mindrecord7", "out.mindrecord012", "out.mindrecord012.db"]
    for name in kept + output:
        (tmp_path / name).write_bytes(b"")
    assert [path.name for path in existing_output(tmp_path / "out.mindrecord")] == sorted(output)


def test_a_signal_while_the_files_move_into_place_waits_for_them(tokenizer, tmp_path, monkeypatch):
    # SIGTERM arrives as the first file is moved; its handler (as the CLI's) raises. The whole new
    # output is in place first, the earlier one's extra files gone.
    from glm_data import writer

    class Terminated(BaseException):
        pass

    def terminate(signum, frame):
        raise Terminated

    write(tmp_path / "out.mindrecord", sample_records(records.TRAIN, tokenizer), num_splits=3)
    replace = os.replace

    def replace_then_signal(source, destination):
        replace(source, destination)
        signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(writer.os, "replace", replace_then_signal)
    previous = signal.signal(signal.SIGTERM, terminate)
    written = sample_records(records.TRAIN, tokenizer, count=4)
    try:
        with pytest.raises(Terminated):
            write(tmp_path / "out.mindrecord", written, overwrite=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert names(tmp_path) == ["out.mindrecord", "out.mindrecord.db"]
    assert_same_records(list(read_records(tmp_path / "out.mindrecord")), written)


def test_with_mindspore_s_encryption_key_the_files_are_encrypted_and_read_back(tokenizer, tmp_path):
    from mindspore.mindrecord import set_enc_key

    written = sample_records(records.TRAIN, tokenizer)
    set_enc_key("0123456789abcdef")
    try:
        write(tmp_path / "out.mindrecord", written)
        read = list(read_records(tmp_path / "out.mindrecord"))
    finally:
        set_enc_key(None)
    for path in (tmp_path / "out.mindrecord", tmp_path / "out.mindrecord.db"):
        assert path.read_bytes().endswith(b"ENCRYPT")  # MindSpore's mark of an encrypted file
    assert_same_records(read, written)


def test_an_encryption_key_with_several_files_is_an_error(tokenizer, tmp_path):
    from mindspore.mindrecord import set_enc_key

    set_enc_key("0123456789abcdef")
    try:
        with pytest.raises(DataError, match=r"cannot write .*out.mindrecord: .*encode mode is enabled"):
            write(tmp_path / "out.mindrecord", sample_records(records.TRAIN, tokenizer), num_splits=2)
    finally:
        set_enc_key(None)
    assert names(tmp_path) == []


def test_a_directory_as_output_is_an_error(tmp_path):
    (tmp_path / "out.mindrecord").mkdir()
    with pytest.raises(DataError, match=r"output .*out.mindrecord is a directory"):
        MindRecordOutput(tmp_path / "out.mindrecord", 1, records.schema(records.TRAIN, 16), overwrite=True)


@pytest.mark.parametrize(
    ("folder", "reason"), [("file", r"file is a file"), ("file/sub", "Not a directory"), ("/proc/1", "")]
)
def test_an_output_folder_that_cannot_be_written_is_an_error(folder, reason, tmp_path):
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(DataError, match=rf"cannot write in .*{folder}: .*{reason}"), MindRecordOutput(
        tmp_path / folder / "out.mindrecord", 1, records.schema(records.TRAIN, 16), False
    ):
        pass
    assert names(tmp_path) == ["file"]
