"""answer_side_by_side: a typed prompt answered by two zipped genai folders, as the worker
fetches them from storage."""

from __future__ import annotations

import pytest

from compress_engine import EngineError, answer_side_by_side
from compress_engine.llm.generate import answer
from llm_builders import zip_folder

PROMPT = "What does the print function do?"


@pytest.fixture(scope="module")
def zips(tiny_genai_dir, noisy_genai_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ask-zips")
    # The compressed zip has a top folder (as a bundle might); unpack_zip finds model.onnx.
    return (
        zip_folder(tiny_genai_dir, folder / "original.genai.zip"),
        zip_folder(noisy_genai_dir, folder / "compressed.genai.zip", top="model"),
    )


def test_it_answers_one_prompt_with_both_zipped_models(
    zips, tiny_genai_dir, noisy_genai_dir, tmp_path
):
    original, compressed = zips
    scratch = tmp_path / "scratch"
    scratch.mkdir()

    g = answer_side_by_side(
        original, compressed, f"  {PROMPT}\n", max_new_tokens=7, threads=1, scratch=scratch
    )

    assert g.prompt == PROMPT  # stripped
    assert 1 <= g.original_tokens <= 7 and 1 <= g.compressed_tokens <= 7
    assert g.original_tok_s and g.original_tok_s > 0
    assert g.compressed_tok_s and g.compressed_tok_s > 0
    # Each answer is its own model's (the folders answered directly give the same text).
    [(want_original, _, _)] = answer(tiny_genai_dir, [PROMPT], max_new_tokens=7, threads=1)
    [(want_compressed, _, _)] = answer(noisy_genai_dir, [PROMPT], max_new_tokens=7, threads=1)
    assert (g.original, g.compressed) == (want_original, want_compressed)
    # The unpacked folders are gone.
    assert list(scratch.iterdir()) == []


@pytest.mark.parametrize(
    ("prompt", "tokens", "message"),
    [
        ("   ", 8, "empty"),
        ("x" * 501, 8, "501 characters"),
        ("Hello", 0, "between 1 and 512"),
    ],
)
def test_it_refuses_a_prompt_it_should_not_run(zips, prompt, tokens, message):
    with pytest.raises(EngineError, match=message):
        answer_side_by_side(*zips, prompt, max_new_tokens=tokens)


def test_a_zip_that_is_not_a_genai_folder_is_an_engine_error(zips, tmp_path):
    bad = tmp_path / "bad.genai.zip"
    bad.write_bytes(b"not a zip")
    with pytest.raises(EngineError, match="not a valid zip"):
        answer_side_by_side(zips[0], bad, "Hello", max_new_tokens=4)
