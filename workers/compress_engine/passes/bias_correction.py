"""Bias correction for depthwise convolutions after static int8 (QDQ) quantization.

A depthwise convolution has few weights per output channel (9 for a 3x3 kernel), so their
rounding errors do not average out: each channel's output drifts by a systematic amount,
which int8 requantization and the layers after it carry on (the accuracy loss MobileNets and
EfficientNets are known for). The drift is measured, not derived: the float and the quantized
models run on calibration samples with each depthwise convolution's output as an extra output,
and the per-channel mean of (quantized - float) is subtracted from that convolution's bias.
In QDQ the bias is an int32 tensor behind a DequantizeLinear whose scale is
input scale x weight scale, so the shift is rounded to that grid and the convolution still
fuses into an integer kernel.

Convolutions are corrected in graph order, each measured with the ones before it already
corrected: a correction shifts the inputs of every later layer. Only per-channel sums are kept,
batch by batch, so memory stays at one batch of activations.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from compress_engine.onnx_files import model_bytes, save_model
from compress_engine.report import ChoiceTrial, QuantChoice

if TYPE_CHECKING:
    import onnx
    import onnxruntime

    from compress_engine.data import Dataset

Feed = Mapping[str, np.ndarray]

# "auto" keeps the correction only if it removes at least this share of the error left in
# the mean cosine to float32 (1 - cosine) on held-out calibration samples.
MIN_GAIN = 0.05
# Share of the calibration samples held out to judge the correction (never fitted on).
HELD_OUT = 1 / 3
# Per-channel means settle long before this many samples (each channel averages every
# position too); more only costs time: one partial run per depthwise conv. On
# EfficientNet-Lite0, 16 fitted as well as 64 (held-out cosine 0.9968 vs 0.9969).
MAX_FIT_SAMPLES = 64
MAX_HELD_OUT_SAMPLES = 64
_INT32 = np.iinfo(np.int32)


@dataclass(frozen=True)
class DepthwiseConv:
    """A quantized depthwise Conv of a QDQ graph (node names match the float graph's)."""

    name: str
    channels: int


@dataclass
class Correction:
    """What correct_biases changed: per convolution, the largest shift in output units."""

    shifts: dict[str, float]

    @property
    def largest(self) -> float:
        return max(self.shifts.values(), default=0.0)


def depthwise_convs(model: onnx.ModelProto) -> list[DepthwiseConv]:
    """The quantized depthwise convolutions, in graph order: group > 1 and one input channel
    per group (weight [C, 1, ...]), with the weight read through a DequantizeLinear (a Conv
    kept in float has nothing to correct)."""
    inits = {t.name: t for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    found = []
    for node in model.graph.node:
        if node.op_type != "Conv" or len(node.input) < 2:
            continue
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        dq = producer.get(node.input[1])
        if group <= 1 or dq is None or dq.op_type != "DequantizeLinear":
            continue
        weight = inits.get(dq.input[0])
        if weight is None or len(weight.dims) < 3 or weight.dims[1] != 1:
            continue
        found.append(DepthwiseConv(node.name, int(weight.dims[0])))
    return found


def correct_biases(
    float_path: Path,
    quant_path: Path,
    out_path: Path,
    feeds: Sequence[Feed],
    work_dir: Path,
) -> Correction:
    """Write `quant_path` with every depthwise conv's mean output error on `feeds` removed
    from its bias into `out_path`, one conv at a time, each measured (by a run of the graph
    up to it) after the ones before it are corrected.

    All at once from a single run is cheaper but wrong: a conv's measured error then includes
    the drift of the convs before it, which their own corrections also remove, so it is
    removed twice (on a MobileNet trained on digits, one run made the held-out mean cosine to
    float32 worse in 3 of 4 calibration settings; conv by conv removed 24-62% of its error)."""
    import onnx

    work_dir.mkdir(parents=True, exist_ok=True)
    quant, float_model = onnx.load(str(quant_path)), onnx.load(str(float_path))
    # Node names are the quantizer's link between the graphs (output names differ where it
    # folded an activation into the conv's output quantization).
    in_float = {n.name for n in float_model.graph.node if n.op_type == "Conv"}
    convs = [c for c in depthwise_convs(quant) if c.name in in_float]
    ref = _channel_means(_conv_outputs(float_model, convs), feeds, work_dir)
    shifts: dict[str, float] = {}
    for conv in convs:
        got = _channel_means(_conv_outputs(quant, [conv]), feeds, work_dir)
        shifts[conv.name] = _shift_bias(quant, conv, got[conv.name] - ref[conv.name])
    save_model(quant, out_path)
    return Correction(shifts)


def choose_bias_correction(
    setting: str,
    float_path: Path,
    quant_path: Path,
    calibration: Dataset,
    batch: int,
    work_dir: Path,
    *,
    fixed_batch: bool = False,
) -> QuantChoice | None:
    """Apply the recipe's bias_correction to the QDQ model at `quant_path` (rewritten in
    place when corrected) and say what was chosen; None when there is nothing to decide
    ("off", or no quantized depthwise convolution).

    The correction is fitted on the first two thirds of the calibration samples. "on" keeps
    it; "auto" judges it on the other third by the mean per-sample cosine to the float model
    (`float_path`, the graph that was quantized) and keeps it only if it removes at least
    MIN_GAIN of the error; both builds are recorded as trials.
    """
    import onnx

    if setting == "off":
        return None
    convs = depthwise_convs(onnx.load(str(quant_path), load_external_data=False))
    if not convs:
        return None
    what = f"{len(convs)} depthwise convolution{'s' if len(convs) != 1 else ''}"
    work = work_dir / "bias_correction"
    corrected = work / "corrected.onnx"
    fit, held = _split(calibration, batch, fixed_batch)
    if not fit or (setting == "auto" and not held):
        return QuantChoice(
            option="bias_correction",
            chosen="off",
            reason=(
                f"Not tried on the {what}: too few calibration samples to fit it on some and "
                "judge it on others."
            ),
        )
    if setting == "on":  # fitted on the same samples as under auto: a search's builds agree
        fitted = correct_biases(float_path, quant_path, corrected, fit, work)
        _replace(quant_path, corrected, work)
        return QuantChoice(
            option="bias_correction",
            chosen="on",
            reason=(
                f"On in the recipe: the {what} corrected, fitted on {_samples(fit)} calibration "
                f"samples (largest shift {fitted.largest:.3g})."
            ),
        )
    fitted = correct_biases(float_path, quant_path, corrected, fit, work)
    without, with_ = _mean_cosines(float_path, [quant_path, corrected], held)
    trials = [
        ChoiceTrial(label="without", fidelity=without, size_bytes=model_bytes(quant_path)),
        ChoiceTrial(label="with", fidelity=with_, size_bytes=model_bytes(corrected)),
    ]
    gain = _gain(without, with_)
    measured = (
        f"mean cosine to float32 on {_samples(held)} held-out calibration samples "
        f"{without:.5f} without, {with_:.5f} with (fitted on {_samples(fit)} others; largest "
        f"shift {fitted.largest:.3g})"
    )
    keep = gain >= MIN_GAIN
    if keep:
        _replace(quant_path, corrected, work)
        reason = f"It removed {gain:.0%} of the error on the {what}: {measured}."
    else:
        shutil.rmtree(work, ignore_errors=True)
        reason = (
            f"It removed {max(gain, 0.0):.0%} of the error on the {what}, less than the "
            f"{MIN_GAIN:.0%} required: {measured}."
        )
    return QuantChoice(
        option="bias_correction", chosen="on" if keep else "off", reason=reason, trials=trials
    )


def _replace(quant_path: Path, corrected: Path, work: Path) -> None:
    import onnx

    save_model(onnx.load(str(corrected)), quant_path)
    shutil.rmtree(work, ignore_errors=True)


def _gain(without: float, with_: float) -> float:
    """The share of (1 - cosine) the correction removed (negative: it made it worse)."""
    error = 1.0 - without
    if error <= 0.0:
        return 0.0
    return (with_ - without) / error


def _split(calibration: Dataset, batch: int, fixed_batch: bool) -> tuple[list[Feed], list[Feed]]:
    """(fit feeds, held-out feeds) from the calibration samples, each capped; a model with a
    fixed batch gets whole batches only."""
    n = calibration.samples
    held = min(int(n * HELD_OUT), MAX_HELD_OUT_SAMPLES)
    if fixed_batch:
        held -= held % batch
    fit = _feeds(calibration, 0, min(n - held, MAX_FIT_SAMPLES), batch, fixed_batch)
    return fit, _feeds(calibration, n - held, n, batch, fixed_batch)


def _feeds(data: Dataset, start: int, stop: int, batch: int, fixed_batch: bool) -> list[Feed]:
    if stop <= start:
        return []
    part = data.take(slice(start, stop))
    return [f for f, _ in part.batches(batch, drop_last=fixed_batch)]


def _samples(feeds: Sequence[Feed]) -> int:
    return sum(int(next(iter(f.values())).shape[0]) for f in feeds)


def _conv_outputs(model: onnx.ModelProto, convs: Sequence[DepthwiseConv]) -> onnx.ModelProto:
    """A copy of `model` whose outputs are the outputs of `convs`, without the nodes those
    do not need (so measuring an early conv does not run the whole network)."""
    import onnx

    nodes = {n.name: n for n in model.graph.node}
    wanted = [nodes[c.name].output[0] for c in convs]
    # By position, not name: nodes outside the quantized ones may be unnamed.
    producer = {o: i for i, n in enumerate(model.graph.node) for o in n.output}
    needed: set[int] = set()
    stack = list(wanted)
    while stack:
        index = producer.get(stack.pop())
        if index is None or index in needed:
            continue
        needed.add(index)
        stack.extend(i for i in model.graph.node[index].input if i)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    graph = copy.graph
    keep = [n for i, n in enumerate(graph.node) if i in needed]
    del graph.node[:]
    graph.node.extend(keep)
    used = {i for n in keep for i in n.input}
    live = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(live)
    del graph.output[:]
    graph.output.extend(
        onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None) for name in wanted
    )
    return copy


def _channel_means(
    model: onnx.ModelProto, feeds: Iterable[Feed], work_dir: Path
) -> dict[str, np.ndarray]:
    """Per output of `model` (named after the conv node), the mean over samples and positions
    of each channel (axis 1), accumulated batch by batch in float64."""
    from compress_engine.measure.runtime import adapt_feed

    names = [o.name for o in model.graph.output]
    session = _session(model, work_dir / "measure.onnx")
    inputs = {i.name for i in session.get_inputs()}
    sums: list[np.ndarray | None] = [None] * len(names)
    count = [0] * len(names)
    for feed in feeds:
        outs = session.run(
            names, adapt_feed(session, {k: v for k, v in feed.items() if k in inputs})
        )
        for i, out in enumerate(outs):
            axes = tuple(a for a in range(out.ndim) if a != 1)
            part = np.asarray(out, dtype=np.float64).sum(axis=axes)
            sums[i] = part if sums[i] is None else sums[i] + part
            count[i] += out.size // out.shape[1]
    by_output = {
        n: s / max(c, 1) for n, s, c in zip(names, sums, count, strict=True) if s is not None
    }
    producer = {n.output[0]: n.name for n in model.graph.node if n.output}
    return {producer[name]: mean for name, mean in by_output.items()}


def _session(model: onnx.ModelProto, path: Path) -> onnxruntime.InferenceSession:
    """A CPU session of `model`, saved to `path` first (a large model cannot be passed as
    bytes), optimised as deployed: the layers before the measured conv run as the integer
    kernels ONNX Runtime fuses, the conv itself (its output read) as dequantize + float conv.
    On EfficientNet-Lite0 this fits the same corrections as running every QDQ pair as
    written, in less than half the time."""
    from compress_engine.device import CPU_PROVIDER, physical_cores
    from compress_engine.measure.runtime import create_session

    save_model(model, path)
    return create_session(path, providers=[CPU_PROVIDER], threads=physical_cores())


def _shift_bias(model: onnx.ModelProto, conv: DepthwiseConv, error: np.ndarray) -> float:
    """Subtract `error` (per output channel) from the conv's bias, in place; returns the
    largest shift applied, after rounding to the bias's int32 grid."""
    from onnx import numpy_helper

    node = next(n for n in model.graph.node if n.name == conv.name)
    inits = {t.name: t for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    bias_name = node.input[2] if len(node.input) > 2 else ""
    dq = producer.get(bias_name)
    if dq is not None and dq.op_type == "DequantizeLinear" and dq.input[0] in inits:
        q, scale = inits[dq.input[0]], numpy_helper.to_array(inits[dq.input[1]])
        old = numpy_helper.to_array(q).astype(np.int64)
        new = np.clip(old + np.rint(-error / scale), _INT32.min, _INT32.max).astype(np.int32)
        q.CopyFrom(numpy_helper.from_array(new, q.name))
        return float(np.max(np.abs((new - old) * scale), initial=0.0))
    if bias_name in inits:  # a float bias (the quantizer left it so): shift it directly
        old_f = numpy_helper.to_array(inits[bias_name])
        inits[bias_name].CopyFrom(
            numpy_helper.from_array((old_f - error).astype(old_f.dtype), bias_name)
        )
        return float(np.max(np.abs(error), initial=0.0))
    return _add_bias(model, node, conv, error, inits, producer)


def _add_bias(
    model: onnx.ModelProto,
    node: onnx.NodeProto,
    conv: DepthwiseConv,
    error: np.ndarray,
    inits: dict[str, onnx.TensorProto],
    producer: dict[str, onnx.NodeProto],
) -> float:
    """Give a conv without bias an int32 one behind a DequantizeLinear (scale = input scale x
    weight scale, as the quantizer writes biases), so it still fuses into an integer kernel."""
    from onnx import helper, numpy_helper

    x_dq, w_dq = producer.get(node.input[0]), producer[node.input[1]]
    if x_dq is None or x_dq.op_type != "DequantizeLinear":  # float input: a float bias then
        scale = None
    else:
        x_scale = numpy_helper.to_array(inits[x_dq.input[1]]).astype(np.float64)
        w_scale = numpy_helper.to_array(inits[w_dq.input[1]]).astype(np.float64)
        scale = np.broadcast_to(x_scale * w_scale, (conv.channels,)).astype(np.float32)
    base = f"{node.name}_bias_correction"
    if scale is None:
        values = (-error).astype(np.float32)
        model.graph.initializer.append(numpy_helper.from_array(values, base))
        shift = values
    else:
        q = np.clip(np.rint(-error / scale), _INT32.min, _INT32.max).astype(np.int32)
        model.graph.initializer.extend(
            [
                numpy_helper.from_array(q, f"{base}_quantized"),
                numpy_helper.from_array(scale, f"{base}_scale"),
                numpy_helper.from_array(np.zeros_like(q), f"{base}_zero_point"),
            ]
        )
        dq = helper.make_node(
            "DequantizeLinear",
            [f"{base}_quantized", f"{base}_scale", f"{base}_zero_point"],
            [base],
            name=f"{base}_DequantizeLinear",
            axis=0,
        )
        # Before the conv, so the graph stays in topological order.
        position = list(model.graph.node).index(node)
        model.graph.node.insert(position, dq)
        shift = q * scale
    while len(node.input) < 3:
        node.input.append("")
    node.input[2] = base
    return float(np.max(np.abs(shift), initial=0.0))


def _mean_cosines(
    reference: Path, candidates: Sequence[Path], feeds: Sequence[Feed]
) -> list[float]:
    """Per candidate, the mean over samples (and float outputs) of the cosine between its
    outputs and the reference's, run as they would be deployed (full optimisation)."""
    from compress_engine.device import CPU_PROVIDER, physical_cores
    from compress_engine.measure.runtime import adapt_feed, create_session

    def open_(path: Path) -> onnxruntime.InferenceSession:
        return create_session(path, providers=[CPU_PROVIDER], threads=physical_cores())

    ref = open_(reference)
    names = [o.name for o in ref.get_outputs() if o.type in ("tensor(float)", "tensor(float16)")]
    sessions = [open_(p) for p in candidates]
    scores: list[list[float]] = [[] for _ in candidates]
    for feed in feeds:
        want = ref.run(names, adapt_feed(ref, feed))
        for session, acc in zip(sessions, scores, strict=True):
            got = session.run(names, adapt_feed(session, feed))
            for a, b in zip(want, got, strict=True):
                acc.extend(_per_sample_cosine(np.asarray(a), np.asarray(b)))
    return [float(np.mean(s)) if s else math.nan for s in scores]


def _per_sample_cosine(a: np.ndarray, b: np.ndarray) -> list[float]:
    a = a.reshape(a.shape[0], -1).astype(np.float64) if a.ndim else a.reshape(1, 1)
    b = b.reshape(a.shape).astype(np.float64)
    dot = (a * b).sum(axis=1)
    na, nb = (a * a).sum(axis=1), (b * b).sum(axis=1)
    norms = np.sqrt(na * nb)
    # As measure/fidelity.py: both all-zero is identical, one all-zero is unrelated.
    cos = np.where(norms > 0, dot / np.where(norms > 0, norms, 1.0), (na == nb) * 1.0)
    return [float(c) for c in np.clip(cos, -1.0, 1.0)]
