"""Finding and running the shell examples of the documentation against a real server.

``blocks`` extracts every fenced ```sh, ```bash and ```console block of a markdown file, in
order, each with its line and, when the line before its fence is
``<!-- doc-test: skip (reason) -->``, the reason it is not run. ``run_document`` runs a file's
other blocks, in order, in one bash session (so a variable set in one block is there in the
next, as in a reader's terminal), against ``tusserver serve`` started on a free port with a
fresh data directory, and says which block failed.

What the session provides, so the examples run exactly as typed:

* the working directory is a scratch copy of what a reader has after ``make run``: a
  ``.venv/bin/tusserver`` (and ``.venv/bin/python``) running this checkout, and ``./data``;
* ``http://127.0.0.1:8080`` and ``localhost:8080`` in the examples are rewritten to the
  server's port; nothing else is rewritten;
* ``make run`` (re)starts that server in the background with the session's environment, as
  the reader's ``make run`` in another terminal would (``TUS_JWT_SECRET=... make run``);
  any other ``make`` target fails: a block running one must be marked skip;
* ``curl`` fails on an HTTP error status (``--fail-with-body``), so an example answering 404
  or 401 fails its block instead of printing an error nobody reads;
* ``set -euo pipefail``: an undefined variable or a failing command fails the block.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LANGUAGES = ("sh", "bash", "console")
FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
SKIP = re.compile(r"<!--\s*doc-test:\s*skip\s*\(([^)]+)\)\s*-->")
ANY_MARKER = re.compile(r"<!--\s*doc-test:")
# The address the documents use; the runner points it at its own server.
DOC_ORIGINS = ("http://127.0.0.1:8080", "http://localhost:8080")
_ENTRY = "import sys; from tusserver.cli import main; sys.argv[0] = 'tusserver'; sys.exit(main())"


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    language: str
    code: str
    skip: str | None  # the reason given in the marker, or None: the block runs

    @property
    def where(self) -> str:
        shown = self.path.relative_to(ROOT) if self.path.is_relative_to(ROOT) else self.path
        return f"{shown}:{self.line}"


def commands(language: str, body: str) -> str:
    """The shell text of a block: a ```console block's ``$ `` lines, others whole."""
    if language != "console":
        return body
    return "".join(line[2:] + "\n" for line in body.splitlines() if line.startswith("$ "))


def blocks(path: Path) -> list[Block]:
    text = path.read_text()
    found = []
    for match in FENCE.finditer(text):
        language = match.group(1)
        if language not in LANGUAGES:
            continue
        before = text[: match.start()].rstrip().rsplit("\n", 1)[-1]
        if ANY_MARKER.search(before) and not SKIP.search(before):
            raise ValueError(f"{path}: unreadable doc-test marker {before.strip()!r}")
        skip = SKIP.search(before)
        line = text.count("\n", 0, match.start()) + 1
        code = commands(language, match.group(2))
        found.append(Block(path, line, language, code, skip.group(1).strip() if skip else None))
    return found


def point_at(code: str, port: int) -> str:
    for origin in DOC_ORIGINS:
        code = code.replace(origin, f"http://127.0.0.1:{port}")
    return code


def _prelude(port: int, log: Path) -> str:
    return textwrap.dedent(
        f"""\
        set -euo pipefail
        __DOCTEST_PORT={port}
        __DOCTEST_LOG={shlex.quote(str(log))}
        __DOCTEST_PID=
        __doctest_stop() {{
            if [ -n "$__DOCTEST_PID" ]; then
                kill "$__DOCTEST_PID" 2>/dev/null || true
                wait "$__DOCTEST_PID" 2>/dev/null || true
                __DOCTEST_PID=
            fi
        }}
        trap __doctest_stop EXIT
        make() {{
            if [ "$#" -ne 1 ] || [ "$1" != run ]; then
                echo "doc-test: 'make $*' does not run here; mark its block skip" >&2
                return 1
            fi
            __doctest_stop
            echo "--- make run ---" >>"$__DOCTEST_LOG"
            .venv/bin/tusserver serve --host 127.0.0.1 --port "$__DOCTEST_PORT" \\
                --data-dir ./data >>"$__DOCTEST_LOG" 2>&1 &
            __DOCTEST_PID=$!
            for _ in $(seq 1 200); do
                if command curl -s -o /dev/null -X OPTIONS \\
                    "http://127.0.0.1:$__DOCTEST_PORT/files/"; then
                    return 0
                fi
                kill -0 "$__DOCTEST_PID" 2>/dev/null || break
                sleep 0.1
            done
            echo "doc-test: the server did not start (see its log)" >&2
            return 1
        }}
        curl() {{ command curl --fail-with-body "$@"; }}
        make run
        """
    )


def script(runnable: list[Block], port: int, log: Path) -> str:
    parts = [_prelude(port, log)]
    for n, block in enumerate(runnable):
        parts.append(f"echo '@@doc-test block {n}' >&2\n")
        parts.append(point_at(block.code, port))
        if not block.code.endswith("\n"):
            parts.append("\n")
    parts.append("echo '@@doc-test done' >&2\n")
    return "".join(parts)


def workdir(path: Path) -> None:
    """What a reader has after ``make run``: ``.venv/bin`` running this checkout."""
    bin_dir = path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    wrapper = bin_dir / "tusserver"
    wrapper.write_text(
        f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -c {shlex.quote(_ENTRY)} "$@"\n'
    )
    wrapper.chmod(0o755)
    (bin_dir / "python").symlink_to(sys.executable)


@dataclass
class Outcome:
    returncode: int
    output: str
    failed: Block | None
    server_log: str


def run_document(runnable: list[Block], tmp: Path, port: int, timeout: float = 240) -> Outcome:
    workdir(tmp)
    log = tmp / "server.log"
    log.touch()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUS_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    proc = subprocess.Popen(
        ["bash", "-c", script(runnable, port, log)],
        cwd=tmp,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # the server it starts is in its group: killed with it
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        output += f"\ndoc-test: timed out after {timeout} s"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    started = re.findall(r"^@@doc-test block (\d+)$", output, re.M)
    failed = None
    if proc.returncode != 0:
        failed = runnable[int(started[-1])] if started else None
    return Outcome(proc.returncode, output, failed, log.read_text(errors="replace"))
