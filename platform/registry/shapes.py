"""Dynamic input dims a model version leaves open, and the concrete values chosen for them.

The engine fills a dynamic leading dim with the batch size by itself, and any other dynamic
dim with a guess (compress_engine.measure.inputs.DEFAULT_DYNAMIC_DIM) that is often wrong
(an image side, a sequence length). The version page asks for those once; the values are
stored on ModelVersion.input_shapes, with null for the batch dim.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from compress_engine import TensorInfo, batch_symbols

MAX_DIM = 1_000_000


class ShapesRejected(ValueError):
    """A value for a dynamic dim is missing or out of range; the message says which."""


@dataclass
class OpenDim:
    """One dynamic dim to choose: a named symbol (shared by every input that uses it) or
    one unnamed axis of one input."""

    key: str  # form field name
    symbol: str | None
    places: list[tuple[str, int]] = field(default_factory=list)  # (input name, axis)
    value: int | None = None

    @property
    def label(self) -> str:
        where = ", ".join(f"{name}[{axis}]" for name, axis in self.places)
        return f"{self.symbol} ({where})" if self.symbol else where


def _infos(version) -> list[TensorInfo]:
    return [TensorInfo.model_validate(t) for t in version.inputs]


def dims_to_ask(version) -> list[OpenDim]:
    """The version's dynamic dims other than the batch, with any value already chosen. The
    batch rule is the engine's (compress_engine.batch_symbols): a symbol leading some input or
    named like a batch, or an unnamed leading dim, is the batch."""
    infos = _infos(version)
    batch = batch_symbols(infos)
    chosen = version.input_shapes or {}
    dims: dict[str, OpenDim] = {}
    for t in infos:
        if not t.rank_known:
            continue
        for axis, dim in enumerate(t.shape):
            if isinstance(dim, int) and dim > 0:
                continue
            if isinstance(dim, str):
                if dim in batch:
                    continue
                group = f"symbol:{dim}"
            elif axis == 0:
                continue
            else:
                group = f"axis:{t.name}:{axis}"
            if group not in dims:
                dims[group] = OpenDim(
                    key=f"dim_{len(dims)}", symbol=dim if isinstance(dim, str) else None
                )
            dims[group].places.append((t.name, axis))
            current = chosen.get(t.name)
            if current and axis < len(current) and isinstance(current[axis], int):
                dims[group].value = current[axis]
    return list(dims.values())


def unknown_rank_inputs(version) -> list[str]:
    return [t.name for t in _infos(version) if not t.rank_known]


def shapes_from_values(version, values: dict[str, int]) -> dict[str, list[int | None]]:
    """ModelVersion.input_shapes from a value per OpenDim key: every open dim needs one."""
    dims = dims_to_ask(version)
    if not dims:
        raise ShapesRejected("This model has no dynamic input dims to set.")
    by_place: dict[tuple[str, int], int] = {}
    for dim in dims:
        value = values.get(dim.key)
        if not isinstance(value, int) or not 1 <= value <= MAX_DIM:
            raise ShapesRejected(f"Give {dim.label} a size between 1 and {MAX_DIM:,}.")
        for place in dim.places:
            by_place[place] = value
    shapes: dict[str, list[int | None]] = {}
    for t in _infos(version):
        if not any(name == t.name for name, _ in by_place):
            continue
        shapes[t.name] = [
            by_place.get((t.name, axis), dim if isinstance(dim, int) and dim > 0 else None)
            for axis, dim in enumerate(t.shape)
        ]
    return shapes
