"""A TFLite file in the LiteRT interpreter, behind the slice of ONNX Runtime's session interface
the engine's measurements use (run, get_inputs, get_outputs, get_providers).

Feeds and outputs are in the ONNX model's layout: channel-last inputs are transposed on the
way in, int8 inputs quantized with the file's scale and zero point, and outputs mapped back,
so fidelity, accuracy and latency code compare a TFLite file with the original unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compress_engine.errors import EngineError

RUNTIME = "LiteRT"
PROVIDER = "LiteRT CPU interpreter"

_ONNX_TYPES = {
    np.dtype("float32"): "tensor(float)",
    np.dtype("float16"): "tensor(float16)",
    np.dtype("int8"): "tensor(int8)",
    np.dtype("uint8"): "tensor(uint8)",
    np.dtype("int32"): "tensor(int32)",
    np.dtype("int64"): "tensor(int64)",
}


@dataclass(frozen=True)
class _Meta:
    """What get_inputs()/get_outputs() items expose (as ONNX Runtime's NodeArg does)."""

    name: str
    type: str
    shape: list[Any]


class LiteRTSession:
    """Runs `path` with the ONNX input/output names of the model it was converted from.

    layouts: input name -> "NHWC"/"NDHWC" (channel-last in the file) or "as ONNX".
    onnx_outputs: output name -> ONNX shape (ints or None), to map channel-last outputs back.
    """

    def __init__(
        self,
        path: Path,
        *,
        input_names: Sequence[str],
        onnx_outputs: Mapping[str, Sequence[int | None]],
        layouts: Mapping[str, str],
        threads: int,
    ) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.path = path
        self._interpreter = Interpreter(model_path=str(path), num_threads=threads)
        self._interpreter.allocate_tensors()
        signatures = self._interpreter.get_signature_list()
        if not signatures:
            raise EngineError(
                "the file has no signature, so its inputs and outputs cannot be matched with "
                "the ONNX model's"
            )
        self._runner = self._interpreter.get_signature_runner(next(iter(signatures)))
        sig = signatures[next(iter(signatures))]
        self._input_details = self._runner.get_input_details()
        self._output_details = self._runner.get_output_details()
        self._inputs = self._bind(list(input_names), list(sig["inputs"]), "inputs")
        self._outputs = self._bind(list(onnx_outputs), list(sig["outputs"]), "outputs")
        self._onnx_outputs = {k: list(v) for k, v in onnx_outputs.items()}
        self._layouts = dict(layouts)
        first = self._input_details[self._inputs[input_names[0]]]
        # The file's own batch: feeds are run in chunks of it (onnx2tf fixes batch 1 in most
        # outputs even where the input's batch is dynamic).
        self.batch = int(first["shape"][0]) if len(first["shape"]) else 1

    @staticmethod
    def _bind(onnx_names: list[str], tflite_names: list[str], what: str) -> dict[str, str]:
        if len(onnx_names) != len(tflite_names):
            raise EngineError(
                f"The TFLite file has {len(tflite_names)} {what}, the ONNX model "
                f"{len(onnx_names)}: {tflite_names} vs {onnx_names}."
            )
        if set(onnx_names) == set(tflite_names):
            return {n: n for n in onnx_names}
        # Converters rename outputs (output_0, ...); they keep the ONNX order.
        return dict(zip(onnx_names, sorted(tflite_names, key=_natural), strict=True))

    def get_inputs(self) -> list[_Meta]:
        return [self._meta(n, self._input_details[t]) for n, t in self._inputs.items()]

    def get_outputs(self) -> list[_Meta]:
        return [self._meta(n, self._output_details[t]) for n, t in self._outputs.items()]

    def get_providers(self) -> list[str]:
        return [PROVIDER]

    @property
    def input_dtypes(self) -> dict[str, str]:
        return {n: str(self._input_details[t]["dtype"].__name__) for n, t in self._inputs.items()}

    def run(self, names: Sequence[str] | None, feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        names = list(names) if names else list(self._outputs)
        total = int(next(iter(feed.values())).shape[0]) if feed else 1
        step = self.batch if total % self.batch == 0 else total
        chunks = [
            self._run_chunk({k: v[i : i + step] for k, v in feed.items()})
            for i in range(0, max(total, 1), max(step, 1))
        ]
        return [np.concatenate([c[n] for c in chunks]) for n in names]

    def _run_chunk(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = {}
        for name, tname in self._inputs.items():
            detail = self._input_details[tname]
            x = np.asarray(feed[name])
            if self._layouts.get(name, "as ONNX") != "as ONNX":
                x = np.moveaxis(x, 1, -1)
            args[tname] = _quantize(x, detail)
        got = self._runner(**args)
        out = {}
        for name, tname in self._outputs.items():
            y = _dequantize(np.asarray(got[tname]), self._output_details[tname])
            out[name] = self._onnx_layout(name, y)
        return out

    def _onnx_layout(self, name: str, y: np.ndarray) -> np.ndarray:
        want = self._onnx_outputs.get(name, [])
        if y.ndim < 3 or len(want) != y.ndim or _fits(y.shape, want):
            return y
        back = np.moveaxis(y, -1, 1)
        return back if _fits(back.shape, want) else y

    def _meta(self, name: str, detail: dict[str, Any]) -> _Meta:
        return _Meta(name, _ONNX_TYPES.get(np.dtype(detail["dtype"]), "tensor(float)"), [])


def output_shapes(outputs: Iterable[Any]) -> dict[str, list[int | None]]:
    """Output name -> shape with symbolic dims as None, from ONNX Runtime's or the engine's
    descriptions of a model's outputs (anything with .name and .shape)."""
    return {o.name: [d if isinstance(d, int) else None for d in o.shape] for o in outputs}


def _fits(shape: Sequence[int], want: Sequence[int | None]) -> bool:
    return all(w is None or w == s for s, w in zip(shape[1:], want[1:], strict=False))


def _quantize(x: np.ndarray, detail: Mapping[str, Any]) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    scale, zero = detail["quantization"]
    if dtype.kind in "iu" and x.dtype.kind == "f" and scale:
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)
    return x.astype(dtype, copy=False)


def _dequantize(y: np.ndarray, detail: Mapping[str, Any]) -> np.ndarray:
    scale, zero = detail["quantization"]
    if y.dtype.kind in "iu" and scale:
        return ((y.astype(np.float32) - zero) * scale).astype(np.float32)
    return y


def _natural(name: str) -> tuple[int, str]:
    digits = "".join(c for c in name if c.isdigit())
    return (int(digits) if digits else 0, name)
