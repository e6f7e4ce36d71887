"""load_dataset: batches of int32 records, seeded shuffling, disjoint data-parallel shards."""

import numpy as np
import pytest

from glm_data import DataError, load_dataset, read_records


@pytest.fixture(scope="module")
def train_file(tmp_path_factory, vocab_file):
    """30 distinct training records (lengths 8 + 8), numbered in their prompt."""
    from glm_data import adgen_to_mindrecord

    directory = tmp_path_factory.mktemp("loader")
    input_file = directory / "train.json"
    input_file.write_text(
        "".join(f'{{"content": "{i}", "summary": "第{i}条"}}\n' for i in range(30)), encoding="utf-8"
    )
    output_file = directory / "train.mindrecord"
    adgen_to_mindrecord(input_file, vocab_file, output_file, max_source_length=8, max_target_length=8)
    return output_file


def batches(dataset):
    return list(dataset.create_tuple_iterator(output_numpy=True, num_epochs=1))


def rows(dataset):
    return [row.tobytes() for batch in batches(dataset) for row in batch[0]]


def test_batches_are_int32_input_ids_and_labels(train_file):
    dataset = load_dataset(train_file, batch_size=4)
    assert dataset.get_col_names() == ["input_ids", "labels"]
    first = batches(dataset)[0]
    assert [(array.shape, array.dtype) for array in first] == [((4, 16), np.int32), ((4, 16), np.int32)]


def test_drop_remainder_controls_the_last_small_batch(train_file):
    assert [len(batch[0]) for batch in batches(load_dataset(train_file, 8))] == [8, 8, 8]
    assert [len(batch[0]) for batch in batches(load_dataset(train_file, 8, drop_remainder=False))] == [8, 8, 8, 6]


def test_unshuffled_order_is_the_file_order(train_file):
    written = [record["input_ids"].tobytes() for record in read_records(train_file)]
    assert rows(load_dataset(train_file, 1, shuffle=False)) == written


def test_shuffle_is_reproducible_by_seed(train_file):
    first = rows(load_dataset(train_file, 1, seed=7))
    assert rows(load_dataset(train_file, 1, seed=7)) == first
    assert rows(load_dataset(train_file, 1, seed=8)) != first
    assert sorted(first) == sorted(rows(load_dataset(train_file, 1, shuffle=False)))


@pytest.mark.parametrize("shuffle", [False, True])
def test_shards_split_the_records_between_ranks(train_file, shuffle):
    shards = [
        rows(load_dataset(train_file, 1, shuffle=shuffle, seed=3, num_shards=3, shard_id=rank)) for rank in range(3)
    ]
    assert [len(shard) for shard in shards] == [10, 10, 10]
    everything = [row for shard in shards for row in shard]
    assert sorted(everything) == sorted(rows(load_dataset(train_file, 1, shuffle=False)))


def test_a_split_output_is_found_by_its_name(write_lines, convert):
    lines = [{"content": f"类型#裤*编号#{i}", "summary": f"第{i}条。"} for i in range(12)]
    output_file, _ = convert(write_lines(lines), num_splits=2, max_source_length=8, max_target_length=8)
    assert not output_file.exists()
    assert sum(len(batch[0]) for batch in batches(load_dataset(output_file, 4))) == 12


def test_mindformers_files_load_four_columns(write_lines, convert):
    output_file, _ = convert(write_lines([{"content": "你好", "summary": "好"}] * 2), record_format="mindformers",
                             max_source_length=8, max_target_length=8)
    dataset = load_dataset(output_file, 2)
    assert dataset.get_col_names() == ["input_ids", "labels", "position_ids", "attention_mask"]
    shapes = [array.shape for array in batches(dataset)[0]]
    assert shapes == [(2, 16), (2, 16), (2, 2, 16), (2, 1, 16, 16)]


def test_evaluation_files_are_refused(write_lines, convert):
    output_file, _ = convert(write_lines([{"content": "你好", "summary": "好"}]), mode="eval")
    with pytest.raises(DataError, match=r"evaluation records .* glm_data.read_records"):
        load_dataset(output_file, 1)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"num_shards": 2}, "give both num_shards and shard_id or neither"),
        ({"num_shards": 2, "shard_id": 2}, r"shard_id must be in \[0, 2\)"),
        ({"batch_size": 0}, "batch_size must be at least 1"),
    ],
)
def test_bad_arguments_are_errors(train_file, options, message):
    arguments = {"batch_size": 1, **options}
    with pytest.raises(DataError, match=message):
        load_dataset(train_file, **arguments)


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(DataError, match="MindRecord file not found"):
        load_dataset(tmp_path / "none.mindrecord", 1)


def test_a_file_that_is_not_mindrecord_is_an_error(tmp_path):
    path = tmp_path / "text.mindrecord"
    path.write_text("hello")
    with pytest.raises(DataError, match=r"cannot read .*text.mindrecord as MindRecord"):
        load_dataset(path, 1)
