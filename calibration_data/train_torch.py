"""Train the small PyTorch CNN whose ONNX export ships as calibration_data/torch_cnn.onnx.

It is the sample for edgepipe's ONNX and PyTorch path: the tests convert the committed ONNX file,
so they never need torch. This script is how it was made: a PyTorch CNN (conv 8 - pool - conv 16 -
pool - linear 10, 5,258 parameters) trained on ``mnist/train.npz`` with a fixed seed, inputs
scaled to [0, 1] in NCHW, exported with ``torch.onnx.export`` (opset 17, batch 1, as most exports
are). It also writes ``torch_cnn.json``: the float accuracy torch measures on ``mnist/eval.npz``,
which the tests hold the converted model to. Needs the ``torch`` extra (the CPU wheel is enough):
``python calibration_data/train_torch.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
SEED = 0
EPOCHS = 8


def build() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 5 * 5, 10),
    )


def nchw(name: str) -> tuple[torch.Tensor, np.ndarray]:
    with np.load(HERE / "mnist" / name) as data:
        x = data["x"].astype(np.float32).transpose(0, 3, 1, 2) / 255.0
        return torch.from_numpy(x), data["y"].astype(np.int64)


def main() -> None:
    torch.manual_seed(SEED)
    x, y = nchw("train.npz")
    labels = torch.from_numpy(y)
    net = build()
    optimiser = torch.optim.Adam(net.parameters(), 1e-3)
    for _ in range(EPOCHS):
        order = torch.randperm(len(x))
        for start in range(0, len(x), 64):
            rows = order[start:start + 64]
            optimiser.zero_grad()
            nn.functional.cross_entropy(net(x[rows]), labels[rows]).backward()
            optimiser.step()
    net.eval()
    ex, ey = nchw("eval.npz")
    with torch.no_grad():
        accuracy = float((net(ex).argmax(1).numpy() == ey).mean())
    torch.onnx.export(net, torch.zeros(1, 1, 28, 28), str(HERE / "torch_cnn.onnx"), input_names=["image"],
                      output_names=["logits"], opset_version=17, dynamo=False)
    record = {"float_accuracy_torch": round(accuracy, 6), "eval": "mnist/eval.npz", "epochs": EPOCHS, "seed": SEED,
              "torch": torch.__version__, "params": sum(p.numel() for p in net.parameters())}
    (HERE / "torch_cnn.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record))


if __name__ == "__main__":
    main()
