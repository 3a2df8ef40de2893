"""The package as a user installs it: ``python -m build``, then the wheel in a fresh venv.

The venv lives outside the source tree and the server runs with a working directory there
too, with no ``PYTHONPATH``: whatever the wheel forgot (the demo page's assets, the catalog's
migrations) is missing for real, instead of being found in the checkout. Dependencies come
from the same package index configuration pip uses everywhere else on the machine.

One build and one venv serve the whole module (building and installing is most of its time).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tusclient import client as tus_client

from tests.netutil import free_port

from .conftest import (
    HOST,
    download_sha256,
    request,
    sha256,
    stop_process,
    wait_answering,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
# Files a working install needs besides the Python modules.
DATA_FILES = (
    "tusserver/web/index.html",
    "tusserver/web/static/app.js",
    "tusserver/web/static/app.css",
    "tusserver/web/static/vendor/tus.min.js",
    "migrations/env.py",
    "migrations/script.py.mako",
    "migrations/versions/20261130_0001_files_table.py",
)


@dataclass(frozen=True)
class Dist:
    wheel: Path
    sdist: Path


@dataclass(frozen=True)
class Installed:
    bin: Path
    home: Path  # working directory and data, outside the source tree


def _clean_env(home: Path) -> dict[str, str]:
    # Neither the checkout (PYTHONPATH) nor a developer's TUS_* settings may leak in.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TUS_") and k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
    }
    env["PYTHONUNBUFFERED"] = "1"
    env["HOME"] = os.environ.get("HOME", str(home))
    return env


def _run(argv: list[str], cwd: Path, env: dict[str, str], timeout: float) -> str:
    done = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{argv} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    """sdist, then a wheel built from that sdist (what ``python -m build`` does by default)."""
    out = tmp_path_factory.mktemp("dist")
    env = _clean_env(out)
    _run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)], out, env, 180)
    (wheel,) = out.glob("tusserver-*.whl")
    (sdist,) = out.glob("tusserver-*.tar.gz")
    return Dist(wheel, sdist)


@pytest.fixture(scope="module")
def installed(dist: Dist, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    home = tmp_path_factory.mktemp("wheel-home")
    assert not home.resolve().is_relative_to(ROOT)
    venv = home / "venv"
    env = _clean_env(home)
    _run([sys.executable, "-m", "venv", str(venv)], home, env, 60)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--no-input", "-q"]
    _run([*pip, str(dist.wheel)], home, env, 240)
    return Installed(venv / "bin", home)


def test_wheel_and_sdist_carry_the_data_files(dist: Dist) -> None:
    wheel_names = set(zipfile.ZipFile(dist.wheel).namelist())
    missing = [name for name in DATA_FILES if name not in wheel_names]
    assert not missing, f"wheel lacks {missing}"
    with tarfile.open(dist.sdist) as sdist:
        # Members are "tusserver-<version>/<path>".
        sdist_names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    missing = [
        name for name in (*DATA_FILES, "LICENSE", "pyproject.toml") if name not in sdist_names
    ]
    assert not missing, f"sdist lacks {missing}"


def test_version_of_the_installed_console_script(installed: Installed) -> None:
    from tusserver import __version__

    out = _run(
        [str(installed.bin / "tusserver"), "--version"],
        installed.home,
        _clean_env(installed.home),
        30,
    )
    assert out.strip() == f"tusserver {__version__}"


def test_migrate_from_the_wheel(installed: Installed) -> None:
    data = installed.home / "migrate-data"
    env = _clean_env(installed.home)
    _run(
        [str(installed.bin / "tusserver"), "migrate", "--data-dir", str(data)],
        installed.home,
        env,
        60,
    )
    assert (data / "catalog.db").is_file()


@pytest.fixture
def served(installed: Installed, tmp_path: Path) -> Iterator[str]:
    """``tusserver serve`` from the venv's console script; yields its origin."""
    port = free_port()
    log = tmp_path / "server.log"
    argv = [str(installed.bin / "tusserver"), "serve", "--host", HOST, "--port", str(port)]
    argv += ["--data-dir", str(tmp_path / "data")]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv,
            cwd=installed.home,
            env=_clean_env(installed.home),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    origin = f"http://{HOST}:{port}"
    try:
        _wait_ready(proc, origin, log)
        yield origin
    finally:
        stop_process(proc)


def _wait_ready(proc: subprocess.Popen[bytes], origin: str, log: Path) -> None:
    failed = wait_answering(proc, f"{origin}/files/", below=500, timeout=20)
    if failed is not None:
        pytest.fail(f"server {failed}:\n{log.read_text()}")


def test_serve_upload_and_download(served: str) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    uploader = tus_client.TusClient(f"{served}/files/").uploader(
        file_stream=io.BytesIO(data), chunk_size=1024 * 1024, metadata={"filename": "w.bin"}
    )
    uploader.upload()
    assert uploader.url is not None
    assert uploader.url.startswith(f"{served}/files/")
    size, digest = download_sha256(uploader.url)
    assert (size, digest) == (len(data), sha256(data))


def test_demo_page_and_its_assets_are_served(served: str) -> None:
    status, headers, page = request("GET", f"{served}/")
    assert status == 200, page[:300]
    assert headers["content-type"].startswith("text/html")
    for asset in ("static/app.js", "static/app.css", "static/vendor/tus.min.js"):
        status, _, body = request("GET", f"{served}/{asset}")
        assert status == 200, (asset, body[:300])
        assert (ROOT / "tusserver" / "web" / asset).read_bytes() == body


def test_nothing_is_imported_from_the_checkout(installed: Installed) -> None:
    code = "import tusserver, catalog, migrations; print(tusserver.__file__, migrations.__file__)"
    out = _run(
        [str(installed.bin / "python"), "-c", code], installed.home, _clean_env(installed.home), 30
    )
    for path in out.split():
        assert Path(path).resolve().is_relative_to(installed.home.resolve()), out
    assert shutil.which("tusserver", path=str(installed.bin))
