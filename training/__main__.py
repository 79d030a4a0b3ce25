"""Entry point of `python -m training` and the `vision-train` console script."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    # Quiet TensorFlow's C++ start-up chatter before it is first imported.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from training.cli import main as run_cli

    return run_cli(argv)


if __name__ == "__main__":
    sys.exit(main())
