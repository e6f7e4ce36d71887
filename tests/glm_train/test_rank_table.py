"""``glm-train hccl-table`` and ``merge-hccl``: Ascend rank tables in MindFormers' layout, from an hccn.conf."""

import json
import subprocess
import sys

import pytest

from glm_train.cli import main
from glm_train.rank_table import RankTableError, merge_rank_tables, parse_device_range

HCCN = "".join(f"address_{device}=192.168.100.{101 + device}\nnetdetect_{device}=192.168.100.1\n"
               for device in range(8))


@pytest.fixture
def hccn_conf(tmp_path):
    path = tmp_path / "hccn.conf"
    path.write_text(HCCN, encoding="utf-8")
    return path


def test_eight_devices_give_the_seeds_table(hccn_conf, tmp_path):
    output = tmp_path / "hccl_8p.json"
    assert main(["hccl-table", "--device_num", "[0,8)", "--server_ip", "10.155.111.140",
                 "--device_ips", str(hccn_conf), "--output", str(output)]) == 0
    # MindFormers' hccl_tools.py layout: every value a string, ranks in device order
    assert json.loads(output.read_text()) == {
        "version": "1.0",
        "server_count": "1",
        "server_list": [{
            "server_id": "10.155.111.140",
            "device": [{"device_id": str(device), "device_ip": f"192.168.100.{101 + device}",
                        "rank_id": str(device)} for device in range(8)],
            "host_nic_ip": "reserve",
        }],
        "status": "completed",
    }


def test_any_range_is_read_as_numbers(hccn_conf, tmp_path):
    output = tmp_path / "table.json"
    assert main(["hccl-table", "--device_num", "[ 3, 6)", "--server_ip", "10.0.0.2", "--device_ips",
                 str(hccn_conf), "--output", str(output)]) == 0
    devices = json.loads(output.read_text())["server_list"][0]["device"]
    assert [(d["device_id"], d["rank_id"]) for d in devices] == [("3", "0"), ("4", "1"), ("5", "2")]
    assert parse_device_range("[8,16)") == range(8, 16)
    assert parse_device_range("[10,12)") == range(10, 12)  # two digits: no character-position parsing


def test_default_name_is_mindformers(hccn_conf, tmp_path):
    subprocess.run([sys.executable, "-m", "glm_train.cli", "hccl-table", "--device_num", "[0,2)", "--server_ip",
                    "10.0.0.3", "--device_ips", str(hccn_conf)], cwd=tmp_path, check=True, capture_output=True)
    assert (tmp_path / "hccl_2p_01_10.0.0.3.json").is_file()


@pytest.mark.parametrize("text", ["0,8", "[0,8]", "(0,8)", "[8,0)", "[4,4)", "[-1,2)", "[a,8)", "[0;8)", ""])
def test_malformed_ranges_are_refused(text):
    with pytest.raises(RankTableError, match="--device_num"):
        parse_device_range(text)


def test_bad_range_is_a_one_line_usage_error(hccn_conf, tmp_path, capsys):
    assert main(["hccl-table", "--device_num", "[4,2)", "--device_ips", str(hccn_conf), "--server_ip",
                 "10.0.0.1", "--output", str(tmp_path / "t.json")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "'[4,2)'" in error and "empty" in error
    assert not (tmp_path / "t.json").exists()


def test_missing_device_ips_are_named(hccn_conf, tmp_path, capsys):
    assert main(["hccl-table", "--device_num", "[6,10)", "--device_ips", str(hccn_conf), "--server_ip",
                 "10.0.0.1", "--output", str(tmp_path / "t.json")]) == 2
    error = capsys.readouterr().err
    assert f"{hccn_conf} has no IP for device(s) 8, 9" in error


def test_bad_hccn_lines_and_missing_file_are_named(tmp_path, capsys):
    conf = tmp_path / "hccn.conf"
    conf.write_text("address_0=192.168.1.1\naddress_1=not-an-ip\n", encoding="utf-8")
    assert main(["hccl-table", "--device_num", "[0,2)", "--device_ips", str(conf), "--server_ip", "10.0.0.1"]) == 2
    assert f"{conf}:2: 'not-an-ip' is not an IP address" in capsys.readouterr().err
    assert main(["hccl-table", "--device_ips", str(tmp_path / "absent.conf"), "--server_ip", "10.0.0.1"]) == 2
    assert "absent.conf: cannot read the device IPs" in capsys.readouterr().err


def test_two_servers_merge_into_sixteen_ranks(hccn_conf, tmp_path):
    first, second, merged = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "merged.json"
    for server_ip, path in (("10.0.0.1", first), ("10.0.0.2", second)):
        assert main(["hccl-table", "--device_num", "[0,8)", "--server_ip", server_ip, "--device_ips",
                     str(hccn_conf), "--output", str(path)]) == 0
    assert main(["merge-hccl", str(first), str(second), "--output", str(merged)]) == 0
    table = json.loads(merged.read_text())
    assert table["server_count"] == "2" and table["status"] == "completed"
    assert [server["server_id"] for server in table["server_list"]] == ["10.0.0.1", "10.0.0.2"]
    ranks = [(server["server_id"], d["device_id"], d["rank_id"]) for server in table["server_list"]
             for d in server["device"]]
    assert ranks == [("10.0.0.1", str(i), str(i)) for i in range(8)] + \
                    [("10.0.0.2", str(i), str(8 + i)) for i in range(8)]


def test_merge_refuses_a_server_twice_and_non_tables(tmp_path):
    table = {"server_list": [{"server_id": "10.0.0.1", "device": [{"device_id": "0", "device_ip": "1.1.1.1"}]}]}
    with pytest.raises(RankTableError, match=r"b\.json: server 10\.0\.0\.1 is already in a\.json"):
        merge_rank_tables([table, table], ["a.json", "b.json"])
    with pytest.raises(RankTableError, match=r"c\.json: not a rank table"):
        merge_rank_tables([table, {"version": "1.0"}], ["a.json", "c.json"])


def test_merge_hccl_names_a_file_that_is_not_json(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{\n  oops", encoding="utf-8")
    assert main(["merge-hccl", str(bad), "--output", str(tmp_path / "out.json")]) == 2
    assert f"{bad}:2: not JSON" in capsys.readouterr().err
