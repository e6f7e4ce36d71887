"""Fixtures for the glm-data tests: the golden vocabulary, its tokenizer, input files, and conversion."""

import json
import os

import pytest

from glm_data import adgen_to_mindrecord
from glm_tokenizer import ChatGLMTokenizer

os.environ.setdefault("GLOG_v", "3")  # before MindSpore is first imported: its INFO logs bury failures


@pytest.fixture(scope="session")
def vocab_file(golden_hf_dir):
    """The golden tiny ``ice_text.model`` (special ids 3000-3005, pad 3)."""
    return golden_hf_dir / "ice_text.model"


@pytest.fixture(scope="session")
def tokenizer(vocab_file) -> ChatGLMTokenizer:
    return ChatGLMTokenizer(vocab_file)


@pytest.fixture
def write_lines(tmp_path):
    """Write an input file: dicts become JSON lines, str lines are written as they are, bytes raw."""

    def write(lines, name="input.json"):
        path = tmp_path / name
        with open(path, "wb") as f:
            for line in lines:
                if isinstance(line, dict):
                    line = json.dumps(line, ensure_ascii=False)
                f.write((line.encode("utf-8") if isinstance(line, str) else line) + b"\n")
        return path

    return write


@pytest.fixture
def convert(vocab_file, tmp_path):
    """``adgen_to_mindrecord`` with the golden vocabulary, writing ``tmp_path/<name>`` (default out.mindrecord)."""

    def run(input_file, name="out.mindrecord", **options):
        output_file = tmp_path / name
        return output_file, adgen_to_mindrecord(input_file, vocab_file, output_file, **options)

    return run
