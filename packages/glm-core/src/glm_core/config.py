"""GLMConfig: the shape and special ids of a ChatGLM-6B model.

One dataclass reads the three forms users have: a Hugging Face ``config.json`` (THUDM/chatglm-6b),
our own ``config.json`` (written by :meth:`GLMConfig.save_pretrained`), and the ``model_config``
block of a MindFormers YAML run config. Named presets cover the real model and our test shapes.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONFIG_NAME = "config.json"
_DTYPES = ("float32", "float16")

# Keys of a THUDM/chatglm-6b config.json whose names differ from ours.
_HF_KEYS = {
    "num_attention_heads": "num_heads",
    "max_sequence_length": "seq_length",
}
# MindFormers' model_config keys whose names differ from ours.
_MINDFORMERS_KEYS = {
    "max_decode_length": "seq_length",
}


@dataclass
class GLMConfig:
    """Hyper-parameters of the GLM network (the first-generation ChatGLM-6B)."""

    vocab_size: int = 130528  # embedding rows; more than the tokenizer's pieces (dead rows exist)
    hidden_size: int = 4096
    num_layers: int = 28
    num_heads: int = 32
    inner_hidden_size: int = 16384  # MLP width
    seq_length: int = 2048  # longest sequence (prompt + answer) the model is run on
    layernorm_epsilon: float = 1e-5
    position_encoding_2d: bool = True  # GLM's 2D rotary: positions + block positions
    bos_token_id: int = 130004  # <sop>
    eos_token_id: int = 130005  # <eop>
    mask_token_id: int = 130000  # [MASK]
    gmask_token_id: int = 130001  # [gMASK]
    pad_token_id: int = 3  # <pad>
    compute_dtype: str = "float32"  # matmuls; float16 is for Ascend/GPU
    param_init_type: str = "float32"  # dtype the weights are held in
    layernorm_compute_type: str = "float32"
    softmax_compute_type: str = "float32"
    use_past: bool = False  # incremental inference with a KV cache (the chat model)
    # The residual scale is alpha = sqrt(2 * alpha_num_layers). The original GLMBlock takes the layer
    # count from a default argument (28) that ChatGLMModel never passes, so every depth uses 28.
    alpha_num_layers: int = 28
    hidden_dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0

    def __post_init__(self):
        self.validate()

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def residual_alpha(self) -> float:
        """GLM's residual scale: a block adds ``ln(x) * alpha`` to its attention and MLP outputs."""
        return (2 * self.alpha_num_layers) ** 0.5

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field when the shape cannot form a GLM network."""
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "inner_hidden_size", "seq_length"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"GLMConfig.{name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"GLMConfig.hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads})"
            )
        if self.position_encoding_2d and self.head_dim % 4:
            raise ValueError(
                f"GLMConfig: head dim hidden_size/num_heads = {self.head_dim} must be divisible by 4 for the "
                "2D rotary embedding (each half of a head is rotated in two halves)"
            )
        if not self.position_encoding_2d:
            raise ValueError("GLMConfig.position_encoding_2d=False is not ChatGLM-6B and is not supported")
        for name in ("compute_dtype", "param_init_type", "layernorm_compute_type", "softmax_compute_type"):
            if getattr(self, name) not in _DTYPES:
                raise ValueError(f"GLMConfig.{name} must be one of {_DTYPES}, got {getattr(self, name)!r}")
        if not 0.0 <= self.hidden_dropout_rate < 1.0 or not 0.0 <= self.attention_dropout_rate < 1.0:
            raise ValueError("GLMConfig dropout rates must lie in [0, 1)")

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> GLMConfig:
        """A named preset (``glm_6b``, ``glm_6b_chat``, ``glm_bench``, ``glm_tiny``), with overrides."""
        if name not in PRESETS:
            raise ValueError(f"unknown GLM config name {name!r}; known: {', '.join(sorted(PRESETS))}")
        return cls(**{**PRESETS[name], **overrides})

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> GLMConfig:
        """Build from a dict in HF, MindFormers or our own spelling; unknown keys are ignored."""
        renamed: dict[str, Any] = {}
        for key, value in values.items():
            key = _HF_KEYS.get(key, _MINDFORMERS_KEYS.get(key, key))
            renamed.setdefault(key, value)
        if "max_sequence_length" in values:  # HF's length wins over MindFormers' decode length
            renamed["seq_length"] = values["max_sequence_length"]
        fields = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in renamed.items() if k in fields})
        except (TypeError, ValueError) as error:
            raise ValueError(f"{source}: {error}") from None

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> GLMConfig:
        """Read a ``config.json`` (HF or ours), or the one inside a model directory."""
        path = Path(path)
        file = path / CONFIG_NAME if path.is_dir() else path
        if not file.is_file():
            raise FileNotFoundError(f"no GLM config at {file}: expected a config.json or a folder holding one")
        try:
            with open(file, encoding="utf-8") as f:
                values = json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(f"{file}: not valid JSON ({error})") from None
        return cls.from_dict(values, source=str(file))

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> GLMConfig:
        """Read the ``model: model_config:`` block of a MindFormers run YAML (e.g. run_glm_6b_finetune.yaml)."""
        import yaml

        with open(path, encoding="utf-8") as f:
            document = yaml.safe_load(f) or {}
        block = document.get("model", {}).get("model_config") or document.get("model_config")
        if not isinstance(block, dict):
            raise ValueError(f"{path}: no 'model: model_config:' block found")
        return cls.from_dict(block, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write ``config.json`` into ``directory`` (created if needed); returns its path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / CONFIG_NAME
        temporary = target.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        os.replace(temporary, target)
        return target


_6B = dict(vocab_size=130528, hidden_size=4096, num_layers=28, num_heads=32, inner_hidden_size=16384, seq_length=2048)
PRESETS: dict[str, dict[str, Any]] = {
    "glm_6b": dict(_6B),
    "glm_6b_chat": dict(_6B, use_past=True),
    # The decode benchmark's shape: the real vocabulary, a quarter of the width, 8 layers.
    "glm_bench": dict(vocab_size=130528, hidden_size=1024, num_layers=8, num_heads=16, inner_hidden_size=4096,
                      seq_length=512),
    # The golden test model (tests/fixtures/golden/tiny): 3200 rows, special ids 3000-3005.
    "glm_tiny": dict(vocab_size=3200, hidden_size=64, num_layers=2, num_heads=4, inner_hidden_size=256,
                     seq_length=256, bos_token_id=3004, eos_token_id=3005, mask_token_id=3000,
                     gmask_token_id=3001, pad_token_id=3),
}
