"""compress() on a language model: the tiny llama's genai folder (and its zip, as the platform
stores it) through weight-only quantization to a checked genai zip and an LLM report."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from compress_engine import EngineError, compress
from compress_engine.report import Report
from llm_builders import zip_folder

FAST = {
    "window_tokens": 64,
    "evaluation_windows": 4,
    "decode_tokens": 8,
    "decode_rounds": 2,
    "answer_tokens": 6,
    "prompts": ["What is the capital of France?"],
}


def _recipe(**quantize) -> dict:
    return {
        "steps": [{"quantize": {"mode": "weight-only", **quantize}}],
        "evaluate": {"llm": FAST},
    }


@pytest.fixture(scope="module")
def rtn_run(tiny_genai_dir: Path, tmp_path_factory) -> tuple[Report, Path]:
    out = tmp_path_factory.mktemp("llm-run")
    stages: list[tuple[str, float]] = []
    report = compress(
        tiny_genai_dir,
        _recipe(method="rtn", block_size=32),
        out_dir=out / "out",
        progress=lambda s, f: stages.append((s, f)),
    )
    assert [f for _, f in stages] == sorted(f for _, f in stages)
    assert stages[-1] == ("Done", 1.0)
    return report, out / "out"


def test_it_writes_the_genai_zip_report_and_recipe(rtn_run):
    report, out = rtn_run
    assert sorted(p.name for p in out.iterdir()) == [
        "model.genai.zip",
        "recipe.yaml",
        "report.json",
    ]
    [artifact] = report.artifacts
    assert artifact.format == "genai-zip" and artifact.ok
    assert artifact.precision == "int4-weight-only+int8"
    with zipfile.ZipFile(out / "model.genai.zip") as zf:
        names = set(zf.namelist())
    assert {"model.onnx", "genai_config.json", "tokenizer.json", "chat.py", "README.md"} <= names
    assert Report.model_validate_json((out / "report.json").read_text()).llm is not None


def test_its_report_measures_both_models_on_the_same_windows(rtn_run):
    report, _ = rtn_run
    llm = report.llm
    assert llm.evaluation_windows == 4 and llm.window_tokens == 64
    assert llm.result.size_bytes < llm.original.size_bytes / 2
    assert llm.original.perplexity > 1 and llm.result.perplexity > 1
    expected = 100 * (llm.result.perplexity / llm.original.perplexity - 1)
    assert llm.ppl_delta_pct == pytest.approx(expected)
    assert 0 < llm.next_token_agreement <= 1
    assert llm.decode_rounds == 2 and llm.decode_tokens == 8
    assert llm.original.decode_tok_s > 0 and llm.result.decode_tok_s > 0
    assert llm.original.peak_rss_mb > 0 and llm.result.peak_rss_mb > 0
    [answer] = llm.generations
    assert answer.prompt == "What is the capital of France?"
    assert answer.original_tokens > 0 and answer.compressed_tokens > 0
    # The generic figures every page reads come from the same measurements.
    assert report.result.size_bytes == llm.result.size_bytes
    assert report.result.latency.throughput_per_s == pytest.approx(llm.result.decode_tok_s)
    assert report.fidelity.summary.agreement == llm.next_token_agreement
    assert report.data.preprocessing.startswith("windows of 64 tokens: bundled prose")


def test_its_layers_follow_the_plan(rtn_run):
    report, _ = rtn_run
    layers = report.llm.layers
    by_role = {(layer.role, layer.bits) for layer in layers}
    assert ("lm_head", 8) in by_role and ("mlp", 4) in by_role
    assert report.llm.form == "MatMulNBits"
    assert report.quantization.quantized_nodes == sum(1 for x in layers if x.bits)


def test_the_zip_runs_its_chat_example(rtn_run, tmp_path):
    _, out = rtn_run
    with zipfile.ZipFile(out / "model.genai.zip") as zf:
        zf.extractall(tmp_path)
    done = subprocess.run(
        [sys.executable, str(tmp_path / "chat.py"), "--prompt", "Hello", "--max-new-tokens", "5"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "tokens/s]" in done.stdout


def test_it_reads_the_zip_the_platform_stores(tiny_genai_dir, tmp_path):
    stored = zip_folder(tiny_genai_dir, tmp_path / "model.genai.zip")
    report = compress(stored, _recipe(method="rtn", bits=8), out_dir=tmp_path / "out")
    assert report.llm.bits == 8
    assert {layer.bits for layer in report.llm.layers} == {8}
    assert abs(report.llm.ppl_delta_pct) < 5


def test_it_refuses_an_onnx_mode_for_a_language_model(tiny_genai_dir, tmp_path):
    with pytest.raises(EngineError, match="language model: use quantize mode weight-only"):
        compress(
            tiny_genai_dir, {"steps": [{"quantize": {"mode": "dynamic-int8"}}]}, None, tmp_path
        )
    assert list(tmp_path.iterdir()) == []


def test_it_refuses_a_language_model_mode_for_an_onnx_graph(tmp_path):
    from model_builders import export_tiny_mlp

    model = export_tiny_mlp(tmp_path / "mlp.onnx")
    with pytest.raises(EngineError, match="are for language models"):
        compress(model, _recipe(), out_dir=tmp_path / "out")
