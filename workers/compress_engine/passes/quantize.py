"""Dynamic int8 quantization with ONNX Runtime (`quantize_dynamic`).

Weights are stored as 8-bit integers; activations are quantized on the fly at run time, so
no calibration data is needed. Works best on MatMul/Gemm-heavy models (MLPs, transformers,
RNNs); convolutions stay float by default.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from compress_engine.configs import DynamicInt8Config
from compress_engine.cpu_int8 import resolve_format
from compress_engine.errors import EngineError, short_message
from compress_engine.onnx_files import rewrite, save_model, too_big_for_one_file
from compress_engine.passes.base import PassContext, PassInfo, PassResult
from compress_engine.passes.registry import register
from compress_engine.passes.smoothing import smooth
from compress_engine.passes.tunable import TunableQuantize
from compress_engine.report import QuantizationDetails

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)

# Integer op produced by ONNX Runtime's dynamic quantizer -> the float op it replaced.
_QUANTIZED_FROM = {
    "MatMulInteger": "MatMul",
    "DynamicQuantizeMatMul": "MatMul",
    "ConvInteger": "Conv",
    "DynamicQuantizeLSTM": "LSTM",
    "QAttention": "Attention",
}
# The quantizer names each new integer node "<original name>_quant", and in dynamic mode
# first rewrites Gemm (alpha = beta = 1, transA = 0) to "<gemm name>_MatMul" + Add.
_QUANT_SUFFIX = "_quant"
# A quantized Gather keeps its node and reads the int8 table "<weight name>_quantized".
_QUANTIZED = "_quantized"
_GEMM_MATMUL_SUFFIX = "_MatMul"


@register
class DynamicInt8Quantize(TunableQuantize[DynamicInt8Config]):
    info = PassInfo(
        name="quantize-dynamic-int8",
        title="Dynamic int8 quantization",
        stage="Quantizing (dynamic int8)",
        description=(
            "Stores MatMul/Gemm (and optionally Conv) weights as 8-bit integers and quantizes "
            "activations on the fly, with ONNX Runtime. About 4x smaller weights, no data "
            "needed; fastest gains on fully connected and transformer models on CPU."
        ),
        step="quantize",
        mode="dynamic-int8",
        needs_data=False,
        needs_labels=False,
        compute="light",
    )
    config_type = DynamicInt8Config

    def quantize(self, model_path: Path, out_path: Path, ctx: PassContext) -> PassResult:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic

        cfg: DynamicInt8Config = self.config
        notes: list[str] = []
        fmt = resolve_format(cfg)
        choices = [fmt.choice]
        if ctx.prepared:
            src, preprocessed = model_path, True
        else:
            src, _, preprocessed = self.prepare(model_path, ctx.work_dir, notes)
            src, smoothing = smooth(self, src, ctx)
            choices += smoothing
        ctx.progress(0.4)

        model = onnx.load(str(src))
        _name_unnamed_nodes(model)
        targets, gemm_matmuls, skipped_gemms = _targets(model, cfg)
        if skipped_gemms:
            notes.append(
                f"{skipped_gemms} Gemm node(s) use alpha/beta other than 1 or a transposed input "
                "and were left in float."
            )
        prepared = ctx.work_dir / "prepared.onnx"
        external = save_model(model, prepared)

        # ONNX Runtime's CPU ConvInteger has long supported only uint8 weights; uint8 is the
        # choice that loads everywhere once convolutions are in.
        uint8 = "Conv" in cfg.op_types
        weight_type = QuantType.QUInt8 if uint8 else QuantType.QInt8
        if targets:
            # ONNX Runtime rewrites Gemm to MatMul + Add itself; `targets` picks those MatMuls
            # by name, so Gemm/MatMul stay separately selectable.
            ort_types = sorted({"MatMul" if t == "Gemm" else t for t in cfg.op_types})
            try:
                quantize_dynamic(
                    prepared,
                    out_path,
                    op_types_to_quantize=ort_types,
                    per_channel=cfg.per_channel,
                    reduce_range=fmt.reduce_range,
                    weight_type=weight_type,
                    # An explicit list: an empty one would mean "everything" to ONNX Runtime.
                    nodes_to_quantize=sorted(targets),
                    nodes_to_exclude=list(cfg.exclude),
                    extra_options={"MatMulConstBOnly": True},
                    use_external_data_format=external,
                )
            except Exception as exc:  # the quantizer raises bare Exceptions/asserts
                raise EngineError(
                    f"Dynamic int8 quantization failed in ONNX Runtime: {short_message(exc)}"
                ) from exc
        ctx.progress(0.9)

        by_type = (
            _count_quantized(onnx.load(str(out_path), load_external_data=False), gemm_matmuls)
            if targets
            else {}
        )
        quantized = sum(by_type.values())
        if quantized == 0:
            # Nothing changed: hand back the original bytes, not a re-serialised graph.
            rewrite(model_path, out_path)
            notes.append(
                f"No {'/'.join(cfg.op_types)} layers with constant weights were found; nothing "
                "was quantized, so the result is a copy of the original model."
            )
        details = QuantizationDetails(
            mode=cfg.mode,
            weight_type="uint8" if uint8 else "int8",
            activation_type=fmt.activations,
            per_channel=cfg.per_channel,
            reduce_range=fmt.reduce_range,
            op_types_requested=list(cfg.op_types),
            quantized_nodes=quantized,
            op_types=by_type,
            excluded=list(cfg.exclude),
            preprocessed=preprocessed,
            choices=choices,
        )
        if uint8 and quantized:
            notes.append(
                "Conv was requested, so weights are stored as uint8: ONNX Runtime's CPU "
                "ConvInteger kernel is only guaranteed for uint8 weights."
            )
        return PassResult(
            model_path=out_path,
            suffix="int8",
            precision="int8-dynamic",
            details=details,
            notes=notes,
        )

    def prepare(
        self, model_path: Path, work_dir: Path, notes: list[str]
    ) -> tuple[Path, int | None, bool]:
        """The graph quantize_dynamic reads (see TunableQuantize.prepare): shape inference
        and, unless nodes are excluded by name, optimisation; no opset change."""
        import onnx

        cfg = self.config
        _check_exclude(onnx.load(str(model_path), load_external_data=False), cfg.exclude)
        src, done = _preprocess(model_path, work_dir, notes, keep_names=bool(cfg.exclude))
        return src, None, done


def _preprocess(
    model_path: Path, work_dir: Path, notes: list[str], *, keep_names: bool
) -> tuple[Path, bool]:
    """Shape inference + graph optimisation; the raw model if that fails.

    ONNX Runtime's symbolic shape inference cannot complete some graphs (transformers with
    dynamic sequence lengths, e.g. MiniLM); then pre-processing is retried with ONNX's own
    shape inference only, and only if that fails too is the raw model quantized.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # Absolute paths: pre-processing runs with work_dir as the current directory.
    model_path, work_dir = model_path.resolve(), work_dir.resolve()
    out = work_dir / "preprocessed.onnx"
    big = too_big_for_one_file(model_path)
    attempts = ({"skip_symbolic_shape": False}, {"skip_symbolic_shape": True})
    failure: Exception | None = None
    for options in attempts:
        try:
            # Incomplete symbolic inference makes ONNX Runtime save a debug copy of the model
            # ("sym_shape_infer_temp.onnx" plus its weights) into the current directory:
            # keep it in scratch. chdir is process-wide; a worker runs one job per process.
            with contextlib.chdir(work_dir):
                # Optimisation fuses and renames nodes, which would defeat `exclude`.
                quant_pre_process(
                    str(model_path),
                    str(out),
                    skip_optimization=keep_names,
                    save_as_external_data=big,
                    all_tensors_to_one_file=True,
                    external_data_location=f"{out.name}.data",
                    **options,
                )
        except Exception as exc:  # recoverable: try the next, lighter pre-processing
            log.info("quantization pre-processing %s failed: %s", options, exc)
            failure = exc
            continue
        if options["skip_symbolic_shape"]:
            notes.append(
                "ONNX Runtime's symbolic shape inference could not complete this graph "
                f"({short_message(failure)}); pre-processing used ONNX shape inference only."
            )
        return out, True
    notes.append(
        "ONNX Runtime pre-processing (shape inference and optimisation) failed, so the raw "
        f"model was quantized: {short_message(failure)}"
    )
    return model_path, False


def _check_exclude(model: onnx.ModelProto, exclude: list[str]) -> None:
    if not exclude:
        return
    names = {n.name for n in model.graph.node}
    missing = [n for n in exclude if n not in names]
    if missing:
        examples = [
            n.name for n in model.graph.node if n.op_type in ("MatMul", "Gemm", "Conv") and n.name
        ][:5]
        hint = f" Node names look like: {', '.join(examples)}." if examples else ""
        raise EngineError(
            f"quantize.exclude names node(s) not in the model: {', '.join(missing)}.{hint}"
        )


def _name_unnamed_nodes(model: onnx.ModelProto) -> None:
    # The quantizer selects nodes by name; unnamed nodes could not be targeted.
    taken = {n.name for n in model.graph.node}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)


def _targets(model: onnx.ModelProto, cfg: DynamicInt8Config) -> tuple[set[str], set[str], int]:
    """Node names to quantize (post Gemm rewrite), rewritten Gemm MatMul names, skipped Gemms."""
    wanted = set(cfg.op_types)
    excluded = set(cfg.exclude)
    initializers = {t.name for t in model.graph.initializer}
    targets: set[str] = set()
    gemm_matmuls: set[str] = set()
    skipped = 0
    for node in model.graph.node:
        if node.name in excluded or node.domain not in ("", "ai.onnx", "com.microsoft"):
            continue
        if node.op_type == "Gemm":
            attrs = {a.name: a for a in node.attribute}
            rewritable = (
                _attr(attrs, "alpha", 1.0) == 1.0
                and _attr(attrs, "beta", 1.0) == 1.0
                and _attr(attrs, "transA", 0) == 0
            )
            if "Gemm" not in wanted:
                continue
            if not rewritable:
                skipped += 1
                continue
            name = node.name + _GEMM_MATMUL_SUFFIX
            gemm_matmuls.add(name)
            targets.add(name)
        elif node.op_type == "Gather":
            # Only embedding tables (a constant data input) hold weights worth storing in int8.
            if "Gather" in wanted and node.input and node.input[0] in initializers:
                targets.add(node.name)
        elif node.op_type in wanted:
            targets.add(node.name)
    return targets, gemm_matmuls, skipped


def _attr(attrs: dict[str, onnx.AttributeProto], name: str, default: float) -> float:
    import onnx

    return float(onnx.helper.get_attribute_value(attrs[name])) if name in attrs else default


def _count_quantized(model: onnx.ModelProto, gemm_matmuls: set[str]) -> dict[str, int]:
    """Quantized node count per original op type, read off the quantized graph."""
    counts: Counter[str] = Counter()
    quantized_tables = {t.name for t in model.graph.initializer if t.name.endswith(_QUANTIZED)}
    for node in model.graph.node:
        if node.op_type == "Gather" and node.input and node.input[0] in quantized_tables:
            counts["Gather"] += 1
            continue
        source = _QUANTIZED_FROM.get(node.op_type)
        if source is None:
            continue
        base = node.name.removesuffix(_QUANT_SUFFIX)
        counts["Gemm" if base in gemm_matmuls else source] += 1
    return dict(counts.most_common())
