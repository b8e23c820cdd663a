"""The CLI's shared parts: option groups, the error boundary, verbosity, and config files.

A config file (``-c edgepipe.toml``) holds any of ``ConvertConfig``'s keys (nested tables for
``run``, ``preprocess``, ``qat``); options given on the command line override it, and the resolved
configuration is written next to every report as ``edgepipe.toml``, to be passed back with ``-c``.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from pipeline.core.config import blame, check_settings, read_toml, settings_keys
from pipeline.errors import EdgepipeError, UsageError
from pipeline.vocab import Activations, Calibration, ColorMode, Weights
from targets import MAX_THREADS, available_targets


class TargetChoice(click.Choice):
    """A choice of the registered targets, read from the registry when the command runs, so that
    targets registered after import (plugins, tests) are accepted too."""

    name = "target"

    def __init__(self) -> None:
        super().__init__([], case_sensitive=True)

    @property
    def choices(self):  # click reads this for validation, help and completion
        return list(available_targets())

    @choices.setter
    def choices(self, value) -> None:  # click's __init__ assigns it; the registry is the source
        pass


class ThreadCount(click.IntRange):
    """--threads: 1 to ``MAX_THREADS``, checked before any work, since a count the interpreter cannot
    start kills the process (XNNPACK's thread pool crashes) instead of failing."""

    def __init__(self) -> None:
        super().__init__(1, MAX_THREADS)

    def convert(self, value, param, ctx):
        number = click.INT.convert(value, param, ctx)
        if not 1 <= number <= MAX_THREADS:
            self.fail(f"{number} is not a thread count the interpreter can use; give a whole number from 1 to "
                      f"{MAX_THREADS} (this machine has {os.cpu_count() or 1} cores).", param, ctx)
        return number


def with_options(func, options: list):
    """``func`` decorated with ``options`` in the order listed (the first is the first in --help)."""
    for option in reversed(options):
        func = option(func)
    return func


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def handle_errors(command):
    """The one place where library errors become a message on stderr and a non-zero exit.

    SIGTERM is handled like Ctrl-C: the run stops, its worker processes with it, and files in
    --out are either complete or as they were (every file is written whole, under a lock)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            return command(*args, **kwargs)
        except EdgepipeError as exc:
            click.echo(f"edgepipe: error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("edgepipe: error: interrupted; nothing half-written was left, and the same command can be "
                       "run again.", err=True)
            sys.exit(130)
        finally:
            signal.signal(signal.SIGTERM, previous)

    return wrapper


def run_options(func):
    """Options shared by every command that runs a model on a target."""
    options = [
        click.option("--threads", type=ThreadCount(), default=None,
                     help="CPU threads for the interpreter [default: all cores]."),
        click.option("--runs", type=click.IntRange(min=1), default=50, show_default=True,
                     help="Timed single-sample inferences for the latency figures."),
        click.option("--warmup", type=click.IntRange(min=0), default=5, show_default=True,
                     help="Untimed inferences before timing."),
        click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
                     help="Samples per invoke when evaluating a model with a dynamic batch."),
        click.option("--emulate", is_flag=True,
                     help="ARM targets: run the aarch64 LiteRT under QEMU here (after `make arm-emulator`)."),
    ]
    return with_options(func, options)


def preprocess_options(func):
    options = [
        click.option("--scale", type=float, default=None,
                     help="model input = raw * scale + offset [default: 1/255 for uint8 data, else 1]."),
        click.option("--offset", type=float, default=None, help="Added after scaling [default: 0]."),
        click.option("--color-mode", type=click.Choice([m.value for m in ColorMode]), default=None,
                     help="How image folders are decoded [default: from the model's channels]."),
    ]
    return with_options(func, options)


def quantization_options(func):
    """How the int8 model is made, and the ladder that may choose another recipe."""
    options = [
        click.option("--calibration", type=click.Choice(Calibration.choices()), default=str(Calibration.MINMAX),
                     show_default=True, help="Activation ranges: the converter's min/max, a percentile of all values, "
                     "MSE- or MAE-optimal clipping, KL (TensorRT entropy), robust (a percentile of each sample's own "
                     "min/max), or auto (the best on held-out calibration data)."),
        click.option("--percentile", type=click.FloatRange(50, 100, min_open=True), default=None,
                     help="P for --calibration percentile [99.99] and robust [95]."),
        click.option("--weights", type=click.Choice(Weights.choices()), default=str(Weights.PER_CHANNEL),
                     show_default=True, help="Weight scales per output channel, or one per tensor (smaller on MCUs)."),
        click.option("--activations", type=click.Choice(Activations.choices()), default=str(Activations.ASYMMETRIC),
                     show_default=True, help="Activation zero points free, or symmetric (zero point 0)."),
        click.option("--float-layers", metavar="auto|NAME[,NAME]", default=None,
                     help="Keep these layers (and the ops reading them) in float; auto = the worst layer by SNR."),
        click.option("--int16-layers", metavar="auto|NAME[,NAME]", default=None,
                     help="int16 islands: these layers (or LAYER:OP) compute with int16 activations, the rest int8; "
                     "auto = the fewest ops, ranked by their measured effect on held-out data, that bring the drop "
                     "within budget."),
        click.option("--allow-float-on-mcu", is_flag=True, help="Let float islands run on microcontroller targets."),
        click.option("--max-accuracy-drop", type=click.FloatRange(min=0), default=None, metavar="POINTS",
                     help="The ladder: int8, int8 best calibration, float islands, int16 islands, int16x8, "
                     "float16, float32, ordered by what the targets value (host: latency, then bytes; MCU: fit, "
                     "latency, flash); the first whose drop on held-out calibration data is within POINTS with 95% "
                     "confidence (for a language model, % of float perplexity)."),
        click.option("--diagnose", is_flag=True, help="Add the per-layer SNR table to the report."),
    ]
    return with_options(func, options)


def _set_log_level(level: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("edgepipe: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.ERROR if level >= logging.ERROR else logging.WARNING)
    for name in ("edgepipe", "edgecore", "pipeline", "targets"):
        logging.getLogger(name).setLevel(level)


def _level_callback(level: int):
    def callback(ctx: click.Context, param: click.Parameter, value: bool) -> None:
        if value:
            _set_log_level(level)
    return callback


def verbosity(func):
    """``-q``/``-v`` on the group and on every command, so they work before or after the command."""
    func = click.option("-v", "--verbose", is_flag=True, expose_value=False, callback=_level_callback(logging.DEBUG),
                        help="Debug logging on stderr.")(func)
    return click.option("-q", "--quiet", is_flag=True, expose_value=False, callback=_level_callback(logging.ERROR),
                        help="Only errors on stderr.")(func)


class Group(click.Group):
    """Every command gets ``-q``/``-v`` and the error boundary; each invocation starts at INFO."""

    def make_context(self, info_name, args, parent=None, **extra):
        _set_log_level(logging.INFO)  # before any -q/-v callback of this invocation
        return super().make_context(info_name, args, parent=parent, **extra)

    def command(self, *args, **kwargs):
        decorator = super().command(*args, **kwargs)

        def wrap(func):
            return decorator(verbosity(handle_errors(func)))

        return wrap


def _path_value(value: Any) -> Any:
    return str(value) if isinstance(value, Path) else value


def resolve_config(ctx: click.Context, config_file: Path | None, mapping: dict[str, str]) -> dict[str, Any]:
    """The settings of a command: the config file's, then every option given on the command line
    (and the option's default where the file says nothing). ``mapping`` maps click parameter
    names to (dotted) config keys. The file's keys and value types are checked first (a UsageError
    naming the key and the file); the dotted keys still set by the file, not overridden, are kept in
    ``ctx.meta["edgepipe.file_keys"]`` for :func:`blame`."""
    settings: dict[str, Any] = {}
    if config_file is not None:
        settings = read_toml(config_file, "the config file", "give a TOML file such as the edgepipe.toml written "
                             "next to a report")
        check_settings(settings, f"the config file {config_file}")
    from_file = set(settings_keys(settings))
    for param, key in mapping.items():
        explicit = ctx.get_parameter_source(param) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
        *parents, leaf = key.split(".")
        table = settings
        for parent in parents:
            table = table.setdefault(parent, {})
        if explicit or leaf not in table:
            value = ctx.params[param]
            if value is None and leaf not in table:
                continue
            if explicit:
                from_file.discard(key)
            table[leaf] = [_path_value(v) for v in value] if isinstance(value, (tuple, list)) else _path_value(value)
    ctx.meta["edgepipe.file_keys"] = sorted(from_file)
    return settings


def in_config_file(ctx: click.Context, exc: UsageError) -> UsageError:
    """A config's own check (a range, settings that do not fit together) with the config file named
    when the setting it is about came from the file."""
    config_file = ctx.params.get("config_file")
    if config_file is None:
        return exc
    return blame(exc, ctx.meta.get("edgepipe.file_keys", []), f"the config file {config_file}")


def config_option(func):
    return click.option("-c", "--config", "config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                        help="Settings from a TOML file (e.g. an edgepipe.toml written next to a report); options "
                        "given here override it.")(func)
