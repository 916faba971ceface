"""Weight-only int4 quantization with ONNX Runtime (`MatMulNBitsQuantizer`).

MatMul weights are stored as 4-bit integers in blocks of `block_size` along the input
dimension, each block with its own scale; activations stay float. ONNX Runtime runs the result
with its MatMulNBits kernel. Made for large fully connected and transformer models, where
weights dominate size and memory bandwidth dominates latency.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from compress_engine.configs import WeightInt4Config
from compress_engine.errors import EngineError, short_message
from compress_engine.onnx_files import too_big_for_one_file
from compress_engine.passes.base import Pass, PassContext, PassInfo, PassResult
from compress_engine.passes.quantize import _attr, _check_exclude, _name_unnamed_nodes
from compress_engine.passes.registry import register
from compress_engine.report import QuantizationDetails

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)
# Logs a line per node at INFO through its own handler; too chatty for worker logs.
_ORT_LOGGER = "onnxruntime.quantization.matmul_nbits_quantizer"


@contextlib.contextmanager
def _quiet(name: str) -> Iterator[None]:
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


@register
class WeightInt4Quantize(Pass[WeightInt4Config]):
    info = PassInfo(
        name="quantize-weight-int4",
        title="Weight-only int4 quantization",
        stage="Quantizing (weight-only int4)",
        description=(
            "Stores MatMul and plain Gemm weights as 4-bit integers in small blocks, "
            "activations stay float, with ONNX Runtime's MatMulNBits. About 7x smaller "
            "weights, no data needed; for large fully connected and transformer models."
        ),
        step="quantize",
        mode="weight-int4",
        needs_data=False,
        needs_labels=False,
        compute="light",
    )
    config_type = WeightInt4Config

    def run(self, model_path: Path, out_path: Path, ctx: PassContext) -> PassResult:
        import onnx
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        cfg: WeightInt4Config = self.config
        model = onnx.load(str(model_path))
        _check_exclude(model, cfg.exclude)
        _name_unnamed_nodes(model)
        rewritten = _gemms_to_matmul(model, set(cfg.exclude))
        eligible = _eligible_matmuls(model, set(cfg.exclude))
        if not eligible:
            raise EngineError(
                "weight-int4 found no MatMul (or plain Gemm) with a constant 2-D weight to "
                "quantize (convolutions and computed weights are not eligible). Use "
                "dynamic-int8 or static-int8 for this model."
            )
        ctx.progress(0.2)
        try:
            quantizer = MatMulNBitsQuantizer(
                model,
                bits=4,
                block_size=cfg.block_size,
                is_symmetric=cfg.symmetric,
                accuracy_level=cfg.accuracy_level,
                nodes_to_exclude=list(cfg.exclude),
                op_types_to_quantize=("MatMul",),
            )
            with contextlib.redirect_stdout(io.StringIO()), _quiet(_ORT_LOGGER):
                quantizer.process()
            quantizer.model.save_model_to_file(str(out_path), too_big_for_one_file(model_path))
        except Exception as exc:  # the quantizer raises bare Exceptions/asserts
            raise EngineError(
                f"Weight-only int4 quantization failed in ONNX Runtime: {short_message(exc)}"
            ) from exc
        ctx.progress(0.9)

        result = onnx.load(str(out_path), load_external_data=False)
        quantized = sum(1 for n in result.graph.node if n.op_type == "MatMulNBits")
        from_gemm = sum(
            1
            for n in result.graph.node
            if n.op_type == "MatMulNBits" and n.name.removesuffix("_Q4") in rewritten
        )
        by_type = {k: v for k, v in (("MatMul", quantized - from_gemm), ("Gemm", from_gemm)) if v}
        notes = []
        skipped = len(eligible) - quantized
        if skipped > 0:
            notes.append(
                f"{skipped} eligible MatMul node(s) were left in float by ONNX Runtime's "
                "quantizer (e.g. weight shapes it does not support)."
            )
        details = QuantizationDetails(
            mode=cfg.mode,
            weight_type="int4" if cfg.symmetric else "uint4",
            op_types_requested=["MatMul", "Gemm"],
            quantized_nodes=quantized,
            op_types=by_type,
            excluded=list(cfg.exclude),
            preprocessed=False,
            block_size=cfg.block_size,
            symmetric=cfg.symmetric,
        )
        return PassResult(
            model_path=out_path,
            suffix="int4",
            precision="int4-weight-only",
            details=details,
            notes=notes,
        )


def _gemms_to_matmul(model: onnx.ModelProto, excluded: set[str]) -> set[str]:
    """Rewrite plain Gemms with a constant weight (torch Linear) as MatMul (+ Add) in place.

    MatMulNBits only replaces MatMul. The MatMul keeps the Gemm's name so `exclude` and the
    report still refer to it. Returns the rewritten names.
    """
    from onnx import helper, numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    consumers: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    rewritten: set[str] = set()
    new_nodes: list[onnx.NodeProto] = []
    for node in model.graph.node:
        if node.op_type != "Gemm" or node.domain not in ("", "ai.onnx") or node.name in excluded:
            new_nodes.append(node)
            continue
        attrs = {a.name: a for a in node.attribute}
        weight = inits.get(node.input[1])
        plain = (
            _attr(attrs, "alpha", 1.0) == 1.0
            and _attr(attrs, "beta", 1.0) == 1.0
            and _attr(attrs, "transA", 0) == 0
        )
        if not plain or weight is None or len(weight.dims) != 2:
            new_nodes.append(node)
            continue
        b = node.input[1]
        if _attr(attrs, "transB", 0):
            array = numpy_helper.to_array(weight).T.copy()
            b = f"{weight.name}_T"
            model.graph.initializer.append(numpy_helper.from_array(array, b))
            consumers[weight.name] -= 1
            if consumers[weight.name] == 0:
                model.graph.initializer.remove(weight)
        has_bias = len(node.input) > 2 and node.input[2]
        out = f"{node.output[0]}_matmul" if has_bias else node.output[0]
        new_nodes.append(helper.make_node("MatMul", [node.input[0], b], [out], name=node.name))
        if has_bias:
            new_nodes.append(
                helper.make_node(
                    "Add", [out, node.input[2]], [node.output[0]], name=f"{node.name}_bias"
                )
            )
        rewritten.add(node.name)
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    return rewritten


def _eligible_matmuls(model: onnx.ModelProto, excluded: set[str]) -> list[str]:
    inits = {t.name: t for t in model.graph.initializer}
    return [
        n.name
        for n in model.graph.node
        if n.op_type == "MatMul"
        and n.name not in excluded
        and n.input[1] in inits
        and len(inits[n.input[1]].dims) >= 2
        and all(d == 1 for d in inits[n.input[1]].dims[:-2])
    ]
