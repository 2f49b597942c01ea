"""The SFTP client both the SFTP source and the SFTP destination use: connect, check, back off.

Owns one paramiko connection per component (an ``SFTPClient`` must not be
shared between threads, see FIELD-NOTES), the host-key check, the translation
of paramiko's exceptions into :class:`~bridge.errors.SourceError`, and the
jittered, capped backoff between reconnects. What to do with files is left to
the callers (``bridge.sources.sftp``, ``outbox.destinations.sftp``).

Host keys (RFC 4251 section 4.1, OpenSSH ``known_hosts`` format): the server
key is checked against a pinned ``known_hosts`` file with paramiko's
``RejectPolicy``; a non-22 port is looked up as ``[host]:port`` as OpenSSH
writes it. An unknown or changed key is refused with an error that names the
host and the SHA256 fingerprint the server offered, and it is never retried
quickly: neither a wrong host key nor wrong credentials heal by retrying, so
they back off for ``auth_failure_backoff`` instead of looping. Auto-adding an
unknown key happens only when a channel says ``insecure_auto_add_host_key: true``.

Credentials come from a key file or from an environment variable holding the
password; the agent and ``~/.ssh`` keys are never consulted
(``allow_agent=False, look_for_keys=False``), so what a channel uses is
exactly what its configuration says.

Throughput (measured on loopback against OpenSSH 9.2, paramiko 5.1, see
``bench/sftp_transfer.py``): paramiko on its own negotiates ``aes128-ctr`` with
``hmac-sha2-256``, whose MAC is checked per packet in a Python loop. AES-GCM
(RFC 5647, ``aes128-gcm@openssh.com``) needs no separate MAC and costs about a
third less CPU per MB, so it is asked for first, then the encrypt-then-MAC
variants; every algorithm paramiko knows stays acceptable after them, so an old
server still connects. Each SFTP session gets a wide channel window, 255 KiB
packets and a receive buffer that does not move its contents on every read
(:class:`_ChunkPipe`). One SSH connection carries several SFTP sessions
(:meth:`SftpConnection.sessions`), so a source can overlap the round trips of
many small files.
"""

from __future__ import annotations

import base64
import hashlib
import inspect
import logging
import os
import posixpath
import socket
from collections import deque
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any, NoReturn

import paramiko
from paramiko.buffered_pipe import BufferedPipe
from pydantic import BaseModel, ConfigDict, Field, model_validator
from tenacity import wait_exponential_jitter

from bridge.errors import ConfigError, SourceError

__all__ = [
    "Backoff",
    "SftpConnection",
    "SftpConnectionConfig",
    "fingerprint",
    "safe_remote_name",
]

log = logging.getLogger(__name__)

WINDOW_SIZE = 64 * 1024 * 1024
MAX_PACKET_SIZE = 256 * 1024
#: asked for first, in this order (cheapest CPU per MB first); the rest of paramiko's list follows
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr", "aes256-ctr")
PREFERRED_MACS = ("hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com", "hmac-sha2-256")


class SftpConnectionConfig(BaseModel):
    """Where and how to connect; the shared half of the SFTP source and destination configs."""

    model_config = ConfigDict(extra="forbid")

    host: str
    port: int = Field(22, ge=1, le=65535)
    username: str
    #: private key file (OpenSSH or PEM format); or ``password_env``
    key_file: str | None = None
    #: name of the environment variable that holds the key file's passphrase
    key_passphrase_env: str | None = None
    #: name of the environment variable that holds the password (never the password itself)
    password_env: str | None = None
    #: pinned OpenSSH known_hosts file; required unless ``insecure_auto_add_host_key``
    known_hosts: str | None = None
    insecure_auto_add_host_key: bool = False
    connect_timeout: float = Field(15.0, gt=0)
    #: seconds between SSH keepalive packets (0: off)
    keepalive: int = Field(30, ge=0)
    #: first and longest wait between reconnects (jittered exponential backoff)
    reconnect_initial: float = Field(1.0, gt=0)
    reconnect_max: float = Field(120.0, gt=0)
    #: bytes per SFTP read/write request. OpenSSH's sftp-server accepts up to 261120
    #: (its ``limits@openssh.com`` max-read-length); use 32768 for servers that cap lower
    #: (a short read would stall paramiko's pipelined prefetch)
    request_size: int = Field(261120, ge=4096, le=261120)
    #: wait after a wrong host key or wrong credentials: they do not heal by retrying
    auth_failure_backoff: float = Field(900.0, gt=0)

    @model_validator(mode="after")
    def _check_security(self) -> SftpConnectionConfig:
        if (self.key_file is None) == (self.password_env is None):
            raise ValueError("give exactly one of key_file or password_env")
        if self.known_hosts is None and not self.insecure_auto_add_host_key:
            raise ValueError("known_hosts is required (or set insecure_auto_add_host_key: true explicitly)")
        return self

    @property
    def where(self) -> str:
        return f"sftp://{self.username}@{self.host}:{self.port}"


def fingerprint(key: paramiko.PKey) -> str:
    """The key's fingerprint as OpenSSH prints it: ``SHA256:<base64 without padding>``."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def safe_remote_name(name: str) -> bool:
    """True when a directory entry's name stays inside its directory.

    A server returns names, not paths; a hostile or broken one could still
    return ``..``, ``a/../../etc`` or a NUL. Such names are refused, so every
    remote path is ``<configured dir>/<name>`` with ``name`` one path segment.
    Names with spaces, unicode or ``..`` inside (``a..b``) are fine.
    """
    return bool(name) and name not in (".", "..") and "/" not in name and "\x00" not in name


def remote_join(directory: str, name: str) -> str:
    if not safe_remote_name(name):
        raise SourceError(f"refusing remote name outside {directory!r}", retryable=False)
    return posixpath.join(directory, name)


class Backoff:
    """Jittered, capped exponential backoff (tenacity's ``wait_exponential_jitter``).

    The caller waits with ``threading.Event.wait(backoff.next())`` on its own
    thread, so a channel that is backing off blocks no other channel and still
    stops at once.
    """

    def __init__(self, initial: float, maximum: float) -> None:
        # tenacity 9.1 renamed ``initial`` to ``multiplier`` (the old name warns)
        first = "multiplier" if "multiplier" in inspect.signature(wait_exponential_jitter).parameters else "initial"
        self._wait = wait_exponential_jitter(max=maximum, jitter=initial, **{first: initial})
        self._maximum = maximum
        self.attempt = 0

    def next(self) -> float:
        self.attempt += 1
        delay = float(self._wait(SimpleNamespace(attempt_number=self.attempt)))  # type: ignore[arg-type]
        return min(delay, self._maximum)

    def reset(self) -> None:
        self.attempt = 0


class _Reject(paramiko.RejectPolicy):
    """RejectPolicy that says which host and which key it refused."""

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> NoReturn:
        raise SourceError(
            f"host key of {hostname} is not in known_hosts "
            f"(server offered {key.get_name()} {fingerprint(key)}); refusing to connect",
            retryable=False,
        )


def _transport(sock: Any, **kwargs: Any) -> paramiko.Transport:
    """A Transport that asks for the cheapest strong algorithms first (``SSHClient.connect``'s factory)."""
    transport = paramiko.Transport(sock, **kwargs)
    options = transport.get_security_options()
    options.ciphers = _prefer(PREFERRED_CIPHERS, options.ciphers)
    options.digests = _prefer(PREFERRED_MACS, options.digests)
    return transport


def _prefer(first: tuple[str, ...], known: Sequence[str]) -> tuple[str, ...]:
    return tuple(a for a in first if a in known) + tuple(a for a in known if a not in first)


class _Chunks:
    """A channel's received bytes as a queue of chunks: reading from the front copies only what is read.

    paramiko's ``BufferedPipe`` keeps one ``array`` and deletes what was read
    from its front, which moves every byte still buffered on each read. SFTP
    reads a 4-byte length, then the body, so with a wide window and a reader
    behind the network that copying was most of a large download's CPU.
    Only the operations ``BufferedPipe`` uses on its buffer are here: its
    ``_buffer_frombytes`` / ``_buffer_tobytes`` hooks, ``len`` and ``del [:n]``
    (paramiko 3 to 5); should a paramiko release use its buffer otherwise,
    every SFTP transfer fails at once, in the tests, not subtly.
    """

    __slots__ = ("_chunks", "_head", "_size")

    def __init__(self) -> None:
        self._chunks: deque[bytes] = deque()
        self._head = 0  # bytes of _chunks[0] already read
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def append(self, data: bytes) -> None:
        if data:
            self._chunks.append(bytes(data))
            self._size += len(data)

    def peek(self, limit: int | None) -> bytes:
        want = self._size if limit is None else min(limit, self._size)
        parts: list[bytes] = []
        start = self._head
        for chunk in self._chunks:
            if want <= 0:
                break
            part = chunk if start == 0 and len(chunk) <= want else chunk[start:start + want]
            parts.append(part)
            want -= len(part)
            start = 0
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def __delitem__(self, key: slice) -> None:
        assert key.start is None and key.step is None, "only del buffer[:n] is supported"
        n = self._size if key.stop is None else min(key.stop, self._size)
        self._size -= n
        while n:
            left = len(self._chunks[0]) - self._head
            if n < left:
                self._head += n
                return
            self._chunks.popleft()
            self._head = 0
            n -= left


class _ChunkPipe(BufferedPipe):
    """paramiko's channel receive pipe (locking, timeouts, events unchanged) over :class:`_Chunks`."""

    def __init__(self) -> None:
        super().__init__()
        self._buffer = _Chunks()

    def _buffer_frombytes(self, data: bytes) -> None:
        self._buffer.append(data)

    def _buffer_tobytes(self, limit: int | None = None) -> bytes:
        return self._buffer.peek(limit)


class SftpConnection:
    """One SSH connection and its SFTP session, reused until it breaks.

    Not thread-safe: each source or destination worker owns its own.
    """

    def __init__(self, config: SftpConnectionConfig) -> None:
        self.config = config
        self._ssh: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        #: further SFTP sessions on the same connection (:meth:`sessions`)
        self._extra: list[paramiko.SFTPClient] = []
        #: connect attempts since the object was made (tests and status read it)
        self.attempts = 0
        #: the fingerprint of the server key seen last, and the cipher negotiated (for status)
        self.server_fingerprint: str | None = None
        self.cipher: str | None = None

    @property
    def connected(self) -> bool:
        if self._ssh is None or self._sftp is None:
            return False
        transport = self._ssh.get_transport()
        return transport is not None and transport.is_active()

    def sftp(self) -> paramiko.SFTPClient:
        """The open SFTP session, connecting first when there is none (or it died)."""
        if not self.connected:
            self.close()
            self._connect()
        assert self._sftp is not None
        return self._sftp

    def sessions(self, n: int) -> list[paramiko.SFTPClient]:
        """Up to ``n`` SFTP sessions on this one connection, the first being :meth:`sftp`'s.

        Each is a channel of its own (a server-side sftp process of its own on
        OpenSSH), for one thread at a time. They live as long as the connection.
        A server that refuses more channels (OpenSSH ``MaxSessions``, 10 by
        default) leaves fewer sessions, never an error.
        """
        main = self.sftp()
        assert self._ssh is not None
        transport = self._ssh.get_transport()
        assert transport is not None
        while len(self._extra) < n - 1:
            try:
                self._extra.append(self._open_session(transport))
            except (OSError, EOFError, paramiko.SSHException) as e:
                log.info("sftp server refused another session", extra={"host": self.config.host,
                                                                        "sessions": 1 + len(self._extra),
                                                                        "error": describe(e)})
                break
        return [main, *self._extra[:n - 1]]

    def _open_session(self, transport: paramiko.Transport) -> paramiko.SFTPClient:
        """A new SFTP session: a wide window, large packets, a cheap receive buffer, a read timeout."""
        cfg = self.config
        # the window and packet beyond paramiko's defaults (2 MiB, 32 KiB): with OpenSSH's
        # 255 KiB read requests this is ~5-10x the throughput on loopback
        channel = transport.open_session(window_size=WINDOW_SIZE, max_packet_size=MAX_PACKET_SIZE)
        channel.in_buffer = _ChunkPipe()  # before the subsystem starts: nothing is buffered yet
        # a dead peer must not hang a read forever: keepalive notices, the timeout ends it
        channel.settimeout(max(cfg.connect_timeout, 2.0 * cfg.keepalive or 0.0))
        try:
            channel.invoke_subsystem("sftp")
            return paramiko.SFTPClient(channel)
        except BaseException:
            channel.close()
            raise

    def _credentials(self) -> dict[str, Any]:
        cfg = self.config
        if cfg.password_env is not None:
            password = os.environ.get(cfg.password_env)
            if password is None:
                raise ConfigError("password_env", f"environment variable {cfg.password_env} is not set")
            return {"password": password}
        passphrase = os.environ.get(cfg.key_passphrase_env) if cfg.key_passphrase_env else None
        return {"key_filename": cfg.key_file, "passphrase": passphrase}

    def _connect(self) -> None:
        cfg = self.config
        self.attempts += 1
        ssh = paramiko.SSHClient()
        if cfg.known_hosts is not None:
            try:
                ssh.load_host_keys(cfg.known_hosts)
            except OSError as e:
                raise SourceError(f"cannot read known_hosts {cfg.known_hosts!r}: {e.strerror}",
                                  retryable=False) from e
        if cfg.insecure_auto_add_host_key:
            ssh.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        else:
            ssh.set_missing_host_key_policy(_Reject())
        try:
            ssh.connect(
                cfg.host, port=cfg.port, username=cfg.username,
                timeout=cfg.connect_timeout, banner_timeout=cfg.connect_timeout,
                auth_timeout=cfg.connect_timeout, channel_timeout=cfg.connect_timeout,
                allow_agent=False, look_for_keys=False, transport_factory=_transport, **self._credentials(),
            )
            transport = ssh.get_transport()
            assert transport is not None
            self.server_fingerprint = fingerprint(transport.get_remote_server_key())
            self.cipher = getattr(transport, "remote_cipher", None)
            if cfg.keepalive:
                transport.set_keepalive(cfg.keepalive)
            sftp = self._open_session(transport)
        except SourceError:
            ssh.close()
            raise
        except paramiko.BadHostKeyException as e:
            ssh.close()
            raise SourceError(
                f"host key of {cfg.host}:{cfg.port} CHANGED: server offered {e.key.get_name()} "
                f"{fingerprint(e.key)}, known_hosts pins {fingerprint(e.expected_key)}; refusing to connect",
                retryable=False,
            ) from e
        except paramiko.AuthenticationException as e:
            ssh.close()
            raise SourceError(
                f"authentication as {cfg.username!r} on {cfg.host}:{cfg.port} failed "
                f"({'password' if cfg.password_env else 'key ' + str(cfg.key_file)}): {e}",
                retryable=False,
            ) from e
        except (OSError, EOFError, paramiko.SSHException) as e:
            ssh.close()
            raise SourceError(f"cannot connect to {cfg.host}:{cfg.port}: {describe(e)}") from e
        self._ssh, self._sftp = ssh, sftp
        log.info("sftp connected", extra={"host": cfg.host, "port": cfg.port, "fingerprint": self.server_fingerprint,
                                          "cipher": self.cipher})

    def close(self) -> None:
        sftp, ssh, extra = self._sftp, self._ssh, self._extra
        self._sftp = self._ssh = None
        self._extra = []
        for thing in (*extra, sftp, ssh):
            if thing is not None:
                try:
                    thing.close()
                except Exception:  # noqa: BLE001 - closing a broken connection may fail any way
                    pass


def describe(e: BaseException) -> str:
    """A short, PHI-free description of a transport exception."""
    if isinstance(e, socket.timeout):
        return "timed out"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    text = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
