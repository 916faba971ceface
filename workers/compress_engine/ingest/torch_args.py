"""Non-tensor arguments of a scripted `forward` (`forward(self, x: Tensor, sr: int)`), for
the TorchScript converter (torch_convert.py).

The upload's input shapes give such an argument its value instead of a shape (`sr: 16000`).
The model is exported with that value, and the argument becomes a scalar input of the ONNX
model (int -> int64, float -> float32, bool -> bool) as long as the exported graph computes
what the TorchScript module computes at another value too (a second value is checked); if it
does not (the exporter baked the value into the graph), the input is fixed at the given value
and the conversion log says so. Arguments with defaults that are not given keep forward's
default, fixed in the graph: the legacy exporter needs every argument of a scripted forward.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from compress_engine.errors import EngineError
from compress_engine.ingest.shapes import InputSpec

# Non-tensor forward arguments ModelPress can convert, and the dtype of the scalar input each
# becomes in the ONNX model.
SCALAR_TYPES = {"int": "int64", "float": "float32", "bool": "bool"}


def trailing_scalar_defaults(rest: list[Any]) -> dict[str, Any]:
    """Forward's defaults of the int/float/bool arguments after the given ones (up to the
    first argument of another kind)."""
    out: dict[str, Any] = {}
    for arg in rest:
        if str(arg.type) not in SCALAR_TYPES or not arg.has_default_value():
            break
        out[arg.name] = arg.default_value
    return out


def is_tensor(value: Any) -> bool:
    import torch

    return isinstance(value, torch.Tensor)


def check_scalar_args_given(args: list[Any], specs: list[InputSpec]) -> None:
    """A required non-tensor argument needs its value among the given shapes; say how."""
    named = specs[0].name is not None
    given = {s.name for s in specs} if named else set()
    for i, arg in enumerate(args):
        if arg.has_default_value() or str(arg.type) not in SCALAR_TYPES:
            continue
        if (named and arg.name not in given) or (not named and i >= len(specs)):
            raise EngineError(
                f"forward's argument `{arg.name}` is {_a(str(arg.type))}, not a tensor: give "
                f"the value to convert the model with among the input shapes, as `{arg.name}: "
                f"<value>` (e.g. `{arg.name}: 16000`). It becomes a scalar "
                f"{SCALAR_TYPES[str(arg.type)]} input of the ONNX model."
            )


def example_argument(arg: Any, spec: InputSpec, tensor: Callable[[InputSpec], Any]) -> Any:
    """The example value for forward's argument `arg` given as `spec`: a seeded random tensor
    of its shape, or for an int/float/bool argument the one number given as its value."""
    kind = str(arg.type)
    if kind == "Tensor":
        return tensor(spec)
    if kind not in SCALAR_TYPES:
        raise EngineError(
            f"forward's argument `{arg.name}` is of type {kind}; ModelPress converts tensor "
            "arguments and int, float or bool ones only. Wrap the model so that forward takes "
            "those (e.g. a scripted wrapper that builds the value from a tensor)."
        )
    if len(spec.shape) != 1:
        raise EngineError(
            f"forward's argument `{arg.name}` is {_a(kind)}, not a tensor: give one value for "
            f"it, as `{arg.name}: 16000`, not a shape ({spec.label()})."
        )
    value = spec.shape[0]
    return bool(value) if kind == "bool" else float(value) if kind == "float" else int(value)


def _a(kind: str) -> str:
    return f"an {kind}" if kind == "int" else f"a {kind}"


def argument_label(arg: Any, spec: InputSpec) -> str:
    if str(arg.type) in SCALAR_TYPES:
        return f"{arg.name}={spec.shape[0]}"
    return spec.model_copy(update={"name": spec.name or arg.name}).label()


def scalar_tensor(value: Any) -> Any:
    import torch

    return torch.tensor(value)


def graph_inputs(raw: Path) -> list[Any]:
    import onnx

    model = onnx.load(str(raw), load_external_data=False)
    initializers = {t.name for t in model.graph.initializer}
    return [v for v in model.graph.input if v.name not in initializers]


def keep_or_fix_scalars(
    run_source: Callable[[list[Any]], list[np.ndarray]],
    raw: Path,
    call: list[Any],
    names: list[str],
    scalars: list[tuple[str, Any]],
) -> str:
    """Non-tensor arguments stay scalar inputs of the ONNX model when its graph computes what
    the TorchScript module computes at another value too; otherwise they are fixed at the
    value given (an initializer instead of an input), and the log says so."""
    import onnxruntime as ort

    other = [(not v) if isinstance(v, bool) else v * 2 for _, v in scalars]
    changed = dict(zip([n for n, _ in scalars], other, strict=True))
    moved = [changed.get(n, v) for n, v in zip(names, call, strict=True)]
    try:
        expected = run_source(moved)
        session = ort.InferenceSession(str(raw), providers=["CPUExecutionProvider"])
        types = {i.name: i.type for i in session.get_inputs()}
        feed = {
            n: feed_value(v, types.get(n, ""))
            for n, v in zip(names, moved, strict=True)
            if n in types
        }
        got = session.run(None, feed)
        faithful = len(got) == len(expected) and all(
            g.shape == e.shape and np.allclose(g, e, rtol=1e-3, atol=1e-4)
            for g, e in zip(got, expected, strict=True)
        )
    except Exception:
        faithful = False
    listed = ", ".join(f"{n}={v}" for n, v in scalars)
    if faithful:
        return (
            f"Non-tensor argument(s) {listed} became scalar inputs of the ONNX model (checked "
            "at another value too): feed them with every run (evaluate.constants)."
        )
    fix_inputs(raw, dict(scalars))
    return (
        f"Non-tensor argument(s) fixed at {listed}: the exported graph does not follow other "
        "values, so the ONNX model computes forward with these values and does not take them "
        "as inputs."
    )


def feed_value(value: Any, onnx_type: str) -> np.ndarray:
    dtype = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(bool)": np.bool_}
    if is_tensor(value):
        return value.numpy()
    return np.asarray(value, dtype=dtype.get(onnx_type, np.float32))


def fix_inputs(raw: Path, values: dict[str, Any]) -> None:
    """Turn the graph inputs named in `values` into initializers holding those values."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(raw))
    for value in list(model.graph.input):
        if value.name not in values:
            continue
        elem = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        array = np.asarray(values[value.name], dtype=elem)
        model.graph.initializer.append(numpy_helper.from_array(array, value.name))
        model.graph.input.remove(value)
    onnx.save(model, str(raw))
