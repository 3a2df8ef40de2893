"""What differs between the draft's interop versions, as data: one ``InteropRules`` per version.

Handlers never test a version number; they read these fields. The table in
(docs/protocol.md, "IETF draft: what differs between interop versions") lists the same facts
with the draft sections they come from.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.datastructures import Headers

from tusserver.errors import InvalidDraftField, UnsupportedInteropVersion
from tusserver.ietf.fields import parse_sf_boolean

INTEROP_HEADER = "Upload-Draft-Interop-Version"
PARTIAL_UPLOAD = "application/partial-upload"


@dataclass(frozen=True, slots=True)
class InteropRules:
    """One iteration of the draft, as the server must speak it."""

    # None: a request with the draft's headers but no interop version (current semantics, and
    # the draft forbids a 104 then: docs/protocol.md, "IETF draft: detection").
    version: int | None
    drafts: str
    # -01 says "Upload-Incomplete: ?1" for "more to come"; -02 on "Upload-Complete: ?1" for done.
    flag_header: str
    flag_inverted: bool
    # -04 on: PATCH must carry application/partial-upload.
    append_media_type: bool
    # -06 on: every append says whether it completes; before, a missing flag meant "complete".
    append_flag_required: bool
    # -04 on: Upload-Limit exists; the key for the lifetime was "expires" before -06.
    upload_limit: bool
    max_age_key: str
    # -11 on: OPTIONS names the media type appends take.
    accept_patch: bool
    # Every version allows 204 for these (-01/-02 require it); see the doc's table.
    head_status: int = 204
    delete_status: int = 204
    append_status: int = 204
    creation_status: int = 201

    def completion(self, headers: Headers) -> bool | None:
        """Whether the request says it completes the upload; None when it does not say."""
        raw = headers.get(self.flag_header)
        if raw is None:
            return None
        value = parse_sf_boolean(raw)
        if value is None:
            raise InvalidDraftField(f"{self.flag_header} must be ?0 or ?1")
        return not value if self.flag_inverted else value

    def flag(self, complete: bool) -> dict[str, str]:
        """The completion header a response carries, in this version's spelling."""
        value = (not complete) if self.flag_inverted else complete
        return {self.flag_header: "?1" if value else "?0"}

    def version_header(self) -> dict[str, str]:
        """Responses echo the interop version the request announced (as tusd and Apple do)."""
        return {} if self.version is None else {INTEROP_HEADER: str(self.version)}

    @property
    def label(self) -> str:
        """For metrics and logs: ``ietf-5``, or ``ietf-current`` without a version."""
        return "ietf-current" if self.version is None else f"ietf-{self.version}"


def _rules(
    version: int | None, drafts: str, *, generation: int, accept_patch: bool = False
) -> InteropRules:
    # generation: 1 = -01, 2 = -02/-03, 3 = -04/-05, 4 = -06 and later.
    return InteropRules(
        version=version,
        drafts=drafts,
        flag_header="Upload-Incomplete" if generation == 1 else "Upload-Complete",
        flag_inverted=generation == 1,
        append_media_type=generation >= 3,
        append_flag_required=generation >= 4,
        upload_limit=generation >= 3,
        max_age_key="max-age" if generation >= 4 else "expires",
        accept_patch=accept_patch,
    )


VERSIONS: dict[int, InteropRules] = {
    3: _rules(3, "-01", generation=1),
    4: _rules(4, "-02", generation=2),
    5: _rules(5, "-03", generation=2),
    6: _rules(6, "-04, -05", generation=3),
    7: _rules(7, "-06 to -08", generation=4),
    8: _rules(8, "-09 to -15", generation=4, accept_patch=True),
}
# A request with the draft's headers and no interop version gets the current draft's rules.
CURRENT = _rules(None, "current", generation=4, accept_patch=True)
SUPPORTED = tuple(VERSIONS)


def rules_for(headers: Headers) -> InteropRules:
    """The rules a request asks for; an unknown or malformed version is a 400, never tus."""
    raw = headers.get(INTEROP_HEADER)
    if raw is None:
        return CURRENT
    text = raw.strip(" \t")
    rules = VERSIONS.get(int(text)) if text.isascii() and text.isdigit() and len(text) < 4 else None
    if rules is None:
        raise UnsupportedInteropVersion(
            f"{INTEROP_HEADER} {text[:20]!r} is not supported; supported: "
            + ", ".join(map(str, SUPPORTED))
        )
    return rules
