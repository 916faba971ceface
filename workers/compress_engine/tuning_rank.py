"""Per-layer sensitivity of a tuning run: every fallback unit of the shared prepared graph
quantized alone (search.units, search.sensitivity), scored on the job's calibration samples
against the original, and the order the accuracy-aware search tries the units in."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from compress_engine.configs import StaticInt8Config
from compress_engine.onnx_files import model_bytes
from compress_engine.passes.tunable import WEIGHTED_OPS
from compress_engine.report import LayerSensitivityInfo
from compress_engine.search import (
    FallbackUnit,
    fallback_units,
    pick_units,
    rank_single_layer_error,
    search_order,
)

if TYPE_CHECKING:
    import onnx

    from compress_engine.passes.base import Evaluator
    from compress_engine.passes.tunable import Builder
    from compress_engine.tuning import Scorer

# At most this many layers are ranked (the first, the heads, then the most weights): each
# costs a quantization and a run over the sensitivity samples.
MAX_RANKED_LAYERS = 64
# Calibration samples the single-layer models are scored on: enough to order layers, bounded
# in time (each layer runs them once).
SENSITIVITY_SAMPLES = 64
# Keeping a layer in float that costs less than this share of the original file counts as
# free when layers are ordered by error removed per byte.
FREE_BYTES_SHARE = 0.01


@dataclass(frozen=True)
class Ranking:
    info: list[LayerSensitivityInfo]  # every ranked layer, most sensitive first
    order: list[str]  # the layers worth trying in float, best value first
    units: dict[str, FallbackUnit]
    found: int  # units in the graph (more than ranked when over MAX_RANKED_LAYERS)


def rank(builder: Builder, ev: Evaluator, progress: Callable[[float], None]) -> Ranking:
    """Every fallback unit of the shared graph quantized alone, scored on calibration
    samples against the original; and the order the search tries them in."""
    import onnx

    assert builder.prepared is not None
    model = onnx.load(str(builder.prepared), load_external_data=False)
    found = _units(model, builder)
    units = pick_units(found, MAX_RANKED_LAYERS)
    everything = [n.name for n in model.graph.node if n.name]
    by_name = {u.name: u for u in units}
    scorer = _ranking_scorer(builder, ev)

    def run(path: Path) -> list[np.ndarray]:
        try:
            return scorer.outputs(path)
        finally:
            builder.discard(path)

    ranked = rank_single_layer_error(
        [(u.name, u.op_type) for u in units],
        quantize_only=lambda name: builder.build_only(by_name[name], everything),
        run=run,
        reference=scorer.reference,
        progress=progress,
        fallback_bytes={u.name: u.fallback_bytes for u in units},
    )
    free = int(FREE_BYTES_SHARE * model_bytes(builder.model_in))
    order = search_order(ranked, free_bytes=free)
    info = [
        LayerSensitivityInfo(
            node=r.node,
            op_type=r.op_type,
            relative_error=r.relative_error,
            fallback_bytes=r.fallback_bytes,
            members=list(by_name[r.node].members),
        )
        for r in ranked
    ]
    return Ranking(info=info, order=[r.node for r in order], units=by_name, found=len(found))


def _units(model: onnx.ModelProto, builder: Builder) -> list[FallbackUnit]:
    """The layers the pass quantizes, as units to keep in float (see search.units)."""
    cfg = builder.config
    if not isinstance(cfg, StaticInt8Config):
        # Dynamic int8 quantizes weights inside the kernel: a layer alone is the unit.
        return fallback_units(
            model,
            weighted_types=set(cfg.op_types),
            excluded=cfg.exclude,
            chains=False,
        )
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    off = set(cfg.exclude_op_types)
    by_type = [n.name for n in model.graph.node if n.op_type in off]
    return fallback_units(
        model,
        weighted_types=WEIGHTED_OPS - off,
        quantized_types=(set(QDQRegistry) | set(QLinearOpsRegistry)) - off,
        excluded=[*cfg.exclude, *by_type],
    )


def ranking_samples(builder: Builder) -> int:
    data = builder.data
    return SENSITIVITY_SAMPLES if data is None else min(SENSITIVITY_SAMPLES, data.samples)


def _ranking_scorer(builder: Builder, ev: Evaluator) -> Scorer:
    """The job's calibration samples (the first SENSITIVITY_SAMPLES) with the original's
    outputs; the evaluation batches when the step has no data (dynamic int8 without a
    dataset scores seeded random inputs there)."""
    from compress_engine.tuning import Scorer  # tuning imports this module

    data = builder.data
    if data is None or data.samples == 0:
        return ev.scorer.subset(SENSITIVITY_SAMPLES)
    part = data.take(slice(0, min(SENSITIVITY_SAMPLES, data.samples)))
    # A model with a fixed batch cannot run a short last batch.
    batches = list(part.batches(builder.batch_size, drop_last=part.samples >= builder.batch_size))
    return Scorer(ev.original, batches, providers=ev.providers, threads=ev.threads)
