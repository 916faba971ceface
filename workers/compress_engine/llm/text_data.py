"""Text for language models: read a .txt / .jsonl upload (or the bundled prose), tokenize it with
the model's own tokenizer.json and cut it into disjoint, seeded calibration and evaluation windows.

Tokenization uses the `tokenizers` library directly (fast, no transformers import).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compress_engine.errors import EngineError

MAX_TEXT_BYTES = 64 * 1024**2
BUNDLED_LABEL = "bundled prose: Python's pydoc topics"
# Passages are tokenized this many at a time, so a large upload never holds all its
# `Encoding` objects (ids, offsets, token strings) at once.
_TOKENIZE_CHUNK = 512
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
_SEPARATOR = "\n\n"


@dataclass(frozen=True)
class TextSource:
    """Text to tokenize, as passages (paragraphs of a .txt file, records of a .jsonl file)."""

    label: str
    passages: tuple[str, ...]

    @property
    def characters(self) -> int:
        return sum(len(p) for p in self.passages)


@dataclass(frozen=True)
class TextWindows:
    """Disjoint windows of `window` tokens: rows of int64 token ids."""

    calibration: np.ndarray  # [n, window] int64
    evaluation: np.ndarray  # [n, window] int64
    window: int
    tokens: int  # tokens in the whole text
    available: int  # non-overlapping windows the text holds
    label: str
    note: str | None = None  # set when fewer windows were taken than asked for


@dataclass(frozen=True)
class TextPreview:
    """The opening passages of a text, for the dataset page."""

    label: str
    passages: list[str]
    characters: int
    passages_count: int


def load_text(path: Path | None, *, label: str | None = None) -> TextSource:
    """Read a .txt file (passages split at blank lines) or a .jsonl file (a `text` field per line).

    `None` gives the bundled prose. Anything else, or invalid content, is refused with an
    EngineError that names the problem (and, for .jsonl, the line).
    """
    if path is None:
        return bundled_prose()
    suffix = path.suffix.lower()
    if suffix not in (".txt", ".jsonl"):
        raise EngineError(
            f"{path.name}: text datasets are .txt files or .jsonl files with a 'text' field "
            "per line."
        )
    size = path.stat().st_size
    if size > MAX_TEXT_BYTES:
        raise EngineError(
            f"{path.name} is {size / 1024**2:.0f} MiB; text datasets are limited to "
            f"{MAX_TEXT_BYTES // 1024**2} MiB. Upload a sample of the text."
        )
    try:
        content = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EngineError(f"{path.name} is not UTF-8 text (byte {exc.start}).") from exc
    content = content.removeprefix("\ufeff")  # a byte-order mark is not text
    if "\x00" in content:  # valid UTF-8, but no text file holds NUL characters
        raise EngineError(f"{path.name} holds NUL bytes: it is a binary file, not text.")
    if suffix == ".txt":
        passages = [p.strip() for p in _PARAGRAPH_BREAK.split(content)]
    else:
        passages = _jsonl_passages(content, path.name)
    passages = [p for p in passages if p]
    if not passages:
        raise EngineError(f"{path.name} holds no text.")
    return TextSource(label or path.name, tuple(passages))


def _jsonl_passages(content: str, name: str) -> list[str]:
    passages = []
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EngineError(f"{name} line {number}: not valid JSON ({exc.msg}).") from exc
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise EngineError(
                f"{name} line {number}: each line must be a JSON object with a string 'text' field."
            )
        passages.append(record["text"].strip())
    return passages


def bundled_prose() -> TextSource:
    """English prose shipped with Python: the pydoc topic pages (language reference sections)."""
    from pydoc_data.topics import topics

    passages = tuple(text.strip() for _, text in sorted(topics.items()) if text.strip())
    return TextSource(BUNDLED_LABEL, passages)


def token_ids(text: TextSource, tokenizer_json: Path) -> np.ndarray:
    """The whole text as one stream of token ids (no special tokens), passages joined by a
    blank line."""
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(tokenizer_json))
    except Exception as exc:  # the library raises plain Exception for a bad file
        raise EngineError(f"cannot read the tokenizer {tokenizer_json.name}: {exc}") from exc
    parts: list[np.ndarray] = []
    for start in range(0, len(text.passages), _TOKENIZE_CHUNK):
        chunk = [p + _SEPARATOR for p in text.passages[start : start + _TOKENIZE_CHUNK]]
        for encoding in tokenizer.encode_batch(chunk, add_special_tokens=False):
            parts.append(np.asarray(encoding.ids, dtype=np.int64))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def token_windows(
    text: TextSource,
    tokenizer_json: Path,
    *,
    window: int,
    calibration: int,
    evaluation: int,
    seed: int,
) -> TextWindows:
    """Cut the token stream into non-overlapping windows, shuffle them with `seed`, and take
    `evaluation` windows then `calibration` windows (disjoint by construction).

    A text too short for all of them gives fewer of each, shared in proportion, and says so in
    `note`; one too short for a single window is refused.
    """
    if window < 2:
        raise EngineError(f"a window must hold at least 2 tokens, not {window}.")
    ids = token_ids(text, tokenizer_json)
    available = len(ids) // window
    if available == 0:
        raise EngineError(
            f"{text.label} has {len(ids)} tokens; one window needs {window}. "
            "Upload more text or use shorter windows."
        )
    wanted = evaluation + calibration
    n_eval, n_calib, note = evaluation, calibration, None
    if available < wanted:
        n_eval = min(evaluation, max(1, available * evaluation // wanted)) if evaluation else 0
        n_calib = min(calibration, available - n_eval)
        note = (
            f"{text.label} holds {available} windows of {window} tokens, fewer than the "
            f"{wanted} asked for: using {n_eval} for evaluation and {n_calib} for calibration."
        )
    rows = ids[: available * window].reshape(available, window)
    order = np.random.default_rng(seed).permutation(available)
    return TextWindows(
        calibration=rows[order[n_eval : n_eval + n_calib]].copy(),
        evaluation=rows[order[:n_eval]].copy(),
        window=window,
        tokens=len(ids),
        available=available,
        label=text.label,
        note=note,
    )


def preview(text: TextSource, n_chars: int = 2000) -> TextPreview:
    """The first passages, up to `n_chars` characters (the last one cut), and the totals."""
    shown: list[str] = []
    left = n_chars
    for passage in text.passages:
        if left <= 0:
            break
        shown.append(passage if len(passage) <= left else passage[:left].rstrip() + "…")
        left -= len(passage)
    return TextPreview(text.label, shown, text.characters, len(text.passages))
