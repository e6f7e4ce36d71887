"""The ChatGLM-6B tokenizer: an ``ice_text.model`` SentencePiece model plus the reference's rules.

What the original ``tokenization_chatglm.py`` (THUDM chatglm-6b, run under transformers 4.33) adds on top
of SentencePiece, and what this module reproduces exactly:

- before encoding, ``\\n`` becomes ``<n>``, ``\\t`` becomes ``<|tab|>`` and every run of 2..80 spaces
  becomes ``<|blank_N|>`` (longest first, so 90 spaces are ``<|blank_80|><|blank_10|>``);
- the five Hugging Face special tokens (``<sop> <eop> <unk> <pad> [MASK]``) written in the text are
  not split: they become their own id and the whitespace on either side of them is dropped;
- a sequence is ``text + [gMASK] <sop>`` (``+ answer + <eop>`` for a pair);
- batches are padded on the left with ``<pad>``, with a ``[1, S, S]`` attention mask (True = masked)
  and ``[2, S]`` position ids (positions, block positions) built around ``<sop>``;
- decoding drops ``<pad>``, undoes the whitespace tokens, and applies transformers' clean-up of spaces
  before punctuation (``" ."`` becomes ``"."`` and so on).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Union

import numpy as np
import sentencepiece as spm

from glm_tokenizer.conventions import PromptLayout

VOCAB_FILE = "ice_text.model"
CONFIG_FILE = "tokenizer_config.json"

TextInput = Union[str, Sequence[str]]

# transformers' PreTrainedTokenizerBase.clean_up_tokenization, which the reference's decode applies.
_CLEAN_UP_REPLACEMENTS = (
    (" .", "."),
    (" ?", "?"),
    (" !", "!"),
    (" ,", ","),
    (" ' ", "'"),
    (" n't", "n't"),
    (" 'm", "'m"),
    (" 's", "'s"),
    (" 've", "'ve"),
    (" 're", "'re"),
)
_SPACE_RUN = re.compile("  +")  # measurably faster in CPython's re than " {2,}"
_WHITESPACE_TOKEN = re.compile(r"<n>|<\|tab\|>|<\|blank_\d+\|>")
_PADDING_STRATEGIES = {
    False: None,
    "do_not_pad": None,
    True: "longest",
    "longest": "longest",
    "max_length": "max_length",
}


def _direct_id_encoder(processor):
    """``text -> ids`` for ``processor``: SentencePiece's C++ encoder itself where this version exposes it.

    sentencepiece 0.2's ``encode`` resolves a dozen options in Python on every call, about 30 % of the
    time of encoding a short text (an ADGEN conversion makes 2 calls a line). Its binding takes them
    directly: text, enable_sampling, nbest_size, alpha, add_bos, add_eos, reverse, which are the defaults
    of a processor built from a model alone. Other versions, or a binding that answers differently on a
    probe, get the public ``encode``.
    """
    try:
        binding = processor._processor._EncodeAsIds
        probe = "Probe 探测 <n>  x"
        if binding(probe, False, 0, 0.0, False, False, False) == processor.encode(probe):
            return lambda text: binding(text, False, 0, 0.0, False, False, False)
    except (AttributeError, TypeError, RuntimeError):
        pass
    return processor.encode

class ChatGLMTokenizer:
    """The ChatGLM-6B tokenizer over an ``ice_text.model`` SentencePiece file.

    Every special id is read from the model file (the 6B model's ``[gMASK]`` is 130001, the tiny test
    model's is 3001). Ids from ``num_pieces`` up to the model's embedding size have no piece: ``decode``
    drops them.

    Attributes: ``bos_token_id`` (``<sop>``, starts the answer), ``eos_token_id`` (``<eop>``, ends it),
    ``mask_token_id`` (``[MASK]``), ``gmask_token_id`` (``[gMASK]``, after every prompt),
    ``pad_token_id`` (``<pad>``, left padding); the token strings as ``bos_token`` and so on.
    """

    def __init__(
        self,
        vocab_file: str | Path,
        num_image_tokens: int = 0,
        max_blank_length: int = 80,
        padding_side: str = "left",
        bos_token: str = "<sop>",
        eos_token: str = "<eop>",
        end_token: str = "</s>",
        mask_token: str = "[MASK]",
        gmask_token: str = "[gMASK]",
        pad_token: str = "<pad>",
        unk_token: str = "<unk>",
    ) -> None:
        """Load ``vocab_file`` (an ``ice_text.model``).

        ``num_image_tokens`` shifts every text id up (the original 6B release reserved 20000 image ids;
        the current one uses 0). Raises ``FileNotFoundError`` for a missing file, ``ValueError`` for a
        file that is not a SentencePiece model or lacks a piece the tokenizer needs, and for a
        ``padding_side`` other than ``"left"`` (the model's masks assume left padding).
        """
        if padding_side != "left":
            raise ValueError(f"padding_side={padding_side!r}: ChatGLM-6B only supports left padding.")
        if num_image_tokens < 0:
            raise ValueError(f"num_image_tokens={num_image_tokens} must be >= 0.")
        self.vocab_file = Path(vocab_file)
        if not self.vocab_file.is_file():
            raise FileNotFoundError(
                f"No vocabulary file at {self.vocab_file}: pass the path of a ChatGLM-6B ice_text.model."
            )
        self._model_bytes = self.vocab_file.read_bytes()
        try:
            self._sp = spm.SentencePieceProcessor(model_proto=self._model_bytes)
        except (RuntimeError, OSError) as error:
            raise ValueError(f"{self.vocab_file} is not a readable SentencePiece model: {error}") from error
        self._encode_ids = _direct_id_encoder(self._sp)

        self.num_image_tokens = num_image_tokens
        self.max_blank_length = max_blank_length
        self.padding_side = padding_side
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.end_token = end_token
        self.mask_token = mask_token
        self.gmask_token = gmask_token
        self.pad_token = pad_token
        self.unk_token = unk_token

        blanks = [f"<|blank_{length}|>" for length in range(2, max_blank_length + 1)]
        for piece in ["<n>", "<|tab|>", bos_token, eos_token, mask_token, gmask_token, pad_token, *blanks]:
            if self._sp.piece_to_id(piece) == self._sp.unk_id():
                raise ValueError(
                    f"{self.vocab_file} has no piece {piece!r}: it is not a ChatGLM-6B ice_text.model"
                    " (or max_blank_length / the special tokens do not match it)."
                )
        self._blank_for_run = {" " * length: token for length, token in enumerate(blanks, start=2)}
        self._whitespace_for_token = {"<n>": "\n", "<|tab|>": "\t"}
        self._whitespace_for_token.update({token: run for run, token in self._blank_for_run.items()})

        self.bos_token_id = self.convert_tokens_to_ids(bos_token)
        self.eos_token_id = self.convert_tokens_to_ids(eos_token)
        self.mask_token_id = self.convert_tokens_to_ids(mask_token)
        self.gmask_token_id = self.convert_tokens_to_ids(gmask_token)
        self.pad_token_id = self.convert_tokens_to_ids(pad_token)
        # transformers' special tokens (bos, eos, unk, pad, mask): not split out of text, dropped by
        # skip_special_tokens. [gMASK] is not one of them in the reference.
        self._special_token_ids = {
            token: self.convert_tokens_to_ids(token)
            for token in (bos_token, eos_token, unk_token, pad_token, mask_token)
        }
        self._special_ids = frozenset(self._special_token_ids.values())
        self._special_token_starts = tuple({token[0] for token in self._special_token_ids})
        self._special_token_pattern = re.compile(
            "("
            + "|".join(re.escape(token) for token in sorted(self._special_token_ids, key=len, reverse=True))
            + ")"
        )

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> ChatGLMTokenizer:
        """Load ``directory/ice_text.model`` with the settings of ``directory/tokenizer_config.json``.

        The config is optional (defaults are those of ChatGLM-6B). Raises ``FileNotFoundError`` if the
        model file is missing, ``ValueError`` if the config asks for lower-casing or space removal,
        which ChatGLM-6B never uses and this tokenizer does not implement.
        """
        directory = Path(directory)
        config_path = directory / CONFIG_FILE
        config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
        for unsupported in ("do_lower_case", "remove_space"):
            if config.get(unsupported):
                raise ValueError(
                    f"{config_path} sets {unsupported}=true, which this tokenizer does not support."
                )
        names = (
            "num_image_tokens",
            "max_blank_length",
            "padding_side",
            "bos_token",
            "eos_token",
            "end_token",
            "mask_token",
            "gmask_token",
            "pad_token",
            "unk_token",
        )
        return cls(directory / VOCAB_FILE, **{name: config[name] for name in names if name in config})

    def save_pretrained(self, directory: str | Path) -> tuple[Path, Path]:
        """Write ``ice_text.model`` and ``tokenizer_config.json`` into ``directory`` (created if needed).

        Returns the two paths. The config holds this tokenizer's settings in the reference's format.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        vocab_path = directory / VOCAB_FILE
        config_path = directory / CONFIG_FILE
        vocab_path.write_bytes(self._model_bytes)
        config = {
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            "end_token": self.end_token,
            "gmask_token": self.gmask_token,
            "mask_token": self.mask_token,
            "pad_token": self.pad_token,
            "unk_token": self.unk_token,
            "remove_space": False,
            "do_lower_case": False,
            "tokenizer_class": "ChatGLMTokenizer",
            "num_image_tokens": self.num_image_tokens,
            "max_blank_length": self.max_blank_length,
            "padding_side": self.padding_side,
        }
        config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return vocab_path, config_path

    # Vocabulary ------------------------------------------------------------------------------------

    @property
    def num_pieces(self) -> int:
        """How many text ids have a piece in the model file (the embedding may have more rows)."""
        return self._sp.get_piece_size()

    @property
    def vocab_size(self) -> int:
        """Image ids plus pieces: every id ``encode`` can produce is below this."""
        return self.num_image_tokens + self.num_pieces

    def convert_tokens_to_ids(self, tokens: str | Iterable[str]) -> int | list[int]:
        """Map a piece (or list of pieces) to its id; a piece not in the model maps to ``<unk>``'s id.

        ``<image_N>`` maps to ``N`` when the tokenizer has image ids.
        """
        if isinstance(tokens, str):
            return self._token_to_id(tokens)
        return [self._token_to_id(token) for token in tokens]

    def _token_to_id(self, token: str) -> int:
        if (
            self.num_image_tokens
            and token.startswith("<image_")
            and token.endswith(">")
            and token[7:-1].isdigit()
        ):
            return int(token[7:-1])
        return self._sp.piece_to_id(token) + self.num_image_tokens

    def convert_ids_to_tokens(self, ids: int | Iterable[int]) -> str | list[str]:
        """Map an id (or list of ids) to its piece. Raises ``ValueError`` for an id with no piece."""
        if isinstance(ids, (int, np.integer)):
            return self._id_to_token(int(ids))
        return [self._id_to_token(int(index)) for index in ids]

    def _id_to_token(self, index: int) -> str:
        if 0 <= index < self.num_image_tokens:
            return f"<image_{index}>"
        if not 0 <= index - self.num_image_tokens < self.num_pieces:
            raise ValueError(
                f"Id {index} has no piece: {self.vocab_file} covers ids {self.num_image_tokens}.."
                f"{self.vocab_size - 1}."
            )
        return self._sp.id_to_piece(index - self.num_image_tokens)

    # Encoding --------------------------------------------------------------------------------------

    def _preprocess(self, text: str) -> str:
        """The reference's whitespace rewrite, in one pass over space runs instead of 80 replaces."""
        text = text.replace("\n", "<n>").replace("\t", "<|tab|>")
        if "  " in text:
            text = _SPACE_RUN.sub(self._blank_tokens, text)
        return text

    def _blank_tokens(self, run: re.Match) -> str:
        spaces = run.group()
        if len(spaces) <= self.max_blank_length:
            return self._blank_for_run[spaces]
        # Longer runs: as many of the longest blank as fit, then the rest (a lone space stays a space).
        full, rest = divmod(len(spaces), self.max_blank_length)
        longest = self._blank_for_run[" " * self.max_blank_length]
        return longest * full + self._blank_for_run.get(" " * rest, " " * rest)

    def _split_special_tokens(self, text: str) -> list[str]:
        """Split around special-token strings as transformers 4.33 does: ``[text, token, text, ...]``.

        Text next to a special token loses its whitespace on that side.
        """
        parts = self._special_token_pattern.split(text)
        for index in range(1, len(parts), 2):
            parts[index - 1] = parts[index - 1].rstrip()
            parts[index + 1] = parts[index + 1].lstrip()
        return parts

    def _encode_text(self, text: str, as_pieces: bool) -> list:
        if not isinstance(text, str):
            raise TypeError(f"Text must be a str, got {type(text).__name__}: {text!r:.80}")
        if not self._spells_special_token(text):
            return self._encode_chunk(text, as_pieces)
        encoded = []
        for index, part in enumerate(self._split_special_tokens(text)):
            if index % 2:
                encoded.append(part if as_pieces else self._special_token_ids[part])
            elif part:
                encoded.extend(self._encode_chunk(part, as_pieces))
        return encoded

    def _spells_special_token(self, text: str) -> bool:
        # Almost no text does: a substring test on first characters is far cheaper than the regex.
        for start in self._special_token_starts:
            if start in text:
                return self._special_token_pattern.search(text) is not None
        return False

    def _encode_chunk(self, text: str, as_pieces: bool) -> list:
        try:
            if as_pieces:
                encoded = self._sp.encode(self._preprocess(text), out_type=str)
            else:
                encoded = self._encode_ids(self._preprocess(text))
        except RuntimeError:
            # SentencePiece's message for text that is not valid Unicode (a lone surrogate) is opaque;
            # UTF-8 encoding raises a UnicodeEncodeError (a ValueError) that names the character.
            text.encode("utf-8")
            raise
        if as_pieces or not self.num_image_tokens:
            return encoded
        return [index + self.num_image_tokens for index in encoded]

    def tokenize(self, text: str) -> list[str]:
        """The pieces of ``text`` (no special tokens added), e.g. ``["▁", "你", "好"]``."""
        return self._encode_text(text, as_pieces=True)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """The ids of ``text``, followed by ``[gMASK] <sop>`` when ``add_special_tokens``.

        Raises ``TypeError`` if ``text`` is not a string, ``UnicodeEncodeError`` (a ``ValueError``) if it
        holds a lone surrogate.
        """
        ids = self._encode_text(text, as_pieces=False)
        return self.build_inputs_with_special_tokens(ids) if add_special_tokens else ids

    def build_inputs_with_special_tokens(
        self, token_ids_0: list[int], token_ids_1: list[int] | None = None
    ) -> list[int]:
        """``a + [gMASK, <sop>]``, or ``a + [gMASK, <sop>] + b + [<eop>]`` for a prompt/answer pair."""
        ids = [*token_ids_0, self.gmask_token_id, self.bos_token_id]
        if token_ids_1 is not None:
            ids += [*token_ids_1, self.eos_token_id]
        return ids

    def __call__(
        self,
        text: TextInput,
        padding: bool | str = False,
        max_length: int | None = None,
        truncation: bool = False,
        return_tensors: str | None = None,
        add_special_tokens: bool = True,
    ) -> dict:
        """Encode one text or a batch, as the reference's ``tokenizer(...)`` does.

        ``padding``: ``False``/``"do_not_pad"``, ``True``/``"longest"`` (to the longest in the batch) or
        ``"max_length"``; padding is on the left with ``<pad>``. ``truncation=True`` cuts the text (never
        the special tokens) so each sequence fits ``max_length``.

        Returns a dict with ``input_ids``; when ``padding`` or ``max_length`` is given, also
        ``attention_mask`` (``[1, S, S]`` per sequence, True = masked out) and ``position_ids``
        (``[2, S]``: positions, block positions). With ``return_tensors=None`` values are lists (one
        sequence's, or a list of them for a batch); with ``"np"`` they are arrays with a batch axis:
        int64 ``[B, S]``, bool ``[B, 1, S, S]``, int64 ``[B, 2, S]``.

        Raises ``TypeError`` for a non-string text and ``ValueError`` for an unknown ``padding`` or
        ``return_tensors``, an empty batch, a ``max_length`` not above the number of special tokens,
        ``"max_length"`` padding or truncation without ``max_length``, or a sequence longer than
        ``max_length`` with padding to it and no truncation.
        """
        if not isinstance(text, (str, list, tuple)):
            raise TypeError(f"Text must be a str or a list of str, got {type(text).__name__}.")
        batched = not isinstance(text, str)
        texts = list(text) if batched else [text]
        strategy = _padding_strategy(padding)
        if return_tensors not in (None, "np"):
            raise ValueError(f"return_tensors={return_tensors!r}: only None and 'np' are supported.")
        if batched and not texts:
            raise ValueError("Empty batch: pass at least one text.")
        num_special = 2 if add_special_tokens else 0
        if max_length is not None and max_length <= num_special:
            raise ValueError(
                f"max_length={max_length} is too small: it must exceed the {num_special} special tokens"
                " added to each text."
            )
        if strategy == "max_length" and max_length is None:
            raise ValueError("padding='max_length' needs max_length.")
        if truncation and max_length is None:
            raise ValueError("truncation=True needs max_length.")

        sequences = []
        for text_ in texts:
            ids = self.encode(text_, add_special_tokens=False)
            if truncation and len(ids) + num_special > max_length:
                ids = ids[: max_length - num_special]
            sequences.append(self.build_inputs_with_special_tokens(ids) if add_special_tokens else ids)

        encoding: dict = {}
        if strategy is None and max_length is None:
            encoding["input_ids"] = sequences
        else:
            target = max(map(len, sequences)) if strategy == "longest" else max_length
            rows = [self._pad(ids, target if strategy else len(ids)) for ids in sequences]
            encoding["input_ids"] = [row[0] for row in rows]
            encoding["attention_mask"] = [row[1] for row in rows]
            encoding["position_ids"] = [row[2] for row in rows]

        if return_tensors == "np":
            lengths = {len(ids) for ids in encoding["input_ids"]}
            if len(lengths) > 1:
                raise ValueError(
                    f"Sequences have different lengths {sorted(lengths)}: pass padding=True for arrays."
                )
            encoding = {
                "input_ids": np.asarray(encoding["input_ids"], dtype=np.int64),
                **{key: np.stack(value) for key, value in encoding.items() if key != "input_ids"},
            }
        else:
            encoding = {key: [_to_list(row) for row in value] for key, value in encoding.items()}
            if not batched:
                encoding = {key: value[0] for key, value in encoding.items()}
        return encoding

    def _pad(self, ids: list[int], length: int) -> tuple[list[int], np.ndarray, np.ndarray]:
        """The reference's ``_pad``: left-pad ``ids`` to ``length``, with attention mask and position ids."""
        if len(ids) > length:
            raise ValueError(
                f"A sequence of {len(ids)} tokens does not fit max_length={length}: pass truncation=True."
            )
        padded = [self.pad_token_id] * (length - len(ids)) + ids
        layout = PromptLayout.of(padded, pad_token_id=self.pad_token_id, bos_token_id=self.bos_token_id,
                                 mask_token_id=self.mask_token_id, gmask_token_id=self.gmask_token_id)
        return padded, layout.attention_mask(0, length, length)[0], layout.position_ids(0, length)[0]

    # Decoding --------------------------------------------------------------------------------------

    def decode(
        self,
        ids: int | Iterable[int],
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool = True,
    ) -> str:
        """The text of ``ids`` (a list, an array or a single id), as the reference decodes it.

        ``<pad>`` is always dropped; ``skip_special_tokens`` also drops ``<sop> <eop> <unk> [MASK]``
        (the reference keeps ``[gMASK]``). Ids with no piece in the model file (the 6B embedding's rows
        130344..130527, the tiny model's 3088..3199) and image ids are dropped rather than raising.
        ``clean_up_tokenization_spaces`` removes a space before ``. ? ! ,`` and English contractions,
        as transformers 4.33 did by default.
        """
        ids = [int(ids)] if isinstance(ids, (int, np.integer)) else [int(index) for index in ids]
        dropped = self._special_ids if skip_special_tokens else {self.pad_token_id}
        first, end = self.num_image_tokens, self.vocab_size
        text = self._sp.decode(
            [index - first for index in ids if first <= index < end and index not in dropped]
        )
        if "<" in text:
            text = _WHITESPACE_TOKEN.sub(self._whitespace, text)
        if clean_up_tokenization_spaces:
            for old, new in _CLEAN_UP_REPLACEMENTS:
                text = text.replace(old, new)
        return text

    def _whitespace(self, token: re.Match) -> str:
        return self._whitespace_for_token.get(token.group(), token.group())

    def batch_decode(self, sequences: Iterable[Iterable[int]], **decode_options) -> list[str]:
        """``decode`` each sequence of a batch (lists or a 2D array); options as for ``decode``."""
        return [self.decode(ids, **decode_options) for ids in sequences]


def _padding_strategy(padding: bool | str) -> str | None:
    try:
        return _PADDING_STRATEGIES[padding]
    except (KeyError, TypeError):
        raise ValueError(
            f"padding={padding!r}: use False, True, 'do_not_pad', 'longest' or 'max_length'."
        ) from None


def _to_list(value):
    return value.tolist() if isinstance(value, np.ndarray) else value
