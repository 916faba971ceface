"""Reading a TorchScript or torch.export archive's input names from its text, never loading it
(compress_engine.forward_signature), and checking hand-written input shapes against them."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from compress_engine import (
    EngineError,
    ModelFormat,
    forward_signature,
    name_input_shapes,
    parse_input_shapes,
    signature_from_members,
    suggested_shapes,
)

WORKERS = Path(__file__).resolve().parents[2] / "workers"


@pytest.fixture(scope="module")
def archives(tmp_path_factory) -> dict[str, Path]:
    """The archive shapes torch writes: a traced Sequential (root in a nested code file), a
    traced and a scripted custom module (root in `__torch__.py` or a mangled file), nested
    submodules in a ModuleList/ModuleDict with a TorchScript class beside them, a frozen
    module, and a torch.export program with two inputs."""
    import torch

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)
            self.fc = torch.nn.Linear(4, 5)

        def forward(self, x, mask: torch.Tensor | None = None):
            return self.fc(self.conv(x).mean((2, 3)))

    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(4, 4)

        def forward(self, t):
            return self.lin(t)

    class Big(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = torch.nn.ModuleList([Block(), Block()])
            self.named = torch.nn.ModuleDict({"a": Block()})

        def forward(self, tokens: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
            for block in self.blocks:
                tokens = block(tokens)
            return self.named["a"](tokens) * scale

    class Two(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(4, 4)

        def forward(self, image, ids):
            return self.lin(image) + ids.float().mean()

    folder = tmp_path_factory.mktemp("signatures")
    files = {name: folder / f"{name}.pt" for name in ("seq", "traced", "scripted", "big", "frozen")}
    image = torch.randn(1, 3, 8, 8)
    seq = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    torch.jit.save(torch.jit.trace(seq, image), files["seq"])
    torch.jit.save(torch.jit.trace(Net(), image), files["traced"])
    torch.jit.save(torch.jit.script(Net()), files["scripted"])
    torch.jit.save(torch.jit.script(Big()), files["big"])
    torch.jit.save(torch.jit.freeze(torch.jit.script(Big().eval())), files["frozen"])
    files["export"] = folder / "two.pt2"
    example = (torch.randn(2, 4), torch.ones(2, 4, dtype=torch.long))
    torch.export.save(torch.export.export(Two(), example), files["export"])
    return files


@pytest.mark.parametrize(
    ("name", "args", "required"),
    [
        ("seq", ["input"], ["input"]),
        ("traced", ["x"], ["x"]),
        ("scripted", ["x", "mask"], ["x"]),
        ("big", ["tokens", "scale"], ["tokens"]),
        ("frozen", ["tokens", "scale"], ["tokens"]),
    ],
)
def test_it_reads_the_root_modules_forward_from_torchscript_code(archives, name, args, required):
    signature = forward_signature(archives[name], ModelFormat.TORCHSCRIPT)
    assert signature is not None
    assert signature.names == args
    assert signature.required == required


def test_it_reads_the_user_inputs_of_a_torch_export_program(archives):
    signature = forward_signature(archives["export"], ModelFormat.TORCH_EXPORT)
    assert signature is not None and signature.names == ["image", "ids"]


def test_it_never_unpickles_or_imports_torch(archives, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("unpickled")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    assert forward_signature(archives["traced"], ModelFormat.TORCHSCRIPT).names == ["x"]
    # In a fresh interpreter: reading the names loads no torch (it runs in the web process).
    code = (
        "import sys; from compress_engine import forward_signature, ModelFormat; "
        f"s = forward_signature({str(archives['big'])!r}, ModelFormat.TORCHSCRIPT); "
        "assert s.names == ['tokens', 'scale'], s; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={"PYTHONPATH": str(WORKERS)})


def test_it_says_unknown_rather_than_guess(tmp_path, archives):
    import zipfile

    # Two unrelated module classes, neither holding the other: no single root.
    ambiguous = tmp_path / "ambiguous.pt"
    code = (
        "class {0}(Module):\n"
        "  def forward(self: __torch__.{0}, {1}: Tensor) -> Tensor:\n"
        "    return {1}\n"
    )
    with zipfile.ZipFile(ambiguous, "w") as zf:
        zf.writestr("m/code/__torch__.py", code.format("A", "a") + code.format("B", "b"))
        zf.writestr("m/constants.pkl", b"")
    assert forward_signature(ambiguous, ModelFormat.TORCHSCRIPT) is None
    broken = tmp_path / "broken.pt"
    with zipfile.ZipFile(broken, "w") as zf:
        zf.writestr("m/code/__torch__.py", "class A(Module:\n")
    assert forward_signature(broken, ModelFormat.TORCHSCRIPT) is None
    assert forward_signature(archives["traced"], ModelFormat.ONNX) is None


def test_it_refuses_a_name_forward_does_not_take_and_names_the_real_ones(archives):
    signature = forward_signature(archives["traced"], ModelFormat.TORCHSCRIPT)
    given = parse_input_shapes("input: 1x3x224x224")
    with pytest.raises(EngineError) as caught:
        name_input_shapes(signature, given, shapes_required=True)
    assert str(caught.value) == (
        "This model's forward takes `x`; you gave `input`. Use e.g. `x: 1x3x224x224`."
    )
    assert suggested_shapes(signature, given) == "x: 1x3x224x224"


def test_it_names_shapes_given_by_position_from_the_signature(archives):
    signature = forward_signature(archives["scripted"], ModelFormat.TORCHSCRIPT)
    named = name_input_shapes(signature, parse_input_shapes("1x3x8x8"), shapes_required=True)
    assert [(s.name, s.shape) for s in named] == [("x", [1, 3, 8, 8])]
    # The old `name: shape` syntax keeps working, and an optional argument may be given.
    both = parse_input_shapes("mask: 1x4\nx: 1x3x8x8")
    named = name_input_shapes(signature, both, shapes_required=True)
    assert [s.name for s in named] == ["x", "mask"]


def test_it_asks_for_every_required_input_and_no_more(archives):
    signature = forward_signature(archives["export"], ModelFormat.TORCH_EXPORT)
    # torch.export programs carry example inputs: no shapes is fine.
    assert name_input_shapes(signature, [], shapes_required=False) == []
    with pytest.raises(EngineError, match="the shape of `ids` is missing"):
        name_input_shapes(signature, parse_input_shapes("image: 1x4"), shapes_required=False)
    with pytest.raises(EngineError, match="takes `image`, `ids`, but 3 input shapes"):
        name_input_shapes(signature, parse_input_shapes("1x4; 1x4; 1x4"), shapes_required=False)
    traced = forward_signature(archives["traced"], ModelFormat.TORCHSCRIPT)
    with pytest.raises(EngineError, match=r"takes `x`, and the file does not record the shapes"):
        name_input_shapes(traced, [], shapes_required=True)


def _text_members(path: Path) -> dict[str, str]:
    """What the upload form's script sends: every text member under code/ or models/."""
    import zipfile

    with zipfile.ZipFile(path) as zf:
        return {
            i.filename: zf.read(i).decode("utf-8")
            for i in zf.infolist()
            if (i.filename.endswith(".py") and "/code/" in i.filename)
            or (i.filename.endswith(".json") and "/models/" in i.filename)
        }


@pytest.mark.parametrize("name", ["seq", "traced", "scripted", "big", "frozen", "export"])
def test_members_read_in_the_browser_give_the_same_signature_as_the_archive(archives, name):
    fmt = ModelFormat.TORCH_EXPORT if name == "export" else ModelFormat.TORCHSCRIPT
    expected = forward_signature(archives[name], fmt)
    members = _text_members(archives[name])
    assert expected is not None and members
    assert signature_from_members(members) == expected
    # Unrelated members (weights, pickles) sent along are ignored.
    assert signature_from_members({**members, "m/data.pkl": "junk"}) == expected


def test_members_that_do_not_single_out_a_signature_give_none(archives):
    code = "class A(Module):\n  def forward(self, a: Tensor) -> Tensor:\n    return a\n"
    assert signature_from_members({"m/code/__torch__.py": code}).names == ["a"]
    both = code + code.replace("A", "B").replace("a", "b")
    assert signature_from_members({"m/code/__torch__.py": both}) is None  # two roots
    assert signature_from_members({"m/code/__torch__.py": "class A(Module:\n"}) is None
    assert signature_from_members({}) is None
    assert signature_from_members({"m/data.pkl": "x"}) is None
    assert signature_from_members({"m/models/model.json": "{not json"}) is None
    assert signature_from_members({"m/models/model.json": "[]"}) is None
    # TorchScript code and a torch.export program together: not one archive's members.
    program = _text_members(archives["export"])
    assert signature_from_members({**program, "m/code/__torch__.py": code}) is None
