"""REST API benchmark: get, list and create sessions against a running all-in-one server.

A script that prints figures, never a pass/fail test. Progress goes to stderr, figures to
stdout (one JSON document instead with ``--json``). ``bench/README.md`` explains each figure.

What it does
------------
1. Starts ``python -m lucid_sessions serve`` (all five components in one process, the
   embedded SQLite store, one uvicorn worker) on a free loopback port with a fresh data
   directory, and a **baseline**: a bare FastAPI app with one trivial ``GET /ping``,
   served by uvicorn with the settings ``cluster/assembly.py`` uses for the API (one
   worker, log level warning, lifespan off, run inside ``asyncio.run``, so the same loop
   and HTTP implementation), each as its own process group.
2. Seeds the server with ``--sessions`` sessions created through the API (untimed): a mix
   of rdp (with a password), x11 and ingest sources, projects, environments, tags and
   metadata, as an operator's store would hold. Then checks, untimed, that every route
   it will measure answers as it should (200/201, the right session, no password).
3. Measures, with the load generated from another process, ``--rounds`` rounds of
   ``--seconds`` each, the scenarios alternating inside a round so drift on a shared
   machine hits all of them: first the reads (baseline, **get session** rotating over
   every seeded id, **list sessions** with ``?limit=50``), then the writes (baseline,
   **create session**), so reads always see the seeded store. Each phase ends with one
   short run per scenario on a single connection: the service time without queueing.
4. Stops every process it started (process groups, SIGTERM then SIGKILL) and removes the
   temporary directory, also on errors, Ctrl-C and SIGTERM.

The load generator is ``wrk`` when it is on ``PATH`` (one thread, ``--connections``
connections, a small Lua script for the POST body, the rotating ids and the percentiles).
Without it, a fallback of two processes running an asyncio httpx client; that client is
slower than wrk and shares the two cores with the server, so its figures are lower
bounds. Latency is measured by a closed-loop client at saturation: each connection sends
its next request when the previous answer arrives, so p50 is roughly connections / rate.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import platform
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from importlib.util import find_spec
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Protocol

from benchlib import Report, cpu_model, version
from lucid_sessions.security.tokens import TokenSettings, mint_token, secret_key

# The served API checks a bearer token, its revocation and the caller's rate budget on
# every request; the benchmark pays all of that with one admin token, under budgets set
# high enough that none is exhausted (the check itself still runs).
# One secret per run, shared through the environment with the load generator's processes
# (spawned children import this module afresh).
JWT_SECRET = os.environ.setdefault("LUCID_BENCH_JWT_SECRET", os.urandom(32).hex())
AUTH = {
    "Authorization": "Bearer "
    + mint_token(
        secret_key(JWT_SECRET.encode(), origin="bench"),
        subject="bench",
        role="admin",
        ttl_s=24 * 3600,
        settings=TokenSettings(),
    )[0]
}
BENCH_LIMITS = "creation=10000000,status=10000000,chunks=10000000,bulk=10000000"

LOOPBACK = "127.0.0.1"
API = "/api/v1"
UVICORN_SETTINGS: dict[str, Any] = {"log_level": "warning", "lifespan": "off"}
"""What ``cluster/assembly.py`` passes to ``uvicorn.Config`` besides host and port."""
READY_TIMEOUT_S = 60.0
STOP_GRACE_S = 10.0
WARMUP_S = 2.0
CLIENT_PROCESSES = 2  # the httpx fallback's processes
CLIENT_START_S = 3.0  # time the fallback's processes get to import httpx before the clock
CREATE_BODY = {
    "name": "bench",
    "source": "ingest",
    "recording_config": {"fps": 5, "width": 640, "height": 480},
}
TARGET_CREATE_P99_MS = 20.0
TARGET_GET_RPS = 5000.0
TARGET_GET_P99_MS = 20.0
SEED_RPS = 1000.0  # the seed's own ask: 1,000 requests/s ...
SEED_P99_MS = 200.0  # ... answered in under 200 ms


# -- machine facts and CPU accounting --------------------------------------------------------

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def wrk_version(wrk: str | None) -> str:
    if wrk is None:
        return "not installed"
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        out = subprocess.run([wrk, "-v"], capture_output=True, text=True, timeout=10)
        first = (out.stdout or out.stderr).strip().splitlines()
        if first:
            return first[0].split(" Copyright")[0]
    return "unknown"


def machine_facts(wrk: str | None) -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": cpu_model(),
        "platform": platform.platform(),
        "python": sys.version.split()[0] + f" ({platform.python_implementation()})",
        "lucid_sessions": version("lucid-sessions"),
        "uvicorn": version("uvicorn"),
        "fastapi": version("fastapi"),
        "starlette": version("starlette"),
        "pydantic": version("pydantic"),
        "http implementation": "httptools" if find_spec("httptools") else "h11",
        "event loop": "asyncio (asyncio.run; uvloop is not used this way)",
        "uvloop": version("uvloop"),
        "wrk": wrk_version(wrk),
    }


def load_average() -> list[float] | None:
    return [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None


def pid_cpu_s(pid: int) -> float | None:
    """CPU seconds another process has used so far (all its threads), if readable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def machine_cpu_s() -> tuple[float, float] | None:
    """CPU seconds so far of every process on the machine (all CPUs' non-idle time, steal
    excluded) and CPU seconds the hypervisor stole, if readable."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    # "cpu  user nice system idle iowait irq softirq steal"
    busy = sum(values) - values[3] - values[4] - values[7]
    return busy / _CLK_TCK, values[7] / _CLK_TCK


def children_cpu_s() -> float:
    """CPU seconds of this process's reaped children (the load generator once it exits)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Meter:
    """CPU counters at the edges of one run's measured window.

    The load generator calls :meth:`start` when its clock starts and :meth:`stop` when it
    ends, so process start-up (the fallback's imports) is not counted.
    """

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self._start: tuple[float, float | None, tuple[float, float] | None] | None = None
        self.wall_s = 0.0
        self.server_s: float | None = None
        self.machine_s: float | None = None
        self.steal_s: float | None = None

    def _sample(self) -> tuple[float, float | None, tuple[float, float] | None]:
        return time.monotonic(), pid_cpu_s(self.server_pid), machine_cpu_s()

    def start(self) -> None:
        self._start = self._sample()

    def stop(self) -> None:
        if self._start is None:
            raise RuntimeError("Meter.stop before Meter.start")
        (t0, server0, machine0), (t1, server1, machine1) = self._start, self._sample()
        self.wall_s = t1 - t0
        if server0 is not None and server1 is not None:
            self.server_s = server1 - server0
        if machine0 is not None and machine1 is not None:
            self.machine_s = machine1[0] - machine0[0]
            self.steal_s = machine1[1] - machine0[1]


# -- servers ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def request(
    port: int, method: str, path: str, body: Any = None, *, timeout: float = 10.0
) -> tuple[int, Any]:
    """One request on a fresh connection; the status and the decoded JSON answer."""
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        payload = None if body is None else json.dumps(body)
        headers = {**AUTH, **({} if body is None else {"Content-Type": "application/json"})}
        conn.request(method, path, body=payload, headers=headers)
        response = conn.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw else None
    finally:
        conn.close()


class ServerProcess:
    """A server in its own process group, its output in a log file."""

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                list(argv),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def tail(self, lines: int = 8) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").strip().splitlines()[-lines:])
        return ""

    def wait_ready(self, port: int, path: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            with contextlib.suppress(OSError, http.client.HTTPException, ValueError):
                if request(port, "GET", path, timeout=2.0)[0] == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not come up on port {port}:\n{self.tail()}")

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL what is left after the grace time, reap."""
        for sig, wait_s in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=wait_s)
                if sig == signal.SIGTERM:
                    # the leader is gone; anything it left in its group goes too
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(self.proc.pid, signal.SIGKILL)
                return


def serve_baseline(port: int) -> None:
    """The baseline server (run by this script in a child): one trivial FastAPI route."""
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/ping")
    async def ping() -> dict[str, bool]:
        return {"ok": True}

    config = uvicorn.Config(app, host=LOOPBACK, port=port, **UVICORN_SETTINGS)
    asyncio.run(uvicorn.Server(config).serve())


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any LUCID_* setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUCID_")}
    env.update(extra)
    return env


# -- seeding ---------------------------------------------------------------------------------

_PROJECTS = ("payments", "identity", "warehouse", "support", "research")
_ENVIRONMENTS = ("prod", "staging", "dev")
_TAGS = ("audit", "incident", "change", "vendor", "break-glass", "training", "sox", "pci")
_PEOPLE = ("a.moreau", "j.singh", "k.tanaka", "m.okafor", "s.larsen")


def seed_body(rng: random.Random, i: int) -> dict[str, Any]:
    """A plausible session: mostly rdp with a password, some x11 and ingest."""
    source = rng.choice(("rdp", "rdp", "x11", "ingest"))
    width, height = rng.choice(((1920, 1080), (1280, 720), (2560, 1440)))
    body: dict[str, Any] = {
        "name": f"{rng.choice(_PROJECTS)} maintenance window {i}",
        "project": rng.choice(_PROJECTS),
        "environment": rng.choice(_ENVIRONMENTS),
        "tags": rng.sample(_TAGS, rng.randint(0, 3)),
        "source": source,
        "recording_config": {
            "fps": rng.choice((5, 10, 15)),
            "width": width,
            "height": height,
            "quality": rng.choice(("low", "medium", "high")),
        },
        "metadata": {"ticket": f"OPS-{rng.randint(1000, 9999)}", "requested_by": _PEOPLE[i % 5]},
    }
    if source == "rdp":
        body["rdp_config"] = {
            "host": f"win-{rng.randint(1, 40):02d}.corp.example",
            "username": "svc-recorder",
            "password": "correct horse battery staple",
            "domain": "CORP",
        }
    elif source == "x11":
        body["x11_config"] = {"display": f":{rng.randint(10, 99)}"}
    return body


def seed(port: int, count: int) -> list[str]:
    """Create ``count`` sessions through the API on one keep-alive connection; their ids."""
    rng = random.Random(20240501)
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=30)
    ids: list[str] = []
    try:
        for i in range(count):
            conn.request(
                "POST",
                f"{API}/sessions",
                body=json.dumps(seed_body(rng, i)),
                headers={**AUTH, "Content-Type": "application/json"},
            )
            response = conn.getresponse()
            answer = json.loads(response.read())
            if response.status != 201:
                raise RuntimeError(f"seeding: create answered {response.status}: {answer}")
            ids.append(answer["session_id"])
    finally:
        conn.close()
    return ids


def check_routes(port: int, baseline_port: int, ids: Sequence[str]) -> None:
    """Untimed: every measured route answers as it should."""
    status, body = request(port, "GET", f"{API}/sessions/{ids[-1]}")
    if status != 200 or body.get("session_id") != ids[-1]:
        raise RuntimeError(f"get session answered {status}: {body}")
    if "password" in json.dumps(body):
        raise RuntimeError("get session shows a password")
    status, body = request(port, "GET", f"{API}/sessions?limit=50")
    if status != 200 or len(body.get("items", ())) != min(50, len(ids)):
        raise RuntimeError(f"list sessions answered {status} with {len(body.get('items', ()))}")
    status, created = request(port, "POST", f"{API}/sessions", CREATE_BODY)
    if status != 201:
        raise RuntimeError(f"create session answered {status}: {created}")
    status, body = request(baseline_port, "GET", "/ping")
    if status != 200 or body != {"ok": True}:
        raise RuntimeError(f"baseline answered {status}: {body}")


# -- load generators -------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    key: str
    label: str
    method: str
    paths: tuple[str, ...]
    """Requested in turn, one after another per connection."""
    body: str | None = None
    baseline: bool = False


@dataclass
class Load:
    """What the load generator saw in one run."""

    requests: int
    duration_s: float
    p50_us: float
    p99_us: float
    mean_us: float
    max_us: float
    socket_errors: int
    bad_status: int
    """Answers outside 2xx/3xx."""
    cpu_s: float | None = None
    """The load generator's own CPU seconds in the window, when it reports them."""


class LoadGenerator(Protocol):
    name: str

    def run(
        self, port: int, scenario: Scenario, connections: int, seconds: float, meter: Meter
    ) -> Load:
        """Load ``scenario`` for ``seconds``; ``meter`` started and stopped around the load."""
        ...


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH %d %d %.1f %.1f %.1f %.1f %d %d %d %d %d\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.mean, latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


class Wrk:
    """wrk with one thread and a Lua script: method, body, rotating paths, percentiles."""

    def __init__(self, path: str, workdir: Path) -> None:
        self.path = path
        self.workdir = workdir
        self.name = "wrk"

    def script(self, scenario: Scenario) -> Path:
        lines = [f"wrk.method = {_lua_string(scenario.method)}"]
        lines.append(f'wrk.headers["Authorization"] = {_lua_string(AUTH["Authorization"])}')
        if scenario.body is not None:
            lines.append(f"wrk.body = {_lua_string(scenario.body)}")
            lines.append('wrk.headers["Content-Type"] = "application/json"')
        if len(scenario.paths) > 1:
            lines.append("local paths = {" + ", ".join(map(_lua_string, scenario.paths)) + "}")
            lines.append("local count, i = #paths, 0")
            lines.append("request = function()")
            lines.append("  i = i % count + 1")
            lines.append("  return wrk.format(nil, paths[i])")
            lines.append("end")
        path = self.workdir / f"wrk-{scenario.key}.lua"
        path.write_text("\n".join(lines) + "\n" + _DONE)
        return path

    def run(
        self, port: int, scenario: Scenario, connections: int, seconds: float, meter: Meter
    ) -> Load:
        argv = [
            self.path,
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "-s",
            str(self.script(scenario)),
            f"http://{LOOPBACK}:{port}{scenario.paths[0]}",
        ]
        kids0 = children_cpu_s()
        meter.start()
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        try:
            out, _ = proc.communicate(timeout=seconds + 30)
            meter.stop()
        finally:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        found = [line.split()[1:] for line in out.splitlines() if line.startswith("BENCH ")]
        if proc.returncode != 0 or not found:
            raise RuntimeError(f"wrk failed ({proc.returncode}): {out.strip()[-500:]}")
        n, dur, p50, p99, mean, top, connect, read, write, status, timeout = found[0]
        return Load(
            requests=int(n),
            duration_s=int(dur) / 1e6,
            p50_us=float(p50),
            p99_us=float(p99),
            mean_us=float(mean),
            max_us=float(top),
            socket_errors=int(connect) + int(read) + int(write) + int(timeout),
            bad_status=int(status),
            cpu_s=children_cpu_s() - kids0,
        )


async def _client_load(
    port: int, scenario: Scenario, connections: int, seconds: float, start_at: float
) -> dict[str, Any]:
    import httpx

    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    headers = {**AUTH, **({"Content-Type": "application/json"} if scenario.body else {})}
    content = None if scenario.body is None else scenario.body.encode()
    latencies: list[float] = []
    errors = {"socket": 0, "status": 0}
    base = f"http://{LOOPBACK}:{port}"
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=10.0) as client:
        await asyncio.sleep(max(0.0, start_at - time.time()))
        cpu0 = time.process_time()
        started = time.perf_counter()
        deadline = started + seconds

        async def user(k: int) -> None:
            i = k
            while time.perf_counter() < deadline:
                path = scenario.paths[i % len(scenario.paths)]
                i += connections
                sent = time.perf_counter()
                try:
                    response = await client.request(
                        scenario.method, path, content=content, headers=headers
                    )
                except httpx.TransportError:
                    errors["socket"] += 1
                    continue
                latencies.append((time.perf_counter() - sent) * 1e6)
                if not 200 <= response.status_code < 400:
                    errors["status"] += 1

        await asyncio.gather(*(user(k) for k in range(connections)))
        duration = time.perf_counter() - started
        cpu = time.process_time() - cpu0
    return {"latencies_us": latencies, "duration_s": duration, "errors": errors, "cpu_s": cpu}


def _client_process(
    port: int, scenario: Scenario, connections: int, seconds: float, start_at: float
) -> dict[str, Any]:
    return asyncio.run(_client_load(port, scenario, connections, seconds, start_at))


def _percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of sorted values (0 when empty)."""
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


class HttpxClients:
    """The fallback: ``CLIENT_PROCESSES`` processes, each an asyncio httpx client."""

    def __init__(self) -> None:
        self.name = f"httpx fallback ({CLIENT_PROCESSES} processes, asyncio)"

    def run(
        self, port: int, scenario: Scenario, connections: int, seconds: float, meter: Meter
    ) -> Load:
        procs = min(CLIENT_PROCESSES, connections)
        shares = [
            connections // procs + (1 if j < connections % procs else 0) for j in range(procs)
        ]
        start_at = time.time() + CLIENT_START_S
        with ProcessPoolExecutor(max_workers=procs, mp_context=get_context("spawn")) as pool:
            futures = [
                pool.submit(_client_process, port, scenario, share, seconds, start_at)
                for share in shares
            ]
            time.sleep(max(0.0, start_at - time.time()))
            meter.start()
            time.sleep(seconds)
            meter.stop()
            results = [f.result(timeout=seconds + CLIENT_START_S + 60) for f in futures]
        latencies = sorted(v for r in results for v in r["latencies_us"])
        return Load(
            requests=len(latencies),
            duration_s=max(r["duration_s"] for r in results),
            p50_us=_percentile(latencies, 50),
            p99_us=_percentile(latencies, 99),
            mean_us=statistics.fmean(latencies) if latencies else 0.0,
            max_us=latencies[-1] if latencies else 0.0,
            socket_errors=sum(r["errors"]["socket"] for r in results),
            bad_status=sum(r["errors"]["status"] for r in results),
            cpu_s=sum(r["cpu_s"] for r in results),
        )


# -- one measured run ------------------------------------------------------------------------


@dataclass
class Run:
    scenario: str
    phase: str
    """``reads`` or ``writes``."""
    round: int
    """1.. within its phase; 0 for the single-connection run."""
    connections: int
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    socket_errors: int
    bad_status: int
    server_cpu_pct: float | None
    """CPU of the measured server's process, % of one core."""
    server_cpu_us_per_request: float | None
    loadgen_cpu_pct: float | None
    other_cpu_pct: float | None
    """Every other process on the machine meanwhile, % of one core."""
    steal_pct: float | None
    """CPU time the hypervisor gave to other guests meanwhile, % of one core."""
    stored_sessions: int | None = None


def measure(
    gen: LoadGenerator,
    port: int,
    server_pid: int,
    scenario: Scenario,
    *,
    connections: int,
    seconds: float,
    phase: str,
    round_no: int,
) -> Run:
    meter = Meter(server_pid)
    load = gen.run(port, scenario, connections, seconds, meter)
    wall, server, kids = meter.wall_s or 1e-9, meter.server_s, load.cpu_s
    other = None
    if meter.machine_s is not None and server is not None and kids is not None:
        other = max(0.0, meter.machine_s - server - kids)

    def pct(value: float | None) -> float | None:
        return None if value is None else round(100 * value / wall, 1)

    rps = load.requests / load.duration_s if load.duration_s > 0 else 0.0
    return Run(
        scenario=scenario.key,
        phase=phase,
        round=round_no,
        connections=connections,
        requests=load.requests,
        seconds=round(load.duration_s, 2),
        rps=round(rps, 1),
        p50_ms=round(load.p50_us / 1000, 2),
        p99_ms=round(load.p99_us / 1000, 2),
        mean_ms=round(load.mean_us / 1000, 2),
        max_ms=round(load.max_us / 1000, 2),
        socket_errors=load.socket_errors,
        bad_status=load.bad_status,
        server_cpu_pct=pct(server),
        server_cpu_us_per_request=(
            None if server is None or not load.requests else round(1e6 * server / load.requests)
        ),
        loadgen_cpu_pct=pct(kids),
        other_cpu_pct=pct(other),
        steal_pct=pct(meter.steal_s),
    )


@dataclass
class Summary:
    """A scenario's runs at full load: medians over the rounds."""

    scenario: str
    label: str
    rounds: int
    rps: float
    rps_min: float
    rps_max: float
    p50_ms: float
    p99_ms: float
    server_cpu_us_per_request: float | None
    errors: int
    stored_sessions: list[int] = field(default_factory=list)

    @classmethod
    def of(cls, scenario: Scenario, runs: Sequence[Run]) -> Summary:
        cpu = [r.server_cpu_us_per_request for r in runs if r.server_cpu_us_per_request]
        return cls(
            scenario=scenario.key,
            label=scenario.label,
            rounds=len(runs),
            rps=round(statistics.median(r.rps for r in runs), 1),
            rps_min=min(r.rps for r in runs),
            rps_max=max(r.rps for r in runs),
            p50_ms=round(statistics.median(r.p50_ms for r in runs), 2),
            p99_ms=round(statistics.median(r.p99_ms for r in runs), 2),
            server_cpu_us_per_request=round(statistics.median(cpu)) if cpu else None,
            errors=sum(r.socket_errors + r.bad_status for r in runs),
            stored_sessions=[r.stored_sessions for r in runs if r.stored_sessions is not None],
        )


# -- printing --------------------------------------------------------------------------------


def _n(value: float | None, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


def print_summaries(
    report: Report, rows: Sequence[Summary], base: Summary, *, spread: bool = True
) -> None:
    report.line(
        f"  {'scenario':32s} {'req/s':>7s} {'(min-max)' if spread else '':>15s} "
        f"{'p50 ms':>7s} {'p99 ms':>7s} {'CPU us/req':>10s} {'req/s vs base':>13s} "
        f"{'p99 vs base':>11s} {'errors':>6s}"
    )
    for s in rows:
        ratio = s.rps / base.rps if base.rps else 0.0
        p99_ratio = s.p99_ms / base.p99_ms if base.p99_ms else 0.0
        span = f"({_n(s.rps_min)}-{_n(s.rps_max)})" if spread else ""
        report.line(
            f"  {s.label:32s} {_n(s.rps):>7s} {span:>15s} {s.p50_ms:7.2f} {s.p99_ms:7.2f} "
            f"{_n(s.server_cpu_us_per_request):>10s} {ratio:12.2f}x {p99_ratio:10.1f}x "
            f"{s.errors:6d}"
        )


def print_runs(report: Report, runs: Sequence[Run], labels: dict[str, str]) -> None:
    report.line(
        f"  {'phase':6s} {'round':>5s} {'conns':>5s} {'scenario':32s} {'req/s':>7s} {'p50 ms':>7s} "
        f"{'p99 ms':>7s} {'max ms':>7s} {'server CPU':>10s} {'load gen':>8s} {'others':>7s} "
        f"{'steal':>6s}"
    )
    for r in runs:
        report.line(
            f"  {r.phase:6s} {r.round if r.round else '-':>5} {r.connections:5d} "
            f"{labels[r.scenario]:32s} "
            f"{_n(r.rps):>7s} {r.p50_ms:7.2f} {r.p99_ms:7.2f} {r.max_ms:7.1f} "
            f"{_n(r.server_cpu_pct, '.0f'):>9s}% {_n(r.loadgen_cpu_pct, '.0f'):>7s}% "
            f"{_n(r.other_cpu_pct, '.0f'):>6s}% {_n(r.steal_pct, '.0f'):>5s}%"
        )


def targets(by_key: dict[str, Summary]) -> list[dict[str, Any]]:
    get, create = by_key["get"], by_key["create"]
    rows: list[dict[str, Any]] = [
        {
            "target": f"create session p99 < {TARGET_CREATE_P99_MS:g} ms",
            "measured": f"{create.p99_ms:.1f} ms",
            "met": create.p99_ms < TARGET_CREATE_P99_MS,
        },
        {
            "target": f"get session >= {TARGET_GET_RPS:,.0f} req/s per worker (1 worker)",
            "measured": f"{get.rps:,.0f} req/s ({get.rps / TARGET_GET_RPS:.2f}x the target)",
            "met": get.rps >= TARGET_GET_RPS,
        },
        {
            "target": f"get session p99 < {TARGET_GET_P99_MS:g} ms",
            "measured": f"{get.p99_ms:.1f} ms",
            "met": get.p99_ms < TARGET_GET_P99_MS,
        },
    ]
    for key in ("get", "list", "create"):
        s = by_key[key]
        rows.append(
            {
                "target": f"seed: {s.label} >= {SEED_RPS:,.0f} req/s, p99 < {SEED_P99_MS:g} ms",
                "measured": f"{s.rps:,.0f} req/s, {s.p99_ms:.1f} ms",
                "met": s.rps >= SEED_RPS and s.p99_ms < SEED_P99_MS,
            }
        )
    return rows


# -- the benchmark ---------------------------------------------------------------------------


def scenarios(ids: Sequence[str]) -> list[Scenario]:
    return [
        Scenario("baseline", "baseline: bare FastAPI GET /ping", "GET", ("/ping",), baseline=True),
        Scenario("get", "get session", "GET", tuple(f"{API}/sessions/{i}" for i in ids)),
        Scenario("list", "list sessions (limit 50)", "GET", (f"{API}/sessions?limit=50",)),
        Scenario("create", "create session", "POST", (f"{API}/sessions",), json.dumps(CREATE_BODY)),
    ]


@contextlib.contextmanager
def started(server: ServerProcess) -> Iterator[ServerProcess]:
    try:
        yield server
    finally:
        server.stop()


PHASES = (("reads", ("baseline", "get", "list")), ("writes", ("baseline", "create")))
"""Reads first, then creates: get and list always see the seeded store."""


@dataclass(frozen=True)
class Endpoint:
    """Where a scenario's server listens, and its pid for CPU accounting."""

    port: int
    pid: int


def run_plan(
    report: Report,
    gen: LoadGenerator,
    plan: Sequence[Scenario],
    where: dict[str, Endpoint],
    args: argparse.Namespace,
) -> list[Run]:
    """Every run, in the order they ran: per phase, the rounds, then one connection each."""
    by_key = {s.key: s for s in plan}
    single_s = max(2.0, args.seconds / 2)
    timeline: list[Run] = []
    done_single: set[str] = set()
    for phase, keys in PHASES:
        for round_no in range(1, args.rounds + 1):
            for key in keys:
                scenario, at = by_key[key], where[key]
                if not any(r.scenario == key for r in timeline):
                    report.progress(f"warming up {scenario.label} ({WARMUP_S:g} s)")
                    gen.run(at.port, scenario, args.connections, WARMUP_S, Meter(at.pid))
                report.progress(f"{phase} round {round_no}/{args.rounds}: {scenario.label}")
                stored = None
                if key == "list":
                    stored = int(request(at.port, "GET", f"{API}/sessions?limit=1")[1]["total"])
                run = measure(
                    gen,
                    at.port,
                    at.pid,
                    scenario,
                    connections=args.connections,
                    seconds=args.seconds,
                    phase=phase,
                    round_no=round_no,
                )
                run.stored_sessions = stored
                timeline.append(run)
        for key in keys:
            if key in done_single:
                continue
            done_single.add(key)
            report.progress(f"one connection: {by_key[key].label}")
            at = where[key]
            timeline.append(
                measure(
                    gen,
                    at.port,
                    at.pid,
                    by_key[key],
                    connections=1,
                    seconds=single_s,
                    phase=phase,
                    round_no=0,
                )
            )
    return timeline


def print_results(
    report: Report,
    args: argparse.Namespace,
    plan: Sequence[Scenario],
    timeline: Sequence[Run],
    seeded: int,
) -> None:
    loaded = [r for r in timeline if r.round > 0]
    single = {r.scenario: r for r in timeline if r.round == 0}
    summaries = [Summary.of(s, [r for r in loaded if r.scenario == s.key]) for s in plan]
    by_key = {s.scenario: s for s in summaries}
    report.line()
    report.line(
        f"{args.connections} connections, {args.rounds} round(s) of {args.seconds:g} s "
        f"(the baseline twice as many): medians over the rounds (req/s range in brackets); "
        f"CPU us/req is the server process's CPU time per answered request"
    )
    print_summaries(report, summaries, by_key["baseline"])
    list_sizes = sorted(set(by_key["list"].stored_sessions))
    report.line(
        f"  list ran against {', '.join(f'{n:,}' for n in list_sizes)} stored sessions; "
        f"get rotates over the {seeded:,} seeded ids; creates ran after every read"
    )
    report.line()
    single_s = max(2.0, args.seconds / 2)
    report.line(f"one connection, {single_s:g} s each: the service time without queueing")
    single_rows = [Summary.of(s, [single[s.key]]) for s in plan]
    print_summaries(report, single_rows, single_rows[0], spread=False)
    report.line()
    report.line(
        "every run (CPU as % of one core, 100 % = one core busy; others = every other process "
        "on this machine; steal = CPU the hypervisor gave to other guests)"
    )
    print_runs(report, timeline, {s.key: s.label for s in plan})
    bad = sum(r.socket_errors + r.bad_status for r in timeline)
    if bad:
        report.line(f"WARNING: {bad} requests failed or answered outside 2xx/3xx: see errors")

    rows = targets(by_key)
    report.line()
    report.line(f"targets (figures at {args.connections}-connection saturation)")
    for row in rows:
        verdict = "met" if row["met"] else "NOT met"
        report.line(f"  {row['target']:62s} {row['measured']:34s} {verdict}")
    report.data.update(
        {
            "summary": [asdict(s) for s in summaries],
            "single_connection": [asdict(s) for s in single_rows],
            "runs": [asdict(r) for r in timeline],
            "targets": rows,
        }
    )


def bench(report: Report, args: argparse.Namespace, tmp: Path, gen: LoadGenerator) -> None:
    port, baseline_port = free_port(), free_port()
    serve = [sys.executable, "-m", "lucid_sessions", "serve", "--data-dir", str(tmp / "data")]
    ping = [sys.executable, str(Path(__file__).resolve()), "--serve-baseline", str(baseline_port)]
    with contextlib.ExitStack() as stack:
        report.progress(f"starting lucid-sessions serve on {LOOPBACK}:{port}")
        lucid = stack.enter_context(
            started(
                ServerProcess(
                    "lucid-sessions serve",
                    serve,
                    clean_env(
                        LUCID_API_PORT=str(port),
                        LUCID_API_HOST=LOOPBACK,
                        LUCID_JWT_SECRET=JWT_SECRET,
                        LUCID_RATE_LIMITS=BENCH_LIMITS,
                    ),
                    tmp / "serve.log",
                )
            )
        )
        baseline = stack.enter_context(
            started(ServerProcess("baseline FastAPI app", ping, clean_env(), tmp / "baseline.log"))
        )
        lucid.wait_ready(port, f"{API}/health")
        baseline.wait_ready(baseline_port, "/ping")

        report.progress(f"seeding {args.sessions:,} sessions through the API")
        began = time.monotonic()
        ids = seed(port, args.sessions)
        seeded_s = time.monotonic() - began
        check_routes(port, baseline_port, ids)
        report.data["seed"] = {"sessions": len(ids), "seconds": round(seeded_s, 1)}
        report.line(
            f"server: python -m lucid_sessions serve (all-in-one, SQLite, 1 uvicorn worker), "
            f"pid {lucid.pid}; seeded with {len(ids):,} sessions through the API in "
            f"{seeded_s:.1f} s ({len(ids) / seeded_s:,.0f} creates/s on one connection, untimed)"
        )
        settings = ", ".join(f"{k}={v}" for k, v in UVICORN_SETTINGS.items())
        report.line(
            f"baseline: bare FastAPI GET /ping, uvicorn ({settings}, 1 worker) inside "
            f"asyncio.run, pid {baseline.pid}"
        )
        plan = scenarios(ids)
        ours, base = Endpoint(port, lucid.pid), Endpoint(baseline_port, baseline.pid)
        where = {s.key: base if s.baseline else ours for s in plan}
        timeline = run_plan(report, gen, plan, where, args)
        report.progress("stopping the servers")
    print_results(report, args, plan, timeline, len(ids))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="per measured run (8)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over the scenarios (3)")
    parser.add_argument("--connections", type=int, default=16, help="open connections (16)")
    parser.add_argument("--sessions", type=int, default=1000, help="sessions to seed (1000)")
    parser.add_argument(
        "--load-generator",
        choices=("auto", "wrk", "httpx"),
        default="auto",
        help="wrk when installed (auto), or the httpx fallback",
    )
    parser.add_argument("--tmp-dir", type=Path, default=None, help="where the data dir goes")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.add_argument("--serve-baseline", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    errors = []
    if not 1 <= args.seconds <= 600:
        errors.append("--seconds must be 1..600")
    if not 1 <= args.rounds <= 20:
        errors.append("--rounds must be 1..20")
    if not 1 <= args.connections <= 256:
        errors.append("--connections must be 1..256")
    if not 1 <= args.sessions <= 100_000:
        errors.append("--sessions must be 1..100000")
    if errors:
        parser.error("; ".join(errors))
    return args


def _terminate(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_baseline is not None:
        serve_baseline(args.serve_baseline)
        return 0
    signal.signal(signal.SIGTERM, _terminate)  # stop the servers, remove temp dirs
    report = Report(as_json=args.json)
    wrk = shutil.which("wrk")
    if args.load_generator == "wrk" and wrk is None:
        print("--load-generator wrk: wrk is not on PATH", file=sys.stderr)
        return 2
    facts = machine_facts(wrk)
    report.data["machine"] = facts
    report.data["load_average_start"] = load_average()
    report.line("Lucid Sessions REST API benchmark")
    for name, value in facts.items():
        report.line(f"  {name:20s} {value}")
    report.line(f"  {'load average start':20s} {report.data['load_average_start']}")
    try:
        with tempfile.TemporaryDirectory(prefix="lucid-bench-api-", dir=args.tmp_dir) as name:
            tmp = Path(name)
            gen: LoadGenerator
            if wrk is not None and args.load_generator != "httpx":
                gen = Wrk(wrk, tmp)
            else:
                gen = HttpxClients()
                if args.load_generator == "auto":
                    report.line("wrk is not installed: using the httpx fallback (lower bounds)")
            report.data["settings"] = {
                "seconds": args.seconds,
                "rounds": args.rounds,
                "connections": args.connections,
                "sessions": args.sessions,
                "load_generator": gen.name,
            }
            report.line(
                f"load: {gen.name}, {args.connections} connections, another process; "
                f"{args.rounds} rounds of {args.seconds:g} s per scenario"
            )
            bench(report, args, tmp, gen)
    except KeyboardInterrupt:
        print("interrupted; everything started was stopped", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    report.data["load_average_end"] = load_average()
    report.line()
    report.line(f"load average end: {report.data['load_average_end']}")
    if args.json:
        print(json.dumps(report.data, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
