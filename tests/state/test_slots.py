"""The two-slot record layout (``tusserver.state.slots``): bytes only, no files."""

from __future__ import annotations

import pytest

from tusserver.state import slots


def two_records(first: bytes, second: bytes, *, seqs: tuple[int, int] = (1, 2)) -> bytes:
    raw = bytearray(slots.encode_file(first, seqs[0]))
    spare = slots.encode_slot(second, seqs[1])
    size = len(raw) // 2
    raw[size : size + len(spare)] = spare
    return bytes(raw)


def test_a_new_file_holds_its_record_in_slot_zero() -> None:
    raw = slots.encode_file(b'{"a":1}', 7)
    assert len(raw) == 2 * slots.MIN_SLOT
    assert raw.startswith(b"tus-state1 0000000000000007 00000007 ")
    current = slots.parse(raw)
    assert (current.payload, current.seq, current.index) == (b'{"a":1}', 7, 0)
    assert current.next_position == slots.MIN_SLOT


def test_the_highest_valid_sequence_wins_in_either_slot() -> None:
    assert slots.parse(two_records(b"old", b"new")).payload == b"new"
    newest_first = two_records(b"new", b"old", seqs=(9, 8))
    current = slots.parse(newest_first)
    assert (current.payload, current.index, current.next_position) == (b"new", 0, 1024)


@pytest.mark.parametrize("where", ["payload", "seq", "length", "magic"])
def test_a_damaged_slot_is_passed_over(where: str) -> None:
    raw = bytearray(two_records(b"old", b"newer"))
    start = len(raw) // 2
    position = {
        "magic": start,
        "seq": start + len(slots.MAGIC) + 15,
        "length": start + len(slots.MAGIC) + 17 + 7,
        "payload": start + slots.HEADER_SIZE + 1,
    }[where]
    # "2" -> "3" keeps a header field hex; the CRC (over seq and payload) still catches it.
    raw[position] = ord("3") if where in ("seq", "length") else raw[position] ^ 0x20
    current = slots.parse(bytes(raw))
    assert (current.payload, current.seq) == (b"old", 1)


def test_a_length_past_the_slot_is_refused() -> None:
    raw = bytearray(slots.encode_file(b"x"))
    header = slots.MAGIC + b"%016x %08x %08x\n" % (1, 5000, 0)
    raw[: len(header)] = header
    with pytest.raises(ValueError, match="no valid slot"):
        slots.parse(bytes(raw))


@pytest.mark.parametrize("size", [0, 100, 2047, 3000, 2049])
def test_a_file_not_two_power_of_two_slots_is_refused(size: int) -> None:
    raw = (slots.encode_file(b"{}") + bytes(4096))[:size]
    with pytest.raises(ValueError, match="slotted record of"):
        slots.parse(raw)


def test_slots_leave_room_to_grow() -> None:
    assert slots.slot_size_for(0) == 1024
    room = 1024 // 2 - slots.HEADER_SIZE
    assert slots.slot_size_for(room) == 1024
    assert slots.slot_size_for(room + 1) == 2048
    assert slots.slot_size_for(5000) == 16384
    payload = b"y" * 5000
    current = slots.parse(slots.encode_file(payload))
    assert current.fits(2 * len(payload))
    assert not current.fits(current.slot_size)


def test_only_the_layout_is_recognised_as_slotted() -> None:
    assert slots.is_slotted(slots.encode_file(b"{}"))
    assert not slots.is_slotted(b'{"id": "x"}')
    assert not slots.is_slotted(b"")
