"""llm-auto: per-layer int4/int8 under a size budget, to meet a perplexity budget.

Plans are tried smallest first: int4 everywhere but the embedding and the output layer (8 bits:
the most error-prone matrices, and on tied models one shared matrix), then the first and the
last transformer block at 8 bits too, then ever more of the other matrices at 8 bits, most
error-prone first. A matrix's error is how much of it
round-to-nearest int4 loses (relative Frobenius error of its blocks, weighted by its size: a
cheap, weights-only ranking in the spirit of NNCF's weight-quantization-error metric). Each
plan whose predicted size fits the budget is quantized and scored on search windows, which
are neither the calibration windows nor the evaluation windows the report is measured on. The
first plan within the perplexity budget is kept; if none is, the one with the lowest
perplexity. Every plan tried lands in the report.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from compress_engine.configs import LlmAutoConfig
from compress_engine.errors import EngineError
from compress_engine.llm.quantized import RESULT_FOLDER, Quantized, search_split
from compress_engine.llm.text_data import TextWindows
from compress_engine.llm.weight_plan import WeightMatrix
from compress_engine.report_llm import PrecisionTrial

BASE_INT8 = ("embedding", "lm_head")
# Shares of the transformer's int4 parameters moved to int8, plan by plan.
PROMOTION_STEPS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.45, 0.6, 0.8, 1.0)


def search(
    original: Path,
    cfg: LlmAutoConfig,
    windows: TextWindows,
    *,
    work: Path,
    threads: int,
    budget: float | None,
    progress: Callable[[float], None],
) -> Quantized:
    """The plans tried in `work` (one folder each, only the kept one left as RESULT_FOLDER);
    `budget` is evaluate.llm.max_perplexity_increase."""
    from compress_engine.llm.perplexity import Scorer, perplexity
    from compress_engine.llm.weight_plan import layer_precisions, plan, weight_matrices
    from compress_engine.llm.weight_quant import model_bytes, quantize_folder

    calibration, search_windows = search_split(windows)
    matrices = weight_matrices(_load(original))
    base = plan(matrices, bits=4, int8=list(_present(matrices, BASE_INT8)), float_=[])
    order = _most_error_first(original, matrices, base, cfg.block_size)
    original_bytes = model_bytes(original)
    reference = perplexity(Scorer(original, threads=threads), search_windows)
    plans = _plans(matrices, base, order)
    trials: list[PrecisionTrial] = []
    # The fallback while no plan meets both budgets: the lowest perplexity within the size
    # budget (the smallest plan until one fits). Only its folder is kept.
    best: tuple[int, Path, dict[str, int | None]] | None = None
    for label, chosen in plans:
        predicted = _predicted_bytes(matrices, chosen, cfg.block_size, original_bytes)
        if trials and (
            len(trials) >= cfg.max_trials or predicted / original_bytes > cfg.max_size_ratio
        ):
            break  # later plans only grow
        progress(len(trials) / min(cfg.max_trials, len(plans)))
        folder = work / f"trial-{len(trials) + 1}"
        outcome = quantize_folder(
            original,
            folder,
            plan=chosen,
            block_size=cfg.block_size,
            symmetric=cfg.symmetric,
            accuracy_level=cfg.accuracy_level,
            method=cfg.method,
            calibration=calibration if cfg.method != "rtn" else None,
        )
        score = perplexity(Scorer(folder, threads=threads), search_windows)
        ratio = outcome.size_bytes / original_bytes
        delta = 100.0 * (score / reference - 1.0)
        trials.append(
            PrecisionTrial(
                label=label,
                int8_layers=_int8(chosen),
                size_bytes=outcome.size_bytes,
                size_ratio=ratio,
                perplexity=score,
                ppl_delta_pct=delta,
                within_size=ratio <= cfg.max_size_ratio,
                meets_budget=budget is None or delta <= budget,
            )
        )
        trial = trials[-1]
        if best is None or (trial.within_size and score < trials[best[0]].perplexity):
            if best is not None:
                shutil.rmtree(best[1], ignore_errors=True)
            best = (len(trials) - 1, folder, chosen)
        else:
            shutil.rmtree(folder, ignore_errors=True)
        if trial.within_size and trial.meets_budget:
            break  # the smallest plan that meets both budgets
    if best is None:
        raise EngineError("llm-auto tried no plan: raise quantize.max_trials.")
    kept, folder, chosen = best
    trials[kept].kept = True
    result = work / RESULT_FOLDER
    folder.rename(result)
    notes = [_summary(trials, kept, budget, cfg.max_size_ratio, len(search_windows))]
    return Quantized(result, layer_precisions(matrices, chosen), "MatMulNBits", trials, notes)


def _int8(chosen: dict[str, int | None]) -> list[str]:
    return [n for n, b in chosen.items() if b == 8]


def _present(matrices: list[WeightMatrix], roles: tuple[str, ...]) -> list[str]:
    have = {m.role for m in matrices}
    return [r for r in roles if r in have]


def _plans(
    matrices: list[WeightMatrix], base: dict[str, int | None], order: list[str]
) -> list[tuple[str, dict[str, int | None]]]:
    """(label, plan), each plan holding the one before it, so sizes only grow: the base, then
    the first and the last transformer block at int8 (where int4 hurts language models most),
    then on top of those the first k of `order` for k covering each share of the int4
    parameters in PROMOTION_STEPS."""
    from compress_engine.llm.weight_plan import select

    label = "int4, embedding and lm_head int8"
    plans: list[tuple[str, dict[str, int | None]]] = [(label, dict(base))]
    chosen = dict(base)
    blocks = {m.block for m in matrices if m.block is not None}
    for selector, words in (("first_block", "first block"), ("last_block", "last block")):
        if len(blocks) < 2:
            break
        chosen = {**chosen, **{n: 8 for n in select(matrices, selector) if chosen.get(n) == 4}}
        label += f", {words} int8"
        plans.append((label, chosen))
    rest = [n for n in order if chosen.get(n) == 4]
    size = {m.name: m.bytes for m in matrices}
    total = sum(size[n] for n in rest) or 1
    seen: set[tuple[str, ...]] = {()}
    for share in PROMOTION_STEPS:
        moved, acc = [], 0
        for name in rest:
            if acc >= share * total:
                break
            moved.append(name)
            acc += size[name]
        if tuple(moved) in seen:
            continue
        seen.add(tuple(moved))
        plans.append(
            (
                f"{label}, {len(moved)} most error-prone matrices ({share:.0%} of the rest) int8",
                {**chosen, **{n: 8 for n in moved}},
            )
        )
    return plans


def _most_error_first(
    folder: Path, matrices: list[WeightMatrix], base: dict[str, int | None], block: int
) -> list[str]:
    """The base plan's int4 MatMul matrices, the largest relative int4 error first."""
    import onnx
    from onnx import numpy_helper

    from compress_engine.llm.weight_quant import decoder_config

    model = onnx.load(str(folder / decoder_config(folder)["filename"]))
    inits = {i.name: i for i in model.graph.initializer}
    errors = {}
    for m in matrices:
        if base.get(m.name) == 4 and m.op_type == "MatMul" and m.weight in inits:
            errors[m.name] = _int4_error(numpy_helper.to_array(inits[m.weight]), block)
    del model, inits
    return sorted(errors, key=lambda n: -errors[n])


def _int4_error(weight: np.ndarray, block: int) -> float:
    """Relative error of symmetric round-to-nearest int4 in blocks along the input dim."""
    w = np.asarray(weight, dtype=np.float32)
    k = w.shape[0]
    pad = (-k) % block
    if pad:
        w = np.concatenate([w, np.zeros((pad, w.shape[1]), np.float32)])
    blocks = w.reshape(-1, block, w.shape[1])
    scale = np.abs(blocks).max(axis=1, keepdims=True) / 7.0
    scale[scale == 0] = 1.0
    q = np.clip(np.round(blocks / scale), -8, 7) * scale
    return float(np.linalg.norm(blocks - q) / (np.linalg.norm(blocks) or 1.0))


def _predicted_bytes(
    matrices: list[WeightMatrix], chosen: dict[str, int | None], block: int, original: int
) -> float:
    """The model's size under a plan: float bytes of the unquantized rest, plus per matrix
    bits/8 per weight and a float32 scale per block."""
    total = float(original)
    for m in matrices:
        bits = chosen.get(m.name)
        if bits is None or not m.bytes:
            continue
        elements = m.bytes / 4
        total -= m.bytes
        total += elements * bits / 8 + elements / block * 4
    return total


def _load(folder: Path):  # -> onnx.ModelProto, graph only
    import onnx

    from compress_engine.llm.weight_quant import decoder_config

    return onnx.load(str(folder / decoder_config(folder)["filename"]), load_external_data=False)


def _summary(
    trials: list[PrecisionTrial], kept: int, budget: float | None, size: float, windows: int
) -> str:
    pick = trials[kept]
    goal = f"perplexity within +{budget:g}%" if budget is not None else "the lowest perplexity"
    met = "met" if pick.meets_budget and pick.within_size else "not met by any plan tried"
    return (
        f"llm-auto tried {len(trials)} plan(s) on {windows} search windows (apart from the "
        f"evaluation windows) for {goal} at no more than {size:g} of the original size "
        f"({met}); it kept: {pick.label} ({pick.size_ratio:.3f} of the size, "
        f"{pick.ppl_delta_pct:+.1f}% perplexity on the search windows)."
    )
