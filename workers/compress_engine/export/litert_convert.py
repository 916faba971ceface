"""torch module -> TFLite with litert-torch, run as a script in its own environment.

    python litert_convert.py SPEC.json

The second converter route, used where onnx2tf fails (litert_route.py): the engine rebuilds
the model as a torch module (onnx2torch, with its own round-trip fixes), exports it with
torch.export to a `.pt2` file, and this script converts that to a float32 `.tflite` file with
litert-torch; the other precisions are made from that file by ai-edge-quantizer. It runs in
.venv-litert because litert-torch's pins (xdsl's typing-extensions cap, ai-edge-litert 2.3)
fit neither the main environment nor onnx2tf's; it imports nothing from compress_engine.
SPEC.json:

    {"program": path to .pt2, "inputs": [input names, in order],
     "example": path to .npz (one sample per input, at the shapes the program was exported
     at), "out_dir": path,
     "precisions": ["fp32", "fp16", "dynamic-int8", "int8"],
     "representative": path to .npz (arrays named after the inputs, ONNX layout) or null,
     "representative_samples": int, "int8_io": bool}

Writes out_dir/result.json in tflite_convert.py's form: {"precisions": {p: {"file": name,
"seconds": s} or {"error": message}}, "layouts": {input: "as ONNX"}, "versions": {...}}.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import time
import traceback
from pathlib import Path

FILES = {
    "fp32": "litert.fp32.tflite",
    "fp16": "litert.fp16.tflite",
    "dynamic-int8": "litert.dynamic-int8.tflite",
    "int8": "litert.int8.tflite",
}


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    out = Path(spec["out_dir"])
    # The module takes the ONNX layout: no input is made channel-last on this route.
    result: dict = {
        "precisions": {},
        "layouts": {name: "as ONNX" for name in spec["inputs"]},
        "versions": _versions(),
    }
    start = time.perf_counter()
    try:
        float_file = _convert_float(spec, out / FILES["fp32"])
    except Exception as exc:
        message = f"litert-torch could not convert the model: {_short(exc)}"
        result["precisions"] = {p: {"error": message} for p in spec["precisions"]}
        result["log"] = traceback.format_exc()[-4000:]
        _write(out, result)
        return 0
    float_s = time.perf_counter() - start
    for precision in spec["precisions"]:
        start = time.perf_counter()
        try:
            if precision != "fp32":
                _quantize(precision, spec, float_file, out / FILES[precision])
            seconds = time.perf_counter() - start + float_s
            result["precisions"][precision] = {"file": FILES[precision], "seconds": seconds}
        except Exception as exc:
            result["precisions"][precision] = {"error": _short(exc)}
        _write(out, result)  # after each file: a crash loses only the one it was making
    if "fp32" not in spec["precisions"]:
        float_file.unlink(missing_ok=True)
    _write(out, result)
    return 0


def _convert_float(spec: dict, target: Path) -> Path:
    import numpy as np
    import torch

    module = torch.export.load(spec["program"]).module()
    with np.load(spec["example"], allow_pickle=False) as npz:
        args = tuple(torch.from_numpy(npz[name]) for name in spec["inputs"])
    noise = io.StringIO()
    with contextlib.redirect_stdout(noise):
        import litert_torch

        edge = litert_torch.convert(module, args)
        edge.export(str(target))
    return target


def _quantize(precision: str, spec: dict, float_file: Path, target: Path) -> None:
    from ai_edge_quantizer import qtyping, quantizer, recipe

    if precision == "int8" and spec.get("int8_io"):
        raise RuntimeError(
            "int8 inputs and outputs (tflite.int8_io) are made by the onnx2tf route only; "
            "this file would keep float32 ones"
        )
    q = quantizer.Quantizer(str(float_file))
    if precision == "fp16":
        # float16 weights, float32 compute: ai-edge-quantizer's float casting.
        q.update_quantization_recipe(
            regex=".*",
            operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
            op_config=qtyping.OpQuantizationConfig(
                weight_tensor_config=qtyping.TensorQuantizationConfig(
                    num_bits=16, dtype=qtyping.TensorDataType.FLOAT
                ),
                compute_precision=qtyping.ComputePrecision.FLOAT,
                explicit_dequantize=True,
            ),
            algorithm_key=quantizer.AlgorithmName.FLOAT_CASTING,
        )
        calibration = None
    elif precision == "dynamic-int8":
        q.load_quantization_recipe(recipe.dynamic_wi8_afp32())
        calibration = None
    else:
        if not spec.get("representative"):
            raise RuntimeError("needs representative samples: give the job a dataset")
        q.load_quantization_recipe(recipe.static_wi8_ai8())
        calibration = q.calibrate(_calibration_data(spec, float_file))
    noise = io.StringIO()
    with contextlib.redirect_stdout(noise):
        q.quantize(calibration).export_model(str(target), overwrite=True)


def _calibration_data(spec: dict, float_file: Path) -> dict[str, list[dict]]:
    """{signature: [{signature input: one sample}]}, the file's inputs in the ONNX order."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    signatures = Interpreter(model_path=str(float_file)).get_signature_list()
    key = next(iter(signatures))
    names = sorted(signatures[key]["inputs"], key=_natural)
    with np.load(spec["representative"], allow_pickle=False) as npz:
        arrays = [npz[name] for name in spec["inputs"]]
    count = min(len(a) for a in arrays)
    count = min(count, int(spec.get("representative_samples") or count))
    samples = [
        {
            name: a[i : i + 1].astype(np.float32) if a.dtype.kind == "f" else a[i : i + 1]
            for name, a in zip(names, arrays, strict=True)
        }
        for i in range(count)
    ]
    return {key: samples}


def _natural(name: str) -> tuple[int, str]:
    digits = "".join(c for c in name if c.isdigit())
    return (int(digits) if digits else 0, name)


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    versions = {}
    for name in ("litert-torch", "ai-edge-quantizer", "torch"):
        with contextlib.suppress(Exception):
            versions[name] = version(name)
    return versions


def _short(exc: BaseException) -> str:
    return (" ".join(str(exc).split()) or type(exc).__name__)[:600]


def _write(out: Path, result: dict) -> None:
    tmp = out / "result.json.tmp"
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(out / "result.json")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
