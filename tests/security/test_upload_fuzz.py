"""Fuzzing the upload parsers: malformed ONNX, NPZ and ZIP files against the engine's readers,
the platform's upload services, and the upload views and API routes.

Every input must either be accepted or refused with the project's user-facing error
(EngineError in the engine, DatasetRejected / RegistryRejected on the platform, a 4xx with a
message over HTTP) — never another exception, never a 5xx — and a refusal leaves no row, no
stored file and no temporary file behind. External data that points outside the model's
folder, links and paths outside an archive are always refused.

Examples are derandomized (the same inputs on every run, no example database), so CI is
deterministic; `MODELPRESS_FUZZ_SCALE=10` multiplies every budget for a deeper local run.
`pytest --hypothesis-show-statistics` prints how many inputs each target tried.
"""

from __future__ import annotations

import functools
import io
import os
import shutil
import struct
import tempfile
import warnings
import zipfile
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import model_builders
from compress_engine.errors import EngineError

SCALE = float(os.environ.get("MODELPRESS_FUZZ_SCALE", "1"))

# Pillow warns about the corrupt images it is fed here; that is the point.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:PIL")


def fuzz(examples: int, **extra):
    """Deterministic Hypothesis settings with `examples` inputs (times MODELPRESS_FUZZ_SCALE)."""
    return settings(
        max_examples=max(1, int(examples * SCALE)),
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
            HealthCheck.function_scoped_fixture,  # per-example state is reset by hand
        ],
        **extra,
    )


def assert_user_error(exc: BaseException) -> None:
    assert str(exc).strip(), f"{type(exc).__name__} with an empty message"
    event(f"refused: {type(exc).__name__}")


@contextmanager
def scratch():
    """A fresh directory per example (function-scoped tmp_path is shared by all examples)."""
    folder = Path(tempfile.mkdtemp(prefix="fuzz-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# --- byte-level mutations -----------------------------------------------------------------


@st.composite
def mutated(draw, seed: bytes) -> bytes:
    """`seed` truncated, bit-flipped, overwritten, extended or cut, one to four times."""
    data = bytearray(seed)
    for op in draw(st.lists(st.sampled_from(MUTATIONS), min_size=1, max_size=4)):
        n = len(data)
        at = draw(st.integers(0, max(n - 1, 0)))
        if op == "truncate":
            del data[at:]
        elif op == "flip" and n:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=16))
            data[at : at + len(chunk)] = chunk
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 64))]
        elif op == "max_int" and n >= 4:
            # Length and size fields are the usual suspects: make one huge.
            data[at : at + 4] = draw(st.sampled_from([b"\xff\xff\xff\x7f", b"\xff\xff\xff\xff"]))
    return bytes(data)


MUTATIONS = ["truncate", "flip", "overwrite", "insert", "delete", "max_int"]


# --- ONNX -----------------------------------------------------------------------------------

# Paths an external-data `location` may use to reach outside the model's folder.
ESCAPING_LOCATIONS = [
    "../../etc/passwd",
    "../secret.bin",
    "/etc/passwd",
    "sub/../../secret.bin",
    "..\\secret.bin",
    "..",
    "/",
    "",
    ".",
]
# Harmless as paths; "sub/secret.bin" leads out only where `sub` is a link.
HARMLESS_LOCATIONS = [
    "weights.data",
    "sub/weights.data",
    "./weights.data",
    "missing.data",
    "sub/secret.bin",
]


def escapes(location: str) -> bool:
    """Whether `location` names something outside (or not inside) the model's folder."""
    pure = PurePosixPath(location.replace("\\", "/"))
    return pure.is_absolute() or ".." in pure.parts or not pure.parts


@functools.cache
def conv_model_bytes() -> bytes:
    """model_builders' Conv model (hand-written with onnx.helper): the base of the odd
    models below and the model inside the zips."""
    with scratch() as folder:
        return model_builders.write_conv_only_model(folder / "conv.onnx").read_bytes()


def seed_model_bytes() -> list[bytes]:
    """Valid models (model_builders) as the seeds of mutated inputs: a Conv model written with
    onnx.helper and a two-input MLP exported by torch."""
    with scratch() as folder:
        mlp = model_builders.export_two_input_mlp(folder / "mlp.onnx").read_bytes()
    return [conv_model_bytes(), mlp]


@pytest.fixture(scope="module")
def seed_models() -> list[bytes]:
    return seed_model_bytes()


def _tensor(draw, name: str):
    """An initializer with drawn (possibly absurd) dims, type and data."""
    from onnx import TensorProto

    tensor = TensorProto(name=name)
    tensor.data_type = draw(st.one_of(st.integers(0, 23), st.integers(24, 2**31 - 1)))
    tensor.dims.extend(draw(st.lists(ABSURD_DIM, max_size=4)))
    kind = draw(st.sampled_from(["raw", "floats", "int64s", "none", "external"]))
    if kind == "raw":
        tensor.raw_data = draw(st.binary(max_size=64))
    elif kind == "floats":
        tensor.float_data.extend(draw(st.lists(st.floats(width=32), max_size=8)))
    elif kind == "int64s":
        tensor.int64_data.extend(draw(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=8)))
    elif kind == "external":
        tensor.data_location = TensorProto.EXTERNAL
        entry = tensor.external_data.add()
        entry.key, entry.value = "location", draw(LOCATION)
        for key in draw(st.lists(st.sampled_from(["offset", "length", "checksum"]), max_size=2)):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, str(draw(st.integers(-(2**63), 2**64)))
    return tensor


ABSURD_DIM = st.one_of(
    st.integers(0, 16),
    st.sampled_from([-1, -(2**63), 2**31, 2**40, 2**62, 2**63 - 1]),
)
NAME = st.one_of(
    st.sampled_from(["input", "output", "x", "w", "", "a\x00b", "\x00", "ü/ñ", "x" * 300]),
    st.text(max_size=12),
)
LOCATION = st.one_of(
    st.sampled_from(ESCAPING_LOCATIONS + HARMLESS_LOCATIONS + ["a\x00b", "x" * 5000]),
    st.text(max_size=20),
)


@st.composite
def absurd_models(draw, depth: int = 2) -> bytes:
    """Protobufs that parse as ModelProto but hold nonsense: absurd or negative dims, unknown
    element types and ops, odd versions and opsets, names with NUL, nested subgraphs,
    external data pointing anywhere."""
    from onnx import GraphProto, ModelProto, helper

    graph = draw(_graphs(depth))
    model = ModelProto(graph=graph)
    model.ir_version = draw(st.one_of(st.integers(-1, 14), st.just(2**62)))
    for domain in draw(
        st.lists(st.sampled_from(["", "ai.onnx", "com.example", "x\x00"]), max_size=3)
    ):
        model.opset_import.append(
            helper.make_opsetid(domain, draw(st.one_of(st.integers(-1, 30), st.just(2**62))))
        )
    model.producer_name = draw(NAME)
    if draw(st.booleans()):
        model.graph.CopyFrom(GraphProto())  # an empty graph
    return model.SerializeToString()


@st.composite
def _graphs(draw, depth: int):
    from onnx import helper

    inputs = [
        helper.make_tensor_value_info(
            draw(NAME),
            draw(st.one_of(st.integers(0, 23), st.just(9999))),
            draw(st.one_of(st.none(), st.lists(st.one_of(ABSURD_DIM, NAME), max_size=4))),
        )
        for _ in range(draw(st.integers(0, 2)))
    ]
    outputs = [
        helper.make_tensor_value_info(
            draw(NAME), draw(st.integers(0, 23)), draw(st.lists(ABSURD_DIM, max_size=3))
        )
        for _ in range(draw(st.integers(0, 2)))
    ]
    names = [v.name for v in inputs] or ["input"]
    initializers = [_tensor(draw, draw(NAME)) for _ in range(draw(st.integers(0, 2)))]
    nodes = []
    for i in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["Relu", "Conv", "Reshape", "MatMul", "Identity", "If", "Zz"]))
        node = helper.make_node(
            op,
            draw(st.lists(st.sampled_from([*names, *(t.name for t in initializers)]), max_size=2)),
            [draw(st.sampled_from([*(v.name for v in outputs), f"t{i}"]))],
            domain=draw(st.sampled_from(["", "", "com.example"])),
        )
        if op == "If" and depth > 0:
            node.attribute.append(helper.make_attribute("then_branch", draw(_graphs(depth - 1))))
        if op == "Conv":
            node.attribute.append(
                helper.make_attribute("kernel_shape", draw(st.lists(ABSURD_DIM, min_size=1)))
            )
        nodes.append(node)
    return helper.make_graph(nodes, draw(NAME), inputs, outputs, initializer=initializers)


@st.composite
def odd_valid_models(draw) -> bytes:
    """The valid Conv model with one part made odd but still well-formed: absurd or
    symbolic dims, names with NUL or unusual characters, unknown element types, producer
    strings, an extra custom-domain node. Many of these pass the ONNX checker."""
    import onnx
    from onnx import helper

    model = onnx.load_from_string(conv_model_bytes())
    graph = model.graph
    for _ in range(draw(st.integers(1, 3))):
        part = draw(st.sampled_from(["dims", "rename", "elem_type", "producer", "custom_op"]))
        value = draw(st.sampled_from([*graph.input, *graph.output]))
        if part == "dims" and value.type.tensor_type.shape.dim:
            dim = draw(st.sampled_from(value.type.tensor_type.shape.dim))
            if draw(st.booleans()):
                dim.dim_value = draw(ABSURD_DIM)
            else:
                dim.dim_param = draw(NAME)
        elif part == "rename":
            old, new = value.name, draw(NAME)
            value.name = new
            for node in graph.node:
                node.input[:] = [new if n == old else n for n in node.input]
                node.output[:] = [new if n == old else n for n in node.output]
        elif part == "elem_type":
            value.type.tensor_type.elem_type = draw(st.integers(0, 30))
        elif part == "producer":
            model.producer_name, model.producer_version = draw(NAME), draw(NAME)
        else:
            domain = draw(st.sampled_from(["com.example", "x\x00y", "ai.onnx.ml"]))
            op = draw(NAME)
            graph.node.append(
                helper.make_node(op, [graph.output[0].name], ["extra"], domain=domain)
            )
            graph.output.append(helper.make_tensor_value_info("extra", 1, None))
            model.opset_import.append(helper.make_opsetid(domain, 1))
    blob = model.SerializeToString()
    if draw(st.integers(0, 3)) == 0:
        # Names that are not UTF-8 (protobuf cannot set them, so patch the bytes): proto2
        # string fields hand them over undecoded.
        bad = draw(st.sampled_from([b"\xff", b"\xc0", b"\x80", b"\xed"]))
        blob = blob.replace(b"\x05input", b"\x05in" + bad + b"ut")
    return blob


def external_model(location: str) -> bytes:
    """The Conv model with its weight moved to external data at `location` (taken verbatim)."""
    import onnx

    model = onnx.load_from_string(conv_model_bytes())
    weight = model.graph.initializer[0]
    weight.ClearField("raw_data")
    weight.ClearField("float_data")
    weight.data_location = onnx.TensorProto.EXTERNAL
    entry = weight.external_data.add()
    entry.key, entry.value = "location", location
    return model.SerializeToString()


def mutated_seed(seeds: list[bytes]):
    # By index: the reprs of failing examples stay short.
    return st.integers(0, len(seeds) - 1).flatmap(lambda i: mutated(seeds[i]))


def onnx_inputs(seeds: list[bytes]):
    """Any ONNX-ish upload: random bytes, a mutated valid model, an absurd protobuf, or the
    Conv model with external data pointing anywhere."""
    return st.one_of(
        st.binary(max_size=2048),
        mutated_seed(seeds),
        absurd_models(),
        odd_valid_models(),
        LOCATION.map(external_model),
    )


# --- NPZ ------------------------------------------------------------------------------------

NUMERIC_DESCRS = ["<f4", "<f8", "<f2", ">f4", "|i1", "<i4", "<i8", "|u1", "<u2", "|b1"]
ODD_DESCRS = ["|O", "<U5", "|S3", "<c8", "<M8[s]", "<m8[s]", "|V4", "[('a', '<f4')]", "<f16"]
ARRAY_NAME = st.one_of(
    st.sampled_from(["x", "y", "labels", "input", "input.1", "a/b", "../x", "x\x00y", ""]),
    st.text(max_size=10),
)
HUGE_SHAPES = [(2**31,), (3_000_000_000, 1), (10**9, 1000), (2**40,), (2**62,), (2**63,), (-1,)]


def npy_bytes(descr: str, shape: tuple, data: bytes, *, fortran: bool = False) -> bytes:
    """A .npy file with the given header, written by hand so it may lie about anything."""
    header = repr({"descr": descr, "fortran_order": fortran, "shape": tuple(shape)})
    body = header.encode("latin1")
    pad = 64 - (10 + len(body) + 1) % 64
    body += b" " * pad + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(body)) + body + data


@st.composite
def honest_arrays(draw) -> dict[str, np.ndarray]:
    from hypothesis.extra import numpy as hnp

    samples = draw(st.integers(0, 6))
    arrays = {}
    for _ in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from(["x", "y", "labels", "input", "mask"]))
        dtype = draw(st.sampled_from([*NUMERIC_DESCRS, "<c8", "<U3", "|O"]))
        if dtype == "|O":
            arrays[name] = np.array([{"payload": 1}] * samples, dtype=object)
            continue
        rest = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4))
        count = samples + draw(st.sampled_from([0, 0, 0, 1]))  # sometimes mismatched
        shape = (count, *rest) if draw(st.integers(0, 9)) else ()
        arrays[name] = draw(hnp.arrays(np.dtype(dtype), shape))
    return arrays


@st.composite
def crafted_npy(draw) -> bytes:
    """A header that lies: huge or negative shapes, non-numeric dtypes, short data."""
    descr = draw(st.sampled_from(NUMERIC_DESCRS + ODD_DESCRS))
    shape = draw(
        st.one_of(
            st.sampled_from(HUGE_SHAPES),
            st.lists(st.integers(0, 5), max_size=3).map(tuple),
        )
    )
    data = draw(st.binary(max_size=64))
    if draw(st.booleans()):
        return npy_bytes(descr, shape, data, fortran=draw(st.booleans()))
    # A broken header: not a dict, bad literals, an unknown format version.
    text = draw(
        st.sampled_from(
            [
                "{'descr': '<f4', 'fortran_order': False, 'shape': (1e9,)}",
                "{'descr': '<f4', 'fortran_order': False}",
                "__import__('os').system('true')",
                "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'extra': 1}",
                "[1, 2, 3]",
                "",
            ]
        )
    )
    version = draw(st.sampled_from([b"\x01\x00", b"\x02\x00", b"\x03\x00", b"\x09\x09"]))
    length = struct.pack("<H" if version == b"\x01\x00" else "<I", len(text) + 1)
    return b"\x93NUMPY" + version + length + text.encode() + b"\n" + data


def zip_of(members: list[tuple[str, bytes]], *, compression=zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names are the point
        with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
            for name, data in members:
                archive.writestr(name, data)
    return buffer.getvalue()


@st.composite
def npz_inputs(draw) -> tuple[bytes, bool]:
    """(.npz bytes, whether the archive itself is intact)."""
    kind = draw(st.sampled_from(["honest", "crafted", "oddities", "mutated", "random"]))
    if kind in ("honest", "mutated"):
        arrays = draw(honest_arrays())
        buffer = io.BytesIO()
        save = np.savez_compressed if draw(st.booleans()) else np.savez
        save(buffer, **arrays)
        data = buffer.getvalue()
        if kind == "mutated":
            return draw(mutated(data)), False
        return data, True
    if kind == "crafted":
        members = [
            (f"{draw(ARRAY_NAME)}.npy", draw(crafted_npy())) for _ in range(draw(st.integers(1, 3)))
        ]
        return zip_of(members), True
    if kind == "oddities":
        good = npy_bytes("<f4", (2, 2), b"\x00" * 16)
        members = draw(
            st.sampled_from(
                [
                    [("x.npy", good), ("notes.txt", b"hi")],
                    [("x.npy", good), ("x.npy", npy_bytes("<f4", (3, 2), b"\x00" * 24))],
                    [(f"a{i}.npy", good) for i in range(70)],
                    [("x.npy", zip_of([("x.npy", good)]))],
                    [("dir/", b""), ("x.npy", good)],
                    [("x.npy", good), ("y.npy", npy_bytes("<i8", (3,), b"\x00" * 24))],
                    [("x.npy", good), ("y.npy", npy_bytes("<f4", (2,), b"\x00" * 8))],
                    [("x.npy", good), ("y.npy", npy_bytes("<i8", (2,), b"\xff" * 16))],
                    [("y.npy", npy_bytes("<i8", (2,), b"\x00" * 16))],
                    [],
                ]
            )
        )
        data = zip_of(
            members, compression=draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
        )
        return data, True
    return draw(st.binary(max_size=1024)), False


# --- ZIP archives ---------------------------------------------------------------------------

HOSTILE_NAMES = [
    "../../evil.png",
    "/abs/evil.png",
    "cls/../../evil.png",
    "..\\..\\evil.png",
    "C:/evil.png",
    "cls//double.png",
    "./cls/dot.png",
    "top.png",
    "x" * 300 + "/long.png",
    "cls/" + "y" * 300 + ".png",
    "ü/ñ.png",
    ".hidden/a.png",
    "__MACOSX/cls/._a.png",
]


def png_bytes(draw) -> bytes:
    from PIL import Image

    mode = draw(st.sampled_from(["L", "RGB", "RGBA", "P", "1", "I;16", "LA", "CMYK"]))
    size = (draw(st.integers(1, 12)), draw(st.integers(1, 12)))
    fmt = draw(st.sampled_from(["PNG", "BMP", "GIF", "JPEG", "WEBP", "TIFF"]))
    image = Image.new(mode, size, color=draw(st.integers(0, 255)))
    try:
        if fmt == "JPEG" and mode not in ("L", "RGB", "CMYK"):
            image = image.convert("RGB")
        out = io.BytesIO()
        image.save(out, format=fmt)
    except (OSError, ValueError, KeyError):
        out = io.BytesIO()
        image.convert("RGB").save(out, format="PNG")
    return out.getvalue()


def huge_png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels, with no real pixel data."""
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


# Images most often, so that archives get past the first member now and then.
CONTENT_KINDS = ["image"] * 3 + ["random", "truncated", "huge", "huge", "bomb", "zip", "empty"]


@st.composite
def member_content(draw) -> bytes:
    """An archive member: an image of any mode and format, or broken, random, empty, a
    header claiming billions of pixels, megabytes of zeros, or a zip itself."""
    kind = draw(st.sampled_from(CONTENT_KINDS))
    if kind == "image":
        return png_bytes(draw)
    if kind == "truncated":
        data = png_bytes(draw)
        return data[: draw(st.integers(0, len(data) - 1))]
    if kind == "huge":
        side = draw(st.sampled_from([7000, 20000, 65535]))
        return huge_png_header(side, side)
    if kind == "bomb":
        return b"\x00" * draw(st.sampled_from([2 << 20, 4 << 20]))  # ~1000:1 when deflated
    if kind == "zip":
        return zip_of([("inner/a.png", png_bytes(draw))])
    if kind == "empty":
        return b""
    return draw(st.binary(max_size=256))


@st.composite
def zip_archive(draw, member_names, contents) -> tuple[bytes, bool]:
    """(zip bytes, whether the archive is intact) with drawn members, and now and then a
    symlink member, duplicates, too many members, forged sizes or mutated bytes."""
    members = [(draw(member_names), draw(contents)) for _ in range(draw(st.integers(0, 6)))]
    # zipfile cuts a name at its first NUL and needs something left.
    members = [(name, data) for name, data in members if name.split("\x00")[0]]
    if members and draw(st.integers(0, 4)) == 0:
        members.append(members[0])  # a duplicate name
    if draw(st.integers(0, 9)) == 0:
        members += [(f"many/{i}.png", b"") for i in range(TOO_MANY)]
    compression = draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
            for name, data in members:
                archive.writestr(name, data)
            if draw(st.integers(0, 5)) == 0:
                link = zipfile.ZipInfo(
                    draw(st.sampled_from(["cls/link.png", "model.onnx", "link"]))
                )
                link.external_attr = (0o120777 << 16) | 0x20  # a symlink, as Info-ZIP stores it
                archive.writestr(link, draw(st.sampled_from(["/etc/passwd", "../../outside"])))
    data = buffer.getvalue()
    how = draw(st.sampled_from(["intact"] * 6 + ["forge", "mutate"]))
    if how == "forge":
        return forge_sizes(data, draw(st.sampled_from([0, 1, 2**31, 2**32 - 1]))), False
    if how == "mutate":
        return draw(mutated(data)), False
    return data, True


# Member limits are lowered for these tests so that "too many members" stays cheap to build.
TOO_MANY = 40


def forge_sizes(data: bytes, size: int) -> bytes:
    """Every central-directory entry claims `size` uncompressed bytes (a lying zip bomb)."""
    out = bytearray(data)
    at = out.find(b"PK\x01\x02")
    while at != -1:
        out[at + 24 : at + 28] = struct.pack("<I", size)
        at = out.find(b"PK\x01\x02", at + 4)
    return bytes(out)


IMAGE_NAMES = st.one_of(
    st.builds(
        lambda c, i, e: f"{c}/{i}.{e}",
        st.sampled_from(["cats", "dogs", "0", "1"]),
        st.integers(0, 3),
        st.sampled_from(["png", "PNG", "jpg", "bmp", "gif", "webp", "txt"]),
    ),
    st.sampled_from(HOSTILE_NAMES),
)


@st.composite
def clean_image_zip(draw) -> bytes:
    """Class folders of images in any mode and format Pillow writes."""
    members = [
        (f"{draw(st.sampled_from(['cats', 'dogs', 'ü']))}/{i}.png", png_bytes(draw))
        for i in range(draw(st.integers(1, 4)))
    ]
    return zip_of(members, compression=zipfile.ZIP_DEFLATED)


def image_zips():
    """(zip bytes, intact): hostile or broken image-folder archives, and well-formed ones."""
    return st.one_of(
        zip_archive(IMAGE_NAMES, member_content()),
        clean_image_zip().map(lambda data: (data, True)),
    )


@st.composite
def onnx_zips(draw, seeds: list[bytes]) -> tuple[bytes, bool]:
    """Zipped ONNX models with external data, honest or not: the data file where the model
    says, or missing; the location escaping; traversal, links, duplicates, nesting, bombs,
    too many members, a member that is both a file and a folder."""
    location = draw(st.one_of(st.sampled_from(["model.onnx.data", "w.data"]), LOCATION))
    model = draw(
        st.one_of(
            st.just(external_model(location)),
            st.just(seeds[0]),
            mutated_seed(seeds),
            absurd_models(depth=1),
        )
    )
    model_name = draw(
        st.sampled_from(["model.onnx", "sub/model.onnx", "../model.onnx", "/model.onnx", "M.ONNX"])
    )
    names = st.one_of(
        st.sampled_from(
            [location, "w.data", "inner.zip", model_name + "/clash", "x" * 300, "../../escape.data"]
        ),
        st.sampled_from(HOSTILE_NAMES),
    )
    contents = st.one_of(
        st.just(np.zeros((4, 1, 3, 3), np.float32).tobytes()),
        st.binary(max_size=64),
        st.just(zip_of([("model.onnx", seeds[0])])),
        st.just(b"\x00" * (2 << 20)),
    )
    extra = draw(zip_archive(names, contents))
    # The model first, then the drawn members (re-zipped: their order and flags kept).
    members = [(model_name, model)]
    if extra[1]:
        with zipfile.ZipFile(io.BytesIO(extra[0])) as archive:
            infos = archive.infolist()
            buffer = io.BytesIO()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with zipfile.ZipFile(buffer, "w") as out:
                    for name, data in members:
                        out.writestr(name, data)
                    for info in infos:
                        out.writestr(info, archive.read(info))
            return buffer.getvalue(), True
    return zip_of(members) if draw(st.booleans()) else extra[0], False


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def small_archive_limits():
    """Member-count limits lowered below TOO_MANY and the zip-bomb floor to 1 MB, so hostile
    archives over them stay small and quick to build."""
    import compress_engine.archives
    import compress_engine.images
    import compress_engine.onnx_files

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(compress_engine.archives, "MAX_MEMBERS", TOO_MANY - 10)
        patch.setattr(compress_engine.images, "MAX_IMAGES", TOO_MANY - 10)
        patch.setattr(compress_engine.onnx_files, "MAX_ZIP_MEMBERS", TOO_MANY - 10)
        # Zip bombs of a few MB (deflated ~1000:1) stand in for ones of several GB.
        patch.setattr(compress_engine.archives, "BOMB_FLOOR_BYTES", 1 << 20)
        yield


MAX_BYTES = 64 * 1024**2


# --- engine targets -------------------------------------------------------------------------


@fuzz(300)
@given(data=st.data())
def test_inspect_onnx_accepts_or_explains_any_bytes(seed_models, data):
    """inspect_onnx (the upload check) and detect_format on any .onnx bytes."""
    from compress_engine.ingest import detect_format
    from compress_engine.inspect import inspect_onnx

    blob = data.draw(onnx_inputs(seed_models), label="bytes")
    with scratch() as folder:
        path = folder / "upload.onnx"
        path.write_bytes(blob)
        checks = {
            "detect_format": lambda: detect_format(path, "upload.onnx", max_bytes=MAX_BYTES),
            "inspect_onnx": lambda: inspect_onnx(path, max_bytes=MAX_BYTES, external_data=False),
            "inspect_onnx with external data": lambda: inspect_onnx(path, max_bytes=MAX_BYTES),
        }
        for label, check in checks.items():
            try:
                check()
            except EngineError as exc:
                assert_user_error(exc)
            else:
                event(f"accepted by {label}")


@fuzz(120)
@given(location=LOCATION, data_is_link=st.booleans())
def test_external_data_outside_the_models_folder_is_always_refused(location, data_is_link):
    """A model in `folder/model/` whose weight points at `location`; `folder/secret.bin` and
    `/etc/passwd` exist, so only the path check keeps them out."""
    from compress_engine.inspect import inspect_onnx
    from compress_engine.onnx_files import model_files

    with scratch() as folder:
        (folder / "secret.bin").write_bytes(b"\x00" * 144)
        model_dir = folder / "model"
        (model_dir / "sub").mkdir(parents=True)
        if data_is_link:  # a link inside the folder that leads out of it
            (model_dir / "weights.data").symlink_to(folder / "secret.bin")
            (model_dir / "sub").rmdir()
            (model_dir / "sub").symlink_to(folder)
        else:
            (model_dir / "weights.data").write_bytes(b"\x00" * 144)
        path = model_dir / "model.onnx"
        path.write_bytes(external_model(location))
        for check in (lambda: inspect_onnx(path), lambda: model_files(path)):
            try:
                check()
            except EngineError as exc:
                assert_user_error(exc)
                continue
            assert not escapes(location), f"{location!r} escaped the model's folder"
        try:
            info = inspect_onnx(path)
        except EngineError:
            return
        assert not data_is_link, "a data file reached through a link was accepted"
        assert info.size_bytes == path.stat().st_size + 144


@fuzz(200)
@given(case=npz_inputs())
def test_npz_datasets_load_or_explain(case):
    """The engine's load_dataset (jobs, CLI) and the platform's upload check on any .npz;
    for intact archives, what the upload accepts the engine can read, with the same count."""
    from compress_engine.data import load_dataset
    from registry.datasets import DatasetRejected, inspect_upload

    blob, intact = case
    with scratch() as folder:
        path = folder / "data.npz"
        path.write_bytes(blob)
        try:
            dataset = load_dataset(path)
        except EngineError as exc:
            assert_user_error(exc)
            dataset = None
        try:
            facts = inspect_upload(path, "data.npz", max_bytes=MAX_BYTES)
        except DatasetRejected as exc:
            assert_user_error(exc)
            facts = None
    event(f"upload check {'accepted' if facts is not None else 'refused'}")
    if intact and facts is not None:
        assert dataset is not None, "the upload check accepted a .npz the engine refuses"
        assert dataset.samples == facts.samples
    if facts is not None:
        assert 0 < facts.samples < 2**31


IMAGE_INPUT_SHAPES = [["batch", 1, 8, 8], [1, 3, 6, 6], ["n", 5, 5, 3]]


@fuzz(200)
@given(case=image_zips(), shape=st.sampled_from(IMAGE_INPUT_SHAPES))
def test_image_folder_zips_load_or_explain(case, shape):
    """The engine's image-folder reader and the platform's upload check on any .zip; for
    intact archives, what the upload accepts the engine can read."""
    from compress_engine.data import load_dataset
    from compress_engine.inspect import TensorInfo
    from registry.datasets import DatasetRejected, inspect_upload

    blob, intact = case
    inputs = [TensorInfo(name="input", dtype="float32", shape=shape)]
    with scratch() as folder:
        path = folder / "images.zip"
        path.write_bytes(blob)
        try:
            dataset = load_dataset(path, inputs)
        except EngineError as exc:
            assert_user_error(exc)
            dataset = None
        try:
            facts = inspect_upload(path, "images.zip", max_bytes=MAX_BYTES)
        except DatasetRejected as exc:
            assert_user_error(exc)
            facts = None
        assert sorted(p.name for p in folder.iterdir()) == ["images.zip"]
    event(f"upload check {'accepted' if facts is not None else 'refused'}")
    if intact and facts is not None:
        assert dataset is not None, "the upload check accepted a zip the engine refuses"
        assert dataset.samples == facts.samples


@fuzz(150)
@given(data=st.data())
def test_zipped_onnx_is_unpacked_inside_its_folder_or_refused(seed_models, data):
    """The worker's ingest of a `.onnx.zip` (unpack, check, re-save) and the upload's format
    check: nothing is ever written outside the output folder."""
    from compress_engine.ingest import ModelFormat, convert_to_onnx, detect_format

    blob, _intact = data.draw(onnx_zips(seed_models), label="zip")
    with scratch() as folder:
        deep = folder / "a" / "b" / "c" / "d"
        out = deep / "out"
        out.mkdir(parents=True)
        src = deep / "upload.zip"
        src.write_bytes(blob)
        try:
            detect_format(src, "upload.zip", max_bytes=MAX_BYTES)
        except EngineError as exc:
            assert_user_error(exc)
        try:
            result = convert_to_onnx(src, ModelFormat.ONNX_ZIP, out, max_bytes=MAX_BYTES)
        except EngineError as exc:
            assert_user_error(exc)
        else:
            event("converted")
            assert result.model == out / "model.onnx" and result.info.outputs
        stray = [p for p in folder.rglob("*") if p.is_file() and out not in p.parents and p != src]
        assert not stray, f"written outside the output folder: {stray}"


@fuzz(150)
@given(
    text=st.one_of(
        st.text(max_size=40),
        st.sampled_from(
            ["input: " + "9" * 5000, "1x" * 3000 + "1", "x: [" + ",".join(["2"] * 400) + "]"]
        ),
    )
)
def test_input_shapes_text_parses_or_explains(text):
    """The upload form's and the API's `input_shapes` field (TorchScript uploads)."""
    from compress_engine.ingest import parse_input_shapes

    try:
        parse_input_shapes(text)
    except EngineError as exc:
        assert_user_error(exc)


# --- platform targets: the upload services and the upload routes -----------------------------

FILENAME = st.one_of(
    st.sampled_from(
        [
            "model.onnx",
            "model.ONNX",
            "weights.pt",
            "model.zip",
            "data.npz",
            "images.zip",
            "../../etc/model.onnx",
            "a\x00b.onnx",
            "x" * 300 + ".onnx",
            "ü ñ.npz",
            ".npz",
            "noext",
        ]
    ),
    st.text(min_size=1, max_size=20),
)


@st.composite
def clean_npz(draw) -> bytes:
    """A well-formed dataset (x, and often integer labels y) with odd but valid values."""
    from hypothesis.extra import numpy as hnp

    samples = draw(st.integers(1, 5))
    rest = draw(hnp.array_shapes(min_dims=1, max_dims=3, max_side=5))
    arrays = {
        "x": draw(hnp.arrays(np.dtype(draw(st.sampled_from(NUMERIC_DESCRS))), (samples, *rest)))
    }
    if draw(st.booleans()):
        arrays["y"] = draw(hnp.arrays(np.int64, (samples,), elements=st.integers(0, 9)))
    buffer = io.BytesIO()
    (np.savez_compressed if draw(st.booleans()) else np.savez)(buffer, **arrays)
    return buffer.getvalue()


def uploads(seeds: list[bytes]):
    """(file name, bytes) of anything a user might upload: well-formed files with odd
    content (these are stored, and their facts too), hostile or broken ones."""
    return st.one_of(
        st.tuples(st.just("model.onnx"), odd_valid_models()),
        st.tuples(st.just("data.npz"), clean_npz()),
        st.tuples(st.just("images.zip"), clean_image_zip()),
        st.tuples(st.sampled_from(["model.onnx", "m.onnx"]), onnx_inputs(seeds)),
        st.tuples(st.sampled_from(["data.npz", "d.npz"]), npz_inputs().map(lambda c: c[0])),
        st.tuples(st.just("images.zip"), image_zips().map(lambda c: c[0])),
        st.tuples(st.just("model.zip"), onnx_zips(seeds).map(lambda c: c[0])),
        st.tuples(FILENAME, st.binary(max_size=512)),
    )


# The form fields beside the file: often empty, sometimes anything.
TEXT = st.one_of(st.just(""), st.text(max_size=30))
SHAPES = st.one_of(st.just(""), st.just("input: 1x1x8x8"), st.text(max_size=30))


def _rows() -> dict[str, int]:
    from accounts.models import AuditEvent
    from registry.models import Dataset, ModelVersion

    return {
        "model versions": ModelVersion.objects.count(),
        "datasets": Dataset.objects.count(),
        "audit events": AuditEvent.objects.count(),
    }


@pytest.fixture
def upload_dirs(settings, tmp_path, monkeypatch) -> list[Path]:
    """Django's upload temp folder and Python's temp folder, each an empty folder of its own
    that must be empty again after every request."""
    uploads_dir, temp_dir = tmp_path / "uploads", tmp_path / "tmp"
    uploads_dir.mkdir()
    temp_dir.mkdir()
    settings.FILE_UPLOAD_TEMP_DIR = str(uploads_dir)
    monkeypatch.setattr(tempfile, "tempdir", str(temp_dir))
    return [uploads_dir, temp_dir]


class UploadChecker:
    """Counts rows and stored files before one upload, and checks them after it; and that
    the temporary folders are empty again once the upload is closed."""

    def __init__(self, temp_dirs: list[Path]) -> None:
        from conftest import storage_files

        self.temp_dirs = temp_dirs
        self.storage_files = storage_files
        self.rows = _rows()
        self.files = storage_files()

    def refused(self) -> None:
        assert _rows() == self.rows, "a refused upload left rows behind"
        assert self.storage_files() == self.files, "a refused upload left stored files behind"

    def accepted(self) -> None:
        new = {k: v - self.rows[k] for k, v in _rows().items()}
        assert new["model versions"] + new["datasets"] == 1
        assert len(self.storage_files()) == len(self.files) + 1

    def temp_is_clean(self) -> None:
        for folder in self.temp_dirs:
            assert not list(folder.iterdir()), f"stray temporary files in {folder}"


@pytest.fixture
def api_token(owner) -> str:
    from accounts.tokens import create_token

    return create_token(user=owner.user, name="fuzz").raw


def as_posted_file(name: str, blob: bytes) -> io.BytesIO:
    """A file for the test client under any name (SimpleUploadedFile refuses some, such as
    "/", that a real client can send)."""
    handle = io.BytesIO(blob)
    handle.name = name
    return handle


def _temporary_upload(name: str, blob: bytes):
    from django.core.files.uploadedfile import TemporaryUploadedFile

    upload = TemporaryUploadedFile(name, "application/octet-stream", len(blob), None)
    upload.write(blob)
    upload.flush()
    return upload


@pytest.mark.django_db
@fuzz(150)
@given(data=st.data(), dataset=st.booleans())
def test_upload_services_store_or_refuse_cleanly(
    seed_models, project, owner, upload_dirs, data, dataset
):
    """ingest_model_upload / ingest_dataset_upload: a row and its file, or RegistryRejected
    with a message and nothing left behind."""
    from registry.services import RegistryRejected, ingest_dataset_upload, ingest_model_upload

    name, blob = data.draw(uploads(seed_models), label="upload")
    ingest = ingest_dataset_upload if dataset else ingest_model_upload
    check = UploadChecker(upload_dirs)
    upload = _temporary_upload(name, blob)
    try:
        ingest(project=project, user=owner.user, upload=upload)
    except RegistryRejected as exc:
        assert_user_error(exc)
        check.refused()
    else:
        event("accepted")
        check.accepted()
    finally:
        upload.close()  # what Django does at the end of a request
    check.temp_is_clean()


def _form_errors(response, key: str) -> list[str]:
    form = (response.context or {}).get(key)
    return [str(e) for errors in form.errors.values() for e in errors] if form else []


@pytest.mark.django_db
@fuzz(60)
@given(data=st.data(), dataset=st.booleans(), htmx=st.booleans(), name=TEXT, shapes=SHAPES)
def test_upload_views_never_fail_and_leave_nothing_behind(
    client, seed_models, project, owner, upload_dirs, data, dataset, htmx, name, shapes
):
    """The upload forms (full page and htmx): a redirect, or the form again with the reason;
    never a 5xx."""
    from django.urls import reverse

    filename, blob = data.draw(uploads(seed_models), label="upload")
    client.force_login(owner.user)
    route = "registry-dataset-upload" if dataset else "registry-upload"
    fields = {"name": name} if dataset else {"name": name, "input_shapes": shapes}
    check = UploadChecker(upload_dirs)
    response = client.post(
        reverse(route, args=[project.uuid]),
        {"file": as_posted_file(filename, blob), **fields},
        headers={"HX-Request": "true"} if htmx else {},
    )
    assert response.status_code < 500
    if response.status_code == 302 or "HX-Redirect" in response:
        event("accepted")
        check.accepted()
    else:
        event(f"refused (HTTP {response.status_code})")
        assert response.status_code == (200 if htmx else 422)
        errors = _form_errors(response, "dataset_form" if dataset else "upload_form")
        assert errors and all(e.strip() for e in errors), "refused without saying why"
        check.refused()
    check.temp_is_clean()


@pytest.mark.django_db
@fuzz(60)
@given(data=st.data(), dataset=st.booleans(), name=TEXT, shapes=SHAPES)
def test_upload_api_never_fails_and_leaves_nothing_behind(
    client, seed_models, project, api_token, upload_dirs, data, dataset, name, shapes
):
    """POST /api/v1/projects/{id}/models and /datasets with a token: 201, or a 4xx whose
    JSON says why; never a 5xx."""
    filename, blob = data.draw(uploads(seed_models), label="upload")
    kind = "datasets" if dataset else "models"
    fields = {"name": name} if dataset else {"name": name, "input_shapes": shapes}
    check = UploadChecker(upload_dirs)
    response = client.post(
        f"/api/v1/projects/{project.uuid}/{kind}",
        {"file": as_posted_file(filename, blob), **fields},
        headers={"Authorization": f"Bearer {api_token}"},
    )
    assert response.status_code < 500, response.content[:500]
    if response.status_code == 201:
        event("accepted")
        check.accepted()
    else:
        event(f"refused (HTTP {response.status_code})")
        assert response.status_code in (400, 413, 422), response.status_code
        assert response.json()["detail"].strip()
        check.refused()
    check.temp_is_clean()


# --- regressions: the concrete inputs the fuzzing found --------------------------------------


def _conv_with(edit) -> bytes:
    import onnx

    model = onnx.load_from_string(conv_model_bytes())
    edit(model)
    return model.SerializeToString()


def _zip_version_25_5() -> bytes:
    """A zip whose central directory says it needs zip version 25.5 to extract (zipfile
    raised NotImplementedError while listing it)."""
    data = bytearray(zip_of([("cats/a.png", b"x")]))
    at = data.find(b"PK\x01\x02")
    data[at + 6] = 255  # "version needed to extract"
    return bytes(data)


def _set_elem_type_29(model) -> None:
    model.graph.input[0].type.tensor_type.elem_type = 29  # not defined by onnx 1.23


def _rename_input(name: str):
    def edit(model) -> None:
        model.graph.input[0].name = name
        model.graph.node[0].input[0] = name

    return edit


ONNX_REGRESSIONS = {
    # The checker's own message quoted non-UTF-8 bytes: UnicodeDecodeError.
    "checker message not UTF-8": (
        lambda: conv_model_bytes().replace(
            b"\n\x04conv\x12\x06output", b"\n\x04c\xffnv\x12\x06output"
        ),
        "not valid UTF-8",
    ),
    # ValueError from TensorProto.DataType.Name.
    "element type 29": (lambda: _conv_with(_set_elem_type_29), "element type 29"),
    # Protobuf hands non-UTF-8 names over as bytes: pydantic ValidationError.
    "input name not UTF-8": (
        lambda: conv_model_bytes().replace(b"\x05input", b"\x05in\xffut"),
        "not valid UTF-8",
    ),
    # Accepted, then a 500 when PostgreSQL refused to store the NUL.
    "input name with NUL": (lambda: _conv_with(_rename_input("in\x00put")), "NUL"),
    # OSError (file name too long) from the external-data check.
    "external data name too long": (lambda: external_model("x" * 5000), "longer than 255"),
}


@pytest.mark.parametrize("case", ONNX_REGRESSIONS)
def test_regression_onnx_inputs_are_refused_with_a_message(case):
    from compress_engine.inspect import inspect_onnx

    build, message = ONNX_REGRESSIONS[case]
    with scratch() as folder:
        path = folder / "model.onnx"
        path.write_bytes(build())
        with pytest.raises(EngineError, match=message):
            inspect_onnx(path)


def test_external_data_reached_through_a_linked_folder_is_refused():
    """`sub` inside the model's folder links to the folder above: "sub/secret.bin" is a
    harmless path that leads outside. Only the last part was checked for a link; the ONNX
    checker refused it, in its own words. Uploads cannot create links; this is belt and
    braces."""
    from compress_engine.inspect import inspect_onnx

    with scratch() as folder:
        (folder / "secret.bin").write_bytes(b"\x00" * 144)
        (folder / "model").mkdir()
        (folder / "model" / "sub").symlink_to(folder)
        path = folder / "model" / "model.onnx"
        path.write_bytes(external_model("sub/secret.bin"))
        with pytest.raises(EngineError, match="leads outside the model's folder"):
            inspect_onnx(path)


NPZ_REGRESSIONS = {
    # numpy allocated 3.6 TiB for the declared shape: MemoryError.
    "header declaring terabytes": (
        [("x.npy", npy_bytes("<f4", (10**9, 1000), b""))],
        "is truncated",
    ),
    # np.load handed the member back as bytes: AttributeError.
    "member without the npy magic": ([("x.npy", b"hello")], "not a valid .npy array"),
    # A sample count PostgreSQL's integer cannot hold (a 500 on upload).
    "three billion empty samples": (
        [("x.npy", npy_bytes("<f4", (3_000_000_000, 0), b""))],
        "at least one value",
    ),
}


@pytest.mark.parametrize("case", NPZ_REGRESSIONS)
def test_regression_npz_inputs_are_refused_by_engine_and_upload(case):
    from compress_engine.data import load_dataset
    from registry.datasets import DatasetRejected, inspect_upload

    members, message = NPZ_REGRESSIONS[case]
    with scratch() as folder:
        path = folder / "data.npz"
        path.write_bytes(zip_of(members))
        with pytest.raises(EngineError, match=message):
            load_dataset(path)
        with pytest.raises(DatasetRejected, match=message):
            inspect_upload(path, "data.npz", max_bytes=MAX_BYTES)


def test_regression_a_folder_entry_in_an_npz_is_ignored_by_the_engine_too():
    """The upload check skipped it; the engine read it as an array and refused."""
    from compress_engine.data import load_dataset

    with scratch() as folder:
        path = folder / "data.npz"
        path.write_bytes(zip_of([("dir/", b""), ("x.npy", npy_bytes("<f4", (2, 2), bytes(16)))]))
        assert load_dataset(path).samples == 2


def test_regression_labels_the_engine_refuses_are_refused_at_upload():
    """Negative class ids, and both `y` and `labels`, passed the upload and failed the job."""
    from registry.datasets import DatasetRejected, inspect_upload

    x = npy_bytes("<f4", (2, 2), bytes(16))
    cases = {
        "class ids >= 0": [("x.npy", x), ("y.npy", npy_bytes("<i8", (2,), b"\xff" * 16))],
        "keep one label array": [
            ("x.npy", x),
            ("y.npy", npy_bytes("<i8", (2,), bytes(16))),
            ("labels.npy", npy_bytes("<i8", (2,), bytes(16))),
        ],
    }
    for message, members in cases.items():
        with scratch() as folder:
            path = folder / "data.npz"
            path.write_bytes(zip_of(members))
            with pytest.raises(DatasetRejected, match=message):
                inspect_upload(path, "data.npz", max_bytes=MAX_BYTES)


ZIPPED_ONNX_REGRESSIONS = {
    # OSError: file name too long, while extracting.
    "member name too long": ([("model.onnx", "conv"), ("y" * 300, b"")], "longer than 255"),
    # FileExistsError: a member is a file and another's folder.
    "file and folder clash": (
        [("model.onnx", "conv"), ("model.onnx/clash", b"")],
        "cannot be unpacked",
    ),
    # DecodeError while listing the model's data files (the worker said "Internal error").
    "model not a protobuf": ([("model.onnx", b"\x08")], "not a valid ONNX model"),
}


@pytest.mark.parametrize("case", ZIPPED_ONNX_REGRESSIONS)
def test_regression_zipped_onnx_inputs_are_refused_at_conversion(case):
    from compress_engine.ingest import ModelFormat, convert_to_onnx

    members, message = ZIPPED_ONNX_REGRESSIONS[case]
    members = [(n, conv_model_bytes() if d == "conv" else d) for n, d in members]
    with scratch() as folder:
        src = folder / "upload.zip"
        src.write_bytes(zip_of(members))
        with pytest.raises(EngineError, match=message):
            convert_to_onnx(src, ModelFormat.ONNX_ZIP, folder / "out")


def test_regression_a_zip_needing_an_unknown_zip_version_is_refused():
    from compress_engine.data import load_dataset
    from compress_engine.ingest import detect_format
    from compress_engine.inspect import TensorInfo

    with scratch() as folder:
        path = folder / "upload.zip"
        path.write_bytes(_zip_version_25_5())
        with pytest.raises(EngineError, match="cannot be read"):
            detect_format(path, "upload.zip")
        with pytest.raises(EngineError, match=r"not a readable \.zip"):
            load_dataset(path, [TensorInfo(name="x", dtype="float32", shape=[1, 1, 8, 8])])


def test_regression_an_image_header_past_pillows_own_bound_is_refused():
    """65535x65535 pixels: Pillow raises DecompressionBombError in Image.open."""
    from compress_engine.data import load_dataset
    from compress_engine.inspect import TensorInfo

    with scratch() as folder:
        path = folder / "images.zip"
        path.write_bytes(zip_of([("cats/a.png", huge_png_header(65535, 65535))]))
        with pytest.raises(EngineError, match="could not be read as an image"):
            load_dataset(path, [TensorInfo(name="x", dtype="float32", shape=[1, 1, 8, 8])])


def test_regression_a_dimension_of_5000_digits_is_refused():
    """int() refuses strings of over 4,300 digits with ValueError (a 500 on the API)."""
    from compress_engine.ingest import parse_input_shapes

    with pytest.raises(EngineError, match="dimension of more than"):
        parse_input_shapes("input: " + "9" * 5000)


def test_zip_bombs_are_refused_and_stored_archives_of_the_same_size_are_not(monkeypatch):
    import compress_engine.archives
    from compress_engine.ingest import ModelFormat, detect_format

    monkeypatch.setattr(compress_engine.archives, "BOMB_FLOOR_BYTES", 1 << 20)
    members = [("model.onnx", conv_model_bytes()), ("model.onnx.data", bytes(4 << 20))]
    with scratch() as folder:
        bomb, stored = folder / "bomb.zip", folder / "stored.zip"
        bomb.write_bytes(zip_of(members, compression=zipfile.ZIP_DEFLATED))
        stored.write_bytes(zip_of(members))
        with pytest.raises(EngineError, match="refused as zip bombs"):
            detect_format(bomb, "bomb.zip")
        assert detect_format(stored, "stored.zip") is ModelFormat.ONNX_ZIP


HTTP_REGRESSIONS = {
    # A 500: PostgreSQL cannot store NUL in text or jsonb.
    "onnx input name with NUL": (
        "registry-upload",
        "model.onnx",
        lambda: _conv_with(_rename_input("in\x00put")),
    ),
    # A 500: "integer out of range" for Dataset.samples.
    "npz of three billion samples": (
        "registry-dataset-upload",
        "data.npz",
        lambda: zip_of([("x.npy", npy_bytes("|b1", (3_000_000_000,), b""))]),
    ),
    # A 500: NotImplementedError from zipfile.
    "zip needing zip version 25.5": ("registry-upload", "model.zip", _zip_version_25_5),
}


@pytest.mark.django_db
@pytest.mark.parametrize("case", HTTP_REGRESSIONS)
def test_regression_uploads_that_were_a_500_are_refused(client, owner, project, upload_dirs, case):
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.urls import reverse

    route, name, build = HTTP_REGRESSIONS[case]
    client.force_login(owner.user)
    check = UploadChecker(upload_dirs)
    response = client.post(
        reverse(route, args=[project.uuid]), {"file": SimpleUploadedFile(name, build())}
    )
    assert response.status_code == 422
    assert _form_errors(response, "dataset_form" if "dataset" in route else "upload_form")
    check.refused()
    check.temp_is_clean()


@pytest.mark.django_db
def test_regression_api_input_shapes_of_5000_digits_are_a_400(client, project, api_token):
    from django.core.files.uploadedfile import SimpleUploadedFile

    response = client.post(
        f"/api/v1/projects/{project.uuid}/models",
        {
            "file": SimpleUploadedFile("model.onnx", conv_model_bytes()),
            "input_shapes": "input: " + "9" * 5000,
        },
        headers={"Authorization": f"Bearer {api_token}"},
    )
    assert response.status_code == 400
    assert "dimension of more than" in response.json()["detail"]
