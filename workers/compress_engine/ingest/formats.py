"""Which model format an upload is, from its content; refusals that say how to export instead.

The file name's extension is only a hint: a `.pt` may be TorchScript or a pickled checkpoint,
and the two must be told apart without unpickling anything. Zip archives are recognised by
their member names (read from the central directory, never extracted here); everything else
by its first bytes. Language models (a zipped Hugging Face folder, a GGUF file) are recognised
here too; `compress_engine.llm.hf_upload` checks the folder's contents.
"""

from __future__ import annotations

import json
import zipfile
from enum import StrEnum
from pathlib import Path, PurePosixPath

from compress_engine.archives import ZIP_ERRORS, check_members, is_metadata
from compress_engine.errors import EngineError
from compress_engine.llm.hf_upload import PICKLE_SUFFIXES, check_hf_archive, model_root

# TorchScript archives hold one file per submodule's code; SavedModels one per asset.

HOW_TO_EXPORT = (
    "Export the model in a form that holds its computation, not only its weights: "
    "torch.onnx.export(model, example_inputs, 'model.onnx'); "
    "torch.jit.save(torch.jit.trace(model, example_inputs), 'model.pt') (TorchScript); "
    "torch.export.save(torch.export.export(model, example_inputs), 'model.pt2'); "
    "Keras: model.save('model.keras'); TensorFlow: zip the SavedModel folder."
)


class ModelFormat(StrEnum):
    """Upload formats ModelPress accepts; everything but ONNX is converted to ONNX at ingest."""

    ONNX = "onnx"
    ONNX_ZIP = "onnx-zip"
    TORCHSCRIPT = "torchscript"
    TORCH_EXPORT = "torch-export"
    SAVEDMODEL = "savedmodel"
    KERAS = "keras"
    HF_LLM_ZIP = "hf-llm-zip"
    GGUF = "gguf"

    @property
    def label(self) -> str:
        return _LABELS[self]

    @property
    def suffix(self) -> str:
        """File suffix for the stored source file."""
        return _SUFFIXES[self]

    @property
    def needs_input_shapes(self) -> bool:
        """The format records no input shapes, so they must be given for the conversion."""
        return self is ModelFormat.TORCHSCRIPT

    @property
    def is_llm(self) -> bool:
        """A causal language model, ingested as an onnxruntime-genai folder."""
        return self in (ModelFormat.HF_LLM_ZIP, ModelFormat.GGUF)


_LABELS = {
    ModelFormat.ONNX: "ONNX",
    ModelFormat.ONNX_ZIP: "ONNX with external data (.zip)",
    ModelFormat.TORCHSCRIPT: "TorchScript (torch.jit.save)",
    ModelFormat.TORCH_EXPORT: "torch.export program (.pt2)",
    ModelFormat.SAVEDMODEL: "TensorFlow SavedModel (.zip)",
    ModelFormat.KERAS: "Keras (.keras)",
    ModelFormat.HF_LLM_ZIP: "Hugging Face causal LM (.zip)",
    ModelFormat.GGUF: "GGUF language model (.gguf)",
}
_SUFFIXES = {
    ModelFormat.ONNX: ".onnx",
    ModelFormat.ONNX_ZIP: ".onnx.zip",
    ModelFormat.TORCHSCRIPT: ".pt",
    ModelFormat.TORCH_EXPORT: ".pt2",
    ModelFormat.SAVEDMODEL: ".savedmodel.zip",
    ModelFormat.KERAS: ".keras",
    ModelFormat.HF_LLM_ZIP: ".hf.zip",
    ModelFormat.GGUF: ".gguf",
}

_PICKLE_PROTOCOLS = (b"\x02", b"\x03", b"\x04", b"\x05")
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def detect_format(path: Path, filename: str = "", *, max_bytes: int | None = None) -> ModelFormat:
    """The format of the model file at `path` (uploaded as `filename`), read from its content.

    Raises EngineError for anything ModelPress refuses, with what to do instead. Zip archives
    are checked for member count, unpacked size (`max_bytes`) and member paths here, before
    any converter opens them."""
    path = Path(path)
    if not path.is_file():
        raise EngineError(f"Model file not found: {path.name}")
    with open(path, "rb") as fh:
        head = fh.read(16)
    if not head:
        raise EngineError("The model file is empty. Upload the file again.")
    if head.startswith(b"PK") and zipfile.is_zipfile(path):
        return _zip_format(path, max_bytes)
    if head.startswith(b"GGUF"):
        return ModelFormat.GGUF
    if head[:1] == b"\x80" and head[1:2] in _PICKLE_PROTOCOLS:
        raise EngineError(
            "The file is a Python pickle (e.g. a state dict, or a module saved with torch.save "
            "in the legacy format). Pickles can run arbitrary code when loaded, so ModelPress "
            f"never loads them. {HOW_TO_EXPORT}"
        )
    if head.startswith(_HDF5_MAGIC):
        raise EngineError(
            "The file is a legacy Keras HDF5 (.h5) model, which stores layers as Python code "
            "references. Save it in the Keras format instead: model.save('model.keras')."
        )
    if head[4:8] == b"TFL3":
        raise EngineError(
            "The file is a TFLite model. ModelPress produces TFLite files but compresses from "
            "the training framework's export: upload the ONNX, TorchScript, torch.export, "
            "Keras or SavedModel form of the model."
        )
    # An ONNX ModelProto starts with field 1 (ir_version, a varint): tag byte 0x08. The
    # extension decides when the content is ambiguous; inspect_onnx then says what is wrong.
    if head[:1] == b"\x08" or filename.lower().endswith(".onnx"):
        return ModelFormat.ONNX
    raise EngineError(
        "The file is not a model format ModelPress recognises (ONNX, a .zip of an ONNX model "
        "with its external data, TorchScript, torch.export .pt2, Keras .keras, a zipped "
        "SavedModel, or a language model as a zipped Hugging Face folder or a GGUF file). "
        f"{HOW_TO_EXPORT}"
    )


def require_onnx(path: Path, command: str) -> None:
    """EngineError, saying what the file is and how to go on, when the model at `path` is not
    ONNX (or a zip of an ONNX model): the local CLI commands work on ONNX only, while a server
    converts the other formats at upload."""
    path = Path(path)
    fmt = detect_format(path, path.name)
    if fmt in (ModelFormat.ONNX, ModelFormat.ONNX_ZIP):
        return
    if fmt.is_llm:
        raise EngineError(
            f"{path.name} is a {fmt.label} file: `modelpress {command}` works on ONNX models. "
            f"Compress it with `modelpress compress`, or upload it to a ModelPress server "
            f"(`modelpress upload PROJECT {path.name}`), which builds its ONNX form."
        )
    upload = f"modelpress upload PROJECT {path.name}"
    if fmt.needs_input_shapes:
        from compress_engine.ingest.signature import forward_signature, suggested_shapes

        signature = forward_signature(path, fmt)
        shapes = suggested_shapes(signature, []) if signature else "input: 1x3x224x224"
        upload += f" --input-shapes '{'; '.join(shapes.splitlines())}'"
    export = (
        "torch.onnx.export(model, example_inputs, 'model.onnx')"
        if fmt in (ModelFormat.TORCHSCRIPT, ModelFormat.TORCH_EXPORT)
        else "python -m tf2onnx.convert --saved-model DIR --output model.onnx"
    )
    raise EngineError(
        f"{path.name} is a {fmt.label} file, not ONNX: `modelpress {command}` works on ONNX "
        f"models (.onnx, or a .zip of one with its external data). Export it to ONNX ({export}) "
        f"or upload it to a ModelPress server, which converts it (`{upload}`)."
    )


def _zip_format(path: Path, max_bytes: int | None) -> ModelFormat:
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            names = [i.filename for i in infos]
            check_members(infos, max_bytes)
            fmt = _classify(names)
            if fmt is ModelFormat.TORCH_EXPORT:
                _check_export_payloads(zf, names)
            if fmt is ModelFormat.HF_LLM_ZIP:
                check_hf_archive(zf, max_bytes)  # refused at upload, before any worker runs
            return fmt
    except ZIP_ERRORS:
        raise EngineError("The file looks like a zip archive but cannot be read.") from None


def _classify(names: list[str]) -> ModelFormat:
    files = [n for n in names if not n.endswith("/") and not is_metadata(n)]
    lower = [n.lower() for n in files]
    if any(n.endswith(".onnx") for n in lower):
        return ModelFormat.ONNX_ZIP
    # torch.jit.save and torch.save both write one top folder named after the file
    # (`model/data.pkl`); torch.export.save writes `<name>/archive_format` and `models/*.json`.
    tops = {PurePosixPath(n).parts[0] for n in files if len(PurePosixPath(n).parts) > 1}
    inner = {"/".join(PurePosixPath(n).parts[1:]) for n in files if len(PurePosixPath(n).parts) > 1}
    if len(tops) == 1:
        if "archive_format" in inner and any(
            n.startswith("models/") and n.endswith(".json") for n in inner
        ):
            return ModelFormat.TORCH_EXPORT
        if "constants.pkl" in inner and any(n.startswith("code/") for n in inner):
            return ModelFormat.TORCHSCRIPT
        if "data.pkl" in inner:
            raise EngineError(
                "The file is a torch.save checkpoint (a pickled module or state dict). "
                "Pickles can run arbitrary code when loaded, so ModelPress never loads them. "
                f"{HOW_TO_EXPORT}"
            )
    if "serialized_exported_program.json" in files:
        raise EngineError(
            "The file is a torch.export program in the pre-2.7 format, which stores its "
            "weights as pickles. Save it again with a current torch.export.save."
        )
    saved = [n for n in files if PurePosixPath(n).name == "saved_model.pb"]
    if len(saved) == 1:
        return ModelFormat.SAVEDMODEL
    if len(saved) > 1:
        raise EngineError("The zip holds several SavedModels; zip one SavedModel folder.")
    if "config.json" in files and "model.weights.h5" in files:
        return ModelFormat.KERAS
    if _is_hf_folder(files):
        return ModelFormat.HF_LLM_ZIP
    raise EngineError(
        "The zip archive holds no model ModelPress recognises: an .onnx file with its "
        "external data, a TorchScript or torch.export archive, a Keras .keras file, a "
        "SavedModel folder (with saved_model.pb) or a Hugging Face causal-LM folder "
        f"(config.json, *.safetensors, tokenizer.json). {HOW_TO_EXPORT}"
    )


def _is_hf_folder(files: list[str]) -> bool:
    """config.json beside weights (safetensors, or pickles to refuse), at the root or in one
    top-level folder: a Hugging Face model folder."""
    root = model_root(files)
    inner = [n[len(root) :] for n in files if n.startswith(root)]
    return "config.json" in inner and any(
        n.endswith((".safetensors", *PICKLE_SUFFIXES)) for n in inner
    )


def _check_export_payloads(zf: zipfile.ZipFile, names: list[str]) -> None:
    """torch.export.load unpickles weights and constants flagged `use_pickle` (tensor
    subclasses) and opaque objects; such archives are refused before any loader sees them.
    (The converter also forbids unpickling outright; this gives the clearer message.)"""
    for name in names:
        if not name.endswith(("_weights_config.json", "_constants_config.json")):
            continue
        try:
            config = json.loads(zf.read(name))
        except (ValueError, UnicodeDecodeError):
            raise EngineError(f"The torch.export archive's {name} is not valid JSON.") from None
        entries = config.get("config", {}) if isinstance(config, dict) else {}
        for fqn, meta in entries.items() if isinstance(entries, dict) else []:
            meta = meta if isinstance(meta, dict) else {}
            path_name = str(meta.get("path_name", ""))
            if meta.get("use_pickle") or not path_name.startswith(("weight_", "tensor_")):
                raise EngineError(
                    f"The torch.export program stores {fqn!r} as a pickled object (a tensor "
                    "subclass or a custom object). Pickles can run arbitrary code when loaded, "
                    "so ModelPress never loads them: export a model whose weights are plain "
                    "tensors, or export it with torch.onnx.export."
                )
