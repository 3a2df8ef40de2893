"""Security and limits: who is calling and what they may do.

Owns bearer-token authentication and the request's principal, the signing keys and signed URL
tokens, the untrusted-JSON reader, creation admission (types and sizes), rate limits and their
token buckets, the caller's network identity, and idempotency keys.
"""
