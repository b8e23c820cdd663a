"""The .tflite reader under fuzzing: cut short, tampered, padded and random files, with a fixed seed.

Every case goes through what `edgepipe run`, `deploy` and `inspect`-style reading do with a
.tflite before any interpreter starts (the flatbuffer reader, model_info, every target's check,
the preprocessing spec, the embedding limit, the static fit and cost model, constant values) and
must either parse or raise an EdgepipeError: never another exception, never a long loop. The
reader is pure Python, so nothing here can crash natively; a second test feeds models the reader
accepts to the real CLI in a child process to show that LiteRT does not crash on them either.
"""

from __future__ import annotations

import random
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgecore.errors import EdgepipeError, TargetError
from edgecore.flatbuffer import constant_values, op_versions, read_graph, read_ops
from edgecore.model_info import inspect_model, quantization_problems
from pipeline.api import _spec_for
from pipeline.core.config import PreprocessOverrides
from pipeline.frontend.lint import embedding_rows
from targets import get_target
from targets.cost_model import model_work
from targets.mcu.memory import static_fit

pytestmark = pytest.mark.fast

DATA = Path(__file__).resolve().parents[1] / "data"
MODELS = {name: (DATA / f"{name}.tflite").read_bytes() for name in ("tiny_int8", "tiny_float32")}
SEED = 20250125


def _everything_before_an_interpreter(blob: bytes) -> None:
    read_graph.cache_clear()
    graph = read_graph(blob)
    ops = read_ops(blob)
    op_versions(blob)
    for tensor in graph.tensors:
        constant_values(blob, tensor)
    info = inspect_model(blob)
    quantization_problems(blob)
    for name in ("host", "cortex-m4", "rpi4"):
        get_target(name).check(blob)
    _spec_for(info, PreprocessOverrides())
    embedding_rows(blob)
    mcu = get_target("cortex-m4")
    static_fit(mcu.profile, blob, ops, graph)
    model_work(ops)
    mcu.estimates(blob, ops, info)
    _ = info.ends_in_softmax, info.float_ops(), info.macs


def _cases() -> list[tuple[str, bytes]]:
    """Truncations (every offset of the first 64 bytes, then a spread), byte flips, 32- and 16-bit
    fields set to boundary values (offsets, lengths, indices all live in such fields), random tails,
    and random bytes behind the right file identifier."""
    rng = random.Random(SEED)
    cases: list[tuple[str, bytes]] = []
    for name, blob in MODELS.items():
        size = len(blob)
        for cut in [*range(65), *range(65, size, max(1, size // 80)), size - 1]:
            cases.append((f"{name} cut at {cut}", blob[:cut]))
        stride = 8 if name == "tiny_int8" else 72  # every other word of the int8 model, a spread of the float one
        boundaries = (0, 1, 0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, size, size - 4)
        for number, offset in enumerate(range(0, size - 4, stride)):
            value = boundaries[number % len(boundaries)]
            if number % 5 == 4:
                value = (struct.unpack_from("<I", blob, offset)[0] + 4 * rng.randint(1, 64)) & 0xFFFFFFFF
            tampered = bytearray(blob)
            struct.pack_into("<I", tampered, offset, value)
            cases.append((f"{name} word at {offset} = {value:#x}", bytes(tampered)))
        for offset in range(2, min(size, 512) - 2, 6):  # vtables: 16-bit field offsets near the front
            tampered = bytearray(blob)
            struct.pack_into("<H", tampered, offset, rng.choice((0, 4, 0xFFFF, 0x8000)))
            cases.append((f"{name} half-word at {offset}", bytes(tampered)))
        for number in range(150):
            tampered = bytearray(blob)
            for _ in range(rng.randint(1, 6)):
                tampered[rng.randrange(8, size)] = rng.randrange(256)
            cases.append((f"{name} byte flips #{number}", bytes(tampered)))
        for number in range(30):
            cases.append((f"{name} random tail #{number}", blob + rng.randbytes(rng.randint(1, 4096))))
            cut = rng.randrange(8, size)
            cases.append((f"{name} cut at {cut} + random tail #{number}", blob[:cut] + rng.randbytes(size - cut)))
    for number in range(300):
        cases.append((f"random bytes #{number}",
                      struct.pack("<I", rng.choice((8, 12, 16, rng.randrange(1 << 32)))) + b"TFL3" +
                      rng.randbytes(rng.randint(0, 2048))))
    cases.append(("identifier only", b"\x08\x00\x00\x00TFL3"))
    cases.append(("empty", b""))
    return cases


class _TooSlow(Exception):
    pass


def test_the_reader_parses_or_refuses_every_damaged_file():
    cases = _cases()
    assert len(cases) > 2500
    outcomes = {"parsed": 0, "refused": 0}
    slowest = (0.0, "")

    def too_slow(signum, frame):
        raise _TooSlow

    previous = signal.signal(signal.SIGALRM, too_slow)
    try:
        for label, blob in cases:
            started = time.perf_counter()
            signal.setitimer(signal.ITIMER_REAL, 5.0)  # a loop over aliased tables would never end
            try:
                _everything_before_an_interpreter(blob)
                outcomes["parsed"] += 1
            except EdgepipeError as exc:
                outcomes["refused"] += 1
                text = str(exc)
                assert text.endswith(".") and "Traceback" not in text and len(text) < 600, (label, text)
            except _TooSlow:
                pytest.fail(f"{label}: still reading after 5 s")
            except Exception as exc:  # noqa: BLE001 - exactly what must not happen
                pytest.fail(f"{label}: {type(exc).__name__}: {exc}")
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            slowest = max(slowest, (time.perf_counter() - started, label))
    finally:
        signal.signal(signal.SIGALRM, previous)
    # Both kinds happen: the fuzzing reaches past the identifier check, and damage is found.
    assert outcomes["parsed"] > 300 and outcomes["refused"] > 600, outcomes
    assert slowest[0] < 1.0, slowest


def test_the_messages_say_what_happened_and_what_to_do():
    blob = MODELS["tiny_int8"]
    read_graph.cache_clear()
    with pytest.raises(TargetError, match=r"not a \.tflite flatbuffer \(no TFL3 identifier\); give the \.tflite"):
        read_graph(b"PK\x03\x04\x14\x00\x00\x00" + blob[8:])  # a zip (a .keras) named .tflite
    with pytest.raises(TargetError, match=r"cut short or damaged.*re-export it.*copy the file again"):
        read_graph(blob[: len(blob) // 2])
    tampered = bytearray(blob)
    root = struct.unpack_from("<I", blob, 0)[0]
    struct.pack_into("<I", tampered, 0, len(blob) + 100)
    with pytest.raises(TargetError, match=f"root table points to byte {len(blob) + 100}"):
        read_graph(bytes(tampered))
    assert root < len(blob)


def test_aliased_tables_are_refused_not_read_for_minutes():
    """A crafted file can point every entry of a long vector at one table (here: the subgraph list
    made to claim far more entries than the file could hold); the reader stops at the count."""
    blob = bytearray(MODELS["tiny_float32"])
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(bytes(blob), 0)
    vector = model._tab.Vector(model._tab.Offset(8))  # Model.subgraphs
    struct.pack_into("<I", blob, vector - 4, len(blob))  # the vector's length field
    read_graph.cache_clear()
    started = time.perf_counter()
    with pytest.raises(TargetError, match="claims .* entries, more than the file can hold"):
        read_graph(bytes(blob))
    assert time.perf_counter() - started < 1.0


def test_models_the_reader_accepts_do_not_crash_the_cli(tmp_path):
    """Tampered models that pass the reader, run through `edgepipe run --target host` in one child
    process each batch: LiteRT either runs them or refuses with a sentence; no signal kills it."""
    rng = random.Random(SEED + 1)
    accepted = []
    for label, blob in _cases():
        if len(accepted) == 40:
            break
        if blob in MODELS.values() or rng.random() < 0.5:
            continue
        try:
            _everything_before_an_interpreter(blob)
        except EdgepipeError:
            continue
        accepted.append((label, blob))
    assert len(accepted) >= 20
    script = tmp_path / "run_all.py"
    script.write_text(
        "import sys\nfrom click.testing import CliRunner\nfrom pipeline.cli.commands import main\n"
        "for path in sys.argv[1:]:\n"
        "    outcome = CliRunner().invoke(main, ['run', path, '--target', 'host', '--runs', '2', '--warmup', '0'])\n"
        "    error = outcome.exception if not isinstance(outcome.exception, SystemExit) else None\n"
        "    print(path, outcome.exit_code, repr(error), (outcome.stderr.strip().splitlines() or [''])[-1],"
        " flush=True)\n")
    paths = []
    for number, (_, blob) in enumerate(accepted):
        paths.append(tmp_path / f"case{number}.tflite")
        paths[-1].write_bytes(blob)
    done = subprocess.run([sys.executable, str(script), *map(str, paths)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, f"the child died ({done.returncode}): {done.stdout[-2000:]} {done.stderr[-2000:]}"
    lines = done.stdout.strip().splitlines()
    assert len(lines) == len(paths), done.stdout
    for line, (label, _) in zip(lines, accepted):
        _, code, error, last = line.split(" ", 3)
        assert error == "None", (label, line)  # no exception escaped the CLI's error boundary
        assert code == "0" or last.startswith("edgepipe: error: "), (label, line)


def test_a_required_input_left_out_is_refused_before_litert_can_crash(tmp_path):
    """Found by this fuzzing: a RESHAPE whose shape input is -1 ("no tensor") made LiteRT dereference
    nothing and kill edgepipe with SIGSEGV. -1 is now accepted only where an op may leave an input
    out (a convolution's or fully connected layer's bias, recurrent ops' optional weights)."""
    import tflite_edit

    model = tflite_edit.load(MODELS["tiny_int8"])
    inputs, _ = tflite_edit.op_tensors(model, "RESHAPE")
    reshape = next(op for op in model.subgraphs[0].operators if list(op.inputs) == inputs)
    reshape.inputs[1] = -1
    path = tmp_path / "reshape_without_shape.tflite"
    path.write_bytes(tflite_edit.save(model))
    read_graph.cache_clear()
    with pytest.raises(TargetError, match=r"RESHAPE\) of subgraph 0 leaves out its tensor 1, which it needs"):
        read_graph(path.read_bytes())
    from click.testing import CliRunner

    from pipeline.cli.commands import main

    outcome = CliRunner().invoke(main, ["run", str(path), "--target", "host", "--runs", "2"])
    assert outcome.exit_code == 1 and "leaves out its tensor 1" in outcome.stderr.strip().splitlines()[-1]
    # The bias of a fully connected layer may be left out: still a model.
    model = tflite_edit.load(MODELS["tiny_int8"])
    inputs, _ = tflite_edit.op_tensors(model, "FULLY_CONNECTED")
    dense = next(op for op in model.subgraphs[0].operators if list(op.inputs) == inputs)
    dense.inputs[2] = -1
    read_graph.cache_clear()
    graph = read_graph(tflite_edit.save(model))
    assert [len(op.inputs) for op in graph.ops if op.name == "FULLY_CONNECTED"] == [2]


def _without_operators(model):
    model.subgraphs[0].operators = []


def _input_is_a_weight(model):
    import tflite_edit

    inputs, _ = tflite_edit.op_tensors(model, "CONV_2D")
    model.subgraphs[0].inputs = [inputs[1]]


def _output_is_unwired(model):
    model.subgraphs[0].outputs = [len(model.subgraphs[0].tensors) - 1]
    model.subgraphs[0].operators = model.subgraphs[0].operators[:-1]


@pytest.mark.parametrize("edit, words", [
    (_without_operators, "no operator computes its output"),
    (_input_is_a_weight, "is a constant (stored weights), not an input"),
    (_output_is_unwired, "no operator computes its output"),
])
def test_graphs_litert_cannot_run_are_refused_by_the_reader(tmp_path, edit, words):
    """Found by feeding fuzzed models the reader accepted to LiteRT: a graph without operators, or
    whose input is a stored weight, made LiteRT raise a ValueError ("Tensor data is null", "Cannot
    set tensor: Dimension mismatch") out of `edgepipe run`. The reader now refuses both, and LiteRT's
    ValueErrors are TargetErrors in any case."""
    import tflite_edit
    from click.testing import CliRunner

    from pipeline.cli.commands import main

    model = tflite_edit.load(MODELS["tiny_int8"])
    edit(model)
    path = tmp_path / "edited.tflite"
    path.write_bytes(tflite_edit.save(model))
    for target in ("host", "cortex-m4"):
        outcome = CliRunner().invoke(main, ["run", str(path), "--target", target, "--eval",
                                            str(DATA.parent.parent / "calibration_data" / "mnist" / "calib.npz")])
        assert outcome.exit_code == 1 and isinstance(outcome.exception, (SystemExit, type(None))), outcome.exception
        assert words in outcome.stderr.strip().splitlines()[-1], outcome.stderr
