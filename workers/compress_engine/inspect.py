"""Validate an uploaded ONNX file and describe it, using only the `onnx` package.

Runs at upload time in the web app, so it imports no onnxruntime and never unpickles.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from compress_engine.errors import EngineError, short_message
from compress_engine.measure.params import (
    count_parameters,
    iter_nodes,
    op_type_counts,
)
from compress_engine.tensors import ModelInfo, TensorInfo

if TYPE_CHECKING:
    import onnx

# Oldest default-domain opset ONNX Runtime still runs.
MIN_OPSET = 7
# The newest IR version the pinned ONNX Runtime (1.31) loads; onnx itself writes newer ones
# (1.23's helper.make_model defaults to 14). A test checks this against the installed ORT.
MAX_RUNTIME_IR_VERSION = 13


def same_inputs(a: Sequence[TensorInfo], b: Sequence[TensorInfo]) -> bool:
    """Whether two models can be fed the same samples (e.g. a distillation teacher): the same
    input names, dtypes and ranks, and equal dims wherever both are fixed."""
    if [(t.name, t.dtype, len(t.shape)) for t in a] != [(t.name, t.dtype, len(t.shape)) for t in b]:
        return False
    return all(
        x == y
        for ta, tb in zip(a, b, strict=True)
        for x, y in zip(ta.shape, tb.shape, strict=True)
        if isinstance(x, int) and isinstance(y, int)
    )


def inspect_onnx(
    path: Path,
    max_bytes: int | None = None,
    *,
    external_data: bool = True,
    onnx_checker: bool = True,
) -> ModelInfo:
    """Validate an ONNX file and describe it; EngineError says what is wrong and what to do.

    A model with external data is accepted when its data files lie beside it (inside its
    folder); `external_data=False` refuses such a model outright, for a bare `.onnx` upload
    whose data files cannot have come with it. `max_bytes` bounds the graph and data together.
    `onnx_checker=False` skips onnx.checker, for graphs onnxruntime-genai's builder wrote: they
    use ONNX Runtime's own ops in the default domain (SimplifiedLayerNormalization), which the
    checker rejects, and are checked by loading and generating with them instead.
    """
    path = Path(path)
    model = _load(path, max_bytes)
    _check_strings(model)
    size = _check_external_data(model, path, allowed=external_data, max_bytes=max_bytes)
    opsets = _check_versions(model)
    if onnx_checker:
        _run_checker(path)

    graph = model.graph
    initializer_names = {t.name for t in graph.initializer}
    # IR < 4 lists initializers as inputs too; those need no feed.
    inputs = [tensor_info(v) for v in graph.input if v.name not in initializer_names]
    return ModelInfo(
        ir_version=model.ir_version,
        opset=opsets.get("", 0),
        opsets=opsets,
        producer=_plain(f"{model.producer_name} {model.producer_version}"),
        inputs=inputs,
        outputs=[tensor_info(v) for v in graph.output],
        parameters=count_parameters(model),
        nodes=sum(1 for _ in iter_nodes(graph)),
        op_types=op_type_counts(model),
        size_bytes=size,
    )


def _run_checker(path: Path) -> None:
    import onnx

    try:
        # On the path, not the proto: the C++ checker then handles files over 2 GB.
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as exc:
        raise EngineError(f"The model failed ONNX validation: {short_message(exc)}") from None
    except UnicodeDecodeError:
        # The checker's message quotes bytes from the file that are not UTF-8.
        raise EngineError(
            "The model failed ONNX validation: it holds names or strings that are not valid "
            "UTF-8 text."
        ) from None


def _load(path: Path, max_bytes: int | None) -> onnx.ModelProto:
    import onnx
    from google.protobuf.message import DecodeError

    if not path.is_file():
        raise EngineError(f"Model file not found: {path.name}")
    size = path.stat().st_size
    if size == 0:
        raise EngineError("The model file is empty. Upload the .onnx file again.")
    if max_bytes is not None and size > max_bytes:
        raise EngineError(
            f"The model file is {size / 1e6:.1f} MB, larger than the limit of "
            f"{max_bytes / 1e6:.1f} MB."
        )
    not_onnx = (
        "The file is not a valid ONNX model: it could not be read as an ONNX protobuf "
        f"({_guess_format(path)}). "
        "Export the model with torch.onnx.export or tf2onnx and upload the .onnx file."
    )
    try:
        # External data stays on disk: its files are checked, not read, here.
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise EngineError(f"{not_onnx} Parser said: {short_message(exc)}") from None
    # Protobuf happily parses some non-ONNX bytes into an almost empty message.
    if model.ir_version <= 0 or not model.HasField("graph") or not model.opset_import:
        raise EngineError(not_onnx)
    if not model.graph.output:
        raise EngineError("The ONNX model has no graph outputs, so there is nothing to compare.")
    return model


def _checked_name(value: str | bytes, what: str) -> str:
    """A name from the model, refused when it is not text a database or ONNX Runtime's C
    API can take: bytes that are not UTF-8 (protobuf hands those over undecoded), or NUL."""
    if isinstance(value, bytes):
        raise EngineError(
            f"The model's {what} is not valid UTF-8 text, which ONNX names must be: {value[:80]!r}."
        )
    if "\x00" in value:
        raise EngineError(f"The model's {what} holds a NUL character: {value[:80]!r}.")
    return value


def _check_strings(model: onnx.ModelProto) -> None:
    """The names ModelInfo reports (and the platform stores) are text without NUL."""
    for opset in model.opset_import:
        _checked_name(opset.domain, "opset domain")
    for value in [*model.graph.input, *model.graph.output]:
        _checked_name(value.name, "input or output name")
        if value.type.HasField("tensor_type"):
            for dim in value.type.tensor_type.shape.dim:
                if dim.HasField("dim_param"):
                    _checked_name(dim.dim_param, f"symbolic dim of {value.name!r}")
    for node in iter_nodes(model.graph):
        _checked_name(node.op_type, "operator type")
        _checked_name(node.domain, "operator domain")


def _plain(text: str | bytes) -> str:
    """Free text (the producer) as plain text: undecodable bytes replaced, NUL dropped."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return text.replace("\x00", "").strip()


def _guess_format(path: Path) -> str:
    """A hint at what the file is instead, from its first bytes (read, never unpickled)."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head.startswith(b"PK"):
        return "it is a zip archive: upload it as a .zip, which is unpacked and checked"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "it looks like a Python pickle, e.g. a PyTorch state dict; pickles are never loaded"
    return "is it truncated, or a different format such as a PyTorch checkpoint?"


def _check_external_data(
    model: onnx.ModelProto, path: Path, *, allowed: bool, max_bytes: int | None
) -> int:
    """The model's size on disk, graph and data files together. External data must lie in
    the model's folder (a location like '../x' or '/etc/x' is refused) and be present."""
    from compress_engine.archives import inside
    from compress_engine.onnx_files import external_locations

    locations = external_locations(model)
    if locations and not allowed:
        raise EngineError(
            f"The model keeps its weights in external data files ({', '.join(locations[:3])}), "
            "which a single .onnx upload cannot carry. Upload a .zip holding the .onnx file "
            "and its data files, or, if the model is under 2 GB, save it as one file: "
            "onnx.save(onnx.load(path), 'model.onnx', save_as_external_data=False)."
        )
    size = path.stat().st_size
    missing: list[str] = []
    folder = path.parent.resolve()
    for location in locations:
        data = inside(path.parent, location, "the model's folder")
        try:
            # A folder on the way may be a link: only the real path tells where it leads.
            outside = not data.resolve().is_relative_to(folder)
        except (OSError, RuntimeError):  # a link loop, or a path the system cannot resolve
            outside = True
        if outside:
            raise EngineError(
                f"Refused the external data path {location!r}: it leads outside the model's folder."
            )
        if data.is_symlink() or (data.exists() and not data.is_file()):
            raise EngineError(f"The external data file {location!r} is not a regular file.")
        if not data.is_file():
            missing.append(location)
            continue
        size += data.stat().st_size
    if missing:
        raise EngineError(
            f"The model refers to external data files that are not there: "
            f"{', '.join(missing[:3])}. Upload a .zip holding the .onnx file together with the "
            "data files saved beside it."
        )
    if max_bytes is not None and size > max_bytes:
        raise EngineError(
            f"The model and its external data are {size / 1e6:.1f} MB, larger than the limit "
            f"of {max_bytes / 1e6:.1f} MB."
        )
    return size


def _check_versions(model: onnx.ModelProto) -> dict[str, int]:
    import onnx
    import onnx.defs

    if model.ir_version < 3:
        raise EngineError(
            f"The model uses ONNX IR version {model.ir_version}, too old to validate (minimum "
            "3). Re-export it with a recent exporter."
        )
    newest_ir = min(onnx.IR_VERSION, MAX_RUNTIME_IR_VERSION)
    if model.ir_version > newest_ir:
        raise EngineError(
            f"The model uses ONNX IR version {model.ir_version}, newer than ONNX Runtime on "
            f"this server loads ({newest_ir}). Save it with an older IR version, e.g. "
            f"model.ir_version = 10; onnx.save(model, path)."
        )
    opsets = {
        ("" if o.domain == "ai.onnx" else o.domain): int(o.version) for o in model.opset_import
    }
    opset = opsets.get("")
    if opset is None:
        raise EngineError(
            "The model declares no opset for the default ONNX domain, so its operators "
            "cannot be resolved."
        )
    newest = onnx.defs.onnx_opset_version()
    if opset > newest:
        raise EngineError(
            f"The model uses opset {opset}, newer than this server supports ({newest}). "
            f"Re-export it with opset_version={newest} or lower."
        )
    if opset < MIN_OPSET:
        raise EngineError(
            f"The model uses opset {opset}, older than the oldest supported ({MIN_OPSET}). "
            "Convert it with onnx.version_converter.convert_version(model, 17)."
        )
    return opsets


def tensor_info(value: onnx.ValueInfoProto) -> TensorInfo:
    """Name, numpy dtype name and shape of a graph input or output."""
    kind = value.type.WhichOneof("value")
    if kind != "tensor_type":
        # Sequences, maps, optionals: describe the kind; they cannot be fed random tensors.
        return TensorInfo(name=value.name, dtype=kind or "unknown", shape=[], rank_known=False)
    tt = value.type.tensor_type
    if not tt.HasField("shape"):
        return TensorInfo(
            name=value.name, dtype=dtype_name(tt.elem_type), shape=[], rank_known=False
        )
    shape: list[int | str | None] = []
    for dim in tt.shape.dim:
        if dim.HasField("dim_value"):
            shape.append(int(dim.dim_value))
        elif dim.HasField("dim_param"):
            shape.append(dim.dim_param)
        else:
            shape.append(None)
    return TensorInfo(name=value.name, dtype=dtype_name(tt.elem_type), shape=shape)


def dtype_name(elem_type: int) -> str:
    """numpy-style name of an ONNX element type ("float32"); ONNX's own for exotic ones."""
    import onnx

    try:
        return onnx.helper.tensor_dtype_to_np_dtype(elem_type).name
    except (KeyError, ValueError, TypeError):
        pass
    try:
        return onnx.TensorProto.DataType.Name(elem_type).lower()
    except ValueError:
        raise EngineError(
            f"The model uses element type {elem_type}, which the installed ONNX "
            f"({onnx.__version__}) does not define. Save it with a standard type such as float32."
        ) from None
