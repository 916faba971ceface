"""Static int8 quantization with ONNX Runtime (`quantize_static`, QDQ format).

Weights and activations become 8-bit integers. Activation ranges are measured beforehand by
running the model on calibration samples, so no quantization happens at run time: on CPUs this
is usually the fastest int8, convolutions included (ONNX Runtime fuses each
DequantizeLinear -> op -> QuantizeLinear group into an integer kernel such as QLinearConv).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import io
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compress_engine.configs import StaticInt8Config
from compress_engine.cpu_int8 import resolve_format
from compress_engine.errors import EngineError, short_message
from compress_engine.onnx_files import save_model
from compress_engine.passes.base import PassContext, PassInfo, PassResult
from compress_engine.passes.bias_correction import choose_bias_correction
from compress_engine.passes.mixed_ranges import choose_split
from compress_engine.passes.quantize import _check_exclude, _name_unnamed_nodes, _preprocess
from compress_engine.passes.registry import register
from compress_engine.passes.smoothing import read_float_inputs, smooth
from compress_engine.passes.tunable import TunableQuantize
from compress_engine.report import QuantizationDetails

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)

# Per-channel Q/DQ needs the `axis` attribute of (De)QuantizeLinear, added in opset 13.
MIN_OPSET = 13
_QDQ = ("QuantizeLinear", "DequantizeLinear")
# Histogram bins for entropy calibration (ONNX Runtime quantizes into 128 of them).
_ENTROPY_BINS = 512


@register
class StaticInt8Quantize(TunableQuantize[StaticInt8Config]):
    info = PassInfo(
        name="quantize-static-int8",
        title="Static int8 quantization",
        stage="Quantizing (static int8, calibrating)",
        description=(
            "Stores weights and activations as 8-bit integers (QDQ format), with activation "
            "ranges calibrated on samples of your data, with ONNX Runtime. About 4x smaller; "
            "usually the fastest int8 on CPUs, convolutions included. Needs a dataset."
        ),
        step="quantize",
        mode="static-int8",
        needs_data=True,
        needs_labels=False,
        compute="light",
    )
    config_type = StaticInt8Config

    def quantize(self, model_path: Path, out_path: Path, ctx: PassContext) -> PassResult:
        import onnx
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )

        cfg: StaticInt8Config = self.config
        if ctx.data is None or ctx.data.samples == 0:
            raise EngineError(
                "Static int8 quantization needs calibration data: give a dataset (.npz with "
                "arrays named after the model inputs, or `x`) with a non-empty calibration "
                "split (evaluate.calibration_fraction > 0)."
            )
        notes: list[str] = []
        fmt = resolve_format(cfg)
        choices = [fmt.choice]
        if ctx.prepared:
            src, upgraded_from, preprocessed = model_path, None, True
        else:
            src, upgraded_from, preprocessed = self.prepare(model_path, ctx.work_dir, notes)
            src, smoothing = smooth(self, src, ctx)
            choices += smoothing
        ctx.progress(0.2)

        model = onnx.load(str(src))
        _name_unnamed_nodes(model)
        excluded_by_type = [n.name for n in model.graph.node if n.op_type in cfg.exclude_op_types]
        prepared = ctx.work_dir / "prepared.onnx"
        external = save_model(model, prepared)

        calibration = ctx.data.take(slice(0, cfg.samples))
        fixed_batch = _fixed_batch(model)
        batch = fixed_batch or ctx.batch_size
        feeds = [feed for feed, _ in calibration.batches(batch, drop_last=fixed_batch is not None)]
        if not feeds:
            raise EngineError(
                f"The model takes exactly {batch} samples per run, but the calibration split "
                f"has only {calibration.samples}; use a larger dataset."
            )

        class _Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self._feeds = iter(feeds)

            def get_next(self) -> dict | None:
                return next(self._feeds, None)

        signed = fmt.activations == "int8"
        activation = QuantType.QInt8 if signed else QuantType.QUInt8
        # A search's builds share one decision, cached beside the shared calibration ranges.
        ranges = ctx.calibration_cache
        split, split_choice = choose_split(
            cfg.split_mixed_ranges,
            prepared,
            feeds,
            ctx.work_dir,
            excluded=[*cfg.exclude, *excluded_by_type],
            symmetric=signed,
            cache=None if ranges is None else ranges.with_name("mixed-ranges.json"),
        )
        if split_choice is not None:
            choices.append(split_choice)

        def run(method: str, cache: dict[str, Any]) -> None:
            # The calibrators print progress to stdout, which would garble CLI output.
            with contextlib.redirect_stdout(io.StringIO()), _calibrator_fixes(method):
                quantize_static(
                    prepared,
                    out_path,
                    _Reader(),
                    quant_format=QuantFormat.QDQ,
                    per_channel=cfg.per_channel,
                    reduce_range=fmt.reduce_range,
                    activation_type=activation,
                    weight_type=QuantType.QInt8,
                    calibrate_method=getattr(CalibrationMethod, _METHODS[method]),
                    nodes_to_exclude=[*cfg.exclude, *excluded_by_type, *split],
                    extra_options={
                        "ActivationSymmetric": signed,
                        "WeightSymmetric": cfg.symmetric_weights,
                        "CalibPercentile": cfg.percentile,
                    },
                    use_external_data_format=external,
                    **cache,
                )

        cache: dict[str, Any] = {}
        if ctx.calibration_cache is not None and calibration_cache_supported():
            cache["calibration_cache_path"] = str(ctx.calibration_cache)
        method = _quantize_with_fallback(run, cfg.calibration, cache, notes)
        read_float_inputs(out_path)
        ctx.progress(0.8)
        bias_choice = choose_bias_correction(
            cfg.bias_correction,
            prepared,
            out_path,
            calibration,
            batch,
            ctx.work_dir,
            fixed_batch=fixed_batch is not None,
        )
        ctx.progress(0.9)

        by_type = _count_qdq_wrapped(onnx.load(str(out_path), load_external_data=False))
        quantized = sum(by_type.values())
        if quantized == 0:
            notes.append(
                "No layer was quantized (everything was excluded or nothing is quantizable), "
                "so the result only differs from the original by pre-processing."
            )
        if signed:
            notes.append(
                "Activations are symmetric int8: right for many NPUs and GPUs; on CPUs "
                "asymmetric uint8 activations are usually at least as accurate."
            )
        details = QuantizationDetails(
            mode=cfg.mode,
            weight_type="int8",
            activation_type=fmt.activations,
            per_channel=cfg.per_channel,
            reduce_range=fmt.reduce_range,
            quantized_nodes=quantized,
            op_types=by_type,
            excluded=list(dict.fromkeys([*cfg.exclude, *split])),
            excluded_op_types=list(cfg.exclude_op_types),
            preprocessed=preprocessed,
            calibration=method,
            calibration_samples=sum(_rows(f) for f in feeds),
            symmetric=cfg.symmetric_weights,
            opset_upgraded_from=upgraded_from,
            choices=choices,
        )
        if bias_choice is not None:
            details.choices.append(bias_choice)
        return PassResult(
            model_path=out_path,
            suffix="int8",
            precision="int8-static",
            details=details,
            notes=notes,
        )

    def prepare(
        self, model_path: Path, work_dir: Path, notes: list[str]
    ) -> tuple[Path, int | None, bool]:
        """The graph quantize_static reads: opset >= MIN_OPSET, shape inference and, unless
        nodes are excluded by name, optimisation. Returns (path, the opset it was upgraded
        from or None, whether pre-processing ran). A search prepares once and quantizes every
        trial from the same graph (PassContext.prepared), so all share nodes and ranges."""
        import onnx

        model = onnx.load(str(model_path))
        _check_exclude(model, self.config.exclude)
        src, upgraded_from = _upgrade_opset(model, model_path, work_dir, notes)
        # Optimisation fuses (Conv+BatchNorm, ...) and renames nodes; with named exclusions the
        # names must survive, so it is skipped then.
        keep = bool(self.config.exclude)
        src, preprocessed = _preprocess(src, work_dir, notes, keep_names=keep)
        return src, upgraded_from, preprocessed


_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
# numpy's words when a histogram's bins cannot span an activation's range.
_HISTOGRAM_ERRORS = ("Too many bins for data range", "finite-sized bins", "is not finite")


def _quantize_with_fallback(
    run: Callable[[str, dict[str, Any]], None], method: str, cache: dict[str, Any], notes: list[str]
) -> str:
    """run(method, cache) once; when a histogram method cannot bin an activation's range (a
    large value that barely varies has bins narrower than float32 can tell apart; a range
    past float32 has none), again with minmax, which needs no histogram. Returns the method
    the ranges came from."""
    try:
        try:
            run(method, cache)
            return method
        except Exception as exc:
            if method == "minmax" or not _histogram_failed(exc):
                raise
            notes.append(
                f"{method.capitalize()} calibration failed on this model's activation ranges "
                f"({short_message(exc)}), so they were calibrated with minmax instead."
            )
        run("minmax", {})  # a calibration cache would hold the failed method's state
        return "minmax"
    except Exception as exc:  # the quantizer raises bare Exceptions/asserts
        raise EngineError(
            f"Static int8 quantization failed in ONNX Runtime: {short_message(exc)}"
        ) from exc


def _histogram_failed(exc: BaseException) -> bool:
    return isinstance(exc, ValueError) and any(e in str(exc) for e in _HISTOGRAM_ERRORS)


@functools.cache
def calibration_cache_supported() -> bool:
    """Whether this ONNX Runtime's quantize_static can save and reuse calibrated ranges."""
    from onnxruntime.quantization import quantize_static

    return "calibration_cache_path" in inspect.signature(quantize_static).parameters


class _OneFeed:
    """A calibration reader that yields a single feed."""

    def __init__(self, feed: dict[str, Any]) -> None:
        self._feed: dict[str, Any] | None = feed

    def get_next(self) -> dict[str, Any] | None:
        feed, self._feed = self._feed, None
        return feed


@contextlib.contextmanager
def _calibrator_fixes(calibration: str) -> Iterator[None]:
    """Work around two limits of the calibrators quantize_static builds.

    Memory: they keep every activation of every calibration batch until the end (256 samples
    of a mid-size CNN are gigabytes). Collecting one batch per call merges ranges and
    histograms as they come, so memory is bounded by one batch.
    Entropy: it gets 128 histogram bins and 128 quantized bins, with no option to change that,
    which leaves no threshold to search: the result silently equals minmax. More bins make
    the KL search meaningful; its cost grows with the bins squared, so a middle value keeps it
    to seconds on small models.
    """
    # The module, not the `quantize` function the package re-exports under the same name.
    ort_quantize = importlib.import_module("onnxruntime.quantization.quantize")
    original = getattr(ort_quantize, "create_calibrator", None)
    if original is None:  # a future ONNX Runtime: run unpatched
        yield
        return

    def create_calibrator(*args: Any, **kwargs: Any) -> Any:
        if calibration == "entropy":
            extra = dict(kwargs.get("extra_options") or {})
            extra.setdefault("num_bins", _ENTROPY_BINS)
            kwargs["extra_options"] = extra
        calibrator = original(*args, **kwargs)
        collect = calibrator.collect_data

        def collect_batch_by_batch(reader: Any) -> None:
            while (feed := reader.get_next()) is not None:
                collect(_OneFeed(feed))

        calibrator.collect_data = collect_batch_by_batch
        return calibrator

    ort_quantize.create_calibrator = create_calibrator
    try:
        yield
    finally:
        ort_quantize.create_calibrator = original


def default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _upgrade_opset(
    model: onnx.ModelProto, model_path: Path, work_dir: Path, notes: list[str]
) -> tuple[Path, int | None]:
    """The model at opset >= MIN_OPSET (converted if older), and the opset it had."""
    import onnx
    from onnx import version_converter

    opset = default_opset(model)
    if opset >= MIN_OPSET:
        return model_path, None
    try:
        converted = version_converter.convert_version(model, MIN_OPSET)
        onnx.checker.check_model(converted)
    except Exception as exc:
        raise EngineError(
            f"The model uses opset {opset}; static int8 (QDQ) needs opset {MIN_OPSET} or newer "
            f"and the automatic upgrade failed: {short_message(exc)}. Re-export the model with "
            f"opset_version={MIN_OPSET} or newer."
        ) from exc
    out = work_dir / "upgraded.onnx"
    save_model(converted, out)
    notes.append(
        f"The model was upgraded from opset {opset} to {MIN_OPSET}, the oldest opset with "
        "per-channel quantization in QDQ format."
    )
    return out, opset


def _fixed_batch(model: onnx.ModelProto) -> int | None:
    initializers = {t.name for t in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in initializers:
            continue
        dims = inp.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0:
            return int(dims[0].dim_value)
        return None
    return None


def _rows(feed: dict) -> int:
    first = next(iter(feed.values()))
    return int(first.shape[0]) if first.ndim else 1


def _count_qdq_wrapped(model: onnx.ModelProto) -> dict[str, int]:
    """Nodes whose every input comes from a DequantizeLinear, per op type.

    Those are the ones ONNX Runtime can fuse into integer kernels; an excluded node still
    reads a dequantized activation but its weight stays float, so it does not count.
    """
    dequantized = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    counts: Counter[str] = Counter(
        n.op_type
        for n in model.graph.node
        if n.op_type not in _QDQ and any(n.input) and all(i in dequantized for i in n.input if i)
    )
    return dict(counts.most_common())
