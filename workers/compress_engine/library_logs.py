"""Library warnings, one line each: what ONNX Runtime, onnx and torch log or warn during a run
is counted, not printed, and summarised at the end as one line per kind with its count.

ONNX Runtime's quantizer logs through the root logger (`logging.warning(...)`), once per
tensor and per quantization: a search that quantizes a model fifty times repeats the same
few warnings hundreds or thousands of times, in the worker's job log and on the CLI's stderr
(the root logger's first warning installs a stderr handler when nothing is configured). A
kind is the place in the library that warned (file and line), so "failed to infer the type
of tensor 'a'" and "... 'b'" are one kind. The summary is logged by LIBRARY_LOGGER at the
highest level the kind reached; the CLI silences that logger with -q.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

LIBRARY_LOGGER = "compress_engine.library"
# Loggers of our own code: never swallowed.
_OURS = ("compress_engine", "jobrunner")
# Longest message text quoted in a summary line.
_MAX_TEXT = 300


@dataclass
class _Kind:
    level: int
    text: str
    source: str
    count: int = 0


@dataclass
class LibraryMessages:
    """Counts library log records and warnings by where they came from."""

    kinds: dict[tuple[str, int, str], _Kind] = field(default_factory=dict)

    def add(self, level: int, text: str, source: str, where: tuple[str, int]) -> None:
        key = (*where, source)
        kind = self.kinds.get(key)
        if kind is None:
            kind = self.kinds[key] = _Kind(level, " ".join(text.split())[:_MAX_TEXT], source)
        kind.level = max(kind.level, level)
        kind.count += 1

    def lines(self) -> list[tuple[int, str]]:
        """(level, line) per kind, in the order they first appeared."""
        out = []
        for kind in self.kinds.values():
            times = "once" if kind.count == 1 else f"{kind.count:,} times"
            said = "warned" if kind.level >= logging.WARNING else "logged"
            out.append((kind.level, f"{kind.source} {said} {times}: {kind.text}"))
        return out


class _Catch(logging.Filter):
    """On the root logger and its handlers: counts library records and drops them."""

    def __init__(self, sink: LibraryMessages, floor: int) -> None:
        super().__init__()
        self.sink, self.floor = sink, floor

    def filter(self, record: logging.LogRecord) -> bool:
        if not _from_library(record.name):
            return True
        if not getattr(record, "_library_counted", False):
            record._library_counted = True
            if record.levelno >= self.floor:
                where = (record.pathname, record.lineno)
                self.sink.add(record.levelno, record.getMessage(), _source(record), where)
        return False


class _Fallback(logging.Handler):
    """Stands in while the root logger has no handler of its own, so a library's
    `logging.warning` finds one and does not install a stderr handler (basicConfig); our own
    records go where they would have gone: Python's last-resort handler."""

    def emit(self, record: logging.LogRecord) -> None:
        last = logging.lastResort
        if last is not None and record.levelno >= last.level:
            last.handle(record)


@contextlib.contextmanager
def aggregated_library_logs() -> Iterator[LibraryMessages]:
    """Within: library records and warnings are counted, not shown. After: one summary line
    per kind on LIBRARY_LOGGER."""
    sink = LibraryMessages()
    root = logging.getLogger()
    catch = _Catch(sink, root.getEffectiveLevel())
    fallback = _Fallback() if not root.handlers else None
    if fallback is not None:
        root.addHandler(fallback)
    # Root's handlers, and those a library gave its own logger (they see its records first).
    handlers = list(root.handlers) + [
        h
        for logger in list(logging.root.manager.loggerDict.values())
        if isinstance(logger, logging.Logger) and _from_library(logger.name)
        for h in logger.handlers
    ]
    root.addFilter(catch)
    for handler in handlers:
        handler.addFilter(catch)
    ort = _quiet_onnxruntime()
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _counting_showwarning(sink)
            yield sink
    finally:
        root.removeFilter(catch)
        for handler in handlers:
            handler.removeFilter(catch)
        if fallback is not None:
            root.removeHandler(fallback)
        if ort is not None:
            ort.set_default_logger_severity(_ORT_WARNING)
        log = logging.getLogger(LIBRARY_LOGGER)
        for level, line in sink.lines():
            log.log(level, line)


def _counting_showwarning(sink: LibraryMessages) -> Any:
    original = warnings.showwarning

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: Any = None, line: str | None = None) -> None:  # fmt: skip
        if any(f"/{ours}/" in filename.replace("\\", "/") for ours in _OURS):
            original(message, category, filename, lineno, file, line)
            return
        text = f"{category.__name__}: {message}"
        sink.add(logging.WARNING, text, _package(filename), (filename, lineno))

    return show


# ONNX Runtime's native logger: warnings (2) by default; errors only (3) during a run, since
# its C++ messages go straight to stderr where they cannot be counted. Sessions the engine
# creates already ask for errors only (measure/runtime.py); this covers the quantizer's own.
_ORT_WARNING, _ORT_ERROR = 2, 3


def _quiet_onnxruntime() -> ModuleType | None:
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    ort.set_default_logger_severity(_ORT_ERROR)
    return ort


def _from_library(name: str) -> bool:
    return not any(name == ours or name.startswith(ours + ".") for ours in _OURS)


def _source(record: logging.LogRecord) -> str:
    """The library's name: its logger's top package, or (root logger) the file's package."""
    if record.name not in ("root", "py.warnings"):
        return record.name.split(".")[0]
    return _package(record.pathname)


def _package(path: str) -> str:
    parts = path.replace("\\", "/").split("/")
    if "site-packages" in parts:
        index = parts.index("site-packages")
        if index + 1 < len(parts):
            return parts[index + 1].removesuffix(".py")
    return "a library"
