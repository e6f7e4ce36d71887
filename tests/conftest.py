"""Shared fixtures: where the golden reference data lives and how to read it.

Kept free of heavy imports (no MindSpore, no torch): every package's isolated test
environment loads this file.
"""

import json
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
GOLDEN = FIXTURES / "golden" / "tiny"


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    """``tests/fixtures/golden/tiny``: outputs of the original THUDM ChatGLM-6B code."""
    return GOLDEN


@pytest.fixture(scope="session")
def golden_hf_dir() -> Path:
    """The tiny checkpoint in the real Hugging Face layout, with its ``ice_text.model``."""
    return GOLDEN / "hf"


@pytest.fixture(scope="session")
def golden_case():
    """Load ``cases/<name>.json`` from the golden data."""

    def load(name: str):
        with open(GOLDEN / "cases" / f"{name}.json", encoding="utf-8") as f:
            return json.load(f)

    return load
