"""Every converted file is run in its own runtime and compared before it is offered.

A TFLite file is compared twice on the same inputs: with the ONNX model it was converted from
(the converter's own error, which decides ok or failed) and with the original model (what a
user gets overall, reported beside the ONNX artifact's figures). Files of both converter
routes (onnx2tf, litert-torch) go through the same check; a file whose inputs were fixed at
batch 1 is run sample by sample.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from compress_engine.errors import short_message
from compress_engine.export.litert import PROVIDER, RUNTIME, LiteRTSession
from compress_engine.export.tflite import TfliteConversion
from compress_engine.measure.fidelity import OnOutputs, OutputComparison
from compress_engine.measure.latency import measure_interleaved
from compress_engine.measure.size import file_size, sha256_file
from compress_engine.report import Accuracy, ArtifactCheck, ArtifactInfo, Fidelity

if TYPE_CHECKING:
    import onnxruntime

# Lowest cosine similarity to the source model a converted file may have and still be offered:
# float files must match it; quantized ones may lose a little, not collapse.
MIN_COSINE = {"fp32": 0.9999, "fp16": 0.999, "dynamic-int8": 0.9, "int8": 0.9}

# compare(session, on_outputs): the session's fidelity (and accuracy) against the original,
# calling on_outputs with every batch's feed and outputs on the way.
Compare = Callable[[Any, OnOutputs], tuple[Fidelity, Accuracy | None]]


@dataclass(frozen=True)
class Checked:
    """A verified (or failed) artifact and, when offered, the file to place."""

    info: ArtifactInfo
    path: Path | None


def check_tflite(
    conversion: TfliteConversion,
    *,
    source: onnxruntime.InferenceSession | None,
    source_name: str,
    compare: Compare,
    input_names: Sequence[str],
    onnx_outputs: Mapping[str, Sequence[int | None]],
    latency_feed: Mapping[str, np.ndarray],
    threads: int,
    warmup: int,
    runs: int,
    progress: Callable[[float], None],
) -> list[Checked]:
    """One row per precision of `conversion`, in order; latency of the files that pass is
    timed interleaved, so their ratios are comparable.

    `source`: the ONNX model the files were converted from, or None when that is the original
    (whose outputs the comparison already has). One LiteRT pass per file serves both.
    """
    names = list(onnx_outputs)
    # Where the fixed model the files came from knows an output's shape, it is the better
    # guide to outputs given back channel-last.
    onnx_outputs = {n: conversion.output_shapes.get(n) or onnx_outputs[n] for n in names}
    checked: list[Checked] = []
    sessions: list[tuple[int, LiteRTSession]] = []
    for n, made in enumerate(conversion.files):
        progress(n / (len(conversion.files) + 1))
        name = f"model.{made.precision}.tflite"
        base = {
            "name": name,
            "format": "tflite",
            "precision": made.precision,
            "source": source_name,
            "layouts": {k: v for k, v in conversion.layouts.items() if v != "as ONNX"},
            "conversion_s": made.seconds,
            "converter": conversion.converter,
        }
        if made.path is None:
            checked.append(Checked(ArtifactInfo(**base, status="failed", failure=made.error), None))
            continue
        base.update(
            size_bytes=file_size(made.path),
            sha256=sha256_file(made.path),
            input_shapes=conversion.input_shapes,
        )
        try:
            session = LiteRTSession(
                made.path,
                input_names=input_names,
                onnx_outputs=onnx_outputs,
                layouts=conversion.layouts,
                threads=threads,
            )
            against_source = OutputComparison(names)

            def add(
                _: int,
                feed: Any,
                ref: list[np.ndarray],
                got: list[np.ndarray],
                sink: OutputComparison = against_source,
            ) -> None:
                ref = ref if source is None else list(source.run(names, dict(feed)))
                sink.add(feed, ref, got)

            fidelity, accuracy = compare(session, add)
            own = against_source.result()
        except Exception as exc:  # the interpreter raises RuntimeError/ValueError of its own
            failure = f"LiteRT could not run it: {_explain(short_message(exc))}"
            checked.append(Checked(ArtifactInfo(**base, status="failed", failure=failure), None))
            continue
        failure = conversion_failure(made.precision, own)
        check = ArtifactCheck.measured(
            fidelity,
            accuracy,
            runtime=_litert_version(),
            provider=PROVIDER,
            conversion_max_abs_diff=own.summary.max_abs_diff,
        )
        info = ArtifactInfo(
            **base,
            status="failed" if failure else "ok",
            failure=failure,
            input_dtypes={k: v for k, v in session.input_dtypes.items() if v != "float32"},
            check=check,
        )
        checked.append(Checked(info, None if failure else made.path))
        if not failure:
            sessions.append((len(checked) - 1, session))
    if sessions and runs:
        latencies = measure_interleaved(
            [(s, _batch_of(latency_feed, s.batch)) for _, s in sessions],
            warmup=warmup,
            runs=runs,
            batch_size=sessions[0][1].batch,
            threads=threads,
            progress=lambda f: progress((len(conversion.files) + f) / (len(conversion.files) + 1)),
        )
        for (i, _), latency in zip(sessions, latencies, strict=True):
            assert checked[i].info.check is not None
            checked[i].info.check.latency = latency
    progress(1.0)
    return checked


def conversion_failure(precision: str, own: Fidelity) -> str | None:
    """Why a converted file must not be offered, judged against the model it came from."""
    for out in own.per_output:
        if out.cosine_similarity is None:
            return f"output {out.name!r} is not finite in LiteRT"
        floor = MIN_COSINE.get(precision, 0.9)
        if out.cosine_similarity < floor:
            return (
                f"output {out.name!r} differs from the ONNX model it was converted from: cosine "
                f"similarity {out.cosine_similarity:.4f}, below {floor} for {precision}"
            )
    return None


def _explain(message: str) -> str:
    flex = sorted(set(re.findall(r"\((Flex\w+)\)", message)))
    if "Select TensorFlow op" in message and flex:
        return (
            f"the file uses TensorFlow Flex ops ({', '.join(flex)}), which standard LiteRT "
            "runtimes do not include; the model has an op with no TFLite builtin"
        )
    return message


def _batch_of(feed: Mapping[str, np.ndarray], batch: int) -> dict[str, np.ndarray]:
    return {k: v[:batch] for k, v in feed.items()}


def _litert_version() -> str:
    from importlib.metadata import version

    return f"{RUNTIME} {version('ai-edge-litert')}"
