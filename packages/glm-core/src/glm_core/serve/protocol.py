"""The requests of OpenAI's API that ``glm serve`` answers, and how a chat's messages become ChatGLM's prompt.

Pydantic checks each field's type and range (a failure is HTTP 422, as FastAPI answers malformed JSON);
what parses but cannot be honoured (``n`` > 1, log-probabilities, tools, an unknown parameter, messages that
do not make a ChatGLM conversation) raises :class:`APIError`, HTTP 400, naming the parameter.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_STOP_STRINGS = 4  # as OpenAI's API

# Parameters of OpenAI's API that are accepted and have no effect here.
IGNORED_PARAMETERS = frozenset({"user", "metadata", "store", "service_tier", "parallel_tool_calls"})


class APIError(Exception):
    """A request the server refuses: HTTP ``status`` with OpenAI's error body (``message``, ``type``,
    ``param``, ``code``)."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 error_type: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.error_type = status, message, param, code, error_type

    def body(self) -> dict[str, Any]:
        """The JSON body OpenAI's clients read: ``{"error": {message, type, param, code}}``."""
        return {"error": {"message": self.message, "type": self.error_type, "param": self.param,
                          "code": self.code}}


def unsupported(parameter: str, why: str) -> APIError:
    return APIError(400, f"{parameter}: {why}", param=parameter, code="unsupported_parameter")


class StreamOptions(BaseModel):
    include_usage: bool = False  # a last chunk with the token counts and no choices


class SamplingRequest(BaseModel):
    """The parameters both endpoints share. Unknown ones are kept (``extra``) to be refused by name."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None  # echoed back as the served model's name, whatever was asked
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)  # OpenAI's newer name for max_tokens
    temperature: float | None = Field(default=None, ge=0, le=2)  # 0: greedy
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = Field(default=None, ge=0)
    stop: str | list[str] | None = None
    n: int = Field(default=1, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[str, float] | None = None
    logprobs: Any = None
    top_logprobs: int | None = None

    def check_supported(self) -> None:
        """Raise :class:`APIError` (400) for a parameter this server cannot honour."""
        if self.n != 1:
            raise unsupported("n", f"only n=1 is supported (one answer per request), got {self.n}")
        if self.presence_penalty or self.frequency_penalty:
            name = "presence_penalty" if self.presence_penalty else "frequency_penalty"
            raise unsupported(name, "penalties are not supported; leave it at 0")
        if self.logit_bias:
            raise unsupported("logit_bias", "not supported")
        if self.logprobs not in (None, False, 0) or self.top_logprobs:
            raise unsupported("logprobs", "log-probabilities are not returned by this server")
        if self.max_tokens is not None and self.max_completion_tokens is not None:
            raise APIError(400, "give max_tokens or max_completion_tokens, not both", param="max_tokens")
        for name in sorted(set(self.model_extra or {}) - IGNORED_PARAMETERS):
            raise APIError(400, f"unknown parameter '{name}'", param=name, code="unknown_parameter")

    @property
    def new_tokens_limit(self) -> int | None:
        return self.max_tokens if self.max_tokens is not None else self.max_completion_tokens

    @property
    def stop_strings(self) -> list[str]:
        """``stop`` as a list of non-empty strings; raises :class:`APIError` for more than four."""
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > MAX_STOP_STRINGS:
            raise APIError(400, f"stop: at most {MAX_STOP_STRINGS} strings, got {len(stops)}", param="stop")
        return [stop for stop in stops if stop]


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")  # name, tool_calls …: refused below when they matter

    role: str
    content: str | list[TextPart | dict[str, Any]] | None = None

    def text(self, index: int) -> str:
        """The message's text (parts of type ``text`` joined); raises :class:`APIError` for anything else."""
        param = f"messages[{index}].content"
        if self.content is None:
            raise APIError(400, f"{param}: a {self.role} message needs text content (tool calls are not "
                                "supported)", param=param)
        if isinstance(self.content, str):
            return self.content
        texts = []
        for part in self.content:
            if not isinstance(part, TextPart):
                kind = part.get("type", "unknown")
                raise APIError(400, f"{param}: only text parts are supported, got a part of type '{kind}'",
                               param=param)
            texts.append(part.text)
        return "".join(texts)


class ChatCompletionRequest(SamplingRequest):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessage] = Field(min_length=1)
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    function_call: Any = None
    response_format: dict[str, Any] | None = None

    def check_supported(self) -> None:
        super().check_supported()
        for name in ("tools", "functions"):
            if getattr(self, name):
                raise unsupported(name, "tool and function calling are not supported by ChatGLM-6B")
        if self.response_format and self.response_format.get("type", "text") != "text":
            raise unsupported("response_format", "only {\"type\": \"text\"} is supported")


class CompletionRequest(SamplingRequest):
    """``POST /v1/completions``."""

    prompt: str | list[str]
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = Field(default=None, ge=1)

    def check_supported(self) -> None:
        super().check_supported()
        if self.echo:
            raise unsupported("echo", "echoing the prompt is not supported")
        if self.suffix:
            raise unsupported("suffix", "insertion after a suffix is not supported")
        if self.best_of not in (None, 1):
            raise unsupported("best_of", f"only best_of=1 is supported, got {self.best_of}")

    @property
    def prompt_text(self) -> str:
        """The one prompt; raises :class:`APIError` for a list of other than one string."""
        if isinstance(self.prompt, str):
            return self.prompt
        if len(self.prompt) != 1:
            raise APIError(400, f"prompt: one prompt per request (n=1), got a list of {len(self.prompt)}",
                           param="prompt")
        return self.prompt[0]


SYSTEM_ROLES = ("system", "developer")  # "developer" is OpenAI's newer name for the system role


def chat_turns(messages: list[ChatMessage]) -> tuple[str, list[tuple[str, str]]]:
    """ChatGLM's ``(query, history)`` for OpenAI ``messages``.

    ChatGLM-6B knows rounds of a question and an answer, and no system role. So: leading system (or
    developer) messages, joined by newlines, open the first user message, separated from it by a newline;
    then user and assistant messages must alternate, ending with the user's message, which is the query;
    each earlier user message and the assistant's reply after it make one round of history. Raises
    :class:`APIError` (400) naming the first message that breaks this.
    """
    system: list[str] = []
    index = 0
    while index < len(messages) and messages[index].role in SYSTEM_ROLES:
        system.append(messages[index].text(index))
        index += 1
    turns = []
    for position, message in enumerate(messages[index:], start=index):
        expected = "user" if (position - index) % 2 == 0 else "assistant"
        if message.role != expected:
            raise APIError(400, f"messages[{position}]: expected a '{expected}' message, got role "
                                f"'{message.role}'; after optional system messages, user and assistant "
                                "messages alternate and the last is the user's", param=f"messages[{position}]")
        turns.append(message.text(position))
    if not turns or len(turns) % 2 == 0:
        raise APIError(400, "messages: the last message must be the user's", param="messages")
    if system:
        turns[0] = "\n".join(system) + "\n" + turns[0]
    history = list(zip(turns[:-1:2], turns[1::2]))
    return turns[-1], history
