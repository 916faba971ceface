"""The input names of a TorchScript or torch.export archive, read from its text, never loaded.

The upload form asks for TorchScript input shapes as `name: 1x3x224x224`; a name the model's
`forward` does not take used to fail only in the worker, after the conversion had waited in
the queue. This module reads the names at upload time, in the web process, without torch and
without unpickling anything:

- TorchScript (`torch.jit.save`): the archive holds each module class's code as TorchScript
  source under `code/__torch__/...py`. It is parsed with `ast` (never run). The root module
  is the one Module class that no other class holds as a submodule: submodules appear as
  class-level annotations (`conv : __torch__.torch.nn.modules.conv.Conv2d`, or
  `__annotations__["0"] = ...` in a Sequential), so every class but the root is named in
  another class's body. (`data.pkl` also names the root, but only a pickle says so.) When the
  rule does not single out one class, the names are unknown and the worker still checks them.
- torch.export (`.pt2`): `models/<name>.json` is the serialised program in JSON; its
  signature lists the user inputs by the names the converter matches shapes against.

Both read the same text members: from the stored upload (forward_signature) or, before any
upload, as the browser's upload form reads them from the chosen file (signature_from_members).
"""

from __future__ import annotations

import ast
import json
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from compress_engine.archives import ZIP_ERRORS
from compress_engine.errors import EngineError
from compress_engine.ingest.formats import ModelFormat
from compress_engine.ingest.shapes import InputSpec

# Code files larger than this are not parsed (generated code of huge models): names unknown.
MAX_CODE_BYTES = 16 * 1024**2
# A torch.export program's JSON holds the whole graph: a larger cap.
MAX_PROGRAM_BYTES = 8 * MAX_CODE_BYTES


@dataclass(frozen=True)
class ForwardArg:
    name: str
    type: str  # as written in the archive: "Tensor", "Optional[Tensor]", "float", ...
    has_default: bool


@dataclass(frozen=True)
class ForwardSignature:
    """The inputs of a model's forward (self excluded), in order. `shapes_recorded`: the
    archive carries example inputs (torch.export), so shapes need not be given."""

    args: tuple[ForwardArg, ...]
    shapes_recorded: bool = False

    @property
    def names(self) -> list[str]:
        return [a.name for a in self.args]

    @property
    def required(self) -> list[str]:
        return [a.name for a in self.args if not a.has_default]


def forward_signature(path: Path, fmt: ModelFormat) -> ForwardSignature | None:
    """The forward signature of the archive at `path`, or None when it cannot be told from
    the archive's text (another format, an unusual archive). Never raises for a damaged
    archive: detect_format has already checked it, and the converter reports the rest."""
    if fmt not in (ModelFormat.TORCHSCRIPT, ModelFormat.TORCH_EXPORT):
        return None
    try:
        with zipfile.ZipFile(path) as zf:
            wanted = [i for i in zf.infolist() if _member_kind(i.filename) is fmt]
            if any(i.file_size > _max_bytes(fmt) for i in wanted):
                return None
            members = {i.filename: zf.read(i).decode("utf-8") for i in wanted}
    except (*ZIP_ERRORS, UnicodeDecodeError):
        return None
    return _signature(members, fmt)


def signature_from_members(members: Mapping[str, str]) -> ForwardSignature | None:
    """The forward signature told by an archive's text members alone (member name -> text),
    as a browser reads them from the chosen file before any upload: the TorchScript code
    files (`<top>/code/**/*.py`) or the torch.export program (`<top>/models/<name>.json`).
    Other members are ignored; None when the members do not single out one signature."""
    kinds = {_member_kind(name) for name in members} - {None}
    if len(kinds) != 1:
        return None
    (fmt,) = kinds
    if any(len(text) > _max_bytes(fmt) for text in members.values()):
        return None
    return _signature({n: t for n, t in members.items() if _member_kind(n) is fmt}, fmt)


def _member_kind(name: str) -> ModelFormat | None:
    """Which reader needs the member: TorchScript code or a torch.export program."""
    parts = PurePosixPath(name).parts
    if len(parts) > 2 and parts[1] == "code" and name.endswith(".py"):
        return ModelFormat.TORCHSCRIPT
    if len(parts) == 3 and parts[1] == "models" and name.endswith(".json"):
        return ModelFormat.TORCH_EXPORT
    return None


def _max_bytes(fmt: ModelFormat) -> int:
    return MAX_CODE_BYTES if fmt is ModelFormat.TORCHSCRIPT else MAX_PROGRAM_BYTES


def _signature(members: Mapping[str, str], fmt: ModelFormat) -> ForwardSignature | None:
    """The one rule for both sources: `members` holds every member of `fmt`'s kind."""
    try:
        if fmt is ModelFormat.TORCHSCRIPT:
            return _torchscript(members)
        return _exported(members)
    except (SyntaxError, RecursionError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _torchscript(members: Mapping[str, str]) -> ForwardSignature | None:
    classes: dict[str, ast.ClassDef] = {}
    referenced: set[str] = set()
    for filename, text in members.items():
        module = _module_path(filename)
        for node in ast.parse(text).body:
            if isinstance(node, ast.ClassDef):
                classes[f"{module}.{node.name}"] = node
                referenced |= _held_types(node)
    roots = [
        (name, node)
        for name, node in classes.items()
        if name not in referenced and any(_name(b) == "Module" for b in node.bases)
    ]
    if len(roots) != 1:
        return None
    return _forward_of(roots[0][1])


def _module_path(member: str) -> str:
    """`net/code/__torch__/torch/nn/conv.py` -> `__torch__.torch.nn.conv`."""
    parts = PurePosixPath(member).parts[2:]
    return ".".join([*parts[:-1], PurePosixPath(parts[-1]).stem])


def _held_types(node: ast.ClassDef) -> set[str]:
    """Every dotted `__torch__...` name in the class body's annotations (attribute types)."""
    held: set[str] = set()
    for stmt in node.body:
        if isinstance(stmt, ast.AnnAssign):
            annotation: ast.AST = stmt.annotation
        elif isinstance(stmt, ast.Assign) and any(
            isinstance(t, ast.Subscript) and _name(t.value) == "__annotations__"
            for t in stmt.targets
        ):
            annotation = stmt.value
        else:
            continue
        for sub in ast.walk(annotation):
            dotted = _name(sub)
            if dotted.startswith("__torch__."):
                held.add(dotted)
    return held


def _name(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _name(node.value)
        return f"{base}.{node.attr}" if base else ""
    return ""


def _forward_of(node: ast.ClassDef) -> ForwardSignature | None:
    for stmt in node.body:
        if isinstance(stmt, ast.FunctionDef) and stmt.name == "forward":
            params = stmt.args
            positional = [*params.posonlyargs, *params.args][1:]  # [0] is self
            first_default = len(positional) - len(params.defaults)
            return ForwardSignature(
                tuple(
                    ForwardArg(
                        name=a.arg,
                        type=ast.unparse(a.annotation) if a.annotation else "",
                        has_default=i >= first_default,
                    )
                    for i, a in enumerate(positional)
                )
            )
    return None


def _exported(members: Mapping[str, str]) -> ForwardSignature | None:
    if len(members) != 1:
        return None
    (text,) = members.values()
    specs = json.loads(text)["graph_module"]["signature"]["input_specs"]
    args = []
    for spec in specs:
        if "user_input" not in spec:
            continue
        (kind, value), *_ = spec["user_input"]["arg"].items()
        name = value.get("name") if isinstance(value, dict) else None
        if not isinstance(name, str):
            return None
        kind = "Tensor" if kind == "as_tensor" else kind
        args.append(ForwardArg(name=name, type=kind, has_default=False))
    return ForwardSignature(tuple(args), shapes_recorded=True)


def name_input_shapes(
    signature: ForwardSignature, specs: list[InputSpec], *, shapes_required: bool
) -> list[InputSpec]:
    """The given shapes, each named after forward's argument: shapes given by position take
    the names in order; named shapes must name forward's arguments. EngineError says which
    names the model takes, with the given shapes under the right names as the example."""
    names = signature.names
    if not specs:
        if shapes_required:
            raise EngineError(
                f"This model's forward takes {_listing(names)}, and the file does not record "
                f"the shapes of its inputs: give them, e.g. {_suggest(signature, [])}."
            )
        return []
    if specs[0].name is None:
        if len(specs) > len(names):
            raise EngineError(
                f"This model's forward takes {_listing(names)}, but {len(specs)} input shapes "
                f"were given. Use e.g. {_suggest(signature, specs)}."
            )
        specs = [s.model_copy(update={"name": n}) for s, n in zip(specs, names, strict=False)]
    else:
        unknown = [s.name for s in specs if s.name not in names]
        if unknown:
            raise EngineError(
                f"This model's forward takes {_listing(names)}; you gave {_listing(unknown)}. "
                f"Use e.g. {_suggest(signature, specs)}."
            )
        order = {n: i for i, n in enumerate(names)}
        specs = sorted(specs, key=lambda s: order[s.name or ""])
        if [s.name for s in specs] != names[: len(specs)]:
            raise EngineError(
                f"Give shapes for forward's inputs in order without gaps: it takes "
                f"{_listing(names)}. Use e.g. {_suggest(signature, specs)}."
            )
    missing = [n for n in signature.required if n not in {s.name for s in specs}]
    if missing:
        raise EngineError(
            f"This model's forward takes {_listing(names)}; the shape of {_listing(missing)} "
            f"is missing{_scalar_hint(signature, missing)}. Use e.g. {_suggest(signature, specs)}."
        )
    for spec in specs:
        arg = next(a for a in signature.args if a.name == spec.name)
        if arg.type in SCALAR_TYPES and len(spec.shape) != 1:
            raise EngineError(
                f"`{arg.name}` is {_a(arg.type)}, not a tensor: give one value for it "
                f"(e.g. `{arg.name}: {_SCALAR_EXAMPLE}`), not a shape."
            )
    return specs


# forward's non-tensor argument types the converter takes: their "shape" is one value.
SCALAR_TYPES = ("int", "float", "bool")
_SCALAR_EXAMPLE = 1


def _scalar_hint(signature: ForwardSignature, missing: list[str]) -> str:
    scalars = [a for a in signature.args if a.name in missing and a.type in SCALAR_TYPES]
    if not scalars:
        return ""
    named = ", ".join(f"`{a.name}` is {_a(a.type)}" for a in scalars)
    return (
        f" ({named}, not a tensor: give the value to convert the model with; it becomes a "
        "scalar input of the ONNX model)"
    )


def _a(kind: str) -> str:
    return f"an {kind}" if kind == "int" else f"a {kind}"


def suggested_shapes(signature: ForwardSignature, specs: list[InputSpec]) -> str:
    """Input shapes text naming forward's inputs, one per line as the upload form takes them:
    a shape given under an argument's name stays with it, the other given shapes fill the
    remaining arguments in order, and required arguments left over get an example shape."""
    names = signature.names
    by_name = {s.name: s for s in specs if s.name in names}
    rest = [s for s in specs if s.name not in by_name]
    lines = []
    for arg in signature.args:
        spec = by_name.get(arg.name) or (rest.pop(0) if rest else None)
        if spec is None:
            if arg.has_default:
                break
            example = [_SCALAR_EXAMPLE] if arg.type in SCALAR_TYPES else [1, 3, 224, 224]
            spec = InputSpec(shape=example)
        lines.append(spec.model_copy(update={"name": arg.name}).label())
    return "\n".join(lines)


def _suggest(signature: ForwardSignature, specs: list[InputSpec]) -> str:
    return "; ".join(f"`{line}`" for line in suggested_shapes(signature, specs).splitlines())


def _listing(names: list[str | None]) -> str:
    return ", ".join(f"`{n}`" for n in names) if names else "no inputs"
