"""Run code as if some packages were not installed, without building another environment.

`blocking_env` returns environment variables for a subprocess (and the subprocesses it
starts: the engine's converters run in their own) whose `sitecustomize` refuses imports:

- `modules=("onnxscript",)`: these top-level modules are missing;
- `allow=runtime_closure()`: every module that only distributions outside `allow` provide is
  missing, so the process sees what an install of pyproject's main dependencies sees (the
  standard library and the source roots stay importable).

The path finder is made blind to the refused names, so `import x` fails and
`importlib.util.find_spec("x")` returns None exactly as for a package that is not installed,
and libraries that probe optional packages take their "not installed" branch.
"""

from __future__ import annotations

import importlib.metadata
import os
import tomllib
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
BLOCK_MODULES = "MODELPRESS_TEST_BLOCK_MODULES"
ALLOW_DISTS = "MODELPRESS_TEST_ALLOW_DISTS"

SITECUSTOMIZE = f'''
import os, sys


def _blocked():
    names = {{m for m in os.environ.get("{BLOCK_MODULES}", "").split(",") if m}}
    allowed = os.environ.get("{ALLOW_DISTS}")
    if allowed:
        import importlib.metadata, re
        allow = set(allowed.split(","))
        norm = lambda d: re.sub(r"[-_.]+", "-", d).lower()
        for module, dists in importlib.metadata.packages_distributions().items():
            if not any(norm(d) in allow for d in dists):
                names.add(module)
    return names


class _Hide:
    """The path finder, blind to the blocked top-level names: importing one fails as if it
    were not installed, and importlib.util.find_spec returns None for it."""

    def __init__(self, names, finder):
        self.names, self.finder = names, finder

    def find_spec(self, name, path=None, target=None):
        if path is None and name in self.names:
            return None
        return self.finder.find_spec(name, path, target)

    def __getattr__(self, attribute):
        return getattr(self.finder, attribute)


import importlib.machinery as _machinery

_names = _blocked()
sys.meta_path[:] = [
    _Hide(_names, f) if f is _machinery.PathFinder else f for f in sys.meta_path
]
'''


def no_deps_requirements(path: Path = ROOT / "requirements" / "no-deps.txt") -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def runtime_closure(pyproject: Path = ROOT / "pyproject.toml") -> set[str]:
    """Canonical names of pyproject's main dependencies and everything they require on this
    platform (their extras' requirements only where the dependency asks for the extra)."""
    env = default_environment()
    todo = [Requirement(r) for r in tomllib.loads(pyproject.read_text())["project"]["dependencies"]]
    # requirements/no-deps.txt: installed without their requirements (pyproject lists the ones
    # the runtime keeps), so only the packages themselves join the closure.
    names_only = {canonicalize_name(Requirement(r).name) for r in no_deps_requirements()}
    todo = [r for r in todo if r.marker is None or r.marker.evaluate({**env, "extra": ""})]
    done: set[tuple[str, str]] = set()
    names = {canonicalize_name("modelpress"), *names_only}
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        extras = {""} | set(req.extras)
        fresh = {e for e in extras if (name, e) not in done}
        if not fresh:
            continue
        done |= {(name, e) for e in fresh}
        names.add(name)
        for text in importlib.metadata.requires(name) or []:
            dep = Requirement(text)
            if dep.marker is None or any(dep.marker.evaluate({**env, "extra": e}) for e in fresh):
                todo.append(dep)
    return names


def blocking_env(
    folder: Path, *, modules: tuple[str, ...] = (), allow: set[str] | None = None
) -> dict[str, str]:
    """os.environ plus what makes a subprocess refuse `modules`, or everything outside
    `allow`; `folder` receives the sitecustomize.py."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = dict(os.environ)
    paths = [str(folder), str(ROOT / "workers"), str(ROOT / "tests"), env.get("PYTHONPATH")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env[BLOCK_MODULES] = ",".join(modules)
    if allow is not None:
        env[ALLOW_DISTS] = ",".join(sorted(allow))
    return env
