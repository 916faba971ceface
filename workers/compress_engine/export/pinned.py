"""The converters' own copy of the model, with every free input dim fixed.

TFLite kernels want static shapes: onnx2tf fails on graphs exported with dynamic dims
(`Dimension -1 must be >= 0`, mixed-type shape sequences, a Resize whose sizes come from
Shape ops) or leaves a GRU's TensorList shapes open, which int8 calibration cannot run; and
onnx2torch reads shape chains at run time, which torch.export cannot trace. So each converter
gets a copy whose free dims are the run's measured shapes at batch 1 (evaluate.input_shapes,
else the dataset's, else the guess the report names), with what those shapes make constant
folded away and the shapes inferred again through the fixed graph. onnx2tf also rewrites the
file it is given (it simplifies it and renames its ops in place): it only ever gets a copy."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from compress_engine.onnx_files import save_model

if TYPE_CHECKING:
    import onnx


@dataclass(frozen=True)
class Pinned:
    """The shapes of the fixed copy: inputs as fixed (None where a dim stays free), outputs as
    inferred through the fixed graph (None where inference could not tell)."""

    inputs: dict[str, list[int | None]]
    outputs: dict[str, list[int | None]]


def pinned_copy(source: Path, target: Path, shapes: Mapping[str, Sequence[int]]) -> Pinned:
    """Write `source` to `target` with each input's dims set to `shapes` (inputs of another
    rank, or not named, keep theirs)."""
    import onnx

    model = onnx.load(str(source))  # its external data too: the copy stands alone
    inputs = pin_inputs(model, shapes)
    # Inferred shapes stored with the file name the free dims: they would contradict the
    # fixed ones, so they are inferred again through the fixed graph.
    del model.graph.value_info[:]
    for output in model.graph.output:
        for dim in output.type.tensor_type.shape.dim:
            if not dim.HasField("dim_value"):
                dim.Clear()
    target.parent.mkdir(parents=True, exist_ok=True)
    save_model(model, target)
    model = _folded(target) or model
    # Custom ops, or a graph inference rejects: the converters try it as it is.
    with contextlib.suppress(Exception):
        model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    save_model(model, target)
    outputs = {o.name: _dims(o) for o in model.graph.output}
    return Pinned(inputs, outputs)


def _folded(path: Path) -> onnx.ModelProto | None:
    """The model at `path` with what its fixed shapes make constant folded away (Shape ->
    Gather -> Concat chains feeding Reshape or Resize, which onnx2torch would otherwise read
    at run time and torch.export cannot trace), by ONNX Runtime's basic optimizations: they
    write only standard ONNX ops. None where ONNX Runtime cannot load it."""
    import onnx
    import onnxruntime as ort

    folded = path.with_name(path.stem + ".folded.onnx")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(folded)
    try:
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        model = onnx.load(str(folded))
    except Exception:  # an op ONNX Runtime lacks: the converters get the graph unfolded
        return None
    finally:
        folded.unlink(missing_ok=True)
    # ONNX Runtime declares every domain it knows; converters refuse domains they do not.
    used = {node.domain for node in model.graph.node} | {"", "ai.onnx"}
    kept = [o for o in model.opset_import if o.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    return model


def pin_inputs(
    model: onnx.ModelProto, shapes: Mapping[str, Sequence[int]]
) -> dict[str, list[int | None]]:
    """Set the graph inputs' dims to `shapes` in place; the inputs' shapes afterwards."""
    initializers = {i.name for i in model.graph.initializer}
    result: dict[str, list[int | None]] = {}
    for graph_input in model.graph.input:
        if graph_input.name in initializers:
            continue
        dims = graph_input.type.tensor_type.shape.dim
        given = shapes.get(graph_input.name)
        if given is not None and len(given) == len(dims):
            for dim, value in zip(dims, given, strict=True):
                if not dim.HasField("dim_value"):
                    dim.Clear()
                    dim.dim_value = int(value)
        result[graph_input.name] = _dims(graph_input)
    return result


def _dims(value: onnx.ValueInfoProto) -> list[int | None]:
    return [
        d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim
    ]
