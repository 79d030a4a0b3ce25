"""argparse `type`s that say what a flag must be: `argument --x: must be <what>, got ...`.

Shared by the command line (`training.cli`) and the recipes' own flags.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def integer(what: str, minimum: int) -> Callable[[str], int]:
    """An integer >= `minimum`, else an error saying `must be <what>`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value

    return parse


def number(what: str, accept: Callable[[float], bool]) -> Callable[[str], float]:
    """A finite float that `accept`s, else `must be <what>`."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if not (math.isfinite(value) and accept(value)):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value

    return parse


positive_int = integer("a positive integer", 1)
count = integer("an integer >= 0", 0)
positive = number("a number above 0", lambda value: value > 0)
non_negative = number("a number >= 0", lambda value: value >= 0)
rate = number("at least 0 and below 1", lambda value: 0 <= value < 1)
share = number("above 0 and below 1", lambda value: 0 < value < 1)
