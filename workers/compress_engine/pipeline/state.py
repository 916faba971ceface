"""What every stage of a compress() run shares: its inputs and scratch folder, its progress,
and the step timings and notes it collects on the way."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from compress_engine.catalog import progress_layout
from compress_engine.configs import EvaluateConfig, Recipe
from compress_engine.device import CPU_PROVIDER, physical_cores
from compress_engine.report import StepTiming, TrainingPoint
from compress_engine.stages import Layout

ProgressCallback = Callable[[str, float], None]


class Progress:
    """Maps per-stage progress onto one non-decreasing overall fraction."""

    def __init__(self, callback: ProgressCallback | None) -> None:
        self._callback = callback
        self._label = ""
        self._lo = self._hi = self._last = 0.0

    def stage(self, label: str, lo: float, hi: float) -> None:
        self._label, self._lo, self._hi = label, lo, hi
        self._emit(lo)

    def sub(self, fraction: float) -> None:
        """Progress within the current stage, 0..1."""
        self._emit(self._lo + (self._hi - self._lo) * min(max(fraction, 0.0), 1.0))

    def done(self) -> None:
        self._label = "Done"
        self._emit(1.0)

    def _emit(self, value: float) -> None:
        self._last = max(self._last, min(value, 1.0))
        if self._callback is not None:
            self._callback(self._label, self._last)


@dataclass
class Hooks:
    """What the caller hands to torch-side passes: a training-curve sink and teachers."""

    on_training: Callable[[TrainingPoint], None] | None = None
    teachers: dict[str, Path] = field(default_factory=dict)


@dataclass
class Run:
    """One compress() run: the unpacked model, the recipe, where files go, and what the
    stages collect (timings and notes, in the order they happen)."""

    model: Path  # the original .onnx, unpacked from its zip if it came as one
    recipe: Recipe
    out_dir: Path
    work: Path  # scratch folder inside out_dir (same filesystem: placing is a rename)
    tracker: Progress = field(default_factory=lambda: Progress(None))
    # Files moved into out_dir so far; compress() removes them if the run fails.
    placed: list[Path] = field(default_factory=list)
    hooks: Hooks = field(default_factory=Hooks)
    timings: list[StepTiming] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # GPU measurement comes with the GPU worker queue.
    providers: list[str] = field(default_factory=lambda: [CPU_PROVIDER])
    threads: int = 0  # 0: evaluate.threads, else the machine's physical cores

    # Where each stage sits in the run's progress (the catalog's stage plan reads the same).
    layout: Layout = field(init=False)

    def __post_init__(self) -> None:
        if not self.threads:
            self.threads = self.ev.threads or physical_cores()
        self.layout = progress_layout(self.recipe)

    @property
    def ev(self) -> EvaluateConfig:
        return self.recipe.evaluate

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        """Records the block's wall time as a step of the report."""
        start = time.perf_counter()
        yield
        self.timings.append(StepTiming(name=name, wall_s=time.perf_counter() - start))
