"""What runs a model version: the choice, LiteRT with its load-time check, the fallbacks."""

from __future__ import annotations

import gc
import logging
import shutil
import weakref
from pathlib import Path

import numpy as np
import pytest

import app.litert
import app.runtime
from app.contract.model_card import LITERT_MODEL_FILENAME, ModelCard
from app.devices import CPU, DevicePlacement
from app.runtime import ModelRuntime, RuntimeOptions, SavedModelSignature, choose_runtime
from app.settings import RuntimePreference
from tests.app.tiny_models import TINY_DIGITS, give_foreign_litert_model

# The GPU's logic, run on CPU: `tf.device` gets the CPU's name, the choice sees a GPU.
GPU_ON_CPU = DevicePlacement(kind="gpu", name=CPU.name)


@pytest.mark.parametrize(
    ("preference", "device_kind", "expected"),
    [
        ("auto", "cpu", "litert"),
        ("auto", "gpu", "savedmodel"),
        ("litert", "cpu", "litert"),
        ("litert", "gpu", "litert"),
        ("savedmodel", "cpu", "savedmodel"),
        ("savedmodel", "gpu", "savedmodel"),
    ],
)
def test_choose_runtime(preference: RuntimePreference, device_kind: str, expected: str) -> None:
    assert choose_runtime(preference, device_kind) == expected


@pytest.fixture
def version_dir(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """A private copy of `tiny-digits/1`, exported with its model.tflite."""
    target = tmp_path / "models" / TINY_DIGITS / "1"
    shutil.copytree(tiny_model_dir / TINY_DIGITS / "1", target)
    return target


def loaded(
    version_dir: Path,
    cache_dir: Path,
    preference: RuntimePreference = "auto",
    device: DevicePlacement = CPU,
) -> ModelRuntime:
    options = RuntimeOptions(preference=preference, cache_dir=cache_dir, max_batch_size=16)
    runtime = ModelRuntime(ModelCard.read(version_dir), version_dir, device, options)
    runtime.load()
    return runtime


def saved_model_output(version_dir: Path, pixels: np.ndarray) -> np.ndarray:
    return SavedModelSignature(version_dir, ModelCard.read(version_dir), CPU)(pixels)


def listing(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under `folder` with its size and modification time."""
    return {
        str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in [folder, *folder.rglob("*")]
    }


def pixels(batch: int = 5) -> np.ndarray:
    return np.random.default_rng(3).uniform(0, 255, (batch, 28, 28, 1)).astype(np.float32)


def test_litert_serves_the_exported_model_tflite_with_the_saved_models_answers(
    version_dir: Path, tmp_path: Path
) -> None:
    runtime = loaded(version_dir, tmp_path / "cache")
    assert runtime.info is not None
    assert (runtime.info.name, runtime.info.litert_source) == ("litert", "export")
    assert runtime.info.reason.startswith("model.tflite from the export agrees with the SavedModel")
    np.testing.assert_allclose(
        runtime.predict_batch(pixels()), saved_model_output(version_dir, pixels()), atol=1e-5
    )
    assert not (tmp_path / "cache").exists(), "nothing converted, nothing cached"


def test_warm_up_returns_the_median_cost_of_each_batch_size(
    version_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = loaded(version_dir, tmp_path / "cache")
    seen: list[int] = []
    real_predict = runtime.predict_batch

    def counting(batch: np.ndarray) -> np.ndarray:
        seen.append(len(batch))
        return real_predict(batch)

    monkeypatch.setattr(runtime, "predict_batch", counting)
    costs = runtime.warm_up((1, 16))
    assert list(costs) == [1, 16]
    assert all(0 < seconds < 1 for seconds in costs.values())
    assert seen == [1] * 6 + [16] * 6, "one untimed run, then five timed, per size"


def test_litert_lets_go_of_the_saved_model(
    version_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    created: weakref.WeakSet[SavedModelSignature] = weakref.WeakSet()

    class Tracked(SavedModelSignature):
        def __init__(self, *args: object) -> None:
            super().__init__(*args)  # type: ignore[arg-type]
            created.add(self)

    monkeypatch.setattr(app.runtime, "SavedModelSignature", Tracked)
    runtime = loaded(version_dir, tmp_path / "cache")
    gc.collect()
    assert runtime.info is not None and runtime.info.name == "litert"
    assert len(created) == 0, "the SavedModel's objects can be freed"


def test_a_missing_model_tflite_is_converted_into_the_cache_not_the_model_folder(
    version_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (version_dir / LITERT_MODEL_FILENAME).unlink()
    before = listing(version_dir.parent)
    cache = tmp_path / "cache"
    with caplog.at_level(logging.INFO, logger="app.runtime"):
        runtime = loaded(version_dir, cache)
    assert listing(version_dir.parent) == before, "the model folder is untouched"
    assert runtime.info is not None
    assert (runtime.info.name, runtime.info.litert_source) == ("litert", "converted at load")
    [converted] = list(cache.iterdir())
    assert converted.name.startswith(f"{TINY_DIGITS}-") and converted.suffix == ".tflite"
    assert runtime.info.reason.startswith(
        f"model.tflite missing (an older export, or a SavedModel made elsewhere); "
        f"converted at load into {converted}, which agrees with the SavedModel"
    )
    [record] = [r for r in caplog.records if "runs on LiteRT" in r.getMessage()]
    assert record.levelno == logging.WARNING, "the operator should re-export"
    np.testing.assert_allclose(
        runtime.predict_batch(pixels()), saved_model_output(version_dir, pixels()), atol=1e-5
    )

    again = loaded(version_dir, cache)
    assert again.info is not None and again.info.litert_source == "converted at load"
    assert f"using the conversion cached at {converted}" in again.info.reason
    assert list(cache.iterdir()) == [converted]


def test_a_model_tflite_that_disagrees_is_replaced_by_a_conversion_at_load(
    version_dir: Path, tmp_path: Path
) -> None:
    give_foreign_litert_model(version_dir)
    before = listing(version_dir.parent)
    runtime = loaded(version_dir, tmp_path / "cache")
    assert listing(version_dir.parent) == before
    assert runtime.info is not None
    assert (runtime.info.name, runtime.info.litert_source) == ("litert", "converted at load")
    assert runtime.info.reason.startswith(
        "model.tflite from the export is not used: LiteRT output differs from the SavedModel's by "
    )
    np.testing.assert_allclose(
        runtime.predict_batch(pixels()), saved_model_output(version_dir, pixels()), atol=1e-5
    )


def test_when_the_conversion_disagrees_too_the_saved_model_serves(
    version_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    give_foreign_litert_model(version_dir)
    foreign = (version_dir / LITERT_MODEL_FILENAME).read_bytes()
    monkeypatch.setattr(app.litert, "convert_saved_model", lambda *_: foreign)
    runtime = loaded(version_dir, tmp_path / "cache")
    assert runtime.info is not None
    assert (runtime.info.name, runtime.info.litert_source) == ("savedmodel", None)
    assert ", but LiteRT output differs from the SavedModel's by " in runtime.info.reason
    assert runtime.info.reason.endswith("input; serving the SavedModel")
    np.testing.assert_array_equal(
        runtime.predict_batch(pixels()), saved_model_output(version_dir, pixels())
    )


def test_a_corrupt_model_tflite_is_named_and_converted_again(
    version_dir: Path, tmp_path: Path
) -> None:
    (version_dir / LITERT_MODEL_FILENAME).write_bytes(b"not a flatbuffer")
    runtime = loaded(version_dir, tmp_path / "cache")
    assert runtime.info is not None and runtime.info.litert_source == "converted at load"
    assert (
        "model.tflite from the export is not used: LiteRT cannot load it (" in runtime.info.reason
    )


def test_an_unwritable_cache_serves_the_saved_model_and_says_why(
    version_dir: Path, tmp_path: Path
) -> None:
    (version_dir / LITERT_MODEL_FILENAME).unlink()
    blocker = tmp_path / "a-file"
    blocker.write_text("the cache folder cannot be made under a file, even by root")
    runtime = loaded(version_dir, blocker / "cache")
    assert runtime.info is not None
    assert (runtime.info.name, runtime.info.litert_source) == ("savedmodel", None)
    assert runtime.info.reason == (
        f"model.tflite missing (an older export, or a SavedModel made elsewhere); cannot write "
        f"a conversion into the cache folder {blocker / 'cache'} (Not a directory): set "
        "VISION_SERVING_RUNTIME_CACHE_DIR to a writable folder; serving the SavedModel"
    )
    assert runtime.predict_batch(pixels()).shape == (5, 10)


def test_the_savedmodel_setting_serves_the_signature_without_checking_litert(
    version_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_litert(*_: object, **__: object) -> None:
        raise AssertionError("LiteRT must not be looked at")

    monkeypatch.setattr(app.runtime, "find_litert_model", no_litert)
    runtime = loaded(version_dir, tmp_path / "cache", preference="savedmodel")
    assert runtime.info is not None
    assert runtime.info == app.runtime.RuntimeInfo(
        "savedmodel", None, "VISION_SERVING_RUNTIME=savedmodel"
    )
    np.testing.assert_array_equal(
        runtime.predict_batch(pixels()), saved_model_output(version_dir, pixels())
    )


def test_auto_on_a_gpu_runs_the_saved_model_under_tf_device(
    version_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tensorflow as tf

    placements: list[str] = []
    real_device = tf.device

    def recording_device(name: str) -> object:
        placements.append(name)
        return real_device(name)

    runtime = loaded(version_dir, tmp_path / "cache", device=GPU_ON_CPU)
    assert runtime.info is not None
    assert runtime.info.name == "savedmodel"
    assert runtime.info.reason == "the SavedModel runs on the GPU (runtime auto)"
    monkeypatch.setattr(tf, "device", recording_device)
    runtime.predict_batch(pixels())
    assert placements == [GPU_ON_CPU.name]


def test_litert_on_a_gpu_machine_still_runs_litert(version_dir: Path, tmp_path: Path) -> None:
    runtime = loaded(version_dir, tmp_path / "cache", preference="litert", device=GPU_ON_CPU)
    assert runtime.info is not None and runtime.info.name == "litert"


def test_release_drops_the_model(version_dir: Path, tmp_path: Path) -> None:
    runtime = loaded(version_dir, tmp_path / "cache")
    runtime.release()
    with pytest.raises(Exception, match="is not loaded"):
        runtime.predict_batch(pixels())
