from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import model_builders
from compress_engine import Recipe, Report, cli, default_recipe
from compress_engine.cli import main
from compress_engine.presets import PRESETS


def test_inspect_prints_inputs_outputs_and_parameters(
    cnn_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["inspect", str(cnn_path)]) == 0

    out = capsys.readouterr().out
    assert "input: float32 [batch, 1, 8, 8]" in out
    assert "logits: float32 [batch, 10]" in out
    assert "opset: 17" in out
    assert "67,498" in out
    # Conv 78,336 + Gemm 66,176 at batch 1 (computed by hand in test_tuning).
    assert "MACs:       144,512 at {'input': [1, 1, 8, 8]}; not counted: Relu x3" in out


def test_a_terminal_gets_one_progress_bar_labelled_with_the_stage() -> None:
    import io

    from compress_engine.cli import _progress_display, _ProgressBar, _ProgressPrinter

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    bar = _progress_display(screen)
    assert isinstance(bar, _ProgressBar)
    bar("Measuring original model", 0.3)
    bar("Quantizing", 1.0)
    bar.close()
    frames = [f for f in screen.getvalue().split("\r") if f.strip()]
    assert frames[-1].startswith("Quantizing") and "100%" in frames[-1]
    assert any(f.startswith("Measuring original model") and " 30%" in f for f in frames)
    assert isinstance(_progress_display(io.StringIO()), _ProgressPrinter)  # logs: plain lines


def test_compress_writes_results_and_prints_a_table(
    mlp_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        yaml.safe_dump({"steps": [{"quantize": {}}], "evaluate": {"latency_runs": 3}})
    )
    out_dir = tmp_path / "out"

    assert main(["compress", str(mlp_path), "--recipe", str(recipe), "--out", str(out_dir)]) == 0

    captured = capsys.readouterr()
    report = Report.model_validate_json((out_dir / "report.json").read_text())
    assert report.original.latency.runs == 3
    assert (out_dir / "model.int8.onnx").exists()
    for label in ("size", "parameters", "latency p50", "fidelity", "cosine"):
        assert label in captured.out
    assert "[100%] Done" in captured.err
    assert "Quantizing (dynamic int8)" in captured.err


def test_compress_uses_the_default_recipe_and_out_dir(
    cnn_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "digits.onnx"
    model.write_bytes(cnn_path.read_bytes())

    assert main(["compress", str(model), "--quiet"]) == 0

    report = Report.model_validate_json(
        (tmp_path / "digits.compressed" / "report.json").read_text()
    )
    assert Recipe.from_dict(report.recipe) == default_recipe()
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("command", ["inspect", "compress"])
def test_a_bad_file_exits_2_with_the_message(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = model_builders.write_bad_model(tmp_path / "bad.onnx", "garbage")

    assert (
        main([command, str(bad), "--quiet"] if command == "compress" else [command, str(bad)]) == 2
    )

    err = capsys.readouterr().err
    assert err.startswith("error: The file is not a valid ONNX model")
    assert "Traceback" not in err


def test_a_bad_recipe_exits_2_naming_the_field(
    cnn_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("steps: [{quantize: {mode: fp64}}]\n")

    assert main(["compress", str(cnn_path), "--recipe", str(recipe)]) == 2
    assert "steps.0.quantize.mode" in capsys.readouterr().err


def test_recipe_prints_the_default_recipe(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["recipe"]) == 0
    assert Recipe.parse(capsys.readouterr().out) == default_recipe()

    assert main(["recipe", "--schema"]) == 0
    assert "steps" in json.loads(capsys.readouterr().out)["properties"]


def test_passes_lists_every_mode(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["passes"]) == 0
    out = capsys.readouterr().out
    for name in ("dynamic-int8", "static-int8", "fp16", "weight-int4"):
        assert f"quantize-{name}" in out


def test_python_dash_m_runs_the_cli(engine_env: dict[str, str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "compress_engine", "recipe"],
        capture_output=True,
        text=True,
        env=engine_env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "dynamic-int8" in proc.stdout


def test_recipes_lists_the_presets(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["recipes"]) == 0

    out = capsys.readouterr().out
    for name in ("fast-int8", "static-int8", "fp16-gpu", "int4-weights"):
        assert name in out
    assert "needs data" in out


@pytest.mark.parametrize("name", ["fast-int8", "static-int8", "fp16-gpu", "int4-weights"])
def test_recipes_name_prints_valid_yaml(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["recipes", name]) == 0

    out = capsys.readouterr().out
    assert out.startswith("# ")  # a comment line with the description
    assert Recipe.parse(out) == PRESETS[name].recipe()


def test_an_unknown_preset_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["recipes", "turbo"]) == 2
    assert "Unknown preset 'turbo'; available: fast-int8" in capsys.readouterr().err


def test_compress_with_a_preset_and_data(
    trained_cnn_path: Path,
    pattern_npz: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out_dir = tmp_path / "out"

    code = main(
        [
            "compress",
            str(trained_cnn_path),
            "--preset",
            "static-int8",
            "--data",
            str(pattern_npz),
            "--out",
            str(out_dir),
        ]
    )

    assert code == 0
    captured = capsys.readouterr()
    assert "accuracy (300 labelled samples): top-1" in captured.out
    assert "evaluation-split samples" in captured.out
    assert "Collecting tensor data" not in captured.out  # ONNX Runtime's prints are swallowed
    report = Report.model_validate_json((out_dir / "report.json").read_text())
    assert report.quantization is not None and report.quantization.mode == "static-int8"


def test_static_without_data_exits_2(
    cnn_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["compress", str(cnn_path), "--preset", "static-int8", "-q"]) == 2
    assert "needs calibration data" in capsys.readouterr().err


def test_prune_and_distill_print_each_epoch_and_a_summary(
    trained_cnn_path: Path,
    pattern_npz: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "steps:\n"
        "  - prune: {amount: 0.5}\n"
        "  - distill: {teacher: big, epochs: 2, batch_size: 32}\n"
        "evaluate: {latency_runs: 3, warmup: 1, batch_sizes: []}\n"
    )
    argv = ["compress", str(trained_cnn_path), "--recipe", str(recipe), "--data", str(pattern_npz)]

    code = main([*argv, "--teacher", f"big={trained_cnn_path}", "--out", str(tmp_path / "o")])

    assert code == 0
    captured = capsys.readouterr()
    assert "distill epoch 0: loss -, validation accuracy" in captured.err
    assert "distill epoch 2: loss " in captured.err
    assert "pruning (channel, l2, amount 0.50): parameters" in captured.out
    assert "distill on cpu" in captured.out or "distill on cuda" in captured.out


@pytest.mark.parametrize(
    ("teacher", "message"),
    [("big", "--teacher takes NAME=PATH"), ("big=/no/such.onnx", "no such file")],
)
def test_a_bad_teacher_exits_2(
    cnn_path: Path, teacher: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["compress", str(cnn_path), "--teacher", teacher, "-q"]) == 2
    assert message in capsys.readouterr().err


def test_an_internal_error_exits_1_with_a_hint(
    cnn_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(_path: Path) -> None:
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(cli, "inspect_onnx", broken)

    assert main(["inspect", str(cnn_path)]) == 1

    err = capsys.readouterr().err
    assert err.splitlines()[0] == "internal error (RuntimeError): boom second line"
    assert "--debug" in err and "Traceback" not in err

    with pytest.raises(RuntimeError, match="boom"):
        main(["inspect", str(cnn_path), "--debug"])
    with pytest.raises(RuntimeError, match="boom"):
        main(["--debug", "inspect", str(cnn_path)])


def test_bench_hands_its_arguments_to_the_suite(monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess
    import sys

    from compress_engine import cli

    received: list[tuple[list[str], object]] = []

    def suite(command: list[str], *, cwd: object, check: bool) -> subprocess.CompletedProcess:
        received.append((command, cwd))
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(subprocess, "run", suite)

    assert main(["bench", "--models", "digits-cnn", "--suite", "quick"]) == 0
    assert main(["--debug", "bench"]) == 0
    # By module, from the checkout: the engine never imports the repository's benchmarks.
    checkout = cli.source_checkout()
    assert checkout is not None and (checkout / "benchmarks" / "__main__.py").is_file()
    python = [sys.executable, "-m", "benchmarks"]
    assert received == [
        ([*python, "--models", "digits-cnn", "--suite", "quick"], checkout),
        (python, checkout),
    ]


def test_bench_says_it_needs_a_source_checkout(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from compress_engine import cli

    monkeypatch.setattr(cli, "source_checkout", lambda: None)

    assert main(["bench"]) == cli.EXIT_USER_ERROR
    assert "runs the benchmark suite of a source checkout" in capsys.readouterr().err
