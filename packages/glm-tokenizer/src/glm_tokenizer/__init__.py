"""ChatGLM-6B's ice_text tokenizer, with exact parity to the original and no MindSpore or torch."""

from glm_tokenizer.__about__ import __version__
from glm_tokenizer.conventions import PromptLayout, chat_prompt
from glm_tokenizer.tokenizer import ChatGLMTokenizer

__all__ = ["ChatGLMTokenizer", "PromptLayout", "__version__", "chat_prompt"]
