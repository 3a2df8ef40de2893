"""The secrets that sign the URLs this server serves itself (download links, part uploads).

``TUS_SIGNING_KEYS``: the first key signs, every key verifies, so keys rotate without
breaking URLs in flight. Unset, each process makes a random key at start: fine for one
process, but URLs then die with a restart and do not work across instances, which is logged.
"""

from __future__ import annotations

import logging
import secrets

from tusserver.settings import Settings

log = logging.getLogger("tusserver")

_process_key = secrets.token_bytes(32)


def signing_keys(settings: Settings) -> tuple[bytes, ...]:
    if settings.signing_keys:
        return tuple(key.get_secret_value().encode() for key in settings.signing_keys)
    if settings.state == "redis":
        log.warning(
            "signing.ephemeral_key: TUS_SIGNING_KEYS is unset; signed URLs work only on the "
            "instance that made them and die with it"
        )
    return (_process_key,)
