"""``edgepipe rerun report.json``: repeat a conversion from its report and say whether the bytes
match; when they do not, say what differs (model, data, library versions)."""

from __future__ import annotations

import logging
import re
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from pipeline.core.artifacts import sha256_path
from pipeline.core.config import ConvertConfig, check_settings, read_json
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


_HINT = "give the report.json an earlier `edgepipe convert` or `compare` wrote, as it wrote it"
_SHA256 = re.compile(r"[0-9a-f]{64}")
READABLE_SCHEMAS = (1, 2)


def _read(path: Path) -> dict[str, Any]:
    report = read_json(path, "the report", _HINT)
    if not isinstance(report, dict):
        raise UsageError(f"{path} is not an edgepipe report (its JSON is not an object); {_HINT}.")
    schema = report.get("schema")
    if schema not in READABLE_SCHEMAS:
        raise UsageError(f"{path} is a report of schema {schema!r}, and this edgepipe repeats schemas "
                         f"{' and '.join(map(str, READABLE_SCHEMAS))}; {_HINT}, or use the edgepipe version that wrote it.")
    if not isinstance(report.get("config"), dict):
        raise UsageError(f"{path} has no configuration to repeat (a report of `edgepipe run` or a fleet?); give the "
                         "report.json written by convert or compare.")
    check_settings(report["config"], f"the report {path} (its config)")
    for key in ("model", "data", "environment", "artifact"):
        if report.get(key) is not None and not isinstance(report[key], dict):
            raise UsageError(f"the report {path}: {key} must be an object, not {report[key]!r:.60}; {_HINT}.")
    return report


def _sha(value: Any, what: str, path: Path, *, required: bool) -> str | None:
    """A recorded sha256, checked to be one (64 lowercase hex digits)."""
    if value is None and not required:
        return None
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        raise UsageError(f"the report {path} records {value!r:.80} as the sha256 of {what}, which is not a sha256 "
                         f"(64 hex digits): the report was edited or damaged; {_HINT}.")
    return value


def _recorded_artifacts(report: dict[str, Any], path: Path) -> dict[str, str]:
    """Each candidate's recorded artifact sha256 (schema 1: the one artifact), checked before any work."""
    rows = report.get("candidates")
    if rows:
        if not isinstance(rows, list) or not all(isinstance(r, dict) and isinstance(r.get("name"), str) and
                                                  isinstance(r.get("artifact"), dict) for r in rows):
            raise UsageError(f"the report {path}: candidates must be a list of objects with a name and an artifact; "
                             f"{_HINT}.")
        return {r["name"]: _sha(r["artifact"].get("sha256"), f"candidate {r['name']}'s artifact", path, required=True)
                for r in rows}
    artifact = report.get("artifact") or {}
    name = report.get("chosen") if isinstance(report.get("chosen"), str) else "artifact"
    return {name: _sha(artifact.get("sha256"), "the artifact", path, required=True)}


def _inputs_changed(report: dict[str, Any], config: ConvertConfig, path: Path) -> list[str]:
    """Model and data files whose bytes are not what the report recorded."""
    changed = []
    recorded = [("model", config.model, _sha((report.get("model") or {}).get("sha256"), "the model", path,
                                             required=False))]
    for role, data_path in (("calib", config.calib), ("eval", config.eval)):
        entry = (report.get("data") or {}).get(role) or {}
        if data_path is not None:
            expected = _sha(entry.get("sha256") if isinstance(entry, dict) else entry, f"the {role} data", path,
                            required=False)
            recorded.append((f"{role} data", data_path, expected))
    for what, file, expected in recorded:
        if not Path(file).exists():
            raise UsageError(f"the {what} {file} named in the report no longer exists; restore it to repeat the run.")
        found = sha256_path(file)
        if expected and found != expected:
            changed.append(f"the {what} {file} changed (sha256 {expected[:12]}... then, {found[:12]}... now)")
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
    try:
        config = ConvertConfig.from_dict(report["config"])
    except UsageError as exc:  # every setting came from the report
        raise UsageError(f"the configuration in {report_path} cannot be repeated: {exc}") from None
    before = _recorded_artifacts(report, Path(report_path))
    differences = _inputs_changed(report, config, Path(report_path)) + _versions_changed(report)
    with tempfile.TemporaryDirectory(prefix="edgepipe-rerun-") as scratch:
        target = Path(out) if out is not None else Path(scratch)
        result = convert(replace(config, out=target, overwrite=True))
        after = {row["name"]: row["artifact"]["sha256"] for row in result.report["candidates"]}
    rows = [{"candidate": name, "then": sha, "now": after.get(name), "match": after.get(name) == sha}
            for name, sha in before.items()]
    match = all(row["match"] for row in rows)
    if not match and not differences:
        differences.append("the model, the data and the library versions are the same: the conversion itself gave "
                           "other bytes (please report this)")
    return RerunResult(match=match, artifacts=rows, differences=[] if match else differences,
                       out=Path(out) if out is not None else None)
