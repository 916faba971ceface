"""The engine server: forks one process per job from an interpreter that has the engine's heavy
libraries imported already.

Importing torch and its company takes seconds; a fresh interpreter per job would pay that on
every job. Instead each worker process starts `python -m jobrunner.engine_server` once (a
fresh interpreter, not a fork of the worker with its database connections and threads),
which imports them and then, per request, forks a job process that runs compress() and
writes its messages to a pipe the worker passed along (SCM_RIGHTS). The server reports each
job process's pid back, and its exit status (negative: the signal) as the last line on that
job's pipe once it has reaped it. Multiprocessing's forkserver does much the same, but
refuses to start from Celery's prefork pool processes (billiard swaps in its own process
objects), so this is the few lines of it that the worker needs.

Lifetimes: the server exits when the worker's end of its control socket closes, whatever
way the worker died; job processes die with the server (PR_SET_PDEATHSIG), lead sessions of
their own (their process group is stopped as a whole), write no core dumps, and may start
processes of their own (the engine's data loaders, torch distributed). The server and the
job processes import no Django.

Messages on a job's pipe, one JSON object per line: {"progress": [stage, fraction]},
{"training": point}, {"log": record}; then {"report": report} or {"error": {"engine": bool,
"type", "message", "traceback"}}; last, from the server, {"exit": status}.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import json
import logging
import os
import resource
import select
import signal
import socket
import subprocess
import sys
import threading
import traceback
from pathlib import Path
from typing import Any

# Imported once by the server, so jobs start with them loaded (torch and onnx2torch alone take
# two seconds). None of them starts a thread or touches CUDA at import, which a fork would
# not survive (numpy's OpenBLAS threads are fork-safe); onnxruntime starts a thread, so each
# job imports it itself (a tenth of a second).
PRELOAD = ("compress_engine.api", "onnx", "torch", "sympy", "onnx2torch", "torch_pruning")
_REAP_SECONDS = 0.1
_ANSWER_SECONDS = 120
_WORKERS_DIR = str(Path(__file__).resolve().parents[1])


# The worker's credentials stay out of the job process (a model could exploit a parser bug in
# native code there): the engine reads no database, broker or storage, only local files.
_SECRET_NAMES = {"DATABASE_URL", "CELERY_BROKER_URL", "CACHE_URL"}
_SECRET_WORDS = {"SECRET", "PASSWORD", "PASSWD", "TOKEN", "CREDENTIALS"}


def engine_environ() -> dict[str, str]:
    """This process's environment, without the variables that carry credentials: the
    service URLs, and names with one of _SECRET_WORDS as a word (AWS_SECRET_ACCESS_KEY,
    MODELPRESS_METRICS_TOKEN, SECRET_KEY_FILE; not TOKENIZERS_PARALLELISM)."""
    return {
        name: value
        for name, value in os.environ.items()
        if name.upper().removesuffix("_FILE") not in _SECRET_NAMES
        and not _SECRET_WORDS & set(name.upper().split("_"))
    }


class EngineServerLost(Exception):
    """The engine server could not be started or stopped answering."""


# --- the worker's side --------------------------------------------------------------------


class EngineServer:
    """This worker process's engine server, started on first use and again after it died."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._socket: socket.socket | None = None
        self._owner_pid = 0

    def start_job(self, spec: dict[str, Any], pipe_fd: int) -> int:
        """Fork a job process that runs the compress() call `spec` describes and writes its
        messages to pipe_fd (the caller closes its copy); its pid."""
        with self._lock:
            try:
                return self._request(spec, pipe_fd)
            except (OSError, EOFError, ValueError, KeyError):
                self._discard()  # it died since the last job (the OOM killer?): once more
            try:
                return self._request(spec, pipe_fd)
            except (OSError, EOFError, ValueError, KeyError) as exc:
                self._discard()
                raise EngineServerLost(f"the engine server is not answering: {exc}") from exc

    def _request(self, spec: dict[str, Any], pipe_fd: int) -> int:
        if not self._running():
            self._start()
        assert self._socket is not None
        request = json.dumps(spec).encode() + b"\n"
        # The pipe travels with the first bytes; the rest of a long request follows.
        sent = socket.send_fds(self._socket, [request], [pipe_fd])
        self._socket.sendall(request[sent:])
        reply = json.loads(_read_line(self._socket))
        if "error" in reply:
            raise EngineServerLost(reply["error"])
        return int(reply["pid"])

    def _running(self) -> bool:
        # A process forked from this one (not by us) must not share our server.
        return (
            self._process is not None
            and self._owner_pid == os.getpid()
            and self._process.poll() is None
        )

    def _start(self) -> None:
        self._discard()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = engine_environ()
        env["PYTHONPATH"] = os.pathsep.join(
            [_WORKERS_DIR, *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
        )
        with theirs:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "jobrunner.engine_server", str(theirs.fileno())],
                env=env,
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
            )
        # Its first answer comes after its imports; a server that hangs longer is replaced.
        ours.settimeout(_ANSWER_SECONDS)
        self._socket, self._owner_pid = ours, os.getpid()

    def _discard(self) -> None:
        if self._socket is not None:
            self._socket.close()  # the server sees EOF and exits
        if self._process is not None and self._owner_pid == os.getpid():
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=5)
        self._process, self._socket, self._owner_pid = None, None, 0


def _read_line(sock: socket.socket) -> bytes:
    line = b""
    while not line.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            raise EOFError("the engine server closed its socket")
        line += chunk
    return line


# --- the server ---------------------------------------------------------------------------


def serve(control: socket.socket) -> None:
    """Fork a job process per request until the worker closes its end of `control`."""
    # Ctrl-C at a terminal reaches the whole foreground group, this server too; the worker
    # decides what happens to a running job (Celery's warm shutdown lets it finish).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for module in PRELOAD:
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    pipes: dict[int, int] = {}  # job pid -> its pipe, for the exit status
    buffer, fds = b"", []
    while True:
        readable, _, _ = select.select([control], [], [], _REAP_SECONDS)
        if readable:
            data, received, _, _ = socket.recv_fds(control, 4096, 4)
            if not data:
                return  # the worker is gone; our job processes die with us
            buffer += data
            fds += received
            while b"\n" in buffer and fds:
                line, buffer = buffer.split(b"\n", 1)
                pipe_fd = fds.pop(0)
                try:
                    reply: dict[str, Any] = {
                        "pid": _fork_job(json.loads(line), pipe_fd, control, pipes)
                    }
                except OSError as exc:  # out of memory or processes: this job only
                    os.close(pipe_fd)
                    reply = {"error": f"could not start a job process: {exc}"}
                control.sendall(json.dumps(reply).encode() + b"\n")
        _reap(pipes)


def _fork_job(
    spec: dict[str, Any], pipe_fd: int, control: socket.socket, pipes: dict[int, int]
) -> int:
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            control.close()
            for other in pipes.values():
                os.close(other)
            code = run_job(spec, pipe_fd)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    pipes[pid] = pipe_fd  # kept open, for the exit status
    return pid


def _reap(pipes: dict[int, int]) -> None:
    while pipes:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        fd = pipes.pop(pid, None)
        if fd is not None:
            with contextlib.suppress(OSError):  # the worker stopped listening
                exit_line = json.dumps({"exit": os.waitstatus_to_exitcode(status)}) + "\n"
                os.write(fd, exit_line.encode())
            os.close(fd)


# --- a job process ------------------------------------------------------------------------


class _Channel:
    """The job's pipe, line by line; thread-safe (the engine may log from other threads)."""

    def __init__(self, fd: int) -> None:
        self._file = open(fd, "w", encoding="utf-8", buffering=1)  # noqa: SIM115
        self._lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        line = json.dumps(message) + "\n"
        with self._lock:
            self._file.write(line)
            self._file.flush()


class _ForwardingHandler(logging.Handler):
    """Sends log records to the worker, which emits them through its own logging (its format,
    and the job id of the run)."""

    def __init__(self, channel: _Channel) -> None:
        super().__init__()
        self._channel = channel

    def emit(self, record: logging.LogRecord) -> None:
        try:
            exc_text = record.exc_text
            if record.exc_info:
                exc_text = logging.Formatter().formatException(record.exc_info)
            fields = ("name", "levelno", "levelname", "created", "pathname", "lineno", "funcName")
            self._channel.send(
                {
                    "log": {
                        **{key: getattr(record, key) for key in fields},
                        "msg": record.getMessage(),
                        "exc_text": exc_text,
                        "process": os.getpid(),
                    }
                }
            )
        except Exception:
            self.handleError(record)


def _isolate() -> None:
    """A session of its own, no core dumps, and death with the server."""
    server = os.getppid()
    os.setsid()
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != server:  # the server died before prctl took effect
        os._exit(1)


def run_job(spec: dict[str, Any], pipe_fd: int) -> int:
    """Run the compress() call `spec` describes and report on pipe_fd; the exit code."""
    _isolate()
    # The server's environment is the one it started with; the job gets the worker's today.
    os.environ.clear()
    os.environ.update(spec["environ"])
    os.chdir(spec["cwd"])
    channel = _Channel(pipe_fd)
    root = logging.getLogger()
    root.handlers[:] = [_ForwardingHandler(channel)]
    root.setLevel(spec["log_level"])
    logging.captureWarnings(True)
    try:
        from compress_engine import compress

        report = compress(
            Path(spec["model"]),
            spec["recipe"],
            data=None if spec["data"] is None else Path(spec["data"]),
            out_dir=Path(spec["out_dir"]),
            progress=lambda stage, fraction: channel.send({"progress": [stage, fraction]}),
            on_training=lambda point: channel.send({"training": point.model_dump(mode="json")}),
            teachers={name: Path(path) for name, path in spec["teachers"].items()},
        )
        # model_dump, then json: the encoding the job row has always stored.
        channel.send({"report": report.model_dump(mode="json")})
        return 0
    except BaseException as exc:
        from compress_engine import EngineError

        channel.send(
            {
                "error": {
                    "engine": isinstance(exc, EngineError),
                    "type": type(exc).__name__,
                    "message": str(exc),
                    "traceback": traceback.format_exc(),
                }
            }
        )
        return 1


if __name__ == "__main__":
    serve(socket.socket(fileno=int(sys.argv[1])))
