"""report.html: one self-contained page (plots inline as PNG data URIs, no network) made from
report.json alone, so ``edgepipe report DIR`` can rebuild it. Plots are matplotlib's."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

from .markdown import render_markdown

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto; max-width: 1100px;
       padding: 1.5rem; color: #1b1f24; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; } h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #d0d7de; }
.meta { color: #57606a; font-size: 0.9rem; }
table { border-collapse: collapse; width: 100%; font-size: 0.85rem; margin: 0.6rem 0; }
th, td { border: 1px solid #d0d7de; padding: 0.3rem 0.5rem; text-align: left; vertical-align: top; }
th { background: #f6f8fa; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.chosen td { background: #eef6ee; font-weight: 600; } .problem { color: #8a4b00; }
.plots { display: grid; grid-template-columns: repeat(auto-fit, minmax(460px, 1fr)); gap: 1rem; }
figure { margin: 0; border: 1px solid #d0d7de; padding: 0.5rem; } figure img { width: 100%; height: auto; }
figcaption { font-size: 0.8rem; color: #57606a; }
.rec { background: #f6f8fa; border-left: 4px solid #2da44e; padding: 0.5rem 0.8rem; margin: 0.4rem 0; }
pre { white-space: pre-wrap; font-size: 0.75rem; background: #f6f8fa; padding: 0.6rem; }
@media print { body { max-width: none; padding: 0; } figure, table, .rec { break-inside: avoid; }
  .plots { grid-template-columns: 1fr 1fr; } details { display: none; } }
"""


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=144, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _quality(row: dict) -> tuple[float | None, str]:
    """The figure a candidate is judged by (higher is better: perplexity is negated), and its
    axis label."""
    if row.get("perplexity") is not None:
        return -row["perplexity"], "perplexity on --eval (lower is better, up)"
    if row.get("accuracy") is not None:
        return 100 * row["accuracy"], "top-1 accuracy on --eval (%)"
    if row.get("agreement") is not None:
        return 100 * row["agreement"], "top-1 agreement with float (%)"
    snr = (row.get("output_error") or {}).get("snr_db")
    return snr, "output SNR against float (dB)"


def _front(points: list[tuple[str, float, float]]) -> list[str]:
    """Names on the size/quality Pareto front (smaller and better, nothing dominates them)."""
    return [name for name, size, quality in points
            if not any(s <= size and q >= quality and (s, q) != (size, quality) for _, s, q in points)]


def plot_accuracy_vs_size(report: dict) -> str | None:
    rows = [r for r in report.get("candidates", []) if r.get("artifact")]
    points = [(r["name"], r["artifact"]["bytes"] / 1024, _quality(r)[0]) for r in rows if _quality(r)[0] is not None]
    if not points:
        return None
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6.4, 4.0))
    front = _front(points)
    flt, label = report.get("float") or {}, _quality(rows[0])[1]
    perplexity = label.startswith("perplexity")
    if perplexity:  # plotted as it is, on an inverted axis: better is still up
        points = [(name, size, -quality) for name, size, quality in points]
        axes.invert_yaxis()
    for index, (name, size, quality) in enumerate(points):
        on_front = name in front
        axes.scatter(size, quality, s=70 if on_front else 40, color="#2da44e" if on_front else "#8c959f", zorder=3)
        # Stagger the labels: candidates often sit on top of one another.
        axes.annotate(name, (size, quality), textcoords="offset points", xytext=(6, 4 - 11 * (index % 4)), fontsize=8)
    line = sorted((s, q) for n, s, q in points if n in front)
    axes.plot([s for s, _ in line], [q for _, q in line], color="#2da44e", linewidth=1.2, zorder=2, label="Pareto front")
    if flt.get("perplexity") is not None and perplexity:
        axes.axhline(flt["perplexity"], color="#0969da", linestyle="--", linewidth=1, label="float")
    elif flt.get("accuracy") is not None and label.startswith("top-1 accuracy"):
        axes.axhline(100 * flt["accuracy"], color="#0969da", linestyle="--", linewidth=1, label="float")
    axes.set_xlabel("model size (KiB)")
    axes.set_ylabel(label)
    axes.margins(x=0.12, y=0.25)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8, loc="best")
    return _png(figure)


def _per_target_plot(report: dict, key: str, label: str) -> str | None:
    cells = [c for c in (report.get("comparison") or {}).get("matrix", []) if c.get(key) is not None]
    if not cells:
        rows = report.get("candidates", [])
        cells = []
        for row in rows:
            for target, result in (row.get("targets") or {}).items():
                value = (result.get("latency_ms") or {}).get("p50") if key == "latency_ms" else \
                    (result.get("energy_mj") or {}).get("value")
                if value is None and key == "latency_ms":
                    value = result.get("estimated_latency_ms")
                if value is not None:
                    cells.append({"candidate": row["name"], "target": target, key: value})
    if not cells:
        return None
    plt = _pyplot()
    targets = list(dict.fromkeys(c["target"] for c in cells))
    names = list(dict.fromkeys(c["candidate"] for c in cells))
    figure, axes = plt.subplots(figsize=(6.4, 0.6 + 0.32 * len(targets) * len(names)))
    colors = plt.get_cmap("tab10")
    height = 0.8 / max(len(names), 1)
    for i, name in enumerate(names):
        for j, target in enumerate(targets):
            value = next((c[key] for c in cells if c["candidate"] == name and c["target"] == target), None)
            if value is not None:
                axes.barh(j + i * height, value, height=height, color=colors(i % 10), label=name if j == 0 else None)
    axes.set_yticks([j + height * (len(names) - 1) / 2 for j in range(len(targets))], targets)
    axes.set_xscale("log")
    axes.set_xlabel(label)
    axes.grid(True, axis="x", alpha=0.3)
    axes.legend(fontsize=7, loc="best")
    return _png(figure)


def plot_fleet(report: dict) -> str | None:
    rows = [r for r in (report.get("fleet") or {}).get("devices", []) if r.get("ok") and r.get("latency_ms")]
    if not rows:
        return None
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6.4, 0.8 + 0.4 * len(rows)))
    for index, row in enumerate(rows):
        latency = row["latency_ms"]
        axes.plot([latency["min"], latency["p90"]], [index, index], color="#8c959f", linewidth=2)
        axes.scatter([latency["p50"]], [index], color="#0969da", zorder=3, label="p50" if index == 0 else None)
    axes.set_yticks(range(len(rows)), [r["device"] for r in rows])
    axes.set_xlabel("latency per inference (ms): min to p90, dot at p50")
    axes.grid(True, axis="x", alpha=0.3)
    axes.legend(fontsize=8)
    return _png(figure)


def plot_layers(report: dict) -> str | None:
    layers = (report.get("diagnosis") or {}).get("layers") or report.get("layers")
    if not layers:
        return None
    rows = [r for r in layers if r["op"] not in ("MAX_POOL_2D", "RESHAPE", "AVERAGE_POOL_2D")][:16]
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6.4, 0.5 + 0.3 * len(rows)))
    labels = [f"{r['layer']} ({r['op']})" for r in rows]
    axes.barh(range(len(rows)), [min(r["snr_db"], r["channel_snr_db"]) for r in rows], color="#cf222e")
    axes.set_yticks(range(len(rows)), labels, fontsize=8)
    axes.invert_yaxis()
    axes.set_xlabel("SNR of the layer's int8 output (dB; lower of tensor and median channel)")
    axes.grid(True, axis="x", alpha=0.3)
    return _png(figure)


def plot_training(report: dict) -> str | None:
    history = (report.get("qat") or {}).get("history")
    if not history:
        return None
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6.4, 3.6))
    epochs = [row["epoch"] for row in history]
    for key in [k for k in history[0] if k != "epoch"]:
        axes.plot(epochs, [row.get(key) for row in history], marker="o", label=key)
    axes.set_xlabel("QAT epoch")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    return _png(figure)


def _cell(value: Any, kind: str = "") -> str:
    if value is None:
        return "<td class='num'>n/a</td>"
    if kind == "pct":
        return f"<td class='num'>{100 * value:.2f}%</td>"
    if kind == "kib":
        return f"<td class='num'>{value / 1024:.1f} KiB</td>"
    if kind == "ms":
        return f"<td class='num'>{value:.3f}</td>"
    return f"<td>{html.escape(str(value))}</td>"


def _matrix(report: dict) -> str:
    chosen = report.get("chosen")
    lm = any(r.get("perplexity") is not None for r in report.get("candidates", []))
    rows = ["<table><tr><th>candidate</th><th>target</th><th>accuracy</th>" + ("<th>perplexity</th>" if lm else "")
            + "<th>size</th><th>arena</th><th>RAM</th><th>flash</th><th>fits</th><th>latency ms</th><th>energy mJ</th></tr>"]
    for row in report.get("candidates", []):
        for target, result in (row.get("targets") or {}).items():
            css = " class='chosen'" if row["name"] == chosen else ""
            if "problem" in result:
                rows.append(f"<tr{css}><td>{html.escape(row['name'])}</td><td>{html.escape(target)}</td>"
                            f"<td colspan='{9 if lm else 8}' class='problem'>{html.escape(result['problem'])}</td></tr>")
                continue
            latency = (result.get("latency_ms") or {}).get("p50")
            how = "measured" if latency is not None else "estimated"
            latency = latency if latency is not None else result.get("estimated_latency_ms")
            fits = result.get("fits")
            rows.append(f"<tr{css}><td>{html.escape(row['name'])}</td><td>{html.escape(target)}</td>"
                        + _cell(result.get("accuracy"), "pct")
                        + (f"<td class='num'>{result['perplexity']:.4f}</td>" if result.get("perplexity") is not None
                           else "<td>n/a</td>" if lm else "")
                        + _cell(row["artifact"]["bytes"], "kib")
                        + _cell(result.get("arena_bytes"), "kib") + _cell(result.get("ram_bytes"), "kib")
                        + _cell(result.get("flash_bytes"), "kib")
                        + f"<td>{'n/a' if fits is None else ('yes' if fits else 'no')}</td>"
                        + (f"<td class='num'>{latency:.3f} ({how})</td>" if latency is not None else "<td>n/a</td>")
                        + _cell((result.get("energy_mj") or {}).get("value"), "ms") + "</tr>")
    return "".join(rows) + "</table>"


def render_html(report: dict[str, Any]) -> str:
    """The whole page: recommendations, the matrix, the plots, and report.md for the details."""
    model = report.get("model", {})
    title = f"edgepipe report: {model.get('path', report.get('artifact', {}).get('path', ''))}"
    plots = [(plot_accuracy_vs_size(report), "Quality against size; the Pareto front in green."),
             (_per_target_plot(report, "latency_ms", "latency per inference (ms; measured or estimated)"),
              "Latency per target (log scale)."),
             (_per_target_plot(report, "energy_mj", "energy per inference (mJ, estimated)"), "Energy per target."),
             (plot_layers(report), "Per-layer SNR, worst first."), (plot_training(report), "QAT training curve."),
             (plot_fleet(report), "Latency spread across the fleet.")]
    figures = "".join(f"<figure><img alt='{html.escape(caption)}' src='{uri}'><figcaption>{html.escape(caption)}"
                      "</figcaption></figure>" for uri, caption in plots if uri)
    recommendations = (report.get("comparison") or {}).get("recommendations") or {}
    recs = "".join(f"<div class='rec'><b>{html.escape(t)}</b>: {html.escape(r['reason'])}</div>"
                   for t, r in recommendations.items() if r)
    if not recs and report.get("chosen"):
        recs = f"<div class='rec'>Chosen: <b>{html.escape(report['chosen'])}</b></div>"
    recs += "".join(f"<div class='rec'><b>Advice</b>: {html.escape(sentence)}</div>" for sentence in report.get("advice") or [])
    env = report.get("environment") or {}
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><meta name='viewport' "
            f"content='width=device-width, initial-scale=1'><title>{html.escape(title)}</title><style>{STYLE}</style>"
            f"</head><body><h1>edgepipe report</h1><p class='meta'>{html.escape(title)} · created "
            f"{html.escape(str(report.get('created', '')))} · TensorFlow {env.get('tensorflow')}, LiteRT {env.get('litert')}, "
            f"TFLM {env.get('tflite_micro')}</p><h2>Recommendation</h2>{recs}<h2>Candidates on targets</h2>"
            f"{_matrix(report)}<h2>Plots</h2><div class='plots'>{figures}</div><h2>Details</h2><details open><summary>"
            f"report.md</summary><pre>{html.escape(render_markdown(report))}</pre></details></body></html>\n")
