"""Teacher-forced perplexity of an onnxruntime-genai folder, run through a plain onnxruntime
session on its model.onnx: one window per run with an empty KV cache, so one run gives the
logits of every position.

Logits are reduced window by window (a window of SmolLM2 is 256 x 49152 floats), so memory stays
at one window's logits whatever the number of windows.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from compress_engine.errors import EngineError

_FLOAT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


@dataclass(frozen=True)
class WindowScore:
    """One window: summed negative log-likelihood of its predicted tokens and the predictions."""

    nll_sum: float
    positions: int
    predictions: np.ndarray  # [window - 1] argmax token at each position

    @property
    def mean_nll(self) -> float:
        return self.nll_sum / self.positions


@dataclass(frozen=True)
class PerplexityComparison:
    """Original vs compressed on the same windows."""

    original: float
    compressed: float
    next_token_agreement: float  # share of positions where both argmaxes are equal
    positions: int
    original_window_nll: list[float] = field(default_factory=list)  # mean NLL per window
    compressed_window_nll: list[float] = field(default_factory=list)

    @property
    def delta_pct(self) -> float:
        return 100.0 * (self.compressed / self.original - 1.0)


class Scorer:
    """An onnxruntime session on a genai folder's decoder, created once and reused.

    The auto search scores many candidates; passing a Scorer of the original model avoids
    loading it again for each.
    """

    def __init__(self, folder: Path, *, threads: int | None = None) -> None:
        import onnxruntime as ort

        decoder = _decoder_config(folder)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or 0
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.folder = folder
        self.session = ort.InferenceSession(
            str(folder / decoder["filename"]), options, providers=["CPUExecutionProvider"]
        )
        self._logits = decoder["outputs"]["logits"]
        self._static = _empty_cache(self.session, decoder)
        names = decoder["inputs"]
        self._ids, self._mask = names["input_ids"], names.get("attention_mask")
        self._positions = names.get("position_ids", "position_ids")
        self._declared = {i.name for i in self.session.get_inputs()}

    def score(self, window: np.ndarray) -> WindowScore:
        """Teacher-forced NLL of tokens 1..n-1 of one window given the tokens before them."""
        ids = np.asarray(window, dtype=np.int64).reshape(1, -1)
        feed: dict[str, Any] = {self._ids: ids, **self._static}
        if self._mask in self._declared:
            feed[self._mask] = np.ones_like(ids)
        if self._positions in self._declared:
            feed[self._positions] = np.arange(ids.shape[1], dtype=np.int64)[None]
        (logits,) = self.session.run([self._logits], feed)
        return _reduce(logits[0, :-1], ids[0, 1:])


def _decoder_config(folder: Path) -> dict[str, Any]:
    path = folder / "genai_config.json"
    try:
        decoder = json.loads(path.read_text(encoding="utf-8"))["model"]["decoder"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EngineError(f"{folder.name}: no usable genai_config.json ({exc!r}).") from exc
    needed = ("filename", "inputs", "outputs", "num_hidden_layers", "num_key_value_heads")
    missing = [key for key in needed if key not in decoder]
    if missing or "input_ids" not in decoder["inputs"] or "logits" not in decoder["outputs"]:
        raise EngineError(f"{folder.name}: genai_config.json lacks decoder fields {missing}.")
    return decoder


def _empty_cache(session: Any, decoder: dict[str, Any]) -> dict[str, np.ndarray]:
    """Zero-length past keys/values for every layer, in the dtype the session declares."""
    inputs = decoder["inputs"]
    patterns = [inputs.get("past_key_names"), inputs.get("past_value_names")]
    names = {p % layer for p in patterns if p for layer in range(decoder["num_hidden_layers"])}
    feed = {}
    for info in session.get_inputs():
        if info.name not in names:
            continue
        dtype = _FLOAT_TYPES.get(info.type)
        if dtype is None:
            raise EngineError(f"{info.name} is {info.type}; only float/float16 caches are read.")
        heads = _dim(info.shape[1], decoder["num_key_value_heads"])
        size = _dim(info.shape[3], decoder.get("head_size", 0))
        feed[info.name] = np.zeros((1, heads, 0, size), dtype=dtype)
    if len(feed) != len(names):
        raise EngineError(f"the model lacks some of its cache inputs: {sorted(names - set(feed))}")
    return feed


def _dim(declared: Any, fallback: int) -> int:
    return declared if isinstance(declared, int) else int(fallback)


def _reduce(logits: np.ndarray, targets: np.ndarray) -> WindowScore:
    """NLL via a stable log-sum-exp; sums in float64 so 4-decimal perplexities are exact."""
    logits = logits.astype(np.float32, copy=False)
    peak = logits.max(axis=-1, keepdims=True)
    lse = np.log(np.exp(logits - peak).sum(axis=-1, dtype=np.float64)) + peak[:, 0]
    picked = np.take_along_axis(logits, targets[:, None], axis=-1)[:, 0]
    nll = lse - picked.astype(np.float64)
    return WindowScore(float(nll.sum()), len(targets), logits.argmax(axis=-1))


def perplexity(model: Path | Scorer, windows: np.ndarray, *, threads: int | None = None) -> float:
    """exp(mean NLL over every predicted position of every window)."""
    scorer = model if isinstance(model, Scorer) else Scorer(model, threads=threads)
    _check_windows(windows)
    total, positions = 0.0, 0
    for window in windows:
        score = scorer.score(window)
        total += score.nll_sum
        positions += score.positions
    return math.exp(total / positions)


def compare_perplexity(
    original: Path | Scorer,
    compressed: Path | Scorer,
    windows: np.ndarray,
    *,
    threads: int | None = None,
) -> PerplexityComparison:
    """Both perplexities, the next-token agreement and per-window NLLs, one window at a time."""
    _check_windows(windows)
    a = original if isinstance(original, Scorer) else Scorer(original, threads=threads)
    b = compressed if isinstance(compressed, Scorer) else Scorer(compressed, threads=threads)
    a_nll: list[float] = []
    b_nll: list[float] = []
    agree = positions = 0
    a_total = b_total = 0.0
    for window in windows:
        sa, sb = a.score(window), b.score(window)
        a_nll.append(sa.mean_nll)
        b_nll.append(sb.mean_nll)
        a_total += sa.nll_sum
        b_total += sb.nll_sum
        agree += int((sa.predictions == sb.predictions).sum())
        positions += sa.positions
    return PerplexityComparison(
        original=math.exp(a_total / positions),
        compressed=math.exp(b_total / positions),
        next_token_agreement=agree / positions,
        positions=positions,
        original_window_nll=a_nll,
        compressed_window_nll=b_nll,
    )


def _check_windows(windows: np.ndarray) -> None:
    if windows.ndim != 2 or windows.shape[0] == 0 or windows.shape[1] < 2:
        raise EngineError(f"perplexity needs windows of at least 2 tokens, got {windows.shape}.")
