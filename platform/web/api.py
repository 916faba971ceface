"""What every router of the REST API (/api/v1/, assembled in config/api.py) shares: the two
ways to authenticate, the error body, list pagination and text-field checks.

Routers stay thin like the views: they look objects up through the apps' access helpers and
call the apps' services; errors those raise become JSON in config/api.py's handlers.
"""

from __future__ import annotations

from typing import Annotated, Any

from django.http import HttpRequest
from ninja import Field, Schema
from ninja.pagination import LimitOffsetPagination
from ninja.security import HttpBearer
from pydantic import AfterValidator

from accounts.models import User
from accounts.tokens import authenticate_token


class TokenAuth(HttpBearer):
    """`Authorization: Bearer mp_...`: a personal API token (Profile → API tokens)."""

    def authenticate(self, request: HttpRequest, token: str) -> User | None:
        user = authenticate_token(token.strip())
        if user is not None:
            # Services and the audit log read the acting user from the request.
            request.user = user
        return user


def acting_user(request: HttpRequest) -> User:
    """The user the request's token or session authenticated."""
    return request.auth  # type: ignore[attr-defined,no-any-return]


class ErrorOut(Schema):
    detail: str = Field(description="What went wrong, in words for the user.")


class ValidationErrorOut(Schema):
    detail: str = Field(description="Every problem with the request, in one message.")
    errors: list[dict[str, Any]] = Field(description="The same problems, one entry per field.")


# The error statuses any authenticated route can answer, for the OpenAPI document.
READ_ERRORS: dict[int, type[Schema]] = {401: ErrorOut, 404: ErrorOut, 422: ValidationErrorOut}
WRITE_ERRORS: dict[int, type[Schema]] = {**READ_ERRORS, 400: ErrorOut, 403: ErrorOut}


class Pagination(LimitOffsetPagination):
    """`?limit=&offset=` with both bounded: an unbounded offset reaches the database as a
    number PostgreSQL refuses (a 500 instead of a clear 422)."""

    class Input(Schema):
        limit: int = Field(50, ge=1, le=200, description="Items per page (at most 200).")
        offset: int = Field(0, ge=0, le=2**31 - 1, description="Items to skip.")


def refuse_nul(value: Any) -> Any:
    """`value` unchanged, unless a string in it (or a key) holds NUL: PostgreSQL text and
    jsonb cannot store one, and refusing it here makes a 422 instead of a database error."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("must not contain NUL characters")
    elif isinstance(value, dict):
        for key, item in value.items():
            refuse_nul(key)
            refuse_nul(item)
    elif isinstance(value, list | tuple):
        for item in value:
            refuse_nul(item)
    return value


SafeText = Annotated[str, AfterValidator(refuse_nul)]
