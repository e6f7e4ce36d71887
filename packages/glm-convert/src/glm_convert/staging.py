"""All-or-nothing output: files are written under temporary names and renamed into place together.

An interrupted or failed conversion leaves neither a half-written checkpoint nor a folder mixing new
and old files.
"""

from __future__ import annotations

import os
from pathlib import Path


class StagedFiles:
    """``with StagedFiles() as staged: write(staged.temporary(final))``: on success every temporary file
    replaces its final path; on any exception the temporary files, and folders made for them, are removed.
    """

    def __init__(self):
        self._staged: list[tuple[Path, Path]] = []
        self._made_folders: list[Path] = []

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
