"""Honest speed claims (issue 16, item 2): every latency ratio comes with the noise band an
identical copy of the original measures by the same method, a speed-up counts only beyond
it, and free dimensions are timed at the dataset's shape (or the user's), never a silent
guess. No test here asserts a wall-clock figure: the timing logic runs on a fake clock, and
real runs are checked for what their own band allows them to claim."""

from __future__ import annotations

import types
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from compress_engine import Recipe, compress
from compress_engine.auto import Candidate, choose
from compress_engine.cli import format_report, input_shapes, main
from compress_engine.errors import EngineError
from compress_engine.measure import latency as latency_module
from compress_engine.measure.latency import measure_against_copy, noise_band
from compress_engine.measure.timed_shapes import timed_shapes
from compress_engine.notes import speed_notes
from compress_engine.pipeline.original import measure_original
from compress_engine.pipeline.state import Run
from compress_engine.presets import get_preset
from compress_engine.report import Latency, ModelMeasurement, NoiseBand, Report
from compress_engine.report_figures import MIN_NOISE, speed_text
from compress_engine.tensors import TensorInfo

FAST = {"latency_runs": 12, "warmup": 1, "fidelity_samples": 4, "batch_sizes": []}
WIDTH = 40  # the dataset's width for the free-width model (the default guess is 16)


# --- models built here: exported from torch at opset 12 with dynamic dims -----------------


def _export(module, example, path: Path, axes: dict[str, dict[int, str]]) -> Path:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            (example,),
            str(path),
            dynamo=False,
            opset_version=12,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes=axes,
        )
    return path


@pytest.fixture(scope="module")
def free_width_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """x [batch, 1, 8, width] -> y [batch, 3]: a line recogniser's free width."""
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.head = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("free") / "free_width.onnx"
    axes = {"x": {0: "batch", 3: "width"}, "y": {0: "batch"}}
    return _export(Net(), torch.randn(1, 1, 8, 24), path, axes)


@pytest.fixture(scope="module")
def free_width_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("free-data") / "lines.npz"
    np.savez(path, x=rng.standard_normal((12, 1, 8, WIDTH)).astype(np.float32))
    return path


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A classifier so small that per-run overhead is all its latency: int8 cannot help
    (static int8 adds Q/DQ pairs, dynamic int8 quantizes only its tiny head)."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3)
    )
    folder = tmp_path_factory.mktemp("tiny")
    axes = {"x": {0: "batch"}, "y": {0: "batch"}}
    model = _export(net, torch.randn(1, 1, 4, 4), folder / "tiny.onnx", axes)
    data = folder / "tiny.npz"
    rng = np.random.default_rng(1)
    np.savez(data, x=rng.standard_normal((16, 1, 4, 4)).astype(np.float32))
    return model, data


# --- the interleaved timing and its noise band, on a fake clock ----------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


class _Session:
    """Takes `ms(k)` milliseconds of fake time on its k-th run."""

    def __init__(self, name: str, clock: _Clock, ms: Callable[[int], float], calls: list[str]):
        self.name, self.clock, self.ms, self.calls, self.runs = name, clock, ms, calls, 0

    def run(self, _outputs: object, _feed: object) -> None:
        self.clock.now += self.ms(self.runs) / 1e3
        self.runs += 1
        self.calls.append(self.name)

    def get_providers(self) -> list[str]:
        return ["CPUExecutionProvider"]


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    fake = _Clock()
    monkeypatch.setattr(
        latency_module, "time", types.SimpleNamespace(perf_counter=fake.perf_counter)
    )
    return fake


def test_the_copy_is_one_more_model_in_the_same_rotation(clock: _Clock) -> None:
    calls: list[str] = []
    original, result, copy = (_Session(n, clock, lambda _k: 1.0, calls) for n in "orc")

    measure_against_copy(
        (original, {}), copy, [(result, {})], warmup=0, runs=3, batch_size=1, threads=1
    )

    # Each round rotates by one, so every model takes every position (no extra timing phase).
    assert calls == ["o", "r", "c", "r", "c", "o", "c", "o", "r"]


def test_an_identical_copy_lands_inside_its_band_and_a_real_gain_outside(clock: _Clock) -> None:
    calls: list[str] = []
    original = _Session("o", clock, lambda _k: 1.0, calls)
    copy = _Session("c", clock, lambda _k: 1.0, calls)
    result = _Session("r", clock, lambda _k: 0.5, calls)

    o, (r,), band = measure_against_copy(
        (original, {}), copy, [(result, {})], warmup=1, runs=20, batch_size=1, threads=1
    )

    assert band.low == band.high == pytest.approx(1.0)
    assert band.noise == MIN_NOISE and band.blocks == 5 and band.rounds == 20
    assert band.verdict(1.0) == "unchanged"
    assert band.verdict(o.p50_ms / r.p50_ms) == "faster"
    assert speed_text(o.p50_ms / r.p50_ms, band) == "2.00× faster (noise ±2%)"


def test_the_band_spans_the_copy_drifting_between_blocks(clock: _Clock) -> None:
    calls: list[str] = []
    original = _Session("o", clock, lambda _k: 1.0, calls)
    # The copy slows down by 30% halfway: the band must show it, so a 1.2x "gain" is noise.
    copy = _Session("c", clock, lambda k: 1.0 if k < 11 else 1.3, calls)
    result = _Session("r", clock, lambda _k: 1 / 1.2, calls)

    o, (r,), band = measure_against_copy(
        (original, {}), copy, [(result, {})], warmup=1, runs=20, batch_size=1, threads=1
    )

    assert band.low == pytest.approx(1 / 1.3) and band.high == pytest.approx(1.0)
    assert band.noise == pytest.approx(0.3)
    speedup = o.p50_ms / r.p50_ms
    assert band.verdict(speedup) == "unchanged"
    assert speed_text(speedup, band) == "no measurable speed change (1.20×, noise ±30%)"


def test_noise_band_uses_one_ratio_when_there_are_too_few_rounds() -> None:
    band = noise_band(np.array([1.0, 1.1, 1.0]), np.array([1.0, 1.0, 1.2]))
    assert band.blocks == 1 and band.low == band.high == pytest.approx(1.0)


def test_a_result_that_is_the_original_widens_the_band_instead_of_claiming() -> None:
    band = NoiseBand.from_ratios([0.99, 1.01], blocks=2, rounds=8)
    assert band.verdict(1.2) == "faster"
    assert band.including(1.2).verdict(1.2) == "unchanged"
    assert band.including(1 / 1.2).verdict(1 / 1.2) == "unchanged"


def test_speed_text_says_slower_and_copes_without_a_band() -> None:
    band = NoiseBand.from_ratios([0.96, 1.04], blocks=5, rounds=50)
    assert speed_text(0.5, band) == "2.00× slower (noise ±4%)"
    assert speed_text(1.42, None) == "1.42× faster (noise not measured)"
    assert speed_text(None, band) == "not measured"


# --- auto decides with the band (measured Latency objects in, a decision out) -------------


def _latency(p50_ms: float) -> Latency:
    return Latency(
        p50_ms=p50_ms,
        p90_ms=p50_ms,
        p99_ms=p50_ms,
        mean_ms=p50_ms,
        runs=50,
        warmup=5,
        batch_size=1,
        throughput_per_s=1e3 / p50_ms,
        provider="CPUExecutionProvider",
        threads=2,
        interleaved=True,
    )


def test_auto_keeps_the_original_when_the_gain_is_inside_the_noise() -> None:
    # The case: dynamic int8 quantized almost nothing (size 0.93) and "1.95x faster"
    # was timing noise: an identical copy timed as far from the original.
    original = Candidate.measured("original", 1000, _latency(10.0))
    dynamic = Candidate.measured("dynamic-int8", 930, _latency(10.0 / 1.95))
    wide = NoiseBand.from_ratios([0.5, 2.0], blocks=5, rounds=50)

    kept = choose(original, [dynamic], "latency", wide)
    assert kept.pick is None
    assert "keep the original" in kept.reason
    assert "no measurable speed change (1.95×, noise ±100%)" in kept.reason

    tight = NoiseBand.from_ratios([0.98, 1.03], blocks=5, rounds=50)
    picked = choose(original, [dynamic], "latency", tight)
    assert picked.pick is dynamic and "1.95× faster (noise ±3%)" in picked.reason


def test_auto_never_answers_with_a_result_slower_beyond_the_band() -> None:
    original = Candidate.measured("original", 1000, _latency(10.0))
    smaller_slower = Candidate.measured("static-int8", 300, _latency(16.0))  # the tiny CNN
    band = NoiseBand.from_ratios([0.95, 1.05], blocks=5, rounds=50)

    for objective in ("latency", "size"):
        decision = choose(original, [smaller_slower], objective, band)
        assert decision.pick is None and "1.60× slower" in decision.reason


def test_notes_never_claim_a_speed_up_inside_the_band() -> None:
    def measured(p50: float) -> ModelMeasurement:
        lat = _latency(p50)
        return ModelMeasurement(
            size_bytes=1, parameters=1, latency=lat, latency_by_batch={"1": lat}
        )

    wide = {"1": NoiseBand.from_ratios([0.8, 1.25], blocks=5, rounds=50)}
    inside = speed_notes(measured(10.0), measured(10.0 / 1.2), wide)
    assert any("No measurable speed change (batch 1: 1.20×, noise ±25%)" in n for n in inside)
    assert not any("× faster" in n for n in inside)

    tight = {"1": NoiseBand.from_ratios([0.99, 1.01], blocks=5, rounds=50)}
    slower = speed_notes(measured(10.0), measured(15.0), tight)
    assert any("slower than the original" in n and "1.50× slower" in n for n in slower)


# --- the tiny classifier end to end: auto returns the original, the report claims nothing --


def test_auto_returns_the_original_for_a_tiny_classifier_int8_cannot_help(
    tiny_classifier: tuple[Path, Path], tmp_path: Path
) -> None:
    model, data = tiny_classifier
    recipe = {"steps": [{"quantize": {"mode": "auto"}}], "evaluate": FAST}

    report = compress(model, recipe, data, tmp_path)

    auto = report.auto
    assert auto is not None and auto.pick is None and auto.noise is not None
    assert {c.mode for c in auto.candidates} == {"static-int8", "dynamic-int8"}
    assert report.artifacts[0].name == "model.original.onnx"
    # Every ratio carries its band; the original timed against itself is never a speed-up.
    assert set(report.latency_noise_by_batch) == set(report.original.latency_by_batch)
    assert report.speed_verdict() == "unchanged"
    assert report.speed_text().startswith("no measurable speed change")
    main_row = next(r for r in report.runtimes if r.original == report.original.latency)
    assert main_row.noise is not None and main_row.speed_text() == report.speed_text()
    printed = format_report(report)
    assert "speed (batch 1): no measurable speed change" in printed
    assert "× faster" not in printed and not any("× faster" in n for n in report.notes)
    # Old reports (no band) still load.
    old = report.model_dump(mode="json", exclude={"latency_noise_by_batch", "auto"})
    assert "noise not measured" in Report.model_validate(old).speed_text()


def test_an_unstable_multi_thread_figure_is_also_timed_at_one_thread(
    tiny_classifier: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Any band counts as unstable here, so the 1-thread timing must follow.
    monkeypatch.setattr("compress_engine.pipeline.result.UNSTABLE_NOISE", 0.0)
    model, _ = tiny_classifier
    recipe = {
        "steps": [{"quantize": {"mode": "dynamic-int8"}}],
        "evaluate": {**FAST, "threads": 2},
    }

    report = compress(model, recipe, None, tmp_path)

    row = next(r for r in report.runtimes if r.runtime == "CPU, 1 thread")
    assert row.status == "ok" and row.noise is not None
    assert row.original is not None and row.original.threads == 1
    assert report.original.latency.threads == 2
    assert any("also timed at 1 thread" in n for n in report.notes)


# --- free dimensions: timed at the dataset's shape, or the user's, or said to be a guess ---


FREE = TensorInfo(name="x", dtype="float32", shape=["batch", 1, 8, "width"])


def test_free_dims_take_the_dataset_shape_the_user_shape_or_a_named_guess() -> None:
    sample = {"x": np.zeros((1, 1, 8, WIDTH), np.float32)}

    from_data = timed_shapes([FREE], 2, None, sample)
    assert from_data.shapes == {"x": [2, 1, 8, WIDTH]} and from_data.sources == {"x": "dataset"}
    assert from_data.default_note() is None

    given = timed_shapes([FREE], 1, {"x": [1, 1, 8, 320]}, sample)
    assert given.shapes == {"x": [1, 1, 8, 320]} and given.sources == {"x": "input_shapes"}

    guessed = timed_shapes([FREE], 1, None, None)
    assert guessed.shapes == {"x": [1, 1, 8, 16]} and guessed.sources == {"x": "default"}
    note = guessed.default_note()
    assert note is not None and "'width' (dim 3) of input 'x'" in note
    assert "--input-shape x=1x1x8x<width>" in note

    fixed = TensorInfo(name="x", dtype="float32", shape=["batch", 1, 8, 8])
    assert timed_shapes([fixed], 1, None, None).sources == {"x": "model"}


def test_a_free_width_model_is_timed_at_the_dataset_shape(
    free_width_model: Path, free_width_npz: Path, tmp_path: Path
) -> None:
    from compress_engine.data import load_dataset

    recipe = Recipe.parse({"steps": [{"quantize": {"mode": "dynamic-int8"}}], "evaluate": FAST})
    work = tmp_path / "work"
    work.mkdir()
    dataset = load_dataset(free_width_npz)
    original = measure_original(Run(free_width_model, recipe, tmp_path, work), dataset)

    assert original.shapes == {"x": [1, 1, 8, WIDTH]}
    # The timed feed is the dataset's own first sample, not random numbers of a guessed shape.
    np.testing.assert_array_equal(original.feed["x"], dataset.inputs["x"][:1])

    report = compress(free_width_model, recipe, free_width_npz, tmp_path / "out")
    assert report.input_shapes == {"x": [1, 1, 8, WIDTH]}
    assert report.input_shape_sources == {"x": "dataset"}
    assert f"x [1, 1, 8, {WIDTH}] (the dataset's shape)" in format_report(report)
    assert not any("--input-shape" in n for n in report.notes)


def test_without_a_dataset_the_report_says_the_free_dim_was_guessed(
    free_width_model: Path, tmp_path: Path
) -> None:
    recipe = {"steps": [{"quantize": {"mode": "dynamic-int8"}}], "evaluate": FAST}

    report = compress(free_width_model, recipe, None, tmp_path)

    assert report.input_shape_sources == {"x": "default"}
    assert any(
        "timed at 16 for free dim 'width'" in n and "--input-shape" in n for n in report.notes
    )


def test_a_model_that_cannot_run_at_the_default_guess_is_timed_at_a_larger_one(
    tmp_path: Path,
) -> None:
    # A 33x33 kernel without padding needs at least 33x33: the default 16 fails, 64 runs
    # (a detector's branches of different strides fail the same way at small sizes).
    from onnx import TensorProto, helper, numpy_helper

    from model_builders import save_graph

    weight = np.random.default_rng(0).standard_normal((2, 1, 33, 33)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="conv")],
        "big_kernel",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2, "oh", "ow"])],
        [numpy_helper.from_array(weight, "w")],
    )
    path = save_graph(graph, tmp_path / "big_kernel.onnx")

    report = compress(
        path, {"steps": [{"quantize": {"mode": "fp16"}}], "evaluate": FAST}, None, tmp_path / "o"
    )

    assert report.input_shapes == {"x": [1, 1, 64, 64]}
    assert any(
        "timed at 64 for free dims" in n and "does not run at 16)" in n for n in report.notes
    )


def test_the_cli_input_shape_reaches_the_recipe_and_the_report(
    free_width_model: Path, free_width_npz: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "compress",
            str(free_width_model),
            "--preset",
            "fast-int8",
            "--data",
            str(free_width_npz),
            "--input-shape",
            "x=1x1x8x48",
            "--out",
            str(tmp_path / "out"),
            "-q",
        ]
    )

    assert code == 0
    report = Report.model_validate_json((tmp_path / "out" / "report.json").read_text())
    assert report.recipe["evaluate"]["input_shapes"] == {"x": [1, 1, 8, 48]}
    assert report.input_shapes == {"x": [1, 1, 8, 48]}
    assert report.input_shape_sources == {"x": "input_shapes"}
    assert "set by evaluate.input_shapes" in capsys.readouterr().out


def test_input_shape_values_parse_and_bad_ones_are_explained() -> None:
    assert input_shapes(["x=1x3x48x320", "mask=1x48"]) == {"x": [1, 3, 48, 320], "mask": [1, 48]}
    for bad in ("1x3x48x320", "x=1x3 int64", "x=1xx3"):
        with pytest.raises(EngineError, match="--input-shape"):
            input_shapes([bad])
    with pytest.raises(EngineError, match="twice"):
        input_shapes(["x=1x2", "x=1x3"])
    recipe = get_preset("auto").recipe(input_shapes={"x": [1, 3, 48, 320]})
    assert recipe.evaluate.input_shapes == {"x": [1, 3, 48, 320]}
