"""Conversion streams: one source file at a time, and glm-core never needs torch to use the result."""

import subprocess
import sys
import weakref

from glm_convert import hf_to_ms
from glm_core.checkpoint_file import CheckpointWriter


def test_each_shard_is_released_before_the_next_is_converted(golden_hf_dir, tmp_path, monkeypatch):
    events = []
    open_file = hf_to_ms.open_weights_file

    def open_and_watch(path):
        file = open_file(path)
        events.append(("open", path.name))
        weakref.finalize(file, events.append, ("release", path.name))
        return file

    write = CheckpointWriter.add

    def add_and_record(self, name, array, dtype=None):
        events.append(("write", name))
        write(self, name, array, dtype)

    monkeypatch.setattr(hf_to_ms, "open_weights_file", open_and_watch)
    monkeypatch.setattr(CheckpointWriter, "add", add_and_record)
    hf_to_ms.convert_hf_to_ms(golden_hf_dir, tmp_path / "glm.ckpt")

    first, second = "pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"
    # Both headers are read first (validation), then shard 1 is written and released before shard 2's tensors.
    assert events[:2] == [("open", first), ("open", second)]
    released = events.index(("release", first))
    assert events[released - 1] == ("write", "transformer.layers.1.input_layernorm.gamma")
    assert events[released + 1] == ("write", "transformer.layers.1.input_layernorm.beta")
    assert events[-2:] == [("write", "lm_head.weight"), ("release", second)]


def test_glm_core_loads_a_converted_checkpoint_without_importing_torch(golden_ckpt, golden_hf_dir):
    program = f"""
import sys
import mindspore as ms
ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
from glm_core import GLMConfig, GLMForPreTraining, generate, load_checkpoint
model = GLMForPreTraining(GLMConfig.from_pretrained({str(golden_hf_dir)!r}), inference=True)
load_checkpoint(model, {str(golden_ckpt)!r})
print(generate(model, [261, 353, 394, 3001, 3004], max_length=8).tolist())
assert "torch" not in sys.modules, "glm-core imported torch"
"""
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[[261, 353, 394, 3001, 3004, 484, 640, 1224]]"
