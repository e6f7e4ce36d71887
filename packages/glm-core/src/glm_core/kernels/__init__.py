"""CPU kernels of glm-core, compiled from C++ on first use and run by MindSpore as ``aot`` Custom operators.

``linear.cc`` computes ``x @ w.T`` with ``w`` in the checkpoint layout ``[out, in]``. It streams the weights
of a decode step near the memory bandwidth (MindSpore 2.10's CPU MatMul reaches about 60 % of it) and sums
every output element in the same order for one row as for many, so incremental decoding reproduces a full
forward exactly. Inference models use it for every Linear when they compute in float32 on CPU.

The library is built with the system's C++ compiler (``$CXX``, else ``g++`` or ``c++``) for this machine
(``-march=native``) into a cache folder (``$GLM_KERNEL_CACHE``, else ``~/.cache/glm/kernels``), once per
source, compiler and CPU. Without a compiler, :func:`linear_operator` logs why and returns ``None``, and the
model falls back to MindSpore's MatMul.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("linear.cc")
FLAGS = ("-O3", "-march=native", "-std=gnu++17", "-ffp-contract=fast", "-shared", "-fPIC", "-pthread")


class KernelBuildError(RuntimeError):
    """The C++ kernel could not be compiled; the message holds the compiler's output."""


def cache_dir() -> Path:
    configured = os.environ.get("GLM_KERNEL_CACHE")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "glm" / "kernels"


def find_compiler() -> str | None:
    for candidate in (os.environ.get("CXX"), "g++", "c++"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


def _cpu_signature() -> str:
    """What ``-march=native`` depends on: the CPU model and its flags."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return os.uname().machine
    wanted = [line for line in lines if line.startswith(("model name", "flags"))]
    return "\n".join(wanted[:2])


def _compiler_version(compiler: str) -> str:
    result = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=False)
    return result.stdout.splitlines()[0] if result.stdout else compiler


def build(compiler: str | None = None) -> Path:
    """Compile ``linear.cc`` unless a library for this source, compiler and CPU is cached; return its path.

    The library is written under a temporary name and renamed into place, so concurrent builds (several
    ``msrun`` workers, say) never load a half-written file.
    """
    compiler = compiler or find_compiler()
    if compiler is None:
        raise KernelBuildError("no C++ compiler found (set CXX, or install g++)")
    source = SOURCE.read_bytes()
    key = hashlib.sha256(b"\0".join([source, " ".join(FLAGS).encode(), _compiler_version(compiler).encode(),
                                     _cpu_signature().encode()])).hexdigest()[:16]
    library = cache_dir() / f"linear-{key}.so"
    if library.is_file():
        return library
    library.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(prefix=".linear-", suffix=".so", dir=library.parent)
    os.close(handle)
    try:
        result = subprocess.run([compiler, *FLAGS, "-o", partial, str(SOURCE)], capture_output=True, text=True,
                                check=False)
        if result.returncode != 0:
            raise KernelBuildError(f"{compiler} failed on {SOURCE}:\n{result.stderr.strip()}")
        os.replace(partial, library)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return library


@functools.lru_cache(maxsize=1)
def _library() -> Path | None:
    try:
        library = build()
    except (KernelBuildError, OSError) as error:
        logger.warning("glm-core's CPU linear kernel is unavailable, falling back to MindSpore's MatMul "
                       "(decoding will be slower): %s", error)
        return None
    _allow_in_mindspore(library.parent)
    set_threads(default_threads(), library)
    return library


def _allow_in_mindspore(folder: Path) -> None:
    """Add ``folder`` to MindSpore's list of trusted custom-operator folders when the user keeps one."""
    allowed = os.environ.get("MS_CUSTOM_AOT_WHITE_LIST")
    if allowed and str(folder) not in allowed.split(":"):
        os.environ["MS_CUSTOM_AOT_WHITE_LIST"] = f"{allowed}:{folder}"


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def set_threads(threads: int, library: Path | None = None) -> None:
    """Threads the linear kernel splits its output rows among (default: the CPUs this process may use)."""
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    library = library or _library()
    if library is not None:
        ctypes.CDLL(str(library)).glm_linear_set_threads(threads)


def linear_operator():
    """A MindSpore op computing ``x @ w.T`` for float32 ``x [rows, in]`` and ``w [out, in]``, or ``None``."""
    library = _library()
    if library is None:
        return None
    from mindspore import float32, ops

    return ops.Custom(f"{library}:glm_linear", out_shape=lambda x, w: [x[0], w[0]], out_dtype=float32,
                      func_type="aot")
