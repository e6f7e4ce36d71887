"""glm_core.kernels' build: real g++ compiles the real sources into a temporary cache folder.

A compiler the tests need to see misbehave is g++ behind a small shell script (one that counts its runs, or
that calls itself clang): the compiler is not ours to mock, and the build is exercised whole.
"""

import logging
import os
import re
import stat
import subprocess
import sys
import textwrap

import pytest

from glm_core import kernels

# A Graviton2 (Neoverse N1) and a Graviton3 (Neoverse V1) as aarch64 Linux shows them (Graviton3's features
# shortened): no "model name", no "flags".
GRAVITON2_CPUINFO = """\
processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x3
CPU part\t: 0xd0c
CPU revision\t: 1
"""
GRAVITON3_CPUINFO = """\
processor\t: 0
BogoMIPS\t: 2100.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm sve i8mm bf16 rng
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x1
CPU part\t: 0xd40
CPU revision\t: 1
"""


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty kernel cache folder, with the process's loaded library forgotten before and after."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("GLM_KERNEL_CACHE", str(folder))
    kernels._library.cache_clear()
    yield folder
    kernels._library.cache_clear()


def wrapped_gxx(folder, name, body):
    """An executable script ``folder/name`` that runs ``body`` (shell) and then the real g++."""
    script = folder / name
    script.write_text(f"#!/bin/sh\n{body}\nexec g++ \"$@\"\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def test_build_is_cached_per_source_and_reused(cache):
    library = kernels.build()
    assert library.parent == cache and library.is_file()
    built_at = library.stat().st_mtime_ns
    assert kernels.build() == library
    assert library.stat().st_mtime_ns == built_at
    assert [p.name for p in cache.iterdir()] == [library.name]  # no lock or temporary file left behind


def test_build_says_it_is_compiling_once(cache, caplog):
    with caplog.at_level(logging.WARNING, logger="glm_core.kernels"):
        library = kernels.build()
        kernels.build()
    compiling = [record.getMessage() for record in caplog.records if "compiling" in record.getMessage()]
    assert compiling == [f"compiling glm-core's CPU kernels into {library} with {kernels.find_compiler()} "
                         "(once per source, compiler and CPU)"]


def test_failing_compiler_is_a_clear_error_and_leaves_nothing(cache, monkeypatch):
    monkeypatch.setattr(kernels, "FLAGS", (*kernels.FLAGS, "-fno-such-option"))
    with pytest.raises(kernels.KernelBuildError,
                       match=r"failed on attention\.cc, layer\.cc, linear\.cc, rotary\.cc:\n.*-fno-such-option"):
        kernels.build()
    assert list(cache.iterdir()) == []


def test_leftovers_of_a_killed_build_are_removed(cache):
    library = kernels.library_path(kernels.find_compiler())
    cache.mkdir()
    leftover = cache / f".{library.name}.k1ll3d"
    leftover.write_bytes(b"half a library")
    assert kernels.build() == library
    assert [p.name for p in cache.iterdir()] == [library.name]


@pytest.mark.parametrize(("name", "body"), [
    ("clang++", 'case "$*" in *-dM*) echo "#define __clang__ 1";; esac'),
    ("icpc", 'case "$*" in *-dM*) echo "#define __INTEL_COMPILER 2021";; esac'),
    ("cc-without-gnuc", 'case "$*" in *-dM*) exit 0;; esac'),
])
def test_a_compiler_other_than_gcc_is_refused_before_it_compiles(cache, tmp_path, name, body):
    compiler = wrapped_gxx(tmp_path, name, body)
    refusal = rf"^{re.escape(compiler)} \(g\+\+ .*\) is not GCC, .* set CXX to a GCC"
    with pytest.raises(kernels.KernelBuildError, match=refusal):
        kernels.build(compiler)
    assert not cache.exists()


def test_a_compiler_other_than_gcc_falls_back_with_a_warning(cache, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("CXX", wrapped_gxx(tmp_path, "clang++", 'case "$*" in *-dM*) echo "#define __clang__ 1";; esac'))
    with caplog.at_level(logging.WARNING, logger="glm_core.kernels"):
        assert kernels.linear_operator() is None
    assert "CPU kernels are unavailable" in caplog.text and "clang++ (g++ " in caplog.text
    assert "is not GCC" in caplog.text


def test_a_library_that_cannot_be_loaded_falls_back_with_a_warning(cache, caplog):
    library = kernels.library_path(kernels.find_compiler())
    cache.mkdir()
    library.write_bytes(b"\x7fELF, but not really")
    with caplog.at_level(logging.WARNING, logger="glm_core.kernels"):
        assert kernels.attention_operator() is None
    assert "CPU kernels are unavailable" in caplog.text
    assert f"the kernel library was built but cannot be loaded ({library}: " in caplog.text
    assert "set GLM_KERNEL_CACHE to a folder where programs may run, or delete the file" in caplog.text


def test_a_library_missing_a_function_falls_back_with_a_warning(cache, tmp_path, caplog):
    library = kernels.library_path(kernels.find_compiler())
    cache.mkdir()
    source = tmp_path / "partial.cc"
    source.write_text('extern "C" void glm_set_threads(int threads) {}\n')
    subprocess.run(["g++", "-shared", "-fPIC", "-o", str(library), str(source)], check=True)
    with caplog.at_level(logging.WARNING, logger="glm_core.kernels"):
        assert kernels.layer_operator() is None
    missing = [name for name in kernels.exported_functions() if name != "glm_set_threads"]
    assert {"glm_attention", "glm_layer", "glm_linear", "glm_linear_gelu", "glm_rotary"} <= set(missing)
    assert f"the kernel library {library} lacks {', '.join(missing)}; delete it to rebuild it" in caplog.text


def test_an_unwritable_cache_falls_back_with_a_warning(cache, tmp_path, monkeypatch, caplog):
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("GLM_KERNEL_CACHE", str(tmp_path / "a-file" / "cache"))  # no one can create it, root either
    with caplog.at_level(logging.WARNING, logger="glm_core.kernels"):
        assert kernels.linear_operator() is None
    assert "CPU kernels are unavailable" in caplog.text and str(tmp_path / "a-file") in caplog.text


def test_the_cpu_signature_names_the_arm_core_and_its_features():
    graviton2, graviton3 = kernels.cpu_signature(GRAVITON2_CPUINFO), kernels.cpu_signature(GRAVITON3_CPUINFO)
    assert graviton2 != graviton3
    assert "CPU part: 0xd0c" in graviton2.splitlines() and "CPU part: 0xd40" in graviton3.splitlines()
    assert any(line.startswith("Features: fp asimd") and " sve " in line for line in graviton3.splitlines())
    assert "BogoMIPS" not in graviton2  # a measured speed, not what the compiler targets


def test_the_cpu_signature_keeps_both_core_types_of_a_big_little_chip():
    big_little = GRAVITON2_CPUINFO + "\n" + GRAVITON2_CPUINFO.replace("0xd0c", "0xd05").replace(": 0\n", ": 1\n")
    lines = kernels.cpu_signature(big_little).splitlines()
    assert [line for line in lines if line.startswith("CPU part")] == ["CPU part: 0xd0c", "CPU part: 0xd05"]


def test_the_cpu_signature_on_x86_names_the_model_and_flags():
    cpuinfo = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\ncpu MHz\t\t: 2450.000\nflags\t\t: fpu avx2\n" * 2
    assert kernels.cpu_signature(cpuinfo).splitlines()[1:] == ["model name: AMD EPYC 7B13", "flags: fpu avx2"]


RACER = textwrap.dedent("""\
    import ctypes, sys, time
    from pathlib import Path
    from glm_core import kernels
    print("ready", flush=True)
    start = Path(sys.argv[1])
    while not start.exists():
        time.sleep(0.005)
    library = kernels._library()
    ctypes.CDLL(str(library)).glm_set_threads(1)
    print(library, flush=True)
""")


def test_processes_starting_together_compile_once_and_load_the_same_library(tmp_path):
    runs = tmp_path / "compiler-runs"
    compiler = wrapped_gxx(tmp_path, "g++-counting", f'case "$*" in *-shared*) echo run >> "{runs}";; esac')
    environment = {**os.environ, "GLM_KERNEL_CACHE": str(tmp_path / "cache"), "CXX": compiler}
    start = tmp_path / "start"
    racers = [subprocess.Popen([sys.executable, "-c", RACER, str(start)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=environment) for _ in range(6)]
    for racer in racers:
        assert racer.stdout.readline() == "ready\n"
    start.touch()  # all at once, on an empty cache
    outputs = [racer.communicate(timeout=300) for racer in racers]
    assert [racer.returncode for racer in racers] == [0] * len(racers), [err for _, err in outputs]
    libraries = {out.strip() for out, _ in outputs}
    assert len(libraries) == 1 and libraries.pop().startswith(str(tmp_path / "cache" / "glm-kernels-"))
    assert runs.read_text() == "run\n"
    said = "".join(err for _, err in outputs)
    assert said.count("compiling glm-core's CPU kernels into") == 1
    assert "unavailable" not in said
    assert len(list((tmp_path / "cache").iterdir())) == 1


def test_a_waiting_process_says_what_it_waits_for(tmp_path):
    cache = tmp_path / "cache"
    environment = {**os.environ, "GLM_KERNEL_CACHE": str(cache)}
    library = subprocess.run([sys.executable, "-c", "from glm_core import kernels\n"
                              "print(kernels.library_path(kernels.find_compiler()))"],
                             env=environment, capture_output=True, text=True, check=True).stdout.strip()
    cache.mkdir()
    lock = cache / (os.path.basename(library).removesuffix(".so") + ".lock")
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""\
        import fcntl, sys, time
        lock = open({str(lock)!r}, "w")
        fcntl.flock(lock, fcntl.LOCK_EX)
        print("locked", flush=True)
        sys.stdin.readline()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "locked\n"
    waiter = subprocess.Popen([sys.executable, "-c", "from glm_core import kernels; print(kernels._library())"],
                              env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first_words = waiter.stderr.readline()  # the waiter blocks on the lock once it has said so
    holder.communicate("done\n", timeout=30)
    out, err = waiter.communicate(timeout=300)
    assert out.strip() == library
    assert first_words == f"waiting for another process to finish compiling glm-core's CPU kernels (it holds {lock})\n"
    assert err.count("compiling glm-core's CPU kernels into") == 1
