"""deploy/ checked without a Docker engine or a cluster.

The compose file is validated against the compose-spec schema vendored by check-jsonschema,
every Kubernetes manifest against the schemas kubernetes-validate ships (strict: unknown fields
fail), and the Dockerfile is parsed for the properties that matter: multi-stage, non-root,
no build tools in the runtime images. Every environment variable the deploy files hand to
ModelPress must be one the code reads; that list is parsed from platform/ and workers/.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
ENV_EXAMPLE = DEPLOY / ".env.example"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
K8S = DEPLOY / "k8s"

APP_SERVICES = ("migrate", "web", "worker-cpu", "worker-convert", "worker-gpu")
WORKERS = {"worker-cpu": "cpu", "worker-convert": "convert", "worker-gpu": "gpu"}
WORKER_DEPLOYMENTS = (
    "modelpress-worker-cpu",
    "modelpress-worker-convert",
    "modelpress-worker-gpu",
)
# The oldest Kubernetes the manifests are meant for, and the newest schemas the package ships.
K8S_VERSIONS = ("1.29", kubernetes_validate.utils.latest_version())

# Variables the images set for programs other than ModelPress, and who reads them.
OTHER_READERS = {
    "PATH": "the shell: the environment's python, gunicorn and celery",
    "PYTHONUNBUFFERED": "CPython: log lines reach the container log at once",
    "PYTHONDONTWRITEBYTECODE": "CPython: /app is read-only for the app user",
    "HOME": "matplotlib, Keras and torch, which keep caches under ~ (/app is read-only)",
    "NVIDIA_DRIVER_CAPABILITIES": "the NVIDIA container runtime: driver libraries to mount",
}


# --- what the application reads ---------------------------------------------------------------

_ENV_HELPERS = {"env_str", "env_bool", "env_int", "env_list"}  # config/env.py; NAME_FILE too
_ENV_CALLS = {"os.environ.get", "os.getenv", "os.environ.setdefault"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _string(node: ast.AST | None, constants: dict[str, str]) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return constants.get(node.id)
    return None


@cache
def app_env_vars() -> frozenset[str]:
    """Every environment variable platform/ and workers/ read, by name (test settings aside)."""
    names: set[str] = set()
    sources = [*(REPO / "platform").rglob("*.py"), *(REPO / "workers").rglob("*.py")]
    for path in sources:
        if "migrations" in path.parts or path.name == "settings_test.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        constants = {
            target.id: node.value.value
            for node in tree.body
            if isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
            for target in node.targets
            if isinstance(target, ast.Name)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and node.args:
                func = _dotted(node.func)
                name = _string(node.args[0], constants)
                if name and func in _ENV_HELPERS:
                    names |= {name, f"{name}_FILE"}
                elif name and func in _ENV_CALLS:
                    names.add(name)
            elif (
                isinstance(node, ast.Subscript)
                and _dotted(node.value) == "os.environ"
                and (name := _string(node.slice, constants))
            ):
                names.add(name)
    return frozenset(names)


def _setting_default(name: str) -> str:
    """The literal default of `NAME = env_str(...) or "default"` in settings.py."""
    tree = ast.parse((REPO / "platform" / "config" / "settings.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and [_dotted(t) for t in node.targets] == [name]
            and isinstance(node.value, ast.BoolOp)
            and isinstance(node.value.values[-1], ast.Constant)
        ):
            return node.value.values[-1].value
    raise AssertionError(f"settings.py has no `{name} = env_str(...) or '<default>'`")


def test_it_finds_the_variables_the_code_reads():
    # Guards the parser itself: a vacuous list would let every later check pass.
    expected = {
        "DATABASE_URL",
        "CELERY_BROKER_URL",
        "SECRET_KEY",
        "SECRET_KEY_FILE",
        "MODELPRESS_PRODUCTION",
        "MODELPRESS_TFLITE_PYTHON",
        "DJANGO_SETTINGS_MODULE",
    }
    assert expected <= app_env_vars()
    assert "NOT_A_SETTING" not in app_env_vars()


# --- Dockerfile -----------------------------------------------------------------------------


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)


def _instructions(text: str) -> list[tuple[str, str]]:
    out, current = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # comment lines inside a continuation are dropped too, as Docker does
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        keyword, _, rest = current.partition(" ")
        out.append((keyword.upper(), rest.strip()))
        current = ""
    return out


def _substitute(value: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m[1] or m[2], m[0]), value)


@cache
def dockerfile() -> tuple[dict[str, str], dict[str, Stage]]:
    global_args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    stage: Stage | None = None
    for keyword, rest in _instructions(DOCKERFILE.read_text(encoding="utf-8")):
        if keyword == "ARG" and stage is None:
            name, _, default = rest.partition("=")
            global_args[name] = default.strip('"')
        elif keyword == "FROM":
            parts = rest.split()
            assert len(parts) == 3 and parts[1].upper() == "AS", f"unnamed stage: FROM {rest}"
            stage = Stage(name=parts[2], base=_substitute(parts[0], global_args))
            stages[stage.name] = stage
        else:
            assert stage is not None, f"{keyword} before the first FROM"
            stage.instructions.append((keyword, rest))
    return global_args, stages


def _chain(target: str) -> list[Stage]:
    """The target stage and the stages it is built FROM, target first."""
    _, stages = dockerfile()
    chain = [stages[target]]
    while chain[-1].base in stages:
        chain.append(stages[chain[-1].base])
    return chain


def _env_of(target: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for stage in reversed(_chain(target)):
        for keyword, rest in stage.instructions:
            if keyword == "ENV":
                env |= dict(re.findall(r"(\w+)=(\S+)", rest))
    return env


def _copied_from(target: str) -> list[str]:
    copies = []
    for stage in _chain(target):
        for keyword, rest in stage.instructions:
            if keyword == "COPY" and (m := re.match(r"--from=(\S+)", rest)):
                copies.append(m[1])
    return copies


def test_it_builds_multi_stage_images():
    _, stages = dockerfile()
    assert {"builder", "tflite-builder", "assets", "web", "worker"} <= set(stages)
    for target in ("web", "worker"):
        chain = _chain(target)
        assert chain[-1].base == "python:3.11-slim", f"{target} is not based on python:3.11-slim"
        # The environments are built elsewhere and copied in.
        assert "builder" in _copied_from(target), f"{target} does not copy the built venv"


@pytest.mark.parametrize("target", ["web", "worker"])
def test_it_runs_the_final_images_as_a_non_root_user(target):
    # The last USER of the nearest stage that sets one is the user the container runs as.
    per_stage = [[r for kw, r in stage.instructions if kw == "USER"] for stage in _chain(target)]
    users = [stage_users[-1] for stage_users in per_stage if stage_users]
    assert users, f"the {target} image never sets USER: it would run as root"
    assert users[0].split(":")[0] not in {"root", "0"}, f"the {target} image runs as {users[0]}"
    assert any(kw == "WORKDIR" for stage in _chain(target) for kw, _ in stage.instructions)


@pytest.mark.parametrize("target", ["web", "worker"])
def test_it_keeps_build_tools_and_installs_out_of_the_final_images(target):
    tools = re.compile(r"\b(apt-get install|apk add|gcc|g\+\+|build-essential|make|cmake)\b")
    for stage in _chain(target):
        for keyword, rest in stage.instructions:
            if keyword == "RUN":
                assert not tools.search(rest), f"{target}: build tools in `RUN {rest}`"
                assert "pip install" not in rest, f"{target}: installs in `RUN {rest}`"


@pytest.mark.parametrize("target", ["web", "worker"])
def test_it_health_checks_both_images(target):
    assert any(kw == "HEALTHCHECK" for kw, _ in _chain(target)[0].instructions)


def test_it_gives_only_workers_the_tflite_converter_environment():
    _, stages = dockerfile()
    tflite_runs = [rest for kw, rest in stages["tflite-builder"].instructions if kw == "RUN"]
    assert any("pip install -r /tmp/tflite.txt" in run for run in tflite_runs)
    assert any(
        kw == "COPY" and rest.split()[0] == "requirements/tflite.txt"
        for kw, rest in stages["tflite-builder"].instructions
    )
    assert "tflite-builder" in _copied_from("worker")
    assert "tflite-builder" not in _copied_from("web")
    python = _env_of("worker")["MODELPRESS_TFLITE_PYTHON"]
    assert python.startswith("/opt/venv-tflite/"), python
    assert "MODELPRESS_TFLITE_PYTHON" in app_env_vars()


def test_it_pins_torch_exactly_as_the_makefile_does():
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    make_pins = re.search(r"^TORCH_PINS\s*:=\s*(.+)$", makefile, re.MULTILINE)
    assert make_pins, "the Makefile has no TORCH_PINS"
    _, stages = dockerfile()
    args = dict(
        rest.partition("=")[::2] for kw, rest in stages["builder"].instructions if kw == "ARG"
    )
    assert args["TORCH_PINS"].strip('"').split() == make_pins[1].split()
    assert any("pip install ${TORCH_PINS}" in rest for _, rest in stages["builder"].instructions)


@pytest.mark.parametrize("target", ["web", "worker"])
def test_it_sets_only_variables_someone_reads_in_the_images(target):
    unknown = set(_env_of(target)) - app_env_vars() - set(OTHER_READERS)
    assert not unknown, f"the {target} image sets variables nothing reads: {sorted(unknown)}"


def test_it_sends_everything_the_dockerfile_copies_in_the_build_context():
    lines = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*", ".dockerignore should start from nothing and allow what is copied"
    allowed = [p[1:] for p in patterns if p.startswith("!")]
    _, stages = dockerfile()
    sources = [
        source
        for stage in stages.values()
        for kw, rest in stage.instructions
        if kw == "COPY" and not rest.startswith("--from")
        for source in rest.split()[:-1]
    ]
    assert sources
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: no such path in the repository"
        assert any(source == a or source.startswith(f"{a}/") for a in allowed), (
            f"COPY {source}: excluded from the build context by .dockerignore"
        )
    for heavy in (".venv", ".venv-tflite", "var", "node_modules", ".git", "tests"):
        assert not any(heavy == a or heavy.startswith(f"{a}/") for a in allowed), heavy


# --- docker compose ---------------------------------------------------------------------------

_INTERPOLATION = re.compile(r"\$\{(\w+)(?::?([-?])([^}]*))?\}|\$(\w+)")


def _env_example() -> dict[str, str]:
    lines = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    pairs = [line.partition("=") for line in lines if line and not line.startswith("#")]
    return {name.strip(): value for name, _, value in pairs}


def _interpolate(value: Any, env: dict[str, str], used: set[str]) -> Any:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR:?error} and $$, from deploy/.env.example."""
    if isinstance(value, dict):
        return {k: _interpolate(v, env, used) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env, used) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        name = match[1] or match[4]
        used.add(name)
        if env.get(name):
            return env[name]
        if match[2] == "-":
            return match[3]
        raise AssertionError(f"${{{name}}} has no value in .env.example and no default")

    parts = value.split("$$")  # an escaped dollar reaches the container as one `$`
    return "$".join(_INTERPOLATION.sub(one, part) for part in parts)


@cache
def compose_raw() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


@cache
def compose() -> dict[str, Any]:
    return _interpolate(compose_raw(), _env_example(), set())


def _queues(command: list[str]) -> str:
    for flag in ("--queues", "-Q"):
        if flag in command:
            return command[command.index(flag) + 1]
    raise AssertionError(f"no --queues in {command}")


def test_it_writes_a_compose_file_the_compose_spec_accepts():
    schema_text = files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json")
    schema = json.loads(schema_text.read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    errors = [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in validator.iter_errors(compose())
    ]
    assert not errors, "\n".join(errors)


def test_it_passes_the_check_jsonschema_command_line_as_written():
    # What an operator or a pre-commit hook runs on the file as it is (not interpolated).
    proc = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
         str(COMPOSE)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_it_documents_every_compose_variable_in_the_env_example():
    used: set[str] = set()
    _interpolate(compose_raw(), _env_example(), used)
    missing = used - set(_env_example())
    assert not missing, f"variables the compose file uses but .env.example lacks: {missing}"
    placeholders = {k for k, v in _env_example().items() if "REPLACE-ME" in v}
    assert {"SECRET_KEY", "POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD"} <= placeholders


def test_it_runs_every_service_the_production_stack_needs():
    services = compose()["services"]
    expected = {"postgres", "redis", "minio", "minio-init", *APP_SERVICES}
    assert expected <= set(services)
    for name, service in services.items():
        if service.get("restart") != "no":
            assert "healthcheck" in service, f"{name} runs for good but has no healthcheck"


def test_it_starts_the_app_only_after_its_services_and_the_migrations():
    services = compose()["services"]
    assert services["migrate"]["depends_on"]["postgres"] == {"condition": "service_healthy"}
    assert services["minio-init"]["depends_on"]["minio"] == {"condition": "service_healthy"}
    for name in ("web", *WORKERS):
        deps = services[name]["depends_on"]
        assert deps["postgres"]["condition"] == "service_healthy", name
        assert deps["redis"]["condition"] == "service_healthy", name
        assert deps["migrate"]["condition"] == "service_completed_successfully", name


def test_it_migrates_in_a_one_shot_service():
    migrate = compose()["services"]["migrate"]
    assert migrate["command"][:3] == ["python", "manage.py", "migrate"]
    assert migrate["restart"] == "no"


def test_it_builds_each_app_service_from_a_dockerfile_target():
    _, stages = dockerfile()
    for name in APP_SERVICES:
        build = compose()["services"][name]["build"]
        context = (COMPOSE.parent / build["context"]).resolve()
        assert context == REPO, f"{name}: the build context must be the repository root"
        assert (context / build["dockerfile"]).resolve() == DOCKERFILE
        assert build["target"] in stages
    assert compose()["services"]["web"]["build"]["target"] == "web"
    assert {compose()["services"][w]["build"]["target"] for w in WORKERS} == {"worker"}


def test_it_routes_each_worker_to_the_queue_the_settings_name():
    services = compose()["services"]
    assert _queues(services["worker-cpu"]["command"]) == _setting_default(
        "CELERY_TASK_DEFAULT_QUEUE"
    )
    assert _queues(services["worker-gpu"]["command"]) == _setting_default("MODELPRESS_GPU_QUEUE")
    # Conversions at upload have a worker of their own, which reads nothing else.
    assert _queues(services["worker-convert"]["command"]) == _setting_default(
        "MODELPRESS_CONVERT_QUEUE"
    )
    assert "deploy" not in services["worker-convert"]


def test_it_gives_the_gpu_worker_an_nvidia_gpu():
    devices = compose()["services"]["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    assert "deploy" not in compose()["services"]["worker-cpu"]


def test_it_keeps_files_in_minio_so_web_and_workers_share_no_disk():
    services = compose()["services"]
    bucket_made = services["minio-init"]["environment"]["MINIO_BUCKET"]
    for name in ("web", *WORKERS):
        service = services[name]
        env = service["environment"]
        assert env["MODELPRESS_S3_BUCKET"] == bucket_made, name
        assert env["MODELPRESS_S3_ENDPOINT_URL"] == "http://minio:9000", name
        assert env["MODELPRESS_S3_ACCESS_KEY_ID"] and env["MODELPRESS_S3_SECRET_ACCESS_KEY"]
        assert service["depends_on"]["minio-init"] == {
            "condition": "service_completed_successfully"
        }, name
        target = "web" if name == "web" else "worker"
        media_root = {**_env_of(target), **env}["MEDIA_ROOT"]
        mounts = {v.split(":")[1] for v in service.get("volumes", [])}
        assert media_root not in mounts, f"{name}: a media volume would hide a missing S3 setup"
    # Volumes are per service: the only ones web and the workers have in common are none.
    shared = set.intersection(
        *({v.split(":")[0] for v in services[n].get("volumes", [])} for n in ("web", *WORKERS))
    )
    assert not shared, shared


def test_it_sets_only_variables_the_app_reads_in_compose():
    for name in APP_SERVICES:
        unknown = set(compose()["services"][name]["environment"]) - app_env_vars()
        assert not unknown, f"{name} sets variables ModelPress does not read: {sorted(unknown)}"


# --- Kubernetes -------------------------------------------------------------------------------


@cache
def manifests() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc:
                docs.append((str(path.relative_to(K8S)), doc))
    return docs


def _one(kind: str, name: str) -> dict[str, Any]:
    found = [d for _, d in manifests() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def _pod(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def _workloads() -> list[dict[str, Any]]:
    return [d for _, d in manifests() if d["kind"] in {"Deployment", "Job"}]


def test_it_validates_every_manifest_against_the_kubernetes_schemas():
    assert len(manifests()) >= 9
    for version in K8S_VERSIONS:
        for path, doc in manifests():
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                where = "/".join(map(str, exc.path))
                pytest.fail(f"{path}: {doc['kind']} {where}: {exc.message} (k8s {version})")


def test_it_runs_every_pod_as_non_root_with_resources():
    for workload in _workloads():
        pod = _pod(workload)
        name = workload["metadata"]["name"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] != 0, name
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            resources = container["resources"]
            for key in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources[key]), f"{name}/{container['name']}"
            assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_it_probes_the_web_app_on_healthz():
    from django.urls import resolve

    from web.health import PROBES

    web = _pod(_one("Deployment", "modelpress-web"))["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in web["ports"]}
    allowed_hosts = _one("ConfigMap", "modelpress")["data"]["ALLOWED_HOSTS"].split(",")
    for probe_kind, probe in (("livenessProbe", "live"), ("readinessProbe", "ready")):
        http = web[probe_kind]["httpGet"]
        path, _, query = http["path"].partition("?")
        assert resolve(path).url_name == "web-healthz"
        assert query == f"probe={probe}" and probe in PROBES, http["path"]
        assert http["port"] in ports
        host = {h["name"]: h["value"] for h in http["httpHeaders"]}["Host"]
        assert host in allowed_hosts, f"{probe_kind} sends Host {host}, not in ALLOWED_HOSTS"
    # Liveness must not depend on other services, or an outage restarts every web pod.
    assert PROBES["live"] == ()
    assert "workers" not in PROBES["ready"]


def test_it_serves_the_web_deployment_through_its_service_and_ingress():
    pod_labels = _one("Deployment", "modelpress-web")["spec"]["template"]["metadata"]["labels"]
    service = _one("Service", "modelpress-web")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    web = _pod(_one("Deployment", "modelpress-web"))["containers"][0]
    assert service["spec"]["ports"][0]["targetPort"] in {p["name"] for p in web["ports"]}
    backends = [
        path["backend"]["service"]
        for rule in _one("Ingress", "modelpress-web")["spec"]["rules"]
        for path in rule["http"]["paths"]
    ]
    service_ports = {p["name"] for p in service["spec"]["ports"]}
    assert backends and all(b["name"] == "modelpress-web" for b in backends)
    assert all(b["port"]["name"] in service_ports for b in backends)


def test_it_gives_gpu_workers_a_gpu_on_gpu_nodes_and_cpu_workers_none():
    gpu = _pod(_one("Deployment", "modelpress-worker-gpu"))
    cpu = _pod(_one("Deployment", "modelpress-worker-cpu"))
    assert int(gpu["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    assert gpu["nodeSelector"], "the gpu worker needs a node selector"
    assert any(t["key"] == "nvidia.com/gpu" for t in gpu["tolerations"])
    assert "nvidia.com/gpu" not in cpu["containers"][0]["resources"]["limits"]
    assert _queues(gpu["containers"][0]["command"]) == _setting_default("MODELPRESS_GPU_QUEUE")
    assert _queues(cpu["containers"][0]["command"]) == _setting_default("CELERY_TASK_DEFAULT_QUEUE")


def test_it_runs_conversions_on_a_worker_deployment_of_their_own():
    convert = _pod(_one("Deployment", "modelpress-worker-convert"))
    container = convert["containers"][0]
    assert _queues(container["command"]) == _setting_default("MODELPRESS_CONVERT_QUEUE")
    assert "--concurrency" in container["command"]
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    # No job worker reads the convert queue: a conversion must not wait behind a job.
    for name in ("modelpress-worker-cpu", "modelpress-worker-gpu"):
        command = _pod(_one("Deployment", name))["containers"][0]["command"]
        assert "convert" not in _queues(command).split(","), name


def test_it_gives_workers_guaranteed_cpus():
    # Whole CPUs: the engine's thread count is the quota rounded down; and only a Guaranteed
    # pod (requests == limits in every container) gets exclusive cores from the kubelet's
    # static CPU manager.
    for name in WORKER_DEPLOYMENTS:
        pod = _pod(_one("Deployment", name))
        for container in [*pod["initContainers"], *pod["containers"]]:
            resources = container["resources"]
            assert resources["requests"] == resources["limits"], f"{name}/{container['name']}"
            assert float(resources["limits"]["cpu"]).is_integer(), f"{name}: whole CPUs"


def test_it_migrates_in_a_job_and_makes_the_app_wait_for_it():
    job = _pod(_one("Job", "modelpress-migrate"))["containers"][0]
    assert job["command"] == ["python", "manage.py", "migrate", "--noinput"]
    for name in ("modelpress-web", *WORKER_DEPLOYMENTS):
        init = _pod(_one("Deployment", name))["initContainers"]
        assert any("--check" in c["command"] and "migrate" in c["command"] for c in init), name


def test_it_keeps_files_in_s3_so_no_pod_needs_a_shared_volume():
    config = _one("ConfigMap", "modelpress")["data"]
    assert config["MODELPRESS_S3_BUCKET"] and config["MODELPRESS_S3_ENDPOINT_URL"]
    secret = _one("Secret", "modelpress")["stringData"]
    assert {"MODELPRESS_S3_ACCESS_KEY_ID", "MODELPRESS_S3_SECRET_ACCESS_KEY"} <= set(secret)
    assert not [d for _, d in manifests() if d["kind"] == "PersistentVolumeClaim"]
    for name, target in (
        ("modelpress-web", "web"),
        *((name, "worker") for name in WORKER_DEPLOYMENTS),
    ):
        pod = _pod(_one("Deployment", name))
        container = pod["containers"][0]
        assert container["securityContext"]["readOnlyRootFilesystem"], name
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        env = _env_of(target)
        assert env["MEDIA_ROOT"] not in mounts, f"{name}: files belong in the bucket"
        # The read-only root leaves these writable only through a volume: S3 reads spill to
        # FILE_UPLOAD_TEMP_DIR, jobs work in the scratch directory.
        assert env["FILE_UPLOAD_TEMP_DIR"] in mounts, name
        if target == "worker":
            assert env["MODELPRESS_SCRATCH_DIR"] in mounts, name


def test_it_sets_only_variables_the_app_reads_in_kubernetes():
    config = _one("ConfigMap", "modelpress")
    secret = _one("Secret", "modelpress")
    unknown = (set(config["data"]) | set(secret["stringData"])) - app_env_vars()
    assert not unknown, f"variables ModelPress does not read: {sorted(unknown)}"
    for workload in _workloads():
        pod = _pod(workload)
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            names = {e["name"] for e in container.get("env", [])}
            assert names <= app_env_vars(), f"{workload['metadata']['name']}: {names}"
            refs = {
                next(iter(ref)): ref[next(iter(ref))]["name"]
                for ref in container.get("envFrom", [])
            }
            assert refs == {"configMapRef": "modelpress", "secretRef": "modelpress"}


def test_it_ships_the_secret_only_as_a_marked_example_outside_the_applied_folder():
    secrets = [(path, doc) for path, doc in manifests() if doc["kind"] == "Secret"]
    assert [path for path, _ in secrets] == ["examples/secret.yaml"]
    for key, value in secrets[0][1]["stringData"].items():
        assert "REPLACE-ME" in value, f"{key} looks like a real value; mark it REPLACE-ME"


# --- documentation ----------------------------------------------------------------------------


def test_it_documents_every_variable_the_deploy_files_set():
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    names = {v for s in APP_SERVICES for v in compose()["services"][s]["environment"]}
    names |= set(_one("ConfigMap", "modelpress")["data"])
    names |= set(_one("Secret", "modelpress")["stringData"])
    names |= set(_env_of("worker")) - set(OTHER_READERS)
    missing = sorted(n for n in names if f"`{n}`" not in readme)
    assert not missing, f"deploy/README.md does not describe: {missing}"
