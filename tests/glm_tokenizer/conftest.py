"""Fixtures for the tokenizer tests: one tokenizer over the golden ``ice_text.model``."""

import pytest

from glm_tokenizer import ChatGLMTokenizer


@pytest.fixture(scope="session")
def tokenizer(golden_hf_dir) -> ChatGLMTokenizer:
    """The tokenizer of the tiny golden checkpoint, loaded as a user would load a 6B one."""
    return ChatGLMTokenizer.from_pretrained(golden_hf_dir)


@pytest.fixture(scope="session")
def tokenizer_cases(golden_case) -> list:
    """``cases/tokenizer.json``: each text with the reference's tokens, ids and decodes."""
    return golden_case("tokenizer")["cases"]


@pytest.fixture(scope="session")
def batch_cases(golden_case) -> list:
    """``cases/batch_encode.json``: left-padded batches with masks and 2D position ids."""
    return golden_case("batch_encode")
