"""The equivalence check both halves run before LiteRT may stand in for the SavedModel."""

from __future__ import annotations

import numpy as np
import pytest

from app.contract.model_card import InputSpec
from app.contract.runtimes import (
    MAX_ABS_DIFFERENCE,
    check_inputs,
    compare_outputs,
    compare_runs,
    outputs_on,
)

DIGIT = InputSpec(height=28, width=28, channels=1, color_mode="grayscale")
PHOTO = InputSpec(height=20, width=30, channels=3, color_mode="rgb")


def softmax_rows(rows: int, classes: int, seed: int = 0) -> np.ndarray:
    logits = np.random.default_rng(seed).normal(0, 3, (rows, classes))
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("spec", [DIGIT, PHOTO])
def test_check_inputs_are_the_same_every_call_and_fit_the_input(spec: InputSpec) -> None:
    first, second = check_inputs(spec), check_inputs(spec)
    assert list(first) == [
        "blank",
        "noise",
        "gradients",
        "bright strokes on dark",
        "dark strokes on bright",
    ]
    for name, batch in first.items():
        assert batch.dtype == np.float32 and batch.flags.c_contiguous, name
        assert batch.shape[1:] == (spec.height, spec.width, spec.channels), name
        assert batch.min() >= 0.0 and batch.max() <= 255.0, name
        np.testing.assert_array_equal(batch, second[name])


def test_check_inputs_look_like_images_not_only_noise() -> None:
    batches = check_inputs(DIGIT)
    assert not batches["blank"].any()
    strokes = batches["bright strokes on dark"]
    ink = (strokes > 127).mean(axis=(1, 2, 3))
    assert np.all((ink > 0.01) & (ink < 0.4)), "a few strokes on a mostly dark page"
    np.testing.assert_allclose(batches["dark strokes on bright"], 255.0 - strokes, atol=1e-4)
    assert batches["gradients"].max() == 255.0 and batches["gradients"].min() == 0.0


def test_check_inputs_follow_the_value_range() -> None:
    spec = DIGIT.model_copy(update={"value_range": (-1.0, 1.0)})
    batches = check_inputs(spec)
    assert batches["blank"].min() == -1.0
    assert batches["noise"].min() >= -1.0 and batches["noise"].max() <= 1.0


def test_outputs_within_the_tolerance_agree() -> None:
    reference = softmax_rows(8, 10)
    nudged = reference + np.float32(MAX_ABS_DIFFERENCE / 2)
    assert compare_outputs(reference, nudged) is None


def test_a_difference_over_the_tolerance_is_named_with_its_size() -> None:
    reference = softmax_rows(8, 10)
    candidate = reference.copy()
    candidate[3, 2] += 3e-4
    reason = compare_outputs(reference, candidate, against="the SavedModel's")
    assert reason == "differs from the SavedModel's by 3.0e-04 (more than 1e-05)"


def test_a_different_top_class_is_refused_even_within_the_tolerance() -> None:
    reference = np.array([[0.5, 0.5 - 4e-6, 0.0], [0.1, 0.2, 0.7]], dtype=np.float32)
    candidate = np.array([[0.5 - 4e-6, 0.5, 0.0], [0.1, 0.2, 0.7]], dtype=np.float32)
    reason = compare_outputs(reference, candidate)
    assert reason is not None and "picks class 1 where the reference's picks 0 (row 0" in reason


def test_shape_and_non_finite_outputs_are_refused() -> None:
    reference = softmax_rows(4, 3)
    assert "has shape [4, 2]" in str(compare_outputs(reference, reference[:, :2]))
    broken = reference.copy()
    broken[1, 1] = np.nan
    assert compare_outputs(reference, broken) == "has non-finite values"
    assert "cannot be compared" in str(compare_outputs(broken, reference))


def test_compare_runs_names_the_first_input_they_disagree_on() -> None:
    reference = {"blank": softmax_rows(1, 10, 1), "noise": softmax_rows(8, 10, 2)}
    same = {name: output.copy() for name, output in reference.items()}
    agreement = compare_runs(reference, same)
    assert agreement.agrees and agreement.images == 9 and agreement.max_difference == 0.0
    same["noise"][5, 0] += 1e-3
    agreement = compare_runs(reference, same, against="the SavedModel's")
    assert not agreement.agrees
    assert agreement.problem == (
        "differs from the SavedModel's by 1.0e-03 (more than 1e-05) on the noise input"
    )
    assert agreement.max_difference == pytest.approx(1e-3, rel=1e-3)


def test_outputs_on_runs_every_batch() -> None:
    batches = check_inputs(DIGIT)
    outputs = outputs_on(lambda pixels: pixels.mean(axis=(1, 2)), batches)
    assert {name: out.shape for name, out in outputs.items()} == {
        name: (len(batch), 1) for name, batch in batches.items()
    }
