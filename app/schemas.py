"""Response bodies of the native API (`/api/v1`), typed so the OpenAPI page documents them."""

from __future__ import annotations

from pydantic import BaseModel, Field

from app.metrics import EvaluationReport
from app.model_card import InputSpec, ModelCard


class ClassProbability(BaseModel):
    label: str = Field(examples=["7"])
    class_index: int = Field(examples=[7])
    probability: float = Field(examples=[0.994])


class Prediction(BaseModel):
    """The predicted class of one uploaded file, with the most likely classes."""

    filename: str = Field(examples=["digit.png"])
    label: str = Field(description="Most likely class", examples=["7"])
    class_index: int = Field(description="Its index in class_names", examples=[7])
    confidence: float = Field(description="Its softmax probability", examples=[0.994])
    top_k: list[ClassProbability] = Field(description="The k most likely classes, best first")
    preprocessed_png: str | None = Field(
        default=None,
        description="The model's actual input as a base64 PNG (include_preprocessed=true)",
    )


class PredictResponse(BaseModel):
    model: str = Field(examples=["mnist-mlp"])
    version: int = Field(examples=[1])
    predictions: list[Prediction] = Field(description="One entry per file, in upload order")


class FileProbabilities(BaseModel):
    filename: str = Field(examples=["digit.png"])
    probabilities: dict[str, float] = Field(
        description="Softmax probability of every class; they sum to 1",
        examples=[{"0": 0.001, "1": 0.002, "7": 0.994}],
    )


class ProbabilitiesResponse(BaseModel):
    model: str = Field(examples=["mnist-mlp"])
    version: int = Field(examples=[1])
    class_names: list[str] = Field(examples=[["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]])
    results: list[FileProbabilities] = Field(description="One entry per file, in upload order")


class VersionStatus(BaseModel):
    """One version of a model as loaded (or not) by the service."""

    version: int = Field(examples=[1])
    status: str = Field(description="loading, ready, failed or unloading", examples=["ready"])
    error: str | None = Field(default=None, description="Why this version failed to load")
    device: str | None = Field(default=None, description="cpu or gpu", examples=["cpu"])
    ready_seconds: float | None = Field(
        default=None, description="Seconds it took to load and warm up"
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
    class_names: list[str] = Field(default_factory=list)
    input: InputSpec | None = None
    versions: list[VersionStatus] = Field(description="Every version the service knows of")


class ModelList(BaseModel):
    models: list[ModelStatus]


class ModelDetail(ModelStatus):
    """Serving status plus the full model card."""

    card: ModelCard | None = None


class FilePrediction(BaseModel):
    filename: str
    true_label: str
    predicted_label: str
    confidence: float
    correct: bool


class EvaluateResponse(EvaluationReport):
    """Metrics of an evaluation upload, in the schema training records in model cards."""

    model: str = Field(examples=["mnist-mlp"])
    version: int = Field(examples=[1])
    predictions: list[FilePrediction] | None = Field(
        default=None, description="Per-file results, when include_predictions=true"
    )


class Health(BaseModel):
    status: str = Field(examples=["ok"])


class Readiness(BaseModel):
    ready: bool
    reasons: list[str] = Field(default_factory=list, description="Why not ready, if so")
