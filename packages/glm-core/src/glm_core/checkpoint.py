"""Loading and saving GLM weights as MindSpore ``.ckpt`` files with MindFormers' parameter names.

Linear weights are ``[out, in]`` on disk (MindFormers' and Hugging Face's layout) and in every model.

Both directions stream, one tensor at a time (:mod:`glm_core.checkpoint_file`): ``mindspore.load_checkpoint``
reads the whole file as one protobuf message and refuses a file larger than the free memory, which rules
out ChatGLM-6B (12.4 GB in float16) on a 24 GB host. :func:`load_checkpoint` checks the file's names and
shapes against the model first, then reads each tensor from disk into a new buffer that becomes its
parameter's data, so memory holds the weights once; a model built inside
:func:`glm_core.model.skip_random_init` costs nothing before that.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import mindspore as ms
import numpy as np

from glm_core.checkpoint_file import CheckpointReader, CheckpointWriter
from glm_core.model import GLMForPreTraining
from glm_core.names import hf_name, mindformers_name  # noqa: F401  (re-exported)


class CheckpointMismatchError(ValueError):
    """A checkpoint whose parameter names, shapes or tensor types do not fit the model."""


def model_parameters(model: GLMForPreTraining) -> dict[str, ms.Parameter]:
    """The model's weights by checkpoint name."""
    return {p.name: p for p in model.get_parameters()}


def expected_shapes(model: GLMForPreTraining) -> dict[str, tuple[int, ...]]:
    """Checkpoint name → shape (Linear weights ``[out, in]``)."""
    return {name: tuple(p.shape) for name, p in model_parameters(model).items()}


def open_checkpoint(path: str | os.PathLike) -> CheckpointReader:
    """A reader of the ``.ckpt`` at ``path`` (entry headers parsed, no tensor read yet).

    Raises ``FileNotFoundError`` and :class:`~glm_core.checkpoint_file.UnreadableCheckpointError` (a
    ``ValueError``), both naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return CheckpointReader(path)


def checkpoint_dtype(path: str | os.PathLike) -> str:
    """The dtype (``"float16"`` or ``"float32"``) holding most of the checkpoint's bytes: a released
    ChatGLM-6B is float16 throughout. Raises like :func:`open_checkpoint`, and ``ValueError`` for a
    checkpoint holding no float tensor."""
    with open_checkpoint(path) as reader:
        sizes = Counter()
        for tensor in reader.tensors.values():
            if tensor.dtype is not None:
                sizes[tensor.dtype.name] += tensor.nbytes
    if not sizes:
        raise ValueError(f"{path}: holds no float16 or float32 tensor")
    return sizes.most_common(1)[0][0]


def read_checkpoint(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every tensor of a MindSpore ``.ckpt`` as a numpy array of its stored dtype, in file order.

    Raises like :func:`open_checkpoint`, and ``ValueError`` naming a tensor that is not float16/float32.
    """
    with open_checkpoint(path) as reader:
        if reader.unsupported:
            raise ValueError(f"{path}: {', '.join(reader.unsupported)} are not plain tensors (MindSpore map "
                             "tensors); this reader takes float16 and float32 tensors")
        arrays = {}
        for name, tensor in reader.tensors.items():
            if tensor.dtype is None:
                raise ValueError(f"{path}: {name} is {tensor.tensor_type}, not float16 or float32")
            arrays[name] = np.empty(tensor.shape, tensor.dtype)
            reader.read_into(name, arrays[name])
    return arrays


def check_compatible(model: GLMForPreTraining, shapes: Mapping[str, tuple[int, ...]], source: str,
                     unreadable: Mapping[str, str] | None = None) -> None:
    """Raise :class:`CheckpointMismatchError` listing missing, unexpected and mis-shaped names.

    ``shapes``: the checkpoint's name → shape; ``unreadable``: name → tensor type of its tensors that are
    not float16/float32, listed when the model needs them.
    """
    expected = expected_shapes(model)
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    mismatched = sorted(f"{name}: checkpoint {tuple(shapes[name])}, model {expected[name]}"
                        for name in set(expected) & set(shapes) if tuple(shapes[name]) != expected[name])
    untyped = sorted(f"{name}: {kind}" for name, kind in (unreadable or {}).items() if name in expected)
    if missing or unexpected or mismatched or untyped:
        problems = []
        for title, names in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched),
                             ("not float16 or float32", untyped)):
            if names:
                shown = names[:20] + ([f"... and {len(names) - 20} more"] if len(names) > 20 else [])
                problems.append(f"{title} ({len(names)}): " + ", ".join(shown))
        raise CheckpointMismatchError(f"{source} does not fit the model ({model.config.num_layers} layers, hidden "
                                      f"{model.config.hidden_size}, vocab {model.config.vocab_size}): "
                                      + "; ".join(problems))


def load_state(model: GLMForPreTraining, tensors: Mapping[str, np.ndarray], source: str = "state") -> None:
    """Copy ``tensors`` (checkpoint names and layout) into the model, casting to its parameter dtypes."""
    check_compatible(model, {name: array.shape for name, array in tensors.items()}, source)
    for name, parameter in model_parameters(model).items():
        parameter.set_data(ms.Tensor(np.ascontiguousarray(tensors[name]), dtype=parameter.dtype))


def load_checkpoint(model: GLMForPreTraining, path: str | os.PathLike) -> None:
    """Load a MindSpore ``.ckpt`` (ours or MindFormers') into ``model``, tensor after tensor.

    Each tensor is read into a new buffer of its parameter's dtype (cast from the stored dtype if they
    differ) that replaces the parameter's data: the model's old buffers are freed as the load goes, and
    the peak memory is the model plus one tensor.

    Raises ``FileNotFoundError`` for a missing file, ``ValueError`` for an unreadable one and
    :class:`CheckpointMismatchError` listing every missing, unexpected, mis-shaped or non-float parameter;
    all name the file, and all come before any parameter changes.
    """
    with open_checkpoint(path) as reader:
        shapes = {name: tensor.shape for name, tensor in reader.tensors.items()}
        unreadable = {name: tensor.tensor_type for name, tensor in reader.tensors.items()
                      if tensor.stored_dtype is None}
        for name in reader.unsupported:
            shapes[name], unreadable[name] = (), "a map tensor"
        check_compatible(model, shapes, str(path), unreadable)
        for name, parameter in model_parameters(model).items():
            data = np.empty(parameter.shape, ms.dtype_to_nptype(parameter.dtype))
            reader.read_into(name, data)
            parameter.set_data(ms.Tensor.from_numpy(data))  # takes the buffer as it is, no copy


def state_dict(model: GLMForPreTraining) -> dict[str, np.ndarray]:
    """The model's weights as numpy arrays by checkpoint name."""
    return {name: p.asnumpy() for name, p in model_parameters(model).items()}


def save_checkpoint(tensors: Mapping[str, np.ndarray], path: str | os.PathLike) -> Path:
    """Write ``tensors`` (float16/float32 arrays) as a MindSpore ``.ckpt``, the bytes
    ``mindspore.save_checkpoint`` writes, one tensor at a time.

    Written to a temporary file beside ``path`` (a dot name, which model folders ignore) and renamed into
    place, so an interrupted save leaves any earlier file whole. Returns ``path``.
    """
    path = Path(path)
    if path.suffix != ".ckpt":
        raise ValueError(f"checkpoint path must end in .ckpt: {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.partial.ckpt")
    try:
        with CheckpointWriter(temporary) as writer:
            for name, array in tensors.items():
                writer.add(name, array)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def save_model_checkpoint(model: GLMForPreTraining, path: str | os.PathLike) -> Path:
    """Save a model's weights in checkpoint layout (Linear ``[out, in]``) to ``path``."""
    return save_checkpoint(state_dict(model), path)
