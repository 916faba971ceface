"""TorchScript / torch.export -> ONNX, run as a subprocess of the worker:

    python -m compress_engine.ingest.torch_convert SPEC.json

A converter that crashes (a segfault in a custom op) or hangs must not take the worker down,
so the engine runs this module in its own process under a time limit. SPEC.json:

    {"format": "torchscript" | "torch-export", "source": path, "work": path,
     "inputs": [InputSpec as JSON] (may be empty for torch-export), "opset": int}

Writes work/raw.onnx (the exporter's output, possibly with external data), work/reference.npz
(the seeded example inputs under the ONNX input names as "in:<name>", the source model's
outputs in ONNX output order as "out:<i>") and work/result.json: {"ok": true, "log": ...} or
{"error": message, "log": traceback}.

Loading untrusted files. torch.jit.load reads the archive in C++: its unpickler resolves only
torch's own types and the `__torch__` classes compiled from the archive's TorchScript code, so
it cannot call arbitrary Python; the code then runs only as TorchScript ops in this process.
torch.export.load deserialises the graph from JSON and the weights from raw tensor bytes, but
falls back to pickle for tensor subclasses, opaque objects and sample inputs; `_forbid_pickle`
makes every such fallback fail (torch.load only with weights_only=True, no pickle.loads), and
detect_format already refused archives that flag pickled payloads.
"""

from __future__ import annotations

import json
import pickle
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from compress_engine.errors import EngineError, short_message
from compress_engine.ingest.capability import CAPABILITIES, missing_package_error
from compress_engine.ingest.shapes import InputSpec
from compress_engine.ingest.torch_args import (
    argument_label,
    check_scalar_args_given,
    example_argument,
    feed_value,
    fix_inputs,
    graph_inputs,
    is_tensor,
    keep_or_fix_scalars,
    scalar_tensor,
    trailing_scalar_defaults,
)

SEED = 20240601
DEFAULT_OPSET = 17
PICKLE_REFUSED = (
    "The model file asks to unpickle a Python object; ModelPress never unpickles uploads. "
    "Export a model whose weights and inputs are plain tensors, or export it with "
    "torch.onnx.export."
)
_WHAT = {c.key: c.what for c in CAPABILITIES}


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    work = Path(spec["work"])
    try:
        _forbid_pickle()
        log = convert(spec, work)
        result: dict[str, Any] = {"ok": True, "log": log}
    except EngineError as exc:
        result = {"error": str(exc)}
    except ImportError as exc:  # torch itself, or a package the exporter needs
        missing = missing_package_error(_WHAT.get(spec["format"], "convert torch models"), exc)
        result = {"error": str(missing or f"The converter failed: {short_message(exc)}")}
    except Exception as exc:
        result = {
            "error": f"The converter failed: {short_message(exc)}",
            "log": traceback.format_exc()[-4000:],
        }
    (work / "result.json").write_text(json.dumps(result))
    return 0


def _forbid_pickle() -> None:
    import torch

    def refuse(*args: object, **kwargs: object) -> Any:
        raise EngineError(PICKLE_REFUSED)

    original_load = torch.load

    def weights_only_load(*args: Any, **kwargs: Any) -> Any:
        # torch's weights-only unpickler accepts tensors and plain containers, nothing else.
        kwargs["weights_only"] = True
        return original_load(*args, **kwargs)

    torch.load = weights_only_load  # type: ignore[assignment]
    pickle.loads = refuse  # type: ignore[assignment]
    pickle.load = refuse  # type: ignore[assignment]
    torch._C._pickle_load_obj = refuse  # type: ignore[attr-defined]


def convert(spec: dict[str, Any], work: Path) -> str:
    import torch

    torch.manual_seed(SEED)
    specs = [InputSpec.model_validate(s) for s in spec.get("inputs") or []]
    opset = int(spec.get("opset") or DEFAULT_OPSET)
    raw = work / "raw.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if spec["format"] == "torchscript":
            inputs, outputs, log = _torchscript(Path(spec["source"]), specs, raw, opset)
        elif spec["format"] == "torch-export":
            inputs, outputs, log = _exported(Path(spec["source"]), specs, raw, opset)
        else:
            raise EngineError(f"Unknown format {spec['format']!r} for the torch converter.")
    _write_reference(raw, inputs, outputs, work / "reference.npz")
    return log


def _random_tensor(shape: list[int], dtype: str, rng: np.random.Generator):
    import torch

    if dtype.startswith("float"):
        array = rng.standard_normal(shape).astype(dtype)
    elif dtype == "bool":
        array = rng.random(shape) < 0.5
    else:
        array = rng.integers(0, 100, size=shape).astype(dtype)
    return torch.from_numpy(np.ascontiguousarray(array))


def _flatten(value: Any) -> list[Any]:
    import torch

    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _flatten(v)]
    if isinstance(value, dict):
        return [t for k in value for t in _flatten(value[k])]
    raise EngineError(
        f"The model returns a {type(value).__name__}; only tensors (or tuples, lists and "
        "dicts of tensors) can be exported to ONNX."
    )


def _torchscript(
    source: Path, specs: list[InputSpec], raw: Path, opset: int
) -> tuple[list[Any], list[Any], str]:
    import torch

    try:
        module = torch.jit.load(str(source), map_location="cpu")
    except Exception as exc:
        raise EngineError(f"torch.jit.load could not read the file: {short_message(exc)}") from None
    module.eval()
    args = module.forward.schema.arguments[1:]  # [0] is self
    names = [a.name for a in args]
    if not specs:
        raise EngineError(
            "A TorchScript file does not record the shapes of its inputs, so they are needed "
            f"for the conversion: give them in the upload's input shapes field, e.g. "
            f"{_example(names)}. The model's forward takes: {', '.join(names) or 'nothing'}."
        )
    required = [a.name for a in args if not a.has_default_value()]
    check_scalar_args_given(args, specs)
    ordered = _match_inputs(specs, names, required)
    rng = np.random.default_rng(SEED)

    # Tensors for tensor arguments; a non-tensor argument (`sr: int`) gets its given value.
    def tensor(spec: InputSpec) -> Any:
        return _random_tensor(spec.shape, spec.dtype, rng)

    call = [example_argument(a, s, tensor) for a, s in zip(args, ordered, strict=False)]
    # The exporter needs every argument of a scripted forward: non-tensor ones left out keep
    # forward's default, fixed in the graph below.
    defaults = trailing_scalar_defaults(args[len(call) :])
    call += list(defaults.values())
    input_names = names[: len(call)]
    tensor_names = [n for n, v in zip(input_names, call, strict=True) if is_tensor(v)]
    outputs = _run_source(module, call, ordered)
    output_names = ["output"] if len(outputs) == 1 else [f"output_{i}" for i in range(len(outputs))]

    def export(dynamic: bool) -> None:
        torch.onnx.export(
            module,
            tuple(call),
            str(raw),
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=(
                {n: {0: "batch"} for n in [*tensor_names, *output_names]} if dynamic else None
            ),
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )

    try:
        export(dynamic=True)
        batch_ok = _runs_at_another_batch(module, raw, call, rng)
        if not batch_ok:
            export(dynamic=False)
    except EngineError:
        raise
    except Exception as exc:
        missing = missing_package_error(_WHAT["torchscript"], exc)
        raise missing or EngineError(
            f"torch.onnx.export could not export the TorchScript model: {short_message(exc)}"
        ) from None
    shapes = ", ".join(argument_label(a, s) for a, s in zip(args, ordered, strict=False))
    log = f"TorchScript model exported with torch.onnx.export (opset {opset}) at {shapes}; "
    log += (
        "dynamic batch."
        if batch_ok
        else "fixed shapes (the graph does not run at another batch size)."
    )
    scalars = [
        (n, v)
        for n, v in zip(input_names, call, strict=True)
        if not is_tensor(v) and n not in defaults
    ]
    if scalars:
        log += " " + keep_or_fix_scalars(
            lambda moved: _source_outputs(module, moved), raw, call, input_names, scalars
        )
    if defaults:
        fix_inputs(raw, defaults)
        listed = ", ".join(f"{n}={v}" for n, v in defaults.items())
        log += f" Arguments left out keep forward's defaults ({listed})."
    inputs = [v if is_tensor(v) else scalar_tensor(v) for v in call]
    kept = {i.name for i in graph_inputs(raw)}
    inputs = [t for n, t in zip(input_names, inputs, strict=True) if n in kept]
    return inputs, outputs, log


def _source_outputs(module: Any, args: list[Any]) -> list[np.ndarray]:
    import torch

    with torch.no_grad():
        return [t.numpy() for t in _flatten(module(*args))]


def _run_source(module: Any, inputs: list[Any], specs: list[InputSpec] | None) -> list[Any]:
    """The source model's outputs on the example inputs; a model that does not run on them
    (a wrong shape given) gets the cause, which TorchScript puts on its error's last line."""
    import torch

    try:
        with torch.no_grad():
            return _flatten(module(*inputs))
    except EngineError:
        raise
    except Exception as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        cause = short_message(Exception(lines[-1] if lines else type(exc).__name__))
        given = ", ".join(s.label() for s in specs) if specs else "its example inputs"
        raise EngineError(
            f"The model does not run on inputs of the given shapes ({given}): {cause}"
        ) from None


def _runs_at_another_batch(module: Any, raw: Path, inputs: list[Any], rng) -> bool:
    """Whether the dynamic-batch export matches the module at batch + 1 too. Traced graphs
    may bake the example's batch into a Reshape; such a model is then exported with fixed
    shapes rather than with a batch dimension that lies."""
    import onnxruntime as ort
    import torch

    tensors = [t for t in inputs if is_tensor(t)]
    if not tensors or any(t.dim() == 0 for t in tensors):
        return False
    # Non-tensor arguments (an int sample rate) keep their value.
    bigger = [
        _random_tensor([t.shape[0] + 1, *t.shape[1:]], str(t.numpy().dtype), rng)
        if is_tensor(t)
        else t
        for t in inputs
    ]
    try:
        with torch.no_grad():
            expected = [t.numpy() for t in _flatten(module(*bigger))]
        session = ort.InferenceSession(str(raw), providers=["CPUExecutionProvider"])
        feed = {
            i.name: feed_value(t, i.type) for i, t in zip(session.get_inputs(), bigger, strict=True)
        }
        got = session.run(None, feed)
    except Exception:
        return False
    return len(got) == len(expected) and all(
        g.shape == e.shape and np.allclose(g, e, rtol=1e-3, atol=1e-4)
        for g, e in zip(got, expected, strict=True)
    )


def _match_inputs(specs: list[InputSpec], names: list[str], required: list[str]) -> list[InputSpec]:
    if specs[0].name is None:
        ordered = specs
    else:
        unknown = [s.name for s in specs if s.name not in names]
        if unknown:
            raise EngineError(
                f"The input shapes name {', '.join(map(repr, unknown))}, but the model's "
                f"forward takes {', '.join(names) or 'nothing'}."
            )
        by_name = {s.name: s for s in specs}
        ordered = []
        for name in names:
            if name not in by_name:
                break
            ordered.append(by_name[name])
        if len(ordered) != len(specs):
            raise EngineError(
                "Give shapes for forward's inputs in order without gaps "
                f"(forward takes {', '.join(names)})."
            )
    if len(ordered) < len(required) or len(ordered) > len(names):
        raise EngineError(
            f"The model's forward takes {len(required)} input(s) ({', '.join(required)}) but "
            f"{len(specs)} shape(s) were given: e.g. {_example(required)}."
        )
    return ordered


def _example(names: list[str]) -> str:
    return "; ".join(f"{n}: 1x3x224x224" for n in names[:2]) or "input: 1x3x224x224"


def _exported(
    source: Path, specs: list[InputSpec], raw: Path, opset: int
) -> tuple[list[Any], list[Any], str]:
    import torch

    try:
        program = torch.export.load(str(source))
    except EngineError:
        raise
    except Exception as exc:
        if isinstance(exc, pickle.UnpicklingError) or "Weights only load failed" in str(exc):
            # torch's weights-only unpickler met something other than tensors.
            raise EngineError(PICKLE_REFUSED) from None
        raise EngineError(
            f"torch.export.load could not read the program: {short_message(exc)}. Save it "
            f"with torch.export.save from torch {torch.__version__.split('+')[0]} or close to it."
        ) from None
    names = list(program.graph_signature.user_inputs)
    if specs:
        rng = np.random.default_rng(SEED)
        ordered = _match_inputs(specs, names, names)
        args = tuple(_random_tensor(s.shape, s.dtype, rng) for s in ordered)
        source_of_inputs = "the given input shapes"
    elif program.example_inputs is not None and not program.example_inputs[1]:
        args = tuple(program.example_inputs[0])
        source_of_inputs = "the example inputs saved with the program"
    else:
        raise EngineError(
            "The torch.export program carries no example inputs; give its input shapes in the "
            f"upload's input shapes field, e.g. {_example(names)}."
        )
    outputs = _run_source(program.module(), list(args), None)
    try:
        onnx_program = torch.onnx.export(
            program, args, dynamo=True, opset_version=opset, verbose=False
        )
        onnx_program.save(str(raw), external_data=True)
    except EngineError:
        raise
    except Exception as exc:
        # torch wraps the exporter's ImportError (e.g. onnxscript) in its own error type.
        missing = missing_package_error(_WHAT["torch-export"], exc)
        raise missing or EngineError(
            f"torch.onnx.export could not export the program: {short_message(exc)}"
        ) from None
    log = (
        "torch.export program exported with torch.onnx.export(dynamo=True), checked on "
        f"{source_of_inputs}."
    )
    return list(args), outputs, log


def _write_reference(raw: Path, inputs: list[Any], outputs: list[Any], path: Path) -> None:
    import onnx

    model = onnx.load(str(raw), load_external_data=False)
    initializers = {t.name for t in model.graph.initializer}
    graph_inputs = [v.name for v in model.graph.input if v.name not in initializers]
    if len(graph_inputs) != len(inputs):
        raise EngineError(
            f"The exported ONNX model takes {len(graph_inputs)} inputs but the source model "
            f"took {len(inputs)}; inputs that are not used by the computation are dropped on "
            "export. Remove them from forward."
        )
    # A scalar from a non-tensor argument takes the dtype the exporter gave its input.
    dtypes = {
        v.name: onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type)
        for v in model.graph.input
        if v.type.tensor_type.elem_type
    }
    arrays = {
        f"in:{n}": t.detach().cpu().numpy().astype(dtypes.get(n), copy=False)
        if t.dim() == 0 and n in dtypes
        else t.detach().cpu().numpy()
        for n, t in zip(graph_inputs, inputs, strict=True)
    }
    arrays |= {f"out:{i}": t.detach().cpu().numpy() for i, t in enumerate(outputs)}
    np.savez(path, **arrays)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
