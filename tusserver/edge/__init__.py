"""The HTTP edge every wire protocol shares.

Owns what sits between the socket and a protocol's handlers: the uvicorn protocol class
(``httpproto``), the pure ASGI middleware (CORS, the protocol envelope, request ids, singleton
headers), streaming request bodies, the one error-to-response step, the JSON API's plumbing,
idempotent HTTP routes, the URLs the server hands out, serving stored bytes (ranges,
disposition) and the OpenAPI document. Nothing here knows how an upload is stored.
"""
