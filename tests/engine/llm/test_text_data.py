from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from compress_engine.errors import EngineError
from compress_engine.llm import text_data
from compress_engine.llm.text_data import (
    BUNDLED_LABEL,
    TextSource,
    bundled_prose,
    load_text,
    preview,
    token_ids,
    token_windows,
)


@pytest.fixture(scope="module")
def tokenizer_json(tiny_hf_dir: Path) -> Path:
    return tiny_hf_dir / "tokenizer.json"


def _offsets(rows: np.ndarray, stream: np.ndarray, window: int) -> set[int]:
    """Which non-overlapping window of the stream each row is (fails if one is not)."""
    cut = stream[: len(stream) // window * window].reshape(-1, window)
    found = set()
    for row in rows:
        (hits,) = np.nonzero((cut == row).all(axis=1))
        assert len(hits) >= 1, "a row is not a window of the token stream"
        found.add(int(hits[0]))
    return found


def test_it_cuts_disjoint_seeded_windows_from_the_token_stream(tokenizer_json):
    prose = bundled_prose()
    first = token_windows(prose, tokenizer_json, window=64, calibration=6, evaluation=5, seed=3)
    again = token_windows(prose, tokenizer_json, window=64, calibration=6, evaluation=5, seed=3)
    other = token_windows(prose, tokenizer_json, window=64, calibration=6, evaluation=5, seed=4)

    assert first.evaluation.shape == (5, 64) and first.calibration.shape == (6, 64)
    assert first.evaluation.dtype == np.int64 and first.note is None
    assert np.array_equal(first.evaluation, again.evaluation)
    assert np.array_equal(first.calibration, again.calibration)
    assert not np.array_equal(first.evaluation, other.evaluation)
    stream = token_ids(prose, tokenizer_json)
    assert first.tokens == len(stream) and first.available == len(stream) // 64
    evaluation = _offsets(first.evaluation, stream, 64)
    calibration = _offsets(first.calibration, stream, 64)
    assert len(evaluation) == 5 and len(calibration) == 6
    assert evaluation.isdisjoint(calibration)


def test_it_takes_fewer_windows_from_a_short_text_and_says_so(tmp_path, tokenizer_json):
    path = tmp_path / "short.txt"
    path.write_text("A short text about windows.\n\n" * 30)
    text = load_text(path)
    windows = token_windows(text, tokenizer_json, window=32, calibration=50, evaluation=50, seed=0)
    total = windows.available
    assert 2 <= total < 100
    assert len(windows.evaluation) + len(windows.calibration) == total
    assert len(windows.evaluation) >= 1 and len(windows.calibration) >= 1
    assert windows.note and f"holds {total} windows" in windows.note


def test_it_refuses_a_text_shorter_than_one_window(tmp_path, tokenizer_json):
    path = tmp_path / "tiny.txt"
    path.write_text("Too short.")
    with pytest.raises(EngineError, match="one window needs 256"):
        token_windows(
            load_text(path), tokenizer_json, window=256, calibration=1, evaluation=1, seed=0
        )


def test_it_reads_txt_passages_and_jsonl_records(tmp_path):
    txt = tmp_path / "notes.txt"
    txt.write_text("\ufeffFirst paragraph\nstill first.\n\n  \nSecond one.\n")
    assert load_text(txt).passages == ("First paragraph\nstill first.", "Second one.")
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text(json.dumps({"text": "one", "id": 1}) + "\n\n" + json.dumps({"text": "two"}))
    source = load_text(jsonl, label="docs")
    assert source.passages == ("one", "two") and source.label == "docs"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"text": "ok"}\n{"text": "broken"\n', "line 2: not valid JSON"),
        ('{"text": "ok"}\n{"body": "x"}\n', "line 2: each line must be a JSON object"),
        ('{"text": "ok"}\n\n["text"]\n', "line 3: each line must be a JSON object"),
        ('{"text": 5}\n', "line 1"),
        ('{"text": "  "}\n', "holds no text"),
    ],
)
def test_it_refuses_invalid_jsonl_naming_the_line(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(EngineError, match=message):
        load_text(path)


def test_it_refuses_other_files_non_utf8_and_oversized_text(tmp_path, monkeypatch):
    csv = tmp_path / "data.csv"
    csv.write_text("text\nhello\n")
    with pytest.raises(EngineError, match=r"\.txt files or \.jsonl"):
        load_text(csv)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(EngineError, match="not UTF-8"):
        load_text(latin)
    big = tmp_path / "big.txt"
    big.write_text("x" * 2048)
    monkeypatch.setattr(text_data, "MAX_TEXT_BYTES", 1024)
    with pytest.raises(EngineError, match="limited to"):
        load_text(big)


def test_the_bundled_prose_is_labelled_and_is_the_default():
    prose = load_text(None)
    assert prose.label == BUNDLED_LABEL == "bundled prose: Python's pydoc topics"
    assert len(prose.passages) > 50 and prose.characters > 100_000
    assert prose == bundled_prose()


def test_the_preview_shows_the_first_passages_and_the_totals():
    source = TextSource("t", ("a" * 10, "b" * 10, "c" * 10))
    shown = preview(source, n_chars=15)
    assert shown.passages == ["a" * 10, "bbbbb…"]
    assert (shown.characters, shown.passages_count, shown.label) == (30, 3, "t")
