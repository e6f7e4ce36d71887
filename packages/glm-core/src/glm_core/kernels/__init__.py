"""CPU kernels of glm-core, compiled from C++ on first use and run by MindSpore as ``aot`` Custom operators.

Inference models computing in float32 on CPU use them:

- ``linear.cc`` computes ``x @ w.T (+ b)`` with ``w`` in the checkpoint layout ``[out, in]``, for every
  Linear, and what follows it in the network: the MLP's GELU, or the residual connection and the
  layernorm. It streams a decode step's weights near the memory bandwidth (MindSpore 2.10's CPU MatMul
  reaches about 60 % of it) and sums every output in the same order for one row as for many.
- ``attention.cc`` computes attention over the KV cache as it lies in memory, slot-major ``[length, batch,
  heads, head_dim]``, which MindSpore's ScatterUpdate writes in place (BatchMatMul would need the cache
  transposed, a copy of all of it, on every step). Masked slots add exact zeros.
- ``rotary.cc`` looks up the rotary angles of the position ids, applies GLM's 2D rotary embedding to the
  fused QKV output and writes keys and values slot-major: one operator in place of twenty small ones.
- ``layer.cc`` runs a whole GLM block of a model with a KV cache (the three above, in order, with the keys
  and values written straight into the cache) as one operator: a decode step then launches ten operators
  rather than sixty, at about 25 us of MindSpore's time each.
- ``linear.h``, ``rotary.h`` and ``attention.h`` hold the arithmetic the operators share; ``common.h``, the
  vector type and the helper threads.

Together they make an incremental decode step reproduce a full forward bit for bit.

The library is built with the system's C++ compiler (``$CXX``, else ``g++`` or ``c++``) for this machine
(``-march=native``) into a cache folder (``$GLM_KERNEL_CACHE``, else ``~/.cache/glm/kernels``), once per
source, compiler and CPU. Without a compiler the operators are ``None`` (a warning says why) and the model
falls back to MindSpore's MatMul and BatchMatMul.
"""

from __future__ import annotations

import contextlib
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

SOURCES = sorted(Path(__file__).parent.glob("*.cc"))
HEADERS = sorted(Path(__file__).parent.glob("*.h"))
FLAGS = ("-O3", "-march=native", "-std=gnu++17", "-ffp-contract=fast", "-shared", "-fPIC", "-pthread")


class KernelBuildError(RuntimeError):
    """The C++ kernels could not be compiled; the message holds the compiler's output."""


def cache_dir() -> Path:
    configured = os.environ.get("GLM_KERNEL_CACHE")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "glm" / "kernels"


def find_compiler() -> str | None:
    for candidate in (os.environ.get("CXX"), "g++", "c++"):
        path = shutil.which(candidate) if candidate else None
        if path:
            return path
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
    """Compile the kernels unless a library for these sources, compiler and CPU is cached; return its path.

    The library is written under a temporary name and renamed into place, so concurrent builds (several
    ``msrun`` workers, say) never load a half-written file.
    """
    compiler = compiler or find_compiler()
    if compiler is None:
        raise KernelBuildError("no C++ compiler found (set CXX, or install g++)")
    parts = [source.read_bytes() for source in (*SOURCES, *HEADERS)]
    parts += [" ".join(FLAGS).encode(), _compiler_version(compiler).encode(), _cpu_signature().encode()]
    digest = hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]
    library = cache_dir() / f"glm-kernels-{digest}.so"
    if library.is_file():
        return library
    library.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(prefix=".glm-kernels-", suffix=".so", dir=library.parent)
    os.close(handle)
    try:
        result = subprocess.run([compiler, *FLAGS, "-o", partial, *map(str, SOURCES)], capture_output=True,
                                text=True, check=False)
        if result.returncode != 0:
            names = ", ".join(source.name for source in SOURCES)
            raise KernelBuildError(f"{compiler} failed on {names}:\n{result.stderr.strip()}")
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
        logger.warning("glm-core's CPU kernels are unavailable, falling back to MindSpore's MatMul and "
                       "BatchMatMul (decoding will be slower): %s", error)
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
    """Threads the kernels split their work among (default: the CPUs this process may use)."""
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    library = library or _library()
    if library is not None:
        ctypes.CDLL(str(library)).glm_set_threads(threads)


def configure_cpu_threads(threads: int | None = None) -> None:
    """Give the kernels ``threads`` threads (default: every CPU) and MindSpore's own CPU ops one.

    With the kernels doing the heavy work of inference, MindSpore's ops between them are small, and its
    thread pool, spinning while it waits, takes CPU time from the kernels' threads: a glm_bench decode
    step took 43 ms with MindSpore on 2 threads against 40 ms on 1. Without the kernels MindSpore gets
    ``threads``. MindSpore takes this setting once per process; a later call leaves its setting as it is.
    """
    import mindspore as ms

    threads = threads or default_threads()
    set_threads(threads)
    with contextlib.suppress(RuntimeError):
        ms.device_context.cpu.op_tuning.threads_num(1 if _library() is not None else threads)


def linear_operator(gelu: bool = False):
    """A MindSpore op computing ``x @ w.T`` for float32 ``x [rows, in]``, ``w [out, in]``; ``None`` when the
    kernel is unavailable. Its inputs say what else it does:

    - ``(x, w)``; ``(x, w, b)`` adds the bias ``b [out]``;
    - ``(x, w, b, r, a)`` returns ``r * a + (x @ w.T + b)`` for ``r [rows, out]`` and ``a [1]``, GLM's
      residual connection;
    - ``(x, w, b, r, a, gamma, beta, epsilon)``: the layernorm of that sum (``gamma``, ``beta [out]``,
      ``epsilon [1]``), with the bits of MindSpore's LayerNorm.

    ``gelu=True`` (without a residual): the MLP's tanh GELU applied to every output (the original's formula).
    """
    library = _library()
    if library is None:
        return None
    from mindspore import float32, ops

    return ops.Custom(f"{library}:{'glm_linear_gelu' if gelu else 'glm_linear'}",
                      out_shape=lambda x, w, *others: [x[0], w[0]], out_dtype=float32, func_type="aot")


def attention_operator():
    """A MindSpore op computing GLM's attention; see ``attention.cc``. ``None`` when unavailable.

    Inputs: query ``[B, S, H, D]``, keys and values ``[L, B, H, D]``, a bool mask ``[B, 1, S, L]`` (True =
    masked) and the softmax scale ``[1]``; output ``[B, S, H, D]``, all float32.
    """
    library = _library()
    if library is None:
        return None
    from mindspore import float32, ops

    return ops.Custom(f"{library}:glm_attention", out_shape=lambda q, k, v, mask, scale: q, out_dtype=float32,
                      func_type="aot")


def rotary_operator(heads: int, head_dim: int):
    """A MindSpore op applying GLM's 2D rotary embedding to the fused QKV output; see ``rotary.cc``.

    Inputs: qkv ``[B, S, heads * 3 * head_dim]``, int32 position ids ``[B, 2, S]``, RotaryEmbedding2D's
    cos and sin tables ``[P, head_dim / 2]``, the query scale ``[1]``; outputs: query ``[B, S, heads,
    head_dim]``, keys and values ``[S, B, heads, head_dim]``, float32. ``None`` when unavailable.
    """
    library = _library()
    if library is None:
        return None
    from mindspore import float32, ops

    def shapes(qkv, position_ids, cos, sin, scale):
        batch, seq = qkv[0], qkv[1]
        return [batch, seq, heads, head_dim], [seq, batch, heads, head_dim], [seq, batch, heads, head_dim]

    return ops.Custom(f"{library}:glm_rotary", out_shape=shapes, out_dtype=(float32, float32, float32),
                      func_type="aot")


def layer_operator():
    """A MindSpore op running a whole GLM block with a KV cache; see ``layer.cc`` for its inputs. It writes
    the block's keys and values into the caches it is given, in place. ``None`` when unavailable."""
    library = _library()
    if library is None:
        return None
    from mindspore import float32, ops

    return ops.Custom(f"{library}:glm_layer", out_shape=lambda x, *others: x, out_dtype=float32, func_type="aot")
