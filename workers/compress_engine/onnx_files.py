"""ONNX files on disk, including the external-data form that models over 2 GB need.

Protobuf cannot serialise a message over 2 GB, so such a model keeps its weights in a data
file beside the `.onnx` (the `location` of each external tensor, relative to the model's
folder). Everything that writes a model goes through `save_model`, which switches to that
form on its own; everything that moves one goes through `model_files`. Outside a folder the
two files travel as one `.onnx.zip` (`pack_zip` / `unpack_zip`).
"""

from __future__ import annotations

import os
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from compress_engine.archives import ZIP_ERRORS, extract_checked, inside, is_metadata
from compress_engine.errors import EngineError, short_message

if TYPE_CHECKING:
    import onnx

# Protobuf's hard limit is 2 GiB - 1; a little headroom for the graph around the weights.
PROTOBUF_LIMIT = 2**31 - 2**20
THRESHOLD_ENV = "MODELPRESS_ONNX_EXTERNAL_DATA_BYTES"
MAX_ZIP_MEMBERS = 64


def external_threshold() -> int:
    """Models whose protobuf would exceed this many bytes are saved with external data.

    The environment variable lowers it (tests exercise the large-model path with small
    models); it can never be raised past what protobuf can write."""
    raw = os.environ.get(THRESHOLD_ENV, "").strip()
    if not raw:
        return PROTOBUF_LIMIT
    try:
        value = int(raw)
    except ValueError:
        raise EngineError(f"{THRESHOLD_ENV} must be a number of bytes, not {raw!r}.") from None
    return max(1, min(value, PROTOBUF_LIMIT))


def _tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    import onnx

    from compress_engine.measure.params import iter_graphs

    for graph in iter_graphs(model.graph):
        yield from graph.initializer
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR:
                    yield attr.t
                elif attr.type == onnx.AttributeProto.TENSORS:
                    yield from attr.tensors


def external_locations(model: onnx.ModelProto) -> list[str]:
    """The data files the model's external tensors point at (relative paths, in order)."""
    import onnx

    found: dict[str, None] = {}
    for tensor in _tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            entry = {e.key: e.value for e in tensor.external_data}
            if "location" in entry:
                found[entry["location"]] = None
    return list(found)


def has_external_data(path: Path) -> bool:
    import onnx

    return bool(external_locations(onnx.load(str(path), load_external_data=False)))


def model_files(path: Path) -> list[Path]:
    """The `.onnx` file followed by the data files it references (each once)."""
    import onnx

    path = Path(path)
    proto = onnx.load(str(path), load_external_data=False)
    return [path, *(inside(path.parent, loc) for loc in external_locations(proto))]


def model_bytes(path: Path) -> int:
    """The model's size on disk: the graph file plus its external data."""
    return sum(p.stat().st_size for p in model_files(path))


def too_big_for_one_file(path: Path) -> bool:
    """Whether a model written from the one at `path` should use external data: tools that
    write models themselves (ONNX Runtime's quantizers) need telling."""
    return model_bytes(path) > external_threshold()


def save_model(model: onnx.ModelProto, path: Path) -> bool:
    """Write `model` to `path`, with its weights in `<name>.data` beside it when the single
    file would pass the protobuf limit. Returns whether it used external data.

    `model` must hold its weights in memory (loaded with external data, or built in memory).
    A stale data file of the same name is removed first: onnx appends to an existing one."""
    import onnx

    path = Path(path)
    data = path.with_name(path.name + ".data")
    data.unlink(missing_ok=True)
    if not _too_big(model):
        onnx.save_model(model, str(path))
        return False
    _save_external(model, path)
    return True


def _too_big(model: onnx.ModelProto) -> bool:
    from google.protobuf.message import EncodeError

    try:
        return model.ByteSize() > external_threshold()
    except EncodeError:  # protobuf cannot even size a message past its limit
        return True


def _save_external(model: onnx.ModelProto, path: Path) -> None:
    """Every tensor of 1 KB or more into one `<name>.data` beside `path`."""
    import onnx

    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=f"{path.name}.data",
        size_threshold=1024,
        convert_attribute=False,
    )


def resave(src: Path, dst: Path) -> bool:
    """Write the model at `src` (and its external data) to `dst` in the canonical form: one
    file unless that would pass the limit. Returns whether it used external data."""
    import onnx

    return save_model(onnx.load(str(src)), dst)


def rewrite(src: Path, dst: Path) -> bool:
    """Copy the model at `src` to `dst` with its data file renamed after `dst` (a model's
    data file name is written inside it, so a renamed copy must be re-saved)."""
    import onnx

    if not has_external_data(src):
        shutil.copyfile(src, dst)
        return False
    model = onnx.load(str(src))  # pulls the external tensors into memory
    dst.with_name(dst.name + ".data").unlink(missing_ok=True)
    _save_external(model, dst)
    return True


def pack_zip(model: Path, target: Path) -> None:
    """Store the model and its data files in one zip, uncompressed (weights barely deflate,
    and a stored member can be read in place), keeping their relative names."""
    files = model_files(model)
    base = Path(model).parent
    tmp = target.with_name(target.name + ".part")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for file in files:
            zf.write(file, file.relative_to(base).as_posix())
    os.replace(tmp, target)


def is_onnx_zip(path: Path) -> bool:
    """A zip by its first bytes (a protobuf never starts with them); `zipfile.is_zipfile`
    looks for a trailer anywhere near the end, which weight bytes can happen to contain."""
    if not Path(path).is_file():
        return False
    with open(path, "rb") as fh:
        return fh.read(4) == b"PK\x03\x04"


def unpack_zip(archive: Path, dest: Path, *, max_bytes: int | None = None) -> Path:
    """Extract a zip holding one `.onnx` model and its external data into `dest`; returns
    the model's path. Untrusted input: the archive checks (member names inside `dest`, no
    links, sizes) run before anything is written."""
    from google.protobuf.message import DecodeError

    dest.mkdir(parents=True, exist_ok=True)
    try:
        zf = zipfile.ZipFile(archive)
    except ZIP_ERRORS:
        raise EngineError("The file is not a valid zip archive.") from None
    with zf:
        names = [
            m.filename for m in zf.infolist() if not m.is_dir() and not is_metadata(m.filename)
        ]
        models = [n for n in names if n.lower().endswith(".onnx")]
        if len(models) != 1:
            raise EngineError(
                "A model zip must hold exactly one .onnx file (with its external data files "
                f"beside it); found {len(models)}: {', '.join(models) or 'none'}."
            )
        extract_checked(zf, dest, max_bytes, MAX_ZIP_MEMBERS)
    model = inside(dest, models[0])
    try:
        files = model_files(model)
    except (DecodeError, ValueError, RuntimeError, OSError) as exc:
        raise EngineError(
            f"The zip's {models[0]!r} is not a valid ONNX model: {short_message(exc, 200)}"
        ) from None
    missing = [p for p in files if not p.is_file()]
    if missing:
        names_missing = ", ".join(p.name for p in missing)
        raise EngineError(
            f"The model refers to external data the zip does not hold: {names_missing}. Zip "
            "the .onnx file together with the data files saved beside it."
        )
    return model
