"""The HTTP server behind ``glm serve``: OpenAI's chat and completion endpoints over one ChatGLM model.

:func:`create_app` builds the FastAPI application for a loaded model; :func:`serve` loads a model folder or
name and runs it under uvicorn. Routes:

- ``POST /v1/chat/completions`` and ``POST /v1/completions``, streamed as server-sent events
  (``stream: true``, ending with ``data: [DONE]``) or answered whole;
- ``GET /v1/models``, ``GET /health``, and ``GET /``: the chat page (``static/index.html``).

Generation runs in a :class:`~glm_core.serve.worker.GenerationWorker` thread, one request at a time in
arrival order. With an API key, every ``/v1/`` route wants ``Authorization: Bearer KEY`` (401 without).
Errors have OpenAI's body ``{"error": {"message", "type", "param", "code"}}``: 422 for a body that is not
JSON or has a field of the wrong type or range, 400 for what cannot be honoured, 503 when the queue is full.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import secrets
import signal
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from glm_core.chat import GLMChatModel, process_response
from glm_core.generation import generator_for
from glm_core.generation_config import CHAT_GENERATION, GenerationConfig
from glm_core.serve.protocol import (
    APIError,
    ChatCompletionRequest,
    CompletionRequest,
    SamplingRequest,
    chat_turns,
)
from glm_core.serve.worker import GenerationJob, GenerationWorker, TextStream
from glm_tokenizer import chat_prompt

logger = logging.getLogger(__name__)

DEFAULT_MAX_QUEUE = 64  # requests waiting for the model beyond this get 503


@dataclasses.dataclass
class ServedModel:
    """What the routes share: the model, its tokenizer, the name it is served under, the generation
    defaults that a request's parameters override, and the worker that runs it."""

    model: GLMChatModel
    tokenizer: Any
    name: str
    defaults: GenerationConfig
    worker: GenerationWorker
    max_queue: int
    created: int = dataclasses.field(default_factory=lambda: int(time.time()))

    def generation_config(self, request: SamplingRequest, prompt_length: int, prompt_name: str) -> GenerationConfig:
        """The request's sampling over the defaults, with the number of new tokens settled.

        ``temperature`` 0 is greedy; any other temperature samples. Without ``max_tokens`` the answer may
        fill the context (or the server's default length). Raises :class:`APIError` (400) when the prompt
        and ``max_tokens`` exceed the model's context.
        """
        seq_length = self.model.config.seq_length
        asked = request.new_tokens_limit
        if prompt_length >= seq_length:
            raise APIError(400, f"this model's maximum context length is {seq_length} tokens and the "
                                f"{prompt_name} take {prompt_length}: no room is left for an answer; shorten the "
                                f"{prompt_name}", param=prompt_name, code="context_length_exceeded")
        if asked is not None and prompt_length + asked > seq_length:
            raise APIError(400, f"this model's maximum context length is {seq_length} tokens; the {prompt_name} "
                                f"take {prompt_length} and max_tokens asks for {asked} more ({prompt_length + asked} "
                                f"in all): shorten the {prompt_name} or lower max_tokens",
                           param="max_tokens", code="context_length_exceeded")
        room = min(self.defaults.max_length or seq_length, seq_length) - prompt_length
        if self.defaults.max_new_tokens is not None:
            room = min(self.defaults.max_new_tokens, seq_length - prompt_length)
        new_tokens = asked if asked is not None else max(room, 1)
        sampling: dict[str, Any] = {"top_p": request.top_p, "seed": request.seed}
        if request.temperature == 0:
            sampling["do_sample"] = False
        elif request.temperature is not None:
            sampling.update(do_sample=True, temperature=request.temperature)
        config = dataclasses.replace(self.defaults.updated(**sampling), max_length=None, max_new_tokens=new_tokens)
        return config

    def submit(self, input_ids: list[int], config: GenerationConfig) -> GenerationJob:
        """Queue a generation; raises :class:`APIError` (503) when :attr:`max_queue` requests already wait."""
        if self.worker.queued >= self.max_queue:
            raise APIError(503, f"the server is busy: {self.worker.queued} requests are waiting for the model; "
                                "retry later", error_type="server_error", code="server_busy")
        job = GenerationJob(input_ids, config, asyncio.get_running_loop())
        self.worker.submit(job)
        return job


@dataclasses.dataclass
class Reply:
    """Builds the response bodies of one request, chat or completion, in OpenAI's shapes."""

    chat: bool
    model: str
    id: str = ""
    created: int = dataclasses.field(default_factory=lambda: int(time.time()))

    def __post_init__(self):
        self.id = self.id or f"{'chatcmpl' if self.chat else 'cmpl'}-{uuid.uuid4().hex}"

    def _body(self, choices: list[dict], **fields) -> dict[str, Any]:
        kind = "chat.completion" if self.chat else "text_completion"
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model, "choices": choices,
                **fields}

    def chunk(self, text: str | None, finish_reason: str | None = None, *, role: bool = False,
              usage: bool = False) -> dict[str, Any]:
        """A streamed chunk: ``text`` added (None: no text, a chat's role chunk or the last one)."""
        fields = {"usage": None} if usage else {}
        if self.chat:
            delta = {"role": "assistant", "content": ""} if role else ({"content": text} if text else {})
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            return {**self._body([choice], **fields), "object": "chat.completion.chunk"}
        choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish_reason}
        return self._body([choice], **fields)

    def usage_chunk(self, usage: dict[str, int]) -> dict[str, Any]:
        body = self._body([], usage=usage)
        return {**body, "object": "chat.completion.chunk"} if self.chat else body

    def whole(self, text: str, finish_reason: str, usage: dict[str, int]) -> dict[str, Any]:
        if self.chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                      "finish_reason": finish_reason}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
        return self._body([choice], usage=usage)


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def _event(body: dict[str, Any]) -> str:
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


async def _cancel_on_disconnect(request: Request, job: GenerationJob) -> None:
    """Cancel ``job`` when the client goes away. The request's body is read, so what the server receives
    next is the end: the client leaving, or (uvicorn) the response being complete, when cancelling is moot."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
    job.cancel()


class Answer:
    """One request's generation, read as text through a :class:`TextStream`; cancelled as soon as its
    client disconnects, whether it waits for the model or runs."""

    def __init__(self, request: Request, job: GenerationJob, text: TextStream, prompt_tokens: int):
        self.job, self.text, self.prompt_tokens = job, text, prompt_tokens
        self.generated = 0  # tokens the model produced for this answer, the end token included
        self.watcher = asyncio.create_task(_cancel_on_disconnect(request, job))  # held: tasks are weakly kept

    async def deltas(self) -> AsyncIterator[str]:
        """The answer's text as it becomes final; ends at the end token, a stop string or the length limit."""
        async for token in self.job.tokens():
            self.generated += 1
            delta = self.text.add(token)
            if delta:
                yield delta
            if self.text.finish_reason is not None:
                self.job.cancel()  # the end token or a stop string: the model is not needed any more
                break
        tail = self.text.close()
        if tail:
            yield tail

    def close(self) -> None:
        """The response is over: free the model if it still generates for it."""
        self.job.cancel()
        self.watcher.cancel()

    @property
    def finish_reason(self) -> str:
        return self.text.finish_reason or "length"

    @property
    def usage(self) -> dict[str, int]:
        return _usage(self.prompt_tokens, self.generated)


async def _respond(body: SamplingRequest, answer: Answer, reply: Reply):
    """The HTTP response for ``answer``: server-sent events when ``body.stream``, else one JSON body."""
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(_events(answer, reply, include_usage), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    try:
        text = "".join([delta async for delta in answer.deltas()])
    finally:
        answer.close()
    return JSONResponse(reply.whole(text, answer.finish_reason, answer.usage))


async def _events(answer: Answer, reply: Reply, include_usage: bool) -> AsyncIterator[str]:
    try:
        if reply.chat:
            yield _event(reply.chunk(None, role=True, usage=include_usage))
        async for delta in answer.deltas():
            yield _event(reply.chunk(delta, usage=include_usage))
        yield _event(reply.chunk(None, answer.finish_reason, usage=include_usage))
        if include_usage:
            yield _event(reply.usage_chunk(answer.usage))
    except Exception as error:  # the status is sent already: the error goes in the stream
        logger.exception("generation failed mid-stream")
        yield _event(APIError(500, f"generation failed: {error}", error_type="server_error").body())
    finally:
        answer.close()  # a client gone mid-stream ends here (cancelled): the model is freed at once
    yield "data: [DONE]\n\n"


class APIKeyMiddleware:
    """Refuses every ``/v1/`` request without ``Authorization: Bearer <api_key>`` (401), before its body is
    read. A plain ASGI middleware: it leaves streaming and disconnects to the routes."""

    def __init__(self, app, api_key: str):
        self.app, self.api_key = app, api_key.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith("/v1/"):
            headers = dict(scope["headers"])
            scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
            if scheme.lower() != b"bearer" or not secrets.compare_digest(token.strip(), self.api_key):
                error = APIError(401, "missing or wrong API key: send the header 'Authorization: Bearer KEY' "
                                      "with the key the server was started with", code="invalid_api_key")
                await JSONResponse(error.body(), status_code=401,
                                   headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _validation_message(error: RequestValidationError) -> str:
    """One line for pydantic's errors: ``field: what is wrong`` joined by ``; ``."""
    parts = []
    for item in error.errors():
        if item.get("type") == "json_invalid":
            position = item["loc"][-1] if len(item["loc"]) > 1 else "?"
            reason = (item.get("ctx") or {}).get("error", "malformed")
            parts.append(f"the body is not valid JSON (at character {position}: {reason})")
            continue
        location = ".".join(str(part) for part in item["loc"] if part != "body") or "body"
        parts.append(f"{location}: {item['msg']}")
    return "; ".join(parts)


def create_app(model: GLMChatModel, tokenizer, *, model_name: str, generation_config: GenerationConfig | None = None,
               api_key: str | None = None, max_queue: int = DEFAULT_MAX_QUEUE) -> FastAPI:
    """The FastAPI application serving ``model`` with ``tokenizer`` under ``model_name``.

    ``generation_config``: the defaults that requests override (default: :data:`CHAT_GENERATION`, the
    original chat's sampling); ``api_key``: required of every ``/v1/`` request when given; ``max_queue``:
    requests that may wait for the model. The generation thread starts and stops with the application
    (its lifespan: run it under uvicorn, or enter ``TestClient``).
    """
    served = ServedModel(model, tokenizer, model_name, generation_config or CHAT_GENERATION,
                         GenerationWorker(generator_for(model), tokenizer.vocab_size), max_queue)
    page = resources.files("glm_core.serve").joinpath("static/index.html").read_text(encoding="utf-8")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        served.worker.start()
        try:
            yield
        finally:
            await asyncio.to_thread(served.worker.stop)

    app = FastAPI(title="glm serve", description="OpenAI-compatible API over ChatGLM-6B", lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.served = served
    if api_key:
        app.add_middleware(APIKeyMiddleware, api_key=api_key)

    @app.exception_handler(APIError)
    async def api_error(request: Request, error: APIError) -> JSONResponse:
        return JSONResponse(error.body(), status_code=error.status)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse(APIError(422, _validation_message(error)).body(), status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        message = f"{request.method} {request.url.path}: {error.detail}"
        return JSONResponse(APIError(error.status_code, message).body(), status_code=error.status_code,
                            headers=error.headers)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, error: Exception) -> JSONResponse:
        logger.exception("request failed: %s %s", request.method, request.url.path)
        body = APIError(500, f"internal error: {type(error).__name__}: {error}", error_type="server_error").body()
        return JSONResponse(body, status_code=500)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def chat_page() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": served.name, "queued": served.worker.queued,
                "generating": served.worker.running is not None}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": served.name, "object": "model", "created": served.created,
                                            "owned_by": "glm"}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        body.check_supported()
        query, history = chat_turns(body.messages)
        input_ids = tokenizer.encode(chat_prompt(query, history))
        return await _start(request, body, input_ids, "messages",
                            lambda ids: process_response(tokenizer.decode(ids)), Reply(chat=True, model=served.name))

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        body.check_supported()
        input_ids = tokenizer.encode(body.prompt_text)
        return await _start(request, body, input_ids, "prompt", tokenizer.decode,
                            Reply(chat=False, model=served.name))

    async def _start(request: Request, body: SamplingRequest, input_ids: list[int], prompt_name: str,
               render: Callable[[list[int]], str], reply: Reply):
        config = served.generation_config(body, len(input_ids), prompt_name)
        stop = body.stop_strings
        job = served.submit(input_ids, config)
        eos = model.config.eos_token_id if config.eos_token_id is None else config.eos_token_id
        answer = Answer(request, job, TextStream(render, eos, stop), len(input_ids))
        return await _respond(body, answer, reply)

    return app


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (0: a free port). Raises ``ValueError`` naming the
    address when it cannot be had (in use, not this machine's, a bad name)."""
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a restart may reuse the port
    try:
        listener.bind((host, port))
        listener.listen(128)
        return listener
    except (OSError, OverflowError) as error:
        listener.close()
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    raise ValueError(f"cannot listen on {host}:{port}: {reason}")


def serve(model: str | os.PathLike, *, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          model_name: str | None = None, generation_config: GenerationConfig | None = None,
          max_queue: int = DEFAULT_MAX_QUEUE, log_level: str = "info") -> None:
    """Load ``model`` (a model folder or name, as :meth:`AutoModel.from_pretrained`) and serve it on
    ``host``:``port`` until interrupted (SIGINT or SIGTERM: open streams get 5 s, then are cut).

    ``model_name`` (default: the folder's name, or the model's): the id ``/v1/models`` lists and responses
    carry. The address is taken before the model loads, so a busy port fails at once (``ValueError``). The
    graphs of short prompts are compiled before the first request is taken.
    """
    import uvicorn

    from glm_core.auto import AutoModel, AutoTokenizer

    listener = bind_socket(host, port)
    tokenizer, chat_model = AutoTokenizer.from_pretrained(model), AutoModel.from_pretrained(model)
    generator_for(chat_model).generate(tokenizer.encode("你好"), max_new_tokens=2, num_pieces=tokenizer.vocab_size)
    name = model_name or Path(model).name
    app = create_app(chat_model, tokenizer, model_name=name, generation_config=generation_config,
                     api_key=api_key, max_queue=max_queue)
    bound_host, bound_port = listener.getsockname()[:2]
    url = f"http://{f'[{bound_host}]' if ':' in bound_host else bound_host}:{bound_port}"
    print(f"glm serve: {name} at {url}/ (chat page) and {url}/v1 (OpenAI API"
          f"{', API key required' if api_key else ''}); Ctrl-C stops", file=sys.stderr, flush=True)
    config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=5)
    # uvicorn shuts down gracefully on SIGINT or SIGTERM, then raises the signal again under the handler it
    # found. Once a graph has run, MindSpore's own SIGINT handler turns Ctrl-C into SIGTERM, so SIGTERM is
    # made an interrupt too: either ends as KeyboardInterrupt after the shutdown (exit 130 from glm).
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        uvicorn.Server(config).run(sockets=[listener])
    finally:
        signal.signal(signal.SIGTERM, previous)
