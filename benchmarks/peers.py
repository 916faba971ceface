"""NNCF's post-training quantization as peer rows: what a user following NNCF's documentation
would run on the ONNX file (ONNX backend), on the same samples as the other rows.

- `nncf-default`: `nncf.quantize` with its defaults on every calibration sample (the samples
  `ort-default-static` calibrates on). Transformer models (the embedding models) get
  `model_type=ModelType.TRANSFORMER`, as NNCF's docs tell users to pass for them.
- `nncf-accuracy-control`: `nncf.quantize_with_accuracy_control` calibrated on the calibration
  split and validated on the held-out rest of the calibration file: the same split, and the
  same budget, as our `accuracy-aware` recipe for that model (a model without one gets NNCF's
  default max_drop, and the log says so). NNCF returns a model even where it misses the budget;
  the log says whether it held. Known with nncf 3.4.0: for a TRANSFORMER model it reverts layers
  to their original weights but keeps SmoothQuant's activation scales in front of them, so the
  more it reverts the worse the model gets (MiniLM: cosine ~0.05 with every layer in float).

Samples are fed one per item: NNCF's docs do not support batches above 1 for transformers, and
a fixed batch-1 model takes nothing else. Telemetry is never sent and NNCF's logs and progress
bars are kept off the table (`_nncf`, `_quiet`). Everything is written under `out`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from benchmarks.models import BenchModel

Feed = dict[str, np.ndarray]
# NNCF's own default max_drop, for a model that has no accuracy-aware recipe to match.
NNCF_DEFAULT_MAX_DROP = 0.01


def nncf_default(model: BenchModel, out: Path) -> Path:
    import onnx

    nncf = _nncf()
    dataset = nncf.Dataset(list(_items(model.calib_inputs)))
    with _quiet(nncf):
        quantized = nncf.quantize(
            onnx.load(str(model.onnx_path)), dataset, model_type=_model_type(nncf, model)
        )
    path = out / "model.nncf.onnx"
    onnx.save(quantized, str(path))
    return path


def nncf_accuracy_control(model: BenchModel, out: Path) -> Path:
    import onnx

    nncf = _nncf()
    calibration, held_out, labels = _engine_split(model)
    metric = _Metric.for_model(model, labels)
    original = onnx.load(str(model.onnx_path))
    # Each validation item carries what it is scored against: its label, or the fp32 model's
    # top-1 class or first output.
    targets = metric.targets(_session(original), held_out, labels)
    items = list(zip(_items(held_out), targets, strict=True))
    validation = nncf.Dataset(items, _feed)
    _log(f"[{model.name}] nncf-accuracy-control: {metric.describe()}")
    with _quiet(nncf):
        quantized = nncf.quantize_with_accuracy_control(
            original,
            nncf.Dataset(list(_items(calibration))),
            validation,
            metric.validate,
            max_drop=metric.max_drop,
            model_type=_model_type(nncf, model),
        )
    # NNCF returns a model even when it could not hold the budget (it says so only in the log
    # silenced above): say how it did on its own validation data.
    before, after = metric.validate(original, items)[0], metric.validate(quantized, items)[0]
    held = "held" if before - after <= metric.max_drop + 1e-9 else "NOT held"
    _log(
        f"[{model.name}] nncf-accuracy-control: held-out {metric.kind} {before:.5f} -> "
        f"{after:.5f}, budget {held}"
    )
    path = out / "model.nncf-ac.onnx"
    onnx.save(quantized, str(path))
    return path


# --- validation ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Metric:
    """What the validation function scores (higher is better, 1.0 = the fp32 model) and the
    drop NNCF may give up, in the same units."""

    kind: str  # "accuracy" (labels), "agreement" (fp32 top-1) or "cosine" (fp32 first output)
    max_drop: float
    source: str  # where the budget comes from, for the log

    @classmethod
    def for_model(cls, model: BenchModel, labels: np.ndarray | None) -> _Metric:
        classifier = model.kind == "classifier"
        kind = ("accuracy" if labels is not None else "agreement") if classifier else "cosine"
        budget = _our_budget(model.name)
        if budget is None:
            return cls(kind, NNCF_DEFAULT_MAX_DROP, "NNCF's default (no accuracy-aware recipe)")
        key, value = budget
        # Points of accuracy are fractions here; a cosine floor is a drop from 1.0, scored
        # on the same metric as ours (cosine to fp32), labels or not.
        drop = value / 100.0 if key == "max_accuracy_drop" else 1.0 - value
        if key == "min_fidelity":
            kind = "cosine"
        return cls(kind, round(drop, 9), f"accuracy-aware's evaluate.{key}={value}")

    def describe(self) -> str:
        return f"validation metric {self.kind}, max_drop {self.max_drop:g} ({self.source})"

    def targets(self, original: Any, inputs: Feed, labels: np.ndarray | None) -> list[Any]:
        if self.kind == "accuracy":
            assert labels is not None
            return [int(y) for y in labels]
        outs = [_first_output(original, feed) for feed in _items(inputs)]
        return [int(o.argmax()) for o in outs] if self.kind == "agreement" else outs

    def validate(self, model: Any, items: Iterable[tuple[Feed, Any]]) -> tuple[float, list[float]]:
        """NNCF's validation_fn: (mean, per-item values), so its ranking scores subsets
        without a session per sample."""
        session = _session(model)
        values = []
        for feed, target in items:
            got = _first_output(session, feed)
            if self.kind == "cosine":
                values.append(_cosine(got, target))
            else:  # accuracy against a label, agreement against the fp32 top-1: same test
                values.append(float(int(got.argmax()) == int(target)))
        return float(np.mean(values)), values


def _our_budget(name: str) -> tuple[str, float] | None:
    """(evaluate key, value) of our accuracy-aware recipe for model `name`, if it has one."""
    from benchmarks.variants import ENGINE_VARIANTS

    for ev in ENGINE_VARIANTS:
        if ev.name == "accuracy-aware" and (ev.models is None or name in ev.models):
            for key in ("max_accuracy_drop", "min_fidelity"):
                if ev.evaluate.get(key) is not None:
                    return key, float(ev.evaluate[key])
    return None


def _engine_split(model: BenchModel) -> tuple[Feed, Feed, np.ndarray | None]:
    """(calibration, held-out, held-out labels or None): the split compress() makes of the
    calibration file with evaluate's default fraction and seed."""
    from compress_engine.configs import EvaluateConfig
    from compress_engine.data import Dataset

    with np.load(model.calib_path) as npz:
        labels = np.asarray(npz["y"], dtype=np.int64) if "y" in npz.files else None
    ev = EvaluateConfig()
    calibration, held_out = Dataset(dict(model.calib_inputs), labels).split(
        ev.calibration_fraction, seed=ev.seed
    )
    held_labels = held_out.labels if model.kind == "classifier" else None
    return calibration.inputs, held_out.inputs, held_labels


# --- helpers ------------------------------------------------------------------------------


def _items(inputs: Feed) -> Iterator[Feed]:
    """One feed per sample, batch dimension kept."""
    n = len(next(iter(inputs.values())))
    for i in range(n):
        yield {k: v[i : i + 1] for k, v in inputs.items()}


def _feed(item: tuple[Feed, Any]) -> Feed:
    return item[0]


def _session(model: Any) -> Any:
    """A CPU session on an in-memory ModelProto (NNCF hands models to validation as such)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(
        model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"]
    )


def _first_output(session: Any, feed: Feed) -> np.ndarray:
    return np.asarray(session.run(None, feed)[0], dtype=np.float64).ravel()


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return 1.0 if na == nb else 0.0
    return float(a @ b) / (na * nb)


def _model_type(nncf: ModuleType, model: BenchModel) -> Any:
    # The embedding models are transformers (MiniLM); NNCF's docs ask for TRANSFORMER there.
    return nncf.ModelType.TRANSFORMER if model.kind == "embedding" else None


def _nncf() -> ModuleType:
    """nncf, imported with its telemetry off.

    NNCF reports usage through openvino-telemetry (and writes a client id under ~/intel) as
    soon as it is imported; when that import fails it uses a no-op stub instead, so the
    import is blocked for the moment nncf loads.
    """
    # Importing nncf loads torch's C++ extension helper, which warns about CUDA_HOME on a
    # machine without a GPU: nothing NNCF's ONNX backend uses.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    blocked = "nncf" not in sys.modules and "openvino_telemetry" not in sys.modules
    if blocked:
        sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]
    try:
        import nncf
    finally:
        if blocked:
            del sys.modules["openvino_telemetry"]
    return nncf


@contextlib.contextmanager
def _quiet(nncf: ModuleType) -> Iterator[None]:
    """NNCF's INFO log and rich progress bars go to stdout, where the table is printed."""
    nncf.set_log_level(logging.ERROR)
    with (
        contextlib.redirect_stdout(io.StringIO()),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        yield


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
