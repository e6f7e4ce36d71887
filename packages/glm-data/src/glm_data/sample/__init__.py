"""A small synthetic ADGEN-format sample (see README.md here): ``train.json`` and ``dev.json``."""

from pathlib import Path

SAMPLE_DIR = Path(__file__).parent


def sample_file(split: str) -> Path:
    """Path of the shipped sample's ``"train"`` or ``"dev"`` JSON-lines file.

    Raises ValueError for any other split name.
    """
    if split not in ("train", "dev"):
        raise ValueError(f"unknown sample split {split!r}: choose 'train' or 'dev'")
    return SAMPLE_DIR / f"{split}.json"
