"""`glm chat` end to end: a subprocess fed by a pipe, on a model folder holding the golden weights."""

import os
import subprocess
import sys


def run_glm(*args, stdin=""):
    env = {**os.environ, "GLOG_v": "3", "PYTHONIOENCODING": "utf-8"}
    return subprocess.run([sys.executable, "-m", "glm_core.cli", *map(str, args)], input=stdin, text=True,
                          encoding="utf-8", capture_output=True, env=env, timeout=300)


def test_piped_chat_answers_the_golden_rounds_with_history(model_dir, golden_case):
    """Three queries on stdin: the three golden answers on stdout, each from the history of the ones before."""
    cases = golden_case("chat")
    queries = "".join(f"{case['query']}\n" for case in cases)
    result = run_glm("chat", model_dir, "--no-do-sample", "--max-new-tokens", 24, "--threads", 1, stdin=queries)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "".join(f"{case['response']}\n" for case in cases)


def test_piped_chat_clear_resets_history_and_stop_exits(model_dir, golden_case):
    first, second = golden_case("chat")[:2]
    queries = f"{first['query']}\nclear\n{first['query']}\n{second['query']}\nstop\nignored\n"
    result = run_glm("chat", model_dir, "--no-do-sample", "--max-new-tokens", 24, "--threads", 1, stdin=queries)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{first['response']}\n{first['response']}\n{second['response']}\n"


def test_chat_on_a_missing_model_is_one_line_error(tmp_path):
    result = run_glm("chat", tmp_path / "absent", stdin="你好\n")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("glm: error: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr
