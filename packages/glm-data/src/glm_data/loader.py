"""Reading what ``adgen_to_mindrecord`` wrote: the training pipeline, plain records, and ``glm-data inspect``."""

from collections.abc import Iterator
from pathlib import Path
from typing import Optional, Union

from glm_data import records
from glm_data.errors import DataError


def load_dataset(
    path: Union[str, Path],
    batch_size: int,
    shuffle: bool = True,
    seed: int = 0,
    num_shards: Optional[int] = None,
    shard_id: Optional[int] = None,
    drop_remainder: bool = True,
):
    """A MindSpore dataset of batched training records, int32 arrays ready for the train step.

    Args:
        path: a MindRecord file written by ``glm-data adgen --mode train`` (any file of a split
            dataset, or the name given to ``--output_file``: ``train.mindrecord`` finds
            ``train.mindrecord0``, ``…1``, …).
        batch_size: records per batch.
        shuffle: shuffle the records globally each epoch.
        seed: the shuffling seed. MindSpore takes it from its global dataset config, which this sets
            (``mindspore.dataset.config.set_seed``).
        num_shards, shard_id: give both to read only this data-parallel rank's ``1/num_shards``.
        drop_remainder: drop a last batch smaller than ``batch_size``.

    Returns:
        A ``mindspore.dataset`` pipeline yielding ``input_ids, labels`` (``[batch, S]``), or for the
        mindformers format ``input_ids, labels, position_ids, attention_mask``.

    Raises:
        DataError: a missing file, an evaluation file, or inconsistent sharding arguments.
    """
    import mindspore.dataset as ds  # imported on use: see glm_data.adgen

    data_file = resolve_mindrecord(path)
    layout = record_layout(data_file)
    if layout == records.EVAL:
        raise DataError(f"{data_file} holds evaluation records (variable length): read them with glm_data.read_records")
    if batch_size < 1:
        raise DataError(f"batch_size must be at least 1, got {batch_size}")
    if (num_shards is None) != (shard_id is None):
        raise DataError(f"give both num_shards and shard_id or neither (got {num_shards} and {shard_id})")
    if num_shards is not None and not 0 <= shard_id < num_shards:
        raise DataError(f"shard_id must be in [0, {num_shards}), got {shard_id}")
    ds.config.set_seed(seed)
    dataset = ds.MindDataset(
        str(data_file),
        columns_list=list(records.LAYOUT_COLUMNS[layout]),
        shuffle=shuffle,
        num_shards=num_shards,
        shard_id=shard_id,
    )
    return dataset.batch(batch_size, drop_remainder=drop_remainder)


def read_records(path: Union[str, Path]) -> Iterator[dict]:
    """Yield every record of a glm-data MindRecord file in the order written, as a dict of numpy
    arrays (int32) and ``str`` (the ``content``/``summary`` of evaluation records).

    Raises DataError if the file is missing.
    """
    import mindspore.dataset as ds

    data_file = resolve_mindrecord(path)
    dataset = ds.MindDataset(str(data_file), shuffle=False)
    for row in dataset.create_dict_iterator(output_numpy=True, num_epochs=1):
        yield {name: value.item() if value.dtype.kind == "U" else value for name, value in row.items()}


def resolve_mindrecord(path: Union[str, Path]) -> Path:
    """The data file to open for ``path``: itself, or its first split ``path0`` / ``path00`` / …

    Raises DataError if there is neither.
    """
    path = Path(path)
    if path.is_file():
        return path
    for width in range(1, 4):
        first_split = path.with_name(path.name + "0" * width)
        if first_split.is_file():
            return first_split
    raise DataError(f"MindRecord file not found: {path}")


def record_layout(data_file: Path) -> str:
    """``"train"``, ``"eval"`` or ``"mindformers"``: which records ``data_file`` holds (see glm_data.records)."""
    schema, _ = _schema_and_count(data_file)
    try:
        return records.layout_of(schema)
    except ValueError as error:
        raise DataError(f"{data_file} was not written by glm-data: {error}") from error


def describe_mindrecord(path: Union[str, Path], tokenizer=None, num_records: int = 3) -> str:
    """The text ``glm-data inspect`` prints: schema, record count and the first ``num_records`` records,
    decoded back to text when a ``tokenizer`` is given (ids otherwise).

    Raises DataError if ``num_records`` is negative, or the file is missing or was not written by glm-data.
    """
    if num_records < 0:
        raise DataError(f"num_records must be at least 0, got {num_records}")
    data_file = resolve_mindrecord(path)
    schema, count = _schema_and_count(data_file)
    layout = record_layout(data_file)
    lines = [f"file: {data_file}", f"layout: {layout}", f"records: {count}", "schema:"]
    lines += [f"  {name}: {spec['type']}{spec.get('shape', '')}" for name, spec in sorted(schema.items())]
    for index, record in enumerate(read_records(data_file)):
        if index == num_records:
            break
        lines.append(f"record {index}:")
        for name, value in record.items():
            lines.append(f"  {name}: {_show(name, value, tokenizer)}")
    return "\n".join(lines)


def _schema_and_count(data_file: Path):
    from mindspore.mindrecord import FileReader

    try:
        reader = FileReader(str(data_file), num_consumer=1)
    except Exception as error:  # MindSpore raises RuntimeError with a multi-line log for a non-MindRecord file
        raise DataError(f"cannot read {data_file} as MindRecord: {str(error).splitlines()[0]}") from error
    try:
        return reader.schema(), reader.len()
    finally:
        reader.close()


def _show(name: str, value, tokenizer) -> str:
    if isinstance(value, str):
        return repr(value)
    if name in ("position_ids", "attention_mask"):
        return f"int32{list(value.shape)}, first row {value.reshape(-1, value.shape[-1])[0].tolist()}"
    ids = value.tolist()
    if tokenizer is None:
        return str(ids)
    kept = [token_id for token_id in ids if token_id != records.IGNORE_INDEX]
    ignored = len(ids) - len(kept)
    note = f" (+{ignored} × -100)" if ignored else ""
    return f"{tokenizer.decode(kept)!r}{note}  {len(ids)} ids"

