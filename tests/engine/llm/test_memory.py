from __future__ import annotations

import pytest

from compress_engine.errors import EngineError
from compress_engine.llm.memory import peak_rss_mb


def test_it_reads_the_peak_memory_of_a_child_that_generates(tiny_genai_dir):
    peak = peak_rss_mb(tiny_genai_dir, tokens=8, threads=1, timeout_s=120)
    # Python plus the onnxruntime libraries alone take tens of MB; a tiny model adds little.
    assert 20 < peak < 2000


def test_a_child_that_cannot_load_the_model_is_an_engine_error(tmp_path):
    with pytest.raises(EngineError, match="to measure its memory failed"):
        peak_rss_mb(tmp_path, tokens=4, timeout_s=120)


def test_the_parent_process_memory_does_not_leak_into_the_figure(tiny_genai_dir):
    import numpy as np

    # Linux carries ru_maxrss across fork and exec: a child of a big parent would report the
    # parent's size. The figure must be the child's own.
    ballast = np.ones(400_000_000 // 8)
    peak = peak_rss_mb(tiny_genai_dir, tokens=8, threads=1, timeout_s=120)
    assert ballast.sum() > 0
    assert peak < 300
