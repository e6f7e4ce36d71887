"""``python -m glm_tokenizer.demo`` (in this process, and as a command with bad input) and the tiny
vocabulary shipped inside the package."""

import subprocess
import sys

import pytest

from glm_tokenizer import demo


def test_shipped_tiny_vocabulary_is_the_golden_one(golden_hf_dir):
    for name in ("ice_text.model", "tokenizer_config.json"):
        assert (demo.TINY_VOCABULARY / name).read_bytes() == (golden_hf_dir / name).read_bytes()


def test_demo_prints_tokens_and_ids_of_the_given_text(capsys):
    demo.main(["你好"])
    output = capsys.readouterr().out
    assert "not the real ChatGLM-6B one" in output
    assert "tokens: ['▁', '你', '好']" in output
    assert "ids:    [261, 353, 394, 3001, 3004]" in output


def test_demo_without_text_shows_every_sample(capsys):
    demo.main([])
    output = capsys.readouterr().out
    assert all(repr(text) in output for text in demo.SAMPLE_TEXTS)


def test_demo_loads_the_vocabulary_it_is_given(golden_hf_dir, capsys):
    demo.main(["--vocab", str(golden_hf_dir / "ice_text.model"), "a  b"])
    assert "tokens: ['▁a', '<|blank_2|>', 'b']" in capsys.readouterr().out


def run_demo(*arguments, **options):
    """``python -m glm_tokenizer.demo ARGUMENTS`` in a new process: its exit status, stdout and stderr."""
    completed = subprocess.run([sys.executable, "-m", "glm_tokenizer.demo", *arguments], capture_output=True,
                               **options)
    return completed.returncode, completed.stdout.decode(), completed.stderr.decode()


def test_demo_command_tokenizes_standard_input_given_as_dash():
    status, output, error = run_demo("-", input="类型#上衣\nHello".encode())
    assert (status, error) == (0, "")
    assert "text:   '类型#上衣\\nHello'" in output


def test_demo_command_loads_a_model_folder(golden_hf_dir):
    status, output, _ = run_demo("--vocab", str(golden_hf_dir), "a  b")
    assert status == 0
    assert f"vocabulary: {golden_hf_dir}\n" in output and "tokens: ['▁a', '<|blank_2|>', 'b']" in output


@pytest.mark.parametrize(("arguments", "stdin", "message"), [
    (["--vocab", "{tmp}/absent.model", "x"], None,
     "--vocab {tmp}/absent.model: No vocabulary file at {tmp}/absent.model: pass the path of a ChatGLM-6B "
     "ice_text.model."),
    (["--vocab", "{tmp}/garbage.model", "x"], None,
     "--vocab {tmp}/garbage.model: {tmp}/garbage.model is not a readable SentencePiece model: "),
    ([b"ok", b"caf\xe9"], None, "TEXT 2 (b'caf\\xe9') is not UTF-8 text"),
    (["-"], b"caf\xe9 au lait", "TEXT '-': standard input is not UTF-8 text (byte 3: invalid continuation byte)"),
    (["--vocabulary", "x"], None, "unrecognized arguments: --vocabulary (see --help)"),
], ids=["missing vocabulary", "not a SentencePiece model", "text not UTF-8", "stdin not UTF-8", "unknown flag"])
def test_demo_command_refuses_bad_input_in_one_line_with_status_2(tmp_path, arguments, stdin, message):
    (tmp_path / "garbage.model").write_bytes(b"not a model\n")
    arguments = [arg.replace("{tmp}", str(tmp_path)) if isinstance(arg, str) else arg for arg in arguments]
    status, output, error = run_demo(*arguments, input=stdin)
    assert status == 2 and output == ""
    assert error.startswith(f"python -m glm_tokenizer.demo: error: {message.replace('{tmp}', str(tmp_path))}")
    assert error.count("\n") == 1


def test_demo_command_with_standard_input_closed_says_so():
    command = f'exec "{sys.executable}" -m glm_tokenizer.demo - <&-'
    completed = subprocess.run(["sh", "-c", command], capture_output=True, text=True)
    assert completed.returncode == 2
    assert completed.stderr == "python -m glm_tokenizer.demo: error: TEXT '-': standard input is closed\n"


def test_demo_command_stops_quietly_when_its_reader_goes():
    demo = subprocess.Popen([sys.executable, "-m", "glm_tokenizer.demo", "-"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    demo.stdin.write("你好 world\n".encode() * 50_000)  # some megabytes of output, more than a pipe holds
    demo.stdin.close()
    assert demo.stdout.readline().startswith(b"vocabulary: ")
    demo.stdout.close()  # as `| head -1` does
    assert demo.wait(timeout=120) == 0
    assert demo.stderr.read() == b""
