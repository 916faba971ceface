"""The one base class of the platform's refusals (a service saying no to a request)."""

from __future__ import annotations


class Rejected(Exception):
    """A request refused for a reason the user can act on; the message is shown to them.

    `status` is the HTTP status the API answers with (config.api): 400 unless the refusal
    says otherwise, e.g. a quota (413) or too many jobs at once (429, try again later).
    """

    status: int = 400

    def __init__(self, message: str = "", *, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status
