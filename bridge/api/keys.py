"""API clients: keys bound to scopes, stored hashed, shown once, revocable.

A key reads ``brg_<prefix>_<secret>``: ``prefix`` is 8 lowercase letters and
digits, stored in clear so a key is found by one indexed lookup (and can be
named in logs and the operator's list without revealing it); ``secret`` is 32
random bytes in URL-safe base64 (43 characters). Only the SHA-256 of the whole
key is stored, and it is compared in constant time (:func:`hmac.compare_digest`).
A fast hash is right here, unlike for passwords: the secret has 256 bits of
entropy, so there is nothing to brute-force.

Scopes (:data:`KNOWN_SCOPES`) name what a client may do; ``ops:*`` grants
every ``ops:`` scope and ``admin`` grants everything. ``last_used_at`` is
refreshed at most once per :data:`LAST_USED_EVERY` per client, so a busy
client does not turn every read into a write.

A successful lookup is cached in this process for :data:`CACHE_SECONDS`
(keyed by the database URL and the key's SHA-256, at most
:data:`CACHE_SIZE` entries), so a busy client costs no database read per
request. :func:`revoke_client` drops the client's entries in the process that
calls it, so a revocation through the API process is immediate; a revocation
by another process (``bridge clients revoke`` against a running server) takes
effect within :data:`CACHE_SECONDS`. Only valid keys are cached: an unknown or
revoked key is looked up every time.

This module owns the ``api_clients`` table; :mod:`bridge.api.deps` turns a
request's key into a :class:`Client`, and ``bridge clients`` manages them.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import string
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import exc, insert, or_, select, update

from bridge.db import Database, utcnow
from bridge.db.tables import api_clients
from bridge.errors import BridgeError, StorageError

__all__ = [
    "CACHE_SECONDS",
    "CACHE_SIZE",
    "KNOWN_SCOPES",
    "LAST_USED_EVERY",
    "Client",
    "ClientError",
    "authenticate",
    "cached_client",
    "create_client",
    "list_clients",
    "revoke_client",
]

log = logging.getLogger(__name__)

#: every scope a client may hold, with what it grants
KNOWN_SCOPES: dict[str, str] = {
    "records:read": "read canonical records",
    "events:read": "follow the event feed",
    "ops:read": "read inbound files and failures",
    "ops:write": "reprocess, resolve failures, edit crosswalks",
    "ops:*": "every ops: scope",
    "phi:read": "see patient identifiers (PHI) unmasked",
    "purchase-orders:write": "create purchase orders",
    "charges:write": "post charges",
    "cxml:write": "post cXML documents to an XML channel",
    "admin": "everything",
}

#: ``last_used_at`` is written at most this often per client
LAST_USED_EVERY = timedelta(seconds=60)

#: how long a successful key lookup is reused without reading ``api_clients`` (revocation by another process
#: takes effect within this)
CACHE_SECONDS = 5.0
#: at most this many cached lookups per process
CACHE_SIZE = 1024

KEY_PREFIX = "brg"
_PREFIX_ALPHABET = string.ascii_lowercase + string.digits
_PREFIX_LEN = 8
_SECRET_MIN = 32
# a hash nobody's key has, compared against when the prefix is unknown so both paths cost the same
_DUMMY_HASH = hashlib.sha256(b"no such client").hexdigest()


class ClientError(BridgeError):
    """A client operation was refused: unknown scope, duplicate name, unknown client."""


@dataclass(frozen=True, slots=True)
class Client:
    """An authenticated API client (never carries its key or hash)."""

    id: int
    name: str
    key_prefix: str
    scopes: frozenset[str]
    rate_limit_per_minute: int | None
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def allows(self, scope: str) -> bool:
        """Whether this client holds ``scope`` directly, through ``<family>:*``, or through ``admin``."""
        if scope in self.scopes or "admin" in self.scopes:
            return True
        family, sep, _ = scope.partition(":")
        return bool(sep) and f"{family}:*" in self.scopes


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class _KeyCache:
    """(database url, key sha256) -> (Client, monotonic expiry); thread-safe, bounded, oldest evicted first."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], tuple[Client, float]] = {}
        self._lock = threading.Lock()

    def get(self, db_url: str, digest: str) -> Client | None:
        hit = self._entries.get((db_url, digest))
        if hit is None:
            return None
        if hit[1] <= time.monotonic():
            with self._lock:
                self._entries.pop((db_url, digest), None)
            return None
        return hit[0]

    def put(self, db_url: str, digest: str, client: Client) -> None:
        with self._lock:
            while len(self._entries) >= CACHE_SIZE:
                self._entries.pop(next(iter(self._entries)))
            self._entries[(db_url, digest)] = (client, time.monotonic() + CACHE_SECONDS)

    def forget(self, db_url: str, client_id: int) -> None:
        with self._lock:
            for k in [k for k, (c, _) in self._entries.items() if k[0] == db_url and c.id == client_id]:
                del self._entries[k]


_cache = _KeyCache()


def _parse(key: str) -> tuple[str, str] | None:
    """Split a presented key into (prefix, secret), or None if it is not shaped like one."""
    head, sep, rest = key.partition("_")
    if head != KEY_PREFIX or not sep:
        return None
    prefix, sep, secret = rest.partition("_")
    if not sep or len(prefix) != _PREFIX_LEN or any(c not in _PREFIX_ALPHABET for c in prefix):
        return None
    if len(secret) < _SECRET_MIN:
        return None
    return prefix, secret


def _check_scopes(scopes: list[str]) -> list[str]:
    cleaned = sorted({s.strip() for s in scopes if s.strip()})
    if not cleaned:
        raise ClientError("a client needs at least one scope (known: " + ", ".join(KNOWN_SCOPES) + ")")
    unknown = [s for s in cleaned if s not in KNOWN_SCOPES]
    if unknown:
        raise ClientError(f"unknown scope {unknown[0]!r} (known: {', '.join(KNOWN_SCOPES)})")
    return cleaned


def _client(row: Any) -> Client:
    return Client(
        id=row.id, name=row.name, key_prefix=row.key_prefix,
        scopes=frozenset(s for s in row.scopes.split() if s),
        rate_limit_per_minute=row.rate_limit_per_minute, created_at=row.created_at,
        revoked_at=row.revoked_at, last_used_at=row.last_used_at,
    )


def create_client(db: Database, name: str, scopes: list[str],
                  rate_limit_per_minute: int | None = None) -> tuple[int, str]:
    """Create a client and return ``(id, key)``. The key is not stored: this is the only time it exists."""
    name = name.strip()
    if not name or len(name) > 128:
        raise ClientError("a client name must be 1 to 128 characters")
    if rate_limit_per_minute is not None and rate_limit_per_minute < 1:
        raise ClientError("rate limit must be at least 1 request per minute")
    cleaned = _check_scopes(scopes)
    with db.read() as conn:
        taken = conn.execute(select(api_clients.c.id).where(api_clients.c.name == name)).first()
    if taken is not None:
        raise ClientError(f"a client named {name!r} already exists")
    for _ in range(5):
        prefix = "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(_PREFIX_LEN))
        key = f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
        try:
            with db.write() as conn:
                client_id = conn.execute(
                    insert(api_clients).returning(api_clients.c.id),
                    {"name": name, "key_prefix": prefix, "key_hash": hash_key(key), "scopes": " ".join(cleaned),
                     "rate_limit_per_minute": rate_limit_per_minute, "created_at": utcnow()},
                ).scalar_one()
            return int(client_id), key
        except exc.IntegrityError:
            # the name was taken in between, or (1 in 36^8) the prefix: tell which
            with db.read() as conn:
                if conn.execute(select(api_clients.c.id).where(api_clients.c.name == name)).first():
                    raise ClientError(f"a client named {name!r} already exists") from None
    raise ClientError("could not allocate a unique key prefix")  # pragma: no cover - astronomically unlikely


def list_clients(db: Database) -> list[Client]:
    with db.read() as conn:
        rows = conn.execute(select(api_clients).order_by(api_clients.c.id)).all()
    return [_client(r) for r in rows]


def revoke_client(db: Database, name: str) -> Client:
    """Revoke the client named ``name`` (idempotent); its key is refused from now on."""
    with db.write() as conn:
        row = conn.execute(select(api_clients).where(api_clients.c.name == name)).first()
        if row is None:
            raise ClientError(f"no client named {name!r}")
        if row.revoked_at is None:
            conn.execute(update(api_clients).where(api_clients.c.id == row.id).values(revoked_at=utcnow()))
        row = conn.execute(select(api_clients).where(api_clients.c.id == row.id)).one()
    _cache.forget(db.url, row.id)
    return _client(row)


def cached_client(db: Database, key: str) -> Client | None:
    """The client holding ``key`` if this process looked it up within :data:`CACHE_SECONDS`, else None.

    No I/O: the API calls it on the event loop and goes to a thread (:func:`authenticate`) only on a miss.
    """
    return _cache.get(db.url, hash_key(key)) if _parse(key) is not None else None


def authenticate(db: Database, key: str) -> Client | None:
    """The active client holding ``key``, or None (unknown, malformed or revoked key)."""
    parsed = _parse(key)
    if parsed is None:
        return None
    presented = hash_key(key)
    cached = _cache.get(db.url, presented)
    if cached is not None:
        return cached
    with db.read() as conn:
        row = conn.execute(select(api_clients).where(api_clients.c.key_prefix == parsed[0])).first()
    if not hmac.compare_digest(presented, row.key_hash if row is not None else _DUMMY_HASH):
        return None
    assert row is not None
    client = _client(row)
    if client.revoked:
        return None
    _touch(db, client)
    _cache.put(db.url, presented, client)
    return client


def _touch(db: Database, client: Client) -> None:
    now = utcnow()
    if client.last_used_at is not None and now - client.last_used_at < LAST_USED_EVERY:
        return
    cutoff = now - LAST_USED_EVERY
    try:
        with db.write() as conn:
            # the condition makes concurrent requests of one client write once
            conn.execute(
                update(api_clients)
                .where(api_clients.c.id == client.id,
                       or_(api_clients.c.last_used_at.is_(None), api_clients.c.last_used_at < cutoff))
                .values(last_used_at=now)
            )
    except StorageError as e:
        # last-used is bookkeeping: a busy database must not refuse the request
        log.warning("could not record last use of client", extra={"client": client.name, "error": str(e)})
