"""Render bench/results.json as BENCHMARKS.md."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _r(entry: dict) -> str:
    return f"{entry['median']:.3f}x (spread {100 * entry['spread']:.0f}%)"


def _verdict(value: float, goal: float, lower_is_better: bool = True) -> str:
    met = value <= goal if lower_is_better else value >= goal
    return f"goal ≤ {goal}: {'met' if met else '**missed**'}"


def _tflm_parallel_row(entry: dict | None) -> list[str]:
    if not entry:
        return []
    same = "identical outputs" if entry["identical_outputs"] else "**outputs differ**"
    return [f"| TFLM evaluation speed-up, {entry['workers']} worker processes / 1 ({entry['model']}, "
            f"{entry['samples']} samples, {same}) | {_r(entry['speedup'])} | "
            f"{_verdict(entry['speedup']['median'], entry['goal'], lower_is_better=False).replace('≤', '≥')} |"]


def _auto_row(entry: dict | None) -> list[str]:
    if not entry:
        return []
    return [f"| {entry['what']} | {_r(entry['auto_over_plain'])} | "
            f"{_verdict(entry['auto_over_plain']['median'], entry['goal'])} |"]


def _compare_row(entry: dict | None) -> list[str]:
    if not entry:
        return []
    return [f"| {entry['what']} | {_r(entry['compare_over_singles'])} | "
            f"{_verdict(entry['compare_over_singles']['median'], entry['goal'])} |"]


def _arm_section(entry: dict | None) -> list[str]:
    """Published Raspberry Pi 4 figures beside the fitted estimates (calibration_data/calibrate_arm.py)."""
    if not entry:
        return []
    lines = ["## Raspberry Pi 4 latency model vs published figures", "",
             "| figure | threads | published ms | estimate ms | error | leave-one-out | 1-thread estimate ms |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {f['id']} | {f['threads']} | {f['published_ms']:g} | {f['estimate_ms']:g} | {f['error_pct']:+.1f}% | "
              f"{f['loo_pct']:+.1f}% | {f['estimate_1_thread_ms']:g} |" for f in entry["figures"]]
    loo = entry["loo_max_abs_pct"]
    one = ", ".join(f"{k} {v:.1f}%" for k, v in loo["threads_1"].items())
    lines += ["", f"Largest leave-one-out error: {loo['threads_n']:.1f}% at 4 threads; at one thread {one} (goal for a "
                  f"held-out network: within {entry['goal_heldout_abs_pct']}%). Not fitted (see "
                  "calibration_data/published_rpi.toml): " +
              ", ".join(f"{k} {v:+.1f}%" for k, v in entry["not_fitted_pct"].items()) +
              f". Refit in {entry['refit_seconds']:.2f} s.", ""]
    if entry.get("recount"):
        again = entry["recount"]
        lines += [f"Recounted {again['network']} under QEMU: {again['counted']:,} instructions, cached "
                  f"{again['cached']:,} (drift {again['drift_pct']:+.4f}%, {again['litert']}).", ""]
    return lines


_MLPERF = {"resnet8": "IC (ResNet-8)", "ds_cnn": "KWS (DS-CNN)", "mobilenet_vww": "VWW (MobileNet)",
           "fc_autoencoder": "AD (FC autoencoder)"}


def _mcu_section(entry: dict | None) -> list[str]:
    """The MCU cycle model's leave-one-out over the published MLPerf Tiny figures (calibrate_mcu.py)."""
    if not entry:
        return []
    rows = {(r["system"], r["model"]): r for r in entry["rows"]}
    goal = entry["goal_abs_pct"]

    def cell(row: dict | None, key: str = "error_pct") -> str:
        if row is None:
            return ""
        error = row[key]
        mark = "" if abs(error) <= goal else " **!**"
        if key != "error_pct":
            return f"{error:+.1f}%{mark}"
        return f"{row['published_ms']:g} / {row['estimate_ms']:.4g} ({error:+.1f}%){mark}"

    lines = ["## MCU latency model vs published MLPerf Tiny figures (leave-one-out)", "",
             "The cortex-m4 and cortex-m33 estimates come from a cycle model per op class (convolutions per MAC, "
             "output and im2col tap; 1x1 and depthwise per MAC; fully connected per weight byte streamed; "
             "elementwise, pooling and softmax per element; interpreter cost per node), fitted by "
             "`make calibrate` (`calibration_data/calibrate_mcu.py`) to the MLPerf Tiny reference models on five "
             "systems running CMSIS-NN kernels (`targets/boards/mlperf_tiny.toml`, with sources). Each cell: "
             "published ms / estimate ms with that figure held out of the fit (error). Systems marked *validation* "
             f"are not in the fit: each figure is predicted from the system's other three. **!** marks an error "
             f"beyond ±{goal:g}%.", "",
             "| system | role | g cycles / 1x1 MAC | " + " | ".join(_MLPERF.values()) + " |",
             "|---|---|---|" + "---|" * len(_MLPERF)]
    for system, info in entry["systems"].items():
        profile = f" (edgepipe `{info['profile']}`)" if info.get("profile") else ""
        lines.append(f"| {info['title']}; {info['software']}{profile} | {info['role']} | "
                     f"{info['cycles_per_pointwise_mac']:g} | "
                     + " | ".join(cell(rows.get((system, m))) for m in _MLPERF) + " |")
    fit_rows = [r for r in entry["rows"] if r["role"] == "fit"]
    worst = max(abs(r["error_pct"]) for r in fit_rows)
    inside = sum(abs(r["error_pct"]) <= goal for r in fit_rows)
    lines += ["", f"Fit systems: {inside} of {len(fit_rows)} held-out figures within ±{goal:g}% (largest "
                  f"{worst:.1f}%). With the model left out on every system (a new op mix), the errors are:", "",
              "| system | " + " | ".join(_MLPERF.values()) + " |", "|---|" + "---|" * len(_MLPERF)]
    for system, info in entry["systems"].items():
        if info["role"] == "fit":
            lines.append(f"| {system} | " + " | ".join(cell(rows.get((system, m)), "error_model_unseen_pct")
                                                       for m in _MLPERF) + " |")
    lines += ["", "The uncertainty edgepipe shows beside an MCU estimate is the held-out error of the figures whose "
                  "models are dominated by the same op class:", ""]
    lines += [f"- {kind}: {band['min_error_pct']:+.1f}% to {band['max_error_pct']:+.1f}% "
              f"({', '.join(band['models'])}); {band['model_unseen_note']}." for kind, band in entry["bands"].items()]
    lines += ["- any other dominant class (depthwise, elementwise, recurrent, transposed convolution, overhead), "
              "and models mostly in int16 or float ops: not validated.", "",
              f"Shared conv/pointwise cost ratio {entry['conv_over_pointwise']:g} (kernel prior "
              f"{entry['conv_over_pointwise_prior']:g}); cycles per fully connected weight byte: "
              + ", ".join(f"{hardware} {b:g}" for hardware, b in {
                  info["hardware"]: info["cycles_per_fc_weight_byte"] for info in entry["systems"].values()
                  if info["role"] == "fit"}.items())
              + f". All the refits took {entry['refit_seconds']:.2f} s.", ""]
    return lines


def write_markdown(results: dict, path: Path) -> None:
    machine, env = results["machine"], results["environment"]
    lines = [
        "# edgepipe benchmarks", "",
        f"Measured by `make bench` (`bench/run.py`) on {results['date']}; raw figures in `bench/results.json`.",
        f"Machine: {machine['model']}, {machine['cores']} cores, {machine['clock_hz'] / 1e9:.1f} GHz as reported, "
        f"{machine['platform']}. Python {env['python']}, TensorFlow {env['tensorflow']}, LiteRT {env['litert']}, "
        f"TFLM {env['tflite_micro']}, numpy {env['numpy']}.",
        f"Every figure is a ratio (or count) measured side by side in the same run: the median of "
        f"{results['repeats']} or more interleaved repetitions, with the spread (max - min) / median. This machine is "
        "shared and noisy; the ratios are what to read, not the absolute times.", "",
        "## Goals", "",
        "| figure | measured | goal |", "|---|---|---|",
    ]
    pipe, runner, size = results["pipeline_overhead"], results["runner_overhead"], results["int8_over_fp32_size"]
    lines += [
        f"| pipeline overhead: edgepipe int8 conversion / bare TFLiteConverter | {_r(pipe['ratio'])} | "
        f"{_verdict(pipe['ratio']['median'], pipe['goal'])} |",
        f"| runner overhead: host evaluation loop / bare set-invoke-get loop, per inference | {_r(runner['ratio'])} | "
        f"{_verdict(runner['ratio']['median'], runner['goal'])} |",
        f"| size: int8 / float32 .tflite, demo CNN | {size['demo_cnn']:.3f} | {_verdict(size['demo_cnn'], size['goal'])} |",
        *_tflm_parallel_row(results.get("tflm_parallel")),
        *_auto_row(results.get("auto_calibration")),
        *_compare_row(results.get("compare")),
        "",
        f"- The whole `edgepipe convert` command over the bare converter: {_r(pipe['full_command_over_bare'])}. "
        "It converts the float32 baseline as well and times both models on the host; that is the price of the "
        "report, not overhead on the conversion.",
        f"- Evaluation loop vs an `invoke()`-only loop (no input or output copies): {_r(runner['ratio_vs_invoke_only'])}.",
        f"- Batch evaluation (model converted with `--dynamic-batch`, 64 samples per invoke): per-sample time "
        f"{_r(runner['batch_gain'])} faster than one sample per invoke.",
        "- Per inference: " + ", ".join(f"{k} {v:.1f} µs" for k, v in runner["per_inference_us"].items()) + ". "
        "The bare loops are handed inputs already in int8; the host target quantizes the float eval set with "
        "the model's scale and zero point itself, which is most of the difference.",
        "",
        "## What int8 buys on the host (XNNPACK)", "",
        "| model | MACs | threads | float32 ms | int8 ms | float32 / int8 | int8 GMAC/s | of VNNI peak | of AMX peak |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in results["int8_vs_fp32_latency"].items():
        for key, cell in row.items():
            if not key.startswith("threads_"):
                continue
            amx = cell["int8_fraction_of_amx_peak"]
            lines.append(f"| {name} | {row['macs'] / 1e6:.1f} M | {key.split('_')[1]} | {cell['fp32_ms']:.3f} | "
                         f"{cell['int8_ms']:.3f} | {_r(cell['fp32_over_int8'])} | {cell['int8_gmacs']:.1f} | "
                         f"{100 * cell['int8_fraction_of_vnni_peak']:.1f}% | "
                         f"{'n/a' if amx is None else f'{100 * amx:.2f}%'} |")
    lines += ["", f"Peak assumed: {machine['vnni_peak_macs_per_cycle']} int8 MACs per cycle per core "
                  f"({machine['vnni_peak_basis']})" + (f"; with AMX, {machine['amx_peak_macs_per_cycle']} "
                  f"({machine['amx_peak_basis']})" if machine["amx_peak_macs_per_cycle"] else "")
              + f"; clock: {machine['clock_basis']}. CPU flags: {', '.join(machine['flags'])}.", "",
              "## Size", "", "| model | float32 bytes | int8 bytes | int8 / float32 |", "|---|---|---|---|"]
    for name, row in size["models"].items():
        lines.append(f"| {name} | {row['fp32_bytes']:,} | {row['int8_bytes']:,} | {row['ratio']:.3f} |")
    mem = results["memory"]
    lines += ["", "## Memory", "", f"{mem['model']}:", "",
              f"- `edgepipe convert`: peak RSS {mem['convert_peak_rss_mib']:.0f} MiB",
              f"- `edgepipe run --target host`: peak RSS {mem['run_host_peak_rss_mib']:.0f} MiB",
              f"- for scale, `python -c 'import numpy'`: {mem['python_numpy_baseline_mib']:.0f} MiB", "",
              f"{mem['note']}", "", "## Scale", "",
              "| calibration samples | int8 conversion s |", "|---|---|"]
    sc = results["scale"]
    for count, entry in sc["conversion_seconds_by_calib_samples"].items():
        lines.append(f"| {count} | {entry['median']:.2f} (spread {100 * entry['spread']:.0f}%) |")
    fit = sc["conversion_fit"]
    lines += ["", f"Linear fit: {fit['fixed_seconds']:.2f} s fixed + {1e3 * fit['seconds_per_sample']:.2f} ms per "
                  f"calibration sample, R² {fit['r_squared']:.4f}.", "",
              "| eval samples | host evaluation s |", "|---|---|"]
    for count, entry in sc["evaluation_seconds_by_eval_samples"].items():
        lines.append(f"| {count} | {entry['median']:.4f} (spread {100 * entry['spread']:.0f}%) |")
    fit = sc["evaluation_fit"]
    lines += ["", f"Linear fit: {1e3 * fit['fixed_seconds']:.1f} ms fixed + {1e6 * fit['seconds_per_sample']:.1f} µs "
                  f"per sample, R² {fit['r_squared']:.4f}.", "", "## TFLite Micro vs LiteRT", ""]
    tm = results["tflm_vs_litert"]
    lines += [f"Demo int8 model, {tm['samples']} samples, one thread: TFLM / LiteRT reference kernels "
              f"{_r(tm['tflm_over_litert_reference'])}; TFLM / LiteRT with XNNPACK {_r(tm['tflm_over_litert_xnnpack'])}. "
              "Per inference: " + ", ".join(f"{k} {v:.1f} µs" for k, v in tm["per_inference_us"].items()) + ".", "",
              *_arm_section(results.get("arm_latency")),
              *_mcu_section(results.get("mcu_latency")),
              f"The whole run took {results['wall_seconds']:.0f} s.", *_static_sections(path.parent)]
    path.write_text("\n".join(lines) + "\n")


def _static_sections(root: Path) -> list[str]:
    """Sections written by their own scripts (bench/npu_anchors.py), kept when BENCHMARKS.md is rewritten."""
    return [line for part in sorted((root / "bench").glob("*.md")) for line in ["", *part.read_text().splitlines()]]


if __name__ == "__main__":
    root = Path(__file__).resolve().parents[1]
    write_markdown(json.loads((root / "bench" / "results.json").read_text()), root / "BENCHMARKS.md")
    print(f"wrote {root / 'BENCHMARKS.md'}", file=sys.stderr)
