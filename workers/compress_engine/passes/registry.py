"""Passes register here by name; the web UI lists them without importing heavy frameworks."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel

from compress_engine.errors import EngineError
from compress_engine.passes.base import Pass, PassInfo

_REGISTRY: dict[str, type[Pass]] = {}

P = TypeVar("P", bound=type[Pass])


def register(cls: P) -> P:
    """Class decorator: make a pass available under `cls.info.name`."""
    name = cls.info.name
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"a pass named {name!r} is already registered")
    _REGISTRY[name] = cls
    return cls


def list_passes() -> list[PassInfo]:
    return [cls.info for cls in _REGISTRY.values()]


def get_pass(name: str) -> type[Pass]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise EngineError(
            f"Unknown technique {name!r}; available: {', '.join(_REGISTRY)}"
        ) from None


def pass_for_step(step: BaseModel) -> Pass:
    """The pass instance that implements one recipe step (a single-key step model)."""
    ((kind, config),) = ((k, getattr(step, k)) for k in type(step).model_fields)
    for cls in _REGISTRY.values():
        if cls.info.step == kind and cls.accepts(config):
            return cls(config)
    mode = getattr(config, "mode", None)
    label = f"{kind} (mode {mode})" if mode else kind
    raise EngineError(f"No technique implements the step {label} in this engine version.")
