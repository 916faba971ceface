"""Fixtures for the language-model engine tests: the tiny random llama of tests/llm_builders.py
as a Hugging Face folder and as an onnxruntime-genai folder, each built once per session.

No Django here; run with `pytest tests/engine/llm -p no:django`.
"""

from __future__ import annotations

from llm_builders import tiny_genai_dir, tiny_hf_dir  # noqa: F401  (session fixtures)
from llm_noisy_model import noisy_genai_dir  # noqa: F401  (a stand-in compressed model)
