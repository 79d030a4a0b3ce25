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


class ModelCard(BaseModel):
    """Everything the service needs to serve one exported model version."""

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
    training: TrainingRecord
    evaluation: EvaluationReport = Field(description="Evaluation on the held-out test split")
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
        if self.evaluation.class_names != self.class_names:
            raise ValueError("evaluation.class_names must equal class_names")
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
