"""The stages of a language-model run, as the labels its progress reports them under and the
slices of its progress (0..1) they cover: the catalog's stage plan for an LLM recipe, so the
live job page lists the stages the run really goes through.

Imports only the recipe schema: the web app reads it (through compress_engine.stage_plan).
"""

from __future__ import annotations

from compress_engine.configs import LlmAutoConfig, Recipe, WeightOnlyConfig

# (label, start, end) in the order a run reports them (compress_engine.llm.pipeline and its
# stages); the quantize stage's label depends on the recipe (quantize_label).
PREPARING = ("Preparing text", 0.0, 0.04)
QUANTIZING = (0.04, 0.55)
PERPLEXITY = ("Measuring perplexity", 0.55, 0.7)
DECODE = ("Timing decode speed", 0.7, 0.85)
MEMORY = ("Measuring memory", 0.85, 0.9)
ANSWERS = ("Answering the prompts", 0.9, 0.96)
WRITING = ("Writing the artifact", 0.96, 1.0)


def quantize_label(cfg: WeightOnlyConfig | LlmAutoConfig) -> str:
    """The quantize stage's label: the auto search, or the bits and the method that runs (a
    data-aware method asked for at 8 bits runs round-to-nearest)."""
    if isinstance(cfg, LlmAutoConfig):
        return "Searching per-layer precision"
    method = cfg.method if cfg.calibrated else "rtn"
    return f"Quantizing (int{cfg.bits} weights, {method})"


def llm_stages(recipe: Recipe) -> list[tuple[str, float, float]]:
    """(label, start, end) of each stage a run of this language-model recipe reports; without
    the memory stage (evaluate.llm.measure_memory false) the answers' slice starts where
    decode timing ends, so the slices still cover the run without a gap."""
    cfg = next(
        (
            q
            for step in recipe.steps
            if isinstance(q := getattr(step, "quantize", None), WeightOnlyConfig | LlmAutoConfig)
        ),
        None,
    )
    if cfg is None:
        raise ValueError("not a language-model recipe (no weight-only or llm-auto step)")
    stages = [PREPARING, (quantize_label(cfg), *QUANTIZING), PERPLEXITY, DECODE]
    if recipe.evaluate.llm.measure_memory:
        stages.append(MEMORY)
        stages.append(ANSWERS)
    else:
        stages.append((ANSWERS[0], DECODE[2], ANSWERS[2]))
    return [*stages, WRITING]
