"""CPU kernels of glm-core, compiled from C++ on first use and run by MindSpore as ``aot`` Custom operators.

Inference models computing in float32 on CPU use them:

- ``linear.cc`` computes ``x @ w.T (+ b)`` with ``w`` in the checkpoint layout ``[out, in]``, for every
  Linear, and what follows it in the network: the MLP's GELU, or the residual connection and the
  layernorm. It streams a decode step's weights near the memory bandwidth (MindSpore 2.10's CPU MatMul
  reaches about 60 % of it) and sums every output in the same order for one row as for many. The weights
  may be float32, float16, int8 or int4 (:mod:`glm_core.quantize`), converted to float32 in registers.
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

The library is built with the system's C++ compiler (``$CXX``, else ``g++`` or ``c++``), which must be GCC
(the bit-for-bit claim rests on its floating-point code), for this machine (``-march=native``) into a cache
folder (``$GLM_KERNEL_CACHE``, else ``~/.cache/glm/kernels``), once per source, compiler and CPU; processes
starting together build it once, under a lock. Without GCC, or when the library cannot be built or loaded,
the operators are ``None`` (a warning says why) and the model falls back to MindSpore's MatMul and
BatchMatMul.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import functools
import hashlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

SOURCES = sorted(Path(__file__).parent.glob("*.cc"))
HEADERS = sorted(Path(__file__).parent.glob("*.h"))
FLAGS = ("-O3", "-march=native", "-std=gnu++17", "-ffp-contract=fast", "-shared", "-fPIC", "-pthread")

# Compilers that define __GNUC__ for compatibility without being GCC.
NOT_GCC_MACROS = ("__clang__", "__INTEL_COMPILER", "__INTEL_LLVM_COMPILER")

# /proc/cpuinfo's lines that say which CPU ``-march=native`` compiles for: x86 names its model and features
# in "model name" and "flags"; aarch64 in "CPU implementer" (the vendor), "CPU part" (the core), ... and
# "Features".
CPU_FIELDS = ("model name", "flags", "CPU implementer", "CPU architecture", "CPU variant", "CPU part",
              "CPU revision", "Features")


class KernelBuildError(RuntimeError):
    """The C++ kernels could not be compiled or loaded; the message says why (the compiler's output, say)."""


def cache_dir() -> Path:
    """The folder of built libraries: ``$GLM_KERNEL_CACHE``, else ``$XDG_CACHE_HOME/glm/kernels``, else
    ``~/.cache/glm/kernels``."""
    configured = os.environ.get("GLM_KERNEL_CACHE")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "glm" / "kernels"


def find_compiler() -> str | None:
    """The path of the C++ compiler to build with: ``$CXX`` when set, else ``g++``, else ``c++``; ``None``
    when none of them is found. Whether it is GCC is checked by ``build``."""
    for candidate in (os.environ.get("CXX"), "g++", "c++"):
        path = shutil.which(candidate) if candidate else None
        if path:
            return path
    return None


def cpu_signature(cpuinfo: str | None = None) -> str:
    """What ``-march=native`` depends on: the machine type and the CPU's model and features, read from
    ``cpuinfo`` (the text of ``/proc/cpuinfo``; read from there when ``None``).

    Each distinct line counts once, so that both core types of a big.LITTLE chip enter the signature.
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    wanted = {}
    for line in cpuinfo.splitlines():
        field, _, value = line.partition(":")
        if field.strip() in CPU_FIELDS:
            wanted[f"{field.strip()}: {value.strip()}"] = None
    return "\n".join([os.uname().machine, *wanted])


def compiler_identity(compiler: str) -> str:
    """The first line of ``compiler --version``, once ``compiler`` is known to be GCC.

    The kernels' bit-for-bit agreement between a decode step and a full forward rests on GCC's
    floating-point code generation (which products ``-ffp-contract=fast`` fuses, the order its vectoriser
    sums in); clang and Intel's compilers, which also define ``__GNUC__``, promise neither.

    Raises ``KernelBuildError`` when ``compiler`` cannot be run or is not GCC.
    """
    try:
        macros = subprocess.run([compiler, "-dM", "-E", "-x", "c++", os.devnull], capture_output=True,
                                text=True, check=False)
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=False)
    except OSError as error:
        raise KernelBuildError(f"cannot run the C++ compiler {compiler}: {error}") from error
    defined = {line.split()[1] for line in macros.stdout.splitlines() if line.startswith("#define ")}
    identity = version.stdout.strip().splitlines()[0] if version.stdout.strip() else "an unknown compiler"
    if macros.returncode != 0 or "__GNUC__" not in defined or defined.intersection(NOT_GCC_MACROS):
        raise KernelBuildError(f"{compiler} ({identity}) is not GCC, and the kernels' bit-for-bit results "
                               "rely on GCC's floating point: install g++, or set CXX to a GCC")
    return identity


def library_path(compiler: str) -> Path:
    """Where the library that ``compiler`` builds from these sources for this CPU lies in the cache.

    Raises ``KernelBuildError`` when ``compiler`` is not GCC.
    """
    parts = [source.read_bytes() for source in (*SOURCES, *HEADERS)]
    parts += [" ".join(FLAGS).encode(), compiler_identity(compiler).encode(), cpu_signature().encode()]
    digest = hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]
    return cache_dir() / f"glm-kernels-{digest}.so"


def build(compiler: str | None = None) -> Path:
    """Compile the kernels unless a library for these sources, compiler and CPU is cached; return its path.

    Processes starting together (``msrun`` workers on one machine) compile once: the first takes a lock
    file beside the library and says it is compiling, the others wait for it (and say so), then find the
    library. It is written under a temporary name and renamed into place, so that no process loads a
    half-written file.

    Raises ``KernelBuildError`` when no compiler is found, when it is not GCC, or when it fails; ``OSError``
    when the cache folder cannot be written.
    """
    compiler = compiler or find_compiler()
    if compiler is None:
        raise KernelBuildError("no C++ compiler found (set CXX, or install g++)")
    library = library_path(compiler)
    if library.is_file():
        return library
    library.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(library.with_suffix(".lock")):
        if not library.is_file():  # else another process built it while this one waited
            _compile(compiler, library)
    return library


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the file ``path`` (created when missing) while the body runs.

    The holder removes the file before it unlocks, so that the cache keeps only libraries; a process that
    was waiting then holds the lock of a removed file, sees that ``path`` no longer names it, and starts
    again on the new one. The kernel releases the lock of a process that dies, so none is ever stale.
    """
    while True:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                logger.warning("waiting for another process to finish compiling glm-core's CPU kernels (it "
                               "holds %s)", path)
                fcntl.flock(descriptor, fcntl.LOCK_EX)
            if _names_same_file(path, descriptor):
                try:
                    yield
                finally:
                    path.unlink()
                return
        finally:
            os.close(descriptor)  # which releases the lock


def _names_same_file(path: Path, descriptor: int) -> bool:
    try:
        named = path.stat()
    except FileNotFoundError:
        return False
    opened = os.fstat(descriptor)
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


def _compile(compiler: str, library: Path) -> None:
    """Compile the sources into ``library`` through a temporary file; the caller holds the build lock."""
    # Whatever an earlier build killed by a signal left behind; no other process builds this library now.
    for leftover in library.parent.glob(f".{library.name}.*"):
        leftover.unlink(missing_ok=True)
    logger.warning("compiling glm-core's CPU kernels into %s with %s (once per source, compiler and CPU)",
                   library, compiler)
    handle, partial = tempfile.mkstemp(prefix=f".{library.name}.", dir=library.parent)
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


def exported_functions() -> list[str]:
    """The names of the ``extern "C"`` functions the sources define: what the library must export."""
    pattern = re.compile(r'extern "C"[^(]*?\b(glm_\w+)\s*\(')
    return [name for source in SOURCES for name in pattern.findall(source.read_text())]


def check_loadable(library: Path) -> None:
    """Load ``library`` as MindSpore will, and look up every function it must export.

    Raises ``KernelBuildError`` naming the library when it cannot be loaded (a cache folder on a ``noexec``
    file system, a damaged file) or lacks a function.
    """
    try:
        loaded = ctypes.CDLL(str(library))
    except OSError as error:
        raise KernelBuildError(f"the kernel library was built but cannot be loaded ({error}); set "
                               "GLM_KERNEL_CACHE to a folder where programs may run, or delete the file to "
                               "rebuild it") from error
    missing = [name for name in exported_functions() if not hasattr(loaded, name)]
    if missing:
        raise KernelBuildError(f"the kernel library {library} lacks {', '.join(missing)}; delete it to rebuild it")


@functools.lru_cache(maxsize=1)
def _library() -> Path | None:
    try:
        library = build()
        check_loadable(library)
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
    kernel is unavailable. ``w`` is float32 or float16, or quantized (:mod:`glm_core.quantize`): int8 ``[out,
    in]`` or int4 as uint8 ``[out, in / 2]``, then followed by its float16 scales (``(x, w, scale, ...)``). Its
    inputs say what else it does:

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


# The layer operator's inputs by name, in its order (kernels/layer.cc lists them in GLM_LAYER_INPUTS and
# layer_operator checks the two agree): the step's own inputs, then one block's tables and weights, then
# scalars = (query scale, layer scale, alpha, layernorm epsilon). Each weight is followed by its scales, which
# the operator reads for quantized weights only (float weights come with any small float16 tensor). Shapes:
# see layer.cc.
LAYER_STEP_INPUTS = ("x", "position_ids", "mask", "slots", "key_cache", "value_cache")
LAYER_BLOCK_INPUTS = ("cos", "sin", "qkv_weight", "qkv_weight_scale", "qkv_bias", "dense_weight",
                      "dense_weight_scale", "dense_bias", "post_gamma", "post_beta", "h_to_4h_weight",
                      "h_to_4h_weight_scale", "h_to_4h_bias", "four_h_to_h_weight", "four_h_to_h_weight_scale",
                      "four_h_to_h_bias", "next_gamma", "next_beta", "scalars")
LAYER_INPUTS = LAYER_STEP_INPUTS + LAYER_BLOCK_INPUTS


def layer_operator():
    """A MindSpore op running a whole GLM block with a KV cache; see ``layer.cc``. Its inputs are
    :data:`LAYER_INPUTS`, in that order; it writes the block's keys and values into the caches it is given,
    in place. ``None`` when unavailable.

    Raises ``RuntimeError`` when the library's input list differs from :data:`LAYER_INPUTS`.
    """
    library = _library()
    if library is None:
        return None
    from mindspore import float32, ops

    library_inputs = ctypes.CDLL(str(library)).glm_layer_inputs
    library_inputs.restype = ctypes.c_char_p
    names = tuple(library_inputs().decode().rstrip(",").split(","))
    if names != LAYER_INPUTS:
        raise RuntimeError(f"{library} takes the layer inputs {names}, glm_core.kernels passes {LAYER_INPUTS}")
    return ops.Custom(f"{library}:glm_layer", out_shape=lambda x, *others: x, out_dtype=float32, func_type="aot")
