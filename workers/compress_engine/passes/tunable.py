"""The int8 quantize passes that can tune: rank layer sensitivity and, under a budget, search
for the fewest layers to keep in float (accuracy_aware).

A subclass implements `quantize` (one build with its config as given); `run` builds once and,
when the config asks for it, tunes around that build with the run's evaluator.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

from compress_engine.configs import DynamicInt8Config, StaticInt8Config
from compress_engine.passes.base import Pass, PassContext, PassResult

TunableT = TypeVar("TunableT", DynamicInt8Config, StaticInt8Config)

# Share of the step's progress slice the first, full build takes when tuning follows it.
FIRST_BUILD = 0.4


class TunableQuantize(Pass[TunableT]):
    @abstractmethod
    def quantize(self, model_path: Path, out_path: Path, ctx: PassContext) -> PassResult:
        """Quantize with the config as given (no tuning)."""

    def run(self, model_path: Path, out_path: Path, ctx: PassContext) -> PassResult:
        cfg = self.config
        if not (cfg.sensitivity or cfg.accuracy_aware):
            return self.quantize(model_path, out_path, ctx)
        from compress_engine.tuning import Builder, tune

        ev = ctx.require_evaluator(f"{self.info.title} with sensitivity or accuracy_aware")
        first = self.quantize(
            model_path, out_path, replace(ctx, progress=ev.stage(self.info.stage, 0, FIRST_BUILD))
        )
        builder = Builder(
            config=cfg,
            model_in=model_path,
            work=ctx.work_dir / "tuning",
            seed=ctx.seed,
            data=ctx.data,
            batch_size=ctx.batch_size,
        )
        rest = 1.0 - FIRST_BUILD
        tuned = tune(
            first,
            builder,
            budget=ev.budget,
            scorer=ev.scorer,
            progress=lambda label, a, b: ev.stage(
                label, FIRST_BUILD + rest * a, FIRST_BUILD + rest * b
            ),
        )
        res = tuned.result
        res.notes = [*tuned.notes, *res.notes]
        res.sensitivity, res.search = tuned.sensitivity, tuned.search
        return res
