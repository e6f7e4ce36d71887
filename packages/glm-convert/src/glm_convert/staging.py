"""All-or-nothing output: files are written under temporary names and renamed into place together, and
a conversion never writes over its own input.

An interrupted or failed conversion leaves neither a half-written checkpoint nor a folder mixing new
and old files.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from glm_convert.errors import ConversionError


class StagedFiles:
    """``with StagedFiles() as staged: write(staged.temporary(final))``: on success every temporary file
    replaces its final path; on any exception (Ctrl-C and SIGTERM included, see the CLI) the temporary
    files, and folders made for them, are removed.

    ``replaces``: files of an earlier output that the new one supersedes (an earlier export's shards):
    on success they are removed just before the new files are renamed in, so the folder never holds
    both sets. An interruption between the two steps (none is caught there but SIGKILL or a power cut)
    leaves no output rather than a mixed one.
    """

    def __init__(self, replaces: Iterable[Path] = ()):
        self._staged: list[tuple[Path, Path]] = []
        self._made_folders: list[Path] = []
        self._replaces = list(replaces)

    def temporary(self, final: str | os.PathLike) -> Path:
        """A temporary path beside ``final`` (same file system, so the rename is atomic)."""
        final = Path(final)
        missing = [folder for folder in (final.parent, *final.parent.parents) if not folder.exists()]
        final.parent.mkdir(parents=True, exist_ok=True)
        self._made_folders.extend(missing)  # innermost first, the order to remove them in
        temporary = final.with_name(f".{final.name}.partial")
        self._staged.append((temporary, final))
        return temporary

    def __enter__(self) -> StagedFiles:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:
            umask = os.umask(0)
            os.umask(umask)
            finals = {final for _, final in self._staged}
            for stale in self._replaces:
                if stale not in finals:
                    stale.unlink(missing_ok=True)
            for temporary, final in self._staged:
                # Some writers (safetensors) make private files; outputs get the permissions of any new file.
                os.chmod(temporary, 0o666 & ~umask)
                os.replace(temporary, final)
            return
        for temporary, _ in self._staged:
            temporary.unlink(missing_ok=True)
        for folder in self._made_folders:
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()


def refuse_overwriting_inputs(outputs: Iterable[Path], inputs: Iterable[Path], destination: Path) -> None:
    """Raise :class:`ConversionError` when a file the conversion would write or remove is one of its inputs
    (the same path, or another name of the same file)."""
    existing_inputs = [path for path in inputs if path.exists()]
    for output in outputs:
        if not output.exists():
            continue
        for source in existing_inputs:
            if os.path.samefile(output, source):
                raise ConversionError(f"writing {destination} would overwrite the input {source}: give an "
                                      "output outside the input's folder")


def check_destination(destination: Path, folder: bool) -> None:
    """Raise :class:`ConversionError` when ``destination`` exists as the wrong kind (a file where a folder
    goes, or the reverse), before any work is done."""
    if folder and destination.exists() and not destination.is_dir():
        raise ConversionError(f"{destination} is a file: the output is a folder; give a new or existing folder")
    if not folder and destination.is_dir():
        raise ConversionError(f"{destination} is a folder: give the path of the .ckpt file to write")
    for parent in destination.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConversionError(f"cannot write {destination}: {parent} is a file, not a folder")
            break
