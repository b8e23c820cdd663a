"""report.json (the keys in DESIGN.md, which other tools rely on) and a report.md to paste in a PR."""

from __future__ import annotations

import datetime as _dt
from typing import TYPE_CHECKING, Any

from targets.graph import ModelInfo

from .artifacts import sha256_bytes
from .environment import environment

if TYPE_CHECKING:
    from .stages import Context

SCHEMA = 1


def _io(info: ModelInfo) -> dict[str, Any]:
    return {"input": info.inputs[0].to_dict(), "output": info.outputs[0].to_dict()}


def describe_artifact(path, blob: bytes, info: ModelInfo) -> dict[str, Any]:
    return {"path": str(path), "sha256": sha256_bytes(blob), "bytes": len(blob), **_io(info),
            "ops": info.op_counts}


def build_conversion_report(ctx: "Context") -> dict[str, Any]:
    config, verification = ctx.config, ctx.verification
    baseline = ctx.artifacts["model_float32.tflite"]
    return {
        "schema": SCHEMA,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": {**ctx.model.describe(), "macs": ctx.info.macs},
        "recipe": config.recipe.value,
        "config": config.to_dict(),
        "preprocess": ctx.preprocess.to_dict(),
        "data": {
            "calib": ctx.calib.describe() if ctx.calib else None,
            "eval": ctx.eval.describe() if ctx.eval else None,
        },
        "artifact": describe_artifact(config.out / config.artifact_name, ctx.artifact, ctx.info),
        "float": {
            "accuracy": verification.get("float_accuracy"),
            "tflite_path": str(config.out / "model_float32.tflite"),
            "tflite_bytes": len(baseline),
            "tflite_accuracy": ctx.baseline.get("tflite_accuracy"),
            "tflite_vs_keras": ctx.baseline.get("tflite_vs_keras"),
            "host_latency_ms": ctx.baseline.get("host_latency_ms"),
        },
        "quantized": {
            "accuracy": verification.get("quantized_accuracy"),
            "agreement": verification.get("agreement"),
            "task": verification.get("task"),
            "output_error": verification.get("output_error"),
            "size_ratio": round(len(ctx.artifact) / len(baseline), 4),
        },
        "targets": {name: result.to_dict() for name, result in ctx.targets.items()},
        "environment": environment(),
        **({"ptq": ctx.ptq, "qat": ctx.qat} if config.qat else {}),
    }


def build_run_report(path, blob: bytes, info: ModelInfo, eval_data, preprocess, target: str,
                     result) -> dict[str, Any]:
    """The report of ``edgepipe run``: one artifact on one target."""
    return {
        "schema": SCHEMA,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "artifact": describe_artifact(path, blob, info),
        "model": {"macs": info.macs},
        "preprocess": preprocess.to_dict(),
        "data": {"eval": eval_data.describe() if eval_data else None},
        "targets": {target: result.to_dict()},
        "environment": environment(),
    }


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def _ms(latency: dict | None, key: str) -> str:
    return "n/a" if not latency else f"{latency[key]:.3f}"


def _kib(count: int | None) -> str:
    return "n/a" if count is None else f"{count / 1024:.1f} KiB"


def render_markdown(report: dict[str, Any]) -> str:
    """A short Markdown summary: what was built, how accurate, how big, how fast where."""
    lines = ["# edgepipe report", ""]
    model, artifact = report.get("model", {}), report["artifact"]
    if "path" in model:
        lines += [f"Model `{model['path']}` ({model['format']}, {model['params']:,} parameters, "
                  f"{model['macs']:,} MACs), recipe **{report['recipe']}**.", ""]
    data = report.get("data", {})
    if data.get("eval"):
        lines += [f"Evaluated on `{data['eval']['path']}` ({data['eval']['samples']} samples).", ""]
    if "float" in report:
        flt, q = report["float"], report["quantized"]
        lines += [
            "| model | accuracy | agreement with float | size | host p50 ms |",
            "|---|---|---|---|---|",
            f"| float (Keras / float32 .tflite) | {_pct(flt['accuracy'])} | 100% | "
            f"{_kib(flt['tflite_bytes'])} | {_ms(flt['host_latency_ms'], 'p50')} |",
            f"| {report['recipe']} `{artifact['path']}` | {_pct(q['accuracy'])} | {_pct(q['agreement'])} | "
            f"{_kib(artifact['bytes'])} | {_ms(report['targets'].get('host', {}).get('latency_ms'), 'p50')} |",
            "",
        ]
        if "ptq" in report:
            ptq, qat = report["ptq"], report["qat"]
            lines[-2:-1] = [
                f"| int8 PTQ `{ptq['path']}` | {_pct(ptq['accuracy'])} | {_pct(ptq['agreement'])} | "
                f"{_kib(ptq['bytes'])} | {_ms(ptq['host_latency_ms'], 'p50')} |",
                lines[-2].replace(f"| {report['recipe']} `", "| int8 QAT `"),
            ]
            parity = qat.get("parity")
            if parity:
                verdict = "within" if parity["ok"] else "**outside**"
                lines += [f"QAT parity: Keras QAT model {_pct(parity['keras_accuracy'])}, its .tflite "
                          f"{_pct(parity['tflite_accuracy'])} ({verdict} {100 * parity['tolerance']:.1f} points). "
                          f"{qat['epochs_run']} epochs" + (", stopped early" if qat["stopped_early"] else "")
                          + (f", resumed after epoch {qat['resumed_from_epoch']}" if qat["resumed_from_epoch"] else "")
                          + ".", ""]
        err = q.get("output_error") or {}
        if err:
            lines += [f"Output error vs float: RMSE {err['rmse']:.4g}, SNR {err['snr_db']} dB, "
                      f"cosine {err['cosine']:.4f}. Size ratio {q['size_ratio']:.3f}.", ""]
    lines += _cpu_table(report["targets"]) + _mcu_table(report["targets"])
    io = artifact["input"], artifact["output"]
    lines += [f"Input {io[0]['dtype']} {io[0]['shape']} scale {io[0]['scale']:.6g} zero point {io[0]['zero_point']}; "
              f"output {io[1]['dtype']} scale {io[1]['scale']:.6g} zero point {io[1]['zero_point']}.",
              f"Artifact sha256 `{artifact['sha256']}`.", ""]
    env = report["environment"]
    lines.append(f"TensorFlow {env.get('tensorflow')}, LiteRT {env.get('litert')}, TFLM {env.get('tflite_micro')}, "
                 f"Python {env.get('python')}, {env.get('platform')}.")
    return "\n".join(lines) + "\n"


def _cpu_table(targets: dict[str, Any]) -> list[str]:
    rows = {name: r for name, r in targets.items() if "arena_bytes" not in r}
    if not rows:
        return []
    lines = ["| target | runtime | delegate | accuracy | p50 ms | p90 ms | runs |", "|---|---|---|---|---|---|---|"]
    for name, result in rows.items():
        latency = result.get("latency_ms")
        p50, p90 = _ms(latency, "p50"), _ms(latency, "p90")
        if latency is None and result.get("estimated_latency_ms") is not None:
            p50 = f"est. {result['estimated_latency_ms']:.3f}"
        lines.append(
            f"| {name} | {result['runtime']} | {result['delegate'] or 'none'} | {_pct(result['accuracy'])} | "
            f"{p50} | {p90} | {latency['runs'] if latency else 'n/a'} |"
        )
    lines.append("")
    for name, result in rows.items():
        if result.get("emulated"):
            exact = "yes" if result.get("bit_exact_vs_host") else (
                f"no, {result.get('differing_outputs_vs_host')} outputs differ by up to "
                f"{result.get('max_diff_steps_vs_host')} step(s)" if "bit_exact_vs_host" in result else "not checked")
            lines += [f"{name}: emulated {result['qemu_cpu']} under QEMU; {result['instructions_per_inference']:,} guest "
                      f"instructions per inference (repeatable), estimated {result['estimated_latency_ms']:.3f} ms on "
                      f"the board ({result['latency_method']}); outputs bit-identical to the host: {exact}.", ""]
    for name, result in rows.items():
        xnn = result.get("xnnpack")
        if xnn and not xnn["full_graph"]:
            lines += [f"{name}: XNNPACK took {xnn['delegated_ops']} of {xnn['total_ops']} ops; "
                      f"left on the CPU kernels: {', '.join(xnn['cpu_ops'])}.", ""]
    return lines


def _mcu_table(targets: dict[str, Any]) -> list[str]:
    rows = {name: r for name, r in targets.items() if "arena_bytes" in r}
    if not rows:
        return []
    lines = ["| MCU target (TFLM) | accuracy | max diff vs reference | arena | RAM | flash | fits | est. latency ms | est. energy mJ |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        ref = r.get("reference") or {}
        steps = "n/a" if not ref else f"{ref['max_diff_steps']:g} steps"
        fits = "yes" if r["fits"] else "**no**"
        lines.append(f"| {name} | {_pct(r['accuracy'])} | {steps} | {_kib(r['arena_bytes'])} | {_kib(r['ram_bytes'])} | "
                     f"{_kib(r['flash_bytes'])} | {fits} | {r['estimated_latency_ms']:.2f} | {r['energy_mj']['value']:.4f} |")
    lines += ["", "MCU latency and energy are estimates (cycle model calibrated on MLPerf Tiny; energy = estimated "
                  "latency x board power). Arena is measured by TFLM's recording allocator; RAM adds the device margin "
                  "and runtime; flash adds interpreter and kernel code estimates.", ""]
    return lines
