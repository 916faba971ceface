"""ONNX -> trainable torch module (onnx2torch) -> ONNX, with the checks that make it safe.

The rebuilt module is compared with ONNX Runtime on seeded random inputs before any pass may
touch it, and the export keeps the original's opset, input/output names and dynamic dims. A
fixed batch dim is freed for training (batch_dim.py) and kept fixed in the export.

Every example input (the round trip, pruning's dependency graph, the export) is drawn at the
run's shapes: the recipe's evaluate.input_shapes, else the dataset's samples (`shapes`), never
a default size that a model with small feature maps pools down to nothing.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from compress_engine.errors import EngineError, short_message
from compress_engine.inspect import ModelInfo, inspect_onnx
from compress_engine.measure.inputs import random_feed, resolve_shapes
from compress_engine.onnx_files import PROTOBUF_LIMIT, save_model
from compress_engine.report import TorchRoundTrip
from compress_engine.torch_side.batch_dim import fixed_batch_of, free_batch
from compress_engine.torch_side.layer_errors import layer_errors
from compress_engine.torch_side.value_shapes import complete_value_shapes

if TYPE_CHECKING:
    import torch

# Outputs may differ by float rounding only: relative to the largest output value.
RELATIVE_TOLERANCE = 1e-4
CHECK_BATCH = 2
# The torch exporter writes at least this opset (older models are exported at it).
MIN_EXPORT_OPSET = 11


@dataclass
class TorchModel:
    """A torch module rebuilt from an ONNX file, and what is needed to export it back."""

    module: torch.nn.Module
    info: ModelInfo
    # torch module name -> ONNX node name it was built from (names in reports and `ignore`).
    node_names: dict[str, str]
    # A fixed batch dim was freed in the rebuilt module (proven by check_round_trip) ...
    batch_free: bool = False
    # ... or why it could not be: training then runs at the fixed batch.
    batch_problem: str | None = None
    # Per input, the concrete shape examples are drawn at (the run's shapes; its batch is
    # replaced), and values of inputs fixed by evaluate.constants. Empty: the defaults.
    shapes: dict[str, list[int]] = field(default_factory=dict)
    constants: dict[str, Any] = field(default_factory=dict)

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.info.inputs]

    @property
    def fixed_batch(self) -> int | None:
        """The exported model's fixed batch size, or None when the batch dim is dynamic."""
        return fixed_batch_of(self.info)

    @property
    def train_batch(self) -> int | None:
        """The batch the module must be trained at: None (any, the recipe's batch_size)
        unless the model's fixed batch could not be freed."""
        return None if self.batch_free else self.fixed_batch

    def shapes_at(self, batch: int) -> dict[str, list[int]]:
        """Concrete input shapes with `batch` samples (the fixed batch, if the model has one)."""
        return example_shapes(self.info, self.shapes, self.fixed_batch or batch, self.constants)

    def example_feed(self, batch: int = CHECK_BATCH, seed: int = 0) -> dict[str, np.ndarray]:
        shapes = self.shapes_at(batch)
        rng = np.random.default_rng([seed, 7])
        return random_feed(self.info.inputs, shapes, rng, self.constants)


def example_shapes(
    info: ModelInfo,
    given: Mapping[str, Sequence[int]],
    batch: int,
    constants: Mapping[str, Any] | None = None,
) -> dict[str, list[int]]:
    """Concrete shapes per input: `given` (e.g. the run's measured shapes) with `batch` on
    each free batch axis; inputs not given get resolve_shapes' defaults."""
    from compress_engine.data_layout import batch_axes, declared_batch_axis

    axes = batch_axes(info.inputs)
    overrides: dict[str, list[int]] = {}
    for t in info.inputs:
        shape = given.get(t.name)
        if shape is None or (constants and t.name in constants):
            continue
        shape = [int(d) for d in shape]
        axis = declared_batch_axis(t, axes)
        if axis is not None and axis < len(shape):
            shape[axis] = batch
        overrides[t.name] = shape
    return resolve_shapes(info.inputs, batch, overrides, constants)


def module_name(node_name: str, op_type: str, domain: str = "") -> str:
    """The name onnx2torch gives the module built from an ONNX node."""
    return (f"{domain}/" + (node_name.replace(".", "/") or op_type)).lstrip("/")


# onnx2torch serialises the model (shape inference), which protobuf refuses past 2 GB.
TORCH_SIDE_LIMIT = PROTOBUF_LIMIT


def load_torch(
    path: Path,
    shapes: Mapping[str, Sequence[int]] | None = None,
    constants: Mapping[str, Any] | None = None,
) -> TorchModel:
    """Rebuild `path` as a torch module; EngineError naming the op if that is impossible.

    `shapes`: per input, the shape examples are drawn at (see TorchModel.shapes)."""
    import onnx
    from onnx2torch import convert

    info = inspect_onnx(path)
    if (size := info.size_bytes) > TORCH_SIDE_LIMIT:
        raise EngineError(
            f"This model's weights take {size / 1e9:.2f} GB. Pruning, distillation and "
            "fine-tuning rebuild it as a torch module with onnx2torch, which serialises the "
            "whole model through protobuf and so cannot take models over 2 GB. Quantize it "
            "instead (dynamic-int8, static-int8, int4-weights or fp16 run on ONNX directly)."
        )
    proto = onnx.load(str(path))
    _constants_to_initializers(proto)
    batch = fixed_batch_of(info)
    problem = None if batch is None else free_batch(proto, info, batch)
    # Values whose shape ONNX's inference loses would be rebuilt for the wrong rank.
    complete_value_shapes(proto)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = convert(proto)
    except NotImplementedError as exc:
        raise EngineError(_unsupported(exc)) from None
    except Exception as exc:
        raise EngineError(
            "This model cannot be rebuilt as a trainable torch module for pruning or "
            f"distillation: {short_message(exc)}"
        ) from None
    names = {module_name(n.name, n.op_type, n.domain): n.name for n in proto.graph.node if n.name}
    return TorchModel(
        module=module,
        info=info,
        node_names=names,
        batch_free=batch is not None and problem is None,
        batch_problem=problem,
        shapes={k: list(v) for k, v in (shapes or {}).items()},
        constants=dict(constants or {}),
    )


def _constants_to_initializers(proto: Any) -> None:
    # Exporters often emit weights (e.g. a folded BatchNorm's bias) as Constant nodes;
    # onnx2torch reads layer weights from initializers only. Same values, other container.
    from onnx import numpy_helper

    # So are weights shared through an Identity of an initializer (the torch exporter does
    # this for tied or reused parameters).
    inits = {t.name: t for t in proto.graph.initializer}
    outputs = {o.name for o in proto.graph.output}
    kept = []
    for node in proto.graph.node:
        value = next((a for a in node.attribute if a.name == "value"), None)
        standard = node.domain in ("", "ai.onnx") and node.output[0] not in outputs
        if standard and node.op_type == "Constant" and value is not None and value.t.dims:
            tensor = numpy_helper.from_array(numpy_helper.to_array(value.t), node.output[0])
        elif standard and node.op_type == "Identity" and node.input[0] in inits:
            tensor = numpy_helper.from_array(
                numpy_helper.to_array(inits[node.input[0]]), node.output[0]
            )
        else:
            kept.append(node)
            continue
        proto.graph.initializer.append(tensor)
        inits[tensor.name] = tensor
    del proto.graph.node[:]
    proto.graph.node.extend(kept)


def _unsupported(exc: Exception) -> str:
    text = str(exc)
    op = re.search(r"operation_type='([^']+)'", text)
    version = re.search(r"version=(\d+)", text)
    if op:
        at = f" (opset {version.group(1)})" if version else ""
        return (
            f"Pruning and distillation need the model as a trainable torch module, and the "
            f"converter (onnx2torch) does not support the ONNX op {op.group(1)}{at} used in "
            "this model. Quantization steps alone still work on it."
        )
    return f"The model cannot be rebuilt as a torch module: {short_message(exc)}"


def torch_inputs(feed: dict[str, np.ndarray], names: list[str], device: Any) -> tuple:
    import torch

    # reshape: ascontiguousarray turns a scalar (a 0-d sample rate) into shape [1].
    return tuple(
        torch.from_numpy(np.ascontiguousarray(feed[n]).reshape(np.shape(feed[n]))).to(device)
        for n in names
    )


def as_outputs(result: Any) -> list[torch.Tensor]:
    """A module's result as a list of tensors (onnx2torch returns a tensor or a tuple)."""
    if isinstance(result, list | tuple):
        return list(result)
    return [result]


def check_round_trip(model: TorchModel, onnx_path: Path, seed: int = 0) -> TorchRoundTrip:
    """Compare the torch module with ONNX Runtime on random inputs; EngineError if they differ.

    A freed fixed batch is checked too, at twice that batch; if the module fails there,
    `model.batch_free` is withdrawn (training then runs at the fixed batch) with the reason.
    """
    from compress_engine.device import CPU_PROVIDER, physical_cores
    from compress_engine.measure.runtime import create_session

    feed = model.example_feed(seed=seed)
    session = create_session(onnx_path, providers=[CPU_PROVIDER], threads=physical_cores())
    try:
        reference = session.run(None, feed)
    except Exception as exc:
        raise EngineError(
            f"ONNX Runtime cannot run this model on inputs of shapes {_shown(feed)} "
            f"({short_message(exc)}), so pruning and distillation cannot check their torch "
            "copy of it: set evaluate.input_shapes (the CLI's --input-shape) to the shape the "
            "model takes, or give a dataset of such samples."
        ) from None
    compared = _compare(reference, _run_module(model, feed, "check"))
    if isinstance(compared, str):
        raise EngineError(
            f"The torch module rebuilt from this model {compared}; pruning and distillation "
            "cannot run on it."
        )
    diff, tolerance = compared
    check = TorchRoundTrip(
        max_abs_diff=diff,
        tolerance=tolerance,
        samples=CHECK_BATCH if model.fixed_batch is None else model.fixed_batch,
        opset=max(model.info.opset, MIN_EXPORT_OPSET),
    )
    if not diff <= tolerance:
        raise EngineError(
            "The torch module rebuilt from this model does not compute the same outputs as "
            f"ONNX Runtime (max abs difference {diff:.3g}, tolerance {tolerance:.3g}), so "
            "pruning and distillation would start from a different model; they cannot run on it."
        )
    if model.batch_free:
        model.batch_problem = _check_free_batch(model, session, seed)
        model.batch_free = model.batch_problem is None
    return check


def _check_free_batch(model: TorchModel, session: Any, seed: int) -> str | None:
    """Why the module freed of its fixed batch is wrong at twice that batch, else None.

    ONNX Runtime runs the original at its fixed batch, one group of samples at a time."""
    batch = model.fixed_batch or 1
    feeds = [model.example_feed(seed=seed + 1 + i) for i in range(2)]
    joined = {n: np.concatenate([f[n] for f in feeds]) for n in model.input_names}
    runs = [session.run(None, f) for f in feeds]
    reference = [np.concatenate(outs) for outs in zip(*runs, strict=True)]
    try:
        got = _run_module(model, joined, "free-batch")
    except Exception as exc:
        return f"it fails at batch {2 * batch}: {short_message(exc)}"
    compared = _compare(reference, got)
    if isinstance(compared, str):
        return f"at batch {2 * batch} it {compared}"
    diff, tolerance = compared
    if not diff <= tolerance:
        return (
            f"at batch {2 * batch} its outputs differ from ONNX Runtime's (max abs difference "
            f"{diff:.3g}, tolerance {tolerance:.3g})"
        )
    return None


def check_runs_on(model: TorchModel, arrays: Sequence[np.ndarray]) -> None:
    """The module must run on the first samples of `arrays` (the training data, in input
    order): a layer that cannot take the dataset's shapes names itself before training."""
    n = model.fixed_batch if model.fixed_batch and not model.batch_free else 2
    feed = {name: a[:n] for name, a in zip(model.input_names, arrays, strict=True)}
    _run_module(model, feed, "data")


def _run_module(model: TorchModel, feed: dict[str, np.ndarray], why: str) -> list[np.ndarray]:
    """The module's outputs on `feed`; a failure inside a layer is an EngineError naming it
    (`why`: "check" is the round trip, anything else a further trial)."""
    import torch

    what = (
        "The torch module rebuilt from this model (onnx2torch), run on inputs of shapes "
        f"{_shown(feed)},"
    )
    todos = {
        "check": "Pruning and distillation cannot run on it; quantization steps still do. If "
        "these shapes are not the model's, set evaluate.input_shapes (the CLI's --input-shape).",
        "data": "Its training samples (the dataset's arrays) must have the shapes the model "
        "takes; check the dataset against the model's inputs.",
    }
    todo = todos.get(why, "")
    model.module.eval()
    with torch.no_grad(), layer_errors(model.module, model.node_names, what, todo):
        got = as_outputs(model.module(*torch_inputs(feed, model.input_names, "cpu")))
    return [out.detach().cpu().numpy() for out in got]


def _shown(feed: Mapping[str, np.ndarray]) -> str:
    return ", ".join(
        f"{name} {'x'.join(map(str, a.shape)) or 'scalar'}" for name, a in feed.items()
    )


def _compare(reference: list[np.ndarray], got: list[np.ndarray]) -> tuple[float, float] | str:
    """(max abs difference, tolerance), or what makes the outputs incomparable."""
    if len(got) != len(reference):
        return f"returns {len(got)} outputs, ONNX Runtime {len(reference)}"
    diff, scale = 0.0, 1.0
    for ref, out in zip(reference, got, strict=True):
        if ref.shape != out.shape:
            return f"returns shape {list(out.shape)} where ONNX Runtime returns {list(ref.shape)}"
        if np.issubdtype(ref.dtype, np.floating):
            diff = max(diff, float(np.max(np.abs(out.astype(np.float64) - ref))))
            scale = max(scale, float(np.max(np.abs(ref))))
        elif not np.array_equal(ref, out):
            diff = float("inf")
    return diff, RELATIVE_TOLERANCE * scale


def export_onnx(model: TorchModel, out_path: Path) -> None:
    """Export the (changed) module with the original's opset, names and dynamic dims."""
    import onnx
    import torch

    module = model.module.cpu().eval()
    names = model.input_names
    feed = model.example_feed()
    outputs = [t.name for t in model.info.outputs]
    dynamic_axes = {
        t.name: {i: d for i, d in enumerate(t.shape) if isinstance(d, str)}
        for t in [*model.info.inputs, *model.info.outputs]
        if any(isinstance(d, str) for d in t.shape)
    }
    dynamic_axes.update(_unnamed_batch(model.info))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # The TorchScript exporter: onnx2torch's modules define their ONNX form for it.
            torch.onnx.export(
                module,
                torch_inputs(feed, names, "cpu"),
                str(out_path),
                input_names=names,
                output_names=outputs,
                dynamic_axes=dynamic_axes or None,
                opset_version=max(model.info.opset, MIN_EXPORT_OPSET),
                do_constant_folding=True,
                dynamo=False,
            )
    except Exception as exc:
        raise EngineError(
            f"The pruned or trained model could not be exported back to ONNX: {short_message(exc)}"
        ) from None
    proto = onnx.load(str(out_path))
    _restore_node_names(proto, model.node_names)
    save_model(proto, out_path)


def _unnamed_batch(info: ModelInfo) -> dict[str, dict[int, str]]:
    # A dynamic dim the original left unnamed (None) stays dynamic under a made-up name.
    out: dict[str, dict[int, str]] = {}
    for t in [*info.inputs, *info.outputs]:
        dims = {i: f"{t.name}_dim{i}" for i, d in enumerate(t.shape) if d is None}
        if dims:
            out[t.name] = dims
    return out


def _restore_node_names(proto: Any, node_names: dict[str, str]) -> None:
    # The exporter names a node after its module and op (/0/Conv -> /0/Conv/Conv); giving back
    # the original names keeps `ignore`/`exclude` lists and reports stable across steps.
    taken = {n.name for n in proto.graph.node}
    for node in proto.graph.node:
        mod = node.name.lstrip("/").rsplit("/", 1)[0] if node.name.count("/") >= 2 else None
        original = node_names.get(mod) if mod else None
        if original and node.name == f"/{mod}/{node.op_type}" and original not in taken:
            taken.discard(node.name)
            node.name = original
            taken.add(original)
