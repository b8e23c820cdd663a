"""The ``edgepipe`` command: parse options, build a config, call the API, render the result."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import click
from click.core import ParameterSource

from pipeline import __version__, api
from pipeline.core.config import ConvertConfig, PreprocessOverrides, QatOptions
from pipeline.errors import TargetError, UsageError
from pipeline.report.markdown import render_inspection, render_markdown
from pipeline.run.inspection import InspectConfig
from pipeline.vocab import Activations, Calibration, Recipe, Strategy, Weights
from targets import RunOptions, SshOptions, available_targets

from .options import (
    Group,
    TargetChoice,
    ThreadCount,
    config_option,
    in_config_file,
    preprocess_options,
    quantization_options,
    resolve_config,
    run_options,
    verbosity,
    with_options,
)


def _emit(report: dict, as_json: bool) -> None:
    click.echo(json.dumps(report, indent=2) if as_json else render_markdown(report))


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgepipe")
@verbosity
def main() -> None:
    """Quantize Keras models to int8 TFLite and check them on host, Raspberry Pi and MCU targets.

    Progress goes to stderr; results (a Markdown table, or JSON with --json) go to stdout.
    """


# click parameter -> ConvertConfig key, for the settings both convert and compare take.
SHARED_KEYS = {"model": "model", "calib": "calib", "eval_": "eval", "holdout": "holdout", "out": "out", "float_io": "float_io",
               "dynamic_batch": "dynamic_batch", "calib_samples": "calib_samples", "unsafe": "unsafe",
               "overwrite": "overwrite", "percentile": "percentile", "weights": "weights", "activations": "activations",
               "max_accuracy_drop": "max_accuracy_drop", "scale": "preprocess.scale", "offset": "preprocess.offset",
               "color_mode": "preprocess.color_mode", "threads": "run.threads", "runs": "run.runs",
               "warmup": "run.warmup", "batch_size": "run.batch_size", "emulate": "run.emulate",
               "input_shape": "input_shape", "rewrite": "rewrite"}


COMPARE_RECIPES = "int8,int16x8,float16,dynamic,float32"
INPUT_SHAPE = click.option("--input-shape", metavar="H,W,C", default=None,
                           help="Sizes for a model input with open dimensions (None), e.g. 96,96,3 (no batch).")


def _conversion_options(func):
    """What convert and compare both take."""
    options = [
        click.argument("model", required=False, type=click.Path(path_type=Path)),
        config_option,
        click.option("--calib", type=click.Path(path_type=Path), help="Representative data: image folder or .npz with x."),
        click.option("--eval", "eval_", type=click.Path(path_type=Path),
                     help="Evaluation data: image folder or .npz with x (and y)."),
        click.option("--holdout", type=click.Path(path_type=Path),
                     help="Held-out data to choose on (auto calibration, the ladder, recommendations) instead of the "
                          "last fifth of --calib; more samples give tighter bounds. Never --eval."),
        click.option("--out", type=click.Path(path_type=Path), default=Path("edgepipe-out"), show_default=True,
                     help="Folder for the .tflite files and report.json/report.md/report.html."),
        click.option("--float-io", is_flag=True, help="Keep float32 input/output (quantize/dequantize inside the model)."),
        click.option("--dynamic-batch", is_flag=True,
                     help="Keep a dynamic batch dimension (batched host evaluation); devices want the default batch of 1."),
        click.option("--calib-samples", type=click.IntRange(min=1), default=500, show_default=True,
                     help="At most this many calibration samples."),
        click.option("--unsafe", is_flag=True, help="Allow models with Lambda layers (runs their embedded code)."),
        click.option("--overwrite", is_flag=True, help="Replace existing files in --out."),
        click.option("--rewrite/--no-rewrite", default=True, show_default=True,
                     help="Rewrite stock transformer layers (attention mask, LayerNorm, Embedding) into equivalents "
                          "that quantize, checked against the float outputs."),
        INPUT_SHAPE,
    ]
    return with_options(func, options)


def _config(ctx: click.Context, keys: dict[str, str], defaults: dict | None = None,
            lists: dict[str, tuple[str, list[str]]] | None = None) -> ConvertConfig:
    """The command's ConvertConfig; ``lists`` maps comma-list options that must name something when
    given to the option's name and choices (an empty --recipes would quietly make a conversion)."""
    settings = resolve_config(ctx, ctx.params["config_file"], keys)
    for key, value in (defaults or {}).items():
        given = ctx.get_parameter_source(key) is ParameterSource.COMMANDLINE  # --recipes '' is a mistake
        if not settings.get(key) and not given:  # e.g. compare -c with a convert's edgepipe.toml (recipes = [])
            settings[key] = value
    if not settings.get("model"):
        raise UsageError("give MODEL (a .keras, .h5 or SavedModel folder), or a -c config file that names it.")
    for key in ("float_layers", "int16_layers", "recipes", "calibrations", "targets"):
        if isinstance(settings.get(key), str):
            settings[key] = [part.strip() for part in settings[key].split(",") if part.strip()]
    for key, (option, choices) in (lists or {}).items():
        if ctx.get_parameter_source(key) is ParameterSource.COMMANDLINE and not settings.get(key):
            raise UsageError(f"{option} names nothing; give one or more of {', '.join(choices)}, separated by commas.")
    try:
        return ConvertConfig.from_dict(settings)
    except UsageError as exc:
        raise in_config_file(ctx, exc) from None


@main.command()
@_conversion_options
@click.option("--recipe", type=click.Choice(Recipe.choices()), default=Recipe.INT8.value, show_default=True,
              help="int8 = full integer with int8 I/O; int16x8, float16, dynamic (weights only), float32.")
@click.option("--target", "targets", multiple=True, type=TargetChoice(),
              help="Also run on these targets (repeatable) [default: host].")
@quantization_options
@preprocess_options
@run_options
@click.option("--json", "as_json", is_flag=True, help="Print report.json to stdout.")
@click.pass_context
def convert(ctx, as_json, **_):
    """Quantize MODEL (.keras, .h5 or SavedModel folder) and verify it against the float model."""
    keys = {**SHARED_KEYS, "recipe": "recipe", "targets": "targets", "calibration": "calibration",
            "float_layers": "float_layers", "int16_layers": "int16_layers", "allow_float_on_mcu": "allow_float_on_mcu", "diagnose": "diagnose"}
    _emit(api.convert(_config(ctx, keys)).report, as_json)


@main.command()
@_conversion_options
@click.option("--recipes", default=COMPARE_RECIPES, show_default=True, metavar="R[,R]",
              help="The recipes to compare, one candidate each.")
@click.option("--calibration", "calibrations", default="minmax", show_default=True, metavar="M[,M]",
              help="int8 calibration methods to compare (one int8 candidate each): "
              f"{', '.join(Calibration.choices())}.")
@click.option("--targets", default="host", show_default=True, metavar="T[,T]",
              help="Targets to run every candidate on (see `edgepipe targets`); one that cannot is a cell with the reason.")
@click.option("--percentile", type=click.FloatRange(50, 100, min_open=True), default=None,
              help="P for percentile [99.99] and robust [95] calibration.")
@click.option("--weights", type=click.Choice(Weights.choices()), default=str(Weights.PER_CHANNEL), show_default=True,
              help="int8 weight scales per output channel, or per tensor.")
@click.option("--activations", type=click.Choice(Activations.choices()), default=str(Activations.ASYMMETRIC),
              show_default=True, help="int8 activation zero points free, or symmetric (0).")
@click.option("--int16-layers", metavar="auto|NAME[,NAME]", default=None,
              help="Add an int8 candidate with int16 islands: these layers (or LAYER:OP), or auto (the fewest ops, "
              "by measured effect on held-out data).")
@click.option("--max-accuracy-drop", type=click.FloatRange(min=0), default=None, metavar="POINTS",
              help="What a recommendation may lose against float [1 point; for a language model, % of perplexity].")
@preprocess_options
@run_options
@click.option("--json", "as_json", is_flag=True, help="Print report.json to stdout.")
@click.pass_context
def compare(ctx, as_json, **_):
    """Every recipe (and int8 calibration) of MODEL on every target, side by side: the matrix, what
    fits where, the Pareto front, and a recommendation per target; report.html shows it."""
    keys = {**SHARED_KEYS, "recipes": "recipes", "calibrations": "calibrations", "targets": "targets",
            "int16_layers": "int16_layers"}
    defaults = {"recipes": COMPARE_RECIPES}
    lists = {"recipes": ("--recipes", Recipe.choices()), "calibrations": ("--calibration", Calibration.choices()),
             "targets": ("--targets", list(available_targets()))}
    _emit(api.convert(_config(ctx, keys, defaults, lists)).report, as_json)


@main.command()
@click.argument("report", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Keep the new artifacts here [default: a temporary folder, removed afterwards].")
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON.")
def rerun(report, out, as_json):
    """Repeat the conversion REPORT (a report.json) describes and say whether the artifacts' sha256
    match; when they do not, what differs (model, data, library versions). Exit 1 on a mismatch."""
    verdict = api.rerun(report, out)
    if as_json:
        click.echo(json.dumps(verdict.to_dict(), indent=2))
    else:
        for row in verdict.artifacts:
            state = "same bytes" if row["match"] else f"other bytes (sha256 {row['now']})"
            click.echo(f"{row['candidate']}: {state}; recorded sha256 {row['then']}")
        click.echo("match: every artifact is byte-identical to the report's." if verdict.match else
                   "mismatch: " + "; ".join(verdict.differences) + ".")
    if not verdict.match:
        raise SystemExit(1)


@main.command(name="report")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--html/--no-html", default=True, show_default=True, help="Also rebuild report.html.")
def rebuild_report(folder, html):
    """Rebuild report.md (and report.html) in FOLDER from its report.json."""
    written = api.rebuild_reports(folder, html=html)
    click.echo(", ".join(str(path) for path in written))


@main.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--train", required=True, type=click.Path(path_type=Path), help="Labelled training data: image folder or .npz with x and y.")
@click.option("--eval", "eval_", required=True, type=click.Path(path_type=Path),
              help="Labelled eval data: early stopping, and the PTQ/QAT comparison.")
@click.option("--calib", type=click.Path(path_type=Path), help="Representative data for the PTQ baseline [default: --train].")
@click.option("--epochs", type=click.IntRange(min=1), default=5, show_default=True, help="Fine-tuning epochs (at most).")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True, help="Training batch size.")
@click.option("--learning-rate", type=click.FloatRange(min=0, min_open=True), default=1e-4, show_default=True,
              help="Adam learning rate for fine-tuning.")
@click.option("--patience", type=click.IntRange(min=1), default=2, show_default=True,
              help="Early stopping: epochs without a better eval loss.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for deterministic training.")
@click.option("--strategy", type=click.Choice(Strategy.choices()), default=str(Strategy.DEFAULT), show_default=True,
              help="tf.distribute strategy: 'mirrored' over the local GPUs (two logical CPUs without one), 'multi-worker' across machines configured by TF_CONFIG (the global batch is --batch-size).")
@click.option("--parity-tolerance", type=click.FloatRange(min=0), default=0.01, show_default=True,
              help="Largest accepted accuracy gap between the QAT Keras model and its .tflite.")
@click.option("--fresh", is_flag=True, help="Ignore a checkpoint left in --out by an interrupted run.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("edgepipe-out"), show_default=True,
              help="Folder for the .tflite files, report.json/report.md and the training checkpoint.")
@click.option("--target", "targets", multiple=True, type=TargetChoice(),
              help="Also run the QAT model on these targets (repeatable) [default: host].")
@click.option("--unsafe", is_flag=True, help="Allow models with Lambda layers (runs their embedded code).")
@click.option("--overwrite", is_flag=True, help="Replace existing files in --out.")
@preprocess_options
@click.option("--threads", type=ThreadCount(), default=None, help="CPU threads for the interpreter [default: all cores].")
@click.option("--runs", type=click.IntRange(min=1), default=50, show_default=True, help="Timed inferences for latency.")
@click.option("--json", "as_json", is_flag=True, help="Print report.json to stdout.")
def qat(model, train, eval_, calib, epochs, batch_size, learning_rate, patience, seed, strategy, parity_tolerance,
        fresh, out, targets, unsafe, overwrite, scale, offset, color_mode, threads, runs, as_json):
    """Quantization-aware training with tfmot, reported side by side with PTQ.

    Fine-tunes MODEL (.keras or .h5) with tfmot's default 8-bit scheme and emits a full-int8
    .tflite; the report compares float, PTQ int8 and QAT int8 on the same eval data. Progress goes
    to stderr; a checkpoint after every epoch in --out lets an interrupted run resume.
    """
    options = QatOptions(train=train, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed,
                         patience=patience, strategy=strategy, parity_tolerance=parity_tolerance, resume=not fresh)
    config = ConvertConfig(
        model=model, calib=calib, eval=eval_, recipe=Recipe.INT8, out=out,
        targets=tuple(dict.fromkeys(("host", *targets))), unsafe=unsafe, overwrite=overwrite,
        preprocess=PreprocessOverrides(scale=scale, offset=offset, color_mode=color_mode),
        run=RunOptions(threads=threads, runs=runs), qat=options,
    )
    result = api.convert(config)
    if result.artifact is None:  # a non-chief worker of a multi-worker run
        click.echo(json.dumps(result.report) if as_json else
                   f"worker: trained {result.report['epochs_run']} epochs with the cluster; the chief writes the artifacts.")
        return
    _emit(result.report, as_json)


@main.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--target", type=TargetChoice(), help="Where to run (see `edgepipe targets`); required without --hosts.")
@click.option("--eval", "eval_", type=click.Path(path_type=Path), help="Evaluation data: image folder or .npz with x (and y).")
@preprocess_options
@run_options
@click.option("--host", "ssh_host", metavar="USER@HOST", help="ARM targets: run on this device over SSH.")
@click.option("--port", type=click.IntRange(1, 65535), help="SSH port of --host [default: 22].")
@click.option("--identity", type=click.Path(exists=True, dir_okay=False), help="SSH private key for --host.")
@click.option("--known-hosts", type=click.Path(exists=True, dir_okay=False),
              help="known_hosts file to check the device's host key against [default: ssh's own].")
@click.option("--remote-python", default="python3", show_default=True,
              help="Python on the device that has numpy and a LiteRT interpreter.")
@click.option("--hosts", "inventory", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A fleet: a TOML inventory of devices (name, host, port, identity, known_hosts, target); runs on all.")
@click.option("--parallel", type=click.IntRange(min=1), default=4, show_default=True,
              help="--hosts: devices at a time.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=600, show_default=True,
              help="--hosts: seconds one device may take.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="--hosts: also write report.json/md/html here.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON to stdout.")
def run(model, target, eval_, scale, offset, color_mode, threads, runs, warmup, batch_size, emulate, ssh_host, port,
        identity, known_hosts, remote_python, inventory, parallel, timeout, out, as_json):
    """Run a .tflite MODEL on a target: accuracy over --eval, latency, and what the runtime did;
    with --hosts, on every device of a fleet."""
    preprocess = PreprocessOverrides(scale=scale, offset=offset, color_mode=color_mode)
    options = RunOptions(threads=threads, warmup=warmup, runs=runs, batch_size=batch_size, emulate=emulate)
    if inventory is not None:
        if ssh_host or emulate:
            raise UsageError("--hosts runs on the devices of the inventory; drop --host and --emulate.")
        report = api.run_on_fleet(model, inventory, eval_, target=target, options=options, preprocess=preprocess,
                                  parallel=parallel, timeout=timeout, out=out)
        _emit(report, as_json)  # every device's row, failed or not
        _fail_if_devices_failed(report["fleet"]["summary"])
        return
    if target is None:
        raise UsageError("--target is required (see `edgepipe targets`), unless --hosts names the devices' targets.")
    remote = SshOptions(host=ssh_host, port=port, identity=identity, known_hosts=known_hosts,
                        python=remote_python) if ssh_host else None
    report = api.run_on_target(model, target, eval_, options=replace(options, ssh=remote), preprocess=preprocess)
    _emit(report, as_json)


def _fail_if_devices_failed(summary: dict) -> None:
    """A fleet run in which a device failed exits non-zero, after the report (with every row) is out."""
    failed = summary["failed"]
    if failed:
        names = ", ".join(failed[:5]) + (f" and {len(failed) - 5} more" if len(failed) > 5 else "")
        raise TargetError(f"{len(failed)} of {summary['devices']} devices failed ({names}); each one's row says why: "
                          "fix those devices (or take them out of the inventory) and run again.")


@main.command(name="inspect")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--calib", required=True, type=click.Path(path_type=Path), help="Representative data: image folder or .npz with x.")
@click.option("--eval", "eval_", type=click.Path(path_type=Path),
              help="Data to judge on (default: the calibration data): image folder or .npz with x (and y).")
@click.option("--calib-samples", type=click.IntRange(min=1), default=500, show_default=True,
              help="At most this many calibration samples.")
@click.option("--calib-sweep", metavar="N[,N]", default=None, help="Also calibrate on the first N samples, for each N.")
@click.option("--no-formats", is_flag=True, help="Skip the number formats side by side (faster).")
@INPUT_SHAPE
@click.option("--unsafe", is_flag=True, help="Allow models with Lambda layers (runs their embedded code).")
@click.option("--rewrite/--no-rewrite", default=True, show_default=True,
              help="Inspect the model as convert quantizes it, with stock transformer layers rewritten.")
@preprocess_options
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON to stdout.")
def inspect(model, calib, eval_, calib_samples, calib_sweep, no_formats, input_shape, unsafe, rewrite, scale, offset,
            color_mode, as_json):
    """Why int8 loses what it loses: SNR per layer (worst first) beside each op's measured effect on
    accuracy or perplexity (the drop that goes when it alone computes in int16), number formats side
    by side, weight SQNR per layer, and how accuracy moves with calibration size."""
    try:
        sweep = tuple(int(n) for n in (calib_sweep or "").split(",") if n.strip())
    except ValueError:
        raise click.BadParameter(f"{calib_sweep!r} is not a list of whole numbers such as 50,200,1000.",
                                 param_hint="--calib-sweep") from None
    report = api.inspect(InspectConfig(model=model, calib=calib, eval=eval_, calib_samples=calib_samples,
                                       formats=not no_formats, calib_sweep=sweep, unsafe=unsafe, input_shape=input_shape,
                                       rewrite=rewrite, preprocess=PreprocessOverrides(scale=scale, offset=offset, color_mode=color_mode)))
    click.echo(json.dumps(report, indent=2) if as_json else render_inspection(report))


def _kib(kib: float) -> str:
    return f"{kib / 1024**2:g} GiB" if kib >= 1024**2 else f"{kib:g} KiB"


@main.command(name="targets")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def list_targets(as_json):
    """List the registered targets."""
    rows = api.list_targets()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    width = max(len(row["name"]) for row in rows)
    click.echo(f"{'name':<{width}}  {'clock':>8}  {'SRAM':>9}  {'flash':>9}  description")
    for row in rows:
        clock = f"{row['clock_mhz']:g} MHz" if "clock_mhz" in row else "-"
        sram = _kib(row["sram_kib"]) if "sram_kib" in row else "-"
        flash = _kib(row["flash_kib"]) if "flash_kib" in row else "-"
        click.echo(f"{row['name']:<{width}}  {clock:>8}  {sram:>9}  {flash:>9}  {row['description']}")


@main.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--target", required=True, type=TargetChoice(), help="Microcontroller target (see `edgepipe targets`).")
@click.option("--out", type=click.Path(path_type=Path), default=Path("deploy"), show_default=True,
              help="Folder for model_data.h/.cc, model_ops.h and deploy.json.")
@click.option("--overwrite", is_flag=True, help="Replace existing files in --out.")
@click.option("--json", "as_json", is_flag=True, help="Print the bundle manifest as JSON.")
def deploy(model, target, out, overwrite, as_json):
    """Write a C++ bundle for a TFLM firmware: model array, arena size, op resolver, I/O scales."""
    manifest = api.deploy(model, target, out, overwrite=overwrite)
    if as_json:
        click.echo(json.dumps(manifest, indent=2))
        return
    click.echo(f"{out}/: model_data.h, model_data.cc, model_ops.h, deploy.json")
    click.echo(f"model {manifest['model_bytes']} bytes, tensor arena {manifest['tensor_arena_bytes']} bytes "
               f"({'estimated' if manifest.get('arena_estimated') else 'measured'} {manifest['arena_measured_bytes']}), "
               f"ops: {', '.join(manifest['ops'])}; "
               f"fits {target}: {'yes' if manifest['fits'] else 'no'}")


@main.command()
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Folder for the artifacts and report [default: demo-out, or demo-lm-out with --lm].")
@click.option("--lm", is_flag=True,
              help="The sample character-level GPT instead: float32 / float16 / int16x8 / int8 perplexity, size "
                   "and host latency side by side.")
@click.option("--overwrite", is_flag=True, help="Replace an earlier demo's files in --out.")
@click.option("--json", "as_json", is_flag=True, help="Print report.json to stdout.")
def demo(out, lm, overwrite, as_json):
    """Run the whole pipeline on the bundled MNIST sample and reference CNN (or, with --lm, the sample GPT)."""
    _emit(api.demo(out, overwrite=overwrite, lm=lm).report, as_json)


if __name__ == "__main__":
    main()
