"""Real media files for tests, made with the ffmpeg the machine has.

``require_ffmpeg`` is the one guard every ffmpeg-backed test goes through: without
ffmpeg/ffprobe those tests skip locally, but fail when ``TUS_TEST_REQUIRE_FFMPEG`` is set
(``.ci/run`` sets it and installs ffmpeg).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REQUIRE_FFMPEG_ENV = "TUS_TEST_REQUIRE_FFMPEG"


def require_ffmpeg() -> tuple[str, str]:
    """(ffprobe, ffmpeg) paths; skips without them, or fails when CI said they must be there."""
    ffprobe, ffmpeg = shutil.which("ffprobe"), shutil.which("ffmpeg")
    if ffprobe is None or ffmpeg is None:
        reason = "ffprobe/ffmpeg not on PATH"
        if os.environ.get(REQUIRE_FFMPEG_ENV):
            pytest.fail(f"{reason}, and {REQUIRE_FFMPEG_ENV} is set")
        pytest.skip(reason)
    return ffprobe, ffmpeg


def has_encoder(ffmpeg: str, name: str) -> bool:
    listing = subprocess.run(
        [ffmpeg, "-hide_banner", "-encoders"], capture_output=True, text=True, check=True
    ).stdout
    return re.search(rf"^\s*\S+\s+{re.escape(name)}\s", listing, re.MULTILINE) is not None


def ffmpeg_make(ffmpeg: str, out: Path, *args: str) -> Path:
    subprocess.run([ffmpeg, "-hide_banner", "-v", "error", "-y", *args, str(out)], check=True)
    return out


def make_video(path: Path, *, seconds: float = 2.0, size: str = "320x240", rate: int = 25) -> Path:
    """An H.264 (MPEG-4 Part 2 if libx264 is absent) MP4 with AAC audio, index first."""
    ffmpeg = require_ffmpeg()[1]
    codec = "libx264" if has_encoder(ffmpeg, "libx264") else "mpeg4"
    return ffmpeg_make(
        ffmpeg,
        path,
        *("-f", "lavfi", "-i", f"testsrc=duration={seconds}:size={size}:rate={rate}"),
        *("-f", "lavfi", "-i", f"sine=duration={seconds}"),
        *("-c:v", codec, "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest"),
        # moov first, so a reader without range support still finds the index
        *("-movflags", "+faststart"),
    )
