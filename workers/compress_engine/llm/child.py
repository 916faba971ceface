"""Run a language-model tool (the GGUF dequantizer, onnxruntime-genai's model builder) in a
child process under a time limit, offline, with its output in a log file.

These tools load whole models with torch and transformers: a crash, a hang or a memory blow-up
must fail the step with a message, never the worker. Their progress bars are switched off and
their output goes to a file (a builder log of a large model runs to megabytes); on failure the
last lines of it are quoted.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from compress_engine.errors import EngineError, short_message

_PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder holding compress_engine
TAIL_LINES = 6


def child_env() -> dict[str, str]:
    """The environment of a child: nothing may be downloaded (a missing tokenizer file must
    fail, not fetch one), no progress bars, the CPU only, compress_engine importable."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env |= {"HF_HUB_DISABLE_TELEMETRY": "1", "TQDM_DISABLE": "1", "CUDA_VISIBLE_DEVICES": ""}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_PACKAGE_ROOT), env.get("PYTHONPATH")]))
    return env


def run_python(
    args: list[str], *, cwd: Path, log: Path, timeout_s: float, what: str
) -> subprocess.CompletedProcess[bytes]:
    """Run `python args...` (this interpreter) in `cwd`, stdout and stderr into `log`.

    Raises EngineError when it runs past `timeout_s` (its whole process group is killed) or
    cannot start; returns the finished process otherwise, whatever its exit status."""
    cwd.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        try:
            proc = subprocess.Popen(
                [sys.executable, *args],
                cwd=cwd,
                env=child_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: a timeout kills all of it
            )
        except OSError as exc:
            raise EngineError(f"The {what} could not start: {short_message(exc)}") from None
        try:
            proc.wait(timeout=max(timeout_s, 1.0))
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise EngineError(
                f"The {what} ran past its {timeout_s:.0f} s limit and was stopped."
            ) from None
        except BaseException:
            _kill_group(proc)
            raise
    return subprocess.CompletedProcess(proc.args, proc.returncode)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):  # it ended on its own meanwhile
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def log_tail(log: Path, lines: int = TAIL_LINES) -> str:
    """The last non-empty lines of a log, joined with ' / ' (progress bars' carriage returns
    count as line breaks)."""
    try:
        text = log.read_bytes()[-20_000:].decode("utf-8", "replace")
    except OSError:
        return ""
    rows = [r.strip() for r in text.replace("\r", "\n").splitlines() if r.strip()]
    return " / ".join(rows[-lines:])


def missing_module_in_log(log: Path) -> str | None:
    """The module a child died for want of ("No module named 'onnx_ir'"), if it did."""
    from compress_engine.ingest.capability import missing_module

    tail = log_tail(log, 3)
    return missing_module(RuntimeError(tail)) if "No module named" in tail else None
