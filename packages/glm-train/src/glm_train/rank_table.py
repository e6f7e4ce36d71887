"""Ascend rank tables (``RANK_TABLE_FILE``): ``glm-train hccl-table`` writes one server's, ``glm-train
merge-hccl`` joins several servers' into one.

A rank table is the JSON HCCL reads to connect the devices of a run (MindFormers' ``hccl_tools.py`` and
``merge_hccl.py`` write the same layout; every value is a string)::

    {"version": "1.0", "server_count": "1",
     "server_list": [{"server_id": "10.0.0.1",
                      "device": [{"device_id": "0", "device_ip": "192.168.100.101", "rank_id": "0"}, …],
                      "host_nic_ip": "reserve"}],
     "status": "completed"}

Device IPs come from ``/etc/hccn.conf`` (``address_<device id>=<ip>`` lines, written by ``hccn_tool``).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

HCCN_CONF = Path("/etc/hccn.conf")
_RANGE = re.compile(r"^\s*\[\s*(-?\d+)\s*,\s*(-?\d+)\s*\)\s*$")
_ADDRESS = re.compile(r"^address_(\d+)\s*=\s*(\S+)\s*$")


class RankTableError(ValueError):
    """A device range, hccn.conf or rank table that cannot be used; the message names the value or file."""


def parse_device_range(text: str) -> range:
    """``"[0,8)"`` → ``range(0, 8)``: the half-open range of device ids a server's processes use.

    Any non-empty range of non-negative ids is accepted (``"[8,16)"``, ``"[3,5)"``), read as numbers rather
    than by character position. Raises :class:`RankTableError` for anything else.
    """
    match = _RANGE.match(text)
    if not match:
        raise RankTableError(f"--device_num {text!r}: expected a half-open range of device ids such as '[0,8)'")
    start, end = int(match[1]), int(match[2])
    if start < 0:
        raise RankTableError(f"--device_num {text!r}: device ids start at 0, got {start}")
    if end <= start:
        raise RankTableError(f"--device_num {text!r}: the range is empty (its end {end} must be above its "
                             f"start {start})")
    return range(start, end)


def read_device_ips(path: str | os.PathLike = HCCN_CONF) -> dict[int, str]:
    """Device id → device IP from an hccn.conf (``address_N=IP`` lines; other lines are ignored).

    Raises :class:`RankTableError` naming the file and line for an unreadable file, an address that is not
    an IP, or a device listed twice.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise RankTableError(f"{path}: cannot read the device IPs ({error.strerror or error}); give "
                             "--device_ips FILE with address_<device id>=<ip> lines") from None
    found: dict[int, str] = {}
    for number, line in enumerate(lines, 1):
        match = _ADDRESS.match(line.strip())
        if not match:
            continue
        device, address = int(match[1]), match[2]
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise RankTableError(f"{path}:{number}: {address!r} is not an IP address") from None
        if device in found:
            raise RankTableError(f"{path}:{number}: device {device} is listed a second time")
        found[device] = address
    return found


def local_server_ip() -> str:
    """This host's IP address as its hostname resolves (what MindFormers' tool writes as server_id)."""
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError as error:
        raise RankTableError(f"cannot resolve this host's IP address ({error}); give --server_ip") from None


def build_rank_table(devices: range, device_ips: Mapping[int, str], server_ip: str,
                     source: str = str(HCCN_CONF)) -> dict[str, Any]:
    """The rank table of one server using ``devices``, ranks numbered from 0 in device order.

    Raises :class:`RankTableError` naming the devices that ``device_ips`` (read from ``source``) lacks, or
    a ``server_ip`` that is not an IP address.
    """
    try:
        ipaddress.ip_address(server_ip)
    except ValueError:
        raise RankTableError(f"--server_ip {server_ip!r} is not an IP address") from None
    missing = [device for device in devices if device not in device_ips]
    if missing:
        raise RankTableError(f"{source} has no IP for device(s) {', '.join(map(str, missing))} "
                             f"(it lists {', '.join(map(str, sorted(device_ips))) or 'none'})")
    device_list = [{"device_id": str(device), "device_ip": device_ips[device], "rank_id": str(rank)}
                   for rank, device in enumerate(devices)]
    return {"version": "1.0", "server_count": "1",
            "server_list": [{"server_id": server_ip, "device": device_list, "host_nic_ip": "reserve"}],
            "status": "completed"}


def merge_rank_tables(tables: Sequence[Mapping[str, Any]], sources: Sequence[str]) -> dict[str, Any]:
    """One rank table holding the servers of ``tables`` in the order given, ranks renumbered across them
    (the devices of the first table are ranks 0…n-1, the next table's follow).

    Raises :class:`RankTableError` naming the source of a table that is not a rank table, or a server that
    appears twice.
    """
    servers, seen = [], {}
    for table, source in zip(tables, sources):
        server_list = table.get("server_list") if isinstance(table, Mapping) else None
        if not isinstance(server_list, list) or not server_list:
            raise RankTableError(f"{source}: not a rank table (it has no server_list)")
        for server in server_list:
            devices = server.get("device") if isinstance(server, Mapping) else None
            if not isinstance(devices, list) or not devices or "server_id" not in server:
                raise RankTableError(f"{source}: a server_list entry lacks its server_id or device list")
            if server["server_id"] in seen:
                raise RankTableError(f"{source}: server {server['server_id']} is already in "
                                     f"{seen[server['server_id']]}")
            seen[server["server_id"]] = source
            servers.append(server)
    rank = 0
    merged = []
    for server in servers:
        device_list = []
        for device in server["device"]:
            if not isinstance(device, Mapping) or "device_id" not in device or "device_ip" not in device:
                raise RankTableError(f"{seen[server['server_id']]}: a device of server {server['server_id']} "
                                     "lacks its device_id or device_ip")
            device_list.append({"device_id": str(device["device_id"]), "device_ip": str(device["device_ip"]),
                                "rank_id": str(rank)})
            rank += 1
        merged.append({"server_id": str(server["server_id"]), "device": device_list,
                       "host_nic_ip": str(server.get("host_nic_ip", "reserve"))})
    return {"version": "1.0", "server_count": str(len(merged)), "server_list": merged, "status": "completed"}


def write_json(document: Mapping[str, Any], path: Path) -> Path:
    """Write ``document`` to ``path`` through a temporary file renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.partial")
    try:
        temporary.write_text(json.dumps(document, indent=4) + "\n", encoding="utf-8")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def default_table_name(devices: range, server_ip: str) -> str:
    """MindFormers' name: ``hccl_8p_01234567_10.0.0.1.json``."""
    return f"hccl_{len(devices)}p_{''.join(map(str, devices))}_{server_ip}.json"


# ---------------------------------------------------------------------------------------- subcommands
def add_hccl_table_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device_num", default="[0,8)",
                        help="the devices of this server as a half-open range of device ids (default '[0,8)')")
    parser.add_argument("--server_ip", help="this server's IP address (default: what its hostname resolves to)")
    parser.add_argument("--device_ips", default=str(HCCN_CONF),
                        help=f"the file of address_<device id>=<ip> lines (default {HCCN_CONF})")
    parser.add_argument("--output", help="the rank table to write (default: hccl_<n>p_<ids>_<server ip>.json "
                                         "in the current folder)")


def run_hccl_table(args: argparse.Namespace) -> int:
    devices = parse_device_range(args.device_num)
    device_ips = read_device_ips(args.device_ips)
    server_ip = args.server_ip or local_server_ip()
    table = build_rank_table(devices, device_ips, server_ip, source=args.device_ips)
    output = Path(args.output) if args.output else Path(default_table_name(devices, server_ip))
    if output.resolve() == Path(args.device_ips).resolve():
        raise RankTableError(f"--output {output} is the --device_ips file itself")
    write_json(table, output)
    print(f"rank table of {len(devices)} device(s) on {server_ip}: {output}")
    return 0


def add_merge_hccl_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("tables", nargs="+", metavar="TABLE", help="single-server rank tables, in rank order")
    parser.add_argument("--output", help="the merged table (default: hccl_<servers>s_<ranks>p.json)")


def run_merge_hccl(args: argparse.Namespace) -> int:
    tables = []
    for name in args.tables:
        try:
            tables.append(json.loads(Path(name).read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as error:
            raise RankTableError(f"{name}: cannot read it ({getattr(error, 'strerror', None) or error})") from None
        except json.JSONDecodeError as error:
            raise RankTableError(f"{name}:{error.lineno}: not JSON ({error.msg})") from None
    merged = merge_rank_tables(tables, args.tables)
    ranks = sum(len(server["device"]) for server in merged["server_list"])
    output = Path(args.output or f"hccl_{merged['server_count']}s_{ranks}p.json")
    if any(output.resolve() == Path(name).resolve() for name in args.tables):
        raise RankTableError(f"--output {output} is one of the tables being merged")
    write_json(merged, output)
    print(f"rank table of {ranks} device(s) on {merged['server_count']} server(s): {output}")
    return 0
