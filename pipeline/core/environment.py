"""Versions of everything that shapes the bytes and the figures, read without importing it, and
where the run happened (the lock file's hash, the container image)."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import sys
from pathlib import Path

DISTRIBUTIONS = {
    "edgepipe": "edgepipe",
    "tensorflow": "tensorflow",
    "keras": "keras",
    "tf_keras": "tf-keras",
    "litert": "ai-edge-litert",
    "tflite_micro": "tflite-micro",
    "tfmot": "tensorflow-model-optimization",
    "numpy": "numpy",
    "h5py": "h5py",
    "ml_dtypes": "ml-dtypes",
    "flatbuffers": "flatbuffers",
}
# The libraries whose versions decide the artifact's bytes (a rerun compares these).
SHAPING = ("python", "tensorflow", "keras", "tf_keras", "tfmot", "numpy", "h5py", "ml_dtypes", "flatbuffers")
LOCK_PATHS = (Path(__file__).resolve().parents[2] / "requirements.lock", Path("/opt/edgepipe/requirements.lock"))


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def lock_sha256() -> str | None:
    """The sha256 of the requirements.lock this installation was made from, if there is one."""
    for path in LOCK_PATHS:
        if path.is_file():
            return hashlib.sha256(path.read_bytes()).hexdigest()
    return None


def environment() -> dict[str, str | bool | None]:
    """Python, platform, library versions, the lock's hash and the container image, if any."""
    info: dict[str, str | bool | None] = {"python": platform.python_version()}
    info.update({key: _version(dist) for key, dist in DISTRIBUTIONS.items()})
    info["platform"] = platform.platform()
    info["machine"] = platform.machine()
    info["executable"] = sys.executable
    info["lock_sha256"] = lock_sha256()
    info["container"] = os.environ.get("EDGEPIPE_IN_CONTAINER") == "1"
    info["image_digest"] = os.environ.get("EDGEPIPE_IMAGE_DIGEST")
    return info
