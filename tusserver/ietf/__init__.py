"""The IETF "Resumable Uploads for HTTP" draft protocol, beside tus 1.0 on the same endpoint.

Apple's URLSession (and tus-js-client's ``ietf-draft-*`` protocols) speak one iteration of
the draft each, announced in ``Upload-Draft-Interop-Version``. This package detects such
requests (``detect``), keeps what differs between iterations as data (``versions``), and serves
them with handlers over the same ``UploadService`` the tus handlers use, so locks, ownership,
durability, expiry and listeners apply unchanged (docs/protocol.md, "IETF draft: overview").
"""
