"""Per-client rate limits: a token bucket per API client, refused with 429 and ``Retry-After``.

A client's limit is ``api_clients.rate_limit_per_minute``, or the settings
default ``api.rate_limit_per_minute`` when the client has none (``null`` there
means unlimited). The bucket holds at most one minute's worth of tokens (a
client may burst its whole minute at once) and refills continuously at
``limit / 60`` tokens per second; each authenticated request takes one token.
A request that finds the bucket empty is refused with a problem 429 whose
``Retry-After`` (RFC 9110 section 10.2.3, whole seconds) is when the next
token will be there.

The buckets live in this process's memory: a restart refills them, and with
several bridge processes behind one balancer each process keeps its own
buckets, so a client's effective limit is the limit times the number of
processes. That is the documented trade for no database write per request.
:mod:`bridge.api.deps` calls :meth:`RateLimiter.check` right after a key is
authenticated; unauthenticated requests are refused before they cost anything.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from bridge.api.problems import Problem

__all__ = ["RateLimiter"]


@dataclass(slots=True)
class _Bucket:
    limit: int
    tokens: float
    updated: float


class RateLimiter:
    """Token buckets by client id; thread-safe (sync routes run in a thread pool)."""

    def __init__(self, default_per_minute: int | None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.default_per_minute = default_per_minute
        self._clock = clock
        self._buckets: dict[int, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, client_id: int, per_minute: int | None) -> float | None:
        """Take one token for ``client_id``: None when allowed, else the seconds until one is available."""
        limit = per_minute if per_minute is not None else self.default_per_minute
        if limit is None:
            return None
        now = self._clock()
        rate = limit / 60.0
        with self._lock:
            bucket = self._buckets.get(client_id)
            if bucket is None or bucket.limit != limit:
                # a new client, or its limit was changed: start full at the new size
                bucket = self._buckets[client_id] = _Bucket(limit, float(limit), now)
            else:
                bucket.tokens = min(float(limit), bucket.tokens + (now - bucket.updated) * rate)
                bucket.updated = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return None
            return (1.0 - bucket.tokens) / rate

    def check(self, client_id: int, client_name: str, per_minute: int | None) -> None:
        """Raise a problem 429 with ``Retry-After`` if ``client_id`` is over its limit."""
        wait = self.take(client_id, per_minute)
        if wait is None:
            return
        limit = per_minute if per_minute is not None else self.default_per_minute
        seconds = max(1, math.ceil(wait))
        raise Problem(429, f"client {client_name!r} is over its rate limit of {limit} requests per minute; "
                      f"retry in {seconds} s", slug="rate-limited", title="Too many requests",
                      headers={"Retry-After": str(seconds)}, extra={"retry_after": seconds, "limit_per_minute": limit})
