"""Unit tests of the measurement helpers, with fake sessions where ONNX Runtime is not the point."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from compress_engine import EngineError
from compress_engine import device as device_mod
from compress_engine.inspect import TensorInfo
from compress_engine.measure.fidelity import compare_outputs
from compress_engine.measure.inputs import (
    DEFAULT_DYNAMIC_DIM,
    fidelity_batches,
    random_feed,
    resolve_shapes,
)
from compress_engine.measure.latency import measure_latency

IMAGE = TensorInfo(name="input", dtype="float32", shape=["batch", 1, 8, 8])
IDS = TensorInfo(name="input_ids", dtype="int64", shape=["batch", "seq"])
MASK = TensorInfo(name="mask", dtype="bool", shape=["batch", "seq"])


class FakeSession:
    """Just enough of onnxruntime.InferenceSession: `fn(feed)` gives the outputs."""

    def __init__(self, fn: Callable[[dict[str, np.ndarray]], list[np.ndarray]], outputs: int = 1):
        self._fn = fn
        self.runs = 0
        self._outputs = [SimpleNamespace(name=f"out{i}") for i in range(outputs)]

    def run(self, _names: Sequence[str] | None, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.runs += 1
        return self._fn(feed)

    def get_outputs(self) -> list[Any]:
        return self._outputs

    def get_providers(self) -> list[str]:
        return ["CPUExecutionProvider"]


# --- inputs ------------------------------------------------------------------------------


def test_dynamic_batch_gets_the_batch_size_and_other_symbols_a_default() -> None:
    shapes = resolve_shapes([IMAGE, IDS, MASK], batch_size=4)

    assert shapes == {
        "input": [4, 1, 8, 8],
        "input_ids": [4, DEFAULT_DYNAMIC_DIM],
        "mask": [4, DEFAULT_DYNAMIC_DIM],
    }


def test_overrides_are_used_verbatim_and_checked() -> None:
    assert resolve_shapes([IDS], 1, {"input_ids": [2, 128]}) == {"input_ids": [2, 128]}

    with pytest.raises(EngineError, match="fixes it at 8"):
        resolve_shapes([IMAGE], 1, {"input": [1, 1, 8, 9]})
    with pytest.raises(EngineError, match="has 2 dims but the input has 4"):
        resolve_shapes([IMAGE], 1, {"input": [1, 1]})
    with pytest.raises(EngineError, match="model's inputs are 'input'"):
        resolve_shapes([IMAGE], 1, {"pixels": [1, 1, 8, 8]})


def test_unsupported_inputs_are_explained() -> None:
    with pytest.raises(EngineError, match="type string"):
        resolve_shapes([TensorInfo(name="s", dtype="string", shape=[1])], 1)
    with pytest.raises(EngineError, match="no declared shape"):
        resolve_shapes([TensorInfo(name="x", dtype="float32", shape=[], rank_known=False)], 1)


def test_random_feed_is_seeded_typed_and_bounded() -> None:
    shapes = resolve_shapes([IMAGE, IDS, MASK], batch_size=2)

    a = random_feed([IMAGE, IDS, MASK], shapes, np.random.default_rng(7))
    b = random_feed([IMAGE, IDS, MASK], shapes, np.random.default_rng(7))
    c = random_feed([IMAGE, IDS, MASK], shapes, np.random.default_rng(8))

    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["input"], c["input"])
    assert a["input"].dtype == np.float32 and a["input"].shape == (2, 1, 8, 8)
    assert a["input_ids"].dtype == np.int64
    assert a["input_ids"].min() >= 0 and a["input_ids"].max() < 100
    assert a["mask"].dtype == np.bool_


def test_fidelity_batches_cover_the_requested_samples() -> None:
    shapes = resolve_shapes([IMAGE], batch_size=2)
    assert [s["input"][0] for s in fidelity_batches([IMAGE], shapes, 5)] == [2, 2, 1]

    fixed = TensorInfo(name="input", dtype="float32", shape=[4, 3])
    fixed_shapes = resolve_shapes([fixed], batch_size=2)
    # A fixed leading dim cannot be cut: whole feeds of 4.
    assert [s["input"][0] for s in fidelity_batches([fixed], fixed_shapes, 5)] == [4, 4]


# --- fidelity ----------------------------------------------------------------------------


def _feeds(n: int, batch: int = 3) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [{"input": rng.standard_normal((batch, 5)).astype(np.float32)} for _ in range(n)]


def test_identical_outputs_are_perfectly_faithful() -> None:
    same = FakeSession(lambda f: [f["input"] * 2])

    fid = compare_outputs(same, FakeSession(lambda f: [f["input"] * 2]), _feeds(4), total=4)

    assert fid.samples == 12
    assert fid.summary.max_abs_diff == 0.0
    assert fid.summary.cosine_similarity == pytest.approx(1.0)
    assert fid.summary.top1_agreement == 1.0


def test_it_measures_differences_and_top1_disagreement() -> None:
    ref = FakeSession(lambda f: [f["input"], f["input"][:, 0]], outputs=2)
    neg = FakeSession(lambda f: [-f["input"], f["input"][:, 0] + 0.5], outputs=2)

    fid = compare_outputs(ref, neg, _feeds(2), total=2)

    first, second = fid.per_output
    assert fid.summary == first
    assert first.cosine_similarity == pytest.approx(-1.0)
    assert first.top1_agreement is not None and first.top1_agreement < 0.5
    assert second.max_abs_diff == pytest.approx(0.5)
    assert second.mean_abs_diff == pytest.approx(0.5)
    assert second.top1_agreement is None  # 1-D output: no classes


def test_non_finite_outputs_give_no_figures() -> None:
    ref = FakeSession(lambda f: [f["input"]])
    nan = FakeSession(lambda f: [np.full_like(f["input"], np.nan)])

    fid = compare_outputs(ref, nan, _feeds(1), total=1)

    assert fid.summary.cosine_similarity is None
    assert fid.summary.max_abs_diff is None


def test_changed_output_shape_is_an_engine_error() -> None:
    ref = FakeSession(lambda f: [f["input"]])
    bad = FakeSession(lambda f: [f["input"][:, :2]])

    with pytest.raises(EngineError, match="has shape"):
        compare_outputs(ref, bad, _feeds(1), total=1)


# --- latency -----------------------------------------------------------------------------


def test_latency_runs_warmup_plus_timed_runs_and_reports_progress() -> None:
    session = FakeSession(lambda f: [f["input"]])
    seen: list[float] = []

    lat = measure_latency(
        session,  # type: ignore[arg-type]
        _feeds(1)[0],
        warmup=3,
        runs=25,
        batch_size=3,
        threads=2,
        progress=seen.append,
    )

    assert session.runs == 28
    assert lat.runs == 25 and lat.warmup == 3 and lat.batch_size == 3 and lat.threads == 2
    assert 0 < lat.p50_ms <= lat.p90_ms <= lat.p99_ms
    assert lat.throughput_per_s == pytest.approx(3 / (lat.p50_ms / 1000))
    assert lat.provider == "CPUExecutionProvider"
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) >= 3


def test_latency_lets_progress_exceptions_through() -> None:
    class Cancelled(Exception):
        pass

    def cancel(_fraction: float) -> None:
        raise Cancelled

    session = FakeSession(lambda f: [f["input"]])
    with pytest.raises(Cancelled):
        measure_latency(
            session,  # type: ignore[arg-type]
            _feeds(1)[0],
            warmup=0,
            runs=50,
            batch_size=1,
            threads=1,
            progress=cancel,
        )
    assert session.runs == 10  # stopped at the first progress report


# --- device ------------------------------------------------------------------------------


def test_cpu_only_when_no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device_mod, "cuda_device_count", lambda: 0)

    assert device_mod.select_providers() == ["CPUExecutionProvider"]
    assert device_mod.select_providers(prefer_gpu=False) == ["CPUExecutionProvider"]


def test_cuda_when_a_gpu_is_present(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device_mod, "cuda_device_count", lambda: 1)
    import onnxruntime

    expected = (
        ["CUDAExecutionProvider", "CPUExecutionProvider"]
        if "CUDAExecutionProvider" in onnxruntime.get_available_providers()
        else ["CPUExecutionProvider"]
    )
    assert device_mod.select_providers() == expected


def test_device_description_names_cpu_and_provider() -> None:
    assert device_mod.cuda_device_count() >= 0
    assert 1 <= device_mod.physical_cores() <= device_mod.usable_cpus()
    text = device_mod.describe_device()
    assert device_mod.cpu_model_name() in text
    assert "CPUExecutionProvider" in text


@pytest.mark.parametrize(
    ("text", "limit"),
    [("max 100000", None), ("400000 100000", 4), ("150000 100000", 1), ("50000 100000", 1)],
)
def test_a_container_cpu_quota_caps_the_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, limit: int | None
) -> None:
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text(text + "\n")
    monkeypatch.setattr(device_mod, "CGROUP_CPU_MAX", cpu_max)
    monkeypatch.setattr(device_mod.os, "sched_getaffinity", lambda _pid: set(range(64)))

    assert device_mod.cgroup_cpu_limit(cpu_max) == limit
    assert device_mod.usable_cpus() == (64 if limit is None else limit)


def test_without_a_cgroup_file_the_affinity_mask_decides(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(device_mod, "CGROUP_CPU_MAX", tmp_path / "absent")
    monkeypatch.setattr(device_mod.os, "sched_getaffinity", lambda _pid: {0, 1, 2})

    assert device_mod.usable_cpus() == 3
