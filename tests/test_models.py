"""tusserver.models: UploadInfo's JSON form carries every field and round-trips."""

from __future__ import annotations

import dataclasses
import json

from tusserver.models import ConcatKind, UploadInfo


def full_info() -> UploadInfo:
    return UploadInfo(
        id="0" * 32,
        length=10,
        offset=4,
        metadata={"filename": "a.txt", "flag": None},
        metadata_raw="filename YS50eHQ=,flag",
        concat=ConcatKind.FINAL,
        partials=("1" * 32, "2" * 32),
        concat_raw="final;/files/1 /files/2",
        owner="alice",
        created_at=1.5,
        expires_at=2.5,
        finished_at=3.5,
        sha256="ab" * 32,
        storage={"key": "k", "part_size": 5},
    )


def test_to_dict_names_every_field() -> None:
    # A field added to the dataclass but not to to_dict would silently vanish from state.
    assert set(full_info().to_dict()) == {f.name for f in dataclasses.fields(UploadInfo)}


def test_to_dict_is_json_and_round_trips() -> None:
    info = full_info()
    assert UploadInfo.from_dict(json.loads(json.dumps(info.to_dict()))) == info
    assert UploadInfo.from_dict(UploadInfo(id="f" * 32, length=None).to_dict()) == UploadInfo(
        id="f" * 32, length=None
    )
