"""`python -m training import`: serve an image classifier trained elsewhere.

    check the request   name, classes (the same as the model's earlier versions), the
                        source's kind and the --evaluate-on folder's layout, before any load
    load the source     a `.keras` file, or a SavedModel folder's signature (TFSMLayer)
    check it            one image input [N, H, W, C] of a fixed size with 1 or 3 channels,
                        one output [N, classes], and probabilities, not logits
    wrap it             raw 0..255 float32 `pixels` -> scaled to the range the model was
                        trained on -> the model -> `probabilities`: the shipped models'
                        signature, so the service serves it as it serves them
    stage and publish   SavedModel, `model.tflite` when it agrees, the evaluation on
                        --evaluate-on (if given) and the card, published as the next
                        version in one rename (`training.export`)

Every check that fails raises `NotImportable`, saying what is wrong and how to fix it;
the command line prints it as `error: ...` and exits with status 2. Nothing is written
before the checks pass, and a failure after that leaves no staging folder behind.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, get_args

import keras
import numpy as np
import tensorflow as tf
from numpy.typing import NDArray

from app.contract.classification import EvaluationReport, evaluate_probabilities
from app.contract.drift import PredictionProfile, prediction_profile
from app.contract.images import Upload
from app.contract.model_card import (
    LITERT_MODEL_ROLE,
    DataSource,
    ImportRecord,
    InputSpec,
    ModelCard,
    Preprocessing,
    PreprocessingKind,
    is_valid_model_name,
)
from app.contract.runtimes import check_inputs
from training.card import library_versions
from training.data import (
    IMAGE_SUFFIXES,
    MNIST_SIDE,
    DataError,
    count_labels,
    file_fingerprint,
    folder_fingerprint,
    image_input_spec,
    labelled_files,
    prepare_all,
)
from training.evaluate import INPUT_NAME, predict_with_saved_model
from training.export import (
    CHECKED_TEST_IMAGES,
    existing_versions,
    publish,
    staging_folder,
    write_litert_model,
    write_saved_model,
)

INPUT_RANGES: dict[str, tuple[float, float]] = {
    "0-255": (0.0, 255.0),
    "0-1": (0.0, 1.0),
    "-1-1": (-1.0, 1.0),
}
"""The pixel ranges an imported model may expect, by their command-line names."""
"""For a model that scales its input itself (e.g. with a Rescaling layer)."""
PREPROCESSING_KINDS: tuple[PreprocessingKind, ...] = get_args(PreprocessingKind)
"""What the service may do to an imported model's uploads (`--preprocessing`)."""
DEFAULT_PREPROCESSING: PreprocessingKind = "resize"
PROBABILITY_TOLERANCE = 1e-3
"""How far from 1 a row of probabilities may sum (float32 softmax rounding is ~1e-6)."""
SAVED_MODEL_FILE = "saved_model.pb"
FLOAT_INPUTS = ("float16", "float32", "float64")
INTEGER_INPUTS = ("uint8",)  # pixels as whole 0..255 values
NOT_EVALUATED = (
    "Not evaluated: no labelled data was given at import, so how well it classifies is "
    "unknown (python -m training import ... --evaluate-on DIR records an evaluation)."
)


class NotImportable(DataError):
    """What was given to `import` cannot be served as asked; the message says what is
    wrong and how to fix it (a `DataError`, so the command line prints it, exit 2)."""


@dataclass(frozen=True)
class ImportRequest:
    """What `python -m training import` was asked to do."""

    source: Path
    name: str
    class_names: list[str]
    model_dir: Path
    # A key of INPUT_RANGES. No default: a wrong guess passes every check and serves
    # saturated probabilities (a 0..1 model fed 0..255 still mostly picks the right class).
    input_range: str
    preprocessing: PreprocessingKind = DEFAULT_PREPROCESSING
    evaluate_on: Path | None = None
    description: str | None = None
    signature: str | None = None  # SavedModel only; default serving_default or the only one


@dataclass(frozen=True)
class ImportResult:
    """Where the import published the model, and the card it wrote."""

    version_dir: Path
    card: ModelCard

    def summary(self) -> str:
        card, evaluation = self.card, self.card.evaluation
        assert card.imported is not None
        if evaluation is not None and card.imported.evaluated_on is not None:
            accuracy = f"{evaluation.accuracy:.4f}" if evaluation.accuracy is not None else "n/a"
            evaluated = (
                f"accuracy {accuracy} on {evaluation.count} images of "
                f"{card.imported.evaluated_on.name}"
            )
        else:
            evaluated = "not evaluated (give --evaluate-on DIR to record an evaluation)"
        runtime = "with model.tflite" if LITERT_MODEL_ROLE in card.artifacts else "no model.tflite"
        return (
            f"imported {card.imported.source} as {card.name} v{card.version} to "
            f"{self.version_dir} | {evaluated} | {runtime} | a running server serves it "
            "after its next rescan of the model directory"
        )


# The request: checked before anything is loaded -----------------------------------------


def read_labels(path: Path) -> list[str]:
    """`--labels FILE`: one class name per line, in output order; blank lines skipped."""
    if not path.is_file():
        state = "is a folder" if path.is_dir() else "does not exist"
        raise NotImportable(f"--labels {path} {state}; give a text file with one class per line")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise NotImportable(f"--labels {path} is not UTF-8 text: {error}") from error
    return [line.strip() for line in text.splitlines() if line.strip()]


def check_request(request: ImportRequest) -> None:
    """Mistakes that show without loading the model: name, classes, the source's kind,
    the model's earlier versions and the --evaluate-on folder's layout."""
    if not is_valid_model_name(request.name):
        raise NotImportable(
            f"--name {request.name!r} is not a model name: lower-case letters and digits in "
            "words joined by single hyphens, as in URLs (e.g. my-digits)"
        )
    check_class_names(request.class_names)
    if request.input_range not in INPUT_RANGES:
        raise NotImportable(
            f"input range {request.input_range!r} is not one of {', '.join(INPUT_RANGES)}"
        )
    if source_format(request.source) == "keras" and request.signature is not None:
        raise NotImportable("--signature names a SavedModel signature; a .keras file has none")
    _check_same_classes(request.model_dir / request.name, request.class_names)
    if request.evaluate_on is not None:
        list_labelled_folder(request.evaluate_on, request.class_names)


def check_class_names(class_names: Sequence[str]) -> None:
    if len(class_names) < 2:
        raise NotImportable(
            f"a classifier needs at least 2 classes, got {len(class_names)}: give one class "
            "name per model output, in output order"
        )
    repeated = sorted({name for name in class_names if class_names.count(name) > 1})
    if repeated:
        raise NotImportable(
            f"class names must be unique: {', '.join(map(repr, repeated))} given more than once"
        )


def source_format(source: Path) -> Literal["keras", "saved_model"]:
    """`keras` for a `.keras` file, `saved_model` for a folder holding saved_model.pb."""
    expected = "give a .keras file or a SavedModel folder (one holding saved_model.pb)"
    if source.is_file() and source.suffix == ".keras":
        return "keras"
    if source.is_dir() and (source / SAVED_MODEL_FILE).is_file():
        return "saved_model"
    if not source.exists():
        raise NotImportable(f"{source} does not exist; {expected}")
    if source.is_file() and source.suffix in (".h5", ".hdf5"):
        raise NotImportable(
            f"{source} is a legacy HDF5 Keras file; load it with keras.models.load_model and "
            "save it again with model.save('model.keras'), then import that"
        )
    if source.is_dir():
        # A model folder of this project's layout holds version folders: suggest the newest.
        inner = [p for p in source.iterdir() if (p / SAVED_MODEL_FILE).is_file()]
        newest = max(inner, key=lambda p: (p.name.isdigit(), len(p.name), p.name), default=None)
        hint = f"did you mean {newest}?" if newest else expected
        raise NotImportable(f"{source} is a folder without {SAVED_MODEL_FILE}; {hint}")
    raise NotImportable(f"{source} is neither a .keras file nor a SavedModel folder; {expected}")


def _check_same_classes(model_root: Path, class_names: list[str]) -> None:
    """A new version of a model keeps its classes, in order: clients read answers by
    label and by position (TF Serving, V2), and the page and metrics are per class."""
    for version in reversed(existing_versions(model_root)):
        try:
            card = ModelCard.read(model_root / str(version))
        except (OSError, ValueError):  # no card, or not one this code can read: look further
            continue
        if card.class_names != class_names:
            raise NotImportable(
                f"{model_root} already holds version {version} with classes "
                f"{', '.join(card.class_names)}, but these are {', '.join(class_names)}: a new "
                "version must keep the classes and their order, which clients rely on; give "
                "them in that order, or import under another --name"
            )
        return


def list_labelled_folder(root: Path, class_names: Sequence[str]) -> tuple[list[Path], list[int]]:
    """`--evaluate-on DIR`: the image files of `DIR/<class>/` for each class, with labels."""
    layout = f"one sub-folder per class named {', '.join(class_names)}, holding its images"
    if not root.is_dir():
        state = "is a file" if root.exists() else "does not exist"
        raise NotImportable(f"--evaluate-on {root} {state}; expected a folder with {layout}")
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    missing = [name for name in class_names if name not in found]
    unknown = [name for name in found if name not in class_names]
    if missing or unknown:
        problems = []
        if missing:
            problems.append(f"no folder for {', '.join(missing)}")
        if unknown:
            problems.append(f"folders that are no class: {', '.join(unknown)}")
        raise NotImportable(
            f"--evaluate-on {root} must hold {layout}; {'; '.join(problems)} "
            f"(found: {', '.join(found) or 'no folders'})"
        )
    paths, labels = labelled_files(root, class_names)
    if not paths:
        raise NotImportable(
            f"--evaluate-on {root} holds no {'/'.join(IMAGE_SUFFIXES)} images in its class folders"
        )
    return paths, labels


# The source: loaded and checked ---------------------------------------------------------


@dataclass(frozen=True)
class SourceModel:
    """A user's model, loaded as a Keras layer, with what the checks need to know of it."""

    format: Literal["keras", "saved_model"]
    layer: keras.layers.Layer  # the keras.Model, or a TFSMLayer over the signature
    what: str  # how messages name it: "model.keras", "signature serving_default of sm"
    input_names: list[str]
    input_shape: tuple[int | None, ...]
    input_dtype: str
    output_names: list[str]
    output_shape: tuple[int | None, ...]
    architecture: str
    signature: str | None = None
    final_activation: tuple[str, str] | None = None  # (layer name, activation), if known

    @property
    def output_key(self) -> str | None:
        """The signature's output to serve (SavedModel signatures return a dict)."""
        return self.output_names[0] if self.format == "saved_model" else None


def load_source(source: Path, signature: str | None = None) -> SourceModel:
    if source_format(source) == "keras":
        return _load_keras(source)
    return _load_saved_model(source, signature)


def _load_keras(path: Path) -> SourceModel:
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as error:  # Keras raises ValueError, TypeError, zipfile errors...
        raise NotImportable(
            f"{path} cannot be loaded as a Keras model: {error} (a model with custom layers "
            "needs them registered with keras.saving.register_keras_serializable; a Lambda "
            "layer cannot be loaded safely: replace it with a built-in or registered layer)"
        ) from error
    if not isinstance(model, keras.Model) or not model.inputs:
        raise NotImportable(
            f"{path} holds no model with a defined input (a subclassed model saved before it "
            "was built): build it on keras.Input((height, width, channels)) and save it again"
        )
    return SourceModel(
        format="keras",
        layer=model,
        what=path.name,
        input_names=[tensor.name for tensor in model.inputs],
        input_shape=tuple(model.inputs[0].shape),
        input_dtype=str(model.inputs[0].dtype),
        output_names=[tensor.name for tensor in model.outputs],
        output_shape=tuple(model.outputs[0].shape),
        architecture=(
            f"{model.name} ({type(model).__name__}, {len(model.layers)} layers), imported "
            f"from {path.name}"
        ),
        final_activation=_final_activation(model),
    )


def _final_activation(model: keras.Model) -> tuple[str, str] | None:
    """The layer that makes the output and its activation, when Keras says which:
    `activation=` of Dense, Conv and Activation layers, or a Softmax layer."""
    history = getattr(model.outputs[0], "_keras_history", None)
    layer = history.operation if history is not None else model.layers[-1]
    if isinstance(layer, keras.Model) and len(layer.outputs) == 1:
        return _final_activation(layer)  # a model nested as the last layer
    if isinstance(layer, keras.layers.Softmax):
        return layer.name, "softmax"
    activation = getattr(layer, "activation", None)
    name = getattr(activation, "__name__", None)
    return (layer.name, name) if isinstance(name, str) else None


def _load_saved_model(folder: Path, signature: str | None) -> SourceModel:
    try:
        signatures = tf.saved_model.load(str(folder)).signatures
    except Exception as error:  # TensorFlow's own errors, OSError for unreadable files
        raise NotImportable(f"{folder} cannot be loaded as a SavedModel: {error}") from error
    names = sorted(signatures)
    if signature is None:
        if "serving_default" in signatures:
            signature = "serving_default"
        elif len(names) == 1:
            signature = names[0]
        elif not names:
            raise NotImportable(
                f"{folder} has no serving signature: save it with model.export(path) (Keras) "
                "or tf.saved_model.save(module, path, signatures=...)"
            )
        else:
            raise NotImportable(
                f"{folder} has signatures {', '.join(names)} and no serving_default: choose "
                "one with --signature NAME"
            )
    elif signature not in signatures:
        raise NotImportable(
            f"{folder} has no signature {signature!r}; it has {', '.join(names) or 'none'}"
        )
    function = signatures[signature]
    _, inputs = function.structured_input_signature
    outputs = function.structured_outputs
    first_input = next(iter(inputs.values()), None)
    first_output = next(iter(outputs.values()), None)
    return SourceModel(
        format="saved_model",
        layer=keras.layers.TFSMLayer(str(folder), call_endpoint=signature),
        what=f"signature {signature} of {folder.name}",
        input_names=list(inputs),
        input_shape=tuple(first_input.shape.as_list()) if first_input is not None else (),
        input_dtype=first_input.dtype.name if first_input is not None else "none",
        output_names=list(outputs),
        output_shape=tuple(first_output.shape.as_list()) if first_output is not None else (),
        architecture=f"SavedModel signature {signature}, imported from {folder.name}",
        signature=signature,
    )


def check_classifier(
    source: SourceModel,
    class_names: Sequence[str],
    preprocessing: PreprocessingKind,
    input_range: tuple[float, float],
) -> InputSpec:
    """The input spec of an image classifier with `class_names`, or why it is not one."""
    what = source.what
    if len(source.input_names) != 1:
        raise NotImportable(
            f"{what} takes {len(source.input_names)} inputs "
            f"({', '.join(source.input_names) or 'none'}): an image classifier takes one, a "
            "batch of images [N, height, width, channels]"
        )
    shape = source.input_shape
    if len(shape) != 4:
        raise NotImportable(
            f"{what} takes input of shape {_shape(shape)}: an image classifier takes a batch of "
            "images [N, height, width, channels] (a model on flattened pixels needs "
            "keras.Input((height, width, channels)) and a Flatten layer in front)"
        )
    _, height, width, channels = shape
    if height is None or width is None:
        raise NotImportable(
            f"{what} takes input of shape {_shape(shape)}: its height and width must be fixed "
            "(build it on an input such as keras.Input((224, 224, 3)))"
        )
    if channels not in (1, 3):
        raise NotImportable(
            f"{what} takes images with {channels} channels ({_shape(shape)}): expected 1 "
            "(grayscale) or 3 (RGB)"
        )
    if source.input_dtype not in FLOAT_INPUTS + INTEGER_INPUTS:
        raise NotImportable(
            f"{what} takes {source.input_dtype} input: expected images as float or uint8 pixels"
        )
    if source.input_dtype in INTEGER_INPUTS and input_range != INPUT_RANGES["0-255"]:
        raise NotImportable(
            f"{what} takes {source.input_dtype} pixels, which are 0..255 values: drop "
            "--input-range (or give 0-255)"
        )
    if preprocessing == "mnist-digit" and (height, width, channels) != (MNIST_SIDE, MNIST_SIDE, 1):
        raise NotImportable(
            f"--preprocessing mnist-digit makes 28x28 grayscale MNIST-style digits, but {what} "
            f"takes {height}x{width}x{channels} images: use --preprocessing resize"
        )
    if len(source.output_names) != 1:
        raise NotImportable(
            f"{what} has {len(source.output_names)} outputs "
            f"({', '.join(source.output_names) or 'none'}): an image classifier has one, the "
            "class probabilities [N, classes]"
        )
    output = source.output_shape
    if len(output) != 2 or output[1] is None:
        raise NotImportable(
            f"{what} gives output of shape {_shape(output)}: an image classifier gives "
            "[N, classes], one probability per class"
        )
    units = output[1]
    if units == 1:
        raise NotImportable(
            f"{what} gives 1 output per image: a classifier served here gives one softmax "
            "probability per class (at least 2); a single unit is a regression or a sigmoid "
            "two-class output (for the latter end the model in Dense(2, activation='softmax') "
            "and retrain it)"
        )
    if units != len(class_names):
        raise NotImportable(
            f"{what} gives {units} outputs per image but {len(class_names)} classes were given "
            f"({', '.join(class_names)}): give one class name per output, in output order"
        )
    if source.final_activation is not None:
        _check_final_activation(what, *source.final_activation)
    return image_input_spec((height, width), channels)


def _check_final_activation(what: str, layer: str, activation: str) -> None:
    evidence = f"its last layer {layer} has a {activation} activation"
    if activation == "linear":
        raise NotImportable(_logits(what, evidence))
    if activation == "sigmoid":
        raise NotImportable(_independent_scores(what, evidence))
    if activation != "softmax":
        raise NotImportable(
            f"{what} does not output probabilities: {evidence}; end the model in a softmax "
            "over the classes (activation='softmax' on the last layer) and save it again"
        )


def _logits(what: str, evidence: str) -> str:
    return (
        f"{what} does not output probabilities ({evidence}): outputs look like logits: add a "
        "softmax layer at the end (keras.layers.Softmax(), or activation='softmax' on the "
        "last layer) and save the model again"
    )


def _independent_scores(what: str, evidence: str) -> str:
    return (
        f"{what} does not output a softmax ({evidence}): scores in 0..1 that need not sum to "
        "1 are independent (sigmoid, multi-label) scores, not one probability per class: "
        "end the model in a softmax over the classes and retrain it"
    )


def _shape(shape: Sequence[int | None]) -> str:
    return "[" + ", ".join("N" if i == 0 else str(d) for i, d in enumerate(shape)) + "]"


def serving_model(source: SourceModel, input_range: tuple[float, float]) -> keras.Model:
    """The source behind the service's signature: raw 0..255 float32 `pixels` in, scaled
    to `input_range` (and cast to the source's dtype) inside, probabilities out."""
    height, width, channels = source.input_shape[1:4]
    pixels = keras.Input((height, width, channels), dtype="float32", name=INPUT_NAME)
    low, high = input_range
    scaled = pixels
    if (low, high) != INPUT_RANGES["0-255"]:
        scaled = keras.layers.Rescaling((high - low) / 255.0, offset=low, name="input_range")(
            pixels
        )
    if source.input_dtype != "float32":
        scaled = keras.ops.cast(scaled, source.input_dtype)
    outputs: Any = source.layer(scaled)
    if isinstance(outputs, dict):
        outputs = outputs[source.output_key]
    if outputs.dtype != "float32":
        outputs = keras.ops.cast(outputs, "float32")
    return keras.Model(pixels, outputs, name="imported")


def check_probabilities(model: keras.Model, spec: InputSpec, what: str) -> None:
    """Outputs on the contract's check images must be probabilities: finite, >= 0, each
    row summing to 1. A model whose last layer says nothing (a SavedModel, a custom layer)
    is judged by what it does."""
    outputs = np.concatenate(
        [np.asarray(model(batch, training=False)) for batch in check_inputs(spec).values()]
    )
    if not np.isfinite(outputs).all():
        raise NotImportable(
            f"{what} outputs NaN or infinite values on plain test images (blank, noise, "
            "gradients): check that the model works before importing it"
        )
    sums = outputs.sum(axis=1)
    worst = float(sums[np.abs(sums - 1).argmax()])
    if outputs.min() >= -PROBABILITY_TOLERANCE and abs(worst - 1) <= PROBABILITY_TOLERANCE:
        return
    evidence = (
        f"on test images its outputs range from {outputs.min():.3g} to {outputs.max():.3g} "
        f"and a row sums to {worst:.3g}, not 1"
    )
    if outputs.min() >= 0 and outputs.max() <= 1:
        raise NotImportable(_independent_scores(what, evidence))
    raise NotImportable(_logits(what, evidence))


# Evaluation on --evaluate-on ------------------------------------------------------------


@dataclass(frozen=True)
class LabelledImages:
    """The --evaluate-on folder read as the service reads uploads."""

    source: DataSource
    pixels: NDArray[np.float32]
    labels: NDArray[np.int64]
    digit_found: list[bool] | None


def read_labelled_folder(
    root: Path, class_names: list[str], spec: InputSpec, kind: PreprocessingKind
) -> LabelledImages:
    """Each image through `prepare_image`, the service's own preprocessing, so the
    evaluation sees the pixels an upload of the same file would become."""
    paths, labels = list_labelled_folder(root, class_names)

    def read(path: Path) -> Upload:
        return Upload(filename=str(path.relative_to(root)), data=path.read_bytes())

    def refuse(message: str) -> NotImportable:
        return NotImportable(f"--evaluate-on {root}: {message}; remove or replace the file")

    pixels, digit_found = prepare_all(paths, read, spec, kind, refuse=refuse)
    label_array = np.asarray(labels, dtype=np.int64)
    return LabelledImages(
        source=DataSource(
            name=root.resolve().name,
            fingerprint=folder_fingerprint(root, [str(p) for p in paths]),
            counts={"evaluation": count_labels(label_array, class_names)},
        ),
        pixels=pixels,
        labels=label_array,
        digit_found=digit_found,
    )


def evaluate_staged(
    staging: Path, data: LabelledImages, class_names: list[str]
) -> tuple[EvaluationReport, PredictionProfile]:
    """The written SavedModel's evaluation on the labelled images, and the profile of its
    answers that the service measures drift against."""
    probabilities = predict_with_saved_model(staging, data.pixels)
    report = evaluate_probabilities(data.labels, probabilities, class_names)
    return report, prediction_profile(probabilities, class_names, data.digit_found)


# The whole import -----------------------------------------------------------------------


def import_model(request: ImportRequest) -> ImportResult:
    """Check, wrap, evaluate and publish `request.source` as the next version of
    `request.name` under `request.model_dir`; a running server picks it up by itself."""
    check_request(request)
    input_range = INPUT_RANGES[request.input_range]
    source = load_source(request.source, request.signature)
    spec = check_classifier(source, request.class_names, request.preprocessing, input_range)
    model = serving_model(source, input_range)
    check_probabilities(model, spec, source.what)
    data = (
        read_labelled_folder(request.evaluate_on, request.class_names, spec, request.preprocessing)
        if request.evaluate_on is not None
        else None
    )
    with staging_folder(request.model_dir / request.name) as staging:
        write_saved_model(model, staging)
        artifacts: dict[str, str] = {}
        real_images = data.pixels[:CHECKED_TEST_IMAGES] if data is not None else None
        litert = write_litert_model(staging, spec, real_images)
        if litert is not None:
            artifacts[LITERT_MODEL_ROLE] = litert.name
        evaluation, profile = (
            evaluate_staged(staging, data, request.class_names) if data else (None, None)
        )
        card = build_import_card(
            request,
            source=source,
            spec=spec,
            parameter_count=int(model.count_params()),
            evaluation=evaluation,
            evaluated_on=data.source if data is not None else None,
            profile=profile,
            artifacts=artifacts,
        )
        version_dir = publish(staging, card)
    return ImportResult(version_dir=version_dir, card=ModelCard.read(version_dir))


def build_import_card(
    request: ImportRequest,
    *,
    source: SourceModel,
    spec: InputSpec,
    parameter_count: int,
    evaluation: EvaluationReport | None,
    evaluated_on: DataSource | None,
    profile: PredictionProfile | None,
    artifacts: dict[str, str],
) -> ModelCard:
    """The card of an imported version (`publish` gives it its version number)."""
    low, high = INPUT_RANGES[request.input_range]
    classes = request.class_names
    listed = ", ".join(classes[:5]) + (f" and {len(classes) - 5} more" if len(classes) > 5 else "")
    return ModelCard(
        name=request.name,
        version=1,  # replaced by the version number `publish` takes
        created_at=datetime.now(UTC),
        description=request.description
        or f"Image classifier imported from {request.source.name}: {listed}.",
        limitations=None if evaluation is not None else NOT_EVALUATED,
        class_names=classes,
        input=spec,
        preprocessing=Preprocessing(
            kind=request.preprocessing,
            description=_preprocessing_text(request.preprocessing, spec, (low, high)),
        ),
        architecture=source.architecture,
        parameter_count=parameter_count,
        imported=ImportRecord(
            source=request.source.name,
            source_format=source.format,
            fingerprint=_source_fingerprint(request.source),
            signature=source.signature,
            imported_at=datetime.now(UTC),
            input_range=(low, high),
            evaluated_on=evaluated_on,
        ),
        evaluation=evaluation,
        prediction_profile=profile,
        library_versions=library_versions(),
        artifacts=artifacts,
    )


def _preprocessing_text(
    kind: PreprocessingKind, spec: InputSpec, input_range: tuple[float, float]
) -> str:
    if kind == "mnist-digit":
        steps = (
            "app.contract.digits.normalize_digit: white digit on black, cropped, fitted in "
            "20x20 and centred by centre of mass in 28x28, as MNIST was made"
        )
    else:
        steps = f"converted to {spec.color_mode} and resized to {spec.width}x{spec.height}"
    if input_range == INPUT_RANGES["0-255"]:
        return f"{steps}; raw 0..255 pixels, which the model takes as they are"
    low, high = input_range
    return f"{steps}; raw 0..255 pixels, scaled to {low:g}..{high:g} inside the model"


def _source_fingerprint(source: Path) -> str:
    if source.is_file():
        return file_fingerprint(source)
    files = [str(path) for path in source.rglob("*") if path.is_file()]
    return folder_fingerprint(source, files)
