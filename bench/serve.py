"""glm serve under load: N concurrent streaming clients on loopback for a bounded time.

Starts the server in this process (a real uvicorn on 127.0.0.1, a free port) over a model folder, then runs
``--clients`` threads, each sending streamed chat requests one after the other (greedy, ``--max-tokens``
new tokens) until ``--seconds`` have passed; requests still running then finish. Prints, per client, the
requests answered, the mean time to first token (to the first chunk holding text: the server holds back the
last few characters of an answer until they are final) and its tokens/s while it had a request open; then
requests/s and tokens/s for the server as a whole. The ceiling beside them is the same generation run
directly on the model (no HTTP, no queue): the server runs one generation at a time, so its total tokens/s
can approach that figure but not pass it, and each of N clients gets about 1/N of it.

Without ``--model`` the tiny checkpoint shipped in glm-convert (random weights) is converted into a
temporary folder first.

    hatch run python bench/serve.py [--model FOLDER] [--clients 4] [--seconds 20] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import mindspore as ms
import numpy as np
import uvicorn

from glm_core import AutoModel, AutoTokenizer, kernels
from glm_core.generation import generator_for
from glm_core.serve import create_app

SHIPPED_TINY = Path(__file__).resolve().parents[1] / "packages/glm-convert/src/glm_convert/assets/tiny_hf"
QUESTIONS = ["你好", "请介绍一下华为", "Tell me a joke.", "晚上睡不着应该怎么办"]


@dataclass
class ClientFigures:
    requests: int = 0
    tokens: int = 0
    busy_seconds: float = 0.0  # time with a request open
    first_token_seconds: list[float] = field(default_factory=list)
    errors: int = 0


def run_client(url: str, index: int, deadline: float, max_tokens: int, figures: ClientFigures) -> None:
    """Send streamed chat requests one after the other until ``deadline``."""
    with httpx.Client(timeout=600) as client:
        while time.monotonic() < deadline:
            question = QUESTIONS[(index + figures.requests) % len(QUESTIONS)]
            body = {"messages": [{"role": "user", "content": question}], "max_tokens": max_tokens,
                    "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
            start = time.perf_counter()
            first = None
            with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
                if response.status_code != 200:
                    figures.errors += 1
                    response.read()
                    continue
                for line in response.iter_lines():
                    if not line.startswith("data: {"):
                        continue
                    chunk = json.loads(line[len("data: "):])
                    if first is None and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                        first = time.perf_counter() - start
                    if chunk.get("usage"):
                        figures.tokens += chunk["usage"]["completion_tokens"]
            figures.busy_seconds += time.perf_counter() - start
            figures.requests += 1
            if first is not None:
                figures.first_token_seconds.append(first)


def direct_ceiling(model, tokenizer, max_tokens: int) -> float:
    """Tokens/s of one greedy generation of ``max_tokens`` run on the model directly (compiled before)."""
    generator = generator_for(model)
    ids = np.array([tokenizer.encode(QUESTIONS[0])])
    generator.generate(ids, max_new_tokens=max_tokens, eos_token_id=-1, num_pieces=tokenizer.vocab_size)
    start = time.perf_counter()
    generator.generate(ids, max_new_tokens=max_tokens, eos_token_id=-1, num_pieces=tokenizer.vocab_size)
    return max_tokens / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="a model folder (default: glm-convert's shipped tiny model)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients (default 4)")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long clients send requests (default 20)")
    parser.add_argument("--max-tokens", type=int, default=64, help="new tokens per request (default 64)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of glm-core's kernels (default 2)")
    args = parser.parse_args()

    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    kernels.configure_cpu_threads(args.threads)
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.model
        if folder is None:
            folder = Path(scratch) / "glm_tiny"
            subprocess.run([sys.executable, "-m", "glm_convert.cli", "hf-to-ms", str(SHIPPED_TINY), str(folder),
                            "--quiet"], check=True)
        tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder)
        ceiling = direct_ceiling(model, tokenizer, args.max_tokens)

        listener = socket.create_server(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        server = uvicorn.Server(uvicorn.Config(create_app(model, tokenizer, model_name=folder.name),
                                               log_level="warning"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)

        print(f"model {folder}: {model.config.num_layers} layers, hidden {model.config.hidden_size}; "
              f"{args.clients} clients for {args.seconds:.0f}s, {args.max_tokens} new tokens per request (greedy)")
        figures = [ClientFigures() for _ in range(args.clients)]
        start = time.monotonic()
        deadline = start + args.seconds
        clients = [threading.Thread(target=run_client, args=(url, index, deadline, args.max_tokens, figures[index]))
                   for index in range(args.clients)]
        for client in clients:
            client.start()
        for client in clients:
            client.join()
        elapsed = time.monotonic() - start
        server.should_exit = True
        thread.join(30)

    print(f"{'client':>6} {'requests':>9} {'first token ms (mean)':>22} {'tokens/s':>9} {'errors':>7}")
    for index, client in enumerate(figures):
        first_ms = statistics.fmean(client.first_token_seconds) * 1e3 if client.first_token_seconds else float("nan")
        tokens_per_second = client.tokens / client.busy_seconds if client.busy_seconds else 0.0
        print(f"{index:>6} {client.requests:>9} {first_ms:>22.1f} {tokens_per_second:>9.1f} {client.errors:>7}")
    requests = sum(client.requests for client in figures)
    tokens = sum(client.tokens for client in figures)
    print(f"server: {requests / elapsed:.2f} requests/s, {tokens / elapsed:.1f} tokens/s over {elapsed:.1f}s; "
          f"ceiling (the same generation run directly, one at a time): {ceiling:.1f} tokens/s")


if __name__ == "__main__":
    main()
