"""The int8 quantize passes that can tune: rank layer sensitivity and, under a budget, search
for the fewest layers to keep in float (accuracy_aware).

A subclass implements `prepare` (the graph its quantizer reads) and `quantize` (one build with
its config as given); `run` builds once and, when the config asks for it, tunes around that
build with the run's evaluator. Every build of a tuning run (the full one, the single-layer
ones that rank sensitivity, the trials) quantizes one shared prepared graph, so they differ
only in the layers kept in float: node names, fusions and calibrated ranges are the same.
"""

from __future__ import annotations

import shutil
from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from compress_engine.configs import DynamicInt8Config, QuantizeStep, StaticInt8Config
from compress_engine.onnx_files import save_model
from compress_engine.passes.base import Pass, PassContext, PassResult

if TYPE_CHECKING:
    from compress_engine.data import Dataset
    from compress_engine.search import FallbackUnit

TunableT = TypeVar("TunableT", DynamicInt8Config, StaticInt8Config)

# Share of the step's progress slice the first, full build takes when tuning follows it.
FIRST_BUILD = 0.3
# Static int8 calibrates once for all builds of a search where ONNX Runtime can reuse ranges
# (calibration_cache_path, 1.31+); older versions calibrate every build again, and then get
# at most this many samples.
TRIAL_CALIBRATION_SAMPLES = 128
# Op types whose weights the int8 modes store as integers.
WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "Attention", "LSTM"})


class TunableQuantize(Pass[TunableT]):
    @abstractmethod
    def prepare(
        self, model_path: Path, work_dir: Path, notes: list[str]
    ) -> tuple[Path, int | None, bool]:
        """The pre-processed graph the quantizer reads: (path, opset upgraded from or None,
        whether pre-processing ran). quantize() does this itself unless ctx.prepared."""

    @abstractmethod
    def quantize(self, model_path: Path, out_path: Path, ctx: PassContext) -> PassResult:
        """Quantize with the config as given (no tuning)."""

    def run(self, model_path: Path, out_path: Path, ctx: PassContext) -> PassResult:
        cfg = self.config
        if not (cfg.sensitivity or cfg.accuracy_aware):
            return self.quantize(model_path, out_path, ctx)
        from compress_engine.tuning import tune

        ev = ctx.require_evaluator(f"{self.info.title} with sensitivity or accuracy_aware")
        builder = Builder(
            technique=self,
            model_in=model_path,
            work=ctx.work_dir / "tuning",
            seed=ctx.seed,
            data=ctx.data,
            batch_size=ctx.batch_size,
        )
        first = builder.first(out_path, ev.stage(self.info.stage, 0, FIRST_BUILD))
        rest = 1.0 - FIRST_BUILD
        tuned = tune(
            first,
            builder,
            ev,
            progress=lambda label, a, b: ev.stage(
                label, FIRST_BUILD + rest * a, FIRST_BUILD + rest * b
            ),
        )
        res = tuned.result
        res.notes = [*tuned.notes, *res.notes]
        res.sensitivity, res.search = tuned.sensitivity, tuned.search
        return res


@dataclass
class Builder:
    """Re-runs one quantize pass on a shared prepared graph with chosen layers kept in float,
    each build into its own files."""

    technique: TunableQuantize
    model_in: Path
    work: Path
    seed: int
    data: Dataset | None
    batch_size: int
    built: dict[Path, PassResult] = field(default_factory=dict)
    prepared: Path | None = None
    _count: int = 0
    _notes: list[str] = field(default_factory=list)  # what preparing the graph did
    _details: dict[str, object] = field(default_factory=dict)  # and its QuantizationDetails

    @property
    def config(self) -> DynamicInt8Config | StaticInt8Config:
        return self.technique.config

    @property
    def static(self) -> bool:
        return isinstance(self.config, StaticInt8Config)

    @property
    def reuses_calibration(self) -> bool:
        from compress_engine.passes.static_quantize import calibration_cache_supported

        return self.static and calibration_cache_supported()

    @property
    def calibration_note(self) -> str:
        if not self.static:
            return ""
        if self.reuses_calibration:
            return ", calibrated once and the ranges reused for every build"
        return f", each calibrated on {TRIAL_CALIBRATION_SAMPLES} samples at most"

    def first(self, out_path: Path, progress: Callable[[float], None]) -> PassResult:
        """The fully quantized model, built from the shared graph (prepared here) with every
        calibration sample; for static int8 it also fills the range cache the others read."""
        import onnx

        from compress_engine.passes.quantize import _name_unnamed_nodes

        shared = self.work / "shared"
        shared.mkdir(parents=True)
        path, upgraded_from, preprocessed = self.technique.prepare(
            self.model_in, shared, self._notes
        )
        self._details = {"preprocessed": preprocessed}
        if upgraded_from is not None:
            self._details["opset_upgraded_from"] = upgraded_from
        model = onnx.load(str(path))
        _name_unnamed_nodes(model)
        self.prepared = shared / "model.onnx"
        save_model(model, self.prepared)
        res = self._run(self.config, out_path, self.work / "first", progress)
        self.built[res.model_path] = res
        return res

    def build(self, keep_in_float: Sequence[str], tag: str) -> PassResult:
        """The shared graph quantized with `keep_in_float` (node names) left in float."""
        self._count += 1
        work = self.work / f"{tag}{self._count}"
        update: dict[str, object] = {"exclude": [*self.config.exclude, *keep_in_float]}
        if self.static and not self.reuses_calibration:
            update["samples"] = min(self.config.samples, TRIAL_CALIBRATION_SAMPLES)
        res = self._run(self.config.model_copy(update=update), work / "model.onnx", work)
        self.built[res.model_path] = res
        return res

    def build_only(self, unit: FallbackUnit, everything: Sequence[str]) -> Path:
        """The shared graph with only `unit` quantized: every other node is kept in float."""
        members = set(unit.members)
        return self.build([n for n in everything if n not in members], "single").model_path

    def discard(self, path: Path) -> None:
        """Delete a build once scored: a ranking makes one per layer, each a full copy of
        the model, which would fill the disk on a large one."""
        if self.built.pop(path, None) is not None:
            shutil.rmtree(path.parent, ignore_errors=True)

    def _run(
        self,
        cfg: DynamicInt8Config | StaticInt8Config,
        out_path: Path,
        work: Path,
        progress: Callable[[float], None] | None = None,
    ) -> PassResult:
        from compress_engine.passes.registry import pass_for_step

        assert self.prepared is not None, "first() prepares the shared graph"
        work.mkdir(parents=True, exist_ok=True)
        cfg = cfg.model_copy(update={"accuracy_aware": False, "sensitivity": False})
        technique = pass_for_step(QuantizeStep(quantize=cfg))
        ctx = PassContext(
            work_dir=work,
            seed=self.seed,
            data=self.data,
            batch_size=self.batch_size,
            # Every build reads the same graph, so one set of ranges serves them all.
            calibration_cache=self.work / "calibration.json",
            prepared=True,
        )
        if progress is not None:
            ctx = replace(ctx, progress=progress)
        res = technique.run(self.prepared, out_path, ctx)
        # What preparing the shared graph did is true of every build made from it.
        res.notes = [*self._notes, *res.notes]
        if res.details is not None:
            res.details = res.details.model_copy(update=self._details)
        return res
