"""report.json, schema 2, and its companions: an artifact described, the report of `run` and of a fleet, and
report.json/md/html written atomically. A conversion's report is assembled from its run in
:mod:`pipeline.run.conversion_report`."""

from __future__ import annotations

import datetime as _dt
from typing import Any

from edgecore.model_info import ModelInfo
from pipeline.core.artifacts import atomic_write_bytes, atomic_write_json, sha256_bytes
from pipeline.core.environment import environment

SCHEMA = 2


def io_summary(info: ModelInfo) -> dict[str, Any]:
    return {"input": info.inputs[0].to_dict(), "output": info.outputs[0].to_dict()}


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def describe_artifact(path, blob: bytes, info: ModelInfo) -> dict[str, Any]:
    """Where an artifact is, its hash and size, its I/O quantization, its ops, and which of them
    compute in float (``float_ops``: empty for a full-int8 model)."""
    return {"path": str(path), "sha256": sha256_bytes(blob), "bytes": len(blob), **io_summary(info),
            "ops": info.op_counts, "float_ops": info.float_ops()}


def _data(eval_data) -> dict[str, Any]:
    """The report's ``data``: the eval set, and what was noticed or converted while reading it."""
    entry: dict[str, Any] = {"eval": eval_data.describe() if eval_data else None}
    if eval_data is not None and eval_data.warnings:
        entry["warnings"] = list(eval_data.warnings)
    return entry


def build_run_report(path, blob: bytes, info: ModelInfo, eval_data, preprocess, target: str,
                     result) -> dict[str, Any]:
    """The report of ``edgepipe run``: one artifact (one candidate) on one target."""
    artifact = describe_artifact(path, blob, info)
    name = getattr(path, "stem", str(path))
    return {
        "schema": SCHEMA,
        "created": utc_now(),
        "candidates": [{"name": name, "made": None,
                        "artifact": {key: artifact[key] for key in ("path", "sha256", "bytes")},
                        "accuracy": result.accuracy, "targets": {target: result.to_dict()}}],
        "chosen": name,
        "artifact": artifact,
        "model": {"macs": info.macs},
        "preprocess": preprocess.to_dict(),
        "data": _data(eval_data),
        "targets": {target: result.to_dict()},
        "environment": environment(),
    }


def fleet_report(path, blob: bytes, info: ModelInfo, eval_data, preprocess, fleet: dict[str, Any]) -> dict[str, Any]:
    """The report of ``edgepipe run --hosts``: one artifact on every device of a fleet."""
    return {
        "schema": SCHEMA,
        "created": utc_now(),
        "artifact": describe_artifact(path, blob, info),
        "model": {"macs": info.macs},
        "preprocess": preprocess.to_dict(),
        "data": _data(eval_data),
        "targets": {},
        "fleet": fleet,
        "environment": environment(),
    }


def write_reports(out, report: dict[str, Any], *, html: bool = True) -> list[str]:
    """report.json, report.md and report.html in ``out``, each written atomically; their names.
    Both pages are rendered before any file is written, so a report they cannot render changes nothing."""
    from .html import render_html
    from .markdown import render_markdown

    pages = {"report.md": render_markdown(report), **({"report.html": render_html(report)} if html else {})}
    for name, text in pages.items():
        atomic_write_bytes(out / name, text.encode())
    atomic_write_json(out / "report.json", report)
    return [*pages, "report.json"]


class MissingKey(KeyError):
    """A key a report read from disk lacks, with its path in the report (``quantized.accuracy``)."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


class Traced(dict):
    """A report read from disk (or part of one) that raises :class:`MissingKey` with the key's whole
    path, so that a report written by another version, or edited, is named precisely."""

    def __init__(self, data: dict, path: str = "") -> None:
        super().__init__(data)
        self.path = path

    def _child(self, key, value):
        where = f"{self.path}.{key}" if self.path else str(key)
        if isinstance(value, dict):
            return Traced(value, where)
        if isinstance(value, list):
            return [Traced(v, f"{where}[{i}]") if isinstance(v, dict) else v for i, v in enumerate(value)]
        return value

    def __getitem__(self, key):
        if key not in self:
            raise MissingKey(f"{self.path}.{key}" if self.path else str(key))
        return self._child(key, super().__getitem__(key))

    def get(self, key, default=None):
        return self._child(key, super().__getitem__(key)) if key in self else default

    def items(self):
        return [(key, self._child(key, value)) for key, value in super().items()]

    def values(self):
        return [value for _, value in self.items()]


def config_toml(settings: dict[str, Any]) -> str:
    """The configuration as TOML (TOML has no null: unset keys are left out, meaning the default)."""
    import tomli_w

    def drop_none(value):
        if isinstance(value, dict):
            return {k: drop_none(v) for k, v in value.items() if v is not None}
        return value

    return ("# The resolved configuration of this run: `edgepipe convert -c edgepipe.toml` repeats it;\n"
            "# options given on the command line override it.\n" + tomli_w.dumps(drop_none(settings)))


__all__ = ["SCHEMA", "MissingKey", "Traced", "build_run_report", "config_toml", "describe_artifact", "fleet_report",
           "io_summary", "utc_now", "write_reports"]
