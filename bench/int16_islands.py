"""int8, int8 with int16 islands (``--int16-layers auto``) and int16x8 side by side on four models,
on the host and on cortex-m4 (BENCHMARKS.md, "int16 islands").

    python bench/int16_islands.py      (about five minutes; writes bench/int16_islands.md, which
                                        bench/report.py puts at the end of BENCHMARKS.md)

The models: the sample character GPT, the demo CNN (both shipped in calibration_data/), and a
depthwise-separable CNN and a model of Dense layers trained here for two epochs on the sample
MNIST digits (scikit-learn's copy, see calibration_data/README.md). Each row is one
``edgepipe compare --recipes int8,int16x8 --int16-layers auto --targets cortex-m4`` run; the loss
is measured on --eval (accuracy points, or % of float perplexity), the arena in TFLM, the latency
by the cortex-m4 cycle model (an estimate, with its held-out error in BENCHMARKS.md).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from pipeline import api  # noqa: E402
from pipeline.config import ConvertConfig  # noqa: E402


def _trained(kind: str, folder: Path) -> Path:
    from pipeline.frontend.keras_compat import keras3

    keras = keras3()
    keras.utils.set_random_seed(3)
    layers = keras.layers
    with np.load(api.sample_path("mnist", "train.npz")) as data:
        x, y = data["x"].astype(np.float32), data["y"]
    x = x / 255.0 if x.max() > 1.5 else x
    x = x.reshape(len(x), *x.shape[1:3], 1) if x.ndim == 3 else x
    inputs = keras.Input(x.shape[1:])
    if kind == "depthwise":
        h = layers.Conv2D(8, 3, padding="same", activation="relu6")(inputs)
        h = layers.DepthwiseConv2D(3, padding="same", activation="relu6")(h)
        h = layers.Conv2D(16, 1, activation="relu6")(h)
        h = layers.GlobalAveragePooling2D()(h)
    else:
        h = layers.Dense(128, activation="relu")(layers.Flatten()(inputs))
        h = layers.Dense(64, activation="relu")(h)
    model = keras.Model(inputs, layers.Dense(10, activation="softmax")(h))
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=2, batch_size=32, verbose=0)
    path = folder / f"{kind}.keras"
    model.save(path)
    return path


def _row(name: str, model: Path, calib: Path, eval_: Path, out: Path) -> dict:
    report = api.convert(ConvertConfig(model=model, calib=calib, eval=eval_, out=out, recipes=("int8", "int16x8"),
                                       int16_layers=("auto",), targets=("cortex-m4",))).report
    float_ppl = report["float"].get("perplexity")
    float_acc = report["float"].get("accuracy")
    row = {"model": name, "float": float_ppl if float_ppl else float_acc, "measure": "perplexity" if float_ppl
           else "accuracy", "candidates": {}}
    for candidate in report["candidates"]:
        mcu = candidate["targets"].get("cortex-m4", {})
        host = candidate["targets"].get("host", {})
        if float_ppl:
            loss = 100 * (candidate["perplexity"] / float_ppl - 1)
        else:
            loss = 100 * (float_acc - candidate["accuracy"])
        islands = candidate.get("int16_islands") or {}
        row["candidates"][candidate["name"]] = {
            "loss": round(loss, 2), "bytes": candidate["artifact"]["bytes"], "arena_bytes": mcu.get("arena_bytes"),
            "mcu_ms": mcu.get("estimated_latency_ms"), "host_ms": (host.get("latency_ms") or {}).get("p50"),
            "problem": mcu.get("problem"), "groups": islands.get("groups")}
    return row


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        lm = api.sample_path("lm")
        mnist = api.sample_path("mnist")
        jobs = [("sample GPT (char, 116k params)", api.sample_path("char_gpt.keras"), lm / "calib.npz", lm / "eval.npz"),
                ("demo CNN (MNIST)", api.sample_path("reference_cnn.keras"), mnist / "calib.npz", mnist / "eval.npz"),
                ("depthwise CNN (MNIST)", _trained("depthwise", folder), mnist / "calib.npz", mnist / "eval.npz"),
                ("Dense model (MNIST)", _trained("dense", folder), mnist / "calib.npz", mnist / "eval.npz")]
        for index, (label, model, calib, eval_) in enumerate(jobs):
            print(f"{label} ...", file=sys.stderr)
            rows.append(_row(label, model, calib, eval_, folder / f"out{index}"))
    (ROOT / "bench" / "int16_islands.json").write_text(json.dumps(rows, indent=2) + "\n")
    (ROOT / "bench" / "int16_islands.md").write_text(render(rows))
    print(f"wrote {ROOT / 'bench' / 'int16_islands.md'}", file=sys.stderr)


def render(rows: list[dict]) -> str:
    lines = ["## int16 islands", "",
             "`python bench/int16_islands.py`: one `compare --recipes int8,int16x8 --int16-layers auto --targets "
             "cortex-m4` per model. Loss on --eval against float (accuracy points, or % of float perplexity); "
             "arena verified in TFLM; MCU latency estimated by the cortex-m4 cycle model (int16 ops priced as "
             "CMSIS-NN s16); host p50 measured in the same run.", "",
             "| model | candidate | loss | bytes | arena (TFLM) | est. cortex-m4 ms | host p50 ms | promoted |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        unit = "%" if row["measure"] == "perplexity" else " pt"
        for name, cell in row["candidates"].items():
            if cell["problem"]:
                mcu = f"does not run: {cell['problem'].split(';')[0][:90]}"
                lines.append(f"| {row['model']} | {name} | {cell['loss']:+.2f}{unit} | {cell['bytes']:,} | {mcu} | | "
                             f"{cell['host_ms'] or ''} | |")
                continue
            groups = ", ".join(cell["groups"] or []) if cell["groups"] is not None else ""
            lines.append(f"| {row['model']} | {name} | {cell['loss']:+.2f}{unit} | {cell['bytes']:,} | "
                         f"{cell['arena_bytes']:,} | {cell['mcu_ms']} | {cell['host_ms']} | {groups or ('none' if cell['groups'] is not None else '')} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
