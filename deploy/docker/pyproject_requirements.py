"""Print the runtime dependencies of pyproject.toml, one requirement a line.

The image's dependency layer is built from this list alone, before any source code is
copied in, so a code change does not reinstall TensorFlow. `--tensorflow SPEC` replaces
every TensorFlow requirement (tensorflow, tensorflow-cpu) with SPEC: the GPU image
passes `tensorflow[and-cuda]==2.21.0`. `--build-system` adds `[build-system] requires`
(setuptools), so the app itself installs later without an isolated build environment.

    python pyproject_requirements.py pyproject.toml [--tensorflow SPEC] [--build-system]
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

TENSORFLOW = re.compile(r"^tensorflow(-cpu)?\s*(\[|[=<>!~;\s]|$)", re.IGNORECASE)


def requirements(
    pyproject: Path, tensorflow: str | None = None, build_system: bool = False
) -> list[str]:
    """The `[project] dependencies` of `pyproject`, with TensorFlow swapped if asked."""
    with pyproject.open("rb") as file:
        config = tomllib.load(file)
    dependencies: list[str] = config["project"]["dependencies"]
    if tensorflow:
        kept = [dep for dep in dependencies if not TENSORFLOW.match(dep.strip())]
        if len(kept) == len(dependencies):
            raise SystemExit(f"{pyproject}: no tensorflow requirement to replace")
        dependencies = [*kept, tensorflow]
    if build_system:
        dependencies = [*dependencies, *config["build-system"]["requires"]]
    return dependencies


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pyproject", type=Path)
    parser.add_argument("--tensorflow", default="", help="replace TensorFlow with this spec")
    parser.add_argument(
        "--build-system", action="store_true", help="add [build-system] requires too"
    )
    args = parser.parse_args(argv)
    lines = requirements(args.pyproject, args.tensorflow, args.build_system)
    sys.stdout.write("".join(f"{line}\n" for line in lines))


if __name__ == "__main__":
    main()
