"""Upload bytes in S3 (or any S3-compatible store): one multipart upload per tus upload.

One concept per module:

* ``config``: ``S3Config``, the store's settings, checked at startup;
* ``translate``: S3 failures as the server's errors (missing data, outage, refusal);
* ``client``: ``S3Bucket``, the client bound to the bucket's key layout and encryption, and
  the small requests everything else is made of (used by direct uploads too);
* ``metadata``: the finished object's Content-Type and user metadata;
* ``pipeline``: the write path, a body cut into parts uploaded while it arrives;
* ``inflight``: the parts of one write being uploaded, bounded and kept in order;
* ``finish``: completing the multipart upload, and concatenation;
* ``reads``: ranged reads, sizes, presigned GET URLs, sidecars;
* ``recover``: rebuilding an upload's record from S3 alone, and the orphan sweep;
* ``store``: ``S3Store``, the store contract composed of the above.

Across them, a writer holding a Redis lock stops before any write once its lease has lapsed
or was lost (``check_held``, a local clock test), so a stale instance cannot put a part, tail
or object after another instance took the upload over. What may still land is a request
already on the wire when the lease lapsed (the pause was in S3's hands). That is harmless by
construction: part ``n`` always holds the same byte range of the upload (part size fixed at
creation), so a stale part ``n`` holds bytes the client sent for that very range, and state
(fenced in Redis, see ``tusserver.state.fence``) alone says how many parts count; a stale
tail records its start and is ignored unless it starts where the counted parts end.
"""

from tusserver.storage.parts import MAX_OBJECT as MAX_OBJECT_SIZE
from tusserver.storage.s3.client import S3Bucket
from tusserver.storage.s3.config import S3Config, validate_prefix
from tusserver.storage.s3.metadata import content_type, user_metadata
from tusserver.storage.s3.store import S3Store

__all__ = [
    "MAX_OBJECT_SIZE",
    "S3Bucket",
    "S3Config",
    "S3Store",
    "content_type",
    "user_metadata",
    "validate_prefix",
]
