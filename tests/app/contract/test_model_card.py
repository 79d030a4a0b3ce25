"""The model card contract: a valid card round-trips, and invalid ones are refused."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from app.contract.classification import evaluate_probabilities, report_from_confusion
from app.contract.decision import OperatingFigures, OperatingPoint
from app.contract.drift import prediction_profile
from app.contract.model_card import (
    MODEL_CARD_FILENAME,
    SCHEMA_VERSION,
    Calibration,
    CalibrationChange,
    CalibrationScores,
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


# --- Operating point, argmax evaluation and calibration ------------------------------------

TEST_LABELS = [0, 0, 0, 1, 1, 1]
TEST_PROBS = [[0.9, 0.1], [0.7, 0.3], [0.6, 0.4], [0.65, 0.35], [0.3, 0.7], [0.1, 0.9]]


def operating_point(threshold: float = 0.32, positive_class: str = "pneumonia") -> OperatingPoint:
    return OperatingPoint(
        positive_class=positive_class,
        threshold=threshold,
        goal="highest specificity with pneumonia recall >= 0.95 on validation",
        figures=OperatingFigures(
            count=6,
            recall=1.0,
            specificity=2 / 3,
            precision=0.75,
            accuracy=5 / 6,
            balanced_accuracy=5 / 6,
        ),
    )


def with_operating_point(point: OperatingPoint | None = None) -> dict[str, Any]:
    """Card fields of a consistent operating point: evaluations at it and at argmax."""
    point = point or operating_point()
    return {
        "operating_point": json.loads(point.model_dump_json()),
        "evaluation": json.loads(
            evaluate_probabilities(TEST_LABELS, TEST_PROBS, CLASS_NAMES, point).model_dump_json()
        ),
        "evaluation_at_argmax": json.loads(
            evaluate_probabilities(TEST_LABELS, TEST_PROBS, CLASS_NAMES).model_dump_json()
        ),
    }


def test_a_card_without_the_new_fields_decides_by_argmax() -> None:
    data = make_card_data()
    for field in ("operating_point", "evaluation_at_argmax", "calibration"):
        del data[field]
    del data["evaluation"]["decision"]
    card = ModelCard.model_validate(data)
    assert card.operating_point is None
    assert card.evaluation_at_argmax is None
    assert card.calibration is None
    assert card.evaluation.decision == "argmax"


def test_a_card_with_an_operating_point_round_trips(tmp_path: Path) -> None:
    card = make_card(**with_operating_point())
    assert card.operating_point == operating_point()
    assert card.evaluation.decision == "P(pneumonia) >= 0.32"
    # 0.35 and 0.4 are pneumonia at 0.32: one more pneumonia found, one more false alarm
    assert card.evaluation.confusion_matrix == [[2, 1], [0, 3]]
    assert card.evaluation_at_argmax is not None
    assert card.evaluation_at_argmax.confusion_matrix == [[3, 0], [1, 2]]
    card.write(tmp_path)
    assert ModelCard.read(tmp_path) == card


def test_an_operating_point_needs_a_two_class_card() -> None:
    names = ["normal", "pneumonia", "covid"]
    evaluation = report_from_confusion([[1, 0, 0], [0, 1, 0], [0, 0, 1]], names)
    with pytest.raises(ValidationError, match="needs a two-class model; this one has 3"):
        make_card(
            class_names=names,
            evaluation=json.loads(evaluation.model_dump_json()),
            operating_point=json.loads(operating_point().model_dump_json()),
            evaluation_at_argmax=json.loads(evaluation.model_dump_json()),
        )


def test_an_operating_point_needs_one_of_the_card_classes() -> None:
    fields = with_operating_point()
    fields["operating_point"]["positive_class"] = "PNEUMONIA"
    with pytest.raises(ValidationError, match="'PNEUMONIA' is not one of the model's classes"):
        make_card(**fields)


@pytest.mark.parametrize("threshold", [0.0, 1.0])
def test_an_operating_point_threshold_is_strictly_inside_zero_one(threshold: float) -> None:
    fields = with_operating_point()
    fields["operating_point"]["threshold"] = threshold
    with pytest.raises(ValidationError) as exc_info:
        make_card(**fields)
    assert [loc for loc, _ in _errors(exc_info)] == [("operating_point", "threshold")]


def test_an_operating_point_comes_with_the_argmax_evaluation() -> None:
    fields = with_operating_point()
    del fields["evaluation_at_argmax"]
    with pytest.raises(ValidationError, match="give both or neither"):
        make_card(**fields)
    argmax_only = with_operating_point()
    del argmax_only["operating_point"]
    argmax_only["evaluation"] = argmax_only["evaluation_at_argmax"]
    with pytest.raises(ValidationError, match="give both or neither"):
        make_card(**argmax_only)


def test_the_evaluation_must_be_at_the_card_operating_point() -> None:
    fields = with_operating_point()
    fields["operating_point"]["threshold"] = 0.5
    with pytest.raises(ValidationError, match=r"decision 'P\(pneumonia\) >= 0.32'.*>= 0.5'"):
        make_card(**fields)
    swapped = with_operating_point()
    swapped["evaluation_at_argmax"] = swapped["evaluation"]
    with pytest.raises(ValidationError, match="evaluation_at_argmax must be an argmax"):
        make_card(**swapped)


def test_calibration_record_round_trips() -> None:
    calibration = Calibration(
        temperature=1.8,
        splits={
            split: CalibrationChange(
                before=CalibrationScores(ece=0.08, brier=0.2),
                after=CalibrationScores(ece=0.02, brier=0.18),
            )
            for split in ("validation", "test")
        },
    )
    card = make_card(calibration=json.loads(calibration.model_dump_json()))
    assert card.calibration == calibration
    assert card.calibration.method == "temperature"
    assert card.calibration.fitted_on == "validation"
    assert card.calibration.bins == 15


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"temperature": 0.0}, ("calibration", "temperature")),
        ({"method": "isotonic"}, ("calibration", "method")),
        ({"bins": 0}, ("calibration", "bins")),
    ],
)
def test_calibration_record_is_checked(change: dict[str, Any], where: tuple[str, ...]) -> None:
    with pytest.raises(ValidationError) as exc_info:
        make_card(calibration={"temperature": 1.5, **change})
    assert [loc for loc, _ in _errors(exc_info)] == [where]


def test_prediction_profile_must_list_the_card_classes_in_order() -> None:
    profile = prediction_profile([[0.9, 0.1], [0.2, 0.8]], CLASS_NAMES)
    assert make_card(prediction_profile=profile.model_dump()).prediction_profile == profile
    swapped = prediction_profile([[0.9, 0.1]], CLASS_NAMES[::-1])
    with pytest.raises(ValidationError, match="must list class_names, in order"):
        make_card(prediction_profile=swapped.model_dump())


IMPORT_RECORD = {
    "source": "xray.keras",
    "source_format": "keras",
    "fingerprint": "sha256:" + "ab" * 32,
    "imported_at": "2025-01-02T03:04:05Z",
    "input_range": [0.0, 1.0],
}


def test_an_imported_card_without_evaluation_round_trips(tmp_path: Path) -> None:
    card = make_card(training=None, evaluation=None, imported=IMPORT_RECORD)
    assert card.training is None and card.evaluation is None
    assert card.imported is not None and card.imported.evaluated_on is None
    assert card.imported.input_range == (0.0, 1.0)
    card.write(tmp_path)
    assert ModelCard.read(tmp_path) == card


def test_an_imported_card_with_evaluation_names_the_data_it_was_made_on() -> None:
    evaluated_on = {"name": "my-xrays", "counts": {"evaluation": {"normal": 2, "pneumonia": 3}}}
    card = make_card(training=None, imported={**IMPORT_RECORD, "evaluated_on": evaluated_on})
    assert card.evaluation is not None
    with pytest.raises(ValidationError, match="must name the data the evaluation was made on"):
        make_card(training=None, imported=IMPORT_RECORD)
    with pytest.raises(ValidationError, match="evaluation is missing"):
        make_card(
            training=None, evaluation=None, imported={**IMPORT_RECORD, "evaluated_on": evaluated_on}
        )


@pytest.mark.parametrize("imported", [None, IMPORT_RECORD])
def test_a_card_records_either_training_or_an_import(imported: dict[str, Any] | None) -> None:
    overrides: dict[str, Any] = {"imported": imported}
    if imported is None:
        overrides["training"] = None
    with pytest.raises(ValidationError, match="exactly one of them"):
        make_card(**overrides)


def test_a_trained_card_needs_its_evaluation() -> None:
    with pytest.raises(ValidationError, match="evaluation is missing"):
        make_card(evaluation=None)


def test_a_card_written_before_imports_existed_still_reads() -> None:
    data = make_card_data()
    del data["imported"]
    assert ModelCard.model_validate(data).imported is None
