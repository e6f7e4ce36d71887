"""glm-data: ADGEN JSON lines to MindRecord records for ChatGLM-6B fine-tuning and evaluation, and their loader."""

from glm_data.__about__ import __version__
from glm_data.adgen import ConversionSummary, adgen_to_mindrecord
from glm_data.errors import DataError
from glm_data.loader import describe_mindrecord, load_dataset, read_records
from glm_tokenizer import chat_prompt  # the one home of the prompt convention, re-exported

__all__ = [
    "ConversionSummary",
    "DataError",
    "__version__",
    "adgen_to_mindrecord",
    "chat_prompt",
    "describe_mindrecord",
    "load_dataset",
    "read_records",
]
