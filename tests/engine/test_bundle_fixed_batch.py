"""The bundle's examples/run_onnx.py runs a multi-sample .npz through a model exported with a
fixed batch of 1 (one sample per run), instead of crashing on the batch dimension."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

import model_builders
from compress_engine.cli import main

RECIPE = (
    "steps:\n"
    "  - quantize: {mode: dynamic-int8}\n"
    "evaluate: {latency_runs: 2, warmup: 0, fidelity_samples: 4, batch_sizes: []}\n"
)


def test_run_onnx_feeds_a_fixed_batch_model_sample_by_sample(tmp_path: Path) -> None:
    model = model_builders.export_tiny_cnn(tmp_path / "fixed.onnx", dynamic_batch=False)
    x = np.random.default_rng(0).standard_normal((7, 1, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "seven.npz", x=x)
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    out = tmp_path / "out"
    argv = ["compress", str(model), "--recipe", str(tmp_path / "recipe.yaml")]
    assert main([*argv, "--out", str(out), "--bundle", "-q"]) == 0
    bundle = tmp_path / "bundle"
    with zipfile.ZipFile(out / "bundle.zip") as zf:
        zf.extractall(bundle)

    done = subprocess.run(
        [sys.executable, "examples/run_onnx.py", "--npz", str(tmp_path / "seven.npz")],
        cwd=bundle,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 0, done.stderr
    assert "logits: shape [7, 10]" in done.stdout
    top1 = re.search(r"top-1 per sample: \[(.*)\]", done.stdout)
    assert top1 is not None and len(top1.group(1).split(",")) == 7
