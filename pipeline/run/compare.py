"""Comparison runs: the candidate x target matrix, what fits where, the Pareto front, and a
recommendation per target with its reason."""

from __future__ import annotations

import logging
from typing import Any

from edgecore.metrics import agreement

from .context import Context

log = logging.getLogger("edgepipe")
DEFAULT_TOLERANCE = 1.0  # points of accuracy (or agreement) a recommendation may lose against float


def _latency(result: dict) -> tuple[float | None, str | None]:
    if result.get("latency_ms"):
        return result["latency_ms"]["p50"], "measured"
    if result.get("estimated_latency_ms") is not None:
        return result["estimated_latency_ms"], "estimated"
    return None, None


def matrix(ctx: Context) -> list[dict[str, Any]]:
    """One cell per candidate x target: the figures and the method behind each, or the reason
    the target could not run the candidate."""
    cells = []
    for candidate in ctx.candidates:
        for evaluation in (e for e in ctx.evaluations if e.candidate == candidate.name):
            cell: dict[str, Any] = {"candidate": candidate.name, "target": evaluation.target,
                                    "bytes": len(candidate.artifact)}
            if evaluation.result is None:
                cells.append({**cell, "problem": evaluation.problem})
                continue
            result = evaluation.result.to_dict()
            latency, method = _latency(result)
            outputs = evaluation.result.outputs
            verification = ctx.verifications.get(candidate.name)
            same = (agreement(ctx.float_outputs, outputs)
                    if outputs is not None and ctx.float_outputs is not None and len(outputs) == len(ctx.float_outputs)
                    and verification is not None and verification.agreement is not None else None)
            energy = result.get("energy_mj") or {}
            cell.update({"accuracy": result.get("accuracy"), "perplexity": result.get("perplexity"),
                         "agreement": same, "latency_ms": latency,
                         "latency_method": method, "energy_mj": energy.get("value"), "energy_method": energy.get("method"),
                         "fits": result.get("fits"), "arena_bytes": result.get("arena_bytes"),
                         "ram_bytes": result.get("ram_bytes"), "flash_bytes": result.get("flash_bytes"),
                         "ram_headroom": (result["ram_headroom_bytes"] / result["sram_bytes"]
                                          if result.get("ram_headroom_bytes") is not None else None)})
            cells.append(cell)
    return cells


def _quality(cell: dict, float_accuracy: float | None, float_perplexity: float | None = None) -> float | None:
    """What is lost against float: for a language model, perplexity added (% of float's); else
    points of accuracy when measured, else of agreement with float."""
    if cell.get("perplexity") is not None and float_perplexity:
        return 100 * (cell["perplexity"] / float_perplexity - 1)
    if cell.get("accuracy") is not None and float_accuracy is not None:
        return 100 * (float_accuracy - cell["accuracy"])
    if cell.get("agreement") is not None:
        return 100 * (1 - cell["agreement"])
    return None


def pareto(cells: list[dict], float_accuracy: float | None, float_perplexity: float | None = None) -> list[str]:
    """Candidates no other beats or matches on every figure: loss, size, latency, energy."""
    keys = []
    for cell in cells:
        loss = _quality(cell, float_accuracy, float_perplexity)
        keys.append((cell["candidate"], [v for v in (loss, cell["bytes"], cell.get("latency_ms"), cell.get("energy_mj"))]))
    front = []
    for name, mine in keys:
        dominated = any(all(o is not None and m is not None and o <= m for o, m in zip(other, mine)) and other != mine
                        for other_name, other in keys if other_name != name)
        if not dominated:
            front.append(name)
    return front


# Latencies within this ratio of the fastest count as a tie (a shared machine's noise, an estimate's
# error), which bytes then break.
LATENCY_TIE = 1.10


def recommend(cells: list[dict], float_accuracy: float | None, tolerance: float,
              float_perplexity: float | None = None) -> dict[str, Any] | None:
    """Among the candidates within ``tolerance`` of float that run (and fit), what the target values:
    latency first (measured on a host or a Pi, estimated on a microcontroller), then bytes (flash);
    without latency, bytes. Without one within tolerance, the least lossy that runs and fits. With
    the reason."""
    usable = [c for c in cells if "problem" not in c and c.get("fits") is not False]
    if not usable:
        return None
    losses = {c["candidate"]: _quality(c, float_accuracy, float_perplexity) for c in usable}
    unit = "% perplexity" if float_perplexity else " point"
    near = [c for c in usable if losses[c["candidate"]] is not None and losses[c["candidate"]] <= tolerance + 1e-9]
    if near:
        timed = [c for c in near if c.get("latency_ms") is not None]
        pool = near
        if timed:
            fastest = min(c["latency_ms"] for c in timed)
            pool = [c for c in timed if c["latency_ms"] <= fastest * LATENCY_TIE]
        best = min(pool, key=lambda c: (c["bytes"], c.get("latency_ms") or 0.0))
        loss = losses[best["candidate"]]
        gap = _gap(loss, perplexity=bool(float_perplexity))
        if timed:
            others = [c for c in near if c is not best]
            slower = [c for c in others if (c.get("latency_ms") or float("inf")) > best["latency_ms"] * LATENCY_TIE]
            what = (f"fastest ({best['latency_ms']:.3g} ms, {best.get('latency_method') or 'measured'})"
                    if len(pool) == 1 else
                    f"smallest of the fastest ({best['latency_ms']:.3g} ms, within {LATENCY_TIE:.2f}x)")
            if slower:
                what += f"; {', '.join(c['candidate'] for c in slower[:3])} slower"
        else:
            what = "smallest" if best["bytes"] == min(c["bytes"] for c in near) else "the least lossy"
        reason = f"{what}, {gap}"
    else:
        best = min(usable, key=lambda c: (losses[c["candidate"]] if losses[c["candidate"]] is not None else 1e9, c["bytes"]))
        reason = f"no candidate is within {tolerance:g}{unit} of float here; the least lossy that runs"
    if best.get("ram_headroom") is not None:
        reason += f", fits with {100 * best['ram_headroom']:.0f}% RAM headroom"
    return {"candidate": best["candidate"], "reason": f"{best['candidate']}: {reason}"}


def _gap(loss: float, *, perplexity: bool) -> str:
    """How far from float, in words: points of accuracy, or % of perplexity for a language model."""
    if perplexity:
        return (f"within {loss:.1f}% perplexity of float" if loss > 0.05 else "as good as float" if loss >= -0.05
                else f"{-loss:.1f}% perplexity below float")
    points = lambda v: "point" if round(v, 1) == 1 else "points"  # noqa: E731
    return (f"within {loss:.1f} {points(loss)} of float" if loss > 0.05 else "as accurate as float" if loss >= -0.05
            else f"{-loss:.1f} {points(-loss)} above float")


def summarize(ctx: Context) -> dict[str, Any]:
    """The comparison section of the report, and the chosen candidate (the recommendation for the
    first requested target other than the host, else the host's)."""
    cells = matrix(ctx)
    float_accuracy = next((v.float_accuracy for v in ctx.verifications.values()), None)
    float_perplexity = next((v.float_perplexity for v in ctx.verifications.values()), None)
    tolerance = ctx.config.max_accuracy_drop if ctx.config.max_accuracy_drop is not None else DEFAULT_TOLERANCE
    by_target: dict[str, list[dict]] = {}
    for cell in cells:
        by_target.setdefault(cell["target"], []).append(cell)
    recommendations = {t: recommend(c, float_accuracy, tolerance, float_perplexity) for t, c in by_target.items()}
    return {
        "tolerance_points": tolerance,
        "matrix": cells,
        "fits": {t: [c["candidate"] for c in cs if "problem" not in c and c.get("fits") is not False]
                 for t, cs in by_target.items()},
        "pareto": {t: pareto([c for c in cs if "problem" not in c], float_accuracy, float_perplexity)
                   for t, cs in by_target.items()},
        "recommendations": recommendations,
    }


def choose_recommended(ctx: Context) -> None:
    """Stage: summarise the comparison and choose the recommendation for the main target."""
    ctx.comparison = summarize(ctx)
    order = [t for t in ctx.config.targets if t != "host"] + ["host"]
    for target in order:
        found = ctx.comparison["recommendations"].get(target)
        if found:
            ctx.chosen = found["candidate"]
            log.info("recommended for %s: %s", target, found["reason"])
            return
    ctx.chosen = ctx.candidates[0].name
