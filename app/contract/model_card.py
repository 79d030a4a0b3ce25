"""The model card: the one contract between training and serving.

Training writes `model_card.json` beside each exported SavedModel; the service reads it
with this same pydantic model to learn the classes, the input the signature expects and
the preprocessing it must apply to uploads. Framework-free, so `training` may import it.

A version folder follows TensorFlow Serving's layout, so TF Serving itself could serve
the same `models/` tree:

    models/<name>/<version>/saved_model.pb, variables/   the SavedModel
                            model_card.json               this contract
                            model.tflite                  LiteRT conversion of the SavedModel
                            model.keras                   for retraining
                            history.json, *.png           training record
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from app.contract.classification import EvaluationReport
from app.contract.decision import ARGMAX, OperatingPoint, describe_decision, positive_index
from app.contract.drift import PredictionProfile

SCHEMA_VERSION: Literal[1] = 1
MODEL_CARD_FILENAME = "model_card.json"
LITERT_MODEL_FILENAME = "model.tflite"
"""The SavedModel converted for LiteRT, which the service runs on CPU once it has checked
that it agrees with the SavedModel (`app.contract.runtimes`)."""
LITERT_MODEL_ROLE = "litert_model"
"""Its role in the card's `artifacts`."""
MODEL_NAME_PATTERN = r"^[a-z0-9]+(-[a-z0-9]+)*$"

PreprocessingKind = Literal["mnist-digit", "resize"]


class InputSpec(BaseModel):
    """What the serving signature takes: float32 `[N, height, width, channels]`."""

    height: int = Field(gt=0, examples=[28])
    width: int = Field(gt=0, examples=[28])
    channels: Literal[1, 3]
    color_mode: Literal["grayscale", "rgb"]
    value_range: tuple[float, float] = Field(
        default=(0.0, 255.0),
        description="Range of the raw pixel values; scaling happens inside the model",
    )
    dtype: Literal["float32"] = "float32"
    tensor_name: str = Field(default="pixels", description="Input name in the signature")

    @model_validator(mode="after")
    def _channels_match_color_mode(self) -> InputSpec:
        expected = 1 if self.color_mode == "grayscale" else 3
        if self.channels != expected:
            raise ValueError(f"color_mode {self.color_mode!r} needs {expected} channel(s)")
        return self


class Preprocessing(BaseModel):
    """What the service must do to an uploaded image before the model sees it.

    - `mnist-digit`: normalise like MNIST itself was made: white digit on black, cropped,
      fitted in a 20x20 box and centred by centre of mass in 28x28.
    - `resize`: convert to the card's colour mode and resize to the input size.
    """

    kind: PreprocessingKind
    description: str = ""


class DataSource(BaseModel):
    """Which data the model was trained and tested on, and how much of it each split held.

    Named and fingerprinted, never located: a path on the training machine means nothing
    elsewhere and would leak that machine's layout into every copy of the model.
    """

    name: str = Field(examples=["mnist"])
    fingerprint: str | None = Field(
        default=None,
        description="sha256 of what was read: the .npz file's bytes, or, for an image "
        "folder, the sorted list of each file's relative path and the sha256 of its bytes",
        examples=["sha256:06af5dfe73b70e3bc1c36439982b18a8d76803db9b544f6fdf838a37fbb01b64"],
    )
    counts: dict[str, dict[str, int]] = Field(
        default_factory=dict, description="split -> class name -> number of examples"
    )


class ParentModel(BaseModel):
    """The exported model a retrained version started from."""

    name: str
    version: int


class TrainingRecord(BaseModel):
    """How the model was trained, enough to reproduce the run."""

    epochs_requested: int
    epochs_run: int
    batch_size: int
    optimizer: str
    learning_rate: float
    seed: int
    validation: str = Field(description="How the validation data was chosen")
    early_stopping: bool
    class_weights: dict[str, float] | None = None
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    data: DataSource
    duration_seconds: float
    parent: ParentModel | None = None


class ImportRecord(BaseModel):
    """Where an imported model came from: a classifier trained elsewhere that
    `python -m training import` checked and wrapped in the serving signature.

    Named and fingerprinted, never located, like `DataSource`.
    """

    source: str = Field(
        description="File or folder name of what was imported, never its path",
        examples=["digits.keras"],
    )
    source_format: Literal["keras", "saved_model"]
    fingerprint: str = Field(
        description="sha256 of the source: a .keras file's bytes, or, for a SavedModel "
        "folder, the sorted list of each file's relative path and the sha256 of its bytes",
        examples=["sha256:9f2c0d4e5b6a79810c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b"],
    )
    signature: str | None = Field(
        default=None, description="The SavedModel signature that was wrapped; null for .keras"
    )
    imported_at: datetime
    input_range: tuple[float, float] = Field(
        description="The pixel range the imported model expects; the served signature takes "
        "raw 0..255 pixels and scales them to this range inside the model",
        examples=[(0.0, 1.0)],
    )
    evaluated_on: DataSource | None = Field(
        default=None,
        description="The labelled folder the card's evaluation was made on, at import; null "
        "when no labelled data was given, and then the card has no evaluation",
    )


class CalibrationScores(BaseModel):
    """How well the probabilities on one split match how often they are right."""

    ece: float = Field(ge=0.0, le=1.0, description="Expected calibration error")
    brier: float = Field(ge=0.0, le=2.0, description="Multi-class Brier score")


class CalibrationChange(BaseModel):
    """One split's scores from the uncalibrated model and from the exported one."""

    before: CalibrationScores
    after: CalibrationScores


class Calibration(BaseModel):
    """The calibration built into the exported model, and what it changed.

    The SavedModel already serves calibrated probabilities (temperature scaling is a layer
    after its softmax: softmax(log(p) / temperature)); this records how it was fitted.
    """

    method: Literal["temperature"] = "temperature"
    temperature: float = Field(
        gt=0.0, description="Above 1 softens overconfident probabilities, below 1 sharpens them"
    )
    fitted_on: str = Field(default="validation", description="The split it was fitted on")
    bins: int = Field(default=15, ge=1, description="Bins of the expected calibration error")
    splits: dict[str, CalibrationChange] = Field(
        default_factory=dict,
        description="split (validation, test) -> ECE and Brier score before and after",
    )


class ModelCard(BaseModel):
    """Everything the service needs to serve one exported model version.

    A model trained here records `training`; one trained elsewhere and brought in by
    `python -m training import` records `imported` instead, and has an `evaluation` only
    when labelled data was given at import.
    """

    schema_version: Literal[1] = 1
    name: str = Field(pattern=MODEL_NAME_PATTERN, examples=["mnist-mlp"])
    version: int = Field(ge=1)
    created_at: datetime
    task: Literal["image-classification"] = "image-classification"
    description: str
    limitations: str | None = None
    class_names: list[str] = Field(min_length=2, description="Output order of the softmax")
    input: InputSpec
    preprocessing: Preprocessing
    signature_name: str = "serving_default"
    output_name: str = Field(default="probabilities", description="Output name in the signature")
    architecture: str
    parameter_count: int = Field(ge=0)
    training: TrainingRecord | None = Field(
        default=None,
        description="How the model was trained here; null for an imported model (`imported`)",
    )
    imported: ImportRecord | None = Field(
        default=None,
        description="Where a model trained elsewhere came from; null for a model trained here",
    )
    evaluation: EvaluationReport | None = Field(
        default=None,
        description="Evaluation on the held-out test split, labels decided by the operating "
        "point when there is one; for an imported model, on the labelled folder given at "
        "import, and null when none was given",
    )
    operating_point: OperatingPoint | None = Field(
        default=None,
        description="Two-class models: the threshold that decides the label; argmax if absent",
    )
    evaluation_at_argmax: EvaluationReport | None = Field(
        default=None,
        description="The same test evaluation with argmax labels; given with an operating point",
    )
    calibration: Calibration | None = Field(
        default=None, description="How the served probabilities were calibrated, if they were"
    )
    prediction_profile: PredictionProfile | None = Field(
        default=None,
        description="What the served model's answers on the test split look like (class mix, "
        "confidence, entropy): the reference the service scores its recent predictions "
        "against for drift (app.contract.drift); without it drift is not scored",
    )
    library_versions: dict[str, str] = Field(default_factory=dict)
    artifacts: dict[str, str] = Field(
        default_factory=dict, description="Other files in the version folder, by role"
    )

    @field_validator("class_names")
    @classmethod
    def _class_names_unique(cls, names: list[str]) -> list[str]:
        if len(set(names)) != len(names):
            raise ValueError("class names must be unique")
        return names

    @model_validator(mode="after")
    def _evaluation_matches_classes(self) -> ModelCard:
        if self.evaluation is not None and self.evaluation.class_names != self.class_names:
            raise ValueError("evaluation.class_names must equal class_names")
        return self

    @model_validator(mode="after")
    def _trained_or_imported(self) -> ModelCard:
        """A card says how its model was made, and only an imported model given no
        labelled data may go without an evaluation."""
        if (self.training is None) == (self.imported is None):
            raise ValueError(
                "a model card records either training (a model trained here) or imported "
                "(a model trained elsewhere), exactly one of them"
            )
        evaluated_on = self.imported.evaluated_on if self.imported is not None else None
        if self.evaluation is None and (self.training is not None or evaluated_on is not None):
            raise ValueError("evaluation is missing: a trained or evaluated model records it")
        if self.imported is not None and self.evaluation is not None and evaluated_on is None:
            raise ValueError("imported.evaluated_on must name the data the evaluation was made on")
        return self

    @model_validator(mode="after")
    def _prediction_profile_matches_classes(self) -> ModelCard:
        profile = self.prediction_profile
        if profile is not None and list(profile.class_mix) != self.class_names:
            raise ValueError("prediction_profile.class_mix must list class_names, in order")
        return self

    @model_validator(mode="after")
    def _operating_point_fits_the_model(self) -> ModelCard:
        point = self.operating_point
        if point is not None:
            positive_index(self.class_names, point)  # two classes, a known positive class
        # An imported model may have no evaluation at all, and then none at argmax either.
        expects_argmax = point is not None and self.evaluation is not None
        if (self.evaluation_at_argmax is not None) != expects_argmax:
            raise ValueError(
                "evaluation_at_argmax goes with operating_point (when there is an evaluation): "
                "give both or neither"
            )
        if self.evaluation is not None and self.evaluation.decision != describe_decision(point):
            raise ValueError(
                f"evaluation was made with the decision {self.evaluation.decision!r}, but the "
                f"card decides by {describe_decision(point)!r}; evaluate at the card's "
                "operating point"
            )
        at_argmax = self.evaluation_at_argmax
        if at_argmax is not None and (
            at_argmax.class_names != self.class_names or at_argmax.decision != ARGMAX
        ):
            raise ValueError(
                "evaluation_at_argmax must be an argmax evaluation over the card's class_names"
            )
        return self

    @classmethod
    def read(cls, version_dir: Path) -> ModelCard:
        """Read and validate `model_card.json` in a version folder."""
        text = (version_dir / MODEL_CARD_FILENAME).read_text(encoding="utf-8")
        return cls.model_validate_json(text)

    def write(self, version_dir: Path) -> Path:
        """Write `model_card.json` into a version folder and return its path."""
        path = version_dir / MODEL_CARD_FILENAME
        payload = json.loads(self.model_dump_json())
        path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        return path


def is_valid_model_name(name: str) -> bool:
    """Model names are kebab-case, as used in URLs."""
    return re.fullmatch(MODEL_NAME_PATTERN, name) is not None
