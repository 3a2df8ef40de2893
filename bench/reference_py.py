"""The Python reference server's installation: pinned tuspyserver in a venv of its own.

``ensure_installed()`` creates ``bench/.tuspyserver-venv`` (git-ignored) and installs
``bench/reference/tuspyserver-requirements.txt`` into it with that venv's pip, which reads the
same pip configuration as the project's own installs (index, find-links, constraints), when the
venv is missing or older than the requirements; it returns the versions actually installed, for
the table header. Its own venv because the FastAPI and Starlette it pins need not be the ones
tusserver runs on. ``argv(port)`` is how the benchmark starts it (``bench/reference/tuspy_app.py``
on uvicorn, access log off like ours).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
VENV = BENCH_DIR / ".tuspyserver-venv"
PYTHON = VENV / "bin" / "python"
REQUIREMENTS = BENCH_DIR / "reference" / "tuspyserver-requirements.txt"
APP_DIR = BENCH_DIR / "reference"
STAMP = VENV / ".installed"
REPORTED = ("tuspyserver", "fastapi", "starlette", "uvicorn")


class PyReferenceMissingError(RuntimeError):
    """The venv could not be made or the pinned packages not installed: no tuspyserver rows."""


def _check(argv: list[str], what: str) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PyReferenceMissingError(f"{what}: {exc}") from exc
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
        raise PyReferenceMissingError(f"{what} failed ({done.returncode}):\n{tail}")
    return done.stdout


def needs_install(stamp: Path, requirements: Path) -> bool:
    """True when the stamp is missing or older than the requirements (a pin changed)."""
    return not stamp.exists() or stamp.stat().st_mtime < requirements.stat().st_mtime


def ensure_installed() -> dict[str, str]:
    """Install the pinned packages if needed; {package: installed version}."""
    if needs_install(STAMP, REQUIREMENTS):
        print("installing the Python reference server (tuspyserver) into bench/.tuspyserver-venv")
        if not (VENV / "bin" / "pip").exists():
            _check([sys.executable, "-m", "venv", str(VENV)], "python -m venv")
        pip = [str(VENV / "bin" / "pip"), "install", "--no-input", "-q", "-r", str(REQUIREMENTS)]
        _check(pip, "pip install tuspyserver")
        STAMP.touch()
    return installed_versions()


def installed_versions() -> dict[str, str]:
    script = (
        "import json, importlib.metadata as m;"
        f"print(json.dumps({{n: m.version(n) for n in {list(REPORTED)!r}}}))"
    )
    return dict(json.loads(_check([str(PYTHON), "-c", script], "reading versions")))


def argv(port: int) -> list[str]:
    return [
        str(PYTHON), "-m", "uvicorn", "tuspy_app:app", "--app-dir", str(APP_DIR),
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip


if __name__ == "__main__":
    print(json.dumps(ensure_installed(), indent=2))
