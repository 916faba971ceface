"""Float16 conversion with ONNX Runtime's converter (`convert_float_to_float16`).

Halves the size of float32 weights and lets GPUs and NPUs use their fast half-precision
units. CPUs mostly lack float16 arithmetic, so there it usually runs slower (ONNX Runtime
falls back to casts or slow kernels); the report says so.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from compress_engine.configs import Fp16Config
from compress_engine.errors import EngineError, short_message
from compress_engine.measure.params import topological_order
from compress_engine.onnx_files import save_model
from compress_engine.passes.base import Pass, PassContext, PassInfo, PassResult
from compress_engine.passes.quantize import _check_exclude
from compress_engine.passes.registry import register
from compress_engine.report import QuantizationDetails

if TYPE_CHECKING:
    import onnx

# Kept in float32 besides ONNX Runtime's DEFAULT_OP_BLOCK_LIST: ops whose float16 versions
# overflow easily or that the CPU provider has no float16 kernel for in common versions.
EXTRA_OP_BLOCK_LIST = (
    "ReduceMean", "ReduceSum", "ReduceProd", "ReduceL2", "ReduceLogSumExp",
    "Pow", "Exp", "Log", "Softplus", "LayerNormalization", "InstanceNormalization",
    "GroupNormalization", "Einsum",
)  # fmt: skip


@register
class Fp16Convert(Pass[Fp16Config]):
    info = PassInfo(
        name="quantize-fp16",
        title="Float16 conversion",
        stage="Converting to float16",
        description=(
            "Stores weights and runs arithmetic in 16-bit floats: half the size, outputs "
            "nearly unchanged, no data needed. For GPUs and NPUs; CPUs usually run it slower."
        ),
        step="quantize",
        mode="fp16",
        needs_data=False,
        needs_labels=False,
        compute="light",
    )
    config_type = Fp16Config

    def run(self, model_path: Path, out_path: Path, ctx: PassContext) -> PassResult:
        import onnx
        from onnxruntime.transformers.float16 import (
            DEFAULT_OP_BLOCK_LIST,
            convert_float_to_float16,
        )

        cfg: Fp16Config = self.config
        model = onnx.load(str(model_path))
        _check_exclude(model, cfg.exclude)
        blocked = list(
            dict.fromkeys([*DEFAULT_OP_BLOCK_LIST, *EXTRA_OP_BLOCK_LIST, *cfg.op_block_list])
        )
        before = Counter(n.op_type for n in model.graph.node)
        try:
            converted = convert_float_to_float16(
                model,
                keep_io_types=cfg.keep_io_types,
                op_block_list=blocked,
                node_block_list=list(cfg.exclude),
            )
        except Exception as exc:
            raise EngineError(f"Float16 conversion failed: {short_message(exc)}") from exc
        ctx.progress(0.8)
        # keep_io_types appends its input Casts after their consumers; ONNX Runtime runs
        # that, onnx.checker and other tools refuse it.
        ordered = topological_order(converted.graph)
        del converted.graph.node[:]
        converted.graph.node.extend(ordered)
        save_model(converted, out_path)

        kept = _kept_float32(model, blocked, set(cfg.exclude))
        converted_types = {op: n for op, n in before.items() if op not in kept or n > kept[op]}
        notes = [
            "float16 is meant for GPUs and NPUs with half-precision units; on CPUs latency "
            "usually gets worse, so judge its speed on the target device."
        ]
        if not cfg.keep_io_types:
            notes.append("Inputs and outputs are float16 now: callers must feed float16.")
        details = QuantizationDetails(
            mode=cfg.mode,
            weight_type="float16",
            op_types_requested=[],
            quantized_nodes=sum(before.values()) - sum(kept.values()),
            op_types={op: n - kept.get(op, 0) for op, n in converted_types.items()},
            excluded=list(cfg.exclude),
            excluded_op_types=[op for op in blocked if op in before],
            preprocessed=False,
        )
        return PassResult(
            model_path=out_path,
            suffix="fp16",
            precision="fp16",
            details=details,
            notes=notes,
        )


def _kept_float32(model: onnx.ModelProto, blocked: list[str], excluded: set[str]) -> dict[str, int]:
    counts: Counter[str] = Counter(
        n.op_type for n in model.graph.node if n.op_type in blocked or n.name in excluded
    )
    return dict(counts)
