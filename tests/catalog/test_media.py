"""MediaProber on real files made by ffmpeg, over loopback HTTP, and with fake tools that hang,
flood or lie, checking it never raises, never leaks a process and never logs a signature."""

from __future__ import annotations

import asyncio
import functools
import http.server
import io
import json
import logging
import os
import random
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from catalog.media import MediaInfo, MediaProber
from tests.mediafiles import (
    ffmpeg_make,
    has_encoder,
    make_video,
    require_ffmpeg,
)


@pytest.fixture(scope="session")
def ffmpeg_tools() -> tuple[str, str]:
    return require_ffmpeg()


class Samples:
    def __init__(self, root: Path, video: Path, video_codec: str, audio: Path) -> None:
        self.root = root
        self.video = video  # 2 s, 320x240, 25 fps, with AAC audio, moov at the front
        self.video_codec = video_codec
        self.audio = audio  # audio only


@pytest.fixture(scope="session")
def samples(ffmpeg_tools: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Samples:
    ffmpeg = ffmpeg_tools[1]
    root = tmp_path_factory.mktemp("media")
    codec = "libx264" if has_encoder(ffmpeg, "libx264") else "mpeg4"
    video = make_video(root / "out.mp4")
    audio = ffmpeg_make(
        ffmpeg, root / "tone.m4a", "-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac"
    )
    return Samples(root, video, "h264" if codec == "libx264" else "mpeg4", audio)


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the JPEG's start-of-frame segment."""
    offset = 2
    while offset + 9 <= len(data):
        assert data[offset] == 0xFF, "lost marker sync"
        marker = data[offset + 1]
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height = int.from_bytes(data[offset + 5 : offset + 7], "big")
            width = int.from_bytes(data[offset + 7 : offset + 9], "big")
            return width, height
        offset += 2 + int.from_bytes(data[offset + 2 : offset + 4], "big")
    raise AssertionError("no SOF marker")


def logged_text(caplog: pytest.LogCaptureFixture) -> str:
    """Everything the records carry, message and extra fields alike."""
    return "\n".join(f"{r.getMessage()} {vars(r)!r}" for r in caplog.records)


def alive(pid: int) -> bool:
    """Running or an unreaped zombie: either way our process table still holds it."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def running(pid: int) -> bool:
    """Not exited (a zombie whose parent is gone waits on init, which is not ours to police)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


@pytest.fixture
def fake_tool(tmp_path: Path) -> Callable[[str], str]:
    """An executable shell script standing in for ffprobe or ffmpeg."""
    counter = iter(range(1000))

    def make(body: str) -> str:
        path = tmp_path / f"fake-tool-{next(counter)}"
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)
        return str(path)

    return make


# -- real files ----------------------------------------------------------------------------


async def test_probe_reads_duration_size_rate_and_codecs(samples: Samples) -> None:
    info = await MediaProber().probe(str(samples.video))

    assert info is not None
    assert info.duration_seconds == pytest.approx(2.0, abs=0.15)
    assert (info.width, info.height) == (320, 240)
    assert info.fps == pytest.approx(25.0)
    assert info.video_codec == samples.video_codec
    assert info.audio_codec == "aac"
    assert info.format_name is not None
    assert "mp4" in info.format_name.split(",")


async def test_probe_takes_a_path_object(samples: Samples) -> None:
    info = await MediaProber().probe(samples.video)
    assert info is not None
    assert info.width == 320


@pytest.mark.parametrize(("width", "height"), [(320, 240), (160, 120)])
async def test_thumbnail_is_a_jpeg_scaled_to_the_width(
    samples: Samples, width: int, height: int
) -> None:
    image = await MediaProber(thumbnail_width=width).thumbnail(str(samples.video))

    assert image is not None
    assert image[:3] == b"\xff\xd8\xff"
    assert jpeg_size(image) == (width, height)


async def test_thumbnail_at_a_given_time_and_past_the_end(samples: Samples) -> None:
    prober = MediaProber()
    image = await prober.thumbnail(str(samples.video), at_seconds=0.5)
    assert image is not None
    assert image[:3] == b"\xff\xd8\xff"
    assert await prober.thumbnail(str(samples.video), at_seconds=30.0) is None


async def test_audio_only_has_info_but_no_thumbnail(samples: Samples) -> None:
    prober = MediaProber()
    info = await prober.probe(str(samples.audio))
    assert info is not None
    assert info.audio_codec == "aac"
    assert (info.video_codec, info.width, info.height, info.fps) == (None, None, None, None)
    assert await prober.thumbnail(str(samples.audio)) is None


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("doc.pdf", b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<<>>\n%%EOF\n"),
        ("noise.bin", random.Random(1234).randbytes(65536)),
        # ffmpeg's tty demuxer would call any .txt an "ansi" video
        ("notes.txt", b"lorem ipsum dolor sit amet\n" * 2000),
    ],
)
async def test_not_media_is_none_without_a_warning(
    ffmpeg_tools: tuple[str, str],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    name: str,
    content: bytes,
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    prober = MediaProber()

    with caplog.at_level(logging.DEBUG, logger="catalog.media"):
        assert await prober.probe(str(path)) is None
        assert await prober.thumbnail(str(path)) is None
        assert await prober.thumbnail(str(path), at_seconds=0.0) is None

    # An upload that is not a video is normal, not something to warn about.
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_a_file_name_that_looks_like_an_option(
    samples: Samples, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Relative, so the argument really starts with "-": read as an option, "-version" would
    # print ffprobe's version and no JSON.
    shutil.copy(samples.video, tmp_path / "-version")
    monkeypatch.chdir(tmp_path)
    prober = MediaProber()

    info = await prober.probe("-version")
    assert info is not None
    assert info.width == 320
    image = await prober.thumbnail("-version")
    assert image is not None
    assert image[:3] == b"\xff\xd8\xff"


async def test_a_missing_file_is_none_and_a_warning(
    ffmpeg_tools: tuple[str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="catalog.media"):
        assert await MediaProber().probe(str(tmp_path / "gone.mp4")) is None
    assert [r.getMessage() for r in caplog.records] == ["media.probe_failed"]


# -- over HTTP -----------------------------------------------------------------------------


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with single-range ``Range: bytes=a-b`` support, as S3 serves them."""

    def send_head(self) -> Any:
        path = self.translate_path(self.path)  # drops the query string
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "").strip())
        if match is None or not os.path.isfile(path) or match.groups() == ("", ""):
            return super().send_head()
        size = os.path.getsize(path)
        first, last = match.groups()
        if first:
            start, end = int(first), min(int(last) if last else size - 1, size - 1)
        else:  # suffix range: the last N bytes
            start, end = max(0, size - int(last)), size - 1
        if start >= size or start > end:
            self.send_error(416)
            return None
        with open(path, "rb") as file:
            file.seek(start)
            body = file.read(end - start + 1)
        self.send_response(206)
        self.send_header("Content-Type", self.guess_type(path))
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        return io.BytesIO(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # ffmpeg hangs up mid-body once it has what it needs


@pytest.fixture
def http_base(samples: Samples) -> Iterator[str]:
    handler = functools.partial(RangeHandler, directory=str(samples.root))
    server = QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


async def test_probe_and_thumbnail_over_http(
    samples: Samples, http_base: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"{http_base}/out.mp4?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=secret"
    prober = MediaProber()

    with caplog.at_level(logging.DEBUG, logger="catalog.media"):
        info = await prober.probe(url)
        image = await prober.thumbnail(url)

    assert info is not None
    assert info.duration_seconds == pytest.approx(2.0, abs=0.15)
    assert (info.width, info.height) == (320, 240)
    assert image is not None
    assert jpeg_size(image) == (320, 240)
    assert "secret" not in logged_text(caplog)


async def test_http_failures_never_log_the_signature(
    samples: Samples, http_base: str, caplog: pytest.LogCaptureFixture
) -> None:
    host = http_base.removeprefix("http://")
    urls = [
        f"{http_base}/missing.mp4?X-Amz-Signature=secret",
        f"http://user:secret@{host}/missing.mp4",
        f"{http_base}/missing.mp4#secret",
    ]
    prober = MediaProber()

    with caplog.at_level(logging.DEBUG, logger="catalog.media"):
        for url in urls:
            assert await prober.probe(url) is None
            assert await prober.thumbnail(url, at_seconds=0.0) is None

    failures = [r for r in caplog.records if r.getMessage() == "media.probe_failed"]
    assert len(failures) == len(urls) * 2  # thumbnail(at_seconds=0) probes first as well
    assert failures[0].source == f"{http_base}/missing.mp4?<redacted>"  # type: ignore[attr-defined]
    assert "404" in failures[0].reason  # type: ignore[attr-defined]
    assert "secret" not in logged_text(caplog)


# -- no tools, and tools that misbehave ------------------------------------------------------


async def test_missing_tools_give_none_without_raising(tmp_path: Path) -> None:
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"\x00\x00\x00\x18ftypisom")
    for prober in (
        MediaProber(ffprobe=None, ffmpeg=None),
        MediaProber(ffprobe=str(tmp_path / "no-ffprobe"), ffmpeg=str(tmp_path / "no-ffmpeg")),
    ):
        assert not prober.available
        assert await prober.probe(str(video)) is None
        assert await prober.thumbnail(str(video)) is None


async def test_unparsable_sources_give_none(fake_tool: Callable[[str], str]) -> None:
    prober = MediaProber(ffprobe=fake_tool("exit 0"), ffmpeg=fake_tool("exit 0"))
    for source in ["http://[::1/x.mp4", "https://host:99999/x.mp4", "bad\x00path"]:
        assert await prober.probe(source) is None
        assert await prober.thumbnail(source, at_seconds=1.0) is None


async def test_a_hung_tool_is_killed_and_reaped(
    fake_tool: Callable[[str], str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pids = tmp_path / "pids"
    # The sleep is a grandchild holding our pipes: killing only the shell would leave wait()
    # blocked on pipes that never close.
    hung = fake_tool(f"echo $$ > {pids}\nsleep 10 &\necho $! >> {pids}\nwait")
    prober = MediaProber(ffprobe=hung, ffmpeg=None, timeout=0.5)

    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="catalog.media"):
        assert await prober.probe("/dev/null") is None
    assert time.monotonic() - started < 2.0

    shell, sleeper = (int(line) for line in pids.read_text().split())
    assert not alive(shell)  # killed and reaped: not even a zombie
    assert not running(sleeper)
    [record] = caplog.records
    assert record.getMessage() == "media.probe_failed"
    assert "timed out" in record.reason  # type: ignore[attr-defined]


async def test_cancelling_a_probe_kills_the_tool(
    fake_tool: Callable[[str], str], tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    hung = fake_tool(f"echo $$ > {pid_file}\nexec sleep 10")
    prober = MediaProber(ffprobe=hung, ffmpeg=None)

    task = asyncio.create_task(prober.probe("/dev/null"))
    for _ in range(100):
        if pid_file.exists() and pid_file.read_text().strip():
            break
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not alive(int(pid_file.read_text()))


async def test_oversized_or_wrong_output_is_refused(
    fake_tool: Callable[[str], str], caplog: pytest.LogCaptureFixture
) -> None:
    flood = fake_tool("head -c 3000000 /dev/zero")
    not_jpeg = fake_tool("printf 'GIF89a not a jpeg'")
    nothing = fake_tool("exit 0")

    with caplog.at_level(logging.WARNING, logger="catalog.media"):
        assert await MediaProber(ffprobe=flood, ffmpeg=None).probe("/dev/null") is None
        assert await MediaProber(ffprobe=None, ffmpeg=flood).thumbnail("/dev/null") is None
        assert await MediaProber(ffprobe=None, ffmpeg=not_jpeg).thumbnail("/dev/null") is None
        assert await MediaProber(ffprobe=None, ffmpeg=nothing).thumbnail("/dev/null") is None

    # Only our records: e.g. asyncio's "Unknown child process" would mean the exit status was
    # reaped behind the child watcher's back.
    assert {r.name for r in caplog.records} == {"catalog.media"}
    reasons = [r.reason for r in caplog.records]  # type: ignore[attr-defined]
    assert "larger than" in reasons[0]
    assert "larger than" in reasons[1]
    assert reasons[2:] == ["no JPEG frame in output", "no frame decoded"]


async def test_concurrent_runs_are_bounded(fake_tool: Callable[[str], str], tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    slow = fake_tool(f"echo start >> {trace}\nsleep 0.2\necho end >> {trace}\necho '{{}}'")
    prober = MediaProber(ffprobe=slow, ffmpeg=None, max_concurrency=1)

    results = await asyncio.gather(*(prober.probe("/dev/null") for _ in range(3)))

    assert results == [None, None, None]  # "{}" lists no streams
    assert trace.read_text().split() == ["start", "end"] * 3


VIDEO_STREAM = {"codec_type": "video", "codec_name": "h264", "width": 640, "height": 360}


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        pytest.param(
            {
                "format": {"duration": "N/A", "format_name": 7},
                "streams": [
                    {
                        **VIDEO_STREAM,
                        "width": "wide",
                        "height": -1,
                        "avg_frame_rate": "0/0",
                        "r_frame_rate": "30000/1001",
                    },
                    "not a stream",
                ],
            },
            MediaInfo(None, None, None, "h264", None, 30000 / 1001, None),
            id="odd-fields",
        ),
        pytest.param(
            {
                "format": {"duration": "nan", "format_name": "ogg"},
                "streams": [{"codec_type": "audio", "codec_name": "opus", "duration": "3.5"}],
            },
            MediaInfo(3.5, None, None, None, "opus", None, "ogg"),
            id="stream-duration-fallback",
        ),
        pytest.param(
            {"streams": [{**VIDEO_STREAM, "avg_frame_rate": "25/0", "r_frame_rate": "x/y"}]},
            MediaInfo(None, 640, 360, "h264", None, None, None),
            id="zero-denominator",
        ),
        pytest.param(
            {
                "format": {"duration": "-4", "format_name": "mp3"},
                "streams": [
                    {**VIDEO_STREAM, "codec_name": "mjpeg", "disposition": {"attached_pic": 1}},
                    {"codec_type": "audio", "codec_name": "mp3", "duration": "inf"},
                ],
            },
            MediaInfo(None, None, None, None, "mp3", None, "mp3"),
            id="cover-art-is-not-video",
        ),
        pytest.param(
            {"format": {"format_name": "tty"}, "streams": [{**VIDEO_STREAM, "codec_name": "ansi"}]},
            None,
            id="text-art",
        ),
        pytest.param(
            {
                "format": {"duration": 10**400},
                "streams": [{**VIDEO_STREAM, "avg_frame_rate": "1e308/1e-308"}],
            },
            MediaInfo(None, 640, 360, "h264", None, None, None),
            id="overflowing-numbers",
        ),
        pytest.param({"streams": [{"codec_type": "data"}]}, None, id="no-av-streams"),
        pytest.param({"streams": "nope", "format": []}, None, id="wrong-shapes"),
        pytest.param([], None, id="not-an-object"),
    ],
)
async def test_odd_probe_json_costs_only_the_odd_field(
    fake_tool: Callable[[str], str], tmp_path: Path, payload: object, expected: MediaInfo | None
) -> None:
    output = tmp_path / "probe.json"
    output.write_text(json.dumps(payload))
    prober = MediaProber(ffprobe=fake_tool(f"cat {output}"), ffmpeg=None)

    assert await prober.probe("/dev/null") == expected


@pytest.mark.parametrize("output", [b"not json", b"\xff\xfe{", b""])
async def test_unparsable_probe_output_is_none(
    fake_tool: Callable[[str], str], tmp_path: Path, output: bytes
) -> None:
    path = tmp_path / "probe.out"
    path.write_bytes(output)
    prober = MediaProber(ffprobe=fake_tool(f"cat {path}"), ffmpeg=None)
    assert await prober.probe("/dev/null") is None


def test_constructor_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="timeout"):
        MediaProber(timeout=0)
    with pytest.raises(ValueError, match="max_concurrency"):
        MediaProber(max_concurrency=0)
    with pytest.raises(ValueError, match="thumbnail_width"):
        MediaProber(thumbnail_width=0)
