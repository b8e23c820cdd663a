"""Calibration and evaluation data: image folders or ``.npz`` files, one preprocessing spec.

Only numpy and Pillow are used here, so the same loader serves the converter, the host and the
on-device runners. A folder holds one sub-folder per class (Keras' ``image_dataset_from_directory``
convention, classes in sorted order); an ``.npz`` holds ``x`` and, where labelled, ``y``.
"""

from __future__ import annotations

import logging
import warnings
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from pipeline.errors import DataError
from pipeline.vocab import ColorMode, Preprocess

from .artifacts import sha256_path

log = logging.getLogger(__name__)

MIN_CALIB_SAMPLES = 100
LARGE_INPUT = 20.0  # after preprocessing: 0..255 data given to a model trained on 0..1, most likely
RANGE_RATIO = 4.0
MEAN_SHIFT = 1.0

# Pillow modes with more than 8 bits per channel: converting them to L or RGB clips every value above 255.
WIDE_MODES = {"I;16": "16-bit", "I;16L": "16-bit", "I;16B": "16-bit", "I;16N": "16-bit", "I": "32-bit integer",
              "F": "32-bit float"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp"}


@dataclass(frozen=True)
class Dataset:
    """Preprocessed samples ready for a model: ``x`` float32 in model layout (integer ids for a
    model with an integer input), ``y`` int (per sample, or per position [N, T]) or None."""

    path: Path
    sha256: str
    x: np.ndarray
    y: np.ndarray | None
    preprocess: Preprocess
    class_names: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def samples(self) -> int:
        return int(self.x.shape[0])

    def head(self, count: int | None) -> "Dataset":
        """The first ``count`` samples (all if ``None``); the files are shuffled when made."""
        if count is None or count >= self.samples:
            return self
        return self.slice(0, count)

    def slice(self, start: int, stop: int | None) -> "Dataset":
        """Samples ``start`` to ``stop`` (same file, same hash: ``describe`` names the whole file)."""
        y = None if self.y is None else self.y[start:stop]
        return Dataset(self.path, self.sha256, self.x[start:stop], y, self.preprocess, self.class_names, self.warnings)

    def describe(self) -> dict:
        """The report entry: a path that ``edgepipe run --eval`` accepts, its hash and size."""
        return {"path": str(self.path), "sha256": self.sha256, "samples": self.samples,
                "labelled": self.y is not None}


def load_dataset(path: str | Path, preprocess: Preprocess, role: str = "data") -> Dataset:
    """Load ``path`` (folder or ``.npz``) and apply ``preprocess``.

    ``role`` names the option (``--calib``, ``--eval``) in error messages.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{role} {path} does not exist; give an image folder or an .npz file.")
    if path.is_dir():
        raw, labels, classes = _read_image_folder(path, preprocess, role)
    elif path.suffix.lower() == ".npz":
        raw, labels = _read_npz(path, role)
        classes = ()
    else:
        raise DataError(
            f"{role} {path} is neither a folder nor an .npz file; give a folder of images with "
            "one sub-folder per class, or an .npz holding 'x' (and 'y')."
        )
    notes = _numeric_kind(raw, path, role)
    spec = preprocess.resolve(raw.dtype)
    if spec.tokens:
        x = _token_ids(_fit_shape(raw, spec, path, role), spec, path, role)
    else:
        raw = _fit_shape(raw, spec, path, role)
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is refused just below, with the sample
            x = raw.astype(np.float32) * np.float32(spec.scale)
            if spec.offset:
                x += np.float32(spec.offset)
        _refuse_non_finite(x, path, role, raw)
    log.info("%s: %d samples from %s", role, len(x), path)
    for note in notes:
        log.warning("%s", note)
    found = Dataset(path=path, sha256=sha256_path(path), x=x, y=labels, preprocess=spec, class_names=classes)
    return replace(found, warnings=(*notes, *_own_warnings(found, role)))


FLOAT32_MAX = float(np.finfo(np.float32).max)


def _numeric_kind(raw: np.ndarray, path: Path, role: str) -> list[str]:
    """Refuse sample values that are not numbers a model computes on (complex, text, dates, records)
    or that float32 cannot hold; return a note for each conversion that changes what they mean
    (booleans read as 0 and 1), which goes to stderr and the report's ``data.warnings``."""
    kind = raw.dtype.kind
    if kind == "c":
        raise DataError(f"{role} {path}: 'x' holds complex numbers ({raw.dtype}); a model takes real numbers, so "
                        "save the real part, the magnitude or both as channels (np.abs(x), x.real).")
    if kind not in "fiub":
        raise DataError(f"{role} {path}: 'x' holds {raw.dtype} values ({_KINDS.get(kind, 'not numbers')}); save the "
                        "samples as numbers (uint8 pixels, or float32).")
    if kind == "f" and raw.dtype.itemsize > 4 and raw.size:
        finite = raw[np.isfinite(raw)]
        top = float(np.abs(finite).max()) if finite.size else 0.0
        if top > FLOAT32_MAX:
            flat = np.abs(np.where(np.isfinite(raw), raw, 0)).reshape(len(raw), -1)
            row = int(np.argmax(flat.max(axis=1) > FLOAT32_MAX))
            raise DataError(f"{role} {path}: sample {row} holds {top:.3g}, beyond what float32 holds (about 3.4e38), "
                            "the type the model computes in; rescale the data before saving it (it would become "
                            "infinite).")
    if kind == "b":
        return [f"{role} 'x' holds booleans ({path.name}): read as 0 (false) and 1 (true)"]
    return []


_KINDS = {"U": "text", "S": "bytes", "O": "Python objects", "M": "dates", "m": "time spans", "V": "records"}


def _token_ids(raw: np.ndarray, spec: Preprocess, path: Path, role: str) -> np.ndarray:
    """Ids for a model with an integer input, as they are: whole numbers from 0 up."""
    if raw.dtype.kind == "f":
        whole = np.isfinite(raw) & (raw == np.round(raw))
        if not whole.all():
            raise DataError(f"{role} {path}: the model takes integer ids ({spec.dtype}), but 'x' holds non-integer "
                            f"values such as {float(raw[~whole].flat[0])!r}; save the token ids themselves.")
    elif raw.dtype.kind not in "iu":
        raise DataError(f"{role} {path}: the model takes integer ids ({spec.dtype}), not {raw.dtype} values; "
                        "save the token ids as integers.")
    if raw.size and raw.max() > np.iinfo(np.dtype(spec.dtype)).max:
        raise DataError(f"{role} {path}: 'x' holds the id {float(raw.max()):.0f}, beyond what {spec.dtype} holds; save token "
                        "ids, not other numbers.")
    if raw.size and raw.min() < 0:
        row = int(np.argmax((raw < 0).reshape(len(raw), -1).any(axis=1)))
        raise DataError(f"{role} {path}: sample {row} holds the negative id {int(raw.min())}; ids index an "
                        "embedding table from 0 up, so fix the tokenization (pad with 0, not -1).")
    return raw.astype(np.dtype(spec.dtype))


def _refuse_non_finite(x: np.ndarray, path: Path, role: str, raw: np.ndarray | None = None) -> None:
    """NaN or Inf crash the converter (a segmentation fault for Inf) and poison every figure."""
    finite = np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    if not finite.all():
        row = int(np.argmin(finite))
        if raw is not None and raw.dtype.kind in "fiub" and np.isfinite(raw[row]).all():
            raise DataError(f"{role} {path}: sample {row} becomes infinite after --scale and --offset (its largest "
                            f"value is {float(np.abs(raw[row]).max()):.3g}); choose a smaller --scale, or rescale the "
                            "data.")
        kind = "NaN" if np.isnan(x[row]).any() else "an infinite value"
        raise DataError(f"{role} {path}: sample {row} holds {kind} ({int((~finite).sum())} such samples in all); "
                        "remove those samples or fix the data.")


def _own_warnings(data: "Dataset", role: str) -> list[str]:
    warnings = []
    if role == "--calib" and data.samples < MIN_CALIB_SAMPLES:
        warnings.append(f"--calib has only {data.samples} samples; about {MIN_CALIB_SAMPLES} or more give stable "
                        "activation ranges")
    top = float(np.abs(data.x).max()) if data.samples else 0.0
    if top > LARGE_INPUT and not data.preprocess.tokens:
        warnings.append(f"{role} values reach {top:.4g} after preprocessing; if the model was trained on inputs "
                        "in 0..1, pass --scale 0.00392157 (1/255)")
    for message in warnings:
        log.warning("%s", message)
    return warnings


def check_labels(data: "Dataset", output_shape: tuple, role: str) -> "Dataset":
    """Class labels must name one of the model's classes (its last output dimension); a sequence
    model ([N, T, V] outputs) takes one label per position ([N, T]). Returns the data with its
    labels in the model's shape (``y`` of [N] for an output of [N, 1, C] becomes [N, 1])."""
    if data.y is None or len(output_shape) not in (2, 3) or not output_shape[-1] or output_shape[-1] < 2:
        return data
    expected = tuple(output_shape[1:-1])
    y = data.y
    if y.ndim == 1 and expected and all(d == 1 for d in expected):
        y = y.reshape(len(y), *[1] * len(expected))
    if y.ndim != 1 + len(expected) or any(d is not None and d != n for d, n in zip(expected, y.shape[1:])):
        per = f"one label per position, shape {[data.samples, *expected]}" if expected else "one label per sample"
        raise DataError(f"{role} {data.path}: 'y' has shape {list(data.y.shape)}, but the model's output "
                        f"{list(output_shape)} needs {per}; save y in that shape.")
    classes = int(output_shape[-1])
    bad = (y < 0) | (y >= classes)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        position = f" at position {where[1:] if len(where) > 2 else where[1]}" if len(where) > 1 else ""
        raise DataError(f"{role} {data.path}: label {int(y[where])} of sample {where[0]}{position} is not one of the "
                        f"model's {classes} classes (0 to {classes - 1}); {int(bad.sum())} labels are out of range: "
                        "fix the labels or give the data this model was trained for.")
    return replace(data, y=y) if y is not data.y else data


def check_ids(data: "Dataset", limit: int | None, role: str) -> None:
    """Token ids must index the model's embedding table (``limit`` rows), when it is known."""
    if limit is None or not data.preprocess.tokens or not data.x.size or int(data.x.max()) < limit:
        return
    row = int(np.argmax((data.x >= limit).reshape(len(data.x), -1).any(axis=1)))
    raise DataError(f"{role} {data.path}: sample {row} holds the id {int(data.x[row].max())}, but the model's embedding "
                    f"has {limit} rows (ids 0 to {limit - 1}); tokenize with the model's own vocabulary.")


def fit_to_model(data: "Dataset", output_shape: tuple, id_limit: int | None, role: str) -> "Dataset":
    """``data`` checked against the model it is for: token ids within its embedding
    (:func:`check_ids`), labels its classes, in its output's shape (:func:`check_labels`)."""
    check_ids(data, id_limit, role)
    return check_labels(data, output_shape, role)


def compare_sets(calib: "Dataset", eval_data: "Dataset") -> list[str]:
    """Warnings when the calibration data does not look like the eval data (range, channel means);
    none for token ids, whose values are names, not measurements."""
    warnings = []
    if calib.preprocess.tokens:
        return warnings
    top_c, top_e = float(np.abs(calib.x).max()), float(np.abs(eval_data.x).max())
    if min(top_c, top_e) > 0 and max(top_c, top_e) / min(top_c, top_e) > RANGE_RATIO:
        warnings.append(f"--calib values reach {top_c:.4g} but --eval only {top_e:.4g}: ranges calibrated on one will "
                        "not fit the other; check that both are preprocessed alike (a few unscaled samples?)")
    axes = tuple(range(calib.x.ndim - 1))
    mean_c, mean_e = calib.x.mean(axis=axes), eval_data.x.mean(axis=axes)
    spread = np.maximum(eval_data.x.std(axis=axes), 1e-6)
    shifted = np.abs(mean_c - mean_e) / spread
    if float(shifted.max()) > MEAN_SHIFT:
        warnings.append(f"the --calib per-channel mean differs from --eval's by {float(shifted.max()):.1f} standard "
                        "deviations; calibrate on data like what the model will see")
    for message in warnings:
        log.warning("%s", message)
    return warnings


def _read_npz(path: Path, role: str) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "x" not in archive.files:
                raise DataError(
                    f"{role} {path} has no array 'x' (it has {', '.join(archive.files) or 'none'}); "
                    "save the samples as x=... (and labels as y=...)."
                )
            x = archive["x"]
            y = archive["y"] if "y" in archive.files else None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{role} {path} is not a readable .npz file ({exc}); re-save it with numpy.savez.") from exc
    if x.ndim == 0:
        raise DataError(f"{role} {path}: 'x' is a single value, not an array of samples; save x with the samples along "
                        "its first axis, e.g. shape [N, 28, 28, 1].")
    if x.shape[0] == 0:
        raise DataError(f"{role} {path} holds no samples; give at least one.")
    if y is not None:
        y = np.asarray(y)
        if y.ndim < 2 or all(d == 1 for d in y.shape[1:]):  # sequence labels ([N, T]) keep their shape
            y = y.reshape(-1)
        if len(y) != len(x):
            raise DataError(f"{role} {path} has {len(x)} samples in 'x' but {len(y)} labels in 'y'; make them match.")
        if not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{role} {path}: 'y' must hold integer class labels, not {y.dtype}.")
        y = y.astype(np.int64)
    return x, y


def _read_image_folder(path: Path, spec: Preprocess, role: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    if not spec.is_image:
        raise DataError(
            f"{role} {path} is an image folder, but the model input {spec.shape} is not an image "
            "(height x width x 1 or 3); give an .npz with 'x' instead."
        )
    classes = tuple(sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")))
    files = [(index, f) for index, name in enumerate(classes)
             for f in sorted((path / name).iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise DataError(
            f"{role} {path} holds no images; put images ({', '.join(sorted(IMAGE_SUFFIXES))}) in "
            "one sub-folder per class, e.g. {path}/cat/001.png."
        )
    from PIL import Image, UnidentifiedImageError

    mode = "L" if spec.color_mode is ColorMode.GRAYSCALE else "RGB"
    height, width = spec.height_width
    images = np.empty((len(files), height, width, spec.shape[-1]), dtype=np.uint8)
    for row, (_, file) in enumerate(files):
        try:
            # Pillow's decompression-bomb guard stays on, and its warning (1x to 2x the limit) is
            # an error too: no image is ever decoded past Image.MAX_IMAGE_PIXELS.
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(file) as image:
                    if image.mode in WIDE_MODES:
                        raise DataError(f"{role}: image {file} has {WIDE_MODES[image.mode]} pixels (mode "
                                        f"{image.mode}), which decoding to 8 bits would clip; save it as an 8-bit "
                                        "image, or put the samples in an .npz (x as uint16 or float32, with --scale).")
                    image = image.convert(mode)
                    if image.size != (width, height):
                        image = image.resize((width, height), Image.Resampling.BILINEAR)
                    images[row] = np.asarray(image).reshape(height, width, -1)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise DataError(f"{role}: image {file} claims more pixels than edgepipe decodes "
                            f"({Image.MAX_IMAGE_PIXELS:,}): {exc}; remove it or scale it down.") from exc
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            raise DataError(f"{role}: cannot read image {file} ({exc}); remove or replace it.") from exc
    labels = np.array([index for index, _ in files], dtype=np.int64)
    return images, labels, classes


def _fit_shape(raw: np.ndarray, spec: Preprocess, path: Path, role: str) -> np.ndarray:
    """Accept exactly the model's sample shape, adding a missing trailing channel of 1.

    For a model whose own layout is NCHW (an ONNX export), ``.npz`` data in NCHW is transposed to
    the NHWC the converted model takes; NHWC data is taken as it is.
    """
    expected = tuple(spec.shape)
    if raw.shape[1:] == expected:
        return raw
    if spec.layout == "NCHW" and raw.ndim == 4 and len(expected) == 3 and \
            raw.shape[1:] == (expected[2], expected[0], expected[1]):
        log.info("%s: NCHW samples %s transposed to the converted model's NHWC %s", role, raw.shape[1:], expected)
        return np.ascontiguousarray(raw.transpose(0, 2, 3, 1))
    if expected[-1:] == (1,) and raw.shape[1:] == expected[:-1]:
        return raw[..., np.newaxis]
    raise DataError(
        f"{role} {path} has samples of shape {tuple(raw.shape[1:])} but the model takes "
        f"{expected}; resize the data to {expected} (or use an image folder, which is resized for you)."
    )
