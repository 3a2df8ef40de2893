"""The benchmark's tables: from measured runs to rows, efficiency figures and ratios.

Owns ``Measurement`` (one server's one run of one scenario), ``Row`` (the runs of one server
in one scenario, reduced to medians), the efficiency arithmetic (server CPU per GiB and per
upload, ours ÷ each reference, N workers ÷ 1), and the two Markdown tables ``bench.run``
prints: one row per server and limit per scenario, and a ratio block per scenario. Pure
functions of their input; ``bench.run`` decides what runs and measures it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from bench.loadgen import GiB, MiB, RunResult, Scenario

CLIENT_BOUND = 0.9  # client CPU seconds per wall second above which the client is the limit


@dataclass
class Measurement:
    scenario: str
    backend: str
    contender: str
    label: str
    round: int
    result: RunResult
    server_cpu: float
    peak_rss: int
    services_cpu: float | None


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Row:
    scenario: str
    backend: str
    contender: str
    label: str
    mb_per_s: float
    uploads_per_s: float
    p50_ms: float
    p99_ms: float
    server_cpu: float
    services_cpu: float | None
    peak_rss_mib: float
    client_load: float
    runs: int
    mb_per_s_all: list[float]
    total_bytes: int = 0
    uploads: int = 0


def aggregate(measurements: Sequence[Measurement]) -> list[Row]:
    groups: dict[tuple[str, str, str], list[Measurement]] = {}
    for m in measurements:
        backend = "limit" if m.contender in LIMITS else m.backend
        groups.setdefault((m.scenario, backend, m.contender), []).append(m)
    rows = []
    for (scenario, backend, contender), runs in groups.items():
        latencies = [x for m in runs for x in m.result.data_latencies]
        services = [m.services_cpu for m in runs if m.services_cpu is not None]
        rows.append(
            Row(
                scenario=scenario,
                backend=backend,
                contender=contender,
                label=runs[0].label,
                mb_per_s=statistics.median(m.result.mb_per_s for m in runs),
                uploads_per_s=statistics.median(m.result.uploads_per_s for m in runs),
                p50_ms=percentile(latencies, 50) * 1000 if latencies else math.nan,
                p99_ms=percentile(latencies, 99) * 1000 if latencies else math.nan,
                server_cpu=statistics.median(m.server_cpu for m in runs),
                services_cpu=statistics.median(services) if services else None,
                peak_rss_mib=max(m.peak_rss for m in runs) / MiB,
                client_load=max(m.result.client_load for m in runs),
                runs=len(runs),
                mb_per_s_all=[round(m.result.mb_per_s, 3) for m in runs],
                total_bytes=runs[0].result.total_bytes,
                uploads=runs[0].result.uploads,
            )
        )
    return rows


# -- efficiency: CPU per unit of work, and ratios ---------------------------------------------

LIMITS = ("sink", "disk")  # rows that are the machine's limits, not servers
ORDER = {"ours": 0, "ref": 1, "pyref": 2, "ours-nocat": 3, "ours-w": 4, "sink": 5, "disk": 6}
BACKEND_ORDER = {"local": 0, "s3": 1, "limit": 2}
REFERENCES = ("ref", "pyref")  # @tus/server, tuspyserver
OURS_COMPARED = ("ours", "ours-nocat")  # each against every reference on its backend


def cpu_per_gib(cpu_seconds: float, total_bytes: int) -> float:
    """Server CPU seconds per GiB of upload bytes received (nan for no bytes)."""
    return cpu_seconds / (total_bytes / GiB) if total_bytes > 0 else math.nan


def cpu_ms_per_upload(cpu_seconds: float, uploads: int) -> float:
    """Server CPU milliseconds per upload, start to finish (nan for no upload)."""
    return cpu_seconds * 1000 / uploads if uploads > 0 else math.nan


def ratio(ours: float, theirs: float) -> float:
    """ours ÷ theirs; nan when theirs is zero or either is not a number."""
    if theirs == 0 or math.isnan(ours) or math.isnan(theirs):
        return math.nan
    return ours / theirs


def fmt_ratio(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.2f}x"


def fmt_number(value: float, digits: int = 2) -> str:
    """A figure for the table: three significant digits are enough, and nan is a dash."""
    if math.isnan(value):
        return "—"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.{digits}f}"


def ratio_pairs(rows: Sequence[Row]) -> list[tuple[Row, Row]]:
    """(ours, theirs) pairs of one scenario: each of our configurations against each reference
    on the same backend, then the N-workers row against the one-worker row."""
    pairs = []
    for row in sorted(rows, key=sort_key):
        if row.contender in OURS_COMPARED:
            refs = [r for r in rows if r.backend == row.backend and r.contender in REFERENCES]
            pairs += [(row, ref) for ref in sorted(refs, key=sort_key)]
        if row.contender == "ours-w":
            one = next(
                (r for r in rows if r.backend == row.backend and r.contender == "ours"), None
            )
            if one is not None:
                pairs.append((row, one))
    return pairs


def sort_key(row: Row) -> tuple[int, int]:
    return BACKEND_ORDER.get(row.backend, 9), ORDER.get(row.contender, 9)


def _round_spread(row: Row, ref: Row) -> str:
    """``" (lo to hi)"``: the lowest and highest ratio of one round's run to the reference's run in
    the same round (rounds alternate A B A B), so a reader sees how far the machine's noise
    moves the median ratio. Empty for a single round."""
    pairs = list(zip(row.mb_per_s_all, ref.mb_per_s_all, strict=False))
    ratios = [ours / theirs for ours, theirs in pairs if theirs > 0]
    if len(ratios) < 2:
        return ""
    return f" ({min(ratios):.2f} to {max(ratios):.2f})"


def _ms(value: float) -> str:
    if math.isnan(value):
        return "—"
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def markdown(lines: Sequence[Sequence[str]], left: int = 2) -> str:
    """A Markdown table, padded to line up in a terminal: ``lines[0]`` is the header, the
    first ``left`` columns are left-aligned, the rest right-aligned (numbers)."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    out = []
    for n, line in enumerate(lines):
        cells = [
            c.ljust(w) if i < left else c.rjust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ]
        out.append("| " + " | ".join(cells) + " |")
        if n == 0:
            rule = ["-" * w if i < left else "-" * (w - 1) + ":" for i, w in enumerate(widths)]
            out.append("| " + " | ".join(rule) + " |")
    return "\n".join(out)


def _of_limit(row: Row, limit: Row | None) -> str:
    if limit is None or (row.contender in LIMITS and row is not limit):
        return "—"
    return f"{row.mb_per_s / limit.mb_per_s:.0%}"


TABLE_HEADER = [
    "scenario", "server", "MB/s", "uploads/s", "p50 ms", "p99 ms", "CPU s", "CPU s/GiB",
    "CPU ms/upload", "peak RSS MiB", "% of sink", "% of disk",
]  # fmt: skip


def table_line(row: Row, title: str, sink: Row | None, disk: Row | None) -> list[str]:
    """One row of the main table (the label is passed in already flagged if need be)."""
    cpu = f"{row.server_cpu:.2f}"
    if row.services_cpu is not None:
        cpu += f" (+{row.services_cpu:.2f})"
    return [
        title, row.label, f"{row.mb_per_s:.1f}", f"{row.uploads_per_s:.1f}", _ms(row.p50_ms),
        _ms(row.p99_ms), cpu, fmt_number(cpu_per_gib(row.server_cpu, row.total_bytes)),
        fmt_number(cpu_ms_per_upload(row.server_cpu, row.uploads)), f"{row.peak_rss_mib:.0f}",
        # S3 rows write no local file: the disk is not their limit.
        _of_limit(row, sink), _of_limit(row, disk if row.backend != "s3" else None),
    ]  # fmt: skip


def render_table(rows: Sequence[Row], plan: Sequence[Scenario]) -> tuple[str, list[str]]:
    """The main table (one row per server and limit per scenario) and its † notes."""
    lines = [TABLE_HEADER]
    notes = []
    for scenario in plan:
        mine = sorted((r for r in rows if r.scenario == scenario.key), key=sort_key)
        sink = next((r for r in mine if r.contender == "sink"), None)
        disk = next((r for r in mine if r.contender == "disk"), None)
        for row in mine:
            label = row.label
            if row.client_load >= CLIENT_BOUND:
                label += " †"
                notes.append(
                    f"† {scenario.title}, {row.label}: the client used "
                    f"{row.client_load:.0%} of a core — it, not the server, may be the limit."
                )
            lines.append(table_line(row, scenario.title, sink, disk))
            lines[-1][1] = label
    return markdown(lines), notes


RATIO_HEADER = ["scenario", "ours", "÷", "throughput", "CPU (= per GiB)", "peak RSS"]


def render_ratios(rows: Sequence[Row], plan: Sequence[Scenario]) -> str:
    """Per scenario, ours ÷ each reference (and N workers ÷ 1): throughput (in brackets the
    lowest and highest round), server CPU for the same work, peak RSS. Empty if no pair."""
    lines = [RATIO_HEADER]
    for scenario in plan:
        mine = [r for r in rows if r.scenario == scenario.key]
        for ours, theirs in ratio_pairs(mine):
            lines.append(
                [
                    scenario.key, ours.label, theirs.label,
                    fmt_ratio(ratio(ours.mb_per_s, theirs.mb_per_s)) + _round_spread(ours, theirs),
                    fmt_ratio(ratio(ours.server_cpu, theirs.server_cpu)),
                    fmt_ratio(ratio(ours.peak_rss_mib, theirs.peak_rss_mib)),
                ]
            )  # fmt: skip
    return markdown(lines, left=3) if len(lines) > 1 else ""
