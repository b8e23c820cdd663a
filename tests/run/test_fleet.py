"""Validation across a fleet: three real sshd instances on 127.0.0.1, one of them made to fail."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from sshd_helper import sshd_binary, start_sshd  # noqa: E402

from pipeline.cli.commands import main

TINY = Path(__file__).resolve().parents[1] / "data" / "tiny_int8.tflite"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    if sshd_binary() is None:
        pytest.skip("sshd is not installed: `make system-deps` installs openssh-server")
    folder = tmp_path_factory.mktemp("fleet")
    servers, devices = [], []
    for name in ("kitchen", "garage", "attic"):
        server, reach = start_sshd(folder / name)
        servers.append(server)
        devices.append((name, reach))
    # The attic's known_hosts holds another key: its host key check fails, as on a re-imaged device.
    attic = devices[2][1]
    other = (devices[0][1]["folder"] / "host_key.pub").read_text()
    Path(attic["known_hosts"]).write_text(f"[127.0.0.1]:{attic['port']} {other}")
    inventory = folder / "fleet.toml"
    inventory.write_text("".join(
        f'[[device]]\nname = "{name}"\nhost = "{r["host"]}"\nport = {r["port"]}\nidentity = "{r["identity"]}"\n'
        f'known_hosts = "{r["known_hosts"]}"\ntarget = "rpi4"\npython = "{sys.executable}"\n\n'
        for name, r in devices))
    yield inventory
    for server in servers:
        server.terminate()
        server.wait(timeout=10)


def test_fleet_rows_and_summary(fleet, small_npz, tmp_path):
    outcome = CliRunner().invoke(main, ["run", str(TINY), "--hosts", str(fleet), "--eval", str(small_npz),
                                        "--runs", "5", "--parallel", "3", "--out", str(tmp_path), "--json"])
    assert outcome.exit_code == 1, outcome.stderr  # the attic failed: the report, then the error
    assert outcome.stderr.strip().splitlines()[-1].startswith("edgepipe: error: 1 of 3 devices failed (attic)")
    report = json.loads(outcome.stdout)
    rows = {row["device"]: row for row in report["fleet"]["devices"]}
    assert rows["kitchen"]["ok"] and rows["garage"]["ok"] and not rows["attic"]["ok"]
    assert "host key of" in rows["attic"]["reason"] and "known_hosts" in rows["attic"]["reason"]
    for name in ("kitchen", "garage"):
        row = rows[name]
        assert row["accuracy"] > 0.8 and row["latency_ms"]["p50"] > 0 and row["threads"] == 4
        assert row["runtime"].startswith("litert") and row["measured_on"].startswith(row["host"])
        assert row["energy_mj"]["method"] == "measured-latency x board-power"
    summary = report["fleet"]["summary"]
    assert summary["ran"] == 2 and summary["failed"] == ["attic"] and summary["identical_outputs"] is True
    assert summary["latency_p50_ms"]["min"] <= summary["latency_p50_ms"]["median"] <= summary["latency_p50_ms"]["max"]
    markdown = (tmp_path / "report.md").read_text()
    assert "| attic |" in markdown and "failed: the host key" in markdown and "bit-identical" in markdown
    assert "Latency spread across the fleet" in (tmp_path / "report.html").read_text()


def test_fleet_bad_inventory_names_the_device_and_key(tmp_path):
    inventory = tmp_path / "fleet.toml"
    inventory.write_text('[[device]]\nname = "pi"\nhost = "pi@h"\ncolour = "red"\n')
    outcome = CliRunner().invoke(main, ["run", str(TINY), "--hosts", str(inventory), "--target", "rpi4"])
    assert outcome.exit_code == 2 and "pi: unknown keys colour" in outcome.stderr
    inventory.write_text('[[device]]\nname = "mcu"\nhost = "pi@h"\ntarget = "cortex-m4"\n')
    outcome = CliRunner().invoke(main, ["run", str(TINY), "--hosts", str(inventory)])
    assert outcome.exit_code == 2 and "targets that do: arm64, rpi4, rpi5" in outcome.stderr
    inventory.write_text('[[device]]\nname = "x"\nhost = "pi@h;rm -rf /"\ntarget = "rpi4"\n')
    outcome = CliRunner().invoke(main, ["run", str(TINY), "--hosts", str(inventory)])
    assert outcome.exit_code == 2 and "is not a host name" in outcome.stderr


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.fast
def test_a_fleet_where_every_device_fails_keeps_every_row_and_exits_non_zero(tmp_path):
    inventory = tmp_path / "fleet.toml"
    inventory.write_text("".join(f'[[device]]\nname = "{name}"\nhost = "nobody@127.0.0.1"\nport = {_closed_port()}\n'
                                 'target = "rpi4"\n\n' for name in ("east", "west")))
    out = tmp_path / "out"
    outcome = CliRunner().invoke(main, ["run", str(TINY), "--hosts", str(inventory), "--timeout", "60", "--out",
                                        str(out), "--json"])
    assert outcome.exit_code == 1 and "Traceback" not in outcome.output
    last = outcome.stderr.strip().splitlines()[-1]
    assert last.startswith("edgepipe: error: 2 of 2 devices failed (east, west); each one's row says why") and \
        last.endswith(".")
    for report in (json.loads(outcome.stdout), json.loads((out / "report.json").read_text())):
        rows = report["fleet"]["devices"]
        assert [row["device"] for row in rows] == ["east", "west"] and not any(row["ok"] for row in rows)
        assert all(row["reason"] for row in rows) and report["fleet"]["summary"]["failed"] == ["east", "west"]
