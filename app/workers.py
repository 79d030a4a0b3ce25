"""Several serving processes on one port: a listening socket each, and what `auto` means.

uvicorn's supervisor (`Multiprocess`) hands every worker the sockets it is given. One
shared listening socket lets whichever process is awake accept: one of two workers can
take nearly all of 16 keep-alive connections while the other idles. With `SO_REUSEPORT`
each worker binds its own socket to the same address, and Linux spreads new connections
over the sockets of the group by a hash of their addresses.

The supervisor keeps uvicorn's `Multiprocess` (start, health checks, replacing a worker
that dies, stopping on a start-up failure, draining on SIGTERM) and is given one
`ReusePortListener` as its socket: in the supervisor that socket holds the port, and
pickled into a worker it becomes that worker's own socket (see the class).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any

from uvicorn.config import STARTUP_FAILURE

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")

logger = logging.getLogger("uvicorn.error")


def workers_for_cpus(affinity_cpus: int, cpu_max: str | None) -> int:
    """`workers=auto`: one process per CPU this process may use.

    `affinity_cpus` is how many CPUs it may run on (`os.sched_getaffinity`), `cpu_max`
    the text of the cgroup v2 file `cpu.max` ("<quota> <period>" in microseconds, or
    "max <period>" for no limit; None without one). A quota gives `quota // period`
    processes, at least 1: rounded down, as Go's automaxprocs does, because each process
    holds its own copy of the models, and one that gets only part of a CPU is throttled
    mid-request. The fraction still gets used: one process runs on more than one core
    (TensorFlow's threads, the image decoding pool).
    """
    cpus = max(1, affinity_cpus)
    fields = (cpu_max or "").split()
    if len(fields) != 2 or fields[0] == "max":
        return cpus
    try:
        quota, period = int(fields[0]), int(fields[1])
    except ValueError:
        return cpus
    if quota <= 0 or period <= 0:
        return cpus
    return max(1, min(cpus, quota // period))


def auto_workers() -> int:
    """`workers_for_cpus` for this process: its CPU affinity and its cgroup's quota."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        affinity = os.cpu_count() or 1
    try:
        cpu_max: str | None = CGROUP_CPU_MAX.read_text()
    except OSError:  # cgroup v1, or not Linux
        cpu_max = None
    return workers_for_cpus(affinity, cpu_max)


class PortUnavailable(Exception):
    """Something else listens on the address the service was told to bind."""


class ReusePortListener(socket.socket):
    """The supervisor's hold on the port, and the recipe for each worker's socket.

    In the supervisor it is bound with `SO_REUSEPORT` but never listens, so the kernel
    routes it no connections. It keeps the port (port 0 made one number) for as long as
    the supervisor runs, so a worker started later, after a crash or on SIGHUP, binds
    the same port. uvicorn's supervisor sends its sockets to each worker it spawns by
    pickling them; this one is not sent. Unpickled in the worker, it is a new socket
    bound with `SO_REUSEPORT` to the same address (`bind_worker_socket`), which uvicorn
    listens on once the worker's app has started.
    """

    host: str

    def __reduce__(self) -> tuple[Any, ...]:
        return (bind_worker_socket, (self.family, self.host, self.getsockname()[1]))


def _family(host: str) -> socket.AddressFamily:
    # As uvicorn's own `Config.bind_socket` decides.
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _shown(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def reserve_port(host: str, port: int) -> ReusePortListener | None:
    """The supervisor's `ReusePortListener` on host:port, or None without `SO_REUSEPORT`.

    None off Linux, where `SO_REUSEPORT` does not spread connections (macOS, Windows),
    or when the kernel refuses the option: the workers then share one socket as before.
    The port is first bound without `SO_REUSEPORT`, then released: that bind fails if
    anything else listens there, even a stray server of the same user that set
    `SO_REUSEPORT` and would otherwise silently share our connections. It also picks the
    port when asked for port 0, so every worker binds that same number.
    """
    if not sys.platform.startswith("linux") or not hasattr(socket, "SO_REUSEPORT"):
        return None
    family = _family(host)
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise PortUnavailable(
                f"cannot listen on {_shown(host, port)}: {error.strerror or error} "
                "(is another server running on that port?)"
            ) from None
        port = probe.getsockname()[1]
    listener = ReusePortListener(family, socket.SOCK_STREAM)
    listener.host = host
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    except OSError:
        listener.close()
        return None
    try:
        listener.bind((host, port))
    except OSError as error:  # taken in the instant since the probe let go of it
        listener.close()
        raise PortUnavailable(
            f"cannot listen on {_shown(host, port)}: {error.strerror or error}"
        ) from None
    return listener


def bind_worker_socket(family: socket.AddressFamily, host: str, port: int) -> socket.socket:
    """In a worker: its own socket on the supervisor's address, bound with `SO_REUSEPORT`.

    Runs while the worker unpickles what the supervisor sent, before uvicorn starts. A
    bind that fails ends the worker with uvicorn's start-up failure status, so the
    supervisor stops instead of restarting it again and again.
    """
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        # Logging is not configured yet in the worker: Python's last-resort handler
        # prints this on stderr.
        logger.error("Worker [%d] cannot bind %s: %s", os.getpid(), _shown(host, port), error)
        sys.exit(STARTUP_FAILURE)
    return sock
