"""The benchmark's arithmetic and tables: CPU per GiB and per upload, ratios to each reference,
the rows a table shows, the --workers detection, and the durable-write limit's files.

Pure functions of bench/report.py, bench/run.py and bench/durable.py, fed made-up rows: no
server is started and nothing is timed (the numbers a real run gives are the benchmark's
business, not a test's).
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any

import pytest

from bench import durable, reference_py
from bench.loadgen import GiB, KiB, MiB
from bench.report import (
    Row,
    cpu_ms_per_upload,
    cpu_per_gib,
    fmt_number,
    fmt_ratio,
    markdown,
    ratio,
    ratio_pairs,
    render_ratios,
    render_table,
)
from bench.run import (
    option_listed,
    optional,
    scenario,
    serve_argv,
    workers_plan,
)

SINGLE = scenario("single", 1, 256 * MiB, 256 * MiB, 1)


def row(contender: str, label: str, mb_per_s: float, cpu: float, **kw: Any) -> Row:
    made = Row(
        scenario="single", backend="local", contender=contender, label=label,
        mb_per_s=mb_per_s, uploads_per_s=mb_per_s / 268.435456, p50_ms=10.0, p99_ms=20.0,
        server_cpu=cpu, services_cpu=None, peak_rss_mib=64.0, client_load=0.1, runs=1,
        mb_per_s_all=[mb_per_s], total_bytes=256 * MiB, uploads=1,
    )  # fmt: skip
    return dataclasses.replace(made, **kw)


def single_rows() -> list[Row]:
    return [
        row("disk", "durable write (limit)", 400.0, 0.3, backend="limit"),
        row("sink", "loopback sink (limit)", 1000.0, 0.1, backend="limit"),
        row("pyref", "tuspyserver", 200.0, 1.0, peak_rss_mib=32.0),
        row("ref", "@tus/server file-store", 250.0, 0.8),
        row("ours", "tusserver local", 300.0, 0.4),
    ]


def test_cpu_per_gib_and_per_upload() -> None:
    assert cpu_per_gib(0.5, 256 * MiB) == pytest.approx(2.0)
    assert cpu_per_gib(3.0, 3 * GiB) == pytest.approx(1.0)
    assert cpu_ms_per_upload(0.9, 300) == pytest.approx(3.0)
    assert math.isnan(cpu_per_gib(1.0, 0))
    assert math.isnan(cpu_ms_per_upload(1.0, 0))


def test_ratio_and_its_format() -> None:
    assert ratio(0.41, 0.82) == pytest.approx(0.5)
    assert math.isnan(ratio(1.0, 0.0))
    assert math.isnan(ratio(math.nan, 1.0))
    assert fmt_ratio(0.5) == "0.50x"
    assert fmt_ratio(math.nan) == "—"
    assert [fmt_number(v) for v in (338.4, 12.94, 2.815, math.nan)] == ["338", "12.9", "2.81", "—"]


def test_ratio_pairs_are_ours_against_each_reference_then_workers() -> None:
    rows = [
        *single_rows(),
        row("ours-nocat", "tusserver local, no catalog", 350.0, 0.3),
        row("ours-w", "tusserver local, 2 workers", 450.0, 0.5),
        row("ref", "@tus/server s3-store+redis", 90.0, 1.0, backend="s3"),
        row("ours", "tusserver s3+redis", 100.0, 1.1, backend="s3"),
    ]
    pairs = [(ours.label, theirs.label) for ours, theirs in ratio_pairs(rows)]
    assert pairs == [
        ("tusserver local", "@tus/server file-store"),
        ("tusserver local", "tuspyserver"),
        ("tusserver local, no catalog", "@tus/server file-store"),
        ("tusserver local, no catalog", "tuspyserver"),
        ("tusserver local, 2 workers", "tusserver local"),
        ("tusserver s3+redis", "@tus/server s3-store+redis"),
    ]


def test_ratio_block_shows_throughput_cpu_and_rss() -> None:
    text = render_ratios(single_rows(), [SINGLE])
    lines = text.splitlines()
    assert lines[0].split("|")[1:-1] == [
        " scenario ", " ours            ", " ÷                      ", " throughput ",
        " CPU (= per GiB) ", " peak RSS ",
    ]  # fmt: skip
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in lines[2:]]
    assert cells == [
        ["single", "tusserver local", "@tus/server file-store", "1.20x", "0.50x", "1.00x"],
        ["single", "tusserver local", "tuspyserver", "1.50x", "0.40x", "2.00x"],
    ]
    assert render_ratios([row("sink", "sink", 1.0, 0.1, backend="limit")], [SINGLE]) == ""


def test_table_has_one_row_per_target_and_both_limits() -> None:
    table, notes = render_table(single_rows(), [SINGLE])
    lines = table.splitlines()
    header = [c.strip() for c in lines[0].split("|")[1:-1]]
    assert header[-5:] == ["CPU s/GiB", "CPU ms/upload", "peak RSS MiB", "% of sink", "% of disk"]
    assert set(lines[1]) <= {"|", "-", ":", " "}
    body = {c[1]: c for c in ([x.strip() for x in line.split("|")[1:-1]] for line in lines[2:])}
    assert list(body) == [
        "tusserver local", "@tus/server file-store", "tuspyserver", "loopback sink (limit)",
        "durable write (limit)",
    ]  # fmt: skip
    ours = body["tusserver local"]
    assert ours[header.index("CPU s/GiB")] == "1.60"  # 0.4 s for 256 MiB
    assert ours[header.index("CPU ms/upload")] == "400"
    assert ours[header.index("% of sink")] == "30%"
    assert ours[header.index("% of disk")] == "75%"
    assert body["loopback sink (limit)"][-2:] == ["100%", "—"]
    assert body["durable write (limit)"][-2:] == ["—", "100%"]
    s3 = row("ours", "tusserver s3+redis", 100.0, 1.0, backend="s3")
    lines = render_table([*single_rows(), s3], [SINGLE])[0].splitlines()
    s3_line = next(line for line in lines if "s3+redis" in line)
    assert [c.strip() for c in s3_line.split("|")[-3:-1]] == ["10%", "—"]  # no local disk
    assert notes == []
    assert len({len(line) for line in lines}) == 1  # padded: it lines up in a terminal


def test_a_busy_client_is_flagged() -> None:
    rows = [row("ours", "tusserver local", 300.0, 0.4, client_load=0.95)]
    table, notes = render_table(rows, [SINGLE])
    assert "tusserver local †" in table
    assert len(notes) == 1
    assert "95%" in notes[0]


def test_markdown_aligns_text_left_and_numbers_right() -> None:
    text = markdown([["name", "n"], ["a", "10"], ["bbb", "2"]], left=1)
    assert text.splitlines() == ["| name |  n |", "| ---- | -: |", "| a    | 10 |", "| bbb  |  2 |"]


@pytest.mark.parametrize(
    ("help_text", "listed"),
    [
        ("usage: tusserver serve [-h] [--port PORT] [--workers WORKERS]", True),
        ("  --workers N   worker processes (TUS_WORKERS)", True),
        ("  --workers=N", True),
        ("usage: tusserver serve [-h] [--port PORT] [--insecure]", False),
        ("  --workers-timeout S   seconds", False),
        ("", False),
    ],
)
def test_workers_option_detection(help_text: str, listed: bool) -> None:
    assert option_listed(help_text, "--workers") is listed


def test_the_workers_count_reaches_serve(tmp_path: Path) -> None:
    argv = serve_argv(8080, tmp_path, ["--workers", "2"])
    assert argv[1:4] == ["-m", "tusserver.cli", "serve"]
    assert argv[-2:] == ["--workers", "2"]
    assert argv[argv.index("--data-dir") + 1] == str(tmp_path)
    assert "--workers" not in serve_argv(8080, tmp_path)


def test_a_workers_server_that_does_not_start_skips_its_rows(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def broken() -> Any:
        raise RuntimeError("tusserver local, 2 workers exited with 2")

    assert optional(broken)() is None
    assert "skipped, it did not start" in capsys.readouterr().out
    sentinel: Any = object()
    assert optional(lambda: sentinel)() is sentinel


def test_workers_plan() -> None:
    assert workers_plan(2, cores=2, supported=True) == (2, None)
    assert workers_plan(4, cores=8, supported=True) == (4, None)
    assert workers_plan(2, cores=2, supported=False) == (
        None,
        "workers rows skipped: `tusserver serve --help` lists no --workers",
    )
    assert workers_plan(2, cores=1, supported=True) == (
        None,
        "workers rows skipped: 1 CPU (the pair needs at least 2)",
    )
    assert workers_plan(1, cores=2, supported=True) == (None, None)
    assert workers_plan(0, cores=2, supported=False) == (None, None)


def test_durable_chunks_cut_like_patches() -> None:
    assert durable.chunks(16 * MiB, 8 * MiB) == [8 * MiB, 8 * MiB]
    assert durable.chunks(10, 4) == [4, 4, 2]
    assert durable.chunks(16 * KiB, 64 * KiB) == [16 * KiB]
    assert durable.chunks(0, 4) == [0]


def test_durable_writes_every_byte_to_a_new_file(tmp_path: Path) -> None:
    payload = memoryview(os.urandom(3 * MiB))
    path = tmp_path / "one.bin"
    latencies = durable.write_upload(path, 5 * MiB + 7, 2 * MiB, payload)
    assert len(latencies) == 3  # 2 MiB, 2 MiB, 1 MiB + 7: one sync each
    data = path.read_bytes()
    assert len(data) == 5 * MiB + 7
    # The payload repeats: byte i of the file is byte i mod 3 MiB of the payload.
    assert data[: 3 * MiB] == payload.tobytes()
    assert data[3 * MiB : 5 * MiB + 7] == payload[: 2 * MiB + 7].tobytes()
    with pytest.raises(FileExistsError):  # each upload is a new file, as a server makes one
        durable.write_upload(path, 1, 1, payload)


def test_durable_run_reports_every_upload(tmp_path: Path) -> None:
    result = durable.run(tmp_path, uploads=6, size=64 * KiB, chunk=32 * KiB, concurrency=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"upload-{i}.bin" for i in range(6)]
    assert all(p.stat().st_size == 64 * KiB for p in tmp_path.iterdir())
    latencies = result["latencies"]
    assert isinstance(latencies, list)
    assert len(latencies) == 12


def test_tuspyserver_reinstalls_when_a_pin_changes(tmp_path: Path) -> None:
    stamp, requirements = tmp_path / ".installed", tmp_path / "requirements.txt"
    requirements.write_text("tuspyserver==4.4.3\n")
    assert reference_py.needs_install(stamp, requirements)
    stamp.touch()
    os.utime(requirements, (1, 1))
    assert not reference_py.needs_install(stamp, requirements)
    os.utime(requirements, None)
    os.utime(stamp, (1, 1))
    assert reference_py.needs_install(stamp, requirements)


def test_tuspyserver_is_pinned() -> None:
    pins = [
        line for line in reference_py.REQUIREMENTS.read_text().splitlines()
        if line and not line.startswith("#")
    ]  # fmt: skip
    assert pins
    assert all("==" in line for line in pins)
    assert "tuspyserver==4.4.3" in pins
