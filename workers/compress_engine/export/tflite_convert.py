"""ONNX -> TFLite, run as a script in the converter's own environment (.venv-tflite).

    python tflite_convert.py SPEC.json

onnx2tf pins numpy, onnx and onnxruntime versions the engine's environment cannot share, and a
converter crash must not take the worker down, so the engine calls this file as a subprocess.
It imports nothing from compress_engine. SPEC.json:

    {"onnx": path, "out_dir": path, "precisions": ["fp32", "fp16", "dynamic-int8", "int8"],
     "representative": path to .npz (arrays named after the inputs, ONNX layout) or null,
     "int8_io": bool, "keep_layout": [input names whose layout stays as in ONNX],
     "input_shapes": {input: [dims]} (the fixed shapes of the model's inputs, or {})}

onnx2tf rewrites the file it is given (simplified, its ops renamed): it gets a copy, in
out_dir, never the file named in the spec.

Writes out_dir/result.json: {"precisions": {p: {"file": name, "seconds": s} or
{"error": message}}, "layouts": {input: "NHWC"|...}, "versions": {...}} — one entry per
precision, so one failed precision never hides the others; it is rewritten after each one.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import sys
import time
import traceback
from pathlib import Path

FILES = {
    "fp32": "model.fp32.tflite",
    "fp16": "model.fp16.tflite",
    "dynamic-int8": "model.dynamic-int8.tflite",
    "int8": "model.int8.tflite",
}
# onnx2tf writes these two itself, named after the ONNX file's stem.
ONNX2TF_SUFFIX = {"fp32": "_float32.tflite", "fp16": "_float16.tflite"}
CHANNEL_LAST = {4: "NHWC", 5: "NDHWC"}
CALIBRATION_SAMPLE = "calibration_image_sample_data_20x128x128x3_float32.npy"


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    out = Path(spec["out_dir"])
    result: dict = {"precisions": {}, "layouts": {}, "versions": _versions()}
    start = time.perf_counter()
    try:
        saved_model, layouts = _onnx2tf(spec, out)
    except Exception as exc:
        message = f"onnx2tf could not convert the model: {_short(exc)}"
        result["precisions"] = {p: {"error": message} for p in spec["precisions"]}
        result["log"] = traceback.format_exc()[-4000:]
        _write(out, result)
        return 0
    result["layouts"] = layouts
    _write(out, result)
    # onnx2tf itself writes the fp32 and fp16 files: they are charged its time.
    onnx2tf_s = time.perf_counter() - start
    for precision in spec["precisions"]:
        start = time.perf_counter()
        try:
            name = _convert(precision, spec, out, saved_model, layouts)
            own = time.perf_counter() - start
            result["precisions"][precision] = {
                "file": name,
                "seconds": round(own + (onnx2tf_s if precision in ONNX2TF_SUFFIX else 0.0), 3),
            }
        except Exception as exc:
            result["precisions"][precision] = {"error": _short(exc)}
        # Written after each file: a converter crash (TensorFlow can segfault) loses only the
        # precision it was converting.
        _write(out, result)
    _write(out, result)
    return 0


def _onnx2tf(spec: dict, out: Path) -> tuple[Path, dict[str, str]]:
    import onnx
    import onnx2tf

    source = _own_copy(Path(spec["onnx"]), out / "onnx2tf_input")
    model = onnx.load(str(source), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    shapes = {
        i.name: [
            d.dim_value if d.HasField("dim_value") else None for d in i.type.tensor_type.shape.dim
        ]
        for i in inputs
    }
    keep = set(spec.get("keep_layout") or [])
    # Image-like inputs (rank 4/5) become channel-last, as TFLite kernels and mobile camera
    # pipelines expect; every other input keeps the ONNX layout.
    keep |= {name for name, shape in shapes.items() if len(shape) not in CHANNEL_LAST}
    layouts = {
        name: "as ONNX" if name in keep else CHANNEL_LAST[len(shape)]
        for name, shape in shapes.items()
    }
    saved_model = out / "saved_model"
    fixed = _shape_args(spec.get("input_shapes") or {})
    # For 3-channel image inputs onnx2tf downloads sample images (from GitHub) to run the
    # model once; workers are offline, so it finds a seeded stand-in in its cwd instead.
    sample = Path(CALIBRATION_SAMPLE)
    if not sample.exists():
        import numpy as np

        np.save(sample, np.random.default_rng(0).random((20, 128, 128, 3), dtype=np.float32))
    # onnx2tf prints a lot; the engine reports only what failed.
    noise = io.StringIO()
    with contextlib.redirect_stdout(noise):
        onnx2tf.convert(
            input_onnx_file_path=str(source),
            output_folder_path=str(saved_model),
            output_signaturedefs=True,
            copy_onnx_input_output_names_to_tflite=True,
            keep_ncw_or_nchw_or_ncdhw_input_names=sorted(n for n in keep if len(shapes[n]) >= 3)
            or None,
            # Erf (GELU) has no TFLite builtin: onnx2tf's pseudo-op form avoids a Flex op.
            replace_to_pseudo_operators=["erf"],
            # Fixed shapes keep every TF tensor static ("Dimension -1 must be >= 0" otherwise,
            # and int8 calibration refuses a recurrent layer's open TensorList shapes).
            overwrite_input_shape=fixed or None,
            # With every shape fixed a recurrent layer's steps are known: unrolled, it needs no
            # While loop, which TFLite's int8 calibration cannot run (it crashes on one).
            enable_rnn_unroll=all(d is not None for dims in shapes.values() for d in dims),
            non_verbose=True,
        )
    return saved_model, layouts


def _own_copy(source: Path, folder: Path) -> Path:
    """`source` and the external data files it names, copied into `folder` (same names)."""
    import shutil

    import onnx

    model = onnx.load(str(source), load_external_data=False)
    data = {
        entry.value
        for tensor in model.graph.initializer
        if tensor.data_location == onnx.TensorProto.EXTERNAL
        for entry in tensor.external_data
        if entry.key == "location"
    }
    for name in [source.name, *sorted(data)]:
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source.parent / name, target)
    return folder / source.name


def _shape_args(shapes: dict) -> list[str]:
    """onnx2tf's `name:d0,d1,...` for every input whose dims are all fixed."""
    return [
        f"{name}:{','.join(str(d) for d in dims)}"
        for name, dims in shapes.items()
        if dims and all(isinstance(d, int) and d > 0 for d in dims)
    ]


def _convert(
    precision: str, spec: dict, out: Path, saved_model: Path, layouts: dict[str, str]
) -> str:
    import tensorflow as tf

    target = out / FILES[precision]
    if precision in ONNX2TF_SUFFIX:
        made = out / "saved_model" / (Path(spec["onnx"]).stem + ONNX2TF_SUFFIX[precision])
        if not made.is_file():
            raise RuntimeError(f"onnx2tf wrote no {precision} file")
        if _has_signature(made):
            made.replace(target)
            return target.name
        # onnx2tf's own file can come without the signature its inputs are found by (seen
        # on models with grouped convolutions): the float file is made from the saved model.
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    if precision != "fp32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if precision == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    if precision == "int8":
        if not spec.get("representative"):
            raise RuntimeError("needs representative samples: give the job a dataset")
        converter.representative_dataset = _representative(spec, layouts)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if spec.get("int8_io"):
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    else:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    target.write_bytes(converter.convert())
    return target.name


def _has_signature(path: Path) -> bool:
    import tensorflow as tf

    try:
        return bool(tf.lite.Interpreter(model_path=str(path)).get_signature_list())
    except Exception:  # a file the interpreter cannot load: the engine's check says why
        return True


def _representative(spec: dict, layouts: dict[str, str]):
    import numpy as np

    with np.load(spec["representative"], allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    count = min(len(a) for a in arrays.values())

    def samples():
        for i in range(count):
            sample = []
            for name, layout in layouts.items():
                x = arrays[name][i : i + 1]
                if layout != "as ONNX":
                    x = np.moveaxis(x, 1, -1)
                sample.append(x.astype(np.float32) if x.dtype.kind == "f" else x)
            yield sample

    return samples


def _versions() -> dict[str, str]:
    versions = {}
    for name in ("onnx2tf", "tensorflow", "onnx"):
        with contextlib.suppress(Exception):
            versions[name] = __import__(name).__version__
    return versions


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    # MLIR's message buries the one useful fact (which op) in call-site noise.
    ops = sorted(set(re.findall(r"'tf\.(\w+)' op is neither a custom op nor a flex op", text)))
    if ops:
        return (
            f"TensorFlow op(s) {', '.join(ops)} have no TFLite builtin kernel for this precision "
            "(they would need the Flex delegate, which standard LiteRT runtimes do not include)"
        )
    return text[:600]


def _write(out: Path, result: dict) -> None:
    tmp = out / "result.json.tmp"
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(out / "result.json")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
