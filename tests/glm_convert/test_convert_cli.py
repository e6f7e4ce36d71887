"""``glm-convert``: MindFormers' flags, the two commands, the summary line and one-line errors."""

import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from glm_convert import WeightsMismatchError
from glm_convert.cli import main
from glm_core.checkpoint import read_checkpoint


@pytest.fixture
def pth(golden_torch_state, tmp_path):
    """The golden weights as one ``pt_glm_6b.pth``, alone in its folder (no config, no tokenizer)."""
    path = tmp_path / "pt" / "pt_glm_6b.pth"
    path.parent.mkdir()
    torch.save(golden_torch_state, path)
    return path


def test_mindformers_flags_convert_a_pth(pth, golden_hf_dir, golden_ckpt, tmp_path, capsys):
    out = tmp_path / "glm_6b.ckpt"
    assert main(["--pt_ckpt_path", str(pth), "--ms_ckpt_path", str(out), "--config", str(golden_hf_dir)]) == 0
    assert out.read_bytes() == golden_ckpt.read_bytes()
    captured = capsys.readouterr()
    assert captured.out.startswith(f"wrote {out}: 28 tensors, 509,696 parameters, 1.0 MB in ")
    assert "MB/s)" in captured.out


def test_hf_to_ms_writes_a_model_folder_with_a_progress_bar(golden_hf_dir, tmp_path, capsys):
    assert main(["hf-to-ms", str(golden_hf_dir), str(tmp_path / "glm"), "--dtype", "float32"]) == 0
    assert {t.dtype.name for t in read_checkpoint(tmp_path / "glm" / "model.ckpt").values()} == {"float32"}
    captured = capsys.readouterr()
    assert "hf-to-ms: 100%" in captured.err
    assert "28/28" in captured.err
    assert captured.out.startswith(f"wrote {tmp_path / 'glm'}: 28 tensors")


def test_options_before_the_command_count_too(golden_hf_dir, tmp_path, capsys):
    assert main(["--quiet", "--dtype", "float32", "hf-to-ms", str(golden_hf_dir), str(tmp_path / "a.ckpt")]) == 0
    assert capsys.readouterr().err == ""
    assert read_checkpoint(tmp_path / "a.ckpt")["lm_head.weight"].dtype.name == "float32"


def test_ms_to_hf_writes_safetensors_shards(golden_ckpt, golden_hf_dir, golden_torch_state, tmp_path, capsys):
    out = tmp_path / "hf"
    argv = ["ms-to-hf", str(golden_ckpt), str(out), "--config", str(golden_hf_dir), "--safetensors",
            "--max-shard-size", "600KB", "--quiet"]
    assert main(argv) == 0
    shards = sorted(out.glob("model-*.safetensors"))
    assert [shard.name for shard in shards] == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    back = {name: tensor for shard in shards for name, tensor in load_file(shard).items()}
    assert all(torch.equal(back[name], tensor) for name, tensor in golden_torch_state.items())
    assert capsys.readouterr().out.startswith(f"wrote {out}: 30 tensors, 509,704 parameters")


def test_bad_input_gives_one_error_line_and_exit_2(pth, tmp_path, capsys):
    out = tmp_path / "out.ckpt"
    assert main(["hf-to-ms", str(pth), str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"glm-convert: error: {pth} does not fit the model config (28 layers, hidden 4096")
    assert err.count("\n") == 1
    assert not out.exists()


def test_missing_input_is_an_error_line(tmp_path, capsys):
    assert main(["ms-to-hf", str(tmp_path / "none.ckpt"), str(tmp_path / "hf")]) == 2
    assert capsys.readouterr().err == f"glm-convert: error: no MindSpore checkpoint at {tmp_path / 'none.ckpt'}\n"


def test_debug_shows_the_traceback(pth, tmp_path):
    with pytest.raises(WeightsMismatchError):
        main(["hf-to-ms", str(pth), str(tmp_path / "out.ckpt"), "--debug"])


@pytest.mark.parametrize("argv", [[], ["--pt_ckpt_path", "a.pth"],
                                  ["--pt_ckpt_path", "a.pth", "--ms_ckpt_path", "b.ckpt", "hf-to-ms", "a", "b"],
                                  ["ms-to-hf", "a.ckpt", "out", "--dtype", "float16"],
                                  ["hf-to-ms", "a", "b.ckpt", "--dtype", "bfloat16"]])
def test_unusable_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("glm-convert") and "error: " in err
    assert len(err.splitlines()) == 1  # one line, without argparse's usage block


def test_runs_as_a_module():
    result = subprocess.run([sys.executable, "-m", "glm_convert.cli", "--version"], capture_output=True, text=True,
                            check=True)
    assert result.stdout.startswith("glm-convert 0.1.0")
