"""Language-model jobs for the web and worker tests: a ready LLM model version whose stored
file is the tiny llama's genai folder zipped (as the worker's conversion stores it), a text
dataset ingested through the real upload service, and the FAST measurement settings that keep
a real run to a second or two.

The conversion itself (HF zip or GGUF -> genai zip) is tests/worker/test_llm_ingest.py's; here
the version is stored directly from the session's genai folder, saving a second build.
"""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Any

from llm_builders import prose, zip_folder

FAST = {
    "window_tokens": 64,
    "evaluation_windows": 4,
    "decode_tokens": 8,
    "decode_rounds": 2,
    "answer_tokens": 6,
    "prompts": ["What is the capital of France?"],
}


def llm_recipe(**quantize: Any) -> dict[str, Any]:
    """A weight-only recipe (round to nearest unless told) with the FAST settings."""
    return {
        "version": 1,
        "steps": [{"quantize": {"mode": "weight-only", "method": "rtn", **quantize}}],
        "evaluate": {"llm": FAST},
    }


def store_llm_version(project, user, genai_dir: Path, scratch: Path, *, name: str = "tiny-llama"):
    """A ready language-model version of `project` holding `genai_dir`, zipped."""
    from django.core.files import File

    from compress_engine import inspect_onnx
    from compress_engine.llm.llm_info import read_llm_info
    from registry.models import GENAI_ZIP, ModelVersion
    from registry.services import model_facts

    zipped = zip_folder(genai_dir, scratch / GENAI_ZIP)
    facts = model_facts(inspect_onnx(genai_dir / "model.onnx", onnx_checker=False))
    facts["size_bytes"] = sum(p.stat().st_size for p in genai_dir.iterdir() if p.is_file())
    version = ModelVersion(
        project=project,
        name=name,
        version=project.model_versions.filter(name=name).count() + 1,
        source_format="hf-llm-zip",
        original_filename="tiny-llama.zip",
        sha256=hashlib.sha256(zipped.read_bytes()).hexdigest(),
        llm=read_llm_info(genai_dir).model_dump(mode="json"),
        uploaded_by=user,
        **facts,
    )
    with open(zipped, "rb") as fh:
        version.file.save(GENAI_ZIP, File(fh), save=False)
    version.save()
    return version


def ingest_text_dataset(project, owner, folder: Path, *, name: str = "prose.txt"):
    """A .txt dataset (passages split at blank lines) through the real upload service."""
    from conftest import _ingest
    from registry.services import ingest_dataset_upload

    path = folder / name
    path.write_text(prose(40).replace("\n", "\n\n"), encoding="utf-8")
    return _ingest(ingest_dataset_upload, project, owner, path)


def slower_report(stored: dict[str, Any]) -> dict[str, Any]:
    """A stored LLM report with the compressed model's decode rounds all slower than the
    original's, and the verdict the engine gives such a run."""
    from compress_engine import Report
    from compress_engine.llm.report_build import quality_reasons
    from compress_engine.report_llm import LlmDetails

    report = copy.deepcopy(stored)
    llm = report["llm"]
    low = llm["original"]["decode_tok_s_low"]
    llm["result"].update(
        decode_tok_s=low * 0.5, decode_tok_s_low=low * 0.45, decode_tok_s_high=low * 0.55
    )
    llm["decode_ratio"] = llm["result"]["decode_tok_s"] / llm["original"]["decode_tok_s"]
    report["quality_reasons"] = quality_reasons(LlmDetails.model_validate(llm))
    report["recommended"] = not report["quality_reasons"]
    return Report.model_validate(report).model_dump(mode="json")
