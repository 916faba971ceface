"""`python -m benchmarks.load` (`make bench-load`): the web app under 100 concurrent users.

Starts a production-like stack on loopback: a fresh PostgreSQL database, Redis as the broker
(its own database index and queue), gunicorn with several worker processes and a Celery
worker running real jobs. Seeds teams, users, models and finished jobs through the
platform's services, keeps one job per team running, then runs Locust headless: team members
polling job status and browsing dashboards. Prints a table per endpoint and writes
`benchmarks/results/load.json`. Bounded: one run of --duration seconds, loopback only.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
RESULTS = REPO / "benchmarks" / "results" / "load.json"
# The target, for the endpoints a team member keeps open: p95 under 150 ms, no errors.
TARGET_P95_MS = 150.0
TARGET_ENDPOINTS = ("job status", "project dashboard", "job table fragment")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _environment(db_name: str, var: Path, queue: str) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{db_name}",
        "CELERY_BROKER_URL": "redis://127.0.0.1:6379/14",
        "CELERY_TASK_DEFAULT_QUEUE": queue,
        "MODELPRESS_VAR_DIR": str(var),
        "SECRET_KEY": "load-test-only-" + "x" * 40,
        "DEBUG": "false",
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": os.pathsep.join([str(REPO / "platform"), str(REPO / "workers"), str(REPO)]),
    }


def _psql(sql: str) -> None:
    import psycopg

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as c:
        c.execute(sql)


@contextmanager
def _process(command: list[str], env: dict[str, str], log: Path):
    with log.open("wb") as out:
        proc = subprocess.Popen(command, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"{url} did not answer within {timeout:.0f} s")


def _tree_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) used so far by a process and its descendants (the gunicorn
    master and its workers; the Celery worker and its job processes), read from /proc; None
    where there is no /proc. Descendants that have ended count through their parent's
    children times."""
    children: dict[int, list[int]] = {}
    used: dict[int, int] = {}
    try:
        tick = os.sysconf("SC_CLK_TCK")
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                # After the command name: state, ppid, ... utime, stime, cutime, cstime
                # (proc(5) fields 14 to 17).
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # gone meanwhile
                continue
            children.setdefault(int(fields[1]), []).append(int(entry.name))
            used[int(entry.name)] = sum(int(v) for v in fields[11:15])
    except (OSError, ValueError):
        return None
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        total += used.get(current, 0)
        todo.extend(children.get(current, []))
    return total / tick


def _machine_busy() -> tuple[int, int] | None:
    """(busy, total) CPU ticks of the whole machine so far, from /proc/stat."""
    try:
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return sum(ticks) - idle, sum(ticks)


def _cpu_snapshot(web_pid: int, worker_pid: int) -> dict[str, float | None]:
    """CPU seconds so far of the web server, the job worker, this process's finished
    children (Locust, once it has run) and the whole machine (busy, total)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "web": _tree_cpu_s(web_pid),
        "worker": _tree_cpu_s(worker_pid),
        "locust": children.ru_utime + children.ru_stime,
        "machine": _machine_busy(),
    }


def _cpu_during(before: dict, after: dict, requests: int) -> dict[str, float | None]:
    def spent(key: str) -> float | None:
        if before[key] is None or after[key] is None:
            return None
        return round(after[key] - before[key], 1)

    web = spent("web")
    return {
        "web_s": web,
        "worker_s": spent("worker"),
        "locust_s": spent("locust"),
        # Of all the machine's CPU time: this stack (web, worker, database, Locust) and
        # anything else running beside it.
        "machine_busy_share": _busy_share(before["machine"], after["machine"]),
        # Unlike latency, this hardly depends on what else the machine is doing.
        "web_ms_per_request": round(1000 * web / requests, 1) if web and requests else None,
    }


def _busy_share(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    if before is None or after is None or after[1] <= before[1]:
        return None
    return round((after[0] - before[0]) / (after[1] - before[1]), 3)


def _read_stats(prefix: Path) -> tuple[dict, list[dict]]:
    rows = list(csv.DictReader(prefix.with_name(prefix.name + "_stats.csv").open()))

    def row(r: dict) -> dict:
        return {
            "requests": int(r["Request Count"]),
            "errors": int(r["Failure Count"]),
            "p50_ms": float(r["50%"]),
            "p95_ms": float(r["95%"]),
            "p99_ms": float(r["99%"]),
            "mean_ms": round(float(r["Average Response Time"]), 1),
            "rps": round(float(r["Requests/s"]), 1),
        }

    total = next(r for r in rows if r["Name"] == "Aggregated")
    endpoints = [{"endpoint": r["Name"], **row(r)} for r in rows if r["Name"] != "Aggregated"]
    return row(total), endpoints


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.load", description=__doc__)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--spawn-rate", type=float, default=20.0)
    parser.add_argument("--duration", type=int, default=60, help="seconds of measured load")
    parser.add_argument("--web-workers", type=int, default=4, help="gunicorn processes")
    parser.add_argument("--teams", type=int, default=10)
    parser.add_argument("--jobs-per-team", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    # How busy the machine was before this run started anything: latencies on a shared
    # machine are only comparable between runs under similar load.
    load_before = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    stamp = f"{os.getpid()}"
    db_name, queue = f"modelpress_load_{stamp}", f"load-{stamp}"
    work = Path(tempfile.mkdtemp(prefix="modelpress-load-"))
    env = _environment(db_name, work / "var", queue)
    port = _free_port()
    users_file, current_file = work / "users.json", work / "current.json"
    _psql(f'CREATE DATABASE "{db_name}"')
    try:
        py = sys.executable
        subprocess.run([py, "manage.py", "migrate", "-v", "0"], env=env, cwd=REPO, check=True)
        subprocess.run([py, "manage.py", "collectstatic", "--noinput", "-v", "0"], env=env,
                       cwd=REPO, check=True)  # fmt: skip
        with ExitStack() as stack:
            worker = [py, "-m", "celery", "-A", "config.celery", "worker", "-Q", queue,
                      "--concurrency", "1", "--loglevel", "WARNING", "--without-gossip",
                      "--without-mingle", "--hostname", f"load-{stamp}@localhost"]  # fmt: skip
            worker_process = stack.enter_context(_process(worker, env, work / "worker.log"))
            web = [py, "-m", "gunicorn", "config.wsgi", "--chdir", str(REPO / "platform"),
                   "--workers", str(args.web_workers), "--bind", f"127.0.0.1:{port}",
                   "--access-logfile", "-", "--log-level", "warning"]  # fmt: skip
            web_process = stack.enter_context(_process(web, env, work / "web.log"))
            _wait_http(f"http://127.0.0.1:{port}/accounts/login/", 60)
            seed_cmd = [py, str(HERE / "seed.py"), "seed", str(users_file), str(args.teams),
                        str(max(1, args.users // args.teams)), str(args.jobs_per_team)]  # fmt: skip
            subprocess.run(seed_cmd, env=env, cwd=REPO, check=True)
            feed = [py, str(HERE / "seed.py"), "feed", str(users_file), str(current_file)]
            stack.enter_context(_process(feed, env, work / "feed.log"))
            prefix = work / "locust"
            locust = [py, "-m", "locust", "-f", str(HERE / "locustfile.py"), "--headless",
                      "--users", str(args.users), "--spawn-rate", str(args.spawn_rate),
                      "--run-time", f"{args.duration}s", "--host", f"http://127.0.0.1:{port}",
                      "--csv", str(prefix), "--only-summary", "--loglevel", "WARNING"]  # fmt: skip
            locust_env = {**env, "LOAD_USERS_FILE": str(users_file),
                          "LOAD_CURRENT_FILE": str(current_file)}  # fmt: skip
            cpu_before = _cpu_snapshot(web_process.pid, worker_process.pid)
            subprocess.run(locust, env=locust_env, cwd=REPO, check=False)
            cpu_after = _cpu_snapshot(web_process.pid, worker_process.pid)
            total, endpoints = _read_stats(prefix)
            feed_log = (work / "feed.log").read_text().splitlines()
            fed = [line for line in feed_log if line.startswith("feed:")]
            jobs_started = int(fed[-1].split()[1]) if fed else 0
        result = {
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "load_average_1m_before": load_before,
            },
            "stack": {
                "web": f"gunicorn, {args.web_workers} sync workers",
                "database": "PostgreSQL (loopback)",
                "broker": "Redis (loopback)",
                "worker": "1 Celery worker running dynamic-int8 jobs throughout",
            },
            "users": args.users,
            "duration_s": args.duration,
            "teams": args.teams,
            **total,
            "jobs_started_during_load": jobs_started,
            "cpu_during_load": _cpu_during(cpu_before, cpu_after, total["requests"]),
            "target": {"p95_ms": TARGET_P95_MS, "endpoints": list(TARGET_ENDPOINTS)},
            "endpoints": endpoints,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        _print(result)
        met = all(
            e["p95_ms"] < TARGET_P95_MS and e["errors"] == 0
            for e in endpoints
            if e["endpoint"] in TARGET_ENDPOINTS
        )
        print(f"target (p95 < {TARGET_P95_MS:.0f} ms, no errors): {'met' if met else 'MISSED'}")
        return 0
    finally:
        _psql(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        shutil.rmtree(work, ignore_errors=True)


def _print(result: dict) -> None:
    head = f"{'endpoint':<22}{'requests':>9}{'errors':>7}{'p50 ms':>8}{'p95 ms':>8}{'p99 ms':>8}"
    print(head)
    for e in [*result["endpoints"], {"endpoint": "all", **result}]:
        print(
            f"{e['endpoint']:<22}{e['requests']:>9}{e['errors']:>7}"
            f"{e['p50_ms']:>8.0f}{e['p95_ms']:>8.0f}{e['p99_ms']:>8.0f}"
        )
    cpu, machine = result["cpu_during_load"], result["machine"]
    print(
        f"CPU during the load: web {cpu['web_s']} s ({cpu['web_ms_per_request']} ms a request),"
        f" job worker {cpu['worker_s']} s, Locust {cpu['locust_s']} s; the machine's"
        f" {machine['cpus']} CPUs {cpu['machine_busy_share']} busy"
        f" (load average {machine['load_average_1m_before']} before the run)"
    )


if __name__ == "__main__":
    raise SystemExit(main())
