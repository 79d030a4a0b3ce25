"""The model card contract: a valid card round-trips, and invalid ones are refused."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from app.contract.classification import report_from_confusion
from app.contract.model_card import (
    MODEL_CARD_FILENAME,
    SCHEMA_VERSION,
    DataSource,
    InputSpec,
    ModelCard,
    ParentModel,
    Preprocessing,
    TrainingRecord,
    is_valid_model_name,
)

CLASS_NAMES = ["normal", "pneumonia"]


def make_card_data(**overrides: Any) -> dict[str, Any]:
    """The JSON-ready fields of a valid two-class grayscale card, with `overrides` applied."""
    card = ModelCard(
        name="chest-xray-cnn",
        version=3,
        created_at=datetime(2024, 5, 17, 12, 30, 15, 123456, tzinfo=UTC),
        description="Pneumonia vs normal on chest X-rays.",
        limitations="Paediatric AP views only.",
        class_names=CLASS_NAMES,
        input=InputSpec(height=64, width=64, channels=1, color_mode="grayscale"),
        preprocessing=Preprocessing(kind="resize", description="grayscale, 64x64"),
        architecture="cnn",
        parameter_count=123_456,
        training=TrainingRecord(
            epochs_requested=20,
            epochs_run=12,
            batch_size=32,
            optimizer="adam",
            learning_rate=1e-3,
            seed=42,
            validation="10% stratified split of train",
            early_stopping=True,
            class_weights={"normal": 1.9, "pneumonia": 0.67},
            hyperparameters={"dropout": 0.3, "filters": [16, 32]},
            data=DataSource(
                name="chest-xray",
                location="data/chest_xray",
                counts={"train": {"normal": 1341, "pneumonia": 3875}},
            ),
            duration_seconds=321.5,
            parent=ParentModel(name="chest-xray-cnn", version=2),
        ),
        evaluation=report_from_confusion([[200, 34], [12, 378]], CLASS_NAMES, loss=0.31),
        library_versions={"tensorflow": "2.21.0"},
        artifacts={"keras": "model.keras"},
    )
    data = json.loads(card.model_dump_json())
    data.update(overrides)
    return data


def make_card(**overrides: Any) -> ModelCard:
    return ModelCard.model_validate(make_card_data(**overrides))


def _errors(exc_info: pytest.ExceptionInfo[ValidationError]) -> list[tuple[tuple[Any, ...], str]]:
    return [(tuple(error["loc"]), error["msg"]) for error in exc_info.value.errors()]


def test_valid_card_defaults() -> None:
    card = make_card()
    assert card.schema_version == SCHEMA_VERSION == 1
    assert card.task == "image-classification"
    assert card.signature_name == "serving_default"
    assert card.output_name == "probabilities"
    assert card.input.value_range == (0.0, 255.0)
    assert card.input.dtype == "float32"
    assert card.input.tensor_name == "pixels"
    assert card.evaluation.per_class["pneumonia"].support == 390


def test_write_read_round_trip(tmp_path: Path) -> None:
    card = make_card()
    path = card.write(tmp_path)

    assert path == tmp_path / MODEL_CARD_FILENAME
    assert path.name == "model_card.json"
    text = path.read_text(encoding="utf-8")
    assert text.endswith("}\n")
    assert text.startswith('{\n  "schema_version": 1,')  # indented for humans

    restored = ModelCard.read(tmp_path)
    assert restored == card
    assert restored.created_at == datetime(2024, 5, 17, 12, 30, 15, 123456, tzinfo=UTC)
    assert restored.input.value_range == (0.0, 255.0)
    assert restored.evaluation == card.evaluation
    assert restored.training.parent == ParentModel(name="chest-xray-cnn", version=2)
    # writing the restored card again gives the same bytes
    other = tmp_path / "again"
    other.mkdir()
    assert restored.write(other).read_text(encoding="utf-8") == text


def test_read_missing_card(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        ModelCard.read(tmp_path)


@pytest.mark.parametrize("name", ["Chest-Xray", "chest_xray", "chest xray", "-cnn", "cnn-", ""])
def test_non_kebab_case_name(name: str) -> None:
    with pytest.raises(ValidationError) as exc_info:
        make_card(name=name)
    errors = exc_info.value.errors()
    assert [error["loc"] for error in errors] == [("name",)]
    assert errors[0]["type"] == "string_pattern_mismatch"


def test_version_zero() -> None:
    with pytest.raises(ValidationError) as exc_info:
        make_card(version=0)
    errors = exc_info.value.errors()
    assert [error["loc"] for error in errors] == [("version",)]
    assert errors[0]["type"] == "greater_than_equal"
    assert make_card(version=1).version == 1


def test_duplicate_class_names() -> None:
    with pytest.raises(ValidationError) as exc_info:
        make_card(class_names=["normal", "normal"])
    assert _errors(exc_info) == [(("class_names",), "Value error, class names must be unique")]


def test_fewer_than_two_class_names() -> None:
    with pytest.raises(ValidationError) as exc_info:
        make_card(class_names=["normal"])
    assert [loc for loc, _ in _errors(exc_info)] == [("class_names",)]


@pytest.mark.parametrize(
    ("channels", "color_mode", "message"),
    [
        (3, "grayscale", "color_mode 'grayscale' needs 1 channel(s)"),
        (1, "rgb", "color_mode 'rgb' needs 3 channel(s)"),
    ],
)
def test_color_mode_channels_mismatch(channels: int, color_mode: str, message: str) -> None:
    spec = {"height": 64, "width": 64, "channels": channels, "color_mode": color_mode}
    with pytest.raises(ValidationError) as exc_info:
        make_card(input=spec)
    assert _errors(exc_info) == [(("input",), f"Value error, {message}")]
    with pytest.raises(ValidationError, match="needs"):
        InputSpec.model_validate(spec)


def test_matching_color_modes_are_accepted() -> None:
    assert InputSpec(height=28, width=28, channels=1, color_mode="grayscale").channels == 1
    assert InputSpec(height=224, width=224, channels=3, color_mode="rgb").channels == 3


@pytest.mark.parametrize(
    "evaluation_names",
    [["pneumonia", "normal"], ["normal", "bacterial"]],
    ids=["reordered", "renamed"],
)
def test_evaluation_class_names_must_match(evaluation_names: list[str]) -> None:
    evaluation = report_from_confusion([[5, 1], [2, 7]], evaluation_names)
    with pytest.raises(ValidationError) as exc_info:
        make_card(evaluation=json.loads(evaluation.model_dump_json()))
    assert _errors(exc_info) == [((), "Value error, evaluation.class_names must equal class_names")]


def test_unknown_schema_version(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as exc_info:
        make_card(schema_version=2)
    errors = exc_info.value.errors()
    assert [error["loc"] for error in errors] == [("schema_version",)]
    assert errors[0]["type"] == "literal_error"

    # and from disk, the way the service meets it
    (tmp_path / MODEL_CARD_FILENAME).write_text(
        json.dumps(make_card_data(schema_version=2)), encoding="utf-8"
    )
    with pytest.raises(ValidationError, match="schema_version"):
        ModelCard.read(tmp_path)


def test_missing_schema_version_defaults_to_current() -> None:
    data = make_card_data()
    del data["schema_version"]
    assert ModelCard.model_validate(data).schema_version == 1


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("mnist-mlp", True),
        ("chest-xray-cnn", True),
        ("a", True),
        ("v2", True),
        ("2024-model", True),
        ("Mnist-mlp", False),
        ("mnist_mlp", False),
        ("mnist mlp", False),
        ("mnist.mlp", False),
        ("mnist--mlp", False),
        ("-mnist", False),
        ("mnist-", False),
        ("mnist-mlp\n", False),
        ("mnïst", False),
        ("", False),
    ],
)
def test_is_valid_model_name(name: str, valid: bool) -> None:
    assert is_valid_model_name(name) is valid


@pytest.mark.parametrize("name", ["mnist-mlp", "v2", "mnist--mlp", "mnist-mlp\n", "Mnist"])
def test_is_valid_model_name_agrees_with_the_card(name: str) -> None:
    try:
        make_card(name=name)
    except ValidationError:
        accepted = False
    else:
        accepted = True
    assert accepted is is_valid_model_name(name)
