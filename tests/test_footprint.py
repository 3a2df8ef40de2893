"""The embedded server's memory footprint: optional libraries stay unloaded until used.

A fresh interpreter builds the app on the embedded default, runs its startup (twice: the
first run creates the catalog's schema) and serves an upload; the modules it loaded are
checked. Each library below costs megabytes for the life of the process (measured with
``/proc/self/status`` VmRSS): Redis (distributed mode only), pyjwt + cryptography (auth),
httpx (hooks) and Alembic with Mako (schema changes only).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = r"""
import asyncio, json, sys
from tusserver.app import create_app
from tusserver.settings import Settings

async def main() -> None:
    app = create_app(Settings(data_dir=sys.argv[1], log_level="WARNING"))
    async with app.router.lifespan_context(app):
        # One request through the whole stack: a creation-with-upload that finishes.
        messages = [{"type": "http.request", "body": b"hello", "more_body": False}]
        async def receive():
            return messages.pop(0) if messages else {"type": "http.disconnect"}
        sent = []
        async def send(message):
            sent.append(message)
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "POST", "scheme": "http", "path": "/files/", "raw_path": b"/files/",
            "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 8080),
            "headers": [(b"host", b"127.0.0.1:8080"), (b"tus-resumable", b"1.0.0"),
                        (b"upload-length", b"5"), (b"content-length", b"5"),
                        (b"content-type", b"application/offset+octet-stream")],
        }
        await app(scope, receive, send)
        assert sent[0]["status"] == 201, sent[0]
    heavy = ("redis", "jwt", "cryptography", "httpx", "alembic", "mako", "aiobotocore", "botocore")
    print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & set(heavy))))

asyncio.run(main())
"""


def run_probe(data_dir: Path) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    loaded: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return loaded


@pytest.mark.timeout(240)
def test_the_embedded_server_loads_no_optional_library(tmp_path: Path) -> None:
    first = run_probe(tmp_path)
    # The first start creates the catalog schema, which needs Alembic; nothing else.
    assert set(first) <= {"alembic", "mako"}
    assert run_probe(tmp_path) == []
