"""report.json, schema 2: the candidates of a run, the matrix of their target results, and the
chosen candidate, whose figures also fill the schema-1 top-level keys that other tools read."""

from __future__ import annotations

import datetime as _dt
from typing import Any

from edgecore.model_info import ModelInfo

from .artifacts import atomic_write_bytes, atomic_write_json, sha256_bytes
from .candidates import Candidate
from .context import Context
from .environment import environment

SCHEMA = 2


def _io(info: ModelInfo) -> dict[str, Any]:
    return {"input": info.inputs[0].to_dict(), "output": info.outputs[0].to_dict()}


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def describe_artifact(path, blob: bytes, info: ModelInfo) -> dict[str, Any]:
    """Where an artifact is, its hash and size, its I/O quantization, its ops, and which of them
    compute in float (``float_ops``: empty for a full-int8 model)."""
    return {"path": str(path), "sha256": sha256_bytes(blob), "bytes": len(blob), **_io(info),
            "ops": info.op_counts, "float_ops": info.float_ops()}


def _calibration(ctx: Context, candidate: Candidate) -> dict[str, Any] | None:
    """How the candidate's activation ranges were chosen (int8 only)."""
    if candidate.made.calibration is None:
        return None
    notes = ctx.notes.get(candidate.name)
    if notes is None:  # the converter's own min/max
        return {"method": str(candidate.made.calibration), "params": {}, "tensors_changed": 0}
    return {key: value for key, value in notes.items() if key != "float_islands"}


def candidate_row(ctx: Context, candidate: Candidate) -> dict[str, Any]:
    """One row of ``candidates``: how it was made, its artifact, its figures on every target."""
    verification = ctx.verifications.get(candidate.name)
    figures = verification.to_dict() if verification else {"task": None, "accuracy": None, "agreement": None,
                                                           "output_error": None}
    figures.pop("float_accuracy", None)
    figures.pop("float_perplexity", None)
    return {
        "name": candidate.name,
        "made": candidate.made.to_dict(),
        "artifact": {"path": str(ctx.config.out / candidate.filename), "sha256": sha256_bytes(candidate.artifact),
                     "bytes": len(candidate.artifact)},
        **figures,
        "size_ratio": round(len(candidate.artifact) / len(ctx.baseline.artifact), 4),
        "calibration": _calibration(ctx, candidate),
        "float_ops": candidate.info.float_ops(),
        **({"float_islands": ctx.notes[candidate.name]["float_islands"]}
           if "float_islands" in ctx.notes.get(candidate.name, {}) else {}),
        "targets": {**{name: result.to_dict() for name, result in ctx.results(candidate.name).items()},
                    **{e.target: {"problem": e.problem} for e in ctx.evaluations
                       if e.candidate == candidate.name and e.result is None}},
    }


def build_conversion_report(ctx: Context) -> dict[str, Any]:
    """The whole report of a conversion run (see the README for the keys)."""
    config, baseline = ctx.config, ctx.baseline
    chosen = ctx.candidate(ctx.chosen)
    rows = [candidate_row(ctx, candidate) for candidate in ctx.candidates]
    row = next(r for r in rows if r["name"] == chosen.name)
    verification = ctx.verifications.get(chosen.name)
    baseline_path = config.out / (ctx.plan.baseline_file or chosen.filename)
    report = {
        "schema": SCHEMA,
        "created": _now(),
        "candidates": rows,
        "chosen": chosen.name,
        "model": {**ctx.model.describe(), "macs": chosen.info.macs},
        "recipe": str(chosen.made.recipe),
        "config": config.to_dict(),
        "preprocess": ctx.preprocess.to_dict(),
        "data": {
            "calib": ctx.calib.describe() if ctx.calib else None,
            "eval": ctx.eval.describe() if ctx.eval else None,
        },
        "artifact": describe_artifact(config.out / chosen.filename, chosen.artifact, chosen.info),
        "float": {
            "accuracy": verification.float_accuracy if verification else None,
            "tflite_path": str(baseline_path),
            "tflite_bytes": len(baseline.artifact),
            "tflite_accuracy": baseline.tflite_accuracy,
            "tflite_vs_keras": baseline.tflite_vs_keras,
            "host_latency_ms": baseline.host_latency_ms,
        },
        "quantized": {key: row[key] for key in ("accuracy", "agreement", "task", "output_error", "size_ratio",
                                                "perplexity") if key in row},
        "targets": row["targets"],
        "calibration": row["calibration"],
        "environment": environment(),
    }
    if verification is not None and verification.float_perplexity is not None:
        report["float"]["perplexity"] = verification.float_perplexity
    if ctx.rewrite is not None:
        report["rewrite"] = ctx.rewrite
    if ctx.lint is not None:
        report["lint"] = ctx.lint
    if ctx.ladder is not None:
        report["ladder"] = ctx.ladder
    if ctx.comparison is not None:
        report["comparison"] = ctx.comparison
    if ctx.diagnosis is not None:
        report["diagnosis"] = {"samples": min(ctx.eval.samples if ctx.eval else ctx.calibration.fit.samples, 200),
                               "layers": ctx.diagnosis}
    warnings = [*(ctx.calib.warnings if ctx.calib else ()), *(ctx.eval.warnings if ctx.eval else ())]
    if warnings:
        report["data"]["warnings"] = warnings
    if ctx.qat is not None:
        report["qat"] = ctx.qat.to_dict()
        ptq = next(r for r in rows if not r["made"]["qat"])
        report["ptq"] = {**ptq["artifact"], **{k: ptq[k] for k in ("accuracy", "agreement", "output_error")},
                         "host_latency_ms": ptq["targets"]["host"]["latency_ms"]}
    return report


def build_run_report(path, blob: bytes, info: ModelInfo, eval_data, preprocess, target: str,
                     result) -> dict[str, Any]:
    """The report of ``edgepipe run``: one artifact (one candidate) on one target."""
    artifact = describe_artifact(path, blob, info)
    name = getattr(path, "stem", str(path))
    return {
        "schema": SCHEMA,
        "created": _now(),
        "candidates": [{"name": name, "made": None,
                        "artifact": {key: artifact[key] for key in ("path", "sha256", "bytes")},
                        "accuracy": result.accuracy, "targets": {target: result.to_dict()}}],
        "chosen": name,
        "artifact": artifact,
        "model": {"macs": info.macs},
        "preprocess": preprocess.to_dict(),
        "data": {"eval": eval_data.describe() if eval_data else None},
        "targets": {target: result.to_dict()},
        "environment": environment(),
    }


def fleet_report(path, blob: bytes, info: ModelInfo, eval_data, preprocess, fleet: dict[str, Any]) -> dict[str, Any]:
    """The report of ``edgepipe run --hosts``: one artifact on every device of a fleet."""
    return {
        "schema": SCHEMA,
        "created": _now(),
        "artifact": describe_artifact(path, blob, info),
        "model": {"macs": info.macs},
        "preprocess": preprocess.to_dict(),
        "data": {"eval": eval_data.describe() if eval_data else None},
        "targets": {},
        "fleet": fleet,
        "environment": environment(),
    }


def write_reports(out, report: dict[str, Any], *, html: bool = True) -> list[str]:
    """report.json, report.md and report.html in ``out``, each written atomically; their names."""
    from .html import render_html
    from .markdown import render_markdown

    atomic_write_bytes(out / "report.md", render_markdown(report).encode())
    names = ["report.md"]
    if html:
        atomic_write_bytes(out / "report.html", render_html(report).encode())
        names.append("report.html")
    atomic_write_json(out / "report.json", report)
    return [*names, "report.json"]


def config_toml(settings: dict[str, Any]) -> str:
    """The configuration as TOML (TOML has no null: unset keys are left out, meaning the default)."""
    import tomli_w

    def drop_none(value):
        if isinstance(value, dict):
            return {k: drop_none(v) for k, v in value.items() if v is not None}
        return value

    return ("# The resolved configuration of this run: `edgepipe convert -c edgepipe.toml` repeats it;\n"
            "# options given on the command line override it.\n" + tomli_w.dumps(drop_none(settings)))


__all__ = ["SCHEMA", "config_toml", "fleet_report", "write_reports", "build_conversion_report", "build_run_report", "candidate_row",
           "describe_artifact"]
