"""ADGEN -> MindRecord conversion speed, beside the time raw SentencePiece takes to encode the same text.

The input is sample-like: ``--lines`` lines from the shipped sample's generator
(``glm_data.sample.generate``) with another seed. The default, 100,000 (ADGEN's train set has
114,599), gives the workers' start-up (spawned processes importing numpy and the tokenizer, a
fraction of a second) the weight it has on a real run; ``--lines 20000`` shows it at its heaviest.

"Raw" is one ``SentencePieceProcessor.encode`` call per prompt and per answer in a loop, in this
process: the floor any conversion pays. Each conversion (``adgen_to_mindrecord``, glm format,
lengths 64 + 64) is timed from the call to the renamed output, worker start-up included; MindSpore
is imported beforehand (its import, a few seconds, is printed on its own). Each figure is the best
of ``--repeats`` runs: the machine is shared. The files written with 1 and with N workers are
checked to hold the same records.

"MindRecord alone" writes the same records, already built, through the writer a conversion
uses (MindSpore's ``FileWriter``: ``write_raw_data`` in batches, then ``commit``, index
included), in this process: the part of a conversion that no number of workers shares, and so
its floor.

    hatch run pkg-data:python bench/data.py [--lines 100000] [--workers 1 2] [--repeats 3]
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from glm_data.sample.generate import generate_examples, write_jsonl

COLUMNS = ("input_ids", "labels")  # glm-format training records
RECORDS_PER_CHUNK = 350  # about the lines in a conversion's chunk (glm_data.adgen.BYTES_PER_CHUNK)
GOLDEN_VOCAB = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "golden" / "tiny" / "hf" / "ice_text.model"


def best_time(function, repeats: int):
    """The shortest wall time of ``repeats`` calls of ``function``, and its last result."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return min(times), result


def encode_all(processor, texts) -> None:
    """Encode every text, keeping nothing: a list of 200,000 id lists would tax the garbage collector."""
    for text in texts:
        processor.encode(text)


def write_records(columns: dict, output_file: Path) -> None:
    """Write and commit glm-format training records (``columns``: int32 ``[records, 128]`` each), a
    chunk of ``RECORDS_PER_CHUNK`` at a time, as a conversion does."""
    from glm_data import records
    from glm_data.writer import MindRecordOutput

    count = len(columns[COLUMNS[0]])
    with MindRecordOutput(output_file, 1, records.schema(records.TRAIN, 128), overwrite=True) as output:
        for start in range(0, count, RECORDS_PER_CHUNK):
            end = min(start + RECORDS_PER_CHUNK, count)
            output.write([{name: column[index] for name, column in columns.items()} for index in range(start, end)])
        output.commit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=100_000, help="input lines (default: 100000)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts (default: 1 2)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure, the best is kept (default: 3)")
    parser.add_argument("--vocab_file", type=Path, default=GOLDEN_VOCAB, help="ice_text.model (default: golden tiny)")
    args = parser.parse_args()

    start = time.perf_counter()
    import mindspore  # noqa: F401  -- imported here, not at the top: spawned workers re-import this file

    import_seconds = time.perf_counter() - start
    import sentencepiece

    from glm_data import adgen_to_mindrecord, read_records

    with tempfile.TemporaryDirectory() as directory:
        input_file = Path(directory) / "adgen.json"
        examples = list(generate_examples(args.lines, seed=1))
        write_jsonl(input_file, iter(examples))
        texts = [text for example in examples for text in (example["content"], example["summary"])]
        characters = sum(map(len, texts))
        print(f"input: {args.lines} lines, {characters} characters, {input_file.stat().st_size / 1e6:.1f} MB")
        print(f"vocab: {args.vocab_file}")
        print(f"import mindspore: {import_seconds:.2f} s (not counted below)")

        processor = sentencepiece.SentencePieceProcessor(model_file=str(args.vocab_file))
        raw_seconds, _ = best_time(lambda: encode_all(processor, texts), args.repeats)
        print(f"raw SentencePiece encode: {raw_seconds:.2f} s = {args.lines / raw_seconds:.0f} examples/s")

        contents = {}
        for workers in args.workers:
            output_file = Path(directory) / f"workers{workers}.mindrecord"
            seconds, summary = best_time(
                lambda workers=workers, output_file=output_file: adgen_to_mindrecord(
                    input_file, args.vocab_file, output_file, workers=workers, overwrite=True
                ),
                args.repeats,
            )
            print(
                f"adgen_to_mindrecord workers={workers}: {seconds:.2f} s = {summary.written / seconds:.0f} examples/s"
                f" = {seconds / raw_seconds:.2f} x raw encode"
            )
            written = list(read_records(output_file))
            contents[workers] = {name: np.stack([record[name] for record in written]) for name in COLUMNS}
        first = contents[args.workers[0]]
        if any(not np.array_equal(records[name], first[name]) for records in contents.values() for name in COLUMNS):
            raise SystemExit("the records differ between worker counts")
        print("records identical for every worker count")

        seconds, _ = best_time(lambda: write_records(first, Path(directory) / "alone.mindrecord"), args.repeats)
        print(f"MindRecord alone (FileWriter: the {len(first[COLUMNS[0]])} records written and committed):"
              f" {seconds:.2f} s = {seconds / raw_seconds:.2f} x raw encode")


if __name__ == "__main__":
    main()
