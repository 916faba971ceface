"""The `modelpress` commands that talk to a ModelPress server's REST API (/api/v1/): login,
projects, upload, submit, status and download.

Standard library only (urllib), so the CLI needs nothing beyond the engine's own
dependencies; no Django. Uploads stream the file in the multipart body and downloads stream
to disk: neither is ever held whole in memory.
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import json
import mimetypes
import os
import secrets
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from email.message import Message
from http.client import HTTPResponse
from pathlib import Path
from typing import Any, TextIO
from uuid import UUID

from compress_engine.errors import EngineError
from compress_engine.formatting import human_bytes

CONFIG_DIR_ENV = "MODELPRESS_CONFIG_DIR"
SERVER_ENV = "MODELPRESS_SERVER"
TOKEN_ENV = "MODELPRESS_TOKEN"
API_PATH = "/api/v1"
# A failed or cancelled job: distinct from 1 (internal error) and 2 (a problem to fix in the
# command), so scripts can tell "the job failed" from "the command was wrong".
EXIT_JOB_FAILED = 3
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
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


# --- commands -----------------------------------------------------------------------------


def _teams_text(me: Mapping[str, Any]) -> str:
    return ", ".join(f"{t['name']} ({t['role']})" for t in me.get("teams", [])) or "none"


def cmd_login(args: argparse.Namespace) -> int:
    if not (args.server or os.environ.get(SERVER_ENV)):
        raise RemoteError("Give the server's address: modelpress login --server URL.")
    server = normalize_server(args.server or os.environ[SERVER_ENV])
    token = (args.token or os.environ.get(TOKEN_ENV) or "").strip()
    if not token:
        token = getpass.getpass(f"API token (create one under Profile → API tokens on {server}): ")
        token = token.strip()
    if not token:
        raise RemoteError("No token given.")
    host = urllib.parse.urlsplit(server).hostname or ""
    if server.startswith("http://") and host not in ("localhost", "127.0.0.1", "::1"):
        print(
            f"warning: {server} is plain http: the token travels unencrypted; use https.",
            file=sys.stderr,
        )
    me = Client(server, token).get("/me")
    path = save_credentials(Credentials(server, token))
    print(f"Logged in to {server} as {me['username']} (teams: {_teams_text(me)}).")
    print(f"Credentials saved to {path} (readable by you only).", file=sys.stderr)
    return 0


def _all_pages(client: Client, path: str) -> Iterator[dict[str, Any]]:
    offset = 0
    while True:
        page = client.get(f"{path}?limit=200&offset={offset}")
        yield from page["items"]
        offset += len(page["items"])
        if not page["items"] or offset >= page["count"]:
            return


def cmd_projects(args: argparse.Namespace) -> int:
    client = Client.from_credentials()
    projects = list(_all_pages(client, "/projects"))
    if not projects:
        print("No projects yet: create one in the web UI.", file=sys.stderr)
    for project in projects:
        print(f"{project['id']}  {project['name']}  ({project['team']['name']})")
    return 0


def _resolve_project(client: Client, ref: str) -> dict[str, Any]:
    """A project by id, or by its exact name among the user's projects."""
    try:
        return client.get(f"/projects/{UUID(ref)}")  # type: ignore[no-any-return]
    except ValueError:
        pass
    matches = [p for p in _all_pages(client, "/projects") if p["name"] == ref]
    if not matches:
        raise RemoteError(
            f"No project named {ref!r} in your teams; `modelpress projects` lists them."
        )
    if len(matches) > 1:
        ids = ", ".join(f"{p['id']} ({p['team']['name']})" for p in matches)
        raise RemoteError(f"Several projects are named {ref!r}: {ids}. Give the id instead.")
    return matches[0]


def cmd_upload(args: argparse.Namespace) -> int:
    file: Path = args.file
    if not file.is_file():
        raise RemoteError(f"No such file: {file}")
    client = Client.from_credentials()
    project = _resolve_project(client, args.project)
    fields = {"name": args.name or ""}
    kind = "dataset" if args.dataset else "model"
    if not args.dataset and args.input_shapes:
        fields["input_shapes"] = args.input_shapes
    print(
        f"Uploading {file.name} ({human_bytes(file.stat().st_size)}) as a {kind} to "
        f"{project['name']}...",
        file=sys.stderr,
    )
    route = "datasets" if args.dataset else "models"
    created = client.upload(f"/projects/{project['id']}/{route}", file, fields)
    if args.dataset:
        print(f"Dataset {created['name']}: {created['samples']} samples.", file=sys.stderr)
    else:
        status = created["status"]
        note = f" ({created['status_message']})" if status != "ready" else ""
        print(f"Model {created['name']} v{created['version']}: {status}{note}.", file=sys.stderr)
    # Only the id on stdout, so scripts can capture it: VERSION=$(modelpress upload ...).
    print(created["id"])
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    payload: dict[str, Any] = {}
    if args.recipe is not None:
        try:
            payload["recipe"] = args.recipe.read_text(encoding="utf-8")
        except OSError as exc:
            raise RemoteError(f"Cannot read the recipe file: {exc}") from None
    elif args.preset is not None:
        payload["preset"] = args.preset
    if args.dataset:
        payload["dataset"] = args.dataset
    client = Client.from_credentials()
    version = _uuid(args.model_version, "model version")
    job = client.json("POST", f"/models/{version}/jobs", payload)
    follow = f"modelpress status {job['id']} --wait"
    print(f"Started job {job['id']} ({job['status']}). Follow it: {follow}", file=sys.stderr)
    print(job["id"])
    return 0


def _uuid(value: str, what: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise RemoteError(f"{value!r} is not a {what} id (a UUID, as the web UI shows).") from None


def cmd_status(args: argparse.Namespace) -> int:
    client = Client.from_credentials()
    path = f"/jobs/{_uuid(args.job, 'job')}"
    job = client.get(path)
    if args.wait:
        job = _wait(client, path, job, interval=args.interval, timeout=args.timeout, out=sys.stderr)
    print(format_job(job))
    return 0 if job["status"] not in ("failed", "cancelled") else EXIT_JOB_FAILED


def _wait(
    client: Client,
    path: str,
    job: dict[str, Any],
    *,
    interval: float,
    timeout: float | None,
    out: TextIO,
) -> dict[str, Any]:
    """Poll until the job ends, printing each change of stage or whole percent."""
    deadline = None if timeout is None else time.monotonic() + timeout
    shown = None
    while True:
        line = (job["status"], job["stage"], round(job["progress"] * 100))
        if line != shown:
            shown = line
            print(f"[{line[2]:3d}%] {job['status']}: {job['stage'] or '-'}", file=out, flush=True)
        if job["status"] in TERMINAL:
            return job
        if deadline is not None and time.monotonic() >= deadline:
            raise RemoteError(
                f"Job {job['id']} is still {job['status']} after {timeout:.0f} s; it goes on "
                "running on the server. Check again with `modelpress status`."
            )
        time.sleep(interval)
        job = client.get(path)


def format_job(job: Mapping[str, Any]) -> str:
    lines = [f"job {job['id']}: {job['status']} ({round(job['progress'] * 100)}%, {job['stage']})"]
    if job.get("error"):
        lines.append(f"error: {job['error']}")
    summary = job.get("summary")
    if summary:

        def ratio(value: float | None) -> str:
            return "-" if value is None else f"{value:.2f}x"

        lines.append(
            f"size {human_bytes(summary['original_size_bytes'])} -> "
            f"{human_bytes(summary['result_size_bytes'])} ({ratio(summary['size_ratio'])}), "
            f"latency p50 {summary['original_p50_ms']:.3f} -> {summary['result_p50_ms']:.3f} ms "
            f"({ratio(summary['latency_ratio'])}) on {summary['device']}"
        )
        if summary.get("cosine_similarity") is not None:
            lines.append(f"fidelity: cosine {summary['cosine_similarity']:.6g}")
        if summary.get("accuracy_drop_points") is not None:
            lines.append(f"accuracy drop: {summary['accuracy_drop_points']:.2f} points")
    for artifact in job.get("artifacts", []):
        lines.append(f"  {artifact['name']}  {human_bytes(artifact['size_bytes'])}")
    if job["status"] == "succeeded":
        lines.append(f"Download: modelpress download {job['id']}")
    return "\n".join(lines)


def cmd_download(args: argparse.Namespace) -> int:
    client = Client.from_credentials()
    job_id = _uuid(args.job, "job")
    job = client.get(f"/jobs/{job_id}")
    if job["status"] != "succeeded":
        raise RemoteError(
            f"Job {job_id} is {job['status']}; only a succeeded job has files to download."
        )
    folder: Path = args.out or Path(f"modelpress-{job_id}")
    if args.bundle:
        paths = [client.download(f"/jobs/{job_id}/bundle", folder, fallback_name="bundle.zip")]
    else:
        paths = []
        for artifact in job["artifacts"]:
            path = client.download(artifact["download_url"], folder, fallback_name=artifact["name"])
            if sha256_of(path) != artifact["sha256"]:
                path.unlink()
                raise RemoteError(
                    f"{artifact['name']} arrived damaged (sha256 mismatch) and was removed; "
                    "download again."
                )
            paths.append(path)
        paths.append(client.download(f"/jobs/{job_id}/report", folder, fallback_name="report.json"))
    for path in paths:
        print(path)
    return 0


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """The server commands' subparsers (cli.py adds them beside the local ones)."""
    where = (
        f"Uses the server and token saved by `modelpress login` ({SERVER_ENV} and {TOKEN_ENV} "
        "override them)."
    )
    p = sub.add_parser(
        "login",
        parents=[common],
        help="check an API token against a server and save it",
        description="Saves {server, token} to ~/.config/modelpress/credentials.json (mode "
        f"0600; {CONFIG_DIR_ENV} moves the folder).",
    )
    p.add_argument(
        "--server",
        help=f"the server's address, e.g. https://modelpress.example (default: ${SERVER_ENV})",
    )
    p.add_argument(
        "--token",
        help=f"the API token (default: ${TOKEN_ENV}, else asked for without echo); tokens "
        "are created under Profile → API tokens",
    )
    p.set_defaults(func=cmd_login)

    p = sub.add_parser(
        "projects", parents=[common], help="list your projects on the server", description=where
    )
    p.set_defaults(func=cmd_projects)

    p = sub.add_parser(
        "upload",
        parents=[common],
        help="upload a model (or with --dataset, a dataset) to a project on the server",
        description=where,
    )
    p.add_argument("project", help="the project's id or exact name")
    p.add_argument("file", type=Path, help="the model (.onnx, .pt, .pt2, ...) or dataset file")
    p.add_argument("--name", help="model or dataset name (default: from the file name)")
    p.add_argument("--dataset", action="store_true", help="upload FILE as a dataset")
    p.add_argument(
        "--input-shapes",
        help="for formats that do not record input shapes: 'input: 1x3x224x224' per line",
    )
    p.set_defaults(func=cmd_upload)

    p = sub.add_parser(
        "submit",
        parents=[common],
        help="start a compression job on a model version on the server; prints the job id",
        description=where,
    )
    p.add_argument("model_version", help="the model version's id (printed by upload)")
    recipe = p.add_mutually_exclusive_group(required=True)
    recipe.add_argument("--recipe", type=Path, help="recipe YAML/JSON file")
    recipe.add_argument("--preset", help="a named recipe (see `modelpress recipes`)")
    p.add_argument("--dataset", help="id of a dataset of the model's project")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser(
        "status",
        parents=[common],
        help="show a job's status; --wait follows it to the end",
        description=f"{where} Exits with {EXIT_JOB_FAILED} if the job failed or was cancelled.",
    )
    p.add_argument("job", help="the job's id")
    p.add_argument("--wait", action="store_true", help="poll until the job ends")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between polls (default 2)")
    p.add_argument("--timeout", type=float, help="give up waiting after this many seconds")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "download",
        parents=[common],
        help="download a succeeded job's artifacts and report (or --bundle)",
        description=where,
    )
    p.add_argument("job", help="the job's id")
    p.add_argument("--out", type=Path, help="folder to write to (default: modelpress-<job id>)")
    p.add_argument(
        "--bundle",
        action="store_true",
        help="the deployment bundle (.zip: artifacts, report, REPORT.md, example) instead",
    )
    p.set_defaults(func=cmd_download)
