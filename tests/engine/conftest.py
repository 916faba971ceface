"""Fixtures for engine tests: tiny models built once per session, fast evaluation recipes.

No Django here; run with `pytest tests/engine -p no:django`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import model_builders
from compress_engine import Recipe


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def cnn_path(models_dir: Path) -> Path:
    return model_builders.export_tiny_cnn(models_dir / "cnn.onnx")


@pytest.fixture(scope="session")
def mlp_path(models_dir: Path) -> Path:
    return model_builders.export_tiny_mlp(models_dir / "mlp.onnx")


# Few timed runs: the tests check plumbing and honesty of figures, not speed.
FAST_EVALUATE: dict[str, Any] = {"latency_runs": 12, "warmup": 1, "fidelity_samples": 16}


@pytest.fixture(scope="session")
def make_recipe() -> Callable[..., Recipe]:
    def make(evaluate: dict[str, Any] | None = None, **quantize: Any) -> Recipe:
        return Recipe.parse(
            {
                "steps": [{"quantize": quantize}],
                "evaluate": {**FAST_EVALUATE, **(evaluate or {})},
            }
        )

    return make


@pytest.fixture(scope="session")
def engine_env() -> dict[str, str]:
    """Environment for a subprocess that must import compress_engine from this checkout."""
    workers = Path(__file__).resolve().parents[2] / "workers"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(workers), env.get("PYTHONPATH")]))
    return env


@pytest.fixture(scope="session")
def trained_cnn_path(models_dir: Path) -> Path:
    """build_tiny_cnn trained on model_builders.pattern_dataset (~84% top-1 held out)."""
    return model_builders.export_trained_cnn(models_dir / "trained_cnn.onnx")


@pytest.fixture(scope="session")
def pattern_npz(models_dir: Path) -> Path:
    """600 held-out labelled samples for trained_cnn_path: x [600, 1, 8, 8], y [600]."""
    import numpy as np

    x, y = model_builders.pattern_dataset(600, seed=7)
    path = models_dir / "patterns.npz"
    np.savez(path, x=x, y=y)
    return path
