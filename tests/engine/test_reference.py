"""docs/recipes.md is generated from the schema; this keeps it from drifting."""

from __future__ import annotations

from pathlib import Path

from compress_engine.cli import main
from compress_engine.reference import recipe_reference_markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "recipes.md"


def test_the_committed_reference_matches_the_schema() -> None:
    assert DOC.read_text(encoding="utf-8") == recipe_reference_markdown(), (
        "docs/recipes.md is stale: regenerate it with "
        "`modelpress recipe --reference > docs/recipes.md`"
    )


def test_it_documents_every_mode_and_field(capsys) -> None:
    from compress_engine.configs import StaticInt8Config

    assert main(["recipe", "--reference"]) == 0
    text = capsys.readouterr().out
    for mode in ("dynamic-int8", "static-int8", "fp16", "weight-int4", "auto"):
        assert f"## `quantize: {{mode: {mode}}}`" in text
    for name in StaticInt8Config.model_fields:
        assert f"| `{name}` |" in text
