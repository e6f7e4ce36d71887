"""The shipped synthetic ADGEN sample: regenerable byte for byte, ADGEN-shaped, and converted without a skip."""

import json

import pytest

from glm_data.sample import SAMPLE_DIR, sample_file
from glm_data.sample.generate import main as generate


def test_regenerating_gives_the_shipped_files(tmp_path, capsys):
    generate(["--out", str(tmp_path)])
    for name in ("train.json", "dev.json"):
        assert (tmp_path / name).read_bytes() == (SAMPLE_DIR / name).read_bytes(), name


@pytest.mark.parametrize(("split", "lines"), [("train", 2000), ("dev", 200)])
def test_sample_lines_are_adgen_examples(split, lines):
    examples = [json.loads(line) for line in sample_file(split).read_text(encoding="utf-8").splitlines()]
    assert len(examples) == lines
    for example in examples:
        assert set(example) == {"content", "summary"}
        attributes = dict(pair.split("#") for pair in example["content"].split("*"))
        assert attributes["类型"] in ("上衣", "裙", "裤")
        assert example["summary"].startswith("这款") and example["summary"].endswith("。")


def test_train_and_dev_differ():
    train, dev = (sample_file(split).read_text(encoding="utf-8").splitlines() for split in ("train", "dev"))
    assert train[:10] != dev[:10]


def test_unknown_split_is_an_error():
    with pytest.raises(ValueError, match="unknown sample split 'test'"):
        sample_file("test")


def test_sample_converts_without_a_skip(convert):
    _, summary = convert(sample_file("dev"), max_source_length=64, max_target_length=128)
    assert (summary.written, sum(summary.skipped.values())) == (200, 0)
