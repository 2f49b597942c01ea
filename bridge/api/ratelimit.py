"""Per-client rate limits: a token bucket per API client, refused with 429 and ``Retry-After``.

A client's limit is ``api_clients.rate_limit_per_minute``, or the settings
default ``api.rate_limit_per_minute`` when the client has none (``null`` there
means unlimited). The bucket holds at most one minute's worth of tokens (a
client may burst its whole minute at once) and refills continuously at
``limit / 60`` tokens per second; each authenticated request takes one token.
A request that finds the bucket empty is refused with a problem 429 whose
``Retry-After`` (RFC 9110 section 10.2.3, whole seconds) is when the next
token will be there.

The buckets live in a fixed table (:class:`BucketTable`, :data:`SLOTS`
clients; past that the least recently seen client's bucket is dropped and
starts full again). With ``api.workers: 1`` the table is this process's
memory. With several workers, ``bridge run`` creates it in shared memory and
hands it to every worker (:mod:`bridge.api.server`), so a client's limit
holds across the workers of one ``bridge run``, at the cost of one
inter-process lock per request and no database write. Several ``bridge run``
processes (behind one balancer, or on several machines) still each keep
their own table: there a client's effective limit is the limit times the
number of processes. A restart refills every bucket. The clock is
``time.monotonic`` (``CLOCK_MONOTONIC``, one clock for every process of the machine).

:mod:`bridge.api.deps` calls :meth:`RateLimiter.check` right after a key is
authenticated; unauthenticated requests are refused before they cost anything.
"""

from __future__ import annotations

import ctypes
import math
import multiprocessing
import threading
import time
from collections.abc import Callable
from typing import Any

from bridge.api.problems import Problem

__all__ = ["SLOTS", "BucketTable", "RateLimiter"]

#: clients whose buckets are kept at once
SLOTS = 4096
#: slots looked at from a client's home slot before the stalest of them is taken over
_PROBE = 8
_LIMIT, _TOKENS, _UPDATED = range(3)


class BucketTable:
    """client id -> (limit, tokens, updated) in flat arrays, open-addressed, guarded by one lock.

    :meth:`local` keeps it in this process; :meth:`shared` in shared memory
    that survives being passed to ``spawn``-ed worker processes at their start.
    """

    def __init__(self, ids: Any, values: Any, lock: Any) -> None:
        self.ids = ids  # client id per slot; 0 = free (client ids start at 1)
        self.values = values  # 3 doubles per slot: limit, tokens, updated
        self.lock = lock

    @classmethod
    def local(cls, slots: int = SLOTS) -> BucketTable:
        return cls((ctypes.c_int64 * slots)(), (ctypes.c_double * (3 * slots))(), threading.Lock())

    @classmethod
    def shared(cls, slots: int = SLOTS) -> BucketTable:
        ctx = multiprocessing.get_context("spawn")
        return cls(ctx.RawArray(ctypes.c_int64, slots), ctx.RawArray(ctypes.c_double, 3 * slots), ctx.Lock())

    def slot(self, client_id: int) -> tuple[int, bool]:
        """(the slot of ``client_id``, whether it was just claimed); call with :attr:`lock` held."""
        ids, size = self.ids, len(self.ids)
        home = client_id % size
        stalest = home
        for step in range(min(_PROBE, size)):
            i = (home + step) % size
            if ids[i] == client_id:
                return i, False
            if ids[i] == 0:
                ids[i] = client_id
                return i, True
            if self.values[3 * i + _UPDATED] < self.values[3 * stalest + _UPDATED]:
                stalest = i
        ids[stalest] = client_id
        return stalest, True


class RateLimiter:
    """Token buckets by client id, in a :class:`BucketTable`; safe across threads (and processes, if shared)."""

    def __init__(self, default_per_minute: int | None, *, clock: Callable[[], float] = time.monotonic,
                 buckets: BucketTable | None = None) -> None:
        self.default_per_minute = default_per_minute
        self._clock = clock
        self._table = buckets if buckets is not None else BucketTable.local()

    def take(self, client_id: int, per_minute: int | None) -> float | None:
        """Take one token for ``client_id``: None when allowed, else the seconds until one is available."""
        limit = per_minute if per_minute is not None else self.default_per_minute
        if limit is None:
            return None
        now = self._clock()
        rate = limit / 60.0
        table = self._table
        with table.lock:
            i, new = table.slot(client_id)
            v = table.values
            base = 3 * i
            if new or v[base + _LIMIT] != limit:
                # a new client, or its limit was changed: start full at the new size
                tokens = float(limit)
            else:
                tokens = min(float(limit), v[base + _TOKENS] + (now - v[base + _UPDATED]) * rate)
            allowed = tokens >= 1.0
            v[base + _LIMIT], v[base + _TOKENS], v[base + _UPDATED] = limit, tokens - 1.0 if allowed else tokens, now
        return None if allowed else (1.0 - tokens) / rate

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
