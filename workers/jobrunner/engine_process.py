"""Run one compression in a job process that the worker watches and can stop.

A hostile or simply huge model must not take the worker down with it: compress() runs in a
job process (forked by the engine server, see engine_server), and run_job, which keeps every
database and storage call, relays its progress from a pipe while it enforces the job's
limits:

- memory: the resident memory (RSS) of the job process and all of its descendants, sampled
  a few times a second; over the limit, the whole tree is stopped. RSS, not RLIMIT_AS: CUDA
  reserves far more address space than it ever uses. One allocation faster than the
  sampling can still overshoot; the kernel's OOM killer is then the last guard, and that
  death is reported like any other.
- time: a wall-clock deadline.
- cancellation, or anything else the caller checks on a timer (`poll`): even a long step
  that reports no progress is stopped within a second or so.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobrunner.engine_server import EngineServer, engine_environ

if TYPE_CHECKING:
    import psutil

    from compress_engine import Report, TrainingPoint

log = logging.getLogger(__name__)

# How often the worker samples memory and checks the deadline (seconds).
SAMPLE_SECONDS = 0.2
# Between SIGTERM and SIGKILL when stopping a tree; and how long a job process that reported
# its outcome may take to exit before it is stopped.
TERMINATE_GRACE_SECONDS = 2.0
EXIT_GRACE_SECONDS = 10.0


# --- what the caller gets -----------------------------------------------------------------


@dataclass(frozen=True)
class EngineCall:
    """The arguments of one compress_engine.compress call, as files and JSON."""

    model: Path
    recipe: dict[str, Any]
    out_dir: Path
    data: Path | None = None
    teachers: dict[str, Path] = field(default_factory=dict)


@dataclass(frozen=True)
class Limits:
    memory_bytes: int
    time_seconds: float
    # The moment time_seconds counts from (time.monotonic()); default: when the engine starts.
    started_at: float | None = None


class EngineProcessFailed(Exception):
    """The engine process was stopped or died; the message is the job's error."""


class MemoryLimitExceeded(EngineProcessFailed):
    def __init__(self, limit_bytes: int, used_bytes: int) -> None:
        self.limit_bytes, self.used_bytes = limit_bytes, used_bytes
        super().__init__(
            f"The job used more than {format_bytes(limit_bytes)} of memory (the limit, "
            f"MODELPRESS_JOB_MEMORY_LIMIT_MB) and was stopped; it had reached "
            f"{format_bytes(used_bytes)}. No artifact was kept. Try a smaller model, batch size "
            "or number of samples, or run it on a worker with more memory and a higher limit."
        )


class TimeLimitExceeded(EngineProcessFailed):
    def __init__(self, limit_seconds: float) -> None:
        self.limit_seconds = limit_seconds
        super().__init__(time_limit_message(limit_seconds))


class EngineProcessDied(EngineProcessFailed):
    """The job process ended without reporting an outcome: killed by a signal, or exited.
    returncode None: its engine server was lost too, with the status."""

    def __init__(self, returncode: int | None) -> None:
        self.returncode = returncode
        if returncode is None:
            what = "was lost together with the worker's engine server"
        elif returncode < 0:
            number = -returncode
            try:
                name = signal.Signals(number).name
            except ValueError:
                name = "unknown signal"
            cause = (
                "most likely the system ran out of memory and its out-of-memory killer stopped it"
                if number == signal.SIGKILL
                else "a crash in native code (ONNX Runtime, torch) or a signal from outside"
            )
            what = f"died (signal {number}, {name}): {cause}"
        else:
            what = f"exited with status {returncode} without a result"
        super().__init__(
            f"The compression process {what}. No artifact was kept. Start the job again; if it "
            "happens again, the model may be malformed or too big for this worker."
        )


class EngineCrashed(Exception):
    """An unexpected exception (not an EngineError) inside the engine process."""

    def __init__(self, type_name: str, message: str, child_traceback: str) -> None:
        self.type_name, self.message, self.child_traceback = type_name, message, child_traceback
        super().__init__(message)


def time_limit_message(limit_seconds: float) -> str:
    return (
        f"The job ran past its time limit ({format_seconds(limit_seconds)}, "
        "MODELPRESS_JOB_SOFT_TIME_LIMIT) and was stopped. No artifact was kept."
    )


def format_bytes(count: float) -> str:
    mib = count / 1024**2
    return f"{mib / 1024:.1f} GiB" if mib >= 1024 else f"{mib:.0f} MiB"


def format_seconds(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:.0f} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:g} s"


def default_memory_limit_bytes() -> int:
    """75% of this machine's memory, or of its container's (cgroup) limit when lower.

    The rest is for the worker process itself, the OS and whatever shares the machine; with
    several jobs at once on one machine, configure a share per job instead.
    """
    import psutil

    return int(0.75 * min(psutil.virtual_memory().total, _cgroup_memory_limit() or sys.maxsize))


def _cgroup_memory_limit() -> int | None:
    """The memory limit of this process's cgroup (v2 or v1), None when it has none."""
    candidates: list[Path] = []
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        path = path.lstrip("/")
        if controllers == "":
            v2 = Path("/sys/fs/cgroup")
            candidates += [v2 / path / "memory.max", v2 / "memory.max"]
        elif "memory" in controllers.split(","):
            v1 = Path("/sys/fs/cgroup/memory")
            candidates += [v1 / path / "memory.limit_in_bytes", v1 / "memory.limit_in_bytes"]
    for candidate in candidates:
        try:
            value = candidate.read_text().strip()
        except OSError:
            continue
        # v2 writes "max" when unlimited, v1 a number near 2**63.
        if value.isdigit() and int(value) < 2**60:
            return int(value)
    return None


# --- running and watching ---------------------------------------------------------------

_server = EngineServer()


def run_engine(
    call: EngineCall,
    *,
    limits: Limits,
    progress: Callable[[str, float], None],
    on_training: Callable[[TrainingPoint], None],
    poll: Callable[[], None],
    poll_seconds: float = 1.0,
) -> Report:
    """Run compress(call) in a job process and return its report.

    progress and on_training are called in this process, in the order the engine reported;
    poll is called every poll_seconds. Anything they raise (a cancellation) stops the job
    process and propagates, as do MemoryLimitExceeded, TimeLimitExceeded and
    EngineProcessDied; an EngineError in the engine is raised here with the same message, any
    other exception as EngineCrashed. The job process and its descendants are gone when this
    returns or raises.
    """
    from compress_engine import EngineError, Report

    started = time.monotonic() if limits.started_at is None else limits.started_at
    spec = {
        "model": str(call.model),
        "recipe": call.recipe,
        "data": None if call.data is None else str(call.data),
        "out_dir": str(call.out_dir),
        "teachers": {name: str(path) for name, path in call.teachers.items()},
        "environ": engine_environ(),
        "cwd": os.getcwd(),
        "log_level": logging.getLogger().getEffectiveLevel(),
    }
    read_fd, write_fd = os.pipe()
    try:
        try:
            pid = _server.start_job(spec, write_fd)
        finally:
            os.close(write_fd)  # the job process (and the server) hold it now
        try:
            outcome = _supervise(
                pid,
                _Lines(read_fd),
                deadline=started + limits.time_seconds,
                limits=limits,
                poll=poll,
                poll_seconds=poll_seconds,
                on_message=lambda message: _dispatch(message, progress, on_training),
            )
        finally:
            stop_tree(pid)
    finally:
        os.close(read_fd)
    if "report" in outcome:
        return Report.model_validate(outcome["report"])
    error = outcome["error"]
    if error["engine"]:
        raise EngineError(error["message"])
    raise EngineCrashed(error["type"], error["message"], error["traceback"])


def _dispatch(
    message: dict[str, Any],
    progress: Callable[[str, float], None],
    on_training: Callable[[TrainingPoint], None],
) -> bool:
    """Hand one message to its callback; True when it is the outcome."""
    from compress_engine import TrainingPoint

    if "progress" in message:
        stage, fraction = message["progress"]
        progress(str(stage), float(fraction))
    elif "training" in message:
        on_training(TrainingPoint.model_validate(message["training"]))
    elif "log" in message:
        record = logging.makeLogRecord(message["log"])
        logging.getLogger(record.name).handle(record)
    else:
        return "report" in message or "error" in message
    return False


def _supervise(
    pid: int,
    lines: _Lines,
    *,
    deadline: float,
    limits: Limits,
    poll: Callable[[], None],
    poll_seconds: float,
    on_message: Callable[[dict[str, Any]], bool],
) -> dict[str, Any]:
    """Relay messages and enforce the limits until the job process reports its outcome; that
    outcome, once the process has exited (or EXIT_GRACE_SECONDS after it reported). Over a
    limit it raises; the caller stops the process tree on every way out."""
    import psutil

    try:
        process: psutil.Process | None = psutil.Process(pid)
    except psutil.NoSuchProcess:
        process = None  # already gone; its exit status is on the pipe
    outcome: dict[str, Any] | None = None
    reported_at = 0.0
    next_poll = time.monotonic() + poll_seconds
    while True:
        for message in lines.read(timeout=SAMPLE_SECONDS):
            if "exit" in message:
                if outcome is None:
                    raise EngineProcessDied(message["exit"])
                return outcome
            if on_message(message) and outcome is None:
                outcome, reported_at = message, time.monotonic()
        now = time.monotonic()
        if lines.eof:  # the engine server died, and the job process with it
            if outcome is None:
                raise EngineProcessDied(None)
            return outcome
        if outcome is not None:
            if now - reported_at > EXIT_GRACE_SECONDS:
                log.warning("the engine process did not exit after its result; stopping it")
                return outcome
            continue
        used = 0 if process is None else tree_rss(process)
        if used > limits.memory_bytes:
            log.warning("the engine process used %s; stopping it", format_bytes(used))
            raise MemoryLimitExceeded(limits.memory_bytes, used)
        if now >= deadline:
            log.warning("the engine process ran past the time limit; stopping it")
            raise TimeLimitExceeded(limits.time_seconds)
        if now >= next_poll:
            poll()
            next_poll = now + poll_seconds


class _Lines:
    """JSON lines from a non-blocking pipe."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buffer = b""
        self.eof = False
        os.set_blocking(fd, False)

    def read(self, timeout: float) -> Iterator[dict[str, Any]]:
        """The complete lines that arrived, waiting at most `timeout` for the first bytes."""
        if self.eof:
            return
        readable, _, _ = select.select([self._fd], [], [], timeout)
        while readable:
            try:
                chunk = os.read(self._fd, 1 << 16)
            except BlockingIOError:
                break
            if not chunk:
                self.eof = True
                break
            self._buffer += chunk
        *complete, self._buffer = self._buffer.split(b"\n")
        for line in complete:
            try:
                yield json.loads(line)
            except ValueError:  # e.g. two processes of the engine writing at once
                log.warning("unreadable message from the engine process: %.200r", line)


def tree_rss(process: psutil.Process) -> int:
    """Resident memory of a process and all of its descendants, in bytes.

    Pages shared between them (forked data loaders, the libraries the engine server had
    loaded) count once per process: an overestimate, on the safe side.
    """
    import psutil

    try:
        members = [process, *process.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for member in members:
        with contextlib.suppress(psutil.Error):  # exited meanwhile, or a zombie
            total += member.memory_info().rss
    return total


def stop_tree(pid: int) -> None:
    """SIGTERM a job process, its process group and every descendant; SIGKILL what is left
    after TERMINATE_GRACE_SECONDS. Its server reaps it."""
    import psutil

    try:
        leader = psutil.Process(pid)
        members = [leader, *leader.children(recursive=True)]
    except psutil.Error:
        # Exited and reaped; what it left behind in its group goes too (the kernel keeps
        # the group's id from being reused while it has members).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        return
    _signal_all(pid, members, signal.SIGTERM)
    _, alive = psutil.wait_procs(members, timeout=TERMINATE_GRACE_SECONDS)
    if alive:
        _signal_all(pid, alive, signal.SIGKILL)
        psutil.wait_procs(alive, timeout=TERMINATE_GRACE_SECONDS)


def _signal_all(group: int, members: list[psutil.Process], signum: int) -> None:
    import psutil

    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signum)
    for member in members:  # descendants that left the group (sessions of their own)
        with contextlib.suppress(psutil.Error):
            member.send_signal(signum)
