"""`glm serve` as a user runs it: a real process on a loopback port, stopped by a signal; its one-line errors."""

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

GLM = [sys.executable, "-m", "glm_core.cli"]
START_TIMEOUT = 120.0
URL_LINE = re.compile(r"^glm serve: (\S+) at (http://\S+)/ \(chat page\)")


class ServeProcess:
    """``glm serve ... --port 0`` in a subprocess; its output is collected by a thread (``lines``)."""

    def __init__(self, *arguments: str, env=None):
        self.process = subprocess.Popen([*GLM, "serve", *arguments, "--port", "0"], stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, env=env)
        self.lines: list[str] = []
        threading.Thread(target=self._collect, daemon=True).start()
        self.name, self.url = self._wait_for_url()

    def _collect(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def _wait_for_url(self) -> tuple[str, str]:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and self.process.poll() is None:
            for line in self.lines:
                if match := URL_LINE.match(line):
                    return match.group(1), match.group(2)
            time.sleep(0.05)
        self.process.kill()
        raise AssertionError("glm serve did not start:\n" + "\n".join(self.lines))

    def stop(self, signum: int) -> int:
        """Send ``signum`` and return the exit status."""
        self.process.send_signal(signum)
        return self.process.wait(60)


@pytest.fixture
def stop_afterwards():
    started = []
    yield started.append
    for serve in started:
        if serve.process.poll() is None:
            serve.process.kill()
            serve.process.wait()


def test_glm_serve_answers_with_the_flags_defaults_and_stops_on_sigint(model_dir, chat_model, tokenizer,
                                                                       stop_afterwards):
    serve = ServeProcess(str(model_dir), "--api-key", "k3y", "--model-name", "tiny", "--max-new-tokens", "8",
                         "--no-do-sample")
    stop_afterwards(serve)
    assert serve.name == "tiny"
    headers = {"Authorization": "Bearer k3y"}
    assert httpx.get(f"{serve.url}/v1/models", timeout=10).status_code == 401
    response = httpx.post(f"{serve.url}/v1/chat/completions", headers=headers, timeout=60,
                          json={"model": "tiny", "messages": [{"role": "user", "content": "你好"}]})
    answer = response.json()
    # No temperature and no max_tokens in the request: the server's defaults (greedy, 8 new tokens) apply.
    assert answer["choices"][0]["message"]["content"] == chat_model.chat(tokenizer, "你好", max_new_tokens=8,
                                                                         do_sample=False)[0]
    assert answer["usage"]["completion_tokens"] == 8
    assert serve.stop(signal.SIGINT) == 130
    assert "INFO:     Application shutdown complete." in serve.lines  # a graceful shutdown
    assert not any("Traceback" in line for line in serve.lines)


def test_glm_serve_takes_its_api_key_from_the_environment_and_stops_on_sigterm(model_dir, stop_afterwards):
    serve = ServeProcess(str(model_dir), env={**os.environ, "GLM_API_KEY": "from-env"})
    stop_afterwards(serve)
    assert httpx.get(f"{serve.url}/v1/models", timeout=10).status_code == 401
    models = httpx.get(f"{serve.url}/v1/models", headers={"Authorization": "Bearer from-env"}, timeout=10).json()
    assert [model["id"] for model in models["data"]] == [model_dir.name]
    assert serve.stop(signal.SIGTERM) == 130  # MindSpore turns Ctrl-C into SIGTERM: both are an interrupt
    assert not any("Traceback" in line for line in serve.lines)


def test_a_busy_port_is_a_one_line_error(model_dir):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = subprocess.run([*GLM, "serve", str(model_dir), "--port", str(port)], capture_output=True,
                                text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr == f"glm: error: cannot listen on 127.0.0.1:{port}: Address already in use\n"


def test_a_missing_model_is_a_one_line_error(tmp_path):
    result = subprocess.run([*GLM, "serve", str(tmp_path / "nowhere"), "--port", "0"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("glm: error: ") and result.stderr.count("\n") == 1
    assert "nowhere" in result.stderr
