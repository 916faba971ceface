"""Tiny ONNX models and broken files for tests of every suite (engine, web, worker, e2e).

torch is imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import numpy as np
    import torch

BadKind = Literal["empty", "garbage", "text", "truncated", "pickle"]


def build_tiny_cnn(seed: int = 0) -> torch.nn.Module:
    """Conv-ReLU-Conv-ReLU-Flatten-Linear(1024, 64)-ReLU-Linear(64, 10) for 1x8x8 inputs."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16 * 8 * 8, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    ).eval()


def build_tiny_mlp(
    seed: int = 0, *, in_features: int = 64, hidden: int = 256, layers: int = 3, classes: int = 10
) -> torch.nn.Module:
    """Linear(in, hidden)-ReLU-[Linear(hidden, hidden)-ReLU]*(layers-1)-Linear(hidden, classes)."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    mods: list[nn.Module] = [nn.Linear(in_features, hidden), nn.ReLU()]
    for _ in range(layers - 1):
        mods += [nn.Linear(hidden, hidden), nn.ReLU()]
    mods.append(nn.Linear(hidden, classes))
    return nn.Sequential(*mods).eval()


def export_tiny_cnn(
    path: Path, *, opset: int = 17, dynamic_batch: bool = True, seed: int = 0
) -> Path:
    """A digits-sized CNN: input "input" [batch, 1, 8, 8] -> output "logits" [batch, 10]."""
    import torch

    return _export(
        build_tiny_cnn(seed),
        torch.randn(1, 1, 8, 8),
        path,
        opset=opset,
        dynamic_batch=dynamic_batch,
    )


def export_tiny_mlp(
    path: Path,
    *,
    opset: int = 17,
    dynamic_batch: bool = True,
    seed: int = 0,
    in_features: int = 64,
    hidden: int = 256,
    layers: int = 3,
) -> Path:
    """A MatMul-heavy MLP: input "input" [batch, in_features] -> output "logits" [batch, 10].

    With the defaults it holds ~150k float32 parameters (three 256-wide layers), ~600 kB.
    """
    import torch

    model = build_tiny_mlp(seed, in_features=in_features, hidden=hidden, layers=layers)
    return _export(
        model, torch.randn(1, in_features), path, opset=opset, dynamic_batch=dynamic_batch
    )


def _export(
    model: torch.nn.Module,
    example: torch.Tensor,
    path: Path,
    *,
    opset: int,
    dynamic_batch: bool,
) -> Path:
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    axes = {"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None
    with warnings.catch_warnings():
        # The legacy exporter is deprecated but ~50 ms instead of seconds for dynamo.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes=axes,
        )
    return path


def torch_parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def write_bad_model(path: Path, kind: BadKind, *, source: Path | None = None) -> Path:
    """Write a file that is not a loadable ONNX model.

    empty: 0 bytes; garbage: seeded random bytes; text: a text file; truncated: the first
    half of `source` (a valid .onnx); pickle: a pickled dict (what a torch checkpoint is).
    """
    import pickle
    import random

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(random.Random(0).randbytes(4096))
    elif kind == "text":
        path.write_text("This is not an ONNX model.\n" * 20, encoding="utf-8")
    elif kind == "truncated":
        if source is None:
            raise ValueError("truncated needs source=<a valid .onnx file>")
        data = Path(source).read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "pickle":
        path.write_bytes(pickle.dumps({"state_dict": {"weight": [1.0, 2.0]}}))
    else:
        raise ValueError(f"unknown kind {kind!r}")
    return path


def save_with_external_data(source: Path, path: Path) -> Path:
    """Re-save `source` with its weights in an external file `<name>.data` beside `path`."""
    import onnx

    path = Path(path)
    model = onnx.load(str(source))
    onnx.save(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=path.name + ".data",
        size_threshold=0,
    )
    return path


def write_conv_only_model(path: Path, *, opset: int = 17, seed: int = 0) -> Path:
    """Conv -> Relu on [batch, 1, 8, 8]: nothing for MatMul/Gemm dynamic quantization to do."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weight = numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["input", "w"], ["conv"], name="conv", pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["conv"], ["output"], name="relu"),
        ],
        "conv_only",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 4, 8, 8])],
        initializer=[weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = Path(path)
    onnx.save(model, str(path))
    return path


def write_custom_op_model(path: Path) -> Path:
    """Valid ONNX that ONNX Runtime cannot load: one node of an unknown custom-domain op."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Frobnicate", ["input"], ["output"], name="frob", domain="com.example")],
        "custom_op",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 4])],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)],
    )
    model.ir_version = 8
    path = Path(path)
    onnx.save(model, str(path))
    return path


def pattern_dataset(
    samples: int, *, seed: int = 0, classes: int = 10, noise: float = 2.5
) -> tuple[np.ndarray, np.ndarray]:
    """Separable synthetic "digits": x [samples, 1, 8, 8] float32, y [samples] int64.

    Each class is a fixed random 8x8 pattern (the same for every seed) plus Gaussian noise, so
    a tiny CNN learns it in a second or two but not perfectly.
    """
    import numpy as np

    prototypes = np.random.default_rng(1234).standard_normal((classes, 1, 8, 8))
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, size=samples)
    x = prototypes[y] + noise * rng.standard_normal((samples, 1, 8, 8))
    return x.astype(np.float32), y.astype(np.int64)


def export_trained_cnn(
    path: Path, *, opset: int = 17, samples: int = 1500, epochs: int = 5, seed: int = 0
) -> Path:
    """build_tiny_cnn trained on pattern_dataset (~1-2 s on two cores), exported to ONNX."""
    import torch

    x, y = pattern_dataset(samples, seed=seed + 100)
    model = build_tiny_cnn(seed).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(samples, generator=generator).split(64):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            loss.backward()
            optimizer.step()
    return _export(model.eval(), torch.randn(1, 1, 8, 8), path, opset=opset, dynamic_batch=True)


def export_outlier_mlp(path: Path) -> Path:
    """Three MatMul layers (mm1, mm2, mm3; input "x" [batch, 32] -> "y" [batch, 10]).

    mm2 has one outlier weight, so per-tensor int8 rounds its other weights coarsely: the most
    sensitive layer by construction. Quantize it per-tensor in tests that rely on this: a
    per-channel scale isolates the outlier's column.
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((32, 64)).astype(np.float32) * 0.2
    w2 = rng.standard_normal((64, 64)).astype(np.float32) * 0.2
    w2[0, 0] = 40.0
    w3 = rng.standard_normal((64, 10)).astype(np.float32) * 0.2
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h1"], name="mm1"),
        helper.make_node("Relu", ["h1"], ["a1"], name="relu1"),
        helper.make_node("MatMul", ["a1", "w2"], ["h2"], name="mm2"),
        helper.make_node("Relu", ["h2"], ["a2"], name="relu2"),
        helper.make_node("MatMul", ["a2", "w3"], ["y"], name="mm3"),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])],
        initializer=[
            numpy_helper.from_array(w, n) for w, n in ((w1, "w1"), (w2, "w2"), (w3, "w3"))
        ],
    )
    # onnx 1.23 defaults to IR version 14, newer than ONNX Runtime 1.31 loads (13).
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    onnx.save(model, path)
    return path


def build_conv_bn_cnn(seed: int = 0, *, width: int = 16, classes: int = 10) -> torch.nn.Module:
    """Conv-BN-ReLU-Conv-BN-ReLU-MaxPool-Flatten-Linear(.., 64)-ReLU-Linear(64, classes) for
    1x8x8 inputs; BatchNorm statistics are randomised so folding them is not a no-op."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, padding=1),
        nn.BatchNorm2d(2 * width),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(2 * width * 4 * 4, 64),
        nn.ReLU(),
        nn.Linear(64, classes),
    )
    with torch.no_grad():
        for bn in (model[1], model[4]):
            bn.running_mean.normal_(0.0, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_(0.0, 0.1)
    return model.eval()


def export_conv_bn_cnn(
    path: Path, *, opset: int = 17, dynamic_batch: bool = True, seed: int = 0
) -> Path:
    """build_conv_bn_cnn exported: input "input" [batch, 1, 8, 8] -> "logits" [batch, 10]."""
    import torch

    return _export(
        build_conv_bn_cnn(seed),
        torch.randn(1, 1, 8, 8),
        path,
        opset=opset,
        dynamic_batch=dynamic_batch,
    )


def export_two_input_mlp(path: Path, *, opset: int = 17, seed: int = 0) -> Path:
    """Two inputs "a" [batch, 16] and "b" [batch, 8], summed after a Linear each, then a
    Linear head: output "logits" [batch, 5]."""
    import torch
    from torch import nn

    class TwoInputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.left = nn.Linear(16, 32)
            self.right = nn.Linear(8, 32)
            self.head = nn.Linear(32, 5)

        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return self.head(torch.relu(self.left(a) + self.right(b)))

    torch.manual_seed(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    axes = {"a": {0: "batch"}, "b": {0: "batch"}, "logits": {0: "batch"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            TwoInputs().eval(),
            (torch.randn(1, 16), torch.randn(1, 8)),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=["a", "b"],
            output_names=["logits"],
            dynamic_axes=axes,
        )
    return path


def digits_dataset(*, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1797 handwritten 8x8 digits, shuffled with `seed` and standardised:
    x [1797, 1, 8, 8] float32, y [1797] int64 (classes 0-9)."""
    import numpy as np
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0 - 0.3) / 0.4
    order = np.random.default_rng(seed).permutation(len(x))
    return x[order, None].astype(np.float32), digits.target[order].astype(np.int64)


def export_digits_teacher(
    path: Path,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int = 4,
    seed: int = 0,
    opset: int = 17,
    dynamic_batch: bool = True,
) -> Path:
    """build_conv_bn_cnn trained on (x, y) with Adam (~0.3 s on two cores for 1000 digits and
    4 epochs: ~97% top-1 on held-out digits), exported like export_conv_bn_cnn (with batch
    dimension 1 when not `dynamic_batch`)."""
    import torch

    model = build_conv_bn_cnn(seed).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(xt), generator=generator).split(64):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            loss.backward()
            optimizer.step()
    return _export(
        model.eval(), torch.randn(1, 1, 8, 8), path, opset=opset, dynamic_batch=dynamic_batch
    )


def damage_weights(source: Path, path: Path, *, noise: float = 0.5, seed: int = 0) -> Path:
    """Copy of `source` with Gaussian noise added to every float weight of rank >= 2 (noise
    times that tensor's standard deviation): same graph, worse model."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    rng = np.random.default_rng(seed)
    model = onnx.load(str(source))
    for init in model.graph.initializer:
        w = numpy_helper.to_array(init)
        if w.ndim >= 2 and w.dtype == np.float32:
            damaged = w + noise * float(w.std()) * rng.standard_normal(w.shape)
            init.CopyFrom(numpy_helper.from_array(damaged.astype(np.float32), init.name))
    path = Path(path)
    onnx.save(model, str(path))
    return path


def write_det_model(path: Path) -> Path:
    """x [1, 9] -> y [1, 1]: the determinant of x as a 3x3 matrix. ONNX Runtime runs it; TFLite
    has no builtin for it (onnx2tf maps it to TensorFlow's MatrixDeterminant, a Flex op)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [
            helper.make_node("Reshape", ["x", "shape"], ["m"]),
            helper.make_node("Det", ["m"], ["d"]),
            helper.make_node("Unsqueeze", ["d", "axis"], ["y"]),
        ],
        "det",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 9])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])],
        initializer=[
            numpy_helper.from_array(np.array([1, 3, 3], dtype=np.int64), "shape"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axis"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def export_torch_model(
    model: torch.nn.Module, example: torch.Tensor, path: Path, *, opset: int = 17
) -> Path:
    """Any eval-mode module with one input "input" and one output "output", fixed shapes.

    Exported with gradients on: an eval TransformerEncoderLayer under no_grad takes a fused
    fast path the exporter cannot trace.
    """
    import torch

    torch.onnx.export(
        model.eval(),
        (example,),
        str(path),
        input_names=["input"],
        output_names=["output"],
        opset_version=opset,
        dynamo=False,
    )
    return path


def save_x_torchscript(path: Path) -> Path:
    """A traced TorchScript module whose forward takes `x` (as most hand-written models do):
    Conv2d(3, 4, 3) then a spatial mean, traced on [1, 3, 8, 8]."""
    import torch

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return self.conv(x).mean((2, 3))

    torch.jit.save(torch.jit.trace(Net().eval(), torch.randn(1, 3, 8, 8)), path)
    return path


def save_graph(graph: Any, path: Path | str, opset: int = 17) -> Path:
    """A hand-built onnx.GraphProto saved as a checked model at `opset`, with IR version 8
    (what every ONNX Runtime the engine supports loads)."""
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = Path(path)
    onnx.save(model, str(path))
    return path
