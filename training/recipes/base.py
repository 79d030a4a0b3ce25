"""What every recipe provides, and the training request a run is started from.

A recipe is everything that differs between models: how its data is read, how its
network is built, its preprocessing kind, its defaults and its model card's text. The
pipeline (`training.pipeline`) is the same for all of them and never names a model.
"""

from __future__ import annotations

import argparse
import dataclasses
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import keras

from app.contract.model_card import ModelCard, Preprocessing
from training.calibrate import ThresholdGoal
from training.data import LabelledArrays, TrainingData
from training.fit import FitSettings


@dataclass(frozen=True)
class OperatingGoal:
    """How a two-class recipe's decision threshold is chosen on validation: which class
    is positive and what the threshold must achieve (`training.calibrate`'s goals)."""

    positive_class: str
    rule: ThresholdGoal


@dataclass
class TrainRequest:
    """A training run as asked for (JSON-serialisable, saved in its run folder so an
    interrupted run resumes exactly as it was started).

    `fit` holds the settings every model shares, `options` the recipe's own (its
    `Options` dataclass as a dict). Defaults are filled in by the recipe, never here.
    """

    model: str
    data: str | None
    model_dir: str
    fit: FitSettings
    options: dict[str, Any]
    initial_model: str | None = None
    parent: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> TrainRequest:
        fields = dict(payload)
        fields["fit"] = FitSettings(**fields["fit"])
        return cls(**fields)

    @property
    def data_path(self) -> Path | None:
        return Path(self.data) if self.data else None


@dataclass(frozen=True)
class CardText:
    """The model card's words about one trained network."""

    description: str
    preprocessing: Preprocessing
    architecture: str
    notes: dict[str, Any] = field(default_factory=dict)  # extra hyperparameters to record


class Recipe(ABC):
    """One model's data, network, defaults and card text.

    A module in `training.recipes` that defines `RECIPE = SomeRecipe()` is a trainable
    model; `python -m training train <name>` and the pipeline find it there.
    """

    name: ClassVar[str]
    summary: ClassVar[str]  # one line for `train --help`
    data_help: ClassVar[str]  # what `--data` must point at
    limitations: ClassVar[str]
    fit_defaults: ClassVar[FitSettings]
    Options: ClassVar[type[Any]]  # a dataclass of the recipe's own settings, with defaults
    operating_goal: ClassVar[OperatingGoal | None] = None

    # --- settings ---------------------------------------------------------------------

    @abstractmethod
    def add_option_flags(self, parser: argparse.ArgumentParser) -> None:
        """The recipe's own `train` flags, each with `dest` = an `Options` field and
        `default=None` (the `Options` default applies; its help text should say it)."""

    def options_from_flags(self, args: argparse.Namespace) -> dict[str, Any]:
        """The `Options` fields given on the command line, over the defaults."""
        given = {
            option.name: getattr(args, option.name)
            for option in dataclasses.fields(self.Options)
            if getattr(args, option.name, None) is not None
        }
        return asdict(self.Options(**given))

    def options(self, request: TrainRequest) -> Any:
        """The request's options as this recipe's `Options`."""
        return self.Options(**request.options)

    def options_from_card(self, card: ModelCard) -> Any:
        """The options a version was trained with, from its card's hyperparameters (where
        `training.card` records them); defaults for any an older card lacks."""
        if card.training is None:
            raise ValueError(f"{card.name} v{card.version} has no training record")
        recorded = card.training.hyperparameters
        names = {option.name for option in dataclasses.fields(self.Options)}
        return self.Options(**{key: value for key, value in recorded.items() if key in names})

    def check_options(self, options: Any) -> None:
        """Raise ValueError (with a message for the user) for options that cannot work."""
        del options

    def default_option(self, name: str) -> Any:
        """The `Options` default of one field, for help texts."""
        return getattr(self.Options(), name)

    # --- data and network -------------------------------------------------------------

    @abstractmethod
    def load_data(self, request: TrainRequest) -> TrainingData:
        """Training and validation pipelines; raises `DataError` on a bad layout."""

    @abstractmethod
    def load_split(self, data: Path | None, split: str, options: Any) -> LabelledArrays:
        """One labelled split in memory, as the exported model takes it."""

    @abstractmethod
    def build(self, options: Any) -> keras.Model:
        """The untrained network: raw 0..255 pixels in, softmax probabilities out."""

    # --- model card -------------------------------------------------------------------

    @abstractmethod
    def card_text(self, options: Any) -> CardText:
        """Description, preprocessing and architecture for the card."""
