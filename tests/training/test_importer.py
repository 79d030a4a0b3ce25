"""`python -m training import`: what it accepts, what it refuses and why, what it writes."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from app.contract.model_card import LITERT_MODEL_FILENAME, ModelCard
from training import importer
from training.__main__ import main
from training.evaluate import saved_model_predictor
from training.importer import (
    NOT_EVALUATED,
    ImportRequest,
    NotImportable,
    import_model,
    read_labels,
)

CLASSES = ["cat", "dog", "owl"]
SHAPE = (8, 8, 1)


def classifier(
    shape: tuple[int, ...] = SHAPE, units: int = 3, activation: str = "softmax", seed: int = 0
) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input(shape),
            keras.layers.Flatten(),
            keras.layers.Dense(units, activation=activation, name="head"),
        ],
        name="tiny",
    )


def saved(model: keras.Model, path: Path) -> Path:
    model.save(path)
    return path


def pixels(count: int = 5, seed: int = 1) -> np.ndarray:
    """Whole 0..255 values, as uploads become."""
    return np.random.default_rng(seed).integers(0, 256, (count, *SHAPE)).astype(np.float32)


def request(source: Path, tmp_path: Path, **overrides: Any) -> ImportRequest:
    fields: dict[str, Any] = {
        "source": source,
        "name": "tiny",
        "class_names": CLASSES,
        "model_dir": tmp_path / "models",
        "input_range": "0-255",
        **overrides,
    }
    return ImportRequest(**fields)


def refused(source: Path, tmp_path: Path, **overrides: Any) -> str:
    """The message of the import's refusal; nothing is left in the model folder."""
    with pytest.raises(NotImportable) as refusal:
        import_model(request(source, tmp_path, **overrides))
    model_root = tmp_path / "models" / "tiny"
    assert not model_root.exists() or list(model_root.iterdir()) == []
    return str(refusal.value)


@pytest.fixture(scope="module")
def keras_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return saved(classifier(), tmp_path_factory.mktemp("source") / "pets.keras")


# What an import writes ------------------------------------------------------------------


def test_a_keras_classifier_becomes_the_next_version_with_its_card(
    keras_file: Path, tmp_path: Path
) -> None:
    result = import_model(request(keras_file, tmp_path))

    assert result.version_dir == tmp_path / "models" / "tiny" / "1"
    assert {"saved_model.pb", "variables", "model_card.json", LITERT_MODEL_FILENAME} <= {
        p.name for p in result.version_dir.iterdir()
    }
    assert [p.name for p in result.version_dir.parent.iterdir()] == ["1"]  # no staging left
    card = ModelCard.read(result.version_dir)
    assert (card.name, card.version, card.class_names) == ("tiny", 1, CLASSES)
    assert (card.input.height, card.input.width, card.input.channels) == SHAPE
    assert card.input.value_range == (0.0, 255.0) and card.preprocessing.kind == "resize"
    assert card.training is None and card.evaluation is None and card.prediction_profile is None
    assert card.limitations == NOT_EVALUATED
    assert card.imported is not None
    assert card.imported.source == "pets.keras"  # a name, never the machine's path
    digest = hashlib.sha256(keras_file.read_bytes()).hexdigest()
    assert card.imported.fingerprint == f"sha256:{digest}"
    assert (card.imported.source_format, card.imported.signature) == ("keras", None)
    assert card.parameter_count == 8 * 8 * 3 + 3
    assert card.artifacts == {"litert_model": LITERT_MODEL_FILENAME}

    served = saved_model_predictor(result.version_dir)(pixels())
    expected = keras.models.load_model(keras_file).predict(pixels(), verbose=0)
    np.testing.assert_allclose(served, expected, atol=1e-6)
    assert result.summary().startswith(
        f"imported pets.keras as tiny v1 to {result.version_dir} | not evaluated"
    )


@pytest.mark.parametrize(
    ("input_range", "scale", "offset"), [("0-1", 1 / 255, 0.0), ("-1-1", 1 / 127.5, -1.0)]
)
def test_the_input_range_is_applied_inside_the_signature(
    keras_file: Path, tmp_path: Path, input_range: str, scale: float, offset: float
) -> None:
    result = import_model(request(keras_file, tmp_path, input_range=input_range))

    served = saved_model_predictor(result.version_dir)(pixels())
    model = keras.models.load_model(keras_file)
    np.testing.assert_allclose(
        served, model.predict(pixels() * scale + offset, verbose=0), atol=1e-6
    )
    # the scaling changes the answers, so the check above can tell it happened
    assert not np.allclose(served, model.predict(pixels(), verbose=0), atol=1e-3)
    assert result.card.imported is not None
    low, high = importer.INPUT_RANGES[input_range]
    assert result.card.imported.input_range == (low, high)
    assert result.card.preprocessing.description.endswith(
        f"scaled to {low:g}..{high:g} inside the model"
    )


def test_a_saved_model_exported_by_keras_is_served_as_it_answers(
    tmp_path: Path,
) -> None:
    model = classifier(seed=3)
    model.export(str(tmp_path / "exported"), verbose=False)

    result = import_model(request(tmp_path / "exported", tmp_path))

    served = saved_model_predictor(result.version_dir)(pixels())
    np.testing.assert_allclose(served, model.predict(pixels(), verbose=0), atol=1e-6)
    assert result.card.imported is not None
    assert result.card.imported.source_format == "saved_model"
    assert result.card.imported.signature == "serving_default"
    assert result.card.parameter_count == 8 * 8 * 3 + 3


class UintClassifier(tf.Module):
    """A SavedModel as TensorFlow users write them: uint8 images in, a named dict out."""

    def __init__(self, model: keras.Model) -> None:
        self.model = model

    @tf.function(input_signature=[tf.TensorSpec([None, *SHAPE], tf.uint8, name="image")])
    def classify(self, image: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"scores": self.model(tf.cast(image, tf.float32) / 255.0)}


def test_a_tf_saved_model_with_uint8_input_is_wrapped(tmp_path: Path) -> None:
    model = classifier(seed=4)
    module = UintClassifier(model)
    tf.saved_model.save(module, str(tmp_path / "uint8"), signatures={"classify": module.classify})

    result = import_model(request(tmp_path / "uint8", tmp_path))

    served = saved_model_predictor(result.version_dir)(pixels())
    np.testing.assert_allclose(served, model.predict(pixels() / 255, verbose=0), atol=1e-6)
    assert result.card.imported is not None
    assert result.card.imported.signature == "classify"  # the only one


def test_a_saved_model_with_several_signatures_needs_one_named(tmp_path: Path) -> None:
    model = classifier(seed=5)
    module = UintClassifier(model)
    signatures = {"classify": module.classify, "other": module.classify}
    tf.saved_model.save(module, str(tmp_path / "two"), signatures=signatures)

    assert refused(tmp_path / "two", tmp_path) == (
        f"{tmp_path / 'two'} has signatures classify, other and no serving_default: choose "
        "one with --signature NAME"
    )
    assert refused(tmp_path / "two", tmp_path, signature="nope") == (
        f"{tmp_path / 'two'} has no signature 'nope'; it has classify, other"
    )
    result = import_model(request(tmp_path / "two", tmp_path, signature="other"))
    assert result.card.imported is not None and result.card.imported.signature == "other"


# What an import refuses, and why --------------------------------------------------------


def test_a_model_with_two_inputs_is_refused(tmp_path: Path) -> None:
    left, right = keras.Input(SHAPE, name="left"), keras.Input(SHAPE, name="right")
    joined = keras.layers.Flatten()(keras.layers.Add()([left, right]))
    model = keras.Model([left, right], keras.layers.Dense(3, activation="softmax")(joined))
    source = saved(model, tmp_path / "two-inputs.keras")

    assert refused(source, tmp_path) == (
        "two-inputs.keras takes 2 inputs (left, right): an image classifier takes one, a batch "
        "of images [N, height, width, channels]"
    )


def test_a_model_on_flat_vectors_is_refused(tmp_path: Path) -> None:
    source = saved(classifier(shape=(64,)), tmp_path / "flat.keras")

    assert refused(source, tmp_path) == (
        "flat.keras takes input of shape [N, 64]: an image classifier takes a batch of images "
        "[N, height, width, channels] (a model on flattened pixels needs "
        "keras.Input((height, width, channels)) and a Flatten layer in front)"
    )


@pytest.mark.parametrize(
    ("shape", "problem"),
    [
        ((None, None, 3), "its height and width must be fixed"),
        ((8, 8, 4), "images with 4 channels ([N, 8, 8, 4]): expected 1 (grayscale) or 3 (RGB)"),
    ],
)
def test_an_input_that_is_no_image_of_known_size_is_refused(
    tmp_path: Path, shape: tuple[int | None, ...], problem: str
) -> None:
    inputs = keras.Input(shape)
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(pooled))
    source = saved(model, tmp_path / "odd.keras")

    assert problem in refused(source, tmp_path)


def test_a_regression_head_is_refused(tmp_path: Path) -> None:
    source = saved(classifier(units=1, activation="linear"), tmp_path / "regression.keras")

    assert refused(source, tmp_path) == (
        "regression.keras gives 1 output per image: a classifier served here gives one softmax "
        "probability per class (at least 2); a single unit is a regression or a sigmoid "
        "two-class output (for the latter end the model in Dense(2, activation='softmax') and "
        "retrain it)"
    )


def test_a_class_count_that_differs_from_the_outputs_is_refused(
    keras_file: Path, tmp_path: Path
) -> None:
    assert refused(keras_file, tmp_path, class_names=["cat", "dog"]) == (
        "pets.keras gives 3 outputs per image but 2 classes were given (cat, dog): give one "
        "class name per output, in output order"
    )


def test_a_keras_model_ending_in_logits_is_refused_by_its_last_layer(tmp_path: Path) -> None:
    source = saved(classifier(activation="linear"), tmp_path / "logits.keras")

    assert refused(source, tmp_path) == (
        "logits.keras does not output probabilities (its last layer head has a linear "
        "activation): outputs look like logits: add a softmax layer at the end "
        "(keras.layers.Softmax(), or activation='softmax' on the last layer) and save the "
        "model again"
    )


@pytest.mark.parametrize(
    ("activation", "problem"),
    [
        ("linear", "outputs look like logits: add a softmax layer at the end"),
        ("sigmoid", "are independent (sigmoid, multi-label) scores, not one probability"),
    ],
)
def test_a_saved_model_that_outputs_no_probabilities_is_refused_by_what_it_answers(
    tmp_path: Path, activation: str, problem: str
) -> None:
    classifier(activation=activation).export(str(tmp_path / "scores"), verbose=False)

    message = refused(tmp_path / "scores", tmp_path)

    assert re.match(
        r"signature serving_default of scores does not output (probabilities|a softmax) \(on "
        r"test images its outputs range from -?[\d.e+-]+ to -?[\d.e+-]+ and a row sums to "
        r"-?[\d.e+-]+, not 1\)",
        message,
    ), message
    assert problem in message


def test_mnist_digit_preprocessing_needs_a_28x28_grayscale_input(
    keras_file: Path, tmp_path: Path
) -> None:
    assert refused(keras_file, tmp_path, preprocessing="mnist-digit") == (
        "--preprocessing mnist-digit makes 28x28 grayscale MNIST-style digits, but pets.keras "
        "takes 8x8x1 images: use --preprocessing resize"
    )


def test_a_source_that_is_no_model_is_refused(tmp_path: Path) -> None:
    expected = "give a .keras file or a SavedModel folder (one holding saved_model.pb)"
    assert refused(tmp_path / "absent.keras", tmp_path) == (
        f"{tmp_path / 'absent.keras'} does not exist; {expected}"
    )
    (tmp_path / "old.h5").write_bytes(b"\x89HDF")
    assert refused(tmp_path / "old.h5", tmp_path).startswith(
        f"{tmp_path / 'old.h5'} is a legacy HDF5 Keras file"
    )
    model_folder = tmp_path / "exports" / "digits"
    for version in ("2", "10"):
        (model_folder / version).mkdir(parents=True)
        (model_folder / version / "saved_model.pb").write_bytes(b"")
    assert refused(model_folder, tmp_path) == (
        f"{model_folder} is a folder without saved_model.pb; did you mean {model_folder / '10'}?"
    )
    (tmp_path / "broken.keras").write_text("not a zip")
    assert refused(tmp_path / "broken.keras", tmp_path).startswith(
        f"{tmp_path / 'broken.keras'} cannot be loaded as a Keras model: "
    )


def test_names_and_classes_are_checked(keras_file: Path, tmp_path: Path) -> None:
    assert refused(keras_file, tmp_path, name="My_Model").startswith(
        "--name 'My_Model' is not a model name"
    )
    assert refused(keras_file, tmp_path, class_names=["cat", "dog", "cat"]) == (
        "class names must be unique: 'cat' given more than once"
    )


def test_a_new_version_keeps_the_classes_of_the_last(keras_file: Path, tmp_path: Path) -> None:
    import_model(request(keras_file, tmp_path))

    assert refused_again(keras_file, tmp_path, ["dog", "cat", "owl"]) == (
        f"{tmp_path / 'models' / 'tiny'} already holds version 1 with classes cat, dog, owl, "
        "but these are dog, cat, owl: a new version must keep the classes and their order, "
        "which clients rely on; give them in that order, or import under another --name"
    )
    assert import_model(request(keras_file, tmp_path)).version_dir.name == "2"


def refused_again(source: Path, tmp_path: Path, class_names: list[str]) -> str:
    with pytest.raises(NotImportable) as refusal:
        import_model(request(source, tmp_path, class_names=class_names))
    return str(refusal.value)


def test_a_failure_after_staging_leaves_nothing_behind(
    keras_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_conversion(*args: object) -> None:
        raise RuntimeError("conversion crashed")

    monkeypatch.setattr(importer, "write_litert_model", broken_conversion)
    with pytest.raises(RuntimeError, match="conversion crashed"):
        import_model(request(keras_file, tmp_path))
    assert not (tmp_path / "models" / "tiny").exists()  # no empty model folder either


# Evaluation on --evaluate-on ------------------------------------------------------------


def labelled_folder(root: Path, per_class: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """PNGs of the model's input size under root/<class>/, and their pixels and labels."""
    images, labels = [], []
    rng = np.random.default_rng(7)
    for label, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for index in range(per_class):
            image = rng.integers(0, 256, SHAPE[:2], dtype=np.uint8)
            Image.fromarray(image).save(root / name / f"{index}.png")
            images.append(image[:, :, None].astype(np.float32))
            labels.append(label)
    (root / "cat" / "notes.txt").write_text("not an image, and not read")
    return np.stack(images), np.asarray(labels)


def test_evaluation_on_a_labelled_folder_is_recorded(keras_file: Path, tmp_path: Path) -> None:
    images, labels = labelled_folder(tmp_path / "my-pets")

    result = import_model(request(keras_file, tmp_path, evaluate_on=tmp_path / "my-pets"))

    predicted = keras.models.load_model(keras_file).predict(images, verbose=0).argmax(axis=1)
    expected = np.zeros((3, 3), dtype=int)
    np.add.at(expected, (labels, predicted), 1)
    card = result.card
    assert card.evaluation is not None and card.imported is not None
    assert card.evaluation.confusion_matrix == expected.tolist()
    assert card.evaluation.accuracy == pytest.approx(float((predicted == labels).mean()))
    evaluated_on = card.imported.evaluated_on
    assert evaluated_on is not None and evaluated_on.name == "my-pets"
    assert evaluated_on.counts == {"evaluation": {"cat": 3, "dog": 3, "owl": 3}}
    assert evaluated_on.fingerprint is not None and evaluated_on.fingerprint.startswith("sha256:")
    assert card.limitations is None
    assert card.prediction_profile is not None and card.prediction_profile.count == 9
    assert "on 9 images of my-pets" in result.summary()


def test_an_evaluation_folder_must_hold_one_folder_per_class(
    keras_file: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "labelled"
    for name in ("cat", "dgo"):
        (folder / name).mkdir(parents=True)

    assert refused(keras_file, tmp_path, evaluate_on=folder) == (
        f"--evaluate-on {folder} must hold one sub-folder per class named cat, dog, owl, "
        "holding its images; no folder for dog, owl; folders that are no class: dgo "
        "(found: cat, dgo)"
    )


def test_an_unreadable_image_in_the_evaluation_folder_is_named(
    keras_file: Path, tmp_path: Path
) -> None:
    labelled_folder(tmp_path / "labelled")
    (tmp_path / "labelled" / "owl" / "broken.png").write_bytes(b"not a png")

    message = refused(keras_file, tmp_path, evaluate_on=tmp_path / "labelled")

    assert message.startswith(f"--evaluate-on {tmp_path / 'labelled'}: ")
    assert "owl/broken.png" in message and message.endswith("; remove or replace the file")


# The command line -----------------------------------------------------------------------


def test_labels_files_hold_one_class_per_line(tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\n\n  dog \nowl\n", encoding="utf-8")
    assert read_labels(labels) == CLASSES
    with pytest.raises(NotImportable, match="does not exist; give a text file"):
        read_labels(tmp_path / "absent.txt")


def test_the_command_line_takes_its_choices_and_defaults_from_the_importer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One place: a range or default changed in training/importer.py reaches the flags."""
    from training.cli import build_parser

    monkeypatch.setitem(importer.INPUT_RANGES, "0-2", (0.0, 2.0))
    monkeypatch.setattr(importer, "PREPROCESSING_KINDS", ("mnist-digit",))
    monkeypatch.setattr(importer, "DEFAULT_PREPROCESSING", "mnist-digit")
    command = ["import", "m.keras", "--name", "m", "--classes", "a", "b", "--input-range"]
    defaults = build_parser().parse_args([*command, "0-2"])
    assert (defaults.input_range, defaults.preprocessing) == ("0-2", "mnist-digit")
    with pytest.raises(SystemExit):
        build_parser().parse_args([*command, "--preprocessing", "resize"])


def test_the_command_line_defaults_are_the_requests() -> None:
    from training.cli import build_parser, import_request

    command = ["import", "m.keras", "--name", "m", "--classes", "a", "b"]
    args = build_parser().parse_args([*command, "--input-range", "0-1"])
    made = import_request(args)
    plain = importer.ImportRequest(Path("m.keras"), "m", ["a", "b"], args.model_dir, "0-1")
    assert (made.preprocessing, made.input_range) == (plain.preprocessing, plain.input_range)


def test_the_input_range_must_be_stated(capsys: pytest.CaptureFixture[str]) -> None:
    """A 0..1 model imported as 0..255 passes every check and serves saturated answers, so
    the range is never guessed."""
    with pytest.raises(SystemExit) as exit_info:
        main(["import", "m.keras", "--name", "m", "--classes", "a", "b"])
    assert exit_info.value.code == 2
    assert "the following arguments are required: --input-range" in capsys.readouterr().err


def test_the_command_imports_and_prints_where(
    keras_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(CLASSES), encoding="utf-8")
    argv = ["import", str(keras_file), "--name", "pets", "--labels", str(labels)]
    argv += ["--model-dir", str(tmp_path / "models"), "--input-range", "-1-1"]

    assert main(argv) == 0

    card = ModelCard.read(tmp_path / "models" / "pets" / "1")
    assert card.imported is not None and card.imported.input_range == (-1.0, 1.0)
    out = capsys.readouterr().out.strip().splitlines()[-1]
    assert out.startswith(f"imported pets.keras as pets v1 to {tmp_path / 'models' / 'pets' / '1'}")


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        (["--name", "Pets", "--classes", "cat", "dog", "owl"], "--name 'Pets' is not a model"),
        (["--name", "pets", "--classes", "cat", "dog"], "pets.keras gives 3 outputs per image"),
        (["--name", "pets", "--labels", "absent.txt"], "--labels absent.txt does not exist"),
    ],
)
def test_mistakes_end_in_an_error_line_and_status_2(
    keras_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    arguments: list[str],
    error: str,
) -> None:
    argv = ["import", str(keras_file), *arguments, "--model-dir", str(tmp_path / "models")]
    argv += ["--input-range", "0-255"]

    assert main(argv) == 2

    assert capsys.readouterr().err.startswith(f"error: {error}")
    assert not (tmp_path / "models" / "pets").exists()
