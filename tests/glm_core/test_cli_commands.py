"""`glm generate`, `glm info`, errors and --help, run in-process through cli.main."""

import json

import pytest
from help_text import arguments_without_description, flags_with_an_entry, listed_flags

from glm_core import ModelNotFoundError
from glm_core.cli import main
from glm_tokenizer import ChatGLMTokenizer


@pytest.fixture(scope="module")
def golden_hello(golden_case, golden_hf_dir):
    """The golden greedy continuation of "你好" (chat.json round 0) with its prompt, as MindFormers prints it."""
    tokenizer = ChatGLMTokenizer.from_pretrained(golden_hf_dir)
    return tokenizer.decode(tokenizer.encode("你好", add_special_tokens=False) + golden_case("chat")[0]["response_ids"])


def test_generate_prints_the_text_and_the_speed(model_dir, golden_hello, capsys):
    assert main(["generate", str(model_dir), "--prompt", "你好", "--max-length", "29"]) == 0
    out, err = capsys.readouterr()
    assert out == golden_hello + "\n"
    assert err.startswith("generate speed: ") and " tokens/s (24 new tokens in " in err


def test_generate_reads_prompts_from_a_file_and_writes_jsonl(model_dir, golden_hello, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("你好\n\nhi there\n第三个\n", encoding="utf-8")
    output = tmp_path / "out" / "results.jsonl"
    assert main(["generate", str(model_dir), "--input", str(prompts), "--output", str(output),
                 "--max-new-tokens", "24", "--batch-size", "2"]) == 0
    records = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert [record["prompt"] for record in records] == ["你好", "hi there", "第三个"]
    assert records[0]["text"] == golden_hello
    assert all(set(record) == {"prompt", "text", "response", "new_tokens"} for record in records)
    assert capsys.readouterr().out == ""


def test_generate_without_prompts_is_an_error(model_dir, capsys):
    assert main(["generate", str(model_dir)]) == 2
    assert capsys.readouterr().err == "glm: error: no prompts: pass --prompt TEXT or --input FILE\n"


def test_info_shows_files_config_size_and_versions(model_dir, capsys):
    assert main(["info", str(model_dir)]) == 0
    out = capsys.readouterr().out
    for line in (f"checkpoint: {model_dir / 'glm_tiny.ckpt'}",
                 f"config_file: {model_dir / 'config.json'}", "parameters: 509,696", "param_dtype: float32",
                 "glm_core_version: 0.1.0", "  num_layers: 2", "  vocab_size: 3200"):
        assert line in out.splitlines()
    assert any(line.startswith("mindspore_version: 2.") for line in out.splitlines())


def test_info_json_is_one_object(model_dir, capsys):
    assert main(["info", str(model_dir), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["parameters"] == 509_696 and info["config"]["hidden_size"] == 64


def test_named_model_error_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GLM_HOME", str(tmp_path))
    assert main(["info", "glm_6b"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("glm: error: model 'glm_6b' is not under the checkpoint home")
    assert "glm-convert" in err and err.count("\n") == 1


def test_debug_shows_the_exception(tmp_path, monkeypatch):
    monkeypatch.setenv("GLM_HOME", str(tmp_path))
    with pytest.raises(ModelNotFoundError):
        main(["info", "glm_6b", "--debug"])


@pytest.mark.parametrize("command", ["chat", "generate", "info"])
def test_help_explains_every_flag(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert arguments_without_description(out) == []
    assert listed_flags(out) <= flags_with_an_entry(out)
    assert {"--help", "--debug", "--threads"} <= flags_with_an_entry(out)
