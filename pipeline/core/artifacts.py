"""Atomic, hashed artifacts: nothing half-written ever lands in an output folder."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

from pipeline.errors import UsageError


def sha256_bytes(data: bytes) -> str:
    """The hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_path(path: Path) -> str:
    """Hash a file, or a folder as the sorted list of (relative path, file hash) pairs."""
    path = Path(path)
    if path.is_file():
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()
    digest = hashlib.sha256()
    for child in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(child.relative_to(path).as_posix().encode())
        digest.update(bytes.fromhex(sha256_path(child)))
    return digest.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temp file beside ``path`` and rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        # mkstemp creates 0600; artifacts get the usual permissions a plain open() would give.
        os.chmod(temp, 0o666 & ~_umask())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def locked_output(out: Path):
    """Hold an exclusive lock on the --out folder while a run writes its files, so that two runs
    writing to one folder write one after the other: every file then belongs to the run whose
    report.json is there. Temp files a killed run left behind are removed under the lock."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    handle = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        for stale in out.glob(".*.tmp"):
            stale.unlink(missing_ok=True)
        yield out
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        os.close(handle)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def check_writable(out: Path, names: Iterable[str], overwrite: bool) -> None:
    """Refuse an --out that cannot be made, and existing outputs unless ``overwrite`` was asked for.

    Nothing is created: creatability is tried with a temporary folder beside where --out would go."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give a folder path instead.")
    ancestor = next((p for p in [out, *out.absolute().parents] if p.exists()), None)
    if ancestor is None or not ancestor.is_dir():
        raise UsageError(f"--out {out} cannot be created: {ancestor} is a file; give a folder path instead.")
    try:
        Path(tempfile.mkdtemp(prefix=".edgepipe-probe-", dir=ancestor)).rmdir()
    except OSError as exc:
        raise UsageError(f"--out {out} cannot be created in {ancestor} ({exc.strerror or exc}); choose a folder you "
                         "can write to.") from exc
    existing = [name for name in names if (out / name).exists()]
    if existing and not overwrite:
        raise UsageError(
            f"{out} already holds {', '.join(existing)}; pass --overwrite to replace them "
            "or choose another --out folder."
        )
