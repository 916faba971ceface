"""Input shapes given by hand: `input: 1x3x224x224`, `ids: 1x128 int64`, or just `1x3x32x32`.

TorchScript files carry no input shapes, so the upload form asks for them in this syntax; the
same text works in the CLI. Imports nothing heavy: the web app validates the form with it.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, Field

from compress_engine.errors import EngineError

DTYPES = ("float32", "float16", "float64", "int64", "int32", "int8", "uint8", "bool")
# A random example input larger than this (elements) is almost surely a typo, and would
# exhaust the worker's memory before the converter says anything useful.
MAX_ELEMENTS = 1 << 27
EXAMPLE = "input: 1x3x224x224 (several inputs on separate lines; add a dtype such as int64)"

_ENTRY = re.compile(
    r"^(?:(?P<name>[A-Za-z_][\w.:/-]*)\s*[:=]\s*)?"
    r"(?:\[(?P<listed>\d+(?:\s*,\s*\d+)*)\]|(?P<dims>\d+(?:\s*[x×*]\s*\d+)*))"
    r"(?:\s+(?P<dtype>[a-z0-9]+))?$"
)
# Entries end at a new line, a semicolon, or a comma outside [brackets].
_SEPARATOR = re.compile(r"[\n;]+|,(?![^\[]*\])")


class InputSpec(BaseModel):
    """One input of a model to convert: its name (None = by position), shape and dtype."""

    name: str | None = Field(default=None, description="Input name; None means by position.")
    shape: list[int] = Field(description="Concrete dimensions, e.g. [1, 3, 224, 224].")
    dtype: str = Field(default="float32", description="numpy dtype name of the input.")

    def label(self) -> str:
        dims = "x".join(map(str, self.shape))
        text = f"{self.name}: {dims}" if self.name else dims
        return text if self.dtype == "float32" else f"{text} {self.dtype}"


def parse_input_shapes(text: str) -> list[InputSpec]:
    """Parse the hand-written shapes; EngineError says which entry is wrong and shows the syntax.

    Entries are separated by new lines, semicolons or commas; dims by `x`, or by commas
    inside brackets (`[1, 3, 224, 224]`)."""
    text = (text or "").strip()
    if not text:
        return []
    parts = [p.strip() for p in _SEPARATOR.split(text) if p.strip()]
    specs: list[InputSpec] = []
    for part in parts:
        match = _ENTRY.match(part)
        if match is None:
            raise EngineError(f"Cannot read the input shape {_cut(part)!r}. Write e.g. {EXAMPLE}.")
        raw = re.split(r"\s*[x×*,]\s*", match["listed"] or match["dims"])
        if any(len(d) > len(str(MAX_ELEMENTS)) for d in raw):
            # Before int(): Python refuses to convert numbers of over 4,300 digits at all.
            raise EngineError(
                f"The input shape {_cut(part)!r} has a dimension of more than "
                f"{MAX_ELEMENTS:,}; one example input may have at most {MAX_ELEMENTS:,} elements."
            )
        dims = [int(d) for d in raw]
        if any(d <= 0 for d in dims):
            raise EngineError(
                f"The input shape {_cut(part)!r} has a zero dimension; use sizes of 1 or more."
            )
        elements = 1
        for d in dims:
            elements *= d
        if elements > MAX_ELEMENTS:
            raise EngineError(
                f"The input shape {_cut(part)!r} has {elements:,} elements; one example input may "
                f"have at most {MAX_ELEMENTS:,}. Use batch size 1."
            )
        dtype = match["dtype"] or "float32"
        if dtype not in DTYPES:
            raise EngineError(
                f"Unknown dtype {dtype!r} in {_cut(part)!r}; use one of {', '.join(DTYPES)}."
            )
        specs.append(InputSpec(name=match["name"], shape=dims, dtype=dtype))
    names = [s.name for s in specs]
    if any(names) and not all(names):
        raise EngineError("Name every input shape or none of them (then they go by position).")
    if len({n for n in names if n}) != len([n for n in names if n]):
        raise EngineError("An input is named twice in the input shapes.")
    return specs


def _cut(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
