"""The deployable stack, checked without a container engine.

- ``docker-compose.yml`` against the Compose Specification's JSON schema, vendored as
  ``tests/data/compose-spec.json`` (compose-spec/compose-spec, ``schema/compose-spec.json`` at
  commit 170098ba07d9f53c383a41bfd4c5166b0a4529a6, Apache-2.0); nothing is downloaded.
- every manifest of ``deploy/k8s/`` with kubernetes-validate (its offline schemas, strict,
  Kubernetes 1.30);
- what matters to kb-ingest: probes are our probes, every service has a healthcheck, workers
  drain, one beat, Flower behind auth, migrations first, the metrics directory shared, env
  names that are real settings, and a Dockerfile whose dependency layer needs only
  pyproject.toml.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import socket
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import jsonschema
import kubernetes_validate
import pytest
import yaml

import celeryconfig
from ingest.names import QUEUES
from ingest.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
K8S_VERSION = "1.30.0"
APP_IMAGE = "kb-ingest:latest"
PROMETHEUS_DIR = "PROMETHEUS_MULTIPROC_DIR"


def names_read_by_code() -> set[str]:
    """Environment names kb-ingest's code reads itself, outside Settings (e.g. LOG_FORMAT)."""
    pattern = re.compile(r"""os\.(?:environ\.get\(|environ\[|getenv\()\s*["']([A-Z0-9_]+)["']""")
    return {name for package in ("ingest", "workers", "webhooks")
            for path in (ROOT / package).rglob("*.py")
            for name in pattern.findall(path.read_text())}


SETTINGS = {name.upper() for name in Settings.model_fields} | names_read_by_code()
# Read by libraries kb-ingest runs (prometheus-client, Flower, boto3) or by the OS; and the
# compose-only secrets that the app containers get blanked (withheld from env_file).
EXTERNAL_ENV = {PROMETHEUS_DIR, "FLOWER_BASIC_AUTH", "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY", "HOME"}
WITHHELD_ENV = {"MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "FLOWER_BASIC_AUTH"}
WORKER_PROBE = ["ingest", "probe", "worker"]
BEAT_PROBE = ["ingest", "probe", "beat"]


# --- loading -------------------------------------------------------------------------------

def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def app_services() -> dict[str, dict[str, Any]]:
    """The services running the kb-ingest image."""
    return {name: svc for name, svc in services().items() if svc.get("image") == APP_IMAGE}


def role(command: list[str]) -> str:
    """web, worker, beat, flower or migrate, from a kb-ingest command line."""
    if command[0] == "gunicorn":
        return "web"
    if command[:2] == ["ingest", "db"]:
        return "migrate"
    if command[0] == "celery":  # celery -A workers [-q] ROLE …: the first word that is no option
        rest = command[command.index("-A") + 2:]
        return next(word for word in rest if not word.startswith("-"))
    raise AssertionError(f"unknown kb-ingest command {command}")


def queues_of(command: list[str]) -> set[str]:
    return set(command[command.index("-Q") + 1].split(","))


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def manifests() -> list[dict[str, Any]]:
    docs = []
    for path in manifest_files():
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def deployments() -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in manifests() if d["kind"] == "Deployment"}


def pod_containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return doc["spec"]["template"]["spec"]["containers"]


def seconds(duration: str) -> float:
    """A compose duration such as ``5m``, ``90s`` or ``1m30s``."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|m|s|ms|us)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    scale = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6}
    return sum(float(n) * scale[u] for n, u in parts)


# --- docker-compose.yml --------------------------------------------------------------------

def compose_validator() -> jsonschema.Draft7Validator:
    schema = json.loads((ROOT / "tests" / "data" / "compose-spec.json").read_text())
    return jsonschema.Draft7Validator(schema)


def test_compose_file_matches_the_compose_specification() -> None:
    errors = [f"{list(e.path)}: {e.message}" for e in compose_validator().iter_errors(compose())]
    assert errors == []


def test_the_compose_schema_rejects_a_misspelt_key() -> None:
    broken = copy.deepcopy(compose())
    broken["services"]["web"]["helthcheck"] = broken["services"]["web"].pop("healthcheck")
    assert not compose_validator().is_valid(broken)


def test_the_stack_has_every_real_part() -> None:
    images = {name: str(svc.get("image", "")) for name, svc in services().items()}
    for part in ("postgres", "redis", "minio/minio", "minio/mc", "chromadb/chroma",
                 "axllent/mailpit"):
        assert any(image.startswith(part) for image in images.values()), part
    roles = sorted(role(svc["command"]) for svc in app_services().values())
    assert roles == ["beat", "flower", "migrate", "web", "worker", "worker"]
    redis = services()["redis"]["command"]
    assert redis[redis.index("--appendonly") + 1] == "yes"
    strapi = services()["strapi"]
    assert strapi["profiles"] == ["strapi"]
    assert "strapi/package-lock.json" in strapi["build"]["dockerfile_inline"]


def one_shots() -> set[str]:
    return {name for name, svc in services().items() if svc.get("restart") == "no"}


def test_every_long_running_service_has_a_healthcheck() -> None:
    long_running = set(services()) - one_shots()
    assert long_running >= {"postgres", "redis", "minio", "chroma", "mailpit", "web", "beat",
                            "worker-ingest", "worker-notifications", "flower", "strapi"}
    for name in long_running:
        check = services()[name].get("healthcheck", {})
        assert check.get("test") and not check.get("disable"), name
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name


def test_one_shots_gate_what_needs_them() -> None:
    """Migrations and the bucket come first: the app waits for their successful exit."""
    assert one_shots() == {"migrate", "minio-setup", "strapi-db"}
    assert services()["migrate"]["command"] == ["ingest", "db", "upgrade"]
    for name, svc in app_services().items():
        if role(svc["command"]) in ("web", "worker", "beat"):
            for gate in ("migrate", "minio-setup"):
                assert svc["depends_on"][gate] == {
                    "condition": "service_completed_successfully"}, (name, gate)
    assert services()["strapi"]["depends_on"]["strapi-db"]["condition"] == \
        "service_completed_successfully"


def test_kb_ingest_healthchecks_are_our_probes() -> None:
    for name, svc in app_services().items():
        kind = role(svc["command"])
        test = svc.get("healthcheck", {}).get("test")
        if kind == "migrate":
            assert test is None
        elif kind == "worker":
            assert test == ["CMD", *WORKER_PROBE], name
        elif kind == "beat":
            assert test == ["CMD", *BEAT_PROBE], name
        elif kind == "web":
            assert test[:3] == ["CMD", "python", "-c"], name
            assert re.search(r"http://127\.0\.0\.1:8080/(livez|readyz)'", test[3]), name
        else:  # Flower's own endpoint, which answers without auth
            assert kind == "flower"
            assert "http://127.0.0.1:5555/healthcheck'" in test[3]


def test_workers_cover_every_queue_and_drain_on_stop() -> None:
    routed = {route["queue"] for route in celeryconfig.task_routes.values()}
    consumed: dict[str, set[str]] = {}
    for name, svc in app_services().items():
        if role(svc["command"]) == "worker":
            consumed[name] = queues_of(svc["command"])
            assert seconds(svc["stop_grace_period"]) >= 60, name
    assert consumed == {"worker-ingest": {"ingest"},
                        "worker-notifications": {"notifications", "corrections"}}
    assert set().union(*consumed.values()) == set(QUEUES) >= routed


def test_exactly_one_beat() -> None:
    beats = [n for n, s in app_services().items() if role(s["command"]) == "beat"]
    assert beats == ["beat"]
    assert services()["beat"]["deploy"]["replicas"] == 1
    for svc in app_services().values():  # no worker embeds a beat (-B)
        assert "-B" not in svc["command"] and "--beat" not in svc["command"]


def test_flower_requires_basic_auth_and_stays_local() -> None:
    flower = services()["flower"]
    assert re.fullmatch(r"\$\{FLOWER_BASIC_AUTH:\?[^}]+\}",
                        flower["environment"]["FLOWER_BASIC_AUTH"])
    assert all(p.startswith("127.0.0.1:") for p in flower["ports"])


def test_web_and_workers_share_an_empty_metrics_directory() -> None:
    compose_file = compose()
    mounts = set()
    for name, svc in app_services().items():
        kind = role(svc["command"])
        if kind in ("web", "worker", "beat"):
            path = svc["environment"][PROMETHEUS_DIR]
            volume = [v for v in svc["volumes"] if v.endswith(":" + path)]
            assert len(volume) == 1, name
            mounts.add(volume[0])
        else:  # Flower and the migrations keep their metrics to themselves
            assert PROMETHEUS_DIR not in svc["environment"], name
    assert len(mounts) == 1
    volume = compose_file["volumes"][mounts.pop().split(":")[0]]
    assert volume["driver_opts"]["type"] == "tmpfs"
    assert "uid=10001" in volume["driver_opts"]["o"]  # the image's user (Dockerfile)


def test_compose_env_names_are_kb_ingest_settings() -> None:
    for name, svc in app_services().items():
        for var, value in svc["environment"].items():
            if value == "":
                assert var in SETTINGS | WITHHELD_ENV, (name, var)
            else:
                assert var in SETTINGS | EXTERNAL_ENV, (name, var)


def test_compose_addresses_point_at_compose_services() -> None:
    # ${VAR:?message} as compose fills it in, with a value free of URL syntax
    env = {k: re.sub(r"\$\{[^}]*\}", "secret", v)
           for k, v in services()["web"]["environment"].items()}
    hosts = {urlparse(env[v]).hostname for v in ("DATABASE_URL", "REDIS_URL",
                                                 "CELERY_BROKER_URL", "S3_ENDPOINT_URL")}
    hosts |= {env["CHROMA_HOST"], env["SMTP_SERVER"]}
    assert hosts == {"postgres", "redis", "minio", "chroma", "mailpit"}
    assert hosts <= set(services())


def test_every_interpolated_variable_is_in_env_example() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    used = set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+)", text))
    listed = set(re.findall(r"^([A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M))
    assert used and used <= listed, used - listed


def test_one_shot_scripts_are_valid_shell() -> None:
    for name in ("minio-setup", "strapi-db"):
        script = services()[name]["command"][0].replace("$$", "$")
        result = subprocess.run(["sh", "-n"], input=script, text=True, capture_output=True,
                                check=False)
        assert result.returncode == 0, (name, result.stderr)


def test_minio_setup_grants_kb_ingest_only_its_prefix(tmp_path: Path) -> None:
    """The one-shot's script, run with ``mc`` recorded instead of called."""
    script = services()["minio-setup"]["command"][0].replace("$$", "$")
    policy = tmp_path / "policy.json"
    script = script.replace("/tmp/kb-ingest-policy.json", str(policy))
    calls = tmp_path / "mc.log"
    stub = f'mc() {{ echo "$*" >> {calls}; }}\n'
    env = {"PATH": "/usr/bin:/bin", "MINIO_ROOT_USER": "root", "MINIO_ROOT_PASSWORD": "rootpw",
           "KB_ACCESS_KEY": "kb-user", "KB_SECRET_KEY": "kb-secret", "BUCKET": "files"}
    subprocess.run(["sh", "-ec", stub + script], env=env, check=True, capture_output=True)
    statements = json.loads(policy.read_text())["Statement"]
    prefix = Settings.model_fields["s3_key_prefix_template"].default.split("/")[0]
    assert statements == [
        {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
         "Resource": ["arn:aws:s3:::files"]},
        {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
         "Resource": [f"arn:aws:s3:::files/{prefix}/*"]},
    ]
    log = calls.read_text().splitlines()
    assert "mb --ignore-existing local/files" in log
    assert "admin user add local kb-user kb-secret" in log
    assert "admin policy attach local kb-ingest --user kb-user" in log


def chroma_healthcheck(port: int) -> subprocess.CompletedProcess[str]:
    test = services()["chroma"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "bash", "-c"]
    script = test[3].replace("/dev/tcp/127.0.0.1/8000", f"/dev/tcp/127.0.0.1/{port}")
    assert script != test[3]
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30,
                          check=False)


def test_chroma_healthcheck_asks_a_real_chroma_server(chroma_server: str) -> None:
    port = urlparse(chroma_server).port
    assert port is not None
    assert chroma_healthcheck(port).returncode == 0
    # A port nothing listens on fails (the free port of a socket just closed).
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    assert chroma_healthcheck(closed).returncode != 0


# --- Kubernetes ----------------------------------------------------------------------------

@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: p.name)
def test_manifest_is_valid_kubernetes(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs
    for doc in docs:
        assert kubernetes_validate.validate(doc, K8S_VERSION, strict=True) == "1.30"
        assert "namespace" not in doc["metadata"]  # namespace-agnostic


def test_strict_validation_rejects_an_unknown_field() -> None:
    web = copy.deepcopy(deployments()["kb-ingest-web"])
    pod_containers(web)[0]["livenessProbes"] = pod_containers(web)[0].pop("livenessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(web, K8S_VERSION, strict=True)


def test_kustomization_lists_every_manifest_but_the_secret_template() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(
        p.name for p in manifest_files() if p.name != "secret.example.yaml")


def test_web_probes_and_service() -> None:
    web = pod_containers(deployments()["kb-ingest-web"])[0]
    assert web["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert web["readinessProbe"]["httpGet"]["path"] == "/readyz"
    services_ = {d["metadata"]["name"]: d for d in manifests() if d["kind"] == "Service"}
    assert services_["kb-ingest-web"]["spec"]["selector"] == \
        deployments()["kb-ingest-web"]["spec"]["selector"]["matchLabels"]


def test_k8s_workers_cover_every_queue_probe_and_drain() -> None:
    consumed = {}
    for name, doc in deployments().items():
        container = pod_containers(doc)[0]
        if role(container["command"]) != "worker":
            continue
        consumed[name] = queues_of(container["command"])
        assert container["livenessProbe"]["exec"]["command"] == WORKER_PROBE
        assert doc["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 60
    assert consumed == {"kb-ingest-worker-ingest": {"ingest"},
                        "kb-ingest-worker-notifications": {"notifications", "corrections"}}


def test_k8s_exactly_one_beat_recreated() -> None:
    beats = [d for d in deployments().values() if role(pod_containers(d)[0]["command"]) == "beat"]
    assert len(beats) == 1
    beat = beats[0]
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}
    assert pod_containers(beat)[0]["livenessProbe"]["exec"]["command"] == BEAT_PROBE


def test_k8s_migrations_are_a_job() -> None:
    jobs = [d for d in manifests() if d["kind"] == "Job"]
    assert [pod_containers(j)[0]["command"] for j in jobs] == [["ingest", "db", "upgrade"]]


def test_k8s_flower_auth_comes_from_its_own_secret() -> None:
    flower = pod_containers(deployments()["kb-ingest-flower"])[0]
    auth = {e["name"]: e for e in flower["env"]}["FLOWER_BASIC_AUTH"]
    assert auth["valueFrom"]["secretKeyRef"] == {"name": "kb-ingest-flower",
                                                 "key": "FLOWER_BASIC_AUTH"}
    secrets = {d["metadata"]["name"]: d for d in manifests() if d["kind"] == "Secret"}
    assert "FLOWER_BASIC_AUTH" not in secrets["kb-ingest-secrets"]["stringData"]
    flower_service = [d for d in manifests() if d["kind"] == "Service"
                      and d["metadata"]["name"] == "kb-ingest-flower"]
    assert flower_service[0]["spec"]["type"] == "ClusterIP"


def pod_specs() -> list[tuple[str, dict[str, Any]]]:
    return [(d["metadata"]["name"], d["spec"]["template"]["spec"])
            for d in manifests() if d["kind"] in ("Deployment", "Job")]


def test_k8s_pods_run_as_non_root_with_limits_and_probes_are_ours() -> None:
    for name, spec in pod_specs():
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] == 10001, name
        for container in spec["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
            for kind in ("requests", "limits"):
                assert set(container["resources"][kind]) == {"cpu", "memory"}, name
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                if probe not in container:
                    continue
                if "exec" in container[probe]:
                    assert container[probe]["exec"]["command"] in (WORKER_PROBE, BEAT_PROBE)
                elif name == "kb-ingest-flower":
                    assert container[probe]["httpGet"]["path"] == "/healthcheck"
                else:
                    assert container[probe]["httpGet"]["path"] in ("/livez", "/readyz")


def test_k8s_metrics_directory_is_an_empty_dir_per_pod() -> None:
    config = {d["metadata"]["name"]: d for d in manifests() if d["kind"] == "ConfigMap"}
    path = config["kb-ingest-config"]["data"][PROMETHEUS_DIR]
    for name, spec in pod_specs():
        container = spec["containers"][0]
        if role(container["command"]) not in ("web", "worker", "beat"):
            continue
        mount = [m for m in container["volumeMounts"] if m["mountPath"] == path]
        assert len(mount) == 1, name
        volume = {v["name"]: v for v in spec["volumes"]}[mount[0]["name"]]
        assert "emptyDir" in volume, name


def test_k8s_env_names_are_kb_ingest_settings() -> None:
    names: set[str] = set()
    referenced_secrets: set[str] = set()
    for doc in manifests():
        if doc["kind"] == "ConfigMap":
            names |= set(doc["data"])
        elif doc["kind"] == "Secret":
            names |= set(doc["stringData"])
    for _, spec in pod_specs():
        for container in spec["containers"]:
            names |= {e["name"] for e in container.get("env", [])}
            referenced_secrets |= {s["secretRef"]["name"] for s in container.get("envFrom", [])
                                   if "secretRef" in s}
    assert names <= SETTINGS | EXTERNAL_ENV, names - SETTINGS - EXTERNAL_ENV
    templates = {d["metadata"]["name"] for d in manifests() if d["kind"] == "Secret"}
    assert referenced_secrets <= templates


def test_the_secret_template_holds_only_placeholders() -> None:
    for doc in manifests():
        if doc["kind"] == "Secret":
            for key, value in doc["stringData"].items():
                assert value == "" or "CHANGE-ME" in value, key


# --- Dockerfile and .dockerignore ------------------------------------------------------------

def dockerfile_instructions() -> list[str]:
    text = (ROOT / "Dockerfile").read_text()
    lines = [ln for ln in text.replace("\\\n", "").splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]
    return lines


def test_dockerfile_dependency_layer_needs_only_pyproject() -> None:
    steps = dockerfile_instructions()
    copies = [i for i, s in enumerate(steps) if s.startswith("COPY")]
    first_copy = steps[copies[0]]
    assert first_copy.split()[1:] == ["pyproject.toml", "./"]
    installs = [i for i, s in enumerate(steps) if "pip install -r" in s]
    assert installs and installs[0] < copies[1]  # dependencies before any code
    project_install = [s for s in steps if "pip install --no-deps ." in s]
    assert len(project_install) == 1
    assert not any(re.search(r"pip install .*(-e|--editable)\b", s) for s in steps)
    # the uid and gid that the Kubernetes securityContext and the compose tmpfs name
    assert [s for s in steps if s.startswith("USER")] == ["USER 10001:10001"]
    assert any("--uid 10001 --gid 10001" in s for s in steps)
    assert "--index-url \"${TORCH_INDEX_URL}\"" in " ".join(steps)
    assert any(s == "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" for s in steps)


def test_dockerfile_bakes_no_secret() -> None:
    for step in dockerfile_instructions():
        if step.startswith(("ENV", "ARG")):
            assert not re.search(r"TOKEN|SECRET|PASSWORD|AWS_", step), step


@pytest.mark.parametrize("extras", ["minilm", ""])
def test_dockerfile_requirements_match_pyproject(tmp_path: Path, extras: str) -> None:
    """The layer's own script, run here: it lists exactly the project's dependencies."""
    run = [s for s in dockerfile_instructions() if "tomllib" in s]
    assert len(run) == 1
    code = re.search(r'python -c "(.*?)"\s+"\$\{EXTRAS\}"', run[0])
    assert code
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    out = subprocess.run([sys.executable, "-c", code.group(1), extras], cwd=tmp_path,
                         capture_output=True, text=True, check=True).stdout.split("\n")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    expected = project["dependencies"] + (
        project["optional-dependencies"]["minilm"] if extras else [])
    assert [line for line in out if line] == expected


def test_dockerignore_keeps_local_state_out() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", ".env", ".demo", "chroma-data", ".pytest_cache",
            "strapi/node_modules", "strapi/.env"} <= ignored
