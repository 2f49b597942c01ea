"""CPU per webhook POST of the HTTP clients the ``http`` destination could use.

The relay's webhook throughput is bound by CPU (2 cores shared by the relay, its
database and the receiver), so this measures CPU time, not wall time: the
client process's user + system time (all its threads) per POST, in steady state,
over keep-alive connections, posting ~1 KB JSON bodies with the destination's
headers (Idempotency-Key, event type, HMAC timestamp and signature) in batches
of ``--keys`` ordering keys at once, each key's events one after the other, each
batch handed over by a caller thread (as the relay's worker hands a batch to
``deliver_many``). The receiver is the relay bench's own (``bench/relay.py``
``start_http``) in another process; its CPU per request is printed too.

Clients: ``destination``, the ``http`` destination itself (whatever
``outbox/destinations/http.py`` holds now: measure before and after a change);
httpx ``Client`` shared by a thread pool (the destination before),
httpx ``AsyncClient`` and aiohttp ``ClientSession`` on one event loop in a
dedicated thread, urllib3 ``PoolManager`` and stdlib ``http.client`` from a
thread pool, and pycurl's ``CurlMulti`` driven by the caller thread. Clients whose
package is not installed are skipped.

Usage: ``.venv/bin/python bench/http_clients.py [--posts 4000] [--only aiohttp,httpx-threads]``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import http.client
import io
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]

Request = tuple[bytes, dict[str, str]]
#: one batch: per key, its requests in order
Batch = list[list[Request]]


def make_request(key: int, n: int) -> Request:
    """A ~1 KB event envelope like the outbox writer's, with the destination's headers."""
    event_id = str(uuid.uuid4())
    body = orjson.dumps({"id": event_id, "type": "bench.item.recorded", "created_at": datetime.now(UTC).isoformat(),
                         "aggregate_type": "item", "aggregate_id": f"K{key}", "correlation_id": None,
                         "source": {"channel": "bench", "inbound_id": n, "message": 0},
                         "record": {"n": n, "note": "x" * 700}})
    ts = str(int(time.time()))
    sig = hmac.new(b"secret", ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    return body, {"Content-Type": "application/json", "Idempotency-Key": event_id,
                  "X-Bridge-Event-Type": "bench.item.recorded", "X-Bridge-Timestamp": ts,
                  "X-Bridge-Signature": "sha256=" + sig}


# -- clients: each returns (post_batch, close) --------------------------------

Client = tuple[Callable[[Batch], None], Callable[[], None]]


def _threaded(post: Callable[[Request], None], keys: int, close: Callable[[], None]) -> Client:
    pool = ThreadPoolExecutor(keys)

    def one_key(reqs: list[Request]) -> None:
        for r in reqs:
            post(r)

    def post_batch(batch: Batch) -> None:
        list(pool.map(one_key, batch))

    def shut() -> None:
        pool.shutdown()
        close()

    return post_batch, shut


def _on_loop(make: Callable[[], Coroutine[Any, Any, Any]],
             post: Callable[[Any, Request], Coroutine[Any, Any, None]],
             close: Callable[[Any], Coroutine[Any, Any, None]]) -> Client:
    loop = asyncio.new_event_loop()
    t = threading.Thread(target=loop.run_forever, daemon=True)
    t.start()
    client = asyncio.run_coroutine_threadsafe(make(), loop).result()

    async def one_key(reqs: list[Request]) -> None:
        for r in reqs:
            await post(client, r)

    async def batch_coro(batch: Batch) -> None:
        await asyncio.gather(*(one_key(reqs) for reqs in batch))

    def post_batch(batch: Batch) -> None:
        asyncio.run_coroutine_threadsafe(batch_coro(batch), loop).result()

    def shut() -> None:
        asyncio.run_coroutine_threadsafe(close(client), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        t.join()
        loop.close()

    return post_batch, shut


def httpx_threads(url: str, keys: int) -> Client:
    import httpx

    client = httpx.Client(timeout=httpx.Timeout(10.0, connect=5.0), limits=httpx.Limits(max_keepalive_connections=20))

    def post(r: Request) -> None:
        resp = client.post(url, content=r[0], headers=r[1])
        assert resp.status_code == 200, resp.status_code
        resp.text  # noqa: B018 - the destination reads it

    return _threaded(post, keys, client.close)


def httpx_async(url: str, keys: int) -> Client:
    import httpx

    async def make() -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=5.0))

    async def post(client: httpx.AsyncClient, r: Request) -> None:
        resp = await client.post(url, content=r[0], headers=r[1])
        assert resp.status_code == 200, resp.status_code
        resp.text  # noqa: B018

    async def close(client: httpx.AsyncClient) -> None:
        await client.aclose()

    return _on_loop(make, post, close)


def aiohttp_loop(url: str, keys: int) -> Client:
    import aiohttp

    async def make() -> aiohttp.ClientSession:
        return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, connect=5.0, sock_read=10.0),
                                     connector=aiohttp.TCPConnector(limit=keys))

    async def post(session: aiohttp.ClientSession, r: Request) -> None:
        async with session.post(url, data=r[0], headers=r[1], allow_redirects=False) as resp:
            await resp.text(errors="replace")
            assert resp.status == 200, resp.status

    async def close(session: aiohttp.ClientSession) -> None:
        await session.close()

    return _on_loop(make, post, close)


def urllib3_threads(url: str, keys: int) -> Client:
    import urllib3

    pool = urllib3.PoolManager(maxsize=keys, timeout=urllib3.Timeout(connect=5.0, read=10.0), retries=False)

    def post(r: Request) -> None:
        resp = pool.request("POST", url, body=r[0], headers=r[1])
        assert resp.status == 200, resp.status
        resp.data.decode()

    return _threaded(post, keys, pool.clear)


def http_client_threads(url: str, keys: int) -> Client:
    host, port = url.split("/")[2].split(":")
    path = "/" + url.split("/", 3)[3]
    local = threading.local()
    conns: list[http.client.HTTPConnection] = []

    def post(r: Request) -> None:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = http.client.HTTPConnection(host, int(port), timeout=10.0)
            conns.append(conn)
        conn.request("POST", path, body=r[0], headers=r[1])
        resp = conn.getresponse()
        resp.read().decode()
        assert resp.status == 200, resp.status

    def close() -> None:
        for c in conns:
            c.close()

    return _threaded(post, keys, close)


def pycurl_multi(url: str, keys: int) -> Client:
    import pycurl

    multi = pycurl.CurlMulti()
    handles = [pycurl.Curl() for _ in range(keys)]

    def start(h: Any, r: Request) -> None:
        h.buf = io.BytesIO()
        h.head = []
        h.setopt(pycurl.URL, url)
        h.setopt(pycurl.POSTFIELDS, r[0])
        h.setopt(pycurl.HTTPHEADER, [f"{k}: {v}" for k, v in r[1].items()])
        h.setopt(pycurl.WRITEDATA, h.buf)
        h.setopt(pycurl.HEADERFUNCTION, h.head.append)
        h.setopt(pycurl.CONNECTTIMEOUT_MS, 5000)
        h.setopt(pycurl.TIMEOUT_MS, 10000)
        multi.add_handle(h)

    def post_batch(batch: Batch) -> None:
        queues = {id(h): iter(reqs) for h, reqs in zip(handles, batch, strict=False)}
        for h, reqs in zip(handles, batch, strict=False):
            start(h, next(queues[id(h)]) if reqs else (b"", {}))
        active = len(queues)
        while active:
            while multi.perform()[0] == pycurl.E_CALL_MULTI_PERFORM:
                pass
            _, done, failed = multi.info_read()
            assert not failed, failed
            for h in done:
                multi.remove_handle(h)
                assert h.getinfo(pycurl.RESPONSE_CODE) == 200
                h.buf.getvalue().decode()
                nxt = next(queues[id(h)], None)
                if nxt is None:
                    active -= 1
                else:
                    start(h, nxt)
            if active and not done:
                multi.select(1.0)

    def close() -> None:
        for h in handles:
            h.close()
        multi.close()

    return post_batch, close


def bridge_destination(url: str, keys: int) -> Client:
    """``outbox.destinations.http.HttpDestination`` itself: its headers, HMAC and payload check included."""
    sys.path.insert(0, str(ROOT))
    from outbox.destinations.base import OutboxEvent
    from outbox.destinations.http import HttpDestination, HttpDestinationConfig

    os.environ["BENCH_HTTP_SECRET"] = "secret"
    dest = HttpDestination("bench", HttpDestinationConfig(url=url, concurrency=keys, secret_env="BENCH_HTTP_SECRET"))
    now = datetime.now(UTC)

    def post_batch(batch: Batch) -> None:
        # in event order, the keys interleaved, as the relay claims them (building these costs ~2 us each)
        events = [OutboxEvent(seq=i, id=r[1]["Idempotency-Key"], type="bench.item.recorded", aggregate_type="item",
                              aggregate_id=f"K{k}", created_at=now, payload=r[0].decode())
                  for i in range(len(batch[0])) for k, reqs in enumerate(batch) for r in reqs[i:i + 1]]
        outcomes = dest.deliver_many(events)
        assert all(o is not None and o.delivered for o in outcomes), outcomes

    return post_batch, dest.close


CLIENTS: dict[str, Callable[[str, int], Client]] = {
    "destination": bridge_destination, "httpx-threads": httpx_threads, "httpx-async": httpx_async, "aiohttp": aiohttp_loop,
    "urllib3-threads": urllib3_threads, "http.client-threads": http_client_threads, "pycurl-multi": pycurl_multi,
}


# -- receiver in another process ----------------------------------------------

def serve() -> None:
    """The relay bench's receiver; prints ``process CPU seconds, requests`` for each line on stdin."""
    sys.path.insert(0, str(ROOT / "bench"))
    from relay import Receipts, start_http

    receipts = Receipts()
    url, _ = start_http(receipts)
    print(url, flush=True)
    for _ in sys.stdin:
        print(time.process_time(), receipts.total, flush=True)


class Receiver:
    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stdin is not None
        self.url = self.proc.stdout.readline().strip()

    def sample(self) -> tuple[float, int]:
        assert self.proc.stdout is not None and self.proc.stdin is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        cpu, total = self.proc.stdout.readline().split()
        return float(cpu), int(total)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(10)


def measure(name: str, receiver: Receiver, posts: int, keys: int, per_key: int,
            callers: int) -> tuple[float, float, float]:
    """(client CPU us/POST, receiver CPU us/request, POSTs/s wall) for one client: ``callers``
    threads, each with its own client (the relay gives each worker its own destination)."""
    n_batches = max(1, posts // (keys * per_key * callers))
    clients = [CLIENTS[name](receiver.url, keys) for _ in range(callers)]
    work = [[[[make_request(k, b * per_key + i) for i in range(per_key)] for k in range(keys)]
             for b in range(n_batches + 2)] for _ in range(callers)]
    ready = threading.Barrier(callers + 1)

    def caller(post_batch: Callable[[Batch], None], batches: list[Batch]) -> None:
        for b in batches[:2]:  # warm-up: connections open, code paths hot
            post_batch(b)
        ready.wait()
        ready.wait()
        for b in batches[2:]:
            post_batch(b)

    threads = [threading.Thread(target=caller, args=(c[0], w)) for c, w in zip(clients, work, strict=True)]
    try:
        for t in threads:
            t.start()
        ready.wait()
        rcpu0, rn0 = receiver.sample()
        cpu0, t0 = time.process_time(), time.perf_counter()
        ready.wait()
        for t in threads:
            t.join()
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
        rcpu1, rn1 = receiver.sample()
    finally:
        for c in clients:
            c[1]()
    n = n_batches * keys * per_key * callers
    assert rn1 - rn0 == n, (rn1 - rn0, n)
    return cpu / n * 1e6, (rcpu1 - rcpu0) / n * 1e6, n / wall


def main() -> None:
    if sys.argv[1:] == ["--serve"]:
        serve()
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--posts", type=int, default=4000)
    p.add_argument("--keys", type=int, default=8, help="ordering keys posted at once (the destination's concurrency)")
    p.add_argument("--per-key", type=int, default=8, help="events of each key in a batch, posted in order")
    p.add_argument("--callers", type=int, default=4,
                   help="threads handing batches over at once, each with its own client (relay workers)")
    p.add_argument("--only", help="comma list of " + ", ".join(CLIENTS))
    args = p.parse_args()
    names = args.only.split(",") if args.only else list(CLIENTS)
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    print(f"http clients: {args.posts} POSTs of ~1 KB, {args.keys} keys at once x {args.per_key} in order per batch, "
          f"{args.callers} callers; "
          f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load {load}")
    print(f"{'client':<22}{'client cpu us/POST':>20}{'receiver cpu us/req':>21}{'POSTs/s (wall)':>16}")
    receiver = Receiver()
    try:
        for name in names:
            try:
                cpu, rcpu, rate = measure(name, receiver, args.posts, args.keys, args.per_key, args.callers)
            except ImportError as exc:
                print(f"{name:<22}skipped: {exc}")
                continue
            print(f"{name:<22}{cpu:>20.0f}{rcpu:>21.0f}{rate:>16.0f}", flush=True)
    finally:
        receiver.close()


if __name__ == "__main__":
    main()
