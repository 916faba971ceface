"""A stand-in for a compressed language model in the measurement tests: a copy of the tiny
genai folder (tests/llm_builders.py) whose float weights carry relative noise, so the graph is
the same and the predictions differ.

tests/engine/llm/conftest.py makes the session fixture its own with
`from llm_noisy_model import noisy_genai_dir  # noqa: F401`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest


def perturb(genai_dir: Path, out: Path, *, scale: float = 0.5, seed: int = 0) -> Path:
    """Copy `genai_dir` to `out` with each float weight w replaced by w * (1 + scale * N(0, 1))."""
    import onnx
    from onnx import numpy_helper

    shutil.copytree(genai_dir, out)
    model = onnx.load(str(genai_dir / "model.onnx"), load_external_data=True)
    rng = np.random.default_rng(seed)
    for init in model.graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.dtype == np.float32 and arr.size > 16:
            noisy = arr * (1 + scale * rng.standard_normal(arr.shape)).astype(np.float32)
            init.CopyFrom(numpy_helper.from_array(noisy, init.name))
    for data in out.glob("*.onnx.data"):
        data.unlink()
    onnx.save(
        model,
        str(out / "model.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="model.onnx.data",
    )
    return out


@pytest.fixture(scope="session")
def noisy_genai_dir(tiny_genai_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return perturb(tiny_genai_dir, tmp_path_factory.mktemp("llm_noisy") / "noisy_genai")
