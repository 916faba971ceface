"""Peak resident memory of a fresh process that loads an onnxruntime-genai folder and generates:
what a user's chat process would need, free of this process's own allocations.

The child reports its own high-water mark, VmHWM from /proc/self/status: it belongs to the
child's own address space. ru_maxrss would not do: Linux carries it across fork and exec, so a
child of a 3 GB parent reports 3 GB (measured), and RUSAGE_CHILDREN gives the largest child this
process ever waited for.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from compress_engine.errors import EngineError, short_message

_CHILD = r"""
import json, resource, sys
import onnxruntime_genai as og

folder, tokens, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
config = og.Config(folder)
config.clear_providers()
if threads:
    options = {"intra_op_num_threads": threads, "inter_op_num_threads": 1}
    config.overlay(json.dumps({"model": {"decoder": {"session_options": options}}}))
model = og.Model(config)
tokenizer = og.Tokenizer(model)
prompt = list(tokenizer.encode("The history of the printing press begins"))
params = og.GeneratorParams(model)
total = len(prompt) + tokens
params.set_search_options(do_sample=False, max_length=total, min_length=total)
generator = og.Generator(model, params)
generator.append_tokens(prompt)
made = 0
while not generator.is_done():
    generator.generate_next_token()
    made += 1
try:
    status = open("/proc/self/status").read().split("VmHWM:")[1]
    peak = int(status.split()[0])  # kB
except (OSError, IndexError):  # not Linux: ru_maxrss (KiB on Linux, bytes on macOS)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak = peak // 1024 if sys.platform == "darwin" else peak
print(json.dumps({"peak_rss_kib": peak, "tokens": made}))
"""


def peak_rss_mb(
    folder: Path, *, tokens: int, threads: int | None = None, timeout_s: float = 600
) -> float:
    """Peak RSS in MB (10^6 bytes) of a child that loads `folder` and greedily generates
    `tokens` tokens; a child that fails or runs past `timeout_s` raises EngineError."""
    command = [sys.executable, "-c", _CHILD, str(folder), str(int(tokens)), str(threads or 0)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise EngineError(
            f"measuring the memory of {folder.name} took over {timeout_s:.0f} s."
        ) from exc
    if done.returncode != 0:
        tail = short_message(RuntimeError(done.stderr[-2000:] or f"exit {done.returncode}"))
        raise EngineError(f"loading {folder.name} to measure its memory failed: {tail}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return report["peak_rss_kib"] * 1024 / 1e6
