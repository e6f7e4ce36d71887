"""The ``glm`` command: ``glm chat``, ``glm generate``, ``glm info`` and ``glm serve`` over a model folder or name.

Each subcommand parses its flags and calls the function the Python API uses: ``interactive_chat``,
``generate_texts``, ``model_info`` and ``glm_core.serve.serve``; the sampling flags override the model folder's
``generation_config.json``. Errors print one line (``glm: error: …``) unless ``--debug``: exit status 2 for
bad input (flags, files, lengths), 1 for anything else.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from glm_core.generation_config import CHAT_GENERATION, TEXT_GENERATION, GenerationConfig

API_KEY_ENV = "GLM_API_KEY"  # glm serve's API key when --api-key is not given
MODEL_HELP = ("a model folder (config.json, one .ckpt, ice_text.model, tokenizer_config.json) or a name, "
              "glm_6b or glm_6b_chat, looked up under $GLM_HOME (default ./checkpoint_download/glm)")


class UsageError(ValueError):
    """Bad input from the command line (a flag, a file, stdin); like every ValueError: exit status 2."""


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def port_number(text: str) -> int:
    """argparse type: a TCP port, 0 to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0 to 65535, got {value}")
    return value


def add_sampling_defaults(parser: argparse.ArgumentParser, defaults: GenerationConfig) -> None:
    """The sampling flags whose defaults differ between subcommands (chat samples, generate is greedy), with
    ``defaults`` in their help. A flag not given leaves the model folder's generation_config.json, else the
    subcommand's ``defaults``, in place."""
    parser.add_argument("--top-p", type=float, metavar="P",
                        help=f"sample from the most likely tokens holding probability P (default: {defaults.top_p})")
    parser.add_argument("--temperature", type=float, metavar="T",
                        help=f"divide the scores by T before sampling (default: {defaults.temperature})")
    parser.add_argument("--do-sample", action=argparse.BooleanOptionalAction,
                        help="sample instead of taking the most likely token at each step "
                             f"(default: {'sample' if defaults.do_sample else 'greedy'})")


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse's parser with its errors on one line and exit status 2 (argparse prints its usage above them);
    its subcommands' parsers are of the same class."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    common.add_argument("--threads", type=int, metavar="N",
                        help="CPU threads of glm-core's kernels, which do the heavy work (default: every CPU); "
                             "MindSpore's own ops then run on one (they get N without a C++ compiler)")

    sampling = argparse.ArgumentParser(add_help=False)
    sampling.add_argument("--max-length", type=positive_int, metavar="N",
                          help="tokens in prompt and answer together, capped at the model's seq_length "
                               f"(default: {TEXT_GENERATION.max_length})")
    sampling.add_argument("--max-new-tokens", type=positive_int, metavar="N",
                          help="generate exactly up to N new tokens; replaces --max-length")
    sampling.add_argument("--top-k", type=int, metavar="K",
                          help="sample only among the K most likely tokens; 0 keeps all "
                               f"(default: {TEXT_GENERATION.top_k})")
    sampling.add_argument("--repetition-penalty", type=float, metavar="P",
                          help="divide the scores of tokens already present by P "
                               f"(default: {TEXT_GENERATION.repetition_penalty})")
    sampling.add_argument("--seed", type=int, help="random seed of the sampler, for repeatable samples")

    parser = OneLineErrorParser(
        prog="glm", description="Chat with, generate from and inspect ChatGLM-6B models in MindSpore (CPU, "
                                "graph mode).")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    chat = commands.add_parser(
        "chat", parents=[common, sampling], help="chat interactively, streaming the answer",
        description="Chat with the model. Each line is a query; the answer streams as it is generated and "
                    "the history is kept across turns. 'clear' empties the history; 'stop' or Ctrl-D quits. "
                    "When stdin is not a terminal, each input line is one query and only the answers are "
                    "printed, one per line.")
    chat.add_argument("model", help=MODEL_HELP)
    add_sampling_defaults(chat, CHAT_GENERATION)

    generate = commands.add_parser(
        "generate", parents=[common, sampling], help="continue prompts, in batches",
        description="Continue each prompt (greedy unless --do-sample). Prompts come from --prompt "
                    "(repeatable) and --input (one per line). Without --output the texts are printed; the "
                    "speed goes to stderr.")
    generate.add_argument("model", help=MODEL_HELP)
    generate.add_argument("--prompt", action="append", default=[], metavar="TEXT",
                          help="a prompt; repeat for several")
    generate.add_argument("--input", type=Path, metavar="FILE", help="a UTF-8 file with one prompt per line")
    generate.add_argument("--output", type=Path, metavar="FILE",
                          help="write JSON lines {prompt, text, response, new_tokens} here instead of "
                               "printing")
    generate.add_argument("--batch-size", type=positive_int, default=8, metavar="N",
                          help="prompts generated together (default: %(default)s)")
    add_sampling_defaults(generate, TEXT_GENERATION)

    serve = commands.add_parser(
        "serve", parents=[common, sampling], help="serve an OpenAI-compatible HTTP API and a chat page",
        description="Serve the model over HTTP: OpenAI's POST /v1/chat/completions and /v1/completions "
                    "(streamed with stream: true), GET /v1/models, GET /health, and a chat page at /. Requests "
                    "queue for the model, one generation at a time. The sampling flags set the defaults that a "
                    "request's own parameters override. Needs the serve extra: pip install 'glm-core[serve]'.")
    serve.add_argument("model", help=MODEL_HELP)
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on; 0.0.0.0 opens it to the network (default: %(default)s)")
    serve.add_argument("--port", type=port_number, default=8000,
                       help="TCP port; 0 takes a free one and prints it (default: %(default)s)")
    serve.add_argument("--api-key", default=os.environ.get(API_KEY_ENV) or None, metavar="KEY",
                       help=f"require 'Authorization: Bearer KEY' on /v1/ requests (default: ${API_KEY_ENV}, "
                            "else no key)")
    serve.add_argument("--model-name", metavar="NAME",
                       help="the model id that /v1/models lists and responses carry (default: the folder's name)")
    serve.add_argument("--max-queue", type=positive_int, metavar="N",
                       help="requests that may wait for the model; more get HTTP 503 (default: 64)")
    add_sampling_defaults(serve, CHAT_GENERATION)

    info = commands.add_parser(
        "info", parents=[common], help="show a model's files, config, size and versions",
        description="Show where a model's files are, its config, parameter count and dtypes, how its Linear "
                    "weights are stored (float32, float16, int8, int4) and the bytes of weights a decode step "
                    "reads, and the versions of glm-core and MindSpore. Reads no weights.")
    info.add_argument("model", help=MODEL_HELP)
    info.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    return parser


def _setup_mindspore(threads: int | None) -> None:
    import mindspore as ms

    if ms.get_context("device_target") != "CPU":  # set_device raises once kernels have run (in-process)
        ms.set_device("CPU")
    ms.set_context(mode=ms.GRAPH_MODE)
    from glm_core import kernels

    kernels.configure_cpu_threads(threads)


def _generation_config(args: argparse.Namespace, defaults):
    """The model folder's generation_config.json over ``defaults``, the flags over both."""
    from glm_core.auto import locate

    try:
        config = GenerationConfig.from_pretrained(locate(args.model).tokenizer_dir, **vars(defaults))
        return config.updated(max_length=args.max_length, max_new_tokens=args.max_new_tokens,
                              do_sample=args.do_sample, top_k=args.top_k, top_p=args.top_p,
                              temperature=args.temperature, repetition_penalty=args.repetition_penalty,
                              seed=args.seed)
    except (ValueError, TypeError) as error:
        raise UsageError(str(error)) from None


def run_chat(args: argparse.Namespace) -> None:
    from glm_core.auto import AutoModel, AutoTokenizer
    from glm_core.chat import interactive_chat

    config = _generation_config(args, CHAT_GENERATION)
    interactive = sys.stdin.isatty()
    if interactive:
        print(f"Loading {args.model} ...", file=sys.stderr)
    tokenizer, model = AutoTokenizer.from_pretrained(args.model), AutoModel.from_pretrained(args.model)

    def read_query() -> str | None:
        try:
            if interactive:
                try:
                    return input("\n用户：")
                except EOFError:
                    return None
            line = sys.stdin.readline()
        except (UnicodeDecodeError, OSError) as error:
            raise UsageError(f"cannot read a query from stdin: {error}") from None
        return line.rstrip("\n") if line else None

    interactive_chat(model, tokenizer, read_query, sys.stdout, interactive, config=config)


def _read_prompts(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise UsageError(f"--input {path}: not UTF-8 (byte {error.start})") from None
    except OSError as error:
        raise UsageError(f"--input {path}: {error.strerror or error}") from None
    return [line for line in text.splitlines() if line.strip()]


def write_atomically(path: Path, lines: Sequence[str]) -> None:
    """Write ``lines`` to ``path`` through a temporary file in its folder, renamed into place: a write that
    fails or is interrupted (SIGINT, SIGTERM) leaves ``path`` as it was and no temporary file behind."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    except OSError as error:
        raise UsageError(f"--output {path}: {error.strerror or error}") from None
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as f:
            f.writelines(lines)
        os.replace(temporary, path)
    except OSError as error:
        raise UsageError(f"--output {path}: {error.strerror or error}") from None
    finally:
        signal.signal(signal.SIGTERM, previous)
        if os.path.exists(temporary):
            os.unlink(temporary)


def _raise_keyboard_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def run_generate(args: argparse.Namespace) -> None:
    from glm_core.auto import AutoModel, AutoTokenizer
    from glm_core.text_generation import generate_texts

    prompts = list(args.prompt)
    if args.input is not None:
        prompts += _read_prompts(args.input)
    if not prompts:
        raise UsageError("no prompts: pass --prompt TEXT or --input FILE")
    if args.output is not None and args.input is not None and args.output.resolve() == args.input.resolve():
        raise UsageError(f"--output {args.output} is the --input file: write the results elsewhere")
    config = _generation_config(args, TEXT_GENERATION)
    tokenizer, model = AutoTokenizer.from_pretrained(args.model), AutoModel.from_pretrained(args.model)
    results, stats = generate_texts(model, tokenizer, prompts, config, batch_size=args.batch_size)
    if args.output is not None:
        write_atomically(args.output, [json.dumps(vars(result), ensure_ascii=False) + "\n" for result in results])
    else:
        for result in results:
            print(result.text)
    print(f"generate speed: {stats.tokens_per_second:.1f} tokens/s ({stats.new_tokens} new tokens in "
          f"{stats.prefill_seconds + stats.decode_seconds:.2f}s; compile {stats.compile_seconds:.2f}s apart)",
          file=sys.stderr)


def run_info(args: argparse.Namespace) -> None:
    from glm_core.auto import model_info

    info = model_info(args.model)
    if args.json:
        print(json.dumps(info, ensure_ascii=False, indent=2))
        return
    for key, value in info.items():
        if key == "config":
            print("config:")
            for field, field_value in value.items():
                print(f"  {field}: {field_value}")
        elif key in ("parameters", "checkpoint_bytes", "decode_step_bytes"):
            print(f"{key}: {value:,}")
        else:
            print(f"{key}: {value}")


def run_serve(args: argparse.Namespace) -> None:

    try:
        from glm_core.serve import serve
    except ImportError as error:
        raise RuntimeError(f"glm serve needs the serve extra ({error.name} is missing): "
                           "pip install 'glm-core[serve]'") from None
    queue = {"max_queue": args.max_queue} if args.max_queue is not None else {}
    serve(args.model, host=args.host, port=args.port, api_key=args.api_key, model_name=args.model_name,
          generation_config=_generation_config(args, CHAT_GENERATION), **queue)


COMMANDS = {"chat": run_chat, "generate": run_generate, "info": run_info, "serve": run_serve}


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``glm`` with ``argv`` (default: the command line); returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        _setup_mindspore(args.threads)
        COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except Exception as error:
        if args.debug:
            raise
        message = "; ".join(line.strip() for line in str(error).splitlines() if line.strip())
        print(f"glm: error: {message or type(error).__name__}", file=sys.stderr)
        return 2 if isinstance(error, (ValueError, FileNotFoundError)) else 1  # bad input: a usage error
    return 0


if __name__ == "__main__":
    sys.exit(main())
