"""report.md: a short Markdown summary of a report, to paste in a pull request.

Rendered from the report dictionary alone (schema 1 or 2), so ``report.json`` is all it needs.
"""

from __future__ import annotations

from typing import Any


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
        lm = flt.get("perplexity") is not None  # a sequence model: token accuracy and perplexity
        lines += [
            f"| model | {'token accuracy | perplexity' if lm else 'accuracy'} | agreement with float | size | host p50 ms |",
            f"|---|---|{'---|' if lm else ''}---|---|---|",
            f"| float (Keras / float32 .tflite) | {_pct(flt['accuracy'])} | {_ppl(flt, lm)}100% | "
            f"{_kib(flt['tflite_bytes'])} | {_ms(flt['host_latency_ms'], 'p50')} |",
            *(_candidate_line(report, row, lm) for row in _rows(report)),
            "",
        ]
        qat = report.get("qat")
        parity = (qat or {}).get("parity")
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
    for sentence in report.get("advice") or []:
        lines += [f"Advice: {sentence}", ""]
    lines += _comparison(report) + _quantization_notes(report) + _fleet(report)
    lines += _cpu_table(report["targets"]) + _mcu_table(report["targets"]) + _npu_table(report["targets"])
    io = artifact["input"], artifact["output"]
    lines += [f"Input {io[0]['dtype']} {io[0]['shape']} scale {io[0]['scale']:.6g} zero point {io[0]['zero_point']}; "
              f"output {io[1]['dtype']} scale {io[1]['scale']:.6g} zero point {io[1]['zero_point']}.",
              f"Artifact sha256 `{artifact['sha256']}`.", ""]
    env = report["environment"]
    lines.append(f"TensorFlow {env.get('tensorflow')}, LiteRT {env.get('litert')}, TFLM {env.get('tflite_micro')}, "
                 f"Python {env.get('python')}, {env.get('platform')}.")
    return "\n".join(lines) + "\n"


def _fleet(report: dict[str, Any]) -> list[str]:
    """run --hosts: one row per device, then the fleet's latency spread and output agreement."""
    fleet = report.get("fleet")
    if not fleet:
        return []
    lines = ["| device | host | target | runtime | accuracy | p50 ms | p90 ms | energy mJ | outputs |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in fleet["devices"]:
        if not row["ok"]:
            lines.append(f"| {row['device']} | {row['host']} | {row['target']} | failed: {row['reason']} | | | | | |")
            continue
        latency, energy = row.get("latency_ms") or {}, (row.get("energy_mj") or {}).get("value")
        lines.append(f"| {row['device']} | {row['measured_on'] or row['host']} | {row['target']} | {row['runtime']} | "
                     f"{_pct(row.get('accuracy'))} | {_ms(latency, 'p50')} | {_ms(latency, 'p90')} | "
                     f"{'n/a' if energy is None else f'{energy:.4g}'} | "
                     f"{(row.get('outputs_sha256') or 'n/a')[:12]} |")
    summary = fleet["summary"]
    spread = summary["latency_p50_ms"]
    lines += ["", f"{summary['ran']} of {summary['devices']} devices ran"
              + (f" (failed: {', '.join(summary['failed'])})" if summary["failed"] else "") + "."
              + (f" p50 latency min {spread['min']:.3f} ms, median {spread['median']:.3f} ms, max {spread['max']:.3f} ms."
                 if spread else ""), ""]
    if summary["identical_outputs"] is not None:
        lines += ["Outputs: " + ("bit-identical on every device that ran." if summary["identical_outputs"] else
                                 f"**not** identical: {', '.join(summary['differing'])} differ from the others."), ""]
    return lines


def _comparison(report: dict[str, Any]) -> list[str]:
    """compare: the matrix (candidate x target), the Pareto front and the recommendation per target."""
    comparison = report.get("comparison")
    if not comparison:
        return []
    lm = any(cell.get("perplexity") is not None for cell in comparison["matrix"])
    lines = [f"| candidate | target | accuracy | {'perplexity | ' if lm else ''}agreement | size | RAM | flash | fits | "
             "latency ms | energy mJ |", f"|---|---|---|{'---|' if lm else ''}---|---|---|---|---|---|---|"]
    for cell in comparison["matrix"]:
        if "problem" in cell:
            lines.append(f"| {cell['candidate']} | {cell['target']} | cannot run: {cell['problem']} | | | | | | | |"
                         + (" |" if lm else ""))
            continue
        fits = "n/a" if cell.get("fits") is None else ("yes" if cell["fits"] else "**no**")
        latency = "n/a" if cell.get("latency_ms") is None else f"{cell['latency_ms']:.3f} ({cell['latency_method']})"
        energy = "n/a" if cell.get("energy_mj") is None else f"{cell['energy_mj']:.4g}"
        lines.append(f"| {cell['candidate']} | {cell['target']} | {_pct(cell.get('accuracy'))} | {_ppl(cell, lm)}"
                     f"{_pct(cell.get('agreement'))} | "
                     f"{_kib(cell['bytes'])} | {_kib(cell.get('ram_bytes'))} | {_kib(cell.get('flash_bytes'))} | {fits} | "
                     f"{latency} | {energy} |")
    lines.append("")
    for target, front in comparison["pareto"].items():
        lines.append(f"Pareto front on {target} (accuracy, size, latency, energy): {', '.join(front) or 'none'}.")
    lines.append("")
    for target, found in comparison["recommendations"].items():
        lines.append(f"Recommended for **{target}**: {found['reason'] if found else 'nothing runs there'}.")
    return lines + [""]


def _quantization_notes(report: dict[str, Any]) -> list[str]:
    """Rewrites and lint, calibration, float islands, the ladder, the per-layer diagnosis and data warnings."""
    lines = []
    rewrite = report.get("rewrite")
    if rewrite:
        kinds: dict[str, int] = {}
        for item in rewrite["applied"]:
            kinds[item["rewrite"]] = kinds.get(item["rewrite"], 0) + 1
        lines += [f"Rewritten for the edge: {', '.join(f'{k} x{n}' for k, n in kinds.items())} "
                  f"({', '.join(item['layer'] for item in rewrite['applied'])}); float outputs differ by at most "
                  f"{rewrite['max_abs_difference']:.3g} ({rewrite['max_relative_difference']:.2g} relative) on "
                  f"{rewrite['samples']} samples.", ""]
    for finding in report.get("lint") or []:
        lines += [f"Lint ({', '.join(finding['breaks'])}): {finding['message']}.", ""]
    calibration = report.get("calibration")
    if calibration and calibration.get("requested") == "auto":
        scores = ", ".join(f"{name} {row['snr_db']} dB" for name, row in calibration["scores"].items())
        strength = (calibration.get("params") or {}).get("percentile")
        chose = calibration["method"] + (f" (P {strength:g})" if strength else "")
        lines += [f"Calibration: auto chose **{chose}** on {calibration['held_out_samples']} held-out "
                  f"calibration samples (output SNR against float: {scores}); {calibration['tensors_changed']} "
                  "tensors got other ranges than min/max.", ""]
    elif calibration and calibration.get("method") != "minmax":
        lines += [f"Calibration: {calibration['method']} {calibration.get('params') or ''}; "
                  f"{calibration.get('tensors_changed', 0)} tensors got other ranges than min/max.", ""]
    row = next((r for r in _rows(report) if r["name"] == report.get("chosen")), {})
    islands = row.get("float_islands")
    if islands:
        lines += [f"Float islands: {', '.join(islands['ops'])} stay float (+{_kib(islands['bytes_cost'])}, "
                  f"{islands.get('host_latency_cost_ms', 0):+.3f} ms on the host against full int8).", ""]
    wide = row.get("int16_islands")
    if wide:
        search = wide.get("search") or {}
        how = (f"; chosen by measured effect on {search['measure']} over {len(search.get('effects', []))} op groups"
               if search.get("effects") else "")
        lines += [f"int16 islands: {', '.join(wide['groups']) or 'none'} compute with int16 activations "
                  f"({wide['ops']} ops, {wide['bytes_cost']:+d} bytes, {wide.get('host_latency_cost_ms', 0):+.3f} ms on "
                  f"the host against full int8){how}.", ""]
    ladder = report.get("ladder")
    if ladder:
        power = ladder.get("power") or {}
        lines += [f"Ladder (budget {ladder['budget']:g}, judged on {ladder['held_out_samples']} held-out "
                  "calibration samples; met: the one-sided 95% upper bound on the drop is within the budget):", ""]
        if power.get("certifiable") is False:
            lines += [f"The held-out set cannot certify this budget: with nothing lost the 95% bound is still "
                      f"{power['best_possible_bound']:.2f} points; it takes {power['samples_needed']} samples "
                      "(a larger --calib, or --holdout DATA).", ""]
        lines += ["| rung | drop | 95% bound | measure | size | met |", "|---|---|---|---|---|---|"]
        for rung in ladder["tried"]:
            if "skipped" in rung:
                lines.append(f"| {rung['candidate']} | skipped: {rung['skipped']} | | | | |")
            else:
                lines.append(f"| {rung['candidate']} | {rung['drop']:.2f} | {rung['drop_upper']:.2f} | {rung['measure']} | "
                             f"{_kib(rung['bytes'])} | "
                             f"{'**yes**' if rung['met'] else 'no'} |")
        lines += ["", f"Chosen: **{ladder['chosen']}**" + ("" if ladder["met"] else
                  " (**not certified**: no rung's 95% bound is within the budget; the closest)"), ""]
    diagnosis = report.get("diagnosis")
    if diagnosis:
        lines += _layer_lines(diagnosis["layers"][:8], f"Per-layer SNR ({diagnosis['samples']} samples), worst first:")
    for warning in (report.get("data") or {}).get("warnings", []):
        lines += [f"Warning: {warning}.", ""]
    return lines


def _layer_lines(rows: list[dict[str, Any]], title: str, measure: str | None = None) -> list[str]:
    effect = measure is not None
    lines = [title, "", "| layer | op | range | scale | RMSE / scale | SNR dB | channel SNR dB |"
             + (f" effect on {measure} |" if effect else ""), "|---|---|---|---|---|---|---|" + ("---|" if effect else "")]
    for row in rows:
        span = "n/a" if row["range"] is None else f"{row['range'][0]:.4g} .. {row['range'][1]:.4g}"
        scale = "n/a" if row["scale"] is None else f"{row['scale']:.4g}"
        ratio = "n/a" if row["rmse_over_scale"] is None else f"{row['rmse_over_scale']:.3f}"
        gain = "" if not effect else (" n/a |" if row.get("effect") is None else f" {row['effect']:+.3f} |")
        lines.append(f"| {row['layer']} | {row['op']} | {span} | {scale} | {ratio} | {row['snr_db']:.1f} | "
                     f"{row['channel_snr_db']:.1f} |{gain}")
    return lines + [""]


def render_inspection(report: dict[str, Any]) -> str:
    """``edgepipe inspect`` as Markdown: layers worst first, formats, weight SQNR, calibration sweep."""
    model, data = report["model"], report["data"]
    judged = data["eval"] if data["judged_on"] == "eval" else data["calib"]
    lines = ["# edgepipe inspect", "", f"Model `{model['path']}` ({model['format']}, {model['params']:,} parameters), "
             f"judged on `{judged['path']}` ({data['judged_on']}).", ""]
    effects = report.get("effects")
    lines += _layer_lines(report["layers"], "Per layer, each quantized op against its float twin on the same input "
                          "(errors do not accumulate), worst first by SNR"
                          + (f"; effect: how much of int8's {effects['measure']} drop ({effects['int8_drop']:.3f}) goes "
                             "when that op alone computes in int16 (--int16-layers LAYER:OP)" if effects else "") + ":",
                          effects["measure"] if effects else None)
    if effects and effects["groups"]:
        top = [row for row in effects["groups"] if row.get("effect", 0) > 0][:5]
        if top:
            lines += ["Largest measured effect: " + ", ".join(f"{row['group']} ({row['effect']:+.3f})" for row in top)
                      + f", on {effects['samples']} samples.", ""]
    if report.get("formats"):
        lines += ["| format | accuracy | agreement | output SNR dB | size | how |", "|---|---|---|---|---|---|"]
        for row in report["formats"]:
            lines.append(f"| {row['format']}{' (simulated)' if row['simulated'] else ''} | {_pct(row['accuracy'])} | "
                         f"{_pct(row['agreement'])} | {row['snr_db']} | {_kib(row['bytes'])} | {row['how']} |")
        lines.append("")
    if report.get("weights"):
        lines += ["Weight SQNR (dB) per layer and format:", "",
                  "| layer | weights | float16 | bfloat16 | int8 per-channel | int8 per-tensor |", "|---|---|---|---|---|---|"]
        for row in report["weights"]:
            lines.append(f"| {row['layer']} | {row['weights']:,} | {row['float16']} | {row['bfloat16']} | "
                         f"{row['int8_per_channel']} | {row['int8_per_tensor']} |")
        lines.append("")
    if report.get("calib_sweep"):
        lines += ["| calibration samples | accuracy | agreement | output SNR dB |", "|---|---|---|---|"]
        for row in report["calib_sweep"]:
            lines.append(f"| {row['samples']} | skipped: {row['skipped']} | | |" if "skipped" in row else
                         f"| {row['samples']} | {_pct(row['accuracy'])} | {_pct(row['agreement'])} | {row['snr_db']} |")
        lines.append("")
    for warning in data.get("warnings", []):
        lines += [f"Warning: {warning}.", ""]
    return "\n".join(lines) + "\n"


def _rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The candidate rows (schema 2); a schema-1 report's one artifact as a single row."""
    if report.get("candidates"):
        return report["candidates"]
    if "quantized" not in report:
        return []
    q = report["quantized"]
    return [{"name": report["recipe"], "made": None, "artifact": report["artifact"], "accuracy": q["accuracy"],
             "agreement": q["agreement"], "targets": report["targets"]}]


def _label(report: dict[str, Any], row: dict[str, Any]) -> str:
    """``int8``; in a run with QAT, ``int8 PTQ`` and ``int8 QAT``; the chosen one marked."""
    made = row.get("made") or {}
    trained = any((r.get("made") or {}).get("qat") for r in _rows(report))
    label = f"{made['recipe']} {'QAT' if made['qat'] else 'PTQ'}" if made and trained else row["name"]
    chosen = len(_rows(report)) > 1 and row["name"] == report.get("chosen")
    return f"{label}{' (chosen)' if chosen else ''} `{row['artifact']['path']}`"


def _ppl(row: dict[str, Any], shown: bool) -> str:
    """A perplexity cell (with its trailing separator), or nothing when the column is not shown."""
    if not shown:
        return ""
    value = row.get("perplexity")
    return f"{value:.4f} | " if value is not None else "n/a | "


def _candidate_line(report: dict[str, Any], row: dict[str, Any], lm: bool = False) -> str:
    latency = (row.get("targets") or {}).get("host", {}).get("latency_ms")
    return (f"| {_label(report, row)} | {_pct(row['accuracy'])} | {_ppl(row, lm)}{_pct(row['agreement'])} | "
            f"{_kib(row['artifact']['bytes'])} | {_ms(latency, 'p50')} |")


def _cpu_table(targets: dict[str, Any]) -> list[str]:
    rows = {name: r for name, r in targets.items() if "fits" not in r and "problem" not in r}
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
    rows = {name: r for name, r in targets.items() if "fits" in r and "problem" not in r and "npu_ops" not in r}
    if not rows:
        return []
    lines = ["| MCU target (TFLM) | accuracy | max diff vs reference | arena | RAM | flash | fits | est. latency ms | "
             "est. energy mJ |", "|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for name, r in rows.items():
        ref = r.get("reference") or {}
        steps = "n/a" if not ref else f"{ref['max_diff_steps']:g} steps"
        fits = "yes" if r["fits"] else "**no**"
        ram = _kib(r["ram_bytes"]) if "ram_bytes" in r else f">= {_kib(r['ram_lower_bound_bytes'])}"
        uncertainty = r.get("latency_uncertainty") or {}
        spread = uncertainty.get("loo_max_abs_error_pct")
        latency = f"{r['estimated_latency_ms']:.2f}" + (f" ± {spread:g}%" if spread is not None else
                                                         " (not validated)" if uncertainty else "")
        if uncertainty.get("summary"):
            notes.append(f"{name}: {uncertainty['summary']}.")
        lines.append(f"| {name} | {_pct(r['accuracy'])} | {steps} | {_kib(r.get('arena_bytes'))} | {ram} | "
                     f"{_kib(r['flash_bytes'])} | {fits} | {latency} | {r['energy_mj']['value']:.4f} |")
        notes += [f"{name} does not fit: {reason}." for reason in r.get("fit_reasons", [])]
        if r.get("tflm_error"):
            notes.append(f"{name}: TFLM could not run the model ({r['tflm_error']}); the verdict is static.")
    lines += ["", *notes, *([""] if notes else []),
              "MCU latency and energy are estimates (cycle model per op class fitted to MLPerf Tiny, ± the held-out "
              "error of published models dominated by the same op class; "
              "energy = estimated latency x board power). Arena is the smallest in which TFLM allocated and invoked "
              "the model, verified at that size; RAM adds the device margin and runtime; flash adds interpreter and "
              "kernel code estimates.", ""]
    return lines


def _npu_table(targets: dict[str, Any]) -> list[str]:
    rows = {name: r for name, r in targets.items() if "npu_ops" in r and "problem" not in r}
    if not rows:
        return []
    lines = ["| NPU target (Vela) | accuracy (TFLM) | ops on the NPU | NPU SRAM | RAM | flash | fits | est. latency ms "
             "(NPU + CPU) | est. energy mJ |", "|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for name, r in rows.items():
        split = r["latency_split_ms"]
        lines.append(f"| {name} | {_pct(r['accuracy'])} | {r['npu_ops']} of {r['total_ops']} | "
                     f"{_kib(r['npu_sram_bytes'])} | {_kib(r['ram_bytes'])} | {_kib(r['flash_bytes'])} | "
                     f"{'yes' if r['fits'] else '**no**'} | {r['estimated_latency_ms']:.3f} ({split['npu']:.3f} + "
                     f"{split['cpu_fallback']:.3f}) | {r['energy_mj']['value']:.4f} |")
        notes += [f"{name} does not fit: {reason}." for reason in r.get("fit_reasons", [])]
        notes += [f"{name}: {op['op']} runs on the CPU: {op['reason']}." for op in r.get("cpu_ops", [])]
        if r.get("tflm_error"):
            notes.append(f"{name}: TFLM could not run the pre-Vela model ({r['tflm_error']}); no accuracy.")
    first = next(iter(rows.values()))
    lines += ["", *notes, *([""] if notes else []),
              f"NPU figures are Vela compiler estimates, not measurements ({first['method']}). CPU fallback ops are "
              "priced by the board CPU's cycle model. " + first["numerics"][0].upper() + first["numerics"][1:] + ".", ""]
    return lines
