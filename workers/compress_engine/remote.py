"""The `modelpress` commands that talk to a ModelPress server's REST API (/api/v1/): login,
projects, upload, submit, status and download (the HTTP client is remote_client.py).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO
from uuid import UUID

from compress_engine.formatting import human_bytes
from compress_engine.remote_client import (
    CONFIG_DIR_ENV,
    SERVER_ENV,
    TOKEN_ENV,
    Client,
    Credentials,
    RemoteError,
    normalize_server,
    save_credentials,
    sha256_of,
)

# A failed or cancelled job: distinct from 1 (internal error) and 2 (a problem to fix in the
# command), so scripts can tell "the job failed" from "the command was wrong".
EXIT_JOB_FAILED = 3
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


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
        if summary.get("speed"):
            lines.append(f"speed: {summary['speed']}")
        if summary.get("cosine_similarity") is not None:
            lines.append(f"fidelity: cosine {summary['cosine_similarity']:.6g}")
        if summary.get("accuracy_drop_points") is not None:
            lines.append(f"accuracy drop: {summary['accuracy_drop_points']:.2f} points")
        if summary.get("recommended") is False:
            lines.append("NOT RECOMMENDED: the result is below the quality floor:")
            lines += [f"  - {reason}" for reason in summary.get("quality_reasons", [])]
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
