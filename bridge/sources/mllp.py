"""MLLP listener: HL7 v2 over TCP (HL7 v2.5.1 Appendix C, MLLP release 2), one ACK per message.

Owns the transport: framing (start block 0x0B, message, end block 0x1C 0x0D),
connections kept open across messages (as real senders expect; hl7apy's
``MLLPServer`` closes after one, see FIELD-NOTES), a size limit per message,
idle timeouts, optional TLS, and the ACK. Parsing and mapping are the
channel's parser and mapping, run through the pipeline's ``Processor``.

The order for each message is the durability contract:

1. land it (archive + one ``inbound_files`` row): the durability point;
2. process that inbound row now, in this process (parse, map, commit);
3. answer: AA when it committed, AE with the reason when it landed but
   failed mapping or master data (``unknown_type_ack`` for a message type the
   channel does not map), AR when it could not be read (parse errors, over
   the size limit: the oversize message is not landed).

Group commit: landing and committing each message alone costs an fsync and
about five transactions, which caps a listener at a few hundred messages/s
and puts the fsyncs in every ACK's latency. So messages that arrive
together, from any connection, go through the three steps as a group:
the first waits ``group_wait`` seconds for company (or until ``group_max``,
or until every open connection has its message queued: the listener reads a
connection's next frame only after answering its last one, so no more
company can come), the group's bytes are appended to a pack file (one
write, one fdatasync: durable before any row says where they are), and
their rows, records, events and outcomes are written in ONE transaction
(:func:`~bridge.pipeline.land.land_many` with ``conn``, then
:meth:`~bridge.pipeline.process.Processor.process_in`, from the bytes in
memory); then each sender gets the ACK of its own message, AA, AE or AR,
exactly as if it had been alone. Should that transaction fail in
processing, it rolls back and steps 1 and 2 run one after the other as
written above. While a group is being committed the next one gathers, so
the busier the listener, the larger its groups.

The ACK is only sent after the commit. If bridge dies between landing and the
ACK, the sender resends: the same bytes land as a duplicate of the first
row (whose processing this resend completes and whose outcome it ACKs), and
different bytes with the same MSH-10 are skipped by the pipeline's
``message_keys`` check; either way the resend is ACKed AA with no double
charge.

The listener runs an asyncio loop on its own thread; landing and processing
run in a thread pool (one group at a time on SQLite, its single writer;
``concurrent_groups`` on PostgreSQL), so a slow or broken client (or a slow
database) never stalls the other connections. A frame without its end block is dropped when
its connection closes or idles out, and a new start block inside a frame
abandons the partial one: neither is landed nor ACKed.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import logging
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import Field, model_validator
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from bridge.db import utcnow
from bridge.db.tables import failures, inbound_files
from bridge.errors import (
    BridgeError,
    ConfigError,
    InputError,
    ParseError,
    Position,
    SourceError,
    StorageError,
)
from bridge.pipeline.land import Landed, Lander, Unit, land_many
from bridge.sources.base import Source, SourceConfig
from parsers.hl7_write import AckCode, build_ack, header_from_bytes

__all__ = ["MllpSource", "MllpSourceConfig"]

log = logging.getLogger(__name__)

SB = b"\x0b"
EB = b"\x1c"
CR = b"\r"
_END = EB + CR
_HEAD = 4096
_DONE = ("processed", "partial", "failed")


class MllpSourceConfig(SourceConfig):
    host: str = "127.0.0.1"
    #: 0 picks a free port (tests); the bound port is ``MllpSource.port``
    port: int = Field(2575, ge=0, le=65535)
    #: listening beyond loopback must be asked for (HL7 carries PHI; use TLS)
    allow_remote: bool = False
    #: a message larger than this is answered AR and not landed
    max_message_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    #: a connection silent this long is closed (a partial frame is dropped)
    idle_timeout: float = Field(300.0, gt=0)
    #: how long to wait for the message's processing before answering AE
    ack_timeout: float = Field(60.0, gt=0)
    #: threads landing and processing groups of messages
    workers: int = Field(8, ge=1, le=64)
    #: groups committed at once on PostgreSQL (SQLite: always one, its single writer). Few: a
    #: slot free for every sender would commit each message alone (measured: 1.4 messages a group)
    concurrent_groups: int = Field(2, ge=1, le=64)
    #: group commit: at most this many messages are landed and committed together (1: each alone)
    group_max: int = Field(64, ge=1, le=1000)
    #: how long the first message of a group waits for others to join it, in seconds
    group_wait: float = Field(0.002, ge=0, le=1)
    #: the ACK for a message type the channel's mapping does not handle
    unknown_type_ack: Literal["AE", "AA"] = "AE"
    #: MSH-3/MSH-4 of the ACKs bridge sends
    application: str = "BRIDGE"
    facility: str = ""
    #: TLS: server certificate and key (PEM); ``tls_ca`` also requires client certificates
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None

    @model_validator(mode="after")
    def _check(self) -> MllpSourceConfig:
        try:
            loopback = ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            loopback = self.host == "localhost"
        if not loopback and not self.allow_remote:
            raise ValueError(f"host {self.host!r} is not loopback; set allow_remote: true to listen beyond this machine")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        if self.tls_ca is not None and self.tls_cert is None:
            raise ValueError("tls_ca needs tls_cert and tls_key")
        return self


class MllpSource(Source):
    """An MLLP (HL7 v2 over TCP) listener that lands, processes and ACKs each message."""

    Config = MllpSourceConfig
    config: MllpSourceConfig
    needs_runtime = True

    def __init__(self, channel: str, config: MllpSourceConfig, lander: Lander, runtime: Any = None) -> None:
        super().__init__(channel, config, lander)
        self.runtime = runtime
        self.port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._conns: set[asyncio.Task[Any]] = set()
        self._local = threading.local()
        # the group commit's state, created on the listener's loop
        self._queue: collections.deque[tuple[bytes, str, asyncio.Future[bytes]]] = collections.deque()
        self._wake: asyncio.Event | None = None
        self._slots: asyncio.Semaphore | None = None
        self._groups: set[asyncio.Task[Any]] = set()
        for key in ("connections", "open_connections", "AA", "AE", "AR", "incomplete_frames", "oversize",
                    "duplicate_control_ids", "groups"):
            self.status.extra[key] = 0

    # -- lifecycle ----------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext | None:
        cfg = self.config
        if cfg.tls_cert is None:
            return None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(str(cfg.tls_cert), str(cfg.tls_key))
            if cfg.tls_ca is not None:
                ctx.load_verify_locations(str(cfg.tls_ca))
                ctx.verify_mode = ssl.CERT_REQUIRED
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"channels.{self.channel}.source.tls_cert", f"cannot load TLS material: {exc}") from None
        return ctx

    def start(self) -> None:
        if self.runtime is None:
            raise ConfigError(f"channels.{self.channel}.source", "the mllp source needs the runtime")
        if self.channel not in self.runtime.channels:
            raise ConfigError(f"channels.{self.channel}", "channel is not built in this runtime")
        ctx = self._ssl_context()
        self._pool = ThreadPoolExecutor(self.config.workers, thread_name_prefix=f"mllp-{self.channel}")
        self._thread = threading.Thread(target=self._run, args=(ctx,), name=f"mllp-{self.channel}", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._start_error is not None:
            self.status.state = "failed"
            self.status.last_error = str(self._start_error)
            raise SourceError(f"mllp listener of channel {self.channel!r} cannot listen on "
                              f"{self.config.host}:{self.config.port}: {self._start_error}", retryable=False)
        self.status.state = "listening"
        log.info("mllp listening", extra={"channel": self.channel, "host": self.config.host, "port": self.port,
                                          "tls": ctx is not None})

    def _run(self, ctx: ssl.SSLContext | None) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._wake = asyncio.Event()
        # SQLite has one writer: one group at a time is fair and prompt, where threads
        # contending in SQLite's busy handler sleep in steps of up to 100 ms
        self._slots = asyncio.Semaphore(1 if self.runtime.db.is_sqlite else self.config.concurrent_groups)
        dispatcher = loop.create_task(self._dispatch())
        try:
            try:
                self._server = loop.run_until_complete(asyncio.start_server(
                    self._handle, self.config.host, self.config.port, ssl=ctx, limit=1024 * 1024))
                self.port = self._server.sockets[0].getsockname()[1]
            except OSError as exc:
                self._start_error = exc
                return
            finally:
                self._ready.set()
            loop.run_forever()
        finally:
            dispatcher.cancel()
            loop.run_until_complete(asyncio.gather(dispatcher, *self._groups, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def stop(self, timeout: float = 10.0) -> None:
        super().stop(timeout)
        loop = self._loop
        if loop is not None and self._thread is not None and self._thread.is_alive():
            async def _shutdown() -> None:
                if self._server is not None:
                    self._server.close()
                for task in [*self._conns, *self._groups]:
                    task.cancel()
                await asyncio.sleep(0)
                loop.stop()

            asyncio.run_coroutine_threadsafe(_shutdown(), loop)
            self._thread.join(timeout)
        if self._pool is not None:
            # a message being landed or processed finishes first
            self._pool.shutdown(wait=True, cancel_futures=True)
        self.status.state = "stopped"

    # -- connections --------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._conns.add(task)
        peer = writer.get_extra_info("peername")
        origin = f"mllp://{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "mllp://unknown"
        extra = self.status.extra
        extra["connections"] += 1
        extra["open_connections"] += 1
        cfg = self.config
        buf = bytearray()
        in_frame = False
        oversize = False
        head = b""
        size = 0
        scanned = 0  # bytes of buf already searched for the end block: a big frame is scanned once
        try:
            while not self.stopping:
                try:
                    # asyncio.timeout, not wait_for: no task per read (about half the cost per message)
                    async with asyncio.timeout(cfg.idle_timeout):
                        data = await reader.read(256 * 1024)
                except TimeoutError:
                    break
                if not data:
                    break
                buf += data
                while buf:
                    if not in_frame:
                        start = buf.find(SB)
                        if start < 0:
                            buf.clear()  # bytes between frames are not HL7: drop them
                            break
                        del buf[: start + 1]
                        in_frame, oversize, head, size, scanned = True, False, b"", 0, 0
                        continue
                    end = buf.find(_END, max(0, scanned - 1))
                    restart = buf.find(SB, scanned, end if end >= 0 else len(buf))
                    if restart >= 0:
                        # a new start block before the end block: the sender gave up on that frame
                        extra["incomplete_frames"] += 1
                        del buf[: restart + 1]
                        oversize, head, size, scanned = False, b"", 0, 0
                        continue
                    if end < 0:
                        scanned = len(buf)
                        if size + len(buf) > cfg.max_message_bytes:
                            if not oversize:
                                head = bytes(buf[:_HEAD])
                                oversize = True
                            # keep a possible half end block (0x1C) for the next read
                            keep = 1 if buf.endswith(EB) else 0
                            size += len(buf) - keep
                            del buf[: len(buf) - keep]
                            scanned = len(buf)
                        break
                    scanned = 0
                    if oversize or size + end > cfg.max_message_bytes:
                        message = head or bytes(buf[:_HEAD])
                        total = size + end
                        del buf[: end + 2]
                        in_frame = False
                        extra["oversize"] += 1
                        ack = self._reject_oversize(message, total)
                    else:
                        message = bytes(buf[:end])
                        del buf[: end + 2]
                        in_frame = False
                        ack = await self._submit(message, origin)
                    writer.write(SB + ack + _END)
                    await writer.drain()
            if in_frame:
                # the connection ended inside a frame: nothing to land, nobody to answer
                extra["incomplete_frames"] += 1
                log.warning("mllp frame without end block dropped",
                            extra={"channel": self.channel, "origin": origin})
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError) as exc:
            log.info("mllp connection ended", extra={"channel": self.channel, "origin": origin,
                                                     "error": type(exc).__name__})
        except asyncio.CancelledError:
            pass
        finally:
            extra["open_connections"] -= 1
            if self._wake is not None:
                self._wake.set()  # one sender fewer for a gathering group to wait for
            if task is not None:
                self._conns.discard(task)
            try:
                writer.close()
            except (ConnectionError, RuntimeError):  # pragma: no cover - already gone
                pass

    def _reject_oversize(self, head: bytes, total: int) -> bytes:
        header = header_from_bytes(head)
        err = ParseError(f"message is larger than the limit of {self.config.max_message_bytes} bytes "
                         "(source.max_message_bytes); it was not stored", Position(message=0))
        log.warning("mllp message over the size limit", extra={"channel": self.channel, "bytes": total})
        return self._ack(header, "AR", err, "parse")

    def _ack(self, header: Any, code: AckCode, error: InputError | None = None, kind: str | None = None,
             reason: str | None = None) -> bytes:
        self.status.extra[code] += 1
        text = build_ack(header, code, error=error, error_kind=kind, reason=reason,
                         application=self.config.application, facility=self.config.facility)
        return text.encode("utf-8")

    # -- one message (runs in the pool) -------------------------------------

    def _processor(self) -> Any:
        proc = getattr(self._local, "processor", None)
        if proc is None:
            from bridge.pipeline.process import Processor, worker_name

            rt = self.runtime
            proc = Processor(rt.db, rt.archive, {self.channel: rt.channels[self.channel]}, rt.settings.processing,
                             owner=f"mllp:{worker_name()}")
            self._local.processor = proc
        return proc

    # -- group commit ---------------------------------------------------------

    async def _submit(self, message: bytes, origin: str) -> bytes:
        """Queue one message for the next group; its ACK once the group has committed."""
        assert self._wake is not None
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._queue.append((message, origin, fut))
        self._wake.set()
        return await fut

    async def _dispatch(self) -> None:
        """Form the groups: wait for a free slot, let the first message gather company, hand the group over."""
        assert self._wake is not None and self._slots is not None
        cfg = self.config
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                await self._slots.acquire()
                await self._gather()
                group = [self._queue.popleft() for _ in range(min(len(self._queue), cfg.group_max))]
                self.status.extra["groups"] += 1
                task = loop.create_task(self._commit_group(group))
                self._groups.add(task)
                task.add_done_callback(self._groups.discard)

    async def _gather(self) -> None:
        """Let the group's first message wait up to ``group_wait`` for company, and no longer than useful.

        The wait ends once ``group_max`` messages are queued, or once every
        open connection has its message in the queue: a connection's next
        frame is read only after its last one is answered, so no other message
        can arrive before this group is. Eight busy senders are then answered
        as soon as the eighth message is in, not ``group_wait`` later. (The
        senders of a group still committing, on PostgreSQL, are waited for:
        their next messages may make this group larger.)
        """
        assert self._wake is not None
        cfg = self.config
        extra = self.status.extra
        try:
            # one timeout for the whole wait, not a wait_for (a task) per message that comes in
            async with asyncio.timeout_at(asyncio.get_running_loop().time() + cfg.group_wait):
                while len(self._queue) < min(cfg.group_max, extra["open_connections"]):
                    self._wake.clear()
                    await self._wake.wait()
        except TimeoutError:
            return

    async def _commit_group(self, group: list[tuple[bytes, str, asyncio.Future[bytes]]]) -> None:
        assert self._slots is not None
        try:
            acks = await asyncio.get_running_loop().run_in_executor(
                self._pool, self._receive_group, [(message, origin) for message, origin, _fut in group])
        except asyncio.CancelledError:
            for _message, _origin, fut in group:
                fut.cancel()
            raise
        except RuntimeError:  # the pool no longer takes work: the listener is stopping
            acks = [self._ack(header_from_bytes(message), "AE", reason="listener is stopping; resend later",
                              kind="internal") for message, _origin, _fut in group]
        except Exception as exc:  # noqa: BLE001 - a bug outside the group's own guard: still answer every sender
            log.error("mllp group failed", extra={"channel": self.channel, "error": type(exc).__name__})
            acks = [self._ack(None, "AE", reason="message could not be handled; resend later", kind="internal")
                    for _message, _origin, _fut in group]
        finally:
            self._slots.release()
        for (_message, _origin, fut), ack in zip(group, acks, strict=True):
            if not fut.done():  # a sender that hung up has nobody waiting
                fut.set_result(ack)

    # -- one group (runs in the pool) ------------------------------------------

    def _receive_group(self, items: list[tuple[bytes, str]]) -> list[bytes]:
        headers = [header_from_bytes(message) for message, _origin in items]
        try:
            return self._land_and_answer(headers, items)
        except Exception as exc:  # noqa: BLE001 - a sender always gets an answer, the listener never dies
            self.status.last_error, self.status.last_error_at = type(exc).__name__, utcnow()
            log.error("mllp message handling failed", extra={"channel": self.channel, "error": type(exc).__name__})
            return [self._ack(h, "AE", reason="message could not be handled; resend later", kind="internal")
                    for h in headers]

    def _land_and_answer(self, headers: list[Any], items: list[tuple[bytes, str]]) -> list[bytes]:
        units = [Unit(message, f"mllp-{(h.control_id if h is not None else '') or 'unknown'}.hl7", origin)
                 for (message, origin), h in zip(items, headers, strict=True)]
        proc = self._processor()
        try:
            landed, results = self._land(proc, units)
        except (BridgeError, OSError) as exc:
            # not landed: answer AE so the senders keep their messages and retry
            self.status.last_error, self.status.last_error_at = str(exc), utcnow()
            log.error("mllp landing failed", extra={"channel": self.channel, "error": str(exc)})
            return [self._ack(h, "AE", reason="message could not be stored; resend later", kind="internal")
                    for h in headers]
        for one in landed:
            if one.duplicate:
                self.status.duplicates += 1
            else:
                self.status.landed += 1
        self.status.last_success_at = utcnow()
        ids = [one.duplicate_of or one.inbound_id for one in landed]
        if results is None:
            claimed, data = _leased(landed, units)
            try:
                results = proc.process_many(sorted(set(ids)), claimed=claimed, data=data)
            except BridgeError as exc:
                # each message is settled on its own below (and answered AE if that fails too)
                log.error("mllp group processing failed", extra={"channel": self.channel, "error": str(exc)})
                results = {}
        # a resend with a control id already committed (message_keys): ACKed AA, counted here
        self.status.extra["duplicate_control_ids"] += sum(r.duplicates for r in results.values())
        # one line per group, not per message (each message's outcome is in inbound_files and failures)
        statuses = collections.Counter(str(r.status) for r in results.values())
        log.info("mllp group processed", extra={"channel": self.channel, "messages": len(ids),
                                                "resent": sum(1 for one in landed if one.duplicate),
                                                **dict(sorted(statuses.items()))})
        return [self._answer_landed(h, inbound_id, results.get(inbound_id))
                for h, inbound_id in zip(headers, ids, strict=True)]

    def _land(self, proc: Any, units: list[Unit]) -> tuple[list[Landed], dict[int, Any] | None]:
        """Land the group and, in the same transaction, process its new messages: (landed, results).

        ``land_many`` with the lander's database and archive, not ``Lander.land_many``: that would also
        wake the runtime's processors. The new messages land leased to this thread's processor and are
        processed from the bytes in hand; one commit holds their rows, records, events and outcome, so
        a crash before it leaves nothing (no ACK went out: the senders resend). Should the processing's
        statements fail, nothing of it commits and the group is landed alone (results None: the caller
        processes it then, settling each message on its own if it must). A resend of an earlier message
        is settled by :meth:`_answer_landed`. An all-or-nothing channel lands first, then processes.
        """
        db, archive = self.lander.db, self.lander.archive
        if not self.runtime.channels[self.channel].config.all_or_nothing:
            try:
                with db.write() as conn:
                    landed = land_many(db, archive, channel=self.channel, units=units, lease=proc.lease(), conn=conn)
                    results, inserted = proc.process_in(conn, *_leased(landed, units))
                proc.committed(inserted)
                return landed, results
            except (StorageError, IntegrityError) as error:
                log.warning("mllp group could not commit with its processing; landing it first",
                            extra={"channel": self.channel, "error": type(error).__name__})
        return land_many(db, archive, channel=self.channel, units=units, lease=proc.lease()), None

    def _answer_landed(self, header: Any, inbound_id: int, result: Any) -> bytes:
        """The ACK of one landed message: from its group's result, or once whoever holds its row is done."""
        try:
            state = str(result.status) if result is not None else self._settle(inbound_id)
        except BridgeError as exc:
            log.error("mllp processing failed", extra={"channel": self.channel, "inbound_id": inbound_id,
                                                      "error": str(exc)})
            return self._ack(header, "AE", reason="message stored; processing failed, it will be retried",
                             kind="internal")
        if state is None:
            return self._ack(header, "AE", reason=f"message stored; processing did not finish within "
                                                  f"{self.config.ack_timeout:g} s", kind="internal")
        if state == "processed":
            # no open failure is left on a processed row: no need to read them
            return self._ack(header, "AA")
        return self._answer(header, inbound_id)

    def _settle(self, inbound_id: int) -> str | None:
        """Process the inbound row now, or wait for whoever holds it; return its final status."""
        proc = self._processor()
        result = proc.process(inbound_id)
        if result is not None:
            # a resend with a control id already committed (message_keys): ACKed AA, counted here
            self.status.extra["duplicate_control_ids"] += result.duplicates
            return str(result.status)
        deadline = time.monotonic() + self.config.ack_timeout
        delay = 0.002
        while True:
            with self.runtime.db.read() as conn:
                status = conn.execute(select(inbound_files.c.status).where(inbound_files.c.id == inbound_id)
                                      ).scalar_one_or_none()
            if status in _DONE:
                return str(status)
            if status == "landed" or status == "processing":
                # a lease that expired (a crashed claimer) is taken over here
                result = proc.process(inbound_id)
                if result is not None:
                    return str(result.status)
            if time.monotonic() > deadline or self.stopping:
                return None
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _answer(self, header: Any, inbound_id: int) -> bytes:
        with self.runtime.db.read() as conn:
            rows = conn.execute(
                select(failures.c.category, failures.c.kind, failures.c.reason, failures.c.position)
                .where(failures.c.inbound_id == inbound_id, failures.c.status == "open")
                .order_by(failures.c.message_index)
            ).all()
        if not rows:
            return self._ack(header, "AA")
        parse = [r for r in rows if r.category == "parse"]
        first = parse[0] if parse else rows[0]
        err = InputError(first.reason, Position.from_dict(orjson.loads(first.position or "{}")))
        if parse:
            return self._ack(header, "AR", err, "parse")
        if all(r.kind == "message_type" for r in rows):
            if self.config.unknown_type_ack == "AA":
                return self._ack(header, "AA")
            return self._ack(header, "AE", err, "message_type")
        kind = first.kind if first.kind == "message_type" else first.category
        return self._ack(header, "AE", err, kind)


def _leased(landed: list[Landed], units: list[Unit]) -> tuple[list[Any], dict[int, bytes]]:
    """The rows :func:`land_many` landed leased (the new messages), and their bytes by inbound id."""
    rows = [one.row for one in landed if one.row is not None]
    data = {one.inbound_id: unit.data for one, unit in zip(landed, units, strict=True) if one.row is not None}
    return rows, data
