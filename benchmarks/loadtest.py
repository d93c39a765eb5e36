"""W4: requests per second through gunicorn over HTTP, on a ZEO server.

Everything runs on 127.0.0.1: a ZEO server (``runzeo``, on a free port, its
FileStorage in a temporary directory), gunicorn with 1, 2 and 4 sync workers
serving ``w4_app:app``, and a load generator of a fixed number of Python
threads, each sending one request per connection (sync workers close every
connection) for a bounded time. The CPU time that the load generator, the
gunicorn processes and the ZEO server took in the measured window is read
from /proc and reported next to the figure: on a 2-core machine they all
compete for the same cores. Every increment is accounted for: the counter's
change equals the number of 2xx answers to ``POST /inc``.
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import ZEO
from BTrees.Length import Length
from BTrees.OOBTree import OOBTree

HERE = Path(__file__).resolve().parent
TICK = os.sysconf("SC_CLK_TCK")
HOST = "127.0.0.1"
TREE_SIZE = 10_000

REQUESTS = {
    "inc": b"POST /inc HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n"
    b"Connection: close\r\n\r\n",
    "read": b"GET /read HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode}")
        try:
            with socket.create_connection((HOST, port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {HOST}:{port} after {seconds} s")


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _stat(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    return data[data.rindex(")") + 2 :].split()


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = _stat(pid)
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICK


def context_switches(pids: list[int]) -> tuple[int, int]:
    """(all, involuntary) context switches of every thread of *pids*."""
    total = involuntary = 0
    for pid in pids:
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except FileNotFoundError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{pid}/task/{task}/status") as f:
                    for line in f:
                        if line.startswith("voluntary_ctxt_switches:"):
                            total += int(line.split()[1])
                        elif line.startswith("nonvoluntary_ctxt_switches:"):
                            n = int(line.split()[1])
                            total += n
                            involuntary += n
            except FileNotFoundError:
                continue
    return total, involuntary


def children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if int(_stat(int(entry))[1]) == pid:
                    out.append(int(entry))
            except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
                continue
    return out


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def one_request(port: int, payload: bytes) -> int:
    sock = socket.create_connection((HOST, port), timeout=10)
    try:
        # Close with a reset: no TIME_WAIT left behind for each of the
        # thousands of short connections.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.sendall(payload)
        head = b""
        while True:
            data = sock.recv(65536)
            if not data:
                break
            head = head or data
    finally:
        sock.close()
    return int(head[9:12]) if head.startswith(b"HTTP/") else 0


def generate_load(
    port: int,
    route: str,
    clients: int,
    warmup: float,
    seconds: float,
    server_pids: list[int],
    zeo_pid: int,
) -> dict[str, Any]:
    payload = REQUESTS[route]
    start = time.monotonic()
    window_start, window_end = start + warmup, start + warmup + seconds
    records: list[list[tuple[float, int, float]]] = [[] for _ in range(clients)]
    errors: list[str] = []

    def client(mine: list[tuple[float, int, float]]) -> None:
        while True:
            t0 = time.monotonic()
            if t0 >= window_end:
                return
            try:
                status = one_request(port, payload)
            except OSError as exc:
                errors.append(repr(exc))
                status = 0
                if len(errors) > 100:
                    return
            t1 = time.monotonic()
            mine.append((t1, status, t1 - t0))

    threads = [threading.Thread(target=client, args=(r,), daemon=True) for r in records]
    for t in threads:
        t.start()
    time.sleep(max(0.0, window_start - time.monotonic()))
    cpu0 = (self_cpu(), cpu_seconds(server_pids), cpu_seconds([zeo_pid]))
    cs0 = context_switches(server_pids)
    time.sleep(max(0.0, window_end - time.monotonic()))
    cpu1 = (self_cpu(), cpu_seconds(server_pids), cpu_seconds([zeo_pid]))
    cs1 = context_switches(server_pids)
    for t in threads:
        t.join(timeout=30)
    every = [r for mine in records for r in mine]
    window = [r for r in every if window_start <= r[0] < window_end]
    ok = [r for r in window if 200 <= r[1] < 300]
    latencies = sorted(r[2] for r in window) or [0.0]
    return {
        "route": route,
        "rps": len(ok) / seconds,
        "ok": len(ok),
        "other": len(window) - len(ok),
        "total_2xx": sum(1 for r in every if 200 <= r[1] < 300),
        "total_other": sum(1 for r in every if not 200 <= r[1] < 300),
        "errors": errors[:5],
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "cpu_client_s": cpu1[0] - cpu0[0],
        "cpu_gunicorn_s": cpu1[1] - cpu0[1],
        "cpu_zeo_s": cpu1[2] - cpu0[2],
        # Per request served in the window: how often gunicorn's threads were
        # switched out, and how often against their will (no core free).
        "switches_gunicorn": (cs1[0] - cs0[0]) / max(1, len(window)),
        "involuntary_gunicorn": (cs1[1] - cs0[1]) / max(1, len(window)),
        "window_s": seconds,
    }


def read_counter(db: Any) -> int:
    """The counter once it has settled: a ZEO client hears of other clients'
    commits asynchronously, so read until two reads 0.2 s apart agree."""
    deadline = time.monotonic() + 5
    last = None
    while True:
        with db.transaction() as conn:
            value = int(conn.root()["counter"]())
        if value == last or time.monotonic() > deadline:
            return value
        last = value
        time.sleep(0.2)


def storage_floor(db: Any, seconds: float) -> dict[str, float]:
    """What one process gets from this ZEO server with no web layer: the same
    increment and read, in a loop, for *seconds* each."""
    out = {}
    for route in ("inc", "read"):
        keys = [f"key{i * 7919 % TREE_SIZE:07d}" for i in range(4096)]
        n = 0
        c0, t0 = self_cpu(), time.perf_counter()
        end = t0 + seconds
        while time.perf_counter() < end:
            conn = db.open()
            try:
                with conn.transaction_manager as txn:
                    root = conn.root()
                    if route == "inc":
                        root["counter"].change(1)
                    else:
                        root["tree"][keys[n % 4096]]
                    txn.note(f"storage floor {route}")
            finally:
                conn.close()
            n += 1
        elapsed = time.perf_counter() - t0
        out[f"{route}_per_s"] = n / elapsed
        out[f"{route}_cpu_per_request_ms"] = (self_cpu() - c0) / n * 1000
        if route == "inc":
            out["inc_requests"] = n
    return out


def run_w4(settings: Any, workdir: Path) -> dict[str, Any]:
    """Start the ZEO server and one gunicorn per worker count, then run the
    rounds: every round loads each server in turn (1, 2, 4 workers; POST
    /inc then GET /read), so that drift of the machine hits all alike; each
    figure is the median of the rounds."""
    workdir.mkdir(parents=True, exist_ok=True)
    zeo_port = free_port()
    zeo_log = open(workdir / "zeo.log", "wb")  # noqa: SIM115 - closed below
    zeo = subprocess.Popen(
        [sys.executable, "-m", "ZEO.runzeo", "-a", f"{HOST}:{zeo_port}",
         "-f", str(workdir / "zeo.fs")],
        stdout=zeo_log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    result: dict[str, Any] = {
        "clients": settings.w4_clients,
        "seconds": settings.w4_seconds,
        "warmup_seconds": settings.w4_warmup_seconds,
        "rounds": settings.w4_rounds,
        "zeo": f"runzeo on {HOST}:{zeo_port}, FileStorage",
        "samples": [],
    }
    db = None
    servers: list[tuple[int, subprocess.Popen[bytes], int, Any]] = []
    try:
        wait_for_port(zeo_port, zeo, 30)
        db = ZEO.DB((HOST, zeo_port), wait_timeout=30)
        with db.transaction() as conn:
            conn.root()["tree"] = tree = OOBTree()
            for i in range(TREE_SIZE):
                tree[f"key{i:07d}"] = i
            conn.root()["counter"] = Length()
        start_value = read_counter(db)
        result["storage_floor"] = floor = storage_floor(db, settings.w4_warmup_seconds * 2)
        for workers in settings.w4_workers:
            servers.append((workers, *_start_gunicorn(workdir, zeo_port, workers)))
        for _round in range(settings.w4_rounds):
            for workers, server, port, _log in servers:
                pids = [server.pid, *children(server.pid)]
                for route in ("inc", "read"):
                    before = read_counter(db)
                    run = generate_load(
                        port, route, settings.w4_clients, settings.w4_warmup_seconds,
                        settings.w4_seconds, pids, zeo.pid,
                    )  # fmt: skip
                    after = read_counter(db)
                    run["workers"] = workers
                    run["counter_delta"] = after - before
                    run["accounted"] = after - before == (run["total_2xx"] if route == "inc" else 0)
                    result["samples"].append(run)
        for _workers, server, _port, log in servers:
            stop(server)
            log.close()
        servers.clear()
        # The whole account, read by a client that did not exist until now.
        fresh = ZEO.DB((HOST, zeo_port), wait_timeout=30)
        try:
            final = read_counter(fresh)
        finally:
            fresh.close()
        served = sum(r["total_2xx"] for r in result["samples"] if r["route"] == "inc")
        result["final_counter"] = final
        result["increments_2xx"] = served
        result["accounted"] = final - start_value - floor["inc_requests"] == served
        result["runs"] = _medians(result["samples"], settings.w4_workers)
    finally:
        for _workers, server, _port, log in servers:
            stop(server)
            log.close()
        if db is not None:
            db.close()
        stop(zeo)
        zeo_log.close()
    return result


def _medians(samples: list[dict[str, Any]], worker_counts: tuple[int, ...]) -> list[dict[str, Any]]:
    out = []
    for route in ("inc", "read"):
        for workers in worker_counts:
            mine = [r for r in samples if r["route"] == route and r["workers"] == workers]
            row: dict[str, Any] = {"route": route, "workers": workers}
            for key in ("rps", "ok", "other", "p50_ms", "p99_ms", "cpu_client_s",
                        "cpu_gunicorn_s", "cpu_zeo_s", "switches_gunicorn",
                        "involuntary_gunicorn"):  # fmt: skip
                row[key] = statistics.median(r[key] for r in mine)
            row["rps_rounds"] = [round(r["rps"]) for r in mine]
            row["total_2xx"] = sum(r["total_2xx"] for r in mine)
            row["counter_delta"] = sum(r["counter_delta"] for r in mine)
            row["accounted"] = all(r["accounted"] for r in mine)
            out.append(row)
    return out


def _start_gunicorn(
    workdir: Path, zeo_port: int, workers: int
) -> tuple[subprocess.Popen[bytes], int, Any]:
    port = free_port()
    env = dict(os.environ, BENCH_ZODB_URI=f"zeo://{HOST}:{zeo_port}",
               BENCH_TREE_SIZE=str(TREE_SIZE))  # fmt: skip
    log = open(workdir / f"gunicorn-{workers}.log", "wb")  # noqa: SIM115 - closed by the caller
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--workers", str(workers), "--worker-class", "sync",
         "--bind", f"{HOST}:{port}", "--chdir", str(HERE), "--log-level", "warning",
         "w4_app:app"],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    try:
        wait_for_port(port, server, 60)
        deadline = time.monotonic() + 30
        while len(children(server.pid)) < workers and time.monotonic() < deadline:
            time.sleep(0.05)
    except BaseException:
        stop(server)
        log.close()
        raise
    return server, port, log
