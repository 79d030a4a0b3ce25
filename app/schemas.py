"""Response bodies of the native API (`/api/v1`), typed so the OpenAPI page documents them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field

from app.contract.classification import EvaluationReport
from app.contract.drift import DriftScores, PredictionProfile
from app.contract.model_card import InputSpec, ModelCard

if TYPE_CHECKING:
    from app.runtime import RuntimeInfo


class ClassProbability(BaseModel):
    label: str = Field(examples=["7"])
    class_index: int = Field(examples=[7])
    probability: float = Field(examples=[0.994])


_DIGIT_FOUND = Field(
    default=None,
    description="Digit models only (null for others): false when the picture holds no "
    "plausible digit (a blank page, only ruled lines or a paper edge). The label and "
    "probabilities are still given, but they are a guess about an empty field",
    examples=[True],
)


class FileError(BaseModel):
    """A file of the request that could not be read; the other files are still answered."""

    index: int = Field(description="Its position among the files sent, from 0", examples=[2])
    filename: str = Field(examples=["README.md"])
    error: str = Field(description="What is wrong with it and how to fix it")
    code: str = Field(
        description="unsupported_media_type (not an image) or invalid_image (corrupt, "
        "truncated, empty or too large)",
        examples=["unsupported_media_type"],
    )
    status: int = Field(description="The HTTP status the file alone would have got", examples=[415])


_ERRORS_FIELD: list[FileError] = Field(
    default_factory=list,
    description="Files that could not be read, each with its error; empty when all were read. "
    "A request none of whose files can be read gets a 415/422 error instead",
)


class Prediction(BaseModel):
    """The predicted class of one uploaded file, with the most likely classes."""

    index: int = Field(description="Position of the file among those sent, from 0", examples=[0])
    filename: str = Field(examples=["digit.png"])
    label: str = Field(
        description="The class decided: the most likely, or, when the model card has an "
        "operating point (two-class models), its positive class if that class's probability "
        "is at least the threshold and the other class if not",
        examples=["7"],
    )
    class_index: int = Field(description="Its index in class_names", examples=[7])
    confidence: float = Field(description="Its softmax probability", examples=[0.994])
    top_k: list[ClassProbability] = Field(
        description="The k most likely classes, best first; the label always comes first"
    )
    digit_found: bool | None = _DIGIT_FOUND
    preprocessed_png: str | None = Field(
        default=None,
        description="The model's actual input as a base64 PNG (include_preprocessed=true)",
    )


class PredictResponse(BaseModel):
    model: str = Field(examples=["mnist-mlp"])
    version: int = Field(examples=[1])
    predictions: list[Prediction] = Field(
        description="One entry per readable file, in upload order"
    )
    errors: list[FileError] = _ERRORS_FIELD


class FileProbabilities(BaseModel):
    index: int = Field(description="Position of the file among those sent, from 0", examples=[0])
    filename: str = Field(examples=["digit.png"])
    probabilities: dict[str, float] = Field(
        description="Softmax probability of every class; they sum to 1",
        examples=[{"0": 0.001, "1": 0.002, "7": 0.994}],
    )
    digit_found: bool | None = _DIGIT_FOUND


class ProbabilitiesResponse(BaseModel):
    model: str = Field(examples=["mnist-mlp"])
    version: int = Field(examples=[1])
    class_names: list[str] = Field(examples=[["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]])
    results: list[FileProbabilities] = Field(
        description="One entry per readable file, in upload order"
    )
    errors: list[FileError] = _ERRORS_FIELD


class RuntimeStatus(BaseModel):
    """What runs a loaded version's batches, and why (chosen and checked at load)."""

    name: Literal["litert", "savedmodel"] = Field(
        description="litert: the LiteRT model on CPU, checked at load to agree with the "
        "SavedModel; savedmodel: the SavedModel's serving signature",
        examples=["litert"],
    )
    source: Literal["export", "converted at load"] | None = Field(
        default=None,
        description="Where the LiteRT model came from: the export's model.tflite, or "
        "converted at load into the cache folder; null when the SavedModel serves",
        examples=["export"],
    )
    reason: str = Field(
        description="Why this runtime serves, e.g. why LiteRT was not used",
        examples=[
            "model.tflite from the export agrees with the SavedModel (largest "
            "difference 1.3e-06 over 54 check images)"
        ],
    )

    inline_max_images: int = Field(
        default=0,
        description="Largest batch run on the event loop when the model is idle, because "
        "warm-up measured it cheaper than the hop to the inference thread (0: none)",
        examples=[32],
    )

    @classmethod
    def of(cls, info: RuntimeInfo | None, inline_max_images: int = 0) -> RuntimeStatus | None:
        if info is None:
            return None
        return cls(
            name=info.name,
            source=info.litert_source,
            reason=info.reason,
            inline_max_images=inline_max_images,
        )


_RUNTIME_FIELD: RuntimeStatus | None = Field(
    default=None, description="What runs it and why; null until it is loaded"
)


class VersionStatus(BaseModel):
    """One version of a model as loaded (or not) by the service."""

    version: int = Field(
        description="The version folder's number, which is the version served (as in TF Serving)",
        examples=[1],
    )
    status: str = Field(description="loading, ready, failed or unloading", examples=["ready"])
    error: str | None = Field(default=None, description="Why this version failed to load")
    device: str | None = Field(default=None, description="cpu or gpu", examples=["cpu"])
    runtime: RuntimeStatus | None = _RUNTIME_FIELD
    ready_seconds: float | None = Field(
        default=None, description="Seconds it took to load, check and warm up"
    )
    card_name: str | None = Field(
        default=None,
        description="The model name its model card records; the folder's name is served",
        examples=["mnist-mlp"],
    )
    card_version: int | None = Field(
        default=None,
        description="The version its model card records (it differs when a version folder "
        "was copied to a new number); the folder's number is served",
        examples=[1],
    )


class ModelStatus(BaseModel):
    """A model as the service serves it right now."""

    name: str = Field(examples=["mnist-mlp"])
    version: int | None = Field(
        description="The version unversioned requests use (the newest ready one)", examples=[1]
    )
    status: str = Field(description="ready when a version serves, else loading or failed")
    error: str | None = Field(default=None, description="Why the model is not serving, if so")
    device: str | None = Field(default=None, description="cpu or gpu", examples=["cpu"])
    runtime: RuntimeStatus | None = Field(
        default=None, description="What runs the version unversioned requests use, and why"
    )
    class_names: list[str] = Field(default_factory=list)
    input: InputSpec | None = None
    versions: list[VersionStatus] = Field(description="Every version the service knows of")


class ModelList(BaseModel):
    models: list[ModelStatus]
    error: str | None = Field(
        default=None,
        description="Why the model directory yields no model (missing, empty, or set one "
        "level too deep), and what to do",
    )


class RecentPredictions(BaseModel):
    """The last predictions a version served, against the profile its card records.

    Kept per serving process; drift is scored once `MIN_SCORED_PREDICTIONS` (100) are in
    and only when the card has a reference profile (docs/observability.md).
    """

    window_size: int = Field(
        description="Most predictions the window holds (VISION_SERVING_DRIFT_WINDOW)",
        examples=[1000],
    )
    count: int = Field(description="Predictions in the window now", examples=[640])
    status: Literal["ok", "drift", "warming_up", "no_reference"] = Field(
        description="ok or drift (drift_score above 1); warming_up: too few predictions to "
        "score yet; no_reference: the model card has no prediction_profile to compare with",
        examples=["ok"],
    )
    note: str | None = Field(default=None, description="Why there is no score, if there is none")
    window: PredictionProfile | None = Field(
        default=None, description="Profile of the predictions in the window; null while empty"
    )
    reference: PredictionProfile | None = Field(
        default=None, description="The model card's profile of its test split"
    )
    scores: DriftScores | None = Field(
        default=None, description="How far the window has moved from the reference"
    )
    non_finite_skipped: int = Field(
        default=0,
        description="Predictions left out of the window since the version was loaded "
        "because their probabilities held NaN or infinite values (a fault of the model)",
        examples=[0],
    )


class ModelDetail(ModelStatus):
    """Serving status plus the full model card."""

    card: ModelCard | None = None
    recent_predictions: RecentPredictions | None = Field(
        default=None,
        description="The recent predictions of the version unversioned requests use, and "
        "their drift from the card's profile; null when monitoring is off "
        "(VISION_SERVING_DRIFT_WINDOW=0) or no version serves",
    )


class FilePrediction(BaseModel):
    index: int = Field(
        description="Position of the file among those sent (for an archive: among its "
        "images, in archive order), from 0"
    )
    filename: str
    true_label: str
    predicted_label: str
    confidence: float
    correct: bool
    digit_found: bool | None = _DIGIT_FOUND


class EvaluateResponse(EvaluationReport):
    """Metrics of an evaluation upload, in the schema training records in model cards."""

    model: str = Field(examples=["mnist-mlp"])
    version: int = Field(examples=[1])
    predictions: list[FilePrediction] | None = Field(
        default=None, description="Per-file results, when include_predictions=true"
    )
    errors: list[FileError] = Field(
        default_factory=list,
        description="Files that could not be read: left out of every figure above, each with "
        "its error. An evaluation none of whose files can be read gets a 415/422 error",
    )
    evaluation_at_argmax: EvaluationReport | None = Field(
        default=None,
        description="Models with an operating point: the same evaluation with argmax labels, "
        "to compare with the figures above, which are at the operating point",
    )


class Health(BaseModel):
    status: str = Field(examples=["ok"])


class Readiness(BaseModel):
    ready: bool
    reasons: list[str] = Field(default_factory=list, description="Why not ready, if so")
