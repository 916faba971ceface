"""Accuracy-aware tuning that improves things: the ranking finds a deliberately sensitive
layer, the search beats plain int8 with no trial file larger than the original and stops early
when nothing helps, and repeated library warnings become one line each."""

from __future__ import annotations

import logging
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compress_engine import Report, compress
from compress_engine.library_logs import LIBRARY_LOGGER, aggregated_library_logs
from compress_engine.search import fallback_search, fallback_units, pick_units, search_order
from compress_engine.search.sensitivity import LayerSensitivity

SENSITIVE = "/fc2/Gemm"
FAST = {"latency_runs": 8, "warmup": 1, "batch_sizes": []}


def export_outlier_activation_mlp(path: Path) -> Path:
    """fc1 -> relu -> fc2 -> tanh -> fc3 -> relu -> fc4, from torch at opset 12 with a dynamic
    batch. One output channel of fc2 is 2000x larger than the rest: tanh saturates it, so the
    float model is fine, but 8-bit activations over fc2's output range round every other
    channel to a few levels. Only fc2's own output carries the outlier: the sensitive layer
    by construction (its weights are a third of the model's)."""
    import torch

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = torch.nn.Linear(16, 256)
            self.fc2 = torch.nn.Linear(256, 64)
            self.fc3 = torch.nn.Linear(64, 256)
            self.fc4 = torch.nn.Linear(256, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.tanh(self.fc2(torch.relu(self.fc1(x))))
            return self.fc4(torch.relu(self.fc3(h)))

    torch.manual_seed(0)
    net = Net().eval()
    with torch.no_grad():
        net.fc2.weight[0] *= 2000.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        torch.onnx.export(
            net,
            (torch.randn(2, 16),),
            str(path),
            dynamo=False,
            opset_version=12,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
        )
    return path


@pytest.fixture(scope="module")
def sensitive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("sensitive")
    data = folder / "x.npz"
    np.savez(data, x=np.random.default_rng(0).standard_normal((96, 16)).astype(np.float32))
    return export_outlier_activation_mlp(folder / "mlp.onnx"), data


def _static(
    sensitive: tuple[Path, Path], out: Path, min_fidelity: float = 0.999, **quantize: Any
) -> Report:
    model, data = sensitive
    recipe = {
        "steps": [{"quantize": {"mode": "static-int8", **quantize}}],
        "evaluate": {"min_fidelity": min_fidelity, **FAST},
    }
    return compress(model, recipe, data=data, out_dir=out)


@pytest.fixture(scope="module")
def searched(sensitive: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Report:
    return _static(sensitive, tmp_path_factory.mktemp("searched"), accuracy_aware=True)


@pytest.fixture(scope="module")
def plain(sensitive: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Report:
    return _static(sensitive, tmp_path_factory.mktemp("plain"))


# --- the deliberately sensitive layer --------------------------------------------------


def test_the_sensitive_layer_is_ranked_first_by_far(searched: Report) -> None:
    ranked = searched.sensitivity
    assert ranked is not None and ranked[0].node == SENSITIVE
    assert ranked[0].relative_error > 10 * ranked[1].relative_error
    # It stays float with the tanh that reads its output, so that output is never rounded.
    assert ranked[0].members == [SENSITIVE, "/Tanh"]
    assert ranked[0].fallback_bytes == 3 * 256 * 64


def test_the_search_beats_plain_int8_and_no_trial_is_larger_than_the_original(
    searched: Report, plain: Report
) -> None:
    s = searched.search
    assert s is not None and s.metric == "cosine" and s.trials[0].kept_in_float == []
    plain_cosine = plain.fidelity.summary.cosine_similarity
    # Trial 0 is plain static int8 (the same graph, the same ranges).
    assert s.trials[0].metric == pytest.approx(plain_cosine, abs=1e-6)
    assert plain_cosine < 0.95  # plain int8 is broken by the outlier
    assert s.trials[1].kept_in_float == [SENSITIVE] and s.trials[1].improved
    chosen = s.trials[s.chosen]
    assert SENSITIVE in chosen.kept_in_float
    assert searched.fidelity.summary.cosine_similarity == pytest.approx(chosen.metric)
    assert chosen.metric > plain_cosine + 0.1
    assert s.met == (chosen.metric >= 0.999) and s.met
    assert s.original_size_bytes == searched.original.size_bytes
    assert all(t.size_bytes < searched.original.size_bytes for t in s.trials)
    assert searched.result.size_bytes < searched.original.size_bytes
    # Every trial is timed against the original and judged against the noise band.
    assert all(t.p50_ms and t.p50_ms > 0 and t.speed is not None for t in s.trials)
    assert s.stop_reason == f"trial {s.chosen} meets the budget"
    assert any(
        f"keeping {len(chosen.kept_in_float)} layer(s) in float" in n for n in searched.notes
    )


def test_every_trial_reads_the_same_prepared_graph(searched: Report) -> None:
    # The kept trial's exclusions are the layer and its output chain, by their names in the
    # one graph every build quantized (no second optimisation renamed anything).
    q = searched.quantization
    assert q is not None and SENSITIVE in q.excluded and "/Tanh" in q.excluded
    assert q.calibration_samples == 48 and q.opset_upgraded_from == 12


def test_a_trial_below_the_quality_floor_is_never_the_answer(
    sensitive: tuple[Path, Path], tmp_path: Path
) -> None:
    # Plain int8 meets a loose budget (cosine >= 0.5) but not the default quality floor
    # (top-1 agreement >= 90%): the search runs for the floor and answers with a trial that
    # passes it.
    report = _static(sensitive, tmp_path, min_fidelity=0.5, accuracy_aware=True)
    s = report.search
    assert s is not None and s.trials[0].meets_budget and s.trials[0].rejected
    chosen = s.trials[s.chosen]
    assert chosen.index > 0 and chosen.meets_budget and not chosen.rejected
    assert report.recommended and s.met


def test_no_trial_on_a_real_detector_is_larger_than_the_original(tmp_path: Path) -> None:
    import third_party_models as tpm

    model = tpm.dense_map_detector(tmp_path)  # 5 convs, sigmoid map head, opset 11
    data = tpm.blobs_npz(tmp_path / "blobs.npz", n=32)
    recipe = {
        "steps": [{"quantize": {"mode": "static-int8", "accuracy_aware": True}}],
        # Stricter than int8 reaches: the search runs until layers no longer fit.
        "evaluate": {"min_fidelity": 0.9999999, **FAST},
    }
    report = compress(model, recipe, data=data, out_dir=tmp_path / "out")

    s = report.search
    assert s is not None and len(s.trials) >= 2
    original = report.original.size_bytes
    assert all(t.size_bytes < original for t in s.trials)
    assert report.result.size_bytes < original
    # The head is tried with the sigmoid that reads it: the map itself is never rounded.
    head = next(r for r in report.sensitivity or [] if r.node == "/head/Conv")
    assert head.members == ["/head/Conv", "/Sigmoid"]
    assert s.trials[s.chosen].metric >= s.trials[0].metric
    assert s.stop_reason and any(s.stop_reason in n for n in report.notes)


# --- the search algorithm --------------------------------------------------------------


def _fake(metrics: dict[tuple[str, ...], float], built: list[tuple[str, ...]]) -> dict[str, Any]:
    paths = {kept: Path("/".join(("trial", *kept))) for kept in metrics}

    def build(kept: Any) -> Path:
        built.append(tuple(kept))
        return paths[tuple(kept)]

    return {
        "build": build,
        "evaluate": lambda path: metrics[next(k for k, p in paths.items() if p == path)],
        "meets_budget": lambda m: m >= 0.999,
        "improves": lambda new, old: new > old + 0.001,
    }


def test_it_stops_after_two_trials_that_do_not_improve() -> None:
    built: list[tuple[str, ...]] = []
    metrics = {(): 0.90, ("a",): 0.95, ("a", "b"): 0.95, ("a", "c"): 0.9505}
    outcome = fallback_search(["a", "b", "c", "d", "e"], max_trials=10, **_fake(metrics, built))

    assert built == [(), ("a",), ("a", "b"), ("a", "c")]  # d and e are never built
    assert [t.improved for t in outcome.trials] == [True, True, False, False]
    assert outcome.best.index == 1 and not outcome.met_budget
    assert "the last 2 trials did not improve on trial 1" in outcome.stop_reason


def test_each_trial_builds_on_the_last_one_that_improved() -> None:
    built: list[tuple[str, ...]] = []
    metrics = {(): 0.9, ("a",): 0.8, ("b",): 0.95, ("b", "c"): 0.9995}
    outcome = fallback_search(["a", "b", "c"], max_trials=10, **_fake(metrics, built))

    assert built == [(), ("a",), ("b",), ("b", "c")]  # "a" made it worse: dropped
    assert outcome.met_budget and outcome.best.kept_in_float == ("b", "c")
    assert outcome.stop_reason == "trial 3 meets the budget"


def test_layers_that_would_not_fit_are_skipped_unbuilt() -> None:
    built: list[tuple[str, ...]] = []
    metrics = {(): 0.9, ("a",): 0.95, ("a", "c"): 0.96}
    outcome = fallback_search(
        ["a", "big", "c"],
        max_trials=10,
        fits=lambda kept: "big" not in kept,
        **_fake(metrics, built),
    )
    assert built == [(), ("a",), ("a", "c")] and outcome.skipped == ["big"]


def test_a_rejected_trial_is_never_the_answer() -> None:
    built: list[tuple[str, ...]] = []
    metrics = {(): 0.9, ("a",): 0.95, ("a", "b"): 0.9999}
    fake = _fake(metrics, built)
    outcome = fallback_search(
        ["a", "b"],
        max_trials=10,
        reject=lambda path: ["below the quality floor"] if path.name == "b" else [],
        **fake,
    )
    # Trial 2 meets the budget but is rejected: the best admissible trial is the answer.
    assert outcome.trials[2].meets_budget and not outcome.trials[2].admissible
    assert outcome.best.index == 1 and not outcome.met_budget

    everything_rejected = fallback_search(
        ["a"], max_trials=10, reject=lambda path: ["too big"], **_fake(metrics, [])
    )
    assert everything_rejected.best.index == 0


def test_the_order_weighs_error_removed_against_bytes() -> None:
    big = LayerSensitivity("big", "Conv", 0.5, 100_000)
    cheap = LayerSensitivity("cheap", "Gemm", 0.1, 1_000)
    costly = LayerSensitivity("costly", "Conv", 0.1, 50_000)
    inert = LayerSensitivity("inert", "Add", 0.0, 0)
    # error**2 per byte (costs under 2,000 bytes count as 2,000): cheap 5e-6, big 2.5e-6,
    # costly 2e-7; a layer whose quantization changed nothing is not tried.
    order = search_order([big, cheap, costly, inert], free_bytes=2_000)
    assert [layer.node for layer in order] == ["cheap", "big", "costly"]
    # A far larger error still leads although it is bigger.
    huge = LayerSensitivity("huge", "Conv", 0.9, 100_000)
    assert search_order([cheap, huge], free_bytes=2_000)[0].node == "huge"


# --- fallback units --------------------------------------------------------------------


def _recogniser_graph() -> onnx.ModelProto:
    """Conv-Relu-MaxPool, Conv-Relu-Reshape-Transpose into a GRU, then a MatMul + Add head
    under LogSoftmax: the structure of a CNN+sequence recogniser."""
    rng = np.random.default_rng(0)

    def init(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2]),
        helper.make_node("Conv", ["p1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Shape", ["r2"], ["r2_shape"], name="shape"),  # reads the shape only
        helper.make_node("Reshape", ["r2", "to_seq"], ["seq"], name="reshape"),
        helper.make_node("Transpose", ["seq"], ["steps"], name="transpose", perm=[1, 0, 2]),
        helper.make_node("GRU", ["steps", "gw", "gr"], ["h"], name="gru", hidden_size=8),
        helper.make_node("Squeeze", ["h", "axis1"], ["hs"], name="squeeze"),
        helper.make_node("MatMul", ["hs", "w3"], ["logits0"], name="head"),
        helper.make_node("Add", ["logits0", "b3"], ["logits"], name="bias"),
        helper.make_node("LogSoftmax", ["logits"], ["y"], name="log_softmax", axis=-1),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes,
        "recogniser",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 4, "width"])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("r2_shape", TensorProto.INT64, None),
        ],
        initializer=[
            init("w1", 4, 1, 3, 3),
            init("w2", 8, 4, 3, 3),
            init("gw", 1, 24, 16),
            init("gr", 1, 24, 8),
            init("w3", 8, 11),
            init("b3", 11),
            numpy_helper.from_array(np.array([0, -1, 16], dtype=np.int64), "to_seq"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_a_unit_carries_its_layer_output_up_to_the_next_layer() -> None:
    units = fallback_units(
        _recogniser_graph(),
        weighted_types={"Conv", "MatMul", "Gemm"},
        quantized_types={"Conv", "MatMul", "Add", "Relu", "MaxPool", "Reshape", "Transpose"},
    )
    by_name = {u.name: u for u in units}
    assert list(by_name) == ["conv1", "conv2", "head"]
    assert by_name["conv1"].members == ("conv1", "relu1", "pool1")
    # The features stay float up to the recurrent layer's input.
    assert by_name["conv2"].members == ("conv2", "relu2", "reshape", "transpose")
    # The sequence head keeps its bias Add and LogSoftmax float: the logits are never rounded.
    assert by_name["head"].members == ("head", "bias", "log_softmax")
    assert by_name["head"].feeds_output and not by_name["conv1"].feeds_output
    assert by_name["conv2"].weight_elements == 8 * 4 * 3 * 3
    assert pick_units(units, 2) == [by_name["conv1"], by_name["head"]]


# --- library warnings ------------------------------------------------------------------


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_repeated_library_warnings_are_one_line_each_with_a_count() -> None:
    root = logging.getLogger()
    lines = _Lines()
    root.addHandler(lines)
    try:
        with aggregated_library_logs():
            for i in range(500):
                # ONNX Runtime's quantizer logs through the root logger, once per tensor.
                logging.warning("failed to infer the type of tensor: t%d", i)
            for i in range(3):
                logging.getLogger("onnxruntime.quantization.calibrate").warning("slow")
                warnings.warn(f"argument {i} is deprecated", FutureWarning, stacklevel=1)
            logging.getLogger("compress_engine.tests").warning("our own, as it is")
    finally:
        root.removeHandler(lines)

    messages = [r.getMessage() for r in lines.records]
    assert "our own, as it is" in messages
    summary = [r.getMessage() for r in lines.records if r.name == LIBRARY_LOGGER]
    assert len(summary) == 3 and len(messages) == 4
    assert summary[0].endswith("warned 500 times: failed to infer the type of tensor: t0")
    assert summary[1] == "onnxruntime warned 3 times: slow"
    assert "warned 3 times: FutureWarning: argument 0 is deprecated" in summary[2]


def _qat_mlp(path: Path) -> Path:
    """A model that already holds a QuantizeLinear/DequantizeLinear pair (as a QAT export
    does): ONNX Runtime's quantizer warns about it on every quantization."""
    rng = np.random.default_rng(0)
    weights = [(f"w{i}", rng.standard_normal(s).astype(np.float32) * 0.2) for i, s in
               enumerate([(32, 64), (64, 64), (64, 10)], start=1)]  # fmt: skip
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q"),
        helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["h0"], name="dq"),
    ]
    for i in (1, 2, 3):
        nodes.append(helper.make_node("MatMul", [f"h{i - 1}", f"w{i}"], [f"m{i}"], name=f"mm{i}"))
        nodes.append(helper.make_node("Relu", [f"m{i}"], [f"h{i}" if i < 3 else "y"], name=f"r{i}"))
    graph = helper.make_graph(
        nodes,
        "qat",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])],
        initializer=[numpy_helper.from_array(w, n) for n, w in weights]
        + [
            numpy_helper.from_array(np.array(0.05, np.float32), "s"),
            numpy_helper.from_array(np.array(0, np.int8), "z"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("quiet", [False, True])
def test_the_cli_prints_a_library_warning_once_and_none_with_quiet(
    tmp_path: Path, engine_env: dict[str, str], quiet: bool
) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "steps:\n  - quantize: {mode: dynamic-int8, sensitivity: true}\n"
        "evaluate: {latency_runs: 4, warmup: 1, batch_sizes: [], fidelity_samples: 4}\n"
    )
    model = _qat_mlp(tmp_path / "qat.onnx")
    command = [sys.executable, "-m", "compress_engine", "compress", str(model)]
    command += ["--recipe", str(recipe), "--out", str(tmp_path / "out")]
    run = subprocess.run(
        command + (["-q"] if quiet else []),
        capture_output=True,
        text=True,
        env=engine_env,
        timeout=300,
        check=True,
    )
    # The full build and one per layer (3) each warn: 4 warnings, one line.
    said = [line for line in run.stderr.splitlines() if "already quantized" in line]
    if quiet:
        assert said == [] and "warned" not in run.stderr
    else:
        assert len(said) == 1 and said[0].startswith("onnxruntime warned 4 times: ")
