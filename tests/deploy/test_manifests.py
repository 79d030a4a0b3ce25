"""The deployment files agree with each other, with the Dockerfile and with the real app.

Kubernetes manifests are validated against the official schemas bundled by the
`kubernetes-validate` package (strict: unknown fields fail), compose.yaml against the
compose-spec schema vendored by `check-jsonschema`. KServe's InferenceService has no
offline schema: its pod part is validated as a Kubernetes PodSpec and the rest is
checked field by field; so is the prometheus-adapter rule that serves the autoscaler's
metric, whose series must be ones the real app exports. Probe paths must be routes of
`create_app()`.
"""

from __future__ import annotations

import copy
import json
import os
import re
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import REPO_ROOT

try:
    import yaml
except ImportError:  # pragma: no cover - pyyaml is a dev dependency
    if os.environ.get("CI") == "true":
        raise
    pytest.skip("pyyaml is needed to read the manifests", allow_module_level=True)

DOCKERFILE = REPO_ROOT / "Dockerfile"
KUBERNETES = REPO_ROOT / "deploy" / "kubernetes"
INFERENCE_SERVICE = REPO_ROOT / "deploy" / "kserve" / "inferenceservice.yaml"
COMPOSE = REPO_ROOT / "compose.yaml"
PROMETHEUS_ADAPTER = REPO_ROOT / "deploy" / "prometheus-adapter" / "values.yaml"
QUEUE_TIME_METRIC = "vision_serving_queue_wait_seconds"
# What a prometheus-adapter rule may hold (its docs/config.md); the adapter has no schema
ADAPTER_RULE_FIELDS = {"seriesQuery", "seriesFilters", "resources", "name", "metricsQuery"}
IMAGE_NAME = "vision-serving"
# Kubernetes versions the manifests must be valid for: an older one still widely run,
# and the newest kubernetes-validate knows
KUBERNETES_VERSIONS = ("1.30.0", "latest")
# Fields KServe's v1beta1 ComponentExtensionSpec adds beside the embedded PodSpec
COMPONENT_EXTENSION_FIELDS = {
    "minReplicas": int,
    "maxReplicas": int,
    "scaleTarget": int,
    "scaleMetric": str,
    "containerConcurrency": int,
    "timeout": int,
    "canaryTrafficPercent": int,
    "logger": dict,
    "batcher": dict,
    "labels": dict,
    "annotations": dict,
    "deploymentStrategy": dict,
}
KSERVE_SCALE_METRICS = {"cpu", "memory", "concurrency", "rps"}


def optional_validator(module: str) -> Any:
    """Import a validator package; skip without it, but fail in CI, where it must be."""
    try:
        return __import__(module)
    except ImportError:
        message = f"{module} is not installed (dev extra): schema validation not run"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


# --------------------------------------------------------------------------- Dockerfile


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def dockerfile_stages() -> list[list[Instruction]]:
    """The Dockerfile's instructions, grouped by stage (index 0: before the first FROM)."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: list[list[Instruction]] = [[]]
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        if keyword.upper() == "FROM":
            stages.append([])
        stages[-1].append(Instruction(keyword.upper(), " ".join(args.split())))
    return stages


def final_stage() -> list[Instruction]:
    return dockerfile_stages()[-1]


def stage_env(stage: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in stage:
        if instruction.keyword == "ENV":
            env.update(re.findall(r"(\w+)=(\S+)", instruction.args))
    return env


def only(stage: list[Instruction], keyword: str) -> Instruction:
    found = [i for i in stage if i.keyword == keyword]
    assert len(found) == 1, f"the final stage should have one {keyword}, has {len(found)}"
    return found[0]


def image_user() -> int:
    user = [i for i in final_stage() if i.keyword == "USER"][-1].args
    uid = user.split(":")[0]
    assert uid.isdigit(), f"USER {user}: use a numeric uid, so runAsNonRoot can verify it"
    return int(uid)


def image_port() -> int:
    port = int(only(final_stage(), "EXPOSE").args.split("/")[0])
    assert stage_env(final_stage()).get("VISION_SERVING_PORT") == str(port)
    return port


def test_dockerfile_is_multi_stage_on_a_configurable_slim_base() -> None:
    preamble, *stages = dockerfile_stages()
    assert Instruction("ARG", "BASE_IMAGE=python:3.11-slim") in preamble
    assert len(stages) >= 2
    for stage in stages:
        assert stage[0].args.startswith("${BASE_IMAGE}"), stage[0]


def test_dockerfile_runs_a_non_root_user() -> None:
    assert image_user() != 0


def test_dockerfile_exposes_the_port_the_app_binds() -> None:
    env = stage_env(final_stage())
    assert image_port() == 8000
    assert env["VISION_SERVING_HOST"] == "0.0.0.0"


def test_dockerfile_bakes_the_models_into_the_model_dir() -> None:
    model_dir = stage_env(final_stage())["VISION_SERVING_MODEL_DIR"]
    copies = [i.args for i in final_stage() if i.keyword == "COPY"]
    assert f"models/ {model_dir}/" in copies


def test_dockerfile_entrypoint_is_exec_form() -> None:
    entrypoint = json.loads(only(final_stage(), "ENTRYPOINT").args)
    assert entrypoint[0] not in {"sh", "/bin/sh", "bash", "/bin/bash"}, "SIGTERM must reach uvicorn"


def test_dockerfile_healthcheck_probes_liveness() -> None:
    healthcheck = only(final_stage(), "HEALTHCHECK").args
    command = json.loads(healthcheck.split(" CMD ", 1)[1])
    assert command[:2] == ["python", "-c"], "exec form, no shell and no curl in the slim image"
    assert "/healthz" in command[2]
    assert health_route_exists("/healthz")


# --------------------------------------------------------------------------- the app


@cache
def app_paths() -> frozenset[str]:
    """Every HTTP path the real app serves."""
    from app.main import create_app

    app = create_app()
    paths = set(app.openapi()["paths"])
    paths.update(getattr(route, "path", "") for route in app.routes)
    return frozenset(paths)


def health_route_exists(path: str) -> bool:
    return path in app_paths()


def check_probe_path(path: str) -> None:
    if path.startswith("/v2/") and not health_route_exists(path):
        pytest.xfail(f"{path}: the app does not serve the Open Inference Protocol (/v2) yet")
    assert health_route_exists(path), f"probe path {path} is not a route of create_app()"


@cache
def uvicorn_graceful_seconds() -> int:
    source = (REPO_ROOT / "app" / "__main__.py").read_text()
    found = re.search(r"timeout_graceful_shutdown=(\d+)", source)
    assert found, "app/__main__.py no longer sets timeout_graceful_shutdown"
    return int(found.group(1))


# --------------------------------------------------------------------------- manifests


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def kubernetes_documents() -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{path.name}:{doc['kind']}", doc)
        for path in sorted(KUBERNETES.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in load_all(path)
    ]


def find(kind: str) -> dict[str, Any]:
    [doc] = [doc for _, doc in kubernetes_documents() if doc["kind"] == kind]
    return doc


def inference_service() -> dict[str, Any]:
    [doc] = load_all(INFERENCE_SERVICE)
    return doc


def split_image(image: str) -> tuple[str, str]:
    name, _, tag = image.rpartition(":")
    return name.rsplit("/", 1)[-1], tag


def project_version() -> str:
    with (REPO_ROOT / "pyproject.toml").open("rb") as file:
        return str(tomllib.load(file)["project"]["version"])


def check_container(
    container: dict[str, Any], pod: dict[str, Any], port_names: set[str]
) -> dict[str, Any]:
    """Checks shared by the Deployment and the InferenceService; returns the port."""
    [port] = container["ports"]
    assert port["containerPort"] == image_port()
    assert port["name"] in port_names

    name, tag = split_image(container["image"])
    assert name == IMAGE_NAME
    assert tag.startswith(project_version()), f"{container['image']}: tag the project version"

    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = container[kind]["httpGet"]
        assert probe["port"] in (port["name"], port["containerPort"]), kind
        check_probe_path(probe["path"])

    resources = container["resources"]
    for key in ("cpu", "memory"):
        assert key in resources["requests"] and key in resources["limits"], key
    assert memory_bytes(resources["requests"]["memory"]) <= memory_bytes(
        resources["limits"]["memory"]
    )

    context = container["securityContext"]
    pod_context = pod.get("securityContext", {})
    assert context.get("runAsNonRoot", pod_context.get("runAsNonRoot")) is True
    assert context.get("runAsUser", pod_context.get("runAsUser")) == image_user()
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert context["readOnlyRootFilesystem"] is True
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]], "a read-only root needs a writable /tmp"
    assert pod["terminationGracePeriodSeconds"] > uvicorn_graceful_seconds()
    return port


def decimal_quantity(value: str | int | float) -> float:
    """A Kubernetes quantity without binary suffixes, as a number: `20m` -> 0.02."""
    text = str(value)
    units = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9}
    if text[-1:] in units:
        return float(text[:-1]) * units[text[-1]]
    return float(text)


def memory_bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9}
    number, unit = re.fullmatch(r"(\d+)([A-Za-z]*)", quantity).groups()  # type: ignore[union-attr]
    return int(number) * units.get(unit, 1)


def test_deployment_matches_the_image_and_the_app() -> None:
    pod = find("Deployment")["spec"]["template"]["spec"]
    [container] = pod["containers"]
    check_container(container, pod, {"http"})
    assert "replicas" not in find("Deployment")["spec"], "the HPA owns the replica count"


def test_deployment_security_context_is_non_root() -> None:
    context = find("Deployment")["spec"]["template"]["spec"]["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] == image_user()
    assert context["seccompProfile"]["type"] == "RuntimeDefault"


def test_service_and_autoscaler_point_at_the_deployment() -> None:
    deployment = find("Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    [port] = deployment["spec"]["template"]["spec"]["containers"][0]["ports"]

    service = find("Service")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert [p["targetPort"] for p in service["spec"]["ports"]] == [port["name"]]

    pdb = find("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()

    hpa = find("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def test_autoscaler_scales_on_the_queue_time_per_pod() -> None:
    spec = find("HorizontalPodAutoscaler")["spec"]
    [metric] = spec["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == QUEUE_TIME_METRIC
    target = metric["pods"]["target"]
    assert target["type"] == "AverageValue"
    # a wait in seconds: above a pod with headroom (a batch of X-rays takes a few ms),
    # below the request deadline by far
    assert 0.002 <= decimal_quantity(target["averageValue"]) <= 0.5
    # queue time collapses after a scale-up: scale-down must not follow it at once
    assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 180


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk
    [image] = kustomization["images"]
    assert image["name"] == IMAGE_NAME
    assert image["newTag"].startswith(project_version())


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_kubernetes_manifests_match_the_official_schemas(version: str) -> None:
    validator = optional_validator("kubernetes_validate")
    version = validator.latest_version() if version == "latest" else version
    for name, doc in kubernetes_documents():
        try:
            validator.validate(doc, version, strict=True)
        except validator.ValidationError as error:
            pytest.fail(f"{name} is not valid Kubernetes {version}: {error.message}")


def test_the_schema_validation_catches_mistakes() -> None:
    validator = optional_validator("kubernetes_validate")
    broken = copy.deepcopy(find("Deployment"))
    broken["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(validator.ValidationError):
        validator.validate(broken, validator.latest_version(), strict=True)


# --------------------------------------------------------------------------- KServe


def test_inference_service_runs_the_image_as_a_v2_custom_container() -> None:
    isvc = inference_service()
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert isvc["kind"] == "InferenceService"
    predictor = isvc["spec"]["predictor"]
    [container] = predictor["containers"]
    assert container["name"] == "kserve-container"
    # KServe (Knative too) wants one port, named for its protocol
    check_container(container, predictor, {"http1", "h2c"})
    assert container["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"


def test_inference_service_is_sized_and_tuned_like_the_deployment() -> None:
    [isvc] = inference_service()["spec"]["predictor"]["containers"]
    [deployment] = find("Deployment")["spec"]["template"]["spec"]["containers"]
    assert isvc["resources"] == deployment["resources"]
    for container in (isvc, deployment):
        env = {var["name"]: var.get("value") for var in container["env"]}
        cpu_limit = container["resources"]["limits"]["cpu"]
        # TensorFlow sizes its pools by the node's cores unless told: match the CPU limit
        for name in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS"):
            assert env[name] == cpu_limit, name


def test_inference_service_extension_fields_are_known() -> None:
    predictor = inference_service()["spec"]["predictor"]
    for key, kind in COMPONENT_EXTENSION_FIELDS.items():
        if key in predictor:
            assert isinstance(predictor[key], kind), key
    assert predictor["scaleMetric"] in KSERVE_SCALE_METRICS
    assert 1 <= predictor["minReplicas"] <= predictor["maxReplicas"]
    mode = inference_service()["metadata"]["annotations"]["serving.kserve.io/deploymentMode"]
    assert mode in {"RawDeployment", "Standard", "Serverless", "Knative"}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_inference_service_pod_part_is_a_valid_pod_spec(version: str) -> None:
    """KServe embeds a PodSpec in the predictor: validate that part with the real schema."""
    validator = optional_validator("kubernetes_validate")
    version = validator.latest_version() if version == "latest" else version
    predictor = inference_service()["spec"]["predictor"]
    pod_spec = {k: v for k, v in predictor.items() if k not in COMPONENT_EXTENSION_FIELDS}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "isvc"}, "spec": pod_spec}
    try:
        validator.validate(pod, version, strict=True)
    except validator.ValidationError as error:
        pytest.fail(f"InferenceService predictor is not a valid PodSpec: {error.message}")


# --------------------------------------------------------------------------- prometheus-adapter


def adapter_values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load(PROMETHEUS_ADAPTER.read_text())
    return values


def queue_time_rule() -> dict[str, Any]:
    [rule] = [
        r for r in adapter_values()["rules"]["custom"] if r["name"]["as"] == QUEUE_TIME_METRIC
    ]
    return rule


def test_prometheus_adapter_values_are_the_charts() -> None:
    values = adapter_values()
    assert set(values) <= {"prometheus", "rules"}
    url = urlsplit(values["prometheus"]["url"])
    assert url.scheme in {"http", "https"} and url.hostname
    assert isinstance(values["prometheus"]["port"], int)
    assert set(values["rules"]) <= {"default", "custom", "existing", "external", "resource"}


def test_prometheus_adapter_rule_gives_one_value_per_pod() -> None:
    rule = queue_time_rule()
    assert {"seriesQuery", "resources", "name", "metricsQuery"} <= set(rule) <= ADAPTER_RULE_FIELDS
    assert rule["resources"]["overrides"] == {
        "namespace": {"resource": "namespace"},
        "pod": {"resource": "pod"},
    }
    series = re.match(r"\s*(\w+)\{", rule["seriesQuery"])
    assert series is not None and re.search(rule["name"]["matches"], series.group(1))
    assert 'namespace!=""' in rule["seriesQuery"] and 'pod!=""' in rule["seriesQuery"]
    query = rule["metricsQuery"]
    # the HPA's namespace and pods select every series; the result is grouped by pod only
    selectors = re.findall(r"\{([^}]*)\}", query)
    assert selectors and all("<<.LabelMatchers>>" in selector for selector in selectors)
    assert query.strip().startswith("max by (<<.GroupBy>>) (")
    for opening, closing in ("()", "[]", "{}"):
        assert query.count(opening) == query.count(closing), opening
    # an idle pod is 0, not 0/0: the HPA cannot use NaN
    assert "clamp_min(" in query


def test_prometheus_adapter_reads_series_the_app_exports() -> None:
    """Names, stage and labels of the rule are what the real `ServingMetrics` exposes."""
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from app.monitoring import ServingMetrics

    metrics = ServingMetrics()
    metrics.batch_observer("mnist-mlp").observe_batch(2, [0.001, 0.002], 0.003)
    exposition = generate_latest(metrics.registry).decode()
    exported = {
        (sample.name, sample.labels.get("stage")): set(sample.labels)
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }
    rule = queue_time_rule()
    used = re.findall(
        r"(vision_serving_\w+)\{([^}]*)\}", rule["seriesQuery"] + rule["metricsQuery"]
    )
    assert len(used) == 3  # the series listed, then the sum and count of the average
    for name, matchers in used:
        stage = re.search(r'stage="(\w+)"', matchers)
        assert stage is not None, name
        assert (name, stage.group(1)) in exported, f"the app exports no {name} for that stage"
        assert "model" in exported[(name, stage.group(1))]


# --------------------------------------------------------------------------- compose


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_matches_the_compose_spec() -> None:
    optional_validator("check_jsonschema")
    import jsonschema
    from check_jsonschema.builtin_schemas import get_builtin_schema

    schema = get_builtin_schema("vendor.compose-spec")
    jsonschema.validate(compose(), schema)


def test_compose_mounts_the_models_read_only_over_the_baked_in_ones() -> None:
    model_dir = stage_env(final_stage())["VISION_SERVING_MODEL_DIR"]
    for name, service in compose()["services"].items():
        image, tag = split_image(service["image"])
        assert image == IMAGE_NAME, name
        assert tag.startswith(project_version()), name
        [mount] = service["volumes"]
        assert (mount["source"], mount["target"], mount["read_only"]) == (
            "./models",
            model_dir,
            True,
        )
        [published] = service["ports"]
        assert published.endswith(f":{image_port()}"), name
        assert service["read_only"] is True and service["tmpfs"][0].startswith("/tmp")
        assert int(service["stop_grace_period"].rstrip("s")) > uvicorn_graceful_seconds()


def test_compose_gpu_service_builds_the_cuda_variant() -> None:
    gpu = compose()["services"]["vision-serving-gpu"]
    assert gpu["build"]["args"]["TENSORFLOW"] == "tensorflow[and-cuda]==2.21.0"
    assert gpu["build"]["args"]["DEVICE"] == "gpu"
    [device] = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"]
