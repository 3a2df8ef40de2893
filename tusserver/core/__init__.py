"""The upload core, independent of any wire protocol.

Owns the upload state transitions (``uploads.UploadService``: create, append, declare length,
finish, concatenate, terminate), the context handlers receive, lifecycle events for listeners,
the running content digest, the checksum spool and the file-system durability helpers. It
reaches storage and state only through their protocols (``storage.base``, ``state.base``).
"""
