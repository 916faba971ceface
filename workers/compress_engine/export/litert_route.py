"""The second TFLite route: litert-torch, from the torch module onnx2torch rebuilds.

Used for the precisions onnx2tf cannot convert (or whose onnx2tf file fails its LiteRT check).
Here, in the engine's environment, the fixed-shape model is rebuilt as a torch module (the
torch side's own loader, with its round-trip fixes) and exported with torch.export to a
`.pt2` file; litert_convert.py turns that into TFLite files in .venv-litert, a subprocess
under the same time limit as onnx2tf. litert-torch cannot live in the main environment: its
converter pins xdsl 0.28, whose typing-extensions cap the main environment's pydantic breaks.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from compress_engine.data import Dataset
from compress_engine.errors import short_message
from compress_engine.export.tflite import (
    FLATBUFFER_LIMIT,
    TfliteConversion,
    failed_conversion,
    read_files,
    run_converter,
    too_big,
    write_representative,
)
from compress_engine.export_configs import TfliteConfig
from compress_engine.onnx_files import model_bytes

LITERT_TORCH = "litert-torch"
LITERT_ENV = "MODELPRESS_LITERT_PYTHON"
SCRIPT = Path(__file__).with_name("litert_convert.py")
_DEFAULT_VENV = ".venv-litert"
_INSTALL_HINT = (
    "the litert-torch environment is not installed (make install creates .venv-litert; or set "
    f"{LITERT_ENV} to a Python with the packages of requirements/litert.txt)"
)


def litert_python() -> Path | None:
    """$MODELPRESS_LITERT_PYTHON, else .venv-litert next to the running environment or at
    the source tree's root."""
    configured = os.environ.get(LITERT_ENV)
    if configured:
        return Path(configured)
    for root in (Path(sys.prefix).parent, Path(__file__).resolve().parents[3]):
        candidate = root / _DEFAULT_VENV / "bin" / "python"
        if candidate.is_file():
            return candidate
    return None


def convert_litert(
    source: Path,
    work: Path,
    config: TfliteConfig,
    representative: Dataset | None,
    *,
    precisions: Sequence[str] | None = None,
    input_shapes: Mapping[str, Sequence[int | None]] | None = None,
    constants: Mapping[str, Any] | None = None,
) -> TfliteConversion:
    """Convert the fixed-shape float ONNX model `source` with litert-torch, in `work`.

    Never raises for a conversion problem: each precision gets a file or an error."""
    precisions = list(precisions or config.precisions)
    if (size := model_bytes(source)) > FLATBUFFER_LIMIT:
        return failed_conversion(precisions, too_big(size), LITERT_TORCH)
    python = litert_python()
    if python is None or not python.is_file():
        return failed_conversion(precisions, _INSTALL_HINT, LITERT_TORCH)
    work, source = work.resolve(), source.resolve()
    work.mkdir(parents=True, exist_ok=True)
    shapes = {k: list(v) for k, v in (input_shapes or {}).items()}
    try:
        names = _export_program(source, work, shapes, constants)
    except Exception as exc:  # EngineError naming the op, or torch.export's own error
        return failed_conversion(precisions, _not_rebuilt(exc), LITERT_TORCH)
    spec = {
        "program": str(work / "module.pt2"),
        "example": str(work / "example.npz"),
        "inputs": names,
        "out_dir": str(work),
        "precisions": precisions,
        "representative": write_representative(
            representative, precisions, work, config.representative_samples
        ),
        "representative_samples": config.representative_samples,
        "int8_io": config.int8_io,
    }
    outcome = run_converter(python, SCRIPT, spec, work, config.timeout_s, precisions, LITERT_TORCH)
    if isinstance(outcome, TfliteConversion):
        return outcome
    return TfliteConversion(
        read_files(outcome, precisions, work),
        dict(outcome.get("layouts", {})),
        outcome.get("versions", {}),
        LITERT_TORCH,
        {k: v for k, v in shapes.items() if v},
    )


def _export_program(
    source: Path,
    work: Path,
    shapes: Mapping[str, Sequence[int | None]],
    constants: Mapping[str, Any] | None,
) -> list[str]:
    """module.pt2 (torch.export of the rebuilt module at batch 1) and example.npz (the
    sample it was traced with) in `work`; returns the input names in order."""
    import torch

    from compress_engine.torch_side.convert import load_torch, torch_inputs

    fixed = {k: [int(d) for d in v] for k, v in shapes.items() if v and None not in v}
    model = load_torch(source, fixed, constants)
    feed = model.example_feed(1)
    module = model.module.eval()
    args = torch_inputs(feed, model.input_names, torch.device("cpu"))
    with torch.no_grad():
        program = torch.export.export(module, args, strict=False)
    torch.export.save(program, str(work / "module.pt2"))
    np.savez(work / "example.npz", **feed)
    return model.input_names


def _not_rebuilt(exc: Exception) -> str:
    """Why there is no torch module to convert, in this route's terms (the torch side's
    own message speaks of pruning and distillation)."""
    text = short_message(exc)
    op = re.search(r"does not support the ONNX op (\S+(?: \(opset \d+\))?)", text)
    if op:
        return f"onnx2torch cannot rebuild the model as a torch module (no ONNX op {op[1]})"
    return f"the torch module rebuilt from the model cannot be exported: {text}"
