"""The default install (pyproject's main dependencies) runs every converter and quantizer.

The dev extra once hid two missing packages: onnxscript (torch.onnx.export(dynamo=True), so
every .pt2 upload failed) and onnx_ir (ONNX Runtime's MatMulNBits quantizer, so int4-weights
failed). Two checks keep that from coming back, neither a list that can drift:

- every third-party module the runtime code imports (lazily inside functions too) comes from
  a main dependency or something one requires;
- the converter and quantizer paths really run in a process that refuses every module only
  packages outside that closure provide, which also covers what the libraries import on our
  paths (tests/runtime_env.py).

And when a package is missing anyway, the user is told which one and to ask the
administrator, never to fix the model.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from compress_engine import EngineError, compress
from compress_engine.ingest import ModelFormat, convert_to_onnx
from compress_engine.ingest.capability import (
    check_imports,
    missing_module,
    missing_package_message,
    probe_capabilities,
)
from runtime_env import ROOT, blocking_env, runtime_closure

# These run in a converter's own environment: the first two in TensorFlow's
# (requirements/tflite.txt), the last in litert-torch's (requirements/litert.txt).
CONVERTER_ENV_SCRIPTS = {
    "workers/compress_engine/ingest/tf_convert.py",
    "workers/compress_engine/export/tflite_convert.py",
    "workers/compress_engine/export/litert_convert.py",
}
FAST = {"latency_runs": 2, "warmup": 0, "fidelity_samples": 4, "batch_sizes": []}


def _imports(path: Path) -> set[str]:
    """Top-level names of every absolute import in the file, at any depth."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.partition(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.partition(".")[0])
    return names


def test_every_third_party_import_of_the_runtime_code_is_a_main_dependency() -> None:
    closure = runtime_closure()
    providers = importlib.metadata.packages_distributions()
    first_party = {p.name for root in ("platform", "workers") for p in (ROOT / root).iterdir()}
    problems = []
    for root in ("platform", "workers"):
        for path in sorted((ROOT / root).rglob("*.py")):
            where = path.relative_to(ROOT).as_posix()
            if where in CONVERTER_ENV_SCRIPTS or "/migrations/" in where:
                continue
            for name in sorted(_imports(path) - set(sys.stdlib_module_names) - first_party):
                dists = {canonicalize_name(d) for d in providers.get(name, [])}
                if not dists & closure:
                    found = ", ".join(sorted(dists)) or "nothing installed"
                    problems.append(f"{where} imports {name} (from {found})")
    assert not problems, (
        "imported at run time but not a main dependency (pyproject [project] dependencies):\n"
        + "\n".join(problems)
    )


# Run in a process that sees only the main dependencies: the two torch conversions (each in
# the converter subprocess it starts, which inherits the refusals), the quantizers, the
# torch-side passes and the bundle (CLI), and the worker's start-up probe.
PATHS_SCRIPT = """
import json, sys
from pathlib import Path
from compress_engine import probe_capabilities
from compress_engine.cli import main
from compress_engine.ingest import ModelFormat, convert_to_onnx, parse_input_shapes

args = json.loads(sys.argv[1])
out = Path(args["out"])
convert_to_onnx(Path(args["pt"]), ModelFormat.TORCHSCRIPT, out / "ts",
                input_shapes=parse_input_shapes("1x3x16x16"), timeout_s=300)
convert_to_onnx(Path(args["pt2"]), ModelFormat.TORCH_EXPORT, out / "pt2", timeout_s=300)
for i, (model, recipe, data) in enumerate(args["runs"]):
    (out / f"recipe{i}.yaml").write_text(json.dumps(recipe))
    argv = ["compress", model, "--recipe", str(out / f"recipe{i}.yaml"),
            "--out", str(out / f"run{i}"), "--bundle", "-q"]
    assert main(argv + (["--data", data] if data else [])) == 0, recipe
missing = [m.short for m in probe_capabilities() if not m.converter_env]
assert not missing, missing
print("every path ran")
"""


def test_the_converters_and_quantizers_run_with_the_main_dependencies_only(
    torch_model_files: dict[str, Path],
    trained_cnn_path: Path,
    pattern_npz: Path,
    mlp_path: Path,
    tmp_path: Path,
) -> None:
    def recipe(*steps: dict) -> dict:
        return {"steps": list(steps), "evaluate": FAST}

    runs = [
        (
            str(trained_cnn_path),
            recipe(
                {"prune": {"method": "channel", "amount": 0.25}},
                {"distill": {"epochs": 1}},
                {"quantize": {"mode": "static-int8", "samples": 32}},
            ),
            str(pattern_npz),
        ),
        (str(mlp_path), recipe({"quantize": {"mode": "weight-int4"}}), None),
        (str(mlp_path), recipe({"quantize": {"mode": "fp16"}}), None),
        (str(mlp_path), recipe({"quantize": {"mode": "dynamic-int8"}}), None),
    ]
    args = {
        "out": str(tmp_path),
        "pt": str(torch_model_files["torchscript"]),
        "pt2": str(torch_model_files["export"]),
        "runs": runs,
    }
    env = blocking_env(tmp_path / "site", allow=runtime_closure())

    proc = subprocess.run(
        [sys.executable, "-c", PATHS_SCRIPT, json.dumps(args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )

    assert proc.returncode == 0 and "every path ran" in proc.stdout, proc.stderr[-4000:]


# --- a package missing anyway: the user learns which, and that it is not their model ------


def test_a_pt2_upload_names_the_package_the_server_lacks(
    torch_model_files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The converter subprocess inherits this environment, so onnxscript is missing there.
    for key, value in blocking_env(tmp_path / "site", modules=("onnxscript",)).items():
        monkeypatch.setenv(key, value)

    with pytest.raises(EngineError) as err:
        convert_to_onnx(torch_model_files["export"], ModelFormat.TORCH_EXPORT, tmp_path / "out")

    message = str(err.value)
    assert message.startswith("This server cannot convert torch.export (.pt2) files: ")
    assert "the Python package 'onnxscript' is missing" in message
    assert "ask the administrator to install it (pip install onnxscript)" in message
    assert "Fix the model" not in message


def test_int4_names_the_package_the_server_lacks(
    mlp_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As if onnx_ir were not installed: the quantizer module is imported afresh and fails.
    monkeypatch.setitem(sys.modules, "onnx_ir", None)
    monkeypatch.delitem(
        sys.modules, "onnxruntime.quantization.matmul_nbits_quantizer", raising=False
    )

    with pytest.raises(EngineError) as err:
        compress(
            mlp_path,
            {"steps": [{"quantize": {"mode": "weight-int4"}}], "evaluate": FAST},
            out_dir=tmp_path,
        )

    assert "This server cannot run weight-only int4" in str(err.value)
    assert "the Python package 'onnx_ir' is missing" in str(err.value)
    assert "(pip install onnx-ir)" in str(err.value)


def test_the_start_up_probe_names_what_cannot_be_converted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in blocking_env(tmp_path / "site", modules=("onnx_ir",)).items():
        monkeypatch.setenv(key, value)

    missing = {m.key: m for m in probe_capabilities() if not m.converter_env}

    assert set(missing) == {"torch-export", "int4-weights"}
    assert missing["int4-weights"].package == "onnx_ir"
    assert missing["torch-export"].short == "torch-export (onnx_ir missing)"
    assert missing["torch-export"].message.startswith(
        "This server cannot convert torch.export (.pt2) files: the Python package 'onnx_ir'"
    )


def test_it_finds_the_missing_module_behind_a_wrapped_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    assert check_imports(("json", "onnxscript")) == "onnxscript"
    try:
        try:
            raise ModuleNotFoundError("No module named 'onnxscript.ir'", name="onnxscript.ir")
        except ImportError as inner:
            raise RuntimeError("could not export the program") from inner
    except RuntimeError as exc:
        assert missing_module(exc) == "onnxscript"
    assert missing_module(RuntimeError("No module named 'tf2onnx'")) == "tf2onnx"
    assert missing_module(ValueError("bad shape")) is None
    text = missing_package_message("convert Keras (.keras) files", "tf2onnx", converter_env=True)
    assert "TensorFlow converter environment (.venv-tflite" in text
