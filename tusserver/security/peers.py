"""Who is calling, network-wise: the key that rate limits and quotas count anonymous callers by.

The connection's peer; with ``TUS_TRUST_PROXY`` the right-most ``X-Forwarded-For`` entry (the
address our proxy saw and appended; entries left of it are client-supplied and spoofable).
IPv6 addresses count per /64, which one subscriber usually holds whole. Used by the rate
limits (``tusserver.security.ratelimit``) and delivery's routes.
"""

from __future__ import annotations

import ipaddress

from starlette.types import Scope


def client_ip(scope: Scope, *, trust_proxy: bool) -> str:
    """Who is calling, network-wise (see the module docstring)."""
    client = scope.get("client")
    address = client[0] if client else ""
    if trust_proxy:
        for name, value in scope["headers"]:
            if name == b"x-forwarded-for":
                hops = [hop.strip() for hop in bytes(value).decode("latin-1").split(",")]
                if hops and hops[-1]:
                    address = hops[-1]
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64] or "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)
