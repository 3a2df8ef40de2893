"""What a byte store can do, as small typed capabilities gathered in one composer.

The core ``DataStore`` (create / write / finish) is required. Everything else is optional and
discovered by type, so ``Tus-Extension`` is derived from what the composer holds, never typed
out by hand (the idea of tusd's ``StoreComposer``).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from tusserver.models import UploadInfo

# Called by a store each time more bytes became durable, with the new absolute offset.
# The caller records it, so a crash mid-request loses at most one checkpoint's worth.
ProgressCallback = Callable[[int], Awaitable[None]]


@runtime_checkable
class DataStore(Protocol):
    """The core: every backend creates, appends to and finishes uploads."""

    async def create(self, info: UploadInfo) -> UploadInfo:
        """Allocate storage for a new upload; may fill ``info.storage``; returns the info."""
        ...

    async def write(
        self,
        info: UploadInfo,
        chunks: AsyncIterable[bytes],
        on_progress: ProgressCallback | None = None,
    ) -> int:
        """Append ``chunks`` at ``info.offset``; return how many bytes are now durable.

        Bytes past ``info.offset`` left by an earlier, unacknowledged write are overwritten.
        When ``chunks`` ends early the bytes received so far are still stored and counted.
        """
        ...

    async def finish(self, info: UploadInfo) -> UploadInfo:
        """Called once when ``offset == length``: make the object whole and readable."""
        ...


@runtime_checkable
class Terminater(Protocol):
    async def terminate(self, info: UploadInfo) -> None:
        """Delete every byte stored for the upload; missing data is not an error."""
        ...


@runtime_checkable
class LengthDeferrer(Protocol):
    async def declare_length(self, info: UploadInfo) -> UploadInfo:
        """The client has just declared ``info.length`` for a deferred upload."""
        ...


@runtime_checkable
class Concater(Protocol):
    async def concat(self, final: UploadInfo, partials: Sequence[UploadInfo]) -> None:
        """Fill ``final`` with the partials' bytes, in order; partials stay untouched."""
        ...


@runtime_checkable
class Reader(Protocol):
    def read(self, info: UploadInfo, start: int, end: int) -> AsyncIterator[bytes]:
        """Yield the bytes in ``[start, end)`` of a stored upload."""
        ...


@runtime_checkable
class Truncater(Protocol):
    async def truncate(self, info: UploadInfo, offset: int) -> None:
        """Drop every byte at or after ``offset`` (used to roll back a failed checksum)."""
        ...


@runtime_checkable
class Reconciler(Protocol):
    async def reconcile(self, info: UploadInfo) -> UploadInfo:
        """Return ``info`` with its offset lowered to what storage really holds, if less.

        Guards the invariant "a recorded offset never exceeds durable bytes" after a crash.
        """
        ...


@runtime_checkable
class Recoverer(Protocol):
    async def recover(self, upload_id: str) -> UploadInfo | None:
        """Rebuild an upload's record from storage alone (its state was lost), or None.

        The offset it reports counts only bytes that are durable in storage.
        """
        ...


# Small derived files kept beside an upload's bytes (the catalog's thumbnail). A closed set:
# termination removes exactly these, and no client-chosen name ever reaches a path or key.
SIDECAR_NAMES = ("thumb.jpg",)


@runtime_checkable
class Locator(Protocol):
    """Where a finished upload's bytes live, for the catalog and for tools that read them."""

    @property
    def backend(self) -> str:
        """A short backend name recorded beside the key (``local``, ``s3``)."""
        ...

    def storage_key(self, info: UploadInfo) -> str:
        """The object key (S3) or the path relative to the data directory (local)."""
        ...

    async def media_source(self, info: UploadInfo, ttl: int) -> str:
        """Something ffprobe can open: a local path or a URL valid for ``ttl`` seconds."""
        ...

    async def stored_size(self, info: UploadInfo) -> int | None:
        """The size of the finished object, or None when it is not there."""
        ...


@runtime_checkable
class Presigner(Protocol):
    """Stores whose objects clients fetch directly (S3): a short-lived signed GET URL."""

    async def presign_get(
        self, info: UploadInfo, *, ttl: int, content_type: str, disposition: str
    ) -> str: ...


@runtime_checkable
class Sidecars(Protocol):
    """Small derived files stored beside an upload; names come from ``SIDECAR_NAMES``."""

    async def put_sidecar(self, info: UploadInfo, name: str, data: bytes) -> str:
        """Store ``data`` (replacing any earlier one); returns its storage key."""
        ...

    async def get_sidecar(self, info: UploadInfo, name: str) -> bytes | None: ...


# Asked by the orphan sweep before it deletes anything: does any state know this upload
# (including state it can rebuild from storage)?
KnownCheck = Callable[[str], Awaitable[bool]]


@runtime_checkable
class OrphanSweeper(Protocol):
    async def sweep_orphans(self, is_known: KnownCheck, older_than: float) -> int:
        """Remove storage no upload state knows about, created before ``older_than`` (Unix
        time): S3 multipart uploads under our prefix, local files. Returns how many."""
        ...


@runtime_checkable
class Pinger(Protocol):
    async def ping(self) -> None:
        """Raise if the store cannot be used right now (readiness; the caller bounds the
        time). Cheap: a directory check, one HEAD of the bucket."""
        ...


def check_sidecar_name(name: str) -> str:
    if name not in SIDECAR_NAMES:
        raise ValueError(f"unknown sidecar {name!r}")
    return name


@dataclass(frozen=True)
class StoreComposer:
    """The core store plus whichever optional capabilities the backend offers."""

    core: DataStore
    terminater: Terminater | None = None
    length_deferrer: LengthDeferrer | None = None
    concater: Concater | None = None
    reader: Reader | None = None
    truncater: Truncater | None = None
    reconciler: Reconciler | None = None
    recoverer: Recoverer | None = None
    locator: Locator | None = None
    sidecars: Sidecars | None = None
    orphan_sweeper: OrphanSweeper | None = None
    presigner: Presigner | None = None
    # True when ``core.finish`` does nothing that can fail (the bytes are whole as written),
    # so a completing write need not record its offset before finishing.
    finish_is_free: bool = False

    @classmethod
    def from_store(cls, store: DataStore) -> StoreComposer:
        """Use every capability ``store`` itself implements."""
        return cls(
            core=store,
            terminater=store if isinstance(store, Terminater) else None,
            length_deferrer=store if isinstance(store, LengthDeferrer) else None,
            concater=store if isinstance(store, Concater) else None,
            reader=store if isinstance(store, Reader) else None,
            truncater=store if isinstance(store, Truncater) else None,
            reconciler=store if isinstance(store, Reconciler) else None,
            recoverer=store if isinstance(store, Recoverer) else None,
            locator=store if isinstance(store, Locator) else None,
            sidecars=store if isinstance(store, Sidecars) else None,
            orphan_sweeper=store if isinstance(store, OrphanSweeper) else None,
            presigner=store if isinstance(store, Presigner) else None,
            finish_is_free=bool(getattr(store, "finish_is_free", False)),
        )

    def features(self, *, expiration: bool) -> TusFeatures:
        """The optional tus features this composer supports.

        ``checksum`` works with every store: one that can truncate rolls a bad chunk back,
        any other gets the chunk only after it verified on a local spool. ``expiration``
        needs a way to delete what expired.
        """
        return TusFeatures(
            defer_length=self.length_deferrer is not None,
            termination=self.terminater is not None,
            checksum=True,
            concatenation=self.concater is not None,
            expiration=expiration and self.terminater is not None,
        )

    def extensions(self, *, expiration: bool) -> list[str]:
        """The ``Tus-Extension`` list this composer supports, in a stable order."""
        return list(self.features(expiration=expiration).extensions)


@dataclass(frozen=True)
class TusFeatures:
    """Which optional tus features are on: handlers test these fields, and ``Tus-Extension``
    is spelled from them (``extensions``), so the two never disagree."""

    defer_length: bool
    termination: bool
    checksum: bool
    concatenation: bool
    expiration: bool

    @property
    def extensions(self) -> tuple[str, ...]:
        """The ``Tus-Extension`` names, in a stable order."""
        ext = ["creation", "creation-with-upload"]
        if self.defer_length:
            ext.append("creation-defer-length")
        if self.termination:
            ext.append("termination")
        if self.checksum:
            ext.append("checksum")
        if self.concatenation:
            ext += ["concatenation", "concatenation-unfinished"]
        if self.expiration:
            ext.append("expiration")
        return tuple(ext)
