"""report.json, schema 2, of a conversion: the candidates of a run, the matrix of their target results,
and the chosen candidate, whose figures also fill the schema-1 top-level keys that other tools read."""

from __future__ import annotations

from typing import Any

from edgecore.metrics import PROBABILITY_FLOOR
from pipeline.core.artifacts import sha256_bytes
from pipeline.core.candidates import Candidate
from pipeline.core.environment import environment
from pipeline.report.advice import advise
from pipeline.report.reports import SCHEMA, describe_artifact, utc_now
from targets import retried_after

from .context import Context

ISLANDS = ("float_islands", "int16_islands")


def _calibration(ctx: Context, candidate: Candidate) -> dict[str, Any] | None:
    """How the candidate's activation ranges were chosen (int8 only)."""
    if candidate.made.calibration is None:
        return None
    notes = ctx.notes.get(candidate.name)
    if notes is None:  # the converter's own min/max
        return {"method": str(candidate.made.calibration), "params": {}, "tensors_changed": 0}
    return {key: value for key, value in notes.items() if key not in ISLANDS}


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
        **{kind: ctx.notes[candidate.name][kind] for kind in ISLANDS if kind in ctx.notes.get(candidate.name, {})},
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
        "created": utc_now(),
        "candidates": rows,
        "chosen": chosen.name,
        "model": {**ctx.model.describe(), "macs": chosen.info.macs},
        "recipe": str(chosen.made.recipe),
        "config": config.to_dict(),
        "preprocess": ctx.preprocess.to_dict(),
        "data": {
            "calib": ctx.calib.describe() if ctx.calib else None,
            "eval": ctx.eval.describe() if ctx.eval else None,
            **({"holdout": ctx.holdout.describe()} if ctx.holdout else {}),
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
    if verification is not None and verification.float_perplexity is not None:
        report["perplexity_method"] = ("exp(mean negative log-likelihood of each labelled token); a probability an "
                                       f"int8 softmax gives as exactly 0 counts as {PROBABILITY_FLOOR:g}")
    first_death = retried_after()
    if first_death:  # this run's worker replaced one that died in native code (see targets.worker)
        report["retried"] = {"after": first_death, "note": "the first worker died and this run is its retry in a "
                             "fresh worker; the artifacts are the retry's"}
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
    report["advice"] = advise(report)  # empty when the chosen model loses nothing and is not slower
    return report
