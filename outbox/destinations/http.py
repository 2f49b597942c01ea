"""``http``: POST each event's JSON envelope to a webhook (the cloud ERP's event endpoint).

Headers on every request:

- ``Idempotency-Key``: the event id (a UUID), so the receiver drops a redelivery
  (delivery is at-least-once);
- ``X-Bridge-Timestamp``: Unix seconds when the request was signed;
- ``X-Bridge-Signature``: ``sha256=<hex>``, HMAC-SHA256 (RFC 2104) with the
  destination's secret over ``<timestamp>.<body>``, the scheme Stripe-style
  webhooks use, so a receiver can reject forged or replayed requests. The
  secret is read from the environment variable named by ``secret_env``, never
  from the YAML file;
- ``X-Bridge-Event-Type``, ``Content-Type: application/json``, and the static
  ``headers`` of the config.

Outcomes (RFC 9110): 2xx is delivered; 408, 429 and 5xx are retried, honouring
``Retry-After`` (delta-seconds or an HTTP-date, RFC 9110 section 10.2.3);
any other status is refused for good and dead-lettered with the response body
stored (its first 2,000 characters). A response slower than ``timeout_seconds``,
a connection slower than ``connect_timeout_seconds`` and a failed connection are
retried. Redirects are not followed (a 3xx is refused).

A batch (``deliver_many``) is split by ordering key and up to ``concurrency``
keys are posted at once, each key's events one after the other, the next key to
start being the one whose next event is oldest (so ``concurrency: 1`` posts the
batch strictly in event order, one request at a time); after a retryable failure
nothing more of that key is sent.

**Transport: libcurl (pycurl), not httpx.** The issue asked for httpx; it was too
slow for the relay's hot path, where the CPU per POST bounds the events per second
on 2 shared cores. ``bench/http_clients.py`` (client process CPU per ~1 KB POST,
8 keys at once, keep-alive, receiver in another process; November 2026, load 5
to 9) measured, in us per POST: this destination on httpx (a thread pool over one
``httpx.Client``) 490, httpx ``Client`` alone from threads 420-490, httpx
``AsyncClient`` 1,200-1,300, urllib3 from threads 200-250, aiohttp on one event
loop 100-150, stdlib ``http.client`` from threads 70-100, pycurl's ``CurlMulti``
driven by the calling thread 20-30, and this destination on it 33. So one
``CurlMulti`` per calling thread posts all the keys at once, with no thread pool
and no event loop: libcurl parses the responses in C and keeps the connections
alive in the multi handle's cache. httpx stays the project's HTTP client where
CPU does not bound anything (the test suite's calls to the API).
Like httpx, libcurl honours the proxy environment (``https_proxy``,
``no_proxy``); TLS is verified against certifi's CA bundle, as httpx does, unless
``verify_tls: false``.

Threading: a :class:`_Curls` (one ``CurlMulti`` and its easy handles) is used by
one thread at a time; the destination keeps the idle ones, so ``deliver_many``
may run in several threads at once, and ``close`` closes them all.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import os
import re
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

import certifi
import pycurl
from pydantic import Field, field_validator

from bridge.db import utcnow
from bridge.errors import ConfigError, DeliveryError, PermanentDelivery, RetryableDelivery
from outbox.destinations.base import Destination, DestinationConfig, OutboxEvent, Outcome, Receipt

__all__ = ["HttpDestination", "HttpDestinationConfig", "sign"]

_RETRYABLE = {408, 429}
_RESPONSE_LIMIT = 2000
#: bytes of a response body kept: enough for _RESPONSE_LIMIT characters of UTF-8; the rest is dropped
_BODY_LIMIT = 4 * _RESPONSE_LIMIT
_CHARSET = re.compile(r"charset=[\"']?([\w.:-]+)", re.IGNORECASE)


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The ``X-Bridge-Signature`` value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def retry_after_seconds(value: str | None) -> float | None:
    """Parse ``Retry-After``: delta-seconds or an HTTP-date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - utcnow()).total_seconds())


class HttpDestinationConfig(DestinationConfig):
    url: str
    #: seconds for the whole response (read) and for connecting
    timeout_seconds: float = Field(10.0, gt=0)
    connect_timeout_seconds: float = Field(5.0, gt=0)
    #: name of the environment variable holding the HMAC secret (unset: requests are unsigned)
    secret_env: str | None = None
    signature_header: str = "X-Bridge-Signature"
    timestamp_header: str = "X-Bridge-Timestamp"
    #: extra static headers (an API gateway key from the environment belongs in a proxy, not here)
    headers: dict[str, str] = Field(default_factory=dict)
    verify_tls: bool = True
    #: ordering keys posted at once within a batch (each key's events stay in order)
    concurrency: int = Field(8, ge=1, le=64)

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("headers")
    @classmethod
    def _header_lines(cls, value: dict[str, str]) -> dict[str, str]:
        # a CR or LF would end the header line and let the value forge headers of its own
        for name, text in value.items():
            if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name) or "\r" in text or "\n" in text:
                raise ValueError(f"header {name!r}: a token name and a value without line breaks")
        return value


@dataclass(slots=True)
class _Exchange:
    """One request in flight on an easy handle: which event, since when, what came back."""

    index: int
    key: str
    started: float = field(default_factory=time.perf_counter)
    body: bytearray = field(default_factory=bytearray)
    head: list[bytes] = field(default_factory=list)

    def write(self, data: bytes) -> None:
        if len(self.body) < _BODY_LIMIT:
            self.body += data

    def header(self, name: bytes) -> str | None:
        for line in self.head:
            key, sep, value = line.partition(b":")
            if sep and key.strip().lower() == name:
                return value.strip().decode("latin-1")
        return None


class _Curls:
    """A ``CurlMulti`` and its easy handles (up to ``concurrency``), for one thread at a time."""

    def __init__(self, config: HttpDestinationConfig) -> None:
        self.config = config
        self.multi = pycurl.CurlMulti()
        self.handles: list[Any] = []
        self.idle: list[Any] = []

    def handle(self) -> Any | None:
        """An idle easy handle, a new one while fewer than ``concurrency`` exist, else None."""
        if self.idle:
            return self.idle.pop()
        if len(self.handles) >= self.config.concurrency:
            return None
        c, h = self.config, pycurl.Curl()
        h.setopt(pycurl.URL, c.url)
        h.setopt(pycurl.PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS)
        h.setopt(pycurl.NOSIGNAL, 1)  # libcurl's alarm() timeouts are unsafe in a threaded program
        h.setopt(pycurl.CONNECTTIMEOUT_MS, int(c.connect_timeout_seconds * 1000))
        h.setopt(pycurl.TIMEOUT_MS, int(c.timeout_seconds * 1000))
        h.setopt(pycurl.USERAGENT, "bridge")
        h.setopt(pycurl.CAINFO, certifi.where())
        h.setopt(pycurl.SSL_VERIFYPEER, 1 if c.verify_tls else 0)
        h.setopt(pycurl.SSL_VERIFYHOST, 2 if c.verify_tls else 0)
        self.handles.append(h)
        return h

    def close(self) -> None:
        for h in self.handles:
            h.close()
        self.multi.close()


class HttpDestination(Destination):
    """POST events as JSON with an idempotency key and an HMAC signature (libcurl, see the module doc)."""

    Config = HttpDestinationConfig

    def __init__(self, name: str, config: HttpDestinationConfig) -> None:
        super().__init__(name, config)
        self.config: HttpDestinationConfig = config
        self._secret: bytes | None = None
        if config.secret_env:
            secret = os.environ.get(config.secret_env)
            if not secret:
                raise ConfigError(f"destinations.{name}.secret_env",
                                  f"environment variable {config.secret_env} is not set")
            self._secret = secret.encode()
        ours = {"content-type", "idempotency-key", "x-bridge-event-type", "expect",
                config.timestamp_header.lower(), config.signature_header.lower()}
        # "Expect:" (empty) stops libcurl from waiting for a 100 Continue before a body over 1 KB
        self._static = [f"{k}: {v}" for k, v in config.headers.items() if k.lower() not in ours]
        self._static += ["Content-Type: application/json", "Expect:"]
        self._idle: list[_Curls] = []
        self._lock = threading.Lock()

    def open(self) -> None:
        with self._lock:
            if not self._idle:
                self._idle.append(_Curls(self.config))

    @contextmanager
    def _curls(self) -> Iterator[_Curls]:
        with self._lock:
            curls = self._idle.pop() if self._idle else None
        curls = curls or _Curls(self.config)
        try:
            yield curls
        except BaseException:
            curls.close()  # transfers may still be attached: do not reuse it
            raise
        with self._lock:
            self._idle.append(curls)

    def deliver(self, event: OutboxEvent) -> Receipt:
        [attempted] = self._post([event])
        assert attempted is not None  # only a retryable failure leaves later events of its key
        if isinstance(attempted[0], DeliveryError):
            raise attempted[0]
        return attempted[0]

    def deliver_many(self, events: Sequence[OutboxEvent]) -> list[Outcome | None]:
        return [None if r is None else _outcome(*r) for r in self._post(events)]

    def _post(self, events: Sequence[OutboxEvent]) -> list[tuple[Receipt | DeliveryError, float] | None]:
        """Post ``events``, up to ``concurrency`` keys at once, each key in order; per event its
        receipt or error and milliseconds, or None when not attempted (after a retryable failure)."""
        results: list[tuple[Receipt | DeliveryError, float] | None] = [None] * len(events)
        queues: dict[str, deque[int]] = {}
        for i, event in enumerate(events):
            queues.setdefault(event.ordering_key, deque()).append(i)
        ready = [(q[0], key) for key, q in queues.items()]  # keys by their next event: a heap already
        running: dict[Any, _Exchange] = {}

        def start(h: Any, multi: Any) -> bool:
            """Put the oldest ready key's next event on ``h``; False when no key is ready."""
            while ready:
                i, key = heapq.heappop(ready)
                q = queues[key]
                q.popleft()
                try:
                    ex = self._prepare(h, events[i], _Exchange(i, key))
                except PermanentDelivery as exc:  # a poison event: the key moves on
                    results[i] = (exc, 0.0)
                    if q:
                        heapq.heappush(ready, (q[0], key))
                    continue
                multi.add_handle(h)
                running[h] = ex
                return True
            return False

        with self._curls() as curls:
            multi = curls.multi
            while ready and (h := curls.handle()) is not None:
                if not start(h, multi):
                    curls.idle.append(h)
            while running:
                while multi.perform()[0] == pycurl.E_CALL_MULTI_PERFORM:
                    pass
                done = False
                while True:
                    queued, ok, failed = multi.info_read()
                    for h, errno, message in [(h, 0, "") for h in ok] + failed:
                        done = True
                        multi.remove_handle(h)
                        ex = running.pop(h)
                        result = self._result(h, ex, errno, message)
                        results[ex.index] = (result, (time.perf_counter() - ex.started) * 1000)
                        q = queues[ex.key]
                        if isinstance(result, RetryableDelivery):
                            q.clear()  # order per key: nothing more of it in this batch
                        elif q:
                            heapq.heappush(ready, (q[0], ex.key))
                        if not start(h, multi):
                            curls.idle.append(h)
                    if not queued:
                        break
                if running and not done:
                    wait = multi.timeout()  # ms until libcurl's next timer (a timeout), -1: none
                    multi.select(1.0 if wait < 0 else min(wait / 1000, 1.0))
        return results

    def _prepare(self, h: Any, event: OutboxEvent, ex: _Exchange) -> _Exchange:
        event.document()  # a payload that is not a JSON object is a poison event: dead-letter it
        body = event.payload.encode()
        headers = [*self._static, f"Idempotency-Key: {event.id}", f"X-Bridge-Event-Type: {event.type}"]
        if self._secret is not None:
            ts = str(int(time.time()))
            headers += [f"{self.config.timestamp_header}: {ts}",
                        f"{self.config.signature_header}: {sign(self._secret, ts, body)}"]
        h.setopt(pycurl.POSTFIELDS, body)
        h.setopt(pycurl.HTTPHEADER, headers)
        h.setopt(pycurl.WRITEFUNCTION, ex.write)
        h.setopt(pycurl.HEADERFUNCTION, ex.head.append)
        return ex

    def _result(self, h: Any, ex: _Exchange, errno: int, message: str) -> Receipt | DeliveryError:
        """What one finished transfer means: a receipt, or the delivery error to record."""
        if errno == pycurl.E_OPERATION_TIMEDOUT:
            return RetryableDelivery(f"{self.name}: no response within the timeout ({message})")
        if errno:
            return RetryableDelivery(f"{self.name}: request failed (curl error {errno}: {message})")
        code = h.getinfo(pycurl.RESPONSE_CODE)
        text = _decode(bytes(ex.body), h.getinfo(pycurl.CONTENT_TYPE))[:_RESPONSE_LIMIT]
        if 200 <= code < 300:
            return Receipt(status_code=code, response=text or None)
        if code in _RETRYABLE or code >= 500:
            return RetryableDelivery(f"{self.name}: HTTP {code}", status_code=code, response=text,
                                     retry_after=retry_after_seconds(ex.header(b"retry-after")))
        return PermanentDelivery(f"{self.name}: HTTP {code} refused the event", status_code=code, response=text)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for curls in idle:
            curls.close()


def _outcome(result: Receipt | DeliveryError, ms: float) -> Outcome:
    if isinstance(result, DeliveryError):
        return Outcome.from_error(result, ms)
    return Outcome(delivered=True, duration_ms=ms, status_code=result.status_code, response=result.response)


def _decode(body: bytes, content_type: str | None) -> str:
    """A response body as text: its declared charset, else UTF-8; undecodable bytes replaced."""
    match = _CHARSET.search(content_type or "")
    try:
        return body.decode(match[1] if match else "utf-8", "replace")
    except LookupError:
        return body.decode("utf-8", "replace")
