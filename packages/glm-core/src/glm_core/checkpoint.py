"""Loading and saving GLM weights as MindSpore ``.ckpt`` files with MindFormers' parameter names.

Linear weights are ``[out, in]`` on disk (MindFormers' and Hugging Face's layout) and in every model.
"""

from __future__ import annotations

import os
from pathlib import Path

import mindspore as ms
import numpy as np

from glm_core.model import GLMForPreTraining
from glm_core.names import hf_name, mindformers_name  # noqa: F401  (re-exported)


class CheckpointMismatchError(ValueError):
    """A checkpoint whose parameter names or shapes do not fit the model."""


def model_parameters(model: GLMForPreTraining) -> dict[str, ms.Parameter]:
    """The model's weights by checkpoint name."""
    return {p.name: p for p in model.get_parameters()}


def expected_shapes(model: GLMForPreTraining) -> dict[str, tuple[int, ...]]:
    """Checkpoint name → shape (Linear weights ``[out, in]``)."""
    return {name: tuple(p.shape) for name, p in model_parameters(model).items()}


def read_checkpoint(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a MindSpore ``.ckpt`` into numpy arrays; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        parameters = ms.load_checkpoint(str(path))
    except Exception as error:  # MindSpore raises ValueError/RuntimeError with varying texts
        raise ValueError(f"{path}: not a readable MindSpore checkpoint ({error})") from None
    return {name: parameter.asnumpy() for name, parameter in parameters.items()}


def check_compatible(model: GLMForPreTraining, tensors: dict[str, np.ndarray], source: str) -> None:
    """Raise :class:`CheckpointMismatchError` listing missing, unexpected and mis-shaped names."""
    expected = expected_shapes(model)
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    mismatched = sorted(f"{name}: checkpoint {tuple(tensors[name].shape)}, model {expected[name]}"
                        for name in set(expected) & set(tensors) if tuple(tensors[name].shape) != expected[name])
    if missing or unexpected or mismatched:
        lines = [f"{source} does not fit the model ({model.config.num_layers} layers, hidden "
                 f"{model.config.hidden_size}, vocab {model.config.vocab_size}):"]
        for title, names in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
            if names:
                shown = names[:20] + ([f"... and {len(names) - 20} more"] if len(names) > 20 else [])
                lines.append(f"  {title} ({len(names)}): " + ", ".join(shown))
        raise CheckpointMismatchError("\n".join(lines))


def load_state(model: GLMForPreTraining, tensors: dict[str, np.ndarray], source: str = "state") -> None:
    """Copy ``tensors`` (checkpoint names and layout) into the model, casting to its parameter dtypes."""
    check_compatible(model, tensors, source)
    for name, parameter in model_parameters(model).items():
        parameter.set_data(ms.Tensor(np.ascontiguousarray(tensors[name]), dtype=parameter.dtype))


def load_checkpoint(model: GLMForPreTraining, path: str | os.PathLike) -> None:
    """Load a MindSpore ``.ckpt`` (ours or MindFormers') into ``model``.

    Raises ``FileNotFoundError`` for a missing file, ``ValueError`` for an unreadable one and
    :class:`CheckpointMismatchError` listing every missing, unexpected or mis-shaped parameter.
    """
    load_state(model, read_checkpoint(path), source=str(path))


def state_dict(model: GLMForPreTraining) -> dict[str, np.ndarray]:
    """The model's weights as numpy arrays by checkpoint name."""
    return {name: p.asnumpy() for name, p in model_parameters(model).items()}


def save_checkpoint(tensors: dict[str, np.ndarray], path: str | os.PathLike) -> Path:
    """Write ``tensors`` as a MindSpore ``.ckpt`` atomically (temporary file, then rename)."""
    path = Path(path)
    if path.suffix != ".ckpt":
        raise ValueError(f"checkpoint path must end in .ckpt: {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.partial.ckpt")
    entries = [{"name": name, "data": ms.Tensor(np.ascontiguousarray(array))} for name, array in tensors.items()]
    try:
        ms.save_checkpoint(entries, str(temporary))
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def save_model_checkpoint(model: GLMForPreTraining, path: str | os.PathLike) -> Path:
    """Save a model's weights in checkpoint layout (Linear ``[out, in]``) to ``path``."""
    return save_checkpoint(state_dict(model), path)
