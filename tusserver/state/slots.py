"""The on-disk layout of one local state record: two slots, updated in place.

A record file is two slots of equal size (a power of two, at least 1 KiB). Each slot holds a
one-line text header and a payload (the upload's JSON)::

    tus-state1 <seq: 16 hex> <length: 8 hex> <crc32: 8 hex>\\n<payload>

An update writes the slot that does not hold the newest record, with the next sequence
number, then fdatasyncs. A reader takes the valid slot with the highest sequence number; a
slot torn by a crash fails its CRC and the other one, the previous record, is used. So a
record still changes whole or not at all, as with write-a-temporary-then-rename, without
creating and deleting an inode per update: on ext4 without a journal, allocating an inode
scans past every inode freed in the last minute, and a busy server frees hundreds a second.
Updating in place also needs no new disk blocks, so it cannot fail on a full disk.

This module owns only the bytes (encode, parse, which slot is next); ``state.local`` owns
the files.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

MAGIC = b"tus-state1 "
_HEADER = re.compile(rb"tus-state1 ([0-9a-f]{16}) ([0-9a-f]{8}) ([0-9a-f]{8})\n")
HEADER_SIZE = len(MAGIC) + 16 + 1 + 8 + 1 + 8 + 1
MIN_SLOT = 1024


@dataclass(frozen=True, slots=True)
class Current:
    """The newest valid record of a file, and where the next one goes."""

    payload: bytes
    seq: int
    slot_size: int
    index: int

    @property
    def next_position(self) -> int:
        return (1 - self.index) * self.slot_size

    def fits(self, payload_size: int) -> bool:
        return HEADER_SIZE + payload_size <= self.slot_size


def slot_size_for(payload_size: int) -> int:
    """Room for twice the payload: a record grows a little over its life (offset digits,
    finish time), and outgrowing the slot costs a rewrite of the whole file."""
    size = MIN_SLOT
    while size < 2 * (HEADER_SIZE + payload_size):
        size *= 2
    return size


def _checksum(seq: int, payload: bytes) -> int:
    # The sequence number is covered too: a stale slot cannot pass for a newer one.
    return zlib.crc32(payload, zlib.crc32(b"%016x" % seq))


def encode_slot(payload: bytes, seq: int) -> bytes:
    """Header and payload of one slot (the bytes after them in the slot are ignored)."""
    header = MAGIC + b"%016x %08x %08x\n" % (seq, len(payload), _checksum(seq, payload))
    return header + payload


def encode_file(payload: bytes, seq: int = 1) -> bytes:
    """A whole new file: the record in slot 0, slot 1 empty. All of it is written (no sparse
    hole), so later in-place updates find their blocks allocated."""
    slot_size = slot_size_for(len(payload))
    first = encode_slot(payload, seq)
    return first + bytes(2 * slot_size - len(first))


def is_slotted(raw: bytes) -> bool:
    """True for this layout; False for anything else (a record written as bare JSON by
    versions before it, or garbage)."""
    return raw.startswith(MAGIC)


def _read_slot(raw: bytes, index: int, slot_size: int) -> tuple[int, bytes] | None:
    start = index * slot_size
    match = _HEADER.match(raw, start, start + HEADER_SIZE)
    if match is None:
        return None
    seq, length, crc = (int(field, 16) for field in match.groups())
    body = start + HEADER_SIZE
    if body + length > start + slot_size:
        return None
    payload = raw[body : body + length]
    if _checksum(seq, payload) != crc:
        return None
    return seq, payload


def parse(raw: bytes) -> Current:
    """The newest valid record of a file in this layout. ``ValueError`` when neither slot
    holds one (or the file's size is not two slots)."""
    slot_size = len(raw) // 2
    if slot_size < MIN_SLOT or slot_size & (slot_size - 1) or len(raw) != 2 * slot_size:
        raise ValueError(f"a slotted record of {len(raw)} bytes")
    best: Current | None = None
    for index in (0, 1):
        found = _read_slot(raw, index, slot_size)
        if found is not None and (best is None or found[0] > best.seq):
            best = Current(found[1], found[0], slot_size, index)
    if best is None:
        raise ValueError("no valid slot")
    return best
