"""Which layer of a rebuilt module a torch error came from, said as a user can act on it.

A forward pass over a module rebuilt from ONNX fails with torch's own words ("Given groups=1,
weight of size [4, 1, 1, 1], expected input[1, 2, 1, 1] to have 1 channels"), which name no
layer and read as a bug. While `layer_errors` is active, every submodule records entering and
leaving it, so the innermost one still entered when the error is raised is the layer that
failed; the error becomes an EngineError naming it (by its ONNX node name) and what to do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from compress_engine.errors import EngineError, short_message

if TYPE_CHECKING:
    from torch import nn


@dataclass
class LayerTrace:
    """Submodule names entered and not yet left, innermost last."""

    stack: list[str] = field(default_factory=list)
    failed: str | None = None  # the innermost layer entered when the last error was raised

    def enter(self, name: str) -> Callable[..., None]:
        def hook(_module: Any, _inputs: Any) -> None:
            self.stack.append(name)

        return hook

    def leave(self, name: str) -> Callable[..., None]:
        def hook(_module: Any, _inputs: Any, _output: Any) -> None:
            if self.stack and self.stack[-1] == name:
                self.stack.pop()

        return hook


class LayerFailure(EngineError):
    """An EngineError raised for a failure inside one layer (`layer`: its module name)."""

    def __init__(self, message: str, layer: str | None) -> None:
        super().__init__(message)
        self.layer = layer


@contextmanager
def traced(module: nn.Module) -> Iterator[LayerTrace]:
    """Record which submodule of `module` is running; hooks are removed on exit."""
    trace = LayerTrace()
    handles = []
    for name, sub in module.named_modules():
        if sub is module:
            continue
        handles.append(sub.register_forward_pre_hook(trace.enter(name)))
        handles.append(sub.register_forward_hook(trace.leave(name)))
    try:
        yield trace
    except BaseException:
        trace.failed = trace.stack[-1] if trace.stack else None
        raise
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def layer_errors(
    module: nn.Module, names: Mapping[str, str], what: str, todo: str
) -> Iterator[LayerTrace]:
    """Turn a torch error raised inside `module` into a LayerFailure (an EngineError):
    "{what} fails at layer '<ONNX node>' (<kind>): <torch's message>. {todo}"."""
    try:
        with traced(module) as trace:
            yield trace
    except EngineError:
        raise
    except (RuntimeError, ValueError, IndexError, AssertionError, TypeError) as exc:
        raise failure(exc, module, trace.failed, names, what, todo) from None


def failure(
    exc: BaseException,
    module: nn.Module,
    layer: str | None,
    names: Mapping[str, str],
    what: str,
    todo: str,
) -> LayerFailure:
    """The LayerFailure for `exc` raised in `layer` (a module name of `module`, or None)."""
    import torch

    cause = _cause(exc)
    if isinstance(exc, torch.OutOfMemoryError):
        todo = "Give the worker more memory, or use smaller input shapes or batch_size."
    where = "" if layer is None else f" at layer {describe(module, layer, names)}"
    return LayerFailure(f"{what} fails{where}: {cause}. {todo}".strip(), layer)


def describe(module: nn.Module, layer: str, names: Mapping[str, str]) -> str:
    """`'/se/expand/Conv' (Conv2d 8 -> 32 channels)`: the ONNX node name and what it is."""
    from torch import nn

    sub = module.get_submodule(layer)
    kind = type(sub).__name__.removeprefix("Onnx")
    if isinstance(sub, nn.modules.conv._ConvNd):
        groups = f", {sub.groups} groups" if sub.groups > 1 else ""
        kind = f"{kind} {sub.in_channels} -> {sub.out_channels} channels{groups}"
    elif isinstance(sub, nn.Linear):
        kind = f"{kind} {sub.in_features} -> {sub.out_features} features"
    return f"{names.get(layer, layer)!r} ({kind})"


def _cause(exc: BaseException) -> str:
    # torch.fx appends "While executing %node ..." and a traceback hint after a blank line.
    text = str(exc).split("\n\nWhile executing")[0].strip()
    return short_message(RuntimeError(text)) if text else type(exc).__name__
