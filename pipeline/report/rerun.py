"""``edgepipe rerun report.json``: repeat a conversion from its report and say whether the bytes
match; when they do not, say what differs (model, data, library versions)."""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from pipeline.core.artifacts import sha256_path
from pipeline.core.config import ConvertConfig
from pipeline.core.environment import SHAPING, environment, lock_sha256
from pipeline.errors import UsageError

log = logging.getLogger("edgepipe")


@dataclass(frozen=True)
class RerunResult:
    """The verdict: whether every artifact matched, each one's hashes, and the differences found."""

    match: bool
    artifacts: list[dict[str, Any]]
    differences: list[str]
    out: Path | None

    def to_dict(self) -> dict[str, Any]:
        return {"match": self.match, "artifacts": self.artifacts, "differences": self.differences,
                "out": None if self.out is None else str(self.out)}


def _read(path: Path) -> dict[str, Any]:
    try:
        report = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read {path} ({exc}); give the report.json of an earlier run.") from exc
    if not isinstance(report, dict) or not isinstance(report.get("config"), dict):
        raise UsageError(f"{path} has no configuration to repeat; give the report.json written by convert or compare.")
    return report


def _inputs_changed(report: dict[str, Any], config: ConvertConfig) -> list[str]:
    """Model and data files whose bytes are not what the report recorded."""
    changed = []
    recorded = [("model", config.model, (report.get("model") or {}).get("sha256"))]
    for role, path in (("calib", config.calib), ("eval", config.eval)):
        entry = (report.get("data") or {}).get(role) or {}
        if path is not None:
            recorded.append((f"{role} data", path, entry.get("sha256")))
    for what, path, expected in recorded:
        if not Path(path).exists():
            raise UsageError(f"the {what} {path} named in the report no longer exists; restore it to repeat the run.")
        found = sha256_path(path)
        if expected and found != expected:
            changed.append(f"the {what} {path} changed (sha256 {expected[:12]}... then, {found[:12]}... now)")
    return changed


def _versions_changed(report: dict[str, Any]) -> list[str]:
    then, now = report.get("environment") or {}, environment()
    moved = [f"{key} {then.get(key)} then, {now.get(key)} now" for key in SHAPING
             if key in then and then.get(key) != now.get(key)]
    if then.get("lock_sha256") and then.get("lock_sha256") != lock_sha256():
        moved.append("another requirements.lock was installed")
    return [f"library versions differ: {', '.join(moved)}"] if moved else []


def rerun(report_path: str | Path, convert: Callable[[ConvertConfig], Any], out: str | Path | None = None) -> RerunResult:
    """Convert again with ``convert`` (``api.convert``) and the report's resolved configuration (into
    ``out``, else a temporary folder), and compare every candidate's sha256 with the report's."""
    report = _read(Path(report_path))
    config = ConvertConfig.from_dict(report["config"])
    differences = _inputs_changed(report, config) + _versions_changed(report)
    with tempfile.TemporaryDirectory(prefix="edgepipe-rerun-") as scratch:
        target = Path(out) if out is not None else Path(scratch)
        result = convert(replace(config, out=target, overwrite=True))
        before = {row["name"]: row["artifact"]["sha256"] for row in report.get("candidates", [])} or \
            {report.get("chosen") or "artifact": report["artifact"]["sha256"]}
        after = {row["name"]: row["artifact"]["sha256"] for row in result.report["candidates"]}
    rows = [{"candidate": name, "then": sha, "now": after.get(name), "match": after.get(name) == sha}
            for name, sha in before.items()]
    match = all(row["match"] for row in rows)
    if not match and not differences:
        differences.append("the model, the data and the library versions are the same: the conversion itself gave "
                           "other bytes (please report this)")
    return RerunResult(match=match, artifacts=rows, differences=[] if match else differences,
                       out=Path(out) if out is not None else None)
