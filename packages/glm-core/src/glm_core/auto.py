"""AutoConfig, AutoModel and AutoTokenizer: load a model by folder or by name, as MindFormers users do.

A model folder holds ``config.json`` (Hugging Face's or ours), one ``.ckpt`` (or ``rank_0/`` holding one, as
MindSpore writes them) and the tokenizer's ``ice_text.model`` + ``tokenizer_config.json``;
``GLMChatModel.save_pretrained`` and ``ChatGLMTokenizer.save_pretrained`` write one. The names ``glm_6b`` and
``glm_6b_chat`` are looked up under the checkpoint home, ``$GLM_HOME`` (default ``./checkpoint_download/glm``,
MindFormers' download folder), either as a model folder ``<home>/<name>/`` or in MindFormers' flat layout
``<home>/<name>.ckpt`` + ``<home>/ice_text.model``. Nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glm_core.__about__ import __version__
from glm_core.chat import GLMChatModel
from glm_core.checkpoint import checkpoint_dtype, load_checkpoint, open_checkpoint
from glm_core.config import CONFIG_NAME, PRESETS, GLMConfig
from glm_core.lora import LoRAConfig, load_adapter
from glm_core.model import skip_random_init
from glm_core.names import parameter_count
from glm_core.quantize import DEFAULT_GROUP_SIZE, HEAD_STORAGE, storage_of_bits
from glm_core.quantized_model import checkpoint_storage, prepare_for_checkpoint
from glm_tokenizer import ChatGLMTokenizer
from glm_tokenizer.tokenizer import VOCAB_FILE

GLM_HOME_ENV = "GLM_HOME"
DEFAULT_HOME = Path("checkpoint_download") / "glm"
NAMED_MODELS = ("glm_6b", "glm_6b_chat")


class ModelNotFoundError(FileNotFoundError):
    """A model folder or named model whose files are missing; the message says which and where."""


def glm_home() -> Path:
    """The checkpoint home: ``$GLM_HOME``, else ``./checkpoint_download/glm``."""
    return Path(os.environ.get(GLM_HOME_ENV) or DEFAULT_HOME)


@dataclass
class ModelFiles:
    """Where a model's parts are: its config, its checkpoint and its tokenizer folder."""

    config: GLMConfig
    checkpoint: Path
    tokenizer_dir: Path
    config_file: Path | None  # None when the config is a named preset (MindFormers' flat layout)


def single_checkpoint(directory: Path) -> Path | None:
    """The one ``.ckpt`` in ``directory`` (or its ``rank_0/``); None if there is none.

    Raises :class:`ModelNotFoundError` naming the folder when it holds more than one.
    """
    for folder in (directory, directory / "rank_0"):
        # save_checkpoint's temporary files start with a dot: never a finished checkpoint.
        found = sorted(p for p in folder.glob("*.ckpt") if not p.name.startswith("."))
        if len(found) > 1:
            names = ", ".join(p.name for p in found)
            raise ModelNotFoundError(f"{folder} holds {len(found)} checkpoints ({names}): a model folder "
                                     "holds exactly one .ckpt; move the others away")
        if found:
            return found[0]
    return None


def _folder_files(directory: Path) -> ModelFiles:
    """The parts of a model folder; raises :class:`ModelNotFoundError` naming what is missing."""
    checkpoint = single_checkpoint(directory)
    if checkpoint is None:
        hint = ("it holds Hugging Face weights (pytorch_model*.bin): convert them with glm-convert first"
                if any(directory.glob("pytorch_model*.bin")) or any(directory.glob("*.safetensors"))
                else "expected one .ckpt file (or rank_0/ holding one)")
        raise ModelNotFoundError(f"no MindSpore checkpoint in {directory}: {hint}")
    missing = [name for name in (CONFIG_NAME, VOCAB_FILE) if not (directory / name).is_file()]
    if missing:
        raise ModelNotFoundError(f"{directory} lacks {' and '.join(missing)}: a model folder holds "
                                 "config.json, one .ckpt, ice_text.model and tokenizer_config.json")
    return ModelFiles(GLMConfig.from_pretrained(directory), checkpoint, directory, directory / CONFIG_NAME)


def _named_files(name: str) -> ModelFiles:
    home = glm_home()
    folder = home / name
    if folder.is_dir():
        return _folder_files(folder)
    flat_checkpoint = home / f"{name}.ckpt"
    if flat_checkpoint.is_file() and (home / VOCAB_FILE).is_file():
        return ModelFiles(GLMConfig.from_name(name), flat_checkpoint, home, None)
    raise ModelNotFoundError(
        f"model '{name}' is not under the checkpoint home {home.resolve()} (set ${GLM_HOME_ENV} to change "
        "it): "
        f"expected the folder {folder.resolve()}/ holding config.json, one .ckpt, ice_text.model and "
        f"tokenizer_config.json, or MindFormers' files {flat_checkpoint.resolve()} and "
        f"{(home / VOCAB_FILE).resolve()}; nothing is downloaded: make the folder from a Hugging Face "
        f"THUDM/chatglm-6b download with: glm-convert hf-to-ms PATH/TO/chatglm-6b {folder.resolve()}")


def locate(name_or_dir: str | os.PathLike) -> ModelFiles:
    """Find a model's config, checkpoint and tokenizer from a folder or a name (``glm_6b``, ``glm_6b_chat``).

    Raises :class:`ModelNotFoundError` saying which files are expected where.
    """
    path = Path(name_or_dir)
    if path.is_dir():
        return _folder_files(path)
    if str(name_or_dir) in NAMED_MODELS:
        return _named_files(str(name_or_dir))
    if path.exists():
        raise ModelNotFoundError(f"{path} is a file: pass the model folder that holds it")
    raise ModelNotFoundError(f"'{name_or_dir}' is neither a model folder nor a known model name "
                             f"({', '.join(NAMED_MODELS)})")


class AutoConfig:
    """``AutoConfig.from_pretrained(name_or_dir)`` → :class:`GLMConfig`."""

    @staticmethod
    def from_pretrained(name_or_dir: str | os.PathLike, **overrides: Any) -> GLMConfig:
        """A folder's (or ``config.json``'s) config, a named model's config, or a preset (``glm_tiny`` …).

        A named model's config comes from its files when present, else from the preset of that name.
        ``overrides`` replace fields. Raises ``FileNotFoundError``/``ValueError`` for what cannot be read.
        """
        path = Path(name_or_dir)
        if path.exists():
            config = GLMConfig.from_pretrained(path)
        elif str(name_or_dir) in NAMED_MODELS and (glm_home() / str(name_or_dir) / CONFIG_NAME).is_file():
            config = GLMConfig.from_pretrained(glm_home() / str(name_or_dir))
        elif str(name_or_dir) in PRESETS:
            config = GLMConfig.from_name(str(name_or_dir))
        else:
            raise ModelNotFoundError(f"'{name_or_dir}' is neither a config.json, a model folder nor a known "
                                     f"config name ({', '.join(sorted(PRESETS))})")
        return dataclasses.replace(config, **overrides)


class AutoModel:
    """``AutoModel.from_pretrained(name_or_dir)`` → a loaded :class:`GLMChatModel`."""

    @staticmethod
    def from_pretrained(name_or_dir: str | os.PathLike, *, adapter: str | os.PathLike | None = None,
                        lora_config: LoRAConfig | None = None, quantization_bit: int | None = None,
                        weight_storage: str | None = None, group_size: int | None = None,
                        **overrides: Any) -> GLMChatModel:
        """Build the inference model from a folder or name and load its checkpoint.

        ``adapter``: a LoRA adapter checkpoint to fold into the loaded weights (:func:`glm_core.lora.load_adapter`;
        ``lora_config`` for one that stores no pet_config), giving the model a merged checkpoint would.

        The weights keep the checkpoint's dtype (float16 for the released ChatGLM-6B: a float32 copy of it
        takes 24.7 GB) unless ``param_init_type`` is among the ``overrides``, which replace config fields
        (e.g. ``compute_dtype="float16"``). The model is built without random weights and the checkpoint
        streamed into it, so memory holds the weights once.

        ``quantization_bit`` 8 or 4 (the original's argument), or ``weight_storage`` ``"float16"``, ``"int8"``
        or ``"int4"`` (``group_size`` inputs per int4 scale): the Linear weights are stored so for the CPU
        kernels, after loading and folding any adapter (:meth:`~glm_core.model.GLMForPreTraining.quantize`). A
        quantized checkpoint (``glm-convert hf-to-ms --quantize``) loads as it is stored, without a float copy.

        Raises :class:`ModelNotFoundError` for missing files, ``ValueError`` for an unreadable checkpoint, a
        storage other than a quantized checkpoint's or an adapter on one, and ``CheckpointMismatchError`` for
        one that does not fit the config.
        """
        files = locate(name_or_dir)
        storage = storage_of_bits(quantization_bit) if quantization_bit is not None else weight_storage
        stored = stored_storage(files.checkpoint, files.config)
        if stored is not None:
            if storage is not None and storage != stored[0]:
                raise ValueError(f"{files.checkpoint} holds {stored[0]} weights; it cannot be loaded as {storage} "
                                 "(convert the original checkpoint again for another storage)")
            if adapter is not None:
                raise ValueError(f"{files.checkpoint} holds {stored[0]} weights; fold a LoRA adapter into the "
                                 "unquantized checkpoint, then quantize")
            config = dataclasses.replace(files.config, **{**overrides, "param_init_type": "float32"})
            with skip_random_init():
                model = GLMChatModel(config)
            prepare_for_checkpoint(model, *stored)
            load_checkpoint(model, files.checkpoint)
            return model
        overrides.setdefault("param_init_type", checkpoint_dtype(files.checkpoint))
        config = dataclasses.replace(files.config, **overrides)
        with skip_random_init():
            model = GLMChatModel(config)
        load_checkpoint(model, files.checkpoint)
        if adapter is not None:
            load_adapter(model, adapter, lora_config)
        if storage is not None and storage != "float32":
            model.quantize(storage, group_size or DEFAULT_GROUP_SIZE)
        return model

    @staticmethod
    def from_config(config: GLMConfig) -> GLMChatModel:
        """An inference model with freshly initialised weights."""
        return GLMChatModel(config)


class AutoTokenizer:
    """``AutoTokenizer.from_pretrained(name_or_dir)`` → :class:`glm_tokenizer.ChatGLMTokenizer`."""

    @staticmethod
    def from_pretrained(name_or_dir: str | os.PathLike) -> ChatGLMTokenizer:
        """The tokenizer of a folder holding ``ice_text.model`` or of a named model.

        Raises :class:`ModelNotFoundError` when the vocabulary file is missing.
        """
        path = Path(name_or_dir)
        if path.is_dir():
            if not (path / VOCAB_FILE).is_file():
                raise ModelNotFoundError(f"no tokenizer in {path}: expected {path / VOCAB_FILE} "
                                         "(and tokenizer_config.json)")
            return ChatGLMTokenizer.from_pretrained(path)
        return ChatGLMTokenizer.from_pretrained(locate(name_or_dir).tokenizer_dir)


def stored_storage(checkpoint: Path, config: GLMConfig) -> tuple[str, int | None] | None:
    """How a checkpoint stores its Linears, read from its headers: ``(storage, int4 group size or None)`` for a
    quantized one (float16 Linears beside float32 layernorms included), None for a plain one.

    Raises like :func:`glm_core.checkpoint.open_checkpoint`, and ``ValueError`` for Linears in no known storage.
    """
    with open_checkpoint(checkpoint) as reader:
        dtypes = {name: tensor.stored_dtype.name for name, tensor in reader.tensors.items()
                  if tensor.stored_dtype is not None}
        shapes = {name: tensor.shape for name, tensor in reader.tensors.items()}
    try:
        return checkpoint_storage(dtypes, shapes, config.hidden_size)
    except ValueError as error:
        raise ValueError(f"{checkpoint}: {error}") from None


def decode_step_bytes(checkpoint: Path) -> int:
    """Bytes of weights a decode step reads from a checkpoint's model: every tensor but the word embeddings,
    of which a step reads one row per token."""
    with open_checkpoint(checkpoint) as reader:
        return sum(tensor.nbytes for name, tensor in reader.tensors.items()
                   if not name.endswith("word_embeddings.embedding_table"))


def model_info(name_or_dir: str | os.PathLike) -> dict[str, Any]:
    """What ``glm info`` shows: where the files are, the config, parameter count, dtypes, how the Linears are
    stored and the bytes of weights a decode step reads, and versions.

    Reads no weights. Raises :class:`ModelNotFoundError` like :func:`locate`.
    """
    import mindspore

    files = locate(name_or_dir)
    config = files.config
    stored = stored_storage(files.checkpoint, config)
    storage = stored[0] if stored is not None else checkpoint_dtype(files.checkpoint)
    if stored is not None and stored[1] is not None:
        storage = f"{storage} (groups of {stored[1]})"
    if stored is not None and HEAD_STORAGE[stored[0]] != stored[0]:
        storage = f"{storage}, LM head {HEAD_STORAGE[stored[0]]}"
    return {
        "model": str(name_or_dir),
        "config_file": str(files.config_file) if files.config_file else f"preset {name_or_dir}",
        "checkpoint": str(files.checkpoint),
        "checkpoint_bytes": files.checkpoint.stat().st_size,
        "tokenizer": str(files.tokenizer_dir / VOCAB_FILE),
        "parameters": parameter_count(config),
        "param_dtype": config.param_init_type,
        "weight_storage": storage,
        "decode_step_bytes": decode_step_bytes(files.checkpoint),
        "compute_dtype": config.compute_dtype,
        "glm_core_version": __version__,
        "mindspore_version": mindspore.__version__,
        "config": config.to_dict(),
    }
