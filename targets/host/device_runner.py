"""Run a .tflite through LiteRT (XNNPACK by default) and print a JSON result.

Self-contained on purpose: this one file, with numpy and one LiteRT interpreter
(``ai_edge_litert``, else ``tflite_runtime``, else ``tf.lite``), is all a device needs. edgepipe
imports it for the host target, copies it to a Raspberry Pi over SSH, and runs it under
qemu-aarch64 for the emulated ARM targets, so every path runs the same loops.

    python device_runner.py --model m.tflite --inputs x.npy --outputs y.npy --threads 4

``--inputs`` holds samples already in the model's input type (quantized by the caller with the
model's own scale and zero point); ``--outputs`` receives the raw first output for each sample.
``--count N`` wraps N extra invokes in markers that edgepipe's QEMU plugin counts instructions
between. Exit status 3 means no LiteRT interpreter (or numpy) could be imported.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time

EXIT_NO_RUNTIME = 3
MARK_START = 0x45504950
MARK_STOP = 0x45504951
MARK_IGNORED = 0x45504952
CANDIDATES = (
    ("ai_edge_litert.interpreter", "ai-edge-litert", "litert"),
    ("tflite_runtime.interpreter", "tflite-runtime", "tflite_runtime"),
    ("tensorflow.lite", "tensorflow", "tf.lite"),
)


def load_interpreter_module():
    """(label, version, module) of the first LiteRT interpreter that imports; raises ImportError."""
    tried = []
    for module_name, dist, label in CANDIDATES:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            tried.append(f"{module_name} ({exc})")
            continue
        try:
            from importlib.metadata import version

            found = version(dist)
        except Exception:  # metadata can be missing from vendored installs
            found = "unknown"
        return label, found, module
    raise ImportError("; ".join(tried))


def resolver_types(module):
    """The interpreter module's OpResolverType enum (its location moved between runtimes)."""
    types = getattr(module, "OpResolverType", None)
    return types if types is not None else module.experimental.OpResolverType


def make_interpreter(module, model: bytes, kernels: str = "xnnpack", threads=None):
    """``xnnpack`` asks for the XNNPACK delegate explicitly, ``builtin`` for the optimized kernels
    without it, ``reference`` for the reference kernels."""
    types = resolver_types(module)
    resolver = {"xnnpack": types.BUILTIN, "builtin": types.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
                "reference": types.BUILTIN_REF}[kernels]
    return module.Interpreter(model_content=bytes(model), num_threads=threads,
                              experimental_op_resolver_type=resolver)


def delegation(interpreter) -> dict:
    """Which ops a delegate took. ``_get_ops_details`` lists the original nodes, then one
    ``DELEGATE`` node per partition; an original node belongs to a partition when it lies on a
    path from the partition's inputs to its outputs."""
    ops = interpreter._get_ops_details()
    delegates = [op for op in ops if op["op_name"] == "DELEGATE"]
    original = [op for op in ops if op["op_name"] != "DELEGATE"]
    producer = {int(t): op for op in original for t in op["outputs"]}
    taken = set()
    for node in delegates:
        boundary = {int(t) for t in node["inputs"]}
        pending = [int(t) for t in node["outputs"]]
        while pending:
            tensor = pending.pop()
            op = producer.get(tensor)
            if op is None or tensor in boundary or op["index"] in taken:
                continue
            taken.add(op["index"])
            pending.extend(int(t) for t in op["inputs"] if t >= 0)
    left = [op["op_name"] for op in original if op["index"] not in taken]
    return {"partitions": len(delegates), "delegated_ops": len(taken), "total_ops": len(original),
            "cpu_ops": left, "full_graph": bool(delegates) and not left}


def run_batches(interpreter, inputs, batch: int, report=None, every: int = 256):
    """Raw first outputs for every row of ``inputs`` (already in the model's input type).

    With ``batch > 1`` the interpreter is resized once and the last batch padded. ``report(n)``,
    when given, hears of progress every ``every`` rows (rarely enough to cost nothing)."""
    import numpy as np

    source = interpreter.get_input_details()[0]
    if batch != 1:
        interpreter.resize_tensor_input(source["index"], [batch, *source["shape"][1:]])
    interpreter.allocate_tensors()
    in_index = interpreter.get_input_details()[0]["index"]
    out_index = interpreter.get_output_details()[0]["index"]
    count = len(inputs)
    padding = (-count) % batch
    if padding:
        inputs = np.concatenate([inputs, np.repeat(inputs[-1:], padding, axis=0)])
    target = interpreter.get_output_details()[0]
    outputs = np.empty((len(inputs), *target["shape"][1:]), dtype=target["dtype"])
    step = max(batch, every - every % batch)
    for chunk in range(0, len(inputs), step):
        for start in range(chunk, min(chunk + step, len(inputs)), batch):
            interpreter.set_tensor(in_index, inputs[start:start + batch])
            interpreter.invoke()
            outputs[start:start + batch] = interpreter.get_tensor(out_index)
        if report is not None:
            report(min(step, len(inputs) - chunk))
    return outputs[:count]


def time_invokes(interpreter, sample, warmup: int, runs: int) -> list:
    """Nanoseconds per single-sample invoke, after ``warmup`` untimed ones."""
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], sample)
    for _ in range(warmup):
        interpreter.invoke()
    clock, samples = time.perf_counter_ns, []
    for _ in range(runs):
        start = clock()
        interpreter.invoke()
        samples.append(clock() - start)
    return samples


def _mark(value: int) -> None:
    """A system call edgepipe's QEMU plugin watches for: lseek on fd -1 fails with EBADF."""
    try:
        os.lseek(-1, value, os.SEEK_SET)
    except OSError:
        pass


def marked_invokes(interpreter, sample, count: int, warmup: int = 16) -> None:
    """``count`` invokes between start/stop markers, after ``warmup`` passes through the very same
    code with markers the plugin ignores: the first invokes pack weights and plan memory, and
    Python 3.11's specializing interpreter settles the loop's own bytecode only after a few
    passes, so counting earlier would include warm-up work."""
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], sample)
    for index in range(warmup + count):
        counted = index >= warmup
        _mark(MARK_START if counted else MARK_IGNORED)
        interpreter.invoke()
        _mark(MARK_STOP if counted else MARK_IGNORED)


def main(argv=None) -> int:
    """Command-line entry point on the device: run, time, print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--inputs", help=".npy of samples in the model's input type")
    parser.add_argument("--outputs", help="where to save the raw first output of each sample (.npy)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--kernels", choices=("xnnpack", "builtin", "reference"), default="xnnpack")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--count", type=int, default=0, help="marked invokes for instruction counting")
    args = parser.parse_args(argv)
    try:
        import numpy as np

        label, version, module = load_interpreter_module()
    except ImportError as exc:
        print(json.dumps({"error": "no-runtime", "detail": str(exc), "python": sys.version.split()[0]}))
        return EXIT_NO_RUNTIME
    with open(args.model, "rb") as handle:
        model = handle.read()
    result = {"runtime": label, "version": version, "machine": platform.machine(), "threads": args.threads,
              "kernels": args.kernels, "python": sys.version.split()[0]}
    inputs = np.load(args.inputs) if args.inputs else None
    if inputs is not None and args.outputs:
        outputs = run_batches(make_interpreter(module, model, args.kernels, args.threads), inputs, args.batch)
        np.save(args.outputs, outputs)
    interpreter = make_interpreter(module, model, args.kernels, args.threads)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    sample = inputs[:1] if inputs is not None else np.zeros(detail["shape"], dtype=detail["dtype"])
    if args.runs:
        result["latency_ns"] = time_invokes(interpreter, sample, args.warmup, args.runs)
    result["delegation"] = delegation(interpreter)
    if args.count:
        marked_invokes(interpreter, sample, args.count)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
