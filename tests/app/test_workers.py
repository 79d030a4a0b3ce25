"""`app.workers`: what `workers=auto` counts, and the listening socket of each worker."""

from __future__ import annotations

import io
import pickle
import socket
from collections.abc import Iterator
from multiprocessing.reduction import ForkingPickler
from pathlib import Path

import pytest
from uvicorn.server import STARTUP_FAILURE

from app import workers
from app.settings import Settings
from app.workers import (
    PortUnavailable,
    ReusePortListener,
    bind_worker_socket,
    reserve_port,
    workers_for_cpus,
)


@pytest.mark.parametrize(
    ("affinity", "cpu_max", "expected"),
    [
        (2, None, 2),  # no cgroup v2 file
        (4, "max 100000\n", 4),  # no quota
        (4, "200000 100000\n", 2),  # a pod with `limits.cpu: 2`
        (4, "150000 100000\n", 1),  # 1.5 CPUs: rounded down
        (4, "250000 100000\n", 2),
        (4, "50000 100000\n", 1),  # half a CPU: still one process
        (2, "800000 100000\n", 2),  # the quota allows more CPUs than the process may use
        (8, "300000 50000\n", 6),  # another period
        (4, "garbage\n", 4),
        (4, "0 100000\n", 4),
        (4, "100000 0\n", 4),
        (4, "", 4),
        (0, None, 1),
    ],
)
def test_auto_is_one_process_per_usable_cpu(
    affinity: int, cpu_max: str | None, expected: int
) -> None:
    assert workers_for_cpus(affinity, cpu_max) == expected


def test_auto_reads_the_affinity_and_the_cgroup_quota(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workers.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    cpu_max = tmp_path / "cpu.max"
    monkeypatch.setattr(workers, "CGROUP_CPU_MAX", cpu_max)
    assert workers.auto_workers() == 4  # no such file
    cpu_max.write_text("300000 100000\n")
    assert workers.auto_workers() == 3


def test_the_setting_turns_auto_into_a_number(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workers, "auto_workers", lambda: 3)
    monkeypatch.setenv("VISION_SERVING_WORKERS", "auto")
    assert Settings().workers == 3
    monkeypatch.setenv("VISION_SERVING_WORKERS", "2")
    assert Settings().workers == 2


@pytest.fixture
def listener() -> Iterator[ReusePortListener]:
    held = reserve_port("127.0.0.1", 0)
    assert held is not None
    with held:
        yield held


def _reuse_port(sock: socket.socket) -> bool:
    return bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT))


def _listening(sock: socket.socket) -> bool:
    return bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))


def _sent_to_a_worker(sock: socket.socket) -> socket.socket:
    """What a worker spawned by uvicorn's supervisor gets for `sock`."""
    buffer = io.BytesIO()
    ForkingPickler(buffer).dump(sock)
    received = pickle.loads(buffer.getvalue())
    assert isinstance(received, socket.socket)
    return received


def test_the_supervisor_holds_the_port_without_listening(listener: ReusePortListener) -> None:
    assert listener.getsockname()[1] != 0  # port 0 became one number
    assert _reuse_port(listener)
    assert not _listening(listener)  # so the kernel routes it no connections


def test_each_worker_gets_its_own_socket_on_that_port_and_both_take_connections(
    listener: ReusePortListener,
) -> None:
    address = listener.getsockname()
    with _sent_to_a_worker(listener) as first, _sent_to_a_worker(listener) as second:
        assert type(first) is socket.socket
        assert first.getsockname() == second.getsockname() == address
        assert first.fileno() != second.fileno() != listener.fileno()
        assert _reuse_port(first) and _reuse_port(second)
        for sock in (first, second):
            sock.listen()
            sock.settimeout(0)
        clients = [socket.create_connection(address) for _ in range(32)]
        accepted = {0: 0, 1: 0}
        for index, sock in enumerate((first, second)):
            while True:
                try:
                    sock.accept()[0].close()
                except BlockingIOError:
                    break
                accepted[index] += 1
        for client in clients:
            client.close()
    assert sum(accepted.values()) == 32  # none went to the supervisor's socket
    assert all(accepted.values()), accepted  # all 32 on one: a 1 in 2**31 chance


@pytest.mark.parametrize("stray_reuse_port", [False, True], ids=["plain", "so_reuseport"])
def test_a_port_another_server_listens_on_is_refused(stray_reuse_port: bool) -> None:
    # With SO_REUSEPORT, a stray server of the same user would share our connections
    # without a word; the supervisor's first bind, without it, refuses both kinds.
    with socket.socket() as stray:
        if stray_reuse_port:
            stray.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        stray.bind(("127.0.0.1", 0))
        stray.listen()
        port = stray.getsockname()[1]
        with pytest.raises(PortUnavailable) as refused:
            reserve_port("127.0.0.1", port)
    assert str(refused.value) == (
        f"cannot listen on 127.0.0.1:{port}: Address already in use "
        "(is another server running on that port?)"
    )


def test_ipv6_hosts_bind_ipv6_sockets() -> None:
    try:
        held = reserve_port("::1", 0)
    except PortUnavailable:
        pytest.skip("no IPv6 loopback here")
    assert held is not None
    with held, _sent_to_a_worker(held) as worker_socket:
        assert held.family == worker_socket.family == socket.AF_INET6
        assert worker_socket.getsockname()[:2] == held.getsockname()[:2]


def test_without_so_reuseport_the_workers_share_one_socket(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(workers.sys, "platform", "darwin")  # SO_REUSEPORT does not balance
    assert reserve_port("127.0.0.1", 0) is None
    monkeypatch.undo()
    monkeypatch.setattr(workers.socket, "SO_REUSEPORT", 0x7FFF)  # the kernel refuses it
    assert reserve_port("127.0.0.1", 0) is None
    monkeypatch.delattr(workers.socket, "SO_REUSEPORT")
    assert reserve_port("127.0.0.1", 0) is None


def test_a_worker_that_cannot_bind_fails_to_start() -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with pytest.raises(SystemExit) as exited:
            bind_worker_socket(socket.AF_INET, "127.0.0.1", port)
    assert exited.value.code == STARTUP_FAILURE
