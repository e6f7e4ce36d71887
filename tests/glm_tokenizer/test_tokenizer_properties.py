"""Properties over arbitrary text, checked with hypothesis against the golden ``ice_text.model``."""

import pytest
import sentencepiece as spm
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from glm_tokenizer.tokenizer import _direct_id_encoder

# The strings transformers 4.33 splits out of text in the reference (its special tokens).
SPECIAL_TOKEN_TEXTS = ("<sop>", "<eop>", "<unk>", "<pad>", "[MASK]")
# Text the tokenizer itself rewrites: SentencePiece's space marker and the whitespace tokens.
REWRITTEN_TEXTS = ("▁", "<n>", "<|tab|>", "<|blank_")
# What transformers' decode clean-up rewrites (" '" covers " ' ", " 'm", " 's", " 've", " 're").
CLEANED_UP_TEXTS = (" .", " ?", " !", " ,", " '", " n't")

space_runs = st.integers(min_value=1, max_value=200).map(lambda length: " " * length)
whitespace_heavy_text = st.lists(
    st.one_of(space_runs, st.sampled_from(["\n", "\t", "\r\n", "a", "中文", "x y", "。", "😀", "é"])),
    max_size=24,
).map("".join)
any_text = st.one_of(
    st.text(), whitespace_heavy_text, st.tuples(st.text(), whitespace_heavy_text).map("".join)
)

property_settings = settings(max_examples=200, deadline=None)


@pytest.fixture(scope="module")
def sentencepiece(golden_hf_dir) -> spm.SentencePieceProcessor:
    """SentencePiece alone over the golden model: the reference's engine, without its rules."""
    return spm.SentencePieceProcessor(model_file=str(golden_hf_dir / "ice_text.model"))


def reference_preprocess(text: str) -> str:
    """The original tokenizer's whitespace rewrite, verbatim in behaviour: 80 ``str.replace`` calls."""
    text = text.replace("\n", "<n>").replace("\t", "<|tab|>")
    for length in range(80, 1, -1):
        text = text.replace(" " * length, f"<|blank_{length}|>")
    return text


@property_settings
@given(text=any_text)
def test_encode_never_raises_and_yields_ids_with_a_piece(tokenizer, text):
    ids = tokenizer.encode(text)
    assert ids[-2:] == [tokenizer.gmask_token_id, tokenizer.bos_token_id]
    assert all(0 <= index < tokenizer.num_pieces for index in ids)


@property_settings
@given(text=any_text)
def test_encode_equals_sentencepiece_over_the_reference_preprocessing(tokenizer, sentencepiece, text):
    """The one-pass whitespace rewrite gives the ids of the reference's 80 replaces."""
    assume(not any(special in text for special in SPECIAL_TOKEN_TEXTS))
    assert tokenizer.encode(text, add_special_tokens=False) == sentencepiece.encode(
        reference_preprocess(text)
    )


@property_settings
@given(text=any_text)
def test_decode_inverts_encode_for_text_the_normaliser_keeps(tokenizer, sentencepiece, text):
    """``decode(encode(t)) == t`` whenever nothing on the way legitimately changes ``t``.

    How we tell: SentencePiece's own normaliser (``nmt_nfkc``, dummy prefix, extra-whitespace removal)
    maps the preprocessed text to itself with spaces as ``▁`` and one ``▁`` in front. That excludes
    leading/trailing single spaces, ``\\r``, control characters, full-width punctuation and other NFKC
    changes. Also excluded, since the reference changes them too: spelled-out special tokens, text that
    already holds ``▁``/``<n>``/``<|tab|>``/``<|blank_``, and spaces before punctuation (decode's
    clean-up).
    """
    assume(not any(part in text for part in SPECIAL_TOKEN_TEXTS + REWRITTEN_TEXTS + CLEANED_UP_TEXTS))
    preprocessed = reference_preprocess(text)
    assume(sentencepiece.normalize(preprocessed) == "▁" + preprocessed.replace(" ", "▁"))
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text


@property_settings
@given(text=whitespace_heavy_text)
def test_decode_inverts_encode_for_whitespace_between_words(tokenizer, text):
    """Runs of spaces, tabs and newlines inside text come back exactly (no ``\\r``, no edge spaces)."""
    text = "a" + text.replace("\r", "") + "b"
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text


@property_settings
@given(ids=st.lists(st.integers(min_value=-5, max_value=200_000), max_size=50))
def test_decode_of_any_ids_returns_text(tokenizer, ids):
    assert isinstance(tokenizer.decode(ids), str)


def test_without_the_binding_the_public_encode_is_used():
    class OlderSentencePiece:
        def encode(self, text):
            return [len(text)]

    processor = OlderSentencePiece()
    assert _direct_id_encoder(processor) == processor.encode
