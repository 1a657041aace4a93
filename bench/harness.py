"""What the HTTP benchmarks share: a demo server of their own on loopback, an echo server (the
floor under any endpoint), a keep-alive JSON client, percentiles, and the machine description
stored with every result file."""

from __future__ import annotations

import http.client
import http.server
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import redis

from local_redis import free_port

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def package_versions(names: Sequence[str]) -> dict[str, str]:
    """The installed version of each package a result depends on ("not installed" for a missing one)."""
    versions = {}
    for name in names:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def machine(client: redis.Redis | None = None) -> dict[str, Any]:
    """What ran a benchmark. The load average says whether other work competed for the cores:
    figures are comparable only when it is well under the core count. With a client, the Redis
    and module versions too."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    info = {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "python": platform.python_version(),
        "os": platform.platform(),
        "numpy": np.__version__,
        "redis_py": redis.__version__,
        "load_average_1min_at_start": round(os.getloadavg()[0], 2),
    }
    if client is not None:
        info["redis_version"] = client.info("server")["redis_version"]
        for module in client.execute_command("MODULE", "LIST"):
            fields = module if isinstance(module, dict) else dict(zip(module[::2], module[1::2], strict=True))
            version = int(fields[b"ver"])
            info[f"module_{fields[b'name'].decode()}"] = f"{version // 10000}.{version // 100 % 100}.{version % 100}"
    return info


def percentiles(values_ms: Sequence[float] | np.ndarray) -> dict[str, float]:
    if len(values_ms) == 0:
        return {"p50_ms": 0.0, "p95_ms": 0.0, "p99_ms": 0.0}
    p50, p95, p99 = np.percentile(values_ms, [50, 95, 99])
    return {"p50_ms": round(float(p50), 3), "p95_ms": round(float(p95), 3), "p99_ms": round(float(p99), 3)}


def rss_mb(pid: int | str = "self") -> float:
    """Resident memory of a process, from the kernel: what a model or a server really costs."""
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"VmRSS:\s+(\d+) kB", status)
    if found is None:
        raise RuntimeError(f"/proc/{pid}/status has no VmRSS line")
    return int(found.group(1)) / 1024


def write_result(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


def check_loopback(url: str) -> None:
    if urlsplit(url).hostname not in LOOPBACK_HOSTS:
        raise SystemExit(f"refusing to send load to {url}: benchmarks only target this machine (127.0.0.1)")


class JsonClient:
    """One keep-alive connection, like a browser tab: (status, JSON body, ms) per call."""

    def __init__(self, base_url: str, timeout_s: float = 30) -> None:
        check_loopback(base_url)
        parts = urlsplit(base_url)
        assert parts.hostname is not None  # check_loopback passed
        self._address = (parts.hostname, parts.port)
        self._timeout = timeout_s
        self._conn = http.client.HTTPConnection(*self._address, timeout=timeout_s)

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict, float]:
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        started = time.perf_counter()
        try:
            self._conn.request(method, path, body=payload, headers=headers)
            response = self._conn.getresponse()
            data = response.read()
            status, parsed = response.status, json.loads(data) if data else {}
        except (OSError, http.client.HTTPException, ValueError) as exc:
            self._conn.close()
            self._conn = http.client.HTTPConnection(*self._address, timeout=self._timeout)
            status, parsed = 0, {"error": f"{type(exc).__name__}: {exc}"}
        return status, parsed, (time.perf_counter() - started) * 1000

    def close(self) -> None:
        self._conn.close()


@dataclass
class DemoProcess:
    """A `demo_server.py` subprocess and what its start-up said about itself."""

    process: subprocess.Popen
    url: str
    seconds_to_listening: float
    startup_phases: dict[str, float] = field(default_factory=dict)

    def rss_mb(self) -> float:
        return rss_mb(self.process.pid)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=15)


def start_demo_server(redis_url: str, extra_args: Sequence[str] = (), log_path: Path | None = None) -> DemoProcess:
    """Start the demo as a user would (a fresh Python process) and time it to 'listening on'.

    With log_path, the server logs to that file rather than to a pipe this process drains: a
    benchmark whose own threads are busy could drain it late and stall the server's log writes."""
    port = free_port()
    started = time.perf_counter()
    log_file = open(log_path, "w") if log_path is not None else None  # noqa: SIM115 (the server's for its lifetime)
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "demo_server.py"), "--port", str(port), "--redis-url", redis_url,
         "--index-name", "bench:idx", "--key-prefix", "bench:product:", *extra_args],
        stdout=subprocess.DEVNULL, stderr=log_file or subprocess.PIPE, text=True,
    )  # fmt: skip
    if log_path is not None:
        return DemoProcess(process, f"http://127.0.0.1:{port}", wait_for_line(process, log_path, "listening on"))
    phases: dict[str, float] = {}
    assert process.stderr is not None  # stderr=PIPE
    for line in process.stderr:
        if "ready in" in line:
            phases = {name: float(sec) for name, sec in re.findall(r"(\w+) ([\d.]+)s", line.split("ready in", 1)[1])}
        if "listening on" in line:
            seconds = time.perf_counter() - started
            threading.Thread(target=process.stderr.read, daemon=True).start()  # keep the pipe drained
            return DemoProcess(process, f"http://127.0.0.1:{port}", seconds, phases)
    raise RuntimeError(f"the demo server did not start (exit code {process.wait()})")


def export_tree(ref: str, into: Path) -> str:
    """The tree of git ref `ref` of this repository in `into` (a baseline's checkout); its commit."""
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", ref], check=True, capture_output=True, text=True)
    archive = subprocess.Popen(["git", "-C", str(ROOT), "archive", ref], stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(into)], stdin=archive.stdout, check=True)
    archive.wait()
    return commit.stdout.strip()


def start_checkout_server(root: Path, redis_url: str, extra_args: Sequence[str] = ()) -> DemoProcess:
    """demo_server.py of the checkout in `root` (this one, or an export_tree of a baseline) on a
    free port, as a user starts it there, with its own catalog.json."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(root / "demo_server.py"), "--port", str(port), "--redis-url", redis_url, *extra_args],
        cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stderr is not None
    for line in process.stderr:
        if "listening on" in line:
            threading.Thread(target=process.stderr.read, daemon=True).start()  # keep the pipe drained
            return DemoProcess(process, f"http://127.0.0.1:{port}", 0.0)
    raise RuntimeError(f"the demo server in {root} did not start (exit code {process.wait()})")


def wait_for_line(process: subprocess.Popen, log_path: Path, marker: str, timeout_s: float = 300.0) -> float:
    """Seconds until `marker` appears in the process' log file."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        if marker in log_path.read_text(errors="replace"):
            return time.perf_counter() - started
        if process.poll() is not None:
            raise RuntimeError(f"the server did not start (exit code {process.returncode}); see {log_path}")
        time.sleep(0.05)
    raise RuntimeError(f"the server did not start within {timeout_s} s; see {log_path}")


class EchoHandler(http.server.BaseHTTPRequestHandler):
    """The least an HTTP endpoint on Python's stdlib server can do: read the request body and
    send it back, over the same machinery the demo server uses (ThreadingHTTPServer, HTTP/1.1
    keep-alive, Nagle off). Timing it gives the floor under every endpoint's latency."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: a benchmark's thousands of requests are not worth a log line each."""


def serve_echo(port: int) -> None:
    """Run the echo server until killed (in a process of its own, like the demo server, so
    that it does not share the benchmark's interpreter lock)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), EchoHandler)
    server.daemon_threads = True
    print(f"listening on http://127.0.0.1:{port}", file=sys.stderr, flush=True)
    server.serve_forever()


def start_echo_server() -> DemoProcess:
    port = free_port()
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-c", "import sys; from bench.harness import serve_echo; serve_echo(int(sys.argv[1]))", str(port)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stderr is not None  # stderr=PIPE
    line = process.stderr.readline()
    if "listening on" not in line:
        raise RuntimeError(f"the echo server did not start (exit code {process.poll()}): {line.strip()}")
    threading.Thread(target=process.stderr.read, daemon=True).start()
    return DemoProcess(process, f"http://127.0.0.1:{port}", time.perf_counter() - started)
