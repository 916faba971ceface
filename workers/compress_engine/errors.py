"""The one user-facing error type of the engine."""

from __future__ import annotations


class EngineError(Exception):
    """A problem the user can act on: a bad file, an invalid recipe, an unsupported model.

    The message is shown verbatim in the web UI and the CLI, so it must say what went wrong
    and, where possible, what to do about it. Internal bugs propagate as other exceptions.
    """


def short_message(exc: BaseException, limit: int = 600) -> str:
    """An exception's message on one line, cut to `limit` characters, for user-facing errors."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
