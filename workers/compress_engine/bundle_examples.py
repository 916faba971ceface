"""Runnable inference examples shipped in the deployment bundle (see bundle.py).

They read preprocessing.json from the bundle root and depend only on numpy and one runtime,
so a user can run them right after unzipping.
"""

from __future__ import annotations

RUN_ONNX = '''"""Run the bundled ONNX model with ONNX Runtime.

    python examples/run_onnx.py [--npz data.npz] [--model models/NAME.onnx]

Without --npz, inputs are random values of the shapes and dtypes the report was measured
with (preprocessing.json). A model exported with a fixed batch size runs the samples in
chunks of that size (the last one padded). Prints each output's shape and, for 2-D class
scores, the top-1 class per sample.
"""

import argparse
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort

HERE = Path(__file__).resolve().parent.parent


def main() -> None:
    spec = json.loads((HERE / "preprocessing.json").read_text())
    parser = argparse.ArgumentParser()
    parser.add_argument("--npz", type=Path, help="arrays named after the inputs, or x")
    parser.add_argument("--model", type=Path, default=HERE / spec["model"])
    args = parser.parse_args()

    session = ort.InferenceSession(str(args.model), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feed = {}
    arrays = dict(np.load(args.npz, allow_pickle=False)) if args.npz else {}
    for spec_input in spec["inputs"]:
        name, dtype = spec_input["name"], np.dtype(spec_input["dtype"])
        if name in arrays or (len(spec["inputs"]) == 1 and "x" in arrays):
            feed[name] = arrays.get(name, arrays.get("x")).astype(dtype)
        elif dtype.kind == "f":
            feed[name] = rng.standard_normal(spec_input["measured_shape"]).astype(dtype)
        else:
            feed[name] = rng.integers(0, 100, spec_input["measured_shape"]).astype(dtype)
    outputs = run_in_chunks(session, feed)
    for meta, value in zip(session.get_outputs(), outputs):
        print(f"{meta.name}: shape {list(value.shape)}")
        if value.ndim == 2 and value.shape[1] > 1:
            print(f"  top-1 per sample: {value.argmax(axis=1).tolist()}")


def run_in_chunks(session, feed):
    """All samples through the model; one run unless its batch dimension is fixed (an
    export with batch 1 takes one sample per run), then chunks of that size."""
    fixed = session.get_inputs()[0].shape[0]
    total = len(next(iter(feed.values())))
    if not isinstance(fixed, int) or fixed <= 0 or fixed == total:
        return session.run(None, feed)
    parts = []
    for start in range(0, total, fixed):
        chunk = {k: v[start : start + fixed] for k, v in feed.items()}
        short = fixed - len(next(iter(chunk.values())))
        if short:  # pad the last chunk with its last sample; its outputs are dropped below
            chunk = {k: np.concatenate([v, v[-1:].repeat(short, 0)]) for k, v in chunk.items()}
        parts.append([out[: fixed - short] for out in session.run(None, chunk)])
    return [np.concatenate(outs) for outs in zip(*parts)]


if __name__ == "__main__":
    main()
'''

RUN_TFLITE = '''"""Run a bundled TFLite file with the LiteRT interpreter.

    pip install ai-edge-litert numpy
    python examples/run_tflite.py [--npz data.npz] [--model models/NAME.tflite]

Arrays are given in the ONNX model's layout (preprocessing.json, e.g. NCHW): inputs the file
takes channel-last are transposed here, int8 inputs are quantized with the file's scale and
zero point, int8 outputs dequantized. Without --npz, inputs are random values of the measured
shapes, with the batch size the file was converted with. Prints each output's shape and, for
2-D class scores, the top-1 class per sample.
"""

import argparse
import json
import re
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter

HERE = Path(__file__).resolve().parent.parent


def main() -> None:
    spec = json.loads((HERE / "preprocessing.json").read_text())
    default = spec.get("tflite_model")
    parser = argparse.ArgumentParser()
    parser.add_argument("--npz", type=Path, help="arrays named after the inputs, or x")
    parser.add_argument(
        "--model", type=Path, default=default and HERE / default, required=default is None
    )
    args = parser.parse_args()
    layouts = spec["artifacts"].get(args.model.name, {}).get("layouts", {})

    runner = Interpreter(model_path=str(args.model)).get_signature_runner()
    in_details, out_details = runner.get_input_details(), runner.get_output_details()
    inputs = bind([i["name"] for i in spec["inputs"]], list(in_details))
    outputs = bind([o["name"] for o in spec["outputs"]], list(out_details))
    # The file's own batch size: onnx2tf usually fixes it (often to 1), so run in chunks of it.
    batch = int(in_details[inputs[spec["inputs"][0]["name"]]]["shape"][0])

    arrays = dict(np.load(args.npz, allow_pickle=False)) if args.npz else {}
    rng = np.random.default_rng(0)
    feed = {}
    for spec_input in spec["inputs"]:
        name, dtype = spec_input["name"], np.dtype(spec_input["dtype"])
        shape = [batch, *spec_input["measured_shape"][1:]]
        if name in arrays or (len(spec["inputs"]) == 1 and "x" in arrays):
            feed[name] = arrays.get(name, arrays.get("x")).astype(dtype)
        elif dtype.kind == "f":
            feed[name] = rng.standard_normal(shape).astype(dtype)
        else:
            feed[name] = rng.integers(0, 100, shape).astype(dtype)

    total = len(next(iter(feed.values())))
    step = batch if total % batch == 0 else total
    results = {name: [] for name in outputs}
    for start in range(0, total, step):
        chunk = {}
        for name, tname in inputs.items():
            x = feed[name][start : start + step]
            if layouts.get(name):  # channel-last in this file: NCHW -> NHWC and so on
                x = np.moveaxis(x, 1, -1)
            chunk[tname] = quantize(x, in_details[tname])
        got = runner(**chunk)
        for name, tname in outputs.items():
            results[name].append(dequantize(np.asarray(got[tname]), out_details[tname]))

    shapes = {o["name"]: o["shape"] for o in spec["outputs"]}
    for name, parts in results.items():
        value = onnx_layout(np.concatenate(parts), shapes.get(name, []))
        print(f"{name}: shape {list(value.shape)}")
        if value.ndim == 2 and value.shape[1] > 1:
            print(f"  top-1 per sample: {value.argmax(axis=1).tolist()}")


def bind(onnx_names, tflite_names):
    """ONNX name -> signature name. Converters may rename outputs (output_0, output_1, ...)
    but keep the ONNX order, so renamed ones are matched in their numbered order."""
    if set(onnx_names) == set(tflite_names):
        return {n: n for n in onnx_names}
    numbered = sorted(tflite_names, key=lambda n: ([int(d) for d in re.findall(r"\\d+", n)], n))
    return dict(zip(onnx_names, numbered))


def quantize(x, detail):
    dtype = np.dtype(detail["dtype"])
    scale, zero = detail["quantization"]
    if dtype.kind in "iu" and x.dtype.kind == "f" and scale:
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)
    return x.astype(dtype)


def dequantize(y, detail):
    scale, zero = detail["quantization"]
    if y.dtype.kind in "iu" and scale:
        return ((y.astype(np.float32) - zero) * scale).astype(np.float32)
    return y


def onnx_layout(y, want):
    """Channel-last outputs back to the ONNX layout, where the ONNX shape says so."""

    def fits(shape):
        return len(shape) == len(want) and all(
            not isinstance(w, int) or w == s for s, w in zip(shape[1:], want[1:])
        )

    if y.ndim >= 3 and not fits(y.shape) and fits(np.moveaxis(y, -1, 1).shape):
        return np.moveaxis(y, -1, 1)
    return y


if __name__ == "__main__":
    main()
'''
