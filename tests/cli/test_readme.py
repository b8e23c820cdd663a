"""The README stays true: its examples run as written, its command summary and target table match
the CLI and the registry."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline import api
from pipeline.cli.commands import main

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


PLANTED = "python -m calibration_data.planted "


def _commands() -> list[str]:
    """Every `edgepipe ...` (and planted-model) line of the README's sh blocks, except those that
    need a device (--host)."""
    lines = [line.split("  #")[0].strip() for block in _blocks("sh") for line in block.splitlines()]
    return [line for line in lines if (line.startswith("edgepipe ") and "--host" not in line) or line.startswith(PLANTED)]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_keras, image_folder, mnist_eval, planted_folder, monkeypatch_module):
    """A folder with the files the README's examples name: model.keras, calib/, eval.npz, train.npz."""
    folder = tmp_path_factory.mktemp("readme")
    (folder / "planted").symlink_to(planted_folder, target_is_directory=True)
    (folder / "calibration_data").symlink_to(api.sample_path(), target_is_directory=True)
    shutil.copy(tiny_keras, folder / "model.keras")
    shutil.copytree(image_folder, folder / "calib")
    np.savez(folder / "eval.npz", x=mnist_eval["x"][200:400], y=mnist_eval["y"][200:400])
    np.savez(folder / "train.npz", x=mnist_eval["x"][:200], y=mnist_eval["y"][:200])
    monkeypatch_module.chdir(folder)
    return folder


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_the_library_example_runs_as_written(workdir, capsys):
    (example,) = [block for block in _blocks("python") if "api.convert" in block]
    exec(compile(example, "README.md", "exec"), {})
    printed = capsys.readouterr().out.strip()
    assert 0.5 < float(printed) <= 1.0
    assert (workdir / "build" / "model_int8.tflite").exists()


def test_the_cli_examples_run_as_written(workdir):
    commands = _commands()
    assert len(commands) >= 4, commands
    for command in commands:
        if command.startswith(PLANTED):  # built once per session by the planted_folder fixture
            assert command.split()[-1].rstrip("/") == "planted" and (workdir / "planted" / "hot.keras").exists()
            continue
        args = shlex.split(command)[1:]
        if args[0] in ("convert", "demo"):
            args.append("--overwrite")  # the library example above already wrote build/
        outcome = CliRunner().invoke(main, [*args, "--runs", "3"] if args[0] in ("convert", "qat", "run") else args)
        assert outcome.exit_code == 0, f"{command}: {outcome.stderr}"


def test_the_command_summary_matches_the_cli():
    (summary,) = [block for block in _blocks("text") if block.startswith("edgepipe convert")]
    listed = {line.split()[1] for line in summary.splitlines()}
    commands = set(main.commands)
    assert listed == commands
    for line in summary.splitlines():
        name = line.split()[1]
        options = {opt for param in main.commands[name].params
                   for opt in [*getattr(param, "opts", []), *getattr(param, "secondary_opts", [])]}
        for option in re.findall(r"--[a-z0-9-]+", line):
            assert option in options, f"README says `{name} {option}`, which `edgepipe {name} --help` lacks"


def test_the_target_table_matches_the_registry():
    table = README.split("<!-- targets:begin -->\n")[1].split("<!-- targets:end -->")[0].strip()

    def size(value, unit):  # as `edgepipe targets` prints it
        if value is not None and unit == "KiB" and value >= 1024**2:
            return f"{value / 1024**2:g} GiB"
        return "-" if value is None else f"{value:g} {unit}"

    expected = ["| target | clock | SRAM | flash | what runs |", "|---|---|---|---|---|"]
    expected += [f"| `{row['name']}` | {size(row.get('clock_mhz'), 'MHz')} | {size(row.get('sram_kib'), 'KiB')} | "
                 f"{size(row.get('flash_kib'), 'KiB')} | {row['description']} |" for row in api.list_targets()]
    assert table == "\n".join(expected), "README target table is stale; replace it with:\n" + "\n".join(expected)
