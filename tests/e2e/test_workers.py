"""`VISION_SERVING_WORKERS=2`: two serving processes on one port, each with its own
listening socket and its share of the connections, one `/metrics`, exit 0."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from http.client import HTTPConnection
from pathlib import Path

import httpx

from tests.app.images import png
from tests.app.tiny_models import export_tiny_digits
from tests.e2e.conftest import LiveServer, start_server, stop_server

PREDICT = "/api/v1/models/tiny-digits/predict"
REQUESTS = 'vision_serving_requests_total{api="native",model="tiny-digits",status="200"'
LOADED = 'vision_serving_model_versions_loaded{model="tiny-digits",worker="'


def worker_pids(server_pid: int) -> list[int]:
    children = Path(f"/proc/{server_pid}/task/{server_pid}/children").read_text().split()
    return [int(pid) for pid in children if "spawn_main" in _cmdline(int(pid))]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:  # gone since the listing
        return ""


def scrape(url: str) -> tuple[float, str]:
    """Requests counted, and the process that answered (from its `worker` label)."""
    lines = httpx.get(f"{url}/metrics", headers={"Connection": "close"}).text.splitlines()
    counted = sum(float(line.split()[-1]) for line in lines if line.startswith(REQUESTS))
    loaded = next(line for line in lines if line.startswith(LOADED))
    return counted, loaded.split('worker="')[1].split('"')[0]


def wait_until_every_worker_is_ready(server: LiveServer) -> list[int]:
    """The workers' pids, once each listens on the port and 20 fresh connections in a
    row say ready (/readyz was answered by one worker; a worker listens before its
    models are ready)."""
    port = int(server.url.rsplit(":", 1)[1])
    workers: list[int] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        workers = worker_pids(server.process.pid)
        listening = {inode for state, _, inode in tcp_sockets(port) if state == "0A"}
        answers = [
            httpx.get(f"{server.url}/readyz", headers={"Connection": "close"}).status_code
            for _ in range(20)
        ]
        if (
            len(workers) == 2
            and answers == [200] * 20
            and all(listening & socket_inodes(pid) for pid in workers)
        ):
            break
        time.sleep(0.2)
    assert len(workers) == 2, server.log()
    return workers


def tcp_sockets(port: int) -> list[tuple[str, int, int]]:
    """(state, remote port, inode) of this host's TCP sockets whose local port is `port`.

    From /proc/net/tcp and tcp6: state "0A" is LISTEN, "01" ESTABLISHED.
    """
    rows = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
            if int(local.rsplit(":", 1)[1], 16) == port:
                rows.append((state, int(remote.rsplit(":", 1)[1], 16), int(inode)))
    return rows


def socket_inodes(pid: int) -> set[int]:
    """The inodes of the sockets process `pid` has open."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):  # closed since the listing
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(int(target[len("socket:[") : -1]))
    return inodes


def listening_socket_holders(port: int, processes: list[int]) -> list[list[int]]:
    """For each socket listening on `port`, which of `processes` have it open."""
    listening = [inode for state, _, inode in tcp_sockets(port) if state == "0A"]
    return [[pid for pid in processes if inode in socket_inodes(pid)] for inode in listening]


def test_each_worker_listens_on_its_own_socket_and_takes_connections(tmp_path: Path) -> None:
    export_tiny_digits(tmp_path / "models")
    server = start_server(tmp_path / "models", tmp_path / "server.log", VISION_SERVING_WORKERS="2")
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    connections = [HTTPConnection(host, int(port), timeout=30) for _ in range(16)]
    try:
        workers = wait_until_every_worker_is_ready(server)
        # Two listening sockets on the port (the supervisor's hold on it does not
        # listen), each open in exactly one process, a different worker each. With one
        # socket shared by all, there is one, open in all three processes.
        holders = listening_socket_holders(int(port), [server.process.pid, *workers])
        assert sorted(holders) == sorted([pid] for pid in workers), (holders, workers)

        # 16 connections opened at once, as a load generator does, then two predict
        # requests on each (kept alive). Then, by the client's port, which worker holds
        # the server end of every connection.
        for connection in connections:
            connection.connect()
        client_ports = [connection.sock.getsockname()[1] for connection in connections]
        for index, connection in enumerate(connections * 2):
            upload = httpx.Request(
                "POST", f"{server.url}{PREDICT}", files={"files": (f"{index}.png", png(index))}
            )
            connection.request("POST", PREDICT, body=upload.read(), headers=dict(upload.headers))
            response = connection.getresponse()
            assert response.status == 200, response.read()
            response.read()
            assert connection.sock is not None  # still open: kept alive
        remote_port_of = {
            inode: remote for state, remote, inode in tcp_sockets(int(port)) if state == "01"
        }
        taken = {
            pid: sorted(
                remote_port_of[inode] for inode in socket_inodes(pid) & remote_port_of.keys()
            )
            for pid in workers
        }
        assert sorted(taken[workers[0]] + taken[workers[1]]) == sorted(client_ports)
        # The kernel spreads connections over the sockets by hash: both workers get some
        # (all 16 on one of two sockets: a 1 in 2**15 chance). With one shared socket,
        # the worker that wakes first may accept all 16.
        assert all(taken.values()), taken

        # A worker that dies is replaced, and the replacement binds the same port (the
        # supervisor holds it) with a socket of its own.
        for connection in connections:
            connection.close()
        os.kill(workers[0], signal.SIGKILL)
        deadline = time.monotonic() + 60
        while workers[0] in worker_pids(server.process.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        replaced = wait_until_every_worker_is_ready(server)
        assert workers[0] not in replaced and workers[1] in replaced
        holders = listening_socket_holders(int(port), [server.process.pid, *replaced])
        assert sorted(holders) == sorted([pid] for pid in replaced), (holders, replaced)
    finally:
        for connection in connections:
            connection.close()
        exit_code = stop_server(server)
    assert exit_code == 0, server.log()


def test_two_workers_serve_one_port_and_report_one_set_of_metrics(tmp_path: Path) -> None:
    export_tiny_digits(tmp_path / "models")
    server = start_server(tmp_path / "models", tmp_path / "server.log", VISION_SERVING_WORKERS="2")
    try:
        wait_until_every_worker_is_ready(server)

        def predict(index: int) -> int:
            # A new connection per request, so the kernel spreads them over both workers.
            with httpx.Client(base_url=server.url, timeout=30) as client:
                files = {"files": (f"{index}.png", png(index))}
                return client.post(PREDICT, files=files).status_code

        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(predict, range(40)))
        assert statuses == [200] * 40
        # Every scrape, whichever worker answers it, counts the requests of both, and
        # both answer scrapes (their model gauges name them).
        scrapes = [scrape(server.url) for _ in range(20)]
        assert [counted for counted, _ in scrapes] == [40.0] * 20
        assert {worker for _, worker in scrapes} == {
            str(pid) for pid in worker_pids(server.process.pid)
        }
    finally:
        exit_code = stop_server(server)
    assert exit_code == 0, server.log()
