"""The recipes: one module per trainable model, and the table of them.

Every module here that defines `RECIPE` is a model `python -m training train` can train;
adding a model means adding one module (and its test), nothing else. `RECIPES` is built
by importing them, in name order, when this package is first imported.
"""

from __future__ import annotations

import importlib
import pkgutil

from training.recipes.base import Recipe, TrainRequest

__all__ = ["RECIPES", "Recipe", "TrainRequest", "recipe_for"]


def _discover() -> dict[str, Recipe]:
    recipes: dict[str, Recipe] = {}
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda info: info.name):
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        recipe = getattr(module, "RECIPE", None)
        if isinstance(recipe, Recipe):
            if recipe.name in recipes:
                raise RuntimeError(f"two recipes are named {recipe.name!r}")
            recipes[recipe.name] = recipe
    return recipes


RECIPES: dict[str, Recipe] = _discover()


def recipe_for(name: str) -> Recipe:
    """The recipe that trains `name`; a KeyError names the known ones."""
    try:
        return RECIPES[name]
    except KeyError:
        known = ", ".join(sorted(RECIPES))
        raise KeyError(f"no recipe for {name!r}; known models: {known}") from None
