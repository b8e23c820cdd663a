"""Fit the MCU cycle model to the published MLPerf Tiny figures and measure its held-out error.

The model (``targets/cost_model.py``, table from ``targets.profiles.cycle_table``) prices a model
``m`` on system ``s`` (one board with one software stack) as

    cycles = g_s * [pointwise MACs + r * conv MACs + (kernel ratios) * (depthwise MACs, outputs,
                    elementwise / pool / softmax elements) + K_TAP * conv pixel-taps]
             + b_hw * fully connected weight bytes + fixed interpreter costs

with three kinds of constants:

* fitted per system: ``g_s``, cycles per pointwise MAC (the software stack moves it 2x on one
  board);
* fitted per hardware: ``b_hw``, cycles per fully connected weight byte streamed from flash
  (it barely moves across stacks on one board); hardware without a fully connected figure takes
  the mean of its core's, then of all;
* fitted once: ``r``, k x k conv over pointwise cost per MAC, pulled towards its kernel prior;
* fixed, with sources (``targets/boards/cycle_constants.toml``): the other kernel ratios
  (CMSIS-NN kernel benchmarks), the interpreter costs and small-model terms (EdgeMark), the
  int16 and float multipliers.

The figures (``targets/boards/mlperf_tiny.toml``) are the four MLPerf Tiny reference models on
every system whose kernels are CMSIS-NN. ``role = "fit"`` systems (TFLM or microTVM + CMSIS-NN on
Cortex-M4/M33) fit the model; each of their figures is then predicted leave-one-out:

* held out: the figure is left out and everything refitted (the same model stays in on other
  systems);
* model unseen: the model is left out on every system (a new op mix).

``role = "validation"`` systems (other engines, or the MVE kernel path) are predicted from their
own three other figures with the fit set's shared constants. The held-out errors, grouped by the
op class that dominates each model's cycles, are the uncertainty edgepipe reports beside an
estimate (``BoardProfile.latency_uncertainty``).

Run: ``make calibrate`` (rewrites targets/boards/cycles_fitted.toml).
"""

from __future__ import annotations

import contextlib
import io
import math
import tomllib
from dataclasses import dataclass

import numpy as np

from edgecore.flatbuffer import read_ops
from targets.cost_model import Work, dominant_class, estimate_cycles, model_work
from targets.profiles import BOARDS_DIR, cycle_table

OUTPUT = BOARDS_DIR / "cycles_fitted.toml"
MODELS = ("resnet8", "ds_cnn", "mobilenet_vww", "fc_autoencoder")
SHORT = {"resnet8": "IC", "ds_cnn": "KWS", "mobilenet_vww": "VWW", "fc_autoencoder": "AD"}
GOAL_PCT = 25.0


def _read(name: str) -> dict:
    return tomllib.loads((BOARDS_DIR / f"{name}.toml").read_text())


def published() -> tuple[dict[str, dict], dict[tuple[str, str], dict]]:
    """The systems and the figures of ``mlperf_tiny.toml``: {id: system}, {(system, model): result}."""
    data = _read("mlperf_tiny")
    return {s["id"]: s for s in data["system"]}, {(r["system"], r["model"]): r for r in data["result"]}


def mlperf_works() -> dict[str, Work]:
    """The per-op work of the four MLPerf Tiny architectures, built in code (same op statistics as
    the reference .tflite files the submissions flashed)."""
    from calibration_data.mlperf_tiny import int8_tflite

    works = {}
    for name in MODELS:
        with contextlib.redirect_stdout(io.StringIO()):
            works[name] = model_work(read_ops(int8_tflite(name)))
    return works


@dataclass(frozen=True)
class Terms:
    """cycles = g * (p + r * q) + b * w + c for one model on one kernel path (exact: the cycle
    table is linear in g, b and r)."""

    p: float
    q: float
    w: float
    c: float

    def cycles(self, g: float, b: float, r: float) -> float:
        return g * (self.p + r * self.q) + b * self.w + self.c


def model_terms(work: Work, constants: dict, kernels: str) -> Terms:
    def at(g: float, b: float, r: float) -> float:
        return estimate_cycles(work, cycle_table(constants, pointwise=g, fc_weight_byte=b, conv_ratio=r,
                                                 kernels=kernels))

    c = at(0.0, 0.0, 0.0)
    p = at(1.0, 0.0, 0.0) - c
    return Terms(p=p, q=at(1.0, 0.0, 1.0) - c - p, w=at(0.0, 1.0, 0.0) - c, c=c)


def _priors(constants: dict, kernels: str) -> tuple[float, float]:
    """The kernel prior of r (conv over pointwise cycles per MAC) and of b."""
    k = constants["kernels"][kernels]
    return (k["conv_cycles_per_mac"]["value"] / k["pointwise_cycles_per_mac"]["value"],
            k["fc_cycles_per_weight_byte"]["value"])


def _least_squares(residuals, jacobian, x0: np.ndarray) -> np.ndarray:
    """Levenberg-Marquardt on a small problem."""
    x, damping = x0.astype(float), 1e-3
    r = residuals(x)
    cost = float(r @ r)
    for _ in range(500):
        j = jacobian(x)
        normal, gradient = j.T @ j, j.T @ r
        while True:
            step = np.linalg.solve(normal + damping * (np.diag(np.diag(normal)) + 1e-12 * np.eye(len(x))), -gradient)
            trial = residuals(x + step)
            if float(trial @ trial) < cost:
                x, r, cost, damping = x + step, trial, float(trial @ trial), max(damping / 10, 1e-12)
                break
            damping *= 10
            if damping > 1e12:
                return x
        if np.max(np.abs(step)) < 1e-12:
            break
    return x


@dataclass
class Fit:
    g: dict[str, float]  # per system
    b: dict[str, float]  # per hardware
    r: float


def fit(points: list[tuple[str, str]], observed: dict, terms: dict, systems: dict, *, r_prior: float,
        b_prior: float, ridge: float, r_free: bool = True, b_fixed: dict[str, float] | None = None) -> Fit:
    """Log least squares of the figures ``points`` ((system, model) pairs): g per system, b per
    hardware with a fully connected figure among the points (unless fixed), r when free and a
    convolution model is among them (pulled to its prior with weight ``ridge``)."""
    b_fixed = dict(b_fixed or {})
    names = sorted({s for s, _ in points})
    hardware = sorted({systems[s]["hardware"] for s, m in points if m == "fc_autoencoder"} - set(b_fixed))
    free_r = r_free and any(m == "resnet8" for _, m in points)
    n_g, n_b = len(names), len(hardware)

    def unpack(x):
        g = dict(zip(names, np.exp(x[:n_g])))
        b = {**b_fixed, **dict(zip(hardware, np.exp(x[n_g:n_g + n_b])))}
        return g, b, (math.exp(x[-1]) if free_r else r_prior)

    def b_of(s, b):
        return b.get(systems[s]["hardware"], b_prior)

    def residuals(x):
        g, b, r = unpack(x)
        out = [math.log(terms[s, m].cycles(g[s], b_of(s, b), r) / observed[s, m]) for s, m in points]
        return np.array(out + ([ridge * math.log(r / r_prior)] if free_r else []))

    def jacobian(x):
        g, b, r = unpack(x)
        rows = []
        for s, m in points:
            t = terms[s, m]
            bs = b_of(s, b)
            total = t.cycles(g[s], bs, r)
            row = np.zeros(len(x))
            row[names.index(s)] = g[s] * (t.p + r * t.q) / total
            if systems[s]["hardware"] in hardware:
                row[n_g + hardware.index(systems[s]["hardware"])] = bs * t.w / total
            if free_r:
                row[-1] = g[s] * r * t.q / total
            rows.append(row)
        if free_r:
            row = np.zeros(len(x))
            row[-1] = ridge
            rows.append(row)
        return np.array(rows)

    x0 = np.log([2.0] * n_g + [b_prior] * n_b + ([r_prior] if free_r else []))
    g, b, r = unpack(_least_squares(residuals, jacobian, x0))
    return Fit(g=g, b=b, r=r)


def b_for(system: str, b: dict[str, float], systems: dict, b_prior: float) -> float:
    """b of the system's hardware; else the mean (geometric) of its core's; else of all; else the prior."""
    hardware = systems[system]["hardware"]
    if hardware in b:
        return b[hardware]
    core = systems[system]["core"]
    same = [v for h, v in b.items() if any(x["hardware"] == h and x["core"] == core for x in systems.values())]
    pool = same or list(b.values())
    return float(np.exp(np.mean(np.log(pool)))) if pool else b_prior


def leave_one_out(works: dict[str, Work]) -> dict:
    """Fit on the "fit" systems, then every figure held out in turn; validation systems predicted
    from their own other figures. Returns {"fit", "rows", "bands"}."""
    constants = _read("cycle_constants")
    systems, results = published()
    ridge = constants["fit"]["conv_ratio_prior_weight"]["value"]
    terms = {(s, m): model_terms(works[m], constants, systems[s]["kernels"]) for s, m in results}
    observed = {(s, m): r["latency_ms"] * 1e-3 * systems[s]["clock_hz"] for (s, m), r in results.items()}
    fit_points = [(s, m) for (s, m) in results if systems[s]["role"] == "fit"]
    r_prior, b_prior = _priors(constants, "dsp")
    if {systems[s]["kernels"] for s, _ in fit_points} != {"dsp"}:
        raise ValueError("the fit systems must all run the CMSIS-NN DSP kernel path")

    def fit_on(points):
        return fit(points, observed, terms, systems, r_prior=r_prior, b_prior=b_prior, ridge=ridge)

    def error(s, m, f: Fit):
        return 100 * (terms[s, m].cycles(f.g[s], b_for(s, f.b, systems, b_prior), f.r) / observed[s, m] - 1)

    full = fit_on(fit_points)
    rows = []
    for s, m in fit_points:
        held = fit_on([q for q in fit_points if q != (s, m)])
        unseen = fit_on([q for q in fit_points if q[1] != m])
        rows.append({"system": s, "model": m, "role": "fit", "error_pct": error(s, m, held),
                     "error_model_unseen_pct": error(s, m, unseen), "in_sample_pct": error(s, m, full),
                     "estimate_ms": terms[s, m].cycles(held.g[s], b_for(s, held.b, systems, b_prior), held.r)
                     / systems[s]["clock_hz"] * 1e3})
    fitted = {s: {"g": full.g[s], "b": b_for(s, full.b, systems, b_prior), "r": full.r} for s in systems if s in full.g}
    for s in [s for s in systems if s not in full.g and any(q[0] == s for q in results)]:
        kernels = systems[s]["kernels"]
        own_r, own_b = _priors(constants, kernels)
        # DSP systems share the fit set's r and its hardware's b; another kernel path keeps its priors.
        r, fixed = (full.r, dict(full.b)) if kernels == "dsp" else (own_r, {})
        points = [(s, m) for m in MODELS if (s, m) in results]

        def fit_system(kept, r=r, fixed=fixed, own_b=own_b):
            return fit(kept, observed, terms, systems, r_prior=r, b_prior=own_b, ridge=ridge, r_free=False,
                       b_fixed=fixed)

        whole = fit_system(points)
        fitted[s] = {"g": whole.g[s], "b": b_for(s, whole.b, systems, own_b), "r": r}
        for q in points:
            held = fit_system([p for p in points if p != q])
            err = 100 * (terms[q].cycles(held.g[s], b_for(s, held.b, systems, own_b), r) / observed[q] - 1)
            rows.append({"system": s, "model": q[1], "role": "validation", "error_pct": err,
                         "in_sample_pct": 100 * (terms[q].cycles(whole.g[s], fitted[s]["b"], r) / observed[q] - 1),
                         "estimate_ms": (1 + err / 100) * results[q]["latency_ms"]})
    for row in rows:
        s, m = row["system"], row["model"]
        row["published_ms"] = results[s, m]["latency_ms"]
        f = fitted[s]
        table = cycle_table(constants, pointwise=f["g"], fc_weight_byte=f["b"], conv_ratio=f["r"],
                            kernels=systems[s]["kernels"])
        row["dominant_class"], row["dominant_share"] = dominant_class(works[m], table)
    bands = {}
    for kind in sorted({row["dominant_class"] for row in rows if row["role"] == "fit"}):
        bands[kind] = _band([row for row in rows if row["role"] == "fit" and row["dominant_class"] == kind])
    return {"fit": full, "fitted": fitted, "rows": rows, "bands": bands,
            "band_all": _band([row for row in rows if row["role"] == "fit"]), "systems": systems,
            "r_prior": r_prior}


def _band(rows: list[dict]) -> dict:
    errors = [row["error_pct"] for row in rows]
    unseen = [row["error_model_unseen_pct"] for row in rows]
    models = sorted({row["model"] for row in rows}, key=MODELS.index)
    return {"models": models, "min_error_pct": min(errors), "max_error_pct": max(errors),
            "max_abs_error_pct": max(abs(e) for e in errors),
            "errors_pct": {f"{row['system']}/{row['model']}": row["error_pct"] for row in rows},
            "model_unseen_note": (f"had no such model been published at all, the error would be {min(unseen):+.1f}% "
                                  f"to {max(unseen):+.1f}%")}


def _toml(result: dict) -> str:
    import tomli_w

    systems, full = result["systems"], result["fit"]
    fit_systems = [s for s in systems if s in full.g]
    lines = ["# Cycle-model constants fitted by calibration_data/calibrate_mcu.py (make calibrate); do not edit",
             "# by hand. Fitted to the published MLPerf Tiny figures of mlperf_tiny.toml (role = \"fit\"), with the",
             "# fixed constants of cycle_constants.toml. [[loo]]: every figure predicted with the model refitted",
             "# without it (error_pct) and without its model on any system (error_model_unseen_pct). [band.<class>]:",
             "# the held-out errors of the fit systems' figures grouped by the op class dominating the model's",
             "# cycles; edgepipe shows the band of an estimate's dominant class as its uncertainty.", ""]
    doc = {
        "fit": {"conv_over_pointwise": round(full.r, 4), "conv_over_pointwise_prior": round(result["r_prior"], 4),
                "systems": len(fit_systems), "figures": sum(r["role"] == "fit" for r in result["rows"]),
                "source": "log least squares over the role = \"fit\" figures of mlperf_tiny.toml: " + ", ".join(
                    f"{systems[s]['title']} ({systems[s]['software']})" for s in fit_systems)},
        "system": {},
        "band": {k: _rounded(v) for k, v in result["bands"].items()},
        "band_all": _rounded(result["band_all"]),
        "loo": [],
    }
    for s, f in result["fitted"].items():
        rows = [r for r in result["rows"] if r["system"] == s]
        doc["system"][s] = {
            "cycles_per_pointwise_mac": round(f["g"], 4), "cycles_per_fc_weight_byte": round(f["b"], 4),
            **({} if s in full.g else {"conv_over_pointwise": round(f["r"], 4)}),
            "kernels": systems[s]["kernels"], "role": systems[s]["role"], "title": systems[s]["title"],
            "software": systems[s]["software"],
            "in_sample_error_pct": {r["model"]: round(r["in_sample_pct"], 1) for r in rows},
            "source": f"fitted to its MLPerf Tiny figures ({systems[s]['source']})"}
    for row in result["rows"]:
        doc["loo"].append({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()
                           if k not in ("in_sample_pct",)})
    return "\n".join(lines) + tomli_w.dumps(doc)


def _rounded(band: dict) -> dict:
    return {k: (round(v, 1) if isinstance(v, float) else
                {kk: round(vv, 1) for kk, vv in v.items()} if isinstance(v, dict) else v) for k, v in band.items()}


def table_lines(result: dict) -> list[str]:
    """The leave-one-out table: system x model, published, held-out estimate, error."""
    systems = result["systems"]
    lines = [f"{'system':28s} {'role':10s} " + " ".join(f"{SHORT[m]:>26s}" for m in MODELS),
             f"{'':39s} " + " ".join(f"{'published  held-out  err':>26s}" for _ in MODELS)]
    by = {(r["system"], r["model"]): r for r in result["rows"]}
    for s in systems:
        cells = []
        for m in MODELS:
            r = by.get((s, m))
            cells.append(f"{r['published_ms']:9.3f} {r['estimate_ms']:9.3f} {r['error_pct']:+6.1f}%" if r else " " * 26)
        lines.append(f"{s:28s} {systems[s]['role']:10s} " + " ".join(cells))
    return lines


def main() -> None:
    result = leave_one_out(mlperf_works())
    full = result["fit"]
    print(f"conv/pointwise cost per MAC r = {full.r:.3f} (kernel prior {result['r_prior']:.3f}); "
          "b [cycles per FC weight byte] = " + ", ".join(f"{h} {v:.2f}" for h, v in full.b.items()))
    for s, f in result["fitted"].items():
        print(f"  {s:28s} g = {f['g']:.3f} cycles per pointwise MAC, b = {f['b']:.2f}")
    print("\nLeave-one-out (held out: the figure left out, everything refitted):")
    print("\n".join(table_lines(result)))
    fit_rows = [r for r in result["rows"] if r["role"] == "fit"]
    worst = max(abs(r["error_pct"]) for r in fit_rows)
    unseen = max(abs(r["error_model_unseen_pct"]) for r in fit_rows)
    inside = sum(abs(r["error_pct"]) <= GOAL_PCT for r in fit_rows)
    print(f"\nfit systems: {inside}/{len(fit_rows)} within ±{GOAL_PCT:g}%, max |error| {worst:.1f}% held out, "
          f"{unseen:.1f}% with the model unseen on every system")
    for kind, band in result["bands"].items():
        print(f"  band {kind:16s} {band['min_error_pct']:+6.1f}% .. {band['max_error_pct']:+6.1f}% "
              f"({', '.join(band['models'])}); {band['model_unseen_note']}")
    OUTPUT.write_text(_toml(result))
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
