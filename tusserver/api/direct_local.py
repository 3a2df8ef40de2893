"""Direct uploads on local disk: our own signed PUT URLs stand in for S3's presigned ones.

This module owns the layout ``<data dir>/direct/parts/<id>/<part number>`` (part 0 is the body
of a single PUT) and the promises that go with it:

* a part is received into a temporary file and put in place by one ``os.replace`` after
  ``fsync``, so a part is either whole or absent, and a repeated PUT replaces it whole;
* a part never grows past its expected size (413 as soon as it would);
* complete checks every part's size, verifies each client ETag against the part's MD5 while it
  concatenates them, and moves the result to the store's data file ``<data dir>/<id>.bin``
  in one rename (same file system), where the store's reader and the catalog find it.

Ids are validated before any path is built; part numbers are integers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import shutil
from collections.abc import AsyncIterable, Sequence
from pathlib import Path

from tusserver import errors
from tusserver.api.direct_backend import CompletedPart, PartsRejected, Stored, Target, bare_etag
from tusserver.api.direct_state import DirectUpload, check_id
from tusserver.api.part_tokens import PartClaim, PartSigner
from tusserver.core.fsutil import close_and_place, fsync_dir, mtime_or_none, write_all
from tusserver.models import UploadInfo
from tusserver.storage.base import KnownCheck
from tusserver.storage.local import LocalStore

# The route of the signed PUT endpoint; public (no bearer token), the token is the credential.
PART_PATH = "/api/v1/uploads/direct-parts/"
_FILE_MODE = 0o600
_BATCH = 1024 * 1024
_PIECE = 1024 * 1024


class LocalDirectBackend:
    def __init__(self, store: LocalStore, signer: PartSigner) -> None:
        self._store = store
        self._signer = signer
        self._parts_root = store.root / "direct" / "parts"
        self._parts_root.mkdir(parents=True, exist_ok=True)

    @property
    def name(self) -> str:
        return "local"

    @property
    def signer(self) -> PartSigner:
        return self._signer

    def storage_key(self, upload_id: str) -> str:
        return self._store.storage_key(UploadInfo(id=upload_id, length=None))

    def _final(self, upload_id: str) -> Path:
        return self._store.root / self.storage_key(upload_id)

    def _dir(self, upload_id: str) -> Path:
        return self._parts_root / check_id(upload_id)

    async def start(self, upload: DirectUpload) -> DirectUpload:
        await asyncio.to_thread(self._dir(upload.id).mkdir, mode=0o700)
        return upload

    async def target(
        self, upload: DirectUpload, part_number: int, *, expires_at: int, base_url: str
    ) -> Target:
        single = upload.kind == "single"
        claim = PartClaim(
            upload_id=upload.id,
            part_number=part_number,
            expires_at=expires_at,
            content_type=upload.content_type if single else None,
        )
        headers = {"Content-Type": upload.content_type} if single else {}
        return Target(url=f"{base_url}{PART_PATH}{self._signer.sign(claim)}", headers=headers)

    async def received_parts(self, upload: DirectUpload) -> list[int]:
        def scan() -> list[int]:
            try:
                names = os.listdir(self._dir(upload.id))
            except FileNotFoundError:
                return []
            return sorted(int(name) for name in names if name.isdigit())

        return await asyncio.to_thread(scan)

    async def receive(
        self,
        upload: DirectUpload,
        part_number: int,
        chunks: AsyncIterable[bytes],
        *,
        limit: int,
        exact: bool,
    ) -> tuple[int, str]:
        """Store one part from ``chunks``; return its size and MD5 (hex).

        A missing parts directory (the upload was completed or aborted meanwhile) is
        ``FileNotFoundError``; more than ``limit`` bytes is ``PayloadTooLarge``; with
        ``exact``, fewer is ``SizeMismatch`` (a multipart part has one right size, and
        refusing it now beats refusing the whole list at complete).
        """
        directory = self._dir(upload.id)
        temp = directory / f".{part_number}.{secrets.token_hex(8)}.tmp"
        fd = await asyncio.to_thread(
            os.open, temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _FILE_MODE
        )
        placed = False
        try:
            digest = hashlib.md5(usedforsecurity=False)
            size = 0
            buf = bytearray()
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise errors.PayloadTooLarge(f"this part may hold at most {limit} bytes")
                digest.update(chunk)
                buf += chunk
                if len(buf) >= _BATCH:
                    await asyncio.to_thread(write_all, fd, bytes(buf))
                    buf.clear()
            if exact and size != limit:
                raise errors.SizeMismatch(f"this part must hold exactly {limit} bytes")
            if buf:
                await asyncio.to_thread(write_all, fd, bytes(buf))
            placed = True
            await asyncio.to_thread(close_and_place, fd, temp, directory / str(part_number))
            return size, digest.hexdigest()
        finally:
            if not placed:
                os.close(fd)
                with contextlib.suppress(FileNotFoundError):
                    await asyncio.to_thread(temp.unlink)

    async def finish(self, upload: DirectUpload, parts: Sequence[CompletedPart]) -> Stored:
        directory = self._dir(upload.id)
        final = self._final(upload.id)
        placed = await asyncio.to_thread(self._already_placed, directory, final)
        if placed is not None:
            return placed
        if upload.kind == "single":
            return Stored(await asyncio.to_thread(self._place_single, directory, final))
        expected = [(p.number, upload.expected_part_size(p.number) or 0, p.etag) for p in parts]
        stored = await asyncio.to_thread(self._assemble, directory, expected, final)
        await asyncio.to_thread(shutil.rmtree, directory, ignore_errors=True)
        return stored

    @staticmethod
    def _already_placed(directory: Path, final: Path) -> Stored | None:
        """The object of a complete that placed it, then failed to record that (a full disk
        can fail the record's write): its parts are gone, the checked object is in place."""
        if directory.exists():
            return None
        try:
            return Stored(final.stat().st_size)
        except FileNotFoundError:
            return None

    @staticmethod
    def _place_single(directory: Path, final: Path) -> int:
        body = directory / "0"
        try:
            size = body.stat().st_size
            os.replace(body, final)
        except FileNotFoundError:
            raise errors.UploadIncomplete("nothing was uploaded to the URL yet") from None
        fsync_dir(final.parent)
        shutil.rmtree(directory, ignore_errors=True)
        return size

    @staticmethod
    def _assemble(directory: Path, parts: Sequence[tuple[int, int, str]], final: Path) -> Stored:
        # Sizes first: cheap, and the commonest mistake (a part cut at the wrong place).
        for number, size, _ in parts:
            try:
                held = (directory / str(number)).stat().st_size
            except FileNotFoundError:
                if not directory.exists():
                    raise errors.InvalidUploadState("the upload's parts are gone") from None
                raise PartsRejected(f"part {number} was not uploaded") from None
            if held != size:
                raise PartsRejected(f"part {number} holds {held} bytes, expected {size}")
        temp = directory / f".assembled.{secrets.token_hex(8)}"
        out = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _FILE_MODE)
        placed = False
        try:
            total = 0
            # The bytes pass through once anyway: the catalog gets their SHA-256 for free.
            whole = hashlib.sha256()
            for number, _, etag in parts:
                digest = hashlib.md5(usedforsecurity=False)
                with open(directory / str(number), "rb") as src:
                    while piece := src.read(_PIECE):
                        digest.update(piece)
                        whole.update(piece)
                        write_all(out, piece)
                        total += len(piece)
                if digest.hexdigest() != bare_etag(etag):
                    raise PartsRejected(f"the etag of part {number} does not match its bytes")
            placed = True
            close_and_place(out, temp, final)
            return Stored(total, whole.hexdigest())
        finally:
            if not placed:
                os.close(out)
                temp.unlink(missing_ok=True)

    async def store(self, upload: DirectUpload, data: bytes) -> None:
        final = self._final(upload.id)
        # A dot name: the orphan sweep of the store only looks at "<id>.bin" names.
        temp = final.with_name(f".{final.name}.{secrets.token_hex(8)}.tmp")

        def write() -> None:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _FILE_MODE)
            try:
                write_all(fd, data)
            except BaseException:
                os.close(fd)
                temp.unlink(missing_ok=True)
                raise
            close_and_place(fd, temp, final)

        await asyncio.to_thread(write)

    async def discard(self, upload: DirectUpload) -> None:
        await asyncio.to_thread(shutil.rmtree, self._dir(upload.id), ignore_errors=True)

    async def delete_object(self, upload: DirectUpload) -> None:
        await asyncio.to_thread(self._final(upload.id).unlink, missing_ok=True)

    async def sweep_orphans(self, is_known: KnownCheck, older_than: float) -> int:
        def old_dirs() -> list[str]:
            found = []
            for entry in os.scandir(self._parts_root):
                with contextlib.suppress(ValueError):
                    mtime = mtime_or_none(entry) if entry.is_dir() else None
                    if mtime is not None and mtime < older_than:
                        found.append(check_id(entry.name))
            return found

        removed = 0
        for upload_id in await asyncio.to_thread(old_dirs):
            if not await is_known(upload_id):
                await asyncio.to_thread(shutil.rmtree, self._dir(upload_id), ignore_errors=True)
                removed += 1
        return removed
