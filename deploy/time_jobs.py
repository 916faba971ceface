"""Time real compression jobs, one per preset, for the sizing table in deploy/README.md.

Builds the benchmark suite's digits CNN (trained here on scikit-learn's bundled digits, no
download), then runs `modelpress compress` once per preset on it with its training split as
the dataset, the way a worker runs a job: same engine, same defaults. Records per job the
process wall time (interpreter start and imports included, so an upper bound for a warm
worker), the engine's own total from report.json, and the load average, in deploy/job_times.json.

    .venv/bin/python -m deploy.time_jobs [--presets a,b] [--out PATH]

Needs the dev extra (scikit-learn) and, for the TFLite preset, .venv-tflite (`make install`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PRESETS = (
    "fast-int8",
    "static-int8",
    "fp16-gpu",
    "int4-weights",
    "auto",
    "accuracy-aware-int8",
    "prune-distill",
    "prune-distill-int8",
    "mobile-tflite-int8",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default=",".join(PRESETS))
    parser.add_argument("--out", type=Path, default=REPO / "deploy" / "job_times.json")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from benchmarks.models import digits

    cli = Path(sys.executable).with_name("modelpress")
    rows = []
    with tempfile.TemporaryDirectory(prefix="modelpress-job-times-") as tmp:
        work = Path(tmp)
        model = digits.build(work)
        print(f"built {model.name} in {model.wall_s:.1f} s", flush=True)
        for preset in args.presets.split(","):
            out = work / preset
            load_before = os.getloadavg()[0]
            start = time.perf_counter()
            proc = subprocess.run(
                [str(cli), "compress", str(model.onnx_path), "--preset", preset,
                 "--data", str(model.train_path), "--out", str(out)],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            wall = time.perf_counter() - start
            row = {
                "preset": preset,
                "exit_code": proc.returncode,
                "process_wall_s": round(wall, 1),
                "load_1m_before": round(load_before, 2),
                "load_1m_after": round(os.getloadavg()[0], 2),
            }
            report = out / "report.json"
            if proc.returncode == 0 and report.is_file():
                steps = json.loads(report.read_text(encoding="utf-8")).get("steps", [])
                row["engine_wall_s"] = round(sum(s["wall_s"] for s in steps), 1)
                row["steps"] = {s["name"]: round(s["wall_s"], 1) for s in steps}
            else:
                row["error"] = (proc.stderr or proc.stdout).strip().splitlines()[-1:]
            rows.append(row)
            print(json.dumps(row), flush=True)
    meta = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, no GPU used",
        "python": platform.python_version(),
        "model": {"name": model.name, **model.info},
        "dataset": "digits-cnn-train.npz (the training split, x/y), as a user would upload it",
        "command": "modelpress compress digits-cnn.onnx --preset P --data digits-cnn-train.npz",
    }
    args.out.write_text(json.dumps({"rows": rows, "meta": meta}, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0 if all(r["exit_code"] == 0 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
