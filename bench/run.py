"""``make bench``: our server against the reference servers, side by side, one table.

Owns the benchmark run: which servers start (per backend pair: tusserver on local disk vs
@tus/file-store and tuspyserver; tusserver on S3 + Redis vs @tus/s3-store, both on one moto
server and one redis-server), the limits (the loopback sink, the durable writer), the
scenarios, the A B A B alternation, the measurements, and the tables (made by
``bench.report``) printed and written to ``bench/results/latest.md`` (raw numbers in
``latest.json``).

Each scenario runs ``rounds`` times; in each round every contender runs once, in the same
order (ours, the references, [ours without catalog], [ours with N workers], the loopback
sink, the durable-write limit), so slow drift of the machine hits all of them alike. Servers
start fresh for each scenario (after a short warm-up) and run side by side (an idle one costs
nothing); moto and redis live for the whole backend.
Before each run the server's peak RSS is reset; after it the server's CPU is read once it is
idle again (work the run left behind counts), two uploads are checked with HEAD, every upload
is removed and dirty pages are synced, so one server's writeback never lands in the other's
run. On S3 a moto reset removes the uploads after each run (moto keeps them in memory). On
local disk they are deleted (tus DELETE) only once the scenario's rounds are over: on ext4
without a journal, creating a file skips every inode freed in the last minute or more, so
deleting one server's thousands of small uploads just before the next server runs would
slow that server's file creation, whichever it is.

Usage: ``python -m bench.run [--quick] [--only local|s3] [--scenarios chunked,concurrent,
small,single-256,single] [--rounds N] [--no-catalog] [--env TUS_NAME=value ...]
[--workers N] [--no-reference] [--no-tuspyserver] [--no-durable]``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from bench import reference_node, reference_py
from bench.loadgen import (
    GiB,
    KiB,
    MiB,
    Payload,
    RunResult,
    Scenario,
    delete_all,
    head_offset,
    run_scenario,
)
from bench.procs import Meter, Proc
from bench.report import (
    CLIENT_BOUND,
    Measurement,
    aggregate,
    cpu_ms_per_upload,
    cpu_per_gib,
    percentile,
    render_ratios,
    render_table,
)
from tests.netutil import free_port

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
S3_MAX_SIZE = 4 * GiB
T = TypeVar("T")


def human(size: int) -> str:
    for unit, name in ((GiB, "GiB"), (MiB, "MiB"), (KiB, "KiB")):
        if size >= unit and size % unit == 0:
            return f"{size // unit} {name}"
    return f"{size} B"


def scenario(
    key: str, uploads: int, size: int, chunk: int, concurrency: int, with_upload: bool = False
) -> Scenario:
    """A Scenario titled from its numbers, e.g. "20 x 64 MiB in 8 MiB PATCHes, 4 at a time"."""
    if with_upload:
        shape = "creation-with-upload"
    elif chunk < size:
        shape = f"in {human(chunk)} PATCHes"
    else:
        shape = "in a single PATCH" if uploads == 1 else "one PATCH each"
    title = f"{uploads} x {human(size)} {shape}"
    if uploads > 1:
        title += ", all at once" if concurrency >= uploads else f", {concurrency} at a time"
    return Scenario(key, title, uploads, size, chunk, concurrency, with_upload)


def scenarios(quick: bool) -> list[Scenario]:
    """The issue's four scenarios (the full run also sends the single PATCH at 256 MiB, to
    show that peak RSS does not grow with the file); --quick shrinks them to stay under 2 min."""
    if quick:
        return [
            scenario("chunked", 5, 16 * MiB, 8 * MiB, 4),
            scenario("concurrent", 20, 4 * MiB, 4 * MiB, 20),
            scenario("small", 200, 16 * KiB, 16 * KiB, 16, with_upload=True),
            scenario("single", 1, 256 * MiB, 256 * MiB, 1),
        ]
    return [
        scenario("chunked", 20, 64 * MiB, 8 * MiB, 4),
        scenario("concurrent", 100, 4 * MiB, 4 * MiB, 100),
        scenario("small", 1000, 16 * KiB, 16 * KiB, 16, with_upload=True),
        # The same shape at a quarter of the size: peak RSS must not grow with the file.
        scenario("single-256", 1, 256 * MiB, 256 * MiB, 1),
        scenario("single", 1, GiB, GiB, 1),
    ]


WARMUP = [
    scenario("warmup", 20, 16 * KiB, 16 * KiB, 4, with_upload=True),
    scenario("warmup", 2, 8 * MiB, 4 * MiB, 2),
]


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """The client runs on uvloop when it is installed (uvicorn[standard] brings it)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


# -- the servers ------------------------------------------------------------------------------


@dataclass
class Contender:
    """One server in the comparison, started and ready."""

    key: str  # ours | ref | pyref | ours-nocat | ours-w | sink
    label: str
    backend: str  # local | s3 | limit
    proc: Proc
    port: int
    cleanup: Callable[[Contender, list[str]], None]
    verify: bool = True


@dataclass
class Backend:
    """One backend pair: the services its servers share (S3: moto and redis) and how to
    start the servers. Services live for the whole backend; servers are started fresh for
    each scenario, so one scenario's memory high-water mark never shows up in the next."""

    name: str  # local | s3
    start_servers: Callable[[], list[Contender]]
    services: Meter | None = None
    stop: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        for stop in reversed(self.stop):
            stop()


def our_env(extra: dict[str, str], **settings: str) -> dict[str, str]:
    """The environment for ``tusserver serve``: no inherited TUS_* (only --env and ours)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUS_")}
    # The shipped rate limits stay on: they are part of what a request costs, and their bursts
    # let one client create the small scenario's 1000 uploads at once (a folder of files).
    env.update(TUS_LOG_LEVEL="warning")
    env.update(settings)
    env.update(extra)
    return env


def serve_argv(port: int, data_dir: Path, serve_args: Sequence[str] = ()) -> list[str]:
    """``tusserver serve`` on loopback; ``serve_args`` (e.g. ``--workers 2``) come last."""
    argv = [sys.executable, "-m", "tusserver.cli", "serve", "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--data-dir", str(data_dir), "--log-level", "warning"]
    return argv + list(serve_args)


def start_ours(
    key: str,
    label: str,
    backend: str,
    workdir: Path,
    env: dict[str, str],
    cleanup: Callable[..., None],
    serve_args: Sequence[str] = (),
) -> Contender:
    port = free_port()
    data_dir = workdir / f"{key}-{backend}-{port}"
    data_dir.mkdir()
    argv = serve_argv(port, data_dir, serve_args)
    proc = Proc(label, argv, env, workdir / f"{key}-{backend}-{port}.log")
    proc.wait_http(port)
    return Contender(key, label, backend, proc, port, cleanup)


def start_reference(
    label: str, backend: str, workdir: Path, env: dict[str, str], cleanup: Callable[..., None]
) -> Contender:
    port = free_port()
    node = reference_node.node_binary()
    full_env = {**os.environ, **env, "REF_PORT": str(port), "NODE_ENV": "production"}
    argv = [node, str(reference_node.SERVER_SCRIPT)]
    proc = Proc(label, argv, full_env, workdir / f"reference-{port}.log")
    proc.wait_http(port)
    return Contender("ref", label, backend, proc, port, cleanup)


def start_pyref(workdir: Path, env: dict[str, str]) -> Contender:
    """tuspyserver (bench/reference/tuspy_app.py on uvicorn), local disk only."""
    port = free_port()
    files = Path(tempfile.mkdtemp(prefix="tuspyserver-", dir=workdir))
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TUS_")}
    full_env.update(env, TUSPY_DIR=str(files))
    argv = reference_py.argv(port)
    proc = Proc("tuspyserver", argv, full_env, workdir / f"tuspyserver-{port}.log")
    proc.wait_http(port)
    return Contender("pyref", "tuspyserver", "local", proc, port, tus_delete)


WORKERS_FLAG = "--workers"


def option_listed(help_text: str, option: str) -> bool:
    """True when ``option`` is one of the options a ``--help`` text lists (a whole word, not
    a prefix of a longer one: --workers is not --workers-timeout)."""
    for word in help_text.replace(",", " ").replace("[", " ").replace("]", " ").split():
        if word == option or word.startswith(option + "="):
            return True
    return False


def serve_supports_workers() -> bool:
    """Does this tusserver's ``serve --help`` list --workers (added in parallel: maybe not yet)?"""
    argv = [sys.executable, "-m", "tusserver.cli", "serve", "--help"]
    return option_listed(_run(argv), WORKERS_FLAG)


def workers_plan(requested: int, cores: int, supported: bool) -> tuple[int | None, str | None]:
    """(N for the "N workers" row, or None; why the workers rows are skipped, or None)."""
    if requested < 2:
        return None, None
    if not supported:
        return None, "workers rows skipped: `tusserver serve --help` lists no --workers"
    if cores < 2:
        return None, f"workers rows skipped: {cores} CPU (the pair needs at least 2)"
    return requested, None


def start_sink(workdir: Path) -> Contender:
    port = free_port()
    argv = [sys.executable, "-m", "bench.sink", "--port", str(port)]
    proc = Proc("loopback sink", argv, dict(os.environ), workdir / f"sink-{port}.log")
    proc.wait_http(port)
    return Contender("sink", "loopback sink (limit)", "limit", proc, port, no_cleanup, False)


def sink_list(workdir: Path) -> list[Contender]:
    return [start_sink(workdir)]


def no_cleanup(contender: Contender, paths: list[str]) -> None:
    return None


def tus_delete(contender: Contender, paths: list[str]) -> None:
    failed = run_async(delete_all(contender.port, paths))
    if failed:
        print(f"  note: {failed} DELETEs on {contender.label} did not answer 204", flush=True)


class Moto:
    """moto's S3 server (the tests' helper) plus the buckets the two servers use."""

    def __init__(self, buckets: Sequence[str]) -> None:
        from tests.services_s3 import MOTO

        self._moto = MOTO
        self.url = MOTO.ensure_started()
        self.buckets = list(buckets)
        self.make_buckets()

    @property
    def pid(self) -> int:
        proc = self._moto._proc  # the tests' helper keeps the Popen private; we only read it
        assert proc is not None
        return proc.pid

    def make_buckets(self) -> None:
        # moto takes unsigned requests: a plain PUT creates a bucket.
        for bucket in self.buckets:
            request = urllib.request.Request(f"{self.url}/{bucket}", method="PUT")
            with urllib.request.urlopen(request, timeout=30):
                pass

    def reset(self, contender: Contender, paths: list[str]) -> None:
        """Forget every object (moto keeps them in memory), then recreate the buckets."""
        request = urllib.request.Request(self.url + "/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=60):
            pass
        self.make_buckets()

    def stop(self) -> None:
        self._moto.stop()


def keep_logs(workdir: Path) -> None:
    """A failed run keeps the servers' logs (not their data, which can be gigabytes)."""
    logs = sorted(workdir.glob("*.log"))
    if not logs:
        return
    kept = Path(tempfile.mkdtemp(prefix="tusbench-logs-"))
    for log in logs:
        shutil.copy2(log, kept / log.name)
    print(f"bench: the run failed; the servers' logs are in {kept}", file=sys.stderr, flush=True)


def start_all(starters: Sequence[Callable[[], Contender | None]]) -> list[Contender]:
    """Start each server (a starter may decline with None); if one fails, stop those already
    running."""
    started: list[Contender] = []
    try:
        for start in starters:
            contender = start()
            if contender is not None:
                started.append(contender)
    except BaseException:
        stop_all(started)
        raise
    return started


def stop_all(contenders: Sequence[Contender]) -> None:
    for contender in contenders:
        contender.proc.stop()


def local_backend(
    workdir: Path,
    extra_env: dict[str, str],
    no_catalog: bool,
    with_reference: bool,
    with_pyref: bool = False,
    workers: int | None = None,
) -> Backend:
    """Ours, @tus/file-store, tuspyserver, [ours without catalog], [ours with N workers]."""
    base = {"TMPDIR": str(workdir)}

    def reference() -> Contender:
        ref_dir = Path(tempfile.mkdtemp(prefix="reference-", dir=workdir))
        env = {**base, "REF_STORE": "file", "REF_DIR": str(ref_dir)}
        return start_reference("@tus/server file-store", "local", workdir, env, tus_delete)

    def ours(
        key: str, label: str, serve_args: Sequence[str] = (), **settings: str
    ) -> Callable[[], Contender]:
        env = our_env(extra_env, **base, **settings)
        return partial(start_ours, key, label, "local", workdir, env, tus_delete, serve_args)

    # With the workers pair on, the main row says --workers 1 itself: the pair compares two
    # explicit counts, whatever the server's default becomes.
    one = [WORKERS_FLAG, "1"] if workers else []
    starters: list[Callable[[], Contender | None]] = [ours("ours", "tusserver local", one)]
    if with_reference:
        starters.append(reference)
    if with_pyref:
        starters.append(partial(start_pyref, workdir, base))
    if no_catalog:
        starters.append(ours("ours-nocat", "tusserver local, no catalog", TUS_CATALOG="false"))
    if workers:
        label = f"tusserver local, {workers} workers"
        starters.append(optional(ours("ours-w", label, [WORKERS_FLAG, str(workers)])))
    return Backend("local", partial(start_all, starters))


def optional(start: Callable[[], Contender]) -> Callable[[], Contender | None]:
    """A server whose failure to start skips its rows instead of the run: --workers is new
    (added beside this bench), and one broken mode should not cost the other rows."""

    def started() -> Contender | None:
        try:
            return start()
        except RuntimeError as exc:
            print(f"  note: skipped, it did not start: {exc}", flush=True)
            return None

    return started


def s3_backend(
    workdir: Path, extra_env: dict[str, str], no_catalog: bool, with_reference: bool
) -> Backend:
    """moto and redis-server (the tests' helpers), shared by every server of the backend."""
    from tests.services_redis import REDIS
    from tusserver.settings import Settings

    moto = Moto(["bench-ours", "bench-nocat", "bench-ref"])
    backend = Backend("s3", list, stop=[moto.stop])
    try:
        redis_url = REDIS.ensure_started()
        backend.stop.append(REDIS.stop)
        assert REDIS.proc is not None
        backend.services = Meter([moto.pid, REDIS.proc.pid])
    except BaseException:
        backend.close()
        raise
    default_part = Settings.model_fields["s3_part_size"].default
    part_size = extra_env.get("TUS_S3_PART_SIZE", str(default_part))
    aws = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "TMPDIR": str(workdir),
    }
    s3 = {
        **aws,
        "TUS_STORAGE": "s3",
        "TUS_S3_ENDPOINT_URL": moto.url,
        "TUS_S3_PART_SIZE": part_size,
        "TUS_MAX_SIZE": str(S3_MAX_SIZE),
        "TUS_STATE": "redis",
        "TUS_REDIS_URL": redis_url,
    }
    ref_env = {
        **aws,
        "REF_STORE": "s3",
        "REF_S3_ENDPOINT": moto.url,
        "REF_S3_BUCKET": "bench-ref",
        "REF_PART_SIZE": part_size,
        "REF_REDIS_URL": redis_url,
    }

    def ours(key: str, label: str, **settings: str) -> Callable[[], Contender]:
        env = our_env(extra_env, **s3, **settings)
        return partial(start_ours, key, label, "s3", workdir, env, moto.reset)

    reference = partial(
        start_reference, "@tus/server s3-store+redis", "s3", workdir, ref_env, moto.reset
    )
    starters: list[Callable[[], Contender]] = [
        ours("ours", "tusserver s3+redis", TUS_S3_BUCKET="bench-ours", TUS_REDIS_PREFIX="tus:"),
    ]
    if with_reference:
        starters.append(reference)
    if no_catalog:
        starters.append(
            ours(
                "ours-nocat", "tusserver s3+redis, no catalog", TUS_S3_BUCKET="bench-nocat",
                TUS_REDIS_PREFIX="tusnc:", TUS_CATALOG="false",
            )
        )  # fmt: skip
    backend.start_servers = partial(start_all, starters)
    return backend


# -- measuring --------------------------------------------------------------------------------


def measure(
    contender: Contender,
    scenario: Scenario,
    payload: Payload,
    services: Meter | None,
) -> tuple[RunResult, float, int, float | None]:
    """One run: (client result, server CPU s, server peak RSS, services CPU s)."""
    meter = contender.proc.meter
    meter.settle()
    if services is not None:
        services.settle()
    meter.reset_peak()
    cpu_before = meter.cpu_seconds()
    services_before = services.cpu_seconds() if services is not None else 0.0
    result = run_async(run_scenario(contender.port, scenario, payload))
    cpu = meter.settle() - cpu_before
    services_cpu = services.settle() - services_before if services is not None else None
    peak = meter.peak_rss()
    if contender.verify:
        for path in {result.locations[0], result.locations[-1]}:
            offset, length = run_async(head_offset(contender.port, path))
            if offset != scenario.size or length != scenario.size:
                raise RuntimeError(
                    f"{contender.label}: {path} reports offset {offset}, length {length}; "
                    f"{scenario.size} bytes were sent"
                )
    os.sync()  # the reference's file store leaves dirty pages; flush them outside any run
    return result, cpu, peak, services_cpu


class Leftovers:
    """Uploads to remove: at once on S3, at the end of the scenario on local disk."""

    def __init__(self) -> None:
        self._pending: list[tuple[Contender, list[str]]] = []
        self._dirs: list[Path] = []

    def add_dir(self, directory: Path) -> None:
        """A directory of files to remove with the local uploads (the durable-write runs')."""
        self._dirs.append(directory)

    def add(self, contender: Contender, locations: list[str]) -> None:
        if contender.backend == "local":
            self._pending.append((contender, locations))
        else:
            contender.cleanup(contender, locations)

    def remove_all(self) -> None:
        for contender, locations in self._pending:
            contender.cleanup(contender, locations)
        self._pending.clear()
        for directory in self._dirs:
            shutil.rmtree(directory, ignore_errors=True)
        self._dirs.clear()


DISK_LABEL = "durable write (limit)"


def measure_durable(
    scenario: Scenario, round_no: int, workdir: Path, leftovers: Leftovers
) -> Measurement:
    """The scenario's bytes written and fdatasync'ed by bench.durable, in a process of its own
    on the data directories' filesystem; a Measurement like a server's (its CPU and RSS)."""
    target = Path(tempfile.mkdtemp(prefix="durable-", dir=workdir))
    leftovers.add_dir(target)
    argv = [sys.executable, "-m", "bench.durable", "--dir", str(target)]
    argv += ["--uploads", str(scenario.uploads), "--size", str(scenario.size)]
    argv += ["--chunk", str(scenario.chunk), "--concurrency", str(scenario.concurrency)]
    done = subprocess.run(argv, capture_output=True, text=True, check=True, cwd=ROOT)
    raw = json.loads(done.stdout)
    os.sync()
    result = RunResult(
        wall=raw["wall"],
        total_bytes=scenario.total_bytes,
        uploads=scenario.uploads,
        data_latencies=raw["latencies"],
        create_latencies=[],
        client_cpu=0.0,
        locations=[],
    )
    return Measurement(
        scenario.key,
        "limit",
        "disk",
        DISK_LABEL,
        round_no,
        result,
        raw["cpu"],
        raw["peak_rss"],
        None,
    )


def warm_up(contenders: Sequence[Contender], payload: Payload, leftovers: Leftovers) -> None:
    for contender in contenders:
        for scenario in WARMUP:
            result = run_async(run_scenario(contender.port, scenario, payload))
            leftovers.add(contender, result.locations)


def run_backend(
    backend: Backend,
    plan: Sequence[Scenario],
    rounds: int,
    payload: Payload,
    out: list[Measurement],
    extra: Callable[[], list[Contender]] = list,
    durable_dir: Path | None = None,
) -> None:
    """Each scenario on freshly started servers: warm-up, then ``rounds`` rounds A B A B;
    with ``durable_dir``, each round ends with the durable-write limit in that directory."""
    for scenario in plan:
        started = time.monotonic()
        contenders = backend.start_servers()
        leftovers = Leftovers()
        try:
            contenders += extra()
            warm_up(contenders, payload, leftovers)
            for round_no in range(1, rounds + 1):
                for contender in contenders:
                    services = backend.services if contender.backend == "s3" else None
                    result, cpu, peak, services_cpu = measure(
                        contender, scenario, payload, services
                    )
                    leftovers.add(contender, result.locations)
                    out.append(
                        Measurement(
                            scenario.key, backend.name, contender.key, contender.label,
                            round_no, result, cpu, peak, services_cpu,
                        )
                    )  # fmt: skip
                    report(out[-1])
                if durable_dir is not None:
                    out.append(measure_durable(scenario, round_no, durable_dir, leftovers))
                    report(out[-1])
            leftovers.remove_all()
        finally:
            stop_all(contenders)
        print(f"  {scenario.key} on {backend.name}: {time.monotonic() - started:.0f} s", flush=True)


def report(m: Measurement) -> None:
    """One progress line per measured run."""
    r = m.result
    print(
        f"  {m.scenario:<10} {m.backend:<5} round {m.round} {m.label:<32} "
        f"{r.mb_per_s:8.1f} MB/s {r.uploads_per_s:8.1f} uploads/s  "
        f"server CPU {m.server_cpu:6.2f} s  client load {r.client_load:.2f}",
        flush=True,
    )


def disk_write_speed(directory: Path, payload: Payload, size: int) -> float:
    """MB/s of one sequential write of ``size`` bytes and its fdatasync, in ``directory``."""
    path = directory / "disk-probe.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        started = time.perf_counter()
        for piece in payload.slices(size):
            os.write(fd, piece)
        os.fdatasync(fd)
        elapsed = time.perf_counter() - started
    finally:
        os.close(fd)
        path.unlink()
    return size / elapsed / 1e6


def _run(argv: Sequence[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def machine_header(
    args: argparse.Namespace,
    versions: dict[str, str],
    rounds: int,
    disk_mb_s: float,
    py_versions: dict[str, str] | None = None,
) -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    cpu_model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GiB
    commit = _run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = _run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"])
    node = shutil.which("node")

    def pkg(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "?"

    ref = ", ".join(f"{name} {v}" for name, v in versions.items()) or "not installed"
    pyref = ", ".join(f"{name} {v}" for name, v in (py_versions or {}).items()) or "not run"
    redis = _run(["redis-server", "--version"]).split(" v=")[-1].split(" ")[0]
    return [
        f"# tusserver vs the reference servers — {'quick' if args.quick else 'full'} run",
        "",
        f"- {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; {os.cpu_count()} CPUs "
        f"({cpu_model}), {mem_gib:.0f} GiB RAM, Linux {platform.release()}; the data dirs' disk "
        f"writes {disk_mb_s:.0f} MB/s sequentially (fdatasync included)",
        f"- Python {platform.python_version()} (uvicorn {pkg('uvicorn')}, starlette "
        f"{pkg('starlette')}); Node {_run([node, '--version']) if node else '?'}",
        f"- tusserver {pkg('tusserver')} at {commit}{' (uncommitted changes)' if dirty else ''}",
        f"- reference (Node.js): {ref}",
        f"- reference (Python, local disk only, in bench/.tuspyserver-venv): {pyref}",
        f"- S3 rows: moto {pkg('moto')} server and redis-server {redis} on loopback, shared by "
        "both servers; CPU s in parentheses is theirs",
        f"- {rounds} round(s) per scenario, servers alternating A B A B (ours, the references, "
        "the limits); medians of rounds, latencies pooled",
    ]


METHOD_NOTES = [
    "MB/s and uploads/s: bytes (uploads) sent ÷ wall time from the first request to the last "
    "response; the client holds one keep-alive connection per concurrent upload.",
    "p50/p99 ms: latency of the requests that carried upload bytes (PATCHes; the POSTs in "
    "creation-with-upload), every round pooled.",
    "CPU s: user+system time of the server's process tree (every thread of every process, "
    "reaped children included) from the run's start until it is idle again (work left behind "
    "counts); on S3 the server's only, moto's and redis's in parentheses. CPU s/GiB and CPU "
    "ms/upload divide it by the bytes and the uploads of the run. Peak RSS: the sum of the "
    "tree's VmHWM, reset at the run's start.",
    "Ratios: ours ÷ each reference on the same backend (and N workers ÷ 1 worker), medians of "
    "rounds; throughput is MB/s (= uploads/s); in brackets the lowest and highest ratio of a "
    "round's two runs. Both did the same work, so the CPU ratio is also the CPU-per-GiB and "
    "the CPU-per-upload ratio. Throughput > 1 and CPU < 1 favour ours.",
    "Limits: % of sink is MB/s ÷ the loopback sink's (the same requests and bytes to a peer "
    "that discards them). % of disk is MB/s ÷ the durable-write row's: the same uploads "
    "written as files by a minimal program (bench/durable.py) in the data directories' "
    "filesystem, each request's bytes fdatasync'ed, as many at once as the client sends; a "
    "server that syncs before it acknowledges cannot beat it, one that does not can.",
    "Setup: tusserver with its defaults (the shipped rate limits included) except "
    "TUS_LOG_LEVEL=warning. @tus/server "
    "with its defaults; on S3 with a RedisKvStore cache (its multi-instance setup; it ships no "
    "Redis locker) and, like ours, the AWS SDK's checksums only when required (its default "
    "streams every part with a CRC32 trailer that moto decodes in Python: about 3x slower "
    "here). Both use our S3 part size.",
    "tuspyserver: its README's setup (a FastAPI app with the CORS middleware, the router at "
    "/files; bench/reference/tuspy_app.py) on the same uvicorn, access log off; local disk only "
    "(the bench runs no S3 rows for it).",
    "Durability differs: tusserver fdatasyncs bytes and fsyncs its state before it "
    "acknowledges an offset; @tus/file-store never fsyncs, and tuspyserver syncs its small "
    "info file only, not the bytes. tusserver also hashes (sha256) and records every "
    "finished upload in its catalog (SQLite), unless 'no catalog'.",
]


# -- main -------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="tusserver vs the Node.js reference tus server, side by side; one table",
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes, one round (< 2 min)")
    parser.add_argument("--only", choices=["local", "s3"], help="one backend pair only")
    parser.add_argument(
        "--scenarios",
        help="comma-separated subset of: chunked, concurrent, small, single-256, single "
        "(default: all)",
    )
    parser.add_argument("--rounds", type=int, help="rounds per scenario (default 2; quick 1)")
    parser.add_argument(
        "--no-catalog",
        action="store_true",
        help="also run tusserver with TUS_CATALOG=false (one more row each: the catalog's cost)",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="TUS_NAME=VALUE",
        help="a setting for our server (repeatable), e.g. --env TUS_WRITE_BUFFER=8388608",
    )
    parser.add_argument("--no-reference", action="store_true", help="skip the Node.js rows")
    parser.add_argument(
        "--no-tuspyserver", action="store_true", help="skip the Python reference (tuspyserver)"
    )
    parser.add_argument("--no-durable", action="store_true", help="skip the durable-write rows")
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        metavar="N",
        help="also run tusserver with `serve --workers N` on local disk, beside the main row at "
        "--workers 1 (default 2; 0 or 1: no pair); only when serve lists --workers and there "
        "are 2+ CPUs",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    plan = scenarios(args.quick)
    if args.scenarios:
        wanted = {name.strip() for name in args.scenarios.split(",")}
        unknown = wanted - {s.key for s in plan}
        if unknown:
            print(f"unknown scenario(s): {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
        plan = [s for s in plan if s.key in wanted]
    rounds = args.rounds or (1 if args.quick else 2)
    extra_env = dict(item.split("=", 1) for item in args.env)
    backends = [args.only] if args.only else ["local", "s3"]
    notes: list[str] = []
    versions: dict[str, str] = {}
    if not args.no_reference:
        try:
            versions = reference_node.ensure_installed()
        except reference_node.NodeMissingError as exc:
            notes.append(f"no reference rows: {exc}")
            args.no_reference = True
    py_versions: dict[str, str] = {}
    if not args.no_tuspyserver and "local" in backends:
        try:
            py_versions = reference_py.ensure_installed()
        except reference_py.PyReferenceMissingError as exc:
            notes.append(f"no tuspyserver rows: {exc}")
    workers, skipped = workers_plan(
        args.workers, os.cpu_count() or 1, args.workers >= 2 and serve_supports_workers()
    )
    if skipped:
        print(f"bench: {skipped}", flush=True)
        notes.append(skipped)
    if "s3" in backends and shutil.which("redis-server") is None:
        notes.append("no S3 rows: redis-server is not installed (apt-get install redis-server)")
        backends.remove("s3")

    payload = Payload()
    measurements: list[Measurement] = []
    workdir = Path(tempfile.mkdtemp(prefix="tusbench-"))
    disk_mb_s = disk_write_speed(workdir, payload, 256 * MiB if args.quick else GiB)
    try:
        for name in backends:
            print(f"{name}: starting services", flush=True)
            if name == "local":
                backend = local_backend(
                    workdir, extra_env, args.no_catalog, not args.no_reference,
                    bool(py_versions), workers,
                )  # fmt: skip
            else:
                backend = s3_backend(workdir, extra_env, args.no_catalog, not args.no_reference)
            # The limits run with the first backend only: the same machine for both.
            first = name == backends[0]
            extra = partial(sink_list, workdir) if first else list
            durable = workdir if first and not args.no_durable else None
            try:
                run_backend(backend, plan, rounds, payload, measurements, extra, durable)
            finally:
                backend.close()
    except BaseException:
        keep_logs(workdir)
        raise
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    rows = aggregate(measurements)
    table, flagged = render_table(rows, plan)
    ratios = render_ratios(rows, plan)
    top = max((m.result.client_load for m in measurements), default=0.0)
    notes.append(
        f"Client: asyncio on uvloop, one process; its CPU per wall second peaked at {top:.0%} "
        f"of a core (≥ {CLIENT_BOUND:.0%} is flagged †). It shares the {os.cpu_count()} CPUs "
        "with the server under test (and moto/redis on S3)."
    )
    notes += flagged
    text = "\n".join(
        [
            *machine_header(args, versions, rounds, disk_mb_s, py_versions),
            "",
            table,
            "",
            *(["Ratios, per scenario:", "", ratios, ""] if ratios else []),
            *(f"- {note}" for note in METHOD_NOTES + notes),
            "",
        ]
    )
    print()
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.md").write_text(text)
    raw = {
        "quick": args.quick,
        "rounds": rounds,
        "reference_versions": versions,
        "tuspyserver_versions": py_versions,
        "workers": workers,
        "rows": [row.__dict__ for row in rows],
        "runs": [
            {
                "scenario": m.scenario,
                "backend": m.backend,
                "server": m.label,
                "round": m.round,
                "wall_s": m.result.wall,
                "mb_per_s": m.result.mb_per_s,
                "server_cpu_s": m.server_cpu,
                "server_cpu_s_per_gib": cpu_per_gib(m.server_cpu, m.result.total_bytes),
                "server_cpu_ms_per_upload": cpu_ms_per_upload(m.server_cpu, m.result.uploads),
                "services_cpu_s": m.services_cpu,
                "peak_rss_bytes": m.peak_rss,
                "client_load": m.result.client_load,
                "create_p50_ms": percentile(m.result.create_latencies, 50) * 1000
                if m.result.create_latencies
                else None,
            }
            for m in measurements
        ],
    }
    (RESULTS / "latest.json").write_text(json.dumps(raw, indent=2))
    print(f"written to {RESULTS / 'latest.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
