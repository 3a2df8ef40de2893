"""Content-type sniffing on real headers (made by ffmpeg, or written out by hand) and the
declared-versus-detected rules that decide what we serve."""

from __future__ import annotations

import dataclasses
import io
import struct
import zipfile
from pathlib import Path

import pytest

from catalog.sniff import SNIFF_BYTES, ContentTypeVerdict, detect, reconcile
from tests.mediafiles import ffmpeg_make, has_encoder, require_ffmpeg

VIDEO = ("-f", "lavfi", "-i", "testsrc=duration=0.4:size=64x48:rate=10")
AUDIO = ("-f", "lavfi", "-i", "sine=duration=0.4")

# (file name, ffmpeg output arguments, encoder that must be built in, expected type)
FFMPEG_SAMPLES = [
    ("clip.mp4", (*VIDEO, "-c:v", "mpeg4"), "mpeg4", "video/mp4"),
    ("clip.mov", (*VIDEO, "-c:v", "mpeg4"), "mpeg4", "video/quicktime"),
    ("clip.m4v", (*VIDEO, "-c:v", "mpeg4"), "mpeg4", "video/x-m4v"),
    ("clip.3gp", (*VIDEO, "-c:v", "mpeg4"), "mpeg4", "video/3gpp"),
    ("clip.3g2", (*VIDEO, "-c:v", "mpeg4"), "mpeg4", "video/3gpp2"),
    ("clip.webm", (*VIDEO, "-c:v", "libvpx"), "libvpx", "video/webm"),
    ("clip.mkv", (*VIDEO, "-c:v", "mpeg4"), "mpeg4", "video/x-matroska"),
    ("clip.ts", (*VIDEO, "-c:v", "mpeg4"), "mpeg4", "video/mp2t"),
    (
        "clip.m2ts",
        (*VIDEO, "-c:v", "mpeg4", "-f", "mpegts", "-mpegts_m2ts_mode", "1"),
        "mpeg4",
        "video/mp2t",
    ),
    ("clip.ogv", (*VIDEO, "-c:v", "libtheora"), "libtheora", "video/ogg"),
    ("clip.avi", (*VIDEO, "-c:v", "mpeg4"), "mpeg4", "video/x-msvideo"),
    ("clip.flv", (*VIDEO, "-c:v", "flv"), "flv", "video/x-flv"),
    ("clip.mpg", (*VIDEO, "-c:v", "mpeg2video"), "mpeg2video", "video/mpeg"),
    ("tone.wav", AUDIO, "pcm_s16le", "audio/x-wav"),
    ("tone.mp3", AUDIO, "libmp3lame", "audio/mpeg"),
    ("tone.m4a", (*AUDIO, "-c:a", "aac"), "aac", "audio/mp4"),
    ("tone.flac", AUDIO, "flac", "audio/x-flac"),
    ("tone.oga", (*AUDIO, "-c:a", "flac"), "flac", "audio/ogg"),
    ("frame.png", (*VIDEO, "-frames:v", "1"), "png", "image/png"),
    ("frame.jpg", (*VIDEO, "-frames:v", "1"), "mjpeg", "image/jpeg"),
]


@pytest.fixture(scope="module")
def ffmpeg() -> str:
    return require_ffmpeg()[1]


@pytest.mark.parametrize(
    ("name", "args", "encoder", "expected"),
    FFMPEG_SAMPLES,
    ids=[sample[0] for sample in FFMPEG_SAMPLES],
)
def test_detects_files_made_by_ffmpeg(
    ffmpeg: str, tmp_path: Path, name: str, args: tuple[str, ...], encoder: str, expected: str
) -> None:
    if not has_encoder(ffmpeg, encoder):
        pytest.skip(f"this ffmpeg has no {encoder} encoder")
    path = ffmpeg_make(ffmpeg, tmp_path / name, *args)
    with path.open("rb") as file:
        head = file.read(SNIFF_BYTES)

    assert detect(head) == expected


def test_sniff_bytes_is_what_filetype_reads() -> None:
    assert SNIFF_BYTES == 8192


# -- handwritten headers -------------------------------------------------------------------


def zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("readme.txt", "hello")
    return buffer.getvalue()


def ebml_header(doctype_size: bytes, doctype: bytes) -> bytes:
    """An EBML header: EBMLVersion 1, then DocType with the given size encoding."""
    body = b"\x42\x86\x81\x01" + b"\x42\x82" + doctype_size + doctype
    return b"\x1a\x45\xdf\xa3" + bytes([0x80 | len(body)]) + body + b"\x18\x53\x80\x67"


def ogg_bos_page(serial: int, packet: bytes) -> bytes:
    """A beginning-of-stream Ogg page holding one packet (CRC left zero: not checked)."""
    header = b"OggS" + bytes([0, 0x02]) + bytes(8) + struct.pack("<III", serial, 0, 0)
    return header + bytes([1, len(packet)]) + packet


def atom(kind: bytes, payload: bytes = b"") -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


TS_PACKET = b"\x47\x40\x00\x10" + bytes(184)


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        pytest.param(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", "application/pdf", id="pdf"),
        pytest.param(zip_bytes(), "application/zip", id="zip"),
        pytest.param(b"GIF89a\x01\x00\x01\x00\x80\x00\x00" + bytes(20), "image/gif", id="gif"),
        pytest.param(b"GIF87a\x01\x00\x01\x00\x00\x00\x00" + bytes(20), "image/gif", id="gif87"),
        # DocType with a two-byte size: legal EBML, missed by filetype.
        pytest.param(ebml_header(b"\x40\x04", b"webm"), "video/webm", id="webm-long-size"),
        pytest.param(ebml_header(b"\x88", b"matroska"), "video/x-matroska", id="mkv"),
        pytest.param(ebml_header(b"\x84", b"xyzw"), None, id="ebml-unknown-doctype"),
        # Theora after a Vorbis stream is still a video; Vorbis alone is audio.
        pytest.param(
            ogg_bos_page(1, b"\x01vorbis" + bytes(23)) + ogg_bos_page(2, b"\x80theora" + bytes(35)),
            "video/ogg",
            id="ogg-theora",
        ),
        pytest.param(ogg_bos_page(1, b"\x01vorbis" + bytes(23)), "audio/ogg", id="ogg-vorbis"),
        # ISO-BMFF brands: QuickTime is not MP4, even when it also lists "isom".
        pytest.param(
            atom(b"ftyp", b"qt  \0\0\0\0isom") + atom(b"free"), "video/quicktime", id="qt"
        ),
        pytest.param(atom(b"ftyp", b"isom\0\0\0\0isommp41"), "video/mp4", id="isom"),
        pytest.param(atom(b"ftyp", b"dash\0\0\0\0iso6"), "video/mp4", id="dash"),
        pytest.param(atom(b"ftyp", b"heic\0\0\0\0mif1heic"), "image/heic", id="heic-to-filetype"),
        # QuickTime from before the ftyp box.
        pytest.param(atom(b"moov", atom(b"mvhd", bytes(100))), "video/quicktime", id="qt-moov"),
        pytest.param(atom(b"wide") + atom(b"mdat", bytes(64)), "video/quicktime", id="qt-wide"),
        pytest.param(b"I'm free to go, this is just text", None, id="text-with-free"),
        pytest.param(b"abcdmoov and more text here....", None, id="text-with-moov"),
        pytest.param(atom(b"mdat", bytes(64)), None, id="bare-mdat"),
        # MPEG transport streams: sync byte every 188 (or 192 for .m2ts) bytes.
        pytest.param(TS_PACKET * 3, "video/mp2t", id="ts"),
        pytest.param((b"\0\0\0\0" + TS_PACKET) * 3, "video/mp2t", id="m2ts"),
        pytest.param(TS_PACKET * 2, None, id="ts-too-short"),
        pytest.param(TS_PACKET * 2 + b"x" * 188, None, id="ts-broken-sync"),
        pytest.param(b"Good morning\n" * 100, None, id="text-starting-with-G"),
        # Text, markup and JSON have no magic number: left to the declared type.
        pytest.param(b"", None, id="empty"),
        pytest.param(b"hello world\n", None, id="text"),
        pytest.param(b'{"title": "holiday.mp4"}', None, id="json"),
        pytest.param(b"<!doctype html><script>alert(1)</script>", None, id="html"),
        pytest.param(b"<svg xmlns='http://www.w3.org/2000/svg'/>", None, id="svg"),
    ],
)
def test_detects_handwritten_headers(head: bytes, expected: str | None) -> None:
    assert detect(head) == expected


def test_detect_uses_only_the_head() -> None:
    # Anything past SNIFF_BYTES must not change the answer.
    assert detect(b"hello" + bytes(SNIFF_BYTES) + b"%PDF-1.7") is None


# -- reconcile -----------------------------------------------------------------------------

OCTET = "application/octet-stream"


@pytest.mark.parametrize(
    ("declared", "detected", "content_type", "declared_out", "mismatch"),
    [
        # agreement, parameters, case, aliases
        ("video/mp4", "video/mp4", "video/mp4", "video/mp4", False),
        ("video/mp4; codecs=avc1", "video/mp4", "video/mp4", "video/mp4", False),
        ('Video/MP4 ; codecs="avc1.42E01E"', None, "video/mp4", "video/mp4", False),
        ("image/jpg", "image/jpeg", "image/jpeg", "image/jpg", False),
        ("audio/wav", "audio/x-wav", "audio/x-wav", "audio/wav", False),
        ("audio/flac", "audio/x-flac", "audio/x-flac", "audio/flac", False),
        (
            "application/x-zip-compressed",
            "application/zip",
            "application/zip",
            "application/x-zip-compressed",
            False,
        ),
        # the bytes win, and disagreement is reported
        ("video/mp4", "video/quicktime", "video/quicktime", "video/mp4", True),
        ("video/quicktime", "video/mp4", "video/mp4", "video/quicktime", True),
        ("video/webm", "video/x-matroska", "video/x-matroska", "video/webm", True),
        ("text/html", "image/png", "image/png", "text/html", True),
        ("image/svg+xml", "image/gif", "image/gif", "image/svg+xml", True),
        # octet-stream is "I don't know", not a claim the bytes can contradict
        (OCTET, "video/mp4", "video/mp4", OCTET, False),
        (None, "video/mp4", "video/mp4", None, False),
        # malformed declarations are dropped
        ("../../etc", "video/mp4", "video/mp4", None, False),
        ("../../etc", None, OCTET, None, False),
        ("", None, OCTET, None, False),
        (None, None, OCTET, None, False),
        ("video", None, OCTET, None, False),
        ("video/", None, OCTET, None, False),
        ("*/*", "video/mp4", "video/mp4", None, False),
        ("video/mp4\r\nX-Injected: 1", None, OCTET, None, False),
        ("video/mp4 x", None, OCTET, None, False),
        ("a" * 130 + "/b", None, OCTET, None, False),
        # unknown bytes: the declared type is used, unless a browser would render it actively
        ("text/plain", None, "text/plain", "text/plain", False),
        ("application/json; charset=utf-8", None, "application/json", "application/json", False),
        ("video/mp4", None, "video/mp4", "video/mp4", False),
        ("text/html", None, OCTET, "text/html", False),
        ("TEXT/HTML; charset=utf-8", None, OCTET, "text/html", False),
        ("application/xhtml+xml", None, OCTET, "application/xhtml+xml", False),
        ("image/svg+xml", None, OCTET, "image/svg+xml", False),
        ("text/xml", None, OCTET, "text/xml", False),
        ("application/xml", None, OCTET, "application/xml", False),
        ("application/rss+xml", None, OCTET, "application/rss+xml", False),
        ("application/javascript", None, OCTET, "application/javascript", False),
        ("text/javascript", None, OCTET, "text/javascript", False),
    ],
)
def test_reconcile(
    declared: str | None,
    detected: str | None,
    content_type: str,
    declared_out: str | None,
    mismatch: bool,
) -> None:
    verdict = reconcile(declared, detected)
    assert verdict == ContentTypeVerdict(
        content_type=content_type, declared=declared_out, detected=detected, mismatch=mismatch
    )


def test_verdict_is_frozen() -> None:
    verdict = reconcile("video/mp4", "video/mp4")
    with pytest.raises(dataclasses.FrozenInstanceError):
        verdict.content_type = "text/html"  # type: ignore[misc]


def test_detect_then_reconcile_serves_the_bytes_not_the_claim() -> None:
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(17)
    verdict = reconcile("text/html; charset=utf-8", detect(png))
    assert verdict == ContentTypeVerdict("image/png", "text/html", "image/png", mismatch=True)
