"""deploy/prometheus/alerts.yaml: complete rules, over series and labels the real app exports.

`promtool check rules` checks the PromQL when Prometheus's promtool is installed
(`apt-get install prometheus`); without it, the checks here still run: every rule is
complete, and every metric, label matcher and grouping label it uses is in the `/metrics`
of the real app serving the shipped digit model with a prediction profile in its card.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.contract.drift import prediction_profile
from app.contract.model_card import ModelCard
from app.settings import Settings
from tests.app.conftest import serving
from tests.app.images import encode
from tests.conftest import REPO_ROOT, shipped_version

yaml = pytest.importorskip("yaml", reason="pyyaml is needed to read the rules")

ALERTS = REPO_ROOT / "deploy" / "prometheus" / "alerts.yaml"
RULE_FIELDS = {"alert", "expr", "for", "labels", "annotations"}
SEVERITIES = {"info", "warning", "critical"}
WINDOW = 100

_SELECTOR = re.compile(r"\b(vision_serving_\w+)(?:\{([^}]*)\})?")
_MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')
_GROUPING = re.compile(r"\b(?:by|on)\s*\(([^)]*)\)")


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    assert set(document) == {"groups"}
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_every_rule_is_complete_and_points_at_its_documentation() -> None:
    names = [rule["alert"] for rule in rules()]
    assert len(names) == len(set(names)) >= 5
    for rule in rules():
        name = rule["alert"]
        assert set(rule) == RULE_FIELDS, name
        assert re.fullmatch(r"VisionServing[A-Z]\w+", name)
        assert re.fullmatch(r"\d+[smh]", rule["for"]), name
        assert rule["labels"]["severity"] in SEVERITIES, name
        assert {"summary", "description", "runbook"} <= set(rule["annotations"]), name
        page, _, anchor = rule["annotations"]["runbook"].partition("#")
        document = REPO_ROOT / page
        assert document.is_file(), f"{name}: no {page}"
        if anchor:
            headings = re.findall(r"^#+ (.+)$", document.read_text(encoding="utf-8"), re.M)
            anchors = {
                re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings
            }
            assert anchor in anchors, f"{name}: {page} has no heading #{anchor}"


def test_promtool_accepts_the_rules() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    checked = subprocess.run(
        [promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """The shipped digit model, its card given a profile so drift scores are exported."""
    shipped = shipped_version("mnist-mlp")
    version_dir = tmp_path / "models" / "mnist-mlp" / shipped.name
    shutil.copytree(shipped, version_dir)
    card = ModelCard.read(version_dir)
    if card.prediction_profile is None:
        profile = prediction_profile(np.eye(10) * 0.9 + 0.01, card.class_names)
        card.model_copy(update={"prediction_profile": profile}).write(version_dir)
    return tmp_path / "models"


async def exported_samples(model_dir: Path, cache: Path) -> dict[str, list[dict[str, str]]]:
    """Metric sample name -> the label sets /metrics shows for it, after predictions."""
    blank = encode(np.full((40, 40), 230, dtype=np.uint8))
    files = [("files", (f"{i}.png", blank)) for i in range(WINDOW // 2)]
    settings = Settings(model_dir=model_dir, runtime_cache_dir=cache, drift_window=WINDOW)
    async with serving(settings) as client:
        for _ in range(2):
            response = await client.post("/api/v1/models/mnist-mlp/predict", files=files)
            assert response.status_code == 200, response.text
        text = (await client.get("/metrics")).text
    samples: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(dict(sample.labels))
    return samples


@pytest.mark.anyio
async def test_rules_use_series_and_labels_the_app_exports(model_dir: Path, tmp_path: Path) -> None:
    samples = await exported_samples(model_dir, tmp_path / "runtime-cache")
    for rule in rules():
        name, expr = rule["alert"], rule["expr"]
        used = _SELECTOR.findall(expr)
        assert used, f"{name} uses no vision_serving_ metric"
        for metric, matchers in used:
            assert metric in samples, f"{name}: the app exports no {metric}"
            for label, operator, value in _MATCHER.findall(matchers):
                labels = samples[metric]
                assert any(label in s for s in labels), f"{name}: {metric} has no {label}"
                if operator == "=":
                    assert any(s.get(label) == value for s in labels), (
                        f"{name}: no {metric} has {label}={value!r}"
                    )
        for grouping in _GROUPING.findall(expr):
            for label in (part.strip() for part in grouping.split(",")):
                for metric, _ in used:
                    assert all(label in s for s in samples[metric]), (
                        f"{name}: groups by {label}, which {metric} lacks"
                    )
