"""What a run was asked to do: frozen, validated, serialisable configs.

Every config accepts ``str`` or ``Path`` for paths and plain strings for enums, checks itself in
``__post_init__`` (a bad value is a :class:`UsageError` naming the field), and round-trips
through ``to_dict``/``from_dict``: ``report.json["config"]`` can be fed back in.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from pipeline.errors import UsageError
from pipeline.vocab import Activations, Calibration, ColorMode, Recipe, Strategy, Weights
from targets import Capability, RunOptions, available_targets, targets_with

DEFAULT_CALIB_SAMPLES = 500


def _set(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


def _path(value: Any, name: str, *, optional: bool) -> Path | None:
    if value is None:
        if optional:
            return None
        raise UsageError(f"{name} is required; give a path.")
    if isinstance(value, (str, Path)) and str(value):
        return Path(value)
    raise UsageError(f"{name} must be a path (str or Path), not {value!r}.")


def _number(obj: Any, name: str, kind: type, low: float, *, optional: bool = False, open_low: bool = False) -> None:
    value = getattr(obj, name)
    if value is None and optional:
        return
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
        _set(obj, name, value)
    if isinstance(value, bool) or not isinstance(value, kind) or (kind is float and not math.isfinite(value)) \
            or value < low or (open_low and value == low):
        bound = f"more than {low}" if open_low else f"at least {low}"
        raise UsageError(f"{name} must be a {'whole number' if kind is int else 'number'} {bound}, not {value!r}.")


def _flags(obj: Any, *names: str) -> None:
    for name in names:
        if not isinstance(getattr(obj, name), bool):
            raise UsageError(f"{name} must be true or false, not {getattr(obj, name)!r}.")


def _from_dict(cls, data: dict[str, Any], what: str):
    if not isinstance(data, dict):
        raise UsageError(f"{what} must be a table of settings, not {data!r}.")
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise UsageError(f"{what} has unknown keys {', '.join(unknown)}; known keys: {', '.join(sorted(names))}.")
    missing = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING
               and f.name not in data]
    if missing:
        raise UsageError(f"{what} has no {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
                         f"required; give {missing[0]} (a path).")
    return cls(**data)


def parse_shape(value: Any) -> tuple[int, ...] | None:
    """``--input-shape``: "96,96,3" or a list of positive whole numbers (no batch)."""
    if value is None or value == "":
        return None
    try:
        parts = [part for part in value.split(",")] if isinstance(value, str) else list(value)
        shape = tuple(int(p) for p in parts)
    except (TypeError, ValueError):
        shape = ()
    if not shape or any(d < 1 for d in shape) or (isinstance(value, (list, tuple)) and
                                                  any(isinstance(v, (bool, float)) for v in value)):
        raise UsageError(f"input_shape {value!r} is not a list of sizes such as 96,96,3 (height, width, channels; "
                         "no batch).")
    return shape


@dataclass(frozen=True)
class PreprocessOverrides:
    """User choices that replace what is read from the model's input shape (None = keep)."""

    scale: float | None = None
    offset: float | None = None
    color_mode: ColorMode | None = None

    def __post_init__(self) -> None:
        for name, example in (("scale", "0.00392 (1/255)"), ("offset", "-1")):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise UsageError(f"preprocess {name} must be a number, not {value!r}.")
            # NaN or Inf here would turn every sample into NaN, reported later as a fault of the data.
            if value is not None and not math.isfinite(value):
                raise UsageError(f"--{name} (preprocess {name}) must be a finite number, not {value}; give a number "
                                 f"such as {example}.")
            if value is not None:
                _set(self, name, float(value))
        if self.color_mode is not None:
            _set(self, "color_mode", ColorMode.parse(self.color_mode, "color_mode"))

    def to_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "offset": self.offset,
                "color_mode": None if self.color_mode is None else str(self.color_mode)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PreprocessOverrides":
        return _from_dict(cls, data, "preprocess")


@dataclass(frozen=True)
class QatOptions:
    """Quantization-aware training: labelled ``train`` data and the fine-tuning settings."""

    train: Path
    epochs: int = 5
    batch_size: int = 32
    learning_rate: float = 1e-4
    seed: int = 0
    patience: int = 2
    strategy: Strategy = Strategy.DEFAULT
    parity_tolerance: float = 0.01
    resume: bool = True

    def __post_init__(self) -> None:
        _set(self, "train", _path(self.train, "qat.train", optional=False))
        for name, low in (("epochs", 1), ("batch_size", 1), ("patience", 1), ("seed", 0)):
            _number(self, name, int, low)
        _number(self, "learning_rate", float, 0.0, open_low=True)
        _number(self, "parity_tolerance", float, 0.0)
        _set(self, "strategy", Strategy.parse(self.strategy, "qat.strategy"))
        _flags(self, "resume")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["train"], out["strategy"] = str(self.train), str(self.strategy)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "QatOptions":
        return _from_dict(cls, data, "qat")


@dataclass(frozen=True)
class ConvertConfig:
    """A conversion run: the model, its data, the recipe, where the artifacts go, which targets."""

    model: Path
    calib: Path | None = None
    eval: Path | None = None
    holdout: Path | None = None  # held-out data to choose on; default: the last fifth of calib
    recipe: Recipe = Recipe.INT8
    out: Path = Path("edgepipe-out")
    targets: tuple[str, ...] = ("host",)
    float_io: bool = False
    dynamic_batch: bool = False
    unsafe: bool = False
    overwrite: bool = False
    calib_samples: int | None = DEFAULT_CALIB_SAMPLES
    preprocess: PreprocessOverrides = field(default_factory=PreprocessOverrides)
    run: RunOptions = field(default_factory=RunOptions)
    qat: QatOptions | None = None
    calibration: Calibration = Calibration.MINMAX
    percentile: float | None = None
    weights: Weights = Weights.PER_CHANNEL
    activations: Activations = Activations.ASYMMETRIC
    float_layers: tuple[str, ...] = ()
    int16_layers: tuple[str, ...] = ()  # int16 islands: layer names, layer:OP, or auto
    allow_float_on_mcu: bool = False
    max_accuracy_drop: float | None = None
    diagnose: bool = False
    input_shape: tuple[int, ...] | None = None  # fixes open input dimensions (H, W, C)
    recipes: tuple[Recipe, ...] = ()  # compare: one candidate per recipe (and per int8 calibration)
    calibrations: tuple[Calibration, ...] = ()
    rewrite: bool = True  # edge-friendly rewrites of stock transformer layers (pipeline.frontend.rewrite)

    def __post_init__(self) -> None:
        _set(self, "model", _path(self.model, "model", optional=False))
        for name in ("calib", "eval", "holdout"):
            _set(self, name, _path(getattr(self, name), name, optional=True))
        _set(self, "out", _path(self.out, "out", optional=False))
        _set(self, "recipe", Recipe.parse(self.recipe, "recipe"))
        _flags(self, "float_io", "dynamic_batch", "unsafe", "overwrite", "rewrite")
        _number(self, "calib_samples", int, 1, optional=True)
        for name, kind in (("preprocess", PreprocessOverrides), ("run", RunOptions), ("qat", QatOptions)):
            value = getattr(self, name)
            if isinstance(value, dict):
                _set(self, name, kind.from_dict(value))
            elif value is not None and not isinstance(value, kind):
                raise UsageError(f"{name} must be a {kind.__name__} or a table of its settings, not {value!r}.")
        self._check_targets()
        self._check_quantization()
        self._check_comparison()
        _set(self, "input_shape", parse_shape(self.input_shape))
        if self.qat is not None and self.recipe is not Recipe.INT8:
            raise UsageError("quantization-aware training produces int8 models; use the int8 recipe.")
        if self.qat is not None and self.eval is None:
            raise UsageError("QAT stops early on the eval split and reports on it; pass --eval DATA.")

    @property
    def int8_options_changed(self) -> bool:
        """Whether the int8 model is made other than the converter's default way."""
        return (self.calibration is not Calibration.MINMAX or self.weights is not Weights.PER_CHANNEL
                or self.activations is not Activations.ASYMMETRIC or bool(self.float_layers)
                or bool(self.int16_layers) or any(c is not Calibration.MINMAX for c in self.calibrations))

    @property
    def selects(self) -> bool:
        """Whether the run chooses on held-out calibration data (auto calibration, the ladder)."""
        return (Calibration.AUTO in (self.calibration, *self.calibrations) or "auto" in self.int16_layers
                or (self.max_accuracy_drop is not None and not self.recipes))

    def _check_quantization(self) -> None:
        _set(self, "calibration", Calibration.parse(self.calibration, "calibration"))
        for name in ("float_layers", "int16_layers"):
            value = getattr(self, name)
            layers = (value,) if isinstance(value, str) else value
            if not isinstance(layers, (tuple, list)) or not all(isinstance(n, str) and n.strip() for n in layers):
                raise UsageError(f"{name} must be layer names or 'auto', not {value!r}.")
            _set(self, name, tuple(n.strip() for n in layers))
            if "auto" in getattr(self, name) and len(getattr(self, name)) > 1:
                raise UsageError(f"{name} is either 'auto' or a list of layer names, not both.")
        if self.holdout is not None and not (Calibration.AUTO in (self.calibration, *self.calibrations)
                                             or self.max_accuracy_drop is not None or "auto" in self.int16_layers):
            raise UsageError("--holdout is data to choose on; it needs --calibration auto, --int16-layers auto or "
                             "--max-accuracy-drop.")
        _set(self, "weights", Weights.parse(self.weights, "weights"))
        _set(self, "activations", Activations.parse(self.activations, "activations"))
        _flags(self, "allow_float_on_mcu", "diagnose")
        _number(self, "percentile", float, 50.0, optional=True, open_low=True)
        if self.percentile is not None and self.percentile > 100:
            raise UsageError(f"percentile must be at most 100, not {self.percentile!r}.")
        _number(self, "max_accuracy_drop", float, 0.0, optional=True)
        if self.recipe is not Recipe.INT8 and self.int8_options_changed:
            raise UsageError(f"--calibration, --weights, --activations, --float-layers and --int16-layers shape int8 models; "
                             f"recipe {self.recipe} does not use them.")
        if self.max_accuracy_drop is not None and (self.recipe is not Recipe.INT8 or self.qat is not None):
            raise UsageError("--max-accuracy-drop chooses the recipe itself (int8 first, then int16x8, float16, "
                             "float32); leave --recipe at int8 and do not combine it with qat.")
        if self.qat is not None and self.int8_options_changed:
            raise UsageError("qat makes its int8 models with the converter's defaults; drop --calibration, "
                             "--weights, --activations, --float-layers and --int16-layers.")
        known = available_targets()
        strict = [n for n in self.targets if Capability.FLOAT_OPS not in known[n].capabilities]
        if self.float_layers and strict and not self.allow_float_on_mcu:
            raise UsageError(f"--float-layers keeps layers in float, and {', '.join(strict)} stay full int8; "
                             "pass --allow-float-on-mcu to run float islands there anyway.")

    @property
    def compares(self) -> bool:
        """A comparison run (``edgepipe compare``): several recipes side by side on the targets."""
        return bool(self.recipes)

    def _check_comparison(self) -> None:
        for name, kind in (("recipes", Recipe), ("calibrations", Calibration)):
            values = getattr(self, name)
            values = (values,) if isinstance(values, str) else values
            if not isinstance(values, (tuple, list)):
                raise UsageError(f"{name} must be a list, not {values!r}.")
            _set(self, name, tuple(dict.fromkeys(kind.parse(v, name) for v in values)))
        if self.calibrations and not self.recipes:
            raise UsageError("calibrations (several int8 calibrations side by side) is for compare; use calibration.")
        if self.compares and self.qat is not None:
            raise UsageError("compare makes post-training candidates; run qat on its own.")

    def _check_targets(self) -> None:
        names = (self.targets,) if isinstance(self.targets, str) else self.targets
        if not isinstance(names, (tuple, list)) or not all(isinstance(n, str) for n in names):
            raise UsageError(f"targets must be a list of target names, not {self.targets!r}.")
        known = available_targets()
        unknown = [name for name in names if name not in known]
        if unknown:
            raise UsageError(f"targets: unknown target {unknown[0]!r}; choose from: {', '.join(known)} "
                             "(see `edgepipe targets`).")
        # The host always runs: it is where every candidate is verified against the float model.
        _set(self, "targets", tuple(dict.fromkeys(("host", *names))))
        for capability, option in self.run.needs.items():
            if not any(capability in known[name].capabilities for name in self.targets):
                raise UsageError(f"none of the targets {', '.join(self.targets)} supports {option}; targets that do: "
                                 f"{', '.join(targets_with(capability)) or 'none'}.")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values; :meth:`from_dict` reads them back into an equal config."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        for key in ("model", "calib", "eval", "holdout", "out"):
            out[key] = None if out[key] is None else str(out[key])
        out["recipe"] = str(self.recipe)
        out["targets"] = list(self.targets)
        out["preprocess"] = self.preprocess.to_dict()
        out["run"] = self.run.to_dict()
        out["qat"] = self.qat.to_dict() if self.qat else None
        for key in ("calibration", "weights", "activations"):
            out[key] = str(out[key])
        out["float_layers"] = list(self.float_layers)
        out["int16_layers"] = list(self.int16_layers)
        out["input_shape"] = list(self.input_shape) if self.input_shape else None
        out["recipes"] = [str(r) for r in self.recipes]
        out["calibrations"] = [str(c) for c in self.calibrations]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ConvertConfig":
        return _from_dict(cls, data, "config")


# --- Settings files: -c configs, fleet inventories, report.json ---------------------------------------------

MAX_SETTINGS_BYTES = 64 << 20  # a config, an inventory or a report.json; anything larger is not one


def read_settings_text(path: str | Path, what: str, hint: str) -> str:
    """The text of a small settings file (``what`` names it in errors, ``hint`` says what to give):
    a UsageError for a path that is not a regular file (a folder, a FIFO, /dev/zero), a file too
    large to be one, or bytes that are not UTF-8 text. A UTF-8 byte-order mark is dropped."""
    path = Path(path)
    try:
        if not path.is_file():
            raise UsageError(f"cannot read {what} {path}: it is not a regular file; {hint}.")
        size = path.stat().st_size
        if size > MAX_SETTINGS_BYTES:
            raise UsageError(f"cannot read {what} {path}: it is {size:,} bytes, far too large to be one; {hint}.")
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path} ({exc.strerror or exc}); {hint}.") from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError(f"cannot read {what} {path}: it is not text (byte {exc.start} is {data[exc.start]:#04x}, not "
                         f"UTF-8), so it is binary or damaged; {hint}.") from exc


def read_toml(path: str | Path, what: str, hint: str) -> dict[str, Any]:
    """A TOML settings file as a table; every way it can fail is a UsageError naming the file."""
    text = read_settings_text(path, what, hint)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"cannot read {what} {path}: it is not valid TOML ({exc}); {hint}.") from exc
    except RecursionError as exc:
        raise UsageError(f"cannot read {what} {path}: it nests arrays or tables too deeply; {hint}.") from exc


def read_json(path: str | Path, what: str, hint: str) -> Any:
    """A JSON settings file (report.json); every way it can fail is a UsageError naming the file."""
    text = read_settings_text(path, what, hint)
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UsageError(f"cannot read {what} {path}: it is not valid JSON, cut short or damaged ({exc}); {hint}.") \
            from exc
    except RecursionError as exc:
        raise UsageError(f"cannot read {what} {path}: it nests arrays or objects too deeply; {hint}.") from exc


_INT32_MAX = 2**31 - 1
_INT64_MAX = 2**63 - 1


def _is_text(value: Any) -> bool:
    return isinstance(value, str)


def _is_flag(value: Any) -> bool:
    return isinstance(value, bool)


def _is_count(value: Any, top: int = _INT32_MAX) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) <= top


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and \
        abs(value) <= 1e300


def _is_names(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))


def _is_sizes(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, list) and all(_is_count(v) for v in value))


# Kinds of values a settings file may hold: a check and how an error names what is expected.
_TEXT = (_is_text, "a string")
_PATH = (_is_text, "a path (a string)")
_FLAG = (_is_flag, "true or false")
_COUNT = (_is_count, f"a whole number (at most {_INT32_MAX:,})")
_SEED = (lambda v: _is_count(v, _INT64_MAX), "a whole number")
_NUMBER = (_is_number, "a finite number")
_NAMES = (_is_names, "a list of names such as [\"host\", \"cortex-m4\"] (or one comma-separated string)")
_SIZES = (_is_sizes, "a list of sizes such as [96, 96, 3]")
SETTINGS_SCHEMA: dict[str, Any] = {
    "model": _PATH, "calib": _PATH, "eval": _PATH, "holdout": _PATH, "recipe": _TEXT, "out": _PATH, "targets": _NAMES,
    "float_io": _FLAG, "dynamic_batch": _FLAG, "unsafe": _FLAG, "overwrite": _FLAG, "calib_samples": _COUNT,
    "preprocess": {"scale": _NUMBER, "offset": _NUMBER, "color_mode": _TEXT},
    "run": {"threads": _COUNT, "warmup": _COUNT, "runs": _COUNT, "batch_size": _COUNT, "emulate": _FLAG,
            "ssh": {"host": _TEXT, "port": _COUNT, "identity": _PATH, "known_hosts": _PATH, "python": _TEXT,
                    "timeout": _COUNT, "budget": _NUMBER}},
    "qat": {"train": _PATH, "epochs": _COUNT, "batch_size": _COUNT, "learning_rate": _NUMBER, "seed": _SEED,
            "patience": _COUNT, "strategy": _TEXT, "parity_tolerance": _NUMBER, "resume": _FLAG},
    "calibration": _TEXT, "percentile": _NUMBER, "weights": _TEXT, "activations": _TEXT, "float_layers": _NAMES, "int16_layers": _NAMES,
    "allow_float_on_mcu": _FLAG, "max_accuracy_drop": _NUMBER, "diagnose": _FLAG, "input_shape": _SIZES,
    "recipes": _NAMES, "calibrations": _NAMES, "rewrite": _FLAG,
}


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_settings(data: Any, source: str, *, schema: dict[str, Any] = SETTINGS_SCHEMA, prefix: str = "") -> None:
    """The keys and value types of a settings table read from ``source`` (a ``-c`` file, a report's
    ``config``): an unknown key, a value of the wrong type (a string for a number, a list for a
    path, a table for a flag), a number that is not finite or beyond the file's integers, each a
    UsageError naming the key and ``source``. null (JSON) means "the default". Ranges and how
    settings fit together are then checked by :class:`ConvertConfig` itself."""
    where = f"[{prefix[:-1]}] " if prefix else ""
    if not isinstance(data, dict):
        raise UsageError(f"{source}: {where or 'the settings '}must be a table of settings, not {_shown(data)}; "
                         "give key = value lines (TOML) or an object of settings (JSON).")
    unknown = sorted(set(data) - set(schema))
    if unknown:
        raise UsageError(f"{source}: unknown key {prefix}{unknown[0]}"
                         f"{f' (and {len(unknown) - 1} more)' if len(unknown) > 1 else ''}; the known keys "
                         f"{where and 'of ' + where}are {', '.join(sorted(schema))}: fix its spelling or remove it.")
    for key, value in data.items():
        kind = schema[key]
        if value is None:
            continue
        if isinstance(kind, dict):
            if not isinstance(value, dict):
                raise UsageError(f"{source}: {prefix}{key} must be a table of settings ([{prefix}{key}] with "
                                 f"{', '.join(sorted(kind))}), not {_shown(value)}; fix it in the file.")
            check_settings(value, source, schema=kind, prefix=f"{prefix}{key}.")
        elif not kind[0](value):
            raise UsageError(f"{source}: {prefix}{key} must be {kind[1]}, not {_shown(value)}; fix it in the file "
                             "or give the option on the command line.")


def settings_keys(data: dict[str, Any], prefix: str = "") -> list[str]:
    """Every dotted key of a settings table (``run.threads``), tables themselves not counted."""
    keys = []
    for key, value in data.items():
        keys += settings_keys(value, f"{prefix}{key}.") if isinstance(value, dict) else [f"{prefix}{key}"]
    return keys


def blame(exc: UsageError, keys: list[str], source: str) -> UsageError:
    """``exc`` (a config's own check) with ``source`` named when the setting it is about came from
    there: which of ``keys`` (dotted) its first clause names; ``exc`` itself when none does."""
    text = str(exc)
    clause = text.split(";")[0]
    for key in sorted(keys, key=len, reverse=True):
        leaf = key.rsplit(".", 1)[-1]
        if re.search(rf"(?<!\w){re.escape(leaf)}(?![\w-])", clause):
            return UsageError(f"{text.rstrip('.')} (set by {key} in {source}); fix it there, or give the option on "
                              "the command line.")
    return exc


__all__ = ["ConvertConfig", "DEFAULT_CALIB_SAMPLES", "PreprocessOverrides", "QatOptions", "blame", "check_settings",
           "read_json", "read_settings_text", "read_toml", "settings_keys"]
