"""Keras (.keras) / TensorFlow SavedModel -> ONNX with tf2onnx, run as a script in the
TensorFlow converter environment (.venv-tflite, the one the TFLite exporter uses):

    python tf_convert.py SPEC.json

It imports nothing from compress_engine (that environment does not have it). SPEC.json:

    {"format": "keras" | "savedmodel", "source": path (.keras file or SavedModel folder),
     "work": path, "inputs": [{"name", "shape", "dtype"}] (optional), "opset": int}

Writes work/raw.onnx, work/reference.npz (seeded inputs "in:<onnx input name>", the source
model's outputs in ONNX output order "out:<i>") and work/result.json ({"ok": true, "log"} or
{"error", "log"}).

Loading untrusted files. Keras loads with safe_mode=True, which refuses Lambda layers and any
other deserialised Python code; unknown custom layers fail to load. A SavedModel holds a graph
of TensorFlow ops, no Python; before it runs (for the reference outputs) its frozen graph is
checked against ops that read or write files or call back into Python.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

SEED = 20240601
DEFAULT_OPSET = 17
# Ops that touch the file system or run Python: a model has no business calling them at
# inference, and running them on an untrusted upload could read or write the worker's files.
FORBIDDEN_OPS = {
    "ReadFile", "WriteFile", "MatchingFiles", "Save", "SaveV2", "SaveSlices", "Restore",
    "RestoreV2", "RestoreSlice", "MergeV2Checkpoints", "ShardedFilename", "PyFunc",
    "PyFuncStateless", "EagerPyFunc", "ImmutableConst", "WholeFileReader", "WholeFileReaderV2",
    "TFRecordReader", "TFRecordReaderV2", "FixedLengthRecordReader", "TextLineReader",
    "DecodeProtoV2", "EncodeProto", "DebugIdentityV2", "PrintV2", "Print", "LoadAndRemapMatrix",
}  # fmt: skip


class Refused(Exception):
    """A user-facing conversion error."""


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    work = Path(spec["work"])
    try:
        log = convert(spec, work)
        result = {"ok": True, "log": log}
    except Refused as exc:
        result = {"error": str(exc)}
    except ModuleNotFoundError as exc:  # this environment lacks a package: not the model's fault
        result = {"error": f"No module named {exc.name!r}", "missing": exc.name or "?"}
    except Exception as exc:
        result = {
            "error": f"tf2onnx could not convert the model: {_short(exc)}",
            "log": traceback.format_exc()[-4000:],
        }
    (work / "result.json").write_text(json.dumps(result))
    return 0


def _short(exc: BaseException, limit: int = 600) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def convert(spec: dict, work: Path) -> str:
    import numpy as np
    import onnx
    import tensorflow as tf

    opset = int(spec.get("opset") or DEFAULT_OPSET)
    given = {s["name"]: s for s in spec.get("inputs") or [] if s.get("name")}
    positional = [s for s in spec.get("inputs") or [] if not s.get("name")]
    raw = work / "raw.onnx"
    rng = np.random.default_rng(SEED)
    if spec["format"] == "keras":
        inputs, outputs, log = _keras(Path(spec["source"]), given, positional, raw, opset, rng)
    elif spec["format"] == "savedmodel":
        source = Path(spec["source"])
        inputs, outputs, log = _saved_model(source, given, positional, raw, opset, rng)
    else:
        raise Refused(f"Unknown format {spec['format']!r} for the TensorFlow converter.")
    model = onnx.load(str(raw), load_external_data=False)
    initializers = {t.name for t in model.graph.initializer}
    graph_inputs = [v.name for v in model.graph.input if v.name not in initializers]
    arrays = {}
    for name in graph_inputs:
        key = name if name in inputs else name.split(":")[0]
        if key not in inputs:
            raise Refused(f"The converted model has an input {name!r} the source model lacks.")
        arrays[f"in:{name}"] = inputs[key]
    for i, out in enumerate(model.graph.output):
        value = outputs[out.name] if isinstance(outputs, dict) else outputs[i]
        arrays[f"out:{i}"] = np.asarray(value)
    np.savez(work / "reference.npz", **arrays)
    del tf
    return log


def _concrete(name: str, shape, dtype: str, given: dict, positional: list, index: int, rng):
    """A seeded example input: the given shape, else the declared one with batch 1."""
    spec = given.get(name) or (positional[index] if index < len(positional) else None)
    if spec is not None:
        dims = list(spec["shape"])
        dtype = spec.get("dtype") or dtype
    else:
        dims = list(shape)
        if dims and dims[0] is None:
            dims[0] = 1
        if any(d is None for d in dims):
            example = "x".join(["1", *("224" if d is None else str(d) for d in shape[1:])])
            raise Refused(
                f"The input {name!r} has unknown dimensions {_fmt(shape)}; give its shape in the "
                f"upload's input shapes field, e.g. {name}: {example}."
            )
    if dtype.startswith("float"):
        return rng.standard_normal(dims).astype(dtype)
    if dtype == "bool":
        return rng.random(dims) < 0.5
    return rng.integers(0, 100, size=dims).astype(dtype)


def _fmt(shape) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _keras(source: Path, given: dict, positional: list, raw: Path, opset: int, rng):
    import keras
    import tensorflow as tf
    import tf2onnx

    try:
        model = keras.saving.load_model(str(source), compile=False, safe_mode=True)
    except Exception as exc:
        raise Refused(
            f"Keras could not load the file (safe mode: Lambda layers and custom Python code "
            f"are refused): {_short(exc)}"
        ) from None
    specs = [
        tf.TensorSpec([None, *t.shape[1:]], t.dtype, name=t.name.split(":")[0])
        for t in model.inputs
    ]
    inputs = {
        s.name: _concrete(s.name, list(t.shape), t.dtype, given, positional, i, rng)
        for i, (s, t) in enumerate(zip(specs, model.inputs, strict=True))
    }
    feed = [inputs[s.name] for s in specs]
    outputs = tf.nest.flatten(model(feed if len(feed) > 1 else feed[0], training=False))
    outputs = [o.numpy() if hasattr(o, "numpy") else o for o in outputs]
    tf2onnx.convert.from_keras(model, input_signature=specs, opset=opset, output_path=str(raw))
    return (
        inputs,
        outputs,
        (
            f"Keras {keras.__version__} model converted with tf2onnx {tf2onnx.__version__} "
            f"(opset {opset}), batch dimension dynamic."
        ),
    )


def _saved_model(source: Path, given: dict, positional: list, raw: Path, opset: int, rng):
    import tensorflow as tf
    import tf2onnx
    from tf2onnx import tf_loader
    from tf2onnx.convert import _convert_common

    try:
        graph_def, in_names, out_names, tables, renames = tf_loader.from_saved_model(
            str(source), None, None, tag=None, signatures=None, concrete_function=None,
            large_model=False, return_initialized_tables=True, return_tensors_to_rename=True,
        )  # fmt: skip
    except Exception as exc:
        raise Refused(f"TensorFlow could not load the SavedModel: {_short(exc)}") from None
    ops = {n.op for n in graph_def.node}
    for function in graph_def.library.function:
        ops |= {n.op for n in function.node_def}
    forbidden = sorted(ops & FORBIDDEN_OPS)
    if forbidden:
        raise Refused(
            f"The SavedModel's serving function uses {', '.join(forbidden)}, which read or write "
            "files or run Python; ModelPress does not run such graphs. Export a serving "
            "function that only computes."
        )
    loaded = tf.saved_model.load(str(source))
    signature = loaded.signatures.get("serving_default") or next(iter(loaded.signatures.values()))
    arg_specs = signature.structured_input_signature[1]
    inputs = {
        name: _concrete(name, spec.shape.as_list(), spec.dtype.name, given, positional, i, rng)
        for i, (name, spec) in enumerate(sorted(arg_specs.items()))
    }
    result = signature(**{k: tf.constant(v) for k, v in inputs.items()})
    outputs = {name: value.numpy() for name, value in result.items()}
    with tf.device("/cpu:0"):
        _convert_common(
            graph_def, name=str(source), opset=opset, input_names=in_names,
            output_names=out_names, tensors_to_rename=renames, initialized_tables=tables,
            output_path=str(raw),
        )  # fmt: skip
    return (
        inputs,
        outputs,
        (
            f"SavedModel (signature serving_default) converted with tf2onnx {tf2onnx.__version__} "
            f"(opset {opset})."
        ),
    )


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main(sys.argv[1]))
