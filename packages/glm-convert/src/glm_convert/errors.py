"""The errors a conversion raises for input the user can fix. All are ``ValueError``s."""

from __future__ import annotations


class ConversionError(ValueError):
    """A checkpoint that cannot be converted; the message says what is wrong and where."""


class UnreadableFileError(ConversionError):
    """A weights file that is truncated, corrupt or of an unknown format; the message names the file."""


class WeightsMismatchError(ConversionError):
    """Weights whose names or shapes do not fit the model config; the message lists every problem."""
