"""``glm-train launch``: a distributed run started by msrun, MindSpore's launcher, and watched so that one
failed rank ends the whole run at once.

    glm-train launch --nproc 8 -- --config run_glm_6b_finetune.yaml --load_checkpoint glm_6b ...
    (2 servers × 8: on each)  glm-train launch --nproc 8 --worker_num 16 --node_rank {0|1} \
                                  --master_addr 10.0.0.1 --master_port 8118 -- --config ...

msrun starts a scheduler and ``--nproc`` workers on this node, each ``glm-train --use_parallel …`` with its
logs in ``<output_dir>/log/worker_<rank>.log`` (msrun's names; ``scheduler.log`` beside them). msrun itself
kills the other workers when one fails but then waits for its scheduler to time the lost rank out, half a
minute or more. This launcher reads msrun's report of the failure, ends msrun, its scheduler and any worker
left, and exits with status 1 naming the rank, its exit status, its log and the log's last error line.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from glm_train.run_config import RunConfigError

_STARTED = re.compile(r"Start worker process with rank id:(\S+), log file:(.+?)\. Environment")
_FAILED = re.compile(r"Worker process (\d+) exit with exception\. Error code: (-?\d+)")
_ERROR_LINE = re.compile(r"error|Error|Traceback|Killed")
EXIT_RANK_FAILED = 1
DEFAULT_MASTER_PORT = 8118  # msrun's default; every node of a multi-node run must use the same


@dataclass
class Cluster:
    """Where this node's part of a run sits: its processes, all processes, this node's rank, the master."""

    nproc: int
    worker_num: int
    node_rank: int
    master_addr: str
    master_port: int
    log_dir: Path
    cluster_time_out: int = 600

    def check(self) -> None:
        """Raise :class:`RunConfigError` naming the flag with a value that cannot form a run."""
        if self.nproc < 1:
            raise RunConfigError(f"--nproc must be >= 1, got {self.nproc}")
        if self.worker_num < self.nproc or self.worker_num % self.nproc:
            raise RunConfigError(f"--worker_num {self.worker_num} must be a multiple of --nproc {self.nproc} "
                                 "(every node runs the same number of processes)")
        nodes = self.worker_num // self.nproc
        if not 0 <= self.node_rank < nodes:
            raise RunConfigError(f"--node_rank {self.node_rank} is outside 0..{nodes - 1} for {nodes} node(s)")
        if not 1024 <= self.master_port <= 65535:
            raise RunConfigError(f"--master_port {self.master_port} is outside 1024..65535")


@dataclass
class Watch:
    """What msrun's output has said so far: each rank's log, worker pids by rank, the failure."""

    logs: dict[int, Path] = field(default_factory=dict)
    pids: dict[int, int] = field(default_factory=dict)
    failed_pid: int | None = None
    failed_status: int | None = None


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def msrun_command(cluster: Cluster, worker_args: list[str]) -> list[str]:
    """msrun's command line for ``cluster``, each worker running ``python -m glm_train.cli --use_parallel``."""
    return [sys.executable, "-m", "mindspore.parallel.cluster.run", f"--worker_num={cluster.worker_num}",
            f"--local_worker_num={cluster.nproc}", f"--node_rank={cluster.node_rank}",
            f"--master_addr={cluster.master_addr}", f"--master_port={cluster.master_port}",
            f"--log_dir={cluster.log_dir}", "--join=True", f"--cluster_time_out={cluster.cluster_time_out}",
            # msrun runs a worker as 'python …' found on PATH: this interpreter's folder goes first on it
            "python", "-m", "glm_train.cli", "--use_parallel", *worker_args]


def _worker_pids(msrun_pid: int) -> dict[int, int]:
    """rank → pid of msrun's glm-train worker children, from their environment (Linux /proc; empty elsewhere)."""
    found = {}
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            if parent != msrun_pid:
                continue
            if b"glm_train.cli" not in (entry / "cmdline").read_bytes():
                continue  # msrun's 'tail -f' of a worker's log, which has the worker's environment too
            environment = dict(item.split("=", 1) for item in (entry / "environ").read_bytes().decode(
                errors="replace").split("\0") if "=" in item)
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile, or not ours to read
        if environment.get("MS_ROLE") == "MS_WORKER" and environment.get("RANK_ID", "").isdigit():
            found[int(environment["RANK_ID"])] = int(entry.name)
    return found


def _read_output(stream, watch: Watch, echo) -> None:
    for raw in stream:
        line = raw.decode(errors="replace")
        echo.write(line)
        echo.flush()
        if (started := _STARTED.search(line)) and started[1].isdigit():
            watch.logs[int(started[1])] = Path(started[2])
        elif (failed := _FAILED.search(line)) and watch.failed_pid is None:
            watch.failed_pid, watch.failed_status = int(failed[1]), int(failed[2])


def last_error_line(log: Path) -> str:
    """The last line of ``log`` that reads like an error ('' if none or unreadable)."""
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        if _ERROR_LINE.search(line) and "WARNING" not in line:
            return line.strip()
    return ""


def _end_group(process: subprocess.Popen, grace: float) -> None:
    """SIGINT to msrun (it kills its workers), then SIGKILL to its process group (msrun, its scheduler)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _end_workers(pids: dict[int, int]) -> None:
    """SIGKILL the process groups of workers still alive (msrun starts each in its own session)."""
    for pid in pids.values():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


def launch(cluster: Cluster, worker_args: list[str], echo=sys.stdout) -> int:
    """Run msrun for ``cluster`` with ``worker_args`` (glm-train run flags) and watch it.

    Returns 0 when every rank finished, 1 when a rank failed (reported on stderr with its log), msrun's own
    status when msrun failed otherwise, 130 on Ctrl-C or SIGTERM (every process of the run ended).
    """
    cluster.check()
    cluster.log_dir.mkdir(parents=True, exist_ok=True)
    for stale in [*cluster.log_dir.glob("worker_*.log"), cluster.log_dir / "scheduler.log"]:
        stale.unlink(missing_ok=True)  # an earlier run's logs must not pass for this run's
    environment = dict(os.environ, PATH=os.pathsep.join([os.path.dirname(sys.executable),
                                                        os.environ.get("PATH", "")]))
    process = subprocess.Popen(msrun_command(cluster, worker_args), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, env=environment, start_new_session=True)
    watch = Watch()
    reader = threading.Thread(target=_read_output, args=(process.stdout, watch, echo), daemon=True)
    reader.start()
    try:
        while process.poll() is None and watch.failed_pid is None:
            if len(watch.pids) < cluster.nproc:
                watch.pids.update(_worker_pids(process.pid))
            time.sleep(0.1)
    except KeyboardInterrupt:
        _end_group(process, grace=5.0)
        _end_workers(watch.pids)
        print("glm-train launch: interrupted; every process of the run was ended", file=sys.stderr)
        return 130
    if watch.failed_pid is None:
        reader.join(timeout=5)
        if watch.failed_pid is None:
            if process.returncode:
                print(f"glm-train launch: msrun exited with status {process.returncode}; see the logs in "
                      f"{cluster.log_dir}", file=sys.stderr)
            return process.returncode
    _end_group(process, grace=0.0)  # msrun has killed the other workers; its scheduler would wait on
    _end_workers(watch.pids)
    ranks = [rank for rank, pid in watch.pids.items() if pid == watch.failed_pid]
    if ranks:
        log = watch.logs.get(ranks[0], cluster.log_dir / f"worker_{ranks[0]}.log")
        error = last_error_line(log)
        print(f"glm-train launch: rank {ranks[0]} exited with status {watch.failed_status}; its log: {log}"
              f"{': ' + error if error else ''}", file=sys.stderr)
    else:
        print(f"glm-train launch: worker pid {watch.failed_pid} exited with status {watch.failed_status}; the "
              f"workers' logs are in {cluster.log_dir}", file=sys.stderr)
    return EXIT_RANK_FAILED


# ----------------------------------------------------------------------------------------- subcommand
def add_launch_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nproc", type=int, required=True, help="processes (devices) on this node")
    parser.add_argument("--worker_num", type=int, help="processes of the whole run (default: --nproc, one node)")
    parser.add_argument("--node_rank", type=int, default=0, help="this node's index, 0 on the master (default 0)")
    parser.add_argument("--master_addr", default="127.0.0.1", help="the master node's address (default 127.0.0.1)")
    parser.add_argument("--master_port", type=int,
                        help=f"the scheduler's port (default: a free one on one node, {DEFAULT_MASTER_PORT} on many)")
    parser.add_argument("--log_dir", help="msrun's logs (default: <the run's output_dir>/log)")
    parser.add_argument("--cluster_time_out", type=int, default=600,
                        help="seconds to wait for every process to join (default 600)")
    parser.add_argument("train_args", nargs=argparse.REMAINDER, metavar="-- GLM-TRAIN FLAGS",
                        help="the run's flags, as glm-train takes them (--config …)")


def run_launch(args: argparse.Namespace) -> int:
    from glm_train.cli import build_run_parser
    from glm_train.runs import config_from_arguments

    worker_args = args.train_args[1:] if args.train_args[:1] == ["--"] else list(args.train_args)
    if not worker_args:
        raise RunConfigError("glm-train launch needs the run's flags after '--', e.g. -- --config "
                             "run_glm_6b_finetune.yaml")
    if "--no-progress" not in worker_args:
        worker_args.append("--no-progress")  # progress bars in log files are noise
    # Check the run's flags and config here, once, rather than in every rank
    config = config_from_arguments(build_run_parser().parse_args([*worker_args, "--use_parallel"]))
    worker_num = args.worker_num or args.nproc
    port = args.master_port or (free_port(args.master_addr) if worker_num == args.nproc else DEFAULT_MASTER_PORT)
    log_dir = Path(args.log_dir) if args.log_dir else Path(config["output_dir"]) / "log"
    cluster = Cluster(args.nproc, worker_num, args.node_rank, args.master_addr, port, log_dir,
                      args.cluster_time_out)
    return launch(cluster, worker_args)
