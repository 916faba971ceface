"""Every TFLite precision through the converter routes, in the recipe's order.

Each route converts a fixed-shape copy of the float model (pinned.py); every file it makes is
run in LiteRT and compared before it is offered (verify.py), and a precision that a route
cannot convert, or whose file fails that check, goes on to the next route (onnx2tf, then
litert-torch). A precision no route manages is one failed row naming each route's reason.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from compress_engine.data import Dataset
from compress_engine.export.litert_route import LITERT_TORCH, convert_litert
from compress_engine.export.pinned import pinned_copy
from compress_engine.export.tflite import (
    FLATBUFFER_LIMIT,
    TfliteConversion,
    convert_tflite,
    failed_conversion,
    too_big,
)
from compress_engine.export.verify import Checked
from compress_engine.export_configs import TfliteConfig
from compress_engine.onnx_files import model_bytes

NEEDS_DATA = "needs representative samples: give the job a dataset"

# check(conversion): one verified row per file of the conversion, in its order.
Check = Callable[[TfliteConversion], list[Checked]]


def convert_and_check(
    source: Path,
    work: Path,
    config: TfliteConfig,
    representative: Dataset | None,
    *,
    shapes: Mapping[str, Sequence[int]],
    constants: Mapping[str, Any] | None,
    check: Check,
) -> list[Checked]:
    """One row per precision of `config`, in its order. `shapes`: the inputs' shapes at
    batch 1, which the converted files are fixed at."""
    precisions = list(config.precisions)
    rows: dict[str, Checked] = {}
    tried: dict[str, list[Checked]] = {p: [] for p in precisions}
    if representative is None and "int8" in precisions:
        # Full-integer calibration needs data on every route: no converter is started for it.
        (rows["int8"],) = check(failed_conversion(["int8"], NEEDS_DATA, converter=None))
    pending = [p for p in precisions if p not in rows]
    if pending and (size := model_bytes(source)) > FLATBUFFER_LIMIT:
        for row in check(failed_conversion(pending, too_big(size), converter=None)):
            rows[row.info.precision] = row
        pending = []
    if pending:
        work.mkdir(parents=True, exist_ok=True)
        pinned = work / "pinned" / "model.onnx"
        fixed = pinned_copy(source, pinned, shapes)
        for route in config.converters:
            if not pending:
                break
            if route == LITERT_TORCH:
                conversion = convert_litert(
                    pinned,
                    work / route,
                    config,
                    representative,
                    precisions=pending,
                    input_shapes=fixed.inputs,
                    constants=constants,
                )
            else:
                conversion = convert_tflite(
                    pinned,
                    work / route,
                    config,
                    representative,
                    precisions=pending,
                    input_shapes=fixed.inputs,
                )
            # The fixed graph's outputs have known shapes where the original's had free dims:
            # they tell the check which outputs the file gives channel-last.
            conversion = replace(conversion, output_shapes=fixed.outputs)
            for row in check(conversion):
                if row.info.ok:
                    rows[row.info.precision] = row
                else:
                    tried[row.info.precision].append(row)
            pending = [p for p in pending if p not in rows]
    for precision in pending:
        rows[precision] = _failed_everywhere(tried[precision])
    return [rows[p] for p in precisions]


def _failed_everywhere(attempts: list[Checked]) -> Checked:
    """The last route's failed row, its reason naming every route's where several tried."""
    last = attempts[-1]
    if len(attempts) == 1:
        return last
    failure = "; ".join(f"{a.info.converter}: {a.info.failure}" for a in attempts)
    return Checked(last.info.model_copy(update={"failure": failure, "converter": None}), None)
