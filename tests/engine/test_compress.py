"""End-to-end runs of `compress` on real tiny models, with real ONNX Runtime."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import yaml

import model_builders
from compress_engine import EngineError, Recipe, Report, compress

STAGES = [
    "Measuring original model",
    "Quantizing (dynamic int8)",
    "Validating result",
    "Measuring compressed model",
    "Checking artifacts",
    "Writing report",
    "Done",
]


@dataclass
class Run:
    report: Report
    out_dir: Path
    calls: list[tuple[str, float]] = field(default_factory=list)


def _run(model: Path, recipe: Recipe, out_dir: Path) -> Run:
    calls: list[tuple[str, float]] = []
    report = compress(model, recipe, out_dir=out_dir, progress=lambda s, f: calls.append((s, f)))
    return Run(report, out_dir, calls)


@pytest.fixture(scope="module")
def cnn_run(
    cnn_path: Path, make_recipe: Callable[..., Recipe], tmp_path_factory: pytest.TempPathFactory
) -> Run:
    return _run(
        cnn_path, make_recipe(evaluate={"latency_runs": 30}), tmp_path_factory.mktemp("cnn")
    )


@pytest.fixture(scope="module")
def mlp_run(
    mlp_path: Path, make_recipe: Callable[..., Recipe], tmp_path_factory: pytest.TempPathFactory
) -> Run:
    return _run(mlp_path, make_recipe(), tmp_path_factory.mktemp("mlp"))


def _ort_run(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


# --- outputs -----------------------------------------------------------------------------


@pytest.mark.parametrize("run_name", ["cnn_run", "mlp_run"])
def test_it_writes_the_artifact_report_and_recipe(
    run_name: str, request: pytest.FixtureRequest
) -> None:
    run: Run = request.getfixturevalue(run_name)

    assert sorted(p.name for p in run.out_dir.iterdir()) == [
        "model.int8.onnx",
        "recipe.yaml",
        "report.json",
    ]
    on_disk = Report.model_validate_json((run.out_dir / "report.json").read_text())
    assert on_disk == run.report
    assert Recipe.parse((run.out_dir / "recipe.yaml").read_text()).to_dict() == run.report.recipe
    (artifact,) = run.report.artifacts
    assert artifact.name == "model.int8.onnx"
    assert artifact.precision == "int8-dynamic"
    assert artifact.size_bytes == (run.out_dir / artifact.name).stat().st_size
    assert artifact.sha256 == run.report.result.sha256


def test_the_artifact_runs_in_onnx_runtime(cnn_run: Run) -> None:
    x = np.random.default_rng(1).standard_normal((3, 1, 8, 8)).astype(np.float32)

    assert _ort_run(cnn_run.out_dir / "model.int8.onnx", x).shape == (3, 10)


def test_the_report_survives_a_json_column(mlp_run: Run) -> None:
    # The web app stores model_dump(mode="json") and reads it back through Report.
    stored = mlp_run.report.model_dump(mode="json")

    assert Report.model_validate(stored) == mlp_run.report
    assert stored["size_ratio"] == mlp_run.report.size_ratio


# --- figures -----------------------------------------------------------------------------


def test_the_quantized_mlp_is_much_smaller_and_faithful(mlp_run: Run, mlp_path: Path) -> None:
    r = mlp_run.report

    assert r.original.size_bytes == mlp_path.stat().st_size
    assert r.size_ratio is not None and r.size_ratio < 0.5
    assert r.quantization is not None
    assert r.quantization.quantized_nodes == 4
    assert r.quantization.op_types == {"Gemm": 4}
    assert r.quantization.preprocessed is True
    assert r.result.op_types.get("MatMulInteger") == 4
    assert r.fidelity.samples == 16
    assert r.fidelity.summary.name == "logits"
    assert r.fidelity.summary.cosine_similarity is not None
    assert r.fidelity.summary.cosine_similarity > 0.99
    assert r.fidelity.summary.top1_agreement is not None
    assert r.fidelity.summary.top1_agreement >= 0.9
    assert r.fidelity.summary.max_abs_diff is not None and r.fidelity.summary.max_abs_diff > 0


def test_the_cnn_keeps_conv_float_and_quantizes_its_linear_layers(cnn_run: Run) -> None:
    r = cnn_run.report

    assert r.quantization is not None and r.quantization.op_types == {"Gemm": 2}
    assert r.result.op_types.get("Conv") == 2
    assert "ConvInteger" not in r.result.op_types
    assert r.size_ratio is not None and r.size_ratio < 0.5  # the 1024x64 Linear dominates
    assert r.fidelity.summary.cosine_similarity is not None
    assert r.fidelity.summary.cosine_similarity > 0.99


def test_the_report_records_how_it_measured(cnn_run: Run) -> None:
    r = cnn_run.report

    assert r.input_shapes == {"input": [1, 1, 8, 8]}
    for m in (r.original, r.result):
        assert m.latency.runs == 30 and m.latency.warmup == 1 and m.latency.batch_size == 1
        assert m.latency.provider == "CPUExecutionProvider"
        assert m.latency.threads >= 1
        assert 0 < m.latency.p50_ms <= m.latency.p90_ms <= m.latency.p99_ms
    assert r.latency_ratio == pytest.approx(r.result.latency.p50_ms / r.original.latency.p50_ms)
    assert r.original.parameters == model_builders.torch_parameter_count(
        model_builders.build_tiny_cnn()
    )
    assert "CPUExecutionProvider" in r.device
    assert {"onnx", "onnxruntime", "numpy", "python"} <= set(r.versions)
    assert [s.name for s in r.steps] == [
        "Measure original",
        "Dynamic int8 quantization",
        "Validate result",
        "Measure result",
        "Export and check",
    ]
    assert any("random inputs" in n for n in r.notes)
    # Slower beyond the noise band an identical copy measured is flagged; inside it, never a claim.
    assert r.latency_noise_by_batch.keys() == r.original.latency_by_batch.keys()
    verdict = r.speed_verdict()
    if verdict == "slower":
        assert any("slower than the original" in n for n in r.notes)
    elif verdict == "unchanged":
        assert any("No measurable speed change" in n for n in r.notes)


def test_batch_size_shapes_the_inputs(cnn_path: Path, make_recipe, tmp_path: Path) -> None:
    report = compress(
        cnn_path, make_recipe(evaluate={"batch_size": 4, "fidelity_samples": 6}), out_dir=tmp_path
    )

    assert report.input_shapes == {"input": [4, 1, 8, 8]}
    assert report.original.latency.batch_size == 4
    assert report.fidelity.samples == 6


# --- progress ----------------------------------------------------------------------------


def test_progress_is_monotonic_covers_every_stage_and_ends_at_one(cnn_run: Run) -> None:
    fractions = [f for _, f in cnn_run.calls]

    assert fractions == sorted(fractions)
    assert all(0.0 <= f <= 1.0 for f in fractions)
    assert cnn_run.calls[-1] == ("Done", 1.0)
    stages = list(dict.fromkeys(s for s, _ in cnn_run.calls))
    assert stages == STAGES
    # The interleaved latency loop reports as it goes (31 rounds -> several updates).
    assert sum(s == "Measuring compressed model" for s, _ in cnn_run.calls) >= 4


class Cancelled(Exception):
    pass


@pytest.mark.parametrize("cancel_at", STAGES)
def test_a_raising_progress_callback_propagates_and_leaves_nothing(
    cancel_at: str, mlp_path: Path, make_recipe: Callable[..., Recipe], tmp_path: Path
) -> None:
    def progress(stage: str, _fraction: float) -> None:
        if stage == cancel_at:
            raise Cancelled(stage)

    with pytest.raises(Cancelled) as err:
        compress(mlp_path, make_recipe(), out_dir=tmp_path, progress=progress)

    assert type(err.value) is Cancelled and err.value.args == (cancel_at,)
    assert list(tmp_path.iterdir()) == []


# --- options -----------------------------------------------------------------------------


def test_conv_on_request_uses_uint8_weights_and_still_runs(
    cnn_path: Path, make_recipe: Callable[..., Recipe], tmp_path: Path
) -> None:
    report = compress(cnn_path, make_recipe(op_types=["Conv", "Gemm"]), out_dir=tmp_path)

    assert report.quantization is not None
    assert report.quantization.op_types == {"Conv": 2, "Gemm": 2}
    assert report.quantization.weight_type == "uint8"
    assert report.result.op_types.get("ConvInteger") == 2
    x = np.zeros((2, 1, 8, 8), np.float32)
    assert _ort_run(tmp_path / "model.int8.onnx", x).shape == (2, 10)
    assert any("uint8" in n for n in report.notes)


def test_excluded_nodes_stay_float(
    mlp_path: Path, make_recipe: Callable[..., Recipe], tmp_path: Path
) -> None:
    import onnx

    last_gemm = [n.name for n in onnx.load(str(mlp_path)).graph.node if n.op_type == "Gemm"][-1]

    report = compress(
        mlp_path, make_recipe(exclude=[last_gemm], per_channel=True), out_dir=tmp_path
    )

    assert report.quantization is not None
    assert report.quantization.quantized_nodes == 3
    assert report.quantization.excluded == [last_gemm]
    assert report.fidelity.summary.cosine_similarity is not None
    assert report.fidelity.summary.cosine_similarity > 0.99


def test_unknown_excluded_node_is_an_engine_error(
    mlp_path: Path, make_recipe: Callable[..., Recipe], tmp_path: Path
) -> None:
    with pytest.raises(EngineError, match="not in the model: no_such_node"):
        compress(mlp_path, make_recipe(exclude=["no_such_node"]), out_dir=tmp_path)
    assert not (tmp_path / "report.json").exists()


def test_nothing_to_quantize_is_said_plainly(
    make_recipe: Callable[..., Recipe], tmp_path: Path
) -> None:
    model = model_builders.write_conv_only_model(tmp_path / "conv.onnx")

    report = compress(model, make_recipe(), out_dir=tmp_path / "out")

    assert report.quantization is not None and report.quantization.quantized_nodes == 0
    assert any("nothing was quantized" in n for n in report.notes)
    assert (tmp_path / "out" / "model.int8.onnx").read_bytes() == model.read_bytes()
    assert report.fidelity.summary.max_abs_diff == 0.0


def test_failed_preprocessing_falls_back_to_the_raw_model(
    mlp_path: Path,
    make_recipe: Callable[..., Recipe],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import onnxruntime.quantization.shape_inference as shape_inference

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("symbolic shape inference exploded")

    monkeypatch.setattr(shape_inference, "quant_pre_process", broken)

    report = compress(mlp_path, make_recipe(), out_dir=tmp_path)

    assert report.quantization is not None
    assert report.quantization.preprocessed is False
    assert report.quantization.quantized_nodes == 4
    assert any("pre-processing" in n and "exploded" in n for n in report.notes)


def test_incomplete_symbolic_inference_retries_without_it_and_leaves_no_debug_dump(
    mlp_path: Path,
    make_recipe: Callable[..., Recipe],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import onnxruntime.quantization.shape_inference as shape_inference

    real = shape_inference.quant_pre_process

    def symbolic_fails(*args: object, skip_symbolic_shape: bool = False, **kwargs: object):
        if not skip_symbolic_shape:
            # What ONNX Runtime does when symbolic inference is incomplete: dump, then raise.
            Path("sym_shape_infer_temp.onnx").write_bytes(b"debug copy")
            raise Exception("Incomplete symbolic shape inference")
        return real(*args, skip_symbolic_shape=skip_symbolic_shape, **kwargs)

    monkeypatch.setattr(shape_inference, "quant_pre_process", symbolic_fails)
    caller_dir = tmp_path / "caller"
    caller_dir.mkdir()
    monkeypatch.chdir(caller_dir)

    # A relative model path, as a CLI user gives it, must survive the change of directory.
    relative = Path(os.path.relpath(mlp_path, caller_dir))
    report = compress(relative, make_recipe(), out_dir=tmp_path / "out")

    assert report.quantization is not None and report.quantization.preprocessed is True
    assert any("ONNX shape inference only" in n for n in report.notes)
    assert list(caller_dir.iterdir()) == []


def test_a_result_onnx_runtime_cannot_load_is_an_engine_error(
    mlp_path: Path,
    make_recipe: Callable[..., Recipe],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import onnx
    import onnxruntime.quantization as quantization

    def bad_quantizer(src: object, out: object, **_kwargs: object) -> None:
        # What a quantizer bug looks like: an integer op ONNX Runtime cannot type-check.
        model = onnx.load(str(src))
        node = next(n for n in model.graph.node if n.op_type == "Gemm")
        node.op_type = "ConvInteger"
        del node.attribute[:]
        onnx.save(model, str(out))

    monkeypatch.setattr(quantization, "quantize_dynamic", bad_quantizer)

    with pytest.raises(EngineError, match="produced a model ONNX Runtime cannot load") as err:
        compress(mlp_path, make_recipe(), out_dir=tmp_path)
    assert "ConvInteger" in str(err.value)  # the ONNX Runtime message is kept
    assert list(tmp_path.iterdir()) == []


# --- user errors -------------------------------------------------------------------------


def test_a_bad_file_is_an_engine_error(
    cnn_path: Path, make_recipe: Callable[..., Recipe], tmp_path: Path
) -> None:
    bad = model_builders.write_bad_model(tmp_path / "bad.onnx", "truncated", source=cnn_path)

    with pytest.raises(EngineError, match="not a valid ONNX model"):
        compress(bad, make_recipe(), out_dir=tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_a_model_onnx_runtime_cannot_load_is_an_engine_error(
    make_recipe: Callable[..., Recipe], tmp_path: Path
) -> None:
    model = model_builders.write_custom_op_model(tmp_path / "custom.onnx")

    with pytest.raises(EngineError, match="cannot load the original model"):
        compress(model, make_recipe(), out_dir=tmp_path / "out")


def test_data_of_an_unknown_kind_is_refused(
    cnn_path: Path, make_recipe: Callable[..., Recipe], tmp_path: Path
) -> None:
    with pytest.raises(EngineError, match=r"must be a \.npz path or a Dataset"):
        compress(cnn_path, make_recipe(), data=object(), out_dir=tmp_path)  # type: ignore[arg-type]


def test_input_shapes_for_unknown_inputs_are_refused(
    cnn_path: Path, make_recipe: Callable[..., Recipe], tmp_path: Path
) -> None:
    recipe = make_recipe(evaluate={"input_shapes": {"pixels": [1, 1, 8, 8]}})

    with pytest.raises(EngineError, match="model's inputs are 'input'"):
        compress(cnn_path, recipe, out_dir=tmp_path)


def test_recipes_may_be_given_as_yaml_text(mlp_path: Path, tmp_path: Path) -> None:
    text = yaml.safe_dump(
        {"steps": [{"quantize": {}}], "evaluate": {"latency_runs": 2, "warmup": 0}}
    )

    report = compress(mlp_path, text, out_dir=tmp_path)

    assert report.original.latency.runs == 2


def test_a_fixed_batch_model_is_measured_at_its_own_batch(
    make_recipe: Callable[..., Recipe], tmp_path: Path
) -> None:
    model = model_builders.export_tiny_cnn(tmp_path / "fixed.onnx", dynamic_batch=False)

    report = compress(
        model,
        make_recipe(evaluate={"batch_size": 4, "fidelity_samples": 3}),
        out_dir=tmp_path / "o",
    )

    assert report.input_shapes == {"input": [1, 1, 8, 8]}
    assert report.original.latency.batch_size == 1
    assert report.fidelity.samples == 3
    assert any("fixes its batch dimension" in n for n in report.notes)


def test_embedding_tables_are_stored_int8_by_default(tmp_path: Path) -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    table = rng.standard_normal((2000, 64)).astype(np.float32)  # 512 kB: most of the model
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["table", "ids"], ["emb"], name="embed"),
            helper.make_node("ReduceMean", ["emb"], ["pooled"], axes=[1], keepdims=0),
            helper.make_node("MatMul", ["pooled", "w"], ["out"], name="head"),
        ],
        "embedder",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "sequence"])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 8])],
        initializer=[
            numpy_helper.from_array(table, "table"),
            numpy_helper.from_array(rng.standard_normal((64, 8)).astype(np.float32), "w"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    path = tmp_path / "embedder.onnx"
    onnx.save(model, path)

    report = compress(
        path,
        {"version": 1, "steps": [{"quantize": {"mode": "dynamic-int8"}}]},
        out_dir=tmp_path / "out",
    )

    assert report.quantization is not None
    assert report.quantization.op_types == {"Gather": 1, "MatMul": 1}
    assert report.size_ratio is not None and report.size_ratio < 0.3
    assert report.fidelity.summary.cosine_similarity > 0.999


def test_fidelity_advice_leaves_out_what_the_run_already_did() -> None:
    from compress_engine.notes import fidelity_advice
    from compress_engine.report import QuantizationDetails

    def details(mode: str, per_channel: bool) -> QuantizationDetails:
        return QuantizationDetails(
            mode=mode,
            weight_type="int8",
            per_channel=per_channel,
            quantized_nodes=1,
            op_types={"MatMul": 1},
            preprocessed=True,
        )

    assert "per_channel" not in fidelity_advice(details("dynamic-int8", True))
    assert "per_channel: true" in fidelity_advice(details("static-int8", False))
    fp16 = fidelity_advice(details("fp16", False))
    assert "accuracy_aware" not in fp16 and "per_channel" not in fp16 and "exclude" in fp16


def test_top1_agreement_counts_only_for_class_scores() -> None:
    from compress_engine.notes import top1_if_class_scores
    from compress_engine.report import OutputFidelity

    summary = OutputFidelity(
        name="embedding",
        max_abs_diff=0.1,
        mean_abs_diff=0.01,
        cosine_similarity=0.996,
        top1_agreement=0.8,
    )
    unlabelled_dataset = object()  # any bound dataset; only its presence matters here
    assert top1_if_class_scores(summary, None, None) == 0.8  # random inputs: a classifier?
    assert top1_if_class_scores(summary, None, unlabelled_dataset) is None  # embeddings
