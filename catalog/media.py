"""Media facts about an upload: ffprobe for duration/size/codecs, ffmpeg for a thumbnail.

This module owns running those two tools safely on hostile files: as subprocesses (never a
shell) with a timeout, bounded output, a cap on how many run at once, a protocol whitelist,
and log lines that never carry a presigned URL's signature. Both operations are best-effort
enrichment of a catalog record: they return None on any failure and never raise (only
cancellation propagates), so a broken or exotic file cannot fail the upload that made it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import re
import shutil
import signal
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from tusserver.core.tasks import stop_task

log = logging.getLogger("catalog.media")

# ffprobe's JSON for -show_format -show_streams is a few KiB; a file with a huge metadata tag
# could make it large, but past this it is not worth parsing.
MAX_PROBE_OUTPUT: Final = 1024 * 1024
MAX_THUMBNAIL_BYTES: Final = 2 * 1024 * 1024
# What stderr we keep for the log line; the rest is drained and dropped so the tool never
# blocks on a full pipe.
_MAX_STDERR: Final = 4096
# After a kill, how long to wait for the pipes to close and the process to be reaped.
_REAP_TIMEOUT: Final = 5.0

# Network sources never need local files: with "file" allowed, a playlist fetched over HTTP
# (an uploaded .m3u8) could point ffmpeg at files on this machine. Local sources never need
# the network: that same playlist read from disk would make us fetch arbitrary URLs (SSRF).
# The whitelist also applies to every nested open (HLS segments, concat entries...).
_URL_PROTOCOLS: Final = "http,https,tcp,tls,crypto"
_FILE_PROTOCOLS: Final = "file"

# ffmpeg's tty demuxer turns any *.txt file into "ASCII art" video (codec ansi, 640x400);
# those and their siblings are text, not media.
_TEXT_ART_FORMATS: Final = frozenset({"tty", "bin", "xbin", "adf", "idf"})
_TEXT_ART_CODECS: Final = frozenset({"ansi", "bintext", "xbin", "idf"})

_JPEG_MAGIC: Final = b"\xff\xd8\xff"
_UNKNOWN_SOURCE: Final = "<unparsable source>"
# The query string of a presigned URL is the credential; anything that looks like a URL in
# ffmpeg's own messages gets its query cut too.
_URL_QUERY = re.compile(r"(?i)\b(https?://[^\s?#]*)[?#](?!<redacted>)\S*")
_URL_USERINFO = re.compile(r"(?i)\b(https?://)[^\s/@]*@")


@dataclass(frozen=True)
class MediaInfo:
    """What ffprobe could tell; each field is None when absent or unparsable."""

    duration_seconds: float | None
    width: int | None
    height: int | None
    video_codec: str | None
    audio_codec: str | None
    fps: float | None
    format_name: str | None


class _ToolFailed(Exception):
    """A subprocess run that produced nothing usable; the message is the logged reason."""


class _NotMedia(_ToolFailed):
    """The tool ran fine and the input is simply not audio/video (a PDF, a text file...)."""


@dataclass(frozen=True)
class _Source:
    argument: str  # what the tool is given
    protocols: str
    redacted: str  # what logs may show


class MediaProber:
    """Runs ffprobe/ffmpeg on local paths or http(s) URLs (e.g. presigned S3 GETs).

    ``ffprobe``/``ffmpeg`` are resolved with ``shutil.which`` when the prober is built: a bare
    name is looked up on PATH, a path must be executable, and None means the tool is absent
    (its operation then returns None).
    """

    def __init__(
        self,
        ffprobe: str | None = "ffprobe",
        ffmpeg: str | None = "ffmpeg",
        timeout: float = 60.0,
        thumbnail_width: int = 320,
        max_concurrency: int = 2,
    ) -> None:
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        if thumbnail_width < 2:
            raise ValueError("thumbnail_width must be at least 2")
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.ffprobe = shutil.which(ffprobe) if ffprobe else None
        self.ffmpeg = shutil.which(ffmpeg) if ffmpeg else None
        self.timeout = timeout
        self.thumbnail_width = thumbnail_width
        # Decoding is CPU- and memory-heavy; a burst of finished uploads must not fork a
        # decoder each. Waiting for a slot is not counted against the timeout.
        self._slots = asyncio.Semaphore(max_concurrency)

    @property
    def available(self) -> bool:
        """Whether probing can work at all (ffprobe was found)."""
        return self.ffprobe is not None

    async def probe(self, source: str | os.PathLike[str]) -> MediaInfo | None:
        """Duration, dimensions, codecs and frame rate; None when not media or on failure."""
        if self.ffprobe is None:
            return None
        redacted = _UNKNOWN_SOURCE
        try:
            src = _source(source)
            redacted = src.redacted
            output = await self._run(
                [
                    self.ffprobe,
                    "-hide_banner",
                    "-v",
                    "error",
                    "-protocol_whitelist",
                    src.protocols,
                    "-print_format",
                    "json",
                    "-show_format",
                    "-show_streams",
                    "-i",
                    src.argument,
                ],
                limit=MAX_PROBE_OUTPUT,
                src=src,
            )
            info = _parse_probe(_json(output))
        except asyncio.CancelledError:
            raise
        except _NotMedia as exc:
            log.debug("media.not_media", extra={"source": redacted, "reason": str(exc)})
            return None
        except Exception as exc:
            log.warning("media.probe_failed", extra={"source": redacted, "reason": _why(exc)})
            return None
        if info is None:
            log.debug("media.not_media", extra={"source": redacted, "reason": "no media streams"})
        return info

    async def thumbnail(
        self, source: str | os.PathLike[str], at_seconds: float | None = None
    ) -> bytes | None:
        """One JPEG frame ``thumbnail_width`` wide, or None when there is no video or on failure.

        The frame is taken at ``at_seconds`` when given (None past the end), else at one
        second or mid-way through shorter clips, skipping the black first frame of most videos.
        """
        if self.ffmpeg is None:
            return None
        duration: float | None = None
        if self.available:
            # Knowing there is a video stream first saves decoding non-video, and ffprobe's
            # text-art filter keeps a .txt file from being "thumbnailed" by the tty demuxer.
            info = await self.probe(source)
            if info is None:
                return None  # probe has logged why
            if info.video_codec is None:
                log.debug("media.no_video", extra={"source": _redacted(source)})
                return None
            duration = info.duration_seconds
        position = _thumbnail_position(at_seconds, duration)
        redacted = _UNKNOWN_SOURCE
        try:
            src = _source(source)
            redacted = src.redacted
            image = await self._run(
                self._thumbnail_argv(self.ffmpeg, src, position),
                limit=MAX_THUMBNAIL_BYTES,
                src=src,
            )
            if not image.startswith(_JPEG_MAGIC):
                raise _ToolFailed("no JPEG frame in output" if image else "no frame decoded")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("media.thumbnail_failed", extra={"source": redacted, "reason": _why(exc)})
            return None
        return image

    def _thumbnail_argv(self, ffmpeg: str, src: _Source, position: float) -> list[str]:
        """ffmpeg's arguments for one JPEG frame of ``src`` at ``position`` seconds."""
        return [
            ffmpeg,
            "-hide_banner",
            "-nostdin",
            "-v",
            "error",
            "-protocol_whitelist",
            src.protocols,
            # Before -i: seek in the input (range requests over HTTP), then decode
            # accurately to the frame rather than reading from the start.
            "-ss",
            f"{position:.3f}",
            "-i",
            src.argument,
            "-an",
            "-sn",
            "-dn",
            "-frames:v",
            "1",
            # -2: the height that keeps the aspect ratio, rounded to even for 4:2:0.
            "-vf",
            f"scale={self.thumbnail_width}:-2",
            "-q:v",
            "4",
            "-f",
            "image2pipe",
            "-vcodec",
            "mjpeg",
            "-",
        ]

    async def _run(self, argv: list[str], *, limit: int, src: _Source) -> bytes:
        """Stdout of a successful run; raises _ToolFailed (or _NotMedia) otherwise."""
        async with self._slots:
            try:
                process = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                    # Its own process group, so a kill reaches anything it spawned: a
                    # grandchild holding our pipes open would keep wait() from returning.
                    start_new_session=True,
                )
            except OSError as exc:
                raise _ToolFailed(f"could not start: {exc.strerror}") from None
            # Both were asked for as PIPE, so both exist; the asserts are for the type checker.
            assert process.stdout is not None
            assert process.stderr is not None
            # Both pipes are read at once, or a tool filling one would block on the other.
            reader = asyncio.ensure_future(_read_bounded(process.stdout, limit))
            stderr_reader = asyncio.ensure_future(_read_head(process.stderr, _MAX_STDERR))
            try:
                async with asyncio.timeout(self.timeout):
                    output = await reader
                    errors = await stderr_reader
                    status = await process.wait()
            except TimeoutError:
                raise _ToolFailed(f"timed out after {self.timeout:g}s") from None
            finally:
                # On any way out (limit, timeout, cancellation) no reader may outlive the run,
                # and the process is killed and reaped before its slot is given back.
                await asyncio.gather(stop_task(reader), stop_task(stderr_reader))
                if process.returncode is None:
                    await _kill(process)
        if status != 0:
            message = _redact(errors.decode("utf-8", "replace"), src)
            if "Invalid data found when processing input" in message:
                raise _NotMedia(message)
            raise _ToolFailed(f"exit status {status}: {message}")
        return output


def _source(source: str | os.PathLike[str]) -> _Source:
    text = os.fspath(source)
    if not isinstance(text, str):
        raise _ToolFailed("source is not a path or URL")
    try:
        parts = urlsplit(text)
        port = parts.port  # validates it
    except ValueError:
        raise _ToolFailed("unparsable URL") from None
    if parts.scheme in ("http", "https") and parts.hostname:
        host = parts.hostname if port is None else f"{parts.hostname}:{port}"
        # Userinfo, query and fragment can all be credentials; keep scheme, host and path.
        query = "<redacted>" if parts.query else ""
        redacted = urlunsplit((parts.scheme, host, parts.path, query, ""))
        return _Source(argument=text, protocols=_URL_PROTOCOLS, redacted=redacted)
    # Anything else is a local path. "file:" + absolute path means a name starting with "-"
    # is not an option and a name like "concat:a|b" or "http://x" is not a protocol.
    path = os.path.abspath(text)
    return _Source(argument=f"file:{path}", protocols=_FILE_PROTOCOLS, redacted=path)


def _redacted(source: str | os.PathLike[str]) -> str:
    try:
        return _source(source).redacted
    except Exception:
        return _UNKNOWN_SOURCE


def _json(output: bytes) -> object:
    try:
        return json.loads(output)
    except ValueError:  # includes UnicodeDecodeError
        raise _ToolFailed("unparsable ffprobe output") from None


def _redact(message: str, src: _Source) -> str:
    message = message.replace(src.argument, src.redacted)
    message = _URL_QUERY.sub(r"\1?<redacted>", message)
    message = _URL_USERINFO.sub(r"\1", message)
    return " ".join(message.split())[:300]


def _why(exc: BaseException) -> str:
    if isinstance(exc, _ToolFailed):
        return str(exc)
    # Not our own message: it may quote the command line (the URL), so only name the type.
    return type(exc).__name__


async def _read_bounded(stream: asyncio.StreamReader, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await stream.read(65536):
        size += len(chunk)
        if size > limit:
            raise _ToolFailed(f"output larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_head(stream: asyncio.StreamReader, keep: int) -> bytes:
    """The first ``keep`` bytes; the rest is read and dropped so the writer never blocks."""
    head = bytearray()
    while chunk := await stream.read(65536):
        head += chunk[: max(0, keep - len(head))]
    return bytes(head)


async def _kill(process: asyncio.subprocess.Process) -> None:
    """Kill the process group and reap it, draining the pipes so the transport can close."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # the whole group has exited already
    except PermissionError:
        # Not expected for our own session; fall back to the leader. Only here: Popen.kill()
        # polls (reaps) first, stealing the exit status from asyncio's child watcher.
        with contextlib.suppress(ProcessLookupError):
            process.kill()

    async def drain(stream: asyncio.StreamReader | None) -> None:
        if stream is not None:
            while await stream.read(65536):
                pass

    # In Python 3.11 wait() only returns once every pipe has hit EOF, and a reader that
    # stopped consuming (output over the limit) never would: drain both pipes as well.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(
            asyncio.gather(drain(process.stdout), drain(process.stderr), process.wait()),
            _REAP_TIMEOUT,
        )


# -- ffprobe's JSON ----------------------------------------------------------------------


def _parse_probe(data: object) -> MediaInfo | None:
    """MediaInfo from ffprobe's JSON, or None when it shows no audio or video stream.

    Every field is checked for type and range: the JSON describes a hostile file, and a field
    that is missing or odd only costs that field.
    """
    if not isinstance(data, dict):
        raise _ToolFailed("unexpected ffprobe output")
    fmt = data.get("format")
    fmt = fmt if isinstance(fmt, dict) else {}
    streams = data.get("streams")
    streams = [s for s in streams if isinstance(s, dict)] if isinstance(streams, list) else []
    format_name = _text(fmt.get("format_name"))
    if format_name is not None and _TEXT_ART_FORMATS & set(format_name.split(",")):
        return None
    video = next((s for s in streams if _is_video(s)), None)
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    if video is None and audio is None:
        return None
    duration = _seconds(fmt.get("duration"))
    for stream in (video, audio):
        if duration is None and stream is not None:
            duration = _seconds(stream.get("duration"))
    fps = None
    if video is not None:
        fps = _rate(video.get("avg_frame_rate")) or _rate(video.get("r_frame_rate"))
    return MediaInfo(
        duration_seconds=duration,
        width=_dimension(video.get("width")) if video else None,
        height=_dimension(video.get("height")) if video else None,
        video_codec=_text(video.get("codec_name")) if video else None,
        audio_codec=_text(audio.get("codec_name")) if audio else None,
        fps=fps,
        format_name=format_name,
    )


def _is_video(stream: dict[str, Any]) -> bool:
    if stream.get("codec_type") != "video" or stream.get("codec_name") in _TEXT_ART_CODECS:
        return False
    # Cover art in an MP3 or M4A is a one-frame "video" stream; the file is still audio.
    disposition = stream.get("disposition")
    return not (isinstance(disposition, dict) and disposition.get("attached_pic") == 1)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _seconds(value: object) -> float | None:
    # ffprobe prints durations as strings ("2.000000"), or "N/A".
    try:
        seconds = float(value) if isinstance(value, str | int | float) else math.nan
    except (ValueError, OverflowError):  # "N/A"; an integer too large for a float
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _dimension(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if value > 0 else None


def _rate(value: object) -> float | None:
    """A "num/den" frame rate as frames per second; "0/0" (unknown) and den=0 give None."""
    if not isinstance(value, str):
        return None
    num, slash, den = value.partition("/")
    try:
        rate = float(num) / float(den) if slash else float(num)
    except (ValueError, ZeroDivisionError, OverflowError):
        return None
    return rate if math.isfinite(rate) and rate > 0 else None


def _thumbnail_position(at_seconds: float | None, duration: float | None) -> float:
    """Where to take the frame: as asked, else at one second or mid-way through a shorter clip
    (past the black first frame most videos open with)."""
    if at_seconds is not None and math.isfinite(at_seconds):
        return max(0.0, at_seconds)
    if duration:
        return min(1.0, duration / 2)
    return 0.0
