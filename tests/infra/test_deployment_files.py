"""The deployment files, checked without Docker or Kubernetes.

Static checks: docker-compose.yml against the Compose Specification schema, the
Kubernetes manifests with kubernetes-validate, the KEDA ScaledObjects against KEDA's
CRD schema, and the files against the code: every command exists in the CLI, every
queue has a worker service and a scaler, every AIGI_* variable is a setting, the
gateway image pulls no torch, the dashboards use metrics the gateway exports.

The third-party schemas are read from ../shared/schemas (never copied into the repo);
where that folder is absent only the schema validation is skipped.

Dynamic check: two classify workers on one queue share a batch of jobs.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
import tomllib
import uuid
from collections import Counter
from collections.abc import Iterator
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from common.queues import QUEUES
from common.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT.parent / "shared" / "schemas"
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
INFRA = ROOT / "infra"
K8S = INFRA / "k8s"
GATEWAY_DOCKERFILE = INFRA / "docker" / "gateway.Dockerfile"
WORKER_DOCKERFILE = INFRA / "docker" / "worker.Dockerfile"
DASHBOARDS = INFRA / "grafana" / "dashboards"

GPU_STAGES = ("classify", "gradcam")
KEDA_GROUP = "keda.sh/"
#: Packages the gateway image must never carry.
MODEL_PACKAGES = {"torch", "torchvision", "transformers", "grad-cam"}


def _schema(name: str) -> Path:
    path = SCHEMAS / name
    if not path.exists():
        pytest.skip(
            f"{path} is absent (a fresh clone has no ../shared/schemas): schema validation "
            "skipped; the structural checks still run"
        )
    return path


# ---------------------------------------------------------------------------- loading
@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def worker_services() -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in services().items() if name.startswith("worker-")}


@cache
def k8s_documents() -> tuple[tuple[str, dict[str, Any]], ...]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((path.name, doc))
    return tuple(docs)


def k8s(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in k8s_documents() if doc["kind"] == kind}


def kustomization() -> dict[str, Any]:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not KEY=VALUE: {line!r}"
        assert key not in values, f"{path.name}: {key} twice"
        values[key] = value
    return values


def environment_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from strings(key)
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)


# Compose interpolation: $$ (a literal $), ${VAR}, ${VAR:-default}, ${VAR:?error}, $VAR.
INTERPOLATION = re.compile(
    r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
)


def compose_variables() -> dict[str, set[str]]:
    """Every variable the compose file interpolates, with the operators it is used with."""
    found: dict[str, set[str]] = {}
    for text in strings(compose()):
        for match in INTERPOLATION.finditer(text):
            name = match["name"] or match["bare"]
            if name:
                found.setdefault(name, set()).add(match["op"] or "")
    return found


def interpolate(text: str, values: dict[str, str]) -> str:
    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match["name"] or match["bare"]
        value = values.get(name, "")
        op, arg = match["op"] or "", match["arg"] or ""
        if op in (":-", "-") and not value:
            return arg
        if op in (":?", "?") and not value:
            raise AssertionError(f"compose would stop: {name} unset ({arg})")
        return value

    return INTERPOLATION.sub(substitute, text)


def duration_seconds(text: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text):
        total += float(number) * units[unit]
    assert total > 0, f"cannot read the duration {text!r}"
    return total


def task_time_limit(configured: dict[str, str], stage: str | None = None) -> int:
    """The hard time limit of ``stage``'s tasks (the LLM stage has its own)."""
    field = "explain_time_limit_seconds" if stage == "explain" else "task_time_limit_seconds"
    default = Settings.model_fields[field].default
    return int(configured.get(f"AIGI_{field.upper()}", default))


# ---------------------------------------------------------------------------- the CLI
def parse_aigi(argv: list[str]) -> tuple[str, dict[str, Any]]:
    """Parse an `aigi ...` command line with the real typer app, without running it."""
    import typer.main

    from services.cli.main import app

    assert argv and argv[0] == "aigi", argv
    group: Any = typer.main.get_command(app)
    name, *args = argv[1:]
    command = group.commands.get(name)
    assert command is not None, f"`aigi {name}` is not a command of the CLI"
    try:
        ctx = command.make_context(name, list(args))
    except Exception as exc:  # typer's (vendored) click UsageError and subclasses
        describe = getattr(exc, "format_message", None)
        message = describe() if describe else str(exc)
        raise AssertionError(f"`{' '.join(argv)}`: {message}") from exc
    return name, ctx.params


def check_worker_command(argv: list[str], stage: str) -> None:
    name, params = parse_aigi(argv)
    assert name == "worker" and params["stage"] == stage, argv
    assert params["hostname"] == f"{stage}@%h", (
        "the worker's Celery node is <stage>@<hostname>, which its health check pings"
    )


def test_cli_worker_takes_every_queue() -> None:
    from typer.testing import CliRunner

    from services.cli.main import app

    result = CliRunner().invoke(app, ["worker", "--help"])
    assert result.exit_code == 0, result.output
    for option in ("--concurrency", "--hostname"):
        assert option in result.output
    for queue in QUEUES:
        assert parse_aigi(["aigi", "worker", queue])[1]["stage"] == queue
    with pytest.raises(AssertionError, match="No such option"):
        parse_aigi(["aigi", "worker", "classify", "--no-such-option"])


# ---------------------------------------------------------------------------- compose
def test_compose_matches_the_compose_spec(tmp_path: Path) -> None:
    schema = _schema("compose-spec.json")

    def check(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "check_jsonschema", "--schemafile", str(schema), str(path)],
            capture_output=True,
            text=True,
            timeout=60,
        )

    result = check(COMPOSE_FILE)
    assert result.returncode == 0, result.stdout + result.stderr
    # The validator does see into the YAML anchors: a typo in a merged block fails.
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(
        COMPOSE_FILE.read_text().replace("x-gpu: &gpu\n  resources:", "x-gpu: &gpu\n  resourcez:")
    )
    assert check(broken).returncode != 0


def test_compose_has_the_whole_stack() -> None:
    expected = {"postgres", "redis", "tgi", "migrate", "gateway", "scheduler", "flower"}
    expected |= {"prometheus", "grafana"} | {f"worker-{queue}" for queue in QUEUES}
    assert expected <= set(services())
    assert set(worker_services()) == {f"worker-{queue}" for queue in QUEUES}

    postgres, redis = services()["postgres"], services()["redis"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert any(v.endswith(":/var/lib/postgresql/data") for v in postgres["volumes"])
    assert "--appendonly yes" in " ".join(redis["command"]), "Redis keeps an append-only file"
    assert any(v.endswith(":/data") for v in redis["volumes"])
    assert "redis-cli" in " ".join(redis["healthcheck"]["test"])


def test_compose_tgi_serves_mistral_on_a_gpu() -> None:
    tgi = services()["tgi"]
    _, _, tag = tgi["image"].rpartition(":")
    assert re.fullmatch(r"\d+\.\d+\.\d+", tag), f"pin a TGI release, not {tag!r}"
    command = tgi["command"]
    model_id = command[command.index("--model-id") + 1]
    assert "/health" in " ".join(tgi["healthcheck"]["test"])
    assert any(v.endswith(":/data") for v in tgi["volumes"]), "a model cache volume"
    assert "HF_TOKEN" in environment_of(tgi)
    assert gpu_devices(tgi)
    for name in ("gateway", "worker-explain"):
        llm_url = environment_of(services()[name])["AIGI_LLM_URL"]
        assert llm_url == "http://tgi:80", llm_url
        assert environment_of(services()[name])["AIGI_LLM_MODEL"] == model_id


def gpu_devices(service: dict[str, Any]) -> list[dict[str, Any]]:
    devices = service.get("deploy", {}).get("resources", {}).get("reservations", {})
    return [d for d in devices.get("devices", []) if "gpu" in d.get("capabilities", [])]


def test_compose_workers_one_per_queue() -> None:
    import celery

    from services.worker import app as celery_app

    # `celery -A services.worker` (health checks, Flower) finds the app there.
    assert isinstance(celery_app, celery.Celery)
    for queue in QUEUES:
        limit = task_time_limit(environment_of(services()["gateway"]), queue)
        worker = services()[f"worker-{queue}"]
        check_worker_command(worker["command"], queue)
        ping = " ".join(worker["healthcheck"]["test"])
        assert "celery -A services.worker inspect ping" in ping
        assert f"-d {queue}@$$HOSTNAME" in ping
        # Celery's warm shutdown lets the running task finish before the container stops.
        assert duration_seconds(worker["stop_grace_period"]) > limit
        assert task_time_limit(environment_of(worker), queue) == limit
        assert "replicas" in worker["deploy"]
        if queue in GPU_STAGES:
            assert gpu_devices(worker), f"worker-{queue} reserves a GPU"
            assert worker["image"].startswith("aigi-worker:")
            assert environment_of(worker)["AIGI_MODEL_DEVICE"] == "cuda"
        else:
            assert not gpu_devices(worker), f"worker-{queue} runs on the CPU"
            assert worker["image"].startswith("aigi-gateway:"), "no torch needed"


def test_compose_aigi_commands_exist_in_the_cli() -> None:
    commands = {
        name: svc["command"]
        for name, svc in services().items()
        if isinstance(svc.get("command"), list) and svc["command"][:1] == ["aigi"]
    }
    parsed = {name: parse_aigi(argv) for name, argv in commands.items()}
    assert parsed["migrate"][0] == "migrate"
    assert parsed["scheduler"][0] == "scheduler"
    gateway = parsed["gateway"]
    assert gateway[0] == "gateway" and gateway[1]["host"] == "0.0.0.0"
    assert gateway[1]["port"] == 8000
    assert services()["scheduler"]["deploy"]["replicas"] == 1, "run exactly one scheduler"
    flower = services()["flower"]["command"]
    assert flower[:3] == ["celery", "-A", "services.worker"] and "flower" in flower


def test_compose_dependencies_wait_for_health() -> None:
    ours = {n for n, s in services().items() if str(s.get("image", "")).startswith("aigi-")}
    for name, service in services().items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on with conditions"
        for target, rule in depends.items():
            condition = rule["condition"]
            if condition == "service_healthy":
                check = services()[target].get("healthcheck", {})
                assert check.get("test") and not check.get("disable"), (
                    f"{name} waits for {target} to be healthy, which has no healthcheck"
                )
            elif condition == "service_completed_successfully":
                assert target == "migrate", (name, target)
        if name in ours - {"migrate", "flower"}:
            assert depends["postgres"]["condition"] == "service_healthy", name
            assert depends["redis"]["condition"] == "service_healthy", name
            assert depends["migrate"]["condition"] == "service_completed_successfully", name
    assert services()["migrate"]["command"] == ["aigi", "migrate"]
    assert services()["migrate"]["restart"] == "no"


def test_compose_mounts_exist() -> None:
    for name, service in services().items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which is missing"
            else:
                assert source in compose()["volumes"], f"{name}: undeclared volume {source}"


def test_env_example_lists_every_compose_variable() -> None:
    used = compose_variables()
    example = env_file(ENV_EXAMPLE)
    assert set(used) == set(example), (
        f"only in docker-compose.yml: {sorted(set(used) - set(example))}; "
        f"only in .env.example: {sorted(set(example) - set(used))}"
    )
    for name, ops in used.items():
        if ":?" in ops:
            assert example[name] == "", f".env.example must not carry a value for {name}"


def test_compose_settings_are_settings() -> None:
    """Every AIGI_* variable compose sets is a field of Settings, and the values validate
    (production mode) once the secrets are filled in."""
    assert Settings.model_config["env_prefix"] == "AIGI_"
    values = env_file(ENV_EXAMPLE)
    for name, ops in compose_variables().items():
        if ":?" in ops:
            values[name] = secrets.token_urlsafe(48)
    aigi_vars = {k for k in env_file(ENV_EXAMPLE) if k.startswith("AIGI_")}
    for name, service in services().items():
        env = environment_of(service)
        aigi_vars |= {k for k in env if k.startswith("AIGI_")}
        if str(service.get("image", "")).startswith("aigi-"):
            resolved = {k: interpolate(v, values) for k, v in env.items()}
            settings = settings_from(resolved)
            assert settings.environment == "production", name
            assert settings.redis_url.startswith("redis://:"), "Redis needs its password"
    unknown = sorted(v for v in aigi_vars if v[5:].lower() not in Settings.model_fields)
    assert not unknown, f"not settings (common/settings.py): {unknown}"


def settings_from(env: dict[str, str]) -> Settings:
    fields = {k[5:].lower(): v for k, v in env.items() if k.startswith("AIGI_")}
    # Validation of exactly these values (no environment, no .env file), defaults for the rest.
    return Settings.model_validate(fields)


# ---------------------------------------------------------------------------- Dockerfiles
def pip_installs(dockerfile: Path) -> list[str]:
    text = dockerfile.read_text().replace("\\\n", " ")
    return [m.group(1) for m in re.finditer(r"pip install (?!--upgrade)([^&\n]+)", text)]


def assert_supported_python(dockerfile_text: str) -> None:
    """The image's Python is one the package declares (``requires-python``)."""
    from packaging.specifiers import SpecifierSet

    match = re.search(r"^ARG PYTHON_IMAGE=python:(\d+\.\d+)[-\w.]*$", dockerfile_text, re.M)
    assert match, "the Python base image is an ARG PYTHON_IMAGE=python:X.Y..."
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert match.group(1) in SpecifierSet(project["requires-python"]), match.group(1)


def test_gateway_dockerfile_installs_the_base_set_only() -> None:
    text = GATEWAY_DOCKERFILE.read_text()
    assert_supported_python(text)
    installs = pip_installs(GATEWAY_DOCKERFILE)
    assert len(installs) == 1, installs
    targets = installs[0].split()
    assert "." in targets, "the gateway image installs the package itself: `pip install .`"
    assert not [t for t in targets if "[" in t or canonicalize_name(t) in MODEL_PACKAGES]
    assert_non_root(text)
    assert re.search(r"^HEALTHCHECK .*\n?.*/healthz", text, re.M)


def test_worker_dockerfile_installs_the_model_extra() -> None:
    text = WORKER_DOCKERFILE.read_text()
    assert_supported_python(text)
    (install,) = pip_installs(WORKER_DOCKERFILE)
    assert '".[ml]"' in install.split()
    assert_non_root(text)
    assert re.search(r"HEALTHCHECK[^\n]*\n[^\n]*celery -A services\.worker inspect ping", text)
    # The shipped checkpoint reaches the image as package data.
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert {"*.json", "*.safetensors"} <= set(package_data["package-data"]["*"])
    for dockerfile in (GATEWAY_DOCKERFILE, WORKER_DOCKERFILE):
        assert re.search(r"^COPY common \./common$", dockerfile.read_text(), re.M)


def assert_non_root(text: str) -> None:
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0"), users


def dependency_closure(requirements: list[str]) -> set[str]:
    """The installed distributions a list of requirements pulls in, extras included."""
    names: set[str] = set()
    expanded: set[tuple[str, str]] = set()
    # (requirement, the extra of the distribution that declares it: "" for the base set)
    pending = [(Requirement(r), "") for r in requirements]
    while pending:
        requirement, declared_for = pending.pop()
        if requirement.marker and not requirement.marker.evaluate({"extra": declared_for}):
            continue
        name = canonicalize_name(requirement.name)
        names.add(name)
        try:
            requires = metadata.requires(requirement.name) or []
        except metadata.PackageNotFoundError:
            continue  # not installed here (another platform's dependency)
        for extra in ("", *sorted(requirement.extras)):
            if (name, extra) not in expanded:
                expanded.add((name, extra))
                pending.extend((Requirement(r), extra) for r in requires)
    return names


def test_gateway_dependencies_do_not_pull_torch() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = dependency_closure(project["dependencies"])
    assert {"celery", "fastapi", "sqlalchemy", "kombu", "redis"} <= base
    assert not base & MODEL_PACKAGES, sorted(base & MODEL_PACKAGES)
    # The walk does find torch where it is: through the `ml` extra.
    assert "torch" in dependency_closure(project["optional-dependencies"]["ml"])


# ---------------------------------------------------------------------------- Kubernetes
def test_kustomization_lists_every_manifest() -> None:
    kust = kustomization()
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kust["resources"]) == files
    (generator,) = kust["secretGenerator"]
    assert generator["name"] == "aigi-secrets"
    assert generator["envs"] == ["secret.env"]
    assert (K8S / "secret.env.example").exists()
    assert "secret.env" in (K8S / ".gitignore").read_text().split()
    assert {i["name"] for i in kust["images"]} == {"aigi-gateway", "aigi-worker"}


def test_k8s_manifests_validate() -> None:
    import kubernetes_validate

    version = kubernetes_validate.latest_version()
    checked = 0
    for path, doc in k8s_documents():
        if doc["apiVersion"].startswith(KEDA_GROUP):
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(f"{path}: {doc['kind']} {doc['metadata']['name']}: {exc}") from exc
        checked += 1
    assert checked >= 10
    # Strict mode rejects an unknown field.
    deployment = json.loads(json.dumps(k8s("Deployment")["gateway"]))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, version, strict=True)


def closed(schema: Any) -> Any:
    """The CRD schema with unknown fields rejected, as the API server's strict field
    validation does (a structural schema prunes them silently otherwise)."""
    if isinstance(schema, list):
        return [closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: closed(value) for key, value in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def test_scaled_objects_validate_against_the_keda_crd() -> None:
    from jsonschema import Draft202012Validator

    crd = yaml.safe_load(_schema("keda.sh_scaledobjects.yaml").read_text())
    versions = {v["name"]: v["schema"]["openAPIV3Schema"] for v in crd["spec"]["versions"]}
    scaled = k8s("ScaledObject")
    assert scaled
    for name, doc in scaled.items():
        group, version = doc["apiVersion"].split("/")
        assert group == crd["spec"]["group"] and version in versions
        validator = Draft202012Validator(closed(versions[version]))
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]
        assert not errors, f"ScaledObject {name}: {errors}"
    doc = json.loads(json.dumps(next(iter(scaled.values()))))
    doc["spec"]["triggers"][0]["metadata"]["listLength"] = 5  # must be a string
    doc["spec"]["maxReplicas"] = 3  # not a field
    assert len(list(validator.iter_errors(doc))) == 2


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["template"]["spec"]


def container_env_sources(container: dict[str, Any]) -> set[str]:
    """Every variable name the container gets: env, and envFrom the ConfigMap/Secret."""
    names = {e["name"] for e in container.get("env", [])}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            names |= set(k8s("ConfigMap")[source["configMapRef"]["name"]]["data"])
        else:
            assert source["secretRef"]["name"] == "aigi-secrets"
            names |= set(env_file(K8S / "secret.env.example"))
    return names


def test_k8s_workers_scale_on_their_queue() -> None:
    deployments, scaled = k8s("Deployment"), k8s("ScaledObject")
    config = k8s("ConfigMap")["aigi-config"]["data"]
    redis_url = env_file(K8S / "secret.env.example")["AIGI_REDIS_URL"]
    redis_db = redis_url.rsplit("/", 1)[1]
    by_queue = {}
    for doc in scaled.values():
        (trigger,) = doc["spec"]["triggers"]
        assert trigger["type"] == "redis"
        by_queue[trigger["metadata"]["listName"]] = doc
    assert set(by_queue) == set(QUEUES)
    for queue in QUEUES:
        doc, trigger = by_queue[queue], by_queue[queue]["spec"]["triggers"][0]["metadata"]
        name = f"worker-{queue}"
        assert doc["spec"]["scaleTargetRef"]["name"] == name
        assert int(trigger["listLength"]) >= 1
        assert trigger["databaseIndex"] == redis_db
        assert 1 <= doc["spec"]["minReplicaCount"] <= doc["spec"]["maxReplicaCount"]
        spec = pod_spec(deployments[name])
        (container,) = spec["containers"]
        assert doc["spec"]["scaleTargetRef"].get("envSourceContainerName", "worker") == "worker"
        env = container_env_sources(container)
        for key in ("addressFromEnv", "passwordFromEnv"):
            assert trigger[key] in env, f"{name} lacks {trigger[key]} for KEDA"
        check_worker_command(container["command"], queue)
        # Warm shutdown: the running task finishes before the pod is killed.
        assert spec["terminationGracePeriodSeconds"] > task_time_limit(config, queue)
        probe = " ".join(container["livenessProbe"]["exec"]["command"])
        assert f'inspect ping --timeout 10 -d "{queue}@$HOSTNAME"' in probe
        gpus = {
            part: container["resources"].get(part, {}).get("nvidia.com/gpu")
            for part in ("requests", "limits")
        }
        if queue in GPU_STAGES:
            assert gpus == {"requests": 1, "limits": 1}, name
            assert container["image"] == "aigi-worker"
        else:
            assert gpus == {"requests": None, "limits": None}, name
            assert container["image"] == "aigi-gateway"
        assert "replicas" not in deployments[name]["spec"], "KEDA owns the replica count"


def test_k8s_gateway_scheduler_and_migrations() -> None:
    deployments = k8s("Deployment")
    (gateway,) = pod_spec(deployments["gateway"])["containers"]
    name, params = parse_aigi(gateway["command"])
    assert name == "gateway" and params["host"] == "0.0.0.0"
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz"
    ports = {p["name"]: p["containerPort"] for p in gateway["ports"]}
    assert ports[gateway["readinessProbe"]["httpGet"]["port"]] == params["port"]

    scheduler = deployments["scheduler"]
    assert (
        scheduler["spec"]["replicas"] == 1 and scheduler["spec"]["strategy"]["type"] == "Recreate"
    )
    assert parse_aigi(pod_spec(scheduler)["containers"][0]["command"])[0] == "scheduler"
    (job,) = k8s("Job").values()
    assert parse_aigi(pod_spec(job)["containers"][0]["command"])[0] == "migrate"

    # Every pod of ours runs as the image's non-root user.
    for doc in [*deployments.values(), job]:
        if doc["metadata"]["name"] == "tgi":
            continue
        assert pod_spec(doc)["securityContext"]["runAsNonRoot"] is True


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_k8s_services_and_disruption_budgets_select_pods() -> None:
    pods = {n: d["spec"]["template"]["metadata"]["labels"] for n, d in k8s("Deployment").items()}
    for name, labels in pods.items():
        assert selects(k8s("Deployment")[name]["spec"]["selector"]["matchLabels"], labels)
    for name, service in k8s("Service").items():
        assert [p for p in pods.values() if selects(service["spec"]["selector"], p)], name
    budgets = k8s("PodDisruptionBudget")
    for name in ["gateway", *(f"worker-{q}" for q in QUEUES)]:
        assert selects(budgets[name]["spec"]["selector"]["matchLabels"], pods[name]), name


def test_k8s_settings_are_settings() -> None:
    config = k8s("ConfigMap")["aigi-config"]["data"]
    secret = env_file(K8S / "secret.env.example")
    names = {k for k in [*config, *secret] if k.startswith("AIGI_")}
    for _, doc in k8s_documents():
        if doc["kind"] in ("Deployment", "Job"):
            for container in pod_spec(doc)["containers"]:
                names |= {e["name"] for e in container.get("env", [])}
    names = {n for n in names if n.startswith("AIGI_")}
    unknown = sorted(n for n in names if n[5:].lower() not in Settings.model_fields)
    assert not unknown, f"not settings (common/settings.py): {unknown}"
    for key in ("AIGI_SECRET_KEY", "REDIS_PASSWORD", "HF_TOKEN"):
        assert secret[key] == "", f"secret.env.example must not carry a value for {key}"
    filled = {**config, **secret, "AIGI_SECRET_KEY": secrets.token_urlsafe(48)}
    assert settings_from(filled).environment == "production"


# ---------------------------------------------------------------------------- monitoring
def exported_metric_names() -> set[str]:
    """The sample names the gateway's collector exports (run against nothing reachable)."""
    from types import SimpleNamespace

    from services.gateway.metrics import PipelineCollector

    class NoRedis:
        def llen(self, name: str) -> int:
            raise ConnectionError("no redis in this test")

    settings = SimpleNamespace(database_url="postgresql+psycopg://nobody@127.0.0.1:9/none")
    state = SimpleNamespace(settings=settings, redis=NoRedis())
    names = set()
    for family in PipelineCollector(state).collect():  # type: ignore[arg-type]
        if family.type == "histogram":
            names |= {f"{family.name}_{s}" for s in ("bucket", "sum", "count")}
        else:
            names.add(family.name)
    return names


def promql_metrics(expr: str) -> set[str]:
    return set(re.findall(r"\baigi_[a-z_]+\b", expr))


def test_dashboard_and_alerts_use_exported_metrics() -> None:
    exported = exported_metric_names()
    assert {"aigi_jobs", "aigi_verdicts", "aigi_queue_depth", "aigi_stage_failures"} <= exported
    assert "aigi_stage_duration_seconds_bucket" in exported

    datasource = yaml.safe_load(
        (INFRA / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"][0]
    assert datasource["type"] == "prometheus"
    assert urlparse(datasource["url"]).hostname in services(), "a compose service"
    provider = yaml.safe_load(
        (INFRA / "grafana" / "provisioning" / "dashboards" / "aigi.yml").read_text()
    )["providers"][0]
    grafana_mounts = dict(v.split(":")[:2] for v in services()["grafana"]["volumes"])
    assert grafana_mounts["./infra/grafana/dashboards"] == provider["options"]["path"]

    dashboards = sorted(DASHBOARDS.glob("*.json"))
    assert dashboards
    used: set[str] = set()
    for path in dashboards:
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                assert target["datasource"]["uid"] == datasource["uid"], panel["title"]
                used |= promql_metrics(target["expr"])
    assert used <= exported, sorted(used - exported)
    # Queue depth, stage latency, verdict mix and errors are all on the dashboard.
    for metric in ("aigi_queue_depth", "aigi_stage_duration_seconds_bucket"):
        assert metric in used
    assert {"aigi_verdicts", "aigi_stage_failures"} <= used

    rules = yaml.safe_load((INFRA / "prometheus" / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert promql_metrics(rule["expr"]) <= exported, rule["alert"]


def test_prometheus_scrapes_the_gateway() -> None:
    config = yaml.safe_load((INFRA / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    gateway = jobs["aigi-gateway"]
    assert gateway.get("metrics_path", "/metrics") == "/metrics"
    assert gateway["static_configs"][0]["targets"] == ["gateway:8000"]
    mounts = dict(v.split(":")[:2] for v in services()["prometheus"]["volumes"])
    assert set(config["rule_files"]) <= set(mounts.values())


# ---------------------------------------------------------------------------- dynamic
@pytest.mark.slow
def test_two_classify_workers_share_one_queue(
    isolated_env: dict[str, str], worker_pool: Any
) -> None:
    """Scaling out works: two workers on the classify queue both take jobs of one batch."""
    from sqlalchemy import select

    from common.db.models import Job, JobStage
    from common.db.session import session_scope
    from tests.conftest import wait_for_workers
    from tests.helpers import image_bytes, wait_until
    from tests.integration.conftest import client_for, make_user, submit

    env = isolated_env
    worker_pool.env = env
    names = ["classify-a", "classify-b"]
    for name in names:
        worker_pool.start("classify", name=name, wait=False)
    wait_for_workers(env, names)

    user = make_user(env["AIGI_DATABASE_URL"])
    client = client_for(env)
    job_ids = []
    for seed in range(8):
        response = submit(client, user, image_bytes(seed=300 + seed))
        assert response.status_code == 202, response.text
        job_ids.append(uuid.UUID(response.json()["id"]))

    def all_classified() -> bool:
        with session_scope(env["AIGI_DATABASE_URL"]) as session:
            labels = session.scalars(select(Job.label).where(Job.id.in_(job_ids))).all()
        return len(labels) == len(job_ids) and all(label is not None for label in labels)

    wait_until(all_classified, 90, interval=0.3, message="a verdict for every job")
    with session_scope(env["AIGI_DATABASE_URL"]) as session:
        workers = session.scalars(
            select(JobStage.worker).where(
                JobStage.job_id.in_(job_ids), JobStage.stage == "classify"
            )
        ).all()
    assert len(workers) >= len(job_ids)
    share = Counter(workers)
    print(f"classify runs per worker: {dict(share)}")
    assert set(share) == {f"{name}@test" for name in names}, share
