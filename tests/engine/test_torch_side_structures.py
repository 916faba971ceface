"""Pruning and distillation on structures a third-party model brings (issue 16, item 5):
small feature maps, squeeze-excite, grouped and depthwise convs, computed reshapes, scalar
inputs; the shapes the torch side draws its examples at; refusals before any step runs; and
TorchScript whose forward takes a non-tensor argument."""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

import third_party_models as tpm
from compress_engine import EngineError, Report, compress
from compress_engine.cli import main as cli_main
from compress_engine.ingest.convert import convert_to_onnx
from compress_engine.ingest.formats import ModelFormat
from compress_engine.ingest.shapes import parse_input_shapes
from compress_engine.ingest.signature import forward_signature, name_input_shapes
from compress_engine.torch_configs import PruneConfig
from compress_engine.torch_side import pruning
from compress_engine.torch_side.convert import check_round_trip, example_shapes, load_torch
from compress_engine.torch_side.layer_errors import LayerFailure
from compress_engine.torch_side.pruning import PruneFailure

FAST = {"latency_runs": 2, "warmup": 0, "fidelity_samples": 8, "batch_sizes": []}
PRUNE_DISTILL = [{"prune": {"amount": 0.5}}, {"distill": {"epochs": 2, "patience": None}}]
# MACs of one 8x8 digit through the SE classifier (what the fixed-shape export counts).
DIGIT_MACS = 175_034


def _export(model: nn.Module, path: Path, example: torch.Tensor, dynamic_hw: bool) -> Path:
    axes = {"input": {0: "batch"}, "logits": {0: "batch"}}
    if dynamic_hw:
        axes["input"] |= {2: "height", 3: "width"}
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(),
            (example,),
            str(path),
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes=axes,
            opset_version=12,
            dynamo=False,
        )
    return path


def _images(path: Path, side: int, n: int = 24) -> Path:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 1, side, side)).astype(np.float32)
    np.savez(path, input=x, y=rng.integers(0, 10, n))
    return path


def _prune(model: Path, out: Path, data: Path | None = None, **evaluate: Any) -> Report:
    recipe = {"steps": [{"prune": {"amount": 0.5}}], "evaluate": {**FAST, **evaluate}}
    return compress(model, recipe, data, out_dir=out)


# --- the SE / grouped / depthwise classifier -------------------------------------------------


@pytest.fixture(scope="module")
def classifier_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Report]]:
    """prune + distill on the classifier exported with dynamic and with fixed shapes:
    (model, report); the result is in the folder `out` beside the model."""
    folder = tmp_path_factory.mktemp("se")
    digits = tpm.digits_npz(folder / "digits.npz", 64)
    runs = {}
    for name, dynamic in (("dynamic", True), ("fixed", False)):
        model = tpm.se_grouped_classifier(folder / name, dynamic=dynamic)
        recipe = {"steps": PRUNE_DISTILL, "evaluate": FAST}
        runs[name] = (model, compress(model, recipe, digits, out_dir=model.parent / "out"))
    return runs


@pytest.mark.parametrize("shapes", ["dynamic", "fixed"])
def test_it_prunes_and_distils_the_se_grouped_classifier(
    classifier_runs: dict[str, tuple[Path, Report]], shapes: str
) -> None:
    model, report = classifier_runs[shapes]
    assert report.pruning is not None
    assert report.pruning.parameters_after < 0.5 * report.pruning.parameters_before
    kept = {layer.name: layer.after for layer in report.pruning.layers}
    assert kept["/grouped/grouped.0/Conv"] < 32 and kept["/depthwise/depthwise.0/Conv"] < 32
    assert kept["/se/reduce/Conv"] < 8 and kept["/head/Gemm"] == 10
    result = model.parent / "out" / report.files[0].name
    assert result.stat().st_size < 0.5 * model.stat().st_size
    session = ort.InferenceSession(str(result), providers=["CPUExecutionProvider"])
    digits = tpm.digits_npz(model.parent / "check.npz", 4)
    x = np.load(digits)["input"][:1]
    assert session.run(None, {"input": x})[0].shape == (1, 10)


def test_pruning_counts_at_the_datasets_shape_not_a_default(
    classifier_runs: dict[str, tuple[Path, Report]],
) -> None:
    """The dynamic export's free height and width take the digits' 8x8 (a 16x16 default
    would count four times the MACs, and collapse models with more pooling)."""
    macs = {name: report.pruning.macs_before for name, (_, report) in classifier_runs.items()}
    assert macs == {"dynamic": DIGIT_MACS, "fixed": DIGIT_MACS}


def test_pruning_takes_the_recipes_input_shapes_without_a_dataset(
    classifier_runs: dict[str, tuple[Path, Report]], tmp_path: Path
) -> None:
    model, _ = classifier_runs["dynamic"]
    report = _prune(model, tmp_path / "out", input_shapes={"input": [1, 1, 8, 8]})
    assert report.pruning is not None and report.pruning.macs_before == DIGIT_MACS


# --- feature maps that collapse at the default size ------------------------------------------


class _DeepNarrow(nn.Module):
    """Four stride-2 convs and a pool: a 32x32 input ends 1x1, a 16x16 one pools to nothing."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for cin, cout in ((1, 8), (8, 16), (16, 16), (16, 16)):
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.ReLU()]
        self.body = nn.Sequential(*layers, nn.MaxPool2d(2))
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.body(x), 1))


def test_small_feature_maps_are_pruned_at_the_datasets_size(tmp_path: Path) -> None:
    model = _export(_DeepNarrow(), tmp_path / "deep.onnx", torch.randn(1, 1, 32, 32), True)
    with pytest.raises(RuntimeError, match="Output size is too small"):  # the default 16x16
        load_torch(model).module(torch.randn(1, 1, 16, 16))
    report = _prune(model, tmp_path / "out", _images(tmp_path / "x32.npz", 32))
    assert report.pruning is not None
    assert report.pruning.parameters_after < report.pruning.parameters_before


# --- coupled channels torch-pruning gets wrong -----------------------------------------------


class _OddGroups(nn.Module):
    """A grouped conv with groups = output channels < input channels (torch-pruning takes it
    for depthwise), a depthwise conv with a channel multiplier (optional; torch-pruning prunes
    it as if it were dense), and a plain conv after."""

    def __init__(self, multiplier: bool = True) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.squeeze = nn.Conv2d(8, 4, 3, padding=1, groups=4)
        self.widen = nn.Conv2d(4, 8, 3, padding=1, groups=4 if multiplier else 1)
        self.mix = nn.Conv2d(8, 8, 1)
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = torch.relu(self.widen(torch.relu(self.squeeze(x))))
        x = torch.relu(self.mix(x))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


@pytest.fixture(scope="module")
def odd_groups(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("odd")
    torch.manual_seed(0)
    return _export(_OddGroups(), folder / "odd.onnx", torch.randn(1, 1, 8, 8), False)


def test_torch_pruning_alone_breaks_such_groups_and_the_layer_is_named(
    odd_groups: Path, tmp_path: Path
) -> None:
    example = (torch.randn(1, 1, 8, 8),)
    squeeze_only = _export(_OddGroups(False), tmp_path / "sq.onnx", example[0], False)
    for path, failure in ((odd_groups, (PruneFailure, LayerFailure)), (squeeze_only, LayerFailure)):
        model = load_torch(path)
        plan = pruning.ChannelPlan(example=example, names=model.node_names)
        with pytest.raises(failure) as failed:
            pruning._prune(model.module, PruneConfig(amount=0.5), plan, 0.5, 1, None, check=True)
    assert isinstance(failed.value, LayerFailure) and failed.value.layer == "squeeze/Conv"
    assert "at layer '/squeeze/Conv' (Conv2d 6 -> 2 channels, 2 groups)" in str(failed.value)
    assert "List the layer in prune.ignore, or use method magnitude." in str(failed.value)


def test_it_keeps_inconsistent_groups_whole_and_prunes_the_rest(
    odd_groups: Path, tmp_path: Path
) -> None:
    report = _prune(odd_groups, tmp_path / "out", input_shapes={"input": [1, 1, 8, 8]})
    assert report.pruning is not None
    kept = {layer.name: (layer.before, layer.after) for layer in report.pruning.layers}
    assert kept["/squeeze/Conv"] == (4, 4) and kept["/widen/Conv"] == (8, 8)
    assert kept["/mix/Conv"][1] < 8
    assert {"/squeeze/Conv", "/widen/Conv", "/stem/Conv"} <= set(report.pruning.ignored)
    assert any("kept 3 layer(s) whole" in note for note in report.notes), report.notes


class _ScaledChannels(nn.Module):
    """A per-channel scale multiplied in outside any layer: onnx2torch keeps it as a constant
    that torch-pruning cannot see, so pruning the conv before it breaks the Mul."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Conv2d(1, 8, 3, padding=1)
        self.scale = nn.Parameter(torch.rand(1, 8, 1, 1) + 0.5)
        self.second = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.second(torch.relu(self.first(x)) * self.scale))
        return self.head(x.mean((2, 3)))


def test_a_group_that_breaks_an_op_outside_the_layers_is_found_and_kept_whole(
    tmp_path: Path,
) -> None:
    model = _export(_ScaledChannels(), tmp_path / "scaled.onnx", torch.randn(1, 1, 8, 8), True)
    report = _prune(model, tmp_path / "out", input_shapes={"input": [1, 1, 8, 8]})
    assert report.pruning is not None
    kept = {layer.name: (layer.before, layer.after) for layer in report.pruning.layers}
    assert kept["/first/Conv"] == (8, 8) and kept["/second/Conv"] == (8, 4)
    assert any("failed at '/Mul'" in note for note in report.notes), report.notes


# --- a squeeze-excite scale reshaped to a computed shape --------------------------------------


class _LinearSE(nn.Module):
    """Squeeze-excite with Linear layers and `view(batch, -1, 1, 1)`: exported with a dynamic
    batch, ONNX's shape inference loses every shape after the Reshape."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.reduce, self.expand = nn.Linear(8, 2), nn.Linear(2, 8)
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv(x))
        scale = torch.sigmoid(self.expand(torch.relu(self.reduce(x.mean((2, 3))))))
        x = x * scale.view(x.shape[0], -1, 1, 1)
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def test_the_rebuilt_module_keeps_ranks_after_a_computed_reshape(tmp_path: Path) -> None:
    path = _export(_LinearSE(), tmp_path / "se.onnx", torch.randn(1, 1, 8, 8), True)
    model = load_torch(path, {"input": [1, 1, 8, 8]})
    check = check_round_trip(model, path)  # averaged over the channels too, it failed here
    assert check.max_abs_diff <= check.tolerance
    assert example_shapes(model.info, model.shapes, 3)["input"] == [3, 1, 8, 8]


# --- refused before any step runs --------------------------------------------------------------


def _with_shrink(path: Path) -> Path:
    """The model with its Relu nodes turned into ONNX Shrink (a valid op ONNX Runtime runs,
    and onnx2torch has no converter for)."""
    model = onnx.load(str(path))
    for node in model.graph.node:
        if node.op_type == "Relu":
            node.op_type = "Shrink"
    onnx.save(model, str(path))
    return path


def test_a_model_the_torch_side_cannot_rebuild_is_refused_before_any_step(
    tmp_path: Path,
) -> None:
    exported = _export(_OddGroups(False), tmp_path / "shrink.onnx", torch.randn(1, 1, 8, 8), False)
    model = _with_shrink(exported)
    stages: list[str] = []
    with pytest.raises(EngineError, match="Shrink") as refused:
        compress(
            model,
            {"steps": PRUNE_DISTILL, "evaluate": FAST},
            _images(tmp_path / "x8.npz", 8),
            out_dir=tmp_path / "out",
            progress=lambda stage, _fraction: stages.append(stage),
        )
    assert "Quantization steps alone still work" in str(refused.value)
    assert "Pruning" not in stages and "Distilling" not in stages
    assert not (tmp_path / "out" / "report.json").exists()


# --- TorchScript with a non-tensor argument ----------------------------------------------------


@pytest.fixture(scope="module")
def scripted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tpm.torchscript_with_int_arg(tmp_path_factory.mktemp("ts"))


def test_an_int_argument_becomes_a_scalar_input_that_follows_its_value(
    scripted: Path, tmp_path: Path
) -> None:
    shapes = parse_input_shapes("x: 2x512; sr: 16000")
    converted = convert_to_onnx(scripted, ModelFormat.TORCHSCRIPT, tmp_path, input_shapes=shapes)
    assert "sr=16000 became scalar inputs" in converted.log
    session = ort.InferenceSession(str(converted.model), providers=["CPUExecutionProvider"])
    inputs = {i.name: i for i in session.get_inputs()}
    assert inputs["sr"].type == "tensor(int64)" and inputs["sr"].shape == []
    source = torch.jit.load(str(scripted))
    x = np.random.default_rng(1).standard_normal((3, 512)).astype(np.float32)
    for rate in (8000, 16000):
        got = session.run(None, {"x": x, "sr": np.array(rate, dtype=np.int64)})[0]
        with torch.no_grad():
            want = source(torch.from_numpy(x), rate).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_a_missing_int_argument_is_named_with_what_to_give(scripted: Path) -> None:
    signature = forward_signature(scripted, ModelFormat.TORCHSCRIPT)
    assert signature is not None
    with pytest.raises(EngineError, match=r"`sr` is an int, not a tensor.*`sr: 1`"):
        name_input_shapes(signature, parse_input_shapes("x: 1x512"), shapes_required=True)
    with pytest.raises(EngineError, match="give one value for it"):
        name_input_shapes(signature, parse_input_shapes("x: 1x512; sr: 2x3"), shapes_required=True)


def test_the_cli_says_a_jit_file_is_torchscript(scripted: Path, tmp_path: Path) -> None:
    renamed = tmp_path / "model.jit"
    renamed.write_bytes(scripted.read_bytes())
    errors = io.StringIO()
    with contextlib.redirect_stderr(errors):
        code = cli_main(["compress", str(renamed), "-q"])
    assert code == 2
    message = errors.getvalue()
    assert "TorchScript" in message and "zip" not in message.split("ONNX models")[0]
    assert "--input-shapes 'x: 1x3x224x224; sr: 1'" in message
