"""What a conversion writes over: an earlier export is replaced whole, an input never, and Ctrl-C or SIGTERM
in the middle of a write leaves nothing behind."""

import json
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from glm_convert import ConversionError, convert_hf_to_ms, convert_ms_to_hf
from glm_convert.cli import main
from glm_convert.layout import hf_weight_shapes, inv_freq
from glm_convert.model_folder import TOKENIZER_FILES, hf_config
from glm_core import GLMConfig


def files_under(folder) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


@pytest.fixture
def model_folder(golden_hf_dir, tmp_path):
    """The golden weights as a model folder written by hf-to-ms."""
    convert_hf_to_ms(golden_hf_dir, tmp_path / "model")
    return tmp_path / "model"


@pytest.mark.parametrize("first, second", [(True, False), (False, True)], ids=["safetensors-then-bin",
                                                                               "bin-then-safetensors"])
def test_ms_to_hf_replaces_an_earlier_export_whole(model_folder, tmp_path, first, second):
    out = tmp_path / "hf"
    convert_ms_to_hf(model_folder / "model.ckpt", out, safetensors=first, max_shard_size="100KB")
    (out / "modeling_chatglm.py").write_text("# THUDM's code, not an export file\n")
    convert_ms_to_hf(model_folder / "model.ckpt", out, safetensors=second)
    weights = ["model-00001-of-00001.safetensors", "model.safetensors.index.json"] if second else \
        ["pytorch_model-00001-of-00001.bin", "pytorch_model.bin.index.json"]
    assert files_under(out) == sorted(["config.json", "modeling_chatglm.py", *TOKENIZER_FILES, *weights])


def test_hf_to_ms_into_its_source_folder_is_refused(hf_copy, capsys):
    before = {path.name: path.read_bytes() for path in hf_copy.iterdir()}
    assert main(["hf-to-ms", str(hf_copy), str(hf_copy), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err == (f"glm-convert: error: writing {hf_copy} would overwrite the input {hf_copy / 'config.json'}: "
                   "give an output outside the input's folder\n")
    assert {path.name: path.read_bytes() for path in hf_copy.iterdir()} == before


def test_ms_to_hf_into_the_checkpoints_own_folder_is_refused(model_folder):
    before = files_under(model_folder)
    with pytest.raises(ConversionError, match=r"would overwrite the input .*model/config\.json"):
        convert_ms_to_hf(model_folder / "model.ckpt", model_folder)
    assert files_under(model_folder) == before


def test_ms_to_hf_beside_its_checkpoint_with_another_config_is_allowed(golden_hf_dir, tmp_path):
    """The clash is with the inputs actually read: a .ckpt alone in a folder may get its export beside it."""
    convert_hf_to_ms(golden_hf_dir, tmp_path / "glm.ckpt")
    convert_ms_to_hf(tmp_path / "glm.ckpt", tmp_path, config=golden_hf_dir)
    assert "pytorch_model.bin.index.json" in files_under(tmp_path)


@pytest.mark.parametrize("command", ["hf-to-ms", "ms-to-hf"])
def test_destination_under_a_file_is_one_error_line(command, golden_hf_dir, model_folder, tmp_path, capsys):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file\n")
    source = golden_hf_dir if command == "hf-to-ms" else model_folder / "model.ckpt"
    assert main([command, str(source), str(blocker / "out"), "--quiet"]) == 2
    assert capsys.readouterr().err == (f"glm-convert: error: cannot write {blocker / 'out'}: {blocker} is a file, "
                                       "not a folder\n")


def test_checkpoint_destination_that_is_a_folder_is_refused(golden_hf_dir, tmp_path, capsys):
    (tmp_path / "glm.ckpt").mkdir()
    assert main(["hf-to-ms", str(golden_hf_dir), str(tmp_path / "glm.ckpt"), "--quiet"]) == 2
    assert "glm.ckpt is a folder: give the path of the .ckpt file to write" in capsys.readouterr().err
    assert files_under(tmp_path) == ["glm.ckpt"]


def test_folder_destination_that_is_a_file_is_refused(model_folder, tmp_path, capsys):
    target = tmp_path / "hf_export"
    target.write_text("not a folder\n")
    assert main(["ms-to-hf", str(model_folder / "model.ckpt"), str(target), "--quiet"]) == 2
    assert f"{target} is a file: the output is a folder" in capsys.readouterr().err
    assert target.read_text() == "not a folder\n"


@pytest.mark.parametrize("size", ["0", "-1GB", "2 gigs", "1e400GB"])
def test_absurd_shard_sizes_are_one_error_line(model_folder, tmp_path, capsys, size):
    assert main(["ms-to-hf", str(model_folder / "model.ckpt"), str(tmp_path / "hf"), f"--max-shard-size={size}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("glm-convert: error: ") and err.count("\n") == 1
    assert not (tmp_path / "hf").exists()


# ------------------------------------------------------------------------- signals in the middle of a write

# ChatGLM-6B's vocabulary at an eighth of its width: 270 MB of float16 weights, long enough to interrupt.
WIDE = dict(vocab_size=130528, hidden_size=512, num_layers=1, num_heads=8, inner_hidden_size=2048, seq_length=64)


@pytest.fixture(scope="module")
def wide_hf_folder(golden_hf_dir, tmp_path_factory):
    """A Hugging Face folder with the wide shape, two shards, float16."""
    folder = tmp_path_factory.mktemp("wide_hf")
    config = GLMConfig.from_name("glm_6b", **WIDE)
    block = (np.random.default_rng(0).standard_normal(1 << 20) * 0.02).astype(np.float16)
    state = {name: torch.from_numpy(inv_freq(config) if name.endswith("inv_freq") else np.resize(block, shape))
             for name, shape in hf_weight_shapes(config).items()}
    names = list(state)
    shards = {"pytorch_model-00001-of-00002.bin": names[:1], "pytorch_model-00002-of-00002.bin": names[1:]}
    for shard, members in shards.items():
        torch.save({name: state[name] for name in members}, folder / shard)
    index = {"metadata": {"total_size": sum(t.nbytes for t in state.values())},
             "weight_map": {name: shard for shard, members in shards.items() for name in members}}
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    (folder / "config.json").write_text(json.dumps(hf_config(config, "float16")))
    for name in TOKENIZER_FILES:
        shutil.copy(golden_hf_dir / name, folder)
    return folder


def interrupt_when_writing(argv: list[str], watch, signal_number: int) -> subprocess.CompletedProcess:
    """Run glm-convert and send ``signal_number`` as soon as a temporary output file under ``watch`` has
    bytes in it."""
    process = subprocess.Popen([sys.executable, "-m", "glm_convert.cli", *argv, "--quiet"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        partial = [path for path in watch.rglob(".*.partial") if path.stat().st_size > 0]
        if partial:
            process.send_signal(signal_number)
            break
        time.sleep(0.002)
    stdout, stderr = process.communicate(timeout=120)
    assert partial, f"the conversion ended before it could be interrupted: {stdout} {stderr}"
    return subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_during_hf_to_ms_leaves_nothing(wide_hf_folder, tmp_path, signal_number):
    out = tmp_path / "out" / "wide"
    result = interrupt_when_writing(["hf-to-ms", str(wide_hf_folder), str(out)], tmp_path, signal_number)
    assert result.returncode == 128 + signal_number
    assert result.stderr == f"glm-convert: interrupted ({signal.Signals(signal_number).name}); nothing was written\n"
    assert files_under(tmp_path) == []  # not even the folders it made


def test_sigterm_during_ms_to_hf_keeps_the_earlier_export(wide_hf_folder, tmp_path):
    checkpoint = tmp_path / "wide.ckpt"
    convert_hf_to_ms(wide_hf_folder, checkpoint)
    out = tmp_path / "hf"
    convert_ms_to_hf(checkpoint, out, config=wide_hf_folder, max_shard_size="100MB")
    earlier = {name: (out / name).stat().st_mtime_ns for name in files_under(out)}
    result = interrupt_when_writing(["ms-to-hf", str(checkpoint), str(out), "--config", str(wide_hf_folder),
                                     "--safetensors", "--max-shard-size", "100MB"], out, signal.SIGTERM)
    assert result.returncode == 143
    assert {name: (out / name).stat().st_mtime_ns for name in files_under(out)} == earlier
