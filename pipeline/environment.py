"""Versions of everything that shapes the bytes and the figures, read without importing it."""

from __future__ import annotations

import importlib.metadata
import platform
import sys

DISTRIBUTIONS = {
    "edgepipe": "edgepipe",
    "tensorflow": "tensorflow-cpu",
    "keras": "keras",
    "tf_keras": "tf-keras",
    "litert": "ai-edge-litert",
    "tflite_micro": "tflite-micro",
    "tfmot": "tensorflow-model-optimization",
    "numpy": "numpy",
}


def _version(dist: str) -> str | None:
    for name in (dist, dist.replace("-cpu", "")):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def environment() -> dict[str, str | None]:
    """Python, platform and the versions of every library that shapes the bytes."""
    info: dict[str, str | None] = {"python": platform.python_version()}
    info.update({key: _version(dist) for key, dist in DISTRIBUTIONS.items()})
    info["platform"] = platform.platform()
    info["machine"] = platform.machine()
    info["executable"] = sys.executable
    return info
