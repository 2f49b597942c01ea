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
- ``X-Bridge-Event-Type``, ``Content-Type: application/json``.

Outcomes (RFC 9110): 2xx is delivered; 408, 429 and 5xx are retried, honouring
``Retry-After`` (delta-seconds or an HTTP-date, RFC 9110 section 10.2.3);
any other status is refused for good and dead-lettered with the response body
stored. Timeouts and connection failures are retried.

A batch (``deliver_many``) is split by ordering key and up to ``concurrency``
keys are posted at once (a thread pool over one shared ``httpx.Client``, which
is thread-safe and keeps the connections alive); each key's events go one after
the other, and after a retryable failure nothing more of that key is sent. A
webhook that must see events strictly one at a time sets ``concurrency: 1``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from email.utils import parsedate_to_datetime

import httpx
from pydantic import Field, field_validator

from bridge.db import utcnow
from bridge.errors import ConfigError, PermanentDelivery, RetryableDelivery
from outbox.destinations.base import Destination, DestinationConfig, OutboxEvent, Outcome, Receipt

__all__ = ["HttpDestination", "HttpDestinationConfig", "sign"]

_RETRYABLE = {408, 429}
_RESPONSE_LIMIT = 2000


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


class HttpDestination(Destination):
    """POST events as JSON with an idempotency key and an HMAC signature (httpx)."""

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
        self._client: httpx.Client | None = None
        self._pool: ThreadPoolExecutor | None = None

    def open(self) -> None:
        if self._client is None:
            timeout = httpx.Timeout(self.config.timeout_seconds, connect=self.config.connect_timeout_seconds)
            limits = httpx.Limits(max_keepalive_connections=max(20, self.config.concurrency))
            self._client = httpx.Client(timeout=timeout, verify=self.config.verify_tls, follow_redirects=False,
                                        headers=self.config.headers, limits=limits)

    def deliver_many(self, events: Sequence[OutboxEvent]) -> list[Outcome | None]:
        keys: dict[str, list[int]] = {}
        for i, event in enumerate(events):
            keys.setdefault(event.ordering_key, []).append(i)
        if self.config.concurrency == 1 or len(keys) == 1:
            return super().deliver_many(events)
        self.open()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.config.concurrency, thread_name_prefix=f"http-{self.name}")
        out: list[Outcome | None] = [None] * len(events)

        def one_key(idx: list[int]) -> None:
            for i, o in zip(idx, super(HttpDestination, self).deliver_many([events[i] for i in idx]), strict=True):
                out[i] = o

        for _ in self._pool.map(one_key, keys.values()):
            pass
        return out

    def deliver(self, event: OutboxEvent) -> Receipt:
        event.document()  # a payload that is not a JSON object is a poison event: dead-letter it
        body = event.payload.encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": event.id,
                   "X-Bridge-Event-Type": event.type}
        if self._secret is not None:
            ts = str(int(time.time()))
            headers[self.config.timestamp_header] = ts
            headers[self.config.signature_header] = sign(self._secret, ts, body)
        self.open()
        assert self._client is not None
        try:
            resp = self._client.post(self.config.url, content=body, headers=headers)
        except httpx.TimeoutException as exc:
            raise RetryableDelivery(f"{self.name}: no response within the timeout ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            raise RetryableDelivery(f"{self.name}: request failed ({type(exc).__name__})") from exc
        code = resp.status_code
        text = resp.text[:_RESPONSE_LIMIT]
        if 200 <= code < 300:
            return Receipt(status_code=code, response=text or None)
        if code in _RETRYABLE or code >= 500:
            raise RetryableDelivery(f"{self.name}: HTTP {code}", status_code=code, response=text,
                                    retry_after=retry_after_seconds(resp.headers.get("retry-after")))
        raise PermanentDelivery(f"{self.name}: HTTP {code} refused the event", status_code=code, response=text)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._client is not None:
            try:
                self._client.close()
            finally:
                self._client = None
