"""What a conversion did, as the API returns it and the command line prints it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ConversionSummary:
    """``output``: the checkpoint file or folder written; ``bytes``: the size of the weights files."""

    output: Path
    tensors: int
    parameters: int
    bytes: int
    seconds: float

    def __str__(self) -> str:
        rate = self.bytes / 1e6 / self.seconds if self.seconds > 0 else float("inf")
        return (f"wrote {self.output}: {self.tensors} tensors, {self.parameters:,} parameters, "
                f"{self.bytes / 1e6:,.1f} MB in {self.seconds:.1f} s ({rate:,.0f} MB/s)")
