"""Where a host mounted us: the prefix read off the scope, however the host spelled it."""

from __future__ import annotations

from typing import Any

import pytest

from tusserver.edge import mount


def scope(path: str, *, root_path: str = "", raw_path: bytes | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {"type": "http", "path": path, "root_path": root_path}
    if raw_path is not None:
        found["raw_path"] = raw_path
    return found


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        # On its own (tusserver serve): nothing to strip.
        (scope("/files/abc", raw_path=b"/files/abc"), ("", "/files/abc")),
        # Starlette's Mount and FastAPI: full path, root_path is the prefix.
        (
            scope("/uploads/files/abc", root_path="/uploads", raw_path=b"/uploads/files/abc"),
            ("/uploads", "/files/abc"),
        ),
        (scope("/uploads", root_path="/uploads"), ("/uploads", "/")),
        # Nested mounts and uvicorn --root-path add up in root_path.
        (scope("/a/b/files/", root_path="/a/b"), ("/a/b", "/files/")),
        # A prefix that merely starts the same is no prefix.
        (scope("/uploadsx/files/", root_path="/uploads"), ("/uploads", "/uploadsx/files/")),
        # Litestar: path rewritten to the rest, with a slash appended; raw_path intact.
        (scope("/files/abc/", raw_path=b"/uploads/files/abc"), ("/uploads", "/files/abc")),
        (scope("/files/", raw_path=b"/uploads/files/"), ("/uploads", "/files/")),
        (scope("/", raw_path=b"/uploads/"), ("/uploads", "/")),
        # Older convention: root_path set, path already relative.
        (
            scope("/files/x", root_path="/up", raw_path=b"/up/files/x"),
            ("/up", "/files/x"),
        ),
        # Percent-encoded raw bytes, decoded path.
        (
            scope("/files/a b/", raw_path=b"/my%20uploads/files/a%20b"),
            ("/my uploads", "/files/a b"),
        ),
        # A host that normalised the path some other way: trust root_path alone.
        (scope("/files/x", root_path="", raw_path=b"/elsewhere//x"), ("", "/files/x")),
    ],
)
def test_split(given: dict[str, Any], expected: tuple[str, str]) -> None:
    assert mount.split(given) == expected


def test_rebase_presents_a_top_level_request() -> None:
    original = scope("/files/abc/", raw_path=b"/uploads/files/abc")
    original["user"] = "the host's"
    rebased = mount.rebase(original)
    assert rebased["path"] == "/files/abc"
    assert rebased["raw_path"] == b"/files/abc"
    assert rebased["root_path"] == ""
    assert mount.prefix_of(rebased) == "/uploads"
    assert rebased["user"] == "the host's"
    # The host's scope is left as it was.
    assert original["path"] == "/files/abc/"
    assert mount.prefix_of(original) == ""


def test_the_recorded_prefix_is_safe_in_a_url() -> None:
    # From a client's raw path (Litestar): whatever it holds, Location gets no space or CRLF.
    rebased = mount.rebase(scope("/files/x/", raw_path=b"/my%20up%0d%0aloads/files/x"))
    assert mount.prefix_of(rebased) == "/my%20up%0D%0Aloads"
    assert mount.prefix_of(mount.rebase(scope("/files/", root_path="/ü"))) == "/%C3%BC"
