"""The page at / in a real browser: upload, draw, model panel, evaluation, phone screen."""

from __future__ import annotations

import io
import os
import re
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

if os.environ.get("CI") != "true":  # in CI a missing playwright fails the collection
    pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed: pip install -e '.[dev]'"
    )
from playwright.sync_api import Browser, BrowserContext, Page, expect

from app.contract.classification import reliability_bins
from app.contract.model_card import (
    Calibration,
    CalibrationChange,
    CalibrationScores,
    ModelCard,
)
from tests.app.images import encode
from tests.app.tiny_models import copy_with_operating_point, export_tiny_xray
from tests.browser.conftest import TIMEOUT_MS, load, screenshot, watch
from tests.conftest import SHIPPED_MODEL_NAMES, require_data
from tests.e2e.conftest import LiveServer, start_server, stop_server
from tests.e2e.reference_profile import digit_model_with_reference, png_pictures
from training.plots import plot_reliability_diagram

pytestmark = pytest.mark.e2e
expect.set_options(timeout=TIMEOUT_MS)

DIGIT_MODEL = "mnist-mlp"
XRAY_MODEL = "pneumonia-cnn"
RESULT = "#results .result"


@pytest.fixture(scope="module")
def mnist() -> tuple[np.ndarray, np.ndarray]:
    with np.load(require_data("mnist.npz")) as arrays:
        return arrays["x_test"][:500], arrays["y_test"][:500]


def digit_files(
    mnist: tuple[np.ndarray, np.ndarray], folder: Path, labels: list[int]
) -> list[Path]:
    """The first MNIST test digit of each label, as PNG files named after it."""
    images, truth = mnist
    paths = []
    for label in labels:
        index = int(np.flatnonzero(truth == label)[0])
        path = folder / f"digit-{label}.png"
        path.write_bytes(encode(images[index]))
        paths.append(path)
    return paths


def matrix_of(page: Page, table: str) -> list[list[int]]:
    rows = page.locator(f"{table} tbody tr")
    return [
        [int(cell.replace(",", "")) for cell in rows.nth(i).locator("td").all_inner_texts()]
        for i in range(rows.count())
    ]


def figure(page: Page, scope: str, name: str) -> str:
    return page.locator(f'{scope} [data-figure="{name}"] .figure').inner_text()


def no_horizontal_overflow(page: Page) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


def draw(page: Page, points: list[tuple[float, float]]) -> None:
    """One stroke through `points` given as fractions of the canvas size."""
    box = page.locator("#canvas").bounding_box()
    assert box is not None
    at = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in points]
    page.mouse.move(*at[0])
    page.mouse.down()
    for x, y in at[1:]:
        page.mouse.move(x, y, steps=12)
    page.mouse.up()


def test_uploaded_mnist_digits_are_read_right(
    page: Page, mnist: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    expect(page.locator("#model")).to_have_value(DIGIT_MODEL)
    expect(page.locator("#model-status")).to_contain_text("ready")
    labels = [7, 2, 0]
    page.set_input_files("#files", [str(p) for p in digit_files(mnist, tmp_path, labels)])
    results = page.locator(RESULT)
    expect(results).to_have_count(len(labels))
    for i, label in enumerate(labels):
        result = results.nth(i)
        expect(result).to_have_attribute("data-label", str(label))
        expect(result.locator(".bars li")).to_have_count(10)
        expect(result.locator(".bars li.best .name")).to_have_text(str(label))
        seen = result.locator("img.seen")
        expect(seen).to_have_attribute("alt", re.compile(f"^What the model saw: .* digit-{label}"))
        assert seen.evaluate("img => img.complete && img.naturalWidth") == 28
        assert seen.evaluate("img => getComputedStyle(img).imageRendering") == "pixelated"
    print("upload:", screenshot(page, "1-upload-mnist-digits"))


def test_every_shipped_digit_model_reads_digits_on_the_page(
    desktop: BrowserContext,
    ui_server: LiveServer,
    mnist: tuple[np.ndarray, np.ndarray],
    tmp_path: Path,
) -> None:
    """Chosen in the model list, each digit model (mnist-lenet5 too) reads uploads and says
    its own name and card; the page needs nothing per model."""
    digit_models = [name for name in SHIPPED_MODEL_NAMES if name.startswith("mnist-")]
    assert "mnist-lenet5" in digit_models
    tab = desktop.new_page()
    problems = watch(tab)
    load(tab, ui_server, digit_models[0])
    labels = [4, 1, 9]
    files = [str(p) for p in digit_files(mnist, tmp_path, labels)]
    for model in digit_models:
        tab.select_option("#model", model)
        expect(tab.locator("#model-status")).to_contain_text("ready")
        card = httpx.get(f"{ui_server.url}/api/v1/models/{model}").json()["card"]
        expect(tab.locator("#card")).to_contain_text(f"{card['architecture']}, ")
        tab.set_input_files("#files", files)
        results = tab.locator(RESULT)
        expect(results).to_have_count(len(labels))
        for i, label in enumerate(labels):
            expect(results.nth(i)).to_have_attribute("data-label", str(label))
    print("lenet5:", screenshot(tab, "12-mnist-lenet5"))
    tab.close()
    assert not problems, problems


def test_a_file_that_is_not_an_image_gets_a_readable_error(page: Page, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    page.set_input_files("#files", str(notes))
    error = page.locator("#results .error")
    expect(error).to_contain_text("notes.txt")
    expect(error).to_contain_text("HTTP 415")
    assert "{" not in error.inner_text()
    print("error:", screenshot(page, "2-upload-error"))


def test_a_bad_file_among_images_costs_only_its_own_answer(
    page: Page, mnist: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    first, last = digit_files(mnist, tmp_path, [7, 2])
    readme = tmp_path / "README.md"
    readme.write_text("# my digits\n")
    page.set_input_files("#files", [str(first), str(readme), str(last)])
    cards = page.locator(RESULT)
    expect(cards).to_have_count(3)
    expect(cards.nth(0)).to_have_attribute("data-label", "7")
    expect(cards.nth(1).locator(".error")).to_contain_text("README.md")
    expect(cards.nth(1).locator(".error")).to_contain_text("HTTP 415")
    expect(cards.nth(2)).to_have_attribute("data-label", "2")
    print("mixed upload:", screenshot(page, "2b-upload-with-a-bad-file"))


def test_a_blank_page_says_no_digit_was_found(page: Page, tmp_path: Path) -> None:
    blank = tmp_path / "blank.png"
    blank.write_bytes(encode(np.full((200, 150), 235, dtype=np.uint8)))
    page.set_input_files("#files", str(blank))
    result = page.locator(RESULT)
    expect(result).to_have_count(1)
    expect(result.locator(".no-digit")).to_contain_text("No digit found")
    print("blank page:", screenshot(page, "2c-blank-page"))


def test_digits_drawn_on_the_canvas_are_read(page: Page) -> None:
    draw(page, [(0.5, 0.15), (0.52, 0.85)])  # a 1, white on black
    result = page.locator(RESULT)
    expect(result).to_have_attribute("data-label", "1")
    print("draw 1:", screenshot(page, "3-draw-1"))

    page.get_by_role("button", name="Clear").click()
    expect(result).to_have_count(0)
    page.get_by_label("Black on white").check()
    draw(page, [(0.22, 0.2), (0.78, 0.2), (0.42, 0.88)])  # a 7, black on white
    expect(result).to_have_attribute("data-label", "7")
    print("draw 7:", screenshot(page, "4-draw-7-black-on-white"))


def test_model_panel_shows_card_recorded_evaluation_and_training_curves(
    page: Page, ui_server: LiveServer
) -> None:
    detail = httpx.get(f"{ui_server.url}/api/v1/models/{DIGIT_MODEL}").json()
    card, runtime = detail["card"], detail["runtime"]
    runtime_name = {"litert": "LiteRT", "savedmodel": "the SavedModel"}[runtime["name"]]
    expect(page.locator("#model-status")).to_contain_text(f"run by {runtime_name}")
    panel = page.locator("#model-panel")
    expect(panel.locator("table.confusion")).to_be_hidden()
    page.get_by_text("Model card, test evaluation and training curves").click()
    expect(panel.locator("table.confusion")).to_be_visible()
    assert (
        matrix_of(page, "#recorded-evaluation table.confusion")
        == card["evaluation"]["confusion_matrix"]
    )
    accuracy = f"{card['evaluation']['accuracy'] * 100:.1f}%"
    assert figure(page, "#recorded-evaluation", "Accuracy") == accuracy
    expect(panel.locator("table.per-class tbody tr")).to_have_count(10)
    expect(panel.locator("dl.facts")).to_contain_text("mnist-digit")
    expect(panel.locator("table.counts")).to_contain_text("test")
    runtime_fact = panel.locator("dl.facts dt:text-is('Runtime') + dd")
    expect(runtime_fact).to_contain_text(runtime_name)
    expect(runtime_fact).to_contain_text(runtime["reason"])
    training = card["training"]
    stopped = training["epochs_run"] < training["epochs_requested"]
    expect(panel.locator("dl.facts dt:text-is('Training') + dd")).to_contain_text(
        f"{training['epochs_run']} of {training['epochs_requested']} epochs "
        + ("(stopped early)" if stopped else "(early stopping on)")
    )
    plot = page.locator("#training-plot")
    expect(plot).to_be_visible()
    expect(plot).to_have_attribute(
        "alt", re.compile(f"^Training curves of {DIGIT_MODEL} version {card['version']}: loss")
    )
    assert plot.evaluate("img => img.complete && img.naturalWidth") > 100
    print("model panel:", screenshot(page, "5-model-panel"))


def test_an_imported_model_card_says_where_it_came_from_and_that_it_is_not_evaluated(
    desktop: BrowserContext, ui_server: LiveServer
) -> None:
    # The served digit model's detail, answered as an imported model's without evaluation
    # would be: the page renders what the API gives.
    detail = httpx.get(f"{ui_server.url}/api/v1/models/{DIGIT_MODEL}").json()
    detail["card"].update(
        training=None,
        evaluation=None,
        limitations="Not evaluated: no labelled data was given at import.",
        imported={
            "source": "digits.keras",
            "source_format": "keras",
            "fingerprint": "sha256:" + "ab" * 32,
            "signature": None,
            "imported_at": "2025-01-02T03:04:05Z",
            "input_range": [0.0, 1.0],
            "evaluated_on": None,
        },
    )
    tab = desktop.new_page()
    problems = watch(tab)
    tab.route(f"**/api/v1/models/{DIGIT_MODEL}", lambda route: route.fulfill(json=detail))
    load(tab, ui_server)
    tab.get_by_text("Model card, test evaluation and training curves").click()
    facts = tab.locator("#card dl.facts")
    expect(facts.locator("dt:text-is('Imported from') + dd")).to_contain_text(
        "digits.keras (a Keras file), sha256:abab"
    )
    expect(facts.locator("dt:text-is('Pixels') + dd")).to_contain_text("scaled to 0\u20131 inside")
    expect(facts.locator("dt:text-is('Data') + dd")).to_have_text("not evaluated")
    expect(tab.locator("#recorded-evaluation-heading")).to_have_text(
        "Evaluation recorded at import"
    )
    expect(tab.locator("#recorded-evaluation")).to_have_text(
        "Not evaluated: digits.keras was imported without labelled data."
    )
    expect(tab.locator("#training-caption")).to_have_text(
        f"No training curves: {DIGIT_MODEL} was trained elsewhere and imported."
    )
    expect(tab.locator("#limitations-text")).to_contain_text("Not evaluated")
    print("imported card:", screenshot(tab, "5b-imported-model-card"))
    tab.close()
    assert not problems, problems


def test_evaluating_a_zip_of_labelled_digits(
    page: Page, mnist: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    images, truth = mnist
    per_class = 3
    archive = tmp_path / "digits.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for label in range(10):
            for n, index in enumerate(np.flatnonzero(truth == label)[:per_class]):
                zipped.writestr(f"{label}/{n}.png", encode(images[index]))
    page.set_input_files("#archive", str(archive))
    page.get_by_role("button", name="Evaluate").click()
    table = "#evaluation table.confusion"
    expect(page.locator(table)).to_be_visible()
    matrix = matrix_of(page, table)
    assert [sum(row) for row in matrix] == [per_class] * 10
    assert figure(page, "#evaluation", "Images") == str(10 * per_class)
    correct = sum(matrix[i][i] for i in range(10))
    assert figure(page, "#evaluation", "Accuracy") == f"{correct / (10 * per_class) * 100:.1f}%"
    assert correct >= 27
    print("evaluation:", screenshot(page, "6-evaluate-zip"))


def test_a_broken_zip_is_reported_not_thrown(page: Page, tmp_path: Path) -> None:
    archive = tmp_path / "broken.zip"
    archive.write_bytes(io.BytesIO(b"PK not really a zip").getvalue())
    page.set_input_files("#archive", str(archive))
    page.get_by_role("button", name="Evaluate").click()
    expect(page.locator("#evaluation .error")).to_contain_text("zip")


def test_keyboard_users_see_where_focus_is(page: Page) -> None:
    for _ in range(8):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "model":
            break
    assert page.evaluate("document.activeElement.id") == "model"
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("", "none")


def test_the_xray_model_shows_its_limitations_and_data_credit(
    page: Page, ui_server: LiveServer
) -> None:
    names = [m["name"] for m in httpx.get(f"{ui_server.url}/api/v1/models").json()["models"]]
    if XRAY_MODEL not in names:
        pytest.skip(f"{XRAY_MODEL} is not in the shipped models yet")
    page.select_option("#model", XRAY_MODEL)
    limitations = page.locator("#limitations")
    expect(limitations).to_be_visible()
    expect(limitations).to_contain_text("not a diagnostic tool")
    expect(limitations).to_contain_text("Kermany")
    expect(page.locator("#draw")).to_be_hidden()
    expect(page.locator("footer")).to_contain_text("Kermany")
    xray = sorted((require_data("chest_xray") / "test" / "PNEUMONIA").glob("*.jpeg"))[0]
    page.set_input_files("#files", str(xray))
    result = page.locator(RESULT)
    expect(result.locator(".bars li")).to_have_count(2)
    seen = result.locator("img.seen")
    assert seen.evaluate("img => img.complete && img.naturalWidth") > 28
    print("x-ray model:", screenshot(page, "7-xray-model"))


def test_fits_a_phone_screen(
    browser: Browser, ui_server: LiveServer, mnist: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    context = browser.new_context(
        viewport={"width": 375, "height": 740},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
    )
    page = context.new_page()
    problems = watch(page)
    try:
        load(page, ui_server)
        assert no_horizontal_overflow(page)
        page.set_input_files("#files", [str(p) for p in digit_files(mnist, tmp_path, [3, 4])])
        expect(page.locator(RESULT)).to_have_count(2)
        page.get_by_text("Model card, test evaluation and training curves").click()
        expect(page.locator("#recorded-evaluation table.confusion")).to_be_visible()
        assert no_horizontal_overflow(page)
        canvas = page.locator("#canvas").bounding_box()
        assert canvas is not None and canvas["x"] + canvas["width"] <= 375
        print("phone:", screenshot(page, "8-phone-375px"))
    finally:
        context.close()
    assert not problems, problems


# Calibration and operating point ---------------------------------------------------------

THRESHOLDED = "tiny-xray-threshold"


@pytest.fixture(scope="module")
def calibrated_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A tiny X-ray model whose card has an operating point (PNEUMONIA at 0.2), a
    temperature calibration record and a reliability diagram, behind a real server."""
    folder = tmp_path_factory.mktemp("calibrated")
    model_dir = folder / "models"
    export_tiny_xray(model_dir)
    artifacts = ModelCard.read(model_dir / "tiny-xray" / "1").artifacts
    calibration = Calibration(
        temperature=1.8,
        splits={
            "validation": CalibrationChange(
                before=CalibrationScores(ece=0.08, brier=0.21),
                after=CalibrationScores(ece=0.02, brier=0.19),
            ),
            "test": CalibrationChange(
                before=CalibrationScores(ece=0.11, brier=0.25),
                after=CalibrationScores(ece=0.04, brier=0.22),
            ),
        },
    )
    version_dir = copy_with_operating_point(
        model_dir,
        "tiny-xray",
        THRESHOLDED,
        0.2,
        "PNEUMONIA",
        calibration=calibration,
        artifacts={**artifacts, "reliability_plot": "reliability.png"},
    )
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.5, 1.0, 500)
    probabilities = np.stack([confidence, 1 - confidence], axis=1)
    labels = (rng.random(500) > confidence - 0.1).astype(np.int64)
    plot_reliability_diagram(
        reliability_bins(probabilities, labels),
        reliability_bins((probabilities + 0.5) / 2, labels),
        version_dir / "reliability.png",
    )
    cache = str(folder / "runtime-cache")
    server = start_server(model_dir, folder / "server.log", VISION_SERVING_RUNTIME_CACHE_DIR=cache)
    yield server
    stop_server(server)


def test_the_model_panel_shows_calibration_and_the_operating_point_labels_predictions(
    desktop: BrowserContext, calibrated_server: LiveServer, tmp_path: Path
) -> None:
    page = desktop.new_page()
    problems = watch(page)
    try:
        page.goto(f"{calibrated_server.url}/#model={THRESHOLDED}")
        page.wait_for_selector("#card dl.facts", state="attached")
        expect(page.locator("#model")).to_have_value(THRESHOLDED)
        rule = "Label PNEUMONIA when P(PNEUMONIA) ≥ 0.2, otherwise NORMAL."
        expect(page.locator("#decision-rule")).to_contain_text(rule)
        expect(page.locator("#decision-rule")).to_contain_text("recall >= 0.95 on validation")

        page.get_by_text("Model card, test evaluation and training curves").click()
        section = page.locator("#calibration-section")
        expect(section).to_be_visible()
        expect(section.locator(".operating-point")).to_contain_text(rule)
        expect(section.locator(".operating-point")).to_contain_text("recall 95.0%")
        expect(section.locator(".calibration")).to_contain_text("T = 1.800")
        test_row = section.locator('table.calibration-scores tr[data-split="test"] td')
        expect(test_row).to_have_text(["0.1100 → 0.0400", "0.2500 → 0.2200"])
        plot = page.locator("#reliability-plot")
        expect(plot).to_be_visible()
        expect(plot).to_have_attribute("alt", re.compile(f"^Reliability diagram of {THRESHOLDED}"))
        assert plot.evaluate("img => img.complete && img.naturalWidth") == 600
        recorded = page.locator("#recorded-evaluation")
        expect(recorded.locator(".decision")).to_have_text(
            "Labels by the operating point: P(PNEUMONIA) >= 0.2."
        )
        expect(recorded.locator("table.decisions tbody tr")).to_have_count(2)
        expect(recorded.locator("table.decisions tbody tr").nth(1).locator("th")).to_have_text(
            "argmax"
        )

        # A flat gray picture: P(PNEUMONIA) is under one half, so argmax would say NORMAL.
        gray = tmp_path / "gray.png"
        gray.write_bytes(encode(np.full((40, 40), 200, dtype=np.uint8)))
        page.set_input_files("#files", str(gray))
        result = page.locator(RESULT)
        expect(result).to_have_attribute("data-label", "PNEUMONIA")
        expect(result.locator(".verdict")).to_contain_text(
            "the operating point labels PNEUMONIA from P(PNEUMONIA) ≥ 0.2"
        )
        best = result.locator(".bars li.best")
        expect(best.locator(".name")).to_have_text("PNEUMONIA")
        shown = float(best.locator(".value").inner_text().rstrip("%"))
        assert 20 <= shown < 50, "the premise: argmax and the operating point disagree"
        print("operating point:", screenshot(page, "9-calibration-and-operating-point"))
    finally:
        page.close()
    assert not problems, problems


# Recent predictions and drift ------------------------------------------------------------

WITHOUT_PROFILE = "digits-without-profile"
DRIFT_WINDOW = 100  # the smallest that is scored


@pytest.fixture(scope="module")
def drift_server(
    ui_server: LiveServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """The digit model with a prediction profile in its card (made from `ui_server`'s
    answers to neat MNIST test digits), and a copy of it without one."""
    folder = tmp_path_factory.mktemp("drift-ui")
    with np.load(require_data("mnist.npz")) as arrays:
        reference = arrays["x_test"][1000:3000]
    with httpx.Client(base_url=ui_server.url, timeout=60) as client:
        model_dir = digit_model_with_reference(client, reference, folder / "models")
    profiled = next((model_dir / DIGIT_MODEL).iterdir())
    bare = model_dir / WITHOUT_PROFILE / profiled.name
    shutil.copytree(profiled, bare)
    card = ModelCard.read(bare).model_copy(update={"prediction_profile": None})
    card.write(bare)
    server = start_server(
        model_dir,
        folder / "server.log",
        VISION_SERVING_DRIFT_WINDOW=str(DRIFT_WINDOW),
        VISION_SERVING_RUNTIME_CACHE_DIR=str(folder / "runtime-cache"),
    )
    yield server
    stop_server(server)


def predict_directly(server: LiveServer, pictures: list[tuple[str, bytes, str]]) -> None:
    """Send pictures past the page, as other clients of the server would."""
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for start in range(0, len(pictures), 50):
            chunk = [("files", p) for p in pictures[start : start + 50]]
            response = client.post(f"/api/v1/models/{DIGIT_MODEL}/predict", files=chunk)
            assert response.status_code == 200, response.text


def test_recent_predictions_show_the_servers_drift_verdict(
    desktop: BrowserContext,
    drift_server: LiveServer,
    mnist: tuple[np.ndarray, np.ndarray],
    tmp_path: Path,
) -> None:
    page = desktop.new_page()
    problems = watch(page)
    recent = page.locator("#recent-predictions")
    verdict = recent.locator(".drift-state")
    try:
        load(page, drift_server)
        page.select_option("#model", DIGIT_MODEL)
        expect(verdict).to_have_attribute("data-state", "warming_up")
        expect(verdict).to_have_text(
            f"Not scored yet: a drift score needs {DRIFT_WINDOW} predictions; 0 so far."
        )

        # Pictures sent from the page count at once.
        page.set_input_files("#files", [str(p) for p in digit_files(mnist, tmp_path, [7, 2, 0])])
        expect(page.locator(RESULT)).to_have_count(3)
        expect(verdict).to_contain_text("3 so far")
        expect(recent).to_contain_text(f"3 of the last {DRIFT_WINDOW} predictions")
        mix = recent.locator("table.class-mix")
        for label in ("7", "2", "0"):
            expect(mix.locator(f'tr[data-class="{label}"] td').first).to_have_text("33.3%")

        # Digits like the reference's: scored, and no drift.
        images, _ = mnist
        predict_directly(drift_server, png_pictures(images[100 : 100 + DRIFT_WINDOW - 3], "d"))
        page.get_by_role("button", name="Refresh").click()
        expect(verdict).to_have_attribute("data-state", "ok")
        expect(verdict).to_have_text(
            re.compile(r"^No drift: score 0\.\d\d \(drift is above 1\)\.$")
        )
        expect(mix.locator("thead th")).to_have_text(["Class", "Recent", "Test split"])
        expect(recent.locator('[data-figure="Mean confidence"] .figure')).to_contain_text("(test ")
        print("recent, no drift:", screenshot(page, "10-recent-predictions-ok"))

        # Noise fills the window: drift.
        rng = np.random.default_rng(0)
        noise = [
            (f"n{i}.png", encode(rng.integers(0, 256, size=(64, 64))), "image/png")
            for i in range(DRIFT_WINDOW)
        ]
        predict_directly(drift_server, noise)
        page.get_by_role("button", name="Refresh").click()
        expect(verdict).to_have_attribute("data-state", "drift")
        expect(verdict).to_contain_text("Drift: score")
        assert float(re.findall(r"score (\d+\.\d+)", verdict.inner_text())[0]) > 1
        expect(recent.locator('[data-figure="No digit found"] .figure')).to_contain_text("100.0%")
        print("recent, drift:", screenshot(page, "11-recent-predictions-drift"))

        page.select_option("#model", WITHOUT_PROFILE)
        expect(verdict).to_have_attribute("data-state", "no_reference")
        expect(verdict).to_contain_text("no reference in the card")
    finally:
        page.close()
    assert not problems, problems
