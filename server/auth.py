"""Bearer-token check. Tokens are compared in constant time against every configured token, so the
time taken says nothing about which token (or which prefix) was close."""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from kuamo.engine.errors import Unauthenticated

AUTH_HEADER = "authorization"


def check_bearer(metadata: Sequence[tuple[str, str | bytes]] | None, tokens: Sequence[str]) -> None:
    """Raise Unauthenticated unless metadata carries `authorization: Bearer <one of tokens>`."""
    value = next((v for k, v in (metadata or ()) if k.lower() == AUTH_HEADER), None)
    if value is None:
        raise Unauthenticated("missing 'authorization: Bearer <token>' metadata")
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    scheme, _, given = value.partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise Unauthenticated("authorization metadata must be 'Bearer <token>'")
    given_b = given.strip().encode()
    ok = False
    for t in tokens:  # no early exit: every token is compared
        ok |= hmac.compare_digest(given_b, t.encode())
    if not ok:
        raise Unauthenticated("invalid token")
