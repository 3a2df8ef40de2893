"""What each interop version's client sends, spelled out per version (from Apple's
swift-nio-extras tests of URLSession and the drafts), independent of the server's own table."""

from __future__ import annotations

import base64
import hashlib

VERSIONS = (3, 4, 5, 6, 7, 8)
PARTIAL = {"Content-Type": "application/partial-upload"}


def interop(version: int | None) -> dict[str, str]:
    return {} if version is None else {"Upload-Draft-Interop-Version": str(version)}


def flag_name(version: int | None) -> str:
    return "upload-incomplete" if version == 3 else "upload-complete"


def flag(version: int | None, complete: bool) -> dict[str, str]:
    """Draft -01 (interop 3) says ``Upload-Incomplete``; later ones ``Upload-Complete``."""
    if version == 3:
        return {"Upload-Incomplete": "?0" if complete else "?1"}
    return {"Upload-Complete": "?1" if complete else "?0"}


def says_complete(version: int | None, headers: dict[str, str]) -> bool:
    value = headers[flag_name(version)]
    assert value in ("?0", "?1"), value
    return (value == "?0") if version == 3 else (value == "?1")


def creation(version: int | None, complete: bool, length: int | None = None) -> dict[str, str]:
    headers = {**interop(version), **flag(version, complete)}
    if length is not None and version != 3:  # -01 had no Upload-Length; URLSession 17 sends none
        headers["Upload-Length"] = str(length)
    return headers


def append(
    version: int | None, offset: int, complete: bool, length: int | None = None
) -> dict[str, str]:
    """A PATCH as URLSession sends it: the media type from interop 6 on."""
    headers = {**interop(version), **flag(version, complete), "Upload-Offset": str(offset)}
    if version is None or version >= 6:
        headers.update(PARTIAL)
    if length is not None and version != 3:
        headers["Upload-Length"] = str(length)
    return headers


def content_digest(data: bytes) -> dict[str, str]:
    return {
        "Content-Digest": f"sha-256=:{base64.b64encode(hashlib.sha256(data).digest()).decode()}:"
    }
