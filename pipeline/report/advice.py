"""Advice: what a report says in sentences when the chosen model loses accuracy or perplexity, or is
slower than float, each with its evidence and the next step to try. A model that loses nothing gets
none. Works on the report dict alone, so `edgepipe report DIR` gives the same advice."""

from __future__ import annotations

from typing import Any

ACCURACY_POINTS = 1.0  # more than this lost against float is worth a sentence
PERPLEXITY_PERCENT = 2.0
SLOWER = 1.10  # a target's p50 more than 10% above float's on the same target (noise stays below that)


def _accuracy(report: dict[str, Any]) -> list[str]:
    before, after = report["float"].get("accuracy"), report["quantized"].get("accuracy")
    if before is None or after is None or 100 * (before - after) <= ACCURACY_POINTS:
        return []
    recipe = report["recipe"]
    layers = (report.get("diagnosis") or {}).get("layers") or []
    worst = (" The layers with the largest output error, by SNR: "
             + ", ".join(f"{row['layer']} ({row['snr_db']:.1f} dB)" for row in layers[:3] if row.get("snr_db") is not None)
             + "." if layers else " `edgepipe inspect` ranks the layers by their error.")
    return [f"{recipe} loses {100 * (before - after):.1f} points of accuracy on the eval data (float "
            f"{100 * before:.2f}%, {recipe} {100 * after:.2f}%).{worst}{_effects(report)} Next: --calibration auto "
            "chooses ranges on held-out data, --int16-layers auto widens the ops with the largest measured effect to "
            "int16, --float-layers auto keeps the worst layer in float, and --max-accuracy-drop 1 lets the ladder "
            "take the cheapest rung within a point (int16 islands, int16x8, float16 among them)."]


def _perplexity(report: dict[str, Any]) -> list[str]:
    before, after = report["float"].get("perplexity"), report["quantized"].get("perplexity")
    if not before or after is None or 100 * (after / before - 1) <= PERPLEXITY_PERCENT:
        return []
    recipe = report["recipe"]
    return [f"{recipe} raises perplexity by {100 * (after / before - 1):.1f}% (float {before:.4f}, {recipe} "
            f"{after:.4f}). An int8 softmax head rounds small probabilities to 0 (counted as 1e-6, 13.8 nats "
            f"each), often the largest share of such a loss.{_effects(report)} Next: --int16-layers auto widens the "
            "ops with the largest measured effect (`edgepipe inspect` lists each op's effect), --max-accuracy-drop 2 "
            "lets the ladder take int16 islands, int16x8 or float16 within 2%, and `edgepipe compare --recipes "
            "int8,int16x8,float16 --int16-layers auto` shows each on your targets."]


def _effects(report: dict[str, Any]) -> str:
    """The op groups with the largest measured effect, when the run measured them (an islands search)."""
    for row in report.get("candidates") or []:
        effects = ((row.get("int16_islands") or {}).get("search") or {}).get("effects") or []
        top = [e for e in effects if e.get("effect", 0) > 0][:3]
        if top:
            return (" Measured effect on the held-out data (drop removed when the op alone computes in int16): "
                    + ", ".join(f"{e['group']} {e['effect']:+.2f}" for e in top) + ".")
    return ""


def _divergence(report: dict[str, Any]) -> list[str]:
    """A microcontroller run whose TFLM outputs part from LiteRT's reference kernels by more than a step."""
    lines = []
    for name, result in (report.get("targets") or {}).items():
        reference = (result or {}).get("reference") or {}
        first = reference.get("first_divergence") or {}
        if reference.get("max_diff_steps", 0) <= 1 or "op" not in first:
            continue
        lines.append(f"On {name}, TensorFlow Lite Micro's outputs differ from LiteRT's reference kernels by up to "
                     f"{reference['max_diff_steps']:.0f} steps ({100 * reference.get('top1_agreement', 0):.1f}% same "
                     f"top-1); the difference first appears at {first['op']} (layer {first['layer']}, op "
                     f"{first['index']}), {first['max_diff_steps']:.0f} steps of its {first['dtype']} output. The "
                     f"figures reported for {name} are TFLM's own. Next: `edgepipe inspect` shows that op's effect; "
                     f"--int16-layers {first['layer']}:{first['op']} widens it if the difference costs accuracy.")
    return lines


def _speed(report: dict[str, Any]) -> list[str]:
    reference = (report["float"].get("host_latency_ms") or {}).get("p50")
    host = report.get("targets", {}).get("host") or {}
    measured = (host.get("latency_ms") or {}).get("p50")
    if not reference or not measured or measured <= SLOWER * reference:
        return []
    recipe = report["recipe"]
    xnnpack = host.get("xnnpack") or {}
    left = ", ".join(dict.fromkeys(xnnpack.get("cpu_ops") or []))
    evidence = (f" XNNPACK took {xnnpack['delegated_ops']} of {xnnpack['total_ops']} ops; left on the slower CPU "
                f"kernels: {left}." if xnnpack and not xnnpack.get("full_graph") else "")
    return [f"On the host {recipe} is slower than float: {measured:.3f} ms against {reference:.3f} ms at p50 "
            f"({measured / reference:.1f}x).{evidence} Next: `edgepipe compare --recipes {recipe},float16` measures "
            "both side by side; float16 keeps XNNPACK's float kernels."]


def advise(report: dict[str, Any]) -> list[str]:
    """Sentences with evidence and a next step, for the chosen candidate of a conversion report."""
    return [*_accuracy(report), *_perplexity(report), *_speed(report), *_divergence(report)]
