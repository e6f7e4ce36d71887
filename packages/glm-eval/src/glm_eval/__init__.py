"""BLEU-4 and ROUGE-1/2/L exactly as ChatGLM-6B reports them, without MindSpore."""

from glm_eval.__about__ import __version__
from glm_eval.files import InputFileError, score_file
from glm_eval.scoring import score, score_pair

__all__ = ["InputFileError", "__version__", "score", "score_file", "score_pair"]
