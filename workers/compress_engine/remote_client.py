"""The HTTP side of the `modelpress` server commands: saved credentials and an authenticated
client for a ModelPress server's REST API (/api/v1/).

Standard library only (urllib), so the CLI needs nothing beyond the engine's own
dependencies; no Django. Uploads stream the file in the multipart body and downloads stream
to disk: neither is ever held whole in memory.
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
import os
import secrets
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from email.message import Message
from http.client import HTTPResponse
from pathlib import Path
from typing import Any

from compress_engine.errors import EngineError

CONFIG_DIR_ENV = "MODELPRESS_CONFIG_DIR"
SERVER_ENV = "MODELPRESS_SERVER"
TOKEN_ENV = "MODELPRESS_TOKEN"
API_PATH = "/api/v1"
_CHUNK = 1024 * 1024


class RemoteError(EngineError):
    """The server could not be reached or refused the request; the message says what to do."""


# --- credentials --------------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    server: str
    token: str


def config_dir() -> Path:
    if os.environ.get(CONFIG_DIR_ENV):
        return Path(os.environ[CONFIG_DIR_ENV])
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "modelpress"


def credentials_path() -> Path:
    return config_dir() / "credentials.json"


def save_credentials(credentials: Credentials) -> Path:
    """Write {server, token} readable by the user only (0600, also when the file existed)."""
    path = credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    # Created 0600 from the start: the token is never readable by others, not even briefly.
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump({"server": credentials.server, "token": credentials.token}, handle, indent=2)
    os.replace(temporary, path)
    path.chmod(0o600)
    return path


def load_credentials() -> Credentials:
    """MODELPRESS_SERVER / MODELPRESS_TOKEN where set, else what `modelpress login` saved."""
    saved: dict[str, Any] = {}
    path = credentials_path()
    if path.exists():
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RemoteError(f"Cannot read {path}: {exc}. Run `modelpress login` again.") from None
    server = os.environ.get(SERVER_ENV) or saved.get("server")
    token = os.environ.get(TOKEN_ENV) or saved.get("token")
    if not server or not token:
        raise RemoteError(
            "Not logged in: run `modelpress login --server URL` first (or set "
            f"{SERVER_ENV} and {TOKEN_ENV})."
        )
    return Credentials(normalize_server(str(server)), str(token))


def normalize_server(url: str) -> str:
    """`host:8000`, `http://host:8000/` or `.../api/v1` -> `http://host:8000`."""
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = f"http://{url}"
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise RemoteError(f"{url!r} is not a server address; give e.g. https://modelpress.example")
    path = parts.path.rstrip("/")
    if path.endswith(API_PATH):
        path = path[: -len(API_PATH)]
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))


# --- HTTP ---------------------------------------------------------------------------------


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect would resend the token to wherever it points (urllib keeps the
    Authorization header across hosts); refuse and name the address instead."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        raise RemoteError(
            f"The server redirected {req.full_url} to {newurl}. If the address changed (say, "
            "to https), run `modelpress login --server` with the new one."
        )


_opener = urllib.request.build_opener(_NoRedirect)


class Client:
    """Authenticated requests to one server's API; errors become RemoteError."""

    def __init__(self, server: str, token: str, *, timeout: float = 60.0) -> None:
        self.server = normalize_server(server)
        self.token = token
        self.timeout = timeout

    @classmethod
    def from_credentials(cls) -> Client:
        credentials = load_credentials()
        return cls(credentials.server, credentials.token)

    def url(self, path: str) -> str:
        parts = urllib.parse.urlsplit(self.server)
        if path.startswith(f"{parts.path}{API_PATH}/"):
            # A path the API handed out (download_url): it already has the site's prefix.
            return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))
        return f"{self.server}{API_PATH}{path}"

    def open(
        self,
        method: str,
        path: str,
        *,
        data: bytes | Iterable[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> HTTPResponse:
        request = urllib.request.Request(
            self.url(path),
            data=data,  # type: ignore[arg-type]
            method=method,
            headers={
                "Authorization": f"Bearer {self.token}",
                "Accept": "application/json",
                "User-Agent": "modelpress-cli",
                **(headers or {}),
            },
        )
        try:
            return _opener.open(request, timeout=timeout or self.timeout)  # type: ignore[no-any-return]
        except urllib.error.HTTPError as exc:
            raise RemoteError(self._refusal(exc)) from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, ConnectionRefusedError):
                raise RemoteError(
                    f"Cannot connect to {self.server}: connection refused. Is the server "
                    "running, and is the address right?"
                ) from None
            raise RemoteError(f"Cannot reach {self.server}: {reason}.") from None
        except TimeoutError:
            raise RemoteError(
                f"{self.server} did not answer within {self.timeout:.0f} s."
            ) from None
        except ConnectionError as exc:
            raise RemoteError(f"The connection to {self.server} failed: {exc}.") from None

    def _refusal(self, exc: urllib.error.HTTPError) -> str:
        detail = _detail(exc)
        if exc.code == 401:
            return (
                f"The server refused the token (401): {detail} Create a new token under "
                f"Profile → API tokens on {self.server} and run `modelpress login` again."
            )
        if exc.code == 404:
            return f"Not found (404): {detail}"
        if exc.code >= 500:
            return (
                f"The server failed ({exc.code}) on {exc.url}; this is a server problem, not "
                "your input. Try again, or ask the server's administrator to check its log."
            )
        return f"The server refused the request ({exc.code}): {detail}"

    def json(self, method: str, path: str, payload: Any = None, **kwargs: Any) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        with self.open(method, path, data=data, headers=headers, **kwargs) as response:
            return _read_json(response)

    def get(self, path: str) -> Any:
        return self.json("GET", path)

    def upload(self, path: str, file: Path, fields: Mapping[str, str]) -> Any:
        """POST `file` (and text `fields`) as multipart/form-data, streamed from disk."""
        content_type, length, body = multipart_body(file, fields)
        headers = {"Content-Type": content_type, "Content-Length": str(length)}
        # The server checks, hashes and stores the file before it answers: allow time.
        with self.open("POST", path, data=body, headers=headers, timeout=900) as response:
            return _read_json(response)

    def download(self, path: str, folder: Path, *, fallback_name: str) -> Path:
        """Stream a file into `folder` under the name the server gives (or `fallback_name`);
        written under a temporary name and renamed, so a broken transfer leaves no file."""
        with self.open("GET", path, timeout=300) as response:
            name = _attachment_name(response) or fallback_name
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / name
            partial = folder / f".{name}.part"
            try:
                with partial.open("wb") as handle:
                    while chunk := response.read(_CHUNK):
                        handle.write(chunk)
                os.replace(partial, target)
            finally:
                partial.unlink(missing_ok=True)
        return target


def _read_json(response: HTTPResponse) -> Any:
    raw = response.read()
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        raise RemoteError(
            f"The server's answer is not JSON; is {response.url} a ModelPress server?"
        ) from None


def _detail(exc: urllib.error.HTTPError) -> str:
    """The API's `detail` message, or the start of whatever else the server sent."""
    try:
        raw = exc.read(64 * 1024)
    except OSError:
        raw = b""
    try:
        detail = json.loads(raw).get("detail")
    except (ValueError, AttributeError):
        detail = None
    if isinstance(detail, str) and detail:
        return detail
    text = " ".join(raw.decode(errors="replace").split())[:200]
    return text or exc.reason or "no details"


def _attachment_name(response: HTTPResponse) -> str | None:
    header = response.headers.get("Content-Disposition")
    if not header:
        return None
    message = Message()
    message["Content-Disposition"] = header
    name = message.get_filename()
    if not name:
        return None
    # Only a bare file name: never a path the server (or anyone in between) chose.
    name = Path(name.replace("\\", "/")).name
    return None if name in ("", ".", "..") else name


def multipart_body(file: Path, fields: Mapping[str, str]) -> tuple[str, int, Iterator[bytes]]:
    """(content type, exact length, chunks) of a multipart/form-data body with the text
    `fields` and `file` as the part named `file`. The length is known up front (servers
    behind WSGI do not take chunked request bodies), and the file is read chunk by chunk."""
    boundary = f"modelpress-{secrets.token_hex(16)}"
    head = b""
    for name, value in fields.items():
        head += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
            + value.encode()
            + b"\r\n"
        )
    filename = file.name.replace('"', "_").replace("\r", "_").replace("\n", "_")
    disposition = f'form-data; name="file"; filename="{filename}"'
    if not filename.isascii():
        ascii_name = filename.encode("ascii", "replace").decode().replace("?", "_")
        quoted = urllib.parse.quote(filename)
        disposition = (
            f'form-data; name="file"; filename="{ascii_name}"; filename*=UTF-8\'\'{quoted}'
        )
    media_type = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
    head += (
        f"--{boundary}\r\nContent-Disposition: {disposition}\r\nContent-Type: {media_type}\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    size = file.stat().st_size

    def chunks() -> Iterator[bytes]:
        yield head
        sent = 0
        with file.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                sent += len(chunk)
                yield chunk
        if sent != size:
            raise RemoteError(f"{file} changed while it was being uploaded; upload it again.")
        yield tail

    return f"multipart/form-data; boundary={boundary}", len(head) + size + len(tail), chunks()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
