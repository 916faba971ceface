"""`prune:` steps through `compress`: channel pruning (torch-pruning) and magnitude pruning."""

from __future__ import annotations

import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper
from pydantic import ValidationError

import model_builders
from compress_engine import EngineError, Report, compress
from compress_engine.report import TrainingPoint
from compress_engine.torch_configs import PruneConfig

# The layers of model_builders.build_conv_bn_cnn after export (BatchNorm folded into Conv).
LAYERS = ["/0/Conv", "/3/Conv", "/8/Gemm", "/10/Gemm"]
OUTPUT_LAYER = "/10/Gemm"
FAST = {"latency_runs": 2, "warmup": 0, "fidelity_samples": 4, "batch_sizes": []}


@dataclass
class Run:
    report: Report
    out_dir: Path
    points: list[TrainingPoint] = field(default_factory=list)

    def artifact(self, fmt: str = "onnx") -> Path:
        info = next(a for a in self.report.artifacts if a.format == fmt)
        return self.out_dir / info.name


def _prune(model: Path, out_dir: Path, data: Path | None = None, **prune: Any) -> Run:
    points: list[TrainingPoint] = []
    report = compress(
        model,
        {"steps": [{"prune": prune}], "evaluate": FAST},
        data,
        out_dir=out_dir,
        on_training=points.append,
    )
    return Run(report, out_dir, points)


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _channels(report: Report) -> dict[str, tuple[int, int]]:
    assert report.pruning is not None
    return {layer.name: (layer.before, layer.after) for layer in report.pruning.layers}


@pytest.fixture(scope="module")
def cnn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Conv(16)-BN-ReLU-Conv(32)-BN-ReLU-MaxPool-Linear(64)-ReLU-Linear(10), untrained."""
    return model_builders.export_conv_bn_cnn(tmp_path_factory.mktemp("cnn") / "cnn.onnx")


@pytest.fixture(scope="module")
def patterns_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    x, y = model_builders.pattern_dataset(200, seed=3)
    path = tmp_path_factory.mktemp("data") / "patterns.npz"
    np.savez(path, x=x, y=y)
    return path


@pytest.fixture(scope="module")
def channel_run(cnn: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    return _prune(cnn, tmp_path_factory.mktemp("channel"), amount=0.5)


@pytest.fixture(scope="module")
def magnitude_run(cnn: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    return _prune(cnn, tmp_path_factory.mktemp("magnitude"), method="magnitude", amount=0.5)


# --- channel pruning -----------------------------------------------------------------------


def test_it_keeps_the_interface(channel_run: Run, cnn: Path) -> None:
    original, result = _session(cnn), _session(channel_run.artifact())

    assert [(i.name, i.shape) for i in result.get_inputs()] == [
        (i.name, i.shape) for i in original.get_inputs()
    ]
    assert [(o.name, o.shape) for o in result.get_outputs()] == [
        (o.name, o.shape) for o in original.get_outputs()
    ]
    for batch in (1, 5):
        x = np.random.default_rng(batch).standard_normal((batch, 1, 8, 8)).astype(np.float32)
        (logits,) = result.run(None, {"input": x})
        assert logits.shape == (batch, 10)


def test_it_removes_half_of_each_hidden_layers_channels(channel_run: Run) -> None:
    assert channel_run.artifact().name == "model.pruned.onnx"
    assert _channels(channel_run.report) == {
        "/0/Conv": (16, 8),
        "/3/Conv": (32, 16),
        "/8/Gemm": (64, 32),
        OUTPUT_LAYER: (10, 10),
    }


def test_it_leaves_the_output_layer_whole(channel_run: Run) -> None:
    proto = onnx.load(str(channel_run.artifact()))
    gemm = next(n for n in proto.graph.node if n.name == OUTPUT_LAYER)
    weight = next(t for t in proto.graph.initializer if t.name == gemm.input[1])

    assert channel_run.report.pruning is not None
    assert channel_run.report.pruning.ignored == [OUTPUT_LAYER]
    assert list(weight.dims) == [10, 32]  # 10 classes out, 32 of 64 features in


def test_it_shrinks_parameters_and_macs(channel_run: Run) -> None:
    report = channel_run.report
    pruning = report.pruning
    assert pruning is not None

    assert pruning.parameters_after / pruning.parameters_before < 0.4
    assert pruning.macs_after / pruning.macs_before < 0.4
    # The same, counted on the exported ONNX files.
    assert report.param_ratio is not None and report.param_ratio < 0.4
    assert report.result.macs < 0.4 * report.original.macs
    assert report.size_ratio is not None and report.size_ratio < 0.4


def test_it_records_what_it_did(channel_run: Run) -> None:
    pruning = channel_run.report.pruning
    assert pruning is not None

    assert (pruning.method, pruning.importance, pruning.scope) == ("channel", "l2", "uniform")
    assert (pruning.amount, pruning.target, pruning.search) == (0.5, None, [])
    assert pruning.round_trip.max_abs_diff <= pruning.round_trip.tolerance
    assert pruning.round_trip.opset == 17
    assert channel_run.report.training == []
    assert channel_run.points == []


def test_round_to_keeps_channel_counts_multiples_of_it(cnn: Path, tmp_path: Path) -> None:
    plain = _prune(cnn, tmp_path / "plain", amount=0.3)
    rounded = _prune(cnn, tmp_path / "rounded", amount=0.3, round_to=8)

    hidden = [name for name in LAYERS if name != OUTPUT_LAYER]
    assert any(_channels(plain.report)[name][1] % 8 for name in hidden)
    assert all(_channels(rounded.report)[name][1] % 8 == 0 for name in hidden)
    assert all(0 < _channels(rounded.report)[name][1] < 64 for name in hidden)
    assert rounded.report.pruning is not None and rounded.report.pruning.round_to == 8
    _session(rounded.artifact())
    # 16 and 32 channels at 30% keep 8 and 16 (64 keeps 40): the report says 43% went.
    assert any(
        "With round_to 8, 43% of the prunable layers' channels" in n for n in rounded.report.notes
    )
    assert not any("round_to" in n for n in plain.report.notes)


def test_ignore_by_onnx_node_name_keeps_that_layer_whole(cnn: Path, tmp_path: Path) -> None:
    run = _prune(cnn, tmp_path, ignore=["/3/Conv"])

    channels = _channels(run.report)
    assert channels["/3/Conv"] == (32, 32)
    assert channels["/0/Conv"] == (16, 8)
    assert run.report.pruning is not None
    assert sorted(run.report.pruning.ignored) == sorted(["/3/Conv", OUTPUT_LAYER])


def test_an_unknown_ignore_name_lists_the_layers(cnn: Path, tmp_path: Path) -> None:
    with pytest.raises(EngineError) as caught:
        _prune(cnn, tmp_path / "out", ignore=["/features/0/Conv"])

    message = str(caught.value)
    assert "'/features/0/Conv'" in message
    assert ", ".join(LAYERS) in message
    assert not list((tmp_path / "out").glob("*"))


@pytest.mark.parametrize("what", ["params", "macs"])
def test_it_searches_the_amount_that_meets_a_target(what: str, cnn: Path, tmp_path: Path) -> None:
    run = _prune(cnn, tmp_path, **{f"target_{what}": 0.3})
    pruning = run.report.pruning
    assert pruning is not None

    ratio = {
        "params": pruning.parameters_after / pruning.parameters_before,
        "macs": pruning.macs_after / pruning.macs_before,
    }[what]
    meeting = [p for p in pruning.search if getattr(p, f"{what}_ratio") <= 0.3]
    assert ratio <= 0.3
    assert pruning.target == f"{what}<=0.3"
    assert len(pruning.search) == 10
    # The smallest amount tried that meets the target, not simply the largest.
    assert pruning.amount == min(p.amount for p in meeting)
    assert pruning.amount < 0.95


def test_an_unreachable_target_is_an_engine_error(tmp_path: Path) -> None:
    # The output layer of a two-layer MLP stays whole, so parameters cannot drop to 1%.
    path = model_builders.export_tiny_mlp(tmp_path / "mlp.onnx", hidden=16, layers=1)

    with pytest.raises(EngineError, match="set a higher target"):
        _prune(path, tmp_path / "out", target_params=0.01)


@pytest.mark.parametrize("importance", ["l1", "random", "taylor"])
def test_each_importance_prunes_half_the_channels(
    importance: str, cnn: Path, patterns_npz: Path, tmp_path: Path
) -> None:
    data = patterns_npz if importance == "taylor" else None

    run = _prune(cnn, tmp_path, data, importance=importance)

    assert run.report.pruning is not None
    assert run.report.pruning.importance == importance
    assert _channels(run.report)["/3/Conv"] == (32, 16)
    _session(run.artifact())


def test_taylor_importance_without_data_is_refused_before_any_work(
    cnn: Path, tmp_path: Path
) -> None:
    calls: list[tuple[str, float]] = []

    with pytest.raises(EngineError, match=r"Pruning needs training data: give a dataset"):
        compress(
            cnn,
            {"steps": [{"prune": {"importance": "taylor"}}]},
            out_dir=tmp_path / "out",
            progress=lambda stage, f: calls.append((stage, f)),
        )

    assert calls == []
    assert not (tmp_path / "out").exists()


def test_global_scope_prunes_layers_unevenly(cnn: Path, tmp_path: Path) -> None:
    run = _prune(cnn, tmp_path, scope="global")
    pruning = run.report.pruning
    assert pruning is not None

    kept = {name: after / before for name, (before, after) in _channels(run.report).items()}
    assert pruning.scope == "global"
    assert kept[OUTPUT_LAYER] == 1.0
    assert pruning.parameters_after < 0.5 * pruning.parameters_before
    assert len({round(kept[name], 3) for name in LAYERS[:-1]}) > 1
    _session(run.artifact())


def test_it_prunes_a_model_with_two_inputs(tmp_path: Path) -> None:
    path = model_builders.export_two_input_mlp(tmp_path / "two.onnx")

    run = _prune(path, tmp_path / "out")

    assert _channels(run.report) == {
        "/left/Gemm": (32, 16),
        "/right/Gemm": (32, 16),
        "/head/Gemm": (5, 5),
    }
    assert [i.name for i in _session(run.artifact()).get_inputs()] == ["a", "b"]


# --- iterative pruning with recovery -----------------------------------------------------


def test_iterations_recover_between_steps(cnn: Path, patterns_npz: Path, tmp_path: Path) -> None:
    run = _prune(cnn, tmp_path, patterns_npz, iterations=2, recover_epochs=1)

    assert run.report.pruning is not None and run.report.pruning.iterations == 2
    # One recovery (between the two steps) of one epoch: its epoch 0 and epoch 1.
    assert [(p.kind, p.step, p.epoch) for p in run.points] == [("recover", 0, 0), ("recover", 0, 1)]
    assert run.points[1].optimizer_steps > 0
    # The same final widths as pruning in one step.
    assert _channels(run.report)["/3/Conv"] == (32, 16)
    assert _channels(run.report)["/8/Gemm"] == (64, 32)
    assert run.report.training == []


def test_iterations_with_recovery_need_data(cnn: Path, tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="needs training data"):
        _prune(cnn, tmp_path / "out", iterations=2)


# --- magnitude pruning -------------------------------------------------------------------


def test_magnitude_zeroes_about_the_amount_of_weights(magnitude_run: Run) -> None:
    report = magnitude_run.report
    assert report.original.nonzero_parameters is not None
    assert report.result.nonzero_parameters is not None

    nonzero = report.result.nonzero_parameters / report.original.nonzero_parameters
    assert 0.48 <= nonzero <= 0.55  # biases are left alone
    for before, after in _channels(report).values():
        assert after / before == pytest.approx(0.5, abs=0.01)
    assert report.result.parameters == report.original.parameters


def test_magnitude_leaves_the_dense_file_size_and_macs_alone(magnitude_run: Run) -> None:
    report = magnitude_run.report

    assert magnitude_run.artifact().name == "model.sparse.onnx"
    assert report.size_ratio == pytest.approx(1.0, abs=0.05)
    assert report.result.macs == report.original.macs
    assert any("zipped copy" in note for note in report.notes)


def test_magnitude_offers_a_smaller_zip_that_loads(magnitude_run: Run) -> None:
    dense, zipped = magnitude_run.artifact(), magnitude_run.artifact("onnx-zip")
    info = next(a for a in magnitude_run.report.artifacts if a.format == "onnx-zip")

    assert zipped.name == "model.sparse.onnx.zip"
    assert info.size_bytes == zipped.stat().st_size
    assert info.size_bytes < 0.7 * dense.stat().st_size
    with zipfile.ZipFile(zipped) as archive:
        assert archive.namelist() == ["model.onnx"]
        member = archive.read("model.onnx")
    x = np.random.default_rng(0).standard_normal((3, 1, 8, 8)).astype(np.float32)
    from_zip = ort.InferenceSession(member, providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(
        from_zip.run(None, {"input": x})[0], _session(dense).run(None, {"input": x})[0]
    )


def test_magnitude_ignore_keeps_that_layer_dense(cnn: Path, tmp_path: Path) -> None:
    run = _prune(cnn, tmp_path, method="magnitude", ignore=["/0/Conv"])

    channels = _channels(run.report)
    assert channels["/0/Conv"] == (144, 144)
    assert channels["/3/Conv"] == (4608, 2304)


def test_only_a_final_magnitude_step_offers_the_zip(cnn: Path, tmp_path: Path) -> None:
    report = compress(
        cnn,
        {"steps": [{"prune": {"method": "magnitude"}}, {"quantize": {}}], "evaluate": FAST},
        out_dir=tmp_path,
    )

    assert [a.format for a in report.artifacts] == ["onnx"]
    assert not list(tmp_path.glob("*.zip"))


# --- settings ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "error"),
    [
        ({"target_macs": 0.5, "target_params": 0.5}, "not both"),
        ({"method": "magnitude", "target_params": 0.5}, "apply to method channel"),
        ({"method": "magnitude", "iterations": 2}, "iterations apply to method channel"),
        ({"amount": 0.99}, "less than or equal to 0.95"),
    ],
)
def test_inconsistent_settings_are_refused(settings: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        PruneConfig(**settings)


@pytest.mark.parametrize(
    ("settings", "needs_data"),
    [
        ({}, False),
        ({"importance": "taylor"}, True),
        ({"iterations": 3}, True),
        ({"iterations": 3, "recover_epochs": 0}, False),
    ],
)
def test_needs_data_follows_the_settings(settings: dict[str, Any], needs_data: bool) -> None:
    assert PruneConfig(**settings).needs_data is needs_data


def test_ignore_is_deduplicated() -> None:
    assert PruneConfig(ignore=["/0/Conv", "/3/Conv", "/0/Conv"]).ignore == ["/0/Conv", "/3/Conv"]


# --- graphs it must not get wrong ------------------------------------------------------------


def _export_linear_bn_mlp(path: Path) -> Path:
    """Linear(16, 32)-BatchNorm1d-ReLU-Linear(32, 32)-ReLU-Linear(32, 5): the exporter keeps
    this BatchNorm as a node (it folds BatchNorm into a preceding Conv only), so onnx2torch
    rebuilds it as a torch BatchNorm1d with running statistics."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(16, 32),
        nn.BatchNorm1d(32),
        nn.ReLU(),
        nn.Linear(32, 32),
        nn.ReLU(),
        nn.Linear(32, 5),
    )
    with torch.no_grad():
        model[1].running_mean.normal_(0.0, 2.0)
        model[1].running_var.uniform_(0.5, 3.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model.eval(),
            (torch.randn(2, 16),),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
    return path


def _batchnorm_statistics(path: Path) -> tuple[np.ndarray, np.ndarray]:
    proto = onnx.load(str(path))
    (node,) = [n for n in proto.graph.node if n.op_type == "BatchNormalization"]
    arrays = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    return arrays[node.input[3]], arrays[node.input[4]]


def test_taylor_scoring_leaves_batchnorm_statistics_alone(tmp_path: Path) -> None:
    path = _export_linear_bn_mlp(tmp_path / "bn.onnx")
    x = np.random.default_rng(0).standard_normal((300, 16)).astype(np.float32)
    np.savez(tmp_path / "data.npz", x=x, y=np.arange(300) % 5)

    # The BatchNorm's channels are those of the ignored first layer: only /3/Gemm is pruned.
    run = _prune(
        path, tmp_path / "out", tmp_path / "data.npz", importance="taylor", ignore=["/0/Gemm"]
    )

    assert _channels(run.report) == {"/0/Gemm": (32, 32), "/3/Gemm": (32, 16), "/5/Gemm": (5, 5)}
    mean, var = _batchnorm_statistics(run.artifact())
    want_mean, want_var = _batchnorm_statistics(path)
    np.testing.assert_array_equal(mean, want_mean)
    np.testing.assert_array_equal(var, want_var)


def test_channel_pruning_a_model_without_prunable_layers_is_refused(tmp_path: Path) -> None:
    # MatMul layers with initializer weights: onnx2torch rebuilds them as OnnxMatMul reading
    # buffers, not as nn.Linear, so there is no channel torch-pruning could remove.
    path = model_builders.export_outlier_mlp(tmp_path / "matmul.onnx")

    with pytest.raises(EngineError, match="Channel pruning found no layer"):
        _prune(path, tmp_path / "out")


def test_magnitude_ignore_refuses_a_node_that_is_not_a_layer(cnn: Path, tmp_path: Path) -> None:
    # /2/Relu is a node of the graph, but not a layer with weights: nothing would be ignored.
    with pytest.raises(EngineError) as caught:
        _prune(cnn, tmp_path / "out", method="magnitude", ignore=["/2/Relu"])

    assert "'/2/Relu'" in str(caught.value)
    assert ", ".join(LAYERS) in str(caught.value)
