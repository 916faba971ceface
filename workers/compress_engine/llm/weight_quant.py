"""Weight-only quantization of an onnxruntime-genai folder into MatMulNBits.

One plan (bits per weight matrix, from `weight_plan.plan`) is applied in passes on one in-memory
model, so a 540 MB fp32 model is held once:
- method "awq": the plan's 4-bit block matrices through NNCF (AWQ + scale estimation, on
  calibration windows), re-packed from NNCF's DequantizeLinear + MatMul into MatMulNBits;
- then ONNX Runtime's round-to-nearest quantizer for every matrix still float (all of them for
  "rtn"): one pass at 4 bits, one at 8;
- then the token embedding as GatherBlockQuantized (shared with a tied lm_head).
The result is a complete genai folder: model.onnx + model.onnx.data and the other files copied.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from compress_engine.errors import EngineError
from compress_engine.llm.weight_plan import WeightMatrix, layer_precisions, weight_matrices
from compress_engine.report_llm import LayerPrecision, WeightForm

METHODS = ("rtn", "awq")


@dataclass
class QuantOutcome:
    """The quantized folder and what was done to it."""

    folder: Path
    layers: list[LayerPrecision]
    form: WeightForm
    method: str
    size_bytes: int  # the decoder's .onnx and its data file
    seconds: float  # wall time of the quantization, load and save included
    notes: list[str] = field(default_factory=list)


def quantize_folder(
    src: Path,
    dst: Path,
    *,
    plan: dict[str, int | None],
    block_size: int,
    symmetric: bool,
    accuracy_level: int | None,
    method: str = "rtn",
    calibration: np.ndarray | None = None,
) -> QuantOutcome:
    """Quantize the decoder of the genai folder `src` by `plan` into the new folder `dst`.

    `calibration` ([n, window] int64 token windows) is required by "awq", which
    methods apply to the plan's 4-bit matrices inside transformer blocks, the rest is
    round-to-nearest. `accuracy_level` 0 or None leaves the MatMulNBits attribute unset.
    """
    if method not in METHODS:
        raise EngineError(f"unknown weight method {method!r}; use one of {', '.join(METHODS)}.")
    if method != "rtn" and (calibration is None or len(calibration) == 0):
        raise EngineError(f"method {method!r} needs calibration windows of text.")
    start = time.perf_counter()
    decoder = decoder_config(src)
    model = onnx.load(str(src / decoder["filename"]))
    matrices = weight_matrices(model)
    _check_plan(matrices, plan)
    notes: list[str] = []
    done: set[str] = set()
    if method != "rtn":
        assert calibration is not None
        model, done = _data_aware(
            model,
            matrices,
            plan,
            method,
            block_size,
            symmetric,
            accuracy_level,
            calibration,
            decoder,
            notes,
        )
    for bits in (4, 8):
        names = [
            m.name
            for m in matrices
            if m.op_type == "MatMul" and plan.get(m.name) == bits and m.name not in done
        ]
        if names:
            model = rtn_pass(model, names, bits, block_size, symmetric, accuracy_level)
    chosen = _embeddings(model, matrices, plan, block_size, symmetric)
    dst.mkdir(parents=True, exist_ok=True)
    save_model(model, dst / decoder["filename"])
    form = weight_form(model)
    del model
    copy_side_files(src, dst, decoder["filename"])
    return QuantOutcome(
        folder=dst,
        layers=layer_precisions(matrices, chosen),
        form=form,
        method=method,
        size_bytes=model_bytes(dst),
        seconds=time.perf_counter() - start,
        notes=notes,
    )


def _data_aware(
    model: onnx.ModelProto,
    matrices: list[WeightMatrix],
    plan: dict[str, int | None],
    method: str,
    block_size: int,
    symmetric: bool,
    accuracy_level: int | None,
    calibration: np.ndarray,
    decoder: dict[str, Any],
    notes: list[str],
) -> tuple[onnx.ModelProto, set[str]]:
    """AWQ or GPTQ on the plan's 4-bit block matrices; the model and the matrices it did."""
    from compress_engine.llm import nncf_weights

    names = [
        m.name
        for m in matrices
        if m.op_type == "MatMul" and m.block is not None and plan.get(m.name) == 4
    ]
    if not names:
        notes.append(f"{method}: no 4-bit matrix inside the blocks; round-to-nearest only.")
        return model, set()
    common = {"block_size": block_size, "symmetric": symmetric, "decoder": decoder}
    from compress_engine.llm.nbits_repack import repack_to_matmulnbits

    model = nncf_weights.awq_int4(model, names, calibration=calibration, **common)
    model = repack_to_matmulnbits(model, accuracy_level=accuracy_level)
    notes.append(
        f"awq: NNCF AWQ + scale estimation on {len(names)} block matrices "
        f"({len(calibration)} calibration windows), re-packed into MatMulNBits; "
        "the other matrices round-to-nearest."
    )
    return model, set(names)


def _check_plan(matrices: list[WeightMatrix], plan: dict[str, int | None]) -> None:
    known = {m.name for m in matrices}
    unknown = sorted(set(plan) - known)
    if unknown:
        raise EngineError(f"the precision plan names nodes this model lacks: {unknown[:5]}")
    bad = sorted({str(b) for b in plan.values() if b not in (4, 8, None)})
    if bad:
        raise EngineError(f"weights are stored at 4 or 8 bits (or kept float), not {bad}.")


def rtn_pass(
    model: onnx.ModelProto,
    names: list[str],
    bits: int,
    block_size: int,
    symmetric: bool,
    accuracy_level: int | None,
) -> onnx.ModelProto:
    """ONNX Runtime's round-to-nearest MatMulNBits quantizer on exactly the MatMuls `names`."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    # It logs every node at INFO (and configures the root logger when imported).
    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)
    wanted = set(names)
    # nodes_to_include widens op_types_to_quantize rather than narrowing it: exclude the rest.
    others = [n.name for n in model.graph.node if n.op_type == "MatMul" and n.name not in wanted]
    quantizer = MatMulNBitsQuantizer(
        model,
        bits=bits,
        block_size=block_size,
        is_symmetric=symmetric,
        accuracy_level=accuracy_level or None,
        nodes_to_exclude=others,
        op_types_to_quantize=("MatMul",),
    )
    quantizer.process()
    return quantizer.model.model


def _embeddings(
    model: onnx.ModelProto,
    matrices: list[WeightMatrix],
    plan: dict[str, int | None],
    block_size: int,
    symmetric: bool,
) -> dict[str, int | None]:
    """Quantize the embedding(s); the precision each matrix really got."""
    from compress_engine.llm.embedding_quant import quantize_embedding

    chosen = dict(plan)
    for m in matrices:
        if m.role != "embedding":
            continue
        bits = chosen.get(m.tied_to) if m.tied_to else chosen.get(m.name)
        done = bits is not None and quantize_embedding(
            model, m, bits, block_size=block_size, symmetric=symmetric
        )
        chosen[m.name] = bits if done else None
    return chosen


def decoder_config(folder: Path) -> dict[str, Any]:
    """The decoder section of a genai folder's genai_config.json."""
    try:
        config = json.loads((folder / "genai_config.json").read_text(encoding="utf-8"))
        decoder = config["model"]["decoder"]
        decoder["filename"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EngineError(f"{folder.name}: no usable genai_config.json ({exc!r}).") from exc
    return decoder


def save_model(model: onnx.ModelProto, path: Path) -> None:
    """model.onnx plus one external data file beside it (what onnxruntime-genai expects)."""
    data = path.with_name(path.name + ".data")
    data.unlink(missing_ok=True)  # save_model appends to an existing data file
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=data.name,
        size_threshold=1024,
    )


def copy_side_files(src: Path, dst: Path, filename: str) -> None:
    """Everything in the folder except the decoder and its data (genai_config.json unchanged)."""
    skip = {filename, filename + ".data", *_data_locations(src / filename)}
    for item in src.iterdir():
        if item.name in skip or item.name.startswith("."):
            continue
        if item.is_dir():
            shutil.copytree(item, dst / item.name, dirs_exist_ok=True)
        else:
            shutil.copy2(item, dst / item.name)


def _data_locations(path: Path) -> set[str]:
    model = onnx.load(str(path), load_external_data=False)
    return {
        entry.value
        for t in model.graph.initializer
        for entry in t.external_data
        if entry.key == "location"
    }


def model_bytes(folder: Path) -> int:
    """Bytes of the decoder and its external data."""
    filename = decoder_config(folder)["filename"]
    files = {folder / filename, *(folder / n for n in _data_locations(folder / filename))}
    return sum(f.stat().st_size for f in files if f.exists())


def weight_form(model: onnx.ModelProto) -> WeightForm:
    """The slowest form any weight is in: a DequantizeLinear feeding a MatMul beats nothing."""
    ops = {n.op_type for n in model.graph.node}
    if "DequantizeLinear" in ops:
        return "DequantizeLinear+MatMul"
    if "MatMulNBits" in ops:
        return "MatMulNBits"
    return "float"
