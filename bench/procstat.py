"""CPU time and resident memory of a process tree, read from /proc (Linux).

A server may fork workers, so every figure covers the process and all its descendants.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
MIB = 1024 * 1024


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may hold spaces; everything after its ")" is fixed.
    return text[text.rindex(")") + 2 :].split()


def process_tree(pid: int) -> list[int]:
    """`pid` and every descendant of it that is alive now."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        pending.extend(children.get(current, []))
    return tree


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by `pids` (the ones still alive)."""
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / _CLOCK_TICKS


def rss_bytes(pids: list[int]) -> int:
    """Resident set size of `pids` added up (shared pages count once per process)."""
    total = 0
    for pid in pids:
        try:
            pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        total += pages * _PAGE_BYTES
    return total


@dataclass
class Sample:
    seconds: float  # since the sampler started
    rss_bytes: int
    cpu_seconds: float


@dataclass
class TreeSampler:
    """Samples the RSS and CPU time of a process tree every `interval` seconds."""

    pid: int
    interval: float = 1.0
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample(self, started: float) -> Sample:
        pids = process_tree(self.pid)
        return Sample(time.monotonic() - started, rss_bytes(pids), cpu_seconds(pids))

    def __enter__(self) -> TreeSampler:
        started = time.monotonic()
        self.samples.append(self.sample(started))

        def run() -> None:
            while not self._stop.wait(self.interval):
                self.samples.append(self.sample(started))

        self._thread = threading.Thread(target=run, name="tree-sampler", daemon=True)
        self._thread.start()
        self._started = started
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.samples.append(self.sample(self._started))

    @property
    def cpu_cores(self) -> float:
        """Average CPU cores used between the first and last sample."""
        first, last = self.samples[0], self.samples[-1]
        wall = last.seconds - first.seconds
        return (last.cpu_seconds - first.cpu_seconds) / wall if wall > 0 else 0.0

    @property
    def peak_rss_bytes(self) -> int:
        return max(s.rss_bytes for s in self.samples)

    @property
    def last_rss_bytes(self) -> int:
        return self.samples[-1].rss_bytes
