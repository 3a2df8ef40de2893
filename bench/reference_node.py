"""The Node.js reference server's installation: pinned @tus packages in bench/reference/.

``ensure_installed()`` runs ``npm ci`` there when ``node_modules`` is missing or older than the
lockfile (a git-ignored folder, installed by the benchmark itself on first use) and returns
the versions actually installed, for the table header. ``bench/reference/package.json`` pins
exact versions; ``package-lock.json`` pins the rest and carries no ``resolved`` URLs, so npm
fetches from whatever registry the machine is configured for. After changing a pin, run
``python -m bench.reference_node --relock`` to rewrite the lockfile.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from pathlib import Path

REFERENCE_DIR = Path(__file__).resolve().parent / "reference"
SERVER_SCRIPT = REFERENCE_DIR / "server.mjs"
LOCKFILE = REFERENCE_DIR / "package-lock.json"
MIN_NODE = (20, 19)
# Reported in the table header, in this order.
REPORTED = ("@tus/server", "@tus/file-store", "@tus/s3-store", "@tus/utils", "@aws-sdk/client-s3")


class NodeMissingError(RuntimeError):
    """node or npm is absent or too old: the reference rows cannot be measured."""


def node_binary() -> str:
    node = shutil.which("node")
    if node is None or shutil.which("npm") is None:
        raise NodeMissingError("node and npm are not installed (apt-get install nodejs npm)")
    version = node_version(node)
    major, minor = (int(part) for part in version.lstrip("v").split(".")[:2])
    if (major, minor) < MIN_NODE:
        raise NodeMissingError(f"@tus/server 2 needs Node >= 20.19, this is {version}")
    return node


def node_version(node: str) -> str:
    return subprocess.run(
        [node, "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()


def _npm(*args: str) -> None:
    npm = shutil.which("npm")
    assert npm is not None
    done = subprocess.run(
        [npm, *args, "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=REFERENCE_DIR,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"npm {args[0]} failed ({done.returncode}):\n{done.stdout}{done.stderr}")


def ensure_installed() -> dict[str, str]:
    """Install the pinned packages if needed; {package: installed version}."""
    node_binary()
    marker = REFERENCE_DIR / "node_modules" / ".package-lock.json"
    if not marker.exists() or marker.stat().st_mtime < LOCKFILE.stat().st_mtime:
        print("installing the reference server (npm ci in bench/reference/) ...", flush=True)
        _npm("ci")
    return installed_versions()


def installed_versions() -> dict[str, str]:
    versions = {}
    for name in REPORTED:
        manifest = REFERENCE_DIR / "node_modules" / name / "package.json"
        if manifest.exists():
            versions[name] = json.loads(manifest.read_text())["version"]
    return versions


def relock() -> None:
    """Rewrite package-lock.json from package.json, without registry URLs."""
    _npm("install", "--package-lock-only", "--omit-lockfile-registry-resolved")
    if '"resolved"' in LOCKFILE.read_text():
        raise RuntimeError("package-lock.json has resolved URLs; remove them before committing")
    print(f"rewrote {LOCKFILE}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--relock", action="store_true", help="rewrite package-lock.json")
    args = parser.parse_args()
    if args.relock:
        relock()
    else:
        print(json.dumps(ensure_installed(), indent=2))


if __name__ == "__main__":
    main()
