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
    from compress_engine.report import QuantChoice
    from compress_engine.search import FallbackUnit

TunableT = TypeVar("TunableT", DynamicInt8Config, StaticInt8Config)

# Share of the step's progress slice the first, full build takes when tuning follows it,
# and where the latency gate (between them) ends when both run.
FIRST_BUILD = 0.3
GATE_END = 0.6
# Static int8 calibrates once for all builds of a search where ONNX Runtime can reuse ranges
# (calibration_cache_path, 1.31+); older versions calibrate every build again, and then get
# at most this many samples.
TRIAL_CALIBRATION_SAMPLES = 128
# Options the first build of a search decides by measuring (QuantChoice.option, named as the
# config field): every later build takes its decision, so builds differ only in the layers
# kept in float, and reports the first build's trials.
PINNED_CHOICES = ("bias_correction", "smooth_quant")
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
        tunes = cfg.sensitivity or cfg.accuracy_aware
        if not (tunes or cfg.latency_gate):
            return self.quantize(model_path, out_path, ctx)
        from compress_engine.passes.gate_build import gate
        from compress_engine.tuning import tune

        ev = ctx.require_evaluator(
            f"{self.info.title} with sensitivity, accuracy_aware or latency_gate"
        )
        builder = Builder(
            technique=self,
            model_in=model_path,
            work=ctx.work_dir / "tuning",
            seed=ctx.seed,
            data=ctx.data,
            batch_size=ctx.batch_size,
        )
        first = builder.first(out_path, ev.stage(self.info.stage, 0, FIRST_BUILD))
        if cfg.latency_gate:
            # Gate first: the tuning builds then keep the gated op types in float too.
            end = GATE_END if tunes else 1.0
            gated = gate(first, builder, ev, ev.stage("Latency gate", FIRST_BUILD, end))
            first = gated.result
            if not tunes:
                return gated.apply(first)
        rest = 1.0 - (GATE_END if cfg.latency_gate else FIRST_BUILD)
        start = 1.0 - rest
        tuned = tune(
            first,
            builder,
            ev,
            progress=lambda label, a, b: ev.stage(label, start + rest * a, start + rest * b),
        )
        res = tuned.result
        res.notes = [*tuned.notes, *res.notes]
        if cfg.latency_gate:
            gated.apply(res)
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
    # Nodes the latency gate keeps in float: every later build (tuning) keeps them too.
    gated: list[str] = field(default_factory=list)
    _count: int = 0
    _notes: list[str] = field(default_factory=list)  # what preparing the graph did
    _details: dict[str, object] = field(default_factory=dict)  # and its QuantizationDetails
    _pinned: list[QuantChoice] = field(default_factory=list)  # see PINNED_CHOICES

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
        # Smoothing rewrites the graph every build reads, so it is decided once, here.
        from compress_engine.passes.smoothing import smooth

        here = PassContext(shared, self.seed, data=self.data, batch_size=self.batch_size)
        path, self._pinned = smooth(self.technique, path, here)
        self._details = {"preprocessed": preprocessed}
        if upgraded_from is not None:
            self._details["opset_upgraded_from"] = upgraded_from
        model = onnx.load(str(path))
        _name_unnamed_nodes(model)
        self.prepared = shared / "model.onnx"
        save_model(model, self.prepared)
        res = self._run(self.config, out_path, self.work / "first", progress)
        if res.details is not None:
            self._pinned = [c for c in res.details.choices if c.option in PINNED_CHOICES]
        self.built[res.model_path] = res
        return res

    def build(self, keep_in_float: Sequence[str], tag: str) -> PassResult:
        """The shared graph quantized with `keep_in_float` (node names) left in float."""
        self._count += 1
        work = self.work / f"{tag}{self._count}"
        exclude = [*self.config.exclude, *self.gated, *keep_in_float]
        update: dict[str, object] = {"exclude": list(dict.fromkeys(exclude))}
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
        cfg = cfg.model_copy(
            update={"accuracy_aware": False, "sensitivity": False, "latency_gate": False}
        )
        pinned = {c.option: c.chosen for c in self._pinned}
        cfg = cfg.model_copy(update=pinned)
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
            # The first build's record of a pinned choice (with its trials), in its place.
            first = {c.option: c for c in self._pinned}
            choices = [first.pop(c.option, c) for c in res.details.choices]
            choices += first.values()  # pinned "off" records nothing in the build itself
            res.details = res.details.model_copy(update={**self._details, "choices": choices})
        return res
